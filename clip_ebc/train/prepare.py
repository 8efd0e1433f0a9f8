"""``python -m clip_ebc.train.prepare DATASET SRC DST``: the official preprocessing, with a layout check.

DATASET is ``sha``, ``shb``, ``qnrf``, ``nwpu``, ``jhu`` or ``custom``; SRC is the dataset's root as
distributed (for ShanghaiTech the folder holding ``part_A`` and ``part_B``); DST receives the processed
layout that training reads (see :mod:`clip_ebc.train.data`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import CLIPEBCError
from ..resize import DATASET_MAX_SIDE, MIN_SIDE
from .settings import DATASETS


@click.command(name="python -m clip_ebc.train.prepare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset", type=click.Choice(DATASETS))
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path), required=False)
@click.option("--min-side", type=int, default=MIN_SIDE, show_default=True, help="Shortest allowed side after resizing.")
@click.option("--max-side", type=int, help="Longest allowed side (default: the official limit of the dataset: "
              + ", ".join(f"{k} {v}" for k, v in DATASET_MAX_SIDE.items() if v) + "; none otherwise).")
@click.option("--check", is_flag=True, help="Only check the layout of SRC and report what is there.")
@click.option("--partial", is_flag=True, help="Accept split sizes other than the published ones.")
@click.option("--overwrite", is_flag=True, help="Empty DST's split folders first if they hold files.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="custom data without train/ and val/ folders: share of images held out for validation.")
def main(dataset, src, dst, min_side, max_side, check, partial, overwrite, val_fraction) -> None:
    """Resize DATASET from SRC into the processed layout at DST (sides multiples of 32 within limits)."""
    if dst is None and not check:
        raise click.UsageError("give DST, or --check to only inspect SRC.")
    from .data import prepare_dataset, read_dataset  # torch: only once there is something to do

    try:
        if check:
            splits = read_dataset(dataset, src, strict=not partial, val_fraction=val_fraction)
            for split, samples in splits.items():
                people = sum(len(s.points) for s in samples if s.points is not None)
                click.echo(f"{dataset} {split}: {len(samples)} images" + (f", {people} annotated people" if people else ""))
            return
        with click.progressbar(length=1, label="reading", file=sys.stderr) as bar:
            state = {"split": None}

            def progress(split: str, done: int, total: int) -> None:
                if state["split"] != split:
                    state["split"] = split
                    bar.length, bar.pos, bar.label = total, 0, f"{dataset} {split}"
                bar.update(1)

            written = prepare_dataset(dataset, src, dst, min_side=min_side, max_side=max_side, strict=not partial,
                                      val_fraction=val_fraction, overwrite=overwrite, progress=progress)
    except CLIPEBCError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"wrote {dst}: " + ", ".join(f"{split} {n} images" for split, n in written.items()))


if __name__ == "__main__":
    main()
