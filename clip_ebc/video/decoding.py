"""The decoding thread: demux, decode, sample by timestamp, convert, hand over; reconnect live sources."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from datetime import datetime
from fractions import Fraction
from typing import Any

from ..errors import VideoError
from .frames import _END, Frame, _Channel, _Event, _Failure, _to_rgb
from .opening import _duration, _Opened, _Opener, _reason, _short_reason
from .sampling import Sampling, _exact

MAX_BACKOFF = 30.0
"""The longest wait between two reconnection attempts, in seconds."""


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
