"""Model commands: ``classify``, ``eval``, ``similar`` and ``search-images``.

torch and the model load inside each command, so ``medpix-tui --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..source import SPLITS


def _bundle_model(ctx: click.Context, bundle_path: str | None) -> Any:
    from ..bundle import resolve_bundle
    from ..model.service import BundleModel
    from ..progress import rich_progress

    root = bundle_path or (ctx.obj or {}).get("bundle")
    return BundleModel(resolve_bundle(root, progress=rich_progress()))


def _bundle_option(f: Any) -> Any:
    return click.option("--bundle", "bundle_path", type=click.Path(path_type=str), default=None,
                        help="Bundle folder or archive (default: the root --bundle, else the default bundle).")(f)


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


@click.command("classify")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_bundle_option
@_json_option
@click.pass_context
def classify(ctx: click.Context, files: tuple[Path, ...], bundle_path: str | None, as_json: bool) -> None:
    """Classify the modality (CT/MR) and body location of PNG, JPEG or DICOM FILES.

    Zero-shot, with the MedPix 2.0 paper's prompts; prints the most probable class of
    each task and every class's probability. With --json, one object per line per file.

    \b
    Examples:
      medpix-tui classify scan.png slice.dcm
      medpix-tui classify scan.png --json
    """
    model = _bundle_model(ctx, bundle_path)
    failed = 0
    for path in files:
        try:
            result = model.classify(path)
        except InputError as exc:
            if len(files) == 1:
                raise  # one file: its error is the whole story
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        if as_json:
            click.echo(json.dumps(result))
        else:
            probs = result["probabilities"]
            click.echo(f"{path}: {result['modality']} ({_pct(probs['modality'][result['modality']]).strip()}), "
                       f"{result['location']} ({_pct(probs['location'][result['location']]).strip()})")
    if failed:
        raise InputError(f"{failed} of {len(files)} file(s) could not be classified")


def _print_task(task: str, detail: dict[str, Any], paper: float, ci95: list[float] | None) -> None:
    """Accuracy beside the paper's, then per class: count, recall, and its confusion row."""
    interval = f"95% CI {_pct(ci95[0]).strip()} to {_pct(ci95[1]).strip()} over cases; " if ci95 else ""
    click.echo(f"{task}: {_pct(detail['accuracy'])}  ({interval}paper {_pct(paper).strip()})")
    classes = detail["confusion"]["classes"]
    width = max(len(c) for c in classes)
    click.echo(f"  {'truth':<{width}}  {'n':>4}  {'acc':>6}   predicted: " + " ".join(f"{c[:6]:>6}" for c in classes))
    for cls, row in zip(classes, detail["confusion"]["matrix"], strict=True):
        info = detail["per_class"][cls]
        click.echo(f"  {cls:<{width}}  {info['n']:>4}  {_pct(info['accuracy']):>6}              "
                   + " ".join(f"{n:>6}" for n in row))


@click.command("eval")
@_bundle_option
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Which split to score.")
@_json_option
@click.pass_context
def eval_command(ctx: click.Context, bundle_path: str | None, split: str, as_json: bool) -> None:
    """Recompute zero-shot accuracy of the bundle's model with the paper's prompts.

    Overall and per class, with the confusion matrix (rows: truth, columns: predicted),
    beside the paper's figures (88.0% modality, 52.2% location on its test split). The 95%
    interval comes from resampling whole cases: a case's images are not independent.

    \b
    Examples:
      medpix-tui eval
      medpix-tui eval --split dev --json
    """
    from ..progress import rich_progress

    result = _bundle_model(ctx, bundle_path).evaluate(split, rich_progress())
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"model {result['model']} on the {split} split ({result['n']} images), paper's prompts")
    for task in ("modality", "location"):
        _print_task(task, result[task], result["paper"][f"{task}_accuracy"], result.get(f"{task}_ci95"))


def _print_ranked(result: dict[str, Any]) -> None:
    click.echo("images:")
    for row in result["images"]:
        click.echo(f"  {row['score']:.3f}  {row['image']}  case {row['case']}  {row['modality']}, {row['location']}")
    click.echo("cases:")
    for row in result["cases"]:
        click.echo(f"  {row['score']:.3f}  {row['case']}  {row['title'][:70]}  (via {row['image']})")


@click.command("similar")
@click.argument("target")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="How many images and cases.")
@_bundle_option
@_json_option
@click.pass_context
def similar(ctx: click.Context, target: str, k: int, bundle_path: str | None, as_json: bool) -> None:
    """The K images and cases most similar to TARGET, by cosine of image embeddings.

    TARGET is an image id of the bundle (its own image and case are left out) or a
    PNG, JPEG or DICOM file from outside.

    \b
    Examples:
      medpix-tui similar MPX1009_synpic46283
      medpix-tui similar scan.dcm -k 10 --json
    """
    result = _bundle_model(ctx, bundle_path).similar(target, k)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_ranked(result)


@click.command("search-images")
@click.argument("text")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="How many images and cases.")
@_bundle_option
@_json_option
@click.pass_context
def search_images(ctx: click.Context, text: str, k: int, bundle_path: str | None, as_json: bool) -> None:
    """The K images (and cases) that best match TEXT, by cosine in the CLIP space.

    \b
    Examples:
      medpix-tui search-images "ring enhancing lesion"
      medpix-tui search-images "axial CT of the chest" -k 5 --json
    """
    result = _bundle_model(ctx, bundle_path).search(text, k)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_ranked(result)


COMMANDS = [classify, eval_command, similar, search_images]
