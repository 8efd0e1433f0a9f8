"""Evaluation over a split: MAE, RMSE and NAE, whole images or sliding windows (spec §6), and the
NWPU-Crowd test-server submission file. The command line is ``python -m clip_ebc.train.evaluate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..sliding_window import sliding_window_density
from .data import DatasetError


def count_image(model: nn.Module, image: torch.Tensor, *, sliding_window: bool, window: int | None = None,
                stride: int | None = None) -> float:
    """The count of one normalised image (3, H, W): the whole image through the model, or sliding
    windows averaged over overlaps (spec §6.2)."""
    x = image.unsqueeze(0)
    with torch.no_grad():
        if sliding_window:
            side = window or model.config.input_size
            if min(x.shape[-2:]) < side:
                raise DatasetError(
                    f"an image of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than the {side}-pixel window; evaluate "
                    "whole images (--whole-image) or prepare the data with a larger --min-side."
                )
            density = sliding_window_density(model, x, window, stride)
        else:
            density = model(x).density
    return float(density.double().sum())


def metrics(predictions: Iterable[float], truths: Iterable[float]) -> dict[str, float]:
    """MAE and RMSE over all images, NAE over images with at least one person (numpy float64)."""
    pred = np.asarray(list(predictions), dtype=np.float64)
    gt = np.asarray(list(truths), dtype=np.float64)
    error = pred - gt
    nonzero = gt > 0
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "nae": float((np.abs(error[nonzero]) / gt[nonzero]).mean()) if nonzero.any() else math.nan,
        "images": int(len(gt)),
    }


def evaluate(
    model: nn.Module,
    dataset,
    *,
    sliding_window: bool | None = None,
    window: int | None = None,
    stride: int | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """MAE, RMSE, NAE and the image count of ``model`` on a dataset of (normalised image, points) items
    (a :class:`~clip_ebc.train.data.CrowdDataset` without transform). ``sliding_window`` defaults to
    the official choice: windows of ``input_size`` for ViT models, whole images for ResNets. The model
    is evaluated in eval mode and put back in its previous mode."""
    if sliding_window is None:
        sliding_window = model.config.is_vit
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions, truths = [], []
    try:
        for index in range(len(dataset)):
            image, points = dataset[index]
            predictions.append(count_image(model, image.to(device), sliding_window=sliding_window,
                                           window=window, stride=stride))
            truths.append(len(points))
            if progress is not None:
                progress(index + 1, len(dataset))
    finally:
        model.train(was_training)
    return metrics(predictions, truths)


def write_nwpu_submission(counts: Mapping[int | str, float], path: str | Path) -> Path:
    """The NWPU-Crowd benchmark's result file: one ``"<id> <count>"`` line per test image in ascending
    id order, with no trailing newline."""
    path = Path(path)
    bad = [k for k in counts if not str(k).isdigit()]
    if bad:
        raise DatasetError(f"NWPU test images are named by their numeric id; {bad[0]!r} is not one.")
    lines = [f"{int(k)} {float(v)}" for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
