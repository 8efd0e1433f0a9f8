"""The training datasets' resize rule (spec §4.2), as plain arithmetic (no tensors).

The official preprocessing resized every image offline so that both sides are multiples of 32 within
[448, max], with max 4096 for ShanghaiTech, 3072 for NWPU-Crowd and 2048 for UCF-QNRF; released models
are applied to new photos the same way (spec §9).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

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
