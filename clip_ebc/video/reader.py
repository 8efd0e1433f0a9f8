""":class:`VideoReader`: sampled RGB frames from a file, network stream or camera, decoded in a thread."""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping

from ..errors import ConfigError, VideoError
from ..remote import redact
from .decoding import _Decoder
from .frames import Frame, _Channel, _Event, _Failure, _import_av
from .opening import _duration, _Opener
from .sampling import Sampling, parse_every
from .sources import PathLike, is_camera, is_stream_url

DEFAULT_RECONNECT = 5
"""Reconnection attempts after a live source drops, before :class:`VideoReader` gives up."""
DEFAULT_TIMEOUT = 10.0
"""Seconds without data after which a network read (or opening) counts as failed."""
DEFAULT_BACKOFF = 1.0
"""Seconds before the first reconnection attempt; each further attempt waits twice as long, up to
:data:`~clip_ebc.video.decoding.MAX_BACKOFF`."""
DEFAULT_QUEUE_SIZE = 8
"""Decoded frames buffered between the decoding thread and the consumer."""


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
    :data:`~clip_ebc.video.decoding.MAX_BACKOFF`); the count starts again once frames arrive. timeout:
    seconds without data before
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

    def __init__(self, source: PathLike, every: Sampling | str | float = "1s", *,
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
