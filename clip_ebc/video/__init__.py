"""Video frame sources (files, network streams, cameras) and an MP4 writer, on PyAV.

:class:`VideoReader` decodes in a background thread and yields sampled :class:`Frame` objects (RGB
uint8 (H, W, 3) with their time); :class:`VideoWriter` encodes RGB frames as a playable MP4.
:func:`parse_every`, :func:`is_stream_url`, :func:`is_camera` and :func:`is_video_file` classify
inputs without decoding anything.

Modules, each importing only those above it: ``sampling`` (which frames to keep), ``sources``
(classifying inputs), ``frames`` (frames and the hand-over between threads), ``opening`` (opening a
source, explaining failures), ``decoding`` (the decoding thread), ``reader`` (:class:`VideoReader`),
``writer`` (:class:`VideoWriter`).

PyAV is the optional extra ``clip-ebc[video]``; it is imported only when a video is opened, so image
inputs work without it.
"""

from .decoding import MAX_BACKOFF
from .frames import Frame
from .reader import (
    DEFAULT_BACKOFF,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_RECONNECT,
    DEFAULT_TIMEOUT,
    VideoReader,
)
from .sampling import Sampling, parse_every
from .sources import (
    STREAM_SCHEMES,
    VIDEO_SUFFIXES,
    PathLike,
    is_camera,
    is_stream_url,
    is_video_file,
)
from .writer import VideoWriter

__all__ = [
    "DEFAULT_BACKOFF", "DEFAULT_QUEUE_SIZE", "DEFAULT_RECONNECT", "DEFAULT_TIMEOUT", "MAX_BACKOFF",
    "STREAM_SCHEMES", "VIDEO_SUFFIXES", "Frame", "PathLike", "Sampling", "VideoReader", "VideoWriter",
    "is_camera", "is_stream_url", "is_video_file", "parse_every",
]
