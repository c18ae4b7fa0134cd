"""``similar-cases`` on a tiny bundle with a case that has no history or findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medpix_tui.bundle import build_bundle, open_bundle
from medpix_tui.cli import main
from medpix_tui.model.case_text import similar_cases
from medpix_tui.model.similarity import load_index
from tests.support import tiny_case, tiny_image, write_source


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three cases with a history, and T0 with none (only a title and a diagnosis, as MPX1763)."""
    root = tmp_path_factory.mktemp("similar_cases")
    cases = [tiny_case(f"T{i}", [f"T{i}_a"], []) for i in range(4)]
    cases[0]["Case"] = {"Title": "Spleen maximum dimensions", "Case Diagnosis": "Spleen maximum dimensions"}
    for case, history in zip(cases[1:], ("sudden severe headache", "hematuria in an old man", "a fall on the knee"),
                             strict=True):
        case["Case"]["History"] = history
    images = [tiny_image(c["U_id"], f"{c['U_id']}_a", "CT") for c in cases]
    return build_bundle(write_source(root / "source", cases, images), root / "bundle")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("text", ["qwerty", "zzzz", "!!!", "é•“ 頭痛"])
def test_a_case_without_text_is_not_ranked_by_text(bundle: Path, text: str) -> None:
    code, out, err = run("similar-cases", "--bundle", str(bundle), "--text", text, "-k", "10", "--json")
    assert code == 0, err
    assert sorted(row["case"] for row in json.loads(out)) == ["T1", "T2", "T3"]


def test_an_image_alone_ranks_every_case(bundle: Path) -> None:
    opened = open_bundle(bundle)
    images = load_index(opened.embeddings_dir)
    query = images.vectors[images.ids.index("T2_a")]
    mixed = similar_cases(opened, "qwerty", 10, image_query=query, image_weight=0.5)
    assert "T0" not in [row["case"] for row in mixed]  # the text still counts: T0 has none
    alone = similar_cases(opened, "qwerty", 10, image_query=query, image_weight=1)
    assert sorted(row["case"] for row in alone) == ["T0", "T1", "T2", "T3"] and alone[0]["case"] == "T2"


def test_a_case_without_text_is_named_as_such(bundle: Path) -> None:
    code, out, err = run("similar-cases", "--bundle", str(bundle), "--case", "T0")
    assert (code, out) == (2, "")
    assert err == "error: case T0 has no history or findings to compare with\n"


def test_an_image_weight_without_an_image_is_refused(bundle: Path) -> None:
    for weight in ("1", "0.5"):
        code, out, err = run("similar-cases", "--bundle", str(bundle), "--text", "hematuria", "--image-weight", weight)
        assert (code, out) == (2, "")
        assert err == "error: --image-weight needs --image (the image whose similarity it weighs)\n"
    code, _, err = run("similar-cases", "--bundle", str(bundle), "--text", "hematuria", "--image", "T2_a",
                       "--image-weight", "1", "--json")
    assert code == 0, err
