"""Options whose ``--help`` says where their default points on this machine, and by which rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..locations import Location


class LocatedOption(click.Option):
    """A path option whose help ends with ``Here: PATH (rule)``, worked out only when help is shown."""

    def __init__(self, *args: Any, locate: Callable[[], Location], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.locate = locate
        self.base_help = self.help or ""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = f"{self.base_help} Here: {self.locate().describe()}."
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = self.base_help


#: The rule for the default bundle, as help texts state it.
BUNDLE_RULE = ("default: $MEDPIX_BUNDLE, else bundle/medpix-2.0 in a checkout, else medpix-2.0 in the "
               "user data folder; built on first use")


def resolve(path: str | None, progress: Any = None) -> Any:
    """The bundle a command names (or the default one, built on first use with a line before and after)."""
    from ..bundle import resolve_bundle
    from ..progress import rich_progress

    return resolve_bundle(path, progress=progress or rich_progress(),
                          announce=lambda line: click.echo(line, err=True))
