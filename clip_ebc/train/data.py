"""Datasets: readers for the public crowd-counting sets and for your own annotations, the official
preprocessing, and the training/evaluation dataset over the processed layout.

Readers take a dataset's root as distributed and return its splits as :class:`Sample` lists, checking the
layout and saying exactly what is missing or malformed:

========  =========================================================================  ==================
name      layout under SRC                                                           train / val (test)
========  =========================================================================  ==================
``sha``   ``part_A/{train,test}_data/images/IMG_k.jpg``, ``.../ground-truth/GT_IMG_k.mat``  300 / 182
``shb``   the same under ``part_B``                                                  400 / 316
``qnrf``  ``Train|Test/img_XXXX.jpg`` with ``img_XXXX_ann.mat`` (``annPoints``)       1201 / 334
``nwpu``  ``{train,val,test}.txt``, ``images_part{1-5}/<id>.jpg``, ``mats/<id>.mat``  3109 / 500 (1500)
``jhu``   ``{train,val,test}/images/<n>.jpg``, ``gt/<n>.txt``, ``image_labels.txt``  2772 / 1600
``custom``  images with a ``.json`` or ``.csv`` of (x, y) points beside each (or in
            ``annotations/``); ``train/`` and ``val/`` sub-folders, or one folder split by fraction
========  =========================================================================  ==================

:func:`prepare_dataset` writes the official processed layout: ``DST/{train,val}/images/<i>.jpg`` and
``DST/{train,val}/labels/<i>.npy`` (N x 2 float64, x then y, in resized pixels), ``i`` 1-based and
zero-padded to the split size, resized with the rule of spec §4.2 and re-encoded as JPEG (quality 95).
NWPU test images go to ``DST/test/images/<id>.jpg``.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import CLIPEBCError, ConfigError
from ..images import IMAGE_SUFFIXES, load_image
from ..preprocess import resize_uint8
from ..resize import DATASET_MAX_SIDE, MIN_SIDE, SNAP, snapped_size
from .settings import DATASETS
from .targets import block_counts

EXPECTED = {
    "sha": {"train": 300, "val": 182},
    "shb": {"train": 400, "val": 316},
    "qnrf": {"train": 1201, "val": 334},
    "nwpu": {"train": 3109, "val": 500, "test": 1500},
    "jhu": {"train": 2772, "val": 1600},
}


class DatasetError(CLIPEBCError):
    """A dataset folder does not have the expected layout, or an annotation cannot be read."""


@dataclass(frozen=True)
class Sample:
    image: Path
    points: np.ndarray | None
    """(N, 2) float64 (x, y) in the image's pixels; ``None`` for unlabelled test images."""
    name: str
    """A stable identifier (the original file stem or NWPU id)."""


# ------------------------------------------------------------------------------------------- readers


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError as e:  # pragma: no cover - scipy is in the train extra
        raise DatasetError("reading .mat annotations needs scipy: pip install 'clip-ebc[train]'.") from e
    try:
        return loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises several types for bad files
        raise DatasetError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e}).") from e


def _points(array, path: Path) -> np.ndarray:
    points = np.asarray(array, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2))
    if points.ndim != 2 or points.shape[1] < 2:
        raise DatasetError(f"{path}: expected an N x 2 array of (x, y) points, got shape {points.shape}.")
    return points[:, :2].copy()


def _number(path: Path, pattern: str) -> int:
    found = re.findall(pattern, path.stem)
    if not found:
        raise DatasetError(f"{path.name} does not match the dataset's file naming ({pattern}).")
    return int(found[-1])


def _check(name: str, split: str, samples: list, where: Path, strict: bool) -> list:
    expected = EXPECTED.get(name, {}).get(split)
    if strict and expected is not None and len(samples) != expected:
        raise DatasetError(f"{name} {split} split: expected {expected} images, found {len(samples)} under {where}.")
    if not samples:
        raise DatasetError(f"{name} {split} split: found no images under {where}.")
    return samples


def read_shanghaitech(root: Path, part: str, *, strict: bool = True) -> dict[str, list[Sample]]:
    """ShanghaiTech part A or B; ``root`` holds ``part_A`` and ``part_B`` (or is the part folder)."""
    name = "sha" if part.upper() == "A" else "shb"
    base = root / f"part_{part.upper()}" if (root / f"part_{part.upper()}").is_dir() else root
    if not (base / "train_data").is_dir() and not (base / "test_data").is_dir():
        raise DatasetError(f"{name}: no part_{part.upper()}/train_data or test_data under {root}.")
    splits = {}
    for split, folder in (("train", "train_data"), ("val", "test_data")):
        images_dir, gt_dir = base / folder / "images", base / folder / "ground-truth"
        images = sorted(images_dir.glob("IMG_*.jpg"), key=lambda p: _number(p, r"\d+"))
        samples = []
        for image in images:
            mat = gt_dir / f"GT_{image.stem}.mat"
            if not mat.is_file():
                raise DatasetError(f"{name} {split} split: {image.name} has no annotation {mat}.")
            info = _loadmat(mat).get("image_info")
            if info is None:
                raise DatasetError(f"{mat} has no 'image_info' entry; is it a ShanghaiTech annotation?")
            try:  # a 1x1 cell holding a struct with 'location' (N x 2) and 'number' (whose dtype varies)
                location = info[0, 0]["location"][0, 0]
            except (IndexError, KeyError, ValueError, TypeError) as e:
                raise DatasetError(f"{mat}: 'image_info' has no 'location' field ({e}).") from e
            samples.append(Sample(image, _points(location, mat), image.stem))
        splits[split] = _check(name, split, samples, images_dir, strict)
    return splits


def read_qnrf(root: Path, *, strict: bool = True) -> dict[str, list[Sample]]:
    """UCF-QNRF: ``Train`` and ``Test`` folders of ``img_XXXX.jpg`` with ``img_XXXX_ann.mat``."""
    splits = {}
    for split, folder in (("train", "Train"), ("val", "Test")):
        directory = root / folder
        if not directory.is_dir():
            raise DatasetError(f"qnrf {split} split: no {folder} folder under {root}.")
        samples = []
        for image in sorted(directory.glob("img_*.jpg"), key=lambda p: _number(p, r"\d+")):
            mat = directory / f"{image.stem}_ann.mat"
            if not mat.is_file():
                raise DatasetError(f"qnrf {split} split: {image.name} has no annotation {mat.name}.")
            data = _loadmat(mat)
            if "annPoints" not in data:
                raise DatasetError(f"{mat} has no 'annPoints' entry.")
            samples.append(Sample(image, _points(data["annPoints"], mat), image.stem))
        splits[split] = _check("qnrf", split, samples, directory, strict)
    return splits


def read_nwpu(root: Path, *, strict: bool = True) -> dict[str, list[Sample]]:
    """NWPU-Crowd: split files of ids, images spread over ``images_part1..5``, ``mats/<id>.mat``; the
    test split has no annotations. Every split is checked, and all problems are reported together."""
    splits, problems = {}, []
    for split in ("train", "val", "test"):
        listing = root / f"{split}.txt"
        if not listing.is_file():
            problems.append(f"nwpu {split} split: {listing} is missing")
            continue
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        bad = [i for i in ids if not i.isdigit()]
        if bad:
            problems.append(f"nwpu {split} split: {listing} lists {bad[0]!r}, not a numeric image id")
            continue
        samples, missing = [], []
        for id_ in ids:
            image = root / f"images_part{min(5, (int(id_) - 1) // 1000 + 1)}" / f"{id_}.jpg"
            if not image.is_file():
                missing.append(image)
                continue
            points = None
            if split != "test":
                mat = root / "mats" / f"{id_}.mat"
                if not mat.is_file():
                    problems.append(f"nwpu {split} split: image {id_} has no annotation {mat}")
                    continue
                data = _loadmat(mat)
                if "annPoints" not in data:
                    raise DatasetError(f"{mat} has no 'annPoints' entry.")
                points = _points(data["annPoints"], mat)
            samples.append(Sample(image, points, id_))
        expected = EXPECTED["nwpu"][split]
        if strict and (missing or len(samples) != expected):
            example = f" (missing e.g. {missing[0].relative_to(root)})" if missing else ""
            problems.append(f"nwpu {split} split: expected {expected} images, found {len(samples)} under "
                            f"{root}/images_part*{example}")
        elif not samples:
            problems.append(f"nwpu {split} split: found no images under {root}/images_part*")
        splits[split] = samples
    if problems:
        raise DatasetError("; ".join(problems) + ".")
    return splits


def read_jhu(root: Path, *, strict: bool = True) -> dict[str, list[Sample]]:
    """JHU-Crowd++: train and val are merged into ``train``, test becomes ``val`` (as upstream)."""
    def read(split: str) -> list[Sample]:
        base = root / split
        listing = base / "image_labels.txt"
        if not listing.is_file():
            raise DatasetError(f"jhu {split} split: {listing} is missing.")
        samples = []
        for line in listing.read_text().splitlines():
            if not line.strip():
                continue
            name = line.split(",")[0].strip()
            image, gt = base / "images" / f"{name}.jpg", base / "gt" / f"{name}.txt"
            if not image.is_file() or not gt.is_file():
                raise DatasetError(f"jhu {split} split: {image if not image.is_file() else gt} is missing.")
            rows = [r.split() for r in gt.read_text().splitlines() if r.strip()]
            try:
                points = np.array([[float(r[0]), float(r[1])] for r in rows], dtype=np.float64).reshape(-1, 2)
            except (ValueError, IndexError) as e:
                raise DatasetError(f"{gt}: each line must start with x and y ({e}).") from e
            samples.append(Sample(image, points, name))
        return samples

    train = read("train") + read("val")
    return {"train": _check("jhu", "train", train, root / "train", strict),
            "val": _check("jhu", "val", read("test"), root / "test", strict)}


def read_annotation(path: Path) -> np.ndarray:
    """Points from a ``.json`` (``[[x, y], ...]``, ``{"points": [...]}`` or ``[{"x": .., "y": ..}, ...]``)
    or ``.csv`` (x, y per row; a header row is allowed) file: (N, 2) float64."""
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                if "points" not in data and "annotations" not in data:
                    raise DatasetError(f"{path}: a JSON object needs a 'points' list of [x, y] pairs.")
                data = data.get("points", data.get("annotations"))
            if data and isinstance(data[0], dict):
                data = [[p["x"], p["y"]] for p in data]
            return _points(data if data is not None else [], path)
        rows = [r for r in csv.reader(path.read_text(encoding="utf-8").splitlines()) if r]
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]
        return _points([[float(r[0]), float(r[1])] for r in rows], path)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DatasetError(f"{path}: cannot read points ({type(e).__name__}: {e}); expected (x, y) pairs.") from e


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _custom_folder(folder: Path) -> list[Sample]:
    samples = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        candidates = [folder / f"{image.stem}{ext}" for ext in (".json", ".csv")]
        candidates += [folder / "annotations" / f"{image.stem}{ext}" for ext in (".json", ".csv")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise DatasetError(f"custom data: {image.name} has no {image.stem}.json or {image.stem}.csv beside it "
                               "(or in annotations/).")
        samples.append(Sample(image, read_annotation(found[0]), image.stem))
    return samples


def read_custom(root: Path, *, val_fraction: float = 0.1, seed: int = 0) -> dict[str, list[Sample]]:
    """Your own point-annotated images: ``root/train`` and ``root/val``, or one folder whose images are
    split into train and val at random (``val_fraction``, seeded)."""
    if (root / "train").is_dir():
        splits = {"train": _custom_folder(root / "train")}
        splits["val"] = _custom_folder(root / "val") if (root / "val").is_dir() else []
    else:
        everything = _custom_folder(root)
        order = np.random.default_rng(seed).permutation(len(everything))
        n_val = max(1, round(len(everything) * val_fraction)) if len(everything) > 1 else 0
        splits = {"val": [everything[i] for i in sorted(order[:n_val])],
                  "train": [everything[i] for i in sorted(order[n_val:])]}
    if not splits["train"]:
        raise DatasetError(f"custom data: no annotated images found under {root}.")
    if not splits["val"]:
        raise DatasetError(f"custom data: no validation images; add {root}/val or use more images.")
    return splits


def read_dataset(name: str, root: str | Path, *, strict: bool = True, val_fraction: float = 0.1) -> dict[str, list[Sample]]:
    """The splits of dataset ``name`` (``sha``, ``shb``, ``qnrf``, ``nwpu``, ``jhu``, ``custom``) under
    ``root``. ``strict`` checks the published split sizes."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.")
    if name in ("sha", "shb"):
        return read_shanghaitech(root, "A" if name == "sha" else "B", strict=strict)
    if name == "qnrf":
        return read_qnrf(root, strict=strict)
    if name == "nwpu":
        return read_nwpu(root, strict=strict)
    if name == "jhu":
        return read_jhu(root, strict=strict)
    if name == "custom":
        return read_custom(root, val_fraction=val_fraction)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")


# ------------------------------------------------------------------------------------- preprocessing


def prepare_dataset(
    name: str,
    src: str | Path,
    dst: str | Path,
    *,
    min_side: int = MIN_SIDE,
    max_side: int | None = None,
    strict: bool = True,
    val_fraction: float = 0.1,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """Write the official processed layout of dataset ``name`` from ``src`` to ``dst`` (see the module
    docstring); ``max_side`` defaults to the official limit of the dataset. A split folder that already
    holds files is an error unless ``overwrite``, which empties it first (stale files would mix into
    the new split). Returns images per split."""
    for label, side in (("min_side", min_side), ("max_side", max_side)):
        if side is not None and (side < SNAP or side % SNAP):
            raise ConfigError(f"{label} must be a positive multiple of {SNAP} (processed sides are), got {side}.")
    if max_side is not None and max_side < min_side:
        raise ConfigError(f"max_side ({max_side}) must not be smaller than min_side ({min_side}).")
    dst = Path(dst)
    occupied = [dst / split for split in ("train", "val", "test") if (dst / split).is_dir() and any((dst / split).iterdir())]
    if occupied and not overwrite:
        raise DatasetError(f"{occupied[0]} already holds files; choose an empty destination or pass --overwrite.")
    splits = read_dataset(name, src, strict=strict, val_fraction=val_fraction)
    if max_side is None:
        max_side = DATASET_MAX_SIDE.get(name)
    for folder in occupied:
        shutil.rmtree(folder)
    written = {}
    for split, samples in splits.items():
        images_dir = dst / split / "images"
        labels_dir = dst / split / "labels"
        images_dir.mkdir(parents=True, exist_ok=True)
        if split != "test":
            labels_dir.mkdir(parents=True, exist_ok=True)
        digits = len(str(len(samples)))
        for i, sample in enumerate(samples):
            rgb = load_image(sample.image, max_pixels=None)
            height, width = rgb.shape[:2]
            new_w, new_h = snapped_size(width, height, min_side, max_side)
            resized = resize_uint8(rgb, (new_w, new_h))
            stem = sample.name if split == "test" else f"{i + 1:0{digits}d}"
            Image.fromarray(resized).save(images_dir / f"{stem}.jpg", quality=95)
            if sample.points is not None:
                points = sample.points * np.array([[new_w / width, new_h / height]])
                np.save(labels_dir / f"{stem}.npy", points.astype(np.float64))
            if progress is not None:
                progress(split, i + 1, len(samples))
        written[split] = len(samples)
    (dst / "prepare.json").write_text(json.dumps(
        {"dataset": name, "source": str(Path(src).resolve()), "min_side": min_side, "max_side": max_side,
         "images": written}, indent=2) + "\n", encoding="utf-8")
    return written


# ---------------------------------------------------------------------------------------- datasets


class CrowdDataset(Dataset):
    """A split of the processed layout (``root/split/images/*.jpg`` and ``labels/*.npy``).

    Without ``transform`` an item is ``(image (3, H, W) normalised, points (N, 2))``. With a training
    ``transform`` it is ``(images (num_crops, 3, S, S), [points (N_i, 2)] * num_crops, block counts
    (num_crops, 1, S/r, S/r))``; each crop's random numbers come from ``(seed, epoch, index, crop)``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Callable | None = None,
        num_crops: int = 1,
        block_size: int = 8,
        seed: int = 0,
    ) -> None:
        self.root = Path(root) / split
        images_dir, labels_dir = self.root / "images", self.root / "labels"
        if not images_dir.is_dir():
            raise DatasetError(f"{images_dir} does not exist; prepare the data with python -m clip_ebc.train.prepare.")
        key = lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)  # noqa: E731
        self.images = sorted((p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=key)
        self.labels = [labels_dir / f"{p.stem}.npy" for p in self.images]
        missing = [p.name for p in self.labels if not p.is_file()]
        if missing:
            raise DatasetError(f"{labels_dir}: no labels for {len(missing)} image(s), e.g. {missing[0]}.")
        if not self.images:
            raise DatasetError(f"{images_dir} holds no images.")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.transform, self.num_crops, self.block_size, self.seed = transform, num_crops, block_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation random numbers of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def points(self, index: int) -> np.ndarray:
        return np.load(self.labels[index]).reshape(-1, 2)

    def __getitem__(self, index: int):
        image = torch.from_numpy(load_image(self.images[index], max_pixels=None)).permute(2, 0, 1).float() / 255
        points = torch.from_numpy(self.points(index)).float()
        if self.transform is None:
            return (image - self.mean) / self.std, points
        crops, crop_points, counts = [], [], []
        for crop in range(self.num_crops):
            seed = np.random.SeedSequence([self.seed, self.epoch, index, crop]).generate_state(1, np.uint64)[0]
            g = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
            img, pts = self.transform(image, points, g)
            crops.append((img - self.mean) / self.std)
            crop_points.append(pts)
            counts.append(block_counts(pts, img.shape[-2], img.shape[-1], self.block_size)[None])
        return torch.stack(crops), crop_points, torch.stack(counts)


def collate_crops(batch) -> tuple[Tensor, list[Tensor], Tensor]:
    """Concatenate the crops of a batch: images (B * num_crops, 3, S, S), the flat list of point tensors,
    and block counts (B * num_crops, 1, S/r, S/r)."""
    images = torch.cat([item[0] for item in batch])
    points = [p for item in batch for p in item[1]]
    counts = torch.cat([item[2] for item in batch])
    return images, points, counts


def anchor_samples(dataset: CrowdDataset):
    """(points, (height, width)) of every image of a processed split, for computing average anchors."""
    for index, path in enumerate(dataset.images):
        with Image.open(path) as img:
            width, height = img.size
        yield dataset.points(index), (height, width)

