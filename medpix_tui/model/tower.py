"""The image tower for inference, without importing open_clip.

Importing open_clip pulls in torchvision and transformers (about 4 s on a laptop CPU),
which would break the 3 s load budget of ``classify``. This module rebuilds open_clip's
``ModifiedResNet`` (the CLIP ResNet of the paper) with the same module names, so the
``visual.*`` tensors of an open_clip checkpoint load into it unchanged; a test checks
that both give the same output.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class Bottleneck(nn.Module):
    """CLIP's bottleneck: anti-aliased stride (an average pool) instead of strided convs."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: the mean token attends over the feature map."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(spacial_dim ** 2 + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False,
        )
        return x[0]


class ModifiedResNet(nn.Module):
    """open_clip's ``ModifiedResNet`` (three-conv stem, average-pool stride, attention pool)."""

    def __init__(self, layers: list[int], output_dim: int, heads: int, image_size: int, width: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2 ** i
            stage = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


#: (convolution, batch norm) child names in the stem, each bottleneck and each downsample.
_CONV_BN = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("0", "1"))


def fold_batch_norms(tower: nn.Module) -> nn.Module:
    """Fold each eval-mode batch norm into the convolution before it, in place (inference only).

    The same function within float rounding, with a fifth less work on CPU: the batch norms
    were 15% of a forward pass, and every bundle build embeds all images with it.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    own = getattr(tower, "fold_batch_norms", None)
    if own is not None:  # a tower that knows its own (convolution, batch norm) pairs
        return own()
    for module in list(tower.modules()):
        for conv, norm in _CONV_BN:
            c, n = module._modules.get(conv), module._modules.get(norm)
            if isinstance(c, nn.Conv2d) and isinstance(n, nn.BatchNorm2d):
                module._modules[conv] = fuse_conv_bn_eval(c, n)
                module._modules[norm] = nn.Identity()
    return tower


def build_tower(model_cfg: dict) -> nn.Module:
    """The image tower an open_clip ``model_cfg`` describes.

    ``vision_cfg.architecture`` = ``efficientnet_lite0`` or ``_lite1`` selects the pretrained tower of
    :mod:`.efficientnet`, ``ensemble`` two towers side by side (:mod:`.ensemble`);
    otherwise it is open_clip's ModifiedResNet.
    """
    vision = model_cfg["vision_cfg"]
    if vision.get("architecture") == "ensemble":  # two towers side by side (:mod:`.ensemble`)
        from .ensemble import build_ensemble

        return build_ensemble(model_cfg)
    if vision.get("architecture") is not None:
        from .efficientnet import build_efficientnet

        return build_efficientnet(model_cfg)
    layers = vision.get("layers")
    if not isinstance(layers, list) or len(layers) != 4:
        raise ValueError("only open_clip ModifiedResNet image towers (vision_cfg.layers = four ints) are supported")
    width = int(vision.get("width", 64))
    heads = width * 32 // int(vision.get("head_width", 64))
    return ModifiedResNet(layers, int(model_cfg["embed_dim"]), heads, int(vision["image_size"]), width)
