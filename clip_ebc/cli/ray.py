"""``crowdcount --ray ADDRESS INPUTS ...``: the same rows and exit codes as a local run, counted by a
pool of Ray workers (:mod:`clip_ebc.ray`), plus Ray's own progress on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .run import Report, Settings
from .signals import reclaim


def run_on_ray(inputs: tuple[str, ...], address: str, *, model: str | None, zones: Any, workers: int,
               batch_size: int, precision: str, native: bool, recursive: bool, heatmap: str | None, as_json: bool,
               csv_path: Path | None, parquet_dir: str | None, echo, err) -> int:
    """Count ``inputs`` (paths, folders, globs, URIs of images) on the Ray cluster at ``address``; returns
    the exit code (1 when any input failed)."""
    from .. import ray as on_ray

    settings = Settings(batch_size=batch_size, as_json=as_json, zones=zones)
    if csv_path is not None:
        settings.add_csv(csv_path)
    if heatmap is not None and Path(heatmap.split("?", 1)[0]).suffix:
        raise click.UsageError(f"--heatmap {heatmap}: with --ray, heatmaps go into a directory (or a URI).")
    report = Report(settings, echo, err)
    counted, people = 0, 0.0

    def on_row(row: dict[str, Any]) -> None:
        nonlocal counted, people
        row = {k: v for k, v in row.items() if v is not None or k == "count"}
        if row.get("count") is not None:
            counted += 1
            people += row["count"]
        zones_text = ""
        if row.get("zones"):
            zones_text = " (" + ", ".join(f"{k} {v:.1f}" for k, v in row["zones"].items()) + ")"
        report.row(row, f"{row['path']}: {row['count']:.1f} people{zones_text}" if row.get("count") is not None else None)

    started = on_ray.connect(address)
    reclaim()  # ray.init put its own SIGTERM handler in place (exit code 15, rows not held back)
    try:
        on_ray.run(list(inputs), None, model, on_row=on_row, parquet=parquet_dir, zones=zones,
                   num_workers=workers, batch_size=batch_size, precision=precision,
                   resize="native" if native else "dataset", recursive=recursive, heatmaps=heatmap)
    finally:
        try:
            settings.close_sinks()
        finally:
            if started:
                import ray

                ray.shutdown()
    if not as_json:
        err(f"{counted} of {counted + report.failed} inputs counted, {people:.1f} people in total.")
    return 1 if report.failed else 0
