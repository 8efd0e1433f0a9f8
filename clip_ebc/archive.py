"""Taking one checkpoint file out of a release archive, safely.

Only the chosen member's bytes are ever written, to a path chosen here: no path from the archive is
created on disk, so path traversal, links and device files cannot do harm. Everything is bounded
before it is read: the number of entries, the bytes a ``.tgz`` is decompressed through while looking
for the member (tar headers declare each entry's size, so an oversized entry is refused before any
of it is decompressed), and the member's own size; and the member's first bytes must look like a
checkpoint before anything is written. This is hand-written rather than ``tarfile.extractall`` or
``shutil.unpack_archive`` because those write the archive's own paths and impose none of these limits.
"""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from .constants import CHECKPOINT_SUFFIXES
from .errors import DownloadError

MAX_MEMBER_BYTES = 4 << 30
"""Largest checkpoint extracted from an archive (4 GiB; official checkpoints are 0.5-0.7 GB)."""
MAX_UNPACKED_BYTES = 6 << 30
"""Most bytes a tar archive is decompressed through, all entries together (6 GiB)."""
MAX_MEMBERS = 10_000
"""Most entries an archive may have (an official release has a handful)."""
_CHUNK = 1 << 20


def looks_like_checkpoint(head: bytes, suffix: str) -> bool:
    """Whether the first bytes of a file can start a checkpoint of that suffix: a PyTorch zip
    (``PK``) or legacy pickle (``0x80 0x02``) for ``.pth``/``.pt``, a safetensors header (8-byte
    little-endian length, then ``{``) for ``.safetensors``."""
    if suffix == ".safetensors":
        return len(head) >= 9 and 2 <= int.from_bytes(head[:8], "little") <= 100 << 20 and head[8:9] == b"{"
    return head.startswith(b"PK\x03\x04") or head[:2] == b"\x80\x02"


def extract_checkpoint(
    archive: Path,
    member: str | None,
    dest: Path,
    *,
    max_bytes: int = MAX_MEMBER_BYTES,
    max_total: int = MAX_UNPACKED_BYTES,
) -> Path:
    """Copy one checkpoint file out of a ``.tgz``/``.tar``/``.zip`` archive (or take a bare checkpoint).

    ``member`` is matched by file name; ``None`` picks the archive's only ``.pth``/``.pt``/``.safetensors``
    file. The copy is written to ``dest``, with the member's suffix. Returns the checkpoint's path. A
    damaged, oversized or unsuitable archive raises :class:`~clip_ebc.errors.DownloadError`.
    """
    if archive.suffix in CHECKPOINT_SUFFIXES:
        return archive  # a bare checkpoint, not an archive
    try:
        if tarfile.is_tarfile(archive):
            return _from_tar(archive, member, dest, max_bytes, max_total)
        if zipfile.is_zipfile(archive):
            return _from_zip(archive, member, dest, max_bytes)
    # OSError covers gzip's and bz2's corrupt-stream errors; write errors are DownloadErrors already.
    # NotImplementedError: a zip compression method Python lacks (Deflate64); RuntimeError: encryption.
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError,
            NotImplementedError, RuntimeError) as e:
        raise DownloadError(f"{archive.name} cannot be unpacked: it is damaged, incomplete or in an unsupported "
                            f"format ({type(e).__name__}: {e}).") from e
    raise DownloadError(f"{archive.name} is neither a tar/zip archive nor a checkpoint file.")


def _wanted(name: str, member: str | None) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base == member if member is not None else name.endswith(CHECKPOINT_SUFFIXES)


def _from_tar(archive: Path, member: str | None, dest: Path, max_bytes: int, max_total: int) -> Path:
    """One pass over the (possibly compressed) tar stream: each header is checked before the data
    behind it is decompressed, and the chosen member is copied when the stream reaches it."""
    chosen: list[str] = []
    candidates: list[str] = []
    result: Path | None = None
    total = entries = 0
    with tarfile.open(archive, mode="r|*") as tar:
        for entry in tar:
            entries += 1
            if entries > MAX_MEMBERS:
                raise DownloadError(f"{archive.name} has more than {MAX_MEMBERS:,} entries; refusing it.")
            total += max(entry.size, 0)
            if total > max_total:
                raise DownloadError(f"{archive.name} unpacks to more than {max_total:,} bytes (at {entry.name}); "
                                    "refusing it.")
            if not entry.isfile():
                continue
            if entry.name.endswith(CHECKPOINT_SUFFIXES):
                candidates.append(entry.name)
            if not _wanted(entry.name, member):
                continue
            chosen.append(entry.name)
            if len(chosen) > 1:
                break
            if entry.size > max_bytes:
                raise DownloadError(f"{entry.name} in {archive.name} is {entry.size:,} bytes, over the {max_bytes:,}-byte "
                                    "limit.")
            result = _with_suffix_of(dest, entry.name)
            with tar.extractfile(entry) as src:  # type: ignore[union-attr]
                _copy_checked(src, result, max_bytes, entry.name, archive.name)
    return _checked_choice(archive, member, chosen, candidates, result)


def _from_zip(archive: Path, member: str | None, dest: Path, max_bytes: int) -> Path:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DownloadError(f"{archive.name} has more than {MAX_MEMBERS:,} entries; refusing it.")
        files = [i for i in infos if not i.is_dir()]
        if any(i.filename.endswith("/data.pkl") for i in files) and not any(
            i.filename.endswith((".pth", ".pt")) for i in files
        ):
            return archive  # torch.save's own zip format: a bare checkpoint
        candidates = [i.filename for i in files if i.filename.endswith(CHECKPOINT_SUFFIXES)]
        chosen = [i for i in files if _wanted(i.filename, member)]
        if len(chosen) != 1:
            return _checked_choice(archive, member, [i.filename for i in chosen], candidates, None)
        info = chosen[0]
        if info.file_size > max_bytes:
            raise DownloadError(f"{info.filename} in {archive.name} is over the {max_bytes:,}-byte limit.")
        result = _with_suffix_of(dest, info.filename)
        with zf.open(info) as src:
            _copy_checked(src, result, max_bytes, info.filename, archive.name)
        return result


def _checked_choice(archive: Path, member: str | None, chosen: list[str], candidates: list[str],
                    result: Path | None) -> Path:
    if len(chosen) > 1 and member is not None:
        raise DownloadError(f"{archive.name} holds several files named {member}; cannot tell which to use.")
    if len(chosen) == 1 and result is not None:
        return result
    raise DownloadError(
        f"{archive.name} does not hold {member or 'exactly one checkpoint'}; its checkpoint files are: "
        f"{', '.join(candidates) or 'none'}."
    )


def _with_suffix_of(dest: Path, member: str) -> Path:
    """``dest``, with the member's suffix when they differ (the loader tells formats by suffix)."""
    suffix = Path(member).suffix
    return dest.with_suffix(suffix) if suffix in CHECKPOINT_SUFFIXES and suffix != dest.suffix else dest


def _copy_checked(src: IO[bytes], dest: Path, max_bytes: int, name: str, archive: str) -> None:
    """Copy at most ``max_bytes`` from ``src`` to ``dest``, after checking that the first bytes start a
    checkpoint of ``dest``'s suffix (nothing is written otherwise)."""
    first = src.read(_CHUNK)  # a read error here means a bad archive
    if not looks_like_checkpoint(first, dest.suffix):
        raise DownloadError(f"{name} in {archive} is not a PyTorch or safetensors checkpoint (its first bytes are "
                            f"{first[:8]!r}); refusing it.")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = dest.open("wb")
    except OSError as e:
        raise DownloadError(f"cannot write {dest}: {e.strerror or e}.") from e
    copied = 0
    with out:
        for chunk in _chunks(first, src):
            copied += len(chunk)
            if copied > max_bytes:
                raise DownloadError(f"{name} in {archive} unpacks to more than {max_bytes:,} bytes; refusing it.")
            try:
                out.write(chunk)
            except OSError as e:  # not the archive's fault: say so, rather than "damaged"
                raise DownloadError(f"cannot write {dest.name} to {dest.parent} ({e.strerror or e}); free some space "
                                    "there or set TMPDIR to a folder with room.") from e


def _chunks(first: bytes, src: IO[bytes]) -> Any:
    yield first
    yield from iter(lambda: src.read(_CHUNK), b"")
