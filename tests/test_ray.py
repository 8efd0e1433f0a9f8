"""Counting on Ray Data (clip_ebc.ray) on a local two-CPU Ray cluster, started once for the module.

Each job starts its own actors (a fresh process that imports torch and loads a tiny model), so the
tests share jobs: one job checks counts, listing, heatmap names and row order together.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pafs = pytest.importorskip("pyarrow.fs")

from conftest import make_scene
from PIL import Image

from clip_ebc import CrowdCounter
from clip_ebc import ray as cray
from clip_ebc.errors import MissingExtraError

REL = 1e-6
SMALL = (96, 160)
"""A resize rule (sides multiples of 32 in [96, 160]) that keeps the tests' images small; the ViT test
uses the default training-set rule."""


@pytest.fixture(scope="module")
def cluster():
    # the test filesystem below travels to the workers by value: they cannot import this module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class Storage(pafs.FileSystemHandler):
    """The local disk, except that files named ``forbidden*`` raise PermissionError (a permission error
    that holds for root too), and the process reading a file named ``die_on`` exits the first time (a
    flag file on disk makes it once per test, across processes)."""

    def __init__(self, die_on: str | None = None, flag: str | None = None) -> None:
        self.local = pafs.LocalFileSystem()
        self.die_on, self.flag = die_on, flag

    def open_input_stream(self, path):
        name = os.path.basename(path)
        if name.startswith("forbidden"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        if name == self.die_on and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os._exit(1)
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def get_type_name(self):
        return "test-storage"

    def equals(self, other):
        return isinstance(other, Storage) and (other.die_on, other.flag) == (self.die_on, self.flag)

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path, metadata=metadata)


def scenes(folder: Path, sizes: list[tuple[str, int, int]]) -> list[Path]:
    paths = []
    for k, (name, h, w) in enumerate(sizes):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_scene(h, w, 6, seed=k)[0]).save(path)
        paths.append(path)
    return paths


def local_counts(model: Path, paths: list[Path], **kwargs) -> list[float]:
    counter = CrowdCounter(model, device="cpu", **kwargs)
    return [r.count for r in counter.count_many([str(p) for p in paths])]


def close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * abs(b)


def test_counts_listing_heatmaps_and_order(cluster, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sizes = [("a0.png", 64, 96), ("a1.png", 80, 96), ("a2.jpg", 96, 128), ("a3.png", 72, 72), ("a4.png", 96, 150),
             ("b.png", 100, 60), ("sub/a0.png", 64, 96), ("sub/c.png", 90, 120)]
    images = scenes(tmp_path / "crowd", sizes)
    (tmp_path / "crowd" / "notes.txt").write_text("not an image")  # a folder listing skips non-images
    (tmp_path / "empty").mkdir()
    inputs = ["crowd", "crowd/sub/*.png", "empty", "nowhere/*.jpg"]  # the glob repeats two listed files

    rows = list(cray.iter_rows(inputs, tiny_dirs["rn50"], num_workers=2, batch_size=2, heatmaps="heat",
                               resize=SMALL))

    listed = ["crowd/a0.png", "crowd/a1.png", "crowd/a2.jpg", "crowd/a3.png", "crowd/a4.png", "crowd/b.png",
              "crowd/sub/a0.png", "crowd/sub/c.png"]
    assert [r["path"] for r in rows] == listed + ["empty", "nowhere/*.jpg"]  # input order, each file once
    assert rows[-2]["error"] == "empty: no images in this folder."
    assert rows[-1]["error"] == "nowhere/*.jpg: no files match this pattern."
    expected = local_counts(tiny_dirs["rn50"], images, batch_size=2, resize=SMALL)
    for row, image, count, (_, h, w) in zip(rows, images, expected, sizes):
        assert row["error"] is None and close(row["count"], count), (row, count)
        assert (row["width"], row["height"]) == (w, h)
        assert row["model"] == str(tiny_dirs["rn50"])
    names = ["a0_heatmap.png", "a1_heatmap.png", "a2_heatmap.png", "a3_heatmap.png", "a4_heatmap.png",
             "b_heatmap.png", "a0_heatmap_2.png", "c_heatmap.png"]  # the CLI's rule for repeated stems
    assert [r["heatmap"] for r in rows] == [f"heat/{n}" for n in names] + [None, None]
    assert sorted(os.listdir("heat")) == sorted(names)  # no temporary files left behind
    for name, (_, h, w) in zip(names, sizes):
        with Image.open(tmp_path / "heat" / name) as picture:
            assert picture.format == "PNG" and picture.size == (w, h)


def test_error_rows_killed_worker_and_parquet(cluster, tiny_dirs, tmp_path):
    """One job for the failures: unreadable inputs become rows, and a worker process that dies mid-job
    (reading good3.png the first time) is restarted and its batch retried, each input once."""
    pq = pytest.importorskip("pyarrow.parquet")
    good = scenes(tmp_path, [("good.png", 64, 96), ("good3.png", 72, 72), ("good2.png", 80, 64)])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a directory where a file is expected
    scenes(tmp_path, [("forbidden.png", 64, 64)])  # Storage refuses it, whoever runs the test
    locked = scenes(tmp_path, [("locked.png", 64, 64)])[0]
    locked.chmod(0)  # root reads it anyway, so the expected row depends on who runs the test
    as_root = os.geteuid() == 0
    names = ["good.png", "corrupt.jpg", "empty.png", "good3.png", "missing.png", "folder.png", "forbidden.png",
             "locked.png", "good2.png"]
    ds = ray.data.from_items([{"path": str(tmp_path / n), "other": k} for k, n in enumerate(names)])
    flag = tmp_path / "died"
    storage = pafs.PyFileSystem(Storage(die_on="good3.png", flag=str(flag)))
    rows = []
    try:
        failed = cray.run(ds, None, tiny_dirs["rn50"], on_row=rows.append, batch_size=2, resize="native",
                          filesystem=storage, parquet=tmp_path / "out")
    finally:
        locked.chmod(0o644)

    assert flag.exists()  # the worker did die
    assert [Path(r["path"]).name for r in rows] == names  # each input once, in order
    errors = {Path(r["path"]).name: r["error"] for r in rows}
    p = str(tmp_path)
    assert errors["corrupt.jpg"].startswith(f"{p}/corrupt.jpg ")
    assert errors["empty.png"] == f"{p}/empty.png is empty (0 bytes)."
    assert errors["missing.png"] == f"{p}/missing.png: no such file."
    assert errors["folder.png"] == f"{p}/folder.png is a directory, not an image."
    assert errors["forbidden.png"].startswith(f"{p}/forbidden.png: cannot read it (permission denied")
    if as_root:
        assert errors["locked.png"] is None
    else:
        assert errors["locked.png"].startswith(f"{p}/locked.png: cannot read it (permission denied")
    assert failed == (5 if as_root else 6) == sum(e is not None for e in errors.values())
    assert all(r["count"] is None and r["width"] is None for r in rows if r["error"] is not None)
    expected = dict(zip(["good.png", "good3.png", "good2.png"], local_counts(tiny_dirs["rn50"], good, resize="native")))
    for row in rows:
        name = Path(row["path"]).name
        assert name not in expected or close(row["count"], expected[name]), row

    table = pq.read_table(tmp_path / "out")
    assert table.column_names == list(cray.COLUMNS)
    assert sorted(table.to_pylist(), key=lambda r: r["path"]) == sorted(rows, key=lambda r: r["path"])


def test_dataset_of_bytes_with_vit_and_heatmaps(cluster, tiny_dirs, tmp_path):
    sizes = [("x.png", 64, 96), ("y.png", 96, 80), ("z.png", 70, 70)]
    images = scenes(tmp_path / "in" / "one", sizes) + scenes(tmp_path / "in" / "two", sizes[:1])
    ds = ray.data.read_binary_files(str(tmp_path / "in"), include_paths=True)

    rows = sorted(cray.count_dataset(ds, tiny_dirs["vit"], heatmaps=tmp_path / "heat", batch_size=4).take_all(),
                  key=lambda r: r["path"])

    assert [r["path"] for r in rows] == [str(p) for p in images]
    expected = local_counts(tiny_dirs["vit"], images, batch_size=4)
    assert all(r["error"] is None and close(r["count"], c) for r, c in zip(rows, expected)), rows
    # names come from the sorted paths: one/x.png before two/x.png
    assert [Path(r["heatmap"]).name for r in rows] == ["x_heatmap.png", "y_heatmap.png", "z_heatmap.png",
                                                        "x_heatmap_2.png"]
    assert all(Path(r["heatmap"]).is_file() for r in rows)


def test_plan_globs_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scenes(tmp_path / "d", [("a.png", 8, 8), ("b.JPG", 8, 8), ("e.PNG", 8, 8), ("s/c.png", 8, 8), (".hidden.png", 8, 8)])
    entries, filesystems = cray._plan(["d/*.png", "d/**/*.png", "file://" + str(tmp_path / "d" / "s"), "d/s/c.png"],
                                      None, True)
    # globs match within a segment (``**`` across them), skip hidden names, are case-sensitive; a file
    # reached again (by another glob, a file:// folder or its own path) stays where it first appeared
    assert [e.path for e in entries] == ["d/a.png", "d/s/c.png"]
    assert len(filesystems) == 1 and all(e.problem is None for e in entries)
    entries, _ = cray._plan(["d"], None, False)  # a folder: image suffixes in any case, hidden files too
    assert [e.path for e in entries] == ["d/.hidden.png", "d/a.png", "d/b.JPG", "d/e.PNG"]
    with pytest.raises(cray.ConfigError, match="not stand in"):
        cray._plan(["s3://*/x.jpg"], None, True)


def test_heatmap_names_never_overwrite_an_input():
    paths = [("/d/a.png", True), ("/e/a.jpg", True), ("/d/gone.png", False), ("/d/a_heatmap.png", True)]
    inputs = {p for p, _ in paths}
    assert cray._heatmap_names(paths, inputs, "/d") == ["a_heatmap_2.png", "a_heatmap_3.png", None,
                                                        "a_heatmap_heatmap.png"]


def test_worker_errors_are_raised_as_themselves():
    # Ray reports a worker's exception as its traceback's text (checked by hand against Ray 2.60)
    report = RuntimeError("ray::MapWorker(MapBatches(_Worker)).submit() ...\n  File \"clip_ebc/loading.py\", line 9\n"
                          "clip_ebc.errors.ModelNotFoundError: /x: no such checkpoint folder.")
    error = cray._worker_error(report)
    assert type(error).__name__ == "ModelNotFoundError" and str(error) == "/x: no such checkpoint folder."
    assert cray._worker_error(RuntimeError("something else")) is None


def test_arguments_are_checked_before_anything_runs(tiny_dirs):
    model = CrowdCounter(tiny_dirs["rn50"], device="cpu").model
    with pytest.raises(cray.ConfigError, match="name, folder or hf-hub id"):
        cray.count_dataset(["x.png"], model)
    with pytest.raises(cray.ConfigError, match="num_workers"):
        cray.count_dataset(["x.png"], tiny_dirs["rn50"], num_workers=0)
    with pytest.raises(cray.ConfigError, match="names a file"):
        cray.count_dataset(["x.png"], tiny_dirs["rn50"], heatmaps="out/x_heatmap.png")
    with pytest.raises(cray.ConfigError, match="no inputs"):
        cray.count_dataset([], tiny_dirs["rn50"])


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingExtraError) as info:
        cray.count_dataset("photos/")
    message = str(info.value)
    assert "\n" not in message and 'pip install "clip-ebc[ray]"' in message


def test_command_line_on_ray_with_zones(cluster, tiny_dirs, tmp_path):
    """crowdcount --ray gives the rows, zone counts and exit code of the same command run locally."""
    import csv
    import json

    from click.testing import CliRunner

    from clip_ebc.cli import main

    scenes(tmp_path / "photos", [("p0.png", 64, 96), ("p1.png", 96, 64), ("p2.png", 80, 80)])
    (tmp_path / "photos" / "bad.png").write_text("not an image")
    zones = tmp_path / "zones.json"
    zones.write_text(json.dumps({"normalized": True, "zones": [
        {"name": "top", "points": [[0, 0], [1, 0], [1, 0.5], [0, 0.5]], "area_m2": 4.0},
        {"name": "bottom", "points": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]}))
    common = [str(tmp_path / "photos"), "--zones", str(zones), "--json", "--native-size", "-m", str(tiny_dirs["rn50"])]

    local = CliRunner().invoke(main, common)
    remote = CliRunner().invoke(main, [*common, "--ray", "local", "--csv", str(tmp_path / "rows.csv")])

    assert local.exit_code == remote.exit_code == 1  # bad.png fails in both
    mine = [json.loads(line) for line in local.stdout.splitlines()]
    theirs = [json.loads(line) for line in remote.stdout.splitlines()]
    assert [r["path"] for r in theirs] == [r["path"] for r in mine]
    for a, b in zip(mine, theirs):
        if a["count"] is None:
            assert b["count"] is None and "is not an image file" in b["error"]
            continue
        assert close(b["count"], a["count"]) and (b["width"], b["height"]) == (a["width"], a["height"])
        assert set(b["zones"]) == {"top", "bottom"} and all(close(b["zones"][k], a["zones"][k]) for k in a["zones"])
        assert close(b["per_m2"]["top"], a["per_m2"]["top"]) and "bottom" not in b["per_m2"]
        assert sum(b["zones"].values()) == pytest.approx(b["count"], rel=1e-4)
    with (tmp_path / "rows.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["path"] for r in table] == [r["path"] for r in theirs] and "zone:top" in table[0]
    assert "3 of 4 inputs counted" not in remote.stderr  # JSON mode prints no summary
