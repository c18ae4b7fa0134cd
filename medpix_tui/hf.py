"""A Hugging Face dataset folder: ``datasets.load_dataset(path)`` opens it offline.

One Parquet file per split of the authors (train, dev, test) under ``data/``, and a
``README.md`` whose YAML header declares the splits and the features: the image as an
``Image()`` (PNG bytes inside the Parquet, so the folder is self-contained), modality and
location category as ``ClassLabel``s (the paper's two tasks), and the case text as columns.
The same features are written into each Parquet file's schema metadata, which ``datasets``
reads too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .export import PARQUET_OPTIONS
from .progress import Progress, silent
from .query import value_at
from .source import SPLITS
from .vocabulary import clean_age

if TYPE_CHECKING:
    from .bundle import Bundle

MODALITIES = ("CT", "MR")
LOCATIONS = ("Abdomen", "Head", "Reproductive and Urinary System", "Spine and Muscles", "Thorax")
#: column -> dotted path in the Image_Reports document (strings)
TEXT_COLUMNS = {
    "caption": "Description.Caption", "plane": "Description.Plane", "sex": "Description.Sex",
    "location": "Location", "acr_codes": "Description.ACR Codes", "case_title": "Case.Title",
    "history": "Case.History", "exam": "Case.Exam", "findings": "Case.Findings",
    "differential_diagnosis": "Case.Differential Diagnosis", "case_diagnosis": "Case.Case Diagnosis",
    "topic_title": "Topic.Title", "topic_category": "Topic.Category",
}


def features() -> dict[str, Any]:
    """The features in ``datasets``' own serialisation (what ``Features.to_dict()`` gives)."""
    out: dict[str, Any] = {"image": {"_type": "Image"}, "image_id": {"dtype": "string", "_type": "Value"},
                           "case_id": {"dtype": "string", "_type": "Value"},
                           "modality": {"names": list(MODALITIES), "_type": "ClassLabel"},
                           "location_category": {"names": list(LOCATIONS), "_type": "ClassLabel"},
                           "age": {"dtype": "int32", "_type": "Value"}}
    out.update({name: {"dtype": "string", "_type": "Value"} for name in TEXT_COLUMNS})
    return out


def _readme(counts: dict[str, int], sizes: dict[str, int], download_size: int) -> str:
    """The dataset card: YAML the loader reads (splits with their rows and Arrow bytes, the features,
    the files' size), then a short description."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    lines += [f"  - split: {s}\n    path: data/{s}.parquet" for s, n in counts.items() if n]
    lines += ["dataset_info:", "  features:", "  - name: image", "    dtype: image",
              "  - name: image_id", "    dtype: string", "  - name: case_id", "    dtype: string",
              "  - name: modality", "    dtype:", "      class_label:", "        names:"]
    lines += [f"          '{i}': {name}" for i, name in enumerate(MODALITIES)]
    lines += ["  - name: location_category", "    dtype:", "      class_label:", "        names:"]
    lines += [f"          '{i}': {name}" for i, name in enumerate(LOCATIONS)]
    lines += ["  - name: age", "    dtype: int32"]
    lines += [f"  - name: {name}\n    dtype: string" for name in TEXT_COLUMNS]
    lines += ["  splits:"] + [f"  - name: {s}\n    num_bytes: {sizes[s]}\n    num_examples: {n}"
                              for s, n in counts.items() if n]
    lines += [f"  download_size: {download_size}", f"  dataset_size: {sum(sizes.values())}"]
    lines += ["---", "", "# MedPix 2.0 (exported by medpix-tui)", "",
              "Images with their captions, labels and case text, in the authors' splits. "
              "Load offline with `datasets.load_dataset(\"<this folder>\")`.", ""]
    return "\n".join(lines)


def _rows(bundle: Bundle, docs: Iterable[dict[str, Any]], advance: Callable[[int], None]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name in features()}
    for doc in docs:
        advance(1)
        columns["image"].append({"bytes": bundle.image_bytes(doc["image"]), "path": f"{doc['image']}.png"})
        columns["image_id"].append(doc["image"])
        columns["case_id"].append(doc["U_id"])
        columns["modality"].append(MODALITIES.index(doc["Type"]))
        location = doc.get("Location Category")
        columns["location_category"].append(LOCATIONS.index(location) if location in LOCATIONS else -1)
        columns["age"].append(clean_age(value_at(doc, "Description.Age")))
        for name, path in TEXT_COLUMNS.items():
            value = value_at(doc, path)
            columns[name].append(None if value is None else str(value))
    return columns


def write_hf(bundle: Bundle, out_dir: Path, docs_by_split: dict[str, list[dict[str, Any]]],
             progress: Progress = silent) -> dict[str, int]:
    """Write ``data/<split>.parquet`` and ``README.md`` into ``out_dir``; image reports per split.

    ``progress`` counts the images read (each checked against the bundle's manifest): the export
    of the whole release reads about 200 MB of PNG and sat silent for seconds.

    Images outside the authors' splits (a lab's added cases) are a split of their own, named as the
    caller keys them ("unsplit"): they were dropped without a word."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    meta = {b"huggingface": json.dumps({"info": {"features": features()}}).encode()}
    counts, sizes = {}, {}
    total = sum(len(docs) for docs in docs_by_split.values())
    with progress("Writing the Hugging Face folder", total) as advance:
        for split in [*SPLITS, *sorted(set(docs_by_split) - set(SPLITS))]:
            docs = docs_by_split.get(split) or []
            counts[split] = len(docs)
            if not docs:
                continue
            columns = _rows(bundle, docs, advance)
            image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
            arrays = {name: pa.array(values, type=image_type if name == "image" else
                                     pa.int64() if name in ("modality", "location_category") else
                                     pa.int32() if name == "age" else pa.string())
                      for name, values in columns.items()}
            table = pa.table(arrays).replace_schema_metadata(meta)
            pq.write_table(table, out_dir / "data" / f"{split}.parquet", **PARQUET_OPTIONS)
            sizes[split] = table.nbytes  # what the card's num_bytes means in ``datasets``: the Arrow data
    download_size = sum((out_dir / "data" / f"{split}.parquet").stat().st_size for split in sizes)
    (out_dir / "README.md").write_text(_readme(counts, sizes, download_size), encoding="utf-8")
    return counts
