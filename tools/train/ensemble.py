"""Compose exported checkpoints into one ensemble checkpoint, then score it like any export.

    python -m tools.train.ensemble --member bundle/model --member .pack/cand-lite0-probe --share 0.5 --share 0.5 \
        --pack .pack/medpix-128 --out .pack/ens

The members keep their weights; the ensemble's logits are the shares' weighted mean of the
members' logits (see :mod:`medpix_tui.model.ensemble` for why this is exact). The shares are
chosen on dev (``--dev-only`` prints dev answers for a share without writing test figures).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from medpix_tui.model.checkpoint import (
    HEAD_FILE,
    WEIGHTS_FILE,
    load_tensors,
    read_config,
    read_metadata,
    read_prompts,
    write_checkpoint,
    write_metadata,
)
from medpix_tui.model.prompts import PAPER_ACCURACY, TASKS

from . import ToolParser, one_line_errors, output_path
from .data import Pack, read_pack
from .export import FORMAT, score_checkpoint, staged_checkpoint


def compose(members: list[Path], shares: list[float], pack: Pack, out_dir: Path, name: str,
            splits: tuple[str, ...] = ("dev", "test"), release: bool = True) -> dict[str, Any]:
    """Write the ensemble checkpoint of ``members`` into ``out_dir`` and score it on ``splits``."""
    if len(members) != len(shares) or len(members) < 2 or min(shares) <= 0:
        raise SystemExit("error: give two or more members, each with a positive --share")
    total = sum(shares)
    shares = [s / total for s in shares]
    configs = [read_config(m) for m in members]
    tensors = [load_tensors(m / WEIGHTS_FILE) for m in members]
    logit = [float(t["logit_scale"].float().exp().clamp(max=100.0)) for t in tensors]
    big_s = sum(w * s for w, s in zip(shares, logit, strict=True))
    scales = [math.sqrt(w * s / big_s) for w, s in zip(shares, logit, strict=True)]
    prompts = read_prompts(members[0])
    if any(read_prompts(m) != prompts for m in members[1:]):
        raise SystemExit("error: the members were trained with different prompts")
    vision = {"architecture": "ensemble", "image_size": int(configs[0]["preprocess_cfg"]["size"]),
              "members": [{"model_cfg": c["model_cfg"], "mean": float(c["preprocess_cfg"]["mean"][0]),
                           "std": float(c["preprocess_cfg"]["std"][0]), "scale": a}
                          for c, a in zip(configs, scales, strict=True)]}
    model_cfg = {"embed_dim": sum(int(c["model_cfg"]["embed_dim"]) for c in configs), "vision_cfg": vision,
                 "text_cfg": configs[0]["model_cfg"]["text_cfg"]}
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": {**configs[0]["preprocess_cfg"], "mean": [0.0] * 3, "std": [1.0] * 3}}
    state: dict[str, torch.Tensor] = {"logit_scale": torch.tensor(math.log(big_s))}
    for i, t in enumerate(tensors):
        for key, value in t.items():
            if key.startswith("visual."):
                state[f"visual.members.{i}.{key.removeprefix('visual.')}"] = value
            elif key.startswith("text.proj."):
                state[f"text.proj.members.{i}.{key.removeprefix('text.proj.')}"] = value
    heads = [load_tensors(m / HEAD_FILE) for m in members]
    head = {task: torch.cat([a * h[task].float() for a, h in zip(scales, heads, strict=True)], dim=-1)
            for task in TASKS}
    metas = [read_metadata(m) for m in members]
    n_image = sum(int(m["image_tower"]["parameters"]) for m in metas)
    metadata: dict[str, Any] = {
        "name": name, "format": FORMAT,
        "image_tower": {"architecture": "ensemble: " + " + ".join(m["image_tower"]["architecture"] for m in metas),
                        "parameters": n_image, "image_size": vision["image_size"], "embed_dim": model_cfg["embed_dim"]},
        "text_tower": metas[0]["text_tower"],
        "training": {"ensemble": {"shares": shares, "logit_scales": logit, "scales": scales,
                                  "members": [{"name": m["name"], "training": m.get("training"),
                                               "evaluation": m.get("evaluation")} for m in metas]}},
        "source_digests": pack.meta["source_digests"],
        "paper": {f"{t}_accuracy": PAPER_ACCURACY[t] for t in TASKS},
    }
    with staged_checkpoint(out_dir) as staging:
        write_checkpoint(staging, config=config, state=state, head=head, prompts=prompts, metadata=metadata,
                         tokenizer_dir=members[0])
        metadata["evaluation"] = score_checkpoint(staging, pack, release, splits)
        write_metadata(staging, metadata)
    return {split: {"modality": r["modality"]["correct"], "location": r["location"]["correct"],
                    "answers_right": r["modality"]["correct"] + r["location"]["correct"],
                    "modality_accuracy": r["modality_accuracy"], "location_accuracy": r["location_accuracy"]}
            for split, r in metadata["evaluation"].items()}


@one_line_errors()
def main() -> None:
    parser = ToolParser("ensemble", __doc__)
    parser.add_argument("--member", type=Path, action="append", required=True, help="an exported checkpoint folder")
    parser.add_argument("--share", type=float, action="append", required=True, help="its share of the vote")
    parser.add_argument("--pack", type=Path, required=True, help="the pack the members were trained on")
    parser.add_argument("--out", type=output_path, required=True, help="checkpoint folder to write")
    parser.add_argument("--name", default="medpix-clip-ensemble")
    parser.add_argument("--dev-only", action="store_true",
                        help="score dev only, no release embeddings (choosing shares)")
    args = parser.parse_args()
    splits = ("dev",) if args.dev_only else ("dev", "test")
    print(json.dumps(compose(args.member, args.share, read_pack(args.pack), args.out, args.name, splits,
                             release=not args.dev_only)))


if __name__ == "__main__":
    main()
