"""Zones: exact cell coverage, tiling, per-zone counts, zone files and their errors, zone outlines on heatmaps."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from clip_ebc.counter import CountResult
from clip_ebc.errors import ConfigError, ZoneError
from clip_ebc.zones import (
    Zone,
    _coverage_cached,
    check_zones,
    count_zones,
    coverage,
    interior_point,
    load_zones,
    parse_zones,
    zone_counts,
    zone_stats,
)

# ------------------------------------------------------------------------------------------ references


def cell_bounds(image_size, processed_size, grid_shape, block):
    """Cell boundaries in input pixels, clipped to the image: xs (w + 1), ys (h + 1)."""
    (height, width), (ph, pw), (gh, gw) = image_size, processed_size, grid_shape
    ph, pw = (ph, pw) if ph and pw else (height, width)
    xs = np.minimum(np.arange(gw + 1) * block * width / pw, width)
    ys = np.minimum(np.arange(gh + 1) * block * height / ph, height)
    return xs, ys


def inside(x, y, poly):
    """Even-odd point-in-polygon test, vectorised over the points."""
    poly = np.asarray(poly, dtype=float)
    result = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0 if y1 != y0 else 1.0)
        result ^= crosses & (x < x_at)
    return result


def supersampled(poly, image_size, processed_size, grid_shape, block, n=64):
    """Coverage from n x n sample points at the centres of a regular grid over each clipped cell."""
    xs, ys = cell_bounds(image_size, processed_size, grid_shape, block)
    f = (np.arange(n) + 0.5) / n
    sx = xs[:-1, None] + f[None, :] * np.diff(xs)[:, None]  # (w, n)
    sy = ys[:-1, None] + f[None, :] * np.diff(ys)[:, None]  # (h, n)
    x = np.broadcast_to(sx[None, :, None, :], (len(sy), len(sx), n, n))
    y = np.broadcast_to(sy[:, None, :, None], (len(sy), len(sx), n, n))
    cov = inside(x, y, poly).mean(axis=(2, 3))
    cov[np.outer(np.diff(ys), np.diff(xs)) == 0] = 0.0
    return cov


def clipped_area(poly, x0, x1, y0, y1):
    """Area of ``poly`` inside the rectangle: Sutherland-Hodgman, one half-plane a.p <= c at a time."""
    pts = [tuple(map(float, p)) for p in poly]
    for a, b, c in ((-1, 0, -x0), (1, 0, x1), (0, -1, -y0), (0, 1, y1)):
        out = []
        for k, p in enumerate(pts):
            q = pts[(k + 1) % len(pts)]
            fp, fq = a * p[0] + b * p[1] - c, a * q[0] + b * q[1] - c
            if fp <= 0:
                out.append(p)
            if (fp < 0 < fq) or (fq < 0 < fp):
                t = fp / (fp - fq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        pts = out
        if not pts:
            return 0.0
    x, y = np.array(pts).T
    return abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) / 2


def clipped_reference(poly, image_size, processed_size, grid_shape, block):
    xs, ys = cell_bounds(image_size, processed_size, grid_shape, block)
    cov = np.zeros(grid_shape)
    for i in range(grid_shape[0]):
        for j in range(grid_shape[1]):
            cell = (xs[j + 1] - xs[j]) * (ys[i + 1] - ys[i])
            if cell > 0:
                cov[i, j] = clipped_area(poly, xs[j], xs[j + 1], ys[i], ys[i + 1]) / cell
    return cov


def result_for(density, image_size, processed_size=(0, 0), block=8):
    density = np.asarray(density, dtype=np.float32)
    return CountResult(float(density.sum(dtype=np.float64)), density, block, image_size, "test",
                       processed_size=processed_size)


# ------------------------------------------------------------------------------------------ coverage


@pytest.mark.parametrize("geometry", [
    ((64, 96), (0, 0), (8, 12), 8),  # legacy result: the grid is the image
    ((60, 100), (60, 100), (8, 13), 8),  # image not a multiple of the block: last cells reach past it
    ((77, 101), (64, 96), (8, 12), 8),  # resized by non-integer factors
])
@pytest.mark.parametrize("rect", [(10.3, 5.2, 50.7, 33.1), (0, 0, 17, 9), (31.25, 40.5, 88.8, 59.9)])
def test_rectangles_match_their_analytic_area(geometry, rect):
    image_size, processed_size, grid_shape, block = geometry
    x0, y0, x1, y1 = rect
    zone = Zone("r", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    xs, ys = cell_bounds(*geometry)
    overlap_x = np.clip(np.minimum(xs[1:], x1) - np.maximum(xs[:-1], x0), 0, None)
    overlap_y = np.clip(np.minimum(ys[1:], y1) - np.maximum(ys[:-1], y0), 0, None)
    cell = np.outer(np.diff(ys), np.diff(xs))
    expected = np.divide(np.outer(overlap_y, overlap_x), cell, out=np.zeros(grid_shape), where=cell > 0)
    got = coverage(zone, image_size, processed_size, grid_shape, block)
    assert got.shape == grid_shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # people-weighted: a uniform 1 per in-image pixel gives the rectangle's area
    assert float((got * cell).sum()) == pytest.approx((x1 - x0) * (y1 - y0), rel=1e-12)


SHAPES = {
    "triangle": [(3.3, 2.7), (57.9, 11.2), (15.1, 41.6)],
    "L": [(4.1, 3.3), (21.7, 3.3), (21.7, 26.9), (52.3, 26.9), (52.3, 40.1), (4.1, 40.1)],
    "U": [(2.2, 4.4), (12.6, 4.4), (12.6, 30.3), (44.9, 30.3), (44.9, 6.1), (58.7, 6.1), (58.7, 43.2), (2.2, 43.2)],
    "slanted concave": [(5.5, 2.5), (55.1, 9.7), (31.3, 20.2), (58.2, 41.9), (7.7, 38.8), (20.9, 21.3)],
    # L and U turned by 20 degrees
    "rotated L": [(15.85, 0.61), (29.08, 5.43), (22.62, 23.17), (45.62, 31.54), (42.01, 41.46), (5.78, 28.27)],
    "rotated U": [(13.62, 0.32), (21.44, 3.17), (14.36, 22.64), (38.64, 31.48), (45.26, 13.29), (55.63, 17.06),
                  (45.48, 44.95), (3.01, 29.49)],
}
GEOMETRY = ((45, 61), (40, 56), (5, 7), 8)  # cells of 8.71 x 9 input pixels, the last ones clipped


@pytest.mark.parametrize("shape", ["triangle", "slanted concave", "rotated L", "rotated U"])
def test_polygons_match_supersampling(shape):
    # a regular 64 x 64 sampling is off by up to 1/128 of a cell along edges parallel to its rows or
    # columns, so these shapes have none; slanted edges average the error out
    poly = SHAPES[shape]
    got = coverage(np.array(poly), *GEOMETRY)
    np.testing.assert_allclose(got, supersampled(poly, *GEOMETRY), rtol=0, atol=1e-3)
    assert got.min() == 0 and got.max() <= 1.0 and ((got > 0.05) & (got < 0.95)).sum() >= 5


@pytest.mark.parametrize("shape", SHAPES)
def test_polygons_match_exact_clipping(shape):
    poly = SHAPES[shape]
    got = coverage(np.array(poly), *GEOMETRY)
    np.testing.assert_allclose(got, clipped_reference(poly, *GEOMETRY), rtol=0, atol=1e-12)
    x, y = np.array(poly).T
    xs, ys = cell_bounds(*GEOMETRY)
    area = abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) / 2
    assert float((got * np.outer(np.diff(ys), np.diff(xs))).sum()) == pytest.approx(area, rel=1e-12)


def test_orientation_and_start_vertex_do_not_matter():
    poly = np.array(SHAPES["U"])
    base = coverage(poly, *GEOMETRY)
    np.testing.assert_allclose(coverage(poly[::-1], *GEOMETRY), base, atol=1e-12)
    np.testing.assert_allclose(coverage(np.roll(poly, 3, axis=0), *GEOMETRY), base, atol=1e-12)


def normalised(polys):
    return [Zone(f"z{k}", tuple(map(tuple, p)), normalized=True) for k, p in enumerate(polys)]


def zigzag_partition():
    rng = np.random.default_rng(7)
    levels = [0.0, 0.13, 0.29, 0.5, 0.66, 0.81, 1.0]
    line = [(float(rng.uniform(0.2, 0.8)), y) for y in levels]  # a cut from top to bottom
    top_left = [(0.0, 0.0), *line[:4], (0.0, 0.5)]
    bottom_left = [(0.0, 0.5), *line[3:], (0.0, 1.0)]
    right = [*line, (1.0, 1.0), (1.0, 0.0)]
    return [top_left, bottom_left, right]


def fan_partition():
    centre = (0.37, 0.61)
    rim = [(0, 0), (0.45, 0), (1, 0), (1, 0.7), (1, 1), (0.2, 1), (0, 1), (0, 0.3)]
    return [[centre, rim[k], rim[(k + 1) % len(rim)]] for k in range(len(rim))]


PARTITIONS = {
    "halves": [[(0, 0), (0.5, 0), (0.5, 1), (0, 1)], [(0.5, 0), (1, 0), (1, 1), (0.5, 1)]],
    # the right half's left edge passes the left quarters' shared vertex (a T-junction)
    "quarters + half": [[(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)], [(0, 0.5), (0.5, 0.5), (0.5, 1), (0, 1)],
                        [(0.5, 0), (1, 0), (1, 1), (0.5, 1)]],
    # a concave L and two quadrilaterals split by a diagonal
    "L + diagonal": [[(0, 0), (0.6, 0), (0.6, 0.4), (0.3, 0.4), (0.3, 1), (0, 1)],
                     [(0.6, 0), (1, 0), (1, 1), (0.6, 0.4)],
                     [(0.6, 0.4), (1, 1), (0.3, 1), (0.3, 0.4)]],
    "zigzag": zigzag_partition(),
    "fan": fan_partition(),
}
GEOMETRIES = {
    "legacy, not a multiple of the block": ((60, 100), (0, 0), (8, 13), 8),
    "non-integer scale": ((77, 101), (64, 96), (8, 12), 8),
    "grid past the image edge": ((77, 101), (61, 90), (8, 12), 8),
    "grid a whole cell wider than the image": ((77, 101), (64, 96), (9, 14), 8),
    "1080p, block 16": ((1080, 1920), (448, 800), (28, 50), 16),
}


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("partition", PARTITIONS)
def test_zones_that_tile_the_image_split_every_cell_and_the_count(partition, geometry):
    image_size, processed_size, grid_shape, block = GEOMETRIES[geometry]
    zones = normalised(PARTITIONS[partition])
    total = sum(coverage(z, image_size, processed_size, grid_shape, block) for z in zones)
    xs, ys = cell_bounds(image_size, processed_size, grid_shape, block)
    in_image = np.outer(np.diff(ys), np.diff(xs)) > 0
    np.testing.assert_allclose(total[in_image], 1.0, rtol=0, atol=1e-9)
    assert (total[~in_image] == 0).all()  # cells wholly outside the image belong to no zone
    density = np.random.default_rng(1).gamma(0.5, 0.3, grid_shape).astype(np.float32)
    density[~in_image] = 0  # the counter never has such cells
    result = result_for(density, image_size, processed_size, block)
    counts = count_zones(result, zones)
    assert list(counts) == [z.name for z in zones]
    assert sum(counts.values()) == pytest.approx(result.count, rel=1e-9)


def test_cells_outside_the_image_get_no_weight():
    zone = Zone("all", ((0, 0), (1, 0), (1, 1), (0, 1)), normalized=True)
    cov = coverage(zone, (77, 101), (64, 96), (9, 14), 8)
    assert cov.shape == (9, 14)
    assert (cov[:8, :12] == 1).all() and (cov[8:, :] == 0).all() and (cov[:, 12:] == 0).all()


def test_normalised_and_pixel_coordinates_agree():
    image_size = (77, 101)
    poly = np.array(SHAPES["slanted concave"]) * [101 / 61, 77 / 45]
    pixel = Zone("p", tuple(map(tuple, poly)))
    norm = Zone("n", tuple(map(tuple, poly / [101, 77])), normalized=True)
    np.testing.assert_allclose(norm.pixels(image_size), pixel.pixels(image_size), rtol=1e-14)
    geometry = (image_size, (64, 96), (8, 12), 8)
    np.testing.assert_allclose(coverage(norm, *geometry), coverage(pixel, *geometry), atol=1e-12)
    result = result_for(np.random.default_rng(2).uniform(0, 1, (8, 12)), image_size, (64, 96))
    assert count_zones(result, [norm])["n"] == pytest.approx(count_zones(result, [pixel])["p"], rel=1e-12)
    # the same normalised zone follows the image size
    assert coverage(norm, (154, 202), (128, 192), (16, 24), 8).sum() == pytest.approx(
        4 * coverage(norm, *geometry).sum(), rel=1e-12)


def test_coverage_is_cached_read_only_and_fast():
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 20))
    radius = rng.uniform(200, 520, 20)
    poly = np.c_[960 + radius * np.cos(angles), 540 + radius * np.sin(angles)]
    args = ((1080, 1920), (1080, 1920), (135, 240), 8)
    times = []
    for _ in range(3):
        _coverage_cached.cache_clear()
        start = time.perf_counter()
        cov = coverage(poly, *args)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.05
    x, y = poly.T
    assert cov.sum() * 64 == pytest.approx(abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) / 2, rel=1e-12)
    assert coverage(poly, *args) is cov  # video frames reuse it
    assert not cov.flags.writeable
    with pytest.raises(ValueError):
        cov[0, 0] = 1.0


# -------------------------------------------------------------------------------------------- counts


def test_counts_and_people_per_square_metre():
    density = np.full((6, 8), 0.5, dtype=np.float32)  # 48 x 64 image, legacy result
    result = result_for(density, (48, 64))
    zones = [Zone("gate", ((8, 8), (40, 8), (40, 24), (8, 24)), area_m2=2.5),  # 4 x 2 cells
             Zone("half cell", ((0, 0), (4, 0), (4, 8), (0, 8))),
             Zone("triangle", ((0, 48), (64, 48), (64, 0)), area_m2=10)]  # half the image
    counts = count_zones(result, zones)
    assert counts == {"gate": pytest.approx(4.0), "half cell": pytest.approx(0.25), "triangle": pytest.approx(12.0)}
    assert all(type(v) is float for v in counts.values())
    stats = zone_stats(result, zones)
    assert stats == {"gate": {"count": pytest.approx(4.0), "per_m2": pytest.approx(1.6)},
                     "half cell": {"count": pytest.approx(0.25), "per_m2": None},
                     "triangle": {"count": pytest.approx(12.0), "per_m2": pytest.approx(1.2)}}
    json.dumps(stats)  # JSON-ready
    weights = {z.name: coverage(z, (48, 64), (0, 0), (6, 8), 8) for z in zones}
    assert zone_counts(density, weights) == counts


def test_counts_of_a_result_that_failed_are_nan():
    result = CountResult(math.nan, np.zeros((0, 0), np.float32), 8, (0, 0), "m", error="broken file")
    assert math.isnan(count_zones(result, [Zone("a", ((0, 0), (1, 0), (0, 1)))])["a"])


def test_zone_counts_checks_shapes():
    with pytest.raises(ZoneError, match=r"zone 'a' have shape \(2, 2\) but the density map has shape \(3, 3\)"):
        zone_counts(np.zeros((3, 3)), {"a": np.zeros((2, 2))})


def test_zones_outside_the_image_are_refused_before_counting():
    zone = Zone("gate", ((10, 10), (70, 10), (70, 40)), source="zones.json")
    check_zones([zone], (48, 70))  # on the edge is inside
    check_zones([Zone("e", ((0, 0), (64.00001, 0), (0, 48)))], (48, 64))  # rounding is tolerated
    with pytest.raises(ZoneError, match=r"^zones.json: zone 'gate' has the vertex \(70, 10\) outside the 64x48 image; "
                                        r"move it inside \[0, 64\] x \[0, 48\] pixels, or use normalised"):
        count_zones(result_for(np.zeros((6, 8)), (48, 64)), [zone])
    with pytest.raises(ZoneError, match="two zones are named 'gate'"):
        count_zones(result_for(np.zeros((6, 8)), (48, 70)), [zone, zone])


def test_interior_point_is_inside_concave_zones():
    u = np.array([(0, 0), (1, 0), (1, 1), (0.8, 1), (0.8, 0.2), (0.2, 0.2), (0.2, 1), (0, 1)])
    x, y = interior_point(u)  # the centroid lies in the notch
    assert inside(np.array([x]), np.array([y]), u)[0]
    assert interior_point([(0, 0), (4, 0), (4, 2), (0, 2)]) == pytest.approx((2, 1))


# --------------------------------------------------------------------------------------------- files


def test_load_both_schemas(tmp_path):
    doc = {"normalized": True, "zones": [
        {"name": "gate A", "points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.1]], "area_m2": 12.5},
        {"name": "platform", "points": [[10, 20], [30, 20], [30, 40]], "normalized": False},
    ]}
    path = tmp_path / "zones.json"
    path.write_text(json.dumps(doc))
    gate, platform = load_zones(path)
    assert gate == Zone("gate A", ((0.1, 0.1), (0.5, 0.1), (0.5, 0.5)), True, 12.5)  # closing vertex dropped
    assert gate.source == str(path) and gate.normalized and gate.area_m2 == 12.5
    assert platform.points == ((10.0, 20.0), (30.0, 20.0), (30.0, 40.0)) and not platform.normalized
    assert platform.area_m2 is None
    np.testing.assert_allclose(gate.pixels((100, 200)), [[20, 10], [100, 10], [100, 50]])
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"name": "x", "points": [[0, 0], [4, 0], [4, 4]]}]))
    assert load_zones(bare) == [Zone("x", ((0, 0), (4, 0), (4, 4)))]
    assert parse_zones(doc) == [gate, platform]
    assert hash(gate) == hash(Zone("gate A", ((0.1, 0.1), (0.5, 0.1), (0.5, 0.5)), True, 12.5))


def test_file_errors(tmp_path):
    with pytest.raises(ZoneError, match=r"^zone file .*nope.json does not exist; check the path\.$"):
        load_zones(tmp_path / "nope.json")
    with pytest.raises(ZoneError, match=r"is a directory; pass the path of a \.json file"):
        load_zones(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"zones": [{"name": "a",}]}')
    with pytest.raises(ZoneError, match=r"bad.json is not valid JSON \(Expecting property name enclosed in double "
                                        r"quotes at line 1, column 25\); fix the syntax\."):
        load_zones(bad)
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ZoneError, match="is not UTF-8 text"):
        load_zones(bad)
    bad.write_text('[{"name": "a", "points": [[0, 0], [NaN, 1], [1, 1]]}]')  # Python's json reads NaN
    with pytest.raises(ZoneError, match=r"^.*bad.json: zone 'a' has the non-finite vertex 2 \(nan, 1.0\); give finite"):
        load_zones(bad)
    assert issubclass(ZoneError, ConfigError)


SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]
BAD = [
    ({"zones": 5}, r"^z.json must hold a list of zones \(or an object with a \"zones\" list\), not int\.$"),
    ("zones", r"must hold a list of zones .*, not str\."),
    ({"normalized": True}, r"^z.json has no \"zones\" list; write"),
    ({"zones": [], "version": 2}, r"unknown top-level key\(s\) 'version'; a zone file has \"zones\""),
    ({"zones": []}, r"^z.json has no zones; add at least one"),
    ({"zones": [], "normalized": "yes"}, r"has \"normalized\": 'yes'; use true or false\."),
    ([5], r"^z.json: zone 1 is int, not an object"),
    ([{"points": SQUARE}], r"^z.json: zone 1 has no name; give every zone a unique, non-empty \"name\"\.$"),
    ([{"name": "  ", "points": SQUARE}], r"zone 1 has no name"),
    ([{"name": 3, "points": SQUARE}], r"zone 1 has no name"),
    ([{"name": "a", "points": SQUARE}, {"name": "a", "points": SQUARE}],
     r"^z.json has two zones named 'a'; give every zone a unique name\.$"),
    ([{"name": "a", "points": SQUARE, "area": 3}],
     r"^z.json: zone 'a' has the unknown key\(s\) 'area'; a zone has \"name\", \"points\" and optionally"),
    ([{"name": "a"}], r"^z.json: zone 'a' has no \"points\"; list its vertices as \[\[x, y\], \.\.\.\]\.$"),
    ([{"name": "a", "points": "0,0 1,1"}], r"zone 'a' has points '0,0 1,1'; list its vertices as"),
    ([{"name": "a", "points": [[0, 0], [1, 0, 2], [1, 1]]}], r"zone 'a' has vertex 2 \[1, 0, 2\], not an \[x, y\]"),
    ([{"name": "a", "points": [[0, 0], [True, 0], [1, 1]]}], r"vertex 2 \[True, 0\], not an \[x, y\] pair of numbers"),
    ([{"name": "a", "points": [[0, 0], [5, 5], [5, 5], [0, 0]]}],
     r"^z.json: zone 'a' has 2 distinct vertices; a zone needs at least 3 \[x, y\] points around its outline\.$"),
    ([{"name": "a", "points": [[0, 0], [5, 5], [10, 10]]}],
     r"^z.json: zone 'a' has zero area \(all its vertices lie on one line\); give at least 3 vertices that are not"),
    ([{"name": "bow", "points": [[0, 0], [10, 10], [10, 0], [0, 10]]}],
     (r"^z.json: zone 'bow' crosses itself: edge 1 \(0, 0\)-\(10, 10\) meets edge 3 \(10, 0\)-\(0, 10\); list the "
      r"vertices in order around the outline, without crossings or touching edges\.$")),
    # a vertex touching a non-adjacent edge
    ([{"name": "pinch", "points": [[0, 0], [10, 0], [10, 10], [6, 10], [5, 0], [4, 10], [0, 10]]}],
     r"zone 'pinch' crosses itself: edge 1 \(0, 0\)-\(10, 0\) meets edge 4 \(6, 10\)-\(5, 0\)"),
    # an edge folding back over the previous one (collinear overlap of adjacent edges)
    ([{"name": "spike", "points": [[0, 0], [10, 0], [10, 10], [0, 10], [0, 5], [0, 8]]}],
     r"zone 'spike' crosses itself: edge 4 \(0, 10\)-\(0, 5\) meets edge 5 \(0, 5\)-\(0, 8\)"),
    # collinear edges overlapping along a stretch (and the edges at its ends touching)
    ([{"name": "overlap", "points": [[0, 0], [10, 0], [10, 5], [7, 5], [7, 0], [3, 0], [3, 5], [0, 5]]}],
     r"zone 'overlap' crosses itself: edge 1 \(0, 0\)-\(10, 0\) meets edge 4"),
    ([{"name": "a", "points": [[0, 0], [1.5, 0], [1, 1]], "normalized": True}],
     (r"^z.json: zone 'a' is normalised but has the vertex \(1.5, 0\) outside 0-1; give normalised points as "
      r"fractions of the image width and height, or set \"normalized\": false for pixels\.$")),
    ({"normalized": True, "zones": [{"name": "a", "points": [[0, 0], [-0.1, 0.5], [1, 1]]}]},
     r"vertex \(-0.1, 0.5\) outside 0-1"),
    ([{"name": "a", "points": SQUARE, "normalized": 1}], r"zone 'a' has \"normalized\": 1; use true or false\."),
    ([{"name": "a", "points": SQUARE, "area_m2": -3}],
     (r"^z.json: zone 'a' has area_m2 -3; give the zone's area in square metres as a positive number, or leave it "
      r"out\.$")),
    ([{"name": "a", "points": SQUARE, "area_m2": 0}], r"zone 'a' has area_m2 0; give"),
    ([{"name": "a", "points": SQUARE, "area_m2": float("inf")}], r"zone 'a' has area_m2 inf; give"),
    ([{"name": "a", "points": SQUARE, "area_m2": "12"}], r"zone 'a' has area_m2 '12'; give"),
    ([{"name": "a", "points": [[0, 0], [float("inf"), 0], [1, 1]]}], r"zone 'a' has the non-finite vertex 2 \(inf, 0"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_invalid_zone_data_is_refused_with_a_clear_message(data, message):
    with pytest.raises(ZoneError, match=message):
        parse_zones(data, source="z.json")


def test_a_simple_concave_polygon_and_the_zone_constructor():
    # a comb with deep teeth is simple
    comb = [(0, 0), (9, 0), (9, 9), (7, 9), (7, 2), (5, 2), (5, 9), (3, 9), (3, 2), (1, 2), (1, 9), (0, 9)]
    assert len(Zone("comb", tuple(comb)).points) == 12
    with pytest.raises(ZoneError, match=r"^zone 'tri' has 2 distinct vertices"):
        Zone("tri", ((0, 0), (1, 1), (0, 0)))
    with pytest.raises(ZoneError, match=r"^a zone has no name"):
        Zone("", ((0, 0), (1, 0), (0, 1)))
    with pytest.raises(ZoneError, match=r"zone points must be an \(N, 2\) array"):
        coverage(np.zeros((2, 2)), (10, 10), (0, 0), (2, 2), 8)


# ------------------------------------------------------------------------------------------ heatmaps


def test_heatmap_outlines_and_labels_zones(tmp_path):
    from clip_ebc.heatmap import render_heatmap, save_heatmap

    rng = np.random.default_rng(3)
    image = rng.integers(90, 160, (120, 160, 3), dtype=np.uint8)
    density = rng.uniform(0, 0.2, (15, 20)).astype(np.float32)
    zones = [Zone("gate A", ((20, 30), (100, 30), (100, 90), (20, 90))),
             Zone("edge", ((0.8, 0.8), (1, 0.8), (1, 1), (0.8, 1)), normalized=True)]
    plain = render_heatmap(image, density, count=3.0, side_by_side=True)
    assert np.array_equal(render_heatmap(image, density, count=3.0, side_by_side=True, zones=None), plain)
    drawn = render_heatmap(image, density, count=3.0, side_by_side=True, zones=zones,
                           zone_counts={"gate A": 12.34})
    assert drawn.shape == plain.shape == (120, 320, 3) and drawn.dtype == np.uint8
    assert np.array_equal(drawn[:, :160], plain[:, :160])  # the plain panel has no zones
    overlay, base = drawn[:, 160:].astype(int), plain[:, 160:].astype(int)
    top_edge = np.abs(overlay[30, 40:60] - base[30, 40:60]).sum(axis=-1)
    left_edge = np.abs(overlay[50:70, 20] - base[50:70, 20]).sum(axis=-1)
    assert (top_edge > 60).all() and (left_edge > 60).all()
    assert (np.abs(overlay[5:20, 5:15] - base[5:20, 5:15]) == 0).all()  # away from zones nothing changes
    out = save_heatmap(tmp_path / "zones.png", image, density, zones=zones)
    assert out.is_file()
