"""The model's answers stored as data: ``Prediction`` documents and ``pred_*`` Parquet columns.

The release checks use the session bundle (real release, shipped checkpoint); the fresh-image
checks a tiny source of flipped release slices (new files, so nothing shipped matches them)
and one colour picture, the kind classify's colour rule calls unsure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from medpix_tui.bundle import build_bundle, open_bundle
from medpix_tui.cli import main
from medpix_tui.export import PREDICTION_TYPES
from medpix_tui.model import shipped_checkpoint_dir
from medpix_tui.model.calibration import (
    RELEASE_SCORES_FILE,
    load_calibration,
    read_release_scores,
)
from medpix_tui.model.predictions import FACETS, differs_filter
from medpix_tui.model.service import BundleModel
from medpix_tui.store import IMAGES, REPORTS
from tests.support import tiny_case, tiny_image, write_source


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _check_classify_agrees(model: BundleModel, docs: list[dict], image_path) -> None:
    answers = model.answer([model.load(image_path(d["image"])) for d in docs])
    for doc, answer in zip(docs, answers, strict=True):
        pred = doc["Prediction"]
        assert pred["modality"] == answer["model_modality"], doc["image"]
        assert pred["status"] == answer["status"] and pred["reason"] == answer["reason"]
        assert abs(pred["modality_p"] - answer["model_probability"]) < 0.01  # stored embeddings are float16
        if answer["ood"] is None:
            assert pred["ood"] is None
        else:
            assert abs(pred["ood"] - answer["ood"]["score"]) < 0.002
        if answer["location"] is not None:
            assert pred["location"] == answer["location"]


def test_every_release_image_has_classify_s_answer(real_bundle) -> None:
    store = real_bundle.store
    for collection in (IMAGES, REPORTS):
        docs = store.find(collection)
        assert len(docs) == 2050 and all("Prediction" in d for d in docs)
        for d in docs:
            pred = d["Prediction"]
            for task in ("modality", "location"):
                probs = pred["probabilities"][task]
                assert abs(sum(probs.values()) - 1) < 1e-3
                assert pred[task] == max(probs, key=probs.__getitem__) and pred[f"{task}_p"] == probs[pred[task]]
            assert pred["calibrated"] is True and pred["status"] in ("ok", "unsure")
            assert pred["modality_vs_label"] == ("same" if pred["modality"] == d["Type"] else "differs")
    info = real_bundle.manifest["model"]["predictions"]
    # the release's OOD scores ship with the checkpoint (a new checkpoint reruns tools.train.calibrate)
    assert info == {"count": 2050, "calibrated": True, "ood_reused": 2050, "ood_computed": 0,
                    "unsure": sum(d["Prediction"]["status"] == "unsure" for d in docs)}
    images = store.find(IMAGES)
    unsure = [d for d in images if d["Prediction"]["status"] == "unsure"][:2]
    differs = store.find(IMAGES, differs_filter("modality"), limit=2)
    assert unsure and differs and all(d["Prediction"]["modality"] != d["Type"] for d in differs)
    sample = unsure + differs + images[::500]
    _check_classify_agrees(BundleModel(real_bundle), sample, real_bundle.image_path)


def test_parquet_columns_match_the_store(real_bundle) -> None:
    for table, collection in (("images", IMAGES), ("image_reports", REPORTS)):
        rows = pq.read_table(real_bundle.parquet_dir / f"{table}.parquet").to_pylist()
        docs = {d["image"]: d["Prediction"] for d in real_bundle.store.find(collection)}
        assert len(rows) == len(docs) == 2050
        for row in rows:
            pred = docs[row["image"]]
            assert {name: row[name] for name in PREDICTION_TYPES} == \
                {name: pred[name[len("pred_"):]] for name in PREDICTION_TYPES}


def test_sql_and_cli_query_the_predictions(real_bundle) -> None:
    from medpix_tui.sql import connect, run_sql

    _, got = run_sql(connect(real_bundle.parquet_dir), "SELECT count(*) FROM images WHERE pred_modality <> modality")
    rows = pq.read_table(real_bundle.parquet_dir / "images.parquet").to_pylist()
    want = sorted(r["image"] for r in rows if r["pred_modality"] == "MR" and r["modality"] == "CT")
    code, out, _ = run("query", "--bundle", str(real_bundle.root), "--field", "Prediction.modality=MR",
                       "--filter", '{"Type": "CT"}', "--limit", "0", "--json", "--fields-out", "image")
    assert code == 0 and want and sorted(d["image"] for d in json.loads(out)) == want
    differs = real_bundle.store.find(IMAGES, differs_filter("modality"))
    assert sorted(d["image"] for d in differs) == sorted(r["image"] for r in rows
                                                         if r["pred_modality"] != r["modality"])
    assert got == [(len(differs),)] and 0 < len(differs) < 200
    code, out, _ = run("query", "--bundle", str(real_bundle.root), "--sort", "Prediction.modality_p",
                       "--limit", "3", "--json", "--fields-out", "Prediction.modality_p")
    least = [d["Prediction"]["modality_p"] for d in json.loads(out)]
    assert code == 0 and least == sorted(r["pred_modality_p"] for r in rows)[:3]
    counts = real_bundle.store.facet_counts(IMAGES, {}, [path for _, _, path in FACETS])
    assert counts[FACETS[0][2]] == {"same": 2050 - len(differs), "differs": len(differs)}


def _fresh_source(root: Path, release: Path) -> Path:
    """Two flipped release slices and a colour picture: none of their files' digests ships."""
    images = [tiny_image("F1", "F1_a", "CT"), tiny_image("F1", "F1_b", "MR"), tiny_image("F2", "F2_a", "CT")]
    write_source(root, [tiny_case("F1", ["F1_a"], ["F1_b"]), tiny_case("F2", ["F2_a"], [])], images,
                 {"train": ["F1"], "test": ["F2"]}, write_images=False)
    pngs = sorted((release / "images").glob("*.png"))[:2]
    for doc, png in zip(images, pngs, strict=False):  # two release files for three images: F2_a is drawn below
        Image.open(png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "images" / f"{doc['image']}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / "F2_a.png")
    return root


def test_fresh_images_get_their_score_computed(source_dir: Path, tmp_path: Path) -> None:
    out = build_bundle(_fresh_source(tmp_path / "src", source_dir), tmp_path / "fresh")
    bundle = open_bundle(out)
    info = bundle.manifest["model"]["predictions"]
    assert info["ood_computed"] == 3 and info["ood_reused"] == 0
    docs = bundle.store.find(IMAGES)
    colour = next(d for d in docs if d["image"] == "F2_a")["Prediction"]
    assert colour["status"] == "unsure" and colour["reason"].startswith("a colour picture")
    _check_classify_agrees(BundleModel(bundle), docs, bundle.image_path)


def test_a_bundle_without_model_has_no_predictions_and_says_so(tmp_path: Path) -> None:
    out = build_bundle(write_source(tmp_path / "src"), tmp_path / "plain", with_model=False)
    bundle = open_bundle(out)
    assert all("Prediction" not in d for c in (IMAGES, REPORTS) for d in bundle.store.find(c))
    table = pq.read_table(bundle.parquet_dir / "images.parquet")
    for name, typ in PREDICTION_TYPES.items():
        assert table.schema.field(name).type == typ and table[name].null_count == len(table)
    code, out_text, _ = run("bundle", "info", str(out))
    assert code == 0 and "predicted: none (the bundle has no model)" in out_text
    code, out_text, _ = run("query", "--bundle", str(out), "--field", "Prediction.modality=MR", "--json")
    assert code == 0 and json.loads(out_text) == []


def test_release_scores_of_another_reference_are_not_used(tmp_path: Path) -> None:
    model = Path(shutil.copytree(shipped_checkpoint_dir(), tmp_path / "model"))
    calibration = load_calibration(model)
    assert len(read_release_scores(model, calibration)) == 2050
    content = json.loads((model / RELEASE_SCORES_FILE).read_text())
    content["reference_sha256"] = "0" * 64  # scores fitted against another training reference
    (model / RELEASE_SCORES_FILE).write_text(json.dumps(content))
    assert read_release_scores(model, calibration) == {}
    assert read_release_scores(model, None) == {}


def test_colour_share_is_numpy_s_channel_spread() -> None:
    # the build computes it for every colour PNG, in PIL's loops: the same share as the plain formula
    from medpix_tui.model.preprocess import CHROMA, colourful_share

    rng = np.random.default_rng(1)
    for mode in ("RGB", "RGBA", "P"):
        im = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).convert(mode)
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
        assert colourful_share(im) == float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > CHROMA).mean())


def test_without_calibration_predictions_say_uncalibrated(source_dir: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(shipped_checkpoint_dir(), tmp_path / "model"))
    (model / "calibration.json").unlink()  # a checkpoint never calibrated
    src = write_source(tmp_path / "src", [tiny_case("U1", ["U1_a"], ["U1_b"])],
                       [tiny_image("U1", "U1_a", "CT"), tiny_image("U1", "U1_b", "MR")], {"train": ["U1"]},
                       write_images=False)
    for name, png in zip(("U1_a", "U1_b"), sorted((source_dir / "images").glob("*.png"))[:2], strict=True):
        shutil.copyfile(png, src / "images" / f"{name}.png")  # the release's files: their embeddings ship
    out = build_bundle(src, tmp_path / "uncalibrated", model_dir=model)
    preds = [d["Prediction"] for d in open_bundle(out).store.find(IMAGES)]
    assert len(preds) == 2 and all(p["calibrated"] is False and p["ood"] is None and p["status"] == "ok" for p in preds)
    code, text, _ = run("bundle", "info", str(out))
    assert code == 0 and "predicted: 2 images (uncalibrated, no OOD score; 0 unsure)" in text


@pytest.mark.asyncio
async def test_the_results_show_the_model_and_sort_by_its_confidence(real_bundle) -> None:
    """At 140 columns (a table WIDE wide) a bundle with predictions shows the model's two answers, the
    diagnosis keeps its room; the column sorts doubt first, by the lower of the two probabilities."""
    from tui_support import make_app, settle, wait_for

    from medpix_tui.tui.widgets.results import MIN_DIAGNOSIS, SHORT_LOCATION, WIDE, ResultsTable, _model_cell

    app = make_app(real_bundle)
    async with app.run_test(size=(140, 32)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(ResultsTable)
        await wait_for(pilot, lambda: "model" in {str(k.value) for k in table.columns})
        assert table.size.width == WIDE
        assert table.columns["title"].width >= MIN_DIAGNOSIS and table.virtual_size.width <= table.size.width
        first = real_bundle.store.get_image(table.names[0])["Prediction"]
        shown = str(table.get_row_at(0)[list(table.columns).index("model")])
        assert shown == _model_cell(first) and shown.startswith(f"{first['modality']} .")
        where = SHORT_LOCATION.get(first["location"], first["location"])
        assert shown.endswith(f" {where} {first['location_p']:.2f}".replace(" 0.", " ."))
        table.sort_by("model", reverse=False)
        await settle(pilot)
        preds = [real_bundle.store.get_image(n)["Prediction"] for n in table.names[:20]]
        lower = [min(p["modality_p"], p["location_p"]) for p in preds]
        assert lower == sorted(lower) and lower[0] < 0.5
        # the location's doubt brought these up: a modality-only sort would not have put them first
        assert sum(p["location_p"] < p["modality_p"] for p in preds) >= 10


def test_the_model_cell_names_both_answers_and_fits_its_column(real_bundle) -> None:
    from rich.cells import cell_len

    from medpix_tui.tui.widgets.results import COLUMNS, _model_cell, model_confidence

    assert _model_cell({"modality": "MR", "modality_p": 0.9732, "location": "Head", "location_p": 0.81}) == \
        "MR .97 Head .81"
    assert _model_cell({"modality": "CT", "modality_p": 1.0, "location": "Reproductive and Urinary System",
                        "location_p": 0.254}) == "CT 1.0 Uro .25"
    assert _model_cell({"modality": "CT", "modality_p": 0.6}) == "CT .60"
    assert _model_cell(None) == "" and model_confidence(None) is None
    assert model_confidence({"modality_p": 0.9, "location_p": 0.3}) == 0.3
    width = COLUMNS["model"][1]
    assert width is not None
    cells = {_model_cell(d["Prediction"]) for d in real_bundle.store.find("Image_Descriptions")}
    assert max(cell_len(c) for c in cells) <= width, max(cells, key=cell_len)
