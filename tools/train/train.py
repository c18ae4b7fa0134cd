"""Train the MedPix CLIP model on a pack: seeded, logged, resumable, exported at the end.

    python -m tools.train.train --config tools/train/configs/h100.json --pack .pack/medpix-128 --out runs/h100

The image tower (open_clip ModifiedResNet) is trained from scratch; the text tower is
all-MiniLM-L6-v2, frozen, so its pooled features come precomputed in the pack and only
its projection is trained. The loss adds three cross-entropies over cosine logits:
image-caption contrastive (CLIP's), and image against the paper's modality prompts and
location prompts, so the paper's zero-shot prompts are what the model learns to match.
Only the train split is trained on; dev picks the best epoch; test is read once, by the
export. Every epoch appends a line to ``metrics.jsonl`` and saves ``last.pt``; running the
same command again resumes from it. A ``train.pretrain`` block first pre-trains the image
tower without labels (:mod:`tools.train.pretrain`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from medpix_tui.atomic import atomic_file, write_atomic
from medpix_tui.model.checkpoint import save_tensors
from medpix_tui.model.prompts import TASKS

from . import ToolParser, one_line_errors, output_path
from .data import AUGMENT_KEYS, Pack, augment, read_pack
from .loop import adamw, adamw_groups, end_epoch, lr_at, next_epoch_overruns, set_lr, trim_metrics

LAST = "last.pt"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
RUN = "run.json"
TRAINABLE = ("visual.", "text.proj.", "logit_scale")


#: The keys a config may hold (every shipped config's, together): another is a typo ("epochz").
#: open_clip's CustomTextCLIP: untyped, and its towers' attributes (``visual.features_from``, ``text.proj``)
#: are the library's own, so mypy can check nothing of them.
ClipModel = Any
CONFIG_KEYS = ("name", "seed", "model_cfg", "preprocess", "train")
TRAIN_KEYS = ("amp", "augment", "batch_size", "class_balance", "device", "ema_decay", "epochs", "freeze",
              "joint_balance", "label_smoothing", "loss_weights", "lr", "max_minutes", "pretrain", "select",
              "threads", "trunk_lr_scale", "warmup_epochs", "weight_decay")
#: The blocks inside a config whose keys are checked too: (required, optional) keys, all numbers.
#: A typo there ("rotate_degs") was silently a run without that augmentation.
NUMBER_BLOCKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "preprocess": (("mean", "std"), ()),
    "train.augment": AUGMENT_KEYS,
    "train.loss_weights": (("caption", "modality", "location"), ()),
    "train.pretrain": (("epochs", "batch_size", "lr", "weight_decay", "temperature"),
                       ("warmup_epochs", "head_hidden", "head_out")),
    "train.pretrain.augment": AUGMENT_KEYS,
}


def load_config(path: Path) -> dict[str, Any]:
    """A training config (JSON): name, seed, model_cfg, preprocess, train; one line saying what is wrong."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SystemExit(f"error: cannot read config {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: config {path} is not JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("train"), dict):
        raise SystemExit(f"error: config {path} must be an object with a 'train' object")
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise SystemExit(f"error: config {path} lacks {', '.join(missing)}")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS)) + [f"train.{k}" for k in sorted(set(cfg["train"]) - set(TRAIN_KEYS))]
    if unknown:
        raise SystemExit(f"error: config {path} has unknown key(s) {', '.join(unknown)} (a typo?)")
    for where, (required, optional) in NUMBER_BLOCKS.items():
        check_number_block(path, cfg, where, required, optional)
    train_cfg = cfg["train"]
    for key, kind, low in (("epochs", int, 1), ("batch_size", int, 1), ("lr", (int, float), 0)):
        value = train_cfg.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or value < low or (low == 0 and value == 0):
            raise SystemExit(f"error: config {path}: train.{key} must be a number "
                             f"{'above 0' if low == 0 else f'of at least {low}'}, got {value!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise SystemExit(f"error: config {path}: seed must be a whole number, got {cfg['seed']!r}")
    budget = train_cfg.get("max_minutes")
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget < 0):
        raise SystemExit(f"error: config {path}: train.max_minutes must be 0 (no limit) or more, got {budget!r}")
    return cfg


def check_number_block(path: Path, cfg: dict[str, Any], where: str, required: tuple[str, ...],
                       optional: tuple[str, ...]) -> None:
    """One line when the block at dotted ``where`` (if the config has it) lacks a key, has an unknown
    one, or holds anything but non-negative numbers; ``train.pretrain`` may hold its ``augment`` block."""
    parent: Any = cfg
    *above, name = where.split(".")
    for key in above:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or name not in parent:
        if where in ("preprocess", "train.augment", "train.loss_weights"):
            raise SystemExit(f"error: config {path} lacks {where}")
        return
    block = parent[name]
    if block is None and name == "augment":  # no augmentation (a probe on cached features)
        return
    if not isinstance(block, dict):
        raise SystemExit(f"error: config {path}: {where} must be an object{' or null' * (name == 'augment')}")
    nested = {"augment"} if where == "train.pretrain" else set()
    missing = [k for k in required if k not in block]
    unknown = sorted(set(block) - set(required) - set(optional) - nested)
    if missing or unknown:
        said = ([f"lacks {', '.join(f'{where}.{k}' for k in missing)}"] if missing else []) + \
            ([f"has unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)} (a typo?)"] if unknown else [])
        raise SystemExit(f"error: config {path} {' and '.join(said)}")
    for key, value in block.items():
        if key not in nested and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise SystemExit(f"error: config {path}: {where}.{key} must be a number of 0 or more, got {value!r}")


def override(cfg: dict[str, Any], *, seed: int | None = None, epochs: int | None = None,
             deterministic: bool = False) -> dict[str, Any]:
    """The config with the command line's seed, epoch count and kernel choice; the name says a new seed."""
    cfg = deepcopy(cfg)
    if deterministic:
        cfg["train"]["deterministic"] = True
    if seed is not None and seed != cfg["seed"]:
        cfg.update(seed=seed, name=f"{cfg['name']}-s{seed}")
    if epochs is not None:
        if epochs < 1:
            raise SystemExit("error: --epochs must be at least 1")
        cfg["train"]["epochs"] = epochs
    return cfg


def config_digest(cfg: dict[str, Any]) -> str:
    """What a resumed run must share with the run it resumes (the time budget may change)."""
    math_only = deepcopy(cfg)
    math_only["train"].pop("max_minutes", None)
    return hashlib.sha256(json.dumps(math_only, sort_keys=True).encode()).hexdigest()[:16]


def build_model(cfg: dict[str, Any], text_dir: Path, pretrained: bool = True) -> ClipModel:
    """open_clip's CustomTextCLIP; its MiniLM is built from config only (features are cached).

    With ``vision_cfg.architecture`` (the pretrained EfficientNet-Lite0), open_clip builds a
    placeholder tower that is then replaced by the library's own, so training and inference
    share one definition; ``pretrained`` loads its ImageNet weights (the projection stays random).
    """
    from medpix_tui.model._compat import open_clip

    oc = open_clip()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_cfg = deepcopy(cfg["model_cfg"])
    model_cfg["text_cfg"].update(hf_model_name=str(text_dir), hf_tokenizer_name=str(text_dir),
                                 hf_model_pretrained=False)
    architecture = model_cfg["vision_cfg"].get("architecture")
    if architecture is not None:
        model_cfg["vision_cfg"] = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8}
    model = oc.CustomTextCLIP(**model_cfg)
    if architecture is not None:
        from medpix_tui.model.efficientnet import pretrained_state
        from medpix_tui.model.tower import build_tower

        model.visual = build_tower(cfg["model_cfg"])
        if pretrained:
            missing, unexpected = model.visual.load_state_dict(pretrained_state(architecture), strict=False)
            if unexpected or set(missing) != {"proj.weight"}:
                raise SystemExit(f"error: pretrained weights do not fit ({missing[:3]}, {unexpected[:3]})")
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(TRAINABLE)
    frozen = frozen_prefixes(cfg)
    for name, param in model.visual.named_parameters():
        if name.startswith(frozen):
            param.requires_grad = False
    return model


def frozen_prefixes(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The image tower's parameter names kept at their pretrained values (``train.freeze``).

    ``"trunk"``: everything but the projection (a linear probe); an int N: the stem and the
    first N blocks (their high-resolution backward pass is most of a step's CPU time).
    """
    freeze = cfg["train"].get("freeze")
    if freeze == "trunk":
        return ("_",)
    if isinstance(freeze, int) and freeze > 0:
        return ("_conv_stem.", "_bn0.", *(f"_blocks.{i}." for i in range(freeze)))
    return ()


def keep_frozen_in_eval(model: ClipModel, cfg: dict[str, Any]) -> None:
    """Frozen layers keep their ImageNet batch-norm statistics (train() would update them)."""
    frozen = frozen_prefixes(cfg)
    if not frozen:
        return
    for name, module in model.visual.named_modules():
        if name and (name + ".").startswith(frozen) and isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def trainable_state(model: ClipModel) -> dict[str, torch.Tensor]:
    """The tensors training changes (weights and batch-norm statistics), by open_clip name."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(TRAINABLE)}


def normalize(x: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    """(B, 1, S, S) in [0, 1] to the tower's 3-channel normalised input."""
    pre = cfg["preprocess"]
    return ((x - pre["mean"]) / pre["std"]).expand(-1, 3, -1, -1)


def prompt_embeddings(model: ClipModel, features: torch.Tensor, pack: Pack) -> dict[str, torch.Tensor]:
    rows = {task: pack.meta["prompts"][task]["rows"] for task in TASKS}
    return {task: F.normalize(model.text.proj(features[r]), dim=-1) for task, r in rows.items()}


@torch.no_grad()
def dev_accuracy(model: ClipModel, cfg: dict[str, Any], pack: Pack, pictures: torch.Tensor,
                 features: torch.Tensor, labels: dict[str, torch.Tensor], rows: torch.Tensor,
                 cached: torch.Tensor | None = None) -> dict[str, float]:
    """Zero-shot accuracy of each task on some rows (used for model selection on dev)."""
    model.eval()
    prompts = prompt_embeddings(model, features, pack)
    correct = {task: 0 for task in TASKS}
    for start in range(0, len(rows), 256):
        idx = rows[start:start + 256]
        if cached is not None:
            img = F.normalize(cached_forward(model, cfg, cached[idx]), dim=-1)
        else:
            x = normalize(pictures[idx].float().unsqueeze(1) / 255.0, cfg).contiguous(memory_format=torch.channels_last)
            img = F.normalize(model.visual(x), dim=-1)
        for task in TASKS:
            correct[task] += int(((img @ prompts[task].T).argmax(1) == labels[task][idx]).sum())
    return {task: correct[task] / max(len(rows), 1) for task in TASKS}


def class_weights(labels: torch.Tensor, rows: torch.Tensor, n_classes: int, power: float) -> torch.Tensor:
    """Loss weight per class, (count / mean count) ** -power over the training rows.

    ``power`` 0 weighs every image alike; 0.5 lifts rare classes (the 109 "Reproductive and
    Urinary System" images) without letting their few pictures dominate; 1 fully balances.
    """
    counts = torch.bincount(labels[rows].cpu(), minlength=n_classes).float().clamp(min=1)
    weights = (counts / counts.mean()) ** -power
    return weights / (weights * counts).sum() * counts.sum()  # the mean weight per image stays 1


def joint_weights(labels: dict[str, torch.Tensor], rows: torch.Tensor, power: float) -> torch.Tensor:
    """Per image, (count of its (modality, location) cell / mean cell count) ** -power, mean 1 over ``rows``.

    The train split holds 60 spine CT against 197 spine MR images: a tower can learn "spine
    means MR". Weighing each cell of the joint labels evens that out for both tasks at once.
    """
    n_loc = int(labels["location"].max()) + 1
    cell = labels["modality"].cpu() * n_loc + labels["location"].cpu()
    counts = torch.bincount(cell[rows], minlength=int(cell.max()) + 1).float()
    present = counts[counts > 0]
    per_cell = torch.where(counts > 0, (counts.clamp(min=1) / present.mean()) ** -power, torch.zeros_like(counts))
    weights = per_cell[cell]
    return weights / weights[rows].mean()


def frozen_blocks(cfg: dict[str, Any]) -> int | None:
    """How many leading blocks a run without augmentation computes once: all (``"trunk"``), N, or None (no cache)."""
    tc = cfg["train"]
    if tc.get("augment") or cfg["model_cfg"]["vision_cfg"].get("architecture") is None:
        return None
    freeze = tc.get("freeze")
    return -1 if freeze == "trunk" else (int(freeze) if isinstance(freeze, int) and freeze > 0 else None)


def cached_forward(model: ClipModel, cfg: dict[str, Any], cached: torch.Tensor) -> torch.Tensor:
    """The tower's output from what :func:`probe_features` cached: the projection, or the unfrozen blocks and it."""
    n = frozen_blocks(cfg)
    pooled = cached if n == -1 else model.visual.features_from(cached, n)
    return model.visual.proj(model.visual.dropout(pooled))


@torch.no_grad()
def probe_features(model: ClipModel, cfg: dict[str, Any], pictures: torch.Tensor, log=print) -> torch.Tensor:
    """What the frozen part of the tower gives for every picture, computed once (no augmentation).

    ``freeze: "trunk"``: the pooled features (a linear probe); ``freeze: N``: the output of the
    stem and the first N blocks, so that training runs only the blocks after them.
    """
    model.visual.eval()
    n = frozen_blocks(cfg)
    started, out = time.time(), []
    for start in range(0, len(pictures), 128):
        x = normalize(pictures[start:start + 128].float().unsqueeze(1) / 255.0, cfg).contiguous(
            memory_format=torch.channels_last)
        out.append(model.visual.features(x) if n == -1 else model.visual.blocks_until(x, n))
    log(f"frozen trunk features of {len(pictures)} pictures in {time.time() - started:.0f}s")
    return torch.cat(out)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(train_cfg: dict[str, Any]) -> torch.device:
    want = train_cfg.get("device", "auto")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


def deterministic_kernels() -> None:
    """Bit-identical reruns on a GPU: cuDNN's deterministic convolutions and a fixed cuBLAS workspace.

    Set before the first CUDA call. Ops without a deterministic kernel only warn.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def _device_name(device: torch.device) -> str:
    """What trained the run, for its record: "cuda (NVIDIA H200)" or "cpu"."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def train(cfg: dict[str, Any], pack: Pack, out: Path, log=print) -> dict[str, Any]:
    """Train (or resume) into ``out``; returns the run summary also written to ``run.json``."""
    tc = cfg["train"]
    out.mkdir(parents=True, exist_ok=True)
    device = _device(tc)
    if device.type == "cpu":
        torch.set_num_threads(int(tc.get("threads", 2)))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if tc.get("deterministic"):
        deterministic_kernels()
    seed_everything(cfg["seed"])
    if pack.meta["size"] != cfg["model_cfg"]["vision_cfg"]["image_size"]:
        raise SystemExit(f"error: pack pictures are {pack.meta['size']}px, the config wants "
                         f"{cfg['model_cfg']['vision_cfg']['image_size']}px")
    # channels_last on every device: on CPU it routes the depthwise convolutions through
    # oneDNN, 1.4x faster a Lite0 step than NCHW on 2 cores (bench/bench_train_step.py)
    model: ClipModel = build_model(cfg, pack.text_dir).to(device).to(memory_format=torch.channels_last)
    pictures = torch.from_numpy(pack.pictures).to(device)
    features = torch.from_numpy(pack.features).float().to(device)
    labels = {task: torch.from_numpy(pack.labels(task)).to(device) for task in TASKS}
    train_rows = torch.from_numpy(pack.indices("train"))
    balance = float(tc.get("class_balance", 0.0))
    loss_class_weights = {task: class_weights(labels[task], train_rows, len(pack.meta["prompts"][task]["classes"]),
                                              balance).to(device) for task in TASKS}
    dev_rows = torch.from_numpy(pack.indices("dev")).to(device)
    sample_weights = joint_weights(labels, train_rows, float(tc.get("joint_balance", 0.0))).to(device)
    cached = None
    if frozen_blocks(cfg) is not None:  # the frozen part is the package's weights: one cache per pack and cut
        vision = cfg["model_cfg"]["vision_cfg"]
        cache = pack.root / (f"frozen-{vision['architecture']}-{frozen_blocks(cfg)}"
                             f"-{cfg['preprocess']['mean']}-{cfg['preprocess']['std']}.pt")
        if cache.is_file():
            cached = torch.load(cache, map_location=device, weights_only=True)
        else:
            cached = probe_features(model, cfg, pictures, log)
            with atomic_file(cache, force=True) as tmp:  # a run stopped here must not leave half a cache
                torch.save(cached.cpu(), tmp)
    batch = min(int(tc["batch_size"]), len(train_rows))
    steps_per_epoch = len(train_rows) // batch
    total = steps_per_epoch * int(tc["epochs"])
    warmup = int(tc.get("warmup_epochs", 1) * steps_per_epoch)
    trunk = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual._")]
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("visual._")]
    opt = adamw(params, tc["lr"], tc["weight_decay"])
    if trunk:  # a pretrained trunk moves more slowly than the new projections (``trunk_lr_scale``)
        adamw_groups(opt, trunk, tc["weight_decay"], float(tc.get("trunk_lr_scale", 1.0)))
    ema = None
    if tc.get("ema_decay"):  # dev judges, and the run ships, weights averaged over the last ~1/(1-decay) steps
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(tc["ema_decay"])), use_buffers=True)
    judged = ema.module if ema is not None else model
    # which epoch ships: dev's best, or the last (the best of 30 epochs on 197 dev images is partly luck;
    # an averaged run's last epoch is not a choice at all)
    select = tc.get("select", "best")
    if select not in ("best", "last"):
        raise SystemExit(f"error: train.select is {select!r}; use 'best' or 'last'")
    weights = tc["loss_weights"]
    amp = device.type == "cuda" and tc.get("amp") == "bf16"
    digest = config_digest(cfg)
    run: dict[str, Any] = {"name": cfg["name"], "config_digest": digest, "device": _device_name(device),
                           "epochs_done": 0, "best_epoch": None, "best_dev": None, "best_score": -1.0,
                           "seconds": 0.0, "stopped_early": False}
    budget = float(tc.get("max_minutes", 0)) * 60
    # max_minutes bounds this invocation, so a resumed run gets its own budget
    deadline = time.time() + budget if budget else None
    if tc.get("pretrain") and not (out / LAST).exists():
        from .pretrain import pretrain_visual

        if not pretrain_visual(model.visual, pictures, train_rows.to(device), tc["pretrain"],
                               lambda x: normalize(x, cfg), out, cfg["seed"], deadline, log):
            run["stopped_early"] = True
            return run
    if (out / LAST).exists():
        state = torch.load(out / LAST, map_location=device, weights_only=False)
        if state["run"]["config_digest"] != digest:
            raise SystemExit(f"error: {out / LAST} belongs to another config; use a new --out")
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        run = state["run"]
        log(f"resuming after epoch {run['epochs_done']}")
    trim_metrics(out, METRICS, run["epochs_done"], log)
    started = time.time() - run["seconds"]
    for epoch in range(run["epochs_done"], int(tc["epochs"])):
        epoch_start = time.time()
        gen = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)
        order = train_rows[torch.randperm(len(train_rows), generator=gen)].to(device)
        model.train()
        keep_frozen_in_eval(model, cfg)
        sums = {"loss": 0.0, "caption": 0.0, **{t: 0.0 for t in TASKS}}
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            set_lr(opt, lr_at(step, total, warmup, tc["lr"]))
            idx = order[i * batch:(i + 1) * batch]
            if cached is None:
                x = normalize(augment(pictures[idx], gen, tc["augment"]), cfg).contiguous(
                    memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                if cached is not None:
                    img = F.normalize(cached_forward(model, cfg, cached[idx]).float(), dim=-1)
                else:
                    img = F.normalize(model.visual(x).float(), dim=-1)
                cap = F.normalize(model.text.proj(features[idx]).float(), dim=-1)
                prompts = prompt_embeddings(model, features, pack)
            scale = model.logit_scale.exp().clamp(max=100.0)
            target = torch.arange(len(idx), device=device)
            logits = scale * img @ cap.T
            parts = {"caption": (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2}
            for task in TASKS:
                each = F.cross_entropy(scale * img @ prompts[task].float().T, labels[task][idx],
                                       weight=loss_class_weights[task], reduction="none",
                                       label_smoothing=tc.get("label_smoothing", 0.0))
                w = sample_weights[idx] * loss_class_weights[task][labels[task][idx]]
                parts[task] = (each * sample_weights[idx]).sum() / w.sum()
            loss = sum(weights[k] * v for k, v in parts.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            sums["loss"] += float(loss.detach())
            for k, v in parts.items():
                sums[k] += float(v.detach())
        dev = dev_accuracy(judged, cfg, pack, pictures, features, labels, dev_rows, cached)
        score = sum(dev.values()) / len(dev)
        improved = score > run["best_score"]
        if improved:
            run["best_score"] = score
        if improved and select == "best":
            save_shipped(judged, out)
            run.update(best_epoch=epoch + 1, best_dev=dev)
        elif select == "last":
            run.update(best_epoch=epoch + 1, best_dev=dev)  # the epoch that ships, written once below
        run.update(epochs_done=epoch + 1, seconds=round(time.time() - started, 1))
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": opt.param_groups[0]["lr"],
                  **{f"train_{k}": round(v / steps_per_epoch, 4) for k, v in sums.items()},
                  **{f"dev_{t}_accuracy": round(a, 4) for t, a in dev.items()}, "dev_score": round(score, 4),
                  "logit_scale": round(float(model.logit_scale.detach().exp()), 2), "best": improved,
                  "epoch_seconds": round(time.time() - epoch_start, 1), "seconds": run["seconds"]}
        end_epoch(out, METRICS, record, LAST,
                  {"model": trainable_state(model), "optimizer": opt.state_dict(), "run": run,
                   **({"ema": ema.state_dict()} if ema is not None else {})}, log)
        if epoch + 1 < int(tc["epochs"]) and next_epoch_overruns(deadline, epoch_start):
            run["stopped_early"] = True
            log(f"stopping after epoch {epoch + 1}: the next would pass max_minutes={tc['max_minutes']}")
            break
    if select == "last":
        save_shipped(judged, out)
    write_atomic(out / RUN, json.dumps({**run, "config": cfg}, indent=2) + "\n")
    return run


def save_shipped(model: ClipModel, out: Path) -> None:
    """Write the weights the export ships (``BEST``): the trainable state, float32."""
    save_tensors(out / BEST, trainable_state(model))


@one_line_errors("interrupted: rerun the same command to resume after the last finished epoch")
def main() -> None:
    parser = ToolParser("train", __doc__)
    parser.add_argument("--config", type=Path, required=True, help="training config JSON")
    parser.add_argument("--pack", type=Path, required=True, help="pack folder from tools.train.pack")
    parser.add_argument("--out", type=output_path, required=True, help="run folder (metrics, last.pt, best weights)")
    parser.add_argument("--export", type=output_path, default=None,
                        help="write the checkpoint here (default: OUT/model)")
    parser.add_argument("--no-export", action="store_true", help="train only")
    parser.add_argument("--seed", type=int, default=None,
                        help="replace the config's seed (another draw of the same recipe)")
    parser.add_argument("--epochs", type=int, default=None, help="replace the config's epochs (e.g. 1 for a smoke run)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic GPU kernels, so that a rerun can give the same weights (may be slower)")
    args = parser.parse_args()
    cfg = override(load_config(args.config), seed=args.seed, epochs=args.epochs, deterministic=args.deterministic)
    pack = read_pack(args.pack)
    train(cfg, pack, args.out)
    if not args.no_export:
        from .export import export

        summary = export(args.out, pack, args.export or args.out / "model")
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
