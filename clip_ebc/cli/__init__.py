"""The ``crowdcount`` command (also installed as ``clip-ebc``): images, folders, globs, image URLs,
videos, streams and cameras, with zones, heatmaps, plots, JSON and CSV; ``--ray`` runs it on a cluster.

Heavy modules (torch, open_clip, matplotlib, PyAV) are imported only once there is something to count,
so ``--help``, ``--version`` and ``--list-models`` answer at once. Every error is one line on stderr and
a non-zero exit code: 1 when an input or the model failed, 2 for a usage error, 130 after Ctrl-C and
143 after SIGTERM (what was counted until then is in the outputs).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import CLIPEBCError, ZoneError
from .run import shown
from .signals import Terminated, stop_signals_raise


def _check_device(ctx, param, value: str) -> str:
    """Usage check of --device before anything is loaded (whether the device exists is checked later)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise click.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
    return value


def _parse_every(value: str) -> Any:
    from ..errors import ConfigError
    from ..video import parse_every

    try:
        return parse_every(value)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="'--every'") from None


def _print_models(echo) -> None:
    from ..registry import is_cached, list_models, load_manifest

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
    from ..loading import download
    from ..registry import list_models

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


EXAMPLES = """Examples:

\b
  crowdcount photo.jpg --heatmap photo_heat.png
  crowdcount photos/ -r --json > counts.jsonl
  crowdcount 'shots/*.jpg' --csv counts.csv --heatmap heatmaps/
  crowdcount clip.mp4 --every 1s --zones zones.json --csv out.csv --heatmap out.mp4 --plot out.png
  crowdcount rtsp://camera.local/stream --every 5s --csv live.csv
  crowdcount --ray local photos/ --parquet counts/
  crowdcount --list-models
"""


@click.command(name="crowdcount", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, metavar="INPUTS...")
@click.option("-m", "--model", metavar="NAME|DIR|hf-hub:ID",
              help="Registry name (see --list-models), checkpoint folder, or hf-hub:ORG/NAME[@REVISION]. "
                   "Default: the registry's default model.")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--zones", "zones_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file of named polygons (pixels or 0-1 coordinates): people per zone, on every row.")
@click.option("--heatmap", metavar="PATH",
              help="Write heatmaps: a .png/.jpg file for one image, an .mp4 for one video, a directory for several "
                   "(<name>_heatmap.png / .mp4; inputs are never overwritten).")
@click.option("--plot", type=click.Path(path_type=Path),
              help="Videos: plot the count over time (one line per zone): a .png file for one video, a directory for "
                   "several (one <name>_counts.png per video).")
@click.option("--side-by-side", is_flag=True, help="Heatmaps show the plain image next to the overlay.")
@click.option("--opacity", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heatmap overlay opacity.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image or sampled frame on stdout.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results to a CSV file.")
@click.option("--every", metavar="1s|500ms|12f", default="1s", show_default=True,
              help="Videos: count one frame per interval of presentation time, or every Nth frame (12f).")
@click.option("--start", type=click.FloatRange(min=0), metavar="SECONDS", help="Videos: start this far into the file.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Videos: count this many seconds (live streams: stop after this long).")
@click.option("--reconnect", type=click.IntRange(min=0), default=5, show_default=True,
              help="Live streams: reopen a dropped or stalled stream this many times (with backoff).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              metavar="SECONDS", help="Live streams: seconds without data before the stream counts as dropped.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Crops per forward pass.")
@click.option("-r", "--recursive", is_flag=True, help="Look for images and videos in sub-folders of folder inputs.")
@click.option("--native-size", is_flag=True, help="Keep each image's size instead of the training set's resize rule.")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"],
                                               case_sensitive=False), default="auto",
              show_default=True, help="auto: bfloat16 on CPUs with native bfloat16, float16 on GPUs, else float32 "
                                      "(exact; counts move by about 0.1 % in lower precision); the count itself "
                                      "is summed in float32 either way.")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model: slower start (tens of seconds), a few percent faster per image.")
@click.option("--ray", "ray_address", metavar="local|auto|ADDRESS",
              help="Count the images on a Ray cluster: 'local' starts one on this machine, 'auto' joins the running "
                   "one (needs pip install \"clip-ebc[ray]\").")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: counting workers (each holds one model; one GPU each when the cluster has GPUs).")
@click.option("--parquet", "parquet_dir", metavar="DIR|URI",
              help="With --ray: also write the rows as Parquet files into this directory (or s3://... URI).")
@click.option("--list-models", is_flag=True, help="List the registry's models and exit.")
@click.option("--download", metavar="NAME|all", help="Fetch a model (or all) into the local cache, check it, and exit.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(__version__, "--version", prog_name="crowdcount", message="%(prog)s (clip-ebc) %(version)s")
def main(inputs, model, device, zones_file, heatmap, plot, side_by_side, opacity, as_json, csv_path, every, start,
         duration, reconnect, timeout, batch_size, recursive, native_size, precision, compile_model, ray_address,
         workers, parquet_dir, list_models, download, debug) -> None:
    """Count the people in images and videos with CLIP-EBC, per zone if asked, with density heatmaps.

    INPUTS are image or video files, folders, glob patterns, http(s):// URLs of images or videos, stream
    URLs (rtsp://, rtmp://, HLS .m3u8) and cameras (/dev/video0).
    """
    echo = click.echo
    err = lambda message: click.echo(message, err=True)  # noqa: E731
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s", stream=sys.stderr)
    if not debug:  # one line per warning, without the source line of the library that raised it
        warnings.showwarning = lambda message, *args, **kwargs: err(f"warning: {shown(message)}")
    try:
        with stop_signals_raise():
            code = _main(echo, err, inputs=inputs, model=model, device=device, zones_file=zones_file, heatmap=heatmap,
                         plot=plot, side_by_side=side_by_side, opacity=opacity, as_json=as_json, csv_path=csv_path,
                         every=every, start=start, duration=duration, reconnect=reconnect, timeout=timeout,
                         batch_size=batch_size, recursive=recursive, native_size=native_size, precision=precision,
                         compile_model=compile_model, ray_address=ray_address, workers=workers, parquet_dir=parquet_dir,
                         list_models=list_models, download=download)
    except CLIPEBCError as e:
        if debug:
            raise
        err(f"error: {shown(e)}")
        code = 2 if isinstance(e, ZoneError) else 1
    except KeyboardInterrupt:
        err("interrupted")
        code = 130
    except Terminated:
        err("terminated")
        code = 143
    except BrokenPipeError:  # stdout closed early (`crowdcount ... | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except click.ClickException:
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if debug:
            raise
        err(f"error: unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        code = 1
    sys.exit(code)


def _main(echo, err, *, inputs, model, device, zones_file, heatmap, plot, side_by_side, opacity, as_json, csv_path,
          every, start, duration, reconnect, timeout, batch_size, recursive, native_size, precision, compile_model,
          ray_address, workers, parquet_dir, list_models, download) -> int:
    """The command's work; returns the exit code (usage errors raise click's exceptions)."""
    if list_models or download:
        if list_models:
            _print_models(echo)
        return _download(download, echo, err) if download else 0
    if not inputs:
        raise click.UsageError("no INPUTS given; pass images, videos, folders, globs or URLs (or --list-models).")
    every = _parse_every(every)
    if parquet_dir is not None and ray_address is None:
        raise click.UsageError("--parquet writes the rows of a Ray run; add --ray local (or a cluster address).")
    zones = None
    if zones_file is not None:
        from ..zones import load_zones

        zones = tuple(load_zones(zones_file))  # a bad zone file is one error before anything else happens
    if ray_address is not None:
        from .ray import run_on_ray

        # --heatmap and --parquet stay text here: they may be s3:// or gs:// URIs
        return run_on_ray(inputs, ray_address, model=model, zones=zones, workers=workers, batch_size=batch_size,
                          precision=precision, native=native_size, recursive=recursive, heatmap=heatmap,
                          as_json=as_json, csv_path=csv_path, parquet_dir=parquet_dir, echo=echo, err=err)

    from .inputs import Input, expand_inputs, heatmap_targets, plot_targets, without_video_support
    from .run import Settings, run

    expanded = without_video_support(expand_inputs(inputs, recursive, probe_timeout=timeout))
    countable = [x for x in expanded if isinstance(x, Input)]
    heatmap = None if heatmap is None else Path(heatmap)
    settings = Settings(batch_size=batch_size, as_json=as_json, heatmaps=heatmap_targets(heatmap, expanded),
                        plots=plot_targets(plot, countable), opacity=opacity, side_by_side=side_by_side, zones=zones,
                        every=every, start=start, duration=duration, reconnect=reconnect, timeout=timeout)
    if zones:
        _check_zones_fit(countable, zones)
    if csv_path is not None:
        settings.add_csv(csv_path)

    def make_counter():
        from ..counter import CrowdCounter

        return CrowdCounter(model, device=device, batch_size=batch_size, precision=precision,
                            resize="native" if native_size else "dataset", compile=compile_model)

    try:
        failed = run(expanded, make_counter, settings, echo, err)
    finally:
        settings.close_sinks()
    return 1 if failed else 0


def _check_zones_fit(inputs, zones) -> None:
    """Zones in pixels must lie inside every image and video file they are counted on: checked from the
    files' headers before any model is loaded (streams are checked when they open)."""
    from PIL import Image

    from ..zones import check_zones

    if all(z.normalized for z in zones):
        return
    for item in inputs:
        if item.path is None:
            continue
        size = None
        if item.kind == "image":
            try:
                with Image.open(item.path) as img:
                    size = (img.height, img.width)  # EXIF rotation aside: the counter checks again
            except (OSError, ValueError, SyntaxError):
                continue  # an unreadable image is reported when it is counted
        else:
            from ..video import VideoReader

            try:
                with VideoReader(item.path) as reader:
                    width_height = reader.size
                size = None if width_height is None else (width_height[1], width_height[0])
            except CLIPEBCError:
                continue  # reported when it is counted
        if size is not None:
            try:
                check_zones(zones, size)
            except ZoneError as e:
                raise ZoneError(f"{item.name}: {e}") from None
