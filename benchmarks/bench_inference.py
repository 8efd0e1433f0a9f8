"""Inference benchmark: every fast-path variant against the plain float32 eager path, in one run.

    python benchmarks/bench_inference.py                       # RN50 and ViT-B/16, default sizes
    python benchmarks/bench_inference.py --models rn50 --sizes 768x1024 --repeats 5
    python benchmarks/bench_inference.py --official /path/to/CLIP-EBC   # also time the official code

Models are built at real size with random but well-conditioned weights (speed does not depend on the
values): BatchNorm statistics from two training-mode batches, the head re-centred so blocks pick
different bins. With ``--official`` the weights come from the official implementation's own classes
(see ``official.py``) and are converted, so both implementations count the same model.

For each model, input size and batch size it measures, per variant: latency (minimum and median over
``--repeats`` rounds after one warm-up, the variants alternating A B C A B C ... so that a machine that
gets busy slows them alike; the 1-minute load average before and after each case is printed), images
per second, peak resident memory during a run (and peak CUDA memory), achieved GFLOP/s (from the
minimum) and its fraction of the machine's peak in that precision, measured at the start the way the
fastest kernel runs (oneDNN's, as a 1x1 channels-last convolution; ``torch.matmul``'s figure is printed
too), and the count with its difference from the float32 eager count. It also times loading a
saved checkpoint from a warm cache. One table is printed at the end (``--markdown`` for RESULTS.md).
``+RSS`` is the resident memory a run adds to the process (several models live in this process);
``--memory`` instead measures the whole peak of a fresh process per case: import, load, count one image.

Variants: ``eager-fp32`` (the model as loaded, float32: the reference), ``fast-fp32`` (BatchNorm
folded, channels-last), ``fast-bf16`` (the same under bfloat16 autocast; CPUs with native bfloat16 and
GPUs), ``fast-fp16`` (GPUs), ``*-compiled`` (with ``--compile``: torch.compile, first call reported
apart), and ``official`` (the official implementation's forward on the same
normalised input: whole image for ResNets, all 224-pixel windows in one batch for ViTs).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODELS = {"rn50": "RN50", "vit_b16": "ViT-B-16"}
DEFAULT_SIZES = ["448x448", "768x1024", "1536x2048", "3000x4000"]


# ------------------------------------------------------------------------------------ measurement


class PeakRSS:
    """Samples this process's resident memory every few milliseconds; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Achieved GFLOP/s of an n x n matrix product (``torch.matmul``: MKL for float32 on x86 CPUs), the
    best of ``repeats``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / _best(lambda: a @ b, device, repeats) / 1e9


def onednn_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Achieved GFLOP/s of the same n x n x n product run as a 1x1 convolution over n channels-last
    positions: on CPUs that is oneDNN's kernel, the fastest one PyTorch has for every precision (on
    CUDA the same cuDNN/cuBLAS peak as the matrix product). The reference for "% of peak"."""
    x = torch.randn(1, n, 1, n, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(n, n, 1, bias=False, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    conv.requires_grad_(False)
    with torch.inference_mode():
        return 2 * n**3 / _best(lambda: conv(x), device, repeats) / 1e9


def conv3x3_rate(device: torch.device, dtype: torch.dtype, channels: int = 256, side: int = 112, repeats: int = 6) -> float:
    """GFLOP/s of a 3x3 convolution (256 channels, 112x112, channels-last): oneDNN's direct kernels run
    these faster than the 1x1 product, so "% of peak" can pass 100 % on convolution-heavy models."""
    x = torch.randn(1, channels, side, side, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False, device=device, dtype=dtype)
    conv = conv.to(memory_format=torch.channels_last).requires_grad_(False)
    with torch.inference_mode():
        return 2 * channels**2 * 9 * side**2 / _best(lambda: conv(x), device, repeats) / 1e9


def _best(fn, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_flops(model: torch.nn.Module, crops: list[torch.Tensor]) -> float:
    """Floating-point operations of the model's forward over these crops (convolutions and matrix
    products, counted by PyTorch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # the counter's module tracker cannot follow parameters that want gradients
        p.requires_grad_(False)
    try:
        with torch.no_grad(), counter:
            for x in crops:
                model(x)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------ models


def random_model(backbone: str, seed: int):
    """A real-size CLIPEBC with random, well-conditioned weights, made the way ``official.py`` makes the
    official model's: trivially initialised tensors (zero BatchNorm scales closing OpenAI's residual
    branches, unit norm affines, zero biases) get random values, BatchNorm statistics come from one
    training-mode batch, and the head is re-centred so that blocks pick different bins."""
    sys.path.insert(0, str(HERE))
    from official import calibrate_batchnorm, perturb_trivial

    from clip_ebc import CLIPEBC, ModelConfig
    from clip_ebc.bins import official_anchor_points, official_bins

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = ModelConfig(backbone=backbone, bins=official_bins(8, 4), anchor_points=official_anchor_points(8, 4, "sha"),
                         provenance={"dataset": "sha", "model_name": f"random-{backbone}"})
    model = CLIPEBC(config)
    model.set_text_embeddings(torch.randn(config.num_bins, model.text_embeddings.shape[1], generator=gen))
    perturb_trivial(model, gen)
    calibrate_batchnorm(model, 224, gen)
    with torch.no_grad():
        x = torch.randn(2, 3, 224, 224, generator=gen)
        features = model.decoder(model.encode(x))
        w = model.projection.weight[:, :, 0, 0]
        model.projection.bias.copy_(-(w @ features.mean(dim=(0, 2, 3))))
    return model.eval()


def official_pair(checkout: str, backbone: str, seed: int):
    """(official model, the same weights converted to clip-ebc)."""
    sys.path.insert(0, str(HERE))
    import official  # benchmarks/official.py

    from clip_ebc.bins import official_anchor_points, official_bins
    from clip_ebc.convert import convert_official

    name = {"RN50": "resnet50", "ViT-B-16": "vit_b_16"}[backbone]
    theirs = official.build_official(checkout, name, seed=seed)
    ours = convert_official(official.official_state_dict(theirs), backbone=backbone, reduction=8,
                            bins=official_bins(8, 4), anchor_points=official_anchor_points(8, 4, "sha"),
                            prompt_type="word", provenance={"dataset": "sha", "model_name": f"official-{backbone}"})
    return theirs, ours


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A real-looking synthetic crowd: textured background and a few thousand bright heads."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:height, :width]
    img = 70 + 35 * np.sin(xx / 37.0)[..., None] + 25 * np.cos(yy / 53.0)[..., None] + np.zeros((1, 1, 3))
    img = img + rng.normal(0, 8, (height, width, 3))
    for _ in range(height * width // 4000):
        y, x, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2.5, 7)
        y0, y1, x0, x1 = int(max(0, y - r)), int(min(height, y + r + 1)), int(max(0, x - r)), int(min(width, x + r + 1))
        mask = (np.arange(y0, y1)[:, None] - y) ** 2 + (np.arange(x0, x1)[None] - x) ** 2 < r * r
        img[y0:y1, x0:x1][mask] = rng.integers(150, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ running


@dataclass
class Row:
    model: str
    size: str
    batch: int
    variant: str
    seconds: float
    """Minimum over the runs (the least disturbed one)."""
    median: float
    images_per_s: float
    peak_gib: float
    cuda_peak_gib: float | None
    gflops: float | None
    peak_fraction: float | None
    count: float
    count_delta: float | None = None
    speedup: float | None = None
    load: str = ""


def time_alternating(fns: dict[str, object], repeats: int, device: torch.device) -> dict[str, tuple[list[float], float, float | None, object]]:
    """Run every function once (warm-up), then ``repeats`` rounds of each in turn (A B C A B C ...), so
    that a machine that gets busier slows every variant alike. Per name: (seconds of each run, working
    memory GiB (the highest peak RSS of a run minus RSS before it), peak CUDA GiB, last result)."""
    results = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    memory = {name: 0.0 for name in fns}
    cuda = {name: None for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            gc.collect()
            before = PeakRSS()._rss()
            with PeakRSS() as rss:
                _sync(device)
                t = time.perf_counter()
                results[name] = fn()
                _sync(device)
                times[name].append(time.perf_counter() - t)
            memory[name] = max(memory[name], (rss.peak - before) / 2**30)
            if device.type == "cuda":
                cuda[name] = torch.cuda.max_memory_allocated(device) / 2**30
    return {name: (times[name], memory[name], cuda[name], results[name]) for name in fns}


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""


def official_forward(official_model, model, image: np.ndarray, device: torch.device) -> float:
    """The official pipeline on the normalised image: whole image (ResNet) or every 224-pixel window
    in one batch, averaged over overlaps (ViT), as ``utils.sliding_window_predict`` does."""
    from clip_ebc.preprocess import to_input_tensor
    from clip_ebc.tiling import Stitcher, window_plan

    x = to_input_tensor(image, model.config.mean, model.config.std, device=device)
    with torch.no_grad():
        if not model.config.is_vit:
            return float(official_model(x).sum())
        h, w = x.shape[-2:]
        plan = window_plan(h, w, (224, 224), (224, 224), 8)
        preds = official_model(torch.cat([x[:, :, c.top:c.top + 224, c.left:c.left + 224] for c in plan]))
        stitcher = Stitcher(plan, (h // 8, w // 8), device)
        for crop, p in zip(plan, preds):
            stitcher.add(crop, p)
        return float(stitcher.result().sum())


def run(args) -> list[Row]:
    from clip_ebc import CrowdCounter
    from clip_ebc.runtime import native_cpu_bfloat16

    device = torch.device(args.device)
    low_precisions = []
    if device.type == "cuda":
        low_precisions = [("fast-fp16", "float16"), ("fast-bf16", "bfloat16")]
    elif native_cpu_bfloat16():
        low_precisions = [("fast-bf16", "bfloat16")]
    dtypes = [torch.float32] + [getattr(torch, p) for _, p in low_precisions]
    peaks = {dtype: onednn_peak(device, dtype) for dtype in dtypes}
    mkl = {dtype: matmul_peak(device, dtype) for dtype in dtypes}
    conv3 = {dtype: conv3x3_rate(device, dtype) for dtype in dtypes}
    print("peak (oneDNN 1x1 convolution, 2048^3): " + ", ".join(f"{_name(k)} {v:.0f} GFLOP/s" for k, v in peaks.items())
          + "; torch.matmul: " + ", ".join(f"{_name(k)} {v:.0f} GFLOP/s" for k, v in mkl.items())
          + "; oneDNN 3x3 convolution: " + ", ".join(f"{_name(k)} {v:.0f} GFLOP/s" for k, v in conv3.items())
          + f"; load average {_load()}", flush=True)

    rows: list[Row] = []
    for key in args.models:
        backbone = MODELS[key]
        official_model = None
        if args.official:
            official_model, model = official_pair(args.official, backbone, args.seed)
            official_model = official_model.to(device).eval()
        else:
            model = random_model(backbone, args.seed)

        with tempfile.TemporaryDirectory() as tmp:  # load time from a warm cache (files on local disk)
            model.save_pretrained(tmp)
            CrowdCounter(tmp, device=device)  # warm the page cache
            load_times = []
            for _ in range(3):
                t = time.perf_counter()
                CrowdCounter(tmp, device=device)
                load_times.append(time.perf_counter() - t)
            print(f"{key}: load from a warm cache {min(load_times):.2f} s (min of 3)", flush=True)
            rows.append(Row(key, "load", 1, "CrowdCounter(folder)", min(load_times), statistics.median(load_times), 0,
                            0, None, None, None, float("nan")))

        variants = [("eager-fp32", dict(optimize=False, precision="float32")),
                    ("fast-fp32", dict(optimize=True, precision="float32"))]
        variants += [(name, dict(optimize=True, precision=p)) for name, p in low_precisions]
        if args.compile:
            variants += [(name + "-compiled", dict(kw, compile=True)) for name, kw in list(variants[1:])]
        counters = {name: CrowdCounter(model, device=device, resize="native", **kw) for name, kw in variants}

        for size in args.sizes:
            height, width = (int(v) for v in size.split("x"))
            image = scene(height, width)
            # every variant runs the same crops; count their FLOPs once, on the plain eager model
            flops_per_image = model_flops(counters["eager-fp32"].model, _crops(counters["eager-fp32"], image))
            for batch in args.batches:
                if batch > 1 and height * width > 2_000_000:
                    continue  # batches of big photos only repeat what one photo shows
                repeats = args.repeats if height * width <= 2_000_000 else args.large_repeats
                images = [image] * batch
                fns = {}
                for name, counter in counters.items():
                    fns[name] = (lambda c: lambda: [r.count for r in c.count_many(images, batch_size=max(8, batch))][0])(counter)
                    if name.endswith("-compiled"):  # the first call compiles; report it apart
                        t = time.perf_counter()
                        fns[name]()
                        print(f"{key} {size} {name}: first call (compiling) {time.perf_counter() - t:.1f} s", flush=True)
                if official_model is not None and batch == 1 and height * width <= args.official_max_pixels:
                    fns["official"] = lambda: official_forward(official_model, model, image, device)  # noqa: E731
                load_before = _load()
                timed = time_alternating(fns, repeats, device)
                load = f"{load_before}-{_load()}"
                reference = None
                for name, (times, peak, cuda_peak, count) in timed.items():
                    seconds = min(times)
                    dtype = counters[name].dtype if name in counters else torch.float32
                    flops = flops_per_image * batch
                    measured = name != "official"
                    row = Row(key, size, batch if measured else 1, name, seconds, statistics.median(times),
                              (batch if measured else 1) / seconds, peak, cuda_peak,
                              flops / seconds / 1e9 if measured else None,
                              flops / seconds / 1e9 / peaks[dtype] if measured else None, count, load=load)
                    if reference is None:
                        reference = row
                    row.speedup = reference.seconds / seconds * (row.batch / reference.batch)
                    row.count_delta = (row.count - reference.count) / reference.count
                    rows.append(row)
                    print(_format([row])[-1], flush=True)
        counters = model = official_model = None  # free this model before building the next
        gc.collect()
    return rows


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _crops(counter, image) -> list[torch.Tensor]:
    """The crops the counter runs for ``image`` (for counting FLOPs), as zero tensors."""
    job = counter._prepare(image, image)
    return [torch.zeros(1, 3, c.height, c.width, device=counter.device) for c in job.plan]


# ------------------------------------------------------------------------------------ output


HEADER = ["model", "input", "batch", "variant", "min s", "median s", "img/s", "speedup", "+RSS GiB", "GFLOP/s",
          "% of peak", "count", "Δcount", "load"]


def _format(rows: list[Row], markdown: bool = False) -> list[str]:
    table = []
    for r in rows:
        table.append([
            r.model, r.size, str(r.batch), r.variant, f"{r.seconds:.3f}", f"{r.median:.3f}",
            f"{r.images_per_s:.3f}" if r.images_per_s else "",
            f"{r.speedup:.2f}x" if r.speedup else "", f"{r.peak_gib:.2f}" if r.peak_gib else "",
            f"{r.gflops:.0f}" if r.gflops else "", f"{100 * r.peak_fraction:.0f}%" if r.peak_fraction else "",
            f"{r.count:.1f}" if r.count == r.count else "", f"{100 * r.count_delta:+.4f}%" if r.count_delta is not None else "",
            r.load,
        ])
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        return lines + ["| " + " | ".join(row) + " |" for row in table]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(HEADER)]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [HEADER] + table]


def _child(checkpoint: str, size: str, precision: str, device: str, tile_size: int | None) -> None:
    """One fresh process: import, load the checkpoint, count one image; print times and peak RSS."""
    start = time.perf_counter()
    from clip_ebc import CrowdCounter

    imported = time.perf_counter()
    tiles = {} if tile_size is None else {"tile_size": tile_size}
    counter = CrowdCounter(checkpoint, device=device, resize="native", precision=precision, **tiles)
    loaded = time.perf_counter()
    height, width = (int(v) for v in size.split("x"))
    image = scene(height, width)
    with PeakRSS() as rss:
        t = time.perf_counter()
        count = counter.count(image).count
        seconds = time.perf_counter() - t
    print(f"RESULT {imported - start:.3f} {loaded - imported:.3f} {seconds:.3f} {rss.peak / 2**30:.3f} {count:.3f}")


def memory(args) -> None:
    """Peak resident memory of a fresh process that loads the model and counts one image."""
    import subprocess

    from clip_ebc.runtime import native_cpu_bfloat16

    precisions = ["float32"] + (["bfloat16"] if args.device == "cpu" and native_cpu_bfloat16() else [])
    if args.device.startswith("cuda"):
        precisions = ["float32", "float16"]
    tile_sizes = args.tile_sizes or [None]
    lines = ["| model | input | precision | tile size | import s | load s | count s | peak RSS GiB | count |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            random_model(MODELS[key], args.seed).save_pretrained(tmp)
            for size in args.sizes:
                for precision in precisions:
                    for tile_size in tile_sizes:  # tile sizes alternate within each case
                        cmd = [sys.executable, __file__, "--child", tmp, size, precision, "--device", args.device]
                        cmd += ["--tile-sizes", str(tile_size)] if tile_size else []
                        cmd += ["--threads", str(args.threads)] if args.threads else []
                        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                        imp, load, secs, peak, count = out.split("RESULT ")[1].split()
                        lines.append(f"| {key} | {size} | {precision} | {tile_size or 'default'} | {imp} | {load} | "
                                     f"{secs} | {peak} | {float(count):.1f} |")
                        print(lines[-1], flush=True)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="HxW, e.g. 768x1024")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per case, variants alternating")
    parser.add_argument("--large-repeats", type=int, default=1, help="rounds for inputs over 2 MP")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--official", metavar="CHECKOUT", help="path to a checkout of Yiming-M/CLIP-EBC to time too")
    parser.add_argument("--official-max-pixels", type=int, default=3_200_000,
                        help="skip the official code above this many pixels (it holds whole images in memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants of the fast paths")
    parser.add_argument("--markdown", action="store_true", help="print the final table as Markdown")
    parser.add_argument("--memory", action="store_true",
                        help="instead: peak RSS of a fresh process per model, size and precision (load + count)")
    parser.add_argument("--tile-sizes", nargs="+", type=int, metavar="PIXELS",
                        help="with --memory: a fresh process per CrowdCounter(tile_size=...) too (ResNet tile plans)")
    parser.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "SIZE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tile_sizes and not (args.memory or args.child):
        parser.error("--tile-sizes goes with --memory")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return _child(*args.child, args.device, (args.tile_sizes or [None])[0])

    import clip_ebc

    print(f"clip-ebc {clip_ebc.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {torch.get_num_threads()} threads, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""), flush=True)
    print("command: python " + " ".join(sys.argv), flush=True)
    if args.memory:
        return memory(args)
    rows = run(args)
    print()
    print("\n".join(_format(rows, markdown=args.markdown)))


if __name__ == "__main__":
    main()
