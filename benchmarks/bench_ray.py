"""Ray benchmark: images per second of plain local counting against Ray Data on this machine.

    python benchmarks/bench_ray.py --random rn50                         # 200 synthetic 1024x768 JPEGs
    python benchmarks/bench_ray.py --random vit_b16 --images 100 --repeats 5
    python benchmarks/bench_ray.py --model vit_b16.nwpu --folder photos/
    python benchmarks/bench_ray.py --model /tmp/tiny_rn50 --images 10 --size 96x128 --repeats 2   # a smoke run

Variants, at equal total cores C (``--cores``, default: all):

* ``local``: one process, ``CrowdCounter(model).count_many(paths)`` with C torch threads;
* ``ray-N``: ``clip_ebc.ray.iter_rows`` on a local Ray cluster (started once, on 127.0.0.1, with C CPUs)
  with N workers of C/N CPUs and C/N torch threads each (``--workers``, default 1 and 2).

Every run is end to end: the local run builds its counter (model load), a Ray run starts its actors
(each a new process that imports torch and loads the model) and reads the files through pyarrow. The
variants alternate (A B C, A B C, ...) so that drift of the machine's speed spreads over all of them;
the table reports min and median seconds per run, images per second at the median, and the median time
to the first result (model load and start-up). Counts are checked to agree across variants (1e-6).

``--random rn50|vit_b16`` builds a real-size model with random weights (as bench_inference.py does)
and saves it to a temporary folder; ``--model`` takes a registry name, checkpoint folder or hf-hub id.
Run it on a quiet machine: other load shows up directly in the numbers.
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

HERE = Path(__file__).resolve().parent


def make_images(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """``count`` synthetic crowd JPEGs (bench_inference's scene) of height x width pixels."""
    from PIL import Image

    sys.path.insert(0, str(HERE))
    from bench_inference import scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"scene_{i:05d}.jpg"
        Image.fromarray(scene(height, width, seed=i)).save(path, quality=90)
        paths.append(path)
    return paths


def random_checkpoint(name: str, folder: Path, seed: int) -> str:
    sys.path.insert(0, str(HERE))
    from bench_inference import MODELS, random_model

    model = random_model(MODELS[name], seed)
    model.save_pretrained(folder)
    return str(folder)


def run_local(model: str, paths: list[Path], threads: int, options: dict) -> tuple[float, float, list[float]]:
    """(seconds, seconds to the first result, counts) of one in-process run."""
    import torch

    from clip_ebc import CrowdCounter

    torch.set_num_threads(threads)
    start = time.perf_counter()
    counter = CrowdCounter(model, device="cpu", **options)
    counts, first = [], None
    for result in counter.count_many([str(p) for p in paths], skip_errors=True):
        first = first or time.perf_counter() - start
        counts.append(result.count)
    return time.perf_counter() - start, first or 0.0, counts


def run_ray(model: str, paths: list[Path], workers: int, cores: int, options: dict) -> tuple[float, float, list[float]]:
    from clip_ebc.ray import iter_rows

    start = time.perf_counter()
    counts, first = [], None
    for row in iter_rows([str(p) for p in paths], model, num_workers=workers, num_cpus_per_worker=cores // workers,
                         num_gpus_per_worker=0, **options):
        first = first or time.perf_counter() - start
        if row["error"]:
            raise SystemExit(f"error: {row['error']}")
        counts.append(row["count"])
    return time.perf_counter() - start, first or 0.0, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registry name, checkpoint folder or hf-hub:ORG/NAME")
    source.add_argument("--random", choices=["rn50", "vit_b16"], help="a real-size model with random weights")
    parser.add_argument("--folder", type=Path, help="count these images (default: synthetic ones)")
    parser.add_argument("--images", type=int, default=200, help="synthetic images to make (default 200)")
    parser.add_argument("--size", default="768x1024", help="synthetic image size HxW (default 768x1024)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="total cores for every variant")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all variants (default 3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--native-size", action="store_true", help="keep image sizes (default: the training-set rule)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bad = [w for w in args.workers if w < 1 or args.cores % w]
    if bad:
        parser.error(f"--workers {bad} must divide --cores {args.cores} (equal cores per worker).")

    import ray

    from clip_ebc.ray import connect

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        model = args.model or random_checkpoint(args.random, Path(tmp) / "model", args.seed)
        if args.folder:
            from clip_ebc.images import IMAGE_SUFFIXES

            paths = sorted(p for p in args.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            height, width = (int(v) for v in args.size.lower().split("x"))
            paths = make_images(Path(tmp) / "images", args.images, height, width)
        if not paths:
            raise SystemExit("error: no images to count.")
        options = {"batch_size": args.batch_size, "precision": args.precision,
                   "resize": "native" if args.native_size else "dataset"}

        started = time.perf_counter()
        connect("local", num_cpus=args.cores, include_dashboard=False, logging_level="warning")
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"Ray cluster up in {time.perf_counter() - started:.1f} s ({args.cores} CPUs)", file=sys.stderr)

        variants = [("local", 1)] + [(f"ray-{w}", w) for w in args.workers]
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
        reference: list[float] | None = None
        try:
            for round_ in range(args.repeats):
                for name, workers in variants:
                    if name == "local":
                        seconds, first, counts = run_local(model, paths, args.cores, options)
                    else:
                        seconds, first, counts = run_ray(model, paths, workers, args.cores, options)
                    times[name].append((seconds, first))
                    reference = reference or counts
                    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(counts, reference))
                    if len(counts) != len(reference) or worst > 1e-6:
                        raise SystemExit(f"error: {name} counts differ from the first run's (relative {worst:.2e}).")
                    print(f"round {round_ + 1}/{args.repeats} {name}: {seconds:.2f} s", file=sys.stderr)
        finally:
            ray.shutdown()

    import torch

    print(f"\n{len(paths)} images ({args.folder or args.size}), model {args.model or 'random ' + args.random}, "
          f"batch {args.batch_size}, precision {args.precision}, {args.cores} cores; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}")
    header = ("variant", "workers", "threads/worker", "runs", "min s", "median s", "img/s", "first result s")
    table = [header]
    for name, workers in variants:
        seconds = [s for s, _ in times[name]]
        median = statistics.median(seconds)
        table.append((name, str(workers), str(args.cores // workers), str(len(seconds)), f"{min(seconds):.2f}",
                      f"{median:.2f}", f"{len(paths) / median:.2f}", f"{statistics.median(f for _, f in times[name]):.2f}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
