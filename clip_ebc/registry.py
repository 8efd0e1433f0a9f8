"""The weights registry: ``weights_manifest.json``, its schema and validation, and ``list_models``.

The manifest (shipped inside the package) maps short names such as ``vit_b16.nwpu`` to the facts of a
released model and the *sources* its weights can be fetched from, tried in order: ``huggingface`` (a
converted copy at a pinned revision, with a SHA-256 per file) and ``release`` (the official archive).
``CLIP_EBC_MANIFEST`` points at another manifest (a mirror, or tests). This module is data: it never
downloads anything and never imports the model.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .constants import CHECKPOINT_FILES, CHECKSUMS_NAME
from .errors import ModelNotFoundError
from .fetch import converted_dir, hf_cache_dir


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
    except RecursionError:
        raise ModelNotFoundError(f"the weights manifest {path} is nested too deeply to be a manifest.") from None
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


def is_cached(info: ModelInfo, *, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether the model can be loaded without the network (files present; not re-hashed here)."""
    for source in info.sources:
        if not source.usable:
            continue
        if source.type == "huggingface":
            from huggingface_hub import try_to_load_from_cache

            found = [try_to_load_from_cache(source.repo_id, f, cache_dir=hf_cache_dir(cache_dir),  # type: ignore[arg-type]
                                            revision=source.revision) for f in CHECKPOINT_FILES]
            if all(isinstance(f, str) for f in found):
                return True
        elif all((converted_dir(info.name) / f).is_file() for f in (*CHECKPOINT_FILES, CHECKSUMS_NAME)):
            return True
    return False
