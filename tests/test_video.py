"""Video sources and the writer: sampling by timestamps, seeking, truncated and invalid inputs, live
HTTP streams (drops, stalls, reconnection), URL probing and image downloads, MP4 writing.

Media are tiny (160x120, at most 75 frames) and made once per module; streams come from a local
server (tests/streams.py) on 127.0.0.1.
"""

from __future__ import annotations

import gc
import io
import re
import socket
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from media import (
    frame_number,
    make_audio_only,
    make_unknown_codec_video,
    make_vfr_video,
    make_video,
    make_zero_frame_video,
    pattern_frames,
    truncate,
)
from streams import StreamServer

from clip_ebc.errors import ConfigError, ImageError, MissingExtraError, VideoError
from clip_ebc.remote import fetch_image, load_url_image, probe_url, redact, sniff
from clip_ebc.video import (
    Frame,
    Sampling,
    VideoReader,
    VideoWriter,
    is_camera,
    is_stream_url,
    is_video_file,
    parse_every,
)
from clip_ebc.video import decoding
from clip_ebc.video.frames import _Channel

VFR_TIMES = [0.0, 0.1, 0.5, 0.55, 0.6, 1.0, 1.7, 2.05, 2.5, 3.0]


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 10)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    frames = pattern_frames(75)  # 3 s at 25 fps
    m = {
        "mp4": make_video(root / "cfr.mp4", frames, 25),
        "mkv": make_video(root / "cfr.mkv", frames, 25),
        "ts": make_video(root / "cfr.ts", frames, 25),
        "faststart": make_video(root / "faststart.mp4", frames, 25, options={"movflags": "+faststart"}),
        "vfr": make_vfr_video(root / "vfr.mp4", VFR_TIMES),
        "audio": make_audio_only(root / "audio.mp4"),
        "zero": make_zero_frame_video(root / "zero.avi"),
        "unknown": make_unknown_codec_video(root / "unknown.mkv"),
        "rotated": make_video(root / "rotated.mp4", pattern_frames(5), 25, rotation=90),
    }
    m["cut_mp4"] = truncate(m["faststart"], root / "cut.mp4", 0.6)
    m["cut_mkv"] = truncate(m["mkv"], root / "cut.mkv", 0.6)
    m["cut_index"] = truncate(m["mp4"], root / "cut_index.mp4", 0.6)  # 'moov' at the end: lost
    return m


def read_all(source, every="1f", **kw):
    with VideoReader(source, every, **kw) as reader:
        frames = list(reader)
    return reader, frames


# -- sampling intervals and classification -------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("1s", Sampling(1.0)), ("0.5s", Sampling(0.5)), ("250ms", Sampling(0.25)), ("12f", Sampling(None, 12)),
    ("2", Sampling(2.0)), (" 1.5 S ", Sampling(1.5)), (0.2, Sampling(0.2)), (3, Sampling(3.0)), (".5s", Sampling(0.5)),
])
def test_parse_every(text, expected):
    assert parse_every(text) == expected


@pytest.mark.parametrize("text", ["", "0s", "0", "-1s", "1.5f", "0f", "fast", "1 h", "nan", True, float("inf"), -2])
def test_parse_every_rejects(text):
    with pytest.raises(ConfigError, match=r"invalid sampling interval .*'250ms'.*'12f'"):
        parse_every(text)


def test_sampling_needs_one_unit():
    with pytest.raises(ConfigError):
        Sampling(1.0, 5)
    assert str(Sampling(0.5)) == "0.5s" and str(Sampling(None, 12)) == "12f"


def test_classification(media, tmp_path):
    assert all(is_stream_url(u) for u in ["rtsp://cam/1", "RTSPS://cam", "rtmp://x/live", "http://x/a.ts",
                                          "https://x/v.mp4", "live/index.m3u8", "srt://x:9000"])
    assert not any(is_stream_url(u) for u in ["clip.mp4", "/dev/video0", "file:///x.mp4", 3, None])
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    assert redact("rtsp://cam@10.0.0.5/live") == "rtsp://cam@10.0.0.5/live" and redact("a/b.mp4") == "a/b.mp4"
    assert is_camera("/dev/video0") and is_camera("/dev/video12") and not is_camera("/dev/video") and not is_camera("video0")
    # content decides; the suffix only when the content says nothing
    disguised = tmp_path / "movie.jpg"
    disguised.write_bytes(media["mp4"].read_bytes())
    photo = tmp_path / "photo.mp4"
    photo.write_bytes(jpeg_bytes())
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x01\x02" * 100)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert is_video_file(disguised) and is_video_file(media["mkv"]) and is_video_file(media["ts"])
    assert not is_video_file(photo) and not is_video_file(notes)
    assert is_video_file(media["audio"])  # an 'isom' MP4 may hold video; opening it says it does not
    assert is_video_file(garbage) and is_video_file(tmp_path / "missing.mkv") and not is_video_file(tmp_path / "missing.png")
    assert sniff(b"\x47" + bytes(187) + b"\x47" + bytes(187) + b"\x47") == "video"  # MPEG-TS
    assert sniff((bytes(4) + b"\x47" + bytes(187)) * 3) == "video"  # M2TS (192-byte packets)
    assert sniff(b"G" + bytes(187) + b"G" + bytes(100)) is None  # two sync bytes are not enough
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST") == "video" and sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image"
    assert sniff(b"FLV\x01\x05") == "video" and sniff(b"\x00\x00\x00\x18ftypheic") == "image"
    assert sniff(b"\x00\x00\x00\x18ftypM4A ") == "audio" and sniff(b"\x1a\x45\xdf\xa3\x01") == "video"
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "image" and sniff(b"<!DOCTYPE html><html>") == "html"
    assert sniff(b"BMfoo bar baz qux quux") is None and sniff(b"BM" + bytes(12) + b"\x28\x00\x00\x00") == "image"


# -- sampling by timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_one_per_second_at_25fps(media, kind):
    reader, frames = read_all(media[kind], "1s")
    assert [(f.index, f.time) for f in frames] == [(0, 0.0), (25, 1.0), (50, 2.0)]
    assert [frame_number(f.rgb) for f in frames] == [0, 25, 50 % 40]
    assert all(f.wallclock is None and f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert (reader.size, reader.fps, reader.live, reader.duration, reader.stopped) == ((160, 120), 25.0, False, 3.0, None)
    assert reader.frames_decoded == 75


def test_variable_frame_rate_sampling_is_exact(media):
    _, frames = read_all(media["vfr"], "1s")
    assert [(f.index, f.time) for f in frames] == [(0, 0.0), (5, 1.0), (7, 2.05), (9, 3.0)]
    _, frames = read_all(media["vfr"], "0.5s")
    assert [(f.index, f.time) for f in frames] == [(0, 0.0), (2, 0.5), (5, 1.0), (6, 1.7), (7, 2.05), (8, 2.5), (9, 3.0)]
    assert [frame_number(f.rgb) for f in frames] == [0, 2, 5, 6, 7, 8, 9]
    # 0.1 s steps are exact: the frame at 0.6 s meets the target 6 * 0.1 (0.6000000000000001 in floats);
    # 0.55 s is skipped, since the frame at 0.5 s already stood for the target 0.5 s
    _, frames = read_all(media["vfr"], "100ms")
    assert [f.index for f in frames] == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_every_nth_frame(media):
    _, frames = read_all(media["mp4"], "12f")
    assert [(f.index, f.time) for f in frames] == [(0, 0.0), (12, 0.48), (24, 0.96), (36, 1.44), (48, 1.92), (60, 2.4), (72, 2.88)]
    assert [frame_number(f.rgb) for f in frames] == [i % 40 for i in (0, 12, 24, 36, 48, 60, 72)]


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_start_and_duration(media, kind):
    _, frames = read_all(media[kind], "0.2s", start=0.5, duration=1.0)
    # 25 fps has no frame at 0.5 s: the first at or after it is frame 13 (0.52 s); index counts from there
    assert [(f.index, f.time) for f in frames] == [(0, 0.52), (5, 0.72), (10, 0.92), (15, 1.12), (20, 1.32)]
    assert [frame_number(f.rgb) for f in frames] == [13, 18, 23, 28, 33]
    _, frames = read_all(media[kind], "1f", start=2.0, duration=0.2)
    expected = [(i, round(2.0 + 0.04 * i, 2), (50 + i) % 40) for i in range(5)]
    assert [(f.index, f.time, frame_number(f.rgb)) for f in frames] == expected


def test_start_past_the_end(media):
    with pytest.raises(VideoError, match=r"cfr.mp4 is 3.00 s long, so start=5 s is past its end"):
        VideoReader(media["mp4"], start=5)
    with pytest.raises(ConfigError, match="start=-1"):
        VideoReader(media["mp4"], start=-1)


def test_unsampled_frames_are_not_converted(media, monkeypatch):
    calls = []
    real = decoding._to_rgb
    monkeypatch.setattr(decoding, "_to_rgb", lambda frame: calls.append(frame.pts) or real(frame))
    _, frames = read_all(media["mp4"], "1s")
    assert len(frames) == 3 and len(calls) == 3


def test_rgb_equals_direct_decoding(media):
    _, frames = read_all(media["vfr"], "1s")
    with av.open(str(media["vfr"])) as container:
        direct = {round(float(f.time), 6): f.to_ndarray(format="rgb24") for f in container.decode(video=0)}
    for f in frames:
        assert np.array_equal(f.rgb, direct[round(f.time, 6)])


def test_display_rotation_applied(media):
    reader, frames = read_all(media["rotated"])
    with av.open(str(media["rotated"])) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert reader.size == (120, 160) and frames[0].rgb.shape == (160, 120, 3)
    assert np.array_equal(frames[0].rgb, np.rot90(first))  # 90 degrees counter-clockwise, as FFmpeg shows it


# -- damaged and invalid inputs ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cut_mp4", "cut_mkv"])
def test_truncated_file_yields_frames_then_says_where(media, kind):
    reader, frames = read_all(media[kind])
    assert 30 <= len(frames) < 75
    last = frames[-1]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert reader.stopped is not None
    assert reader.stopped.startswith(f"decoding stopped at {last.time:.2f} s (frame {last.index})")
    assert "of 3.00 s" in reader.stopped


def test_hard_failures(media, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 50)
    photo = tmp_path / "photo.mp4"
    photo.write_bytes(jpeg_bytes())
    page = tmp_path / "page.mp4"
    page.write_text("<!DOCTYPE html><html><body>404</body></html>")
    cases = {
        tmp_path / "missing.mp4": r"missing.mp4: no such file\.",
        tmp_path: r"is a directory, not a video file\.",
        empty: r"empty.mp4 is empty \(0 bytes\)\.",
        text: r"text.mp4 is not a video that can be read \(unknown format, or corrupt data\)\.",
        photo: r"photo.mp4 is an image, not a video; pass it as an image input\.",
        page: r"page.mp4 is an HTML page, not a video",
        media["audio"]: r"audio.mp4 has no video stream \(it holds only audio streams\)",
        media["unknown"]: r"unknown.mkv: its video codec is unknown to, or not supported by, this FFmpeg build",
        media["cut_index"]: r"cut_index.mp4 is truncated: its MP4 index \('moov' box\) is missing",
    }
    for source, message in cases.items():
        with pytest.raises(VideoError, match=message):
            VideoReader(source)
    reader = VideoReader(media["zero"])  # the stream exists; that it has no frames shows when decoding
    with pytest.raises(VideoError, match=r"zero.avi contains no video frames; check the file\."):
        list(reader)
    assert list(reader) == []  # raised once, then finished


def test_missing_pyav_names_the_extra(media, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingExtraError, match=r'reading video files needs the optional dependency PyAV \(av\); '
                                                r'install it with: pip install "clip-ebc\[video\]"'):
        VideoReader(media["mp4"])
    with pytest.raises(MissingExtraError, match=r"reading streams needs .*clip-ebc\[video\]"):
        VideoReader("rtsp://127.0.0.1:1/x")
    with pytest.raises(MissingExtraError, match=r"writing videos needs .*clip-ebc\[video\]"):
        VideoWriter(tmp_path / "out.mp4", 25)
    assert is_video_file(media["mp4"]) and parse_every("1s") == Sampling(1.0)  # no av needed


# -- live streams --------------------------------------------------------------------------------


@pytest.fixture
def server():
    with StreamServer(speed=2.0, burst=1.0, max_seconds=20) as s:
        yield s


def test_stream_frames_arrive_in_time_order(server):
    with VideoReader(server.live_url, "0.2s", timeout=2) as reader:
        assert (reader.live, reader.duration, reader.size, reader.fps) == (True, None, (160, 120), 10.0)
        frames = []
        for f in reader:
            frames.append(f)
            if len(frames) == 8:
                break
    assert [f.time for f in frames] == pytest.approx([0.2 * i for i in range(8)])
    assert [f.index for f in frames] == [2 * i for i in range(8)]
    assert all(f.wallclock is not None and f.wallclock.tzinfo is not None for f in frames)
    assert [f.wallclock for f in frames] == sorted(f.wallclock for f in frames)
    assert server.connections == 1


@pytest.mark.parametrize("restart_timestamps", [False, True])
def test_dropped_connection_is_reopened(restart_timestamps):
    events, threads = [], []

    def on_event(message):
        events.append(message)
        threads.append(threading.current_thread())

    with StreamServer(speed=2.0, burst=1.0, restart_timestamps=restart_timestamps, max_seconds=20) as server:
        server.drop_after(seconds=0.3)  # the first connection ends 0.3 s in; the next one is served
        started = time.monotonic()
        with VideoReader(server.live_url, "0.5s", timeout=2, reconnect=3, backoff=0.1, on_event=on_event) as reader:
            frames = []
            for f in reader:
                frames.append(f)
                if f.time >= 4.0 or len(frames) > 40:
                    break
        assert time.monotonic() - started < 8
        assert server.connections == 2
    times = [f.time for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times) and times[-1] >= 4.0
    assert len(events) == 1 and threads == [threading.main_thread()]
    assert re.fullmatch(rf"stream {re.escape(server.live_url)}: connection lost \(.+\); reconnecting in 0\.1 s "
                        r"\(attempt 1 of 3\)", events[0])


def test_stall_times_out_and_gives_up(server):
    events = []
    reader = VideoReader(server.live_url, "1f", timeout=0.5, reconnect=2, backoff=0.05, on_event=events.append)
    got = [next(reader) for _ in range(3)]
    server.stall()
    started = time.monotonic()
    with pytest.raises(VideoError) as info:
        got.extend(reader)
    elapsed = time.monotonic() - started
    # the read time-out (0.5 s), then two reopenings after 0.05 and 0.1 s that each time out twice (0.5 s to
    # connect, 0.5 s to probe): about 2.7 s, with slack for busy machines
    assert elapsed < 8.0
    assert str(info.value) == (f"stream {server.live_url} stopped: no answer within 0.5 s; gave up after 2 reconnection "
                               "attempts. Check the source, or allow more attempts with reconnect=.")
    assert events[0].endswith("connection lost (no data for 0.5 s); reconnecting in 0.05 s (attempt 1 of 2)")
    assert events[1].endswith("connection lost (no answer within 0.5 s); reconnecting in 0.1 s (attempt 2 of 2)")
    assert server.connections == 3 and len(got) >= 3
    assert not reader._thread.is_alive()


def test_close_and_garbage_collection_stop_the_thread(server):
    reader = VideoReader(server.live_url, "1f", timeout=2)
    next(reader)
    thread = reader._thread
    reader.close()
    assert not thread.is_alive()
    assert list(reader) == []
    reader = VideoReader(server.live_url, "1f", timeout=2)
    next(reader)
    thread = reader._thread
    del reader
    gc.collect()
    thread.join(2)
    assert not thread.is_alive()


def test_live_channel_drops_the_oldest_frame():
    channel = _Channel(2, drop_oldest=True)
    frames = [Frame(i, float(i), None, np.zeros((1, 1, 3), np.uint8)) for i in range(3)]
    for f in frames:
        assert channel.put_frame(f)
    assert channel.dropped == 1
    assert [channel.get(lambda: True).index for _ in range(2)] == [1, 2]


@pytest.mark.parametrize("path, message", [
    ("/missing.ts", r"answered HTTP 404 \(Not Found\); check the address\."),
    ("/forbidden", r"answered HTTP 403 \(Forbidden\)"),
    ("/broken", r"answered HTTP 500 \(Internal Server Error\)"),
    ("/page.html", r"served an HTML page \(text/html\), not a video"),
    ("/photo.jpg", r"served an image \(jpeg\), not a video; pass it as an image input\."),
])
def test_stream_url_failures(server, path, message):
    server.add("/forbidden", b"no", "text/plain", status=403)
    server.add("/broken", b"oops", "text/plain", status=500)
    server.add("/page.html", b"<!DOCTYPE html><html><body>hello</body></html>", "text/html")
    server.add("/photo.jpg", jpeg_bytes(), "image/jpeg")
    with pytest.raises(VideoError, match=re.escape(server.url + path) + " " + message):
        VideoReader(server.url + path, timeout=2)


def test_connection_refused():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/live.ts"
    with pytest.raises(VideoError, match=re.escape(url) + r": connection refused \(is the server at 127\.0\.0\.1:\d+ running\?\)"):
        VideoReader(url, timeout=2)
    with pytest.raises(ImageError, match="connection refused"):
        probe_url(url, timeout=2)
    secret = f"rtsp://admin:s3cret@127.0.0.1:{port}/stream1"  # passwords never reach messages
    redacted = re.escape(f"rtsp://admin:***@127.0.0.1:{port}/stream1: connection refused")
    with pytest.raises(VideoError, match=redacted) as info:
        VideoReader(secret, timeout=2)
    assert "s3cret" not in str(info.value)


def test_video_file_over_http(server, media):
    url = server.add("/clip.mp4", media["mp4"].read_bytes(), "video/mp4")
    reader, frames = read_all(url, "1s", timeout=2)
    assert reader.live is False and reader.duration == 3.0
    assert [(f.index, f.time, f.wallclock) for f in frames] == [(0, 0.0, None), (25, 1.0, None), (50, 2.0, None)]


def test_hls_playlist_over_http(server, tmp_path):
    folder = tmp_path / "hls"
    folder.mkdir()
    make_video(folder / "index.m3u8", pattern_frames(75), 25, format="hls",
               options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"})
    for file in folder.iterdir():
        kind = "application/vnd.apple.mpegurl" if file.suffix == ".m3u8" else "video/mp2t"
        server.add(f"/hls/{file.name}", file.read_bytes(), kind)
    url = server.url + "/hls/index.m3u8"
    assert is_stream_url(url)
    reader, frames = read_all(url, "1s", timeout=2)
    assert (reader.live, reader.duration) == (False, 3.0)  # a finished (VOD) playlist reads like a file
    assert [(f.index, f.time, frame_number(f.rgb)) for f in frames] == [(0, 0.0, 0), (25, 1.0, 25), (50, 2.0, 10)]


# -- URLs: probing and image downloads -----------------------------------------------------------


def test_probe_and_fetch(server):
    image = jpeg_bytes()
    url = server.add("/photo.jpg", image, "image/jpeg")
    probe = probe_url(url)
    assert (probe.kind, probe.status, probe.content_type, probe.length) == ("image", 200, "image/jpeg", len(image))
    assert fetch_image(url) == image and load_url_image(url).shape == (48, 64, 3)
    untyped = server.add("/blob", image, "application/octet-stream")  # magic bytes decide
    assert probe_url(untyped).kind == "image"
    assert probe_url(server.live_url).kind == "video"
    page = server.add("/page.html", b"<html><body>hi</body></html>", "text/html; charset=utf-8")
    assert probe_url(page).kind == "html"
    with pytest.raises(ImageError, match=re.escape(page) + r" served an HTML page \(text/html\), not an image"):
        fetch_image(page)
    with pytest.raises(ImageError, match=re.escape(server.url) + r"/nope answered HTTP 404 \(Not Found\)"):
        probe_url(server.url + "/nope")
    with pytest.raises(ImageError, match=r"/nope answered HTTP 404"):
        fetch_image(server.url + "/nope")


@pytest.mark.parametrize("sized", [True, False])
def test_fetch_size_limit(server, sized):
    url = server.add("/big.jpg", jpeg_bytes() + bytes(300_000), "image/jpeg", sized=sized)
    with pytest.raises(ImageError, match=re.escape(url) + r" is ([\d,]+ bytes, )?larger than the limit of 100,000 bytes"):
        fetch_image(url, max_bytes=100_000)
    assert len(fetch_image(url, max_bytes=1_000_000)) > 300_000


def test_fetch_time_limit(server):
    url = server.add("/slow.jpg", jpeg_bytes(), "image/jpeg", drip=0.02)  # a byte every 20 ms: ~14 s in all
    started = time.monotonic()
    with pytest.raises(ImageError, match=re.escape(url) + r": the download took longer than 0\.5 s"):
        fetch_image(url, timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_unresolvable_host(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ImageError, match=r"http://no\.such\.host/a\.jpg: cannot resolve the host name"):
        probe_url("http://no.such.host/a.jpg")


# -- writing -------------------------------------------------------------------------------------


def decode_all(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name, stream.average_rate, stream.codec_context.pix_fmt


def test_writer_rounds_odd_sizes_up_and_plays(tmp_path):
    frames = pattern_frames(7, width=161, height=121)
    with VideoWriter(tmp_path / "odd.mp4", fps=Fraction(30000, 1001)) as writer:
        for f in frames:
            writer.write(f)
    assert writer.size == (162, 122) and writer.frames_written == 7 and writer.closed
    decoded, codec, rate, pix_fmt = decode_all(tmp_path / "odd.mp4")
    assert (len(decoded), decoded[0].shape, codec, rate, pix_fmt) == (7, (122, 162, 3), "h264", Fraction(30000, 1001), "yuv420p")
    assert [frame_number(d[:121, :161]) for d in decoded] == list(range(7))
    assert np.abs(decoded[3][:121, :161].astype(int) - frames[3]).mean() < 8
    # the added row and column repeat the last ones (up to chroma subsampling)
    assert np.abs(decoded[3][121].astype(int) - decoded[3][120]).mean() < 3
    assert np.abs(decoded[3][:, 161].astype(int) - decoded[3][:, 160]).mean() < 3
    with pytest.raises(VideoError, match=r"odd.mp4: the video writer is closed"):
        writer.write(frames[0])


def test_writer_finishes_the_file_when_interrupted(tmp_path):
    path = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter(path, fps=2.5, size=(160, 120)) as writer:
        for i, f in enumerate(pattern_frames(10)):
            writer.write(f)
            if i == 4:
                raise KeyboardInterrupt
    decoded, *_ = decode_all(path)
    assert [frame_number(d) for d in decoded] == [0, 1, 2, 3, 4]
    reader, frames = read_all(path)
    assert [f.time for f in frames] == [0.0, 0.4, 0.8, 1.2, 1.6] and reader.stopped is None


def test_writer_checks_frames_and_falls_back_to_mpeg4(tmp_path):
    with VideoWriter(tmp_path / "m4.mp4", fps=10, codec="mpeg4") as writer:
        writer.write(pattern_frames(1)[0])
        with pytest.raises(VideoError, match=r"frame 1 is 80x60, but the video is 160x120"):
            writer.write(pattern_frames(1, 80, 60)[0])
        with pytest.raises(VideoError, match=r"must be \(H, W, 3\) uint8 RGB arrays, got a float64 array"):
            writer.write(np.zeros((120, 160, 3)))
    decoded, codec, *_ = decode_all(tmp_path / "m4.mp4")
    assert (len(decoded), codec) == (1, "mpeg4")
    with pytest.raises(ConfigError, match="fps=0"):
        VideoWriter(tmp_path / "x.mp4", fps=0)
