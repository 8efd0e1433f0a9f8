"""The ``crowdcount`` command (also installed as ``clip-ebc``).

Heavy modules (torch, open_clip, matplotlib) are imported only once there is something to count, so
``--help``, ``--version`` and ``--list-models`` answer at once.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import CLIPEBCError

class _InputProblem:
    """An input argument that named no image (a missing file, an empty folder, an unmatched glob)."""

    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message


def expand_inputs(inputs: tuple[str, ...], recursive: bool) -> list[Path | _InputProblem]:
    """Files as given, folders as the images inside (sorted; ``recursive`` descends), globs expanded."""
    from .images import IMAGE_SUFFIXES

    out: list[Path | _InputProblem] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            images = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                hint = "" if recursive else " (use --recursive to look in sub-folders)"
                out.append(_InputProblem(item, f"{item}: no images in this folder{hint}."))
            for p in images:
                add(p)
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive) if Path(m).is_file())
            if not matches:
                out.append(_InputProblem(item, f"{item}: no files match this pattern."))
            for p in matches:
                add(p)
        else:
            add(path)  # a missing or unreadable file is reported when it is read
    return out


def heatmap_targets(heatmap: Path | None, images: list[Path]) -> dict[Path, Path]:
    """Where each image's heatmap goes: ``heatmap`` itself for one image, else ``heatmap/<stem>_heatmap.png``."""
    from .heatmap import FORMATS
    from .images import IMAGE_SUFFIXES

    if heatmap is None:
        return {}
    suffix = heatmap.suffix.lower()
    if suffix in FORMATS:
        if len(images) > 1:
            raise click.UsageError(f"--heatmap {heatmap} is a file name, but {len(images)} images were given; pass a directory.")
        if images and heatmap.resolve() == images[0].resolve():
            raise click.UsageError(f"--heatmap {heatmap} is the input image itself; choose another file name.")
        return {images[0]: heatmap} if images else {}
    if suffix in IMAGE_SUFFIXES and not heatmap.is_dir():
        raise click.UsageError(f"--heatmap {heatmap}: heatmaps are written as .png or .jpg files.")
    inputs = {p.resolve() for p in images}
    targets, used = {}, set()
    for p in images:
        name, n = f"{p.stem}_heatmap.png", 2
        while name in used or (heatmap / name).resolve() in inputs:  # never overwrite an input
            name, n = f"{p.stem}_heatmap_{n}.png", n + 1
        used.add(name)
        targets[p] = heatmap / name
    return targets


def _check_device(ctx, param, value: str) -> str:
    """Usage check of --device before anything is loaded (whether the device exists is checked later)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise click.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
    return value


def _shown(text: object) -> str:
    """A path or message as printable text (undecodable file-name bytes become escapes)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _print_models(echo) -> None:
    from .registry import is_cached, list_models, load_manifest

    manifest = load_manifest()
    rows = [("name", "backbone", "dataset", "reported MAE / RMSE", "cached")]
    for info in list_models():
        marker = " (default)" if info.name == manifest.default else ""
        cached = "yes" if is_cached(info) else ("no" if info.downloadable else "manual")
        rows.append((info.name + marker, info.backbone, info.dataset, info.metric_text(), cached))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    echo("\n'manual': no automatic download source is known; see the README for converting such weights.")


def _download(names: str, echo, err) -> int:
    from .loading import download
    from .registry import list_models

    targets = [m.name for m in list_models() if m.downloadable] if names == "all" else names.split(",")
    failed = 0
    for name in targets:
        try:
            resolved = download(name.strip())
            echo(f"{resolved.name}: {resolved.weights_file.parent}")
        except CLIPEBCError as e:
            err(f"error: {e}")
            failed += 1
    if names == "all":
        skipped = [m.name for m in list_models() if not m.downloadable]
        if skipped:
            err(f"skipped (no automatic download source): {', '.join(skipped)}")
    return 1 if failed else 0


@click.command(
    name="crowdcount",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Examples:\n\n\b\n  crowdcount photo.jpg --heatmap photo_heat.png\n  crowdcount photos/ -r --json > "
           "counts.jsonl\n  crowdcount 'shots/*.jpg' --csv counts.csv --heatmap heatmaps/\n  crowdcount --list-models",
)
@click.argument("inputs", nargs=-1, metavar="INPUTS...")
@click.option("-m", "--model", metavar="NAME|DIR|hf-hub:ID",
              help="Registry name (see --list-models), checkpoint folder, or hf-hub:ORG/NAME[@REVISION]. "
                   "Default: the registry's default model.")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--heatmap", type=click.Path(path_type=Path),
              help="Write a heatmap: a .png/.jpg file for one input, a directory for several (<name>_heatmap.png; "
                   "inputs are never overwritten, but heatmaps in an input folder are counted by the next run).")
@click.option("--side-by-side", is_flag=True, help="Heatmaps show the plain image next to the overlay.")
@click.option("--opacity", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heatmap overlay opacity.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image on stdout.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results to a CSV file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Crops per forward pass.")
@click.option("-r", "--recursive", is_flag=True, help="Look for images in sub-folders of folder inputs.")
@click.option("--native-size", is_flag=True, help="Keep each image's size instead of the training set's resize rule.")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"],
                                               case_sensitive=False), default="auto",
              show_default=True, help="auto: float32 on CPU, float16 on GPU. bfloat16 needs a GPU or a CPU with "
                                      "native bfloat16; counts stay float32 either way.")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model: slower start (tens of seconds), a few percent faster per image.")
@click.option("--list-models", is_flag=True, help="List the registry's models and exit.")
@click.option("--download", metavar="NAME|all", help="Fetch a model (or all) into the local cache and exit.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(__version__, "--version", prog_name="crowdcount", message="%(prog)s (clip-ebc) %(version)s")
def main(inputs, model, device, heatmap, side_by_side, opacity, as_json, csv_path, batch_size, recursive,
         native_size, precision, compile_model, list_models, download, debug) -> None:
    """Count the people in images with CLIP-EBC and optionally draw density heatmaps.

    INPUTS are image files, folders of images, or glob patterns.
    """
    echo = click.echo
    err = lambda message: click.echo(message, err=True)  # noqa: E731
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s", stream=sys.stderr)
    if not debug:  # one line per warning, without the source line of the library that raised it
        warnings.showwarning = lambda message, *args, **kwargs: err(f"warning: {_shown(message)}")

    if list_models or download:
        try:
            if list_models:
                _print_models(echo)
            if download:
                sys.exit(_download(download, echo, err))
        except CLIPEBCError as e:
            if debug:
                raise
            err(f"error: {e}")
            sys.exit(1)
        return
    if not inputs:
        raise click.UsageError("no INPUTS given; pass image files, folders or globs (or --list-models).")

    expanded = expand_inputs(inputs, recursive)
    images = [p for p in expanded if isinstance(p, Path)]
    targets = heatmap_targets(heatmap, images)
    try:
        csv_file = csv_path.open("w", newline="", encoding="utf-8", errors="backslashreplace") if csv_path else None
    except OSError as e:
        raise click.UsageError(f"cannot write the CSV file {csv_path}: {e.strerror or e}.") from e
    try:
        failed = _run(expanded, targets, csv_file, model=model, device=device, batch_size=batch_size,
                      native=native_size, precision=precision, compile_model=compile_model, as_json=as_json,
                      opacity=opacity, side_by_side=side_by_side, echo=echo, err=err)
    except CLIPEBCError as e:
        if debug:
            raise
        err(f"error: {_shown(e)}")
        sys.exit(1)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # stdout closed early (`crowdcount ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if debug:
            raise
        err(f"error: unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(1)
    sys.exit(1 if failed else 0)


def _run(expanded, targets, csv_file, *, model, device, batch_size, native, precision, compile_model,
         as_json, opacity, side_by_side, echo, err) -> int:
    """Count the images of ``expanded`` and report every entry, problems included, in input order."""
    images = [p for p in expanded if isinstance(p, Path)]
    writer = None
    if csv_file is not None:
        writer = csv.DictWriter(csv_file, ["path", "count", "model", "width", "height", "seconds", "heatmap", "error"])
        writer.writeheader()
    failed, total, counted = 0, 0.0, 0

    def report(problem: _InputProblem) -> None:
        err(f"error: {_shown(problem.message)}")
        if as_json:
            echo(json.dumps({"path": problem.name, "error": problem.message}))
        if writer is not None:
            writer.writerow({"path": problem.name, "error": problem.message})

    try:
        results: Iterator[Any] = iter(())
        if images:  # with nothing to count, no model needs loading (or downloading)
            from .counter import CrowdCounter

            try:
                counter = CrowdCounter(model, device=device, batch_size=batch_size, precision=precision,
                                       resize="native" if native else "dataset", compile=compile_model)
            except CLIPEBCError:
                for item in expanded:  # what is known to be wrong with the inputs is still reported
                    if isinstance(item, _InputProblem):
                        report(item)
                raise
            if len(images) > 1 and sys.stderr.isatty():  # the progress bar shares the terminal: clear its line first
                echo, err = _below_bar(echo), _below_bar(err)
            results = _with_progress(counter.count_many((str(p) for p in images), batch_size=batch_size,
                                                        skip_errors=True, keep_images=bool(targets)), len(images))
        for item in expanded:
            if isinstance(item, _InputProblem):
                failed += 1
                report(item)
                continue
            path, result = item, next(results)
            row: dict[str, Any] = result.to_dict()
            if result.ok:
                target = targets.get(path)
                if target is not None:
                    try:
                        result.save_heatmap(target, opacity=opacity, side_by_side=side_by_side)
                        row["heatmap"] = str(target)
                    except (CLIPEBCError, OSError) as e:
                        row["error"] = f"{path}: heatmap not written to {target}: {getattr(e, 'strerror', None) or e}"
                total += result.count
                counted += 1
            if "error" in row:
                failed += 1
                err(f"error: {_shown(row['error'])}")
            if as_json:
                echo(json.dumps(row))
            elif result.ok:
                echo(f"{_shown(path)}: {result.count:.1f} people")
            if writer is not None:
                writer.writerow(row)
        next(results, None)  # every image is done: this ends the progress bar's line
    finally:
        if csv_file is not None:
            csv_file.close()
    if len(images) > 1 and not as_json:
        err(f"{counted} of {len(expanded)} inputs counted, {total:.1f} people in total.")
    return failed


def _below_bar(write):
    def clear_then_write(message: str) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
        write(message)

    return clear_then_write


def _with_progress(items: Iterator, length: int):
    """A progress bar on stderr when there is more than one image."""
    if length <= 1:
        yield from items
        return
    with click.progressbar(items, length=length, label="Counting", file=sys.stderr) as bar:
        yield from bar


if __name__ == "__main__":  # pragma: no cover
    main()

