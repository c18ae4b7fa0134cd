"""Similar cases from a history, the RAG corpus and the knowledge graph, on the real release."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medpix_tui.bundle import Bundle
from medpix_tui.corpora import (
    GRAPHML_FILE,
    NODE_FILES,
    RAG_EMBEDDINGS,
    RAG_FILE,
    RAG_IDS,
    rag_records,
    write_kg,
    write_rag,
)
from medpix_tui.model.case_text import SHIPPED, CaseIndex, SentenceEncoder, case_text, text_digest


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


def test_the_shipped_vectors_are_what_encoding_gives(real_bundle: Bundle, encoder: SentenceEncoder) -> None:
    cases = real_bundle.store.find("Clinical_Reports")[::97]
    with np.load(SHIPPED) as shipped:
        known = dict(zip(shipped["sha256"].tolist(), shipped["vectors"], strict=True))
    fresh = encoder.encode([case_text(c) for c in cases])
    for case, vector in zip(cases, fresh, strict=True):
        assert np.abs(known[text_digest(case_text(case))].astype(np.float32) - vector).max() < 2e-3


def test_a_bundle_holds_one_case_vector_per_case(real_bundle: Bundle) -> None:
    index = CaseIndex(real_bundle.embeddings_dir)
    assert len(index.ids) == 671 and index.vectors.shape == (671, 384)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1, atol=1e-2)
    files = real_bundle.manifest["files"]
    assert "embeddings/cases.npy" in files and "embeddings/case_ids.json" in files
    assert real_bundle.manifest["model"]["case_texts"]["reused"] == 671  # nothing re-encoded at build


def test_similar_cases_from_a_typed_history(real_bundle_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "medpix_tui", "similar-cases", "--bundle", str(real_bundle_path),
                          "--text", "elderly man with hematuria; the bladder wall is thickened with an outpouching",
                          "-k", "5", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    ranked = json.loads(run.stdout)
    assert len(ranked) == 5 and ranked[0]["score"] >= ranked[-1]["score"]
    assert any("bladder" in (r["title"] or "").lower() or "diverticul" in (r["title"] or "").lower() for r in ranked)
    own = subprocess.run([sys.executable, "-m", "medpix_tui", "similar-cases", "--bundle", str(real_bundle_path),
                          "--case", "MPX1009", "-k", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert own.returncode == 0 and "MPX1009" not in {r["case"] for r in json.loads(own.stdout)}
    for bad in (["--text", "  "], [], ["--text", "x", "--case", "MPX1009"], ["--case", "NOPE"],
                ["--text", "x", "--image", "no-such-thing"]):
        run = subprocess.run([sys.executable, "-m", "medpix_tui", "similar-cases", "--bundle", str(real_bundle_path),
                              *bad], capture_output=True, text=True, timeout=300)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, (bad, run.stderr)


def test_the_rag_corpus_loads_with_pandas(real_bundle: Bundle, tmp_path: Path) -> None:
    import pandas as pd

    info = write_rag(real_bundle.store, tmp_path)
    assert info == {"documents": 671, "encoded": 0}
    frame = pd.read_json(tmp_path / RAG_FILE, lines=True)
    assert list(frame.columns) == ["id", "text", "metadata"] and len(frame) == 671
    first = frame.set_index("id").loc["MPX1009"]
    assert first["text"].startswith("73 male patient suffering from a Bladder Diverticulum. 73-year-old male")
    assert first["metadata"]["split"] == real_bundle.store.split_of("MPX1009")
    assert first["metadata"]["images"] == ["MPX1009_synpic46283", "MPX1009_synpic46295"]
    vectors = np.load(tmp_path / RAG_EMBEDDINGS)
    assert vectors.shape == (671, 384) and json.loads((tmp_path / RAG_IDS).read_text()) == list(frame["id"])
    assert {r["id"] for r in rag_records(real_bundle.store)} == set(frame["id"])


def test_the_knowledge_graph_reads_back_with_networkx(real_bundle: Bundle, tmp_path: Path) -> None:
    import networkx as nx

    store = real_bundle.store
    write_kg(store, tmp_path)
    graph = nx.read_graphml(tmp_path / GRAPHML_FILE)
    labels = [d["label"] for _, d in graph.nodes(data=True)]
    assert labels.count("Case") == store.count("Clinical_Reports") == 671
    assert labels.count("Image") == store.count("Image_Descriptions") == 2050
    assert labels.count("Modality") == 2
    kinds = [d["type"] for _, _, d in graph.edges(data=True)]
    assert kinds.count("HAS_IMAGE") == 2050 and kinds.count("OF_MODALITY") == 2050
    with_diagnosis = sum(1 for c in store.find("Clinical_Reports") if (c["Case"].get("Case Diagnosis") or "").strip())
    assert kinds.count("HAS_DIAGNOSIS") == with_diagnosis
    assert sorted(graph.successors("case:MPX1009")) == sorted(
        ["diagnosis:bladder diverticulum", "topic:bladder diverticulum", "image:MPX1009_synpic46283",
         "image:MPX1009_synpic46295"])
    with open(tmp_path / NODE_FILES["Case"], newline="") as f:
        header = next(csv.reader(f))
    assert header[:2] == ["id:ID", ":LABEL"]  # neo4j-admin database import's header format
    with open(tmp_path / "relationships.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [":START_ID", ":TYPE", ":END_ID"] and len(rows) - 1 == graph.number_of_edges()
