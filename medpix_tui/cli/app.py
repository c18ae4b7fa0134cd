"""Root click group and the error boundary every command shares."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..errors import MedpixError


class MedpixGroup(click.Group):
    """Turns library errors into one line on stderr and the documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MedpixError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except BrokenPipeError:
            sys.exit(0)
        except Exception as exc:  # the last line of defence: never a traceback by default
            if os.environ.get("MEDPIX_DEBUG"):
                raise
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}); set MEDPIX_DEBUG=1 for details", err=True)
            sys.exit(70)


@click.group(cls=MedpixGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", "bundle_path", type=click.Path(path_type=str), default=None,
              help="Bundle folder or archive (default: $MEDPIX_BUNDLE, else bundle/medpix-2.0, built on first use).")
@click.version_option(package_name="medpix-tui")
@click.pass_context
def main(ctx: click.Context, bundle_path: str | None) -> None:
    """Search, browse and analyse MedPix 2.0 offline.

    With no command, opens the terminal UI on the default bundle.

    \b
    Examples:
      medpix-tui                                   # the terminal UI
      medpix-tui query --field Description.Caption=glioma --json
      medpix-tui show MPX1009
      medpix-tui sql "SELECT modality, count(*) FROM images GROUP BY 1"
      medpix-tui bundle build --source ../shared/medpix-2.0 --out /tmp/b
    """
    ctx.ensure_object(dict)
    ctx.obj["bundle"] = bundle_path
    if ctx.invoked_subcommand is None:
        from .tui import run_tui

        run_tui(bundle_path)


def _register() -> None:
    """Attach the commands each command module lists in ``COMMANDS``."""
    import importlib

    for name in ("data", "bundle", "model", "add_case", "tui"):
        for command in importlib.import_module(f"{__package__}.{name}").COMMANDS:
            main.add_command(command)


_register()
