"""What every command shares: options whose ``--help`` says where their default points on this machine,
and usage errors told in one line."""

from __future__ import annotations

import re
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


#: click's suggestion after its message: ". Did you mean 'x'?" or ". (Did you mean one of: 'x', 'y'?)".
_SUGGESTION = re.compile(r"\.\s+\(?Did you mean (.+?\?)\)?\s*$")


class OneLineUsageError(click.UsageError):
    """A usage error told in one line, like every other error of this program, instead of click's
    usage block, hint and blank line (four lines, the message last)."""

    def show(self, file: Any = None) -> None:
        message = _SUGGESTION.sub(r" (did you mean \1)", self.format_message()).rstrip(".")
        hint = f"; see '{self.ctx.command_path} --help'" if self.ctx is not None else ""
        click.echo(f"error: {message}{hint}", err=True)


class OneLineUsage:
    """Mixin for a click command or group: its usage errors, in its own options or raised by what
    it invokes (a subcommand's arguments), are told in one line (:class:`OneLineUsageError`)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc]
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except click.UsageError as exc:
            raise one_line(exc) from None


class OneLineCommand(OneLineUsage, click.Command):
    """A command told as ``medpix-tui``'s are, for the tools' commands (the scraper), which are no
    part of its group."""


#: A group run without its command prints its help (click 8.2 and later raise this for it).
HELP_INSTEAD = getattr(click.exceptions, "NoArgsIsHelpError", ())


def one_line(exc: click.UsageError) -> click.UsageError:
    """The same error, shown in one line (a group's help, asked for by naming no command, stays whole)."""
    if isinstance(exc, (OneLineUsageError, HELP_INSTEAD)):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


class OutputPath(click.Path):
    """A path a command writes to. An empty one (click would take it for ``.``, "is a folder") and
    ``-`` (no command here writes its files to standard output: each gets a manifest, or is a folder)
    are refused in one line, instead of writing a file named ``-``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..files import output_problem

        if isinstance(value, str) and (problem := output_problem(value)):
            name = "the path" if param is None else (
                param.opts[0] if param.param_type_name == "option" and param.opts else param.human_readable_name)
            raise OneLineUsageError(f"{name} {problem}", ctx)
        return super().convert(value, param, ctx)



class FiniteFloatRange(click.FloatRange):
    """A float range that refuses ``nan`` and ``inf``: click's range compares, and NaN compares false
    with every bound, so ``--timeout nan`` passed and the statement then never stopped."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
