"""Hostile and broken inputs that used to escape as wrong numbers or "unexpected" errors (issue 10's
numbered list; 4, 6 and 10 live beside their subjects in test_config, test_hub and test_train_fit).
Each goes through the public interface: the commands, CrowdCounter, CLIPEBC.from_pretrained."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from clip_ebc import CLIPEBC, CheckpointError, CrowdCounter, DownloadError, NumericalError
from clip_ebc.archive import extract_checkpoint
from clip_ebc.cli import main
from conftest import make_scene, python_with_sigint
from servers import HubServer
from streams import StreamServer
from test_hub import COMMIT_NEW, RELEASE_PATH, entry, make_tgz, release_source, sha, write_manifest


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(make_scene(64, 96, 8)[0]).save(path)
    return path


# 1. a malicious pickle: refused, the refused global named, torch's advice to trust the file never passed on
def test_malicious_pickle_names_the_global(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    from clip_ebc.convert.__main__ import main as convert

    path = tmp_path / "best_mae_0.pth"
    torch.save({"image_encoder.conv1.weight": torch.zeros(1), "x": Evil()}, path)
    result = CliRunner().invoke(convert, [str(path), "-o", str(tmp_path / "out"), "--backbone", "RN50", "--reduction",
                                          "8", "--truncation", "4", "--dataset", "sha"])
    assert result.exit_code == 1 and not (tmp_path / "pwned").exists()
    (line,) = result.stderr.splitlines()
    assert f"{path} cannot be read as a PyTorch checkpoint (it names the Python global 'posix.system'" in line
    assert "weights_only" not in line and "likely succeed" not in line and "trust" not in line


# 2. non-finite numbers never become counts
@pytest.mark.parametrize("field, value, message", [
    ("std", [0.229, 1e-45, 0.225], "std values must be between 0.0001 and 10000"),
    ("mean", [0.485, float("nan"), 0.406], "mean values must be finite numbers"),
    ("anchor_points", "last=1e39", "finite (in float32)"),
])
def test_configs_that_overflow_in_float32_are_refused(tiny_dirs, tmp_path, photo, field, value, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["rn50"], model)
    config = json.loads((model / "config.json").read_text())
    if value == "last=1e39":
        value = config["anchor_points"][:-1] + [1e39]
    config[field] = value
    (model / "config.json").write_text(json.dumps(config))  # Python writes NaN as a bare token
    code, stdout, stderr = invoke(photo, "--json", "-m", model)
    (line,) = stderr.splitlines()
    assert code == 1 and stdout == "" and line.startswith("error: ") and message in line and "nan" not in stdout


def test_nan_weights_are_refused_when_loading(tiny_dirs, tmp_path, photo):
    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["rn50"], model)
    state = load_file(str(model / "model.safetensors"))
    state["decoder.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(model / "model.safetensors"))
    code, stdout, stderr = invoke(photo, "--json", "--csv", tmp_path / "rows.csv", "-m", model)
    (line,) = stderr.splitlines()
    assert code == 1 and stdout == ""
    assert "holds NaN or infinite values in decoder.0.conv1.weight" in line and "Re-download or re-convert" in line


def test_a_non_finite_output_is_an_error_naming_the_model(converted_rn50, photo):
    broken = CLIPEBC(converted_rn50.config)
    broken.load_state_dict(converted_rn50.state_dict())
    with torch.no_grad():
        broken.text_embeddings[0] = float("nan")  # loaded in memory, so no file check saw it
    counter = CrowdCounter(broken, device="cpu")
    with pytest.raises(NumericalError, match="the model custom produced NaN or infinite densities for .*photo.png"):
        counter.count(photo)
    with pytest.raises(NumericalError):  # an input problem may become a row; a broken model may not
        list(counter.count_many([photo], skip_errors=True))


# 3. a tensor of the right shape but the wrong dtype
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_wrong_dtype_is_a_checkpoint_error(tiny_dirs, tmp_path, dtype):
    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["rn50"], model)
    state = load_file(str(model / "model.safetensors"))
    state["projection.weight"] = torch.zeros(state["projection.weight"].shape, dtype=dtype)
    save_file(state, str(model / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) of the wrong type: projection.weight "
                                              rf"{str(dtype).replace('torch.', '')} \(expected floating point\)"):
        CLIPEBC.from_pretrained(model)


# 5. --download checks what is cached and fetches again what does not load
def test_download_refetches_a_broken_hub_checkpoint(converted_rn50, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "published"
    converted_rn50.save_pretrained(folder)
    files = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = f"hf-hub:clip-ebc/tiny@{COMMIT_NEW}"
    with HubServer({"clip-ebc/tiny": {COMMIT_NEW: files}}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert invoke("--download", spec)[0] == 0
        cached = next((tmp_path / "hf").rglob("model.safetensors")).resolve()
        cached.write_bytes(cached.read_bytes()[: len(files["model.safetensors"]) // 2])  # a damaged cache
        gets = server.count("GET")
        code, stdout, stderr = invoke("--download", spec)
        assert code == 0, stderr
        assert server.count("GET") > gets and "the cached copy does not load" in caplog.text
        assert "downloading it again" in caplog.text and stdout.startswith(spec)
    assert next((tmp_path / "hf").rglob("model.safetensors")).read_bytes() == files["model.safetensors"]


# 7. inputs are checked before any model is fetched; no network names the fix
def test_missing_inputs_are_reported_before_any_download(env, official_rn50, tmp_path, official_pth):
    with StreamServer() as server:
        archive = server.add(RELEASE_PATH, make_tgz({"r/best_mae_0.pth": official_pth}))
        write_manifest(env, {"rn50.tiny": entry(official_rn50, [{"type": "release", "url": archive,
                                                                  "member": "best_mae_0.pth"}])})
        code, stdout, stderr = invoke(tmp_path / "missing.jpg", "-m", "rn50.tiny")
        assert code == 1 and stderr.strip() == f"error: {tmp_path / 'missing.jpg'}: no such file."
        assert RELEASE_PATH not in server.requests  # 0.6 GB not downloaded for nothing
    image = tmp_path / "photo.png"
    Image.fromarray(make_scene(64, 64, 3)[0]).save(image)
    write_manifest(env, {"rn50.tiny": entry(official_rn50, [{"type": "release", "url": "http://127.0.0.1:9/a.tgz"}])})
    code, _, stderr = invoke(image, "-m", "rn50.tiny")
    (line,) = stderr.splitlines()
    assert code == 1 and "cannot reach http://127.0.0.1:9/a.tgz" in line
    assert "Fix the connection, or fetch it on a machine with internet access with `crowdcount --download rn50.tiny`" in line


# 8. interrupting --download: exit 130 after Ctrl-C, 143 after SIGTERM, and no partial archive left
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_interrupted_download(env, official_rn50, official_pth, tmp_path, sig, code, word):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with StreamServer() as server:
        url = server.add("/slow.tgz", make_tgz({"r/best_mae_0.pth": official_pth}), drip=0.0005)
        write_manifest(env, {"rn50.slow": entry(official_rn50, [{"type": "release", "url": url}])})
        proc = subprocess.Popen([*python_with_sigint("clip_ebc.cli"), "--download", "rn50.slow"],
                                env={**os.environ, "TMPDIR": str(temp)}, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not any(temp.rglob("slow.tgz")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the download has started once its file exists
        time.sleep(0.3)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and stderr.splitlines()[-1] == word, stderr
    assert list(temp.iterdir()) == []  # the partial archive went with its temporary folder


# 9. archives: bounded before anything is decompressed or written
def test_archive_bounds(tmp_path, official_pth):
    junk = tarfile.TarInfo("run/junk.bin")
    junk.size = 16 << 30  # a header claiming 16 GiB: refused before a byte of it is decompressed
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(junk)  # the header only; reading past it would take minutes if it were real
    bomb = tmp_path / "bomb.tgz"
    bomb.write_bytes(buffer.getvalue())
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"bomb.tgz unpacks to more than 6,442,450,944 bytes \(at run/junk.bin\)"):
        extract_checkpoint(bomb, None, tmp_path / "out" / "c.pth")
    assert time.monotonic() - started < 5
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(make_tgz({"run/best_mae_0.pth": b"MZ\x90\x00 not a checkpoint" * 100}))
    with pytest.raises(DownloadError, match=r"run/best_mae_0.pth in fake.tgz is not a PyTorch or safetensors checkpoint"):
        extract_checkpoint(fake, None, tmp_path / "out" / "c.pth")
    assert not (tmp_path / "out").exists()  # nothing was written
    real = tmp_path / "real.tgz"
    real.write_bytes(make_tgz({"run/best_mae_0.pth": official_pth}))
    assert extract_checkpoint(real, None, tmp_path / "ok" / "c.pth").read_bytes() == official_pth


# 11. a converted model owns its tensors
def test_converted_models_do_not_share_the_callers_tensors(official_rn50):
    from clip_ebc.convert import convert_official

    state = {k: v.clone() for k, v in official_rn50.state_dict.items()}
    first = convert_official(state, **official_rn50.convert_kwargs())
    second = convert_official(state, **official_rn50.convert_kwargs())
    before = first.state_dict()["projection.weight"].clone()
    with torch.no_grad():
        state["projection.weight"].add_(1.0)  # the caller changes its dict
        second.projection.weight.mul_(0.0)  # and one converted model is trained
    assert torch.equal(first.state_dict()["projection.weight"], before)
    params = [p.data_ptr() for p in first.parameters()]
    assert not set(params) & {p.data_ptr() for p in second.parameters()}
    assert not set(params) & {t.data_ptr() for t in state.values()}


def test_three_processes_fetch_one_model_once(env, official_rn50, official_pth, tmp_path):
    """A file lock: one download and one conversion; the other two wait, then load the cached copy."""
    from servers import ReleaseServer

    archive = make_tgz({"r/best_mae_0.pth": official_pth})
    ready = tmp_path / "ready"
    ready.mkdir()
    # each process imports everything, then waits for the other two, so that their fetches overlap
    code = ("import hashlib, pathlib, sys, time; from clip_ebc import load_model; import clip_ebc.loading\n"
            "d = pathlib.Path(sys.argv[1]); (d / sys.argv[2]).touch(); t = time.monotonic()\n"
            "while len(list(d.iterdir())) < 3 and time.monotonic() - t < 120: time.sleep(0.01)\n"
            "m = load_model('rn50.tiny', progress=False)\n"
            "print(hashlib.sha256(b''.join(t.numpy().tobytes() for t in m.state_dict().values())).hexdigest())")
    with ReleaseServer({RELEASE_PATH: archive}, delay=1.0) as server:
        write_manifest(env, {"rn50.tiny": entry(official_rn50, [release_source(server, sha256=sha(archive))])})
        procs = [subprocess.Popen([sys.executable, "-c", code, str(ready), str(i)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(3)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
        assert len({out.strip() for out, _ in outs}) == 1  # three working, identical models
        assert server.count("GET") == 2  # one download: the release URL and its storage redirect
    assert sum("another process is fetching it; waiting" in err for _, err in outs) == 2


def test_image_reading_wording(tmp_path):
    """FIFOs and broken links are named as such; PIL's warnings name the file; NaN pixels are an error."""
    from clip_ebc import ImageError
    from clip_ebc.images import load_image

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="pipe.jpg is a named pipe \\(FIFO\\), not a file"):
        load_image(fifo)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="link.jpg is a broken link"):
        load_image(tmp_path / "link.jpg")
    nan = tmp_path / "nan.tif"
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(nan)
    with pytest.raises(ImageError, match="nan.tif holds NaN or infinite pixel values"):
        load_image(nan)
    heic = tmp_path / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 16)
    with pytest.raises(ImageError, match='photo.heic: reading HEIC/HEIF photos needs .*pip install "clip-ebc\\[heic\\]"'):
        load_image(heic)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(buffer, format="JPEG", exif=exif.tobytes())
    data = bytearray(buffer.getvalue())
    at = data.find(b"Exif") + 14
    data[at:at + 2] = b"\x00\x30"  # an IFD that claims more entries than it holds
    broken = tmp_path / "broken_exif.jpg"
    broken.write_bytes(bytes(data))
    with pytest.warns(UserWarning) as caught:
        load_image(broken)
    assert [str(w.message) for w in caught] == [f"{broken}: Corrupt EXIF data.  Expecting to read 12 bytes but only got 4."]
