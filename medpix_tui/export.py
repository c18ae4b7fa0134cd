"""Exports of the whole dataset or of a query's results, for analysis and for training.

* Parquet: ``images``, ``cases``, ``image_reports`` with flattened snake_case columns for
  SQL and the nested documents kept as structs (``Description``, ``Case``, ``Topic``);
* JSONL in the release's split format (``descriptions_<split>.jsonl``, ``data_<split>.jsonl``);
* an image-folder tree ``<split>/<label>/<image>.png`` (torchvision ``ImageFolder`` layout);
* CSV of the flattened columns.

Every export goes through :mod:`medpix_tui.atomic`: nothing half-written, nothing
overwritten without ``force``.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_dir, atomic_file
from .errors import InputError
from .progress import Progress, silent
from .store import CASES, IMAGES, Store, image_report

FORMATS = ("parquet", "jsonl", "csv", "imagefolder", "json")
LABELS = {"modality": "Type", "location": "Location Category"}
UNSPLIT = "unsplit"


def _age(text: Any) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def image_row(doc: dict[str, Any], split: str | None) -> dict[str, Any]:
    """Flattened columns of an image document."""
    desc = doc.get("Description") or {}
    return {
        "image": doc["image"], "u_id": doc["U_id"], "modality": doc["Type"],
        "modality_detail": desc.get("Modality"), "plane": desc.get("Plane"), "caption": desc.get("Caption"),
        "age": _age(desc.get("Age")), "sex": desc.get("Sex"), "acr_codes": desc.get("ACR Codes"),
        "figure_part": desc.get("Figure Part"), "location": doc.get("Location"),
        "location_category": doc.get("Location Category"), "split": split,
        **prediction_columns(doc),
    }


#: The model's answer as flat columns (see :mod:`.model.predictions`); null without a model.
PREDICTION_TYPES = {"pred_modality": pa.string(), "pred_modality_p": pa.float64(), "pred_location": pa.string(),
                    "pred_location_p": pa.float64(), "pred_ood": pa.float64(), "pred_status": pa.string()}


def prediction_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``pred_*`` columns of an image document (None each when it has no ``Prediction``)."""
    pred = doc.get("Prediction") or {}
    return {name: pred.get(name[len("pred_"):]) for name in PREDICTION_TYPES}


def case_row(doc: dict[str, Any], split: str | None) -> dict[str, Any]:
    """Flattened columns of a case document."""
    case, topic = doc.get("Case") or {}, doc.get("Topic") or {}
    return {
        "u_id": doc["U_id"], "title": case.get("Title"), "diagnosis": case.get("Case Diagnosis"),
        "history": case.get("History"), "findings": case.get("Findings"),
        "acr_code": topic.get("ACR Code"), "category": topic.get("Category"),
        "n_ct": len(doc.get("TAC") or []), "n_mr": len(doc.get("MRI") or []), "split": split,
    }


def _struct_type(docs: Iterable[dict[str, Any]], key: str) -> pa.DataType:
    fields: dict[str, None] = {}
    for doc in docs:
        fields.update(dict.fromkeys(doc.get(key) or {}))
    return pa.struct([pa.field(name, pa.string()) for name in fields])


def _table(rows: list[dict[str, Any]], docs: list[dict[str, Any]], nested: dict[str, pa.DataType]) -> pa.Table:
    for row, doc in zip(rows, docs):
        for key in nested:
            row[key] = doc.get(key)
    table = pa.Table.from_pylist(rows) if rows else None
    if table is None:
        return pa.table({})
    for name, typ in PREDICTION_TYPES.items():  # typed even when every value is null
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(typ))
    for key, typ in nested.items():
        col = pa.array([doc.get(key) for doc in docs], type=typ)
        table = table.set_column(table.schema.get_field_index(key), key, col)
    return table


@dataclass
class Selection:
    """The images and cases an export covers, with each case's split."""

    images: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    splits: dict[str, str | None]

    @classmethod
    def everything(cls, store: Store) -> Selection:
        return cls(store.find(IMAGES), store.find(CASES), store.splits())

    @classmethod
    def from_query(cls, store: Store, collection: str, flt: dict[str, Any] | None) -> Selection:
        """A query's results: images (and their cases), or cases (and their images)."""
        docs = store.find(collection, flt)
        if collection == CASES:
            uids = [d["U_id"] for d in docs]
            images = store.find(IMAGES, {"U_id": {"$in": uids}})
            return cls(images, docs, store.splits())
        images = docs if collection == IMAGES else store.find(IMAGES, {"image": {"$in": [d["image"] for d in docs]}})
        cases = store.find(CASES, {"U_id": {"$in": sorted({d["U_id"] for d in images})}})
        return cls(images, cases, store.splits())

    def split(self, uid: str) -> str:
        return self.splits.get(uid) or UNSPLIT

    def reports(self) -> list[dict[str, Any]]:
        by_id = {c["U_id"]: c for c in self.cases}
        return [image_report(d, by_id.get(d["U_id"])) for d in self.images]


def parquet_tables(sel: Selection) -> dict[str, pa.Table]:
    """The three tables, with flattened columns and nested structs."""
    reports = sel.reports()
    desc = {"Description": _struct_type(sel.images, "Description")}
    case_nested = {"Case": _struct_type(sel.cases, "Case"), "Topic": _struct_type(sel.cases, "Topic")}
    images = _table([image_row(d, sel.splits.get(d["U_id"])) for d in sel.images], sel.images, desc)
    cases = _table([case_row(c, sel.splits.get(c["U_id"])) for c in sel.cases], sel.cases,
                   {"TAC": pa.list_(pa.string()), "MRI": pa.list_(pa.string()), **case_nested})
    report_rows = []
    for r in reports:
        row = image_row(r, sel.splits.get(r["U_id"]))
        row.update({"title": r["Case"].get("Title"), "diagnosis": r["Case"].get("Case Diagnosis"),
                    "acr_code": r["Topic"].get("ACR Code"), "category": r["Topic"].get("Category")})
        report_rows.append(row)
    image_reports = _table(report_rows, reports, {**desc, **case_nested})
    return {"images": images, "cases": cases, "image_reports": image_reports}


def write_parquet(store: Store, out_dir: Path, sel: Selection | None = None) -> list[Path]:
    """Write ``images``, ``cases`` and ``image_reports`` Parquet files into a new folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(exist_ok=True)
    paths = []
    for name, table in parquet_tables(sel or Selection.everything(store)).items():
        path = out_dir / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
    return paths


def _jsonl_line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


def _write_jsonl_splits(sel: Selection, out: Path) -> list[Path]:
    groups: dict[str, tuple[list, list]] = {}
    for doc in sel.images:  # the authors' documents: the model's Prediction stays in Parquet and JSON
        groups.setdefault(sel.split(doc["U_id"]), ([], []))[0].append({k: v for k, v in doc.items() if k != "Prediction"})
    for case in sel.cases:
        groups.setdefault(sel.split(case["U_id"]), ([], []))[1].append(case)
    paths = []
    for split, (images, cases) in sorted(groups.items()):
        for prefix, docs in (("descriptions", images), ("data", cases)):
            path = out / f"{prefix}_{split}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(_jsonl_line(d) for d in docs)
            paths.append(path)
    return paths


def _write_csv(sel: Selection, out: Path) -> list[Path]:
    paths = []
    for name, rows in (("images", [image_row(d, sel.splits.get(d["U_id"])) for d in sel.images]),
                       ("cases", [case_row(c, sel.splits.get(c["U_id"])) for c in sel.cases])):
        path = out / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    return paths


def label_folder(value: str) -> str:
    """A label as a folder name (``Spine and Muscles`` stays readable; separators go)."""
    cleaned = "".join(c if c.isalnum() or c in " -_" else "_" for c in value).strip()
    return cleaned or "unknown"


def _write_imagefolder(sel: Selection, out: Path, label: str, image_path: Any, progress: Progress) -> list[Path]:
    if label not in LABELS:
        raise InputError(f"unknown label {label!r}: choose {' or '.join(LABELS)}")
    key = LABELS[label]
    paths = []
    with progress("Copying images", len(sel.images)) as advance:
        for doc in sel.images:
            folder = out / sel.split(doc["U_id"]) / label_folder(str(doc.get(key)))
            folder.mkdir(parents=True, exist_ok=True)
            src = image_path(doc["image"])
            if not Path(src).is_file():
                raise InputError(f"image file missing from the bundle: {src}")
            dest = folder / f"{doc['image']}.png"
            shutil.copyfile(src, dest)
            paths.append(dest)
            advance(1)
    return paths


def export(store: Store, out: Path, fmt: str, *, selection: Selection | None = None, label: str = "modality",
           image_path: Any = None, force: bool = False, progress: Progress = silent) -> list[Path]:
    """Export a selection (default: everything) as a new folder ``out``; returns the files written."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    sel = selection or Selection.everything(store)
    if fmt == "json":
        with atomic_file(Path(out), force=force) as tmp:
            tmp.write_text(json.dumps(sel.images, ensure_ascii=False, indent=1), encoding="utf-8")
        return [Path(out)]
    with atomic_dir(Path(out), force=force) as tmp:
        if fmt == "parquet":
            written = write_parquet(store, tmp, sel)
        elif fmt == "jsonl":
            written = _write_jsonl_splits(sel, tmp)
        elif fmt == "csv":
            written = _write_csv(sel, tmp)
        else:
            if image_path is None:
                raise InputError("an image-folder export needs the bundle's images")
            written = _write_imagefolder(sel, tmp, label, image_path, progress)
    return [Path(out) / p.relative_to(tmp) for p in written]


def write_documents(data: dict[str, Any] | list[dict[str, Any]], path: Path, *, fmt: str = "json", force: bool = False) -> Path:
    """Save one document or a list as a JSON, JSONL or Parquet file (the TUI's 'save' actions)."""
    path = Path(path)
    docs = [data] if isinstance(data, dict) else data
    with atomic_file(path, force=force) as tmp:
        if fmt == "json":
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        elif fmt == "jsonl":
            tmp.write_text("".join(_jsonl_line(d) for d in docs), encoding="utf-8")
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(docs), tmp)
        else:
            raise InputError(f"unknown file format {fmt!r}: choose json, jsonl or parquet")
    return path
