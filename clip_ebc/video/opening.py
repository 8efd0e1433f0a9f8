"""Opening (and reopening) a video source with PyAV, and one-line explanations of why it failed."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ImageError, VideoError
from ..remote import probe_url, redact, sniff
from .sources import _read_head, is_camera, is_stream_url


@dataclass
class _Opened:
    """An open container and its video stream."""

    container: Any
    stream: Any


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return None


class _Opener:
    """Opens (and reopens) one source, translating failures into one-line VideoErrors."""

    def __init__(self, av: Any, source: str, timeout: float, options: dict[str, str]) -> None:
        self.av, self.source, self.timeout = av, source, timeout
        self.name = redact(source)
        self.remote = is_stream_url(source)
        self.camera = is_camera(source)
        self.url = source if "://" in source else None
        self.options = options
        self.format: str | None = None
        if self.camera and sys.platform.startswith("linux"):
            self.format = "v4l2"
        scheme = source.split("://", 1)[0].lower() if self.url else ""
        if scheme in ("rtsp", "rtsps"):
            # TCP: no packet loss (UDP is often blocked, and loses packets on busy links)
            self.options.setdefault("rtsp_transport", "tcp")
        if self.remote and scheme in ("http", "https", "rtmp", "rtmps"):
            self.options.setdefault("rw_timeout", str(int(timeout * 1_000_000)))

    def open(self) -> _Opened:
        """Open the source and find its video stream; VideoError otherwise."""
        av, name = self.av, self.name
        if not (self.remote or self.camera):
            self._check_file()
        try:
            container = av.open(self.source, format=self.format, options=self.options,
                                timeout=(self.timeout, self.timeout) if (self.remote or self.camera) else None)
        except av.error.FFmpegError as e:
            raise VideoError(self.explain(e)) from e
        except OSError as e:  # PyAV raises builtin OSErrors for some I/O failures
            raise VideoError(f"{name}: cannot open it ({e.strerror or e}).") from e
        try:
            fmt = container.format.name or ""
            if fmt.endswith("_pipe") or fmt.startswith("image2"):
                where = "served an image" if self.remote else "is an image"
                raise VideoError(f"{name} {where} ({fmt.removesuffix('_pipe')}), not a video; pass it as an image input.")
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams})
                holds = f"only {' and '.join(kinds)} streams" if kinds else "no media streams at all"
                raise VideoError(f"{name} has no video stream (it holds {holds}); pass a file with video.")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                tag = getattr(stream, "codec_tag", "") or ""
                what = f" ({tag.strip()})" if tag.strip() else ""
                raise VideoError(f"{name}: its video codec{what} is unknown to, or not supported by, this FFmpeg "
                                 "build; convert it first, e.g. ffmpeg -i INPUT -c:v libx264 OUTPUT.mp4.")
            for other in container.streams:  # audio, subtitles: not even demuxed
                if other.index != stream.index:
                    other.discard = av.stream.Discard.ALL
            stream.codec_context.thread_type = "AUTO"  # slice and frame threads
        except BaseException:
            container.close()
            raise
        return _Opened(container, stream)

    def _check_file(self) -> None:
        path = Path(self.source)
        if not path.exists():
            raise VideoError(f"{path}: no such file.")
        if path.is_dir():
            raise VideoError(f"{path} is a directory, not a video file.")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise VideoError(f"{path}: cannot read it ({e.strerror}).") from e
        if size == 0:
            raise VideoError(f"{path} is empty (0 bytes).")
        head = _read_head(path, 4096) or b""
        kind = sniff(head)
        if kind == "image":
            raise VideoError(f"{path} is an image, not a video; pass it as an image input.")
        if kind == "html":
            raise VideoError(f"{path} is an HTML page, not a video (a download that saved an error page?).")

    def explain(self, e: BaseException) -> str:
        """One sentence saying why opening failed."""
        av, name = self.av, self.name
        errors = av.error
        if isinstance(e, (errors.ExitError, errors.TimeoutError)):
            return f"{name}: no answer within {self.timeout:g} s; check the address, or raise the timeout."
        if isinstance(e, errors.ConnectionRefusedError):
            host = urlsplit(name).netloc.rsplit("@", 1)[-1] if self.url else name
            return f"{name}: connection refused (is the server at {host} running?)."
        if self.url and urlsplit(name).scheme.lower() in ("http", "https"):
            explained = _explain_http(self.source, self.timeout)
            if explained:
                return f"{name} {explained}" if explained.startswith(("answered", "served")) else f"{name}: {explained}"
        http = {errors.HTTPNotFoundError: "404 (not found)", errors.HTTPForbiddenError: "403 (forbidden)",
                errors.HTTPUnauthorizedError: "401 (unauthorized; does it need credentials?)",
                errors.HTTPBadRequestError: "400 (bad request)", errors.HTTPServerError: "5xx (server error)",
                errors.HTTPOtherClientError: "4xx (client error)"}
        for cls, what in http.items():
            if isinstance(e, cls):
                return f"{name} answered HTTP {what}; check the address."
        if self.url:
            host = urlsplit(name).hostname
            if host:
                try:
                    socket.getaddrinfo(host, None)
                except socket.gaierror:
                    return f"{name}: cannot resolve the host name {host!r}; check the address and the network."
                except (OSError, UnicodeError):
                    pass
        if self.camera:
            return f"{name}: cannot open the camera ({_reason(e)}); is it connected and free?"
        if isinstance(e, errors.PermissionError):
            return f"{name}: permission denied."
        if isinstance(e, (errors.InvalidDataError, errors.EOFError)) and not self.url:
            if _mp4_without_index(Path(name)):
                return (f"{name} is truncated: its MP4 index ('moov' box) is missing, as when a recording or "
                        "download is cut short; re-download it, or repair it with a tool such as untrunc.")
            return f"{name} is not a video that can be read (unknown format, or corrupt data)."
        if isinstance(e, errors.InvalidDataError):
            return f"{name} did not send a video that can be read (unknown format, or corrupt data)."
        return f"{name}: cannot open it ({_reason(e)})."


def _reason(e: BaseException) -> str:
    """A short reason from an FFmpeg error (its message without the file name)."""
    strerror = getattr(e, "strerror", None)
    if strerror:
        return str(strerror)[:1].lower() + str(strerror)[1:]
    return str(e) or type(e).__name__


def _short_reason(message: str, name: str) -> str:
    """The reason inside one of our messages ("<name>: <reason>; <fix>."), for a one-line summary."""
    if message.startswith(name):
        message = message[len(name):].lstrip(": ")
    return message.split("; ", 1)[0].rstrip(".")


def _explain_http(url: str, timeout: float) -> str | None:
    """Ask an http(s) URL what it serves, to explain why FFmpeg could not open it: the sentence after
    the URL ("answered HTTP 404 (Not Found); ..."), or None when that does not explain it."""
    try:
        probe = probe_url(url, timeout=min(timeout, 10.0))
    except ImageError as e:
        message, name = str(e), redact(url)
        return message[len(name):].lstrip(": ") if message.startswith(name) else None
    if probe.kind == "html":
        return f"served an HTML page ({probe.content_type or 'text/html'}), not a video; check the address."
    if probe.kind == "image":
        return f"served an image ({probe.content_type or 'image'}), not a video; pass it as an image input."
    return None


def _mp4_without_index(path: Path) -> bool:
    """True for an MP4/MOV file whose top-level boxes hold media data but no 'moov' index."""
    try:
        with open(path, "rb") as f:
            size_total = os.fstat(f.fileno()).st_size
            offset, seen = 0, set()
            for _ in range(10_000):  # bounded: real files have a handful of top-level boxes
                if offset + 8 > size_total:
                    break
                f.seek(offset)
                header = f.read(16)
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if size == 1 and len(header) >= 16:
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:
                    size = size_total - offset
                seen.add(kind)
                if size < 8:
                    break
                offset += size
            return b"ftyp" in seen and b"moov" not in seen
    except OSError:
        return False
