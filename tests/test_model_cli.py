"""The model commands on a tiny bundle built with the shipped checkpoint."""

from __future__ import annotations

import json
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


def test_classify_png_and_dicom_as_json(bundle: Path, tmp_path: Path) -> None:
    png = tmp_path / "scan.png"
    Image.new("L", (50, 70), 90).save(png)
    dcm = write_dicom(tmp_path / "slice.dcm", np.arange(100).reshape(10, 10) * 20, RescaleIntercept=-1024, RescaleSlope=1)
    code, out, _ = run("classify", str(png), str(dcm), "--bundle", str(bundle), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == [str(png), str(dcm)]
    for row in rows:
        assert set(row) == {"file", "modality", "location", "probabilities"}
        assert row["modality"] in ("CT", "MR")
        assert sum(row["probabilities"]["location"].values()) == pytest.approx(1.0, abs=1e-3)
        assert max(row["probabilities"]["modality"], key=row["probabilities"]["modality"].get) == row["modality"]


def test_classify_reports_bad_files_in_one_line_each(bundle: Path, tmp_path: Path) -> None:
    good = tmp_path / "ok.png"
    Image.new("L", (20, 20), 10).save(good)
    empty = write_dicom(tmp_path / "empty.dcm", None)
    code, out, err = run("--bundle", str(bundle), "classify", str(good), str(empty), str(tmp_path / "nope.png"))
    assert code == 2
    assert out.startswith(f"{good}: ") and len(out.splitlines()) == 1
    assert "no pixel data" in err and "no such file" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: 2 of 3 file(s) could not be classified"


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
    assert code == 0 and "modality:" in out and "(95% CI " in out and " over cases; paper 88.0%)" in out


def test_similar_to_a_bundle_image_and_to_a_file(bundle: Path, tmp_path: Path) -> None:
    code, out, _ = run("similar", "S1_a", "-k", "3", "--bundle", str(bundle), "--json")
    assert code == 0
    result = json.loads(out)
    assert len(result["images"]) == 3 and "S1_a" not in [r["image"] for r in result["images"]]
    assert "S1" not in [r["case"] for r in result["cases"]] and len(result["cases"]) == 3
    scores = [r["score"] for r in result["images"]]
    assert scores == sorted(scores, reverse=True)
    outside = tmp_path / "outside.png"
    Image.open(bundle / "images" / "S2_b.png").save(outside)
    code, out, _ = run("similar", str(outside), "--bundle", str(bundle), "--json", "-k", "1")
    assert code == 0
    assert json.loads(out)["images"][0]["image"] == "S2_b"  # the same picture from outside finds itself


def test_similar_unknown_target_is_one_line(bundle: Path) -> None:
    code, _, err = run("similar", "NOPE_123", "--bundle", str(bundle))
    assert code == 2 and err.strip() == "error: 'NOPE_123' is neither an image id of the bundle nor a file"


def test_search_images_by_text(bundle: Path) -> None:
    code, out, _ = run("search-images", "ring enhancing lesion", "-k", "3", "--bundle", str(bundle), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["query"] == "ring enhancing lesion" and len(result["images"]) == 3
    scores = [r["score"] for r in result["images"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


def test_bundle_without_model_is_a_clear_error(tmp_path: Path) -> None:
    plain = build_bundle(pictures_source(tmp_path / "source"), tmp_path / "plain", with_model=False)
    code, _, err = run("eval", "--bundle", str(plain))
    assert code == 2 and "has no model checkpoint" in err


def test_model_commands_import_no_torch() -> None:
    code = "import sys, medpix_tui.cli.model; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
