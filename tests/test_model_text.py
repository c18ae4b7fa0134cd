"""The text tower in numpy gives open_clip's embeddings, and text search imports no torch.

The reference is the torch tower the model was trained with (open_clip's HFTextEncoder
over the installed all-MiniLM-L6-v2), on the paper's prompts (the zero-shot head stores
their embeddings, made by it at export), queries a user types, and real case texts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medpix_tui.model import shipped_checkpoint_dir
from medpix_tui.model.bert import erf, gelu
from medpix_tui.model.case_text import SentenceEncoder, case_text
from medpix_tui.model.text import NumpyTextTower, load_text_tower
from medpix_tui.model.zeroshot import load_head

QUERIES = ["ring enhancing lesion", "axial CT of the chest", "T2 hyperintense mass in the left frontal lobe",
           "x", "Café &amp; naïve   résumé\tCT", "fracture " * 200,  # entities, accents, runs of spaces; truncated
           "MRI brain w/o contrast: no acute infarct.", "肺 nodule"]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = shipped_checkpoint_dir()
    assert path is not None, "bundle/model/ holds no checkpoint"
    return path


@pytest.fixture(scope="module")
def numpy_tower(model_dir: Path) -> NumpyTextTower:
    tower = load_text_tower(model_dir)
    assert isinstance(tower, NumpyTextTower)
    return tower


@pytest.fixture(scope="module")
def torch_tower(model_dir: Path):
    need_torch()
    return load_text_tower(model_dir, backend="torch")


def need_torch() -> None:
    """The reference needs torch and open_clip (imported as the library does; skipped where absent)."""
    pytest.importorskip("torch")
    try:
        from medpix_tui.model._compat import open_clip

        open_clip()
    except ImportError:
        pytest.skip("open_clip is not installed")


def texts(model_dir: Path) -> list[str]:
    from medpix_tui.model.checkpoint import read_prompts

    return [t for spec in read_prompts(model_dir).values() for t in spec["texts"]] + QUERIES


def test_erf_and_gelu_are_exact_to_float32() -> None:
    import math

    x = np.linspace(-12, 12, 4001, dtype=np.float32)
    want = np.array([math.erf(float(v)) for v in x])
    assert np.abs(erf(x) - want).max() < 5e-7 and erf(x).dtype == np.float32
    assert np.abs(gelu(x) - 0.5 * x * (1 + np.array([math.erf(float(v) / math.sqrt(2)) for v in x]))).max() < 3e-6


def test_tokens_are_open_clips(model_dir: Path, numpy_tower: NumpyTextTower, torch_tower) -> None:
    ids, mask = numpy_tower.bert.tokenize(texts(model_dir))
    reference = torch_tower.tokenizer(texts(model_dir)).numpy()
    used = (reference != 0).sum(axis=1)
    assert (mask.sum(axis=1) == used).all() and used.max() == 128  # the long query is cut at the context
    for row, n in enumerate(used):
        assert ids[row, :n].tolist() == reference[row, :n].tolist()


def test_numpy_embeddings_match_the_torch_tower(model_dir: Path, numpy_tower: NumpyTextTower, torch_tower) -> None:
    batch = texts(model_dir)
    np.testing.assert_allclose(numpy_tower.pooled(batch), torch_tower.pooled(batch), atol=2e-5)
    got, want = numpy_tower.encode(batch), torch_tower.encode(batch)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert (np.sum(got * want, axis=1) > 1 - 1e-6).all()
    one_by_one = np.concatenate([numpy_tower.encode([t]) for t in batch])  # batching and padding change nothing
    np.testing.assert_allclose(one_by_one, got, atol=2e-6)


def test_numpy_tower_reproduces_the_zero_shot_head(model_dir: Path, numpy_tower: NumpyTextTower) -> None:
    from medpix_tui.model.checkpoint import read_prompts

    head = load_head(model_dir)
    for task, spec in read_prompts(model_dir).items():  # stored at export by the torch tower
        np.testing.assert_allclose(numpy_tower.encode(spec["texts"]), head.embeddings[task], atol=1e-4)


def test_sentence_encoder_numpy_matches_torch(real_bundle) -> None:
    need_torch()
    batch = [case_text(c) for c in real_bundle.store.find("Clinical_Reports")[::61]] + QUERIES[:3]
    got, want = SentenceEncoder().encode(batch), SentenceEncoder("torch").encode(batch)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_search_images_imports_no_torch(real_bundle_path: Path) -> None:
    code = ("import sys, json\n"
            "from medpix_tui.cli import main\n"
            "try:\n"
            "    main(['--bundle', sys.argv[1], 'search-images', 'ring enhancing lesion', '-k', '2', '--json'])\n"
            "except SystemExit as e:\n"
            "    print(e.code, [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, str(real_bundle_path)], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1])
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "0 []", result.stderr
    import json

    answer = json.loads(lines[0])
    assert len(answer["images"]) == 2 and answer["images"][0]["score"] >= answer["images"][1]["score"]


def test_a_few_texts_encode_in_numpy_many_in_torch() -> None:
    from medpix_tui.model.bert import NumpyMiniLM
    from medpix_tui.model.case_text import BULK_TEXTS, encoder_for

    assert isinstance(encoder_for(1)._tower, NumpyMiniLM) and isinstance(encoder_for(BULK_TEXTS)._tower, NumpyMiniLM)
    need_torch()
    from medpix_tui.model.text import TextTower

    assert isinstance(encoder_for(BULK_TEXTS + 1)._tower, TextTower)  # a build's new cases: torch's two threads


def test_every_command_and_the_ui_run_numpy_on_one_blas_thread() -> None:
    # two BLAS threads spin on 2 busy cores: a case-similarity query took 345 ms instead of 20
    code = "import os, sys, medpix_tui.cli; print(os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).parents[1])
    assert result.stdout.strip() == "1 False"  # set before numpy loads, so OpenBLAS reads it
