"""``doctor``: which bundle, source, model and folders this installation uses, why, and on what."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Say which bundle, source, model, cache and state folder are in use, and by which rule.

    Also the versions of Python and the main packages, and what the terminal draws images
    with (Kitty graphics, Sixel or half-blocks). Nothing is built, verified or written.

    \b
    Examples:
      medpix-tui doctor
      medpix-tui --bundle medpix-2.0.tar doctor --json
    """
    from ..doctor import diagnose, report_lines

    report = diagnose((ctx.obj or {}).get("bundle"))
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo("\n".join(report_lines(report)))


COMMANDS = [doctor]
