"""Import open_clip where PyPI's torchvision does not match the installed torch.

PyPI's torchvision wheel is built against CUDA torch; beside the CPU build of torch its
import fails with ``operator torchvision::nms does not exist``. open_clip imports
torchvision only for transforms and a frozen batch-norm, never for detection ops, so
declaring the two missing operator schemas lets the import succeed. Where torchvision
imports cleanly (the GPU device) nothing is changed.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_shim_library: torch.library.Library | None = None


def _import_torchvision() -> None:
    global _shim_library
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _shim_library = torch.library.Library("torchvision", "DEF")
        _shim_library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _shim_library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401


def open_clip() -> ModuleType:
    """The open_clip module, importable on this machine."""
    if "open_clip" not in sys.modules:
        _import_torchvision()
    import open_clip as module

    return module
