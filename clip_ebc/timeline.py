"""Counts over time: the summary of a video's sampled frames, and a plot of them.

:class:`Timeline` collects the results of one video (``CrowdCounter.count_video``); its
:meth:`~Timeline.summary` gives frames counted, mean, min, max and when the maximum occurred, and
:meth:`~Timeline.save_plot` draws the count over time, one line per zone (matplotlib, imported only
when drawing; the Agg canvas, no global state).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import ConfigError

PLOT_FORMATS = (".png", ".jpg", ".jpeg", ".svg", ".pdf")


@dataclass(frozen=True)
class Summary:
    """What a video's counts add up to."""

    frames: int
    mean: float
    min: float
    max: float
    max_time: float | None
    """Seconds into the video of the (first) maximum."""
    max_wallclock: datetime | None = None
    """When the maximum occurred, for live sources."""

    def text(self, name: str) -> str:
        """``"clip.mp4: 60 frames counted; mean 34.2, min 30.1, max 40.5 people (at 12.0 s)"``."""
        if not self.frames:
            return f"{name}: no frames counted."
        when = self.max_wallclock.isoformat(timespec="seconds") if self.max_wallclock else (
            f"{self.max_time:.1f} s" if self.max_time is not None else "?")
        return (f"{name}: {self.frames} frame{'s' if self.frames != 1 else ''} counted; mean {self.mean:.1f}, "
                f"min {self.min:.1f}, max {self.max:.1f} people (at {when}).")


@dataclass
class Timeline:
    """The counts of one video, in order: add each :class:`~clip_ebc.counter.CountResult` as it comes."""

    name: str
    times: list[float] = field(default_factory=list)
    wallclocks: list[datetime | None] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    zone_counts: dict[str, list[float]] = field(default_factory=dict)

    def add(self, result: Any) -> None:
        if not result.ok:
            return
        self.times.append(float(result.time) if result.time is not None else float(len(self.times)))
        self.wallclocks.append(result.wallclock)
        self.counts.append(float(result.count))
        for name, value in (result.zone_counts or {}).items():
            self.zone_counts.setdefault(name, []).append(float(value))

    def __len__(self) -> int:
        return len(self.counts)

    def summary(self) -> Summary:
        if not self.counts:
            return Summary(0, math.nan, math.nan, math.nan, None)
        best = max(range(len(self.counts)), key=self.counts.__getitem__)
        return Summary(len(self.counts), math.fsum(self.counts) / len(self.counts), min(self.counts),
                       self.counts[best], self.times[best], self.wallclocks[best])

    def save_plot(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Draw the count (and each zone's) over time and save it (PNG, JPEG, SVG or PDF by suffix). The
        x axis is seconds into the video, or the clock time for live sources. Returns the path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        if path.suffix.lower() not in PLOT_FORMATS:
            raise ConfigError(f"plot file {path} must end in {', '.join(PLOT_FORMATS)}.")
        clock = bool(self.wallclocks) and all(w is not None for w in self.wallclocks)
        x: list[Any] = list(self.wallclocks) if clock else list(self.times)
        fig = Figure(figsize=(9, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        marker = "o" if len(x) <= 60 else None
        ax.plot(x, self.counts, label="total", color="black", linewidth=2, marker=marker, markersize=3)
        for name, values in self.zone_counts.items():
            ax.plot(x, values, label=name, linewidth=1.4, marker=marker, markersize=2)
        ax.set_xlabel("clock time" if clock else "time (s)")
        ax.set_ylabel("people")
        ax.set_title(title or self.name)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if self.zone_counts:
            ax.legend(loc="best", fontsize="small")
        if clock:
            fig.autofmt_xdate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path
