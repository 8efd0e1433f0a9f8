""":class:`VideoWriter`: RGB frames to a playable MP4 (H.264, or MPEG-4 Part 2 without libx264)."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, VideoError
from .frames import _import_av
from .opening import _reason
from .sources import PathLike


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
