"""Sampled frames, their RGB conversion, and the bounded hand-over from the decoding thread."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import missing_extra

if TYPE_CHECKING:
    import av


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
