"""``query``, ``show``, ``export`` and ``sql``: the data commands."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..export import (
    CSV_FORMULAS,
    DEFAULT_FORMAT,
    FORMATS,
    LABELS,
    check_keyword_options,
    format_help,
    format_names,
    sql_csv_row,
)
from ..locations import default_bundle
from ..progress import rich_progress
from ..query import (
    and_filters,
    check_projection,
    field_filter,
    numbers_as_numbers,
    parse_field_args,
    parse_filter,
    parse_projection,
    parse_sort,
)
from ..source import SPLITS
from ..store import CASES, COLLECTIONS, IMAGES, NUMERIC_FIELDS, REPORTS, Store
from .options import BUNDLE_RULE, FiniteFloatRange, LocatedOption, OutputPath

bundle_option = click.option("--bundle", "bundle_path", type=click.Path(path_type=str), default=None,
                             cls=LocatedOption, locate=default_bundle,
                             help=f"Bundle folder or archive (the root --bundle, else the {BUNDLE_RULE}).")
mongo_option = click.option("--mongo-uri", default=None, envvar="MEDPIX_MONGO_URI",
                            help="Query a MongoDB server instead of the bundle's embedded store (mongodb://host/...).")


def open_bundle_from(ctx: click.Context, bundle_path: str | None) -> Any:
    """The bundle named here, on the root command, or the default one (built when missing)."""
    from .options import resolve

    return resolve(bundle_path or (ctx.obj or {}).get("bundle"))


def store_from(ctx: click.Context, bundle_path: str | None, mongo_uri: str | None) -> Store:
    """A MongoDB server when ``--mongo-uri`` is given, else the bundle's store."""
    if mongo_uri:
        return Store.connect(mongo_uri)
    return open_bundle_from(ctx, bundle_path).store


def build_filter(store: Store, collection: str, fields: tuple[str, ...], filter_json: str | None,
                 split: str | None) -> dict[str, Any]:
    """AND together ``--field`` pairs, a ``--filter`` (ages compared as numbers) and a ``--split``."""
    return and_filters(field_filter(parse_field_args(fields)) if fields else {},
                       numbers_as_numbers(store, collection, parse_filter(filter_json)) if filter_json else {},
                       store.split_filter(split) if split else {})


def _summary(collection: str, doc: dict[str, Any]) -> tuple[str, ...]:
    if collection == CASES:
        case = doc.get("Case") or {}
        return (doc.get("U_id", ""), str(len(doc.get("TAC") or [])), str(len(doc.get("MRI") or [])),
                str(case.get("Title") or ""))  # a null title reads empty, not "None"
    desc = doc.get("Description") or {}
    return (doc.get("image", ""), doc.get("U_id", ""), doc.get("Type", ""), str(desc.get("Plane") or ""),
            str(doc.get("Location Category") or ""), str(desc.get("Caption") or "")[:80])


def _print_table(collection: str, docs: list[dict[str, Any]], scores: list[float] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..render import counted

    headers = (("Case", "CT", "MR", "Title") if collection == CASES
               else ("Image", "Case", "Type", "Plane", "Location", "Caption"))
    table = Table()
    for header in (("Score",) if scores else ()) + headers:
        # ids stay whole, so they can be copied into `show`; the caption or title wraps instead
        whole = header in ("Image", "Case", "Score", "Type", "CT", "MR")
        table.add_column(header, no_wrap=whole, min_width=len("MPX1028_synpic24633") if header == "Image" else None,
                         ratio=None if whole else {"Caption": 3, "Title": 3}.get(header, 1))
    for i, doc in enumerate(docs):
        table.add_row(*((f"{scores[i]:.2f}",) if scores else ()), *map(Text, _summary(collection, doc)))
    console = Console()
    console.print(counted(len(docs), "result"), highlight=False)  # a line of its own: a title wraps to the table
    console.print(table)


@click.command()
@bundle_option
@mongo_option
@click.option("--collection", "-c", type=click.Choice(COLLECTIONS), default=IMAGES, show_default=True)
@click.option("--field", "-f", "fields", multiple=True, metavar="PATH=REGEX",
              help="Match a dotted field with a case-insensitive regex; repeat to AND (the authors' GUI query).")
@click.option("--filter", "filter_json", metavar="JSON", help='A read-only MongoDB filter, e.g. \'{"Type": "MR"}\'.')
@click.option("--keyword", "-k", metavar="WORDS", help="Ranked keyword search over caption, case and topic (images).")
@click.option("--split", type=click.Choice(SPLITS), help="Only the authors' split.")
@click.option("--sort", metavar="FIELDS",
              help="Comma-separated dotted fields, '-' for descending "
                   f"({', '.join(sorted(NUMERIC_FIELDS))} sorts as numbers).")
@click.option("--skip", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=0, help="At most this many results (0: all).")
@click.option("--fields-out", "projection", metavar="FIELDS", help="Only these dotted fields in the output.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def query(ctx: click.Context, bundle_path: str | None, mongo_uri: str | None, collection: str, fields: tuple[str, ...],
          filter_json: str | None, keyword: str | None, split: str | None, sort: str | None, skip: int, limit: int,
          projection: str | None, as_json: bool) -> None:
    """Query a collection: field regexes, a JSON filter, keywords, or all together.

    \b
    Examples:
      medpix-tui query -c Image_Descriptions --field Description.Caption=glioma --json
      medpix-tui query -c Clinical_Reports --field Case.Title=fracture --field Topic.Category=trauma
      medpix-tui query --filter '{"Type": "MR", "Location Category": "Head"}' --limit 5
      medpix-tui query --keyword "ring enhancing lesion" --split test
    """
    store = store_from(ctx, bundle_path, mongo_uri)
    flt = build_filter(store, collection, fields, filter_json, split)
    paths = parse_projection(projection)
    check_projection(store, collection, paths)
    scores = None
    if keyword is not None:
        check_keyword_options(collection, sort)
        hits = store.keyword_search(keyword, flt=flt, limit=(skip + limit) if limit else 0,
                                    collection=collection)[skip:]
        scores = [s for s, _ in hits]
        docs = [d for _, d in hits]
        if collection == REPORTS:
            docs = [store.get_report(d["image"]) or d for d in docs]
        if paths:
            from ..query import project

            docs = [project(d, paths) for d in docs]
    else:
        docs = store.find(collection, flt, sort=parse_sort(sort), skip=skip, limit=limit, projection=paths)
    if as_json:
        click.echo(json.dumps(docs, ensure_ascii=False, indent=1))
    elif paths:
        for doc in docs:
            click.echo(json.dumps(doc, ensure_ascii=False))
    else:
        _print_table(collection, docs, scores)


@click.command()
@click.argument("item_id")
@bundle_option
@mongo_option
@click.option("--json", "as_json", is_flag=True, help="Print the document(s) as JSON instead.")
@click.pass_context
def show(ctx: click.Context, item_id: str, bundle_path: str | None, mongo_uri: str | None, as_json: bool) -> None:
    """Show a case (MPX1009) or an image (MPX1009_synpic46283) as the MedPix page would.

    \b
    Examples:
      medpix-tui show MPX1009                      # the case: history, findings, discussion, its images
      medpix-tui show MPX1009_synpic46283          # one image: caption, modality, plane, its case
      medpix-tui show MPX1009 --json | jq '.images | length'
    """
    from rich.console import Console

    from ..render import case_page, image_page

    store = store_from(ctx, bundle_path, mongo_uri)
    case = store.get_case(item_id)
    if case is not None:
        images = store.images_of_case(item_id)
        if as_json:
            click.echo(json.dumps({"case": case, "images": images}, ensure_ascii=False, indent=1))
        else:
            Console().print(case_page(case, images, store.split_of(item_id)))
        return
    image = store.get_image(item_id)
    if image is None:
        raise InputError(f"no case or image with id {item_id!r}{_did_you_mean(store, item_id)}")
    owner = store.get_case(image["U_id"])
    if as_json:
        click.echo(json.dumps({"image": image, "case": owner}, ensure_ascii=False, indent=1))
    else:
        Console().print(image_page(image, owner))


def _did_you_mean(store: Any, item_id: str) -> str:
    """'; did you mean ...?' when the id differs from one in the store only by case or spaces (mpx1009)."""
    head, _, tail = item_id.strip().partition("_")
    guess = head.upper() + (f"_{tail.lower()}" if tail else "")
    if guess != item_id and (store.get_case(guess) is not None or store.get_image(guess) is not None):
        return f"; did you mean {guess!r}?"
    return ""


#: Options that --from-manifest takes from the manifest (giving one too is refused).
_QUERY_OPTIONS = ("fmt", "label", "csv_formulas", "collection", "fields", "filter_json", "keyword", "sort", "limit",
                  "split", "exclude_leaks", "mongo_uri")


@click.group(invoke_without_command=True,
             help="Export the bundle, or a query's results, for analysis, training or retrieval.\n\n\b\n"
                  + format_help() + "\n\n"
                  "Every export writes manifest.json beside its files (a one-file export: <file>.manifest.json): "
                  "the bundle's digest, the tool's version, the query, the format and options, the counts and "
                  "the sha256 of each file. --from-manifest M writes the same bytes again; "
                  "'medpix-tui export verify D' checks an export.\n\n\b\nExamples:\n"
                  "  medpix-tui export --format parquet --out /tmp/medpix-parquet\n"
                  "  medpix-tui export --format imagefolder --label location --split train --out /tmp/train\n"
                  "  medpix-tui export --format csv --field Description.Caption=glioma --out /tmp/glioma\n"
                  "  medpix-tui export --format hf --exclude-leaks --out /tmp/hf\n"
                  "  medpix-tui export verify /tmp/hf")
@bundle_option
@mongo_option
@click.option("--format", "fmt", type=click.Choice(format_names()), default=DEFAULT_FORMAT, show_default=True)
@click.option("--out", "-o", "out_name", type=OutputPath(path_type=str),
              help="Folder to create (a file for " + ", ".join(f"--format {f.name}" for f in FORMATS.values()
                                                            if f.dataset and not f.folder) + ").")
@click.option("--label", type=click.Choice(list(LABELS)), default="modality", show_default=True,
              help="Class folders of an imagefolder export.")
@click.option("--csv-formulas", type=click.Choice(CSV_FORMULAS), default="escape", show_default=True,
              help="CSV cells starting with = + - @ get a leading ' so spreadsheets show them as text; "
                   "'keep' leaves them as they are, for pandas and other programs (ACR code -1.-1 stays -1.-1).")
@click.option("--collection", "-c", type=click.Choice(COLLECTIONS), default=IMAGES, show_default=True)
@click.option("--field", "-f", "fields", multiple=True, metavar="PATH=REGEX", help="Export only matching documents.")
@click.option("--filter", "filter_json", metavar="JSON", help="Export only documents matching this filter.")
@click.option("--keyword", "-k", metavar="WORDS", help="Export the images these keywords rank (with --limit: the top).")
@click.option("--sort", metavar="FIELDS", help="Comma-separated dotted fields, '-' for descending (row order).")
@click.option("--limit", type=int, default=0, help="At most this many documents (0: all).")
@click.option("--split", type=click.Choice(SPLITS), help="Only the authors' split.")
@click.option("--exclude-leaks", is_flag=True,
              help="Drop from train the near-duplicates of dev and test images (listed in the manifest).")
@click.option("--from-manifest", "from_manifest", type=click.Path(path_type=Path), metavar="M",
              help="Redo the export an export manifest (or export folder) describes, byte for byte.")
@click.option("--force", is_flag=True,
              help="Replace an earlier export (known by its manifest) or a plain file of the format; nothing else.")
@click.pass_context
def export(ctx: click.Context, bundle_path: str | None, mongo_uri: str | None, fmt: str, out_name: str | None,
           label: str, csv_formulas: str, collection: str, fields: tuple[str, ...], filter_json: str | None,
           keyword: str | None, sort: str | None, limit: int, split: str | None, exclude_leaks: bool,
           from_manifest: Path | None, force: bool) -> None:
    from ..export import ExportQuery, library_differences, read_manifest, reproduce, run_export
    from ..search import parse_keywords

    if ctx.invoked_subcommand:
        return
    if out_name is None:
        raise InputError("export needs --out (the folder or file to write)")
    out = Path(out_name)
    given = [name for name in _QUERY_OPTIONS
             if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)]
    if from_manifest is not None:
        if given:
            flags = ", ".join("--" + {"fmt": "format", "filter_json": "filter", "fields": "field"}.get(n, n)
                              .replace("_", "-") for n in given)
            raise InputError(f"--from-manifest takes the format and the query from the manifest: drop {flags}")
        for line in library_differences(read_manifest(from_manifest)):
            click.echo(f"note: {line}; its files may differ", err=True)
        result = reproduce(open_bundle_from(ctx, bundle_path), from_manifest, out, force=force,
                           progress=rich_progress())
        click.echo(f"wrote {len(result.files)} file(s) to {out} (manifest: {result.manifest_path})")
        return
    for option in ("label", "csv_formulas"):
        if option in given and option not in FORMATS[fmt].options:
            users = " or ".join(f"--format {f.name}" for f in FORMATS.values() if option in f.options)
            raise InputError(f"--{option.replace('_', '-')} applies to {users}, not --format {fmt}")
    bundle = None if mongo_uri else open_bundle_from(ctx, bundle_path)
    store = bundle.store if bundle is not None else store_from(ctx, bundle_path, mongo_uri)
    if keyword is not None:
        parse_keywords(keyword)  # an empty or wordless --keyword is an error here as in query, not "everything"
    query = ExportQuery(collection, fields, parse_filter(filter_json) if filter_json else None, keyword, sort, limit,
                        split)
    result = run_export(store, out, fmt, query=query, bundle=bundle, label=label, exclude_leaks=exclude_leaks,
                        force=force, progress=rich_progress(), csv_formulas=csv_formulas)
    dropped = result.manifest["excluded_leaks"]
    click.echo(f"wrote {len(result.files)} file(s) to {out} (manifest: {result.manifest_path})"
               + (f"; left out {len(dropped)} train image(s) that leak into dev/test" if exclude_leaks else ""))


@export.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def export_verify(path: Path) -> None:
    """Check an export folder (or one-file export) against its manifest: exit 0 ok, 1 listing each difference.

    \b
    Examples:
      medpix-tui export verify /tmp/hf              # a folder export
      medpix-tui export verify /tmp/images.json     # a one-file export, beside its .manifest.json
    """
    from ..export import verify_export

    problems = verify_export(path)
    for line in problems:
        click.echo(line)
    if problems:
        raise SystemExit(1)
    click.echo(f"{path}: every file matches its manifest")


#: A table cell shows at most this many characters: rich measured a 4 MB cell for minutes.
TABLE_CELL_CHARS = 1000


@click.command()
@click.argument("statement")
@bundle_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds the statement may run before it is stopped.")
@click.option("--max-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="A result with more rows is an error (add a LIMIT).")
@click.option("--csv-formulas", type=click.Choice(CSV_FORMULAS), default="escape", show_default=True,
              help="With --format csv: text cells starting with = + - @ get a leading ' so spreadsheets show "
                   "them as text; 'keep' leaves them as they are, for pandas and other programs. Numbers are "
                   "never changed.")
@click.pass_context
def sql(ctx: click.Context, statement: str, bundle_path: str | None, fmt: str, timeout: float, max_rows: int,
        csv_formulas: str) -> None:
    """Run SQL (DuckDB) over the bundle's Parquet: tables images, cases, image_reports.

    SQL only reads those tables: queries run (SELECT, WITH, FROM-first, VALUES, DESCRIBE,
    SHOW, SUMMARIZE, PIVOT, EXPLAIN); CREATE, DROP, INSERT and other writes, COPY, EXPORT,
    ATTACH, INSTALL, LOAD, SET, PRAGMA and file functions (read_text, read_csv, glob...)
    are refused. Ctrl+C stops a running statement.

    \b
    Example:
      medpix-tui sql "SELECT location_category, modality, count(*) n FROM images GROUP BY ALL ORDER BY n DESC"
    """
    from ..sql import check_sql, connect, explain_text, jsonable, run_sql

    statements = check_sql(statement)  # a refused statement fails before the bundle is opened
    bundle = open_bundle_from(ctx, bundle_path)
    columns, rows = run_sql(connect(bundle.parquet_dir), statement, timeout=timeout, max_rows=max_rows)
    if len(statements) > 1:
        click.echo(f"note: ran {len(statements)} statements; the result is the last one's", err=True)
    plan = explain_text(columns, rows)
    if fmt == "table" and plan is not None:  # a plan line by line, not one cell cut at TABLE_CELL_CHARS
        click.echo(plan)
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(sql_csv_row(row, csv_formulas) for row in rows)
    elif fmt == "json":
        docs = [dict(zip(columns, (jsonable(v) for v in r), strict=True)) for r in rows]
        click.echo(json.dumps(docs, ensure_ascii=False, allow_nan=False, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from ..render import counted

        table = Table()
        for column in columns:
            table.add_column(Text(column))
        cut = False
        for row in rows:
            cells = ["NULL" if v is None else str(v) for v in row]
            cut = cut or any(len(c) > TABLE_CELL_CHARS for c in cells)
            table.add_row(*(Text(c if len(c) <= TABLE_CELL_CHARS else c[:TABLE_CELL_CHARS - 1] + "…") for c in cells))
        console = Console()
        console.print(counted(len(rows), "row"), highlight=False)
        console.print(table)
        if cut:
            click.echo(f"note: values longer than {TABLE_CELL_CHARS} characters are cut in the table; "
                       "--format json or csv gives them whole", err=True)


COMMANDS = [query, show, export, sql]
