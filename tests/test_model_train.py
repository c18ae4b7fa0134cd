"""Training pipeline smoke test on CPU with a tiny config: pack, train, resume, export, load.

The checkpoint it exports is then the subject of the library tests: the inference tower
matches open_clip's, the zero-shot head matches the text tower on the prompts, and the
embeddings written for a bundle rank an image first for itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medpix_tui.bundle import build_bundle, open_bundle
from medpix_tui.model import input_size, write_embeddings
from medpix_tui.model.checkpoint import (
    CONFIG_FILE,
    HEAD_FILE,
    METADATA_FILE,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
)
from medpix_tui.model.encoder import load_image_encoder
from medpix_tui.model.preprocess import picture_of
from medpix_tui.model.prompts import paper_prompts
from medpix_tui.model.similarity import load_index, top_images
from medpix_tui.model.text import load_text_tower
from medpix_tui.source import LOCATION_CATEGORIES, load_source
from tests.support import tiny_case, tiny_image, write_source
from tools.train.data import augment, read_pack
from tools.train.export import export
from tools.train.pack import build_pack
from tools.train.pretrain import PRETRAIN_METRICS, PRETRAIN_WEIGHTS, nt_xent
from tools.train.train import BEST, LAST, METRICS, RUN, build_model, class_weights, config_digest, override, train

SIZE = 32
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 7,
    "model_cfg": {"embed_dim": 16,
                  "vision_cfg": {"image_size": SIZE, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
                  "text_cfg": {"hf_model_name": "x", "hf_tokenizer_name": "x", "hf_proj_type": "mlp",
                               "hf_pooler_type": "mean_pooler", "context_length": 32}},
    "preprocess": {"mean": 0.2, "std": 0.25},
    "train": {"device": "cpu", "threads": 1, "epochs": 2, "batch_size": 4, "lr": 0.01, "weight_decay": 0.05,
              "warmup_epochs": 1, "label_smoothing": 0.1, "class_balance": 0.5,
              "loss_weights": {"caption": 0.5, "modality": 1.0, "location": 1.0},
              "augment": {"rotate_deg": 10, "scale": 1.1, "shift": 0.05, "flip": 0.5, "gamma": 1.2, "contrast": 0.1,
                          "brightness": 0.05},
              "max_minutes": 0},
}


def tiny_source(root: Path) -> Path:
    """Ten cases of two images (CT bright disc, MR ring), all five locations, three splits."""
    cases, images = [], []
    for i in range(10):
        uid = f"M{i}"
        cases.append(tiny_case(uid, [f"{uid}_ct"], [f"{uid}_mr"]))
        for modality in ("CT", "MR"):
            doc = tiny_image(uid, f"{uid}_{modality.lower()}", modality, f"made-up {modality} caption {i}")
            doc["Location Category"] = LOCATION_CATEGORIES[i % 5]
            images.append(doc)
    splits = {"train": [f"M{i}" for i in range(6)], "dev": ["M6", "M7"], "test": ["M8", "M9"]}
    write_source(root, cases, images, splits, write_images=False)
    yy, xx = np.mgrid[:48, :40]
    r = np.hypot(yy - 24, xx - 20)
    for i, doc in enumerate(images):
        picture = (r < 12 + i % 5) * 220 if doc["Type"] == "CT" else ((r > 8) & (r < 14 + i % 5)) * 160
        Image.fromarray(picture.astype(np.uint8)).save(root / "images" / f"{doc['image']}.png")
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    source = tiny_source(root / "source")
    build_pack(source, SIZE, root / "pack", context_length=32, log=lambda *_: None)
    pack = read_pack(root / "pack")
    train(deepcopy(TINY), pack, root / "run", log=lambda *_: None)
    export(root / "run", pack, root / "model")
    return {"root": root, "source": source, "pack": root / "pack", "run": root / "run", "model": root / "model"}


def test_pack_holds_pictures_labels_and_text_features(work: dict[str, Path]) -> None:
    pack = read_pack(work["pack"])
    assert pack.pictures.shape == (20, SIZE, SIZE) and pack.pictures.dtype == np.uint8
    assert pack.features.shape == (20 + 7, 384)
    assert [len(pack.indices(s)) for s in ("train", "dev", "test")] == [12, 4, 4]
    assert pack.meta["prompts"]["location"]["texts"] == paper_prompts()["location"]["texts"]
    assert list(pack.labels("modality")[:2]) == [0, 1]


def test_augment_is_seeded_and_bounded(work: dict[str, Path]) -> None:
    pictures = torch.from_numpy(read_pack(work["pack"]).pictures[:4])
    a = augment(pictures, torch.Generator().manual_seed(1), TINY["train"]["augment"])
    b = augment(pictures, torch.Generator().manual_seed(1), TINY["train"]["augment"])
    assert a.shape == (4, 1, SIZE, SIZE) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_erasing_hides_one_rectangle_of_the_set_size() -> None:
    still = {"rotate_deg": 0, "scale": 1.0, "shift": 0, "flip": 0, "gamma": 1.0, "contrast": 0, "brightness": 0}
    white = torch.full((64, 48, 48), 255, dtype=torch.uint8)
    kept = augment(white, torch.Generator().manual_seed(3), still)
    assert float(kept.min()) > 0.99, "no erasing unless asked"
    erased = augment(white, torch.Generator().manual_seed(3), {**still, "erase": 1.0})
    hidden = (erased == 0).float().mean(dim=(1, 2, 3))
    assert float(hidden.min()) > 0.05 and float(hidden.max()) < 0.35
    for picture in erased[:, 0] == 0:  # one axis-aligned rectangle: its rows and columns span it exactly
        rows, cols = picture.any(1).nonzero(), picture.any(0).nonzero()
        assert int(picture.sum()) == len(rows) * len(cols)
    half = augment(white, torch.Generator().manual_seed(3), {**still, "erase": 0.5})
    assert 10 < int(((half == 0).flatten(1).any(1)).sum()) < 54


def test_class_weights_lift_rare_classes() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    rows = torch.arange(100)
    flat = class_weights(labels, rows, 3, 0.0)
    torch.testing.assert_close(flat, torch.ones(3))
    half, full = class_weights(labels, rows, 3, 0.5), class_weights(labels, rows, 3, 1.0)
    assert half[2] > half[1] > half[0] and float(half[labels].mean()) == pytest.approx(1.0)
    counts = torch.tensor([60.0, 30.0, 10.0])
    torch.testing.assert_close(full * counts, torch.full((3,), 100 / 3))  # every class weighs the same in all
    only_train = class_weights(labels, torch.arange(60, 100), 3, 1.0)  # class 0 is absent from these rows
    assert torch.isfinite(only_train).all()


def test_training_logs_every_epoch(work: dict[str, Path]) -> None:
    lines = [json.loads(x) for x in (work["run"] / METRICS).read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert all(np.isfinite(x["train_loss"]) and 0 <= x["dev_score"] <= 1 for x in lines)
    assert (work["run"] / LAST).exists() and (work["run"] / BEST).exists()
    assert json.loads((work["run"] / RUN).read_text())["device"] == "cpu"


def test_interrupted_run_resumes_to_the_same_weights(work: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    pack = read_pack(work["pack"])
    cut = deepcopy(TINY)
    cut["train"]["max_minutes"] = 1e-9  # stop after the first epoch
    out = work["root"] / "resumed"
    assert train(cut, pack, out, log=lambda *_: None)["stopped_early"]
    assert len((out / METRICS).read_text().splitlines()) == 1
    run = train(deepcopy(TINY), pack, out, log=lambda *_: None)
    assert run["epochs_done"] == 2
    resumed, straight = load_file(str(out / BEST)), load_file(str(work["run"] / BEST))
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)


def test_a_record_whose_state_never_landed_is_not_logged_twice(work: dict[str, Path]) -> None:
    # a kill between end_epoch's append and its last.pt: the epoch runs again on resume
    pack = read_pack(work["pack"])
    cut = deepcopy(TINY)
    cut["train"]["max_minutes"] = 1e-9  # stop after the first epoch
    out = work["root"] / "killed"
    train(cut, pack, out, log=lambda *_: None)
    first = (out / METRICS).read_text().splitlines()[0]
    with open(out / METRICS, "a") as f:  # epoch 2's record, then the kill, and a line cut short
        f.write(first.replace('"epoch": 1', '"epoch": 2') + "\n" + first[:20])
    train(deepcopy(TINY), pack, out, log=lambda *_: None)
    epochs = [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()]
    assert epochs == [1, 2]


def test_ema_run_judges_and_ships_the_averaged_weights(work: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    pack = read_pack(work["pack"])
    cfg = deepcopy(TINY)
    cfg["train"].update(ema_decay=0.5, epochs=1)
    out = work["root"] / "ema"
    train(cfg, pack, out, log=lambda *_: None)
    best, last = load_file(str(out / BEST)), torch.load(out / LAST, weights_only=False)
    key = "visual.attnpool.c_proj.weight"
    torch.testing.assert_close(best[key], last["ema"][f"module.{key}"].float())
    assert not torch.allclose(best[key], last["model"][key].float()), "the average differs from the last step"
    assert int(last["ema"]["n_averaged"]) == 3, "one update per step (12 train images, batches of 4)"


def test_select_last_ships_the_last_epoch_not_dev_best(work: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    pack = read_pack(work["pack"])
    cfg = deepcopy(TINY)
    cfg["train"].update(select="last", epochs=3, lr=0.05)
    out = work["root"] / "last"
    run = train(cfg, pack, out, log=lambda *_: None)
    assert run["best_epoch"] == 3
    shipped, last = load_file(str(out / BEST)), torch.load(out / LAST, weights_only=False)
    key = "visual.attnpool.c_proj.weight"
    torch.testing.assert_close(shipped[key], last["model"][key].float())
    records = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    # "best" still means dev's best so far
    assert run["best_score"] == pytest.approx(max(r["dev_score"] for r in records), abs=1e-4)
    cfg["train"]["select"] = "worst"
    with pytest.raises(SystemExit, match="select"):
        train(cfg, pack, work["root"] / "bad-select", log=lambda *_: None)


def test_command_line_overrides_make_another_run() -> None:
    reseeded = override(TINY, seed=TINY["seed"] + 1, epochs=5)
    assert reseeded["seed"] == TINY["seed"] + 1 and reseeded["train"]["epochs"] == 5
    assert reseeded["name"] == f"{TINY['name']}-s{TINY['seed'] + 1}"
    assert config_digest(reseeded) != config_digest(TINY)  # so it cannot resume the other run's last.pt
    assert override(TINY) == TINY and TINY["train"]["epochs"] != 5  # the original is left alone
    with pytest.raises(SystemExit):
        override(TINY, epochs=0)


def test_deterministic_run_switches_on_deterministic_kernels(work: dict[str, Path]) -> None:
    cfg = override(TINY, epochs=1, deterministic=True)
    assert cfg["train"]["deterministic"] and config_digest(cfg) != config_digest(override(TINY, epochs=1))
    try:
        train(cfg, read_pack(work["pack"]), work["root"] / "deterministic", log=lambda *_: None)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["train"].update(epochz=3), "unknown key(s) train.epochz (a typo?)"),
    (lambda c: c["train"].update(epochs=-3), "train.epochs must be a number of at least 1, got -3"),
    (lambda c: c["train"].update(batch_size=0), "train.batch_size must be a number of at least 1, got 0"),
    (lambda c: c["train"].update(lr="0.001"), "train.lr must be a number above 0, got '0.001'"),
    (lambda c: c.update(seed="abc"), "seed must be a whole number, got 'abc'"),
    (lambda c: c["train"].update(max_minutes=-1), "train.max_minutes must be 0 (no limit) or more, got -1"),
    (lambda c: c.pop("train"), "must be an object with a 'train' object"),
    (lambda c: c["train"]["augment"].update(rotate_degs=10),
     "unknown key(s) train.augment.rotate_degs (a typo?)"),
    (lambda c: c["train"]["augment"].pop("flip"), "lacks train.augment.flip"),
    (lambda c: c["train"]["loss_weights"].update(modality="1"), "train.loss_weights.modality must be a number"),
    (lambda c: c["preprocess"].update(sd=0.2), "unknown key(s) preprocess.sd"),
    (lambda c: c["train"].update(pretrain={"epochs": 1, "batch_size": 8, "lr": 0.1, "weight_decay": 0,
                                           "temperature": 0.2, "augment": {"rotate": 1}}),
     "has unknown key(s) train.pretrain.augment.rotate (a typo?)"),
], ids=["typo", "negative-epochs", "zero-batch", "lr-text", "seed-text", "negative-budget", "no-train",
        "augment-typo", "augment-missing", "loss-weight-text", "preprocess-typo", "pretrain-augment"])
def test_a_bad_config_is_one_line_before_anything_runs(tmp_path: Path, change: Any, message: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tools.train.train import main

    cfg = deepcopy(TINY)
    change(cfg)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    monkeypatch.setattr("sys.argv", ["train", "--config", str(tmp_path / "cfg.json"), "--pack", str(tmp_path / "p"),
                                     "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
    for text, said in (("{not json", "is not JSON"), (None, "cannot read config")):
        path = tmp_path / ("bad.json" if text else "missing.json")
        if text:
            path.write_text(text)
        monkeypatch.setattr("sys.argv", ["train", "--config", str(path), "--pack", "p", "--out", str(tmp_path / "r")])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_export_refuses_a_pack_of_another_size(work: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # a 64 px run exported with a 32 px pack wrote a checkpoint saying both, with wrong figures
    build_pack(work["source"], 24, tmp_path / "pack24", context_length=32, log=lambda *_: None)
    with pytest.raises(SystemExit, match="the pack's pictures are 24px, the run was trained at 32px"):
        export(work["run"], read_pack(tmp_path / "pack24"), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_an_export_stopped_half_way_leaves_the_old_checkpoint_whole(work: dict[str, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # it wrote into the folder in place: Ctrl-C while scoring left new weights beside the old figures
    model = tmp_path / "model"
    export(work["run"], read_pack(work["pack"]), model)
    (model / "README.md").write_text("the model card, written by hand\n")
    (model / WEIGHTS_FILE).write_bytes((model / WEIGHTS_FILE).read_bytes())  # same bytes, new mtime
    before = {p.name: p.read_bytes() for p in model.iterdir()}

    def stop(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tools.train.export.evaluate_pictures", stop)
    with pytest.raises(KeyboardInterrupt):
        export(work["run"], read_pack(work["pack"]), model)
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no staging folder left behind"
    monkeypatch.undo()
    export(work["run"], read_pack(work["pack"]), model)
    assert (model / "README.md").read_text() == "the model card, written by hand\n", "the card stays with the model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_export_replaces_only_a_checkpoint_folder(work: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="refusing to replace .*notes: it is not a checkpoint folder"):
        export(work["run"], read_pack(work["pack"]), tmp_path / "notes")
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["mine.txt"]


def test_a_pack_stopped_half_way_leaves_nothing(work: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("medpix_tui.model.text.package_text_tower", stop)  # after the pictures are written
    with pytest.raises(KeyboardInterrupt):
        build_pack(work["source"], SIZE, tmp_path / "pack", context_length=32, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_nt_xent_rewards_matching_views() -> None:
    z = torch.eye(8) * 5
    matched = nt_xent(z, z.clone(), temperature=0.1)
    swapped = nt_xent(z, z.roll(1, dims=0), temperature=0.1)
    assert float(matched) < 0.01 and float(swapped) > 5


def with_pretraining(epochs: int, max_minutes: float = 0) -> dict[str, Any]:
    cfg = deepcopy(TINY)
    cfg["train"]["max_minutes"] = max_minutes
    cfg["train"]["pretrain"] = {"epochs": epochs, "batch_size": 6, "lr": 0.01, "weight_decay": 0.05, "temperature": 0.2,
                                "head_hidden": 16, "head_out": 8, "augment": TINY["train"]["augment"]}
    return cfg


def test_pretraining_runs_first_on_train_pictures_and_resumes(work: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    pack = read_pack(work["pack"])
    straight = work["root"] / "pretrained"
    train(with_pretraining(2), pack, straight, log=lambda *_: None)
    lines = [json.loads(x) for x in (straight / PRETRAIN_METRICS).read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all(np.isfinite(x["loss"]) for x in lines)
    assert len((straight / METRICS).read_text().splitlines()) == 2
    plain, pretrained = load_file(str(work["run"] / BEST)), load_file(str(straight / BEST))
    assert not torch.equal(plain["visual.conv1.weight"], pretrained["visual.conv1.weight"])
    # A pre-training cut off by the time budget resumes from its own state to the same tower.
    cut = work["root"] / "pretrain-cut"
    assert train(with_pretraining(2, max_minutes=1e-9), pack, cut, log=lambda *_: None)["stopped_early"]
    assert len((cut / PRETRAIN_METRICS).read_text().splitlines()) == 1
    assert not (cut / PRETRAIN_WEIGHTS).exists() and not (cut / METRICS).exists()
    train(with_pretraining(2), pack, cut, log=lambda *_: None)
    resumed = load_file(str(cut / PRETRAIN_WEIGHTS))
    for key, value in load_file(str(straight / PRETRAIN_WEIGHTS)).items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)


def test_export_writes_open_clip_layout_with_figures(work: dict[str, Path]) -> None:
    model = work["model"]
    for name in (CONFIG_FILE, WEIGHTS_FILE, HEAD_FILE, METADATA_FILE, "prompts.json", "release_embeddings.safetensors",
                 *TOKENIZER_FILES):
        assert (model / name).is_file(), name
        assert (model / name).stat().st_mode & 0o044 == 0o044, f"{name} must be readable by others (bundles are shared)"
    config = json.loads((model / CONFIG_FILE).read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert config["preprocess_cfg"]["size"] == SIZE
    meta = json.loads((model / METADATA_FILE).read_text())
    test = meta["evaluation"]["test"]
    assert test["n"] == 4 and test["modality"]["confusion"]["classes"] == ["CT", "MR"]
    assert sum(map(sum, test["location"]["confusion"]["matrix"])) == 4
    assert test["location_ci95"][0] <= test["location_accuracy"] <= test["location_ci95"][1]
    assert meta["paper"] == {"modality_accuracy": 0.88, "location_accuracy": 0.522}


def test_inference_tower_matches_open_clip(work: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    pack = read_pack(work["pack"])
    reference = build_model(TINY, pack.text_dir)
    reference.load_state_dict(load_file(str(work["run"] / BEST)), strict=False)
    reference.eval()
    encoder = load_image_encoder(work["model"])
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(encoder.tower(x), reference.visual(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.tower.modules()), "folded into the convolutions"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in reference.visual.modules())


def test_zero_shot_head_is_the_text_tower_on_the_prompts(work: dict[str, Path]) -> None:
    encoder = load_image_encoder(work["model"])
    text = load_text_tower(work["model"])
    for task, spec in paper_prompts().items():
        np.testing.assert_allclose(text.encode(spec["texts"]), encoder.head.embeddings[task], atol=1e-4)
        assert encoder.head.classes[task] == tuple(spec["classes"])
    probs = encoder.head.probabilities(encoder.encode_arrays(read_pack(work["pack"]).pictures))
    np.testing.assert_allclose(probs["location"].sum(axis=1), 1.0, rtol=1e-5)


def test_write_embeddings_for_a_bundle(work: dict[str, Path]) -> None:
    images = sorted((p.stem, p) for p in (work["source"] / "images").glob("*.png"))
    info = write_embeddings(work["model"], images, work["root"] / "embeddings")
    assert info["name"] == "tiny" and info["dim"] == 16 and info["count"] == 20 and len(info["weights_sha256"]) == 64
    index = load_index(work["root"] / "embeddings")
    assert index.ids == [name for name, _ in images]
    exact = load_image_encoder(work["model"]).encode_files([path for _, path in images])
    np.testing.assert_allclose(index.vectors, exact, atol=2e-3)  # float16 on disk
    assert dict(top_images(index.row("M3_mr"), index, 20))["M3_mr"] == pytest.approx(1.0, abs=2e-3)


def test_embeddings_from_the_pictures_validation_kept_match_the_files(work: dict[str, Path]) -> None:
    """``bundle build`` embeds the pictures it decoded to validate, not the files a second time."""
    size, pictures = input_size(work["model"]), {}
    source = load_source(work["source"], keep=lambda name, im: pictures.__setitem__(name, picture_of(im, size)[0]))
    assert sorted(pictures) == sorted(d["image"] for d in source.images)
    images = sorted((p.stem, p) for p in (work["source"] / "images").glob("*.png"))
    write_embeddings(work["model"], images, work["root"] / "kept", pictures=pictures)
    write_embeddings(work["model"], images, work["root"] / "decoded")
    # float16 on disk, and the forward pass may use another number of threads: equal to its precision
    np.testing.assert_allclose(load_index(work["root"] / "kept").vectors, load_index(work["root"] / "decoded").vectors,
                               atol=2e-3)


def test_bundle_build_takes_a_candidate_checkpoint(work: dict[str, Path]) -> None:
    """``build_bundle(model_dir=...)`` (``bench_data.py --model``) embeds with that checkpoint, not bundle/model."""
    out = build_bundle(work["source"], work["root"] / "candidate-bundle", model_dir=work["model"])
    bundle = open_bundle(out)
    assert bundle.manifest["model"]["name"] == "tiny" and bundle.manifest["model"]["count"] == 20


def test_release_embeddings_are_reused_by_file_digest(work: dict[str, Path], tmp_path: Path) -> None:
    """The export ships every pack image's vector under its file's sha256; the build embeds only the others."""
    from medpix_tui.model.release import RELEASE_FILE

    assert (work["model"] / RELEASE_FILE).is_file()
    images = sorted((p.stem, p) for p in (work["source"] / "images").glob("*.png"))
    info = write_embeddings(work["model"], images, tmp_path / "all")
    assert (info["reused"], info["embedded"]) == (20, 0)
    changed = tmp_path / "M3_mr.png"  # another picture under a release image's name: another digest
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(changed)
    images = [(name, changed if name == "M3_mr" else path) for name, path in images]
    info = write_embeddings(work["model"], images, tmp_path / "one")
    assert (info["reused"], info["embedded"]) == (19, 1)
    index = load_index(tmp_path / "one")
    exact = load_image_encoder(work["model"]).encode_files([path for _, path in images])
    np.testing.assert_allclose(index.vectors, exact, atol=2e-3)


def test_release_embeddings_of_other_weights_are_not_used(work: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(work["model"], model)
    state = load_file(str(model / WEIGHTS_FILE))
    state["visual.conv1.weight"] = state["visual.conv1.weight"] * 0.5
    save_file(state, str(model / WEIGHTS_FILE))
    images = sorted((p.stem, p) for p in (work["source"] / "images").glob("*.png"))
    info = write_embeddings(model, images, tmp_path / "emb")
    assert (info["reused"], info["embedded"]) == (0, 20)


def test_lite0_tower_trains_from_imagenet_weights_and_exports(work: dict[str, Path], tmp_path: Path) -> None:
    """Pretrained EfficientNet-Lite0: frozen blocks keep the package's weights, the export loads into the library."""
    from safetensors.torch import load_file

    from medpix_tui.model.efficientnet import EfficientNetLite, pretrained_state

    cfg = deepcopy(TINY)
    cfg["model_cfg"]["vision_cfg"] = {"architecture": "efficientnet_lite0", "image_size": SIZE, "dropout": 0.2,
                                      "drop_path": 0.1}
    cfg["preprocess"] = {"mean": 0.5, "std": 0.5}
    cfg["train"].update(epochs=1, freeze=3, trunk_lr_scale=0.3, joint_balance=0.5)
    cfg["train"]["augment"].update(zoom=2.0, window=0.5, erase=0.3)
    pack = read_pack(work["pack"])
    train(cfg, pack, tmp_path / "run", log=lambda *_: None)
    export(tmp_path / "run", pack, tmp_path / "model")
    best, imagenet = load_file(str(tmp_path / "run" / BEST)), pretrained_state()
    torch.testing.assert_close(best["visual._blocks.2._depthwise_conv.weight"],
                               imagenet["_blocks.2._depthwise_conv.weight"])
    torch.testing.assert_close(best["visual._blocks.2._bn1.running_mean"], imagenet["_blocks.2._bn1.running_mean"])
    assert not torch.equal(best["visual._blocks.9._project_conv.weight"], imagenet["_blocks.9._project_conv.weight"])
    encoder = load_image_encoder(tmp_path / "model")
    assert isinstance(encoder.tower, EfficientNetLite) and encoder.dim == 16
    reference = build_model(cfg, pack.text_dir, pretrained=False)
    reference.load_state_dict(best, strict=False)
    reference.eval()
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(encoder.tower(x), reference.visual(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.tower.modules()), "folded into the convolutions"
    meta = json.loads((tmp_path / "model" / METADATA_FILE).read_text())
    assert meta["image_tower"]["architecture"].startswith("EfficientNet-Lite0")


def test_window_jitter_keeps_the_background_black() -> None:
    gen = torch.Generator().manual_seed(0)
    batch = torch.zeros(16, 32, 32, dtype=torch.uint8)
    batch[:, 8:24, 8:24] = 120
    cfg = {"rotate_deg": 0, "scale": 1.0, "shift": 0.0, "flip": 0.0, "gamma": 1.0, "contrast": 0.0, "brightness": 0.0,
           "window": 1.0}
    out = augment(batch, gen, cfg)
    assert float(out[:, :, :4, :4].abs().max()) == 0.0
    inside = out[:, 0, 12:20, 12:20].flatten(1).mean(1)
    assert float(inside.std()) > 0.05, "each picture gets its own window"


def test_joint_weights_even_out_modality_within_a_location() -> None:
    from tools.train.train import joint_weights

    labels = {"modality": torch.tensor([0] * 2 + [1] * 8), "location": torch.tensor([3] * 10)}
    weights = joint_weights(labels, torch.arange(10), 1.0)
    assert float(weights[:2].sum()) == pytest.approx(float(weights[2:].sum()))
    assert float(weights.mean()) == pytest.approx(1.0)


def test_ensemble_checkpoint_is_the_mean_of_its_members_logits(work: dict[str, Path], tmp_path: Path) -> None:
    """Two towers side by side as one CLIP: its logits are the shares' mean of the members', text search included."""
    import shutil

    from safetensors.torch import load_file, save_file

    from tools.train.ensemble import compose

    other = tmp_path / "other"  # a second member: the tiny model with another logit scale and a perturbed tower
    shutil.copytree(work["model"], other)
    state = load_file(str(other / WEIGHTS_FILE))
    state["logit_scale"] = state["logit_scale"] + 0.7
    state["visual.conv1.weight"] = state["visual.conv1.weight"] * 0.8
    save_file(state, str(other / WEIGHTS_FILE))
    pack = read_pack(work["pack"])
    compose([work["model"], other], [0.3, 0.7], pack, tmp_path / "ens", "tiny-ens")
    members = [load_image_encoder(work["model"]), load_image_encoder(other)]
    ens = load_image_encoder(tmp_path / "ens")
    pictures = pack.pictures[:6]
    got = {t: np.log(p) for t, p in ens.head.probabilities(ens.encode_arrays(pictures)).items()}
    for task, log_probs in got.items():
        logits = sum(w * m.head.logit_scale * (m.encode_arrays(pictures) @ m.head.embeddings[task].T)
                     for w, m in zip((0.3, 0.7), members, strict=True))
        want = (logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
                - logits.max(1, keepdims=True))
        np.testing.assert_allclose(log_probs, want, atol=1e-4)
    text = load_text_tower(tmp_path / "ens")
    for task, spec in paper_prompts().items():
        np.testing.assert_allclose(text.encode(spec["texts"]), ens.head.embeddings[task], atol=1e-4)


def test_training_threads_wait_passively_unless_told() -> None:
    """tools.train makes OpenMP's threads sleep between regions (spinning ones starve a shared 2-core host)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import tools.train, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"PYTHONPATH": str(root)}
    for given, want in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = env if given is None else env | {"OMP_WAIT_POLICY": given}
        out = subprocess.run([sys.executable, "-c", code], env=run_env, cwd=root, capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == want


@pytest.mark.parametrize("architecture", ["efficientnet_lite0", "efficientnet_lite1"])
def test_each_lite_layout_holds_its_packages_imagenet_weights(architecture: str) -> None:
    """lite_spec's table must give every tensor of the package's state dict its exact shape."""
    from medpix_tui.model.efficientnet import EfficientNetLite, pretrained_state

    tower = EfficientNetLite(16, 64, architecture=architecture)
    state = pretrained_state(architecture)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in tower.state_dict().items() if k != "proj.weight"}
    assert len({k.split(".")[1] for k in state if k.startswith("_blocks.")}) == {
        "efficientnet_lite0": 16, "efficientnet_lite1": 21}[architecture]


def test_lite0_gives_the_same_output_in_channels_last() -> None:
    """Training runs the tower in channels_last (oneDNN's depthwise kernels); the SAME padding must not care."""
    from medpix_tui.model.efficientnet import EfficientNetLite

    torch.manual_seed(0)
    tower = EfficientNetLite(16, 64).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = tower(x)
        got = tower.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_missing_pack_or_run_is_one_line(work: dict[str, Path], tmp_path: Path) -> None:
    """Both were a FileNotFoundError traceback (train, export, ensemble, regions)."""
    with pytest.raises(SystemExit, match=r"is not a pack \(no pack.json\); make one with python -m tools.train.pack"):
        read_pack(tmp_path)
    with pytest.raises(SystemExit, match=r"is not a finished run \(no run.json\)"):
        export(tmp_path, read_pack(work["pack"]), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])


def test_the_tools_refuse_bad_options_in_one_line(tmp_path: Path) -> None:
    """--split bogus was a ZeroDivisionError, --out under a file a traceback, --context-length 0 unchecked."""
    src = tiny_source(tmp_path / "src")
    unsplit = write_source(tmp_path / "unsplit", splits={"train": ["T1", "T2"], "dev": [], "test": []})
    for args, message in (
            (["tools.train.pack", "--source", str(src), "--size", "32", "--out", "/etc/passwd/x"],
             "error: cannot create /etc/passwd/x: not a folder: /etc/passwd is a file"),
            (["tools.train.pack", "--source", str(src), "--size", "32", "--out", str(tmp_path / "p"),
              "--context-length", "0"], "error: --context-length 0 is not a number of text tokens"),
            (["tools.train.regions", "--source", str(unsplit), "--model", str(tmp_path), "--split", "dev"],
             f"error: no image of {unsplit} is in the dev split")):
        run = _tool(*args)
        assert run.returncode == 2 and run.stderr.startswith(message) and run.stderr.count("\n") == 1, run.stderr
    run = _tool("tools.train.regions", "--source", str(src), "--model", str(tmp_path), "--split", "bogus")
    assert run.returncode == 2 and "invalid choice: 'bogus'" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "p").exists()


def test_the_training_package_lists_its_tools_with_examples() -> None:
    run = _tool("tools.train", "--help")
    assert run.returncode == 0, run.stderr
    for name in ("pack", "train", "export", "calibrate", "ensemble", "regions"):
        assert f"\n  {name} " in run.stdout and f"python -m tools.train.{name} " in run.stdout, name
    assert _tool("tools.train", "bogus").returncode == 2


def _main(tool: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run ``python -m tools.train.TOOL ARGS`` in this process; its exit status."""
    import importlib

    monkeypatch.setattr(sys, "argv", [f"{tool}.py", *args])
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"tools.train.{tool}").main()
    return int(exit_.value.code or 0)


@pytest.mark.parametrize(("tool", "args", "message"), [
    ("regions", ["--source", "s", "--model", "m", "--split", "bogus"], "argument --split: invalid choice: 'bogus'"),
    ("pack", ["--source", "s", "--size", "abc", "--out", "o"], "argument --size: invalid int value: 'abc'"),
    ("pack", [], "the following arguments are required: --source, --size, --out"),
    ("train", ["--config", "c", "--pack", "p"], "the following arguments are required: --out"),
    ("train", ["--config", "c", "--pack", "p", "--out", "o", "--epochs", "x"], "argument --epochs: invalid int"),
    ("export", [], "the following arguments are required: --out"),
    ("export", ["--out", "o"], "--pack is required (unless --release-only --source)"),
    ("calibrate", ["--bogus"], "unrecognized arguments: --bogus"),
    ("ensemble", ["--member", "m"], "the following arguments are required: --share, --pack, --out"),
    ("ensemble", ["--member", "m", "--share", "half", "--pack", "p", "--out", "o"], "argument --share: invalid float"),
    ("case_texts", ["--x"], "unrecognized arguments: --x"),
])
def test_the_tools_tell_usage_errors_in_one_line(tool: str, args: list[str], message: str,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """argparse printed its usage block (2 to 4 lines) before 'TOOL.py: error: ...'."""
    assert _main(tool, monkeypatch, *args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: {message}"), err
    assert err.endswith(f"; see 'python -m tools.train.{tool} --help'\n"), err


@pytest.mark.parametrize(("tool", "args", "option"), [
    ("pack", ["--source", "s", "--size", "32"], "--out"),
    ("train", ["--config", "c", "--pack", "p"], "--out"),
    ("train", ["--config", "c", "--pack", "p", "--out", "o"], "--export"),
    ("export", ["--pack", "p"], "--out"),
    ("ensemble", ["--member", "m", "--share", "1", "--pack", "p"], "--out"),
])
@pytest.mark.parametrize("value", ["", "-"])
def test_an_empty_or_dash_output_is_refused_in_one_line(tool: str, args: list[str], option: str, value: str,
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """pack --out '' said 'error: . already exists' (the empty path is '.'); '-' would make a folder '-'."""
    monkeypatch.chdir(tmp_path)
    assert _main(tool, monkeypatch, *args, option, value) == 2
    out, err = capsys.readouterr()
    said = "the path is empty" if value == "" else "-: writing to standard output is not supported"
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: argument {option}: {said}"), err
    assert list(tmp_path.iterdir()) == []


def test_case_texts_tells_a_missing_release_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A --source without the release's files was a FileNotFoundError traceback."""
    assert _main("case_texts", monkeypatch, "--source", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot read {tmp_path / 'Case_topic.json'}: No such file or directory\n", err
    (tmp_path / "Case_topic.json").write_text("{", encoding="utf-8")
    assert _main("case_texts", monkeypatch, "--source", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'Case_topic.json'} is not JSON: ") and err.count("\n") == 1, err


def test_pretrain_is_listed_as_a_phase_of_train_not_as_a_tool() -> None:
    """``python -m tools.train --help`` listed pretrain as a tool, but python -m tools.train.pretrain
    printed nothing and exited 0, --help and --bogus alike (as tools.train.data and .loop still did)."""
    for name in ("data", "loop"):
        run = _tool(f"tools.train.{name}", "--help")
        assert run.returncode == 2 and run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith(f"error: tools.train.{name} is no tool of its own: it "), run.stderr
    for args in (["--help"], ["--bogus"], []):
        run = _tool("tools.train.pretrain", *args)
        assert run.returncode == 2 and run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("error: tools.train.pretrain is no tool of its own: it runs within "
                                     "python -m tools.train.train") and "train.pretrain block" in run.stderr
    listing = _tool("tools.train", "--help").stdout
    tools, phases = listing.split("\nmodules within")[0], listing.split("\nmodules within")[1].split("\nexamples:")[0]
    assert "\n  pretrain " not in tools and "\n  pretrain    Self-supervised" in phases, listing
    assert "tools.train.train, first, for a config with a train.pretrain block" in phases
