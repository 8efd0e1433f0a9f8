"""Zones: named polygons in an image, and the number of people in each.

A zone file is JSON, either an object with a ``"zones"`` list or a bare list of zone objects::

    {
      "normalized": false,
      "zones": [
        {"name": "gate A", "points": [[120, 80], [480, 80], [480, 400], [120, 400]], "area_m2": 42.0},
        {"name": "platform", "points": [[0.5, 0.6], [1, 0.6], [1, 1], [0.5, 1]], "normalized": true}
      ]
    }

Each zone has:

* ``name`` (string, required): unique and not blank;
* ``points`` (required): at least 3 ``[x, y]`` vertices in order around the outline (x to the right,
  y down, origin at the image's top-left corner), in pixels of the input image, or, when normalised,
  as fractions 0-1 of its width and height; the polygon is closed automatically (repeating the first
  vertex at the end is allowed) and must not cross or touch itself;
* ``normalized`` (bool, optional): whether ``points`` are 0-1 fractions; defaults to the file's
  top-level ``"normalized"``, which defaults to ``false``;
* ``area_m2`` (number > 0, optional): the zone's real-world area, to report people per square metre.

No other keys are accepted, so a misspelt key is reported instead of ignored.

Counting: each density cell is a ``block_size`` x ``block_size`` block of the processed image, mapped
back onto the input image (and clipped to it); a zone gets the cell's people in proportion to the
fraction of the cell's in-image area that lies inside the polygon, computed exactly. Zones that tile
the image therefore split the total count without loss or double counting. A cell with no in-image
area (only possible when the grid reaches a whole cell past the image's edge, which the counter never
produces) belongs to no zone: its weight is 0 in every zone.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import ZoneError

ZONE_KEYS = ("name", "points", "normalized", "area_m2")
FILE_KEYS = ("zones", "normalized")
EDGE_TOLERANCE = 1e-6
"""Vertices may lie this fraction of the image's larger side outside it (rounding), see :func:`check_zones`."""

Points = Union[np.ndarray, Sequence[Sequence[float]]]


ZonesInput = Union[str, os.PathLike, Sequence["Zone"], Sequence[Mapping[str, Any]], None]
"""Zones for counting: a zone file (JSON, see :mod:`clip_ebc.zones`), :class:`~clip_ebc.zones.Zone`
objects, or zone dicts as a zone file holds them."""


@dataclass(frozen=True)
class Zone:
    """A named, simple (non-self-intersecting) polygon in an image.

    points: (x, y) vertices in order, in input-image pixels, or fractions 0-1 of the image's width and
    height when ``normalized``. Consecutive repeated vertices (and a closing copy of the first) are
    dropped on construction; an invalid polygon raises :class:`~clip_ebc.errors.ZoneError`.
    area_m2: the zone's real-world area in square metres, if known (for people per square metre).
    source: where the zone came from (a file name), used in error messages only.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    normalized: bool = False
    area_m2: float | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = _where(self.source, self.name)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ZoneError(f"{where}has no name; give every zone a unique, non-empty name.")
        points = _clean_points(self.points, where)
        if self.normalized:
            outside = [p for p in points if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0)]
            if outside:
                raise ZoneError(
                    f"{where}is normalised but has the vertex {_fmt(outside[0])} outside 0-1; give normalised "
                    "points as fractions of the image width and height, or set \"normalized\": false for pixels."
                )
        _check_polygon(np.asarray(points, dtype=np.float64), where)
        area = self.area_m2
        if area is not None:
            if (isinstance(area, bool) or not isinstance(area, (int, float, np.integer, np.floating))
                    or not math.isfinite(area) or area <= 0):
                raise ZoneError(f"{where}has area_m2 {area!r}; give the zone's area in square metres as a positive "
                                "number, or leave it out.")
            area = float(area)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "normalized", bool(self.normalized))
        object.__setattr__(self, "area_m2", area)

    def pixels(self, image_size: tuple[int, int]) -> np.ndarray:
        """The vertices in pixels of an image of ``image_size`` = (height, width): (N, 2) float64 (x, y)."""
        pts = np.asarray(self.points, dtype=np.float64)
        if self.normalized:
            height, width = image_size
            pts = pts * np.array([width, height], dtype=np.float64)
        return pts


# ------------------------------------------------------------------------------------------- files


def load_zones(path: str | os.PathLike[str]) -> list[Zone]:
    """Read a JSON zone file (see the module docstring for the schema) into validated zones, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZoneError(f"zone file {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise ZoneError(f"zone file {path} is a directory; pass the path of a .json file.") from None
    except UnicodeDecodeError:
        raise ZoneError(f"zone file {path} is not UTF-8 text; save it as a UTF-8 JSON file.") from None
    except OSError as e:
        raise ZoneError(f"zone file {path} cannot be read ({e.strerror or e}); check its permissions.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ZoneError(f"zone file {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                        "fix the syntax.") from None
    return parse_zones(data, source=str(path))


def parse_zones(data: Any, source: str = "the zone data") -> list[Zone]:
    """Validate already-loaded zone JSON (an object with ``"zones"``, or a list of zone objects) into zones.

    source names the data in error messages (a file name).
    """
    default_normalized: Any = False
    if isinstance(data, Mapping):
        unknown = sorted(set(map(str, data)) - set(FILE_KEYS))
        if unknown:
            raise ZoneError(f"{source} has the unknown top-level key(s) {', '.join(map(repr, unknown))}; a zone file "
                            "has \"zones\" (a list) and optionally \"normalized\".")
        if "zones" not in data:
            raise ZoneError(f"{source} has no \"zones\" list; write "
                            "{\"zones\": [{\"name\": ..., \"points\": [[x, y], ...]}]}.")
        default_normalized = data.get("normalized", False)
        if not isinstance(default_normalized, bool):
            raise ZoneError(f"{source} has \"normalized\": {default_normalized!r}; use true or false.")
        items = data["zones"]
    else:
        items = data
    if not isinstance(items, list):
        raise ZoneError(f"{source} must hold a list of zones (or an object with a \"zones\" list), "
                        f"not {type(items).__name__}.")
    if not items:
        raise ZoneError(f"{source} has no zones; add at least one {{\"name\": ..., \"points\": [[x, y], ...]}}.")
    zones: list[Zone] = []
    seen: set[str] = set()
    for number, item in enumerate(items, start=1):
        label = f"{source}: zone {number}"
        if not isinstance(item, Mapping):
            raise ZoneError(f"{label} is {type(item).__name__}, not an object; write each zone as "
                            "{\"name\": ..., \"points\": [[x, y], ...]}.")
        name = item.get("name")
        if isinstance(name, str) and name.strip():
            label = f"{source}: zone {name!r}"
        unknown = sorted(set(map(str, item)) - set(ZONE_KEYS))
        if unknown:
            raise ZoneError(f"{label} has the unknown key(s) {', '.join(map(repr, unknown))}; a zone has \"name\", "
                            "\"points\" and optionally \"normalized\" and \"area_m2\".")
        if not isinstance(name, str) or not name.strip():
            raise ZoneError(f"{label} has no name; give every zone a unique, non-empty \"name\".")
        if name in seen:
            raise ZoneError(f"{source} has two zones named {name!r}; give every zone a unique name.")
        seen.add(name)
        if "points" not in item:
            raise ZoneError(f"{label} has no \"points\"; list its vertices as [[x, y], ...].")
        normalized = item.get("normalized", default_normalized)
        if not isinstance(normalized, bool):
            raise ZoneError(f"{label} has \"normalized\": {normalized!r}; use true or false.")
        zones.append(Zone(name, item["points"], normalized, item.get("area_m2"), source=source))
    return zones


def check_zones(zones: Iterable[Zone], image_size: tuple[int, int]) -> None:
    """Raise :class:`~clip_ebc.errors.ZoneError` if a zone reaches outside an image of ``image_size`` = (H, W).

    Pixel vertices must lie in [0, W] x [0, H], give or take :data:`EDGE_TOLERANCE` of the larger side.
    """
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ZoneError(f"zones cannot be placed on an image of {width}x{height} pixels.")
    tol = EDGE_TOLERANCE * max(height, width)
    for zone in zones:
        pts = zone.pixels(image_size)
        bad = (pts[:, 0] < -tol) | (pts[:, 0] > width + tol) | (pts[:, 1] < -tol) | (pts[:, 1] > height + tol)
        if bad.any():
            k = int(np.argmax(bad))
            raise ZoneError(
                f"{_where(zone.source, zone.name)}has the vertex {_fmt(pts[k])} outside the {width}x{height} image; "
                f"move it inside [0, {width}] x [0, {height}] pixels, or use normalised (0-1) coordinates."
            )


# ---------------------------------------------------------------------------------------- coverage


def coverage(
    zone: Zone | Points,
    image_size: tuple[int, int],
    processed_size: tuple[int, int],
    grid_shape: tuple[int, int],
    block_size: int,
) -> np.ndarray:
    """Fraction of each density cell's in-image area that lies inside the zone: ``grid_shape`` float64 in [0, 1].

    zone: a :class:`Zone`, or (N, 2) (x, y) vertices of a simple polygon in input-image pixels.
    image_size: (H, W) of the input image; processed_size: (H', W') the model saw ((0, 0): same as the
    image); grid_shape: (h, w) of the density map; block_size: processed pixels per cell side.
    Cell (i, j) covers processed pixels [j*b, (j+1)*b) x [i*b, (i+1)*b), i.e. input pixels scaled by
    W/W' and H/H', clipped to the image. Cells with no in-image area get 0. The array is cached (video
    frames repeat the same geometry) and read-only.
    """
    pts = zone.pixels(image_size) if isinstance(zone, Zone) else np.asarray(zone, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise ZoneError(f"zone points must be an (N, 2) array of (x, y) pixels with N >= 3, got shape {pts.shape}.")
    height, width = (int(v) for v in image_size)
    ph, pw = (int(v) for v in processed_size)
    if not (ph and pw):
        ph, pw = height, width
    gh, gw = (int(v) for v in grid_shape)
    if height <= 0 or width <= 0 or ph <= 0 or pw <= 0 or gh < 0 or gw < 0 or int(block_size) <= 0:
        raise ZoneError(f"cannot place zones on image size {tuple(image_size)}, processed size "
                        f"{tuple(processed_size)}, grid {tuple(grid_shape)} and block size {block_size}; all sizes "
                        "must be positive.")
    key = tuple((float(x), float(y)) for x, y in pts)
    return _coverage_cached(key, (height, width), (ph, pw), (gh, gw), int(block_size))


@functools.lru_cache(maxsize=256)
def _coverage_cached(points: tuple[tuple[float, float], ...], image_size: tuple[int, int],
                     processed_size: tuple[int, int], grid_shape: tuple[int, int], block_size: int) -> np.ndarray:
    (height, width), (ph, pw), (gh, gw) = image_size, processed_size, grid_shape
    # cell boundaries in input pixels, clipped to the image (cells past its edge shrink, possibly to nothing)
    xs = np.minimum(np.arange(gw + 1, dtype=np.float64) * block_size * width / pw, width)
    ys = np.minimum(np.arange(gh + 1, dtype=np.float64) * block_size * height / ph, height)
    pts = np.asarray(points, dtype=np.float64)
    area = _polygon_cell_areas(pts[:, 0], pts[:, 1], xs, ys)
    cell = np.outer(np.diff(ys), np.diff(xs))
    out = np.divide(area, cell, out=np.zeros_like(area), where=cell > 0)
    np.clip(out, 0.0, 1.0, out=out)
    out.flags.writeable = False
    return out


def _polygon_cell_areas(px: np.ndarray, py: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Area of the simple polygon (px, py) inside each rectangle [xs[j], xs[j+1]] x [ys[i], ys[i+1]].

    Green's theorem per cell: the area is the sum over edges of ``s * integral of (min(x(y), x1) - min(x(y), x0)) dy``
    over the edge's stretch in the row, s = +1 for edges going down (+y), -1 up, i.e. the signed length of
    each horizontal line's stretch inside the cell that lies left of the edge. Per (edge, row) piece, the
    cells left of the piece get a full ``s * height * cell width`` (a prefix, done by a cumulative sum),
    cells it spans get the exact trapezoid part, cells right of it nothing. Every edge is evaluated from
    its upper end, so an edge shared by two zones contributes exactly opposite amounts to both.
    Returns (len(ys) - 1, len(xs) - 1) float64, the sign fixed by the polygon's orientation.
    """
    gh, gw = len(ys) - 1, len(xs) - 1
    if gh <= 0 or gw <= 0:
        return np.zeros((max(gh, 0), max(gw, 0)))
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    down = qy > py
    keep = qy != py  # horizontal edges add nothing
    sign = np.where(down, 1.0, -1.0)[keep]
    xl, yl = np.where(down, px, qx)[keep], np.where(down, py, qy)[keep]  # upper end (smaller y)
    xh, yh = np.where(down, qx, px)[keep], np.where(down, qy, py)[keep]

    # (edge, row) pieces: rows whose span [ys[i], ys[i+1]] overlaps (yl, yh)
    r0 = np.searchsorted(ys[1:], yl, side="right")
    nrows = np.maximum(np.searchsorted(ys[:-1], yh, side="left") - r0, 0)
    edge = np.repeat(np.arange(len(r0)), nrows)
    row = np.arange(edge.size) - np.repeat(np.cumsum(nrows) - nrows, nrows) + r0[edge]
    ya = np.maximum(yl[edge], ys[row])
    yb = np.minimum(yh[edge], ys[row + 1])
    h = yb - ya
    s = sign[edge] * h
    span_y = (yh - yl)[edge]
    dx = (xh - xl)[edge]
    xa = _lerp(xl[edge], xh[edge], dx, (ya - yl[edge]) / span_y)
    xb = _lerp(xl[edge], xh[edge], dx, (yb - yl[edge]) / span_y)
    lo, hi = np.minimum(xa, xb), np.maximum(xa, xb)

    # cells wholly left of the piece: a prefix of the row
    first = np.searchsorted(xs[1:], lo, side="right")  # columns j < first have xs[j+1] <= lo
    prefix = np.zeros((gh, gw + 1))
    np.add.at(prefix, (row, 0), s)
    np.add.at(prefix, (row, first), -s)
    area = np.cumsum(prefix, axis=1)[:, :gw] * np.diff(xs)

    # cells the piece spans: xs[j] < hi and xs[j+1] > lo
    ncols = np.maximum(np.searchsorted(xs[:-1], hi, side="left") - first, 0)
    piece = np.repeat(np.arange(row.size), ncols)
    col = np.arange(piece.size) - np.repeat(np.cumsum(ncols) - ncols, ncols) + first[piece]
    lo_p, hi_p = lo[piece], hi[piece]
    part = _min_integral(xs[col + 1], lo_p, hi_p) - _min_integral(xs[col], lo_p, hi_p)
    area += np.bincount(row[piece] * gw + col, weights=sign[edge[piece]] * h[piece] * part,
                        minlength=gh * gw).reshape(gh, gw)

    orientation = np.sum((px + qx) * (qy - py))  # twice the signed area (integral of x dy)
    return area if orientation >= 0 else -area


def _lerp(a: np.ndarray, b: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a + t (b - a), exact at both ends (t = 0 gives a, t = 1 gives b)."""
    return np.where(t <= 0.5, a + t * d, b - (1.0 - t) * d)


def _min_integral(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of min(x, t) over a segment whose x runs linearly from lo to hi (per unit of its height)."""
    inside = (t > lo) & (t < hi)
    width = np.where(inside, hi - lo, 1.0)
    partial = t - (t - lo) ** 2 / (2.0 * width)
    return np.where(t <= lo, t, np.where(t >= hi, 0.5 * (lo + hi), partial))


# ------------------------------------------------------------------------------------------ counts


def zone_counts(density: np.ndarray, weights_by_name: Mapping[str, np.ndarray]) -> dict[str, float]:
    """People per zone: the float64 sum of ``density`` (h, w) times each zone's (h, w) coverage weights."""
    density = np.asarray(density)
    counts: dict[str, float] = {}
    for name, weights in weights_by_name.items():
        weights = np.asarray(weights)
        if weights.shape != density.shape:
            raise ZoneError(f"the weights of zone {name!r} have shape {weights.shape} but the density map has "
                            f"shape {density.shape}; compute them with coverage() for this density map.")
        counts[name] = float(np.einsum("ij,ij->", density, weights, dtype=np.float64))
    return counts


def count_zones(result: Any, zones: Sequence[Zone]) -> dict[str, float]:
    """People in each zone of a :class:`~clip_ebc.counter.CountResult` (or any object with ``density``,
    ``block_size``, ``image_size`` and ``processed_size``), by zone name, in zone order.

    Raises :class:`~clip_ebc.errors.ZoneError` if a zone reaches outside the image. A result whose
    ``error`` is set (an image that was not counted) gives NaN for every zone.
    """
    _check_names(zones)
    if getattr(result, "error", None) is not None:
        return {zone.name: math.nan for zone in zones}
    density = np.asarray(result.density)
    image_size = tuple(result.image_size)
    processed_size = tuple(getattr(result, "processed_size", (0, 0)) or (0, 0))
    check_zones(zones, image_size)  # type: ignore[arg-type]
    weights = {zone.name: coverage(zone, image_size, processed_size, density.shape,  # type: ignore[arg-type]
                                   result.block_size) for zone in zones}
    return zone_counts(density, weights)


def zone_stats(result: Any, zones: Sequence[Zone]) -> dict[str, dict[str, float | None]]:
    """``{name: {"count": people, "per_m2": people per square metre or None}}`` for each zone of ``result``;
    ``per_m2`` is ``count / area_m2`` for zones with an ``area_m2``, else None. JSON-ready."""
    counts = count_zones(result, zones)
    return {zone.name: {"count": counts[zone.name],
                        "per_m2": None if zone.area_m2 is None else counts[zone.name] / zone.area_m2}
            for zone in zones}


def interior_point(points: Points) -> tuple[float, float]:
    """A point inside the simple polygon ``points`` (N, 2) (x, y), for a label: its centroid if that is
    inside, else the middle of the widest stretch inside the polygon along the centroid's horizontal line."""
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    qx, qy = np.roll(x, -1), np.roll(y, -1)
    cross = x * qy - qx * y
    a = cross.sum() / 2.0
    if a == 0:
        return float(x.mean()), float(y.mean())
    cx = float(((x + qx) * cross).sum() / (6.0 * a))
    cy = float(((y + qy) * cross).sum() / (6.0 * a))
    # crossings of the line y = cy (half-open rule, so a vertex on the line is counted once)
    hit = (y <= cy) != (qy <= cy)
    t = (cy - y[hit]) / (qy[hit] - y[hit])
    xs = np.sort(x[hit] + t * (qx[hit] - x[hit]))
    if len(xs) < 2:
        return cx, cy
    starts, ends = xs[0::2], xs[1::2]
    inside = np.any((starts <= cx) & (cx <= ends))
    if inside:
        return cx, cy
    k = int(np.argmax(ends - starts[: len(ends)]))
    return float((starts[k] + ends[k]) / 2.0), cy


# ------------------------------------------------------------------------------------------ checks


def _where(source: str | None, name: Any) -> str:
    """The start of an error sentence naming the zone (and its file): "zones.json: zone 'gate' "."""
    zone = f"zone {name!r} " if isinstance(name, str) and name.strip() else "a zone "
    return f"{source}: {zone}" if source else zone


def _fmt(point: Any) -> str:
    return f"({float(point[0]):g}, {float(point[1]):g})"


def _check_names(zones: Sequence[Zone]) -> None:
    seen: set[str] = set()
    for zone in zones:
        if not isinstance(zone, Zone):
            raise ZoneError(f"expected Zone objects, got {type(zone).__name__}; read zones with load_zones().")
        if zone.name in seen:
            raise ZoneError(f"two zones are named {zone.name!r}; give every zone a unique name.")
        seen.add(zone.name)


def _clean_points(points: Any, where: str) -> tuple[tuple[float, float], ...]:
    """Check the vertex list's structure and values; drop consecutive repeats (and a closing vertex)."""
    if isinstance(points, (str, bytes)) or not isinstance(points, (Sequence, np.ndarray)):
        raise ZoneError(f"{where}has points {_short(points)}; list its vertices as [[x, y], ...].")
    out: list[tuple[float, float]] = []
    for k, p in enumerate(points, start=1):
        if isinstance(p, (str, bytes)) or not isinstance(p, (Sequence, np.ndarray)) or len(p) != 2 or not all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in p):
            raise ZoneError(f"{where}has vertex {k} {_short(p)}, not an [x, y] pair of numbers; list its vertices "
                            "as [[x, y], ...].")
        x, y = float(p[0]), float(p[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ZoneError(f"{where}has the non-finite vertex {k} ({x}, {y}); give finite coordinates.")
        if not out or out[-1] != (x, y):
            out.append((x, y))
    while len(out) > 1 and out[-1] == out[0]:
        out.pop()
    if len(out) < 3:
        raise ZoneError(f"{where}has {len(out)} distinct vertices; a zone needs at least 3 [x, y] points around its "
                        "outline.")
    return tuple(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_polygon(pts: np.ndarray, where: str) -> None:
    """Raise unless ``pts`` (N, 2) is a simple polygon with positive area."""
    span = float(np.max(np.ptp(pts, axis=0)))
    tol = 1e-9 * span  # distances below this count as touching
    # all vertices on one line: the farthest vertex from the first spans the line
    d = pts - pts[0]
    far = d[int(np.argmax(np.hypot(d[:, 0], d[:, 1])))]
    off_line = np.abs(d[:, 0] * far[1] - d[:, 1] * far[0]) / max(float(np.hypot(*far)), 1e-300)
    if span == 0 or float(off_line.max()) <= tol:
        raise ZoneError(f"{where}has zero area (all its vertices lie on one line); give at least 3 vertices that "
                        "are not collinear.")
    crossing = _first_crossing(pts, tol)
    if crossing is not None:
        i, j = crossing
        n = len(pts)
        raise ZoneError(
            f"{where}crosses itself: edge {i + 1} {_fmt(pts[i])}-{_fmt(pts[(i + 1) % n])} meets edge {j + 1} "
            f"{_fmt(pts[j])}-{_fmt(pts[(j + 1) % n])}; list the vertices in order around the outline, without "
            "crossings or touching edges."
        )
    x, y = pts[:, 0], pts[:, 1]
    if abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))) / 2.0 <= 1e-12 * span * span:
        raise ZoneError(f"{where}has zero area; give vertices that enclose a region.")


def _first_crossing(pts: np.ndarray, tol: float, chunk: int = 256) -> tuple[int, int] | None:
    """The first pair of edges (i < j) of the closed polygon ``pts`` that intersect or touch, other than
    adjacent edges at their shared vertex; None if it is simple. Edge k runs from pts[k] to pts[k + 1]."""
    n = len(pts)
    a = pts
    b = np.roll(pts, -1, axis=0)
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1])
    # adjacent edges can only meet beyond their shared vertex by folding back along the same line
    dn = np.roll(d, -1, axis=0)
    fold = (np.abs(d[:, 0] * dn[:, 1] - d[:, 1] * dn[:, 0]) <= tol * np.maximum(length, np.roll(length, -1))) & (
        np.sum(d * dn, axis=1) < 0)
    if fold.any():
        k = int(np.argmax(fold))
        return (k, (k + 1) % n) if k + 1 < n else (0, n - 1)
    if n < 4:
        return None
    lo, hi = np.minimum(a, b) - tol, np.maximum(a, b) + tol
    j = np.arange(n)[None, :]
    for start in range(0, n, chunk):
        i = np.arange(start, min(start + chunk, n))[:, None]
        # candidates: non-adjacent pairs whose bounding boxes meet; only those get the exact test
        near = ((j > i + 1) & ~((i == 0) & (j == n - 1))
                & (lo[i, 0] <= hi[j, 0]) & (lo[j, 0] <= hi[i, 0]) & (lo[i, 1] <= hi[j, 1]) & (lo[j, 1] <= hi[i, 1]))
        ii, jj = np.nonzero(near)
        if ii.size == 0:
            continue
        ii = ii + start
        ai, bi, di, li = a[ii], b[ii], d[ii], length[ii]
        aj, bj, dj, lj = a[jj], b[jj], d[jj], length[jj]
        s1 = _side(_cross(di, aj - ai), tol * li)
        s2 = _side(_cross(di, bj - ai), tol * li)
        s3 = _side(_cross(dj, ai - aj), tol * lj)
        s4 = _side(_cross(dj, bi - aj), tol * lj)
        collinear = ((s1 == 0) & (s2 == 0)) | ((s3 == 0) & (s4 == 0))
        # collinear edges: do their projections on edge i overlap (touching counts)?
        t1 = np.sum((aj - ai) * di, axis=-1) / (li * li)
        t2 = np.sum((bj - ai) * di, axis=-1) / (li * li)
        eps = tol / li
        overlap = (np.maximum(t1, t2) >= -eps) & (np.minimum(t1, t2) <= 1 + eps)
        hit = np.where(collinear, overlap, (s1 * s2 <= 0) & (s3 * s4 <= 0))
        if hit.any():
            k = int(np.argmax(hit))  # np.nonzero is row-major, so this is the first pair (i, j)
            return int(ii[k]), int(jj[k])
    return None


def _side(o: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Sign of an orientation (cross product), 0 within ``tol``."""
    return np.where(np.abs(o) <= tol, 0.0, np.sign(o))


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def as_zones(zones: ZonesInput) -> tuple[Zone, ...] | None:
    """Zones from a zone file path, :class:`~clip_ebc.zones.Zone` objects or zone dicts; None for none."""
    if zones is None:
        return None
    if isinstance(zones, (str, os.PathLike)):
        return tuple(load_zones(zones))
    items = list(zones)
    if all(isinstance(z, Zone) for z in items):
        return tuple(items)
    return tuple(parse_zones(items))
