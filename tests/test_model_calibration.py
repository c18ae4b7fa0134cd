"""Calibration, the OOD score and the numpy tower, with the shipped checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medpix_tui.model import shipped_checkpoint_dir
from medpix_tui.model.calibration import (
    CALIBRATION_FILE,
    calibration_status,
    ece,
    ece_floor,
    load_calibration,
    ood_scores,
)
from medpix_tui.model.runtime import load_encoder, load_numpy_encoder
from tools.train.calibrate import calibrate_checkpoint, fit_temperature


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = shipped_checkpoint_dir()
    assert path is not None, "bundle/model/ holds no checkpoint"
    return path


def test_ece_of_known_cases() -> None:
    truth = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert ece(perfect, truth) == 0.0
    # always 0.9 sure, right half the time: off by 0.4
    sure = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    assert ece(sure, truth) == pytest.approx(0.4)


def test_fit_temperature_recovers_the_one_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 6, size=(4000, 5))
    scaled = logits / 2.5
    p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(logits, truth) == pytest.approx(2.5, rel=0.08)


def test_ece_floor_is_the_sampling_error_of_a_calibrated_model() -> None:
    # one bin at confidence 0.7: the ECE is |accuracy - 0.7| with accuracy ~ Binomial(n, 0.7) / n,
    # whose median is 0.674 standard deviations, sqrt(0.21 / n)
    for n in (200, 2000):
        floor = ece_floor(np.tile([[0.7, 0.2, 0.1]], (n, 1)))
        assert floor["median"] == pytest.approx(0.674 * np.sqrt(0.21 / n), rel=0.25)
        assert floor["p95"] == pytest.approx(1.96 * np.sqrt(0.21 / n), rel=0.25)
    assert ece_floor(np.tile([[1.0, 0.0]], (50, 1)), 0.0) == {"p05": 0.0, "median": 0.0, "p95": 0.0, "p_value": 1.0}
    overconfident = ece_floor(np.tile([[0.9, 0.1]], (200, 1)), observed=0.2)  # said 0.9, right 70% of the time
    assert overconfident["p_value"] < 0.01 and overconfident["p05"] < overconfident["median"] < overconfident["p95"]


def test_ood_score_is_the_mean_of_the_k_nearest() -> None:
    reference = np.eye(4, dtype=np.float32)
    query = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    assert ood_scores(query, reference, k=1).tolist() == [1.0]
    assert ood_scores(query, reference, k=2).tolist() == [0.5]


def test_numpy_tower_matches_torch(model_dir: Path) -> None:
    from medpix_tui.model.encoder import load_image_encoder

    pictures = np.random.default_rng(1).integers(0, 256, (5, 128, 128), dtype=np.uint8)
    torch_out = load_image_encoder(model_dir).encode_arrays(pictures)
    numpy_out = load_numpy_encoder(model_dir).encode_arrays(pictures)
    assert np.abs(torch_out - numpy_out).max() < 1e-4


def test_shipped_calibration_is_current_and_applied(model_dir: Path) -> None:
    assert calibration_status(model_dir) is None
    calibration = load_calibration(model_dir)
    assert calibration is not None and set(calibration.temperature) == {"modality", "location"}
    encoder = load_encoder(model_dir)
    assert encoder.head.temperature == calibration.temperature
    assert load_encoder(model_dir, calibrated=False).head.temperature == {}


def test_calibration_of_other_weights_is_not_applied(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    content = json.loads((copy / CALIBRATION_FILE).read_text())
    content["weights_sha256"] = "0" * 64  # as after a new checkpoint lands without a refit
    (copy / CALIBRATION_FILE).write_text(json.dumps(content))
    assert "fitted for other weights" in (calibration_status(copy) or "")
    assert load_calibration(copy) is None and load_encoder(copy).head.temperature == {}
    (copy / CALIBRATION_FILE).unlink()
    assert "has no calibration" in (calibration_status(copy) or "")


def test_calibrate_refits_a_checkpoint_in_one_call(model_dir: Path, tmp_path: Path) -> None:
    from tests.test_model_cli import pictures_source

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / CALIBRATION_FILE).unlink()
    content = calibrate_checkpoint(copy, pictures_source(tmp_path / "source"))
    assert calibration_status(copy) is None
    assert content["ood"]["train_images"] == 4 and content["figures"]["test"]["n"] == 2
    calibration = load_calibration(copy)
    shipped = load_calibration(model_dir)
    assert shipped is not None  # the reference holds the tower's stage features: the shipped one's width
    assert calibration is not None and calibration.reference.shape == (4, shipped.reference.shape[1])
    from medpix_tui.model.calibration import read_release_scores

    assert len(read_release_scores(copy, calibration)) == 8  # every release image's OOD score, for bundle build


def test_the_test_split_stays_accepted(model_dir: Path, source_dir: Path) -> None:
    # the bound: true CT and MR slices of the test split >= 99% accepted
    from medpix_tui.model.calibration import encode_with_features
    from medpix_tui.model.preprocess import load_many
    from medpix_tui.source import load_source

    source = load_source(source_dir, check_images=False)
    paths = [source.image_path(d["image"]) for d in source.images if source.splits.get(d["U_id"]) == "test"]
    encoder = load_encoder(model_dir)
    calibration = load_calibration(model_dir)
    assert calibration is not None
    _, features = encode_with_features(encoder, load_many(paths, encoder.size))
    accepted = float((calibration.scores(features) >= calibration.threshold).mean())
    assert accepted >= 0.99
    assert accepted == pytest.approx(calibration.info["figures"]["test"]["ood_accepted"], abs=0.006)


@pytest.mark.parametrize("vision", [
    {"image_size": 64, "layers": [1, 2, 1, 1], "width": 16, "head_width": 16},
    {"image_size": 64, "architecture": "efficientnet_lite0"},
    {"image_size": 64, "architecture": "efficientnet_lite1"},
], ids=["modified_resnet", "efficientnet_lite0", "efficientnet_lite1"])
def test_numpy_forward_matches_the_torch_tower(vision: dict) -> None:
    # random weights and batch-norm statistics, so every folded term is exercised
    torch = pytest.importorskip("torch")
    from medpix_tui.model.numpy_tower import FORWARDS, supports
    from medpix_tui.model.tower import build_tower

    cfg = {"embed_dim": 32, "vision_cfg": vision}
    try:
        net = build_tower(cfg)
    except (ValueError, ImportError):
        pytest.skip("this tree's tower module does not build this architecture")
    assert supports(cfg)
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    numpy_net = FORWARDS[vision.get("architecture", "modified_resnet")](
        {k: v.numpy() for k, v in net.state_dict().items()}, cfg)
    x = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1)).numpy()
    assert np.abs(numpy_net(x) - expected).max() < 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_numpy_encode_files_pipelines_to_the_same_embeddings(model_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from medpix_tui.model.preprocess import load_many

    rng = np.random.default_rng(2)
    paths = []
    for i in range(70):  # more than one decode-ahead chunk of 64
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8)).save(paths[-1])
    encoder = load_numpy_encoder(model_dir)
    assert np.array_equal(encoder.encode_files(paths), encoder.encode_arrays(load_many(paths, encoder.size)))


def test_case_folds_keep_each_case_whole() -> None:
    from tools.train.calibrate import case_folds

    cases = [f"C{i // 3}" for i in range(30)]  # ten cases of three images
    fold = case_folds(cases, 5, seed=1)
    assert all(len({int(fold[i]) for i in range(len(cases)) if cases[i] == c}) == 1 for c in set(cases))
    assert sorted(np.bincount(fold).tolist()) == [6] * 5  # two cases a fold
    assert (case_folds(cases, 5, seed=1) == fold).all() and not (case_folds(cases, 5, seed=2) == fold).all()


def test_top_probability_maps_keep_the_answer() -> None:
    from tools.train.calibrate import apply_histogram, apply_isotonic, fit_histogram, fit_isotonic, with_top

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(400, 5))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.where(rng.random(400) < 0.6, p.argmax(axis=1), rng.integers(0, 5, 400))
    for q in (with_top(p, np.zeros(400)), with_top(p, np.ones(400)), apply_histogram(p, fit_histogram(p, truth)),
              apply_isotonic(p, fit_isotonic(p, truth))):
        assert (q.argmax(axis=1) == p.argmax(axis=1)).all()
        np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-9)
    xs, ys = fit_isotonic(p, truth)
    assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= -1e-12).all()  # monotone in the top probability
    edges, values = fit_histogram(p, truth, bins=4)
    top, right = p.max(axis=1), p.argmax(axis=1) == truth
    first = top <= edges[1]
    assert values[0] == pytest.approx(right[first].mean())


def test_cross_validation_finds_the_temperature_that_made_the_labels() -> None:
    from tools.train.calibrate import APPLIED, METHODS, choose, cross_validate

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 6, size=(600, 4))
    p = np.exp(logits / 2.5 - (logits / 2.5).max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(4, p=row) for row in p])
    cases = [f"C{i // 4}" for i in range(600)]
    cv = cross_validate(logits, truth, cases, repeats=3)
    assert set(cv) == set(METHODS)
    assert cv["temperature_nll"]["ece"] < cv["none"]["ece"] and cv["temperature_nll"]["nll"] < cv["none"]["nll"]
    assert cv["temperature_nll"]["accuracy"] == cv["none"]["accuracy"]  # a temperature keeps every answer
    assert choose(cv) in APPLIED and choose(cv) != "none"
    assert cross_validate(logits, truth, ["one case"] * 600) == {} and choose({}) == "temperature_nll"


def test_shipped_calibration_records_its_choice_on_dev(model_dir: Path) -> None:
    from tools.train.calibrate import APPLIED, METHODS, choose

    content = json.loads((model_dir / CALIBRATION_FILE).read_text())
    assert content["method_chosen_on"].startswith("dev only")
    for task, info in content["method"].items():
        assert set(info["dev_cv"]) == set(METHODS) and info["method"] in APPLIED
        assert info["method"] == choose(info["dev_cv"])
        assert info["better_on_dev_cv_but_not_applied"] == sorted(
            m for m in METHODS if m not in APPLIED and info["dev_cv"][m]["ece"] < info["dev_cv"][info["method"]]["ece"])
        assert content["temperature"][task] > 0
    assert set(content["figures"]) == {"dev", "test"}
