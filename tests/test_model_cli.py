"""The model commands on a tiny bundle built with the shipped checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from medpix_tui.bundle import build_bundle
from medpix_tui.cli import main
from tests.support import tiny_case, tiny_image, write_source
from tests.test_model_dicom import write_dicom


def pictures_source(root: Path) -> Path:
    """Four cases, eight made-up images, split train/dev/test."""
    cases, images = [], []
    for i in range(4):
        uid = f"S{i}"
        cases.append(tiny_case(uid, [f"{uid}_a"], [f"{uid}_b"]))
        images += [tiny_image(uid, f"{uid}_a", "CT", "ring enhancing lesion"), tiny_image(uid, f"{uid}_b", "MR")]
    write_source(root, cases, images, {"train": ["S0", "S1"], "dev": ["S2"], "test": ["S3"]}, write_images=False)
    rng = np.random.default_rng(0)
    for doc in images:
        Image.fromarray(rng.integers(0, 255, (96, 80), dtype=np.uint8)).save(root / "images" / f"{doc['image']}.png")
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_cli")
    return build_bundle(pictures_source(root / "source"), root / "bundle")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


ANSWER_KEYS = {"file", "status", "modality", "modality_source", "location", "probabilities", "model_modality",
               "model_probability", "disagrees", "ood", "reason", "calibrated"}


def mri_like(path: Path, seed: int = 0) -> Path:
    """A real release image (the tiny bundle's pictures are noise, unlike any slice)."""
    source = Path(__file__).resolve().parents[2] / "shared" / "medpix-2.0" / "images"
    pngs = sorted(source.glob("*.png")) if source.is_dir() else []
    if not pngs:
        pytest.skip("the MedPix release is not beside the checkout")
    Image.open(pngs[seed]).save(path)
    return path


def test_classify_png_and_dicom_as_json(bundle: Path, tmp_path: Path) -> None:
    png = mri_like(tmp_path / "scan.png")
    dcm = write_dicom(tmp_path / "slice.dcm", np.kron(np.arange(100).reshape(10, 10) * 20, np.ones((8, 8))),
                      RescaleIntercept=-1024, RescaleSlope=1)
    code, out, _ = run("classify", str(png), str(dcm), "--bundle", str(bundle), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == [str(png), str(dcm)]
    dicom_keys = {"dicom_modality", "frame", "frames", "study_uid", "series_uid"}
    assert set(rows[0]) == ANSWER_KEYS and set(rows[1]) == ANSWER_KEYS | dicom_keys
    for row in rows:
        assert row["calibrated"] is True  # the shipped checkpoint's calibration travels in the bundle
        assert row["model_modality"] in ("CT", "MR")
        assert sum(row["probabilities"]["location"].values()) == pytest.approx(1.0, abs=1e-3)
        assert max(row["probabilities"]["modality"], key=row["probabilities"]["modality"].get) == row["model_modality"]
    image, tagged = rows
    assert image["status"] == "ok" and image["modality_source"] == "model" and image["location"]
    assert image["ood"]["familiar"] and image["ood"]["score"] >= image["ood"]["threshold"]
    # the DICOM says CT: that is the modality, whatever the model thinks of a gradient
    assert tagged["modality"] == "CT" and tagged["modality_source"] == "dicom" and tagged["dicom_modality"] == "CT"
    assert tagged["disagrees"] == (tagged["model_modality"] != "CT")


def test_dicom_of_another_modality_is_not_forced_into_a_class(bundle: Path, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    us = get_testdata_file("examples_rgb_color.dcm")  # pydicom's ultrasound file
    code, out, _ = run("classify", us, "--bundle", str(bundle), "--json")
    assert code == 0
    row = json.loads(out)
    assert row["status"] == "not_ct_or_mr" and row["dicom_modality"] == "US"
    assert row["modality"] is None and row["location"] is None and row["probabilities"] is None
    code, out, _ = run("classify", us, "--bundle", str(bundle))
    assert out.strip() == f"{us}: not CT or MR (DICOM Modality US)"


def test_pydicom_ct_small_reports_its_tag(bundle: Path) -> None:
    # the finding: CT_small.dcm was called MR (p = 0.79); its tag says CT
    from pydicom.data import get_testdata_file

    code, out, _ = run("classify", get_testdata_file("CT_small.dcm"), "--bundle", str(bundle), "--json")
    row = json.loads(out)
    assert code == 0 and row["modality"] == "CT" and row["modality_source"] == "dicom"
    assert row["disagrees"] == (row["model_modality"] == "MR")


def test_a_photograph_is_unsure(bundle: Path, tmp_path: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    grey, colour = tmp_path / "cat.png", tmp_path / "cat-colour.png"
    Image.fromarray(skimage_data.chelsea()).convert("L").save(grey)  # scikit-image's sample photograph of a cat
    Image.fromarray(skimage_data.chelsea()).save(colour)
    code, out, _ = run("classify", str(grey), "--bundle", str(bundle), "--json")
    row = json.loads(out)
    assert code == 0 and row["status"] == "unsure"
    assert row["modality"] is None and row["location"] is None
    assert row["ood"]["score"] < row["ood"]["threshold"] and "not like the CT and MR slices" in row["reason"]
    code, out, _ = run("classify", str(grey), "--bundle", str(bundle))
    assert out.startswith(f"{grey}: unsure: not like the CT and MR slices the model knows (familiarity 0.")
    code, out, _ = run("classify", str(colour), "--bundle", str(bundle))
    assert out.strip() == f"{colour}: unsure: a colour picture (80% of its pixels coloured): CT and MR slices are grey"


def test_release_images_are_not_colour_pictures() -> None:
    # the colour rule's bound, on every release image: the most coloured is a 35% overlay
    from medpix_tui.model.classify import MAX_COLOURFUL
    from medpix_tui.model.preprocess import colourful_share

    source = Path(__file__).resolve().parents[2] / "shared" / "medpix-2.0" / "images"
    if not source.is_dir():
        pytest.skip("the MedPix release is not beside the checkout")
    shares = []
    for path in sorted(source.glob("*.png")):
        with Image.open(path) as im:
            shares.append(colourful_share(im) if im.mode != "L" else 0.0)
    assert len(shares) == 2050 and max(shares) < MAX_COLOURFUL - 0.1


def test_classify_reports_bad_files_in_one_line_each(bundle: Path, tmp_path: Path) -> None:
    good = mri_like(tmp_path / "ok.png")
    empty = write_dicom(tmp_path / "empty.dcm", None)
    code, out, err = run("--bundle", str(bundle), "classify", str(good), str(empty), str(tmp_path / "nope.png"))
    assert code == 2
    assert out.startswith(f"{good}: ") and len(out.splitlines()) == 1
    assert "no pixel data" in err and "no such file" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: 2 of 3 file(s) could not be classified"


def test_study_pools_a_folder_into_one_answer(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    for i in range(3):
        mri_like(folder / f"slice{i}.png", seed=i)
    (folder / "notes.txt").write_text("not an image")  # left out: not an image name
    code, out, _ = run("classify", "--study", str(folder), "--bundle", str(bundle), "--json")
    assert code == 0
    study = json.loads(out)
    assert study["study"] is True and study["n"] == 3 and len(study["images"]) == 3
    assert [Path(a["file"]).name for a in study["images"]] == ["slice0.png", "slice1.png", "slice2.png"]
    used = [a for a in study["images"] if a["status"] == "ok"]
    assert study["used"] == len(used) > 0
    # the pooled answer is the normalised geometric mean of the per-image probabilities
    logs = np.mean([np.log(list(a["probabilities"]["location"].values())) for a in used], axis=0)
    expected = np.exp(logs) / np.exp(logs).sum()
    assert list(study["probabilities"]["location"].values()) == pytest.approx(expected.tolist(), abs=2e-4)
    assert study["location"] == list(study["probabilities"]["location"])[int(expected.argmax())]
    code, out, _ = run("classify", "--study", str(folder), "--bundle", str(bundle))
    lines = out.splitlines()
    assert lines[0].startswith("study: ") and lines[0].endswith(f"[{len(used)} of 3 image(s) pooled]")
    assert [line[:2] for line in lines[1:]] == ["  "] * 3


def test_study_of_a_dicom_series_takes_files_without_suffix(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        write_dicom(folder / f"IM{i:06d}", np.kron(np.arange(64).reshape(8, 8) * (i + 1), np.ones((4, 4))),
                    modality="MR")
    code, out, _ = run("classify", "--study", str(folder), "--bundle", str(bundle), "--json")
    study = json.loads(out)
    assert code == 0 and study["n"] == 3 and study["modality"] == "MR" and study["modality_source"] == "dicom"


def test_arguments_are_checked_first(bundle: Path, tmp_path: Path) -> None:
    code, _, err = run("classify", str(tmp_path), "--bundle", str(bundle))
    assert code == 2 and err.strip() == f"error: {tmp_path} is a folder: classify its images as one study with --study"
    code, _, err = run("classify", "--study", str(tmp_path), "--bundle", str(bundle))
    assert code == 2 and err.strip() == f"error: {tmp_path}: no PNG, JPEG, TIFF, WebP or DICOM files in this folder"
    code, _, err = run("classify", "--frame", "0", str(tmp_path / "x.png"), "--bundle", str(bundle))
    assert code == 2 and "--frame" in err


def test_a_missing_file_is_answered_before_anything_loads(tmp_path: Path) -> None:
    # the issue: 'classify missing.png' took 4.3 s, loading torch and the model first
    code = ("import sys\n"
            "from medpix_tui.cli import main\n"
            "try:\n"
            "    main(['--bundle', sys.argv[1], 'classify', sys.argv[2]])\n"
            "except SystemExit as e:\n"
            "    loaded = [m for m in ('torch', 'numpy', 'medpix_tui.bundle', 'medpix_tui.model.runtime')"
            " if m in sys.modules]\n"
            "    print(e.code, loaded)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nobundle"), str(tmp_path / "missing.png")],
                            capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.stdout.strip() == "2 []"
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.png'}: no such file"


def test_classify_imports_no_torch(bundle: Path, tmp_path: Path) -> None:
    png = mri_like(tmp_path / "scan.png")
    code = ("import sys\n"
            "from medpix_tui.cli import main\n"
            "try:\n"
            "    main(['--bundle', sys.argv[1], 'classify', sys.argv[2]])\n"
            "except SystemExit as e:\n"
            "    print(e.code, [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, str(bundle), str(png)], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1])
    assert result.stdout.strip().splitlines()[-1] == "0 []" and result.stdout.startswith(f"{png}: ")


def test_eval_json_recomputes_the_split(bundle: Path) -> None:
    code, out, _ = run("eval", "--bundle", str(bundle), "--split", "test", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["split"] == "test" and result["n"] == 2
    for task in ("modality", "location"):
        matrix = np.array(result[task]["confusion"]["matrix"])
        assert matrix.sum() == 2
        assert result[f"{task}_accuracy"] == pytest.approx(np.trace(matrix) / 2)
        low, high = result[f"{task}_ci95"]  # one test case: resampling it gives its own accuracy
        assert low == high == result[f"{task}_accuracy"]
    assert result["paper"] == {"modality_accuracy": 0.88, "location_accuracy": 0.522}
    code, out, _ = run("eval", "--bundle", str(bundle), "--split", "dev")
    assert code == 0 and "modality:" in out and "(95% CI " in out and " over cases; ECE 0." in out  # dev: no paper


def test_eval_by_case_and_ece(bundle: Path) -> None:
    code, out, _ = run("eval", "--bundle", str(bundle), "--split", "train", "--by-case", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["calibrated"] is True and 0 <= result["modality_ece"] <= 1 and 0 <= result["location_ece"] <= 1
    for task in ("modality", "location"):
        floor = result[f"{task}_ece_floor"]
        assert 0 <= floor["p05"] <= floor["median"] <= floor["p95"] <= 1 and 0 <= floor["p_value"] <= 1
    cases = result["by_case"]
    # two train cases, each one CT and one MR image: modality cannot be pooled, location can
    assert cases == {"cases": 2, "modality_accuracy": None, "modality_cases": 0, "modality_mixed_cases": 2,
                     "location_accuracy": cases["location_accuracy"], "location_cases": 2, "location_mixed_cases": 0}
    assert cases["location_accuracy"] in (0.0, 0.5, 1.0)
    code, out, _ = run("eval", "--bundle", str(bundle), "--split", "train", "--by-case")
    assert code == 0 and "by case (2 cases, each case's images pooled): modality - over 0 cases" in out
    assert re.search(r"ECE \d\.\d{3}, \d\.\d{3} to \d\.\d{3} if perfectly calibrated", out)


def test_similar_to_a_bundle_image_and_to_a_file(bundle: Path, tmp_path: Path) -> None:
    code, out, _ = run("similar", "S1_a", "-k", "3", "--bundle", str(bundle), "--json")
    assert code == 0
    result = json.loads(out)
    assert len(result["images"]) == 3 and "S1" not in [r["case"] for r in result["images"]]  # S1_b neither
    assert "S1" not in [r["case"] for r in result["cases"]] and len(result["cases"]) == 3
    scores = [r["score"] for r in result["images"]]
    assert scores == sorted(scores, reverse=True)
    outside = tmp_path / "outside.png"
    Image.open(bundle / "images" / "S2_b.png").save(outside, compress_level=1)  # the same pixels, other bytes
    code, out, _ = run("similar", str(outside), "--bundle", str(bundle), "--json", "-k", "1")
    assert code == 0
    assert json.loads(out)["images"][0]["image"] == "S2_b"  # the same picture from outside finds itself
    copy = tmp_path / "copy.png"
    copy.write_bytes((bundle / "images" / "S2_b.png").read_bytes())  # the bundle's own file: its case left out
    code, out, _ = run("similar", str(copy), "--bundle", str(bundle), "--json", "-k", "8")
    result = json.loads(out)
    assert code == 0 and result["kind"] == "file"
    assert "S2" not in [r["case"] for r in result["images"] + result["cases"]] and len(result["images"]) == 6


def test_similar_cases_leaves_out_the_case_of_its_image(bundle: Path) -> None:
    code, out, err = run("similar-cases", "--text", "ring enhancing lesion", "--image", "S1_a", "--bundle",
                         str(bundle), "--json")
    assert code == 0, err
    assert "S1" not in [row["case"] for row in json.loads(out)]


def test_similar_unknown_target_is_one_line(bundle: Path, tmp_path: Path) -> None:
    code, _, err = run("similar", "NOPE_123", "--bundle", str(bundle))
    assert code == 2 and err.strip() == "error: 'NOPE_123' is neither an image id of the bundle nor a file"
    code, _, err = run("similar", str(tmp_path / "gone.png"), "--bundle", str(tmp_path / "no-bundle"))
    assert code == 2 and err.strip() == f"error: {tmp_path / 'gone.png'}: no such file"  # before the bundle


def test_similar_to_a_folder_an_empty_name_or_a_blank_picture_is_one_line(bundle: Path, tmp_path: Path) -> None:
    code, _, err = run("similar", str(tmp_path), "--bundle", str(bundle))
    assert code == 2 and err.strip() == f"error: {tmp_path}: is a folder, not an image file"
    code, _, err = run("similar", "", "--bundle", str(bundle))
    assert code == 2 and err.strip() == "error: '' is neither an image id of the bundle nor a file"
    Image.new("L", (64, 64)).save(tmp_path / "black.png")
    code, _, err = run("similar", str(tmp_path / "black.png"), "--bundle", str(bundle))
    assert code == 2 and "black.png: the image is blank (every pixel is 0): nothing to compare" in err


def test_blank_pictures_are_unsure_not_answered(bundle: Path, tmp_path: Path) -> None:
    # a black square read as MR at 94% (found by feeding one); a DICOM's tag still says its modality
    from tests.test_model_dicom import write_dicom

    Image.new("L", (512, 512)).save(tmp_path / "black.png")
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(tmp_path / "transparent.png")
    write_dicom(tmp_path / "air.dcm", np.full((64, 64), -1024, np.int16), RescaleSlope=1, RescaleIntercept=0)
    for name in ("black.png", "transparent.png"):
        code, out, _ = run("classify", str(tmp_path / name), "--bundle", str(bundle))
        assert code == 0 and out == f"{tmp_path / name}: unsure: the picture is blank (every pixel is 0): " \
                                    "nothing to classify\n"
    code, out, _ = run("classify", str(tmp_path / "air.dcm"), "--bundle", str(bundle), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["status"] == "unsure" and answer["modality"] == "CT"
    assert answer["modality_source"] == "dicom" and answer["location"] is None
    assert answer["reason"] == "the picture is blank (every pixel is 0, as windowed): nothing to classify"


def test_search_images_by_text(bundle: Path) -> None:
    code, out, _ = run("search-images", "ring enhancing lesion", "-k", "3", "--bundle", str(bundle), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["query"] == "ring enhancing lesion" and len(result["images"]) == 3
    scores = [r["score"] for r in result["images"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    for text in ("😀😀", "?!"):  # nothing to rank by: an arbitrary list was printed
        code, _, err = run("search-images", text, "--bundle", str(bundle))
        assert code == 2 and err.strip() == ("error: the search text has no letters or digits: "
                                             "describe the images in words")
    assert "note" not in result  # every word is in the bundle's text


def test_search_images_names_words_no_caption_or_case_holds(bundle: Path) -> None:
    """"xqzzv" was ranked like any text, with no word that the bundle's text has no such word."""
    code, out, err = run("search-images", "xqzzv lesion", "-k", "2", "--bundle", str(bundle))
    assert code == 0 and out.startswith("images:")
    assert err.strip() == ("note: no caption or case of the bundle holds xqzzv: the ranking reads only what "
                           "the text model makes of it")
    code, out, _ = run("search-images", "xqzzv lesion", "-k", "2", "--bundle", str(bundle), "--json")
    assert code == 0 and "holds xqzzv:" in json.loads(out)["note"]


def test_bundle_without_model_is_a_clear_error(tmp_path: Path) -> None:
    plain = build_bundle(pictures_source(tmp_path / "source"), tmp_path / "plain", with_model=False)
    code, _, err = run("eval", "--bundle", str(plain))
    assert code == 2 and "has no model checkpoint" in err


def test_model_commands_import_no_torch() -> None:
    code = "import sys, medpix_tui.cli.model; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


def test_without_calibration_the_answer_says_so(tmp_path: Path) -> None:
    import shutil

    from medpix_tui.locations import model_dir

    checkpoint = Path(shutil.copytree(model_dir(None).require(), tmp_path / "checkpoint"))
    (checkpoint / "calibration.json").unlink()  # a checkpoint never calibrated (a bundle's files are checked)
    copy = build_bundle(pictures_source(tmp_path / "source"), tmp_path / "bundle", model_dir=checkpoint)
    png = mri_like(tmp_path / "scan.png")
    code, out, _ = run("classify", str(png), "--bundle", str(copy), "--json")
    row = json.loads(out)
    assert code == 0 and row["calibrated"] is False and row["ood"] is None and row["status"] == "ok"
    code, out, err = run("classify", str(png), "--bundle", str(copy))
    assert code == 0 and err.strip() == ("note: probabilities are uncalibrated and nothing is called unsure: "
                                         "the model has no calibration (run: python -m tools.train.calibrate "
                                         "--model CHECKPOINT, on the folder the bundle was built from)")


def test_every_pydicom_test_file_is_an_answer_or_one_error_line(bundle: Path) -> None:
    # pydicom's own files, odd ones included (bad VRs, truncated pixels, no meta, DICOMDIRs): as a
    # process, so a pydicom or numpy warning would reach stderr as it would for a user
    from pydicom.data import get_testdata_file, get_testdata_files

    files = sorted(f for f in get_testdata_files() if Path(f).is_file())
    result = subprocess.run([sys.executable, "-m", "medpix_tui", "--bundle", str(bundle), "classify", *files],
                            capture_output=True, text=True, cwd=Path(__file__).parents[1])
    out, err = result.stdout.splitlines(), result.stderr.splitlines()
    assert result.returncode == 2 and len(out) + len(err) - 1 == len(files)
    assert all(line.startswith("error: ") for line in err), [x for x in err if not x.startswith("error: ")][:3]
    assert all(line.split(": ", 1)[0] in files for line in out)
    ct_small = next(line for line in out if line.startswith(f"{get_testdata_file('CT_small.dcm')}: "))
    assert ct_small.split(": ", 1)[1].startswith("CT (DICOM tag; model ")


def test_a_study_of_other_modalities_names_their_tags(bundle: Path, tmp_path: Path) -> None:
    from tests.test_model_dicom import write_dicom

    for name, modality in (("a.dcm", "DX"), ("b.dcm", "MG")):
        write_dicom(tmp_path / name, np.arange(4096, dtype=np.int16).reshape(64, 64), modality=modality)
    code, out, _ = run("classify", "--study", str(tmp_path), "--bundle", str(bundle))
    assert code == 0
    assert out.splitlines()[0] == ("study: not CT or MR: every image is tagged other than CT or MR "
                                   "(DICOM Modality DX, MG)  [0 of 2 image(s) pooled]")


def test_eval_names_the_paper_only_beside_test(bundle: Path) -> None:
    # the paper reports its test split; beside dev its figure would compare unlike things
    _, dev, _ = run("eval", "--split", "dev", "--bundle", str(bundle))
    _, test, _ = run("eval", "--bundle", str(bundle))
    assert "paper" not in dev.replace("paper's prompts", "") and "paper 88.0%" in test
    header = next(line for line in test.splitlines() if line.strip().startswith("truth"))
    row = next(line for line in test.splitlines() if line.strip().startswith("CT "))
    n_at = header.index(" n ") + 1  # the counts end under the "n" of their header
    assert row[n_at].isdigit() and row[n_at + 1] == " "


def answer(file: str, status: str, modality: str, source: str, mr: float, **extra: object) -> dict[str, object]:
    """A per-image answer as :func:`answer_one` writes it, with made-up probabilities."""
    return {"file": file, "status": status, "modality": modality, "modality_source": source,
            "probabilities": {"modality": {"CT": 1 - mr, "MR": mr}, "location": {"Head": 0.7, "Thorax": 0.3}},
            **extra}


def test_a_study_whose_pngs_the_model_calls_mr_beside_ct_dicom_files_is_unsure() -> None:
    from medpix_tui.model.classify import pool_study

    images = [answer("a.dcm", "ok", "CT", "dicom", 0.3, dicom_modality="CT", study_uid="1.2", series_uid="1.2.1"),
              answer("b.png", "ok", "MR", "model", 0.95), answer("c.png", "ok", "MR", "model", 0.9)]
    study = pool_study(images)
    assert study["status"] == "unsure" and study["modality"] == "CT" and study["location"] is None
    assert study["reason"].startswith("the DICOM files are tagged CT, but the model calls the 2 untagged image(s) MR")
    agreeing = pool_study([images[0], answer("b.png", "ok", "CT", "model", 0.2)])
    assert agreeing["status"] == "ok" and agreeing["modality"] == "CT" and agreeing["disagrees"] is False
    two_studies = pool_study([images[0], {**images[0], "study_uid": "9.9"}])
    assert two_studies["status"] == "unsure" and "2 different DICOM studies" in two_studies["reason"]
    series = pool_study([images[0], {**images[0], "series_uid": "1.2.2"}])
    assert series["status"] == "ok" and series["series"] == 2


def test_a_study_is_unsure_when_its_files_say_different_things() -> None:
    from medpix_tui.model.classify import pool_study

    ct = answer("a.dcm", "ok", "CT", "dicom", 0.3, dicom_modality="CT", study_uid="1.2")
    dx = {"file": "b.dcm", "status": "not_ct_or_mr", "modality": None, "modality_source": None,
          "probabilities": None, "dicom_modality": "DX", "study_uid": "1.2"}
    mixed = pool_study([ct, dx])
    assert mixed["status"] == "unsure" and mixed["reason"] == "the study's DICOM Modality tags differ (CT, DX)"
    cr = pool_study([answer("c.png", "ok", "CT", "model", 0.01), {**dx, "dicom_modality": "CR"}])
    assert cr["status"] == "unsure" and cr["reason"].startswith("some files are tagged CR, not CT or MR")
    both = pool_study([answer("d.png", "ok", "CT", "model", 0.01), answer("e.png", "ok", "MR", "model", 0.99),
                       answer("f.png", "ok", "MR", "model", 0.6)])
    assert both["status"] == "unsure" and both["location"] is None
    assert both["reason"] == ("its images disagree on the modality: 1 called CT at 90% or more, "
                              "1 called MR at 90% or more")
    one_sure = pool_study([answer("d.png", "ok", "CT", "model", 0.01), answer("f.png", "ok", "CT", "model", 0.6)])
    assert one_sure["status"] == "ok" and one_sure["modality"] == "CT"
    mr = answer("m.dcm", "ok", "MR", "dicom", 0.2, dicom_modality="MR")
    tagged_vs_png = pool_study([mr, answer("p.png", "ok", "CT", "model", 0.004)])
    assert tagged_vs_png["status"] == "unsure" and tagged_vs_png["disagrees"] is True
    assert tagged_vs_png["reason"].endswith("image(s) CT (99.6%)")
    far = {**mr, "status": "unsure", "study_uid": "7"}
    apart = pool_study([far, {**far, "study_uid": "8"}])
    assert apart["status"] == "unsure" and "2 different DICOM studies" in apart["reason"]


def test_a_study_names_its_tag_and_the_pooled_model_call(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(2):  # release slices as DICOM, so the model is sure of them
        pixels = np.asarray(Image.open(mri_like(tmp_path / f"{i}.png", seed=i)).convert("L"), dtype=np.int16)
        write_dicom(folder / f"IM{i}", pixels, modality="MR")
    code, out, _ = run("classify", "--study", str(folder), "--bundle", str(bundle))
    assert code == 0 and "pooled]" in out
    assert re.match(r"study: MR \(DICOM tag; model (CT|MR) pooled, (agrees|disagrees)\)", out.splitlines()[0])


def test_a_study_folder_skips_its_dicomdir_and_says_what_it_left_out(bundle: Path, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(2):
        write_dicom(folder / f"IM{i}", np.kron(np.arange(64).reshape(8, 8) * (i + 1), np.ones((4, 4))), modality="MR")
    (folder / "DICOMDIR").write_bytes(Path(get_testdata_file("DICOMDIR")).read_bytes())  # pydicom's own
    (folder / "INDEX").write_bytes(Path(get_testdata_file("DICOMDIR-bigEnd")).read_bytes())  # known by content
    Image.new("L", (32, 32), 9).save(folder / "scout.gif")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "again").symlink_to(folder / "IM0")  # the same file twice counts once
    (folder / "sub").mkdir()
    code, out, err = run("classify", "--study", str(folder), "--bundle", str(bundle), "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 2
    assert err.splitlines()[:5] == [
        f"note: {folder}: left out 2 DICOMDIR index file(s), which hold no image (DICOMDIR, INDEX)",
        f"note: {folder}: left out 1 file(s) that are not images (scout.gif)",
        f"note: {folder}: left out 1 hidden file(s) (names starting with '.')",
        f"note: {folder}: left out 1 subfolder(s) (give each series folder itself)",
        "note: left out 1 file(s) given twice (the same file by another name or link counts once in a study)"]
    code, _, err = run("classify", str(folder / "DICOMDIR"), "--bundle", str(bundle))
    assert code == 2 and "a DICOMDIR (the index of a DICOM disc or folder), not an image" in err


def test_a_study_pools_sampled_frames_of_a_multiframe_file(bundle: Path, tmp_path: Path) -> None:
    frames = np.stack([np.kron(np.arange(64).reshape(8, 8) * (i + 1), np.ones((4, 4))) for i in range(20)])
    path = write_dicom(tmp_path / "enhanced.dcm", frames, modality="MR", frames=20)
    code, out, _ = run("classify", "--study", str(path), "--bundle", str(bundle), "--json")
    study = json.loads(out)
    assert code == 0 and study["n"] == 9
    assert [a["frame"] for a in study["images"]] == [1, 3, 6, 8, 10, 13, 15, 18, 20]
    code, out, _ = run("classify", "--study", "--frame", "4", str(path), "--bundle", str(bundle), "--json")
    assert code == 0 and [a["frame"] for a in json.loads(out)["images"]] == [4]
    code, _, err = run("classify", "--frame", "21", str(path), "--bundle", str(bundle))
    assert code == 2 and "--frame 21 is out of range (the file has 20 frames)" in err


def test_json_gives_an_object_for_a_file_that_failed(bundle: Path, tmp_path: Path) -> None:
    good = mri_like(tmp_path / "ok.png")
    code, out, err = run("classify", str(good), str(tmp_path / "nope.png"), str(tmp_path), "--bundle", str(bundle),
                         "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 2 and [r["status"] for r in rows][1:] == ["error", "error"]  # a folder among files too
    assert rows[2]["reason"] == f"{tmp_path}: is a folder, not an image file"
    for alone in (tmp_path / "nope.png", write_dicom(tmp_path / "empty.dcm", None)):  # one file, failing
        code, out, err = run("classify", str(alone), "--bundle", str(bundle), "--json")
        assert code == 2 and json.loads(out)["status"] == "error" and err.startswith("error: ")
    code, _, err = run("classify", "", "--bundle", str(bundle))
    assert code == 2 and err.strip() == "error: an empty file name was given"
    missing = tmp_path / "nope.png"
    assert rows[1] == {"file": str(missing), "status": "error", "reason": f"{missing}: no such file"}


def test_links_and_odd_names_are_named_as_they_are(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, _, err = run("classify", str(tmp_path / "loop1"), "--bundle", str(bundle))
    assert code == 2 and err.strip() == f"error: {tmp_path}/loop1: a symbolic link loop, not a file"
    code, _, err = run("classify", str(tmp_path / "gone.png"), "--bundle", str(bundle))
    assert code == 2 and err.strip() == (f"error: {tmp_path}/gone.png: a broken symbolic link "
                                         f"(to {tmp_path}/nowhere.png)")
    odd = mri_like(tmp_path / "two\nlines.png")
    code, out, _ = run("classify", str(odd), "--bundle", str(bundle))
    assert code == 0 and len(out.splitlines()) == 1 and out.startswith(f"{tmp_path}/two\\nlines.png: ")


def test_a_multivalued_modality_tag_is_not_ct_or_mr(bundle: Path, tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "both.dcm", np.kron(np.arange(64).reshape(8, 8), np.ones((4, 4))), modality="CT")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Modality = ["CT", "MR"]
    ds.save_as(path)
    code, out, _ = run("classify", str(path), "--bundle", str(bundle))
    assert code == 0 and out.strip() == f"{path}: not CT or MR (DICOM Modality CT\\MR)"


def test_a_colour_dicom_screenshot_is_a_colour_picture_not_a_blank_one(bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # a colour photograph's worth of colour
    path = write_dicom(tmp_path / "capture.dcm", rgb, modality="CT")
    code, out, _ = run("classify", str(path), "--bundle", str(bundle), "--json")
    row = json.loads(out)
    assert code == 0 and row["status"] == "unsure" and row["reason"].startswith("a colour picture")


def test_a_segmentation_mask_as_png_is_unsure(bundle: Path, tmp_path: Path) -> None:
    # pydicom's own SEG file (a liver mask), saved as the PNG a user would make of it
    import pydicom
    from pydicom.data import get_testdata_file

    mask = pydicom.dcmread(get_testdata_file("liver_1frame.dcm")).pixel_array
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(tmp_path / "liver_mask.png")
    code, out, _ = run("classify", str(tmp_path / "liver_mask.png"), "--bundle", str(bundle), "--json")
    row = json.loads(out)
    assert code == 0 and row["status"] == "unsure" and row["location"] is None
    assert row["reason"].startswith("only 2 grey levels: a mask or a drawing")


def test_a_multipage_tiff_is_read_at_its_middle_page_or_frame(bundle: Path, tmp_path: Path) -> None:
    pages = [Image.open(mri_like(tmp_path / f"{i}.png", seed=i)).convert("L") for i in range(3)]
    pages[0].save(tmp_path / "series.tif", save_all=True, append_images=pages[1:])
    code, out, _ = run("classify", str(tmp_path / "series.tif"), "--bundle", str(bundle), "--json")
    row = json.loads(out)
    assert code == 0 and (row["frame"], row["frames"]) == (2, 3)
    code, out, _ = run("classify", str(tmp_path / "series.tif"), "--frame", "3", "--bundle", str(bundle))
    assert code == 0 and out.startswith(f"{tmp_path}/series.tif [frame 3 of 3]: ")
    code, _, err = run("classify", str(tmp_path / "series.tif"), "--frame", "4", "--bundle", str(bundle))
    assert code == 2 and err.strip().endswith("--frame 4 is out of range (the file has 3 pages)")
    code, _, err = run("classify", str(tmp_path / "0.png"), "--frame", "2", "--bundle", str(bundle))
    assert code == 2 and err.strip().endswith("--frame 2 is out of range (the file has 1 page)")


def test_a_ct_window_that_saturates_the_slice_gives_way(bundle: Path) -> None:
    # pydicom's own CT test file: its C30/W100 window turns every pixel white, its values vary
    from pydicom.data import get_testdata_file

    from medpix_tui.model.preprocess import MIN_GREY_LEVELS, grey_levels, load_gray

    path = Path(get_testdata_file("17166"))  # dicomdirtests/77654033/CT2/
    assert grey_levels(load_gray(path)) >= MIN_GREY_LEVELS
    code, out, _ = run("classify", str(path), "--bundle", str(bundle), "--json")
    row = json.loads(out)
    assert code == 0 and row["modality"] == "CT" and "blank" not in (row["reason"] or "")


def test_eval_by_case_pools_the_images_a_study_would() -> None:
    from medpix_tui.model.evaluate import case_report

    classes = {"modality": ("CT", "MR"), "location": ("Head", "Thorax")}
    truths = [{"modality": "CT", "location": "Head"}] * 3
    probabilities = {"modality": np.array([[0.9, 0.1]] * 3),
                     "location": np.array([[0.6, 0.4], [0.01, 0.99], [0.3, 0.7]])}
    cases = ["A", "A", "B"]
    everything = case_report(truths, probabilities, classes, cases)
    assert everything["location_accuracy"] == 0.0  # A's unfamiliar image outvotes its sure one
    as_a_study = case_report(truths, probabilities, classes, cases, sure=[True, False, False])
    assert as_a_study["location_accuracy"] == 0.5  # A right; B, sure of nothing, pooled over all: wrong
