"""Model commands: ``classify``, ``eval``, ``similar`` and ``search-images``.

Each command checks its arguments first, then loads only what it uses: the image tower
runs in numpy (no torch), and the text tower (transformers) loads only for text search.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..errors import InputError, printable
from ..source import SPLITS


def _progress(description: str, total: int) -> Any:
    """rich's progress bar, imported only when something long runs (a first build, an eval)."""
    from ..progress import rich_progress

    return rich_progress()(description, total)


def _bundle_model(ctx: click.Context, bundle_path: str | None) -> Any:
    from ..model.service import BundleModel
    from .options import resolve

    return BundleModel(resolve(bundle_path or (ctx.obj or {}).get("bundle"), progress=_progress))


def _bundle_option(f: Any) -> Any:
    return click.option("--bundle", "bundle_path", type=click.Path(path_type=str), default=None,
                        help="Bundle folder or archive (default: the root --bundle, else the default bundle).")(f)


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


#: File name endings ``classify --study DIR`` picks up; files without one are taken when they are DICOM.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".webp", ".bmp")
#: The most images one study may hold (bounded input: each is decoded and embedded).
MAX_STUDY_IMAGES = 1000


def _study_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files of a study folder (not its subfolders), and what was left out and why."""
    from ..model.dicom import is_dicom, is_dicomdir

    found: list[Path] = []
    others: list[str] = []
    indexes: list[str] = []
    hidden = folders = 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            hidden += 1
        elif path.is_dir():
            folders += 1
        elif path.name.upper().startswith("DICOMDIR"):
            indexes.append(path.name)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
        elif path.is_file() and not path.suffix and is_dicom(path):  # a series' files often have no suffix
            if is_dicomdir(path):  # a DICOMDIR known by content, under another name
                indexes.append(path.name)
            else:
                found.append(path)
        else:
            others.append(path.name)
        if len(found) > MAX_STUDY_IMAGES:
            raise InputError(f"{folder}: more than {MAX_STUDY_IMAGES} images for one study")
    if not found:
        raise InputError(f"{folder}: no PNG, JPEG, TIFF, WebP or DICOM files in this folder"
                         + (f" ({folders} subfolder(s) are not searched)" if folders else ""))

    def named(names: list[str]) -> str:
        return ", ".join(printable(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")

    skipped = []
    if indexes:
        skipped.append(f"{len(indexes)} DICOMDIR index file(s), which hold no image ({named(indexes)})")
    if others:
        skipped.append(f"{len(others)} file(s) that are not images ({named(others)})")
    if hidden:
        skipped.append(f"{hidden} hidden file(s) (names starting with '.')")
    if folders:
        skipped.append(f"{folders} subfolder(s) (give each series folder itself)")
    return found, skipped


def classify_paths(files: tuple[str, ...], study: bool) -> tuple[list[Path], list[str]]:
    """The files to classify, checked before anything is loaded (folders only for a study),
    and notes on what a study's listing left out (its folders' other files, duplicates)."""
    from ..files import check_file

    if any(not name.strip() for name in files):
        raise InputError("an empty file name was given")
    paths: list[Path] = []
    notes: list[str] = []
    for path in map(Path, files):
        if path.is_dir() and study:
            found, skipped = _study_files(path)
            paths += found
            notes += [f"{path}: left out {what}" for what in skipped]
        elif path.is_dir() and len(files) == 1:
            raise InputError(f"{path} is a folder: classify its images as one study with --study")
        else:
            if study or len(files) == 1:
                check_file(path)
            paths.append(path)  # among several files, a folder or a missing file is that file's error
    if study:
        seen: dict[str, Path] = {}
        for path in paths:
            seen.setdefault(os.path.realpath(path), path)
        if len(seen) < len(paths):
            notes.append(f"left out {len(paths) - len(seen)} file(s) given twice (the same file by another "
                         "name or link counts once in a study)")
            paths = list(seen.values())
    if len(paths) > MAX_STUDY_IMAGES:
        raise InputError(f"more than {MAX_STUDY_IMAGES} files at once; classify them in parts")
    return paths, notes


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


def answer_line(answer: dict[str, Any]) -> str:
    """One answer as text: the modality (and where it comes from), the location, or why not."""
    name = "study" if answer.get("study") else printable(answer["file"])
    if answer.get("frames") and answer["frames"] > 1 and answer.get("frame"):
        name += f" [frame {answer['frame']} of {answer['frames']}]"
    if answer["status"] == "not_ct_or_mr" and answer.get("dicom_modality"):
        return f"{name}: not CT or MR (DICOM Modality {answer['dicom_modality']})"
    if answer["status"] == "not_ct_or_mr" and answer.get("study"):
        return f"{name}: not CT or MR: {answer['reason']}"
    probs = answer.get("probabilities") or {}
    modality = answer["modality"]
    if modality and answer["modality_source"] == "dicom":
        if answer.get("study") and not answer.get("model_modality"):
            what = f"{modality} (DICOM tag)"
        elif answer.get("study"):
            verdict = "disagrees" if answer["disagrees"] else "agrees"
            what = f"{modality} (DICOM tag; model {answer['model_modality']} pooled, {verdict})"
        else:
            verdict = "disagrees" if answer["disagrees"] else "agrees"
            what = (f"{modality} (DICOM tag; model {answer['model_modality']} "
                    f"{_pct(answer['model_probability']).strip()}, {verdict})")
    elif modality:
        what = f"{modality} ({_pct(probs['modality'][modality]).strip()})"
    else:
        what = ""
    if answer["status"] != "ok":
        return f"{name}: {what + ', ' if what else ''}unsure: {answer['reason']}"
    location = answer["location"]
    return f"{name}: {what}, {location} ({_pct(probs['location'][location]).strip()})"


def _failed(file: str, error: Exception | str) -> dict[str, str]:
    """The ``--json`` object of a file that could not be classified."""
    return {"file": file, "status": "error", "reason": str(error)}


@click.command("classify")
@click.argument("files", nargs=-1, required=True)
@click.option("--study", is_flag=True, help="FILES (or a folder of them) are one study: pool them into one answer.")
@click.option("--frame", type=click.IntRange(min=1), default=None,
              help="Frame of a multi-frame DICOM file, from 1 (default: the middle one).")
@_bundle_option
@_json_option
@click.pass_context
def classify(ctx: click.Context, files: tuple[str, ...], study: bool, frame: int | None, bundle_path: str | None,
             as_json: bool) -> None:
    """Classify the modality (CT/MR) and body location of PNG, JPEG, TIFF or DICOM FILES.

    Zero-shot, with the MedPix 2.0 paper's prompts; prints the most probable class of
    each task with its calibrated probability. A DICOM file's own Modality tag is the
    modality when it says CT or MR (the model's call is shown beside it); any other tag
    (CR, US, ...) is reported as not CT or MR. A picture unlike the CT and MR slices the
    model was trained on (a photograph, a radiograph, a drawing, a colour picture) is
    answered "unsure", with the reason.

    With --study, the images of one study (files, or a folder of PNGs or a DICOM series;
    up to 9 frames of a multi-frame file) are pooled into one answer, each image's answer
    under it; the study is "unsure" when its files disagree (tags, DICOM studies, or the
    model's confident calls). With --json, one object per line per file (an error object
    for a file that failed; one object for a study, its images under "images").

    \b
    Examples:
      medpix-tui classify scan.png slice.dcm
      medpix-tui classify --study series/
      medpix-tui classify scan.png --json
    """
    try:
        paths, notes = classify_paths(files, study)  # before the bundle and the model load
    except InputError as exc:
        if as_json and not study and len(files) == 1:  # the file's object, as for any file that failed
            click.echo(json.dumps(_failed(files[0], exc)))
        raise
    for note in notes:
        click.echo(f"note: {note}", err=True)
    model = _bundle_model(ctx, bundle_path)
    loaded: list[Any] = []
    errors: list[tuple[Path, str]] = []
    for path in paths:
        try:
            loaded += model.load_study(path, frame) if study else [model.load(path, frame)]
        except InputError as exc:
            if len(paths) == 1:  # one file: its error is the whole story
                if as_json and not study:
                    click.echo(json.dumps(_failed(str(path), exc)))
                raise
            errors.append((path, str(exc)))
    rows = model.answer(loaded) if loaded else []
    if not study:
        by_file = {str(path): message for path, message in errors}
        answers = iter(rows)
        for path in paths:
            message = by_file.get(str(path))
            if message is None:
                row = next(answers)
                click.echo(json.dumps(row) if as_json else answer_line(row))
            elif as_json:
                click.echo(json.dumps(_failed(str(path), message)))
            else:
                click.echo(f"error: {printable(message)}", err=True)
    else:
        from ..model.classify import pool_study

        for _, message in errors:
            click.echo(f"error: {printable(message)}", err=True)
        if not rows:
            raise InputError(f"none of the study's {len(paths)} file(s) could be read")
        pooled = {**pool_study(rows), "errors": [_failed(str(path), message) for path, message in errors]}
        if as_json:
            click.echo(json.dumps(pooled))
        else:
            series = f" from {pooled['series']} DICOM series" if pooled["series"] > 1 else ""
            click.echo(f"{answer_line(pooled)}  [{pooled['used']} of {len(rows)} image(s) pooled{series}]")
            for row in rows:
                click.echo(f"  {answer_line(row)}")
    note = model.calibration_note
    if note and not as_json:
        click.echo(f"note: probabilities are uncalibrated and nothing is called unsure: {note}", err=True)
    if errors:
        raise InputError(f"{len(errors)} of {len(paths)} file(s) could not be classified")


def _print_task(task: str, detail: dict[str, Any], paper: float | None, ci95: list[float] | None,
                ece: float | None = None, floor: dict[str, float] | None = None) -> None:
    """Accuracy beside the paper's (it reports test only), then per class: count, recall, confusion row."""
    parts = [f"95% CI {_pct(ci95[0]).strip()} to {_pct(ci95[1]).strip()} over cases"] if ci95 else []
    if paper is not None:
        parts.append(f"paper {_pct(paper).strip()}")
    if ece is not None:
        parts.append(f"ECE {ece:.3f}" + (f", {floor['p05']:.3f} to {floor['p95']:.3f} if perfectly calibrated "
                                         "(90% range on these images)" if floor else ""))
    click.echo(f"{task}: {_pct(detail['accuracy'])}" + (f"  ({'; '.join(parts)})" if parts else ""))
    classes = detail["confusion"]["classes"]
    width = max(len("truth"), *(len(c) for c in classes))
    click.echo(f"  {'truth':<{width}}  {'n':>4}  {'acc':>6}   predicted: " + " ".join(f"{c[:6]:>6}" for c in classes))
    for cls, row in zip(classes, detail["confusion"]["matrix"], strict=True):
        info = detail["per_class"][cls]
        click.echo(f"  {cls:<{width}}  {info['n']:>4}  {_pct(info['accuracy']):>6}              "
                   + " ".join(f"{n:>6}" for n in row))


@click.command("eval")
@_bundle_option
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Which split to score.")
@click.option("--by-case", is_flag=True, help="Also pool each case's images into one answer and report case accuracy.")
@click.option("--from-pixels", is_flag=True,
              help="Embed every image again instead of reusing the vectors the model ships for the release's files.")
@_json_option
@click.pass_context
def eval_command(ctx: click.Context, bundle_path: str | None, split: str, by_case: bool, from_pixels: bool,
                 as_json: bool) -> None:
    """Recompute zero-shot accuracy of the bundle's model with the paper's prompts.

    Overall and per class, with the confusion matrix (rows: truth, columns: predicted),
    beside the paper's figures (88.0% modality, 52.2% location on its test split) and the
    expected calibration error of the (calibrated) probabilities, 15 bins. The 95%
    interval comes from resampling whole cases: a case's images are not independent.
    With --by-case, each case's images are pooled as ``classify --study`` pools them.
    An image whose file is the release's own takes the vector the model ships for it
    (the same figures, in a fraction of the time); --from-pixels embeds them all again.

    \b
    Examples:
      medpix-tui eval
      medpix-tui eval --split dev --by-case --json
    """
    from ..progress import rich_progress

    result = _bundle_model(ctx, bundle_path).evaluate(split, rich_progress(), by_case=by_case, from_pixels=from_pixels)
    if as_json:
        click.echo(json.dumps(result))
        return
    calibrated = "calibrated" if result["calibrated"] else "uncalibrated"
    reused = result["embeddings"]["reused"]
    vectors = f"{reused} shipped vectors, {result['embeddings']['embedded']} embedded" if reused else "embedded"
    click.echo(f"model {result['model']} on the {split} split ({result['n']} images, {vectors}), paper's prompts, "
               f"{calibrated} probabilities")
    for task in ("modality", "location"):
        paper = result["paper"][f"{task}_accuracy"] if split == "test" else None  # the paper scored test only
        _print_task(task, result[task], paper, result.get(f"{task}_ci95"),
                    result.get(f"{task}_ece"), result.get(f"{task}_ece_floor"))
    if by_case:
        cases = result["by_case"]
        click.echo(f"by case ({cases['cases']} cases, each case's images pooled): "
                   f"modality {_pct(cases['modality_accuracy']).strip()} over {cases['modality_cases']} cases "
                   f"({cases['modality_mixed_cases']} mixing CT and MR left out), "
                   f"location {_pct(cases['location_accuracy']).strip()}; image level "
                   f"{_pct(result['modality_accuracy']).strip()} and {_pct(result['location_accuracy']).strip()}")


def _ranked_options(default_k: int) -> Any:
    """The options of a command that ranks images and cases: ``-k``, ``--bundle``, ``--json``."""
    k_option = click.option("-k", "k", type=click.IntRange(min=1), default=default_k, show_default=True,
                            help="How many images and cases.")

    def decorate(f: Any) -> Any:
        return k_option(_bundle_option(_json_option(click.pass_context(f))))

    return decorate


def _echo_ranked(result: dict[str, Any], as_json: bool) -> None:
    """The ranked images, then the ranked cases (or the whole result as one JSON object)."""
    if as_json:
        click.echo(json.dumps(result))
        return
    if result.get("note"):
        click.echo(f"note: {result['note']}", err=True)
    click.echo("images:")
    for row in result["images"]:
        click.echo(f"  {row['score']:.3f}  {row['image']}  case {row['case']}  {row['modality']}, {row['location']}")
    click.echo("cases:")
    for row in result["cases"]:
        click.echo(f"  {row['score']:.3f}  {row['case']}  {row['title'][:70]}  (via {row['image']})")


@click.command("similar")
@click.argument("target")
@click.option("--frame", type=click.IntRange(min=1), default=None,
              help="Frame of a multi-frame DICOM TARGET, from 1 (default: the middle one).")
@_ranked_options(default_k=5)
def similar(ctx: click.Context, target: str, frame: int | None, k: int, bundle_path: str | None,
            as_json: bool) -> None:
    """The K images and cases most similar to TARGET, by cosine of image embeddings.

    TARGET is an image id of the bundle (its own case, with all of its images, is left
    out) or a PNG, JPEG or DICOM file from outside.

    \b
    Examples:
      medpix-tui similar MPX1009_synpic46283
      medpix-tui similar scan.dcm -k 10 --json
    """
    from ..files import check_file

    if Path(target).suffix.lower() in IMAGE_SUFFIXES or os.sep in target:  # a file, not an image id:
        check_file(Path(target))  # say what is wrong with it before loading
    result = _bundle_model(ctx, bundle_path).similar(target, k, frame)
    _echo_ranked(result, as_json)


@click.command("search-images")
@click.argument("text")
@_ranked_options(default_k=10)
def search_images(ctx: click.Context, text: str, k: int, bundle_path: str | None, as_json: bool) -> None:
    """The K images (and cases) that best match TEXT, by cosine in the CLIP space.

    \b
    Examples:
      medpix-tui search-images "ring enhancing lesion"
      medpix-tui search-images "axial CT of the chest" -k 5 --json
    """
    from ..model.service import check_search_text

    check_search_text(text)  # before the bundle and the text tower load
    result = _bundle_model(ctx, bundle_path).search(text, k)
    _echo_ranked(result, as_json)


COMMANDS = [classify, eval_command, similar, search_images]
