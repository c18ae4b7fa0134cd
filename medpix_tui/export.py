"""Exports of the whole dataset or of a query's results, for analysis and for training.

* Parquet: ``images``, ``cases``, ``image_reports`` with flattened snake_case columns for
  SQL and the nested documents kept as structs (``Description``, ``Case``, ``Topic``);
* JSONL in the release's split format (``descriptions_<split>.jsonl``, ``data_<split>.jsonl``);
* an image-folder tree ``<split>/<label>/<image>.png`` (torchvision ``ImageFolder`` layout);
* CSV of the flattened columns (cells a spreadsheet would run as a formula get a leading ``'``).

One table, :data:`FORMATS`, names every format, and drives the CLI's ``--format`` choices and
help, the terminal UI's save options and the dispatch of :func:`export` and
:func:`write_documents`: a new format is one :class:`ExportFormat` row.

Every export goes through :mod:`medpix_tui.atomic`: nothing half-written, nothing
overwritten without ``force``, nothing written inside a bundle this process opened.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_dir, atomic_file, check_not_read_only
from .errors import InputError
from .progress import Progress, silent
from .store import CASES, IMAGES, Store, image_report

if TYPE_CHECKING:  # pyarrow loads in the writers that use it: the table of formats costs no import
    import pyarrow as pa

LABELS = {"modality": "Type", "location": "Location Category"}
UNSPLIT = "unsplit"
#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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
    }


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
    import pyarrow as pa

    fields: dict[str, None] = {}
    for doc in docs:
        fields.update(dict.fromkeys(doc.get(key) or {}))
    return pa.struct([pa.field(name, pa.string()) for name in fields])


def _table(rows: list[dict[str, Any]], docs: list[dict[str, Any]], nested: dict[str, pa.DataType]) -> pa.Table:
    import pyarrow as pa

    for row, doc in zip(rows, docs, strict=True):
        for key in nested:
            row[key] = doc.get(key)
    table = pa.Table.from_pylist(rows) if rows else None
    if table is None:
        return pa.table({})
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
    import pyarrow as pa

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
    return _write_parquet(sel or Selection.everything(store), Path(out_dir))


def _write_parquet(sel: Selection, out_dir: Path) -> list[Path]:
    import pyarrow.parquet as pq

    out_dir.mkdir(exist_ok=True)
    paths = []
    for name, table in parquet_tables(sel).items():
        path = out_dir / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
    return paths


def _jsonl_line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


def _write_jsonl_splits(sel: Selection, out: Path) -> list[Path]:
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for doc in sel.images:
        groups.setdefault(sel.split(doc["U_id"]), ([], []))[0].append(doc)
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


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting like a formula gets a leading ``'``."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _write_csv(sel: Selection, out: Path) -> list[Path]:
    paths = []
    for name, rows in (("images", [image_row(d, sel.splits.get(d["U_id"])) for d in sel.images]),
                       ("cases", [case_row(c, sel.splits.get(c["U_id"])) for c in sel.cases])):
        path = out / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
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


@dataclass(frozen=True)
class ExportJob:
    """What a format's writer gets: the selection and the options that concern it."""

    selection: Selection
    label: str = "modality"
    image_path: Callable[[str], Path] | None = None
    progress: Progress = silent


def _dataset_parquet(job: ExportJob, out: Path) -> list[Path]:
    return _write_parquet(job.selection, out)


def _dataset_jsonl(job: ExportJob, out: Path) -> list[Path]:
    return _write_jsonl_splits(job.selection, out)


def _dataset_csv(job: ExportJob, out: Path) -> list[Path]:
    return _write_csv(job.selection, out)


def _dataset_imagefolder(job: ExportJob, out: Path) -> list[Path]:
    if job.image_path is None:
        raise InputError("an image-folder export needs the bundle's images")
    return _write_imagefolder(job.selection, out, job.label, job.image_path, job.progress)


def _dataset_json(job: ExportJob, out: Path) -> list[Path]:
    _docs_json(job.selection.images, out)
    return [out]


def _docs_json(data: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def _docs_jsonl(data: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    path.write_text("".join(_jsonl_line(d) for d in ([data] if isinstance(data, dict) else data)), encoding="utf-8")


def _docs_parquet(data: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([data] if isinstance(data, dict) else data), path)


#: ``write(job, target)``: fill the temporary folder (or file) ``target``; return the files written.
DatasetWriter = Callable[[ExportJob, Path], list[Path]]
#: ``write(data, target)``: one document or a list of them as one file.
DocumentWriter = Callable[[dict[str, Any] | list[dict[str, Any]], Path], None]


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, what it writes, and how (as a dataset export and/or a document file)."""

    name: str
    label: str
    summary: str
    #: A dataset export (:func:`export`, ``medpix-tui export``); None: document files only.
    dataset: DatasetWriter | None = None
    #: Whether the dataset export is a new folder (else one file).
    folder: bool = True
    #: A list of documents as one file (:func:`write_documents`, the terminal UI's saves); None: no such file.
    documents: DocumentWriter | None = None
    suffix: str = ""


#: Every format, in the order the CLI and the terminal UI list them (the UI offers JSON first).
FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("json", "JSON", "one JSON array of image documents", _dataset_json, folder=False,
                 documents=_docs_json, suffix=".json"),
    ExportFormat("jsonl", "JSONL", "descriptions_<split>.jsonl and data_<split>.jsonl, as in the release",
                 _dataset_jsonl, documents=_docs_jsonl, suffix=".jsonl"),
    ExportFormat("parquet", "Parquet", "images/cases/image_reports.parquet (flattened columns + nested structs)",
                 _dataset_parquet, documents=_docs_parquet, suffix=".parquet"),
    ExportFormat("csv", "CSV", "images.csv and cases.csv", _dataset_csv),
    ExportFormat("imagefolder", "image folder", "<split>/<label>/<image>.png, for torchvision's ImageFolder",
                 _dataset_imagefolder),
)}


#: What ``medpix-tui export`` writes without ``--format``.
DEFAULT_FORMAT = "parquet"


def format_names() -> list[str]:
    """Names of the dataset export formats (the CLI's ``--format`` choices)."""
    return [f.name for f in FORMATS.values() if f.dataset is not None]


def document_formats() -> list[ExportFormat]:
    """Formats that write a list of documents as one file (the terminal UI's save options)."""
    return [f for f in FORMATS.values() if f.documents is not None]


def format_help() -> str:
    """One line per dataset format, for ``medpix-tui export --help``."""
    width = max(len(n) for n in format_names())
    return "\n".join(f"{f.name:<{width}}  {f.summary}" for f in FORMATS.values() if f.dataset is not None)


def _format(fmt: str, names: list[str]) -> ExportFormat:
    if fmt not in names:
        raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(names)}")
    return FORMATS[fmt]


def export(store: Store, out: Path, fmt: str, *, selection: Selection | None = None, label: str = "modality",
           image_path: Callable[[str], Path] | None = None, force: bool = False,
           progress: Progress = silent) -> list[Path]:
    """Export a selection (default: everything) as a new folder ``out`` (or file); returns the files written.

    ``out`` may not overlap a bundle this process opened (bundles are read-only).
    """
    spec = _format(fmt, format_names())
    assert spec.dataset is not None
    out = Path(out)
    check_not_read_only(out)
    job = ExportJob(selection or Selection.everything(store), label, image_path, progress)
    if not spec.folder:
        with atomic_file(out, force=force) as tmp:
            spec.dataset(job, tmp)
        return [out]
    with atomic_dir(out, force=force) as tmp:
        written = spec.dataset(job, tmp)
    return [out / p.relative_to(tmp) for p in written]


def write_documents(data: dict[str, Any] | list[dict[str, Any]], path: Path, *, fmt: str = "json",
                    force: bool = False) -> Path:
    """Save one document or a list as one file of a document format (the TUI's 'save' actions).

    ``path`` may not overlap a bundle this process opened.
    """
    spec = _format(fmt, [f.name for f in document_formats()])
    assert spec.documents is not None
    path = Path(path)
    check_not_read_only(path)
    with atomic_file(path, force=force) as tmp:
        spec.documents(data, tmp)
    return path
