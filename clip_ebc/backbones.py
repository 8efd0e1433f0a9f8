"""CLIP's image towers, cut down to return feature maps.

* :class:`ResNetEncoder`: CLIP's modified ResNet (three stem convolutions, anti-aliased strided
  bottlenecks) up to ``layer4``, attention pooling removed; ``layer4`` runs at stride 1 when the block
  size is 16 or less (spec §1.3).
* :class:`ViTEncoder`: CLIP's vision transformer returning the patch tokens after ``ln_post`` as a map,
  projection removed, with optional visual prompt tuning (VPT, spec §1.4).

The modules are written here rather than imported from open_clip (whose import costs about two seconds,
through torchvision), with open_clip's parameter names and the same operations in the same order: QuickGELU,
LayerNorm computed in float32, ``nn.MultiheadAttention``. Their state dicts match open_clip's ``visual.*``
(and the official ``image_encoder.*``) key for key, and their outputs match open_clip's bit for bit
(``tests/test_backbones.py``). Nothing is downloaded here.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ClipArchitecture, ModelConfig


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation CLIP's OpenAI weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, returned in the input dtype (as upstream)."""

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        return F.layer_norm(x.to(torch.float32), self.normalized_shape, self.weight, self.bias, self.eps).to(dtype)


def interpolate_pos_embed(pos_embed: Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Resize a ViT positional-embedding table to another token grid.

    pos_embed: (1 + h*w, C), the CLS row first. Returns (1 + H*W, C). The CLS row is kept; the patch
    rows are resized with bicubic interpolation, ``align_corners=False`` and *no* antialiasing, as the
    official implementation does (open_clip's own resize antialiases and gives different numbers).
    """
    h, w = grid
    if tuple(new_grid) == (h, w):
        return pos_embed
    cls_row, patches = pos_embed[:1], pos_embed[1:]
    patches = patches.reshape(h, w, -1).permute(2, 0, 1).unsqueeze(0)
    patches = F.interpolate(patches, size=tuple(new_grid), mode="bicubic", align_corners=False)
    patches = patches.squeeze(0).permute(1, 2, 0).reshape(-1, pos_embed.shape[-1])
    return torch.cat([cls_row, patches], dim=0)


class Bottleneck(nn.Module):
    """CLIP's bottleneck: 1x1, 3x3, (average pool when strided), 1x1 x4 channels, with an average-pooled
    1x1 shortcut when the shape changes."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool: nn.Module = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.act3(out)


class ResNetEncoder(nn.Module):
    """CLIP's modified ResNet returning the ``layer4`` map: (B, 32*width, H/stride, W/stride).

    With stride 16 (block sizes up to 16, see :attr:`ModelConfig.encoder_stride`) ``layer4``'s two
    average pools become identities; the weights are unchanged. Stride 32 is CLIP's own.
    """

    def __init__(self, arch: ClipArchitecture, stride: int) -> None:
        if stride not in (16, 32):
            raise ValueError(f"a CLIP ResNet encoder has stride 16 or 32, not {stride}.")
        super().__init__()
        width = arch.vision_width
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for i, blocks in enumerate(arch.vision_layers):  # type: ignore[union-attr]
            planes = width * 2**i
            layer = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            layer += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for stage in stages:  # CLIP's initialisation: each residual branch starts as zero
            for name, param in stage.named_parameters():
                if name.endswith("bn3.weight"):
                    nn.init.zeros_(param)
        if stride == 16:
            first = self.layer4[0]
            first.avgpool = nn.Identity()
            if first.downsample is not None:
                setattr(first.downsample, "-1", nn.Identity())
        self.stride = stride
        self.out_channels = arch.encoder_channels

    def stem(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class ResidualAttentionBlock(nn.Module):
    """A pre-norm transformer block, sequence-first (L, N, D): attention, then a QuickGELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_1 = LayerNormFp32(width)
        # sequence-first, as upstream: the input projection then sees a contiguous tensor (batch-first makes
        # nn.MultiheadAttention transpose, and in bfloat16 that view's projection is 6x slower)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=False)
        self.ln_2 = LayerNormFp32(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The stack of blocks (``transformer.resblocks.{i}``, open_clip's names)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class ViTEncoder(nn.Module):
    """CLIP's ViT returning patch tokens after ``ln_post`` as a map: (B, width, H/patch, W/patch).

    The positional-embedding table holds ``input_size / patch`` tokens per side; other input sizes
    interpolate it on the fly (:func:`interpolate_pos_embed`). With ``num_vpt > 0``, learned prompt
    tokens are inserted after CLS in every block (deep VPT) or before the first block only
    (shallow VPT); they never get a positional embedding. As upstream, every parameter except the
    prompts is frozen.
    """

    def __init__(
        self,
        arch: ClipArchitecture,
        input_size: int,
        num_vpt: int = 32,
        deep_vpt: bool = True,
        vpt_drop: float = 0.0,
    ) -> None:
        super().__init__()
        patch = int(arch.vision_patch_size)  # type: ignore[arg-type]
        depth = int(arch.vision_layers)  # type: ignore[arg-type]
        width = arch.vision_width
        self.grid_size = (input_size // patch, input_size // patch)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid_size[0] * self.grid_size[1] + 1, width))
        # CLIP's N(0, 1/width); skipped on the meta device (where models are built before loading), whose
        # random-number decompositions import torch._dynamo (0.7 s) for values that do not exist
        if not self.class_embedding.is_meta:
            nn.init.normal_(self.class_embedding, std=width**-0.5)
            nn.init.normal_(self.positional_embedding, std=width**-0.5)
        self.ln_pre = LayerNormFp32(width)
        self.transformer = Transformer(width, depth, arch.vision_heads)
        self.ln_post = LayerNormFp32(width)
        self.stride = patch
        self.out_channels = width
        for p in self.parameters():
            p.requires_grad_(False)
        self.deep_vpt = bool(deep_vpt)
        if num_vpt > 0:
            tables = depth if deep_vpt else 1
            self.vpt = nn.Parameter(torch.empty(tables, num_vpt, width))
            # Upstream's bound uses 3 * patch (not patch**2): sqrt(6 / 816) for ViT-B/16.
            bound = math.sqrt(6.0 / float(3 * patch + width))
            nn.init.uniform_(self.vpt, -bound, bound)
        else:
            self.register_parameter("vpt", None)
        self.vpt_dropout = nn.Dropout(vpt_drop) if vpt_drop > 0 else nn.Identity()

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The positional-embedding table for a token grid (h, w): (1 + h*w, width)."""
        return interpolate_pos_embed(self.positional_embedding, self.grid_size, grid)

    def _prompts(self, block: int, batch: int) -> Tensor:
        """The prompt tokens of ``block``, sequence-first: (num_vpt, batch, width)."""
        return self.vpt_dropout(self.vpt[block].unsqueeze(1).expand(-1, batch, -1))

    def forward_tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Tokens after ``ln_post``: (B, 1 + h*w, width) with CLS first, and the grid (h, w)."""
        x = self.conv1(x)
        batch, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1) + self.position_embedding((h, w)).to(x.dtype)
        x = self.ln_pre(x).transpose(0, 1)  # (L, N, D) from here to ln_post

        blocks = self.transformer.resblocks
        prompts = self._prompts(0, batch) if self.vpt is not None else None
        for i, block in enumerate(blocks):
            n = 0
            if prompts is not None:
                n = prompts.shape[0]
                x = torch.cat([x[:1], prompts.to(x.dtype), x[1:]], dim=0)
            x = block(x)
            if prompts is not None:
                if i + 1 < len(blocks):
                    prompts = self._prompts(i + 1, batch) if self.deep_vpt else x[1 : 1 + n]
                x = torch.cat([x[:1], x[1 + n :]], dim=0)
        return self.ln_post(x.transpose(0, 1)), (h, w)

    def forward(self, x: Tensor) -> Tensor:
        tokens, (h, w) = self.forward_tokens(x)
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def build_image_encoder(config: ModelConfig) -> ResNetEncoder | ViTEncoder:
    """The image encoder described by ``config`` (random weights; load a state dict afterwards)."""
    arch = config.architecture
    if arch.is_resnet:
        return ResNetEncoder(arch, config.encoder_stride)
    return ViTEncoder(
        arch,
        input_size=int(config.input_size),  # type: ignore[arg-type]
        num_vpt=int(config.num_vpt or 0),
        deep_vpt=config.deep_vpt,
        vpt_drop=config.vpt_drop,
    )
