"""``bundle build|verify|info|pack``: make, check, describe and ship bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..progress import rich_progress


@click.group()
def bundle() -> None:
    """Build, verify, describe and pack offline bundles."""


@bundle.command()
@click.option("--source", "-s", type=click.Path(path_type=Path), required=True,
              help="A MedPix 2.0 release folder (Case_topic.json, Descriptions.json, images/).")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Bundle folder to create.")
@click.option("--force", is_flag=True,
              help="Replace an existing bundle (atomically); a folder that is not a bundle is never replaced.")
@click.option("--no-model", is_flag=True, help="Leave out the CLIP checkpoint and embeddings.")
def build(source: Path, out: Path, force: bool, no_model: bool) -> None:
    """Validate a source folder and build a bundle from it, atomically.

    Every problem in the source is reported at once (exit status 2) and nothing is written.
    """
    from ..bundle import build_bundle, open_bundle

    build_bundle(source, out, force=force, progress=rich_progress(), with_model=not no_model)
    counts = open_bundle(out).manifest["counts"]
    click.echo(f"built {out}: {counts['Clinical_Reports']} cases, {counts['Image_Descriptions']} images "
               f"({counts['images_ct']} CT, {counts['images_mr']} MR)")


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(path: Path, as_json: bool) -> None:
    """Recheck every file's sha256; exit 1 naming each missing, added or changed file."""
    from ..bundle import verify_bundle

    report = verify_bundle(path, progress=rich_progress())
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "checked": report.checked, "missing": report.missing,
                               "added": report.added, "changed": report.changed}))
    else:
        for line in report.lines():
            click.echo(line)
        click.echo(f"{'OK' if report.ok else 'FAILED'}: {report.checked} files checked, "
                   f"{len(report.missing)} missing, {len(report.added)} added, {len(report.changed)} changed")
    sys.exit(0 if report.ok else 1)


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
def info(path: Path, as_json: bool) -> None:
    """Print a bundle's counts, versions and provenance."""
    from ..bundle import open_bundle

    data = open_bundle(path).info()
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    counts = data["counts"]
    model = data.get("model") or {}
    for label, value in (("path", data["path"]), ("format", data["format_version"]),
                         ("built by", f"medpix-tui {data['tool_version']}"),
                         ("created", data["created"]), ("cases", counts["Clinical_Reports"]),
                         ("images",
                          f"{counts['Image_Descriptions']} ({counts['images_ct']} CT, {counts['images_mr']} MR)"),
                         ("splits", ", ".join(f"{k} {v}" for k, v in sorted(counts["splits"].items()))),
                         ("model", model.get("name", "none") if model else "none"),
                         ("files", f"{data['files']} ({data['bytes'] / 1e6:.1f} MB)")):
        click.echo(f"{label:>9}: {value}")


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing archive.")
def pack(path: Path, archive: Path, force: bool) -> None:
    """Write a verified bundle as one archive that --bundle opens like the folder."""
    from ..bundle import pack_bundle

    pack_bundle(path, archive, force=force, progress=rich_progress())
    click.echo(f"packed {path} into {archive} ({archive.stat().st_size / 1e6:.1f} MB)")


COMMANDS = [bundle]
