"""Classifying inputs without decoding them: video files (by content, then suffix), stream URLs, cameras."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Union

from ..remote import sniff

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
                  ".asf", ".mpg", ".mpeg", ".vob", ".3gp", ".3g2", ".ogv", ".mxf", ".h264", ".264", ".hevc")
"""File suffixes treated as videos when a file's content does not say (see :func:`is_video_file`)."""

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "rtp")
"""URL schemes :func:`is_stream_url` accepts."""

PathLike = Union[str, "os.PathLike[str]"]


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
