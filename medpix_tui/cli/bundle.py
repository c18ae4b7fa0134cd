"""``bundle build|verify|info|pack``: make, check, describe and ship bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .. import locations
from ..errors import InputError, ValidationError
from ..locations import Location
from ..progress import rich_progress
from .options import BUNDLE_RULE, LocatedOption, OutputPath


@click.group()
def bundle() -> None:
    """Build, verify, describe and pack offline bundles.

    \b
    Examples:
      medpix-tui bundle build --source ../shared/medpix-2.0 --out /tmp/b
      medpix-tui bundle verify /tmp/b && medpix-tui bundle pack /tmp/b /tmp/medpix.tar
      medpix-tui --bundle /tmp/medpix.tar         # the app on the archive, as on the folder
    """


def _model_line(manifest: dict[str, Any], why_none: str) -> str:
    """``model: NAME`` or ``model: none (why)``, as the last line of a build and in ``bundle info``."""
    model = manifest.get("model") or {}
    return f"model: {model['name']}" if model.get("name") else f"model: none ({why_none})"


@bundle.command()
@click.option("--source", "-s", type=click.Path(path_type=Path), default=None, cls=LocatedOption,
              locate=locations.default_source,
              help="A MedPix 2.0 release folder (Case_topic.json, Descriptions.json, images/). "
                   "Default: $MEDPIX_SOURCE, else ../shared/medpix-2.0 beside a checkout; "
                   "installed outside one, it must be named.")
@click.option("--out", "-o", type=OutputPath(path_type=Path), default=None, cls=LocatedOption,
              locate=locations.default_bundle, help=f"Bundle folder to create ({BUNDLE_RULE.split(';')[0]}).")
@click.option("--force", is_flag=True,
              help="Replace an existing bundle (atomically); a folder that is not a bundle is never replaced.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, cls=LocatedOption,
              locate=locations.model_dir,
              help="The CLIP checkpoint folder to ship (default: the checkout's bundle/model, else the one "
                   "installed with medpix-tui).")
@click.option("--no-model", is_flag=True,
              help="Leave out the CLIP checkpoint and embeddings (the model commands then refuse).")
@click.option("--all-problems", is_flag=True,
              help="When the source is invalid, list every problem, one a line (by default: the first 20).")
def build(source: Path | None, out: Path | None, force: bool, model_dir: Path | None, no_model: bool,
          all_problems: bool) -> None:
    """Validate a source folder and build a bundle from it, atomically.

    Every problem in the source is found before anything is written (exit status 2): one
    line names the first 20, and --all-problems lists them all.
    The last line names the model the bundle ships, or says it has none.

    \b
    Examples:
      medpix-tui bundle build --source ../shared/medpix-2.0 --out /tmp/b
      medpix-tui bundle build --source DIR           # the default bundle, which medpix-tui opens
      medpix-tui bundle build -s DIR -o /tmp/b --model runs/best-checkpoint
    """
    from ..bundle import build_bundle, open_bundle
    from ..source import SPLIT_FILE

    if model_dir is not None and no_model:
        raise InputError("--model and --no-model exclude each other")
    src = locations.default_source(source)
    if src.path is None:
        raise InputError(f"no source release: {src.rule}")
    target = Location(out, "--out") if out is not None else locations.default_bundle()
    try:
        build_bundle(src.path, target.require(), force=force, progress=rich_progress(), with_model=not no_model,
                     model_dir=model_dir,
                     parents=out is None)  # the user data folder may not exist yet; a named --out's parent must
    except ValidationError as exc:
        if not all_problems:
            raise
        for problem in exc.problems:
            click.echo(f"problem: {problem}", err=True)
        raise InputError(f"invalid source: {len(exc.problems)} problem(s), listed above") from None
    manifest = open_bundle(target.require()).manifest
    counts = manifest["counts"]
    where = target.path if out is not None else target.describe()
    if SPLIT_FILE not in manifest["source"].get("digests", {}):
        click.echo(f"warning: {manifest['source']['path']} has no {SPLIT_FILE}: no case of this bundle has a "
                   "split (train/dev/test), so --split and split-based exports find none", err=True)
    click.echo(f"built {where}: {counts['Clinical_Reports']} cases, {counts['Image_Descriptions']} images "
               f"({counts['images_ct']} CT, {counts['images_mr']} MR); "
               f"{_model_line(manifest, '--no-model: the model commands refuse this bundle')}")


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(path: Path, as_json: bool) -> None:
    """Recheck every file's sha256 (a bundle folder, or an archive from `bundle pack`); exit 1 naming each
    missing, added or changed file.

    \b
    Examples:
      medpix-tui bundle verify bundle/medpix-2.0
      medpix-tui bundle verify /media/usb/medpix.tar --json
    """
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
    """Print a bundle's counts, versions and provenance.

    \b
    Examples:
      medpix-tui bundle info bundle/medpix-2.0
      medpix-tui bundle info /tmp/medpix.tar --json | jq .counts
    """
    from ..bundle import open_bundle

    data = open_bundle(path).info()
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    counts = data["counts"]
    for label, value in (("path", data["path"]), ("format", data["format_version"]),
                         ("built by", f"medpix-tui {data['tool_version']}"),
                         ("created", data["created"]), ("cases", counts["Clinical_Reports"]),
                         ("images",
                          f"{counts['Image_Descriptions']} ({counts['images_ct']} CT, {counts['images_mr']} MR)"),
                         ("splits", ", ".join(f"{k} {v}" for k, v in sorted(counts["splits"].items()))),
                         ("model", _model_line(data, "the model commands refuse this bundle").removeprefix("model: ")),
                         ("predicted", _predictions_line(data.get("model") or {})),
                         ("files", f"{data['files']} ({data['bytes'] / 1e6:.1f} MB)")):
        click.echo(f"{label:>9}: {value}")


def _predictions_line(model: dict) -> str:
    """What the bundle says about its images' ``Prediction`` documents."""
    summary = model.get("predictions") if model else None
    if not model:
        return "none (the bundle has no model)"
    if not summary:
        return "none (built before predictions were stored; rebuild the bundle)"
    calibrated = "calibrated" if summary["calibrated"] else "uncalibrated, no OOD score"
    return f"{summary['count']} images ({calibrated}; {summary['unsure']} unsure)"


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("archive", type=OutputPath(path_type=Path))
@click.option("--force", is_flag=True, help="Replace an earlier archive of this tool (never another file).")
def pack(path: Path, archive: Path, force: bool) -> None:
    """Write a verified bundle as one archive that --bundle opens like the folder.

    \b
    Examples:
      medpix-tui bundle pack bundle/medpix-2.0 /media/usb/medpix.tar   # for an air-gapped lab
      medpix-tui --bundle /media/usb/medpix.tar                        # opens it (unpacked once, verified)
    """
    from ..bundle import pack_bundle

    pack_bundle(path, archive, force=force, progress=rich_progress())
    click.echo(f"packed {path} into {archive} ({archive.stat().st_size / 1e6:.1f} MB)")


COMMANDS = [bundle]
