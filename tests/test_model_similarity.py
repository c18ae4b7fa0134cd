"""Cosine ranking of images and cases on made-up embeddings; the embeddings files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medpix_tui.errors import BundleError, InputError
from medpix_tui.model.evaluate import case_interval
from medpix_tui.model.similarity import EmbeddingIndex, load_index, save_index, top_cases, top_images


def unit(*rows: list[float]) -> np.ndarray:
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture()
def index() -> EmbeddingIndex:
    # a: along x; b: 45 degrees; c: along y; d: along -x; e: same as b (tie, later id)
    return EmbeddingIndex(ids=["a", "b", "c", "d", "e"], vectors=unit([1, 0], [1, 1], [0, 1], [-1, 0], [1, 1]))


def test_top_images_rank_by_cosine_with_ties_by_id(index: EmbeddingIndex) -> None:
    ranked = top_images(unit([1, 0.1])[0], index, 5)
    assert [i for i, _ in ranked] == ["a", "b", "e", "c", "d"]
    assert ranked[0][1] == pytest.approx(0.995, abs=1e-3)
    assert ranked[-1][1] == pytest.approx(-0.995, abs=1e-3)


def test_top_images_k_and_exclude(index: EmbeddingIndex) -> None:
    assert [i for i, _ in top_images(index.row("b"), index, 2, exclude={"b"})] == ["e", "a"]
    assert top_images(index.row("a"), index, 1) == [("a", pytest.approx(1.0))]


def test_top_cases_score_by_best_image_and_exclude(index: EmbeddingIndex) -> None:
    case_of = {"a": "C1", "b": "C2", "c": "C2", "d": "C3", "e": "C3"}
    rows = top_cases(unit([0, 1])[0], index, case_of, 3)
    assert [r["case"] for r in rows] == ["C2", "C3", "C1"]
    assert rows[0]["image"] == "c" and rows[0]["score"] == pytest.approx(1.0)
    assert rows[1]["image"] == "e"  # C3 scores by its best image, not its mean
    assert [r["case"] for r in top_cases(unit([0, 1])[0], index, case_of, 3, exclude={"C2"})] == ["C3", "C1"]


def test_unknown_image_is_an_input_error(index: EmbeddingIndex) -> None:
    with pytest.raises(InputError, match="no image 'zzz'"):
        index.row("zzz")


def test_index_round_trip_in_float16(tmp_path: Path, index: EmbeddingIndex) -> None:
    save_index(tmp_path / "emb", index.ids, index.vectors)
    assert np.load(tmp_path / "emb" / "embeddings.npy").dtype == np.float16
    back = load_index(tmp_path / "emb")
    assert back.ids == index.ids
    np.testing.assert_allclose(back.vectors, index.vectors, atol=1e-3)


def test_missing_or_inconsistent_index_is_a_bundle_error(tmp_path: Path, index: EmbeddingIndex) -> None:
    with pytest.raises(BundleError, match="no image embeddings"):
        load_index(tmp_path / "nothing")
    save_index(tmp_path / "emb", index.ids[:3], index.vectors)
    with pytest.raises(BundleError, match="do not match"):
        load_index(tmp_path / "emb")


def test_case_interval_resamples_whole_cases() -> None:
    assert case_interval([True] * 6, list("aabbcc")) == [1.0, 1.0]
    # 40 images, 70% right. Alone, each image is its own case; clustered, each case's 4
    # images share one outcome, so the data hold only 10 independent draws: a wider interval.
    correct = [True] * 28 + [False] * 12
    alone = case_interval(correct, [str(i) for i in range(40)])
    clustered = case_interval(correct, [str(i // 4) for i in range(40)])
    assert alone[0] < 0.7 < alone[1] and clustered[0] < 0.7 < clustered[1]
    assert clustered[1] - clustered[0] > 1.5 * (alone[1] - alone[0])
    assert case_interval(correct, list(map(str, range(40)))) == alone  # seeded: the same figures every run
