"""The decoder: residual conv blocks between the image encoder and the 1x1 projection.

ResNet backbones use a bottleneck block with expansion 1, ViT backbones a basic block (spec §1.6).
State-dict keys follow torchvision's naming (``conv1``, ``bn1``, ..., ``downsample.0/1``), as the
official checkpoints do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DecoderEntry


def _shortcut(in_channels: int, out_channels: int) -> nn.Module:
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs (BN, ReLU; no expansion) plus a shortcut; ResNet decoders."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class BasicBlock(nn.Module):
    """3x3 -> 3x3 convs (BN, ReLU) plus a shortcut; ViT decoders."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Upsample2x(nn.Module):
    """Parameter-free x2 bilinear upsampling (the ``"U"`` entry of a decoder config)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def build_decoder(
    in_channels: int, channels: Sequence[DecoderEntry], *, bottleneck: bool
) -> tuple[nn.Sequential, int]:
    """The decoder for ``channels`` and its output channel count.

    ``bottleneck=True`` builds :class:`Bottleneck` blocks (ResNet backbones), otherwise
    :class:`BasicBlock` (ViT backbones).
    """
    block = Bottleneck if bottleneck else BasicBlock
    layers: list[nn.Module] = []
    for entry in channels:
        if entry == "U":
            layers.append(Upsample2x())
        else:
            layers.append(block(in_channels, int(entry)))
            in_channels = int(entry)
    return nn.Sequential(*layers), in_channels


@torch.no_grad()
def init_conv_bn(module: nn.Module) -> None:
    """The official initialisation of the decoder and projection: Kaiming-normal convs (fan_out,
    ReLU gain) with zero bias, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue  # no values to set (and the meta device's normal_ imports torch._dynamo, 0.7 s)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
