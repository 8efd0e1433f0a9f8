"""The crowdcount command: end to end, the bad-input matrix, exit codes, and its speed promises."""

import csv
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clip_ebc import CrowdCounter, __version__
from clip_ebc.cli import main
from conftest import make_scene


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with good images (two formats, a sub-folder) and bad files of every kind."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for name, (h, w) in {"a.jpg": (240, 320), "b.png": (300, 200), "sub/c.jpg": (256, 256)}.items():
        Image.fromarray(make_scene(h, w, 15, seed=len(name))[0]).save(root / name)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    full = (root / "a.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_end_to_end_json_and_heatmap(tiny_dirs, photos, tmp_path):
    image = photos / "a.jpg"
    out = tmp_path / "out.png"
    code, stdout, stderr = invoke(image, "--heatmap", out, "--json", "--model", tiny_dirs["rn50"], "--device", "cpu")
    assert code == 0, stderr
    row = json.loads(stdout)
    result = CrowdCounter(tiny_dirs["rn50"], device="cpu").count(image)
    assert row["count"] == result.count
    assert row["count"] == pytest.approx(float(result.density.sum(dtype=np.float64)), rel=1e-9)
    assert (row["path"], row["model"], row["width"], row["height"]) == (str(image), str(tiny_dirs["rn50"]), 320, 240)
    assert row["seconds"] > 0
    heat = Image.open(out)
    assert heat.size == (320, 240) and heat.format == "PNG"
    # the overlay really changes the picture
    assert np.abs(np.asarray(heat.convert("RGB"), dtype=int) - np.asarray(Image.open(image), dtype=int)).mean() > 5


def test_console_scripts_and_module_entry_points():
    """The installed commands and ``python -m clip_ebc.cli`` start (counting through a real process is
    exercised by the interrupted-stream and download tests)."""
    import sysconfig
    from pathlib import Path

    scripts = Path(sysconfig.get_path("scripts"))
    for command in ([str(scripts / "crowdcount"), "--version"], [str(scripts / "clip-ebc"), "--version"],
                    [sys.executable, "-m", "clip_ebc.cli", "--version"]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == f"crowdcount (clip-ebc) {__version__}", proc.stderr


def test_folder_with_good_and_bad_files(tiny_dirs, photos, tmp_path):
    heatmaps = tmp_path / "heatmaps"
    table = tmp_path / "counts.csv"
    code, stdout, stderr = invoke(photos, "-r", "--json", "-m", tiny_dirs["rn50"], "--heatmap", heatmaps,
                                  "--csv", table, "--batch-size", "2")
    assert code == 1  # some inputs failed
    rows = {json.loads(line)["path"]: json.loads(line) for line in stdout.splitlines()}
    good = {str(photos / n) for n in ("a.jpg", "b.png", "sub/c.jpg")}
    bad = {str(photos / n) for n in ("empty.jpg", "text.png", "truncated.jpg")}
    assert set(rows) == good | bad  # notes.txt is not an image suffix, so it is not picked up
    for path in good:
        assert rows[path]["count"] > 0 and "error" not in rows[path]
    assert "is empty (0 bytes)" in rows[str(photos / "empty.jpg")]["error"]
    assert "is not an image file" in rows[str(photos / "text.png")]["error"]
    assert "is truncated or corrupt" in rows[str(photos / "truncated.jpg")]["error"]
    for path in bad:
        assert rows[path]["count"] is None
        assert sum(line.startswith(f"error: {path}") for line in stderr.splitlines()) == 1
    assert sorted(p.name for p in heatmaps.iterdir()) == ["a_heatmap.png", "b_heatmap.png", "c_heatmap.png"]
    assert Image.open(heatmaps / "b_heatmap.png").size == (200, 300)
    assert rows[str(photos / "sub/c.jpg")]["heatmap"] == str(heatmaps / "c_heatmap.png")
    with table.open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 6 and {r["path"] for r in csv_rows if not r["error"]} == good
    assert {r["heatmap"] for r in csv_rows if r["path"] in good} == {str(heatmaps / f"{n}_heatmap.png") for n in "abc"}
    assert "Traceback" not in stderr


def test_heatmaps_written_into_the_input_folder(tiny_dirs, tmp_path):
    """A photo that happens to be named like a heatmap is never overwritten."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("foo.jpg", "foo_heatmap.png"):
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(folder / name)
    original = (folder / "foo_heatmap.png").read_bytes()
    code, stdout, _ = invoke(folder, "--json", "-m", tiny_dirs["rn50"], "--heatmap", folder)
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert code == 0 and len(rows) == 2 and (folder / "foo_heatmap.png").read_bytes() == original
    assert rows[0]["heatmap"] == str(folder / "foo_heatmap_2.png")  # foo_heatmap.png is an input: not overwritten
    assert rows[1]["heatmap"] == str(folder / "foo_heatmap_heatmap.png")


def test_without_recursion_subfolders_are_not_searched(tiny_dirs, photos):
    code, stdout, _ = invoke(photos / "sub", photos / "a.jpg", "-m", tiny_dirs["rn50"])
    assert code == 0 and len(stdout.splitlines()) == 2
    code, _, stderr = invoke(photos / "sub" / "..", "-m", tiny_dirs["rn50"], "--json")
    assert code == 1


def test_globs(tiny_dirs, photos):
    code, stdout, _ = invoke(str(photos / "*.jpg"), "-m", tiny_dirs["rn50"], "--json")
    paths = [json.loads(line)["path"] for line in stdout.splitlines()]
    assert paths == [str(photos / "a.jpg"), str(photos / "empty.jpg"), str(photos / "truncated.jpg")]
    assert code == 1
    code, stdout, stderr = invoke(str(photos / "*.webp"), "-m", tiny_dirs["rn50"])
    assert code == 1 and "no files match this pattern" in stderr
    # rows come in the order of the arguments, an unmatched pattern included
    code, stdout, _ = invoke(photos / "a.jpg", str(photos / "*.webp"), photos / "b.png", "-m", tiny_dirs["rn50"], "--json")
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(photos / "a.jpg"), str(photos / "*.webp"), str(photos / "b.png")]
    assert rows[0]["count"] > 0 and "no files match" in rows[1]["error"] and rows[2]["count"] > 0 and code == 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.jpg", None, "missing.jpg: no such file."),
        ("empty.jpg", b"", "empty.jpg is empty (0 bytes)."),
        ("text.jpg", b"hello", "text.jpg is not an image file that can be read"),
    ],
)
def test_single_bad_input(tiny_dirs, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, stdout, stderr = invoke(path, "-m", tiny_dirs["rn50"])
    assert code == 1 and stdout == ""
    (line,) = stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"error: {tmp_path / message}")


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no INPUTS given"),
        (["a.jpg", "b.jpg", "--heatmap", "x.png"], "is a file name, but 2 images were given; pass a directory"),
        (["a.jpg", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["a.jpg", "--opacity", "2"], "Invalid value for '--opacity'"),
        (["a.jpg", "--frobnicate"], "No such option '--frobnicate'"),
    ],
)
def test_usage_errors_exit_2(args, message):
    code, _, stderr = invoke(*args)
    assert code == 2 and message in stderr


def test_model_problems_are_one_line(tmp_path, photos):
    code, _, stderr = invoke(photos / "a.jpg", "-m", tmp_path / "nowhere")
    assert code == 1 and stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such checkpoint folder."
    table = tmp_path / "rows.csv"  # the inputs' own problems are still reported when the model fails
    code, _, stderr = invoke(photos / "a.jpg", str(photos / "*.webp"), "-m", tmp_path / "nowhere", "--csv", table)
    assert code == 1 and stderr.splitlines()[0].endswith("*.webp: no files match this pattern.")
    assert "no such checkpoint folder" in stderr.splitlines()[1] and "no files match" in table.read_text()
    code, _, stderr = invoke(photos / "a.jpg", "-m", "rn5O.sha")
    assert code == 1 and "is not a known model name" in stderr and "Did you mean rn50.sha" in stderr
    code, _, stderr = invoke(photos / "a.jpg", "-m", "rn50.sha")
    assert code == 1 and "has no automatic download source" in stderr
    code, _, stderr = invoke(photos / "a.jpg", "--device", "cuda:7")
    assert code == 1 and stderr.count("\n") == 1 and "Traceback" not in stderr
    for device in ("meta", "gpu", "cuda:x"):  # not a device name at all: a usage error, before any loading
        code, _, stderr = invoke(photos / "a.jpg", "--device", device)
        assert code == 2 and f"'{device}' is not a device; use auto, cpu, cuda, cuda:N or mps." in stderr


def test_debug_shows_the_traceback(tmp_path, photos):
    result = CliRunner().invoke(main, [str(photos / "a.jpg"), "-m", str(tmp_path / "nowhere"), "--debug"])
    assert result.exit_code == 1 and result.exception is not None  # re-raised for the traceback


def test_version_and_list_models():
    code, stdout, _ = invoke("--version")
    assert code == 0 and stdout.strip() == f"crowdcount (clip-ebc) {__version__}"
    code, stdout, _ = invoke("--list-models")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].split() == ["name", "backbone", "dataset", "reported", "MAE", "/", "RMSE", "cached"]
    assert lines[1].startswith("vit_b16.nwpu (default)") and "MAE 61.2 / RMSE 278.3" in lines[1]
    assert any(line.startswith("rn50.sha") and line.rstrip().endswith("manual") for line in lines)


@pytest.mark.parametrize("flag", ["--help", "--version", "--list-models"])
def test_quick_commands_import_nothing_heavy(flag):
    code = (
        "import sys\n"
        "from clip_ebc.cli import main\n"
        f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'matplotlib', 'numpy') if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_more_bad_inputs_through_the_command(tiny_dirs, tmp_path):
    import os

    from test_images import png_with_header

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png_with_header(40_000, 40_000))
    Image.fromarray(make_scene(120, 160, 5)[0]).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(120 * 160).reshape(120, 160) * 3).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray(make_scene(1, 4000, 0)[0]).save(folder / "thin.png")
    odd = folder / os.fsdecode(b"caf\xe9.png")  # a file name that is not valid UTF-8
    Image.fromarray(make_scene(100, 100, 5)[0]).save(odd)
    table = tmp_path / "out.csv"
    code, stdout, stderr = invoke(folder, "-m", tiny_dirs["rn50"], "--csv", table)
    assert code == 1
    assert "bomb.png is too large to decode safely" in stderr and "thin.png: its 4000x1 pixels would be resized" in stderr
    counted = sorted(line.split(":")[0].rsplit("/", 1)[-1] for line in stdout.splitlines())
    assert counted == ["caf\\udce9.png", "cmyk.jpg", "deep.png"]
    assert "caf\\udce9.png" in table.read_text(encoding="utf-8") and "Traceback" not in stderr


def test_empty_folder_does_not_load_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = invoke(tmp_path / "empty", "-m", "no-such-model")
    assert code == 1 and "no images or videos in this folder" in stderr and "no-such-model" not in stderr


def test_unwritable_outputs(tiny_dirs, photos, tmp_path):
    code, _, stderr = invoke(photos / "a.jpg", "--csv", tmp_path / "missing" / "o.csv")
    assert code == 2 and "cannot write the CSV file" in stderr
    code, _, stderr = invoke(photos / "a.jpg", "--heatmap", photos / "a.jpg")
    assert code == 2 and "is the input image itself; choose another file name" in stderr
    code, _, stderr = invoke(photos / "a.jpg", "--heatmap", tmp_path / "h.webp")
    assert code == 2 and "heatmaps are written as .png or .jpg files" in stderr
    code, _, stderr = invoke(photos / "sub", photos / "a.jpg", "--heatmap", tmp_path / "h.png")
    assert code == 2 and "2 images were given" in stderr
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, stdout, stderr = invoke(photos / "a.jpg", photos / "b.png", "-m", tiny_dirs["rn50"], "--heatmap", blocker / "sub")
    assert code == 1 and "heatmap not written" in stderr and len(stdout.splitlines()) == 2  # both still counted


def test_warnings_are_one_line_each(tiny_dirs, tmp_path):
    thin = tmp_path / "thin.png"
    Image.fromarray(np.full((60, 1200, 3), 90, np.uint8)).save(thin)  # 448 x 8960 breaks ShanghaiTech's 4096
    model = tmp_path / "sha_model"
    shutil.copytree(tiny_dirs["rn50"], model)
    config = json.loads((model / "config.json").read_text())
    config["provenance"]["dataset"] = "sha"
    (model / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as in a plain run; this suite turns warnings into errors
        code, stdout, stderr = invoke(thin, "-m", model, "--precision", "FP32")
    assert code == 0 and stdout.startswith(f"{thin}: "), stderr
    warning_lines = [line for line in stderr.splitlines() if "aspect ratio" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("warning: a 1200x60 image cannot keep its aspect")
    assert "UserWarning" not in stderr and "warnings.warn" not in stderr
