"""``report quality``: label conflicts, duplicates and leakage of a bundle, as text, JSON or HTML."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .data import bundle_option, open_bundle_from
from .options import OutputPath


@click.group()
def report() -> None:
    """Reports on a bundle's data.

    \b
    Examples:
      medpix-tui report quality                       # vocabulary, conflicts, duplicates, leakage
      medpix-tui report quality --html quality.html   # the same with thumbnails, for a browser
    """


@report.command()
@bundle_option
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON on stdout (keys in README.md).")
@click.option("--html", "html_path", type=OutputPath(path_type=Path), default=None,
              help="Write one self-contained HTML page with thumbnails to this file.")
@click.option("--force", is_flag=True, help="Replace an earlier report at --html (never another file).")
@click.pass_context
def quality(ctx: click.Context, bundle_path: str | None, as_json: bool, html_path: Path | None, force: bool) -> None:
    """Vocabulary, label conflicts, duplicates and leakage across the authors' splits.

    \b
    Examples:
      medpix-tui report quality                       # a summary
      medpix-tui report quality --json | jq .leakage  # for tools
      medpix-tui report quality --html quality.html   # thumbnails of every pair and conflict
    """
    from ..atomic import atomic_file
    from ..progress import rich_progress
    from ..quality import quality_report, render_html, replaceable_report, summary_lines

    bundle = open_bundle_from(ctx, bundle_path)
    if html_path is not None:
        from ..atomic import check_file_destination

        check_file_destination(html_path, force, replaceable_report, suffix=".html")  # before the work
    result = quality_report(bundle, rich_progress())
    if html_path is not None:
        with atomic_file(html_path, force=force, ours=replaceable_report) as tmp:
            tmp.write_text(render_html(result, bundle), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        for line in summary_lines(result):
            click.echo(line)
        if html_path is not None:
            click.echo(f"wrote {html_path}")


COMMANDS = [report]
