"""Training targets: annotated points -> block counts -> bin labels, and anchor points for a dataset.

Spec §5.2: at crop resolution every point marks the pixel (floor(y), floor(x)), clamped to the image;
the marks are an assignment, so two points in the same pixel count once (the official quirk, kept).
Block counts are the marks summed over non-overlapping r x r blocks; the bin of a block is the one whose
range holds its count, counts of t or more going to the open last bin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..bins import Bin, middle_anchor_points


def block_counts(points: Tensor, height: int, width: int, block: int) -> Tensor:
    """People per block: (height/block, width/block) float32 from (N, 2) points (x, y) in pixels.

    Points in the same pixel count once, as in the official dot map; points outside the image are
    clamped onto its border.
    """
    if height % block or width % block:
        raise ValueError(f"a {height}x{width} crop is not a whole number of {block}-pixel blocks.")
    counts = torch.zeros(height // block * (width // block), dtype=torch.float32, device=points.device)
    if len(points):
        x = points[:, 0].long().clamp(0, width - 1)
        y = points[:, 1].long().clamp(0, height - 1)
        pixels = torch.unique(y * width + x)
        y, x = pixels // width, pixels % width
        counts.index_add_(0, (y // block) * (width // block) + x // block, torch.ones_like(y, dtype=torch.float32))
    return counts.view(height // block, width // block)


def window_count_histogram(points: np.ndarray, height: int, width: int, block: int) -> np.ndarray:
    """How many ``block`` x ``block`` windows, at every offset (stride 1, inside the image), hold 0, 1,
    2, ... people: ``hist[c]`` is the number of windows with count c (spec §3.3)."""
    marks = np.zeros((height + 1, width + 1), dtype=np.int64)
    if len(points):
        x = np.clip(np.floor(points[:, 0]).astype(np.int64), 0, width - 1)
        y = np.clip(np.floor(points[:, 1]).astype(np.int64), 0, height - 1)
        marks[1:, 1:][y, x] = 1
    integral = marks.cumsum(0).cumsum(1)
    windows = (integral[block:, block:] - integral[:-block, block:] - integral[block:, :-block]
               + integral[:-block, :-block])
    return np.bincount(windows.ravel())


def average_anchor_points(histogram: np.ndarray, bins: Sequence[Bin]) -> list[float]:
    """The "average" anchors: for each bin, the mean count of the windows whose count it holds.

    ``histogram[c]`` counts windows holding c people (see :func:`window_count_histogram`). A bin that no
    window falls into keeps its middle anchor.
    """
    counts = np.arange(len(histogram), dtype=np.float64)
    out = []
    for (lo, hi), middle in zip(bins, middle_anchor_points(bins)):
        top = len(histogram) if np.isinf(hi) else int(hi) + 1
        freq = histogram[int(lo):top].astype(np.float64)
        out.append(float((freq * counts[int(lo):top]).sum() / freq.sum()) if freq.sum() > 0 else float(middle))
    return out


def dataset_anchor_points(samples: Iterable[tuple[np.ndarray, tuple[int, int]]], bins: Sequence[Bin], block: int) -> list[float]:
    """Average anchors of a training set from its (points (N, 2) x/y, (height, width)) pairs, computed
    the way the official numbers were: stride-1 windows over every training image's dot map."""
    total = np.zeros(1, dtype=np.int64)
    for points, (height, width) in samples:
        hist = window_count_histogram(np.asarray(points, dtype=np.float64).reshape(-1, 2), height, width, block)
        if len(hist) > len(total):
            total = np.pad(total, (0, len(hist) - len(total)))
        total[: len(hist)] += hist
    return average_anchor_points(total, bins)
