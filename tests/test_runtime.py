"""The inference fast path: BatchNorm folding, channels-last, lower precision. Correctness only."""

import copy

import pytest
import torch

from clip_ebc import CheckpointError, ConfigError, CrowdCounter
from clip_ebc import runtime
from clip_ebc.runtime import fold_batchnorm, prepare_for_inference, resolve_precision
from conftest import make_scene, meta_model


@pytest.mark.parametrize("which, expected_folds", [("rn50", 4 * 4 + 3 + 3), ("vit", 2)])
def test_folded_batchnorm_equals_unfolded(which, expected_folds, converted_rn50, converted_vit, official_rn50):
    """Folding is exact: in float64 the folded model equals the original. In float32 both carry rounding
    error that a deep network amplifies (here the unfolded model itself is ~1e-5 away from its float64
    result, and a one-ulp change of the input moves it as much), so the float32 check is that folding
    adds at most 1e-5 to the model's own float32 error."""
    model = converted_rn50 if which == "rn50" else converted_vit
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == expected_folds
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    inputs = [official_rn50.io["input"], torch.randn(2, 3, 224, 320, generator=torch.Generator().manual_seed(0))]
    model64, folded64 = copy.deepcopy(model).double(), copy.deepcopy(model).double()
    fold_batchnorm(folded64)

    def features64(m, x):  # everything before the (float32) head; ViT LayerNorms run in float32 by design
        f = m.encode(x.double()) if which == "rn50" else model.encode(x).double()
        return m.projection(m.decoder(f))

    with torch.no_grad():
        for x in inputs:
            exact = features64(model64, x)
            assert (features64(folded64, x) - exact).abs().max().item() <= 1e-12 * exact.abs().max().item()
            reference = model64.head(model64.encode(x.double()) if which == "rn50" else model.encode(x).double()).density
            own_error = (model(x).density.double() - reference).abs().max().item()
            folded_error = (folded(x).density.double() - reference).abs().max().item()
            assert folded_error <= own_error + 1e-5, (folded_error, own_error)


def test_prepared_model_layout_and_it_cannot_be_saved(converted_rn50, tmp_path):
    # channels-last for lower precision; float32 on CPUs stays NCHW (oneDNN's blocked path is faster there)
    low = prepare_for_inference(copy.deepcopy(converted_rn50), torch.device("cpu"), torch.bfloat16)
    weight = low.decoder[0].conv2.weight
    assert weight.shape[-1] == 3 and weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    model = prepare_for_inference(copy.deepcopy(converted_rn50), torch.device("cpu"))
    assert model.decoder[0].conv2.weight.is_contiguous()
    assert not model.decoder[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(CheckpointError, match="prepared for inference: BatchNorm folded.* cannot be saved"):
        model.save_pretrained(tmp_path)
    train_mode = copy.deepcopy(converted_rn50).train()
    with pytest.raises(ConfigError, match="needs a model in eval mode"):
        fold_batchnorm(train_mode)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_convolutions_over_4_kib_pixels_stay_nchw_in_lower_precision(dtype):
    """On CPUs, bfloat16 models are channels-last except convolutions larger than 1x1 whose channels-last
    pixel is a multiple of 4 KiB (2048 bfloat16 channels): those run NCHW, computing the same numbers."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2048, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(2048, 16, 3, padding=1),  # NCHW in bfloat16
        torch.nn.Conv2d(16, 1024, 1), torch.nn.Conv2d(1024, 8, 3, padding=1),  # 2 KiB pixels: channels-last
        torch.nn.Conv2d(8, 2048, 1),  # 1x1: channels-last
        torch.nn.Conv2d(2048, 2048, 1),  # 1x1 over 4 KiB pixels: channels-last too
        torch.nn.Conv2d(2048, 16, 3, padding=1, groups=2),  # grouped (not measured): channels-last
    ).eval()
    x = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.double()(x.double())
    model.float()
    prepared = prepare_for_inference(copy.deepcopy(model), torch.device("cpu"), dtype)
    layouts = [prepared[i].weight.is_contiguous(memory_format=torch.channels_last) for i in (2, 4, 7)]
    hooked = [i for i, m in enumerate(prepared) if m._forward_pre_hooks or m._forward_hooks]
    assert hooked == ([] if dtype == torch.float32 else [2])
    again = prepare_for_inference(copy.deepcopy(prepared), torch.device("cpu"), dtype)  # prepared twice
    assert [i for i, m in enumerate(again) if m._forward_pre_hooks or m._forward_hooks] == hooked
    assert all(len(m._forward_pre_hooks) <= 1 and len(m._forward_hooks) <= 1 for m in again)  # not stacked
    assert again[2].weight.is_contiguous()
    seen = []
    prepared[2].register_forward_hook(lambda m, args, out: seen.append((args[0].is_contiguous(), out)))
    with torch.no_grad():
        got = prepared(x.to(dtype))  # NCHW, as CrowdCounter passes images
    if dtype == torch.float32:  # float32 on CPUs is NCHW throughout
        assert layouts == [False, False, False] and seen[0][0]
        assert torch.allclose(got.double(), reference, rtol=1e-5, atol=1e-5)
        return
    assert layouts == [False, True, True]
    assert seen[0][0] and seen[0][1].is_contiguous(memory_format=torch.channels_last)  # NCHW in, channels-last out
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    error = (got.double() - reference).abs().max().item()
    assert error <= 0.01 * reference.abs().max().item()  # bfloat16 rounding: measured 0.5 %
    all_channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last).to(dtype)
    with torch.no_grad():
        same = all_channels_last(x.to(dtype))
    assert (got.double() - same.double()).abs().max().item() <= 0.01 * reference.abs().max().item()


def test_real_size_resnets_keep_only_their_decoder_convolution_nchw():
    """RN50, RN101 and RN50x64 (meta device, no memory): of every convolution, only the decoder's 3x3 over
    2048 channels has a 4 KiB bfloat16 pixel; RN50x4 and RN50x16 (1280, 1536 channels) have none."""
    for backbone, expected in [("RN50", ["decoder.0.conv2"]), ("RN101", ["decoder.0.conv2"]),
                               ("RN50x64", ["decoder.0.conv2"]), ("RN50x4", []), ("RN50x16", [])]:
        model = meta_model(backbone, 8).to(memory_format=torch.channels_last)
        assert runtime.keep_aliasing_convs_nchw(model, torch.bfloat16) == len(expected)
        assert [name for name, m in model.named_modules() if getattr(m, "_clip_ebc_nchw", False)] == expected, backbone


def test_optimized_counter_matches_the_plain_one(converted_rn50, converted_vit):
    image, _ = make_scene(300, 400, 40)
    for model in (converted_rn50, converted_vit):
        plain = CrowdCounter(model, device="cpu", optimize=False, precision="float32").count(image)
        fast = CrowdCounter(model, device="cpu", precision="float32").count(image)
        assert fast.count == pytest.approx(plain.count, rel=1e-5)
        assert abs(fast.density - plain.density).max() < 1e-4
    assert not getattr(converted_rn50, "_clip_ebc_inference_only", False)  # the caller's model is untouched


def test_head_stays_float32_under_autocast(converted_rn50):
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = converted_rn50(x)
    assert out.logits.dtype == out.probs.dtype == out.density.dtype == torch.float32


@pytest.mark.skipif(not runtime.native_cpu_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_counts_are_close_to_float32(converted_rn50, converted_vit):
    image, _ = make_scene(448, 640, 80)
    for model in (converted_rn50, converted_vit):
        reference = CrowdCounter(model, device="cpu", precision="float32").count(image).count
        low = CrowdCounter(model, device="cpu", precision="bfloat16")
        assert low.dtype == torch.bfloat16
        assert low.count(image).count == pytest.approx(reference, rel=0.02)  # tiny random models: 2 %


def test_weights_held_in_bfloat16_compute_what_autocast_computes(converted_rn50, converted_vit):
    """hold_weights_in replaces autocast's per-call casts; the numbers must not change at all."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for model in (converted_rn50, converted_vit):
        cast = prepare_for_inference(copy.deepcopy(model), torch.device("cpu"), torch.float32, onednn=False)
        cast = cast.to(memory_format=torch.channels_last)  # the layout bfloat16 gets, so the same kernels run
        held = prepare_for_inference(copy.deepcopy(model), torch.device("cpu"), torch.bfloat16, onednn=False)
        assert held.image_encoder.conv1.weight.dtype == torch.bfloat16
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected = cast(x).density
        with torch.no_grad():
            got = held(x).density
        assert got.dtype == expected.dtype == torch.float32
        assert torch.equal(got, expected)


def test_precision_choices(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_cpu_bfloat16", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16  # native bfloat16: 2-3x float32's speed
    monkeypatch.setattr(runtime, "native_cpu_bfloat16", lambda: False)
    assert resolve_precision("auto", cpu) is torch.float32  # emulated bfloat16 would be slower
    assert resolve_precision("fp32", cpu) is torch.float32
    with pytest.raises(ConfigError, match="float16 is not fast on CPUs"):
        resolve_precision("float16", cpu)
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("int8", cpu)
    monkeypatch.setattr(runtime, "native_cpu_bfloat16", lambda: False)
    with pytest.raises(ConfigError, match="no native bfloat16 .* emulated and slower than float32"):
        resolve_precision("bfloat16", cpu)
    monkeypatch.setattr(runtime, "native_cpu_bfloat16", lambda: True)
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16


def test_compiled_counter_counts_the_same(converted_vit):
    image, _ = make_scene(224, 448, 20)
    plain = CrowdCounter(converted_vit, device="cpu", precision="float32").count(image)
    compiled = CrowdCounter(converted_vit, device="cpu", compile=True, precision="float32").count(image)
    assert compiled.count == pytest.approx(plain.count, rel=1e-5)
