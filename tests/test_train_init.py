"""init='openai': open_clip's CLIP weights mapped onto CLIP-EBC. The download cannot run here, so
open_clip builds the same architectures with random weights; the mapping is what is checked."""

import pytest
import torch

from clip_ebc.backbones import interpolate_pos_embed
from clip_ebc.text import tokenize_prompts
from clip_ebc.train import TrainConfig, build_model


@pytest.fixture
def offline_open_clip(monkeypatch):
    import open_clip

    real, made = open_clip.create_model, []

    def create_model(name, pretrained=None, **kwargs):
        assert pretrained == "openai" and kwargs.get("force_quick_gelu") is True
        torch.manual_seed(0)
        made.append(real(name, pretrained=None, **kwargs))
        return made[-1]

    monkeypatch.setattr(open_clip, "create_model", create_model)
    return made


@pytest.mark.parametrize("backbone, input_size", [("RN50", 448), ("ViT-B-16", 256)])
def test_openai_weights_are_mapped(offline_open_clip, backbone, input_size):
    config = TrainConfig(backbone=backbone, init="openai", input_size=input_size, anchor_points="middle")
    model = build_model(config)
    (clip,) = offline_open_clip
    visual = clip.visual.state_dict()
    ours = model.image_encoder.state_dict()
    if backbone == "RN50":
        assert not any(k.startswith("attnpool") for k in ours)
        assert all(torch.equal(ours[k], v) for k, v in visual.items() if not k.startswith("attnpool"))
    else:
        assert "proj" not in ours and ours["vpt"].shape == (12, 32, 768)
        resized = interpolate_pos_embed(visual["positional_embedding"], (14, 14), (16, 16))
        assert ours["positional_embedding"].shape == (257, 768) and torch.equal(ours["positional_embedding"], resized)
        assert all(torch.equal(ours[k], v) for k, v in visual.items() if k not in ("proj", "positional_embedding"))
        trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {"image_encoder", "decoder", "projection", "logit_scale"}  # image_encoder: VPT only
    with torch.no_grad():
        expected = clip.encode_text(tokenize_prompts(model.config.prompts))
    torch.testing.assert_close(model.text_embeddings, expected, rtol=0, atol=1e-5)
    assert model.config.provenance["init"] == "openai" and model.training
