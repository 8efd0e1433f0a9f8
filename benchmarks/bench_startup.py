"""Start-up cost in fresh processes: the import, and one ``crowdcount`` run before its first image.

    python benchmarks/bench_startup.py              # full-size random RN50 and ViT-B/16, 5 runs each
    python benchmarks/bench_startup.py --runs 9

For each model a checkpoint folder is written once (random weights, real size). Then, alternating the
cases, fresh processes run: ``python -c "from clip_ebc import CrowdCounter"``; and ``crowdcount
tiny.png -m FOLDER``, whose wall time minus the time that process spent counting the 64x64 image
(printed by the process itself, ``seconds`` of its JSON row) is the fixed cost: interpreter, imports,
argument checks, model load. Min and median of ``--runs`` are printed, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["RN50", "ViT-B-16"])
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import numpy as np
    from bench_inference import random_model
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="clip-ebc-startup-"))
    image = work / "tiny.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    folders = {}
    for backbone in args.models:
        folders[backbone] = work / backbone
        random_model(backbone, 0).save_pretrained(folders[backbone])
    crowdcount = str(Path(sys.executable).with_name("crowdcount"))
    cases = {"import CrowdCounter": [sys.executable, "-c", "from clip_ebc import CrowdCounter"]}
    for backbone, folder in folders.items():
        cases[f"crowdcount, {backbone}"] = [crowdcount, str(image), "-m", str(folder), "--native-size", "--json"]
    for command in cases.values():  # warm the page cache
        subprocess.run(command, capture_output=True, check=True)

    times: dict[str, list[float]] = {name: [] for name in cases}
    load = [os.getloadavg()[0]]
    for _ in range(args.runs):
        for name, command in cases.items():  # alternate: A B C A B C ...
            t = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            elapsed = time.perf_counter() - t
            if name.startswith("crowdcount"):
                elapsed -= json.loads(out)["seconds"]  # the counting itself is not start-up
            times[name].append(elapsed)
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) during the runs: {min(load):.2f}-{max(load):.2f}; {args.runs} runs each, alternating")
    print("| case | min s | median s |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
