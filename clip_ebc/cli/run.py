"""Counting what the command was given, in the order of its arguments, and reporting every input.

Runs of image inputs are counted together (``CrowdCounter.count_many``: batched, decoded ahead);
each video, stream or camera is counted frame by frame (``CrowdCounter.count_video``), with its
heatmap video, its plot and a summary line. Rows go to stdout (text or JSON lines) and the CSV file
as soon as they are known, so an interrupted run keeps everything it counted; heatmap videos and
plots are finished on any stop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from ..errors import CLIPEBCError, MissingExtraError
from .inputs import Input, Problem
from .signals import deferred


def shown(text: object) -> str:
    """A path or message as printable text (undecodable file-name bytes become escapes)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Settings:
    """What the command line asked for, besides the inputs and the model."""

    batch_size: int = 8
    as_json: bool = False
    sinks: list[Any] = field(default_factory=list)
    heatmaps: dict[Input, Path] = field(default_factory=dict)
    plots: dict[Input, Path] = field(default_factory=dict)
    opacity: float = 0.5
    side_by_side: bool = False
    zones: tuple[Any, ...] | None = None
    every: Any = None
    start: float | None = None
    duration: float | None = None
    reconnect: int = 5
    timeout: float = 10.0

    def add_csv(self, path: Path) -> None:
        """Write the rows to the CSV file ``path`` too (a usage error when it cannot be written)."""
        from ..sinks import CsvSink

        try:
            self.sinks.append(CsvSink(path, self.zones or ()))
        except OSError as e:
            raise click.UsageError(f"cannot write the CSV file {path}: {e.strerror or e}.") from e

    def close_sinks(self) -> None:
        """Finish the output files; a Ctrl-C or SIGTERM meanwhile is raised once they are complete."""
        with deferred():
            for sink in self.sinks:
                sink.close()


class Report:
    """Where results and problems are written: stdout (text or JSON lines), the sinks, stderr."""

    def __init__(self, settings: Settings, echo: Callable[[str], None], err: Callable[[str], None]) -> None:
        from ..sinks import JsonLinesSink

        self.settings = settings
        self.echo, self.err = echo, err
        self.json = JsonLinesSink(_EchoStream(echo)) if settings.as_json else None
        self.failed = 0

    def row(self, row: dict[str, Any], text: str | None) -> None:
        """One counted (or failed) image or frame: its error on stderr, then the row everywhere. Ctrl-C and
        SIGTERM wait until the row is in every output, so an interrupted run's outputs agree."""
        with deferred():
            if "error" in row:
                self.failed += 1
                self.err(f"error: {shown(row['error'])}")
            if self.json is not None:
                self.json.write(row)
            elif text is not None:
                self.echo(shown(text))
            for sink in self.settings.sinks:
                sink.write(row)

    def problem(self, name: str, message: str) -> None:
        self.row({"path": name, "count": None, "error": message}, None)


class _EchoStream:
    """A text stream that writes through ``echo`` (one line per call), for the JSON sink."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def write(self, text: str) -> None:
        self.echo(text.rstrip("\n"))

    def flush(self) -> None:
        sys.stdout.flush()


def run(expanded: list[Input | Problem], make_counter: Callable[[], Any], settings: Settings,
        echo: Callable[[str], None], err: Callable[[str], None]) -> int:
    """Count every input of ``expanded`` and report every entry in order; returns how many failed."""
    report = Report(settings, echo, err)
    inputs = [x for x in expanded if isinstance(x, Input)]
    counter = None
    if inputs:  # with nothing to count, no model needs loading (or downloading)
        try:
            counter = make_counter()
        except CLIPEBCError:
            for item in expanded:  # what is known to be wrong with the inputs is still reported
                if isinstance(item, Problem):
                    report.problem(item.name, item.message)
            raise
    images, total, counted = 0, 0.0, 0
    position = 0
    while position < len(expanded):
        item = expanded[position]
        if isinstance(item, Input) and item.is_video:
            _count_video(counter, item, settings, report)
            position += 1
            continue
        end = position
        while end < len(expanded) and not (isinstance(expanded[end], Input) and expanded[end].is_video):
            end += 1
        group = expanded[position:end]
        n, people = _count_images(counter, group, settings, report)
        images += sum(isinstance(x, Input) for x in group)
        counted, total = counted + n, total + people
        position = end
    if images > 1 and not settings.as_json:
        err(f"{counted} of {images} images counted, {total:.1f} people in total.")
    return report.failed


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def _count_images(counter, group: list[Input | Problem], settings: Settings, report: Report) -> tuple[int, float]:
    """Count a run of image inputs (problems among them reported in place); returns (counted, people)."""
    images = [x for x in group if isinstance(x, Input)]
    results: Iterator[Any] = iter(())
    echo, err = report.echo, report.err
    if images:
        if len(images) > 1 and sys.stderr.isatty():  # the progress bar shares the terminal: clear its line first
            report.echo, report.err = _below_bar(echo), _below_bar(err)
        results = _with_progress(counter.count_many((x.name for x in images), batch_size=settings.batch_size,
                                                    zones=settings.zones, skip_errors=True,
                                                    keep_images=bool(settings.heatmaps)), len(images))
    counted, people = 0, 0.0
    try:
        for item in group:
            if isinstance(item, Problem):
                report.problem(item.name, item.message)
                continue
            result = next(results)
            row: dict[str, Any] = result.to_dict()
            if result.ok:
                target = settings.heatmaps.get(item)
                if target is not None:
                    try:
                        result.save_heatmap(target, opacity=settings.opacity, side_by_side=settings.side_by_side)
                        row["heatmap"] = str(target)
                    except (CLIPEBCError, OSError) as e:
                        row["error"] = f"{item.name}: heatmap not written to {target}: {getattr(e, 'strerror', None) or e}"
                counted += 1
                people += result.count
            report.row(row, f"{item.name}: {result.count:.1f} people" + _zone_text(result) if result.ok else None)
        next(results, None)  # every image is done: this ends the progress bar's line
    finally:
        report.echo, report.err = echo, err
    return counted, people


def _zone_text(result) -> str:
    if not result.zone_counts:
        return ""
    return " (" + ", ".join(f"{name} {value:.1f}" for name, value in result.zone_counts.items()) + ")"


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


# --------------------------------------------------------------------------------------------------
# Videos, streams, cameras
# --------------------------------------------------------------------------------------------------


def _count_video(counter, item: Input, settings: Settings, report: Report) -> None:
    """Count one video's sampled frames: a row per frame, its heatmap video and plot, a summary line.
    Whatever stops it (the end, a lost stream, Ctrl-C, SIGTERM), the outputs are finished first."""
    from ..timeline import Timeline
    from ..video import VideoWriter

    def event(message: str) -> None:
        report.err(f"warning: {shown(message)}")

    try:
        counts = counter.count_video(item.name, settings.every, zones=settings.zones, start=settings.start,
                                     duration=settings.duration, reconnect=settings.reconnect,
                                     timeout=settings.timeout, batch_size=settings.batch_size, on_event=event)
    except MissingExtraError as e:
        report.problem(item.name, f"{item.name}: {e}")
        return
    except CLIPEBCError as e:
        report.problem(item.name, str(e))
        return
    timeline = Timeline(counts.reader.name)
    heatmap = settings.heatmaps.get(item)
    writer = None
    try:
        for result in counts:
            row = result.to_dict()
            if heatmap is not None:
                if writer is None:
                    writer = VideoWriter(heatmap, _sampled_fps(counts.reader))
                writer.write(result.render_heatmap(opacity=settings.opacity, side_by_side=settings.side_by_side))
                row["heatmap"] = str(heatmap)
            clock = f" ({result.wallclock:%H:%M:%S})" if result.wallclock is not None else ""
            report.row(row, f"{result.source} @ {result.time:.2f} s{clock}: {result.count:.1f} people"
                       + _zone_text(result))
            timeline.add(result)
        if counts.stopped:
            report.problem(item.name, f"{counts.reader.name}: {counts.stopped}")
    except CLIPEBCError as e:  # a stream that could not be reopened, a zone that does not fit, ...
        report.problem(item.name, str(e))
    finally:
        with deferred():  # a signal now is raised once the video, the plot and the summary are done
            _finish_video(counts, writer, timeline, item, settings, report)


def _finish_video(counts, writer, timeline, item: Input, settings: Settings, report: Report) -> None:
    """Stop decoding; finish the heatmap video and the plot; the dropped-frames warning and the summary."""
    counts.close()
    if counts.dropped:
        plural = "s were" if counts.dropped != 1 else " was"
        report.err(f"warning: {shown(counts.reader.name)}: {counts.dropped} sampled frame{plural} dropped because "
                   "counting fell behind the live source; sample less often (--every) or count on a faster "
                   "device.")
    if writer is not None:
        writer.close()
    plot = settings.plots.get(item)
    if plot is not None and len(timeline):
        try:
            timeline.save_plot(plot)
        except (CLIPEBCError, OSError) as e:
            report.err(f"error: {shown(item.name)}: plot not written to {plot}: {getattr(e, 'strerror', None) or e}")
    if not settings.as_json or len(timeline):
        report.err(timeline.summary().text(shown(counts.reader.name)))


def _sampled_fps(reader) -> Fraction:
    """Frames per second of the sampled frames: 1 / seconds, or the source's rate / n for every n-th frame."""
    every = reader.every
    if every.seconds is not None:
        return 1 / Fraction(every.seconds).limit_denominator(1000)
    rate = Fraction(reader.fps).limit_denominator(1001) if reader.fps else Fraction(25)
    return rate / every.frames
