"""From an RGB image to the model's input tensor: resizing (with the kernel of the official
preprocessing) and ImageNet normalisation. The sizes come from :mod:`clip_ebc.resize`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_input_tensor(
    rgb: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    size: tuple[int, int] | None = None,
    pad_to: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float32 (1, 3, h, w).

    size: (w, h) to resize to; the resize is bicubic without antialiasing on 0-255 values, rounded back
    to integers, the same kernel as the official preprocessing's OpenCV ``INTER_CUBIC``.
    pad_to: (height, width) of the result; the image sits top-left and the rest is 0 (the mean colour).
    The normalisation runs in place, so a large image costs about one float copy of itself.
    """
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).unsqueeze(0).float()
    if size is not None:
        x = _bicubic(x, size)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = x.div_(255.0).sub_(m).div_(s)
    h, w = x.shape[-2:]
    if pad_to is not None and tuple(pad_to) != (h, w):
        padded = x.new_zeros(1, 3, *pad_to)
        padded[..., :h, :w] = x
        x = padded
    return x


def _bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) 0-255 float -> resized to (w, h) = ``size``, rounded to whole levels and clamped."""
    if (size[1], size[0]) == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=(size[1], size[0]), mode="bicubic", align_corners=False).round_().clamp_(0, 255)


def resize_uint8(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 (H, W, 3) image to ``size`` = (w, h) with the same kernel as :func:`to_input_tensor`."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).float()
    return _bicubic(x, size)[0].permute(1, 2, 0).to(torch.uint8).numpy()
