"""The model as users meet it: first answers, speed, calibration, "not a CT or MR", studies, DICOM.

    python bench/bench_model.py [--model bundle/model] [--source ../shared/medpix-2.0] [--bundle B] [-n 50]

Prints JSON (then the DICOM table as text):

* ``first_answer_s``: every model command end to end as a process (median of 3; target 2 s),
  with its peak RSS: ``classify one.png``, ``classify --study`` on a folder of 10 PNGs, a
  missing file, ``similar`` (a file, an image id), ``eval`` (reusing the shipped vectors, with
  ``--by-case``, and once ``--from-pixels``) and ``search-images``; ``--first-answers`` stops there;
* ``classify_ms``: per image, one call per image as the CLI makes (read, preprocess, numpy
  forward, head, OOD score): median and p95 over ``-n`` test images (target 100 ms);
* ``ece_test``: expected calibration error per task on test, 15 bins, before and after the
  temperatures (target 0.05), and the calibrated figure's sampling floor (what a perfectly
  calibrated model shows on the same images: 5th, 50th, 95th percentile, p-value);
* ``ood``: the share of negatives answered "unsure" (pydicom's non-CT/MR test files decoded
  as pictures, as if their tag were lost, and scikit-image's sample pictures) and the share
  of the test split accepted (target >= 99%);
* ``by_case_test``: accuracy with each case's images pooled, beside image level;
* ``bombs``: peak RSS and the answer of ``classify`` on hostile files (target <= 1 GB);
* the table of every CT and MR DICOM file among pydicom's test data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

CLI = [sys.executable, "-m", "medpix_tui"]


def _run(args: list[str]) -> tuple[float, float, int, str]:
    """Seconds, peak RSS (MB), exit status and the last output line of one process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.strip().splitlines()
    return time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode, (lines[-1] if lines else "")[:160]


def first_answers(bundle: str | None, one: Path, folder: Path) -> dict[str, Any]:
    """Each model command as a process, end to end: median of 3 runs (1 for ``eval --from-pixels``)."""
    flags = ["--bundle", bundle] if bundle else []
    out = {}
    commands = {"classify_one_png": ["classify", str(one)], "classify_study_10": ["classify", "--study", str(folder)],
                "classify_missing_file": ["classify", str(folder / "missing.png")],
                "similar_file": ["similar", str(one), "-k", "3"], "similar_image_id": ["similar", one.stem, "-k", "3"],
                "eval_test": ["eval"], "eval_test_by_case": ["eval", "--by-case"],
                "eval_test_from_pixels": ["eval", "--from-pixels"],
                "search_images_text": ["search-images", "ring enhancing lesion", "-k", "3"]}
    _run(CLI + flags + ["classify", str(one)])  # a first build of the default bundle is not a first answer
    for name, args in commands.items():
        runs = [_run(CLI + flags + args) for _ in range(1 if name.endswith("from_pixels") else 3)]
        out[name] = {"s": round(statistics.median(r[0] for r in runs), 2), "rss_mb": round(max(r[1] for r in runs)),
                     "answer": runs[-1][3]}
    return out


def negatives(size: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Pictures nobody here drew: pydicom's non-CT/MR test files and scikit-image's samples,
    with their :func:`colourful_share` and :func:`grey_levels` (classify's two picture rules)."""
    from PIL import Image
    from pydicom.data import get_testdata_files

    from medpix_tui.model.dicom import picture_of_header, read_header
    from medpix_tui.model.preprocess import _pil_gray, colourful_share, grey_levels, square

    names, pictures, colour, levels = [], [], [], []
    for path in get_testdata_files():
        try:
            header = read_header(Path(path))
            if header.is_ct_or_mr:
                continue
            decoded = picture_of_header(header)
        except Exception:  # noqa: BLE001 - files without pixels or undecodable here are not negatives
            continue
        names.append(f"pydicom {header.modality or '-'} {Path(path).name}")
        pictures.append(square(decoded.picture, size))
        colour.append(decoded.colourful)
        levels.append(grey_levels(decoded.picture))
    try:
        import skimage.data as data
    except ImportError:
        return names, np.stack(pictures), np.array(colour), np.array(levels)
    for name in ("astronaut", "binary_blobs", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock",
                 "coffee", "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
                 "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "rocket",
                 "shepp_logan_phantom", "text"):
        a = getattr(data, name)()
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        elif a.dtype != np.uint8:
            a = (255 * (a - a.min()) / (np.ptp(a) or 1)).astype(np.uint8)
        names.append(f"skimage {name}")
        gray = _pil_gray(Image.fromarray(a))
        pictures.append(square(gray, size))
        colour.append(colourful_share(Image.fromarray(a)))
        levels.append(grey_levels(gray))
    faces = data.lfw_subset()
    for i in range(0, len(faces), 10):
        names.append(f"skimage lfw_subset[{i}]")
        gray = (faces[i] * 255).astype(np.uint8)
        pictures.append(square(gray, size))
        colour.append(0.0)
        levels.append(grey_levels(gray))
    return names, np.stack(pictures), np.array(colour), np.array(levels)


def _png_bomb(path: Path, side: int) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row = zlib.compressobj(9), b"\0" * (side + 1)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _deflated_bomb(path: Path, side: int) -> Path:
    """A deflated CT whose data set inflates to side x side x 2 bytes of zeros."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CT", side, side, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        "MONOCHROME2", 16, 16, 15, 0)
    ds.PixelData = b"\0\0" * 16  # replaced below by a streamed element
    head = pydicom.filebase.DicomBytesIO()
    pydicom.filewriter.write_file_meta_info(head, meta, enforce_standard=True)
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    del ds.PixelData
    pydicom.filewriter.write_dataset(body, ds)
    size = side * side * 2
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + head.getvalue())
        f.write(compressor.compress(body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size)))
        chunk = b"\0" * (1 << 24)
        for _ in range(size // len(chunk)):
            f.write(compressor.compress(chunk))
        f.write(compressor.compress(b"\0" * (size % len(chunk))) + compressor.flush())
    return path


def bombs(bundle: str | None, folder: Path) -> dict[str, Any]:
    flags = ["--bundle", bundle] if bundle else []
    files = {"png_20000x20000": _png_bomb(folder / "bomb20000.png", 20000),
             "png_11000x11000": _png_bomb(folder / "bomb11000.png", 11000),
             "dicom_deflated_36000x36000": _deflated_bomb(folder / "bomb.dcm", 36000)}
    out = {}
    for name, path in files.items():
        seconds, rss, code, answer = _run(CLI + flags + ["classify", str(path)])
        out[name] = {"file_kb": round(path.stat().st_size / 1024), "rss_mb": round(rss), "exit": code,
                     "s": round(seconds, 2), "answer": answer}
    return out


def dicom_table(model: Any) -> list[dict[str, Any]]:
    from pydicom.data import get_testdata_files

    from medpix_tui.errors import InputError
    from medpix_tui.model.dicom import read_header

    rows = []
    for path in sorted(get_testdata_files()):
        try:
            header = read_header(Path(path))
        except InputError:
            continue
        if not header.is_ct_or_mr:
            continue
        row = {"file": str(Path(path).relative_to(Path(path).parents[0 if "dicomdirtests" not in path else 3])),
               "tag": header.modality, "bytes": Path(path).stat().st_size, "size": f"{header.columns}x{header.rows}",
               "syntax": header.syntax_name}
        try:
            answer = model.classify(Path(path))
            row.update(reported=answer["modality"], model=answer["model_modality"], p=answer["model_probability"],
                       status=answer["status"])
        except InputError as exc:
            row.update(reported="error", model="-", p=None, status=str(exc).split(": ", 1)[-1][:40])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "bundle" / "model")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "medpix-2.0")
    parser.add_argument("--bundle", default=None, help="bundle for the CLI runs (default: the default bundle)")
    parser.add_argument("-n", type=int, default=50, help="images to time one at a time")
    parser.add_argument("--no-bombs", action="store_true", help="skip the hostile files (they take a minute to write)")
    parser.add_argument("--first-answers", action="store_true",
                        help="only the commands' first answers as processes (half a minute), then stop")
    args = parser.parse_args()

    from medpix_tui.model.calibration import ece, ece_floor, encode_with_features, load_calibration
    from medpix_tui.model.classify import answer_images
    from medpix_tui.model.evaluate import case_report
    from medpix_tui.model.preprocess import load_input, load_many
    from medpix_tui.model.prompts import TASKS, truth_of
    from medpix_tui.model.runtime import load_encoder
    from medpix_tui.model.zeroshot import softmax
    from medpix_tui.source import load_source

    source = load_source(args.source, check_images=False)
    test = [d for d in source.images if source.splits.get(d["U_id"]) == "test"]
    paths = [source.image_path(d["image"]) for d in test]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        folder = Path(tmp) / "study"
        folder.mkdir()
        for p in paths[:10]:
            (folder / p.name).write_bytes(p.read_bytes())
        report["first_answer_s"] = first_answers(args.bundle, paths[0], folder)
        if args.first_answers:
            print(json.dumps({**report, "budget": {"first_answer_s": 2.0}}, indent=1))
            return
        if not args.no_bombs:
            report["bombs"] = bombs(args.bundle, Path(tmp))

    started = time.perf_counter()
    encoder = load_encoder(args.model)
    calibration = load_calibration(args.model)
    report["load_s"] = round(time.perf_counter() - started, 3)
    answer_images(encoder, calibration, [load_input(paths[0], encoder.size)])  # warm-up
    times = []
    for path in paths[:args.n]:
        started = time.perf_counter()
        answer_images(encoder, calibration, [load_input(path, encoder.size)])
        times.append(time.perf_counter() - started)
    times.sort()
    report["classify_ms"] = {"median": round(1000 * statistics.median(times), 1),
                             "p95": round(1000 * times[int(0.95 * (len(times) - 1))], 1), "images": len(times)}

    embeddings, features = encode_with_features(encoder, load_many(paths, encoder.size))
    truths = [truth_of(d) for d in test]
    raw = encoder.head.logits(embeddings)
    report["ece_test"] = {}
    for task in TASKS:
        index = {c: i for i, c in enumerate(encoder.head.classes[task])}
        labels = np.array([index[t[task]] for t in truths])
        temperature = encoder.head.temperature.get(task, 1.0)
        calibrated = softmax(raw[task] / temperature)
        measured = ece(calibrated, labels)
        report["ece_test"][task] = {"uncalibrated": round(ece(softmax(raw[task]), labels), 4),
                                    "calibrated": round(measured, 4),
                                    "floor": ece_floor(calibrated, measured),
                                    "temperature": temperature,
                                    "method": ((calibration.info.get("method") or {}).get(task) or {}).get("method")
                                    if calibration is not None else None}
    probabilities = encoder.head.probabilities(embeddings)
    image_level = {t: round(float(np.mean([encoder.head.classes[t][int(p.argmax())] == truth[t]
                                           for p, truth in zip(probabilities[t], truths, strict=True)])), 4)
                   for t in TASKS}
    from medpix_tui.model.classify import OK

    answers = answer_images(encoder, calibration, [load_input(p, encoder.size) for p in paths])
    sure = [a["status"] == OK for a in answers]  # a study pools the images it is sure of
    report["by_case_test"] = {**case_report(truths, probabilities, encoder.head.classes, [d["U_id"] for d in test],
                                            sure), "image_level": image_level}
    if calibration is not None:
        from medpix_tui.model.classify import MAX_COLOURFUL
        from medpix_tui.model.preprocess import MIN_GREY_LEVELS

        names, pictures, colour, levels = negatives(encoder.size)
        _, negative_features = encode_with_features(encoder, pictures)
        by_score = calibration.scores(negative_features) < calibration.threshold
        rejected = by_score | (colour > MAX_COLOURFUL) | (levels < MIN_GREY_LEVELS)
        groups = {g: [n.startswith(g) for n in names] for g in ("pydicom", "skimage")}
        report["ood"] = {"threshold": calibration.threshold,
                         "test_accepted": round(float(np.mean([a["status"] == OK for a in answers])), 4),
                         "test_accepted_by_score_alone": round(float((calibration.scores(features)
                                                                      >= calibration.threshold).mean()), 4),
                         "negatives_rejected": round(float(rejected.mean()), 4), "negatives": len(names),
                         "negatives_rejected_by_score_alone": round(float(by_score.mean()), 4),
                         **{f"{g}_rejected": round(float(rejected[np.array(m)].mean()), 4) for g, m in groups.items()},
                         "accepted_negatives": [n for n, r in zip(names, rejected, strict=True) if not r]}
    from medpix_tui.bundle import resolve_bundle
    from medpix_tui.model.service import BundleModel

    table = dicom_table(BundleModel(resolve_bundle(args.bundle)))
    no_pixels = [r for r in table if str(r["status"]).startswith("DICOM file has no pixel data")]
    table = [r for r in table if r not in no_pixels]
    report["dicom_ct_mr"] = {"files_with_pixels": len(table),
                             "right_modality": sum(r["reported"] == r["tag"] for r in table),
                             "model_agrees": sum(r["model"] == r["tag"] for r in table),
                             "unsure": sum(r["status"] == "unsure" for r in table),
                             "files_without_pixel_data": len(no_pixels)}
    report["budget"] = {"first_answer_s": 2.0, "classify_ms": 100.0, "ece": 0.05, "test_accepted": 0.99, "rss_mb": 1024}
    print(json.dumps(report, indent=1))
    print(f"\n{'file':<48} {'tag':<3} {'bytes':>7} {'size':>8}  {'syntax':<34} {'reported':<8} model")
    if no_pixels:
        print(f"(and {len(no_pixels)} CT/MR files without pixel data, e.g. {no_pixels[0]['file']}: "
              "'DICOM file has no pixel data')")
    for r in table:
        p = f" {100 * r['p']:.0f}%" if r["p"] is not None else ""
        print(f"{r['file']:<48} {r['tag']:<3} {r['bytes']:>7} {r['size']:>8}  {r['syntax'][:34]:<34} "
              f"{r['reported']:<8} {r['model']}{p} ({r['status']})")


if __name__ == "__main__":
    main()
