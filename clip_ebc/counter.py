"""``CrowdCounter``: count people in images with a CLIP-EBC model, and ``CountResult``.

Each image is read (EXIF orientation applied), resized with its model's training-set rule (sides
snapped to multiples of 32 within [448, max]) unless ``resize="native"``, normalised, and run:

* ViT models: 224-pixel windows with stride 224, overlapping cells averaged (the official evaluation);
* ResNet models: the whole image, as the official code runs it, up to ``(tile_size + 2 * tile_margin)**2``
  pixels (3.2 MP by default); larger images as ``tile_size``-pixel tiles with ``tile_margin`` pixels of
  context each, so peak memory depends on the tile size and not on the image size.

Crops of equal size from consecutive images are batched together. Videos, streams and cameras
(:meth:`CrowdCounter.count_video`) go through the same path, one sampled frame at a time; zones
(:mod:`clip_ebc.zones`) split each count by area.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CLIPEBCError, ConfigError, ImageError, NumericalError
from .images import DEFAULT_MAX_PIXELS, ImageInput, describe, load_image
from .loading import load
from .model import CLIPEBC
from .preprocess import to_input_tensor
from .resize import ResizeRule
from .runtime import prepare_for_inference, resolve_precision, select_device
from .tiling import Crop, run_plans, tile_plan, whole_plan, window_plan
from .zones import Zone, ZonesInput, as_zones, check_zones, count_zones, coverage

if TYPE_CHECKING:
    from .video import VideoReader



RESNET_ALIGN = 32
"""ResNet inputs are padded to multiples of this, so tiles line up with the stride-32 grid."""

DEFAULT_TILE_SIZE = 1728
"""ResNet tiles, pixels a side. With 32-pixel margins, images up to 1792² = 3.2 MP (1536x2048 included)
run whole, exactly as the official code runs them, and no forward pass sees more: a full-size RN50
peaked at 2.85 GiB (float32) in a fresh process at 1536x2048, and a 12 MP photo is 6 crops covering
1.05 times its pixels at 2.46 GiB (benchmarks/RESULTS.md)."""
CHUNK_PIXELS = 16_000_000
"""Images are prepared (decoded, resized, normalised) in groups of at most this many decoded pixels,
or ``batch_size`` images, whichever is reached first (an image larger than this is a group of its own)."""




@dataclass
class CountResult:
    """The count and density map of one image."""

    count: float
    """Estimated number of people (the sum of ``density``); NaN when ``error`` is set."""
    density: np.ndarray
    """(h, w) float32, expected people per ``block_size`` x ``block_size`` block of the processed image."""
    block_size: int
    """Pixels per density cell side in the processed image."""
    image_size: tuple[int, int]
    """(height, width) of the input image in pixels, after EXIF orientation."""
    model_name: str
    processed_size: tuple[int, int] = (0, 0)
    """(height, width) the model saw, after the resize rule."""
    source: str | None = None
    """The input's path, or a description of an in-memory image."""
    seconds: float = 0.0
    """Wall time for this image; work batched across images is shared out evenly."""
    error: str | None = None
    """Why the image could not be counted (only with ``count_many(..., skip_errors=True)``)."""
    zone_counts: dict[str, float] | None = None
    """People in each zone, by name in zone order, when counted with ``zones=``."""
    time: float | None = None
    """Video frames: seconds from the start of the video (from the frame's presentation timestamp)."""
    frame_index: int | None = None
    """Video frames: index of the frame among all decoded frames (0-based)."""
    wallclock: datetime | None = None
    """Frames of live sources: when the frame arrived (local time, with time zone)."""
    zones: tuple[Zone, ...] = field(default=(), repr=False, compare=False)
    """The zones of ``zone_counts`` (their outlines are drawn on heatmaps)."""
    _image: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def grid_extent(self) -> tuple[float, float]:
        """(height, width) in input-image pixels that the density grid spans: the image itself, or a
        little more when the last cells reach past its edge (native size not a multiple of the block)."""
        (height, width), (ph, pw) = self.image_size, self.processed_size
        ch, cw = self.density.shape
        return (ch * self.block_size * height / ph, cw * self.block_size * width / pw) if ph and pw else (height, width)

    def density_at_image_size(self) -> np.ndarray:
        """The density resampled to the input image: (H, W) float32, people per pixel, same sum."""
        height, width = self.image_size
        if not self.ok or self.density.size == 0:
            return np.zeros((height, width), dtype=np.float32)
        gh, gw = self.grid_extent()
        d = torch.from_numpy(self.density).float()[None, None]
        up = F.interpolate(d, size=(max(height, round(gh)), max(width, round(gw))), mode="bilinear",
                           align_corners=False)[0, 0, :height, :width]
        total = float(up.sum())
        scale = self.count / total if total > 0 else 0.0
        return (up * scale).numpy().astype(np.float32)

    def count_in(self, zone: Zone | Sequence[Sequence[float]]) -> float:
        """People inside a polygon: a :class:`~clip_ebc.zones.Zone`, or (x, y) vertices in pixels of the
        input image. Each density cell counts with the fraction of its area inside the polygon."""
        if not self.ok:
            raise ImageError(f"{self.source}: the image was not counted ({self.error}).")
        if not isinstance(zone, Zone):
            zone = Zone("polygon", tuple((float(x), float(y)) for x, y in zone))
        check_zones([zone], self.image_size)
        weights = coverage(zone, self.image_size, self.processed_size, self.density.shape, self.block_size)
        return float((self.density.astype(np.float64) * weights).sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: path, frame and time (video frames), wall-clock time (live sources), count,
        zone counts and people per m2 (with zones), model, image size, seconds (and error)."""
        d: dict[str, Any] = {"path": self.source}
        if self.frame_index is not None:
            d["frame"] = self.frame_index
            d["time"] = None if self.time is None else round(self.time, 6)
        if self.wallclock is not None:
            d["wallclock"] = self.wallclock.isoformat(timespec="milliseconds")
        d["count"] = self.count if self.ok else None
        if self.zone_counts is not None:
            d["zones"] = dict(self.zone_counts)
            areas = {z.name: z.area_m2 for z in self.zones if z.area_m2 is not None}
            if areas:
                d["per_m2"] = {name: self.zone_counts[name] / area for name, area in areas.items()}
        d.update({
            "model": self.model_name,
            "width": self.image_size[1] if self.ok else None,
            "height": self.image_size[0] if self.ok else None,
            "seconds": round(self.seconds, 4),
        })
        if self.error is not None:
            d["error"] = self.error
        return d

    def render_heatmap(self, image: ImageInput | None = None, *, opacity: float = 0.5, cmap: str = "magma",
                       side_by_side: bool = False) -> np.ndarray:
        """The density drawn over the image (zones outlined and labelled): RGB uint8 (H, W, 3), or (H, 2W, 3)
        with ``side_by_side``. ``image`` defaults to the counted image."""
        from .heatmap import render_heatmap

        return render_heatmap(self._heatmap_base(image), self.density, **self._heatmap_kwargs(opacity, cmap, side_by_side))

    def save_heatmap(
        self,
        path: str | os.PathLike[str],
        image: ImageInput | None = None,
        *,
        opacity: float = 0.5,
        cmap: str = "magma",
        side_by_side: bool = False,
    ) -> Path:
        """Draw the density over the image and save it (PNG or JPEG by suffix), at the image's pixel size
        (twice its width with ``side_by_side``). ``image`` defaults to the counted image."""
        from .heatmap import save_heatmap

        return save_heatmap(path, self._heatmap_base(image), self.density,
                            **self._heatmap_kwargs(opacity, cmap, side_by_side))

    def _heatmap_kwargs(self, opacity: float, cmap: str, side_by_side: bool) -> dict[str, Any]:
        return dict(count=self.count, block_size=self.block_size, extent=self.grid_extent(), opacity=opacity,
                    cmap=cmap, side_by_side=side_by_side, zones=self.zones or None, zone_counts=self.zone_counts)

    def _heatmap_base(self, image: ImageInput | None) -> np.ndarray:
        """The counted image as RGB, checked to be the right size."""
        if not self.ok:
            raise ImageError(f"{self.source}: cannot draw a heatmap for an image that was not counted ({self.error}).")
        if image is None:
            image = self._image if self._image is not None else self.source
        if image is None:
            raise ImageError("pass the image to draw on: save_heatmap(path, image=...).")
        rgb = load_image(image, max_pixels=None)
        if rgb.shape[:2] != tuple(self.image_size):
            raise ImageError(
                f"the image is {rgb.shape[0]}x{rgb.shape[1]} but the count was made on a "
                f"{self.image_size[0]}x{self.image_size[1]} image; pass the same image."
            )
        return rgb


@dataclass
class _Job:
    name: str
    rgb_shape: tuple[int, int]
    x: torch.Tensor
    plan: list[Crop]
    cells: tuple[int, int]
    valid: tuple[int, int]
    processed_size: tuple[int, int]
    keep_image: Any = None


class CrowdCounter:
    """Count people in images with a CLIP-EBC model.

    model: a registry name (``crowdcount --list-models``; default: the registry's default), a folder with
    ``config.json`` + ``model.safetensors``, ``"hf-hub:ORG/NAME[@REV]"``, or a :class:`~clip_ebc.CLIPEBC`.
    device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    resize: ``"dataset"`` (the training set's rule: sides multiples of 32 in [448, max]; default),
    ``"native"`` (keep the size; padded to a multiple of 32), or a ``(min_side, max_side)`` pair.
    batch_size: crops per forward pass. tile_size, tile_margin: ResNet inputs with more pixels than
    ``(tile_size + 2 * tile_margin)**2`` (3.2 MP by default) are processed as tiles of at most
    ``tile_size`` pixels a side with ``tile_margin`` pixels of context (pixels; multiples of 32); smaller
    ones run whole, with the official numerics. One forward pass sees at most that many pixels.
    window, stride: ViT sliding window (default: the model's input size, 224, for both).
    precision: ``"auto"`` (bfloat16 on CPUs with native bfloat16, float16 on GPUs, float32 otherwise),
    ``"float32"`` (exact), ``"bfloat16"`` (CPUs with native bfloat16, GPUs) or ``"float16"`` (GPUs); lower
    precision holds the network's weights in that dtype (or runs it under autocast with ``optimize=False``)
    while the bin probabilities, expectation and count stay float32.
    optimize: fold BatchNorm into the convolutions, use the channels-last layout on GPUs and for lower
    precisions on CPUs (but NCHW for the convolutions oneDNN runs faster that way, RN50's decoder), and
    run ViT blocks through oneDNN on CPUs (exact in float32; ``False`` runs the model as loaded).
    compile: run the model through ``torch.compile`` (off by default: the first batch compiles for
    tens of seconds, which only pays over many images of the same size).
    cache_dir, offline, progress: see :func:`clip_ebc.loading.resolve_model`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | CLIPEBC | None = None,
        device: str | torch.device = "auto",
        *,
        resize: Literal["dataset", "native"] | tuple[int, int | None] = "dataset",
        batch_size: int = 8,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_margin: int = 32,
        window: int | None = None,
        stride: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        precision: str | torch.dtype = "auto",
        optimize: bool = True,
        compile: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        progress: bool = True,
    ) -> None:
        self.device = select_device(device)
        self.dtype = resolve_precision(precision, self.device)
        if isinstance(model, CLIPEBC):
            # the fast path changes the model (folds BatchNorm), so the caller's model is left alone
            self.model = copy.deepcopy(model) if optimize else model
            self.name = str(model.config.provenance.get("model_name", "custom"))
            dataset = model.config.provenance.get("dataset")
        else:
            loaded = load(model, cache_dir=cache_dir, offline=offline, progress=progress)
            self.model, self.name, dataset = loaded.model, loaded.name, loaded.dataset
        if optimize:  # the weights are then held in the compute dtype: no autocast needed
            self.model = prepare_for_inference(self.model, self.device, self.dtype, onednn=not compile)
        else:
            self.model = self.model.to(self.device).eval()
        self._autocast = self.dtype != torch.float32 and not optimize
        self.config = self.model.config
        if compile:
            # torch.compile pays for itself over many same-sized crops (ViT windows): measured on a 2-core
            # CPU, ViT-B/16 windows run 5-15% faster after a first call of 17-23 s (benchmarks/RESULTS.md).
            self.model = torch.compile(self.model)
        self.block_size = self.config.reduction

        if resize == "dataset":
            self.resize: ResizeRule | None = ResizeRule.for_dataset(dataset)
        elif resize == "native":
            self.resize = None
        elif isinstance(resize, (tuple, list)) and len(resize) == 2:
            lo, hi = int(resize[0]), None if resize[1] is None else int(resize[1])
            if lo < RESNET_ALIGN or lo % RESNET_ALIGN or (hi is not None and (hi < lo or hi % RESNET_ALIGN)):
                raise ConfigError(
                    f"resize=(min_side, max_side) needs multiples of {RESNET_ALIGN} with {RESNET_ALIGN} <= min_side "
                    f"<= max_side (max_side may be None), got {tuple(resize)}."
                )
            self.resize = ResizeRule(lo, hi)
        else:
            raise ConfigError(f"resize must be 'dataset', 'native' or (min_side, max_side), got {resize!r}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        if tile_size % RESNET_ALIGN or tile_margin % RESNET_ALIGN or tile_size <= 0 or tile_margin < 0:
            raise ConfigError(f"tile_size and tile_margin must be multiples of {RESNET_ALIGN}, got {tile_size} and {tile_margin}.")
        self.batch_size = batch_size
        self.tile_size, self.tile_margin = tile_size, tile_margin
        self._tile_pixels = (tile_size + 2 * tile_margin) ** 2
        self.window = int(self.config.input_size if window is None else window)  # type: ignore[arg-type]
        self.stride = int(self.window if stride is None else stride)
        if self.config.is_vit:
            # a window must map onto whole density cells: a multiple of both the patch and the block size
            unit = math.lcm(int(self.config.architecture.vision_patch_size), self.block_size)  # type: ignore[arg-type]
            if self.window < unit or self.window % unit:
                raise ConfigError(f"window must be a positive multiple of {unit} (patch and block size), got {self.window}.")
            if not 0 < self.stride <= self.window or self.stride % self.block_size:
                raise ConfigError(
                    f"stride must be a multiple of the block size {self.block_size} between {self.block_size} and the "
                    f"window ({self.window}), got {self.stride}."
                )
        self.max_pixels = max_pixels

    def _batch_pixels(self, batch_size: int) -> int:
        """Most input pixels one forward pass may see: one tile (ResNets) or ``batch_size`` windows (ViTs)."""
        return batch_size * self.window**2 if self.config.is_vit else self._tile_pixels

    def __repr__(self) -> str:
        return (f"CrowdCounter(model={self.name!r}, device={str(self.device)!r}, backbone={self.config.backbone!r}, "
                f"precision={str(self.dtype).replace('torch.', '')!r})")

    # ------------------------------------------------------------------------------------ public

    def count(self, image: ImageInput, *, zones: ZonesInput = None) -> CountResult:
        """Count the people in one image (a path, an http(s) URL, a PIL image, an (H, W, 3) uint8 array or a
        (3, H, W) tensor); with ``zones``, also in each zone (``result.zone_counts``)."""
        return next(self.count_many([image], batch_size=self.batch_size, zones=zones))

    def count_many(
        self,
        images: Iterable[ImageInput],
        batch_size: int | None = None,
        *,
        zones: ZonesInput = None,
        skip_errors: bool = False,
        keep_images: bool = False,
    ) -> Iterator[CountResult]:
        """Count many images, yielding one result per input, in order.

        Images are prepared in groups of at most ``batch_size`` images and :data:`CHUNK_PIXELS` pixels, and
        their crops batched together. An input that cannot be read (or that a zone does not fit) raises
        :class:`~clip_ebc.errors.ImageError` (:class:`~clip_ebc.errors.ZoneError`), or, with
        ``skip_errors=True``, yields a result whose ``error`` says why and the run goes on. ``zones``: see
        :data:`ZonesInput`. ``keep_images`` keeps each decoded image in its result, so ``save_heatmap``
        need not read the file again (in-memory inputs are always kept). A model that produces NaN or
        infinite values raises :class:`~clip_ebc.errors.NumericalError` whatever ``skip_errors`` says.
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        zone_list = as_zones(zones)
        chunk: list[tuple[Any, Any]] = []
        pixels = 0
        for source, rgb in self._decoded(images, ahead=batch_size):
            size = 0 if isinstance(rgb, CLIPEBCError) else rgb.shape[0] * rgb.shape[1]
            if chunk and pixels + size > CHUNK_PIXELS:
                yield from self._count_chunk(chunk, batch_size, skip_errors, keep_images, zone_list)
                chunk, pixels = [], 0
            chunk.append((source, rgb))
            pixels += size
            if len(chunk) == batch_size:
                yield from self._count_chunk(chunk, batch_size, skip_errors, keep_images, zone_list)
                chunk, pixels = [], 0
        if chunk:
            yield from self._count_chunk(chunk, batch_size, skip_errors, keep_images, zone_list)

    def count_video(
        self,
        source: str | os.PathLike[str],
        every: str | float = 1.0,
        *,
        zones: ZonesInput = None,
        start: float | None = None,
        duration: float | None = None,
        reconnect: int = 5,
        timeout: float = 10.0,
        batch_size: int | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> VideoCounts:
        """Count the people in sampled frames of a video file, network stream or camera, yielding one
        :class:`CountResult` per sampled frame, with ``time`` (seconds), ``frame_index`` and, for live
        sources, ``wallclock``.

        every: ``1.0`` / ``"1s"`` (one frame per second of presentation time, exact for a variable frame
        rate), ``"500ms"``, or ``"12f"`` (every 12th frame). start, duration: seconds (files). reconnect,
        timeout: how often a dropped live stream is reopened, and how many seconds without data count as a
        drop. Frames are decoded in a background thread; frames of a file are counted ``batch_size`` at a
        time in one forward pass, frames of a live source as soon as they arrive. The returned
        :class:`VideoCounts` is an iterator (endless for a live stream) that also tells where decoding of a
        damaged file stopped. Opening errors raise :class:`~clip_ebc.errors.VideoError` here; needs
        ``pip install "clip-ebc[video]"``.
        """
        from .video import VideoReader

        zone_list = as_zones(zones)
        reader = VideoReader(source, every, start=start, duration=duration, reconnect=reconnect, timeout=timeout,
                             on_event=on_event)
        return VideoCounts(self, reader, zone_list, 1 if reader.live else (batch_size or self.batch_size))

    # ---------------------------------------------------------------------------------- internal

    def _decoded(self, images: Iterable[ImageInput], ahead: int) -> Iterator[tuple[Any, Any]]:
        """(source, RGB array or the ImageError) for each input, decoded up to ``ahead`` images in advance
        on a background thread, so file reading and decoding overlap with the model's work."""
        def load(source: Any) -> Any:
            try:
                if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
                    from .remote import load_url_image

                    return load_url_image(source, max_pixels=self.max_pixels)
                return load_image(source, max_pixels=self.max_pixels)
            except CLIPEBCError as e:
                return e

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-ebc-decode") as pool:
            pending: deque = deque()
            for source in images:
                pending.append((source, pool.submit(load, source)))
                if len(pending) > ahead:
                    src, future = pending.popleft()
                    yield src, future.result()
            while pending:
                src, future = pending.popleft()
                yield src, future.result()

    def _count_chunk(self, items: list[tuple[Any, Any]], batch_size: int, skip_errors: bool,
                     keep_images: bool, zones: tuple[Zone, ...] | None = None) -> Iterator[CountResult]:
        start = time.perf_counter()
        jobs: list[_Job | CountResult] = []
        failure: CLIPEBCError | None = None
        for source, rgb in items:
            try:
                if isinstance(rgb, CLIPEBCError):
                    raise rgb
                if zones:
                    check_zones(zones, rgb.shape[:2])
                jobs.append(self._prepare(source, rgb, keep_image=keep_images))
            except CLIPEBCError as e:
                if not skip_errors:  # the inputs before it still get their results, then it is raised
                    failure = e
                    break
                jobs.append(CountResult(math.nan, np.zeros((0, 0), np.float32), self.block_size, (0, 0), self.name,
                                        source=describe(source), error=str(e)))
        ready = [j for j in jobs if isinstance(j, _Job)]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self._autocast):
            maps = run_plans(self.model, [j.x for j in ready], [j.plan for j in ready], [j.cells for j in ready],
                             batch_size=batch_size, max_batch_pixels=self._batch_pixels(batch_size)) if ready else []
        per_image = (time.perf_counter() - start) / max(len(items), 1)
        density_maps = iter(maps)
        for job in jobs:
            if isinstance(job, CountResult):
                job.seconds = per_image
                yield job
                continue
            density = next(density_maps)[0, 0, : job.valid[0], : job.valid[1]].cpu().numpy()
            count = float(density.sum(dtype=np.float64))
            if not math.isfinite(count):
                raise NumericalError(
                    f"the model {self.name} produced NaN or infinite densities for {job.name}; its weights or config "
                    "are broken (re-download or re-convert it)"
                    + ("." if self.dtype == torch.float32 else
                       f", or {str(self.dtype).replace('torch.', '')} overflowed (use precision='float32').")
                )
            result = CountResult(
                count=count,
                density=density,
                block_size=self.block_size,
                image_size=job.rgb_shape,
                model_name=self.name,
                processed_size=job.processed_size,
                source=job.name,
                seconds=per_image,
                zones=zones or (),
                _image=job.keep_image,
            )
            if zones:
                result.zone_counts = count_zones(result, zones)
            yield result
        if failure is not None:
            raise failure

    def _prepare(self, source: Any, rgb: np.ndarray, *, keep_image: bool = False) -> _Job:
        height, width = rgb.shape[:2]
        size = self.resize.size(width, height) if self.resize is not None else (width, height)
        if self.max_pixels is not None and size[0] * size[1] > self.max_pixels:
            raise ImageError(
                f"{describe(source)}: its {width}x{height} pixels would be resized to {size[0]}x{size[1]} = "
                f"{size[0] * size[1]:,} pixels, more than the limit of {self.max_pixels:,} (the aspect ratio is too "
                "extreme for the training-set resize rule); crop it, or count it at its own size (resize='native'; crowdcount --native-size)."
            )
        w, h = size
        r = self.block_size
        valid = (math.ceil(h / r), math.ceil(w / r))
        if self.config.is_vit:
            ph, pw = max(self.window, valid[0] * r), max(self.window, valid[1] * r)
        else:
            ph, pw = _round_up(h, RESNET_ALIGN), _round_up(w, RESNET_ALIGN)
        x = to_input_tensor(rgb, self.config.mean, self.config.std, size=size, pad_to=(ph, pw), device=self.device)
        cells = (ph // r, pw // r)
        if self.config.is_vit:
            plan = window_plan(ph, pw, (self.window, self.window), (self.stride, self.stride), r)
        else:
            plan = (whole_plan(ph, pw, cells) if ph * pw <= self._tile_pixels
                    else tile_plan(ph, pw, self.tile_size, self.tile_margin, r))
        is_path = isinstance(source, (str, os.PathLike))
        keep = rgb if keep_image or not is_path else None  # in-memory images are always kept for heatmaps
        return _Job(describe(source), (height, width), x, plan, cells, valid, (h, w), keep)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class VideoCounts:
    """The counts of a video's sampled frames, as :meth:`CrowdCounter.count_video` returns them: an
    iterator of :class:`CountResult` (endless for a live stream), plus what the video reader knows.
    ``close()`` (or the end of a ``with`` block) stops decoding."""

    def __init__(self, counter: CrowdCounter, reader: VideoReader, zones: tuple[Zone, ...] | None,
                 batch_size: int) -> None:
        self.reader = reader
        self.zones = zones
        self._results = self._count(counter, batch_size)

    def _count(self, counter: CrowdCounter, batch_size: int) -> Iterator[CountResult]:
        frames: deque = deque()  # the frames handed to count_many, whose results are still to come

        def images() -> Iterator[np.ndarray]:
            for frame in self.reader:
                frames.append(frame)
                yield frame.rgb

        name = self.reader.name
        for result in counter.count_many(images(), batch_size=batch_size, zones=self.zones):
            frame = frames.popleft()
            result.source, result.time, result.frame_index, result.wallclock = (
                name, frame.time, frame.index, frame.wallclock)
            yield result

    @property
    def live(self) -> bool:
        """Whether the source is a live stream or camera (it ends when it ends, or on ``close()``)."""
        return bool(self.reader.live)

    @property
    def stopped(self) -> str | None:
        """Why decoding of a damaged file stopped early (``"decoding stopped at 12.40 s (frame 310): ..."``),
        once the iteration is over; None when it ran to the end."""
        return self.reader.stopped

    @property
    def dropped(self) -> int:
        """Sampled frames of a live source dropped, unseen, because counting fell behind it."""
        return self.reader.dropped

    def __iter__(self) -> Iterator[CountResult]:
        return self

    def __next__(self) -> CountResult:
        return next(self._results)

    def close(self) -> None:
        self._results.close()
        self.reader.close()

    def __enter__(self) -> VideoCounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
