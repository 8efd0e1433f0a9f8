"""Converting official checkpoints: files, run names, the command line and its error messages."""

import io
import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from clip_ebc import CLIPEBC, ConversionError
from clip_ebc.convert import convert_file, convert_official, load_official_state_dict, parse_run_name
from clip_ebc.convert.__main__ import main as convert_command

RN50_RUN = "clip_resnet50_word_448_8_4_fine_1.0_dmcount_aug"


@pytest.mark.parametrize(
    "name, expected",
    [
        (RN50_RUN, dict(backbone="RN50", prompt_type="word", input_size=448, reduction=8, truncation=4,
                        granularity="fine", weight_count_loss=1.0, count_loss="dmcount", augmented=True)),
        ("clip_vit_b_16_word_224_8_4_fine_1.0_dmcount", dict(backbone="ViT-B-16", input_size=224, augmented=False)),
        ("clip_resnet50_number_448_8_4_fine_1.0_dmcount_aug", dict(prompt_type="number")),
        ("clip_vit_b_16_word_256_8_4_fine_fine_1.0_dmcount_aug", dict(input_size=256, granularity="fine")),
        ("clip_resnet101_word_448_16_8_dynamic_0.5_mae", dict(backbone="RN101", reduction=16, truncation=8,
                                                             granularity="dynamic", count_loss="mae")),
        ("clip_resnet50_word_448_8_4_fine_1e-05_dmcount", dict(weight_count_loss=1e-5)),  # str(1e-5) upstream
    ],
)
def test_parse_run_name(name, expected):
    parsed = parse_run_name(name)
    assert parsed is not None
    assert {k: parsed[k] for k in expected} == expected


@pytest.mark.parametrize("name", ["vgg19_ae_448_8_4_fine_1.0_dmcount_aug", "clip_resnet50_word_448_4_1.0_dmcount_aug",
                                  "best_mae", "clip_vit_l_14_336px_word_336_8_4_fine_1.0_dmcount"])
def test_unparseable_run_names(name):
    assert parse_run_name(name) is None


def official_run_dir(root, fixture, dataset="sha", run=RN50_RUN):
    run_dir = root / dataset / run
    run_dir.mkdir(parents=True)
    return run_dir


def test_convert_file_reads_run_directory(tmp_path, official_rn50, converted_rn50):
    path = official_run_dir(tmp_path, official_rn50) / "best_mae_0.pth"
    torch.save(official_rn50.state_dict, path)
    model = convert_file(path, clip_config=official_rn50.meta["clip_config"])
    assert model.config == converted_rn50.config.__class__(**{**converted_rn50.config.__dict__,
                                                              "provenance": model.config.provenance})
    prov = model.config.provenance
    assert prov["run_name"] == RN50_RUN and prov["dataset"] == "sha" and prov["anchor_points"] == "official average"
    assert len(prov["source_sha256"]) == 64
    with torch.no_grad():
        torch.testing.assert_close(model(official_rn50.io["input"]).density, official_rn50.io["output"], rtol=0, atol=1e-5)


def test_run_name_is_read_from_the_folder_a_link_is_in(tmp_path, official_rn50):
    """Annexed or Hub-cached files are links to content-addressed blobs: the run name is where the link is."""
    blob = tmp_path / "blobs" / "0f3a9c"
    blob.parent.mkdir()
    torch.save(official_rn50.state_dict, blob)
    link = official_run_dir(tmp_path, official_rn50) / "best_mae.pth"
    link.symlink_to(blob)
    model = convert_file(link, clip_config=official_rn50.meta["clip_config"])
    assert model.config.provenance["run_name"] == RN50_RUN and model.config.provenance["dataset"] == "sha"


def test_resume_checkpoint_and_ddp_prefix(tmp_path, official_rn50):
    """A ckpt.pth as the official trainer writes it: real optimizer, scheduler and scaler states, and
    NumPy float64 losses and scores, which plain weights_only loading refuses."""
    weights = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weights], lr=1e-4, weight_decay=1e-4)
    (weights**2).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    resume = {
        "epoch": 105,
        "model_state_dict": {"module." + k: v for k, v in official_rn50.state_dict.items()},
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "grad_scaler_state_dict": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "loss_info": {"loss": np.mean([1.0, 2.0]), "count_loss": np.float32(0.5)},
        "hist_scores": {"mae": [np.float64(55.0)], "rmse": [np.sqrt(np.float64(4.0))]},
        "best_scores": {"mae": [np.float64(55.0), float("inf"), float("inf")], "rmse": [float("inf")] * 3},
    }
    path = official_run_dir(tmp_path, official_rn50) / "ckpt.pth"
    torch.save(resume, path)
    model = convert_file(path, clip_config=official_rn50.meta["clip_config"])
    with torch.no_grad():
        torch.testing.assert_close(model(official_rn50.io["input"]).density, official_rn50.io["output"], rtol=0, atol=1e-5)


def test_cli_converts_official_safetensors_with_flags(tmp_path, official_vit):
    src = tmp_path / "best_mae.safetensors"
    save_file(official_vit.state_dict, str(src))
    (tmp_path / "clip.json").write_text(json.dumps(official_vit.meta["clip_config"]))
    out = tmp_path / "vit"
    result = CliRunner().invoke(convert_command, [str(src), "-o", str(out), "--backbone", "clip_vit_b_16",
                                               "--reduction", "8", "--truncation", "4", "--dataset", "sha",
                                               "--clip-config", str(tmp_path / "clip.json")])
    assert result.exit_code == 0, result.output
    assert "Converted best_mae.safetensors" in result.output and "ViT-B-16" in result.output
    model = CLIPEBC.from_pretrained(out)
    assert model.config.num_vpt == 32 and model.config.deep_vpt and model.config.input_size == 224
    with torch.no_grad():
        torch.testing.assert_close(model(official_vit.io["input"]).density, official_vit.io["output"], rtol=0, atol=1e-5)


def test_python_m_convert(tmp_path, official_rn50):
    src = official_run_dir(tmp_path, official_rn50) / "best_mae_0.pth"
    torch.save(official_rn50.state_dict, src)
    clip = tmp_path / "tiny_rn50.json"
    clip.write_text(json.dumps(official_rn50.meta))  # a fixture-style file holding "clip_config" works too
    out = tmp_path / "rn50"
    proc = subprocess.run([sys.executable, "-m", "clip_ebc.convert", str(src), "-o", str(out), "--clip-config", str(clip)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Converted best_mae_0.pth" in proc.stdout and "anchors [0.0, 1.0, 2.0, 3.0, 4.29992]" in proc.stdout
    model = CLIPEBC.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(model(official_rn50.io["input_alt0"]).density, official_rn50.io["output_alt0"], rtol=0, atol=1e-5)


def run_cli(args):
    result = CliRunner().invoke(convert_command, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_bad_inputs(tmp_path, official_rn50):
    out = tmp_path / "out"
    flags = ["-o", out, "--backbone", "RN50", "--reduction", "8", "--truncation", "4", "--dataset", "sha"]

    text = tmp_path / "notes.pth"
    text.write_text("hello, this is not a checkpoint")
    code, output = run_cli([text, *flags])
    assert code == 1 and "is not a PyTorch checkpoint (.pth) or a safetensors file" in output

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    code, output = run_cli([empty, *flags])
    assert code == 1 and "is empty" in output

    code, output = run_cli([tmp_path / "missing.pth", *flags])
    assert code == 1 and "does not exist" in output

    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3), "classifier.weight": torch.zeros(2)}, wrong)
    code, output = run_cli([wrong, *flags])
    assert code == 1 and "not part of a CLIP-EBC model" in output

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    code, output = run_cli([not_a_dict, *flags])
    assert code == 1 and "is not a model state_dict" in output

    unsafe = tmp_path / "unsafe.pth"
    with unsafe.open("wb") as f:  # an old-style pickle of an arbitrary object: weights_only refuses it
        pickle.dump({"x": object()}, f, protocol=2)
    code, output = run_cli([unsafe, *flags])
    assert code == 1 and "cannot be read as a PyTorch checkpoint (it names the Python global 'object', which a " \
        "checkpoint may not contain" in output
    assert "add_safe_globals" not in output and "weights_only" not in output  # torch's advice is not passed on

    # tiny weights against the real RN50 architecture (no --clip-config): shapes do not fit
    tiny = tmp_path / "tiny.pth"
    torch.save(official_rn50.state_dict, tiny)
    code, output = run_cli([tiny, *flags])
    assert code == 1 and "wrong shape" in output and "Check the backbone (RN50)" in output

    code, output = run_cli([tiny, "-o", out])
    assert code == 1 and "pass --backbone --reduction --truncation" in output

    code, output = run_cli([tiny, "-o", out, "--backbone", "RN50", "--reduction", "8", "--truncation", "4"])
    assert code == 1 and "pass --dataset" in output

    for code, output in [run_cli([tiny, *flags[:-2], "--dataset", "nope"])]:
        assert code == 2 and "Invalid value for '--dataset'" in output

    out.mkdir()
    (out / "config.json").write_text("{}")
    code, output = run_cli([tiny, *flags])
    assert code == 1 and "already exists and is not empty" in output
    assert all("Traceback" not in o for o in (output,))


def test_convert_official_errors(official_rn50, official_vit):
    kwargs = official_vit.convert_kwargs()
    with pytest.raises(ConversionError, match="pass deep_vpt=True"):
        convert_official(official_vit.state_dict, **{**kwargs, "deep_vpt": False})
    with pytest.raises(ConversionError, match="num_vpt=16 was given, but the checkpoint has 32"):
        convert_official(official_vit.state_dict, **{**kwargs, "num_vpt": 16})
    with pytest.raises(ConversionError, match="holds a ResNet image encoder, but ViT-B-16 is a ViT"):
        convert_official(official_rn50.state_dict, **{**kwargs, "decoder_channels": None})
    with pytest.raises(ConversionError, match="unknown backbone 'vgg19'"):
        convert_official(official_rn50.state_dict, **{**official_rn50.convert_kwargs(), "backbone": "vgg19", "clip_config": None})
    with pytest.raises(ConversionError, match="invalid conversion settings: 5 bins need 5 anchor points"):
        convert_official(official_rn50.state_dict, **{**official_rn50.convert_kwargs(), "anchor_points": [0, 1]})


def test_shallow_vpt_is_read_from_the_weights(tmp_path, official_vit):
    state = {k: v for k, v in official_vit.state_dict.items() if k != "vpt_1"}
    src = tmp_path / "shallow.safetensors"
    save_file(state, str(src))
    model = convert_file(src, backbone="ViT-B-16", reduction=8, truncation=4, dataset="sha",
                         clip_config=official_vit.meta["clip_config"])
    assert not model.config.deep_vpt and tuple(model.image_encoder.vpt.shape) == (1, 32, 32)


@pytest.mark.parametrize("numpy_module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_resume_files_from_either_numpy_generation(tmp_path, official_rn50, numpy_module):
    """NumPy 1 and NumPy 2 name the scalar constructor differently in a pickle; both are read."""
    buffer = io.BytesIO()
    torch.save({"model_state_dict": official_rn50.state_dict, "best_scores": {"mae": [np.float64(55.0)]}}, buffer,
               _use_new_zipfile_serialization=False)  # the legacy format keeps the pickle's text editable
    raw = re.sub(rb"numpy\.(_?core)\.multiarray", numpy_module, buffer.getvalue())
    assert numpy_module + b"\nscalar" in raw
    path = tmp_path / "ckpt.pth"
    path.write_bytes(raw)
    assert load_official_state_dict(path).keys() == official_rn50.state_dict.keys()


def test_load_official_state_dict_accepts_resume_files(tmp_path, official_rn50):
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state_dict": official_rn50.state_dict, "epoch": 3}, path)
    assert load_official_state_dict(path).keys() == official_rn50.state_dict.keys()
