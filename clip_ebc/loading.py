"""From a model name to a model in memory: the one path every caller takes.

``resolve_model`` turns a registry name (default: the registry's default), a checkpoint folder or an
``hf-hub:ORG/NAME[@REVISION]`` id into local files; ``load`` / ``load_model`` build the model from
them (:func:`clip_ebc.model.load_checkpoint`). :class:`~clip_ebc.CrowdCounter`, :func:`load_model`
and :meth:`CLIPEBC.from_pretrained <clip_ebc.CLIPEBC.from_pretrained>` (folders and Hub ids, through
the same :mod:`clip_ebc.fetch` functions) all end in that one loader.

A registry model's sources are tried in order (:mod:`clip_ebc.registry`):

1. ``huggingface``: a converted copy, fetched at a pinned revision and checked against the
   registry's SHA-256 (:func:`clip_ebc.fetch.fetch_hub_checkpoint`);
2. ``release``: the official archive, downloaded once, checked against its SHA-256 when the registry
   has one, unpacked safely (:mod:`clip_ebc.archive`), converted (:mod:`clip_ebc.convert`) and cached as
   ``config.json`` + ``model.safetensors`` with their checksums under :func:`clip_ebc.fetch.cache_root`.
   Processes that need the same release at the same time wait on a file lock, so it is downloaded
   and converted once.

Every cached file is hashed again when it is used; a file that does not match is refused, and
fetched again when the network may be used. ``HF_HUB_OFFLINE=1`` (or ``offline=True``) forbids all
network access.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import extract_checkpoint
from .constants import CHECKPOINT_FILES, CHECKSUMS_NAME, CONFIG_NAME, HF_PREFIX, WEIGHTS_NAME
from .convert.official import convert_file
from .errors import CheckpointError, CLIPEBCError, ConfigError, DownloadError, ModelNotFoundError
from .fetch import (
    cache_root,
    checkpoint_folder,
    converted_dir,
    download_url,
    fetch_hub_checkpoint,
    hf_cache_text,
    offline_mode,
    UnreachableError,
    parse_hf_id,
    sha256_file,
)
from .model import CLIPEBC, load_checkpoint
from .registry import ModelInfo, Source, default_model_name, load_manifest

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 3600.0
"""Seconds a process waits for another one that is fetching the same release."""


@dataclass(frozen=True)
class ResolvedModel:
    """A checkpoint on local disk, and what it is."""

    name: str
    """The name the user asked for (a registry name, a path, or an ``hf-hub:`` id)."""
    config_file: Path
    weights_file: Path
    info: ModelInfo | None = None
    """The registry entry, for registry names."""

    @property
    def dataset(self) -> str | None:
        """The training set (its resize rule applies at inference): the registry's, else the config's."""
        if self.info is not None:
            return self.info.dataset
        try:
            return json.loads(self.config_file.read_text(encoding="utf-8")).get("provenance", {}).get("dataset")
        except (OSError, ValueError, AttributeError):
            return None


@dataclass(frozen=True)
class LoadedModel:
    """A model in memory, with the name it was asked for and its training set."""

    model: CLIPEBC
    name: str
    dataset: str | None


def resolve_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
    force_download: bool = False,
) -> ResolvedModel:
    """Find or fetch the checkpoint ``spec`` names: a registry name (default: the manifest's default), a
    folder with ``config.json`` + ``model.safetensors``, or ``hf-hub:ORG/NAME[@REVISION]``.

    cache_dir: Hugging Face cache to use (default: huggingface_hub's). offline: forbid network access
    (default: ``HF_HUB_OFFLINE``). force_download: fetch Hub files again even when cached. Raises
    :class:`~clip_ebc.errors.ModelNotFoundError` or :class:`~clip_ebc.errors.DownloadError` naming the fix.
    """
    spec = default_model_name() if spec is None else spec
    text = str(spec)
    if text.startswith(HF_PREFIX):
        repo_id, revision = parse_hf_id(text)
        config_file, weights_file = fetch_hub_checkpoint(repo_id, revision, cache_dir=cache_dir, offline=offline,
                                                         force_download=force_download)
        return ResolvedModel(text, config_file, weights_file)
    path = Path(spec)
    if path.is_dir():
        return ResolvedModel(str(path), *checkpoint_folder(path))
    if path.is_file():
        raise ModelNotFoundError(f"{path} is a file; pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}.")
    if os.sep in text or text.startswith(".") or (os.altsep and os.altsep in text):
        raise ModelNotFoundError(f"{path}: no such checkpoint folder.")
    info = load_manifest().get(text)
    return _resolve_registered(info, cache_dir=cache_dir, offline=offline_mode(offline), progress=progress,
                               force_download=force_download)


def load(
    spec: str | os.PathLike[str] | None = None,
    *,
    map_location: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Resolve ``spec`` (see :func:`resolve_model`) and load it: the model (eval mode), its name and
    training set."""
    resolved = resolve_model(spec, cache_dir=cache_dir, offline=offline, progress=progress)
    model = load_checkpoint(resolved.config_file, resolved.weights_file, map_location=map_location)
    return LoadedModel(model, resolved.name, resolved.dataset or model.config.provenance.get("dataset"))


def load_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    map_location: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> CLIPEBC:
    """A :class:`~clip_ebc.CLIPEBC` (eval mode) for a registry name, checkpoint folder or ``hf-hub:`` id,
    fetched and verified as :func:`resolve_model` describes."""
    return load(spec, map_location=map_location, cache_dir=cache_dir, offline=offline, progress=progress).model


def download(spec: str, *, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> ResolvedModel:
    """Fetch ``spec`` into the local cache and check that it loads; what is cached but does not load
    (a Hub checkpoint without registry checksums whose file was damaged) is fetched again, once.
    This is ``crowdcount --download``."""
    resolved = resolve_model(spec, cache_dir=cache_dir, offline=False, progress=progress)
    try:
        load_checkpoint(resolved.config_file, resolved.weights_file)
        return resolved
    except (CheckpointError, ConfigError) as e:
        if resolved.info is None and not str(spec).startswith(HF_PREFIX):
            raise  # a local folder: nothing to fetch again
        log.warning("%s: the cached copy does not load (%s); downloading it again.", spec, e)
    if resolved.info is not None:
        shutil.rmtree(converted_dir(resolved.info.name), ignore_errors=True)
    resolved = resolve_model(spec, cache_dir=cache_dir, offline=False, progress=progress, force_download=True)
    load_checkpoint(resolved.config_file, resolved.weights_file)  # still broken: the error says what is wrong
    return resolved


# --------------------------------------------------------------------------------------------------
# Registry names
# --------------------------------------------------------------------------------------------------


def _resolve_registered(info: ModelInfo, *, cache_dir, offline: bool, progress: bool,
                        force_download: bool = False) -> ResolvedModel:
    usable = [s for s in info.sources if s.usable]
    if not usable:
        where = f" They were shared at {info.manual_download}." if info.manual_download else ""
        raise DownloadError(
            f"{info.name} has no automatic download source.{where} Download its checkpoint by hand and convert "
            f"it: python -m clip_ebc.convert best_mae.pth -o {info.name} --backbone {info.backbone} --reduction "
            f"{info.block_size} --truncation {info.truncation} --dataset {info.dataset}; then pass that folder "
            "as the model."
        )
    failures: list[CLIPEBCError] = []
    for source in usable:
        try:
            if source.type == "huggingface":
                files = fetch_hub_checkpoint(source.repo_id, source.revision, checksums=source.files,  # type: ignore[arg-type]
                                             name=info.name, cache_dir=cache_dir, offline=offline,
                                             force_download=force_download)
                return ResolvedModel(info.name, *files, info)
            folder = _fetch_release(info, source, offline=offline, progress=progress)
            return ResolvedModel(info.name, folder / CONFIG_NAME, folder / WEIGHTS_NAME, info)
        except DownloadError as e:
            failures.append(e)
            if len(usable) > 1:
                log.warning("%s", e)
    reasons = " ".join(str(f) for f in failures)
    if offline:
        raise DownloadError(
            f"{info.name} cannot be loaded from the local cache and network access is off (HF_HUB_OFFLINE): {reasons}"
            + ("" if all("crowdcount --download" in str(f) for f in failures) else
               f" On a machine with internet access run `crowdcount --download {info.name}`, then copy {cache_root()} "
               f"and the Hugging Face cache ({hf_cache_text(cache_dir)}) to this machine.")
        )
    hint = ""
    if any(isinstance(f, UnreachableError) for f in failures):
        hint = (f" Fix the connection, or fetch it on a machine with internet access with `crowdcount --download "
                f"{info.name}` and copy {cache_root()} (and the Hugging Face cache) here.")
    raise DownloadError(f"could not fetch {info.name}: {reasons}{hint}")


# --------------------------------------------------------------------------------------------------
# Official release archives, converted once
# --------------------------------------------------------------------------------------------------


def _conversion_record(info: ModelInfo, source: Source) -> dict[str, Any]:
    """What a converted copy was made from: when any of it changes, the copy is stale."""
    settings = {k: getattr(info, k) for k in ("backbone", "dataset", "block_size", "truncation", "granularity",
                                               "prompt_type", "anchor_points", "input_size", "run_name")}
    return {"url": source.url, "member": source.member, "settings": settings, "convert": dict(info.convert)}


def _verified_converted(info: ModelInfo, source: Source) -> Path | None:
    """The cached converted copy if it was made from ``source`` as the manifest describes it now and
    every file matches its recorded checksum; otherwise ``None``. A stale copy is removed; a corrupted
    one is removed too, and :class:`DownloadError` says so when the network may not be used to replace it
    (the caller passes that on)."""
    folder = converted_dir(info.name)
    record_file = folder / CHECKSUMS_NAME
    if not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        stale = record["made_from"] != json.loads(json.dumps(_conversion_record(info, source))) or (
            source.sha256 is not None and record["archive_sha256"] != source.sha256
        )
        bad = [] if stale else [
            f for f in CHECKPOINT_FILES if not (folder / f).is_file() or sha256_file(folder / f) != record["files"][f]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        stale, bad = False, [CHECKSUMS_NAME]
    if not stale and not bad:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    if stale:
        log.warning("%s: the cached copy in %s was made from a different release or settings than the manifest "
                    "now names; it was removed.", info.name, folder)
        return None
    raise _Corrupted(f"the cached copy of {info.name} in {folder} was corrupted ({', '.join(bad)} did not match its "
                     "checksum) and has been removed.")


class _Corrupted(DownloadError):
    """A corrupted converted copy was found and removed."""


def _fetch_release(info: ModelInfo, source: Source, *, offline: bool, progress: bool) -> Path:
    folder = converted_dir(info.name)
    try:
        found = _verified_converted(info, source)
    except _Corrupted as e:
        if offline:
            raise DownloadError(f"{e} Run `crowdcount --download {info.name}` with network access to fetch it "
                                "again.") from e
        log.warning("%s Fetching it again.", e)
        found = None
    if found is not None:
        return found
    if offline:
        raise DownloadError(f"{CONFIG_NAME} and {WEIGHTS_NAME} (the converted copy of {info.name}) are not in {folder}.")
    with _release_lock(info.name):
        found = _verified_converted(info, source)  # another process may have stored it while we waited
        if found is not None:
            return found
        return _download_and_convert(info, source, progress=progress)


@contextmanager
def _release_lock(name: str) -> Iterator[None]:
    """An exclusive file lock for fetching one release: a second process waits (saying so) and then
    finds the first one's converted copy. The operating system drops the lock of a process that dies."""
    from filelock import FileLock, Timeout

    lock_file = cache_root() / "locks" / f"{name}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s: another process is fetching it; waiting for it to finish (lock %s).", name, lock_file)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:
            raise DownloadError(
                f"{name}: another process has been fetching it for over {LOCK_TIMEOUT:.0f} s (lock {lock_file}); "
                "try again when it has finished."
            ) from None
    try:
        yield
    finally:
        lock.release()


def _download_and_convert(info: ModelInfo, source: Source, *, progress: bool) -> Path:
    assert source.url is not None
    with tempfile.TemporaryDirectory(prefix="clip-ebc-") as tmp:
        archive = Path(tmp) / (source.url.rsplit("/", 1)[-1] or "archive")
        archive_sha = download_url(source.url, archive, progress=progress)
        if source.sha256 and archive_sha != source.sha256:
            raise DownloadError(
                f"{source.url} has SHA-256 {archive_sha}, not the manifest's {source.sha256}; refusing to use it."
            )
        if not source.sha256:
            log.info("%s: %s has no checksum in the manifest (SHA-256 of this download: %s).",
                     info.name, archive.name, archive_sha)
        # keep the member's name: its suffix tells .pth from .safetensors, and provenance records it
        member_name = Path(source.member).name if source.member else "checkpoint.pth"
        checkpoint = extract_checkpoint(archive, source.member, Path(tmp) / "extracted" / member_name)
        model = convert_for(info, checkpoint, display_name=f"{checkpoint.name} from {archive.name}",
                            release_url=source.url, release_sha256=archive_sha,
                            checkpoint_member=source.member or checkpoint.name)
        record = {"made_from": _conversion_record(info, source), "archive_sha256": archive_sha}
        return _store_converted(info, source, model, record)


def convert_for(info: ModelInfo, checkpoint: Path, *, display_name: str | None = None, **provenance: Any) -> CLIPEBC:
    """Convert an official checkpoint file with the hyperparameters the registry records for ``info``.
    ``display_name`` names the file in errors (a temporary path means nothing to a user)."""
    try:
        return convert_file(
            checkpoint,
            run_name=info.run_name,
            dataset=info.dataset,
            backbone=info.backbone,
            reduction=info.block_size,
            truncation=info.truncation,
            granularity=info.granularity,
            anchor_kind=info.anchor_points,
            prompt_type=info.prompt_type,
            input_size=info.input_size,
            provenance={"model_name": info.name, **provenance},
            **dict(info.convert),
        )
    except CheckpointError as e:
        message = str(e).replace(str(checkpoint), display_name) if display_name else str(e)
        raise DownloadError(f"the checkpoint for {info.name} is not the expected one: {message}") from e


def _store_converted(info: ModelInfo, source: Source, model: CLIPEBC, record: dict[str, Any]) -> Path:
    """Save a converted model into the cache atomically, with the checksums of its files and what it
    was made from. A good copy already there is kept and used; only a copy that fails verification is
    replaced."""
    final = converted_dir(info.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=final.parent))
    try:
        model.save_pretrained(staging)
        record = {**record, "files": {f: sha256_file(staging / f) for f in CHECKPOINT_FILES}, "model": info.name}
        (staging / CHECKSUMS_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        error: OSError | None = None
        for _ in range(3):
            try:
                os.replace(staging, final)  # atomic; fails while `final` holds files
                return final
            except OSError as e:
                error = e
            try:
                ready = _verified_converted(info, source)  # removes a bad or stale copy
            except _Corrupted:
                ready = None
            if ready is not None:
                return ready
            # files without a valid checksum record (nothing loads them): out of the way in one step
            aside = final.with_name(f".{final.name}.discarded-{os.getpid()}")
            try:
                os.replace(final, aside)
            except OSError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
        raise DownloadError(f"cannot store the converted copy of {info.name} in {final}: {error}.")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
