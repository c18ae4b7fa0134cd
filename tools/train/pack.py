"""Build the training pack: everything the trainer reads, compact enough to travel.

The device takes at most 64 MiB a call and has neither the dataset nor the text tower's
weights, so the pack holds the model's square pictures (PNG, in one zip), the labels and
split of every image, and the frozen MiniLM's pooled features of every training text and
of the paper's prompts, and each image file's sha256 (the export ships the release images'
embeddings under it, for ``bundle build`` to reuse). Pictures come from :func:`medpix_tui.model.preprocess.load_square`,
the very function classification uses, so the pack matches what the model sees later.

    python -m tools.train.pack --source ../shared/medpix-2.0 --size 128 --out .pack/medpix-128
"""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from medpix_tui.model.checkpoint import (
    TEXT_WEIGHTS_FILE,
    TOKENIZER_FILES,
    text_weights_path,
)
from medpix_tui.model.preprocess import load_many
from medpix_tui.model.prompts import paper_prompts, truth_of
from medpix_tui.source import SourceData, load_source, sha256_file

from . import ToolParser, one_line_errors, output_path

PACK_FILE = "pack.json"
PICTURES_FILE = "pictures.zip"
FEATURES_FILE = "text_features.npy"
TEXT_DIR = "text"
FORMAT = 1
#: The most text tokens the text tower (MiniLM, 512 positions) reads.
MAX_CONTEXT = 512


def training_text(doc: dict[str, Any]) -> str:
    """The text an image is paired with: modality, plane, location and caption."""
    desc = doc.get("Description") or {}
    parts = [desc.get("Modality"), desc.get("Plane"), doc.get("Location"), desc.get("Caption")]
    return ". ".join(" ".join(str(p).split()) for p in parts if p and str(p).strip())


def build_pack(source: Path, size: int, out: Path, context_length: int = 128, log=print) -> dict[str, Any]:
    """Write a pack for pictures of ``size`` pixels as ``out`` (which must not exist), whole or not at
    all: it is filled under a temporary name beside ``out`` (a pack stopped half-way was read later)."""
    from medpix_tui.atomic import no_folder_message, publish_dir, temp_dir_beside

    out = Path(out)
    if out.exists():
        raise SystemExit(f"error: {out} already exists")
    try:  # before the minutes of work: /etc/passwd/x was a traceback at the end
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = no_folder_message(out.parent) if isinstance(exc, (FileExistsError, NotADirectoryError)) else \
            exc.strerror or str(exc)
        raise SystemExit(f"error: cannot create {out}: {why}") from None
    start = time.time()
    src = load_source(source, check_images=False)
    staging = temp_dir_beside(out)
    try:
        meta = _fill_pack(src, size, staging, context_length, log)
        if not publish_dir(staging, out):
            raise SystemExit(f"error: {out} was made by another process meanwhile; this pack was not kept")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"pack written to {out} in {time.time() - start:.0f}s")
    return meta


def _fill_pack(src: SourceData, size: int, out: Path, context_length: int, log) -> dict[str, Any]:
    from medpix_tui.model.text import package_text_tower

    start = time.time()
    docs = [d for d in src.images if src.splits.get(d["U_id"])]
    log(f"pictures: {len(docs)} at {size}px")
    pictures = load_many([src.image_path(d["image"]) for d in docs], size)
    with zipfile.ZipFile(out / PICTURES_FILE, "w", zipfile.ZIP_STORED) as zf:
        for doc, pic in zip(docs, pictures, strict=True):
            buf = io.BytesIO()
            Image.fromarray(pic).save(buf, "PNG", optimize=True)
            zf.writestr(f"{doc['image']}.png", buf.getvalue())
    log(f"text features ({time.time() - start:.0f}s)")
    prompts = paper_prompts()
    texts = {task: cast(list[str], spec["texts"]) for task, spec in prompts.items()}
    prompt_texts = [t for task_texts in texts.values() for t in task_texts]
    tower = package_text_tower(context_length)
    features = tower.pooled([training_text(d) for d in docs] + prompt_texts)
    np.save(out / FEATURES_FILE, features.astype(np.float32))
    (out / TEXT_DIR).mkdir()
    package_dir = text_weights_path().parent
    for name in (*TOKENIZER_FILES, "config.json"):
        shutil.copyfile(package_dir / name, out / TEXT_DIR / name)
    row = len(docs)
    for task, spec in prompts.items():
        spec["rows"] = list(range(row, row + len(texts[task])))
        row += len(texts[task])
    meta = {
        "format": FORMAT, "size": size, "context_length": context_length,
        "source_digests": src.digests, "text_tower_sha256": sha256_file(package_dir / TEXT_WEIGHTS_FILE),
        "prompts": prompts,
        "items": [{"image": d["image"], "U_id": d["U_id"], "split": src.splits[d["U_id"]], **truth_of(d),
                   "sha256": sha256_file(src.image_path(d["image"]))} for d in docs],
    }
    (out / PACK_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
    log(f"pack filled in {time.time() - start:.0f}s")
    return meta


@one_line_errors()
def main() -> None:
    parser = ToolParser("pack", __doc__)
    parser.add_argument("--source", type=Path, required=True, help="MedPix 2.0 source folder")
    parser.add_argument("--size", type=int, required=True, help="picture side in pixels (the model's image_size)")
    parser.add_argument("--out", type=output_path, required=True, help="pack folder to create (keep it under .pack/)")
    parser.add_argument("--context-length", type=int, default=128, help="text tokens kept per training text")
    args = parser.parse_args()
    if not 16 <= args.size <= 1024:
        raise SystemExit(f"error: --size {args.size} is not a picture side this model takes (16 to 1024 px)")
    if not 1 <= args.context_length <= MAX_CONTEXT:
        raise SystemExit(f"error: --context-length {args.context_length} is not a number of text tokens "
                         f"MiniLM keeps (1 to {MAX_CONTEXT})")
    build_pack(args.source, args.size, args.out, args.context_length)


if __name__ == "__main__":
    main()
