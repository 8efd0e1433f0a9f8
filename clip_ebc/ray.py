"""Counting at cluster scale with Ray Data (``pip install "clip-ebc[ray]"``).

    from clip_ebc.ray import count_dataset

    ds = count_dataset("s3://bucket/photos/", "vit_b16.nwpu", num_workers=8, heatmaps="s3://bucket/heat/")
    ds.write_parquet("s3://bucket/counts/")       # lazy until here; one row per input

The driver lists the inputs with pyarrow filesystems (local folders, ``s3://``, ``gs://``, ``hdfs://``,
anything ``pyarrow.fs.FileSystem.from_uri`` opens) and names the heatmaps; a pool of Ray actors, each
holding one :class:`~clip_ebc.CrowdCounter`, reads every file's bytes itself, decodes them with
:func:`~clip_ebc.images.load_image_bytes` and counts them with ``count_many(skip_errors=True)``. A missing,
unreadable or corrupt input becomes a row with an ``error``, never a failed job.

Output rows (:data:`COLUMNS`): ``path`` (the input as given, or as listed under a folder or glob),
``count`` (people; null on error), with zones ``zones`` (a struct of people per zone) and ``per_m2``
(zones with an area), ``width``, ``height`` (pixels after EXIF orientation; null on error),
``model``, ``heatmap`` (where it was written, or null) and ``error`` (null, or why the input was not
counted or its heatmap not written). Counts equal a local ``CrowdCounter`` with the same model, resize
rule and precision (up to float rounding of differently batched crops).

A worker that dies (a killed process, a lost node) is restarted by Ray and its batch retried; the map is
deterministic and heatmaps are written to names fixed on the driver (atomically on local disks), so a
retried batch writes the same rows and files again and every input appears exactly once.

Ray and pyarrow are imported only when a function here is called.
"""

from __future__ import annotations

import fnmatch
import inspect
import io
import math
import os
import posixpath
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import CLIPEBCError, ConfigError, ImageError, missing_extra
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from .zones import Zone, ZonesInput, as_zones

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.fs
    import ray.data

    Inputs = str | os.PathLike | Sequence[str | os.PathLike] | ray.data.Dataset

__all__ = ["COLUMNS", "row_columns", "connect", "count_dataset", "iter_rows", "run", "write_parquet"]

COLUMNS = ("path", "count", "width", "height", "model", "heatmap", "error")
"""The columns of :func:`count_dataset`'s rows, in order."""
MAX_RETRIES = 3
"""Times a batch is run again after its worker process died, before the job fails (so an input that
crashes the process every time cannot keep a job running forever)."""
MAX_BLOCKS = 20_000
"""Most blocks the listed inputs are split into: fewer, larger blocks for huge listings; a retried
block repeats at most ``ceil(inputs / MAX_BLOCKS)`` images (or one batch)."""

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_MAGIC = re.compile(r"[*?[]")


def _import_ray():
    try:
        import pyarrow  # noqa: F401  (installed with ray[data])
        import ray
        import ray.data
    except ImportError as e:
        raise missing_extra("ray", "counting on Ray", "ray[data]") from e
    return ray


def row_columns(zones: Sequence[Zone] | None = None) -> tuple[str, ...]:
    """The columns of the output rows: :data:`COLUMNS`, with ``zones`` (and ``per_m2`` when a zone has an
    area) after ``count`` when counting with zones."""
    extra = ("zones",) + (("per_m2",) if any(z.area_m2 is not None for z in zones or ()) else ()) if zones else ()
    return COLUMNS[:2] + extra + COLUMNS[2:]


def _schema(zones: Sequence[Zone] | None = None) -> pyarrow.Schema:
    """The pyarrow schema of the output rows (:func:`row_columns`); zone counts are structs with one float
    field per zone, so Parquet and pandas get one column per zone."""
    import pyarrow as pa

    fields = [("path", pa.string()), ("count", pa.float64())]
    if zones:
        fields.append(("zones", pa.struct([(z.name, pa.float64()) for z in zones])))
        areas = [z for z in zones if z.area_m2 is not None]
        if areas:
            fields.append(("per_m2", pa.struct([(z.name, pa.float64()) for z in areas])))
    fields += [("width", pa.int64()), ("height", pa.int64()), ("model", pa.string()), ("heatmap", pa.string()),
               ("error", pa.string())]
    return pa.schema(fields)


# ------------------------------------------------------------------------------------ filesystems


def _resolve(path: str, filesystem: pyarrow.fs.FileSystem | None) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path on it) for a local path or URI; with ``filesystem`` given, a URI's scheme is dropped."""
    import pyarrow.fs as pafs

    if filesystem is not None:
        return filesystem, _URI.sub("", path) if _URI.match(path) else path
    if _URI.match(path):
        try:
            return pafs.FileSystem.from_uri(path)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError or ValueError by scheme
            raise ConfigError(
                f"{path}: pyarrow cannot open this URI ({e}); use a scheme it knows (s3://, gs://, hdfs://, file://) "
                "or pass filesystem=..."
            ) from e
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def _key(path: str) -> str:
    """A path for comparisons without touching storage: URIs as they are, local paths absolute."""
    return path.rstrip("/") if _URI.match(path) else os.path.abspath(os.path.expanduser(path))


def _resolve_cached(path: str, filesystem: pyarrow.fs.FileSystem | None,
                    cache: dict[str, tuple[Any, str]]) -> tuple[pyarrow.fs.FileSystem, str]:
    """:func:`_resolve`, opening each URI's filesystem once per scheme and bucket or host (``from_uri`` of
    an ``s3://`` URI asks S3 for the bucket's region)."""
    match = _URI.match(path)
    if filesystem is not None or not match:
        return _resolve(path, filesystem)
    prefix = path[: path.find("/", match.end())] if "/" in path[match.end():] else path
    tail = path[len(prefix):]
    if prefix in cache:
        fs, root = cache[prefix]
        return fs, root + tail
    fs, fs_path = _resolve(path, None)
    if fs_path.endswith(tail):  # fs paths are a root plus the URI's path (not so with a query string)
        cache[prefix] = (fs, fs_path[: len(fs_path) - len(tail)])
    return fs, fs_path


def _read_error(fs: pyarrow.fs.FileSystem, fs_path: str, name: str, error: Exception) -> str:
    """A one-sentence message for a file that could not be read, in the words of clip_ebc.images."""
    import pyarrow.fs as pafs

    try:
        kind = fs.get_file_info(fs_path).type
    except Exception:  # noqa: BLE001 - the first error is the one to report
        kind = None
    if kind == pafs.FileType.NotFound or isinstance(error, FileNotFoundError):
        return f"{name}: no such file."
    if kind == pafs.FileType.Directory:
        return f"{name} is a directory, not an image."
    detail = getattr(error, "strerror", None) or str(error) or type(error).__name__
    if isinstance(error, PermissionError):
        return f"{name}: cannot read it (permission denied: {detail})."
    return f"{name}: cannot read it ({detail})."


# ------------------------------------------------------------------------------------ the driver's plan


@dataclass
class _Entry:
    path: str
    """What the user sees: the input as given, or the listed file under the given folder or glob."""
    fs: int = -1
    """Index into the plan's filesystems (-1 for a problem)."""
    fs_path: str = ""
    problem: str | None = None
    """Why this input named no image (an empty folder, an unmatched glob, a listing that failed)."""


def _under(given: str, rel: str) -> str:
    if not given:
        return rel
    return (given if given.endswith("/") else given + "/") + rel


def _glob_match(parts: list[str], pattern: list[str], recursive: bool) -> bool:
    """Whether path segments match pattern segments as glob.glob matches them: ``*``, ``?`` and ``[...]``
    within one segment, ``**`` (when recursive) across any number, hidden names only when spelt out."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**" and recursive:
        for i in range(len(parts) + 1):
            if i and parts[i - 1].startswith("."):
                break
            if _glob_match(parts[i:], pattern[1:], recursive):
                return True
        return False
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _glob_match(parts[1:], pattern[1:], recursive)


def _plan(inputs: Sequence[str], filesystem: pyarrow.fs.FileSystem | None, recursive: bool,
          ) -> tuple[list[_Entry], list[pyarrow.fs.FileSystem]]:
    """Files as given, folders as the images inside (sorted), globs matched against a listing; each
    distinct file once. Returns the entries in input order and the filesystems they live on."""
    import pyarrow.fs as pafs

    filesystems: list[pafs.FileSystem] = []
    entries: list[_Entry] = []
    seen: set[tuple[int, str]] = set()

    def fs_index(fs: pafs.FileSystem) -> int:
        for i, known in enumerate(filesystems):
            if known is fs or known.equals(fs):
                return i
        filesystems.append(fs)
        return len(filesystems) - 1

    def add(display: str, index: int, fs_path: str) -> None:
        if (index, fs_path) not in seen:
            seen.add((index, fs_path))
            entries.append(_Entry(display, index, fs_path))

    for item in inputs:
        if _URI.match(item) and _MAGIC.search("/".join(item.split("/")[:3])):
            raise ConfigError(f"{item}: wildcards may follow the bucket or host of a URI, not stand in for it.")
        fs, fs_path = _resolve(item, filesystem)
        try:
            kind = fs.get_file_info(fs_path).type
            if kind == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(fs_path, recursive=recursive))
                images = sorted(i.path for i in infos if i.type == pafs.FileType.File
                                 and posixpath.splitext(i.base_name)[1].lower() in IMAGE_SUFFIXES)
                if not images:
                    hint = "" if recursive else " (list sub-folders with recursive=True)"
                    entries.append(_Entry(item, problem=f"{item}: no images in this folder{hint}."))
                index = fs_index(fs)
                for p in images:
                    add(_under(item, p[len(fs_path):].lstrip("/")), index, p)
            elif kind == pafs.FileType.NotFound and _MAGIC.search(item):
                segments = item.split("/")
                first = next(i for i, s in enumerate(segments) if _MAGIC.search(s))
                given_base, pattern = "/".join(segments[:first]) or ("/" if first else ""), segments[first:]
                base_fs, base = _resolve(given_base or ".", filesystem)
                deep = recursive and "**" in pattern or len(pattern) > 1
                infos = base_fs.get_file_info(pafs.FileSelector(base, recursive=deep, allow_not_found=True))
                matches = []
                for info in infos:
                    rel = info.path[len(base):].lstrip("/")
                    if info.type == pafs.FileType.File and _glob_match(rel.split("/"), pattern, recursive):
                        matches.append((rel, info.path))
                if not matches:
                    entries.append(_Entry(item, problem=f"{item}: no files match this pattern."))
                index = fs_index(base_fs)
                for rel, p in sorted(matches):
                    add(_under(given_base, rel), index, p)
            else:  # a file, or a missing one (reported when a worker reads it)
                add(item, fs_index(fs), fs_path)
        except OSError as e:  # pyarrow's errors (permissions, credentials, network) are OSErrors
            entries.append(_Entry(item, problem=f"{item}: cannot list it ({e})."))
    return entries, filesystems


def _heatmap_names(paths: Sequence[tuple[str, bool]], inputs: set[str], base: str) -> list[str | None]:
    """The CLI's naming rule: ``<stem>_heatmap.png``, then ``<stem>_heatmap_2.png`` ... for repeated stems
    or names that would overwrite an input. paths: (path on its filesystem, whether it gets a heatmap);
    inputs: input paths on the heatmap's filesystem; base: the heatmap folder's path there."""
    used: set[str] = set()
    names: list[str | None] = []
    for path, wanted in paths:
        if not wanted:
            names.append(None)
            continue
        stem = posixpath.splitext(posixpath.basename(path.replace(os.sep, "/")))[0]
        name, n = f"{stem}_heatmap.png", 2
        while name in used or posixpath.join(base, name) in inputs:
            name, n = f"{stem}_heatmap_{n}.png", n + 1
        used.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------------ the workers


@dataclass
class _Heatmaps:
    fs: Any
    base: str
    """The folder's path on ``fs``."""
    shown: str
    """The folder as the user wrote it (for the rows' ``heatmap`` column)."""
    opacity: float
    side_by_side: bool


class _Worker:
    """A Ray actor: one CrowdCounter, built once; counts a batch of rows into a batch of result rows."""

    def __init__(self, model: str | None, *, device: str, threads: int, counter_options: dict[str, Any],
                 filesystems: list[Any], filesystem: Any, heatmaps: _Heatmaps | None,
                 targets: dict[str, str] | None, max_pixels: int | None, zones: tuple[Zone, ...] | None = None) -> None:
        import torch

        from .counter import CrowdCounter

        if threads > 0:
            torch.set_num_threads(threads)
        try:
            self.counter = CrowdCounter(model, device=device, max_pixels=max_pixels, progress=False, **counter_options)
        except CLIPEBCError as e:
            # raised by the first batch instead: a batch that raises ends the job at once, while a
            # constructor that raises has Ray Data start replacement actors (in some versions, many)
            self.failure: CLIPEBCError | None = e
            return
        self.failure = None
        self.filesystems, self.filesystem = filesystems, filesystem
        self.heatmaps, self.targets = heatmaps, targets
        self.max_pixels = max_pixels
        self.zones = zones
        self.opened: dict[str, tuple[Any, str]] = {}
        self.batch_size = self.counter.batch_size
        # reads wait on storage (tens of ms per object on S3), so several run while the model works
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(8, self.batch_size)), thread_name_prefix="clip-ebc-read")

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        if self.failure is not None:
            raise self.failure
        columns = set(batch.column_names)
        if "path" not in columns:
            raise ConfigError(f"the input Dataset has no 'path' column (it has {', '.join(sorted(columns))}); add one.")
        n = batch.num_rows
        paths = [None if p is None else str(p) for p in batch.column("path").to_pylist()]
        data = batch.column("bytes").to_pylist() if "bytes" in columns else None
        problems = batch.column("_problem").to_pylist() if "_problem" in columns else [None] * n
        if "_heatmap" in columns:
            names = batch.column("_heatmap").to_pylist()
        else:
            names = [self.targets.get(p) if self.targets and p is not None else None for p in paths]
        where = list(zip(batch.column("_fs").to_pylist(), batch.column("_read").to_pylist())) if "_fs" in columns else None

        def load(i: int) -> Any:
            name = paths[i] if paths[i] is not None else "a row without a path"
            if problems[i]:
                return problems[i]
            if paths[i] is None:
                return "a row of the input Dataset has no path."
            try:
                if data is not None:
                    raw = data[i]
                    if raw is None:
                        return f"{name}: the row's bytes are null."
                else:
                    raw = self._read(i, paths[i], where)
                    if isinstance(raw, str):
                        return raw
                from .images import load_image_bytes

                return load_image_bytes(raw, name, max_pixels=self.max_pixels)
            except ImageError as e:
                return str(e)
            except Exception as e:  # noqa: BLE001 - one odd file must not fail a job of millions
                return f"{name} cannot be decoded: {type(e).__name__}: {e}."

        errors: dict[int, str] = {}
        ok: list[int] = []
        images: list[Any] = []

        def decoded() -> Iterator[Any]:
            for i, item in enumerate(self.pool.map(load, range(n))):
                if isinstance(item, str):
                    errors[i] = item
                else:
                    ok.append(i)
                    images.append(item)
                    yield item

        results = list(self.counter.count_many(decoded(), batch_size=self.batch_size, skip_errors=True,
                                               zones=self.zones))
        rows: dict[str, list[Any]] = {c: [None] * n for c in row_columns(self.zones)}
        rows["path"] = paths
        rows["model"] = [self.counter.name] * n
        for i, message in errors.items():
            rows["error"][i] = message
        for i, rgb, result in zip(ok, images, results):
            if not result.ok:
                from .images import describe

                # count_many saw an array; name the input instead
                rows["error"][i] = str(result.error).replace(describe(rgb), paths[i], 1)
                continue
            rows["count"][i] = result.count
            rows["height"][i], rows["width"][i] = result.image_size
            if self.zones:
                rows["zones"][i] = dict(result.zone_counts or {})
                if "per_m2" in rows:
                    rows["per_m2"][i] = {z.name: rows["zones"][i][z.name] / z.area_m2 for z in self.zones
                                         if z.area_m2 is not None}
            if self.heatmaps is not None and names[i]:
                shown = _under(self.heatmaps.shown, names[i])
                try:
                    self._write_heatmap(posixpath.join(self.heatmaps.base, names[i]), rgb, result)
                    rows["heatmap"][i] = shown
                except Exception as e:  # noqa: BLE001 - reported in the row, like the CLI does
                    detail = getattr(e, "strerror", None) or e
                    rows["error"][i] = f"{paths[i]}: heatmap not written to {shown}: {detail}"
        return pa.Table.from_pydict(rows, schema=_schema(self.zones))

    def _read(self, i: int, path: str, where: list[tuple[int, str]] | None) -> bytes | str:
        """The file's bytes, or a message saying why it cannot be read."""
        if where is not None:
            index, fs_path = where[i]
            fs = self.filesystems[index]
        else:
            try:
                fs, fs_path = _resolve_cached(path, self.filesystem, self.opened)
            except CLIPEBCError as e:  # a URI pyarrow cannot open
                return str(e)
        try:
            with fs.open_input_stream(fs_path) as f:
                return f.read()
        except Exception as e:  # noqa: BLE001 - any storage error becomes the row's error
            return _read_error(fs, fs_path, path, e)

    def _write_heatmap(self, fs_path: str, rgb: Any, result: Any) -> None:
        import pyarrow.fs as pafs
        from PIL import Image

        from .heatmap import render_heatmap

        h = self.heatmaps
        assert h is not None
        picture = render_heatmap(rgb, result.density, count=result.count, block_size=result.block_size,
                                 extent=result.grid_extent(), opacity=h.opacity, side_by_side=h.side_by_side,
                                 zones=result.zones or None, zone_counts=result.zone_counts)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        if isinstance(h.fs, pafs.LocalFileSystem):
            # a retried batch may meet its own half-written file: write aside, then rename over it
            h.fs.create_dir(posixpath.dirname(fs_path), recursive=True)
            temporary = f"{fs_path}.{uuid.uuid4().hex}.tmp"
            with h.fs.open_output_stream(temporary) as f:
                f.write(buffer.getvalue())
            h.fs.move(temporary, fs_path)
        else:  # object stores publish an object whole when its stream is closed
            with h.fs.open_output_stream(fs_path) as f:
                f.write(buffer.getvalue())


# ------------------------------------------------------------------------------------ public API


def count_dataset(
    inputs: Inputs,
    model: str | os.PathLike[str] | None = None,
    *,
    zones: ZonesInput = None,
    num_workers: int = 1,
    num_gpus_per_worker: float | Literal["auto"] = "auto",
    num_cpus_per_worker: float = 1,
    batch_size: int = 8,
    precision: str = "auto",
    resize: Literal["dataset", "native"] | tuple[int, int | None] = "dataset",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    heatmaps: str | os.PathLike[str] | None = None,
    opacity: float = 0.5,
    side_by_side: bool = False,
    filesystem: pyarrow.fs.FileSystem | None = None,
    recursive: bool = True,
    preserve_order: bool = False,
    max_retries: int = MAX_RETRIES,
    counter_options: Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset with one row per input image: :func:`row_columns` (see the module's docstring).

    inputs: a path, folder, glob pattern or URI (``s3://bucket/photos/``, ``gs://b/*.jpg``), or a list of
    them; folders are listed (``recursive``) for files with an image suffix, globs matched against a
    listing; each file once, in input order (folders and matches sorted). An input that names no image
    becomes an error row. Or a ``ray.data.Dataset`` with a ``path`` column (absolute paths or URIs the
    workers read, e.g. ``ray.data.from_items([{"path": p} for p in paths])``) or with
    ``bytes`` and ``path`` columns (encoded images, ``path`` only names them; e.g.
    ``ray.data.read_binary_files(..., include_paths=True)``); other columns are dropped.
    model: a registry name, a checkpoint folder every node can read, or ``hf-hub:ORG/NAME[@REV]``
    (not a loaded model: each worker loads it once, from its node's cache). zones: a zone file, zones or
    zone dicts (:mod:`clip_ebc.zones`): each row gets ``zones`` (people per zone) and, for zones with an
    area, ``per_m2``; a zone that does not fit an image is that row's error.
    num_workers: actors, each with one model. num_gpus_per_worker: GPUs per actor (fractions share a
    GPU); ``"auto"``: 1 when the cluster has GPUs, else 0 (CPU). num_cpus_per_worker: CPUs per actor,
    also its torch threads. batch_size: images per batch and crops per forward pass.
    precision, resize, max_pixels: as in :class:`~clip_ebc.CrowdCounter`; counter_options: its other
    keyword arguments (``tile_size``, ``window``, ``offline``, ``cache_dir``, ...).
    heatmaps: a folder or URI to write ``<stem>_heatmap.png`` files into, named on the driver by the
    command line's rule (``_heatmap_2``, ``_3`` ... for repeated stems; never over an input); with a
    Dataset input its ``path`` column is gathered first (one extra pass; materialize it if costly) and
    named in sorted order.
    opacity, side_by_side: heatmap drawing. filesystem: a ``pyarrow.fs.FileSystem`` for every path
    (inputs and heatmaps), e.g. an ``S3FileSystem`` with explicit credentials; URIs lose their scheme.
    preserve_order: rows in input order (Ray's ``preserve_order`` on this Dataset's context, which a
    Dataset input shares with the Dataset it came from); off, rows come as batches finish.
    max_retries: times a batch is retried after its worker died (0: the first death fails the job).

    Raises :class:`~clip_ebc.errors.ConfigError` for unusable arguments or a heatmap folder that cannot
    be made; :class:`~clip_ebc.errors.MissingExtraError` without Ray.
    """
    ray = _import_ray()
    zone_list = as_zones(zones)
    if isinstance(model, (str, os.PathLike)):
        model = os.fspath(model)
        if os.path.isdir(model):  # workers do not share the driver's working directory
            model = os.path.abspath(model)
    elif model is not None:
        raise ConfigError(
            f"count_dataset needs the model's name, folder or hf-hub id, not a {type(model).__name__}; save a "
            "custom model with model.save_pretrained(folder) on storage every node reads, and pass the folder."
        )
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"num_workers must be a whole number of at least 1, got {num_workers!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size!r}.")
    if not num_cpus_per_worker > 0:
        raise ConfigError(f"num_cpus_per_worker must be more than 0, got {num_cpus_per_worker!r}.")
    if num_gpus_per_worker != "auto" and not (isinstance(num_gpus_per_worker, (int, float)) and num_gpus_per_worker >= 0):
        raise ConfigError(f"num_gpus_per_worker must be 'auto' or a number of at least 0, got {num_gpus_per_worker!r}.")
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be between 0 and 1, got {opacity}.")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be a whole number of at least 0, got {max_retries!r}.")
    options = dict(counter_options or {})
    reserved = {"model", "device", "max_pixels", "progress", "batch_size", "precision", "resize"} & set(options)
    if reserved:
        raise ConfigError(f"counter_options may not set {', '.join(sorted(reserved))}; use count_dataset's own arguments.")
    options.update(batch_size=batch_size, precision=precision, resize=resize)

    heat: _Heatmaps | None = None
    if heatmaps is not None:
        shown = os.fspath(heatmaps)
        if posixpath.splitext(shown.rstrip("/"))[1].lower() in IMAGE_SUFFIXES and not os.path.isdir(shown):
            raise ConfigError(f"heatmaps={shown!r} names a file; pass a folder (or URI) to write <name>_heatmap.png files into.")
        heat_fs, heat_base = _resolve(shown, filesystem)
        heat = _Heatmaps(heat_fs, heat_base.rstrip("/") or heat_base, shown, float(opacity), bool(side_by_side))
    targets: dict[str, str] | None = None
    filesystems: list[Any] = []

    if isinstance(inputs, ray.data.Dataset):
        known = inputs.schema(fetch_if_missing=False)
        if known is not None and "path" not in known.names:
            raise ConfigError(
                f"the input Dataset has no 'path' column (it has {', '.join(known.names)}); add one with the file "
                "paths, or use read_binary_files(..., include_paths=True) for 'bytes' and 'path'."
            )
        source = inputs
        if heat is not None:
            # sorted, so the names do not depend on the order the Dataset happens to produce rows in
            paths = sorted({str(row["path"]) for row in inputs.select_columns(["path"]).iter_rows()
                            if row["path"] is not None})
            keys = [_key(p) for p in paths]
            targets = dict(zip(paths, _heatmap_names([(k, True) for k in keys], set(keys), _key(heat.shown))))
    else:
        items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        if not items:
            raise ConfigError("no inputs given; pass image files, folders, glob patterns or URIs.")
        entries, filesystems = _plan([os.fspath(i) for i in items], filesystem, recursive)
        names: list[str | None] = [None] * len(entries)
        if heat is not None:
            on_heat_fs = {e.fs_path for e in entries if e.problem is None and filesystems[e.fs].equals(heat.fs)}
            names = _heatmap_names([(e.fs_path, e.problem is None) for e in entries], on_heat_fs, heat.base)
        source = _source_dataset(ray, entries, names, batch_size)

    if heat is not None:
        try:  # here rather than in every worker: a folder that cannot be made fails before anything runs
            heat.fs.create_dir(heat.base, recursive=True)
        except OSError as e:
            raise ConfigError(f"cannot make the heatmap folder {heat.shown} ({e}); check the path and permissions.") from e

    num_gpus = float(num_gpus_per_worker) if num_gpus_per_worker != "auto" else None
    if num_gpus is None:
        if not ray.is_initialized():
            ray.init()  # what Ray Data itself would do on first use
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    worker_args = {
        "device": "cuda" if num_gpus > 0 else "cpu", "threads": max(1, int(num_cpus_per_worker)),
        "counter_options": options, "filesystems": filesystems, "filesystem": filesystem, "heatmaps": heat,
        "targets": targets, "max_pixels": max_pixels, "zones": zone_list,
    }
    kwargs: dict[str, Any] = {
        "fn_constructor_args": (model,), "fn_constructor_kwargs": worker_args, "batch_size": batch_size,
        "batch_format": "pyarrow", "compute": ray.data.ActorPoolStrategy(size=num_workers),
        "num_cpus": num_cpus_per_worker, "num_gpus": num_gpus if num_gpus > 0 else None,
    }
    with warnings.catch_warnings():
        if _accepts_remote_args(source.map_batches):
            # Ray 2.60 deprecates **ray_remote_args without a named replacement for these two; without
            # them Ray retries a dead worker's batch forever, which a crashing input would never end.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
            kwargs.update(max_restarts=-1, max_task_retries=max_retries)
        out = source.map_batches(_Worker, **kwargs)
    if preserve_order:
        context = getattr(out, "context", None) or ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
    return out


def _accepts_remote_args(method: Callable) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(method).parameters.values())


def _source_dataset(ray: Any, entries: list[_Entry], names: list[str | None], batch_size: int) -> ray.data.Dataset:
    """The listed inputs as Arrow blocks of at least one batch each (so batches spread over the workers)."""
    import pyarrow as pa

    table = pa.table({
        "path": pa.array([e.path for e in entries], pa.string()),
        "_fs": pa.array([e.fs for e in entries], pa.int32()),
        "_read": pa.array([e.fs_path for e in entries], pa.string()),
        "_heatmap": pa.array(names, pa.string()),
        "_problem": pa.array([e.problem for e in entries], pa.string()),
    })
    rows = max(batch_size, math.ceil(len(entries) / MAX_BLOCKS))
    return ray.data.from_arrow([table.slice(i, rows) for i in range(0, len(entries), rows)])


def connect(address: str | None = "auto", **init_kwargs: Any) -> bool:
    """Join a Ray cluster, unless this process already has: ``"local"`` starts one on this machine (on
    127.0.0.1), ``"auto"`` finds the running one (``ray start --head``, ``RAY_ADDRESS``), otherwise an
    address such as ``"ray://host:10001"`` or ``"host:6379"``; ``None`` lets Ray decide as ``ray.init()``
    does. init_kwargs go to ``ray.init`` (``runtime_env``, ``num_cpus``, ...). Returns whether this call
    connected, i.e. whether the caller should ``ray.shutdown()`` when done."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address == "local":
        init_kwargs.setdefault("_node_ip_address", "127.0.0.1")
    try:
        ray.init(address=address, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(
            f"cannot connect to a Ray cluster at {address!r} ({e}); start one with `ray start --head`, pass its "
            "address (ray://HOST:10001 or HOST:6379), or use 'local' to start one on this machine."
        ) from e
    return True


def iter_rows(inputs: Inputs, model: str | os.PathLike[str] | None = None, *, address: str | None = None,
              **options: Any) -> Iterator[dict[str, Any]]:
    """Count on Ray and yield the rows (dicts of :data:`COLUMNS`) in input order as they come.

    address: see :func:`connect` (``None``: the Ray this process is connected to, or ``ray.init()``'s
    choice); a cluster this call connected to is shut down at the end. options: :func:`count_dataset`'s
    keyword arguments. A clip-ebc error raised in a worker (a model that cannot be loaded) is raised
    here as itself.
    """
    ray = _import_ray()
    started = connect(address) if address is not None else False
    try:
        with _worker_errors():
            ds = count_dataset(inputs, model, preserve_order=True, **options)
            names = row_columns(as_zones(options.get("zones")))
            for row in ds.iter_rows():
                yield {c: row[c] for c in names}
    finally:
        if started:
            ray.shutdown()


def run(inputs: Inputs, address: str | None = None, model: str | os.PathLike[str] | None = None, *,
        on_row: Callable[[dict[str, Any]], None] | None = None, parquet: str | os.PathLike[str] | None = None,
        **options: Any) -> int:
    """Count on Ray for the command line: call ``on_row`` with each row in input order, optionally write
    the rows as Parquet files into ``parquet`` (a folder or URI, see :func:`write_parquet`), and return
    the number of rows with an error. With ``parquet`` the results are materialised first (kept in Ray's
    object store: a few hundred bytes per image), so the job runs once and rows arrive at its end.
    address, options: as in :func:`iter_rows`."""
    ray = _import_ray()
    started = connect(address) if address is not None else False
    failed = 0
    try:
        with _worker_errors():
            ds = count_dataset(inputs, model, preserve_order=True, **options)
            names = row_columns(as_zones(options.get("zones")))
            if parquet is not None:
                ds = ds.materialize()
                write_parquet(ds, parquet, filesystem=options.get("filesystem"))
            for row in ds.iter_rows():
                row = {c: row[c] for c in names}
                failed += row["error"] is not None
                if on_row is not None:
                    on_row(row)
    finally:
        if started:
            ray.shutdown()
    return failed


def write_parquet(ds: ray.data.Dataset, directory: str | os.PathLike[str], *,
                  filesystem: pyarrow.fs.FileSystem | None = None) -> str:
    """Write ``ds`` (e.g. :func:`count_dataset`'s rows) as Parquet files into ``directory``, a local folder
    or URI; returns the path written to. Ray's tasks write the files on the nodes they run on, so on a
    cluster use object storage or a shared filesystem (Ray appends files to a folder that has some)."""
    _import_ray()
    fs, path = _resolve(os.fspath(directory), filesystem)
    ds.write_parquet(path, filesystem=fs)
    return path


@contextmanager
def _worker_errors() -> Iterator[None]:
    """Raise what clip-ebc raised in a Ray worker as itself, not as Ray's wrapper of it."""
    try:
        yield
    except CLIPEBCError:
        raise
    except Exception as e:
        cause = _worker_error(e)
        if cause is None:
            raise
        raise cause from e


def _worker_error(error: Exception) -> CLIPEBCError | None:
    """The clip-ebc error behind a Ray error, rebuilt from the worker's traceback, which Ray reports as
    text (the exception object itself does not survive the trip)."""
    from . import errors

    found = re.findall(r"clip_ebc\.errors\.(\w+): (.+)", str(error))
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, CLIPEBCError):
            return kind(message)
    if "No module named 'clip_ebc'" in str(error):
        return ConfigError(
            "the Ray workers cannot import clip_ebc; install the same clip-ebc[ray] on every node, or pass "
            "runtime_env={'pip': ['clip-ebc[ray]']} to connect()."
        )
    return None
