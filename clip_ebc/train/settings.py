"""Training settings: :class:`TrainConfig` and :class:`Augmentation`, plain dataclasses that import
no tensors, so ``python -m clip_ebc.train --help`` builds its options without loading torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..bins import dataset_name
from ..errors import ConfigError

COUNT_LOSSES = ("dmcount", "mae", "mse")
DATASETS = ("sha", "shb", "qnrf", "nwpu", "jhu", "custom")
"""The datasets ``python -m clip_ebc.train.prepare`` reads (``custom``: your own annotated images)."""

BLUR_MODES = ("official", "isotropic")


@dataclass(frozen=True)
class Augmentation:
    """Augmentation settings; the defaults are the official trainer's."""

    input_size: int = 448
    """Side of the square training crop, in pixels."""
    min_scale: float = 1.0
    max_scale: float = 2.0
    """The crop covers ``input_size * U(min_scale, max_scale)`` pixels before it is resized to ``input_size``."""
    flip_prob: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.0
    jitter_prob: float = 0.2
    blur_kernel: int = 5
    blur: str = "official"
    """``"official"``: torchvision reads upstream's sigma pair (0.1, 5.0) as (sigma_x, sigma_y), giving a
    fixed, almost purely vertical blur (spec §10 item 20). ``"isotropic"``: one sigma ~ U(0.1, 5.0) for
    both axes, as upstream intended."""
    blur_prob: float = 0.2
    saltiness: float = 1e-3
    spiciness: float = 1e-3
    noise_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.blur not in BLUR_MODES:
            raise ConfigError(f"blur must be one of {BLUR_MODES}, got {self.blur!r}.")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}.")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything a training run needs. The defaults are the official trainer's, except where noted."""

    data_root: str = field(default="", metadata=_help("processed dataset root (python -m clip_ebc.train.prepare)"))
    dataset: str | None = field(default=None, metadata=_help("sha, shb, qnrf, nwpu or jhu: selects the official anchor points; leave empty for your own data"))
    output_dir: str = field(default="runs/clip-ebc", metadata=_help("folder for checkpoints, the resume file and logs"))

    backbone: str = field(default="RN50", metadata=_help("RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B-32, ViT-B-16, ViT-L-14"))
    init: str = field(default="openai", metadata=_help("'openai' (CLIP weights through open_clip, downloaded on first use), 'random', or a clip-ebc model to fine-tune (registry name, folder, hf-hub: id)"))
    input_size: int = field(default=448, metadata=_help("training crop side in pixels (ViT: also its positional-embedding grid)"))
    reduction: int = field(default=8, metadata=_help("block size in pixels: 8, 16 or 32"))
    truncation: int = field(default=4, metadata=_help("largest block count with a bin of its own"))
    granularity: str = field(default="fine", metadata=_help("fine, dynamic or coarse bins"))
    anchor_points: str = field(default="average", metadata=_help("'average' (official constants, or computed from the training set when there are none), 'middle', or comma-separated values"))
    prompt_type: str = field(default="word", metadata=_help("word or number prompts"))
    num_vpt: int = field(default=32, metadata=_help("ViT visual prompt tokens per block"))
    deep_vpt: bool = field(default=True, metadata=_help("deep (every block) or shallow (first block only) VPT"))
    vpt_drop: float = field(default=0.0, metadata=_help("dropout on the visual prompts"))
    clip: dict | None = field(default=None, metadata=_help("custom CLIP architecture (official config fields; init must be 'random')"))
    decoder_channels: list | None = field(default=None, metadata=_help("decoder widths (default: the backbone's)"))

    num_crops: int = field(default=1, metadata=_help("crops per image per step"))
    # augmentation (clip_ebc.train.Augmentation, whose defaults are the official trainer's)
    min_scale: float = field(default=Augmentation.min_scale, metadata=_help("smallest crop, as a multiple of input_size"))
    max_scale: float = field(default=Augmentation.max_scale, metadata=_help("largest crop, as a multiple of input_size"))
    brightness: float = field(default=Augmentation.brightness, metadata=_help("colour jitter: brightness factor drawn from [1 - b, 1 + b]"))
    contrast: float = field(default=Augmentation.contrast, metadata=_help("colour jitter: contrast factor drawn from [1 - c, 1 + c]"))
    saturation: float = field(default=Augmentation.saturation, metadata=_help("colour jitter: saturation factor drawn from [1 - s, 1 + s]"))
    hue: float = field(default=Augmentation.hue, metadata=_help("colour jitter: hue shift drawn from [-h, h] (fraction of a turn)"))
    jitter_prob: float = field(default=Augmentation.jitter_prob, metadata=_help("probability of colour jitter per crop"))
    blur: str = field(default=Augmentation.blur, metadata=_help("'official' (fixed vertical blur, upstream's quirk) or 'isotropic'"))
    blur_kernel: int = field(default=Augmentation.blur_kernel, metadata=_help("Gaussian blur kernel side in pixels (odd)"))
    blur_prob: float = field(default=Augmentation.blur_prob, metadata=_help("probability of blurring a crop"))
    saltiness: float = field(default=Augmentation.saltiness, metadata=_help("salt noise: fraction of pixels set to white"))
    spiciness: float = field(default=Augmentation.spiciness, metadata=_help("pepper noise: fraction of pixels set to black"))
    noise_prob: float = field(default=Augmentation.noise_prob, metadata=_help("probability of salt-and-pepper noise per crop"))

    count_loss: str = field(default="dmcount", metadata=_help("dmcount, mae or mse (upstream's trainer defaults to mae, but every documented run uses dmcount)"))
    weight_count_loss: float = field(default=1.0, metadata=_help("weight of the count loss against the classification loss in DACE"))

    batch_size: int = field(default=8, metadata=_help("images per step over all processes"))
    lr: float = field(default=1e-4, metadata=_help("peak learning rate (Adam), reached at the end of the warm-up"))
    weight_decay: float = field(default=1e-4, metadata=_help("Adam's coupled L2 weight decay"))
    warmup_epochs: int = field(default=50, metadata=_help("epochs of linear warm-up from warmup_lr to lr"))
    warmup_lr: float = field(default=1e-6, metadata=_help("learning rate at the start of the warm-up"))
    T_0: int = field(default=5, metadata=_help("epochs in the first cosine cycle after the warm-up"))
    T_mult: int = field(default=2, metadata=_help("each cosine cycle is this many times longer than the one before"))
    eta_min: float = field(default=1e-7, metadata=_help("lowest learning rate of the cosine cycles"))
    total_epochs: int = field(default=2600, metadata=_help("epochs to train (including the warm-up)"))
    amp: bool = field(default=False, metadata=_help("mixed precision: float16 with gradient scaling on GPUs, bfloat16 on CPUs that support it"))

    eval_start: int = field(default=50, metadata=_help("first epoch after which the model is evaluated"))
    eval_freq: int = field(default=1, metadata=_help("evaluate every this many epochs (from eval_start)"))
    eval_before_training: bool = field(default=False, metadata=_help("also evaluate the initial model (epoch 0): a baseline for fine-tuning"))
    sliding_window: bool | None = field(default=None, metadata=_help("evaluate with sliding windows (default: ViT models)"))
    window: int | None = field(default=None, metadata=_help("evaluation window (default: input_size)"))
    stride: int | None = field(default=None, metadata=_help("evaluation stride (default: the window)"))
    save_freq: int = field(default=5, metadata=_help("write the resume file every this many epochs"))
    save_best_k: int = field(default=3, metadata=_help("how many best-MAE and best-RMSE checkpoints to keep"))

    device: str = field(default="auto", metadata=_help("auto, cpu, cuda; under torchrun each process uses cuda:LOCAL_RANK"))
    num_workers: int = field(default=4, metadata=_help("data-loading processes per machine, shared by its training processes"))
    seed: int = field(default=42, metadata=_help("random seed of the model initialisation, sampling and augmentation"))
    resume: bool = field(default=False, metadata=_help("continue from output_dir/resume.pt"))
    progress: bool = field(default=True, metadata=_help("show a progress bar per epoch"))

    def __post_init__(self) -> None:
        if self.count_loss not in COUNT_LOSSES:
            raise ConfigError(f"count_loss must be one of {COUNT_LOSSES}, got {self.count_loss!r}.")
        if self.input_size % self.reduction:
            raise ConfigError(f"input_size {self.input_size} must be a multiple of the block size {self.reduction}.")
        for name in ("batch_size", "total_epochs", "num_crops", "eval_freq", "save_freq", "T_0", "T_mult"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.dataset:
            self.dataset = dataset_name(self.dataset)
        self.augmentation()  # checks the augmentation settings now, not after the model is built

    def augmentation(self) -> Augmentation:
        """The augmentation of ``input_size`` training crops that these settings describe."""
        names = {f.name for f in dataclasses.fields(Augmentation)} & {f.name for f in dataclasses.fields(self)}
        return Augmentation(**{name: getattr(self, name) for name in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
