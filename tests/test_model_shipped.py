"""The checkpoint shipped in ``bundle/model/`` reproduces the test figures it claims.

Scored straight from the source release's PNGs (the test split, 200 images) with the
library's CPU path, the same one ``medpix-tui eval`` takes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medpix_tui.model import shipped_checkpoint_dir
from medpix_tui.model.checkpoint import read_metadata, read_prompts, text_weights_path
from medpix_tui.model.encoder import load_image_encoder
from medpix_tui.model.evaluate import evaluate_files
from medpix_tui.model.prompts import PAPER_ACCURACY, TASKS, paper_prompts, truth_of
from medpix_tui.source import load_source, sha256_file


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = shipped_checkpoint_dir()
    assert path is not None, "bundle/model/ holds no checkpoint"
    return path


def test_shipped_checkpoint_is_small_and_uses_the_papers_prompts(model_dir: Path) -> None:
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert size <= 100 * 1024 * 1024
    assert read_prompts(model_dir) == paper_prompts()
    assert read_metadata(model_dir)["text_tower"]["sha256"] == sha256_file(text_weights_path())


def test_shipped_checkpoint_reproduces_its_test_figures(model_dir: Path, source_dir: Path) -> None:
    claimed = read_metadata(model_dir)["evaluation"]["test"]
    source = load_source(source_dir, check_images=False)
    docs = [d for d in source.images if source.splits.get(d["U_id"]) == "test"]
    got = evaluate_files(load_image_encoder(model_dir), "test", [source.image_path(d["image"]) for d in docs],
                         [truth_of(d) for d in docs])
    assert got["n"] == claimed["n"] == 200
    for task in TASKS:
        # one image may flip on a near tie between CPUs with other float kernels; no more
        assert abs(got[task]["correct"] - claimed[task]["correct"]) <= 1, task
        for cls, info in claimed[task]["per_class"].items():
            assert got[task]["per_class"][cls]["n"] == info["n"]
        assert claimed[f"{task}_accuracy"] > PAPER_ACCURACY[task]  # the shipped model beats the paper


def test_bundle_embeddings_are_the_models_embeddings_of_the_files(real_bundle, model_dir: Path) -> None:
    """The build embeds the pictures it decoded while validating: they must be the files' own."""
    from medpix_tui.model.similarity import load_index

    index = load_index(real_bundle.embeddings_dir)
    names = index.ids[::205]
    exact = load_image_encoder(model_dir).encode_files([real_bundle.image_path(n) for n in names])
    for name, vector in zip(names, exact, strict=True):
        assert abs(float(index.vectors[index.ids.index(name)] @ vector) - 1.0) < 2e-3, name


def test_shipped_release_embeddings_cover_every_release_image(real_bundle, source_dir: Path, model_dir: Path) -> None:
    """The checkpoint ships a vector for each release file's sha256, so ``bundle build`` embeds none of them."""
    from medpix_tui.model.checkpoint import WEIGHTS_FILE
    from medpix_tui.model.release import read_release

    shipped = read_release(model_dir, sha256_file(model_dir / WEIGHTS_FILE))
    source = load_source(source_dir, check_images=False)
    assert {sha256_file(source.image_path(d["image"])) for d in source.images} <= set(shipped)
    info = real_bundle.manifest["model"]
    assert (info["reused"], info["embedded"]) == (len(source.images), 0)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_eval_reusing_shipped_vectors_reports_what_embedding_the_pixels_does(real_bundle, model_dir: Path,
                                                                            split: str) -> None:
    """``eval`` takes the release vectors by file digest; every figure is the one ``--from-pixels`` gives
    (dev's location ECE moved by 0.002 when those vectors were float16)."""
    from medpix_tui.model.service import BundleModel

    model = BundleModel(real_bundle)
    fast = model.evaluate(split, by_case=True)
    assert fast["embeddings"] == {"reused": fast["n"], "embedded": 0} and "encoder" not in model.__dict__
    slow = model.evaluate(split, by_case=True, from_pixels=True)
    assert slow["embeddings"] == {"reused": 0, "embedded": slow["n"]}
    for key in ("n", "modality", "location", "modality_ci95", "location_ci95", "modality_ece", "location_ece",
                "by_case"):
        assert fast[key] == slow[key], key
    claimed = read_metadata(model_dir)["evaluation"][split]
    assert (fast["modality_accuracy"], fast["location_accuracy"]) == (claimed["modality_accuracy"],
                                                                      claimed["location_accuracy"])
