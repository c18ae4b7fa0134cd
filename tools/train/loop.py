"""What both training phases (pre-training and the supervised phase) do the same way.

The optimizer and its schedule, the per-epoch record and resumable state, and the time
budget: one definition, so a resumed or cut-off run behaves alike in either phase.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from medpix_tui.atomic import atomic_file, write_atomic


def adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (not on biases, norms, scales)."""
    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98))


def adamw_groups(opt: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], weight_decay: float,
                 lr_scale: float) -> None:
    """Add parameters to ``opt`` (decay as :func:`adamw` does) whose learning rate is ``lr_scale`` times the base."""
    params = list(params)
    lr = opt.defaults["lr"]
    opt.add_param_group({"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay,
                         "lr_scale": lr_scale, "lr": lr * lr_scale})
    opt.add_param_group({"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0,
                         "lr_scale": lr_scale, "lr": lr * lr_scale})


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def end_epoch(out: Path, metrics: str, record: dict[str, Any], last: str, state: dict[str, Any],
              log: Callable[[str], None]) -> None:
    """Append the epoch's record to ``metrics`` and replace ``last`` (the state to resume from) atomically."""
    with open(out / metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    log(json.dumps(record))
    with atomic_file(out / last, force=True) as tmp:
        torch.save(state, tmp)


def trim_metrics(out: Path, metrics: str, done: int, log: Callable[[str], None]) -> None:
    """On resume, drop the records of epochs after ``done``: :func:`end_epoch` appends an
    epoch's record before its state lands, so a run killed between the two runs that epoch
    again and would log it twice (a record cut short by the kill is dropped too)."""
    path = out / metrics
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and int(record.get("epoch", 0)) <= done:
            kept.append(line)
    if len(kept) != len(lines):
        write_atomic(path, "".join(f"{line}\n" for line in kept).encode())
        log(f"{metrics}: dropped {len(lines) - len(kept)} record(s) after epoch {done}, the state resumed from")


def next_epoch_overruns(deadline: float | None, epoch_start: float) -> bool:
    """Whether another epoch as long as the one started at ``epoch_start`` would pass ``deadline``."""
    return deadline is not None and time.time() + (time.time() - epoch_start) > deadline


if __name__ == "__main__":
    from . import not_a_tool

    not_a_tool("loop")
