"""The Hugging Face folder opens offline with `datasets`, with the authors' splits and features."""

from __future__ import annotations

from pathlib import Path

import pytest

from medpix_tui.bundle import Bundle
from medpix_tui.hf import LOCATIONS, MODALITIES, write_hf


def test_datasets_loads_the_folder_offline(real_bundle: Bundle, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets is in the [test] extra")
    store = real_bundle.store
    by_split: dict[str, list[dict]] = {}
    for doc in store.find("Image_Reports"):
        by_split.setdefault(store.split_of(doc["U_id"]) or "none", []).append(doc)
    assert write_hf(real_bundle, tmp_path / "hf", by_split) == {"train": 1653, "dev": 197, "test": 200}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    assert {name: len(part) for name, part in loaded.items()} == {"train": 1653, "dev": 197, "test": 200}
    features = loaded["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert features["modality"].names == list(MODALITIES)
    assert features["location_category"].names == list(LOCATIONS)
    card = datasets.load_dataset_builder(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache")).info
    for name, split in card.splits.items():  # the card's sizes: the Arrow data's, as datasets records them
        assert split.num_examples == len(loaded[name]), name
        assert abs(split.num_bytes - loaded[name].data.nbytes) < 0.001 * split.num_bytes, name
    assert card.download_size == sum(p.stat().st_size for p in (tmp_path / "hf" / "data").iterdir())
    assert card.dataset_size == sum(s.num_bytes for s in card.splits.values())
    row = loaded["test"][0]
    doc = store.get_report(row["image_id"])
    assert MODALITIES[row["modality"]] == doc["Type"]
    assert LOCATIONS[row["location_category"]] == doc["Location Category"]
    assert row["case_title"] == doc["Case"]["Title"] and row["history"] == doc["Case"].get("History")
    from PIL import Image

    with Image.open(real_bundle.image_path(row["image_id"])) as original:
        assert row["image"].size == original.size and row["image"].tobytes() == original.tobytes()


def test_images_outside_the_splits_are_a_split_of_their_own(real_bundle: Bundle, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab's added case (no split) was dropped from the folder without a word."""
    datasets = pytest.importorskip("datasets", reason="datasets is in the [test] extra")
    docs = real_bundle.store.find("Image_Reports", limit=3)
    assert write_hf(real_bundle, tmp_path / "hf", {"train": docs[:2], "unsplit": docs[2:]}) == \
        {"train": 2, "dev": 0, "test": 0, "unsplit": 1}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    assert {name: len(part) for name, part in loaded.items()} == {"train": 2, "unsplit": 1}
    assert loaded["unsplit"][0]["image_id"] == docs[2]["image"]


def test_the_folder_reports_its_progress(real_bundle: Bundle, tmp_path: Path) -> None:
    """The hf export read every image with no progress shown (the others show theirs)."""
    import contextlib
    from collections.abc import Callable, Iterator

    counted: dict[str, list[int]] = {}

    @contextlib.contextmanager
    def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
        steps = counted.setdefault(f"{description}/{total}", [])
        yield steps.append

    docs = real_bundle.store.find("Image_Reports", limit=5)
    write_hf(real_bundle, tmp_path / "hf", {"train": docs[:3], "test": docs[3:]}, progress)
    assert {name: sum(steps) for name, steps in counted.items()} == {"Writing the Hugging Face folder/5": 5}
