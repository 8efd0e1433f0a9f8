"""Parity with the official implementation on its own outputs (tests/fixtures/official).

Both tiny models were made and run by the official code (commit b52a594). Our densities, logits,
probabilities and text embeddings must agree within 1e-5 absolute. The ResNet agrees bit for bit. The
ViT differs by float32 rounding (up to about 3e-6 in the density, 9e-6 in logits of magnitude up to
18): our batch-first attention may take PyTorch's fused multi-head-attention fast path, which the
official sequence-first code never does, and matrix products are blocked differently for different
batch sizes. Each ViT check runs with the fast path on (the default) and off.
"""

import contextlib

import pytest
import torch

from clip_ebc import sliding_window_density
from clip_ebc.backbones import interpolate_pos_embed
from clip_ebc.text import tokenize_prompts

PARITY_ATOL = 1e-5


@contextlib.contextmanager
def mha_fastpath(enabled: bool):
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("fastpath", [True, False])
def test_density_parity(official_pair, fastpath):
    fixture, model = official_pair
    with mha_fastpath(fastpath), torch.no_grad():
        for key in ("input", "input_alt0"):  # 224x224 batch 1; odd sizes, batch 2
            density = model(fixture.io[key]).density
            expected = fixture.io[key.replace("input", "output")]
            assert max_diff(density, expected) <= PARITY_ATOL, key
            assert abs(density.sum().item() - expected.sum().item()) <= 1e-3


@pytest.mark.parametrize("batch_size", [1, 2, 16])
@pytest.mark.parametrize("fastpath", [True, False])
def test_sliding_window_parity(official_vit, converted_vit, batch_size, fastpath):
    window = official_vit.meta["sliding_window"]
    x = official_vit.io["input_sliding"]
    assert list(x.shape) == window["shape"]
    with mha_fastpath(fastpath):
        density = sliding_window_density(converted_vit, x, window["window"], window["stride"], batch_size=batch_size)
    assert max_diff(density, official_vit.io["output_sliding"]) <= PARITY_ATOL


@pytest.mark.parametrize("fastpath", [True, False])
def test_head_intermediates_parity(official_pair, fastpath):
    fixture, model = official_pair
    inter = fixture.intermediates
    with mha_fastpath(fastpath), torch.no_grad():
        features = model.encode(fixture.io["input"])
        projected = model.projection(model.decoder(features))
        out = model(fixture.io["input"])
    assert max_diff(features, inter["decoder_input"]) <= PARITY_ATOL
    assert max_diff(projected, inter["projection_output"]) <= PARITY_ATOL
    assert max_diff(out.logits, inter["logits"]) <= PARITY_ATOL
    assert max_diff(out.probs, inter["probs"]) <= PARITY_ATOL
    assert max_diff(out.probs.sum(1), torch.ones_like(out.probs[:, 0])) <= 1e-6


def test_text_embeddings_and_tokens(official_pair):
    fixture, model = official_pair
    inter = fixture.intermediates
    assert list(model.config.prompts) == fixture.meta["text_prompts"]
    tokens = tokenize_prompts(model.config.prompts)
    assert torch.equal(tokens.to(torch.int32), inter["text_tokens"])
    assert max_diff(model.text_embeddings, inter["text_features"]) <= PARITY_ATOL
    assert torch.equal(model.anchor_points, inter["anchor_points"])


def test_logit_scale_and_weights_carried_over(official_pair):
    fixture, model = official_pair
    assert model.logit_scale.item() == pytest.approx(fixture.meta["logit_scale_saved"], abs=0)
    state = model.state_dict()
    for key, value in fixture.state_dict.items():
        ours = key.replace("image_decoder.", "decoder.")
        if ours in state:
            assert torch.equal(state[ours], value), key


def test_resnet_encoder_output(official_rn50, converted_rn50):
    with torch.no_grad():
        features = converted_rn50.image_encoder(official_rn50.io["input"])
    assert max_diff(features, official_rn50.intermediates["encoder_output"]) == 0.0


def test_resnet_is_bit_exact(official_rn50, converted_rn50):
    with torch.no_grad():
        for key in ("input", "input_alt0"):
            assert torch.equal(converted_rn50(official_rn50.io[key]).density, official_rn50.io[key.replace("input", "output")])


@pytest.mark.parametrize("fastpath", [True, False])
def test_vit_tokens(official_vit, converted_vit, fastpath):
    with mha_fastpath(fastpath), torch.no_grad():
        tokens, grid = converted_vit.image_encoder.forward_tokens(official_vit.io["input"])
    assert grid == (14, 14)
    assert max_diff(tokens, official_vit.intermediates["ln_post_output_tokens"]) <= PARITY_ATOL


def test_vit_positional_embedding_resizing(official_vit, converted_vit):
    inter = official_vit.intermediates
    table = converted_vit.image_encoder.positional_embedding
    assert torch.equal(table, inter["posembed_clip_224"])
    # at construction for input_size 256: 14x14 -> 16x16, bicubic without antialias, CLS row kept
    resized = interpolate_pos_embed(inter["posembed_clip_224"], (14, 14), (16, 16))
    assert max_diff(resized, inter["posembed_adjusted_256"]) <= 1e-6
    # on the fly for a 96x128 input: 14x14 -> 6x8
    assert max_diff(converted_vit.image_encoder.position_embedding((6, 8)), inter["posembed_runtime_6x8"]) <= 1e-6


def test_train_mode_returns_logits_and_density(official_rn50, converted_rn50):
    import copy

    model = copy.deepcopy(converted_rn50).train()
    out = model(official_rn50.io["input_alt0"])
    assert out.logits.shape == (2, 5, 12, 18) and out.density.shape == (2, 1, 12, 18)
    expected = (out.probs * model.anchor_points.view(1, -1, 1, 1)).sum(1, keepdim=True)
    assert torch.equal(out.density, expected)
    out.density.sum().backward()  # gradients flow in train mode
    assert model.decoder[0].conv1.weight.grad is not None
