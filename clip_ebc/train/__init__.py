"""Training and fine-tuning CLIP-EBC (needs ``pip install 'clip-ebc[train]'`` for the .mat readers).

    from clip_ebc.train import TrainConfig, fit, evaluate

    result = fit(TrainConfig(data_root="data/sha", dataset="sha", backbone="RN50"))

From the command line: ``python -m clip_ebc.train.prepare`` (datasets), ``python -m clip_ebc.train``
(training, with presets that reproduce the official runs) and ``python -m clip_ebc.train.evaluate``.
Nothing on the inference path imports this package. Names are imported on first use, so the commands'
``--help`` does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CrowdDataset": ".data",
    "Sample": ".data",
    "prepare_dataset": ".data",
    "read_dataset": ".data",
    "evaluate": ".evaluation",
    "metrics": ".evaluation",
    "write_nwpu_submission": ".evaluation",
    "DACELoss": ".losses",
    "DMCountLoss": ".losses",
    "sinkhorn": ".losses",
    "PRESETS": ".presets",
    "block_counts": ".targets",
    "dataset_anchor_points": ".targets",
    "window_count_histogram": ".targets",
    "FitResult": ".trainer",
    "build_model": ".trainer",
    "fit": ".trainer",
    "lr_factor": ".trainer",
    "TrainConfig": ".settings",
    "Augmentation": ".settings",
    "TrainTransform": ".transforms",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .data import CrowdDataset, Sample, prepare_dataset, read_dataset  # noqa: F401
    from .evaluation import evaluate, metrics, write_nwpu_submission  # noqa: F401
    from .losses import DACELoss, DMCountLoss, sinkhorn  # noqa: F401
    from .presets import PRESETS  # noqa: F401
    from .settings import Augmentation, TrainConfig  # noqa: F401
    from .targets import block_counts, dataset_anchor_points, window_count_histogram  # noqa: F401
    from .trainer import FitResult, build_model, fit, lr_factor  # noqa: F401
    from .transforms import TrainTransform  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clip_ebc.train' has no attribute {name!r}")
