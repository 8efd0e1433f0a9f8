"""The weights registry: manifest facts, the Hub path and the release-archive path through local
servers, pinned revisions, checksums, corrupted caches, offline use and archive safety."""

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from clip_ebc import CLIPEBC, DownloadError, ModelNotFoundError
from clip_ebc import fetch, loading, registry
from clip_ebc.archive import extract_checkpoint
from clip_ebc.loading import resolve_model
from clip_ebc.registry import load_manifest
from servers import HubServer, ReleaseServer

ROOT = Path(__file__).resolve().parents[1]
COMMIT_OLD = "a" * 40
COMMIT_NEW = "b" * 40
RELEASE_PATH = "/Yiming-M/CLIP-EBC/releases/download/v1.0.0/NWPU_TINY_RN50_Word_mae.tgz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tiny_files(converted_rn50, tmp_path_factory):
    """config.json and model.safetensors of the converted tiny RN50, as bytes."""
    folder = tmp_path_factory.mktemp("tiny_rn50")
    converted_rn50.save_pretrained(folder)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


def make_tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def entry(official_rn50, sources, **kw):
    base = {
        "description": "tiny RN50 for tests", "backbone": "RN50", "dataset": "sha", "block_size": 8, "truncation": 4,
        "granularity": "fine", "prompt_type": "word", "anchor_points": "average", "input_size": 448, "run_name": None,
        "metrics": [{"split": "none", "mae": 1.0, "rmse": 2.0, "source": "test"}], "license": "MIT",
        "provenance": "test fixture", "sources": sources,
        "convert": {"clip_config": official_rn50.meta["clip_config"], "decoder_channels": [128]},
    }
    base.update(kw)
    return base


def write_manifest(path: Path, models: dict, default: str | None = None) -> None:
    path.write_text(json.dumps({"format_version": 1, "default": default or next(iter(models)), "models": models}))
    registry._load_manifest.cache_clear()


def check_parity(config_file, weights_file, official_rn50):
    from clip_ebc.model import load_checkpoint

    model = load_checkpoint(config_file, weights_file)
    with torch.no_grad():
        torch.testing.assert_close(model(official_rn50.io["input"]).density, official_rn50.io["output"], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ the manifest


def test_shipped_manifest_records_only_known_facts():
    registry._load_manifest.cache_clear()
    manifest = load_manifest(ROOT / "weights_manifest.json")
    assert manifest.default == "vit_b16.nwpu"
    nwpu = manifest.get("vit_b16.nwpu")
    assert (nwpu.backbone, nwpu.dataset, nwpu.block_size, nwpu.truncation, nwpu.prompt_type) == ("ViT-B-16", "nwpu", 8, 4, "word")
    assert nwpu.metrics[0]["mae"] == 61.2 and nwpu.metrics[0]["rmse"] == 278.3 and "test" in nwpu.metrics[0]["split"]
    (release,) = nwpu.sources
    assert release.url == "https://github.com/Yiming-M/CLIP-EBC/releases/download/v1.0.0/NWPU_CLIP_ViT_B_16_Word_mae.tgz"
    assert release.member == "best_mae_0.pth" and release.verified is False and release.sha256 is None
    rn50 = manifest.get("rn50.nwpu")
    assert rn50.metrics[0]["mae"] == 75.8 and rn50.metrics[0]["rmse"] == 367.3 and not rn50.downloadable
    for info in manifest.models.values():
        assert info.license.startswith("MIT") and info.provenance
        for source in info.sources:
            assert source.sha256 is None and not source.verified  # nothing here was downloaded and checked
            if source.type == "huggingface":
                assert not source.files  # no converted copy published yet


def test_packaged_manifest_is_the_top_level_one():
    assert registry.manifest_path().read_text() == (ROOT / "weights_manifest.json").read_text()


def test_wheel_contains_the_manifest(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("clip_ebc-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "clip_ebc/weights_manifest.json" in names and "clip_ebc/py.typed" in names
        assert zf.read("clip_ebc/weights_manifest.json") == (ROOT / "weights_manifest.json").read_bytes()
        metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
        scripts = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "Provides-Extra: train" in metadata and "Provides-Extra: test" in metadata
    assert "crowdcount = clip_ebc.cli:main" in scripts and "clip-ebc = clip_ebc.cli:main" in scripts


def test_unknown_name_suggests_close_ones(env, official_rn50):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [])})
    with pytest.raises(ModelNotFoundError, match="'rn50.tinny' is not a known model.*Did you mean rn50.tiny"):
        resolve_model("rn50.tinny")


def test_model_without_source_explains_the_manual_route(env, official_rn50):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [], manual_download="https://example.org/folder")})
    with pytest.raises(DownloadError, match="no automatic download source.*https://example.org/folder.*python -m clip_ebc.convert"):
        resolve_model("rn50.tiny")


# ----------------------------------------------------------------------------------- the Hub path


@pytest.fixture
def hub_server(tiny_files, monkeypatch):
    stale = {name: b"stale " + data for name, data in tiny_files.items()}
    server = HubServer({"clip-ebc/tiny-rn50": {COMMIT_OLD: stale, COMMIT_NEW: dict(tiny_files)}},
                       {"clip-ebc/tiny-rn50": {"main": COMMIT_NEW}})
    with server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def hf_source(tiny_files, revision=COMMIT_NEW, checksums=None):
    return {"type": "huggingface", "repo_id": "clip-ebc/tiny-rn50", "revision": revision,
            "files": checksums if checksums is not None else {k: sha(v) for k, v in tiny_files.items()}}


def test_hub_download_pinned_verified_and_cached(env, hub_server, tiny_files, official_rn50):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [hf_source(tiny_files)])})
    resolved = resolve_model("rn50.tiny")
    assert resolved.weights_file.read_bytes() == tiny_files["model.safetensors"]
    assert COMMIT_NEW in str(resolved.weights_file)  # the snapshot of the pinned commit
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
    assert registry.is_cached(registry.load_manifest().get("rn50.tiny"))
    before = len(hub_server.requests)
    again = resolve_model("rn50.tiny", offline=True)  # warm cache: no network at all
    assert again.weights_file == resolved.weights_file and len(hub_server.requests) == before


def test_hub_revision_is_pinned(env, hub_server, tiny_files, official_rn50):
    stale = {k: sha(b"stale " + v) for k, v in tiny_files.items()}
    write_manifest(env, {"rn50.old": entry(official_rn50, [hf_source(tiny_files, COMMIT_OLD, stale)])})
    resolved = resolve_model("rn50.old")
    assert resolved.weights_file.read_bytes().startswith(b"stale ")
    assert all(f"/resolve/{COMMIT_OLD}/" in path for _, path in hub_server.requests)


def test_corrupted_hub_cache_is_refused_and_fetched_again(env, hub_server, tiny_files, official_rn50, caplog):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [hf_source(tiny_files)])})
    weights = resolve_model("rn50.tiny").weights_file
    blob = weights.resolve()
    blob.write_bytes(b"bit rot" + blob.read_bytes()[7:])
    gets = hub_server.count("GET")
    with pytest.raises(DownloadError, match="cached model.safetensors of rn50.tiny is corrupted.*crowdcount --download rn50.tiny"):
        resolve_model("rn50.tiny", offline=True)
    resolved = resolve_model("rn50.tiny")
    assert "does not match the registry's SHA-256; downloading it again" in caplog.text
    assert hub_server.count("GET") == gets + 1
    assert resolved.weights_file.read_bytes() == tiny_files["model.safetensors"]
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)


def test_hub_checksum_mismatch_is_never_used(env, hub_server, tiny_files, official_rn50):
    wrong = {"config.json": sha(tiny_files["config.json"]), "model.safetensors": "0" * 64}
    write_manifest(env, {"rn50.bad": entry(official_rn50, [hf_source(tiny_files, checksums=wrong)])})
    with pytest.raises(DownloadError, match="does not match the registry's SHA-256 even after a fresh download; refusing to use it.*please report it\\.$"):
        resolve_model("rn50.bad")


def test_hf_hub_spec_with_revision(env, hub_server, tiny_files, official_rn50):
    resolved = resolve_model(f"hf-hub:clip-ebc/tiny-rn50@{COMMIT_NEW}")
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
    model = CLIPEBC.from_pretrained("clip-ebc/tiny-rn50", revision=COMMIT_NEW, cache_dir=str(Path(env).parent / "hf2"))
    assert model.config.backbone == "RN50"
    with pytest.raises(DownloadError, match="has no revision 'nope'"):
        resolve_model("hf-hub:clip-ebc/tiny-rn50@nope")
    with pytest.raises(DownloadError, match="does not exist or is private"):
        resolve_model("hf-hub:clip-ebc/missing")
    with pytest.raises(ModelNotFoundError, match="not a valid Hub id"):
        resolve_model("hf-hub:no-slash")


def test_offline_cold_cache_names_the_missing_files_and_the_fix(env, hub_server, tiny_files, official_rn50, monkeypatch):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [hf_source(tiny_files)])})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        resolve_model("rn50.tiny")
    message = str(info.value)
    assert "config.json and model.safetensors of clip-ebc/tiny-rn50@" + COMMIT_NEW + " are not in the Hugging Face cache" in message
    assert "crowdcount --download rn50.tiny" in message
    spec = f"hf-hub:clip-ebc/tiny-rn50@{COMMIT_NEW}"
    with pytest.raises(DownloadError, match=f"On a machine with internet access run `crowdcount --download {spec}`"):
        resolve_model(spec)
    with pytest.raises(DownloadError, match=f"run `crowdcount --download {spec}`, then copy the Hugging Face cache"):
        CLIPEBC.from_pretrained("clip-ebc/tiny-rn50", revision=COMMIT_NEW)
    assert hub_server.requests == []


# ------------------------------------------------------------------------------- the release path


@pytest.fixture
def release_server(official_pth):
    archive = make_tgz({"NWPU_TINY_RN50_Word_mae/best_mae_0.pth": official_pth,
                        "NWPU_TINY_RN50_Word_mae/train.log": b"epoch 1 ..."})
    with ReleaseServer({RELEASE_PATH: archive}) as server:
        server.archive = archive
        yield server


def release_source(server, **kw):
    return {"type": "release", "url": server.url + RELEASE_PATH, "member": "best_mae_0.pth", **kw}


def test_release_archive_is_converted_once_and_cached(env, release_server, official_rn50):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)])})
    resolved = resolve_model("rn50.tiny", progress=False)
    folder = resolved.weights_file.parent
    assert folder == fetch.converted_dir("rn50.tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "checksums.json", "config.json", "model.safetensors"]
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
    config = json.loads(resolved.config_file.read_text())
    assert config["provenance"]["release_sha256"] == sha(release_server.archive)
    assert config["provenance"]["model_name"] == "rn50.tiny" and config["provenance"]["dataset"] == "sha"
    assert release_server.count("GET") == 2  # the redirect and the storage URL
    resolve_model("rn50.tiny", offline=True)  # the next start needs no network
    assert release_server.count("GET") == 2


def test_corrupted_converted_copy_is_refused_and_rebuilt(env, release_server, official_rn50, caplog):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)])})
    weights = resolve_model("rn50.tiny", progress=False).weights_file
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DownloadError) as info:
        resolve_model("rn50.tiny", offline=True)
    # it says what happened to the file and how to get it back, not that the model "is not in" the cache
    message = str(info.value)
    assert "was corrupted (model.safetensors did not match its checksum) and has been removed" in message
    assert "Run `crowdcount --download rn50.tiny` with network access" in message and "are not in" not in message
    resolved = resolve_model("rn50.tiny", progress=False)
    assert release_server.count("GET") == 4
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)


def test_release_checksum_is_checked_when_known(env, release_server, official_rn50):
    good = release_source(release_server, sha256=sha(release_server.archive))
    bad = release_source(release_server, sha256="f" * 64)
    write_manifest(env, {"rn50.good": entry(official_rn50, [good]), "rn50.bad": entry(official_rn50, [bad])})
    resolve_model("rn50.good", progress=False)
    with pytest.raises(DownloadError, match="not the manifest's f{64}; refusing"):
        resolve_model("rn50.bad", progress=False)
    assert not fetch.converted_dir("rn50.bad").exists()


def test_sources_are_tried_in_order(env, hub_server, release_server, official_rn50, caplog):
    # an unpublished Hub slot is skipped, a Hub copy that is gone fails, then the release archive is used
    broken_hub = {"type": "huggingface", "repo_id": "clip-ebc/x", "revision": COMMIT_NEW, "files": {}}
    unpublished = {"type": "huggingface", "repo_id": None, "revision": None, "files": {}}
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [unpublished, broken_hub, release_source(release_server)])})
    resolved = resolve_model("rn50.tiny", progress=False)
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
    assert "the Hub repository clip-ebc/x does not exist or is private" in caplog.text


def test_damaged_release_falls_through_to_the_next_source(env, official_pth, official_rn50, caplog):
    good = make_tgz({"NWPU_TINY_RN50_Word_mae/best_mae_0.pth": official_pth})
    assets = {"/a/r/releases/download/v1/cut.tgz": good[: len(good) * 6 // 10], "/a/r/releases/download/v1/ok.tgz": good}
    with ReleaseServer(assets) as server:
        cut = {"type": "release", "url": server.url + "/a/r/releases/download/v1/cut.tgz", "member": "best_mae_0.pth"}
        ok = {**cut, "url": server.url + "/a/r/releases/download/v1/ok.tgz"}
        write_manifest(env, {"rn50.cut": entry(official_rn50, [cut]), "rn50.two": entry(official_rn50, [cut, ok])})
        with pytest.raises(DownloadError, match="could not fetch rn50.cut: cut.tgz cannot be unpacked: it is damaged, incomplete"):
            resolve_model("rn50.cut", progress=False)
        resolved = resolve_model("rn50.two", progress=False)
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
    assert "cut.tgz cannot be unpacked" in caplog.text


def test_download_without_content_length_shows_progress(env, official_pth, official_rn50, capsys):
    path = "/a/r/releases/download/v1/w.tgz"
    with ReleaseServer({path: make_tgz({"w/best_mae_0.pth": official_pth})}, unsized=frozenset({path})) as server:
        source = {"type": "release", "url": server.url + path, "member": "best_mae_0.pth"}
        write_manifest(env, {"rn50.tiny": entry(official_rn50, [source])})
        resolved = resolve_model("rn50.tiny", progress=True)
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
    assert "Downloading w.tgz" in capsys.readouterr().err


def test_manifest_checks_revisions_and_checksums(env, tiny_files, official_rn50):
    upper = hf_source(tiny_files, checksums={f: sha(b).upper() for f, b in tiny_files.items()})
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [upper])})
    files = load_manifest().get("rn50.tiny").sources[0].files
    assert files == {f: sha(b) for f, b in tiny_files.items()}  # compared in lower case
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [hf_source(tiny_files, revision="main")])})
    with pytest.raises(ModelNotFoundError, match="revision 'main' of clip-ebc/tiny-rn50 is not a 40-digit commit hash"):
        load_manifest()
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [hf_source(tiny_files, checksums={"config.json": "abc"})])})
    with pytest.raises(ModelNotFoundError, match="checksum of config.json 'abc' is not a SHA-256 hex digest"):
        load_manifest()


def test_unreachable_release_fails_clearly(env, official_rn50):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [{"type": "release", "url": "http://127.0.0.1:9/a.tgz"}])})
    with pytest.raises(DownloadError, match="could not fetch rn50.tiny: cannot reach http://127.0.0.1:9/a.tgz"):
        resolve_model("rn50.tiny", progress=False)


# ------------------------------------------------------------------------------- archive safety


def test_extraction_never_writes_archive_paths(tmp_path, official_pth):
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        for name, data in {"../../escaped.txt": b"x", "/abs/best_mae_0.pth": official_pth}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.pth")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.tgz"
    archive.write_bytes(evil.getvalue())
    out = extract_checkpoint(archive, "best_mae_0.pth", work / "out.pth")
    assert out.read_bytes() == official_pth
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.tgz", "out.pth", "work"]


def test_extraction_limits_and_member_choice(tmp_path, official_pth):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(make_tgz({"x/best_mae_0.pth": official_pth, "x/best_rmse_0.pth": official_pth}))
    with pytest.raises(DownloadError, match="over the 1,000-byte limit"):
        extract_checkpoint(archive, "best_mae_0.pth", tmp_path / "o.pth", max_bytes=1000)
    with pytest.raises(DownloadError, match="does not hold exactly one checkpoint; its checkpoint files are: x/best_mae_0.pth, x/best_rmse_0.pth"):
        extract_checkpoint(archive, None, tmp_path / "o.pth")
    with pytest.raises(DownloadError, match="does not hold ckpt.pth"):
        extract_checkpoint(archive, "ckpt.pth", tmp_path / "o.pth")
    zipped = tmp_path / "a.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("weights/best_mae_0.pth", official_pth)
    assert extract_checkpoint(zipped, None, tmp_path / "z.pth").read_bytes() == official_pth
    from safetensors.torch import save as save_safetensors

    weights = save_safetensors({"w": torch.zeros(2)})
    packed = tmp_path / "s.tgz"
    packed.write_bytes(make_tgz({"run/README.md": b"x", "run/best_mae_0.safetensors": weights}))
    out = extract_checkpoint(packed, None, tmp_path / "s" / "checkpoint.pth")
    assert out == tmp_path / "s" / "checkpoint.safetensors" and out.read_bytes() == weights
    encrypted = tmp_path / "locked.zip"  # a zip member Python cannot read: also a DownloadError
    with zipfile.ZipFile(encrypted, "w") as zf:
        zf.writestr("best_mae_0.pth", official_pth)
    data = bytearray(encrypted.read_bytes())
    data[6] |= 1  # the "encrypted" flag bit, in the local header (first) and the central directory (last)
    data[data.rfind(b"PK\x01\x02") + 8] |= 1
    encrypted.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="locked.zip cannot be unpacked: .*RuntimeError"):
        extract_checkpoint(encrypted, None, tmp_path / "l.pth")
    bare = tmp_path / "best.pth"
    bare.write_bytes(official_pth)
    assert extract_checkpoint(bare, "best_mae_0.pth", tmp_path / "unused.pth") == bare
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    with pytest.raises(DownloadError, match="neither a tar/zip archive nor a checkpoint"):
        extract_checkpoint(junk, None, tmp_path / "j.pth")


# --------------------------------------------------------------------------- the command line


def test_cli_download_then_offline_count(env, release_server, official_rn50, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from PIL import Image

    from clip_ebc.cli import main

    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)])})
    image = tmp_path / "crowd.png"
    Image.fromarray((torch.rand(200, 300, 3) * 255).byte().numpy()).save(image)
    result = CliRunner().invoke(main, ["--download", "rn50.tiny"])
    assert result.exit_code == 0, result.stderr
    assert str(fetch.converted_dir("rn50.tiny")) in result.stdout
    listing = CliRunner().invoke(main, ["--list-models"]).stdout
    assert "rn50.tiny (default)" in listing and listing.splitlines()[1].rstrip().endswith("yes")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(main, [str(image), "--json"])
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["model"] == "rn50.tiny" and row["width"] == 300 and row["height"] == 200
    assert release_server.count("GET") == 2


def test_converted_copy_goes_stale_when_the_manifest_changes(env, release_server, official_rn50, caplog):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)])})
    resolve_model("rn50.tiny", progress=False)
    # the maintainers pin the archive's checksum later: the cached copy's recorded archive matches, so it stays
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server, sha256=sha(release_server.archive))])})
    resolve_model("rn50.tiny", progress=False, offline=True)
    # a different pinned checksum, or different settings, make the copy stale
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server, sha256="e" * 64)])})
    with pytest.raises(DownloadError):
        resolve_model("rn50.tiny", offline=True)
    assert "made from a different release or settings" in caplog.text
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)], dataset="shb")})
    resolved = resolve_model("rn50.tiny", progress=False)
    assert json.loads(resolved.config_file.read_text())["anchor_points"][-1] == 4.41009  # shb's anchors


def test_storing_keeps_a_good_copy_and_replaces_leftovers(env, release_server, official_rn50, converted_rn50):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)])})
    folder = resolve_model("rn50.tiny", progress=False).weights_file.parent
    info, source = load_manifest().get("rn50.tiny"), load_manifest().get("rn50.tiny").sources[0]
    record = json.loads((folder / "checksums.json").read_text())
    record = {"made_from": record["made_from"], "archive_sha256": record["archive_sha256"]}
    inode = (folder / "model.safetensors").stat().st_ino
    assert loading._store_converted(info, source, converted_rn50, record) == folder
    assert (folder / "model.safetensors").stat().st_ino == inode  # a reader of the good copy keeps its files
    (folder / "checksums.json").unlink()  # leftovers without a record are replaced
    assert loading._store_converted(info, source, converted_rn50, record) == folder
    assert (folder / "checksums.json").is_file() and (folder / "model.safetensors").stat().st_ino != inode
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # nothing left aside


def test_a_copy_stored_by_another_process_meanwhile_is_used(env, release_server, official_rn50, monkeypatch):
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(release_server)])})
    first = resolve_model("rn50.tiny", progress=False).weights_file.parent
    import shutil

    keep = first.parent / "other-process"
    shutil.copytree(first, keep)
    real_replace = loading.os.replace

    def racing_replace(src, dst):  # another process renames its finished copy into place first
        real_replace(keep, dst)
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(loading.os, "replace", racing_replace)
    shutil.rmtree(first)
    resolved = resolve_model("rn50.tiny", progress=False)
    check_parity(resolved.config_file, resolved.weights_file, official_rn50)
