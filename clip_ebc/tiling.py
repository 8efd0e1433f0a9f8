"""Crop plans for running a model over an image, and stitching their densities back together.

A plan is a list of :class:`Crop`: a pixel box of the (padded) input, the cells of that box's density
map to keep, and where they go in the image's density map. Three plans cover every case:

* :func:`whole_plan`: the image in one piece (ResNet models, moderate sizes);
* :func:`tile_plan`: non-overlapping cores with a context margin around each, whose margin cells are
  discarded (ResNet models on very large images; memory is bounded by the tile size);
* :func:`window_plan`: the official sliding window, overlapping cells averaged (ViT models).

:class:`Stitcher` sums kept cells and divides by how often each cell was covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Crop:
    top: int
    left: int
    height: int
    width: int
    keep: tuple[slice, slice]
    """Cells of the crop's density map that are used."""
    place: tuple[slice, slice]
    """Where those cells go in the image's density map."""


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one side: every ``stride`` pixels, the last one flush with the border."""
    count = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


def whole_plan(height: int, width: int, cells: tuple[int, int]) -> list[Crop]:
    """One crop: the whole (height x width) input, all of its ``cells`` = (h, w) kept."""
    every = (slice(0, cells[0]), slice(0, cells[1]))
    return [Crop(0, 0, height, width, every, every)]


def window_plan(height: int, width: int, window: tuple[int, int], stride: tuple[int, int], block: int) -> list[Crop]:
    """The official sliding window (spec §6.2): windows every ``stride`` pixels, the last row and
    column shifted back to end on the border; every cell of every window is kept."""
    wh, ww = window
    ch, cw = wh // block, ww // block
    crops = []
    for top in window_starts(height, wh, stride[0]):
        for left in window_starts(width, ww, stride[1]):
            crops.append(Crop(top, left, wh, ww, (slice(0, ch), slice(0, cw)),
                              (slice(top // block, top // block + ch), slice(left // block, left // block + cw))))
    return crops


def even_splits(size: int, tile: int, align: int) -> list[int]:
    """Start offsets of the fewest cores of at most ``tile`` pixels that cover ``size``, as equal as
    multiples of ``align`` allow (3008 with tile 1024: cores of 1024, 992, 992); ``size`` and ``tile``
    are multiples of ``align``."""
    units, per = size // align, tile // align
    n = -(-units // per)
    sizes = [units // n + (1 if i < units % n else 0) for i in range(n)]
    return [sum(sizes[:i]) * align for i in range(n)] + [size]


def tile_plan(height: int, width: int, tile: int, margin: int, block: int, align: int = 32) -> list[Crop]:
    """Cores of at most ``tile`` pixels, split as evenly as possible, with up to ``margin`` pixels of
    context on each side (none at the image's borders).

    ``tile``, ``margin``, ``height`` and ``width`` must be multiples of ``align``, the model's alignment
    (32 for ResNets), so that each crop's cells line up with the image's. Only core cells are kept, so each
    cell of the image comes from exactly one crop, computed with ``margin`` pixels of context. Even cores
    keep the number of crop shapes small (oneDNN prepares each shape once) and spread the margins' cost:
    a 4000x3008 image with 1024-pixel tiles and 32-pixel margins is 12 crops of at most 1056x1056 pixels
    covering 1.09 times the image.
    """
    rows, cols = even_splits(height, tile, align), even_splits(width, tile, align)
    crops = []
    for top, bottom in zip(rows, rows[1:]):
        for left, right in zip(cols, cols[1:]):
            t0, l0 = max(0, top - margin), max(0, left - margin)
            b0, r0 = min(height, bottom + margin), min(width, right + margin)
            keep = (slice((top - t0) // block, (bottom - t0) // block), slice((left - l0) // block, (right - l0) // block))
            place = (slice(top // block, bottom // block), slice(left // block, right // block))
            crops.append(Crop(t0, l0, b0 - t0, r0 - l0, keep, place))
    return crops


class Stitcher:
    """Accumulates crop densities into one (1, 1, h, w) map; overlapping cells are averaged."""

    def __init__(self, plan: list[Crop], cells: tuple[int, int], device: torch.device | str = "cpu") -> None:
        self.total = torch.zeros(1, 1, *cells, dtype=torch.float32, device=device)
        self.cover = torch.zeros(1, 1, *cells, dtype=torch.float32, device=device)
        for crop in plan:
            self.cover[..., crop.place[0], crop.place[1]] += 1
        if bool((self.cover == 0).any()):
            raise ValueError("the crop plan leaves cells of the density map uncovered.")

    def add(self, crop: Crop, density: Tensor) -> None:
        """Add the (1, h, w) density of ``crop``."""
        self.total[0, :, crop.place[0], crop.place[1]] += density[:, crop.keep[0], crop.keep[1]].float()

    def result(self) -> Tensor:
        return self.total / self.cover


def run_plans(
    model: torch.nn.Module,
    inputs: list[Tensor],
    plans: list[list[Crop]],
    cells: list[tuple[int, int]],
    *,
    batch_size: int,
    max_batch_pixels: int | None = None,
) -> list[Tensor]:
    """Run ``model`` over every crop of every input and stitch one density map per input.

    inputs: (1, 3, H_i, W_i) tensors. plans, cells: each input's crops and density-map size (h_i, w_i).
    Crops of equal size are batched together across inputs, at most ``batch_size`` at a time and, when
    ``max_batch_pixels`` is given, at most that many pixels per batch (never fewer than one crop), so
    memory is bounded by the budget, not by the image. Returns (1, 1, h_i, w_i) float32 maps on the
    inputs' device.
    """
    stitchers = []
    groups: dict[tuple[int, int], list[tuple[int, Crop]]] = {}
    for i, (x, plan, size) in enumerate(zip(inputs, plans, cells)):
        stitchers.append(Stitcher(plan, size, x.device))
        for crop in plan:
            groups.setdefault((crop.height, crop.width), []).append((i, crop))
    for (height, width), items in groups.items():
        per_batch = batch_size
        if max_batch_pixels is not None:
            per_batch = max(1, min(batch_size, max_batch_pixels // (height * width)))
        for first in range(0, len(items), per_batch):
            chunk = items[first : first + per_batch]
            batch = torch.cat([inputs[i][:, :, c.top : c.top + c.height, c.left : c.left + c.width] for i, c in chunk])
            density = model(batch).density
            for (i, crop), d in zip(chunk, density):
                if d.shape[-2] < crop.keep[0].stop or d.shape[-1] < crop.keep[1].stop:
                    raise ValueError(
                        f"the model maps a {crop.height}x{crop.width} crop to {tuple(d.shape[-2:])} cells, fewer than "
                        f"the {crop.keep[0].stop}x{crop.keep[1].stop} the plan needs; use crop sizes that are "
                        "multiples of the encoder stride."
                    )
                stitchers[i].add(crop, d)
    return [s.result() for s in stitchers]
