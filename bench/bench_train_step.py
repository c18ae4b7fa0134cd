"""Where one training step of a config spends its CPU time: augment, frozen part, forward, backward, step.

    python bench/bench_train_step.py [--config tools/train/configs/lite0-ft.json] [--pack .pack/medpix-128]
                                     [--layout channels_last|nchw] [--steps 3]
    OMP_WAIT_POLICY=ACTIVE python bench/bench_train_step.py ...    # OpenMP's default: spinning threads

Prints JSON: seconds per step of each part (mean over ``--steps`` after one warm-up step),
the whole step, and the epoch it implies (train split // batch size steps). The loss is a
stand-in (the embedding's mean square): the real one adds only matrix products of
(batch x 256) embeddings. The tower, its frozen blocks, batch-norm modes, augmentation,
thread count and optimizer are the training run's own (``tools/train/train.py``).
On the Lite0 fine-tune the wait policy and the memory layout are what matter on a shared
2-core host; ``bundle/model/README.md`` has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tools.train sets it, before torch loads

import torch  # noqa: E402

from tools.train import train as T  # noqa: E402
from tools.train.data import augment, read_pack  # noqa: E402
from tools.train.loop import adamw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "tools/train/configs/lite0-ft.json")
    parser.add_argument("--pack", type=Path, default=ROOT / ".pack/medpix-128")
    parser.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    cfg = T.load_config(args.config)
    tc = cfg["train"]
    torch.set_num_threads(int(tc.get("threads", 2)))
    pack = read_pack(args.pack)
    model = T.build_model(cfg, pack.text_dir)
    layout = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=layout)  # type: ignore[call-overload]
    opt = adamw([p for p in model.parameters() if p.requires_grad], tc["lr"], tc["weight_decay"])
    model.train()
    T.keep_frozen_in_eval(model, cfg)
    pictures = torch.from_numpy(pack.pictures)
    rows = torch.from_numpy(pack.indices("train"))
    batch = int(tc["batch_size"])
    freeze = tc.get("freeze")
    cut = int(freeze) if isinstance(freeze, int) else 0
    visual, gen = model.visual, torch.Generator().manual_seed(0)
    parts: dict[str, float] = {}
    for step in range(args.steps + 1):
        if step == 1:
            parts.clear()
        idx = rows[step * batch:(step + 1) * batch]
        marks = [time.perf_counter()]
        x = T.normalize(augment(pictures[idx], gen, tc["augment"]), cfg).contiguous(memory_format=layout)
        marks.append(time.perf_counter())
        h = visual.blocks_until(x, cut)
        marks.append(time.perf_counter())
        y = visual.proj(visual.dropout(visual.features_from(h, cut)))
        marks.append(time.perf_counter())
        y.float().pow(2).mean().backward()
        marks.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        names = ("augment", "frozen_forward", "forward", "backward", "optimizer")
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            parts[name] = parts.get(name, 0.0) + b - a
    per_step = {k: round(v / args.steps, 3) for k, v in parts.items()}
    step_s = sum(per_step.values())
    print(json.dumps({"config": cfg["name"], "layout": args.layout, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "batch": batch,
                      "seconds_per_step": per_step, "step_s": round(step_s, 2),
                      "epoch_s": round(step_s * (len(rows) // batch), 1),
                      "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
