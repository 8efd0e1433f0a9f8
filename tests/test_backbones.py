"""Every supported backbone at its real size, built on the meta device (no memory, no weights)."""

import functools

import pytest
import torch

from clip_ebc import CLIPEBC
from conftest import meta_model

# name: (encoder channels, CLIP embed dim, decoder widths, ViT patch or None)
BACKBONES = {
    "RN50": (2048, 1024, [2048], None),
    "RN101": (2048, 512, [2048, 1024], None),
    "RN50x4": (2560, 640, [1280], None),
    "RN50x16": (3072, 768, [1536], None),
    "RN50x64": (4096, 1024, [2048], None),
    "ViT-B-32": (768, 512, [768], 32),
    "ViT-B-16": (768, 512, [768], 16),
    "ViT-L-14": (1024, 768, [1024], 14),
}
H, W = 448, 672  # divisible by 14, 16 and 32


def build(name: str, reduction: int, **kw) -> CLIPEBC:
    """A real-size model on the meta device; without options, one per backbone and block size serves every
    test (meta tensors hold no values, and the tests only read shapes)."""
    return meta_model(name, reduction, **kw) if kw else _shared(name, reduction)


@functools.lru_cache(maxsize=None)
def _shared(name: str, reduction: int) -> CLIPEBC:
    return meta_model(name, reduction)


@pytest.mark.parametrize("reduction", [8, 16, 32])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_shapes(name, reduction):
    channels, embed, decoder, patch = BACKBONES[name]
    model = build(name, reduction).eval()
    x = torch.empty(2, 3, H, W, device="meta")
    stride = patch if patch else (16 if reduction <= 16 else 32)
    features = model.image_encoder(x)
    assert tuple(features.shape) == (2, channels, H // stride, W // stride)
    assert model.image_encoder.stride == stride
    assert tuple(model.encode(x).shape) == (2, channels, H // reduction, W // reduction)
    assert [block.conv1.weight.shape[0] for block in model.decoder] == decoder
    assert tuple(model.projection.weight.shape) == (embed, decoder[-1], 1, 1)
    assert tuple(model.text_embeddings.shape) == (5, embed)
    out = model(x)
    assert tuple(out.logits.shape) == tuple(out.probs.shape) == (2, 5, H // reduction, W // reduction)
    assert tuple(out.density.shape) == (2, 1, H // reduction, W // reduction)
    assert model.output_size(H, W) == (H // reduction, W // reduction)
    assert not any(k.startswith(("image_encoder.attnpool", "image_encoder.proj")) for k in model.state_dict())
    if patch is not None:
        assert tuple(model.image_encoder.vpt.shape) == (12 if name != "ViT-L-14" else 24, 32, channels)


@pytest.mark.parametrize("name", ["RN50", "RN101", "ViT-B-16", "ViT-L-14"])
@pytest.mark.parametrize("size", [(100, 150), (97, 131), (225, 239), (512, 384)])
def test_output_size_formula_matches_forward(name, size):
    for reduction in (8, 16, 32):
        model = build(name, reduction)
        out = model(torch.empty(1, 3, *size, device="meta"))
        assert tuple(out.density.shape[-2:]) == model.output_size(*size)


def test_odd_resnet_size_from_spec():
    # spec §1.3: 100x150 -> 6x9 encoder map at stride 16, x2 -> 12x18 at r = 8
    model = build("RN50", 8)
    assert tuple(model.image_encoder(torch.empty(1, 3, 100, 150, device="meta")).shape[-2:]) == (6, 9)
    assert model.output_size(100, 150) == (12, 18)


def test_decoder_shortcuts():
    rn101 = build("RN101", 8)
    assert isinstance(rn101.decoder[0].downsample, torch.nn.Identity)
    conv, bn = rn101.decoder[1].downsample
    assert tuple(conv.weight.shape) == (1024, 2048, 1, 1) and bn.num_features == 1024
    rn50x4 = build("RN50x4", 8)
    assert tuple(rn50x4.decoder[0].downsample[0].weight.shape) == (1280, 2560, 1, 1)
    vit = build("ViT-B-16", 8)
    assert tuple(vit.decoder[0].conv1.weight.shape) == (768, 768, 3, 3)  # BasicBlock: 3x3 convs


def test_resnet_layer4_stride():
    for reduction, pooled in ((8, False), (16, False), (32, True)):
        block = build("RN50", reduction).image_encoder.layer4[0]
        assert isinstance(block.avgpool, torch.nn.AvgPool2d) is pooled
        assert isinstance(getattr(block.downsample, "-1"), torch.nn.AvgPool2d) is pooled


def _float_elements(state, prefix):
    return sum(v.numel() for k, v in state.items() if k.startswith(prefix) and v.is_floating_point())


def test_rn50_sizes_match_the_official_model():
    # spec §1.2 / §7.2: official RN50 (reduction 8, truncation 4) tensor counts and sizes, text tower aside
    model = build("RN50", 8)
    state = model.state_dict()
    assert sum(k.startswith("image_encoder.") for k in state) == 330
    assert sum(k.startswith("decoder.") for k in state) == 18
    assert _float_elements(state, "image_encoder.") == 23_580_512
    assert _float_elements(state, "decoder.") == 46_161_920
    assert _float_elements(state, "projection.") == 2_098_176
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 71_775_073


def test_vit_b16_sizes_match_the_official_model():
    # spec §1.2 / §7.3: deep VPT (12 x 32 x 768), trainable = VPT + decoder + projection + logit scale
    model = build("ViT-B-16", 8)
    state = model.state_dict()
    assert state["image_encoder.positional_embedding"].shape == (197, 768)
    assert state["image_encoder.vpt"].numel() == 294_912
    assert _float_elements(state, "image_encoder.") - 294_912 == 85_799_424
    assert _float_elements(state, "decoder.") == 10_622_976
    assert _float_elements(state, "projection.") == 393_728
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 11_308_545
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"image_encoder", "decoder", "projection", "logit_scale"}
    assert [n for n, p in model.image_encoder.named_parameters() if p.requires_grad] == ["vpt"]


def test_vit_positional_table_follows_input_size():
    assert build("ViT-B-16", 8, input_size=256).state_dict()["image_encoder.positional_embedding"].shape == (257, 768)
    shallow = build("ViT-B-16", 8, deep_vpt=False, num_vpt=8)
    assert tuple(shallow.image_encoder.vpt.shape) == (1, 8, 768)
    assert build("ViT-B-16", 8, num_vpt=0).image_encoder.vpt is None


TINY_RN = dict(embed_dim=16, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=8, vision_patch_size=None,
               vision_heads=2, transformer_width=8, transformer_heads=2, transformer_layers=1)
TINY_VIT = dict(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=32, vision_patch_size=8,
                vision_heads=2, transformer_width=8, transformer_heads=2, transformer_layers=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_towers_equal_open_clips_bit_for_bit(dtype):
    """Our encoders are open_clip's, with its parameter names: the same state dict loads into both and
    they compute the same numbers, exactly, in float32 and under bfloat16 autocast."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import LayerNormFp32, QuickGELU, VisionTransformer

    from clip_ebc.backbones import ResNetEncoder, ViTEncoder
    from clip_ebc.config import ClipArchitecture

    torch.manual_seed(0)
    rn = ClipArchitecture(**TINY_RN)
    ours = ResNetEncoder(rn, 32).eval()
    theirs = ModifiedResNet(list(rn.vision_layers), rn.embed_dim, rn.vision_heads, rn.image_resolution, rn.vision_width).eval()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ours.state_dict().items()}
    state = {k: v.abs() + 0.5 if "running_var" in k else v for k, v in state.items()}
    ours.load_state_dict(state)
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.startswith("attnpool.") for k in missing)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
        a = ours(x)
        b = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(theirs.stem(x)))))
    assert torch.equal(a, b)

    vit = ClipArchitecture(**TINY_VIT)
    ours = ViTEncoder(vit, 32, num_vpt=0).eval()
    theirs = VisionTransformer(32, 8, vit.vision_width, 2, vit.vision_heads, 4.0, output_dim=16, act_layer=QuickGELU,
                               norm_layer=LayerNormFp32).eval()
    theirs.transformer.batch_first = False
    for block in theirs.transformer.resblocks:
        block.attn.batch_first = False
    state = {k: torch.randn_like(v) for k, v in ours.state_dict().items()}
    ours.load_state_dict(state)
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert unexpected == [] and missing == ["proj"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
        tokens, _ = ours.forward_tokens(x)
        y = theirs.conv1(x).flatten(2).transpose(1, 2)
        y = torch.cat([theirs.class_embedding.to(y.dtype).expand(2, 1, -1), y], dim=1) + theirs.positional_embedding.to(y.dtype)
        y = theirs.ln_pre(y).transpose(0, 1)
        for block in theirs.transformer.resblocks:
            y = block(y)
        y = theirs.ln_post(y.transpose(0, 1))
    assert torch.equal(tokens, y)


def test_inference_does_not_import_open_clip(tiny_dirs):
    import subprocess
    import sys

    code = (f"import sys; from clip_ebc import CrowdCounter; import numpy as np; "
            f"CrowdCounter({str(tiny_dirs['vit'])!r}, device='cpu').count(np.zeros((64, 64, 3), np.uint8)); "
            "print(sorted(m for m in ('open_clip', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
