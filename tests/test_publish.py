"""The maintainer's publish tool: folder, model card, manifest entry, and the upload calls."""

import hashlib
import json
from types import SimpleNamespace

import torch
from click.testing import CliRunner

from clip_ebc import CLIPEBC
from clip_ebc.publish import _build_cli, build_folder, upload
from servers import ReleaseServer
from test_hub import RELEASE_PATH, entry, make_tgz, release_source, write_manifest


def test_dry_run_writes_the_folder_and_prints_the_entry(env, official_rn50, official_pth, tmp_path):
    archive = make_tgz({"x/best_mae_0.pth": official_pth})
    with ReleaseServer({RELEASE_PATH: archive}) as server:
        write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(server)])})
        out = tmp_path / "pub"
        result = CliRunner().invoke(_build_cli(), ["rn50.tiny", "--repo-id", "clip-ebc/rn50-tiny", "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["type"] == "huggingface" and printed["repo_id"] == "clip-ebc/rn50-tiny" and printed["revision"] is None
    for name in ("config.json", "model.safetensors"):
        assert printed["files"][name] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    card = (out / "README.md").read_text()
    for text in ("license: mit", "## Training data\n\nShanghaiTech Part A", "| none | 1.0 | 2.0 | test |",
                 "## Intended use", "## Out-of-scope use", "hf-hub:clip-ebc/rn50-tiny", "release_sha256", "@article{ma2024clipebc"):
        assert text in card, text
    model = CLIPEBC.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(model(official_rn50.io["input"]).density, official_rn50.io["output"], rtol=0, atol=1e-5)
    assert "not uploaded (--dry-run)" in result.stderr


def test_local_checkpoint_for_models_without_a_download_source(env, official_rn50, official_pth, tmp_path):
    write_manifest(env, {"rn50.manual": entry(official_rn50, [])})
    pth = tmp_path / "best_mae.pth"
    pth.write_bytes(official_pth)
    from clip_ebc.registry import load_manifest

    folder = build_folder(load_manifest().get("rn50.manual"), tmp_path / "out", repo_id="a/b", checkpoint=pth)
    assert json.loads((folder / "config.json").read_text())["provenance"]["model_name"] == "rn50.manual"
    result = CliRunner().invoke(_build_cli(), ["rn50.manual", "--repo-id", "a/b", "--out", str(tmp_path / "o2"), "--dry-run"])
    assert result.exit_code == 1 and "has no release to convert; pass --checkpoint" in result.stderr


def test_upload_creates_the_repo_and_commits_the_folder(tmp_path):
    calls = []

    class RecordingApi:
        def create_repo(self, **kw):
            calls.append(("create_repo", kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return SimpleNamespace(oid="c" * 40)

    (tmp_path / "config.json").write_text("{}")
    assert upload(tmp_path, "org/name", private=True, api=RecordingApi()) == "c" * 40
    assert calls[0] == ("create_repo", {"repo_id": "org/name", "repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(tmp_path) and calls[1][1]["repo_id"] == "org/name"


def test_publish_never_deletes_an_existing_folder(env, official_rn50, tmp_path):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [])})
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = CliRunner().invoke(_build_cli(), ["rn50.tiny", "--repo-id", "a/b", "--out", str(precious), "--dry-run"])
    assert result.exit_code == 1 and "already exists and is not an empty folder" in result.stderr
    assert (precious / "thesis.txt").read_text() == "years of work"
