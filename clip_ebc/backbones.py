"""Image encoders built from open_clip's CLIP visual towers, cut down to return feature maps.

* :class:`ResNetEncoder`: open_clip's ``ModifiedResNet`` up to ``layer4``, attention pooling
  removed; ``layer4`` runs at stride 1 when the block size is 16 or less (spec §1.3).
* :class:`ViTEncoder`: open_clip's ``VisionTransformer`` returning the patch tokens after
  ``ln_post`` as a map, projection removed, with optional visual prompt tuning (VPT, spec §1.4).

Both use QuickGELU (as the OpenAI weights do) and keep open_clip's parameter names, so their state
dicts match open_clip's ``visual.*`` (and the official ``image_encoder.*``) key for key.
Nothing is downloaded here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import LayerNormFp32, QuickGELU, VisionTransformer
from torch import Tensor, nn

from .config import ClipArchitecture, ModelConfig


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


class ResNetEncoder(ModifiedResNet):
    """CLIP's modified ResNet returning the ``layer4`` map: (B, 32*width, H/stride, W/stride).

    With stride 16 (block sizes up to 16, see :attr:`ModelConfig.encoder_stride`) ``layer4``'s two
    average pools become identities; the weights are unchanged. Stride 32 is CLIP's own.
    """

    def __init__(self, arch: ClipArchitecture, stride: int) -> None:
        if stride not in (16, 32):
            raise ValueError(f"a CLIP ResNet encoder has stride 16 or 32, not {stride}.")
        super().__init__(
            layers=list(arch.vision_layers),  # type: ignore[arg-type]
            output_dim=arch.embed_dim,
            heads=arch.vision_heads,
            image_size=arch.image_resolution,
            width=arch.vision_width,
        )
        self.attnpool = None  # the pooling head (with CLIP's image projection) is not used
        if stride == 16:
            first = self.layer4[0]
            first.avgpool = nn.Identity()
            if first.downsample is not None:
                setattr(first.downsample, "-1", nn.Identity())
        self.stride = stride
        self.out_channels = arch.encoder_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class ViTEncoder(VisionTransformer):
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
        patch = int(arch.vision_patch_size)  # type: ignore[arg-type]
        depth = int(arch.vision_layers)  # type: ignore[arg-type]
        super().__init__(
            image_size=input_size,
            patch_size=patch,
            width=arch.vision_width,
            layers=depth,
            heads=arch.vision_heads,
            mlp_ratio=4.0,
            output_dim=arch.embed_dim,
            act_layer=QuickGELU,
            norm_layer=LayerNormFp32,  # LayerNorm in float32 whatever the input dtype, as upstream
        )
        self.proj = None  # CLIP's image projection is not used
        # Run the blocks sequence-first (L, N, D), as upstream does: the attention's input projection then
        # sees a contiguous tensor. Batch-first makes nn.MultiheadAttention transpose internally, and in
        # bfloat16 the projection of that transposed view copies the weight once per token (6x slower).
        self.transformer.batch_first = False
        for block in self.transformer.resblocks:
            block.attn.batch_first = False
        self.stride = patch
        self.out_channels = arch.vision_width
        for p in self.parameters():
            p.requires_grad_(False)
        self.deep_vpt = bool(deep_vpt)
        if num_vpt > 0:
            tables = depth if deep_vpt else 1
            self.vpt = nn.Parameter(torch.empty(tables, num_vpt, arch.vision_width))
            # Upstream's bound uses 3 * patch (not patch**2): sqrt(6 / 816) for ViT-B/16.
            bound = math.sqrt(6.0 / float(3 * patch + arch.vision_width))
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
