"""The MedPix 2.0 authors' retrieval corpus and knowledge graph, built offline from a bundle.

The authors' later work (``code-DRMinerva``, ``code-KG`` in their repository) builds one
document per case, "{age} {sex} patient suffering from a {case diagnosis}. {history}",
embedded for retrieval-augmented diagnosis, and a knowledge graph of cases, diagnoses,
topics and findings. Both need online models there; here:

- :func:`write_rag` writes ``rag.jsonl`` (id, text, metadata) with ``rag_embeddings.npy``
  and ``rag_ids.json`` beside it (all-MiniLM-L6-v2 sentence vectors, the release's shipped);
- :func:`write_kg` writes the graph as CSV in ``neo4j-admin database import`` header format
  (one node file per label, one relationship file) and as ``graph.graphml``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .progress import Progress, silent
from .query import value_at
from .vocabulary import clean_acr, clean_age, clean_sex

if TYPE_CHECKING:
    from .store import Store

RAG_FILE = "rag.jsonl"
RAG_EMBEDDINGS = "rag_embeddings.npy"
RAG_IDS = "rag_ids.json"
GRAPHML_FILE = "graph.graphml"
RELATIONSHIPS_FILE = "relationships.csv"
#: Node label -> its CSV file; ids are ``label:key`` so one id space serves every file.
NODE_FILES = {label: f"nodes_{label.lower()}.csv" for label in (
    "Case", "Diagnosis", "Topic", "AcrCode", "Category", "Modality", "Location", "Image")}


def source_cases_with_images(cases: Iterable[dict[str, Any]],
                             images: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each case with its image documents, in case order."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        by_case.setdefault(str(image.get("U_id")), []).append(image)
    return [(case, by_case.get(case["U_id"], [])) for case in cases]


def rag_text(case: dict[str, Any], images: Sequence[dict[str, Any]]) -> str:
    """The authors' document: "{age} {sex} patient suffering from a {case diagnosis}. {history}"."""
    ages = [a for a in (clean_age(value_at(i, "Description.Age")) for i in images) if a is not None]
    sexes = [s for s in (clean_sex(value_at(i, "Description.Sex")) for i in images) if s]
    age = str(ages[0]) if ages else "unknown age"
    sex = sexes[0] if sexes else "unknown sex"
    diagnosis = str(value_at(case, "Case.Case Diagnosis") or value_at(case, "Case.Title") or "").strip()
    history = str(value_at(case, "Case.History") or "").strip()
    return f"{age} {sex} patient suffering from a {diagnosis}. {history}".strip()


def _cases_images(store: Store, cases: list[dict[str, Any]] | None,
                  images: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The given cases and images (an export's selection), or every one of the store."""
    return (store.find("Clinical_Reports") if cases is None else cases,
            store.find("Image_Descriptions") if images is None else images)


def rag_records(store: Store, *, cases: list[dict[str, Any]] | None = None,
                images: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One document per case with its metadata, in case order (default: every case of the store)."""
    splits = store.splits()
    pairs = source_cases_with_images(*_cases_images(store, cases, images))
    return [{"id": case["U_id"], "text": rag_text(case, images), "metadata": {
        "title": value_at(case, "Case.Title"), "diagnosis": value_at(case, "Case.Case Diagnosis"),
        "acr_code": clean_acr(value_at(case, "Topic.ACR Code")), "category": value_at(case, "Topic.Category"),
        "split": splits.get(case["U_id"]), "images": [i["image"] for i in images]}} for case, images in pairs]


def write_rag(store: Store, out_dir: Path, progress: Progress = silent, *, cases: list[dict[str, Any]] | None = None,
              images: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """``rag.jsonl`` plus its embeddings (rows in ``rag_ids.json`` order) into ``out_dir``.

    ``cases`` and ``images`` restrict it to an export's selection (default: the whole store).
    """
    import numpy as np

    from .model.case_text import embed_texts

    records = rag_records(store, cases=cases, images=images)
    with open(out_dir / RAG_FILE, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    vectors, encoded = embed_texts([r["text"] for r in records], progress, what="Embedding RAG documents")
    np.save(out_dir / RAG_EMBEDDINGS, vectors.astype(np.float16))
    (out_dir / RAG_IDS).write_text(json.dumps([r["id"] for r in records]) + "\n", encoding="utf-8")
    return {"documents": len(records), "encoded": encoded}


def knowledge_graph(store: Store, *, cases: list[dict[str, Any]] | None = None,
                    images: list[dict[str, Any]] | None = None
                    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, str]]]:
    """Nodes (id -> label and properties) and typed edges (start, type, end); default: the whole store."""
    cases, images = _cases_images(store, cases, images)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[tuple[str, str, str]] = []

    def node(label: str, key: str, **props: Any) -> str:
        node_id = f"{label.lower()}:{key}"
        nodes.setdefault(node_id, {"label": label, "name": key, **props})
        return node_id

    splits = store.splits()
    for case in cases:
        uid = case["U_id"]
        c = node("Case", uid, title=str(value_at(case, "Case.Title") or ""), split=str(splits.get(uid) or ""))
        diagnosis = str(value_at(case, "Case.Case Diagnosis") or "").strip()
        if diagnosis:
            edges.append((c, "HAS_DIAGNOSIS", node("Diagnosis", diagnosis.lower(), text=diagnosis)))
        topic_title = str(value_at(case, "Topic.Title") or "").strip()
        if topic_title:
            t = node("Topic", topic_title.lower(), text=topic_title)
            edges.append((c, "ABOUT_TOPIC", t))
            code = clean_acr(value_at(case, "Topic.ACR Code"))
            if code:
                edges.append((t, "HAS_ACR_CODE", node("AcrCode", code)))
            category = str(value_at(case, "Topic.Category") or "").strip()
            if category:
                edges.append((t, "IN_CATEGORY", node("Category", category)))
    for image in images:
        i = node("Image", image["image"], caption=str(value_at(image, "Description.Caption") or ""))
        edges.append((f"case:{image['U_id']}", "HAS_IMAGE", i))
        edges.append((i, "OF_MODALITY", node("Modality", str(image.get("Type")))))
        location = str(image.get("Location Category") or "").strip()
        if location:
            edges.append((i, "IN_LOCATION", node("Location", location)))
    return nodes, list(dict.fromkeys(edges))  # a topic shared by cases: one edge


def write_kg(store: Store, out_dir: Path, *, cases: list[dict[str, Any]] | None = None,
             images: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """The graph as neo4j-admin import CSV (one file per label plus relationships) and GraphML.

    ``cases`` and ``images`` restrict it to an export's selection (default: the whole store).
    """
    import networkx as nx  # type: ignore[import-untyped]

    nodes, edges = knowledge_graph(store, cases=cases, images=images)
    by_label: dict[str, list[tuple[str, dict[str, Any]]]] = {label: [] for label in NODE_FILES}
    for node_id, props in nodes.items():
        by_label[props["label"]].append((node_id, props))
    for label, rows in by_label.items():
        keys = sorted({k for _, p in rows for k in p if k != "label"})
        with open(out_dir / NODE_FILES[label], "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id:ID", ":LABEL", *keys])
            for node_id, props in sorted(rows):
                writer.writerow([node_id, label, *(props.get(k, "") for k in keys)])
    with open(out_dir / RELATIONSHIPS_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([":START_ID", ":TYPE", ":END_ID"])
        writer.writerows(edges)
    graph = nx.MultiDiGraph()
    for node_id, props in nodes.items():
        graph.add_node(node_id, **props)
    for start, kind, end in edges:
        graph.add_edge(start, end, key=kind, type=kind)
    nx.write_graphml(graph, out_dir / GRAPHML_FILE)
    return {"nodes": len(nodes), "edges": len(edges)}
