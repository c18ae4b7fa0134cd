"""Root click group and the error boundary every command shares."""

from __future__ import annotations

import contextlib
import difflib
import errno
import importlib
import os
import signal
import sys
from typing import Any

import click

from ..errors import MedpixError, printable
from ..locations import default_bundle
from .options import BUNDLE_RULE, LocatedOption, OneLineUsage, OneLineUsageError

# numpy's BLAS threads spin against each other on a busy 2-core machine: one thread answered a
# query of the numpy model towers in 15-34 ms where two took 140-540 ms. Read when numpy loads,
# after this module, in every command and in the terminal UI (classify, text and case search).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

#: The module of this package that defines each command. A command imports only its own
#: module, and the terminal UI (no command) none of them: a start skips their imports.
COMMAND_MODULES = {
    "query": "data",
    "show": "data",
    "export": "data",
    "sql": "data",
    "bundle": "bundle",
    "classify": "model",
    "eval": "model",
    "similar": "model",
    "search-images": "model",
    "add-case": "add_case",
    "serve": "serve",
    "report": "report",
    "quiz": "quiz",
    "similar-cases": "cases",
    "doctor": "doctor",
}


#: A write failed for want of room: the output, not the input, is at fault.
OUTPUT_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP (the terminal closed), raised where the command is, so that its clean-up
    runs as for Ctrl-C (an export's temporary folder, a build's or a pack's, half of an added case
    were left behind)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


#: Commands that handle SIGTERM themselves (the terminal UI restores the terminal; serve stops its sessions);
#: the UI opened with no command does too.
OWN_SIGTERM = ("serve", "tui")


class MedpixGroup(OneLineUsage, click.Group):
    """Loads each command's module when it is asked for (click's lazy group); turns library
    errors and usage errors into one line on stderr and the documented exit status."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            for command in importlib.import_module(f"{__package__}.{COMMAND_MODULES[cmd_name]}").COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            # click would suggest only among the commands loaded so far: none, in this lazy group
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=2)
            suggestion = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise OneLineUsageError(f"No such command {name!r}{suggestion}", ctx)
        if name not in OWN_SIGTERM:  # resolved just before the command runs
            signal.signal(signal.SIGTERM, _terminate)
            if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:  # nohup's SIG_IGN is kept
                signal.signal(signal.SIGHUP, _terminate)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MedpixError as exc:
            click.echo(f"error: {printable(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except Terminated as exc:
            with contextlib.suppress(OSError):  # a closed terminal takes no line
                click.echo("hung up" if exc.signum == signal.SIGHUP else "terminated", err=True)
            sys.exit(128 + exc.signum)
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
            if isinstance(exc, OSError) and exc.errno in OUTPUT_FULL:  # stdout on a full disk
                click.echo(f"error: cannot write the output: {exc.strerror}", err=True)
                sys.exit(1)
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}); set MEDPIX_DEBUG=1 for details", err=True)
            sys.exit(70)


@click.group(cls=MedpixGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", "bundle_path", type=click.Path(path_type=str), default=None, cls=LocatedOption,
              locate=default_bundle, help=f"Bundle folder or archive ({BUNDLE_RULE}).")
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
      medpix-tui doctor                            # which bundle, source, model; why
    """
    ctx.ensure_object(dict)
    ctx.obj["bundle"] = bundle_path
    if ctx.invoked_subcommand is None:
        from .tui import run_tui

        run_tui(bundle_path)
