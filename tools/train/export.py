"""Export a run's best weights as the shipped checkpoint, then measure it once on test.

    python -m tools.train.export --run runs/h100 --pack .pack/medpix-128 --out bundle/model
    python -m tools.train.export --release-only --source ../shared/medpix-2.0 --out bundle/model

The figures written into ``medpix_model.json`` come from loading the exported folder
with the library (:func:`medpix_tui.model.encoder.load_image_encoder`), exactly as
``medpix-tui eval`` and the shipped-checkpoint test do, on the pack's pictures, which
are the library's own preprocessing of the source PNGs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch

from medpix_tui.atomic import replace_dir, temp_dir_beside
from medpix_tui.model import lite_spec
from medpix_tui.model.checkpoint import (
    CONFIG_FILE,
    TEXT_MODEL_ID,
    TEXT_PACKAGE,
    TEXT_WEIGHTS_FILE,
    is_checkpoint,
    write_checkpoint,
    write_metadata,
)
from medpix_tui.model.encoder import load_image_encoder
from medpix_tui.model.evaluate import evaluate_pictures
from medpix_tui.model.prompts import PAPER_ACCURACY, TASKS

from . import ToolParser, one_line_errors, output_path
from .data import Pack, read_pack
from .train import BEST, RUN, build_model, prompt_embeddings

FORMAT = 1


@contextlib.contextmanager
def staged_checkpoint(out_dir: Path) -> Iterator[Path]:
    """A folder to write a whole checkpoint in (weights, release vectors, figures), put in place of
    ``out_dir`` only when the block succeeds: an export stopped half-way (Ctrl-C, a full disk) left
    new weights beside an old config in ``bundle/model``. Files of the old folder that the export does
    not write come along: the model card, and calibrate's files, which are bound to the weights'
    digest and so ignored until ``tools.train.calibrate`` runs again on new weights."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and (is_checkpoint(out_dir) or not any(out_dir.iterdir()))):
        raise SystemExit(f"error: refusing to replace {out_dir}: it is not a checkpoint folder (no {CONFIG_FILE})")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir_beside(out_dir)
    try:
        yield staging
        if out_dir.is_dir():
            for old in out_dir.iterdir():
                if old.is_file() and not (staging / old.name).exists():
                    shutil.copy2(old, staging / old.name)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def open_clip_config(cfg: dict[str, Any], size: int) -> dict[str, Any]:
    """open_clip's ``open_clip_config.json``: the model config and its preprocessing."""
    model_cfg = deepcopy(cfg["model_cfg"])
    model_cfg["text_cfg"].update(hf_model_name=TEXT_MODEL_ID, hf_tokenizer_name=TEXT_MODEL_ID)
    pre = cfg["preprocess"]
    return {"model_cfg": model_cfg,
            "preprocess_cfg": {"size": size, "mode": "RGB", "mean": [pre["mean"]] * 3, "std": [pre["std"]] * 3,
                               "interpolation": "bicubic", "resize_mode": "longest", "fill_color": 0}}


def tower_name(cfg: dict[str, Any]) -> str:
    """The image tower, in words, for the model card's metadata."""
    architecture = cfg["model_cfg"]["vision_cfg"].get("architecture")
    if architecture in lite_spec.REPEATS:
        how = "frozen, linear projection" if cfg["train"].get("freeze") == "trunk" else "fine-tuned"
        return f"{lite_spec.title(architecture)} (ImageNet weights of {lite_spec.weights_package(architecture)}, {how})"
    return "open_clip ModifiedResNet"


def write_release_embeddings(encoder: Any, pack: Pack, out_dir: Path) -> None:
    """Embed every release image of the pack with the exported checkpoint, keyed by its file's sha256.

    The pack's pictures are the library's own preprocessing of the source files, so these are
    the vectors ``bundle build`` would compute; it reuses them (:mod:`medpix_tui.model.release`).
    """
    from medpix_tui.model.checkpoint import WEIGHTS_FILE
    from medpix_tui.model.release import write_release
    from medpix_tui.source import sha256_file

    if any("sha256" not in item for item in pack.items):
        raise SystemExit("error: the pack predates file digests; build it again with tools.train.pack")
    vectors = encoder.encode_arrays(pack.pictures, threads=None)
    write_release(out_dir, [i["image"] for i in pack.items], [i["sha256"] for i in pack.items], vectors,
                  sha256_file(out_dir / WEIGHTS_FILE))


def write_release_from_source(model_dir: Path, source_dir: Path) -> int:
    """(Re)write a checkpoint's release embeddings from the source's files, with the encoder
    ``medpix-tui eval --from-pixels`` uses (:func:`medpix_tui.model.runtime.load_encoder`), so
    ``eval`` reusing them reports the same figures; returns how many images."""
    from medpix_tui.model.checkpoint import WEIGHTS_FILE
    from medpix_tui.model.release import write_release
    from medpix_tui.model.runtime import load_encoder
    from medpix_tui.progress import rich_progress
    from medpix_tui.source import load_source, sha256_file

    source = load_source(source_dir, check_images=False)
    paths = [source.image_path(d["image"]) for d in source.images]
    vectors = load_encoder(model_dir, calibrated=False).encode_files(paths, rich_progress())
    write_release(model_dir, [d["image"] for d in source.images], [sha256_file(p) for p in paths], vectors,
                  sha256_file(Path(model_dir) / WEIGHTS_FILE))
    return len(paths)


def score_checkpoint(model_dir: Path, pack: Pack, release: bool, splits: tuple[str, ...]) -> dict[str, Any]:
    """Load the written checkpoint as the library does, give it the release vectors (unless it is a
    candidate scored only for the model card) and score it on the pack's ``splits``."""
    encoder = load_image_encoder(model_dir)
    if release:
        write_release_embeddings(encoder, pack, model_dir)
    return {split: evaluate_pictures(encoder, split, pack.pictures[rows], pack.truths(rows),
                                     [pack.items[i]["U_id"] for i in rows])
            for split in splits for rows in [pack.indices(split)]}


def export(run_dir: Path, pack: Pack, out_dir: Path, release: bool = True) -> dict[str, Any]:
    """Write the checkpoint of ``run_dir``'s best epoch into ``out_dir``; return its test figures."""
    from safetensors.torch import load_file

    if not (run_dir / RUN).is_file():
        raise SystemExit(f"error: {run_dir} is not a finished run (no {RUN}); "
                         "train one with python -m tools.train.train")
    run = json.loads((run_dir / RUN).read_text(encoding="utf-8"))
    cfg = run.pop("config")
    wanted = cfg["model_cfg"]["vision_cfg"].get("image_size")
    if wanted is not None and wanted != pack.meta["size"]:  # the pictures would be scored at the wrong size
        raise SystemExit(f"error: the pack's pictures are {pack.meta['size']}px, the run was trained at {wanted}px: "
                         "pass the pack it trained on")
    model = build_model(cfg, pack.text_dir, pretrained=False)
    state = load_file(str(run_dir / BEST))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("text.transformer.") for k in missing):
        raise SystemExit(f"error: {run_dir / BEST} does not fit the config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    with torch.no_grad():
        head = prompt_embeddings(model, torch.from_numpy(pack.features).float(), pack)
    prompts = {task: {k: v for k, v in spec.items() if k != "rows"} for task, spec in pack.meta["prompts"].items()}
    n_image = sum(v.numel() for k, v in state.items() if k.startswith("visual.") and "num_batches" not in k)
    metadata: dict[str, Any] = {
        "name": cfg["name"], "format": FORMAT,
        "image_tower": {"architecture": tower_name(cfg), "parameters": n_image,
                        "image_size": pack.meta["size"], "embed_dim": cfg["model_cfg"]["embed_dim"]},
        "text_tower": {"model": TEXT_MODEL_ID, "package": TEXT_PACKAGE, "file": TEXT_WEIGHTS_FILE,
                       "sha256": pack.meta["text_tower_sha256"], "frozen": True},
        "training": run | {"config": cfg}, "source_digests": pack.meta["source_digests"],
        "paper": {f"{t}_accuracy": PAPER_ACCURACY[t] for t in TASKS},
    }
    with staged_checkpoint(out_dir) as staging:
        write_checkpoint(staging, config=open_clip_config(cfg, pack.meta["size"]), state=state, head=head,
                         prompts=prompts, metadata=metadata, tokenizer_dir=pack.text_dir)
        metadata["evaluation"] = score_checkpoint(staging, pack, release, ("dev", "test"))
        write_metadata(staging, metadata)
    test = metadata["evaluation"]["test"]
    return {"checkpoint": str(out_dir), "best_epoch": run["best_epoch"], "n": test["n"],
            "test_modality_accuracy": test["modality_accuracy"], "test_location_accuracy": test["location_accuracy"]}


@one_line_errors()
def main() -> None:
    parser = ToolParser("export", __doc__)
    parser.add_argument("--run", type=Path, help="run folder of tools.train.train")
    parser.add_argument("--pack", type=Path, help="the pack the run trained on")
    parser.add_argument("--source", type=Path,
                        help="with --release-only: embed this release's files instead of a pack's pictures")
    parser.add_argument("--out", type=output_path, required=True, help="checkpoint folder to write (e.g. bundle/model)")
    parser.add_argument("--release-only", action="store_true",
                        help="only (re)write OUT's release embeddings, for a checkpoint exported before they existed")
    parser.add_argument("--no-release", action="store_true",
                        help="skip the release embeddings (a candidate that will not ship; bundle build then embeds)")
    args = parser.parse_args()
    if args.release_only and args.source is not None:
        count = write_release_from_source(args.out, args.source)
        print(json.dumps({"checkpoint": str(args.out), "release_embeddings": count}))
        return
    if args.pack is None:
        parser.error("--pack is required (unless --release-only --source)")
    if args.release_only:
        encoder, pack = load_image_encoder(args.out), read_pack(args.pack)
        if encoder.size != pack.meta["size"]:
            raise SystemExit(f"error: the pack's pictures are {pack.meta['size']}px, {args.out} takes "
                             f"{encoder.size}px: pass the pack it was trained on")
        write_release_embeddings(encoder, pack, args.out)
        print(json.dumps({"checkpoint": str(args.out), "release_embeddings": True}))
        return
    if args.run is None:
        parser.error("--run is required (unless --release-only)")
    print(json.dumps(export(args.run, read_pack(args.pack), args.out, release=not args.no_release)))


if __name__ == "__main__":
    main()
