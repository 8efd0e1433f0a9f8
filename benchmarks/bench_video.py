"""Video benchmark: the video path against counting the same frames as images, and decoding alone.

    python benchmarks/bench_video.py                                  # 60 s at 720p and 1080p, every 1 s
    python benchmarks/bench_video.py --sizes 1280x720 --seconds 20 --precisions float32

For each size a ``--seconds`` long H.264 video at 25 fps is made once (a synthetic crowd panning
slowly; libx264, a key frame every 250 frames as x264's default). Then, per precision, three variants
run alternately (A B C A B C ...) on one real-size model with random weights (``--model vit_b16`` or
``rn50``), after a warm-up:

* ``decode``: ``VideoReader(path, every=1s)`` alone: every frame decoded, the sampled ones converted to RGB;
* ``video``: ``CrowdCounter.count_video(path, every=1s)``: decoding on its background thread while the
  model counts, frames batched, results with times (what ``crowdcount clip.mp4 --every 1s`` runs);
* ``images``: ``CrowdCounter.count_many`` on the same sampled frames, decoded beforehand (not timed).

It prints sampled frames per second for each, the video path's cost over the images path, and how
much faster decoding is than counting. With a GPU, ``--device cuda`` adds float16.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODELS = {"vit_b16": "ViT-B-16", "rn50": "RN50"}


def make_video(path: Path, width: int, height: int, seconds: float, fps: int = 25) -> Path:
    """A slowly panning synthetic crowd (a window moving over a larger scene), H.264, 25 fps."""
    import av

    sys.path.insert(0, str(HERE))
    from bench_inference import scene

    big = scene(height + 64, width + 256, seed=1)
    frames = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            x = int(256 * i / max(frames - 1, 1))
            y = int(32 + 32 * np.sin(i / 40))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[y:y + height, x:x + width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"], help="WxH")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", default="1s")
    parser.add_argument("--precisions", nargs="+", default=None, help="default: float32 and the device's fast one")
    parser.add_argument("--model", default="vit_b16", choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds, variants alternating")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) the videos in this folder")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    from bench_inference import random_model

    from clip_ebc import CrowdCounter, __version__
    from clip_ebc.runtime import native_cpu_bfloat16
    from clip_ebc.video import VideoReader

    precisions = args.precisions or (["float32", "float16"] if args.device.startswith("cuda") else
                                     ["float32"] + (["bfloat16"] if native_cpu_bfloat16() else []))
    print(f"clip-ebc {__version__}, torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {args.device}; model {args.model} (random weights, real size); every {args.every}", flush=True)
    print("command: python " + " ".join(sys.argv), flush=True)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="clip-ebc-video-"))
    folder.mkdir(parents=True, exist_ok=True)
    model = random_model(MODELS[args.model], 0)
    lines = ["| video | precision | variant | sampled frames | min s | median s | frames/s | vs images | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        path = folder / f"crowd_{width}x{height}_{args.seconds:g}s.mp4"
        if not path.exists():
            t = time.perf_counter()
            make_video(path, width, height, args.seconds)
            print(f"made {path.name} in {time.perf_counter() - t:.0f} s", flush=True)
        with VideoReader(path, args.every) as reader:
            frames = [f.rgb for f in reader]
        for precision in precisions:
            counter = CrowdCounter(model, device=args.device, precision=precision)

            def decode() -> int:
                with VideoReader(path, args.every) as r:
                    return sum(1 for _ in r)

            def video() -> int:
                with counter.count_video(path, args.every) as counts:
                    return sum(1 for _ in counts)

            def images() -> int:
                return sum(1 for _ in counter.count_many(frames))

            variants = {"decode": decode, "video": video, "images": images}
            for fn in variants.values():  # warm-up (and a check that all see the same frames)
                assert fn() == len(frames)
            times: dict[str, list[float]] = {name: [] for name in variants}
            load = f"{os.getloadavg()[0]:.2f}"
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
            load += f"-{os.getloadavg()[0]:.2f}"
            for name, ts in times.items():
                ratio = min(ts) / min(times["images"])
                lines.append(f"| {size}, {args.seconds:g} s | {precision} | {name} | {len(frames)} | {min(ts):.2f} | "
                             f"{statistics.median(ts):.2f} | {len(frames) / min(ts):.3f} | {ratio:.3f}x | {load} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
