"""``python -m tools.scraper``: harvest MedPix cases into a source folder that ``bundle build`` accepts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from medpix_tui.cli.options import OneLineCommand, OutputPath
from medpix_tui.errors import MedpixError
from medpix_tui.progress import rich_progress

from . import openi
from .cache import ResponseCache
from .client import DEFAULT_USER_AGENT, Fetcher
from .curation import REVIEW_FILE, Curator
from .harvest import Report, run
from .inputs import is_case_id
from .render import (
    ChromiumRenderer,
    PlainRenderer,
    Renderer,
    RendererUnavailable,
    why_unavailable,
)
from .sites import MEDPIX_BASE
from .writer import SourceWriter, check_can_write_in


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so lines land above rich's live progress bar."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tools.scraper")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def http_base(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A server base URL, checked before the first request (a typo was retried --retries times)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise click.BadParameter(f"{value!r} is not an http(s) server address such as {param.default}")
    return value.rstrip("/")


def _case_ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    """``--id`` values split at commas, each a MedPix case id (checked before any request)."""
    found = [i.strip() for item in value for i in item.split(",") if i.strip()]
    bad = [i for i in found if not is_case_id(i)]
    if bad:
        raise click.BadParameter(f"{bad[0][:40]!r} is not a MedPix case id (MPX and digits, e.g. MPX1009); "
                                 "an Open-i search goes in --query")
    if value and not found:
        raise click.BadParameter("names no case id")
    return found


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--id", "ids", multiple=True, metavar="MPX1009[,MPX1024...]", callback=_case_ids,
              help="Case id(s): each is searched on Open-i and only its own images kept. Repeatable.")
@click.option("--query", help="An Open-i query: every MedPix image it finds is harvested.")
@click.option("--overview", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A release's images_overview.csv: refresh exactly those images (no Open-i search).")
@click.option("--out", required=True, type=OutputPath(file_okay=False, path_type=Path),
              help="Source folder to write (Case_topic.json, Descriptions.json, images/...).")
@click.option("--force", is_flag=True, help="Replace --out when it holds an earlier harvest (never another folder).")
@click.option("--cache", type=OutputPath(file_okay=False, path_type=Path),
              help="Raw response cache, reused by reruns [default: <out>.cache beside --out].")
@click.option("--rate", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Requests per second, all hosts together; 0 means no limit.")
@click.option("--retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="Retries on 429, 5xx, timeouts and connection errors.")
@click.option("--backoff", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds before the first retry; doubles each time (a longer Retry-After wins).")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              help="Seconds to wait for each response.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many Open-i records per query.")
@click.option("--openi-base", default=openi.DEFAULT_BASE, show_default=True, callback=http_base,
              help="Open-i server: every Open-i request (search, images) goes there.")
@click.option("--medpix-base", default=MEDPIX_BASE, show_default=True, callback=http_base,
              help="MedPix server: every MedPix request (REST, case pages, images) goes there.")
@click.option("--renderer", type=click.Choice(["chromium", "none"]), default=None,
              help="How case pages are read when REST fails: in headless chromium, or as a plain GET "
                   "returns them (mirrors of finished HTML) [default: chromium where installed].")
@click.option("--coll", default=openi.DEFAULT_COLLECTION, show_default=True, help="Open-i collection.")
@click.option("--overrides", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"A reviewed {REVIEW_FILE} (columns image,decision): keep/drop by image or case id.")
@click.option("--keep", multiple=True, metavar="ID", help="Keep this image (or case) despite the curation rules.")
@click.option("--drop", multiple=True, metavar="ID", help="Drop this image (or case).")
@click.option("--contact", help="An e-mail or URL added to the User-Agent so site operators can reach you.")
@click.option("-v", "--verbose", is_flag=True, help="Also log every curation drop.")
def main(ids: list[str], query: str | None, overview: Path | None, out: Path, force: bool,
         cache: Path | None, rate: float, retries: int, backoff: float, timeout: float, limit: int | None,
         openi_base: str, medpix_base: str, renderer: str | None, coll: str, overrides: tuple[Path, ...],
         keep: tuple[str, ...], drop: tuple[str, ...],
         contact: str | None, verbose: bool) -> None:
    """Harvest MedPix cases (Open-i records, MedPix case pages, images) into a MedPix 2.0 source folder.

    Give exactly one of --id, --query or --overview. The folder is built beside --out and
    moved into place only once it validates; flagged images are listed in
    OUT/curation_review.csv (edit its decision column and pass it back with --overrides).
    An interrupted run resumes from the cache: rerun the same command.

    \b
    Examples:
      python -m tools.scraper --id MPX1009,MPX1024 --out /tmp/mine
      python -m tools.scraper --overview ../shared/medpix-2.0/images_overview.csv --out /tmp/refresh
      python -m tools.scraper --query glioma --limit 200 --out /tmp/glioma --contact me@lab.org

    Before a large harvest, recheck the live formats against the release with
    'python -m tools.scraper check-live --id MPX1009' (see its --help).
    """
    case_ids = ids
    if sum(bool(x) for x in (case_ids, query, overview)) != 1:
        raise click.UsageError("give exactly one of --id, --query or --overview")
    cache = cache or out.parent / f"{out.name}.cache"
    try:
        SourceWriter.check(out, force)
        check_can_write_in(cache)
    except MedpixError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    _setup_logging(verbose)
    agent = f"{DEFAULT_USER_AGENT[:-1]}; {contact})" if contact else DEFAULT_USER_AGENT
    fetcher = Fetcher(ResponseCache(cache), rate=rate, retries=retries,
                      backoff=backoff, timeout=timeout, user_agent=agent)
    report = Report()
    pages = make_renderer(renderer, fetcher, timeout)
    try:
        curator = Curator.from_options(overrides, keep, drop)
        run(out, fetcher, ids=case_ids, query=query, overview=overview, base=openi_base, coll=coll, limit=limit,
            curator=curator, force=force, progress=rich_progress(), report=report, medpix_base=medpix_base,
            renderer=pages)
    except MedpixError as exc:
        _summary(report, fetcher, out)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _summary(report, fetcher, out)
        click.echo("interrupted: nothing written; rerun the same command to resume from the cache", err=True)
        sys.exit(130)
    finally:
        pages.close()
    _summary(report, fetcher, out)
    if isinstance(pages, LazyChromium) and isinstance(pages.inner, ChromiumRenderer):
        click.echo(f"renderer: chromium started in {pages.inner.start_seconds:.2f}s, "
                   f"{pages.inner.rendered} page(s) rendered")
    click.echo(f"review: flagged images are listed in {out / REVIEW_FILE}")


class LazyChromium:
    """Starts chromium at the first page that needs it (a harvest that REST answers never starts one)."""

    def __init__(self, fetcher: Fetcher, timeout: float) -> None:
        self.fetcher = fetcher
        self.timeout = timeout
        self.inner: Renderer | None = None
        self.start_seconds: float | None = None

    def _get(self) -> Renderer:
        if self.inner is None:
            try:
                chromium = ChromiumRenderer(self.fetcher, page_timeout=self.timeout)
            except RendererUnavailable as exc:
                logging.getLogger("tools.scraper").error("renderer: %s; case pages are read as served", exc)
                self.inner = PlainRenderer(self.fetcher)
            else:
                self.start_seconds = chromium.start_seconds
                self.inner = chromium
        return self.inner

    def render(self, url: str):
        return self._get().render(url)

    def forget(self, url: str) -> None:
        self._get().forget(url)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def make_renderer(choice: str | None, fetcher: Fetcher, timeout: float) -> Renderer:
    """The page renderer for ``--renderer``; chromium's absence is one line (an error when asked for)."""
    if choice == "none":
        return PlainRenderer(fetcher)
    reason = why_unavailable()
    if reason:
        if choice == "chromium":
            raise click.UsageError(f"--renderer chromium: {reason}")
        click.echo(f"renderer: {reason}; case pages are read as served (--renderer none)", err=True)
        return PlainRenderer(fetcher)
    return LazyChromium(fetcher, timeout)


def _summary(report: Report, fetcher: Fetcher, out: Path) -> None:
    for line in report.lines(fetcher.stats, out):
        click.echo(line)
