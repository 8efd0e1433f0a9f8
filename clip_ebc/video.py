"""Video frame sources (files, network streams, cameras) and an MP4 writer, on PyAV.

:class:`VideoReader` decodes in a background thread and yields sampled :class:`Frame` objects (RGB
uint8 (H, W, 3) with their time); :class:`VideoWriter` encodes RGB frames as a playable MP4.
:func:`parse_every`, :func:`is_stream_url`, :func:`is_camera` and :func:`is_video_file` classify
inputs without decoding anything.

PyAV is the optional extra ``clip-ebc[video]``; it is imported only when a video is opened, so image
inputs work without it.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

import numpy as np

from .errors import ConfigError, ImageError, VideoError, missing_extra
from .remote import probe_url, redact, sniff

if TYPE_CHECKING:
    import av

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
                  ".asf", ".mpg", ".mpeg", ".vob", ".3gp", ".3g2", ".ogv", ".mxf", ".h264", ".264", ".hevc")
"""File suffixes treated as videos when a file's content does not say (see :func:`is_video_file`)."""

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "rtp")
"""URL schemes :func:`is_stream_url` accepts."""

DEFAULT_RECONNECT = 5
"""Reconnection attempts after a live source drops, before :class:`VideoReader` gives up."""
DEFAULT_TIMEOUT = 10.0
"""Seconds without data after which a network read (or opening) counts as failed."""
DEFAULT_BACKOFF = 1.0
"""Seconds before the first reconnection attempt; each further attempt waits twice as long ..."""
MAX_BACKOFF = 30.0
"""... up to this many seconds."""
DEFAULT_QUEUE_SIZE = 8
"""Decoded frames buffered between the decoding thread and the consumer."""

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Which frames to keep: one per ``seconds`` of presentation time, or every ``frames``-th decoded
    frame. Exactly one of the two is set."""

    seconds: float | None = 1.0
    frames: int | None = None

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.frames is None):
            raise ConfigError("a Sampling needs exactly one of seconds= and frames=, e.g. Sampling(seconds=1.0).")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"sampling interval {self.seconds!r} s must be a positive number of seconds.")
        if self.frames is not None and (isinstance(self.frames, bool) or int(self.frames) != self.frames
                                        or self.frames < 1):
            raise ConfigError(f"sampling interval {self.frames!r} frames must be a whole number of at least 1.")

    def __str__(self) -> str:
        return f"{self.frames}f" if self.frames is not None else f"{self.seconds:g}s"


_EVERY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|ms|f)?", re.IGNORECASE)


def parse_every(text: str | float | Sampling) -> Sampling:
    """Parse a sampling interval: ``"1s"``, ``"0.5s"``, ``"250ms"``, ``"12f"`` (every 12th frame), or a
    plain number of seconds (``"2"``, ``0.5``).

    Raises :class:`~clip_ebc.errors.ConfigError` naming the value and the accepted forms.
    """
    if isinstance(text, Sampling):
        return text
    bad = ConfigError(
        f"invalid sampling interval {text!r}: use seconds ('1s', '0.5s' or a plain number), milliseconds "
        "('250ms') or a frame count ('12f' keeps every 12th frame); it must be more than zero."
    )
    if isinstance(text, bool):
        raise bad
    if isinstance(text, (int, float)):
        if not (math.isfinite(text) and text > 0):
            raise bad
        return Sampling(seconds=float(text))
    match = _EVERY.fullmatch(str(text).strip())
    if match is None:
        raise bad
    number, unit = match.group(1), (match.group(2) or "s").lower()
    if unit == "f":
        if "." in number or int(number) < 1:
            raise bad
        return Sampling(seconds=None, frames=int(number))
    seconds = float(number) / (1000.0 if unit == "ms" else 1.0)
    if seconds <= 0:
        raise bad
    return Sampling(seconds=seconds)


def _exact(x: float) -> Fraction:
    """A float as the decimal it was written as (0.1 -> 1/10), so timestamp comparisons are exact."""
    return Fraction(repr(float(x)))


# --------------------------------------------------------------------------------------------------
# classifying inputs (no decoding)
# --------------------------------------------------------------------------------------------------


def is_stream_url(source: Any) -> bool:
    """True for network stream addresses: ``rtsp://``, ``rtsps://``, ``rtmp(s)://``, ``http(s)://``,
    ``srt://``, ``udp://``, ``rtp://``, and HLS playlists (``.m3u8``, also local ones).

    Every http(s) URL counts, since a web server may serve a video; use
    :func:`clip_ebc.remote.probe_url` to tell an image URL from a video one.
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source)
    if not isinstance(text, str):
        return False
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return True
    return not scheme and text.lower().split("?", 1)[0].endswith(".m3u8")


_CAMERA = re.compile(r"/dev/video\d+")


def is_camera(source: Any) -> bool:
    """True for a Video4Linux camera device, ``/dev/videoN`` (Linux)."""
    return isinstance(source, (str, os.PathLike)) and bool(_CAMERA.fullmatch(str(os.fspath(source))))


def _read_head(path: PathLike, size: int = 1024) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return None


def is_video_file(path: PathLike) -> bool:
    """True when ``path`` holds a video, judged by its first bytes (an MP4 named ``.jpg`` is a video, a
    JPEG named ``.mp4`` is not); when the content is unknown or unreadable (a missing file, a corrupt
    header), by the suffix (:data:`VIDEO_SUFFIXES`)."""
    head = _read_head(path) if os.path.isfile(path) else None
    kind = sniff(head) if head else None
    if kind is not None:
        return kind == "video"
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# --------------------------------------------------------------------------------------------------
# frames and the reader
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Frame:
    """One sampled video frame.

    index: position among decoded frames, 0-based (from the first frame, or the first frame at or after
    ``start``); frames that were not sampled count too. time: seconds from the presentation timestamps,
    relative to the start of the stream (live sources: to the first frame received, continued across
    reconnections). wallclock: when a live frame arrived (local time, with time zone); None for files.
    rgb: (H, W, 3) uint8, the display rotation applied.
    """

    index: int
    time: float
    wallclock: datetime | None
    rgb: np.ndarray


def _import_av(what: str):
    try:
        import av
    except ImportError as e:
        raise missing_extra("video", what, "PyAV (av)") from e
    return av


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Convert one decoded frame to RGB uint8 (H, W, 3), rotated for display. Only sampled frames
    come here (a module function so tests can count the calls)."""
    rgb = frame.to_ndarray(format="rgb24")
    rotation = getattr(frame, "rotation", 0) or 0
    if rotation % 360:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=round(rotation / 90) % 4))
    return rgb


_END = object()


class _Channel:
    """The bounded hand-over between the decoding thread and the consumer.

    At most ``size`` frames wait; events and the final item never block. With ``drop_oldest`` (live
    sources) a full channel drops its oldest frame instead of blocking the decoder, so a slow consumer
    sees recent frames and the network connection keeps being read.
    """

    def __init__(self, size: int, drop_oldest: bool) -> None:
        self.items: collections.deque = collections.deque()
        self.size, self.drop_oldest = size, drop_oldest
        self.frames = 0
        self.dropped = 0
        self.closed = False
        self.cond = threading.Condition()

    def put_frame(self, frame: Frame) -> bool:
        """Queue a frame; False once the consumer has closed the channel."""
        with self.cond:
            while self.frames >= self.size and not self.closed:
                if self.drop_oldest:
                    for i, item in enumerate(self.items):
                        if isinstance(item, Frame):
                            del self.items[i]
                            self.frames -= 1
                            self.dropped += 1
                            break
                    break
                self.cond.wait(0.5)
            if self.closed:
                return False
            self.items.append(frame)
            self.frames += 1
            self.cond.notify_all()
            return True

    def put(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def get(self, alive: Callable[[], bool]) -> Any:
        with self.cond:
            while not self.items:
                if not alive():  # the thread always ends with an item; this is a safety net
                    return _END
                self.cond.wait(0.5)
            item = self.items.popleft()
            if isinstance(item, Frame):
                self.frames -= 1
            self.cond.notify_all()
            return item

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.items.clear()
            self.cond.notify_all()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless closed first; True when closed."""
        with self.cond:
            return self.cond.wait_for(lambda: self.closed, timeout=seconds)


@dataclass
class _Event:
    message: str


@dataclass
class _Failure:
    error: BaseException


@dataclass
class _Opened:
    """An open container and its video stream."""

    container: Any
    stream: Any


class VideoReader:
    """Decode a video file, network stream or camera and yield sampled frames::

        with VideoReader("clip.mp4", parse_every("1s")) as reader:
            for frame in reader:          # Frame(index, time, wallclock, rgb (H, W, 3) uint8)
                ...
            reader.stopped                # None, or where a truncated / corrupt file stopped decoding

    source: a file path, a stream URL (:func:`is_stream_url`) or a camera (:func:`is_camera`).
    every: a :class:`Sampling`, or text for :func:`parse_every`. With seconds ``s`` the first frame whose
    timestamp is at or after ``start + k*s`` is kept, for k = 0, 1, 2, ... (exact for a variable frame
    rate); with ``frames`` ``n``, every n-th decoded frame. Frames that are not kept are never converted.
    start, duration: seconds; files seek to ``start`` (decoding forward to the exact frame) and stop
    before ``start + duration``; live sources skip frames before ``start`` and stop after ``duration``.
    reconnect: how many times a live source is reopened after its connection drops or stalls, waiting
    ``backoff`` seconds before the first attempt and twice as long before each next one (at most
    :data:`MAX_BACKOFF`); the count starts again once frames arrive. timeout: seconds without data before
    a network read fails (a stall counts as a drop); opening a network source may take twice as long
    (connecting, then probing the stream each get ``timeout``). queue_size: decoded
    frames buffered ahead of the consumer; a live source drops the oldest when the consumer falls behind
    (counted in :attr:`dropped`). options: extra FFmpeg options for opening (e.g.
    ``{"rtsp_transport": "udp"}``). on_event: called with one line per reconnection, in the thread that
    iterates.

    Opening errors (missing file, no video stream, unsupported codec, HTTP errors, connection refused,
    ...) raise :class:`~clip_ebc.errors.VideoError` here; a live source that cannot be reopened raises it
    from the iteration, after the frames that did arrive. Decoding runs in a daemon thread that
    :meth:`close`, the end of a ``with`` block or garbage collection stop.
    """

    def __init__(self, source: PathLike, every: Sampling | str | float = Sampling(1.0, None), *,
                 start: float | None = None, duration: float | None = None, reconnect: int = DEFAULT_RECONNECT,
                 timeout: float = DEFAULT_TIMEOUT, backoff: float = DEFAULT_BACKOFF,
                 queue_size: int = DEFAULT_QUEUE_SIZE, options: Mapping[str, str] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.every = parse_every(every)
        for name, value in (("start", start), ("duration", duration)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}={value!r} must be a number of seconds, zero or more.")
        if duration is not None and duration <= 0:
            raise ConfigError(f"duration={duration!r} must be more than zero seconds.")
        if isinstance(reconnect, bool) or int(reconnect) != reconnect or reconnect < 0:
            raise ConfigError(f"reconnect={reconnect!r} must be a whole number of attempts, 0 or more.")
        if not (timeout > 0 and backoff >= 0 and queue_size >= 1):
            raise ConfigError("timeout must be more than 0 seconds, backoff 0 or more, queue_size at least 1.")
        self.source = os.fspath(source) if isinstance(source, os.PathLike) else source
        if not isinstance(self.source, str):
            raise VideoError(f"cannot read a video from a {type(source).__name__}; pass a file path, a stream URL or a "
                             "camera device.")
        self.name = redact(self.source)
        """The source for messages (a URL's password hidden)."""
        self.on_event = on_event
        self._timeout = timeout
        self._decoder: _Decoder | None = None
        self._thread: threading.Thread | None = None
        self._done = False

        what = "streams" if is_stream_url(self.source) else "cameras" if is_camera(self.source) else "video files"
        av = _import_av(f"reading {what}")
        opener = _Opener(av, self.source, timeout, dict(options or {}))
        opened = opener.open()
        try:
            stream = opened.stream
            cc = stream.codec_context
            self.codec: str = cc.name
            self.live: bool = opener.camera or (opener.remote and _duration(opened.container, stream) is None)
            """True for live sources (network streams without a known duration, cameras)."""
            self.duration: float | None = None if self.live else _duration(opened.container, stream)
            """Seconds, when the source says (files; None for live sources)."""
            rate = stream.average_rate or stream.guessed_rate
            self.fps: float | None = float(rate) if rate else None
            """Average frame rate (frames per second), when known."""
            if start is not None and self.duration is not None and start >= self.duration:
                raise VideoError(f"{self.name} is {self.duration:.2f} s long, so start={start:g} s is past its end; "
                                 "choose an earlier start.")
            decoder = _Decoder(opener, opened, self.every, start, duration, self.live, reconnect, backoff,
                               _Channel(queue_size, drop_oldest=self.live), self.fps)
        except BaseException:
            opened.container.close()
            raise
        self._decoder = decoder
        self._thread = threading.Thread(target=decoder.run, name=f"clip-ebc video {self.name}", daemon=True)
        self._thread.start()
        # collecting the reader stops the thread (the thread holds the decoder, not the reader)
        self._finalizer = weakref.finalize(self, decoder.channel.close)

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._done or self._decoder is None:
            raise StopIteration
        decoder, thread = self._decoder, self._thread
        while True:
            item = decoder.channel.get(thread.is_alive)
            if isinstance(item, Frame):
                return item
            if isinstance(item, _Event):
                if self.on_event is not None:
                    self.on_event(item.message)
                continue
            self._done = True
            self.close()
            if isinstance(item, _Failure):
                raise item.error
            raise StopIteration

    # -- state -----------------------------------------------------------------------------------
    @property
    def stopped(self) -> str | None:
        """Why decoding of a file ended early (``"decoding stopped at 12.40 s (frame 310): <reason>"``),
        or None when it ended normally; meaningful once iteration is over."""
        return self._decoder.stopped if self._decoder else None

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) in pixels of the frames' RGB (after the display rotation), taken from the first
        decoded frame (this waits for it, at most ``timeout`` seconds); None when no frame decodes."""
        decoder = self._decoder
        if decoder is None:
            return None
        decoder.first_frame.wait(self._timeout)
        return decoder.size

    @property
    def dropped(self) -> int:
        """Sampled frames of a live source dropped because the consumer fell behind."""
        return self._decoder.channel.dropped if self._decoder else 0

    @property
    def frames_decoded(self) -> int:
        """Frames decoded so far, sampled or not (from ``start`` on, when given)."""
        return self._decoder.index if self._decoder else 0

    def close(self) -> None:
        """Stop decoding and release the source. The thread ends within a moment, or, when blocked in a
        network read, once that read returns or times out (``timeout``); it closes the source itself."""
        self._done = True
        if self._decoder is not None:
            self._decoder.channel.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def __enter__(self):  # -> Self (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({self.name!r}, every={self.every}, live={getattr(self, 'live', None)})"


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return None


# --------------------------------------------------------------------------------------------------
# opening sources and explaining failures
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# the decoding thread
# --------------------------------------------------------------------------------------------------


class _Reseek(Exception):
    """Internal: the seek landed after start; seek again, earlier."""


class _Decoder:
    """Runs in the background thread: demux, decode, sample, convert, hand over; reconnect live
    sources. Holds no reference to the VideoReader, so dropping the reader stops it."""

    def __init__(self, opener: _Opener, opened: _Opened, every: Sampling, start: float | None,
                 duration: float | None, live: bool, reconnect: int, backoff: float, channel: _Channel,
                 fps: float | None) -> None:
        self.opener, self.opened = opener, opened
        self.every, self.live = every, live
        self.start = _exact(start) if start is not None else Fraction(0)
        self.end = self.start + _exact(duration) if duration is not None else None
        self.step = _exact(every.seconds) if every.seconds is not None else None
        # files seek to start; when the first frame after a seek is already past start, seek again earlier
        self.seek_to: Fraction | None = self.start if start is not None and start > 0 and not live else None
        self.seek_from = Fraction(0)
        self.seek_margin = Fraction(0)
        self.after_seek = False
        self.reconnect, self.backoff = reconnect, backoff
        self.channel = channel
        self.frame_step = Fraction(1) / Fraction(fps).limit_denominator(100_000) if fps else Fraction(1, 25)
        self.index = 0  # frames decoded at or after start
        self.next_time = self.start  # the next sampling target (seconds mode)
        self.stopped: str | None = None
        self.first_frame = threading.Event()  # set once the first frame decoded (or the thread ended)
        self.size: tuple[int, int] | None = None
        self.last_time: Fraction | None = None  # time of the last decoded frame
        self.last_end: Fraction | None = None  # ... plus its duration
        self.decode_error: str | None = None
        self.any_frame = False  # any frame decoded at all (before start too)
        # live timeline: time = offset + (pts - first pts of the connection) * time_base
        self.t0_wall: float | None = None
        self.offset = Fraction(0)
        self.conn_first_pts: int | None = None
        self.conn_frames = 0

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except VideoError as e:
            self.channel.put(_Failure(e))
        except BaseException as e:  # noqa: BLE001 - reported to the consumer, never lost in the thread
            self.channel.put(_Failure(VideoError(f"{self.opener.name}: decoding failed ({type(e).__name__}: {e}).")))
        finally:
            self._close_container()
            self.first_frame.set()
            self.channel.put(_END)

    def _close_container(self) -> None:
        if self.opened is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail; nothing to keep
                self.opened.container.close()
            self.opened = None

    def _run(self) -> None:
        av = self.opener.av
        attempt = 0
        while True:
            try:
                finished = self._pump()
            except (av.error.FFmpegError, OSError) as e:
                if self.channel.closed:
                    return
                if not self.live:
                    self._file_failed(e)
                    return
                reason = self._drop_reason(e)
            else:
                if finished or self.channel.closed:
                    return
                if not self.live:
                    self._file_ended()
                    return
                reason = "the source ended the stream"
            # live: reopen with exponential backoff
            self._close_container()
            if self.conn_frames:
                attempt = 0
            while True:
                attempt += 1
                if attempt > self.reconnect:
                    plural = "s" * (self.reconnect != 1)
                    tried = f"after {self.reconnect} reconnection attempt{plural}" if self.reconnect else "(reconnect=0)"
                    raise VideoError(f"stream {self.opener.name} stopped: {reason}; gave up {tried}. Check the "
                                     "source, or allow more attempts with reconnect=.")
                delay = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF)
                shown = f"{delay:.1f}" if delay >= 0.1 else f"{delay:.2g}"
                self.channel.put(_Event(f"stream {self.opener.name}: connection lost ({reason}); reconnecting in "
                                        f"{shown} s (attempt {attempt} of {self.reconnect})"))
                if self.channel.sleep(delay):
                    return
                try:
                    self.opened = self.opener.open()
                except VideoError as e:
                    reason = _short_reason(str(e), self.opener.name)
                    if self.channel.closed:
                        return
                    continue
                self.conn_first_pts = None
                self.conn_frames = 0
                break

    def _drop_reason(self, e: BaseException) -> str:
        errors = self.opener.av.error
        if isinstance(e, (errors.ExitError, errors.TimeoutError)):
            return f"no data for {self.opener.timeout:g} s"
        return _reason(e)

    # -- decoding --------------------------------------------------------------------------------
    def _pump(self) -> bool:
        """Decode the open container until it ends (False) or the wanted range is done / the consumer
        closed (True). Raises FFmpeg errors from reading (live: a drop; files: where decoding stopped)."""
        while True:
            if self.seek_to is not None:
                self._seek()
            try:
                return self._decode()
            except _Reseek:
                continue

    def _seek(self) -> None:
        av = self.opener.av
        container, stream = self.opened.container, self.opened.stream
        target, self.seek_to = self.seek_to, None
        try:
            container.seek(int(target / stream.time_base) + (stream.start_time or 0), stream=stream, backward=True)
        except av.error.FFmpegError:
            return  # not seekable: decode on from here, skipping frames before start
        self.seek_from = target
        self.after_seek = True

    def _decode(self) -> bool:
        av = self.opener.av
        container, stream = self.opened.container, self.opened.stream
        cc = stream.codec_context
        consecutive_errors = 0
        for packet in container.demux(stream):
            if self.channel.closed:
                return True
            try:
                frames = cc.decode(packet if packet.size else None)
            except av.error.FFmpegError as e:
                if self.live:
                    continue  # a damaged packet in a live stream: the next key frame repairs it
                self.decode_error = self.decode_error or _reason(e)
                consecutive_errors += 1
                if consecutive_errors > 100:
                    raise
                continue
            consecutive_errors = 0
            for frame in frames:
                if self._frame(frame, stream, packet):
                    return True
        return False

    def _frame(self, frame: Any, stream: Any, packet: Any) -> bool:
        """Sample one decoded frame; True when the wanted range is done or the consumer left."""
        if not self.any_frame:
            self.any_frame = True
            turned = (getattr(frame, "rotation", 0) or 0) % 180 != 0
            self.size = (frame.height, frame.width) if turned else (frame.width, frame.height)
            self.first_frame.set()
        now = time.monotonic()
        t = self._time(frame, stream, now)
        duration = frame.duration if getattr(frame, "duration", 0) else packet.duration
        self.last_time = t
        self.last_end = t + (duration * stream.time_base if duration and stream.time_base else self.frame_step)
        if self.after_seek:
            self.after_seek = False
            if t > self.start and self.seek_from > 0:
                # the seek landed after start (some formats seek coarsely): seek further back, up to the beginning
                self.seek_margin = self.seek_margin * 4 if self.seek_margin else Fraction(1)
                self.seek_to = max(self.start - self.seek_margin, Fraction(0))
                raise _Reseek
        if t < self.start:
            return False
        if self.end is not None and t >= self.end:
            return True
        index = self.index
        self.index += 1
        if self.step is not None:
            if t < self.next_time:
                return False
            k = math.floor((t - self.start) / self.step) + 1
            self.next_time = self.start + k * self.step
        elif index % self.every.frames:
            return False
        wallclock = datetime.now().astimezone() if self.live else None
        item = Frame(index=index, time=float(t), wallclock=wallclock, rgb=_to_rgb(frame))
        return not self.channel.put_frame(item)

    def _time(self, frame: Any, stream: Any, now: float) -> Fraction:
        tb = stream.time_base or Fraction(1, 90000)
        pts = frame.pts
        if not self.live:
            if pts is None:
                return (self.last_time + self.frame_step) if self.last_time is not None else Fraction(0)
            return (pts - (stream.start_time or 0)) * tb
        # live: relative to the first frame received, continued across reconnections (and jumps back)
        if self.t0_wall is None:
            self.t0_wall = now
        self.conn_frames += 1
        if pts is None:
            return (self.last_time + self.frame_step) if self.last_time is not None else Fraction(0)
        if self.conn_first_pts is None or self.offset + (pts - self.conn_first_pts) * tb <= self.last_time:
            # a new connection, or timestamps that went back: go on from the wall clock, never before the
            # last frame (a reconnected source may restart its timestamps at 0, or jump anywhere)
            self.conn_first_pts = pts
            self.offset = Fraction(0) if self.last_time is None else \
                max(Fraction(now - self.t0_wall), self.last_time + self.frame_step)
        return self.offset + (pts - self.conn_first_pts) * tb

    # -- ends of files ---------------------------------------------------------------------------
    def _where(self) -> str:
        if self.last_time is None:
            return "decoding stopped before the first frame"
        return f"decoding stopped at {float(self.last_time):.2f} s (frame {max(self.index - 1, 0)})"

    def _file_failed(self, e: BaseException) -> None:
        """A read error in a file: keep what decoded, say where it stopped (nothing decoded: raise)."""
        self._drain()
        if not self.any_frame:
            raise VideoError(f"{self.opener.name}: no frame could be decoded ({_reason(e)}); the file is corrupt "
                             "or truncated.") from e
        self.stopped = f"{self._where()}: {_reason(e)}"

    def _drain(self) -> None:
        """Frames still inside the decoder after a read error."""
        if self.opened is None:
            return
        with contextlib.suppress(Exception):  # the decoder may be in any state after an error
            for frame in self.opened.stream.codec_context.decode(None):
                if self._frame(frame, self.opened.stream, _NoPacket):
                    return

    def _file_ended(self) -> None:
        if not self.any_frame:
            why = f" (its packets do not decode: {self.decode_error})" if self.decode_error else ""
            raise VideoError(f"{self.opener.name} contains no video frames{why}; check the file.")
        if self.index == 0 and self.start > 0:
            raise VideoError(f"{self.opener.name} ends at {float(self.last_time or 0):.2f} s, before start="
                             f"{float(self.start):g} s; choose an earlier start.")
        expected = _stated_duration(self.opened.container, self.opened.stream)
        if expected is not None and self.last_end is not None and \
                float(self.last_end) < expected - float(2 * self.frame_step) - 1e-3:
            reason = self.decode_error or "the file ends early (truncated?)"
            self.stopped = f"{self._where()} of {expected:.2f} s: {reason}"


def _stated_duration(container: Any, stream: Any) -> float | None:
    """The video's duration as written in the file's header or index (MP4/MOV, Matroska/WebM, AVI, FLV,
    ASF), to tell a file that was cut short; None where FFmpeg estimates it (e.g. from the bit rate)."""
    formats = set((container.format.name or "").split(","))
    if not formats & {"mov", "mp4", "matroska", "webm", "avi", "flv", "asf"}:
        return None
    if stream.duration:
        return _duration(container, stream)
    return _duration(container, stream) if len(container.streams) == 1 else None


class _NoPacket:
    duration = 0


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


class VideoWriter:
    """Write RGB frames as a playable video: H.264 (libx264, yuv420p) in an MP4, or MPEG-4 Part 2 when
    this FFmpeg build has no libx264::

        with VideoWriter("out.mp4", fps=25) as writer:
            writer.write(rgb)             # (H, W, 3) uint8, every frame the same size

    fps: frames per second, fractional allowed (``Fraction(30000, 1001)``, 29.97, 0.5). size: (width,
    height) of the frames, or None to take it from the first frame. yuv420p needs even sides, so an odd
    width or height is rounded UP by repeating the last column / row (no pixel is lost); :attr:`size` is
    the encoded size. codec: an FFmpeg encoder name, default libx264 (falling back to mpeg4). crf: the
    libx264 quality (0-51, lower is better and larger). The container follows the suffix (.mp4, .mov,
    .mkv, ...); MP4 and MOV files get their index at the front, so they play while downloading.

    :meth:`close` (also at the end of a ``with`` block, even when an exception such as
    KeyboardInterrupt leaves it) flushes the encoder and finishes the file, so what was written plays.
    Writing after close raises :class:`~clip_ebc.errors.VideoError`. Not thread-safe.
    """

    def __init__(self, path: PathLike, fps: float | Fraction, size: tuple[int, int] | None = None, *,
                 codec: str | None = None, crf: int = 23) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise VideoError(f"{self.path}: the folder {self.path.parent} does not exist; create it first.")
        try:
            rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        except (TypeError, ValueError, OverflowError):
            rate = Fraction(0)
        if isinstance(fps, bool) or not rate > 0:
            raise ConfigError(f"fps={fps!r} must be a positive number of frames per second, e.g. 25 or 29.97.")
        self.fps = rate
        self._av = _import_av("writing videos")
        self.codec = codec or ("libx264" if _has_encoder(self._av, "libx264") else "mpeg4")
        self.crf = crf
        self._container: Any = None
        self._stream: Any = None
        self._input_size: tuple[int, int] | None = None
        self.size: tuple[int, int] | None = None
        """(width, height) as encoded: the frame size with odd sides rounded up to even."""
        self.frames_written = 0
        self._closed = False
        if size is not None:
            self._open(size)

    def _open(self, size: tuple[int, int]) -> None:
        width, height = int(size[0]), int(size[1])
        if width < 1 or height < 1:
            raise VideoError(f"{self.path}: frame size {width}x{height} has no pixels.")
        av = self._av
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        try:
            container = av.open(str(self.path), "w", options=options)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"{self.path}: cannot write a video there ({_reason(e)}); check the folder and "
                             "use a video suffix such as .mp4.") from e
        try:
            stream = container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = 1 / self.fps
            if self.codec == "libx264":
                stream.codec_context.options = {"crf": str(self.crf), "preset": "veryfast"}
            else:
                stream.bit_rate = max(400_000, int(stream.width * stream.height * float(self.fps) * 0.2))
        except (av.error.FFmpegError, ValueError, TypeError) as e:
            container.close()
            raise VideoError(f"{self.path}: cannot encode with {self.codec} ({_reason(e)}); choose another codec.") from e
        self._container, self._stream = container, stream
        self._input_size = (width, height)
        self.size = (stream.width, stream.height)

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame, (H, W, 3) uint8 RGB."""
        if self._closed:
            raise VideoError(f"{self.path}: the video writer is closed; open a new VideoWriter to write more frames.")
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            what = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise VideoError(f"{self.path}: frames must be (H, W, 3) uint8 RGB arrays, got a {what}.")
        height, width = rgb.shape[:2]
        if self._container is None:
            self._open((width, height))
        if (width, height) != self._input_size:
            w0, h0 = self._input_size
            raise VideoError(f"{self.path}: frame {self.frames_written} is {width}x{height}, but the video is "
                             f"{w0}x{h0}; resize frames to one size.")
        padded_w, padded_h = self.size
        if (padded_w, padded_h) != (width, height):
            rgb = np.pad(rgb, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")
        av = self._av
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"{self.path}: writing frame {self.frames_written} failed ({_reason(e)}).") from e
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            return
        av = self._av
        try:
            try:
                self._container.mux(self._stream.encode(None))
            finally:
                self._container.close()
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"{self.path}: finishing the video failed ({_reason(e)}); it may not play.") from e
        finally:
            self._container = self._stream = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):  # -> Self
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.close()
        except VideoError:
            if exc_type is None:
                raise  # otherwise the exception that is leaving the block matters more

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_container", None) is not None:
            with contextlib.suppress(Exception):  # nothing to report to during garbage collection
                self.close()


def _has_encoder(av: Any, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError (or others, by version)
        return False
    return True
