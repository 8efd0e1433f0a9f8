"""Videos, streams and zones through CrowdCounter.count_video and the crowdcount command: rows at the
right times with the image path's counts, zones that add up, heatmap videos, plots, live streams that
drop, stall and are interrupted, and the bad-input matrix."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

av = pytest.importorskip("av")

from clip_ebc import CrowdCounter, Zone  # noqa: E402
from clip_ebc.cli import main  # noqa: E402
from conftest import make_scene, python_with_sigint  # noqa: E402
from media import make_audio_only, make_unknown_codec_video, make_video, make_zero_frame_video, truncate  # noqa: E402
from streams import StreamServer  # noqa: E402

W, H = 160, 120


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def rn50(tiny_dirs):
    return CrowdCounter(tiny_dirs["rn50"], device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4-second, 5 fps video of synthetic crowd scenes (20 frames, each different)."""
    frames = [make_scene(H, W, 10 + i, seed=i)[0] for i in range(20)]
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=5)


@pytest.fixture(scope="module")
def zone_file(tmp_path_factory):
    """Three zones that tile a 160x120 frame: a concave L in pixels, the rest cut diagonally (normalised)."""
    path = tmp_path_factory.mktemp("zones") / "zones.json"
    path.write_text(json.dumps({"zones": [
        {"name": "L", "points": [[0, 0], [60, 0], [60, 80], [100, 80], [100, 120], [0, 120]], "area_m2": 12.5},
        {"name": "upper right", "points": [[60 / W, 0], [1, 0], [100 / W, 80 / H], [60 / W, 80 / H]], "normalized": True},
        {"name": "lower right", "points": [[1, 0], [1, 1], [100 / W, 1], [100 / W, 80 / H]], "normalized": True},
    ]}))
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_video_end_to_end(tiny_dirs, rn50, clip, zone_file, tmp_path):
    """crowdcount clip.mp4 --every 1s --zones zones.json --csv out.csv --heatmap out.mp4 --plot out.png"""
    out_csv, out_mp4, out_png = tmp_path / "out.csv", tmp_path / "out.mp4", tmp_path / "out.png"
    code, stdout, stderr = invoke(clip, "--every", "1s", "--zones", zone_file, "--csv", out_csv, "--heatmap", out_mp4,
                                  "--plot", out_png, "--json", "-m", tiny_dirs["rn50"], "--device", "cpu")
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["frame"], r["time"]) for r in rows] == [(0, 0.0), (5, 1.0), (10, 2.0), (15, 3.0)]
    frames = decoded_frames(clip)
    for row in rows:
        expected = rn50.count(frames[row["frame"]]).count  # the image path on the same decoded frame
        assert row["count"] == pytest.approx(expected, rel=1e-5)
        assert sum(row["zones"].values()) == pytest.approx(row["count"], rel=1e-4)  # the zones tile the frame
        assert row["per_m2"] == {"L": pytest.approx(row["zones"]["L"] / 12.5)}
        assert (row["path"], row["width"], row["height"], row["heatmap"]) == (str(clip), W, H, str(out_mp4))
    with out_csv.open() as f:
        table = list(csv.DictReader(f))
    assert [float(r["count"]) for r in table] == [r["count"] for r in rows]
    assert [float(r["zone:upper right"]) for r in table] == [r["zones"]["upper right"] for r in rows]
    assert [r["time"] for r in table] == ["0.0", "1.0", "2.0", "3.0"] and table[0]["per_m2:L"]
    heat = decoded_frames(out_mp4)
    assert len(heat) == 4 and heat[0].shape == (H, W, 3)
    with av.open(str(out_mp4)) as container:
        assert container.streams.video[0].average_rate == 1  # the sampled rate: one frame per second
    assert Image.open(out_png).size == (900, 450)
    summary = [line for line in stderr.splitlines() if "frames counted" in line]
    best = max(rows, key=lambda r: r["count"])
    assert summary == [f"{clip}: 4 frames counted; mean {np.mean([r['count'] for r in rows]):.1f}, min "
                       f"{min(r['count'] for r in rows):.1f}, max {best['count']:.1f} people (at {best['time']:.1f} s)."]


def test_count_video_in_python(rn50, clip, zone_file):
    """Sampling by frames and by time, start and duration; a polygon's count from any result."""
    frames = decoded_frames(clip)
    with rn50.count_video(clip, "6f", zones=zone_file) as counts:
        results = list(counts)
    assert [r.frame_index for r in results] == [0, 6, 12, 18] and counts.stopped is None and not counts.live
    for r in results:
        assert r.count == pytest.approx(rn50.count(frames[r.frame_index]).count, rel=1e-5)
        assert r.time == pytest.approx(r.frame_index / 5)
        assert list(r.zone_counts) == ["L", "upper right", "lower right"]
        assert r.count_in(Zone("all", ((0, 0), (W, 0), (W, H), (0, H)))) == pytest.approx(r.count, rel=1e-9)
        assert r.count_in([(0, 0), (60, 0), (60, 80), (100, 80), (100, 120), (0, 120)]) == pytest.approx(
            r.zone_counts["L"], rel=1e-9)
    part = list(rn50.count_video(clip, 0.4, start=1.0, duration=1.0))
    assert [r.time for r in part] == pytest.approx([1.0, 1.4, 1.8])


@pytest.fixture
def stream():
    with StreamServer(fps=10, speed=1.0, max_seconds=30) as server:
        yield server


def test_a_dropped_stream_is_reopened(tiny_dirs, stream, tmp_path):
    # the command probes an http(s) URL once (a short connection) before it reads the stream: the second
    # connection is the reader's, and it is the one dropped
    stream.drop_after(seconds=1.0, count=2)
    code, stdout, stderr = invoke(stream.live_url, "--every", "0.5s", "--duration", "5", "--json", "-m",
                                  tiny_dirs["rn50"])
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    times = [r["time"] for r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)  # time goes on across the reconnection
    assert times[0] == 0.0 and times[-1] >= 3.0 and len(rows) >= 5
    assert all(r["wallclock"] for r in rows)  # live rows carry the clock time
    retries = [line for line in stderr.splitlines() if "reconnecting" in line]
    assert len(retries) == 1 and retries[0].startswith("warning: stream ") and stream.connections == 3


def test_a_stalled_stream_times_out(tiny_dirs, stream, tmp_path):
    threading.Timer(1.5, stream.stall).start()
    out_csv = tmp_path / "live.csv"
    started = time.monotonic()
    code, stdout, stderr = invoke(stream.live_url, "--every", "0.5s", "--timeout", "1", "--reconnect", "1", "--csv",
                                  out_csv, "-m", tiny_dirs["rn50"])
    assert code == 1 and time.monotonic() - started < 30
    counted = stdout.splitlines()
    assert counted and all(" people" in line for line in counted)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "gave up after 1 reconnection attempt" in errors[0]
    with out_csv.open() as f:
        table = list(csv.DictReader(f))
    assert len([r for r in table if r["count"]]) == len(counted)  # nothing counted was lost


def test_frames_dropped_behind_a_live_stream_are_reported(tiny_dirs, stream, monkeypatch):
    # counting at 4 frames/s behind a 10 frames/s stream sampled at every frame: the reader drops the
    # oldest waiting frames, and every sampled frame is either a row or counted as dropped
    real = CrowdCounter.count_many

    def slow(self, *args, **kwargs):
        for result in real(self, *args, **kwargs):
            time.sleep(0.25)
            yield result

    monkeypatch.setattr(CrowdCounter, "count_many", slow)
    code, stdout, stderr = invoke(stream.live_url, "--every", "0.1s", "--duration", "3", "--batch-size", "1",
                                  "--json", "-m", tiny_dirs["rn50"])
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    (warning,) = [line for line in stderr.splitlines() if "dropped" in line]
    dropped = int(warning.split(": ")[2].split()[0])
    assert warning.startswith(f"warning: {stream.live_url}: {dropped} sampled frames were dropped because counting "
                              "fell behind the live source")
    assert dropped > 0 and len(rows) + dropped == 30
    times = [r["time"] for r in rows]
    assert times[0] == 0.0 and times == sorted(times) and max(b - a for a, b in zip(times, times[1:])) > 0.15


def test_a_signal_while_a_video_is_finished_waits_for_its_outputs(tiny_dirs, clip, tmp_path, monkeypatch):
    # SIGTERM arrives while the decoder is being stopped: the heatmap video, the plot, the CSV and the
    # summary line are all finished first, then the command ends with 143
    from clip_ebc.counter import VideoCounts

    real = VideoCounts.close

    def close_under_sigterm(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs in here
        real(self)

    monkeypatch.setattr(VideoCounts, "close", close_under_sigterm)
    out_csv, out_mp4, out_png = tmp_path / "out.csv", tmp_path / "out.mp4", tmp_path / "out.png"
    code, stdout, stderr = invoke(clip, "--every", "1s", "--csv", out_csv, "--heatmap", out_mp4, "--plot", out_png,
                                  "-m", tiny_dirs["rn50"])
    assert code == 143, stderr
    lines = stderr.splitlines()
    assert lines[-1] == "terminated" and "4 frames counted" in lines[-2]
    assert len(stdout.splitlines()) == 4 and len(decoded_frames(out_mp4)) == 4
    with out_csv.open() as f:
        assert len(list(csv.DictReader(f))) == 4
    assert Image.open(out_png).size[0] > 100


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_stream_keeps_its_rows_and_a_playable_video(tiny_dirs, stream, tmp_path, sig, code):
    out_csv, out_mp4 = tmp_path / "live.csv", tmp_path / "live.mp4"
    proc = subprocess.Popen([*python_with_sigint("clip_ebc.cli"), stream.live_url, "--every", "0.3s", "--json",
                             "--csv", str(out_csv), "--heatmap", str(out_mp4), "-m", str(tiny_dirs["rn50"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = []
    deadline = time.monotonic() + 60
    while len(rows) < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        rows.append(json.loads(line))
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    rows += [json.loads(line) for line in stdout.splitlines()]
    assert proc.returncode == code, stderr
    assert stderr.splitlines()[-1] == ("interrupted" if sig == signal.SIGINT else "terminated")
    assert len(rows) >= 3
    with out_csv.open() as f:
        table = list(csv.DictReader(f))
    assert [float(r["count"]) for r in table] == [r["count"] for r in rows]  # every counted row is in the CSV
    assert len(decoded_frames(out_mp4)) == len(rows)  # the heatmap video was finished: it plays to the end


def test_bad_video_inputs(tiny_dirs, clip, tmp_path):
    make_zero_frame_video(tmp_path / "zero.mp4")
    make_audio_only(tmp_path / "audio.m4a")
    make_unknown_codec_video(tmp_path / "codec.mkv")
    truncate(make_video(tmp_path / "long.mkv", [make_scene(H, W, 5, seed=i)[0] for i in range(50)], fps=10),
             tmp_path / "truncated.mkv", 0.5)
    expectations = {
        tmp_path / "zero.mp4": "has no video stream",
        tmp_path / "audio.m4a": "is an audio file",
        tmp_path / "codec.mkv": "codec",
    }
    for path, message in expectations.items():
        code, stdout, stderr = invoke(path, "-m", tiny_dirs["rn50"])
        (line,) = stderr.splitlines()
        assert code == 1 and stdout == "" and line.startswith(f"error: {path}") and message in line, line
    # a truncated file: what decodes is counted, then one line says where decoding stopped
    code, stdout, stderr = invoke(tmp_path / "truncated.mkv", "--every", "1s", "-m", tiny_dirs["rn50"])
    assert code == 1 and len(stdout.splitlines()) >= 1
    stopped = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(stopped) == 1 and "decoding stopped at" in stopped[0]


def test_bad_urls(tiny_dirs, stream):
    page = stream.add("/page.html", b"<!doctype html><html><body>hi</body></html>", "text/html")
    fake = stream.add("/clip.mp4", _png_bytes(), "image/png")
    missing = stream.url + "/nothing.mp4"
    cases = [(page, "is a web page"), (fake, "should be a video (.mp4) but serves an image"),
             (missing, "HTTP 404"), ("http://127.0.0.1:9/x.mp4", "127.0.0.1:9")]
    for url, message in cases:
        code, stdout, stderr = invoke(url, "-m", "no-such-model")  # checked before any model is loaded
        (line,) = stderr.splitlines()
        assert code == 1 and stdout == "" and message in line and "no-such-model" not in line, line


def test_image_urls_are_counted(tiny_dirs, rn50, stream):
    url = stream.add("/crowd.png", _png_bytes(), "image/png")
    code, stdout, stderr = invoke(url, "--json", "-m", tiny_dirs["rn50"])
    assert code == 0, stderr
    row = json.loads(stdout)
    assert row["path"] == url and row["count"] == pytest.approx(rn50.count(_scene()).count, rel=1e-6)


def test_a_mix_of_videos_images_and_broken_files(tiny_dirs, clip, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(_scene()).save(photo)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    code, stdout, stderr = invoke(photo, clip, junk, tmp_path / "missing.jpg", photo.parent / "*.webm", "--json",
                                  "--every", "2s", "-m", tiny_dirs["rn50"])
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert code == 1
    assert [(r["path"], r.get("time")) for r in rows] == [
        (str(photo), None), (str(clip), 0.0), (str(clip), 2.0), (str(junk), None),
        (str(tmp_path / "missing.jpg"), None), (str(photo.parent / "*.webm"), None)]
    assert [r["count"] is not None for r in rows] == [True, True, True, False, False, False]
    assert len([line for line in stderr.splitlines() if line.startswith("error: ")]) == 3


def test_zone_file_errors_come_before_anything_else(tiny_dirs, clip, tmp_path):
    bad = tmp_path / "zones.json"
    for content, message in [("{not json", "not valid JSON"),
                             (json.dumps([{"name": "x", "points": [[0, 0], [10, 10], [0, 10], [10, 0]]}]), "crosses itself"),
                             (json.dumps([{"name": "far", "points": [[0, 0], [500, 0], [500, 50]]}]), "outside")]:
        bad.write_text(content)
        code, stdout, stderr = invoke(clip, "--zones", bad, "-m", "no-such-model")
        (line,) = stderr.splitlines()
        assert code == 2 and stdout == "" and message in line and "no-such-model" not in line, line


def _scene() -> np.ndarray:
    return make_scene(90, 130, 12, seed=3)[0]


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(_scene()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_missing_extra_is_one_line(tiny_dirs, clip, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)
    code, _, stderr = invoke(clip, "-m", "no-such-model")  # known before any model is loaded
    (line,) = stderr.splitlines()
    assert code == 1 and line.startswith(f"error: {clip}: ") and line.endswith('pip install "clip-ebc[video]"')
    photo = tmp_path / "photo.png"
    Image.fromarray(_scene()).save(photo)
    code, stdout, stderr = invoke(photo, clip, "-m", tiny_dirs["rn50"])  # images are still counted
    assert code == 1 and stdout.startswith(f"{photo}: ") and len(stderr.splitlines()) == 1
