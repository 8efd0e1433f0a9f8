"""save_pretrained / from_pretrained: bit-exact round trip, strict loading, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from clip_ebc import CLIPEBC, CheckpointError, ConfigError, ModelConfig


@pytest.fixture(params=["rn50", "vit"])
def model(request, converted_rn50, converted_vit):
    return converted_rn50 if request.param == "rn50" else converted_vit


def test_round_trip_is_bit_exact(model, tmp_path, official_rn50):
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = CLIPEBC.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in loaded.parameters()]
    x = official_rn50.io["input_alt0"]
    with torch.no_grad():
        assert torch.equal(model(x).density, loaded(x).density)
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))


def test_checkpoint_files(converted_rn50, tmp_path):
    converted_rn50.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == 1 and config["backbone"] == "RN50"
    assert config["clip"]["vision_width"] == 4 and config["bins"][-1] == [4, None]
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["text_embeddings"].shape == (5, 16)
    assert weights["anchor_points"].tolist() == pytest.approx([0, 1, 2, 3, 4.29992])
    assert not any(k.startswith("text_encoder") for k in weights)  # no text tower in the checkpoint
    card = (tmp_path / "README.md").read_text()
    assert "library_name: clip-ebc" in card and "There are more than four people." in card


def test_saving_again_rewrites_the_model_card(converted_rn50, converted_vit, tmp_path):
    converted_rn50.save_pretrained(tmp_path)
    assert "RN50" in (tmp_path / "README.md").read_text()
    converted_vit.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "ViT-B-16" in card and "RN50" not in card
    assert json.loads((tmp_path / "config.json").read_text())["backbone"] == "ViT-B-16"


def _save_modified(model, path, change):
    model.save_pretrained(path)
    weights = load_file(str(path / "model.safetensors"))
    change(weights)
    save_file(weights, str(path / "model.safetensors"))


def test_missing_key_is_an_error(converted_rn50, tmp_path):
    _save_modified(converted_rn50, tmp_path, lambda w: w.pop("decoder.0.bn2.running_var"))
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): decoder.0.bn2.running_var.*re-download or re-convert"):
        CLIPEBC.from_pretrained(tmp_path)


def test_unexpected_key_is_an_error(converted_rn50, tmp_path):
    _save_modified(converted_rn50, tmp_path, lambda w: w.update(extra=torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"1 unexpected tensor\(s\): extra"):
        CLIPEBC.from_pretrained(tmp_path)


def test_wrong_shape_is_an_error(converted_rn50, tmp_path):
    _save_modified(converted_rn50, tmp_path, lambda w: w.update(text_embeddings=torch.zeros(6, 16)))
    with pytest.raises(CheckpointError, match=r"text_embeddings \(6, 16\) \(expected \(5, 16\)\)"):
        CLIPEBC.from_pretrained(tmp_path)


def test_anchor_points_must_match_the_config(converted_rn50, tmp_path):
    _save_modified(converted_rn50, tmp_path, lambda w: w.update(anchor_points=torch.arange(5.0)))
    with pytest.raises(CheckpointError, match="anchor points in .* differ from those in"):
        CLIPEBC.from_pretrained(tmp_path)


def test_missing_or_corrupt_files(converted_rn50, tmp_path):
    with pytest.raises(CheckpointError, match="is not a clip-ebc checkpoint folder: config.json, model.safetensors missing"):
        CLIPEBC.from_pretrained(tmp_path)
    converted_rn50.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="cannot read .*model.safetensors as safetensors"):
        CLIPEBC.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"backbone": "RN50"}')
    with pytest.raises(ConfigError, match="missing the required fields"):
        CLIPEBC.from_pretrained(tmp_path)


def test_new_model_from_config():
    config = ModelConfig(backbone="RN50", bins=[(0, 0), (1, float("inf"))], anchor_points=[0, 1.5],
                         clip={"embed_dim": 8, "image_resolution": 64, "vision_layers": [1, 1, 1, 1],
                               "vision_width": 4, "vision_patch_size": None, "vision_heads": 2},
                         decoder_channels=[16])
    torch.manual_seed(0)
    model = CLIPEBC(config).eval()
    assert model.logit_scale.item() == pytest.approx(2.6592600)
    assert torch.count_nonzero(model.projection.bias) == 0 and model.decoder[0].bn1.weight.eq(1).all()
    with pytest.raises(ConfigError, match=r"text embeddings must have shape \(2, 8\)"):
        model.set_text_embeddings(torch.zeros(3, 8))
    model.set_text_embeddings(torch.randn(2, 8))
    out = model(torch.randn(1, 3, 64, 96))
    assert out.density.shape == (1, 1, 8, 12)
    assert ((out.density >= 0) & (out.density <= 1.5)).all()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ConfigError, match="needs a ModelConfig"):
        CLIPEBC({"backbone": "RN50"})


def test_half_precision_weights_load_as_float32(converted_rn50, tmp_path, official_rn50):
    def halve(w):  # weights in float16; the anchor and text-embedding buffers stay exact
        w.update({k: v.half() for k, v in w.items() if v.is_floating_point() and k not in ("anchor_points", "text_embeddings")})

    _save_modified(converted_rn50, tmp_path, halve)
    model = CLIPEBC.from_pretrained(tmp_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(official_rn50.io["input"]).density, official_rn50.io["output"], rtol=0, atol=0.05)


def test_paths_that_are_not_checkpoints(converted_rn50, tmp_path):
    from clip_ebc import ModelNotFoundError
    from clip_ebc.loading import resolve_model

    with pytest.raises(ModelNotFoundError, match="is neither a checkpoint folder nor a Hub repository id"):
        CLIPEBC.from_pretrained(tmp_path / "typo")
    converted_rn50.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ModelNotFoundError, match="is a file; pass the folder that holds config.json"):
        resolve_model(tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(ModelNotFoundError, match="no such checkpoint folder"):
        resolve_model(tmp_path / "typo")
