"""Self-supervised pre-training of the image tower (SimCLR) on the train split's pictures.

No pretrained image weights can be downloaded, so the tower starts from random weights. Before
it learns the labels, this phase teaches it to tell pictures apart: two augmented views of the
same picture must map close together and away from every other picture of the batch (the
NT-Xent loss of SimCLR, Chen et al. 2020). It reads pictures only, never labels, and only those
of the train split.

A run with a ``train.pretrain`` block runs this phase first. It keeps its own resumable state
(``pretrain_last.pt``) and log (``pretrain_metrics.jsonl``), and leaves ``pretrain.safetensors``
(the tower's weights) for the supervised phase to start from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .data import augment
from .loop import adamw, end_epoch, lr_at, next_epoch_overruns, set_lr, trim_metrics

PRETRAIN_LAST = "pretrain_last.pt"
PRETRAIN_WEIGHTS = "pretrain.safetensors"
PRETRAIN_METRICS = "pretrain_metrics.jsonl"


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the other 2B - 1 views."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def projection_head(embed_dim: int, hidden: int, out: int) -> nn.Module:
    """The MLP SimCLR puts after the encoder; it is thrown away after pre-training."""
    return nn.Sequential(nn.Linear(embed_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def pretrain_visual(visual: Any, pictures: torch.Tensor, rows: torch.Tensor, cfg: dict[str, Any],
                    normalize: Callable[[torch.Tensor], torch.Tensor], out: Path, seed: int,
                    deadline: float | None = None, log: Callable[[str], None] = print) -> bool:
    """Pre-train ``visual`` in place on ``pictures[rows]``; resumable; True once the phase is done.

    ``cfg`` is the config's ``train.pretrain`` block: epochs, batch_size, lr, weight_decay,
    temperature, head_hidden and head_out (the projection head) and augment (as :func:`augment`'s).
    Past ``deadline`` (a ``time.time()``), it stops after the epoch that would overrun it and
    returns False; the same call later resumes from ``pretrain_last.pt``.
    """
    from safetensors.torch import load_file, save

    from medpix_tui.atomic import write_atomic

    device = pictures.device
    if (out / PRETRAIN_WEIGHTS).exists():
        visual.load_state_dict(load_file(str(out / PRETRAIN_WEIGHTS), device=str(device)))
        log(f"pre-training done earlier: {out / PRETRAIN_WEIGHTS}")
        return True
    embed_dim = visual.attnpool.c_proj.out_features
    head = projection_head(embed_dim, int(cfg.get("head_hidden", 256)), int(cfg.get("head_out", 128))).to(device)
    opt = adamw([*visual.parameters(), *head.parameters()], cfg["lr"], cfg["weight_decay"])
    batch = min(int(cfg["batch_size"]), len(rows))
    steps_per_epoch = len(rows) // batch
    total = steps_per_epoch * int(cfg["epochs"])
    warmup = int(cfg.get("warmup_epochs", 1) * steps_per_epoch)
    done, seconds = 0, 0.0
    if (out / PRETRAIN_LAST).exists():
        state = torch.load(out / PRETRAIN_LAST, map_location=device, weights_only=False)
        visual.load_state_dict(state["visual"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        done, seconds = state["epochs_done"], state["seconds"]
        log(f"resuming pre-training after epoch {done}")
    trim_metrics(out, PRETRAIN_METRICS, done, log)
    started = time.time() - seconds
    for epoch in range(done, int(cfg["epochs"])):
        epoch_start = time.time()
        gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
        order = rows[torch.randperm(len(rows), generator=gen)].to(device)
        visual.train()
        head.train()
        total_loss = 0.0
        for i in range(steps_per_epoch):
            set_lr(opt, lr_at(epoch * steps_per_epoch + i, total, warmup, cfg["lr"]))
            batch_pictures = pictures[order[i * batch:(i + 1) * batch]]
            views = torch.cat([normalize(augment(batch_pictures, gen, cfg["augment"])) for _ in range(2)])
            z1, z2 = head(visual(views).float()).chunk(2)
            loss = nt_xent(z1, z2, float(cfg["temperature"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach())
        record = {"phase": "pretrain", "epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                  "loss": round(total_loss / steps_per_epoch, 4), "epoch_seconds": round(time.time() - epoch_start, 1),
                  "seconds": round(time.time() - started, 1)}
        end_epoch(out, PRETRAIN_METRICS, record, PRETRAIN_LAST,
                  {"visual": visual.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                   "epochs_done": epoch + 1, "seconds": record["seconds"]}, log)
        if epoch + 1 < int(cfg["epochs"]) and next_epoch_overruns(deadline, epoch_start):
            log(f"stopping pre-training after epoch {epoch + 1}: the next would pass the time budget")
            return False
    write_atomic(out / PRETRAIN_WEIGHTS, save({k: v.contiguous().cpu() for k, v in visual.state_dict().items()}))
    return True


if __name__ == "__main__":
    from . import not_a_tool

    not_a_tool("pretrain")
