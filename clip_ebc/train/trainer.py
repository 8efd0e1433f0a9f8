"""The training loop: model set-up, DACE loss, Adam with warm-up and cosine restarts, AMP, DDP,
evaluation, release checkpoints and exact resumption (spec §5).

``fit(TrainConfig(...))`` trains in one process, or in several when started by ``torchrun``
(DistributedDataParallel; NCCL and SyncBatchNorm on GPUs, gloo on CPUs). Rank 0 evaluates, writes the
release checkpoints (``save_pretrained`` folders that :class:`~clip_ebc.CrowdCounter` loads unchanged)
and a resume file after every ``save_freq`` epochs; ``resume=True`` continues a killed run from it and
ends with the same weights as an uninterrupted run (augmentation and sampling depend only on the seed,
the epoch and the sample, and every random-number state is saved).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .. import __version__
from ..bins import make_bins, middle_anchor_points, official_anchor_points
from ..config import ClipArchitecture, ModelConfig, canonical_backbone
from ..errors import ConfigError
from ..model import CLIPEBC
from .losses import DACELoss
from .settings import TrainConfig

log = logging.getLogger("clip_ebc.train")
RESUME_NAME = "resume.pt"
LOG_NAME = "log.jsonl"


def lr_factor(epoch: int, *, lr: float, warmup_epochs: int, warmup_lr: float, T_0: int, T_mult: int, eta_min: float) -> float:
    """Learning rate after ``epoch`` finished epochs, as a fraction of ``lr`` (spec §5.5): linear
    warm-up from ``warmup_lr``, then cosine annealing with warm restarts (T_0, T_mult) down to eta_min."""
    if epoch < warmup_epochs:
        value = warmup_lr + (lr - warmup_lr) * epoch / warmup_epochs
    else:
        e = epoch - warmup_epochs
        if T_mult == 1:
            t_cur, t_i = e % T_0, T_0
        else:
            n = int(math.log(e / T_0 * (T_mult - 1) + 1, T_mult))
            t_cur = e - T_0 * (T_mult**n - 1) / (T_mult - 1)
            t_i = T_0 * T_mult**n
        value = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
    return value / lr


@dataclass
class FitResult:
    output_dir: Path
    best: dict[str, list[tuple[float, int]]]
    """For "mae" and "rmse": (score, epoch) of the kept release checkpoints, best first."""
    history: list[dict[str, Any]]
    final_checkpoint: Path | None
    rank_digests: list[str]
    """SHA-256 of each process's weights at the end (all equal in a healthy run)."""


# ------------------------------------------------------------------------------------------- set-up


def _distributed(device_choice: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    from ..runtime import select_device  # checks that the device exists

    use_cuda = device_choice.startswith("cuda") or (device_choice == "auto" and torch.cuda.is_available())
    if world == 1:
        return rank, world, select_device(device_choice if device_choice != "auto" else ("cuda" if use_cuda else "cpu"))
    device = select_device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # the other processes wait while rank 0 evaluates and writes checkpoints: allow for that
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=2))
    return rank, world, device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _anchor_values(config: TrainConfig, bins) -> tuple[list[float], str]:
    kind = config.anchor_points
    if kind == "middle":
        return middle_anchor_points(bins), "middle"
    if kind != "average":
        try:
            return [float(v) for v in kind.split(",")], "given"
        except ValueError as e:
            raise ConfigError(f"anchor_points must be 'average', 'middle' or numbers, got {kind!r}.") from e
    if config.dataset:
        try:
            return official_anchor_points(config.reduction, config.truncation, config.dataset, config.granularity), "official average"  # type: ignore[arg-type]
        except ConfigError as e:
            log.warning("%s Computing the average anchor points from the training set instead.", e)
    from .data import CrowdDataset, anchor_samples
    from .targets import dataset_anchor_points

    train = CrowdDataset(config.data_root, "train", mean=(0, 0, 0), std=(1, 1, 1))
    return dataset_anchor_points(anchor_samples(train), bins, config.reduction), "average of the training set"


def build_model(config: TrainConfig) -> CLIPEBC:
    """The model to train: from open_clip's pretrained CLIP weights, random, or a clip-ebc checkpoint."""
    if config.init not in ("openai", "random"):
        from ..loading import load_model

        model = load_model(config.init)
        if model.config.is_vit and model.config.input_size != config.input_size:
            raise ConfigError(f"{config.init} was trained with {model.config.input_size}-pixel ViT crops; "
                              f"set input_size={model.config.input_size} to fine-tune it.")
        model.config = dataclasses.replace(model.config, provenance={**model.config.provenance, "fine_tuned_from": config.init})
        return model.train()

    bins = make_bins(config.truncation, config.granularity)  # type: ignore[arg-type]
    anchors, anchor_source = _anchor_values(config, bins)
    name = canonical_backbone(config.backbone) or config.backbone
    arch = ClipArchitecture.from_dict(config.clip) if config.clip is not None else ClipArchitecture.for_backbone(name)
    model_config = ModelConfig(
        backbone=name, clip=arch if config.clip is not None else None, reduction=config.reduction, bins=tuple(bins),
        anchor_points=tuple(anchors), prompt_type=config.prompt_type,
        decoder_channels=None if config.decoder_channels is None else tuple(config.decoder_channels),
        input_size=config.input_size, num_vpt=None if arch.is_resnet else config.num_vpt,
        deep_vpt=config.deep_vpt, vpt_drop=config.vpt_drop,
        provenance={"source": f"trained with clip-ebc {__version__}", "dataset": config.dataset or "custom",
                    "truncation": config.truncation, "granularity": config.granularity, "anchor_points": anchor_source,
                    "init": config.init},
    )
    model = CLIPEBC(model_config)
    from ..text import build_text_tower, encode_prompts

    if config.init == "openai":
        if config.clip is not None:
            raise ConfigError("init='openai' loads OpenAI's CLIP weights, which exist only for the named backbones.")
        import open_clip

        from ..backbones import interpolate_pos_embed

        clip = open_clip.create_model(name, pretrained="openai", force_quick_gelu=True)
        visual = {k: v for k, v in clip.visual.state_dict().items() if not k.startswith("attnpool.") and k != "proj"}
        if "positional_embedding" in visual:
            grid = model.image_encoder.grid_size
            old = int(math.isqrt(visual["positional_embedding"].shape[0] - 1))
            visual["positional_embedding"] = interpolate_pos_embed(visual["positional_embedding"], (old, old), grid)
        missing, unexpected = model.image_encoder.load_state_dict(visual, strict=False)
        if unexpected or [k for k in missing if k != "vpt"]:
            raise ConfigError(f"open_clip's {name} weights do not fit: missing {missing}, unexpected {unexpected}.")
        text = {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")}
        embeddings = encode_prompts(model_config.prompts or (), model_config.architecture, text)
        del clip
    else:  # a random text tower still gives each prompt its own direction
        tower = build_text_tower(model_config.architecture)
        embeddings = encode_prompts(model_config.prompts or (), model_config.architecture, tower.state_dict())
    model.set_text_embeddings(embeddings)
    return model.train()


def _state_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_release(model: CLIPEBC, folder: Path, extra: dict[str, Any]) -> None:
    """A release checkpoint (config.json + model.safetensors + card), written next to ``folder`` and
    moved into place, with ``extra`` added to its provenance."""
    original = model.config
    model.config = dataclasses.replace(original, provenance={**original.provenance, **extra})
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
    finally:
        model.config = original
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


class _JsonLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - TensorBoard is optional
                self.tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self.tensorboard is not None and "epoch" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.tensorboard.add_scalar(key, value, record["epoch"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


# -------------------------------------------------------------------------------------------- fit


def fit(config: TrainConfig, *, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> FitResult:
    """Train (or fine-tune) a model as ``config`` says; see the module docstring.

    ``on_epoch_end(epoch, record)`` is called on every process after each epoch's bookkeeping (the
    resume file of that epoch, when due, is already written).
    """
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from .data import CrowdDataset, collate_crops
    from .evaluation import evaluate
    from .transforms import TrainTransform

    rank, world, device = _distributed(config.device)
    main_process = rank == 0
    output = Path(config.output_dir)
    if main_process:
        output.mkdir(parents=True, exist_ok=True)
        _configure_console_logging()
    resume_path = output / RESUME_NAME
    resuming = config.resume and resume_path.is_file()
    if world > 1:  # rank 0 decides; the resume file must be on a file system every process sees
        decision = [resuming]
        dist.broadcast_object_list(decision, src=0)
        resuming = decision[0]
        if resuming and not resume_path.is_file():
            raise ConfigError(f"process {rank} cannot see {resume_path}; resuming needs a shared output_dir.")
    if config.resume and not resuming and main_process:
        log.warning("no resume file at %s; starting from the beginning", resume_path)

    _seed_everything(config.seed + rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as upstream: fixed crop sizes, faster, not bit-reproducible
    if world > 1 and not main_process:
        dist.barrier()  # let rank 0 download the CLIP weights alone
    model = build_model(config).to(device)
    if world > 1 and main_process:
        dist.barrier()
    model_config = model.config
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    if config.amp and device.type == "cpu":
        from ..runtime import native_cpu_bfloat16

        if not native_cpu_bfloat16():
            raise ConfigError("amp on a CPU needs native bfloat16 (AVX512-BF16/AMX or ARM BF16); this CPU has none.")

    train_set = CrowdDataset(config.data_root, "train", mean=model_config.mean, std=model_config.std,
                             transform=TrainTransform(config.augmentation()), num_crops=config.num_crops,
                             block_size=model_config.reduction, seed=config.seed)
    val_set = CrowdDataset(config.data_root, "val", mean=model_config.mean, std=model_config.std) if main_process else None
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    per_process = max(1, config.batch_size // world)
    workers = config.num_workers // int(os.environ.get("LOCAL_WORLD_SIZE", world))  # as upstream
    loader = DataLoader(train_set, batch_size=per_process, sampler=sampler, num_workers=workers,
                        collate_fn=collate_crops, pin_memory=device.type == "cuda")

    loss_fn = DACELoss(model_config.bins, model_config.reduction, count_loss=config.count_loss,
                       weight_count_loss=config.weight_count_loss, input_size=config.input_size).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = dict(lr=config.lr, warmup_epochs=config.warmup_epochs, warmup_lr=config.warmup_lr,
                    T_0=config.T_0, T_mult=config.T_mult, eta_min=config.eta_min)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, **schedule))
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")

    start_epoch, history = 1, []
    best: dict[str, list[tuple[float, int]]] = {"mae": [], "rmse": []}
    if resuming:
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        _check_resumable(config, state.get("config", {}), resume_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] or not scaler.is_enabled():  # a CPU run saved no scaler state: start a fresh one
            scaler.load_state_dict(state["scaler"])
        start_epoch, history = int(state["epoch"]) + 1, list(state["history"])
        best = {k: [tuple(x) for x in v] for k, v in state["best"].items()}
        rng = state["rng"]
        _set_rng_state(rng[rank] if rank < len(rng) else rng[0])
        if main_process:
            log.info("resuming from %s after epoch %d", resume_path, start_epoch - 1)
            _reconcile_after_resume(output, best, start_epoch - 1)

    train_model: nn.Module = model
    if world > 1:
        if device.type == "cuda":
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    journal = _JsonLog(output / LOG_NAME, main_process)
    if main_process and not resuming:
        journal.write({"event": "config", "config": config.to_dict(), "model": model_config.to_dict(),
                       "world_size": world, "device": str(device), "clip_ebc": __version__})

    def validate() -> dict[str, float]:
        return evaluate(model, val_set, sliding_window=config.sliding_window, window=config.window,
                        stride=config.stride, device=device)

    if config.eval_before_training and main_process and not resuming:
        scores = validate()
        record0 = {"epoch": 0, **{k: scores[k] for k in ("mae", "rmse", "nae")}}
        history.append(record0)
        journal.write(record0)
        log.info("before training: MAE %.2f RMSE %.2f", scores["mae"], scores["rmse"])

    for epoch in range(start_epoch, config.total_epochs + 1):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        record = _train_epoch(train_model, loader, loss_fn, optimizer, scaler, device, config.amp, amp_dtype,
                              epoch, config.total_epochs, show=config.progress and main_process)
        record["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if world > 1:
            _average_record(record, world, device)
            for buffer in model.buffers():  # BatchNorm statistics: every process keeps rank 0's
                dist.broadcast(buffer, 0)
        if main_process:
            if epoch >= config.eval_start and (epoch - config.eval_start) % config.eval_freq == 0:
                scores = validate()
                record.update({k: scores[k] for k in ("mae", "rmse", "nae")})
                _keep_best(model, output, best, epoch, scores, config.save_best_k)
                log.info("epoch %d: MAE %.2f RMSE %.2f (best MAE %.2f)", epoch, scores["mae"], scores["rmse"],
                         best["mae"][0][0] if best["mae"] else math.nan)
            history.append(record)
            journal.write(record)
            log.info("epoch %d/%d: %s", epoch, config.total_epochs,
                     ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch",) and isinstance(v, float)))
        if epoch % config.save_freq == 0 or epoch == config.total_epochs:
            rng = [_rng_state()]
            if world > 1:
                gathered: list[Any] = [None] * world
                dist.all_gather_object(gathered, rng[0])
                rng = gathered
            if main_process:
                _save_atomic({"format": 1, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                              "best": best, "history": history, "config": config.to_dict()}, resume_path)
        if world > 1:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    digests = [_state_digest(model)]
    if world > 1:
        gathered_digests: list[Any] = [None] * world
        dist.all_gather_object(gathered_digests, digests[0])
        digests = gathered_digests
    final = None
    if main_process:
        final = output / "final"
        _save_release(model, final, {"epochs": config.total_epochs})
        consistent = len(set(digests)) == 1
        journal.write({"event": "finished", "rank_digests": digests, "ranks_consistent": consistent, "final": str(final)})
        if not consistent:
            log.error("the processes ended with different weights: %s", digests)
        journal.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return FitResult(output, best, history, final, digests)


# Settings that may change when a run is resumed; every other one must match the interrupted run.
_RESUME_MAY_CHANGE = {"output_dir", "resume", "progress", "num_workers", "device", "total_epochs", "eval_start",
                      "eval_freq", "save_freq", "save_best_k", "data_root", "eval_before_training"}


def _check_resumable(config: TrainConfig, saved: dict[str, Any], path: Path) -> None:
    changed = [k for k, v in config.to_dict().items() if k not in _RESUME_MAY_CHANGE and k in saved and saved[k] != v]
    if changed:
        detail = ", ".join(f"{k}={saved[k]!r} (now {getattr(config, k)!r})" for k in changed[:4])
        raise ConfigError(f"{path} was written by a run with other settings: {detail}; resume with the same "
                          "settings, or start a new run in another output_dir.")


def _reconcile_after_resume(output: Path, best: dict[str, list[tuple[float, int]]], epoch: int) -> None:
    """Make the best-checkpoint folders and the log agree with the resume file of ``epoch``: epochs after
    it will be trained (and evaluated) again, so what the interrupted run wrote for them goes."""
    for metric, ranked in best.items():
        by_epoch: dict[int, Path] = {}
        for folder in output.glob(f"best_{metric}_*"):
            try:
                saved_epoch = int(json.loads((folder / "config.json").read_text())["provenance"]["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                saved_epoch = -1
            parked = output / f".{folder.name}.e{saved_epoch}"
            os.replace(folder, parked)
            by_epoch[saved_epoch] = parked
        # an entry whose folder a later evaluation of the interrupted run pushed out cannot be restored
        ranked[:] = [entry for entry in ranked if entry[1] in by_epoch]
        for i, (_, kept) in enumerate(ranked):
            os.replace(by_epoch.pop(kept), output / f"best_{metric}_{i}")
        for leftover in by_epoch.values():
            shutil.rmtree(leftover, ignore_errors=True)
    log_path = output / LOG_NAME
    if log_path.is_file():
        records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept_records = [r for r in records if r.get("epoch") is None or r["epoch"] <= epoch]
        kept_records.append({"event": "resumed", "after_epoch": epoch})
        log_path.write_text("".join(json.dumps(r, default=float) + "\n" for r in kept_records), encoding="utf-8")


def _train_epoch(model, loader, loss_fn, optimizer, scaler, device, amp, amp_dtype, epoch, total, show) -> dict[str, Any]:
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    started = time.perf_counter()
    from tqdm.auto import tqdm

    with tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{total}", file=sys.stderr, disable=not show,
              leave=False, dynamic_ncols=True) as batches:
        for images, points, counts in batches:
            images = images.to(device, non_blocking=True)
            counts = counts.to(device, non_blocking=True)
            points = [p.to(device) for p in points]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                out = model(images)
                loss, info = loss_fn(out.logits, out.density, counts, points)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for key, value in info.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            steps += 1
    record: dict[str, Any] = {"epoch": epoch, "steps": steps, "seconds": time.perf_counter() - started}
    record.update({k: v / max(steps, 1) for k, v in sums.items()})
    return record


def _average_record(record: dict[str, Any], world: int, device: torch.device) -> None:
    keys = sorted(k for k, v in record.items() if k.endswith("loss"))
    # on the training device: NCCL reduces CUDA tensors only
    values = torch.tensor([float(record[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    for key, value in zip(keys, (values / world).tolist()):
        record[key] = value


def _keep_best(model: CLIPEBC, output: Path, best: dict[str, list[tuple[float, int]]], epoch: int,
               scores: dict[str, float], k: int) -> None:
    """Keep the k best release checkpoints per metric as ``best_<metric>_0`` (best) ... ``best_<metric>_<k-1>``.
    A score that is not finite (a diverged model) is never ranked, as in the official trainer."""
    if not all(math.isfinite(scores[m]) for m in ("mae", "rmse")):
        log.warning("epoch %d: the validation scores are not finite (MAE %s, RMSE %s), so this epoch is not ranked "
                    "among the best checkpoints; if this repeats, lower the learning rate or check the data.",
                    epoch, scores["mae"], scores["rmse"])
        return
    for metric in ("mae", "rmse"):
        ranked = best[metric]
        position = sum(1 for score, _ in ranked if score <= scores[metric])
        if position >= k:
            continue
        ranked.insert(position, (scores[metric], epoch))
        del ranked[k:]
        last = output / f"best_{metric}_{k - 1}"
        shutil.rmtree(last, ignore_errors=True)
        for i in range(k - 2, position - 1, -1):
            src = output / f"best_{metric}_{i}"
            if src.exists():
                os.replace(src, output / f"best_{metric}_{i + 1}")
        _save_release(model, output / f"best_{metric}_{position}",
                      {"epoch": epoch, "val_mae": scores["mae"], "val_rmse": scores["rmse"]})


def _configure_console_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
