"""The weights registry: named models, where to fetch them, and a verified local cache.

``weights_manifest.json`` (shipped inside the package) maps short names such as ``vit_b16.nwpu`` to
facts about a released model and the *sources* to fetch it from, tried in order:

1. ``huggingface``: a converted copy (``config.json`` + ``model.safetensors``) in a Hub repository,
   downloaded with ``huggingface_hub`` at a pinned revision into the Hugging Face cache and checked
   against the manifest's SHA-256 (the Hub client itself only checks sizes);
2. ``release``: the official release archive, downloaded once, checked against its SHA-256 when the
   manifest has one, unpacked without writing any archive path to disk, loaded with
   ``torch.load(weights_only=True)``, converted, and cached as ``config.json`` + ``model.safetensors``
   under :func:`cache_root` with their checksums, so the next start is offline and fast.

Every cached file is hashed again when it is used; a file that does not match is refused, and fetched
again when the network may be used. ``HF_HUB_OFFLINE=1`` (or ``offline=True``) forbids all network
access. ``CLIP_EBC_MANIFEST`` points at another manifest (a mirror, or tests); ``CLIP_EBC_CACHE``
moves the converted-weights cache; ``HF_ENDPOINT`` and ``HF_HOME`` work as in ``huggingface_hub``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import http.client
import json
import logging
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from .errors import CheckpointError, DownloadError, ModelNotFoundError

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)
CHECKSUMS_NAME = "checksums.json"
MAX_ARCHIVE_BYTES = 8 << 30
"""Largest release archive that is downloaded (8 GiB)."""
MAX_MEMBER_BYTES = 4 << 30
"""Largest checkpoint extracted from an archive (4 GiB; official checkpoints are 0.5-0.7 GB)."""
MAX_MEMBERS = 10_000
"""Most entries an archive may have (an official release has a handful)."""
HF_PREFIX = "hf-hub:"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


# --------------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One place a model's weights can be fetched from."""

    type: str
    """``"huggingface"`` (a converted copy on the Hub) or ``"release"`` (an official archive)."""
    repo_id: str | None = None
    revision: str | None = None
    """Pinned Hub revision (a commit hash)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Hub file name -> expected SHA-256 (hex)."""
    url: str | None = None
    member: str | None = None
    """Checkpoint file inside the archive; ``None``: its only ``.pth`` file."""
    sha256: str | None = None
    """Expected SHA-256 of the archive, when known."""
    verified: bool = False
    note: str | None = None

    @property
    def usable(self) -> bool:
        """Whether the source names enough to fetch from (an unpublished Hub slot does not)."""
        if self.type == "huggingface":
            return bool(self.repo_id and self.revision)
        return self.type == "release" and bool(self.url)


@dataclass(frozen=True)
class ModelInfo:
    """A named model of the registry (one entry of ``weights_manifest.json``)."""

    name: str
    description: str
    backbone: str
    dataset: str
    block_size: int
    truncation: int
    granularity: str
    prompt_type: str
    anchor_points: str
    input_size: int
    run_name: str | None
    metrics: tuple[Mapping[str, Any], ...]
    license: str
    provenance: str
    sources: tuple[Source, ...]
    notes: str | None = None
    """What in the entry is assumed rather than recorded."""
    manual_download: str | None = None
    convert: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the conversion of a release (e.g. a custom ``clip_config``)."""

    @property
    def downloadable(self) -> bool:
        return any(s.usable for s in self.sources)

    def metric_text(self) -> str:
        """``"MAE 61.2 / RMSE 278.3, NWPU-Crowd test ..."`` for the first reported metric, or ``"-"``."""
        if not self.metrics:
            return "-"
        m = self.metrics[0]
        parts = [f"MAE {m['mae']:.1f}" if m.get("mae") is not None else None,
                 f"RMSE {m['rmse']:.1f}" if m.get("rmse") is not None else None]
        return " / ".join(p for p in parts if p) + f", {m.get('split', '?')}"


@dataclass(frozen=True)
class Manifest:
    default: str
    models: Mapping[str, ModelInfo]
    path: Path

    def get(self, name: str) -> ModelInfo:
        try:
            return self.models[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.models), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(
                f"{name!r} is not a known model name, a checkpoint folder or an hf-hub: id.{hint} "
                f"Known models: {', '.join(self.models)} (crowdcount --list-models)."
            ) from None


def manifest_path() -> Path:
    """The manifest in use: ``$CLIP_EBC_MANIFEST``, else the one shipped with the package."""
    override = os.environ.get("CLIP_EBC_MANIFEST")
    if override:
        return Path(override)
    packaged = Path(__file__).with_name("weights_manifest.json")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "weights_manifest.json"  # editable install


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Read and validate a manifest (default: :func:`manifest_path`)."""
    return _load_manifest(Path(path) if path is not None else manifest_path())


@lru_cache(maxsize=8)
def _load_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelNotFoundError(f"cannot read the weights manifest {path}: {e.strerror or e}.") from e
    except json.JSONDecodeError as e:
        raise ModelNotFoundError(f"the weights manifest {path} is not valid JSON ({e.msg}, line {e.lineno}).") from e
    models = {}
    try:
        for name, entry in data["models"].items():
            entry = dict(entry)
            sources = tuple(_checked_source(Source(**s), name) for s in entry.pop("sources", []))
            entry["metrics"] = tuple(entry.get("metrics", []))
            models[name] = ModelInfo(name=name, sources=sources, **entry)
        default = str(data["default"])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelNotFoundError(f"the weights manifest {path} is malformed ({type(e).__name__}: {e}).") from e
    if default not in models:
        raise ModelNotFoundError(f"the weights manifest {path} names a default model {default!r} it does not define.")
    return Manifest(default=default, models=models, path=path)


def _checked_source(source: Source, name: str) -> Source:
    """``source`` with lower-case checksums; a checksum that is not SHA-256 hex, or a Hub revision that
    is not a commit hash (a branch would move, and a warm start would have to ask the Hub), is an error."""
    def digest(value: str | None, what: str) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[0-9a-fA-F]{64}", str(value)):
            raise ValueError(f"{name}: {what} {value!r} is not a SHA-256 hex digest")
        return str(value).lower()

    if source.revision is not None and not re.fullmatch(r"[0-9a-f]{40}", str(source.revision)):
        raise ValueError(f"{name}: revision {source.revision!r} of {source.repo_id} is not a 40-digit commit hash")
    return dataclasses.replace(
        source,
        sha256=digest(source.sha256, "sha256"),
        files={f: digest(v, f"checksum of {f}") for f, v in dict(source.files).items() if v is not None},
    )


def list_models() -> list[ModelInfo]:
    """Every model of the registry, in manifest order."""
    return list(load_manifest().models.values())


def default_model_name() -> str:
    return load_manifest().default


# --------------------------------------------------------------------------------------------------
# Caches and checksums
# --------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where converted release weights live: ``$CLIP_EBC_CACHE``, else ``$XDG_CACHE_HOME/clip-ebc``,
    else ``~/.cache/clip-ebc``."""
    if os.environ.get("CLIP_EBC_CACHE"):
        return Path(os.environ["CLIP_EBC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clip-ebc"


def converted_dir(name: str) -> Path:
    """The cache folder of a model converted from a release archive."""
    return cache_root() / "models" / name


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (about 1.8 GB/s on a current CPU)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def offline_mode(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``HF_HUB_OFFLINE`` is set (read now, not at import)."""
    if offline is not None:
        return offline
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _hf_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _hf_cache_dir(cache_dir: str | os.PathLike[str] | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


# --------------------------------------------------------------------------------------------------
# Resolving a model to a local checkpoint folder
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    """A checkpoint on local disk, and what it is."""

    name: str
    """The name the user asked for (a registry name, a path, or an ``hf-hub:`` id)."""
    config_file: Path
    weights_file: Path
    info: ModelInfo | None = None


def parse_hf_id(spec: str) -> tuple[str, str | None]:
    """``"hf-hub:org/name@rev"`` -> ``("org/name", "rev")``."""
    rest = spec[len(HF_PREFIX):]
    repo_id, _, revision = rest.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ModelNotFoundError(f"{spec!r} is not a valid Hub id; write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION.")
    return repo_id, revision or None


def resolve_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> ResolvedModel:
    """Find or fetch the checkpoint ``spec`` names: a registry name (default: the manifest's default), a
    folder with ``config.json`` + ``model.safetensors``, or ``hf-hub:ORG/NAME[@REVISION]``.

    cache_dir: Hugging Face cache to use (default: huggingface_hub's). offline: forbid network access
    (default: ``HF_HUB_OFFLINE``). Raises :class:`~clip_ebc.errors.ModelNotFoundError` or
    :class:`~clip_ebc.errors.DownloadError` with the command that fixes it.
    """
    spec = default_model_name() if spec is None else spec
    text = str(spec)
    if text.startswith(HF_PREFIX):
        repo_id, revision = parse_hf_id(text)
        files = fetch_hub_checkpoint(repo_id, revision, cache_dir=cache_dir, offline=offline)
        return ResolvedModel(text, files[CONFIG_NAME], files[WEIGHTS_NAME])
    path = Path(spec)
    if path.is_dir():
        missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"{path} is not a clip-ebc checkpoint folder: {', '.join(missing)} missing. Convert official "
                "weights with `python -m clip_ebc.convert` or save a model with save_pretrained()."
            )
        return ResolvedModel(str(path), path / CONFIG_NAME, path / WEIGHTS_NAME)
    if path.is_file():
        raise ModelNotFoundError(f"{path} is a file; pass the folder that holds config.json and model.safetensors.")
    if os.sep in text or text.startswith(".") or (os.altsep and os.altsep in text):
        raise ModelNotFoundError(f"{path}: no such checkpoint folder.")
    info = load_manifest().get(text)
    return _resolve_registered(info, cache_dir=cache_dir, offline=offline_mode(offline), progress=progress)


def _resolve_registered(info: ModelInfo, *, cache_dir, offline: bool, progress: bool) -> ResolvedModel:
    usable = [s for s in info.sources if s.usable]
    if not usable:
        where = f" They were shared at {info.manual_download}." if info.manual_download else ""
        raise DownloadError(
            f"{info.name} has no automatic download source.{where} Download its checkpoint by hand and convert "
            f"it: python -m clip_ebc.convert best_mae.pth -o {info.name} --backbone {info.backbone} --reduction "
            f"{info.block_size} --truncation {info.truncation} --dataset {info.dataset}; then pass that folder "
            "as the model."
        )
    failures = []
    for source in usable:
        try:
            if source.type == "huggingface":
                files = _fetch_hf(source.repo_id, source.revision, source.files, name=info.name,  # type: ignore[arg-type]
                                  cache_dir=cache_dir, offline=offline)
                return ResolvedModel(info.name, files[CONFIG_NAME], files[WEIGHTS_NAME], info)
            folder = _fetch_release(info, source, offline=offline, progress=progress)
            return ResolvedModel(info.name, folder / CONFIG_NAME, folder / WEIGHTS_NAME, info)
        except DownloadError as e:
            failures.append(e)
            if len(usable) > 1:
                log.warning("%s", e)
    if offline:
        raise DownloadError(
            f"{info.name} is not in the local cache and network access is off (HF_HUB_OFFLINE). "
            + " ".join(str(f) for f in failures)
            + f" On a machine with internet access run `crowdcount --download {info.name}`, then copy "
            f"{cache_root()} and the Hugging Face cache ({_hf_cache_dir(cache_dir) or '~/.cache/huggingface/hub'}) "
            "to this machine."
        )
    raise DownloadError(f"could not fetch {info.name}: " + " ".join(str(f) for f in failures))


def load_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    map_location: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
):
    """A :class:`~clip_ebc.CLIPEBC` (eval mode) for a registry name, checkpoint folder or ``hf-hub:`` id,
    fetched and verified as :func:`resolve_model` describes."""
    from .model import load_checkpoint

    resolved = resolve_model(spec, cache_dir=cache_dir, offline=offline, progress=progress)
    return load_checkpoint(resolved.config_file, resolved.weights_file, map_location=map_location)


def is_cached(info: ModelInfo, *, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether the model can be loaded without the network (files present; not re-hashed here)."""
    for source in info.sources:
        if not source.usable:
            continue
        if source.type == "huggingface":
            from huggingface_hub import try_to_load_from_cache

            found = [try_to_load_from_cache(source.repo_id, f, cache_dir=_hf_cache_dir(cache_dir),  # type: ignore[arg-type]
                                            revision=source.revision) for f in CHECKPOINT_FILES]
            if all(isinstance(f, str) for f in found):
                return True
        elif all((converted_dir(info.name) / f).is_file() for f in (*CHECKPOINT_FILES, CHECKSUMS_NAME)):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Source 1: a converted copy on the Hugging Face Hub
# --------------------------------------------------------------------------------------------------


def fetch_hub_checkpoint(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    force_download: bool = False,
    token: str | bool | None = None,
) -> dict[str, Path]:
    """``config.json`` and ``model.safetensors`` of a Hub repository, from the cache or downloaded."""
    try:
        return _fetch_hf(repo_id, revision, {}, name=repo_id, cache_dir=cache_dir, offline=offline_mode(offline),
                         force_download=force_download, token=token)
    except _MissingFromCache as e:
        raise _offline_hint(e, f"{HF_PREFIX}{repo_id}" + (f"@{revision}" if revision else ""), cache_dir) from e


class _NotCached(Exception):
    """A Hub file asked for offline is not in the cache."""


class _MissingFromCache(DownloadError):
    """Offline, and the Hub files are not in the cache (the caller adds how to get them)."""


def _offline_hint(error: _MissingFromCache, spec: str, cache_dir) -> DownloadError:
    return DownloadError(
        f"{error} On a machine with internet access run `crowdcount --download {spec}`, then copy the Hugging "
        f"Face cache ({_hf_cache_dir(cache_dir) or '~/.cache/huggingface/hub'}) to this machine; or allow "
        "network access (unset HF_HUB_OFFLINE, or pass offline=False)."
    )


def _fetch_hf(
    repo_id: str,
    revision: str | None,
    checksums: Mapping[str, str],
    *,
    name: str,
    cache_dir,
    offline: bool,
    force_download: bool = False,
    token: str | bool | None = None,
) -> dict[str, Path]:
    """Download (or find in the cache) the checkpoint files of a Hub repo; verify known checksums."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    def download(filename: str, force: bool = False) -> Path:
        try:
            return Path(hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=_hf_cache_dir(cache_dir), endpoint=_hf_endpoint(),
                local_files_only=offline, force_download=force, token=token,
            ))
        except LocalEntryNotFoundError as e:
            if offline:
                raise _NotCached(filename) from e
            raise DownloadError(f"cannot reach the Hugging Face Hub for {repo_id} ({e}).") from e
        except RepositoryNotFoundError as e:
            raise DownloadError(f"the Hub repository {repo_id} does not exist or is private.") from e
        except RevisionNotFoundError as e:
            raise DownloadError(f"the Hub repository {repo_id} has no revision {revision!r}.") from e
        except EntryNotFoundError as e:
            raise DownloadError(f"the Hub repository {repo_id}@{revision or 'main'} has no {filename}.") from e
        except OSError as e:  # network errors, disk errors
            raise DownloadError(f"downloading {filename} from {repo_id} failed: {e}.") from e
        except Exception as e:  # noqa: BLE001 - httpx/hub errors vary across versions
            raise DownloadError(f"downloading {filename} from {repo_id} failed: {type(e).__name__}: {e}.") from e

    found: dict[str, Path] = {}
    if offline:  # look for every file first, so that the error names all that are missing
        missing = []
        for filename in CHECKPOINT_FILES:
            try:
                found[filename] = download(filename)
            except _NotCached:
                missing.append(filename)
        if missing:
            raise _MissingFromCache(
                f"{' and '.join(missing)} of {repo_id}@{revision or 'main'} "
                f"{'is' if len(missing) == 1 else 'are'} not in the Hugging Face cache."
            )
    files = {}
    for filename in CHECKPOINT_FILES:
        path = found[filename] if filename in found else download(filename, force_download)
        expected = checksums.get(filename)
        if expected:
            actual = sha256_file(path)
            if actual != expected:
                log.warning(
                    "%s: cached %s has SHA-256 %s, not the manifest's %s; refusing it%s.",
                    name, filename, actual[:12], expected[:12], "" if offline else " and downloading it again",
                )
                if offline:
                    raise DownloadError(
                        f"the cached {filename} of {name} is corrupted (checksum mismatch) and network access is off; "
                        f"run `crowdcount --download {name}` with network access."
                    )
                path = download(filename, force=True)
                if sha256_file(path) != expected:
                    raise DownloadError(
                        f"{filename} of {repo_id}@{revision} does not match the manifest's SHA-256 even after a fresh "
                        "download; refusing to use it. The Hub copy or the manifest is wrong; please report it."
                    )
        files[filename] = path
    return files


# --------------------------------------------------------------------------------------------------
# Source 2: the official release archive, converted once
# --------------------------------------------------------------------------------------------------


def _conversion_record(info: ModelInfo, source: Source) -> dict[str, Any]:
    """What a converted copy was made from: when any of it changes, the copy is stale."""
    settings = {k: getattr(info, k) for k in ("backbone", "dataset", "block_size", "truncation", "granularity",
                                               "prompt_type", "anchor_points", "input_size", "run_name")}
    return {"url": source.url, "member": source.member, "settings": settings, "convert": dict(info.convert)}


def _verified_converted(info: ModelInfo, source: Source) -> Path | None:
    """The cached converted copy if it was made from ``source`` as the manifest describes it now and
    every file matches its recorded checksum; otherwise ``None`` (a bad or stale copy is removed)."""
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
    if stale:
        log.warning("%s: the cached copy in %s was made from a different release or settings than the manifest "
                    "now names; replacing it.", info.name, folder)
    elif bad:
        log.warning("%s: the cached copy in %s is corrupted (%s does not match its checksum); refusing it.",
                    info.name, folder, ", ".join(bad))
    else:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _fetch_release(info: ModelInfo, source: Source, *, offline: bool, progress: bool) -> Path:
    folder = _verified_converted(info, source)
    if folder is not None:
        return folder
    if offline:
        raise DownloadError(
            f"{CONFIG_NAME} and {WEIGHTS_NAME} (the converted copy of {info.name}) are not in {converted_dir(info.name)}."
        )
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
        model = convert_for(info, checkpoint, release_url=source.url, release_sha256=archive_sha,
                            checkpoint_member=source.member or checkpoint.name)
        record = {"made_from": _conversion_record(info, source), "archive_sha256": archive_sha}
        return _store_converted(info, source, model, record)


def convert_for(info: ModelInfo, checkpoint: Path, **provenance: Any):
    """Convert an official checkpoint file with the hyperparameters the registry records for ``info``."""
    from .convert import convert_file

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
        raise DownloadError(f"the checkpoint for {info.name} is not the expected one: {e}") from e


def _store_converted(info: ModelInfo, source: Source, model, record: dict[str, Any]) -> Path:
    """Save a converted model into the cache atomically, with the checksums of its files and what it
    was made from. A good copy already there (another process stored it meanwhile, and may be reading
    it) is kept and used; only a copy that fails verification is replaced."""
    final = converted_dir(info.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=final.parent))
    try:
        model.save_pretrained(staging)
        record = {**record, "files": {f: sha256_file(staging / f) for f in CHECKPOINT_FILES}, "model": info.name}
        (staging / CHECKSUMS_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for _ in range(3):
            try:
                os.replace(staging, final)  # atomic; fails while `final` holds files
                return final
            except OSError as e:
                error = e
            ready = _verified_converted(info, source)  # removes a bad or stale copy
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


def download_url(url: str, dest: Path, *, progress: bool = True, max_bytes: int = MAX_ARCHIVE_BYTES) -> str:
    """Stream ``url`` to ``dest`` (following redirects) with a progress bar on stderr; return the SHA-256."""
    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"clip-ebc/{__version__}"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=60) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > max_bytes:
                raise DownloadError(f"{url} is {total:,} bytes, more than the {max_bytes:,}-byte limit for a release archive.")
            received = 0
            with _progress(total, f"Downloading {dest.name}", enabled=progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadError(f"{url} is larger than the {max_bytes:,}-byte limit for a release archive.")
                    out.write(chunk)
                    digest.update(chunk)
                    bar(len(chunk))
            if total is not None and received != total:
                raise DownloadError(f"the download of {url} stopped after {received:,} of {total:,} bytes.")
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url} answered HTTP {e.code} ({e.reason}).") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot reach {url} ({e.reason}).") from e
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"downloading {url} failed: {type(e).__name__}: {e}.") from e
    except ValueError as e:  # e.g. an unsupported URL scheme in a custom manifest
        raise DownloadError(f"cannot download {url!r}: {e}.") from e
    return digest.hexdigest()


@contextmanager
def _progress(total: int | None, label: str, *, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield lambda n: None
        return
    import click

    if total is None:  # the server sent no Content-Length: count megabytes instead of drawing a bar
        received = 0
        interactive = sys.stderr.isatty()

        def update(n: int) -> None:
            nonlocal received
            before, received = received, received + n
            if interactive and before >> 23 != received >> 23:  # every 8 MiB
                click.echo(f"\r{label}: {received / 2**20:,.0f} MiB", file=sys.stderr, nl=False)

        click.echo(label + ("" if interactive else " ..."), file=sys.stderr, nl=not interactive)
        try:
            yield update
        finally:  # also when the download fails, so that the error starts on a line of its own
            if interactive:
                click.echo(f"\r{label}: {received / 2**20:,.1f} MiB", file=sys.stderr)
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def extract_checkpoint(archive: Path, member: str | None, dest: Path, *, max_bytes: int = MAX_MEMBER_BYTES) -> Path:
    """Copy one checkpoint file out of a ``.tgz``/``.tar``/``.zip`` archive (or take a bare ``.pth``).

    Only the selected member's bytes are read; no path from the archive is ever created on disk, so
    path traversal, links and device files cannot do harm. ``member`` is matched by file name; ``None``
    picks the archive's only ``.pth``/``.pt``/``.safetensors`` file. Members over ``max_bytes`` are refused, and so are
    archives of more than ``MAX_MEMBERS`` entries. A damaged archive raises :class:`DownloadError`.
    """
    if archive.suffix in CHECKPOINT_SUFFIXES:
        return archive  # a bare checkpoint, not an archive
    try:
        return _extract(archive, member, dest, max_bytes)
    # OSError covers gzip's and bz2's corrupt-stream errors; write errors are DownloadErrors already.
    # NotImplementedError: a zip compression method Python lacks (Deflate64); RuntimeError: encryption.
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError,
            NotImplementedError, RuntimeError) as e:
        raise DownloadError(f"{archive.name} cannot be unpacked: it is damaged, incomplete or in an unsupported "
                            f"format ({type(e).__name__}: {e}).") from e


def _extract(archive: Path, member: str | None, dest: Path, max_bytes: int) -> Path:
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = []
            for entry in tar:  # headers are read one by one: stop early on an archive of countless entries
                if len(members) >= MAX_MEMBERS:
                    raise DownloadError(f"{archive.name} has more than {MAX_MEMBERS:,} entries; refusing it.")
                members.append(entry)
            members = [m for m in members if m.isfile()]
            chosen = _choose_member(archive, [(m.name, m) for m in members], member)
            if chosen.size > max_bytes:
                raise DownloadError(f"{chosen.name} in {archive.name} is {chosen.size:,} bytes, over the {max_bytes:,}-byte limit.")
            dest = _with_suffix_of(dest, chosen.name)
            with tar.extractfile(chosen) as src:  # type: ignore[union-attr]
                _copy_limited(src, dest, max_bytes, f"{chosen.name} in {archive.name}")
        return dest
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            if len(zf.infolist()) > MAX_MEMBERS:
                raise DownloadError(f"{archive.name} has more than {MAX_MEMBERS:,} entries; refusing it.")
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if any(i.filename.endswith("/data.pkl") for i in infos) and not any(
                i.filename.endswith((".pth", ".pt")) for i in infos
            ):
                return archive  # torch.save's own zip format: a bare checkpoint
            chosen_zip = _choose_member(archive, [(i.filename, i) for i in infos], member)
            if chosen_zip.file_size > max_bytes:
                raise DownloadError(f"{chosen_zip.filename} in {archive.name} is over the {max_bytes:,}-byte limit.")
            dest = _with_suffix_of(dest, chosen_zip.filename)
            with zf.open(chosen_zip) as src:
                _copy_limited(src, dest, max_bytes, f"{chosen_zip.filename} in {archive.name}")
        return dest
    raise DownloadError(f"{archive.name} is neither a tar/zip archive nor a checkpoint file.")


def _with_suffix_of(dest: Path, member: str) -> Path:
    """``dest``, with the member's suffix when they differ (the loader tells formats by suffix)."""
    suffix = Path(member).suffix
    return dest.with_suffix(suffix) if suffix in CHECKPOINT_SUFFIXES and suffix != dest.suffix else dest


def _choose_member(archive: Path, members: list[tuple[str, Any]], wanted: str | None):
    if wanted is not None:
        found = [m for name, m in members if name.rsplit("/", 1)[-1] == wanted]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DownloadError(f"{archive.name} holds {len(found)} files named {wanted}; cannot tell which to use.")
    candidates = [m for name, m in members if name.endswith(CHECKPOINT_SUFFIXES)]
    if wanted is None and len(candidates) == 1:
        return candidates[0]
    names = [name for name, _ in members if name.endswith(CHECKPOINT_SUFFIXES)]
    raise DownloadError(
        f"{archive.name} does not hold {wanted or 'exactly one checkpoint'}; its checkpoint files are: "
        f"{', '.join(names) or 'none'}."
    )


def _copy_limited(src: IO[bytes], dest: Path, max_bytes: int, what: str) -> None:
    copied = 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = dest.open("wb")
    except OSError as e:
        raise DownloadError(f"cannot write {dest}: {e.strerror or e}.") from e
    with out:
        for chunk in iter(lambda: src.read(1 << 20), b""):  # a read error here means a bad archive
            copied += len(chunk)
            if copied > max_bytes:
                raise DownloadError(f"{what} unpacks to more than {max_bytes:,} bytes; refusing it.")
            try:
                out.write(chunk)
            except OSError as e:  # not the archive's fault: say so, rather than "damaged"
                raise DownloadError(f"cannot write {dest} ({e.strerror or e}); free some space in "
                                    f"{dest.parent} or set TMPDIR.") from e

