"""From an RGB image to the model's input: the training datasets' resize rule and normalisation.

The official preprocessing (spec §4.2) resized every image offline so that both sides are multiples of
32 within [448, max], with max 4096 for ShanghaiTech, 3072 for NWPU-Crowd and 2048 for UCF-QNRF;
released models are applied to new photos the same way (spec §9).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SNAP = 32
MIN_SIDE = 448
DATASET_MAX_SIDE: dict[str, int | None] = {"sha": 4096, "shb": 4096, "nwpu": 3072, "qnrf": 2048, "jhu": None}
"""Longest side after the official preprocessing of each training set (``None``: not limited;
JHU-Crowd++ is not in the official preprocessing script)."""


@dataclass(frozen=True)
class ResizeRule:
    """Sides snapped to multiples of 32 within [min_side, max_side] (``max_side=None``: unlimited)."""

    min_side: int = MIN_SIDE
    max_side: int | None = None

    @classmethod
    def for_dataset(cls, dataset: str | None) -> ResizeRule:
        """The rule of a training set (``sha``, ``shb``, ``nwpu``, ``qnrf``, ``jhu``); unknown: no maximum."""
        return cls(MIN_SIDE, DATASET_MAX_SIDE.get(dataset or "", None))

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an image of ``width`` x ``height`` is resized to."""
        return snapped_size(width, height, self.min_side, self.max_side)


def snapped_size(width: int, height: int, min_side: int, max_side: int | None) -> tuple[int, int]:
    """The official ``_calc_size`` rule (spec §4.2).

    If the aspect ratio can fit in [min_side, max_side]: scale by 1 (both sides already in range),
    min_side / shorter side (too small) or max_side / longer side (too large); round each side to a
    multiple of 32 (Python's round, half to even) and clamp it to the range independently. Otherwise
    the rule is applied again without a maximum. Images already in range are still snapped.
    """
    hi = math.inf if max_side is None else max_side
    short, long_ = min(width, height), max(width, height)
    if min_side / hi <= short / long_ and long_ / short <= hi / min_side:
        if min_side <= short and long_ <= hi:
            ratio = 1.0
        elif short < min_side:
            ratio = min_side / short
        else:
            ratio = hi / long_
        new_w = int(round(width * ratio / SNAP) * SNAP)
        new_h = int(round(height * ratio / SNAP) * SNAP)
        return int(max(min_side, min(hi, new_w))), int(max(min_side, min(hi, new_h)))
    warnings.warn(
        f"a {width}x{height} image cannot keep its aspect ratio within sides [{min_side}, {max_side}]; "
        "its longer side is left unlimited, as the official preprocessing does.",
        stacklevel=2,
    )
    return snapped_size(width, height, min_side, None)


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
