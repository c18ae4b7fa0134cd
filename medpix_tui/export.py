"""Exports of the whole dataset or of a query's results, for analysis and for training.

* Parquet: ``images``, ``cases``, ``image_reports`` with flattened snake_case columns for
  SQL and the nested documents kept as structs (``Description``, ``Case``, ``Topic``);
* JSONL in the release's split format (``descriptions_<split>.jsonl``, ``data_<split>.jsonl``);
* an image-folder tree ``<split>/<label>/<image>.png`` (torchvision ``ImageFolder`` layout);
* CSV of the flattened columns (cells a spreadsheet would run as a formula get a leading ``'``);
* the authors' RAG corpus and a knowledge graph (:mod:`.corpora`), a Hugging Face folder (:mod:`.hf`).

One table, :data:`FORMATS`, names every format, and drives the CLI's ``--format`` choices and
help, the terminal UI's save options and the dispatch of :func:`export` and
:func:`write_documents`: a new format is one :class:`ExportFormat` row.

Every export goes through :mod:`medpix_tui.atomic`: nothing half-written, nothing
overwritten without ``force``, nothing written inside a bundle this process opened. Every
export also writes its manifest: a dataset export (:func:`run_export`), and the terminal UI's
one-file saves of documents (:func:`save_documents`, :func:`save_search_results`) and of an SQL
result (:func:`save_sql_result`); from it :func:`reproduce` writes the same bytes again and
:func:`verify_export` checks the files.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from .atomic import EXPORT_MARK, atomic_dir, atomic_file, check_file_destination, check_not_read_only
from .errors import InputError, MedpixError, brief
from .progress import Progress, silent
from .store import CASES, ID_FIELD, IMAGES, Store, image_report

if TYPE_CHECKING:  # pyarrow loads in the writers that use it: the table of formats costs no import
    import pyarrow as pa

    from .bundle import Bundle
    from .session import SearchResult

LABELS = {"modality": "Type", "location": "Location Category"}
UNSPLIT = "unsplit"
#: Every Parquet file an export writes uses these options, so the same pyarrow writes the same bytes
#: (pyarrow puts no timestamp in a file; its version is in the export manifest).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "version": "2.6",
                                   "data_page_version": "1.0", "use_dictionary": True, "write_statistics": True}
#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: What a CSV export does with such a cell: ``escape`` (a leading ``'``, for spreadsheets) or
#: ``keep`` (the text as it is, for pandas and other programs: ACR code ``-1.-1`` stays itself).
CSV_FORMULAS = ("escape", "keep")


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


#: The model's answer as flat columns (see :mod:`.model.predictions`) with their Arrow types (by name:
#: pyarrow loads only when a file is written); null without a model.
PREDICTION_TYPES = {"pred_modality": "string", "pred_modality_p": "float64", "pred_location": "string",
                    "pred_location_p": "float64", "pred_ood": "float64", "pred_status": "string"}


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
        return cls.from_docs(store, collection, store.find(collection, flt))

    @classmethod
    def from_docs(cls, store: Store, collection: str, docs: list[dict[str, Any]]) -> Selection:
        """Documents of ``collection`` (in their order) with their images or cases."""
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
        pq.write_table(table, path, **PARQUET_OPTIONS)
        paths.append(path)
    return paths


def _jsonl_line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


def _write_jsonl_splits(sel: Selection, out: Path) -> list[Path]:
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for doc in sel.images:  # the authors' documents: the model's Prediction stays in Parquet and JSON
        groups.setdefault(sel.split(doc["U_id"]), ([], []))[0].append(
            {k: v for k, v in doc.items() if k != "Prediction"})
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


def csv_cell(value: Any, formulas: str = "escape") -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting like a formula gets a leading ``'``
    (unless ``formulas`` is ``keep``)."""
    if formulas == "escape" and isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def _write_csv(sel: Selection, out: Path, formulas: str = "escape") -> list[Path]:
    paths = []
    for name, rows in (("images", [image_row(d, sel.splits.get(d["U_id"])) for d in sel.images]),
                       ("cases", [case_row(c, sel.splits.get(c["U_id"])) for c in sel.cases])):
        path = out / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            writer.writerows({k: csv_cell(v, formulas) for k, v in row.items()} for row in rows)
        paths.append(path)
    return paths


def label_folder(value: str) -> str:
    """A label as a folder name (``Spine and Muscles`` stays readable; separators go)."""
    cleaned = "".join(c if c.isalnum() or c in " -_" else "_" for c in value).strip()
    return cleaned or "unknown"


def _write_imagefolder(sel: Selection, out: Path, label: str, copy: Callable[[str, Path], None],
                       progress: Progress) -> list[Path]:
    if label not in LABELS:
        raise InputError(f"unknown label {label!r}: choose {' or '.join(LABELS)}")
    key = LABELS[label]
    paths = []
    with progress("Copying images", len(sel.images)) as advance:
        for doc in sel.images:
            folder = out / sel.split(doc["U_id"]) / label_folder(str(doc.get(key)))
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / f"{doc['image']}.png"
            copy(doc["image"], dest)
            paths.append(dest)
            advance(1)
    return paths


def _image_copier(image_path: Callable[[str], Path], bundle: Bundle | None) -> Callable[[str, Path], None]:
    """How an export copies an image: a bundle's own images checked against its manifest while
    copied (:meth:`.Bundle.copy_image`), images from elsewhere as they are."""
    owner = bundle if bundle is not None else getattr(image_path, "__self__", None)
    if owner is not None and hasattr(owner, "copy_image") and image_path == owner.image_path:
        return owner.copy_image

    def copy(name: str, dest: Path) -> None:
        src = image_path(name)
        if not Path(src).is_file():
            raise InputError(f"image file missing from the bundle: {src}")
        shutil.copyfile(src, dest)

    return copy


@dataclass(frozen=True)
class ExportJob:
    """What a format's writer gets: the selection and the options that concern it."""

    selection: Selection
    label: str = "modality"
    image_path: Callable[[str], Path] | None = None
    progress: Progress = silent
    store: Store | None = None
    bundle: Bundle | None = None
    #: What the writer counted (documents, nodes, ...), for the export manifest.
    counts: dict[str, Any] = field(default_factory=dict)
    csv_formulas: str = "escape"


def _dataset_parquet(job: ExportJob, out: Path) -> list[Path]:
    return _write_parquet(job.selection, out)


def _dataset_jsonl(job: ExportJob, out: Path) -> list[Path]:
    return _write_jsonl_splits(job.selection, out)


def _dataset_csv(job: ExportJob, out: Path) -> list[Path]:
    return _write_csv(job.selection, out, job.csv_formulas)


def _dataset_imagefolder(job: ExportJob, out: Path) -> list[Path]:
    if job.image_path is None:
        raise InputError("an image-folder export needs the bundle's images")
    return _write_imagefolder(job.selection, out, job.label, _image_copier(job.image_path, job.bundle), job.progress)


def _dataset_rag(job: ExportJob, out: Path) -> list[Path]:
    from .corpora import RAG_EMBEDDINGS, RAG_FILE, RAG_IDS, write_rag

    assert job.store is not None
    job.counts.update(write_rag(job.store, out, job.progress, cases=job.selection.cases, images=job.selection.images))
    return [out / RAG_FILE, out / RAG_EMBEDDINGS, out / RAG_IDS]


def _dataset_kg(job: ExportJob, out: Path) -> list[Path]:
    from .corpora import GRAPHML_FILE, NODE_FILES, RELATIONSHIPS_FILE, write_kg

    assert job.store is not None
    job.counts.update(write_kg(job.store, out, cases=job.selection.cases, images=job.selection.images))
    return [*(out / name for name in NODE_FILES.values()), out / RELATIONSHIPS_FILE, out / GRAPHML_FILE]


def _dataset_hf(job: ExportJob, out: Path) -> list[Path]:
    from .hf import write_hf

    if job.bundle is None:
        raise InputError("--format hf needs a bundle (the images go into the Parquet files), not --mongo-uri")
    by_split: dict[str, list[dict[str, Any]]] = {}
    for doc in job.selection.reports():
        by_split.setdefault(job.selection.split(doc["U_id"]), []).append(doc)
    counts = write_hf(job.bundle, out, by_split, job.progress)
    job.counts.update({f"{split}_rows": n for split, n in counts.items()})
    return sorted(p for p in out.rglob("*") if p.is_file())


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

    pq.write_table(pa.Table.from_pylist([data] if isinstance(data, dict) else data), path, **PARQUET_OPTIONS)


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
    #: A list of documents as one file (:func:`save_documents`, the terminal UI's saves); None: no such file.
    documents: DocumentWriter | None = None
    suffix: str = ""
    #: The export options this format uses (recorded in the export manifest; others are refused).
    options: tuple[str, ...] = ()
    #: Whether it needs the bundle's image files (not possible from a MongoDB server).
    needs_images: bool = False


#: Every format, in the order the CLI and the terminal UI list them (the UI offers JSON first).
FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("json", "JSON", "one JSON array of image documents", _dataset_json, folder=False,
                 documents=_docs_json, suffix=".json"),
    ExportFormat("jsonl", "JSONL", "descriptions_<split>.jsonl and data_<split>.jsonl, as in the release",
                 _dataset_jsonl, documents=_docs_jsonl, suffix=".jsonl"),
    ExportFormat("parquet", "Parquet", "images/cases/image_reports.parquet (flattened columns + nested structs)",
                 _dataset_parquet, documents=_docs_parquet, suffix=".parquet"),
    ExportFormat("csv", "CSV", "images.csv and cases.csv", _dataset_csv, options=("csv_formulas",)),
    ExportFormat("imagefolder", "image folder", "<split>/<label>/<image>.png, for torchvision's ImageFolder",
                 _dataset_imagefolder, options=("label",), needs_images=True),
    ExportFormat("rag", "RAG corpus", "rag.jsonl (one document per case) + rag_embeddings.npy + rag_ids.json",
                 _dataset_rag),
    ExportFormat("kg", "knowledge graph", "nodes_*.csv + relationships.csv (neo4j-admin import) + graph.graphml",
                 _dataset_kg),
    ExportFormat("hf", "Hugging Face folder", "data/<split>.parquet + README.md: datasets.load_dataset opens it",
                 _dataset_hf, needs_images=True),
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


def check_keyword_options(collection: str, sort: str | None) -> None:
    """InputError for what --keyword does not go with, in ``query`` and ``export`` alike (query
    sorted nothing and said nothing)."""
    if collection == CASES:
        raise InputError("--keyword ranks images: use --collection Image_Descriptions or Image_Reports")
    if sort:
        raise InputError("--sort does not go with --keyword: keyword results come in rank order")


@dataclass(frozen=True)
class ExportQuery:
    """The exact query an export covers, as its manifest records it (the defaults: everything).

    The same fields as ``medpix-tui query``: dotted-field regexes, a read-only filter, ranked
    keywords (images), a sort, a limit, and the authors' split. ``ids`` (None: not used)
    names exactly the documents of results no such query expresses (the model's answers, a
    case on screen): image names, or case ids for ``Clinical_Reports``, in the order kept.
    """

    collection: str = IMAGES
    fields: tuple[str, ...] = ()
    filter: dict[str, Any] | None = None
    keyword: str | None = None
    sort: str | None = None
    limit: int = 0
    split: str | None = None
    ids: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"collection": self.collection, "fields": list(self.fields), "filter": self.filter,
                "keyword": self.keyword, "sort": self.sort, "limit": self.limit, "split": self.split,
                "ids": None if self.ids is None else list(self.ids)}

    @classmethod
    def from_json(cls, data: Any) -> ExportQuery:
        """The query of an export manifest (InputError when it is not one); ``ids`` may be absent."""
        keys = set(cls().to_json())
        if not isinstance(data, dict) or not keys - {"ids"} <= set(data) <= keys:
            raise InputError(f"the manifest's query is not an object with keys {', '.join(sorted(keys))}")
        fields, limit, ids = data["fields"], data["limit"], data.get("ids")
        if not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)) or type(limit) is not int:
            raise InputError("the manifest's query has a bad fields list or limit")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise InputError("the manifest's query ids are not a list of strings")
        for key in ("collection", "keyword", "sort", "split"):
            if data[key] is not None and not isinstance(data[key], str):
                raise InputError(f"the manifest's query {key} is not a string")
        if data["filter"] is not None and not isinstance(data["filter"], dict):
            raise InputError("the manifest's query filter is not an object")
        return cls(data["collection"], tuple(fields), data["filter"], data["keyword"], data["sort"], limit,
                   data["split"], None if ids is None else tuple(ids))

    def _filter(self, store: Store) -> dict[str, Any]:
        from .query import and_filters, field_filter, numbers_as_numbers, parse_field_args
        from .source import SPLITS

        if self.split is not None and self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}: choose {', '.join(SPLITS)}")
        by_id = {ID_FIELD.get(self.collection, "image"): {"$in": list(self.ids)}} if self.ids is not None else {}
        return and_filters(field_filter(parse_field_args(self.fields)) if self.fields else {},
                           numbers_as_numbers(store, self.collection, self.filter) if self.filter else {},
                           store.split_filter(self.split) if self.split else {}, by_id)

    def _ranked(self, store: Store, flt: dict[str, Any]) -> list[dict[str, Any]]:
        """The images the keywords rank, best first."""
        check_keyword_options(self.collection, self.sort)
        hits = store.keyword_search(str(self.keyword), flt=flt, limit=self.limit, collection=self.collection)
        return [d for _, d in hits]

    def _found(self, store: Store, flt: dict[str, Any]) -> list[dict[str, Any]]:
        """Documents of the collection in id order, sort order, or the order of ``ids``."""
        from .query import parse_sort

        if self.ids is None or self.sort:
            return store.find(self.collection, flt, sort=parse_sort(self.sort), limit=self.limit)
        by_id = {d[ID_FIELD.get(self.collection, "image")]: d for d in store.find(self.collection, flt)}
        docs = [by_id[i] for i in dict.fromkeys(self.ids) if i in by_id]
        return docs[: self.limit] if self.limit else docs

    def selection(self, store: Store) -> Selection:
        """Run the query: its documents with their images or cases."""
        flt = self._filter(store)
        if self.keyword:
            return Selection.from_docs(store, IMAGES, self._ranked(store, flt))
        if not flt and not self.sort and not self.limit and self.collection == IMAGES:
            return Selection.everything(store)
        return Selection.from_docs(store, self.collection, self._found(store, flt))

    def documents(self, store: Store) -> list[dict[str, Any]]:
        """Run the query: the documents of its own collection, in its order (a one-file save holds these)."""
        flt = self._filter(store)
        if not self.keyword:
            return self._found(store, flt)
        ranked = self._ranked(store, flt)
        if self.collection == IMAGES:
            return ranked
        names = [d["image"] for d in ranked]
        by_name = {d["image"]: d for d in store.find(self.collection, {"image": {"$in": names}})}
        return [by_name[n] for n in names if n in by_name]


#: The export manifest: a folder's ``manifest.json``, or ``<file>.manifest.json`` beside a one-file export.
EXPORT_MANIFEST = "manifest.json"
MANIFEST_SUFFIX = ".manifest.json"
EXPORT_MANIFEST_VERSION = 1
#: Libraries whose version decides the bytes of some format (recorded; a reproduction names a difference).
WRITER_LIBRARIES = ("pyarrow", "numpy", "networkx")


def manifest_path(out: Path) -> Path:
    """Where the export manifest of ``out`` lives: inside a folder export, beside a one-file export."""
    out = Path(out)
    return out / EXPORT_MANIFEST if out.is_dir() else out.with_name(out.name + MANIFEST_SUFFIX)


def _is_manifest_data(data: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(data, dict) and data.get("export") == "medpix-tui" and isinstance(data.get("files"), dict)


#: The largest file taken for an export manifest when deciding what ``force`` may replace.
_MANIFEST_LIMIT = 64 << 20


def _export_manifest_at(path: Path) -> dict[str, Any] | None:
    """The export manifest (of any version) in the regular file ``path``, or None."""
    from .bundle import read_regular

    try:
        data = json.loads(read_regular(path, _MANIFEST_LIMIT))
    except (OSError, ValueError):
        return None
    return data if _is_manifest_data(data) else None


def is_export_manifest(path: Path) -> bool:
    """Whether ``path`` is a regular file holding an export manifest (of any version)."""
    return _export_manifest_at(path) is not None


def _replaceable_file(suffix: str) -> Callable[[Path], str | None]:
    """What ``force`` may replace with a one-file export of a ``suffix`` format: an earlier export (its
    manifest beside it), never an export manifest or somebody's other file (a ``notes.json`` too)."""
    def why_not(path: Path) -> str | None:
        if is_export_manifest(path):
            return "it is an export manifest, not a file this format writes"
        if is_export_manifest(path.with_name(path.name + MANIFEST_SUFFIX)):
            return None
        return f"it is no earlier export of this tool (no {path.name}{MANIFEST_SUFFIX} beside it)"

    return why_not


def _replaceable_manifest(path: Path) -> str | None:
    """What ``force`` may replace with a one-file export's manifest: an earlier export manifest only."""
    return None if is_export_manifest(path) else "it is not an export manifest this tool wrote"


def _replaceable_folder(path: Path) -> str | None:
    """What ``force`` may replace with a folder export: an empty folder, or an earlier export known by
    its manifest (the mark file alone is one ``touch`` away) that holds nothing the manifest does not
    list: a file somebody added to an export (notes, a subfolder of work) is never deleted with it."""
    try:
        if not any(path.iterdir()):
            return None
        manifest = _export_manifest_at(path / EXPORT_MANIFEST)
        if manifest is None:
            return f"it holds {EXPORT_MARK} but no export {EXPORT_MANIFEST}, so it is no export of this tool"
        listed = set(manifest["files"]) | {EXPORT_MANIFEST, EXPORT_MARK}
        added = sorted(rel for item in path.rglob("*") if not item.is_dir() or item.is_symlink()
                       if (rel := item.relative_to(path).as_posix()) not in listed)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if added:
        shown = ", ".join(added[:3]) + (", ..." if len(added) > 3 else "")
        return f"it holds {len(added)} file(s) its export manifest does not list ({shown})"
    return None


def _suffix(spec: ExportFormat) -> str:
    return spec.suffix or f".{spec.name}"


def _library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in WRITER_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _file_entries(root: Path, files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    from .bundle import sha256_regular

    return {p.relative_to(root).as_posix(): {"sha256": sha256_regular(p), "size": p.stat().st_size}
            for p in sorted(files)}


def _folder_files(folder: Path) -> list[Path]:
    """Every file of an export folder but its manifest and mark."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() not in (EXPORT_MANIFEST, EXPORT_MARK))


def leaking_train_images(bundle: Bundle, progress: Progress = silent) -> list[dict[str, Any]]:
    """Train images that are near-duplicates of a dev or test image (:func:`.quality.duplicates`), with partners."""
    from .quality import duplicates

    store = bundle.store
    images = store.find(IMAGES, projection=["image", "U_id"])
    split_of = store.splits()
    split_of_image = {d["image"]: split_of.get(d["U_id"]) for d in images}
    with progress("Comparing the images for leaks across splits", 1) as advance:
        pairs = duplicates(bundle, [d["image"] for d in images], split_of_image,
                           {d["image"]: d["U_id"] for d in images})["leakage"]["pairs"]
        advance(1)
    partners: dict[str, dict[str, str]] = {}
    for pair in pairs:
        for mine, other in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
            theirs = split_of_image.get(other)
            if split_of_image.get(mine) == "train" and theirs in ("dev", "test"):
                partners.setdefault(mine, {})[other] = str(theirs)
    return [{"image": name, "partners": [{"image": o, "split": s} for o, s in sorted(partners[name].items())]}
            for name in sorted(partners)]


def _drop_images(sel: Selection, names: set[str]) -> Selection:
    """The selection less these images, and less the cases left without any image."""
    before = {d["U_id"] for d in sel.images}
    images = [d for d in sel.images if d["image"] not in names]
    emptied = before - {d["U_id"] for d in images}
    return Selection(images, [c for c in sel.cases if c["U_id"] not in emptied], sel.splits)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: its files (not the manifest) and the manifest as written."""

    files: list[Path]
    manifest: dict[str, Any]
    manifest_path: Path


def run_export(store: Store, out: Path, fmt: str, *, query: ExportQuery | None = None,
               selection: Selection | None = None, bundle: Bundle | None = None, label: str = "modality",
               exclude_leaks: bool = False, image_path: Callable[[str], Path] | None = None, force: bool = False,
               progress: Progress = silent, csv_formulas: str = "escape") -> ExportResult:
    """Export a query's results (default: everything) as a new folder ``out`` (or file), with its manifest.

    The manifest (:func:`manifest_path`) records the bundle's digest, the tool's version, the
    exact query, the format and its options, the counts, the train images dropped by
    ``exclude_leaks`` and the sha256 of every file, so :func:`reproduce` writes the same bytes
    and :func:`verify_export` checks them. A ``selection`` (the terminal UI's results) is
    recorded as the query of exactly its images. ``out`` may not overlap a bundle this process
    opened (bundles are read-only).
    """
    spec = _format(fmt, format_names())
    dataset = spec.dataset
    assert dataset is not None
    if label not in LABELS:
        raise InputError(f"unknown label {label!r}: choose {' or '.join(LABELS)}")
    if csv_formulas not in CSV_FORMULAS:
        raise InputError(f"unknown CSV formula handling {csv_formulas!r}: choose {' or '.join(CSV_FORMULAS)}")
    if bundle is not None:
        image_path = image_path or bundle.image_path
    if spec.needs_images and image_path is None:
        raise InputError(f"--format {fmt} needs a bundle's image files, not --mongo-uri")
    if exclude_leaks and bundle is None:
        raise InputError("--exclude-leaks needs a bundle (it compares the image files), not --mongo-uri")
    if query is None:
        query = (ExportQuery(IMAGES, filter={"image": {"$in": [d["image"] for d in selection.images]}})
                 if selection is not None else ExportQuery())
    out = Path(out)
    mpath = out / EXPORT_MANIFEST if spec.folder else out.with_name(out.name + MANIFEST_SUFFIX)
    if spec.folder:
        check_not_read_only(out)  # before the selection's work; atomic_dir checks it again
    else:
        check_file_destination(out, force, _replaceable_file(_suffix(spec)))
        check_file_destination(mpath, force, _replaceable_manifest)
    sel = query.selection(store)
    if not sel.images and not sel.cases:
        raise InputError("no documents match the query: nothing to export")
    dropped: list[dict[str, Any]] = []
    if exclude_leaks:
        assert bundle is not None
        chosen = {d["image"] for d in sel.images}
        dropped = [leak for leak in leaking_train_images(bundle, progress) if leak["image"] in chosen]
        sel = _drop_images(sel, {leak["image"] for leak in dropped})
    job = ExportJob(sel, label, image_path, progress, store, bundle, csv_formulas=csv_formulas)
    manifest = _manifest_head(DATASET, fmt, bundle)
    option_values = {"label": label, "csv_formulas": csv_formulas}
    manifest.update({"options": {name: option_values[name] for name in spec.options},
                     "exclude_leaks": exclude_leaks, "query": query.to_json(), "excluded_leaks": dropped})

    def finish(root: Path, files: list[Path]) -> None:
        manifest["counts"] = {"images": len(sel.images), "cases": len(sel.cases), "files": len(files),
                              **job.counts}
        manifest["files"] = _file_entries(root, files)

    if not spec.folder:  # one file: <file>.manifest.json beside it
        def write(tmp: Path) -> dict[str, Any]:
            dataset(job, tmp)
            return {"images": len(sel.images), "cases": len(sel.cases), **job.counts}

        return _one_file_export(out, manifest, write, force, _suffix(spec))
    with atomic_dir(out, force=force, ours=_replaceable_folder) as tmp:
        dataset(job, tmp)
        written = _folder_files(tmp)
        finish(tmp, written)
        (tmp / EXPORT_MANIFEST).write_text(_manifest_text(manifest), encoding="utf-8")
    return ExportResult([out / p.relative_to(tmp) for p in written], manifest, mpath)


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


#: What an export manifest describes (its ``kind``): a dataset export (:func:`run_export`), a
#: one-file save of documents (:func:`save_documents`) or of an SQL result (:func:`save_sql_result`).
DATASET, DOCUMENTS, SQL = "dataset", "documents", "sql"


def _manifest_head(kind: str, fmt: str, bundle: Bundle | None) -> dict[str, Any]:
    """The fields every export manifest starts with: what wrote it, from which bundle, in which format."""
    from . import __version__

    return {"export": "medpix-tui", "version": EXPORT_MANIFEST_VERSION, "kind": kind, "tool_version": __version__,
            "libraries": _library_versions(),
            "bundle": {"manifest_sha256": bundle.digest if bundle is not None else None,
                       "content_sha256": bundle.content_digest if bundle is not None else None}, "format": fmt}


def _one_file_export(out: Path, manifest: dict[str, Any], write: Callable[[Path], dict[str, Any]],
                     force: bool, suffix: str) -> ExportResult:
    """Write one file with ``write(tmp)`` (which returns the counts) and ``<file>.manifest.json`` beside it.

    Both are atomic and refused over an existing file without ``force`` (checked before
    anything is written), and neither may land inside a bundle this process opened.
    """
    out = Path(out)
    mpath = out.with_name(out.name + MANIFEST_SUFFIX)
    # atomic_file checks each destination on entry, so both are checked before anything is written;
    # both are written before either is renamed into place (a full disk fails before either
    # lands); the file is renamed first, its manifest after it
    with atomic_file(mpath, force=force, ours=_replaceable_manifest) as mtmp:
        with atomic_file(out, force=force, ours=_replaceable_file(suffix)) as tmp:
            counts = write(tmp)
            manifest["counts"] = {**counts, "files": 1}
            manifest["files"] = {out.name: _file_entries(tmp.parent, [tmp])[tmp.name]}
            mtmp.write_text(_manifest_text(manifest), encoding="utf-8")
    return ExportResult([out], manifest, mpath)


#: The shapes of a document save: the list of the query's documents, its one document (a JSON
#: object), or the topic part of its one case (``{"U_id": ..., "Topic": {...}}``).
SHAPES = ("list", "document", "topic")


def _shaped(docs: list[dict[str, Any]], shape: str) -> dict[str, Any] | list[dict[str, Any]]:
    if shape not in SHAPES:
        raise InputError(f"unknown document shape {shape!r}: choose {', '.join(SHAPES)}")
    if shape == "list":
        return docs
    if len(docs) != 1:
        raise InputError(f"a {shape} save needs exactly one document, the query gives {len(docs)}")
    doc = docs[0]
    return doc if shape == "document" else {"U_id": doc.get("U_id"), "Topic": doc.get("Topic") or {}}


def save_documents(store: Store, out: Path, fmt: str, query: ExportQuery, *, shape: str = "list",
                   bundle: Bundle | None = None, source: dict[str, Any] | None = None,
                   force: bool = False) -> ExportResult:
    """Save a query's documents (:meth:`ExportQuery.documents`) as one file, with its export manifest.

    The terminal UI's one-file saves: the manifest records the query, the ``shape`` and
    where the save came from (``source``, e.g. the search typed), so :func:`reproduce`
    writes the same bytes and :func:`verify_export` checks them.
    """
    spec = _format(fmt, [f.name for f in document_formats()])
    assert spec.documents is not None
    writer = spec.documents
    manifest = _manifest_head(DOCUMENTS, fmt, bundle)
    manifest.update({"options": {"shape": shape}, "exclude_leaks": False, "query": query.to_json(),
                     "source": source})

    def write(tmp: Path) -> dict[str, Any]:
        docs = query.documents(store)
        writer(_shaped(docs, shape), tmp)
        return {"documents": len(docs), "images": len({d["image"] for d in docs if "image" in d}),
                "cases": len({d["U_id"] for d in docs if "U_id" in d})}

    return _one_file_export(out, manifest, write, force, _suffix(spec))


def search_export_query(store: Store, result: SearchResult) -> ExportQuery:
    """The export query of a search's results: the search itself where a query expresses it, else their ids.

    The field query becomes ``fields``, the keywords ``keyword``, one ticked split ``split``
    and the other facets a ``filter``; that query is run and kept only when it gives the
    same documents in the same order as the results (a query on cases lists cases with no
    image, keywords on a report's case fields rank nothing), else, as for the model's
    answers (``within``), the query is the results' own ids.
    """
    from .session import facet_clause

    request = result.request
    ids = tuple(dict.fromkeys(d["U_id"] for d in result.images)) if request.collection == CASES else \
        tuple(result.names)
    if not request.within:
        facets = {k: v for k, v in request.facets.items() if v}
        split = next(iter(facets.pop("split"))) if len(facets.get("split", ())) == 1 else None
        clauses = [facet_clause(store, k, v) for k, v in sorted(facets.items())]
        query = ExportQuery(request.collection, tuple(f"{p}={v}" for p, v in request.pairs),
                            ({"$and": clauses} if len(clauses) > 1 else clauses[0]) if clauses else None,
                            request.active_keywords or None, split=split)
        key = ID_FIELD.get(request.collection, "image")
        try:
            if tuple(d[key] for d in query.documents(store)) == ids:
                return query
        except MedpixError:
            pass
    return ExportQuery(request.collection, ids=ids)


def search_source(result: SearchResult) -> dict[str, Any]:
    """What the user asked on the search screen, for an export manifest (people read it; the query reruns)."""
    request = result.request
    return {"screen": "search", "keywords": request.keywords, "collection": request.collection,
            "pairs": [list(p) for p in request.pairs],
            "facets": {k: sorted(v) for k, v in sorted(request.facets.items()) if v},
            "within": request.within_label if request.within else None, "images": len(result.images)}


def save_search_results(store: Store, result: SearchResult, out: Path, fmt: str, *, bundle: Bundle | None = None,
                        force: bool = False) -> ExportResult:
    """Save the documents of a search's results (of its collection, in result order) as one file, with a manifest."""
    return save_documents(store, out, fmt, search_export_query(store, result), bundle=bundle,
                          source=search_source(result), force=force)


#: The formats an SQL result is saved in.
SQL_FORMATS = ("json", "jsonl", "parquet", "csv")
SQL_NOTE = ("medpix-tui export --from-manifest runs the statement again on a fresh read-only connection "
            "(medpix_tui.sql, as 'medpix-tui sql' does): rows come in the same order only when the "
            "statement orders them")


def sql_csv_row(row: Iterable[Any], formulas: str = "escape") -> list[Any]:
    """The CSV cells of an SQL result row: nested values (STRUCT, LIST, MAP) as JSON, not Python's
    ``{'a': 1}``; NaN and infinities as ``nan``, ``inf`` (as DuckDB and pandas read them), not
    empty like NULL; text starting like a spreadsheet formula defused (:func:`csv_cell`), numbers
    never (a DECIMAL -0.5 was written '-0.5). ``medpix-tui sql --format csv`` and saves share it."""
    import datetime
    import decimal

    from .sql import jsonable

    def cell(v: Any) -> Any:
        if v is None:
            return ""
        if isinstance(v, (int, float, decimal.Decimal, datetime.timedelta)) and not isinstance(v, bool):
            return str(v) if isinstance(v, float) and not math.isfinite(v) else jsonable(v)  # "-P1D" is no formula
        text = json.dumps(jsonable(v), ensure_ascii=False) if isinstance(v, (dict, list, tuple)) else jsonable(v)
        return csv_cell(text, formulas)

    return [cell(v) for v in row]


def _sql_csv(columns: list[str], rows: list[tuple[Any, ...]], path: Path) -> None:
    """The result as CSV (see :func:`sql_csv_row`)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(sql_csv_row(row) for row in rows)


def _sql_parquet(columns: list[str], rows: list[tuple[Any, ...]], types: Sequence[str], path: Path) -> None:
    """The result as Parquet, each column of the type DuckDB gave it (:func:`medpix_tui.sql.arrow_types`)
    where its values fit that type, else of the type pyarrow infers from them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .sql import arrow_types

    kinds = arrow_types(types) if len(types) == len(columns) else [None] * len(columns)
    arrays = []
    for index, kind in enumerate(kinds):
        values = [row[index] for row in rows]
        if kind is not None and pa.types.is_string(kind):  # UUID, JSON, BIT: DuckDB's text of them
            values = [v if v is None or isinstance(v, str) else str(v) for v in values]
        if kind is not None and pa.types.is_interval(kind):  # pyarrow writes no Parquet INTERVAL: a duration
            kind = None
        try:
            arrays.append(pa.array(values, type=kind))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arrays.append(pa.array(values))
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), path, **PARQUET_OPTIONS)


def save_sql_result(statement: str, columns: list[str], rows: list[tuple[Any, ...]], out: Path, fmt: str, *,
                    bundle: Bundle | None = None, force: bool = False, types: Sequence[str] = ()) -> ExportResult:
    """Save the rows ``statement`` gave (:func:`medpix_tui.sql.run_sql`) as one file, with its export manifest.

    JSON and JSONL hold one object per row (dates, decimals and intervals as text); Parquet
    one row per row, in DuckDB's column ``types`` (of :meth:`medpix_tui.sql.SqlConnection.result`)
    when given; CSV one line per row. The manifest records the statement (see :data:`SQL_NOTE`).
    """
    from .sql import jsonable

    if fmt not in SQL_FORMATS:
        raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(SQL_FORMATS)}")
    writer = FORMATS[fmt].documents
    manifest = _manifest_head(SQL, fmt, bundle)
    manifest.update({"options": {}, "exclude_leaks": False, "query": None, "sql": statement, "note": SQL_NOTE})

    def write(tmp: Path) -> dict[str, Any]:
        if writer is None:  # CSV
            _sql_csv(columns, rows, tmp)
        elif fmt != "parquet":
            writer([{k: jsonable(v) for k, v in zip(columns, row, strict=True)} for row in rows], tmp)
        else:
            import pyarrow as pa

            try:
                _sql_parquet(columns, rows, types, tmp)
            except (OverflowError, pa.ArrowException) as exc:  # a HUGEINT past 38 digits, mixed types
                raise InputError(f"the result does not fit Parquet's column types ({brief(exc, width=60)}); "
                                 "cast the column in the statement (e.g. x::VARCHAR or x::DOUBLE), or save "
                                 "it as JSON") from None
        return {"rows": len(rows), "columns": len(columns)}

    return _one_file_export(out, manifest, write, force, _suffix(FORMATS[fmt]))


def export(store: Store, out: Path, fmt: str, *, selection: Selection | None = None, label: str = "modality",
           image_path: Callable[[str], Path] | None = None, force: bool = False, bundle: Bundle | None = None,
           progress: Progress = silent) -> list[Path]:
    """Export a selection (default: everything) as a new folder ``out`` (or file); returns the files written.

    The short form of :func:`run_export` (which also writes the export manifest).
    """
    return run_export(store, out, fmt, selection=selection, bundle=bundle, label=label, image_path=image_path,
                      force=force, progress=progress).files


def read_manifest(path: Path) -> dict[str, Any]:
    """An export manifest: the file itself (under any name: a copy kept as ``saved.json``), a
    folder's ``manifest.json`` or a file's ``<file>.manifest.json``."""
    path = Path(path)
    if (not path.name.endswith(MANIFEST_SUFFIX) and path.name != EXPORT_MANIFEST
            and not (path.is_file() and is_export_manifest(path))):
        path = manifest_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no export manifest at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read the export manifest {path}: {exc}") from None
    if not _is_manifest_data(data):
        raise InputError(f"{path} is not a medpix-tui export manifest")
    if data.get("version") != EXPORT_MANIFEST_VERSION:
        raise InputError(f"{path}: export manifest version {data.get('version')!r}, "
                         f"this tool reads {EXPORT_MANIFEST_VERSION}")
    return data


def reproduce(bundle: Bundle, manifest_file: Path, out: Path, *, force: bool = False,
              progress: Progress = silent) -> ExportResult:
    """Write the export a manifest describes again, into ``out``; refused for another bundle."""
    manifest = read_manifest(manifest_file)
    recorded = manifest.get("bundle") or {}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("manifest_sha256"), str):
        raise InputError(f"{manifest_file} records no bundle (it was exported from a MongoDB server): "
                         "it cannot be reproduced from a bundle")
    # the content digest, where recorded, ignores the build's time: a rebuild of the same source matches
    key, have = (("content_sha256", bundle.content_digest) if isinstance(recorded.get("content_sha256"), str)
                 else ("manifest_sha256", bundle.digest))
    wanted = recorded[key]
    if wanted != have:
        what = "content" if key == "content_sha256" else "manifest"
        raise InputError(f"the manifest was made from the bundle with {what} sha256 {wanted}, "
                         f"but {bundle.path} has {have}")
    fmt = manifest.get("format")
    kind = manifest.get("kind", DATASET)
    options = manifest.get("options") or {}
    if kind == DOCUMENTS:
        shape = options.get("shape", "list") if isinstance(options, dict) else "list"
        source = manifest.get("source")
        return save_documents(bundle.store, out, str(fmt), ExportQuery.from_json(manifest.get("query")),
                              shape=str(shape), bundle=bundle, source=source if isinstance(source, dict) else None,
                              force=force)
    if kind == SQL:
        from .sql import connect

        statement = manifest.get("sql")
        if not isinstance(statement, str):
            raise InputError(f"{manifest_file} records no SQL statement")
        if fmt not in SQL_FORMATS:
            raise InputError(f"the manifest's format {fmt!r} is not one an SQL result is saved in")
        con = connect(bundle.parquet_dir)
        try:
            result = con.result(statement)
        finally:
            con.close()
        return save_sql_result(statement, result.columns, result.rows, out, str(fmt), bundle=bundle, force=force,
                               types=result.types)
    if kind != DATASET:
        raise InputError(f"the manifest's kind {kind!r} is not one this tool exports")
    if fmt not in format_names():
        raise InputError(f"the manifest's format {fmt!r} is not one this tool exports")
    options = options if isinstance(options, dict) else {}
    return run_export(bundle.store, out, fmt, query=ExportQuery.from_json(manifest.get("query")), bundle=bundle,
                      label=options.get("label", "modality"), exclude_leaks=manifest.get("exclude_leaks") is True,
                      force=force, progress=progress, csv_formulas=options.get("csv_formulas", "escape"))


def library_differences(manifest: dict[str, Any]) -> list[str]:
    """Writer libraries whose version here differs from the manifest's (their bytes may differ)."""
    recorded = manifest.get("libraries") or {}
    here = _library_versions()
    return [f"{name} {here[name]} here, {recorded.get(name)} in the manifest" for name in WRITER_LIBRARIES
            if isinstance(recorded, dict) and name in recorded and recorded.get(name) != here[name]]


def verify_export(path: Path) -> list[str]:
    """Check an export (folder or file) against its manifest: one line per missing, changed or added file."""
    from .bundle import sha256_regular, unreadable_why

    path = Path(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        path = path.with_name(path.name[: -len(MANIFEST_SUFFIX)])
    if not path.exists() and not Path(str(path) + MANIFEST_SUFFIX).exists():
        raise InputError(f"no export at {path}")
    manifest = read_manifest(path)
    listed: dict[str, Any] = manifest["files"]
    if path.is_dir():
        root, present = path, {p.relative_to(path).as_posix(): p for p in _folder_files(path)}
    else:
        root, present = path.parent, ({path.name: path} if path.is_file() else {})
    problems = []
    for rel, entry in sorted(listed.items()):
        if rel not in present:
            problems.append(f"missing: {rel}")
            continue
        try:
            digest = sha256_regular(root / rel)
        except OSError as exc:  # a link or FIFO in the file's place (never followed), or no permission
            problems.append(f"unreadable: {rel} ({unreadable_why(exc).removeprefix('is ')})")
            continue
        if not isinstance(entry, dict) or digest != entry.get("sha256"):
            problems.append(f"changed: {rel}")
    problems += [f"added: {rel}" for rel in sorted(set(present) - set(listed))]
    return problems


def write_documents(data: dict[str, Any] | list[dict[str, Any]], path: Path, *, fmt: str = "json",
                    force: bool = False) -> Path:
    """Save one document or a list as one file of a document format, without an export manifest.

    For documents of no query (the terminal UI saves through :func:`save_documents`, which
    records the query). ``path`` may not overlap a bundle this process opened.
    """
    spec = _format(fmt, [f.name for f in document_formats()])
    assert spec.documents is not None
    path = Path(path)
    with atomic_file(path, force=force, ours=_replaceable_file(_suffix(spec))) as tmp:
        spec.documents(data, tmp)
    return path
