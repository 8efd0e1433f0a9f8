"""Small test videos made with PyAV from NumPy frames (tiny sizes and few frames, so tests stay fast).

Every frame made by :func:`pattern_frames` carries its index as the grey level of a large block, so a
decoded frame can be identified despite compression (:func:`frame_number`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 160, 120
LEVEL_STEP = 6  # grey-level step between consecutive frames; 40 frames fit in 0-255


def pattern_frames(count: int, width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """``count`` RGB frames (count, height, width, 3) uint8: a fixed textured background with a
    centre block whose grey level is ``8 + LEVEL_STEP * (index % 40)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    background = 60 + 40 * np.sin(xx / 9.0)[..., None] + 30 * np.cos(yy / 7.0)[..., None]
    background = background + rng.normal(0, 6, (height, width, 3))
    background = background.clip(0, 255).astype(np.uint8)
    frames = np.repeat(background[None], count, axis=0)
    y0, y1, x0, x1 = height // 4, 3 * height // 4, width // 4, 3 * width // 4
    for i in range(count):
        frames[i, y0:y1, x0:x1] = 8 + LEVEL_STEP * (i % 40)
    return frames


def frame_number(rgb: np.ndarray) -> int:
    """The index (mod 40) a :func:`pattern_frames` frame carries, read from a decoded frame."""
    h, w = rgb.shape[:2]
    level = float(rgb[h // 4 + 4: 3 * h // 4 - 4, w // 4 + 4: 3 * w // 4 - 4].mean())
    return round((level - 8) / LEVEL_STEP)


def make_video(path: str | Path, frames: Iterable[np.ndarray] | np.ndarray, fps: float | Fraction = 25,
               codec: str = "libx264", *, pts: Sequence[int] | None = None, time_base: Fraction | None = None,
               gop: int = 10, format: str | None = None, options: dict[str, str] | None = None,
               rotation: int | None = None) -> Path:
    """Encode RGB ``frames`` into ``path`` (container chosen by the suffix unless ``format`` is given).

    ``pts``: explicit presentation timestamps in ``time_base`` units (a variable frame rate); without
    them frame ``i`` is shown at ``i / fps``. ``gop``: frames between key frames. ``options``: muxer
    options (e.g. ``{"movflags": "+faststart"}``). ``rotation``: a display rotation, counter-clockwise degrees.
    """
    import av

    path = Path(path)
    frames = list(frames)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format=format, options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        if codec == "libx264":
            # no B-frames keeps decode order = display order; tiny files, fast
            stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
        else:
            stream.bit_rate = 4_000_000  # high enough that frame_number() reads every frame right
        if rotation is not None:
            stream.set_display_rotation(rotation)
        tb = time_base if time_base is not None else 1 / rate
        stream.codec_context.time_base = tb
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_vfr_video(path: str | Path, times: Sequence[float], *, time_base: Fraction = Fraction(1, 1000)) -> Path:
    """A variable-frame-rate video: frame ``i`` shown at ``times[i]`` seconds (exact in ``time_base``)."""
    pts = [round(Fraction(t) / time_base) for t in times]
    # the nominal rate only guides the encoder's rate control; timestamps come from pts
    return make_video(path, pattern_frames(len(times)), fps=25, pts=pts, time_base=time_base)


def truncate(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a download cut short)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def make_audio_only(path: str | Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An AAC file with an audio stream and no video stream (container by suffix, e.g. ``.mp4``)."""
    import av

    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        frame_size = 1024
        for k in range(0, samples.shape[1], frame_size):
            chunk = np.ascontiguousarray(samples[:, k: k + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Path(path)


def make_zero_frame_video(path: str | Path) -> Path:
    """A container with a video stream and no frames at all (use ``.avi``: MP4 drops an empty track,
    Matroska and MPEG-TS files without packets do not open)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        container.start_encoding()
    return Path(path)


def make_unknown_codec_video(path: str | Path) -> Path:
    """A Matroska file whose video track names a codec no decoder knows (``V_MPEG4/ISO/AVC`` renamed)."""
    tmp = make_video(Path(path).with_suffix(".tmp.mkv"), pattern_frames(5), fps=25)
    data = tmp.read_bytes()
    tmp.unlink()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    Path(path).write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_NOSUCH/CODEC!"))
    return Path(path)


def encode_packets(frames: np.ndarray, fps: int, gop: int) -> list[tuple[bytes, int, bool]]:
    """Encode frames as H.264 with repeated headers (each key frame decodable on its own, as in a
    broadcast): [(packet bytes, pts in 1/fps units, is_keyframe)]."""
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps)
    ctx.gop_size = gop
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0",
                   "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1"}
    out = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = i
        for p in ctx.encode(frame):
            out.append((bytes(p), int(p.pts), bool(p.is_keyframe)))
    for p in ctx.encode(None):
        out.append((bytes(p), int(p.pts), bool(p.is_keyframe)))
    return out
