"""Result rows and where they go: JSON lines and CSV, shared by the command line, videos and Ray.

A row is :meth:`CountResult.to_dict() <clip_ebc.counter.CountResult.to_dict>` (plus ``heatmap``, the
file written): ``path``, ``frame`` and ``time`` for video frames, ``wallclock`` for live sources,
``count``, ``zones`` and ``per_m2`` with zones, ``model``, ``width``, ``height``, ``seconds`` and
``error``. A count that is missing is ``null`` / empty, never NaN. Every row is flushed as it is
written, so an interrupted run leaves complete files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import NumericalError
from .zones import Zone

BASE_COLUMNS = ("path", "frame", "time", "wallclock", "count")
TAIL_COLUMNS = ("model", "width", "height", "seconds", "heatmap", "error")


def csv_columns(zones: Sequence[Zone] = ()) -> list[str]:
    """CSV columns: the base ones, ``zone:NAME`` per zone (and ``per_m2:NAME`` for zones with an area),
    then model, size, seconds, heatmap and error."""
    middle = [f"zone:{z.name}" for z in zones] + [f"per_m2:{z.name}" for z in zones if z.area_m2 is not None]
    return [*BASE_COLUMNS, *middle, *TAIL_COLUMNS]


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with its ``zones`` / ``per_m2`` mappings spread over ``zone:NAME`` / ``per_m2:NAME`` keys."""
    flat = {k: v for k, v in row.items() if k not in ("zones", "per_m2")}
    for prefix in ("zones", "per_m2"):
        for name, value in (row.get(prefix) or {}).items():
            flat[f"{'zone' if prefix == 'zones' else prefix}:{name}"] = value
    return flat


def _checked(row: Mapping[str, Any]) -> Mapping[str, Any]:
    count = row.get("count")
    if isinstance(count, float) and not math.isfinite(count):
        raise NumericalError(f"{row.get('path')}: the count is {count}, which is never a result.")
    return row


class JsonLinesSink:
    """Writes one JSON object per row (strict JSON: no NaN) to a text stream, flushed per row."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, row: Mapping[str, Any]) -> None:
        self.stream.write(json.dumps(_checked(row), allow_nan=False, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class CsvSink:
    """Writes rows to a CSV file with :func:`csv_columns`, flushed per row; ``close()`` closes the file.

    path: the file (created or truncated now, so an unwritable path fails before any counting).
    zones: the zones whose counts get columns.
    """

    def __init__(self, path: str | os.PathLike[str], zones: Sequence[Zone] = ()) -> None:
        self.path = Path(path)
        self.file = self.path.open("w", newline="", encoding="utf-8", errors="backslashreplace")
        self.writer = csv.DictWriter(self.file, csv_columns(zones), extrasaction="ignore")
        self.writer.writeheader()
        self.file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        self.writer.writerow(flat_row(_checked(row)))
        self.file.flush()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
