"""Memory layout of a folded RN50 on the CPU: NCHW against channels-last, float32 and bfloat16.

    python benchmarks/bench_layout.py                       # 448x448, 768x1024, 1088x1088; 5 rounds
    python benchmarks/bench_layout.py --sizes 448x448 --repeats 3

Variants, on the same random real-size RN50 (``bench_inference.random_model``) and the same input:
``eager`` (float32 only) is the model as loaded; ``nchw`` has BatchNorm folded; ``cl`` has it folded
and its weights (and input) in channels-last. Lower precision holds the weights in bfloat16
(``clip_ebc.runtime.hold_weights_in``). One warm-up call each, then ``--repeats`` rounds of the
variants alternating; min and median seconds per forward pass. The choice in
``clip_ebc.runtime.prepare_for_inference`` (NCHW for float32 on CPUs) rests on this table.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["448x448", "768x1024", "1088x1088"], help="HxW")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    from bench_inference import MODELS, random_model

    from clip_ebc.runtime import fold_batchnorm, hold_weights_in, native_cpu_bfloat16

    base = random_model(MODELS["rn50"], 0).eval().requires_grad_(False)

    def prepared(channels_last: bool, dtype: torch.dtype) -> torch.nn.Module:
        model = copy.deepcopy(base)
        fold_batchnorm(model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if dtype != torch.float32:
            hold_weights_in(model, dtype)
        return model

    dtypes = [torch.float32] + ([torch.bfloat16] if native_cpu_bfloat16() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
          f"command: python {' '.join(sys.argv)}", flush=True)
    print("| input | dtype | variant | min s | median s | vs nchw |\n|---|---|---|---|---|---|", flush=True)
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        for dtype in dtypes:
            variants = {"eager": base} if dtype == torch.float32 else {}
            variants |= {"nchw": prepared(False, dtype), "cl": prepared(True, dtype)}
            inputs = {name: x.contiguous(memory_format=torch.channels_last) if name == "cl" else x for name in variants}
            times: dict[str, list[float]] = {name: [] for name in variants}
            with torch.inference_mode():
                for name, model in variants.items():
                    model(inputs[name])
                for _ in range(args.repeats):
                    for name, model in variants.items():
                        started = time.perf_counter()
                        model(inputs[name])
                        times[name].append(time.perf_counter() - started)
            for name, ts in times.items():
                ratio = min(ts) / min(times["nchw"])
                print(f"| {size} | {str(dtype).removeprefix('torch.')} | {name} | {min(ts):.3f} | "
                      f"{statistics.median(ts):.3f} | {ratio:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
