"""Inputs given as http(s) URLs: what a URL serves, and image downloads bounded in size and time.

:func:`probe_url` reads a URL's first bytes and says whether it serves an image, a video, an HTML page
or something else (Content-Type and magic bytes); :func:`fetch_image` downloads an image (at most
``max_bytes``, within ``timeout`` seconds in all); :func:`load_url_image` also decodes it to RGB.
Failures raise :class:`~clip_ebc.errors.ImageError` naming the URL and, for HTTP errors, the status.
Two helpers serve files too: :func:`sniff` (what a file's first bytes are) and :func:`redact` (a URL's
password hidden in messages). Only the standard library is used.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .errors import ImageError
from .images import DEFAULT_MAX_PIXELS, load_image_bytes

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Largest image download, in bytes (50 MiB)."""
DEFAULT_DOWNLOAD_TIMEOUT = 60.0
"""Seconds an image download may take in all (connecting included)."""
DEFAULT_PROBE_TIMEOUT = 10.0
"""Seconds :func:`probe_url` may take in all."""
PROBE_BYTES = 4096
"""Bytes :func:`probe_url` reads to recognise the content."""

_VIDEO_TYPES = ("video/", "application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl",
                "application/dash+xml", "application/mp4", "application/x-mpegts")


def redact(source: str) -> str:
    """``source`` for messages and logs: a URL's password (``rtsp://user:secret@cam/``) shown as ``***``."""
    if "://" not in source or "@" not in source:
        return source
    try:
        parts = urlsplit(source)
        if parts.password is None:
            return source
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", source)


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*",
                b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3",  # Matroska / WebM (EBML)
                b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",  # MPEG program stream, MPEG-1/2 video
                b"FLV\x01", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # FLV, ASF / WMV
                b"#EXTM3U")  # HLS playlist


def sniff(head: bytes) -> str | None:
    """What the first bytes of a file look like: ``"video"``, ``"image"``, ``"audio"``, ``"html"``, or
    None when unknown. Videos are recognised by container signatures: MP4/MOV ``ftyp`` (brands of HEIF
    images and M4A audio excepted), Matroska/WebM EBML, AVI RIFF, MPEG-TS/M2TS sync bytes, MPEG-PS, FLV,
    ASF/WMV, Ogg Theora and HLS playlists; pass at least 1 KiB for the MPEG-TS check."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        return "image" if brand in _IMAGE_BRANDS else "audio" if brand in _AUDIO_BRANDS else "video"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "video"  # QuickTime files without an ftyp box
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"AVI ": "video", b"WEBP": "image", b"WAVE": "audio"}.get(head[8:12])
    if head.startswith(_VIDEO_MAGIC) or _is_mpegts(head, 188, 0) or _is_mpegts(head, 192, 4):
        return "video"
    if head.startswith(b"OggS"):
        return "video" if b"\x80theora" in head[:512] else "audio"
    if head.startswith(_IMAGE_MAGIC) or _is_bmp(head):
        return "image"
    if head.startswith((b"ID3", b"fLaC")) or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio"  # MP3 (tagged or not), FLAC, ADTS AAC
    text = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    return None


def _is_mpegts(head: bytes, packet: int, offset: int) -> bool:
    """Sync bytes (0x47) at the start of three or more consecutive packets."""
    positions = range(offset, len(head), packet)
    return len(positions) >= 3 and all(head[p] == 0x47 for p in positions[:6])


def _is_bmp(head: bytes) -> bool:
    dib_header = int.from_bytes(head[14:18], "little") if len(head) >= 18 else 0
    return head.startswith(b"BM") and dib_header in (12, 40, 52, 56, 64, 108, 124)


@dataclass(frozen=True)
class UrlProbe:
    """What a URL serves. kind: ``"image"``, ``"video"``, ``"html"``, ``"audio"`` or ``"other"``;
    status: the HTTP status of the answer; content_type: its Content-Type without parameters ("" when
    absent); length: its Content-Length in bytes, when given."""

    url: str
    kind: str
    status: int
    content_type: str
    length: int | None


def _kind(content_type: str, head: bytes) -> str:
    sniffed = sniff(head) if head else None
    if sniffed is not None:
        return sniffed
    if content_type.startswith("image/"):
        return "image"
    if content_type.startswith(_VIDEO_TYPES):
        return "video"
    if content_type in ("text/html", "application/xhtml+xml"):
        return "html"
    if content_type.startswith("audio/"):
        return "audio"
    return "other"


def _user_agent() -> str:
    from . import __version__

    return f"clip-ebc/{__version__}"


def _open(url: str, timeout: float) -> Any:
    """GET ``url``; the response, or an ImageError with one sentence saying why not."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageError(f"{redact(url)} is not an http(s) URL.")
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent(), "Accept": "*/*"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # the scheme is checked above
    except urllib.error.HTTPError as e:
        e.close()
        raise ImageError(f"{redact(url)} answered HTTP {e.code} ({e.reason}); check the address.") from e
    except urllib.error.URLError as e:
        raise ImageError(f"{redact(url)}: {_network_reason(e.reason, url, timeout)}.") from e
    except TimeoutError as e:
        raise ImageError(f"{redact(url)}: no answer within {timeout:g} s; check the address, or raise the timeout.") from e
    except (OSError, ValueError, http.client.HTTPException) as e:  # a bad status line, a malformed URL, ...
        raise ImageError(f"{redact(url)}: the request failed ({e}).") from e


def _network_reason(reason: Any, url: str, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused (is the server at {urlsplit(url).netloc.rsplit('@', 1)[-1]} running?)"
    if isinstance(reason, socket.gaierror):
        return "cannot resolve the host name; check the address and the network"
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s; check the address, or raise the timeout"
    return f"cannot connect ({getattr(reason, 'strerror', None) or reason})"


def _set_read_timeout(response: Any, seconds: float) -> None:
    """Bound the next socket read (urllib's timeout bounds each read, not the whole download)."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _read(response: Any, url: str, *, limit: int, deadline: float, timeout: float, stop_at_limit: bool) -> bytes:
    """Read the body until its end, ``limit`` bytes (stop_at_limit) or an error past ``limit``, and
    never past ``deadline`` (time.monotonic())."""
    chunks: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        too_slow = f"{redact(url)}: the download took longer than {timeout:g} s; raise the timeout, or use a faster source."
        if remaining <= 0:
            raise ImageError(too_slow)
        _set_read_timeout(response, remaining)
        try:
            chunk = response.read1(65536)
        except TimeoutError as e:
            raise ImageError(too_slow) from e
        except (OSError, http.client.HTTPException) as e:
            raise ImageError(f"{redact(url)}: the download broke off after {total:,} bytes ({e}).") from e
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total >= limit and stop_at_limit:
            return b"".join(chunks)[:limit]
        if total > limit:
            raise ImageError(f"{redact(url)} is larger than the limit of {_size(limit)}; download it yourself, or raise "
                        "max_bytes.")


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def _header_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_type(response: Any) -> str:
    return (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def probe_url(url: str, *, timeout: float = DEFAULT_PROBE_TIMEOUT) -> UrlProbe:
    """Find out what an http(s) URL serves from its Content-Type and first :data:`PROBE_BYTES` bytes
    (the connection is closed after them, so live streams are fine). ``timeout``: seconds in all.

    Raises :class:`~clip_ebc.errors.ImageError` when the URL cannot be read (HTTP errors, refused
    connections, unknown hosts, time-outs).
    """
    deadline = time.monotonic() + timeout
    with _open(url, timeout) as response:
        head = _read(response, url, limit=PROBE_BYTES, deadline=deadline, timeout=timeout, stop_at_limit=True)
        content_type = _content_type(response)
        return UrlProbe(response.geturl(), _kind(content_type, head), response.status, content_type,
                        _header_length(response))


def fetch_image(url: str, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_DOWNLOAD_TIMEOUT) -> bytes:
    """Download the image at an http(s) URL: at most ``max_bytes`` bytes, within ``timeout`` seconds in
    all. Returns the encoded bytes (decode them with :func:`clip_ebc.images.load_image_bytes`).

    Raises :class:`~clip_ebc.errors.ImageError` for HTTP errors, a body over the limit, a download that
    takes too long, and an HTML page or a video served instead of an image.
    """
    deadline = time.monotonic() + timeout
    with _open(url, timeout) as response:
        length = _header_length(response)
        if length is not None and length > max_bytes:
            raise ImageError(f"{redact(url)} is {_size(length)}, larger than the limit of {_size(max_bytes)}; download it "
                             "yourself, or raise max_bytes.")
        content_type = _content_type(response)
        data = _read(response, url, limit=max_bytes, deadline=deadline, timeout=timeout, stop_at_limit=False)
    kind = _kind(content_type, data[:PROBE_BYTES])
    if kind == "html":
        raise ImageError(f"{redact(url)} served an HTML page ({content_type or 'text/html'}), not an image; check the address "
                         "(a login or error page?).")
    if kind == "video":
        raise ImageError(f"{redact(url)} serves a video ({content_type or 'video'}), not an image; read it as a video.")
    return data


def load_url_image(url: str, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Download and decode the image at ``url`` (see :func:`fetch_image`): RGB uint8 (H, W, 3)."""
    return load_image_bytes(fetch_image(url, max_bytes=max_bytes, timeout=timeout), url, max_pixels=max_pixels)
