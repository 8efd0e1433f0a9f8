"""Sliding-window density estimation, as the official evaluation runs ViT models (spec §6.2).

Windows of ``window`` pixels start every ``stride`` pixels; a window that would run past the border
is shifted back to end on it. Each window's density is added into its cells on the image's block
grid and overlapping cells are averaged. Unlike the official code, which stacks every window of an
image into one batch, the windows run in batches of at most ``batch_size``, so memory stays bounded
for any image size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .tiling import run_plans, window_plan, window_starts

__all__ = ["sliding_window_density", "window_starts"]


@torch.no_grad()
def sliding_window_density(
    model: nn.Module,
    x: Tensor,
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    *,
    batch_size: int = 16,
) -> Tensor:
    """Density of ``x`` from overlapping windows, averaged where they overlap.

    model: a :class:`~clip_ebc.CLIPEBC` (put it in eval mode first). x: (B, 3, H, W) normalised images,
    at least one window in each side. window, stride: pixels, an int or (height, width); they default to
    the model's ``input_size`` (224 for the released ViT models). Returns the density (B, 1, H//r, W//r),
    float32, people per block, on ``x``'s device. Runs without gradients.
    """
    r = model.config.reduction
    wh, ww = _pair(window if window is not None else model.config.input_size)
    sh, sw = _pair(stride if stride is not None else (wh, ww))
    batch, _, height, width = x.shape
    if min(wh, ww, sh, sw) <= 0:
        raise ValueError(f"window {(wh, ww)} and stride {(sh, sw)} must be positive.")
    if sh > wh or sw > ww:
        raise ValueError(f"stride {(sh, sw)} must not exceed the window {(wh, ww)}: pixels would be skipped.")
    if wh % r or ww % r:
        raise ValueError(f"the window {(wh, ww)} must be a multiple of the block size {r}.")
    if height < wh or width < ww:
        raise ValueError(
            f"the image ({height}x{width}) is smaller than the window ({wh}x{ww}); pad or resize it first."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    plan = window_plan(height, width, (wh, ww), (sh, sw), r)
    maps = run_plans(model, [x[b : b + 1] for b in range(batch)], [plan] * batch,
                     [(height // r, width // r)] * batch, batch_size=batch_size)
    return torch.cat(maps)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)
