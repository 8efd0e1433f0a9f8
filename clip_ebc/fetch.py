"""Getting checkpoint files onto local disk: cache folders, the Hugging Face Hub, plain URLs.

This layer knows files, never models: it is below :mod:`clip_ebc.model` and imports nothing of the
package but its errors and constants.

* Hub repositories are fetched with ``huggingface_hub.hf_hub_download`` (its cache, its file locks,
  ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``), and checked against the
  SHA-256 the registry records, since the Hub client only checks sizes.
* Release archives are streamed with :func:`download_url`: a size limit while streaming (an
  ``urllib`` loop rather than ``torch.hub.download_url_to_file``, which has none), the SHA-256 of
  the whole file computed on the way, and a ``tqdm`` progress bar on stderr.
* Converted releases live under :func:`cache_root` (``CLIP_EBC_CACHE``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from .constants import CHECKPOINT_FILES, CONFIG_NAME, HF_PREFIX, WEIGHTS_NAME
from .errors import CheckpointError, DownloadError, ModelNotFoundError

log = logging.getLogger(__name__)

MAX_ARCHIVE_BYTES = 8 << 30
"""Largest release archive that is downloaded (8 GiB)."""
TIMEOUT = 60.0
"""Seconds a connection may stay silent before a download fails."""


# --------------------------------------------------------------------------------------------------
# Cache folders, checksums, network policy
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


def hf_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The Hugging Face cache in use: ``cache_dir``, ``HF_HUB_CACHE``, ``HF_HOME/hub``, or ``None`` for
    huggingface_hub's default."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def hf_cache_text(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The Hugging Face cache folder, for messages."""
    return hf_cache_dir(cache_dir) or "~/.cache/huggingface/hub"


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


# --------------------------------------------------------------------------------------------------
# Local folders and Hub ids
# --------------------------------------------------------------------------------------------------


def parse_hf_id(spec: str) -> tuple[str, str | None]:
    """``"hf-hub:org/name@rev"`` (or ``"org/name@rev"``) -> ``("org/name", "rev")``."""
    rest = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    repo_id, _, revision = rest.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ModelNotFoundError(f"{spec!r} is not a valid Hub id; write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION.")
    return repo_id, revision or None


def checkpoint_folder(path: Path) -> tuple[Path, Path]:
    """(config file, weights file) of a local checkpoint folder; both must exist."""
    missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"{path} is not a clip-ebc checkpoint folder: {', '.join(missing)} missing (a checkpoint folder holds "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}, as save_pretrained writes). Convert official weights with "
            "`python -m clip_ebc.convert`."
        )
    return path / CONFIG_NAME, path / WEIGHTS_NAME


def offline_hint(spec: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """How to get a Hub checkpoint onto a machine without network access."""
    return (f"On a machine with internet access run `crowdcount --download {spec}`, then copy the Hugging Face "
            f"cache ({hf_cache_text(cache_dir)}) to this machine; or allow network access (unset HF_HUB_OFFLINE, "
            "or pass offline=False).")


def fetch_hub_checkpoint(
    repo_id: str,
    revision: str | None = None,
    *,
    checksums: Mapping[str, str] | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    force_download: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path]:
    """(config file, weights file) of a Hub repository, from the Hugging Face cache or downloaded.

    checksums: file name -> expected SHA-256; a cached file that does not match is fetched again (and
    refused when offline). name: what to call the model in messages (default ``hf-hub:ID@REV``).
    """
    spec = f"{HF_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    name = name or spec
    offline = offline_mode(offline)
    checksums = checksums or {}
    found: dict[str, Path] = {}
    if offline:  # look for every file first, so that the error names all that are missing
        missing = []
        for filename in CHECKPOINT_FILES:
            try:
                found[filename] = _hub_file(repo_id, filename, revision, cache_dir=cache_dir, offline=True, token=token)
            except _NotCached:
                missing.append(filename)
        if missing:
            raise DownloadError(
                f"{' and '.join(missing)} of {repo_id}@{revision or 'main'} {'is' if len(missing) == 1 else 'are'} "
                f"not in the Hugging Face cache and network access is off (HF_HUB_OFFLINE). {offline_hint(name, cache_dir)}"
            )
    files = {}
    for filename in CHECKPOINT_FILES:
        path = found.get(filename) or _hub_file(repo_id, filename, revision, cache_dir=cache_dir, offline=False,
                                                force=force_download, token=token)
        expected = checksums.get(filename)
        if expected and sha256_file(path) != expected:
            if offline:
                raise DownloadError(
                    f"the cached {filename} of {name} is corrupted (its SHA-256 does not match the registry's) and "
                    f"network access is off; run `crowdcount --download {name}` with network access."
                )
            log.warning("%s: the cached %s does not match the registry's SHA-256; downloading it again.", name, filename)
            path = _hub_file(repo_id, filename, revision, cache_dir=cache_dir, offline=False, force=True, token=token)
            if sha256_file(path) != expected:
                raise DownloadError(
                    f"{filename} of {repo_id}@{revision} does not match the registry's SHA-256 even after a fresh "
                    "download; refusing to use it. The Hub copy or the manifest is wrong; please report it."
                )
        files[filename] = path
    return files[CONFIG_NAME], files[WEIGHTS_NAME]


class UnreachableError(DownloadError):
    """The server could not be reached at all (no network, DNS, proxy, refused connection)."""


class _NotCached(Exception):
    """A Hub file asked for offline is not in the cache."""


def _hub_file(repo_id: str, filename: str, revision: str | None, *, cache_dir, offline: bool, force: bool = False,
              token: str | bool | None = None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hf_cache_dir(cache_dir),
                                    endpoint=os.environ.get("HF_ENDPOINT") or None, local_files_only=offline,
                                    force_download=force, token=token))
    except LocalEntryNotFoundError as e:
        if offline:
            raise _NotCached(filename) from e
        raise UnreachableError(
            f"cannot reach the Hugging Face Hub for {repo_id} ({_first_line(e)}); check the network connection "
            "(and HTTPS_PROXY or HF_ENDPOINT if you use them)."
        ) from e
    except RepositoryNotFoundError as e:
        raise DownloadError(f"the Hub repository {repo_id} does not exist or is private (log in with `hf auth login` "
                            "for a private one).") from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"the Hub repository {repo_id} has no revision {revision!r}.") from e
    except EntryNotFoundError as e:
        raise DownloadError(f"the Hub repository {repo_id}@{revision or 'main'} has no {filename}; it is not a "
                            "clip-ebc checkpoint.") from e
    except OSError as e:  # network errors, disk errors
        raise DownloadError(f"downloading {filename} from {repo_id} failed: {_first_line(e)}.") from e
    except Exception as e:  # noqa: BLE001 - httpx/hub errors vary across versions
        raise DownloadError(f"downloading {filename} from {repo_id} failed: {type(e).__name__}: {_first_line(e)}.") from e


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# --------------------------------------------------------------------------------------------------
# Plain URLs
# --------------------------------------------------------------------------------------------------


def download_url(url: str, dest: Path, *, progress: bool = True, max_bytes: int = MAX_ARCHIVE_BYTES,
                 timeout: float = TIMEOUT) -> str:
    """Stream ``url`` to ``dest`` (following redirects), with a progress bar on stderr; return the SHA-256.

    More than ``max_bytes`` (announced or received) is refused; a connection silent for ``timeout``
    seconds fails. Errors are :class:`~clip_ebc.errors.DownloadError` naming the URL.
    """
    from tqdm.auto import tqdm

    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"clip-ebc/{__version__}"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > max_bytes:
                raise DownloadError(f"{url} is {total:,} bytes, more than the {max_bytes:,}-byte limit for a release archive.")
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"Downloading {dest.name}",
                      file=sys.stderr, disable=not progress, leave=True, dynamic_ncols=True) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadError(f"{url} is larger than the {max_bytes:,}-byte limit for a release archive.")
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DownloadError(f"the download of {url} stopped after {received:,} of {total:,} bytes.")
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url} answered HTTP {e.code} ({e.reason}).") from e
    except urllib.error.URLError as e:
        raise UnreachableError(f"cannot reach {url} ({e.reason}); check the network connection (and HTTPS_PROXY if "
                            "you use one).") from e
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"downloading {url} failed: {type(e).__name__}: {e}.") from e
    except ValueError as e:  # e.g. an unsupported URL scheme in a custom manifest
        raise DownloadError(f"cannot download {url!r}: {e}.") from e
    return digest.hexdigest()
