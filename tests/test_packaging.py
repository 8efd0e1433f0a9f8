"""The project's promises about itself: README commands, CI script, version, typing marker."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import clip_ebc

ROOT = Path(__file__).resolve().parents[1]


def readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_exactly_two_setup_commands():
    install, test = readme_setup_commands()
    assert install.startswith("pip install ") and install.endswith("crowdcount image.jpg --heatmap out.png")
    assert test.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    _, test = readme_setup_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_version_matches_the_installed_metadata():
    assert clip_ebc.__version__ == importlib.metadata.version("clip-ebc")


def test_typing_marker_and_changelog():
    assert (Path(clip_ebc.__file__).parent / "py.typed").is_file()
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def test_import_is_light():
    code = "import sys, clip_ebc; print(sorted(m for m in ('torch', 'open_clip', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_model_table_matches_the_manifest():
    from clip_ebc.registry import load_manifest

    readme = (ROOT / "README.md").read_text()
    manifest = load_manifest(ROOT / "weights_manifest.json")
    table = readme[readme.index("## Models"):readme.index("### How weights are fetched")]
    rows = {line.split("|")[1].strip().split()[0].strip("`"): line for line in table.splitlines()
            if line.startswith("| `")}
    assert list(rows) == list(manifest.models)
    for name, info in manifest.models.items():
        row = rows[name]
        assert ("(default)" in row) == (name == manifest.default)
        assert ("manual" in row) != info.downloadable
        if info.metrics:
            m = info.metrics[0]
            assert f"{m['mae']:.1f} / " in row and (m["rmse"] is None or f"/ {m['rmse']:.1f}" in row)
        else:
            assert "| - |" in row
