"""Memory layout of a folded RN50 on the CPU: NCHW against channels-last, float32 and bfloat16.

    python benchmarks/bench_layout.py                       # 448x448, 768x1024, 1088x1088; 5 rounds
    python benchmarks/bench_layout.py --sizes 448x448 --repeats 3
    python benchmarks/bench_layout.py --convs                # single bfloat16 3x3 convolutions instead

Variants, on the same random real-size RN50 (``bench_inference.random_model``) and the same input:
``eager`` (float32 only) is the model as loaded; ``nchw`` has BatchNorm folded; ``cl`` has it folded
and its weights (and input) in channels-last; ``mixed`` (lower precision only) is ``cl`` with the
convolutions ``clip_ebc.runtime.keep_aliasing_convs_nchw`` picks in NCHW, as ``CrowdCounter`` prepares
it. Lower precision holds the weights in bfloat16
(``clip_ebc.runtime.hold_weights_in``). One warm-up call each, then ``--repeats`` rounds of the
variants alternating; min and median seconds per forward pass. The choice in
``clip_ebc.runtime.prepare_for_inference`` (NCHW for float32 on CPUs) rests on this table.

``--convs`` times single bfloat16 3x3 convolutions (C -> C channels, stride 1) in both layouts, the
evidence for ``clip_ebc.runtime.keep_aliasing_convs_nchw``: channels-last is slower where a pixel is a
multiple of 4 KiB (C = 2048, 4096), as fast or faster elsewhere.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["448x448", "768x1024", "1088x1088"], help="HxW")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--convs", action="store_true", help="time single 3x3 convolutions instead")
    args = parser.parse_args()
    if args.convs:
        return convs(args.repeats)

    sys.path.insert(0, str(HERE))
    from bench_inference import MODELS, random_model

    from clip_ebc.runtime import fold_batchnorm, hold_weights_in, keep_aliasing_convs_nchw, native_cpu_bfloat16

    base = random_model(MODELS["rn50"], 0).eval().requires_grad_(False)

    def prepared(channels_last: bool, dtype: torch.dtype, mixed: bool = False) -> torch.nn.Module:
        model = copy.deepcopy(base)
        fold_batchnorm(model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if mixed:
            keep_aliasing_convs_nchw(model, dtype)
        if dtype != torch.float32:
            hold_weights_in(model, dtype)
        return model

    dtypes = [torch.float32] + ([torch.bfloat16] if native_cpu_bfloat16() else [])
    _print_setup()
    print("| input | dtype | variant | min s | median s | vs nchw |\n|---|---|---|---|---|---|", flush=True)
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        for dtype in dtypes:
            variants = {"eager": base} if dtype == torch.float32 else {}
            variants |= {"nchw": prepared(False, dtype), "cl": prepared(True, dtype)}
            if dtype != torch.float32:
                variants["mixed"] = prepared(True, dtype, mixed=True)
            inputs = {name: x.contiguous(memory_format=torch.channels_last) if name in ("cl", "mixed") else x
                      for name in variants}
            times = alternate({name: functools.partial(model, inputs[name]) for name, model in variants.items()},
                              args.repeats)
            for name, ts in times.items():
                ratio = min(ts) / min(times["nchw"])
                print(f"| {size} | {str(dtype).removeprefix('torch.')} | {name} | {min(ts):.3f} | "
                      f"{statistics.median(ts):.3f} | {ratio:.3f}x |", flush=True)


CONV_CASES = [(256, 68, 68), (512, 34, 34), (1024, 56, 56), (1024, 96, 128), (1536, 56, 56), (2048, 24, 24),
              (2048, 56, 56), (2048, 96, 128), (2048, 136, 136), (2560, 40, 40), (3072, 32, 32), (4096, 24, 24)]
"""(channels, height, width): RN50's decoder convolution is 2048 channels at 1/8 of the input's size."""


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, per name: every function once as a warm-up, then ``repeats`` rounds of them
    in turn (A B C A B C ...), under ``torch.inference_mode``."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    return times


def _print_setup() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
          f"command: python {' '.join(sys.argv)}", flush=True)


def convs(repeats: int) -> None:
    _print_setup()
    print("| channels | feature map | NCHW ms | channels-last ms | NCHW GFLOP/s | channels-last GFLOP/s | "
          "channels-last / NCHW |\n|---|---|---|---|---|---|---|", flush=True)
    generator = torch.Generator().manual_seed(0)
    for channels, height, width in CONV_CASES:
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1).requires_grad_(False).to(torch.bfloat16)
        x = torch.randn(1, channels, height, width, generator=generator).to(torch.bfloat16)
        weights = {"nchw": conv.weight.contiguous(), "cl": conv.weight.contiguous(memory_format=torch.channels_last)}
        inputs = {"nchw": x, "cl": x.contiguous(memory_format=torch.channels_last)}
        times = alternate({name: functools.partial(torch.nn.functional.conv2d, inputs[name], weights[name], conv.bias,
                                                   padding=1) for name in inputs}, repeats)
        flops = 2 * channels * channels * 9 * height * width
        a, b = min(times["nchw"]), min(times["cl"])
        print(f"| {channels} | {height}x{width} | {1e3 * a:.1f} | {1e3 * b:.1f} | {flops / a / 1e9:.0f} | "
              f"{flops / b / 1e9:.0f} | {b / a:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
