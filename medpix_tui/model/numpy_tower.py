"""The image tower in numpy, batch norms folded: classify without importing torch.

Importing torch takes 1.1 to 2.7 s on 2 cores, more than the 2 s a first answer may take;
numpy is already loaded for the pictures. The tower is small (0.2 GFLOP an image), so its
forward pass as a dozen matrix products (convolutions as shifted-window matmuls, channels
last) costs a few tens of milliseconds. ``bundle build`` and training keep torch
(:mod:`.encoder`), which is faster on thousands of images; a test checks both agree.

Architectures with a numpy forward are in :data:`FORWARDS`; :func:`supports` tells callers
when to fall back to torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import lite_spec
from .checkpoint import WEIGHTS_FILE, load_arrays

Weights = dict[str, np.ndarray]


def _fold(w: Weights, conv: str, norm: str, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """A convolution with its eval-mode batch norm folded in: weights (k, k, in, out), bias (out,)."""
    weight = w[f"{conv}.weight"].astype(np.float32)
    scale = w[f"{norm}.weight"] / np.sqrt(w[f"{norm}.running_var"] + eps)
    bias = w[f"{norm}.bias"] - w[f"{norm}.running_mean"] * scale
    if f"{conv}.bias" in w:
        bias = bias + w[f"{conv}.bias"] * scale
    folded = weight * scale[:, None, None, None]
    return np.ascontiguousarray(folded.transpose(2, 3, 1, 0)), bias.astype(np.float32)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """A dense convolution of NHWC ``x`` with (k, k, in, out) ``weight``, as one matrix product."""
    k = weight.shape[0]
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    if k == 1:
        cols = x[:, ::stride, ::stride, :] if stride > 1 else x
    else:
        cols = np.concatenate([x[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
                               for i in range(k) for j in range(k)], axis=-1)
    out = cols.reshape(-1, k * k * c) @ weight.reshape(k * k * c, -1)
    out += bias
    return out.reshape(n, ho, wo, -1)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


def avgpool(x: np.ndarray, size: int) -> np.ndarray:
    n, h, w, c = x.shape
    return x[:, :h - h % size, :w - w % size].reshape(n, h // size, size, w // size, size, c).mean(axis=(2, 4))


class ModifiedResNetNumpy:
    """open_clip's ModifiedResNet (:class:`.tower.ModifiedResNet`) as folded numpy weights."""

    def __init__(self, w: Weights, model_cfg: dict[str, Any]) -> None:
        vision = model_cfg["vision_cfg"]
        self.layers = [int(n) for n in vision["layers"]]
        width = int(vision.get("width", 64))
        self.heads = width * 32 // int(vision.get("head_width", 64))
        stem1, self.b1 = _fold(w, "conv1", "bn1")
        self.w1 = np.ascontiguousarray(stem1.sum(axis=2, keepdims=True))  # three equal gray channels: one
        self.w2, self.b2 = _fold(w, "conv2", "bn2")
        self.w3, self.b3 = _fold(w, "conv3", "bn3")
        self.blocks: list[list[dict[str, Any]]] = []
        for i, n in enumerate(self.layers):
            stage = []
            for j in range(n):
                p = f"layer{i + 1}.{j}"
                block: dict[str, Any] = {name: _fold(w, f"{p}.conv{name[-1]}", f"{p}.bn{name[-1]}")
                                         for name in ("c1", "c2", "c3")}
                block["stride"] = 2 if (i > 0 and j == 0) else 1
                if f"{p}.downsample.0.weight" in w:
                    block["down"] = _fold(w, f"{p}.downsample.0", f"{p}.downsample.1")
                stage.append(block)
            self.blocks.append(stage)
        a = "attnpool"
        self.pos = w[f"{a}.positional_embedding"].astype(np.float32)
        self.proj = {name: (w[f"{a}.{name}_proj.weight"].T.astype(np.float32),
                            w[f"{a}.{name}_proj.bias"].astype(np.float32)) for name in ("q", "k", "v", "c")}
        self.output_dim = int(self.proj["c"][0].shape[1])

    def _block(self, x: np.ndarray, b: dict[str, Any]) -> np.ndarray:
        (w1, b1), (w2, b2) = b["c1"], b["c2"]
        out = relu(conv2d(x, w1, b1))
        out = relu(conv2d(out, w2, b2, padding=1))
        if b["stride"] > 1:
            out = avgpool(out, b["stride"])
        out = conv2d(out, *b["c3"])
        identity = x
        if "down" in b:
            identity = conv2d(avgpool(x, b["stride"]) if b["stride"] > 1 else x, *b["down"])
        return relu(out + identity)

    def _attnpool(self, x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        tokens = x.reshape(n, h * w, c)
        tokens = np.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1) + self.pos[None]
        wq, bq = self.proj["q"]
        wk, bk = self.proj["k"]
        wv, bv = self.proj["v"]
        d = c // self.heads
        q = ((tokens[:, 0] @ wq + bq) / np.sqrt(d)).reshape(n, self.heads, 1, d)  # only the mean token's output is kept
        k = (tokens @ wk + bk).reshape(n, -1, self.heads, d).transpose(0, 2, 3, 1)
        v = (tokens @ wv + bv).reshape(n, -1, self.heads, d).transpose(0, 2, 1, 3)
        scores = q @ k  # (n, heads, 1, tokens)
        scores -= scores.max(axis=-1, keepdims=True)
        attn = np.exp(scores)
        attn /= attn.sum(axis=-1, keepdims=True)
        out = (attn @ v).reshape(n, c)
        wc, bc = self.proj["c"]
        return out @ wc + bc

    def embed_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, dim) and stage features (N, sum of stage widths), neither normalised.

        The stage features are each stage's output averaged over the picture: what the
        out-of-distribution score compares with the training images' (:mod:`.calibration`).
        """
        x = x[..., None].astype(np.float32)
        x = relu(conv2d(x, self.w1, self.b1, stride=2, padding=1))
        x = relu(conv2d(x, self.w2, self.b2, padding=1))
        x = avgpool(relu(conv2d(x, self.w3, self.b3, padding=1)), 2)
        pooled = []
        for stage in self.blocks:
            for block in stage:
                x = self._block(x, block)
            pooled.append(x.mean(axis=(1, 2)))
        return self._attnpool(x), np.concatenate(pooled, axis=1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embeddings (N, dim), not normalised, of normalised gray pictures (N, size, size)."""
        return self.embed_with_features(x)[0]


def _fold_depthwise(w: Weights, conv: str, norm: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise convolution (C, 1, k, k) with its batch norm folded in: weights (k, k, C), bias (C,)."""
    weight = w[f"{conv}.weight"].astype(np.float32)
    scale = w[f"{norm}.weight"] / np.sqrt(w[f"{norm}.running_var"] + eps)
    bias = w[f"{norm}.bias"] - w[f"{norm}.running_mean"] * scale
    return np.ascontiguousarray((weight[:, 0] * scale[:, None, None]).transpose(1, 2, 0)), bias.astype(np.float32)


def _same_pad(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """TensorFlow's "SAME" padding: symmetric on stride 1, the extra row and column last on stride 2."""
    if stride == 1:
        p = k // 2
        return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x
    h, w = x.shape[1:3]
    ph = max((-(-h // stride) - 1) * stride + k - h, 0)
    pw = max((-(-w // stride) - 1) * stride + k - w, 0)
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def depthwise(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """A depthwise k x k convolution of NHWC ``x`` (already padded) as k * k shifted products."""
    k = weight.shape[0]
    n, h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, ho, wo, c), np.float32)
    for i in range(k):
        for j in range(k):
            out += x[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :] * weight[i, j]
    out += bias
    return out


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6, out=x)


class EfficientNetLiteNumpy:
    """:class:`.efficientnet.EfficientNetLite` as folded numpy weights (same module names)."""

    def __init__(self, w: Weights, model_cfg: dict[str, Any]) -> None:
        eps = lite_spec.BN_EPS
        stem, self.stem_b = _fold(w, "_conv_stem", "_bn0", eps)
        self.stem_w = np.ascontiguousarray(stem.sum(axis=2, keepdims=True))  # three equal gray channels: one
        self.stages: list[list[dict[str, Any]]] = []
        index = 0
        for specs in lite_spec.stages(_architecture(model_cfg)):
            stage = []
            for kernel, stride, expand, inp, out in specs:
                p = f"_blocks.{index}"
                block: dict[str, Any] = {"stride": stride, "kernel": kernel, "skip": stride == 1 and inp == out}
                if expand != 1:
                    block["expand"] = _fold(w, f"{p}._expand_conv", f"{p}._bn0", eps)
                block["depthwise"] = _fold_depthwise(w, f"{p}._depthwise_conv", f"{p}._bn1", eps)
                block["project"] = _fold(w, f"{p}._project_conv", f"{p}._bn2", eps)
                stage.append(block)
                index += 1
            self.stages.append(stage)
        self.head = _fold(w, "_conv_head", "_bn1", eps)
        self.proj = w["proj.weight"].T.astype(np.float32)
        self.output_dim = int(self.proj.shape[1])

    def _block(self, x: np.ndarray, b: dict[str, Any]) -> np.ndarray:
        y = relu6(conv2d(x, *b["expand"])) if "expand" in b else x
        weight, bias = b["depthwise"]
        y = relu6(depthwise(_same_pad(y, b["kernel"], b["stride"]), weight, bias, b["stride"]))
        y = conv2d(y, *b["project"])
        return x + y if b["skip"] else y

    def embed_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, dim) and stage features (each stage's output averaged), neither normalised."""
        x = relu6(conv2d(_same_pad(x[..., None].astype(np.float32), 3, 2), self.stem_w, self.stem_b, stride=2))
        pooled = []
        for stage in self.stages:
            for block in stage:
                x = self._block(x, block)
            pooled.append(x.mean(axis=(1, 2)))
        x = relu6(conv2d(x, *self.head))
        return x.mean(axis=(1, 2)) @ self.proj, np.concatenate(pooled, axis=1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.embed_with_features(x)[0]


def _architecture(model_cfg: dict[str, Any]) -> str:
    return str(model_cfg.get("vision_cfg", {}).get("architecture") or "modified_resnet")


#: Architecture name (``vision_cfg.architecture``, absent for open_clip's ResNet) -> numpy tower.
FORWARDS: dict[str, Callable[[Weights, dict[str, Any]], Callable[[np.ndarray], np.ndarray]]] = {
    "modified_resnet": ModifiedResNetNumpy,
    **{name: EfficientNetLiteNumpy for name in lite_spec.REPEATS},
}


def supports(model_cfg: dict[str, Any]) -> bool:
    """Whether the checkpoint's image tower has a numpy forward here."""
    return _architecture(model_cfg) in FORWARDS


def load_numpy_tower(model_dir: Path, model_cfg: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The image tower of a checkpoint in numpy (weights read with safetensors' numpy API)."""
    weights = {k.removeprefix("visual."): v for k, v in load_arrays(Path(model_dir) / WEIGHTS_FILE, "visual.").items()}
    return FORWARDS[_architecture(model_cfg)](weights, model_cfg)
