"""all-MiniLM-L6-v2 in numpy: text search and case similarity without torch or transformers.

Importing torch, transformers and open_clip took 5 to 12 s on 2 shared cores, for a
query of a few words that the six-layer, 384-wide BERT encodes in milliseconds. This is
the same network (``BertModel``: word, position and token-type embeddings, LayerNorm,
six post-norm encoder layers of 12-head attention and a GELU feed-forward) read from the
package's ``model.safetensors`` with safetensors' numpy API and tokenised by the
``tokenizers`` package (Rust, no torch) from the checkpoint's ``tokenizer.json``, cleaned
as open_clip's ``HFTokenizer`` cleans (ftfy when installed, HTML entities, whitespace).
Its mean-pooled output is what :class:`~.text.TextTower.pooled` gives; a test checks both
agree on the paper's prompts, queries and case texts.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, brief

LAYERS = 6
HEADS = 12
EPS = 1e-12
#: Texts per forward pass: padding to the longest of a batch wastes little at this size.
BATCH = 32


def clean(text: str) -> str:
    """open_clip's ``whitespace`` cleaning: ftfy's fixes (when installed), HTML entities, runs of spaces."""
    try:
        import ftfy
    except ImportError:  # only mis-decoded text (mojibake) differs without it
        pass
    else:
        text = ftfy.fix_text(text)
    return " ".join(html.unescape(html.unescape(text)).strip().split())


def erf(x: np.ndarray) -> np.ndarray:
    """The error function to 4e-7 in float32 (Abramowitz and Stegun 7.1.26: 1.5e-7, plus rounding).

    |x| is capped at 6 (erf is 1 there to 2e-17): exp(-x^2) of larger ones gives denormal
    numbers, which the CPU computes dozens of times slower.
    """
    a = np.minimum(np.abs(x), np.float32(6.0))
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x).astype(x.dtype, copy=False)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU as BERT and torch's ``nn.GELU()`` define it (with erf, not the tanh approximation)."""
    return 0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(EPS)) * weight + bias


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(("embeddings.", "encoder."))}
    except FileNotFoundError:
        raise BundleError(f"the text tower's weights are missing: {path}") from None
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"the text tower's weights are unreadable: {path} ({brief(exc)})") from None


def _padded(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    longest = max((len(i) for i in ids), default=1)
    batch = np.zeros((len(ids), longest), np.int64)
    mask = np.zeros((len(ids), longest), np.float32)
    for row, tokens in enumerate(ids):
        batch[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1.0
    return batch, mask


class NumpyMiniLM:
    """Tokenizer and encoder of all-MiniLM-L6-v2; :meth:`pooled` is its mean-pooled output."""

    def __init__(self, weights: Path, tokenizer_file: Path, context_length: int = 128) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises its own Exception type
            raise BundleError(f"the text tokenizer is unreadable: {tokenizer_file} ({brief(exc)})") from None
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=context_length)
        w = _read_weights(weights)
        try:
            self.words = w["embeddings.word_embeddings.weight"]
            self.positions = w["embeddings.position_embeddings.weight"]
            self.token_type = w["embeddings.token_type_embeddings.weight"][0]
            self.norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
            self.layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(LAYERS)]
        except KeyError as exc:
            raise BundleError(f"the text tower's weights lack {exc.args[0]}: {weights}") from None
        self.hidden = int(self.words.shape[1])

    @staticmethod
    def _layer(w: dict[str, np.ndarray], p: str) -> dict[str, Any]:
        attention = p + "attention.self."
        qkv = np.concatenate([w[f"{attention}{n}.weight"] for n in ("query", "key", "value")]).T
        return {"qkv": np.ascontiguousarray(qkv),
                "qkv_b": np.concatenate([w[f"{attention}{n}.bias"] for n in ("query", "key", "value")]),
                "out": np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                "out_b": w[p + "attention.output.dense.bias"],
                "norm1": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                "up": np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                "up_b": w[p + "intermediate.dense.bias"],
                "down": np.ascontiguousarray(w[p + "output.dense.weight"].T),
                "down_b": w[p + "output.dense.bias"],
                "norm2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])}

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask (N, longest): open_clip's tokens less the all-pad columns."""
        return _padded([e.ids for e in self.tokenizer.encode_batch([clean(t) for t in texts])])

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, length = ids.shape
        x = self.words[ids] + self.positions[:length] + self.token_type
        x = layer_norm(x, *self.norm)
        head = self.hidden // HEADS
        blocked = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]  # padded keys get no weight
        scale = np.float32(1.0 / np.sqrt(head))
        for layer in self.layers:
            qkv = (x @ layer["qkv"] + layer["qkv_b"]).reshape(n, length, 3, HEADS, head).transpose(2, 0, 3, 1, 4)
            scores = (qkv[0] @ qkv[1].transpose(0, 1, 3, 2)) * scale + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(n, length, self.hidden)
            x = layer_norm(context @ layer["out"] + layer["out_b"] + x, *layer["norm1"])
            up = gelu(x @ layer["up"] + layer["up_b"])
            x = layer_norm(up @ layer["down"] + layer["down_b"] + x, *layer["norm2"])
        return x

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """Mean of the last hidden states over each text's tokens (N, 384), float32.

        Texts are batched by token count, so a batch pads little; rows come back in order.
        """
        ids = [e.ids for e in self.tokenizer.encode_batch([clean(t) for t in texts])]
        out = np.zeros((len(ids), self.hidden), np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            batch, mask = _padded([ids[i] for i in rows])
            hidden = self._forward(batch, mask)
            out[rows] = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return out
