"""Text embeddings of the bin prompts, computed once with open_clip's CLIP text tower.

Used when converting an official checkpoint and when starting a training run; never on the inference
path (a loaded :class:`~clip_ebc.CLIPEBC` carries its embeddings in the ``text_embeddings`` buffer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from open_clip.tokenizer import tokenize
from open_clip.transformer import LayerNormFp32, QuickGELU, TextTransformer
from torch import Tensor

from .config import ClipArchitecture


def build_text_tower(arch: ClipArchitecture) -> TextTransformer:
    """CLIP's text transformer for ``arch`` (QuickGELU, causal mask, EOT pooling), random weights."""
    return TextTransformer(
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        width=arch.transformer_width,
        heads=arch.transformer_heads,
        layers=arch.transformer_layers,
        mlp_ratio=4.0,
        output_dim=arch.embed_dim,
        act_layer=QuickGELU,
        norm_layer=LayerNormFp32,
    )


def tokenize_prompts(prompts: Sequence[str], context_length: int = 77) -> Tensor:
    """CLIP BPE token ids, SOT + tokens + EOT zero-padded: (N, context_length) int64."""
    return tokenize(list(prompts), context_length=context_length)


@torch.no_grad()
def encode_prompts(
    prompts: Sequence[str],
    arch: ClipArchitecture,
    text_state_dict: Mapping[str, Tensor],
) -> Tensor:
    """Embed ``prompts`` with a CLIP text tower: (N, embed_dim) float32, not normalised.

    ``text_state_dict`` uses open_clip's top-level text names (``token_embedding.weight``,
    ``positional_embedding``, ``transformer.resblocks.*``, ``ln_final.*``, ``text_projection``), which
    are the official ``text_encoder.*`` keys without their prefix. It is loaded strictly.
    """
    from .model import check_state_dict

    tower = build_text_tower(arch)
    state = {k: v.float() for k, v in text_state_dict.items()}
    check_state_dict(tower, state, source="the text-encoder weights do not fit the CLIP architecture",
                     advice="Check the CLIP architecture (text width, heads, layers, context length).")
    tower.load_state_dict(state, strict=True)
    tower.eval()
    tokens = tokenize_prompts(prompts, arch.context_length)
    return tower(tokens).float()
