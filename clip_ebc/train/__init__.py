"""Training and fine-tuning CLIP-EBC (needs ``pip install 'clip-ebc[train]'`` for the .mat readers).

    from clip_ebc.train import TrainConfig, fit, evaluate

    result = fit(TrainConfig(data_root="data/sha", dataset="sha", backbone="RN50"))

From the command line: ``python -m clip_ebc.train.prepare`` (datasets), ``python -m clip_ebc.train``
(training, with presets that reproduce the official runs) and ``python -m clip_ebc.train.evaluate``.
Nothing on the inference path imports this package.
"""

from .data import CrowdDataset, Sample, prepare_dataset, read_dataset
from .evaluation import evaluate, metrics, write_nwpu_submission
from .losses import DACELoss, DMCountLoss, sinkhorn
from .presets import PRESETS
from .targets import block_counts, dataset_anchor_points, window_count_histogram
from .trainer import FitResult, TrainConfig, build_model, fit, lr_factor
from .transforms import Augmentation, TrainTransform

__all__ = [
    "Augmentation", "CrowdDataset", "DACELoss", "DMCountLoss", "FitResult", "PRESETS", "Sample", "TrainConfig",
    "TrainTransform", "block_counts", "build_model", "dataset_anchor_points", "evaluate", "fit", "lr_factor", "metrics",
    "prepare_dataset", "read_dataset", "sinkhorn", "window_count_histogram", "write_nwpu_submission",
]
