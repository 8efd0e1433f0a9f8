import json
import math

import pytest

from clip_ebc.bins import official_anchor_points, official_bins
from clip_ebc.config import BACKBONES, ClipArchitecture, ModelConfig, canonical_backbone
from clip_ebc.errors import ConfigError

TINY_VIT = ClipArchitecture(embed_dim=16, image_resolution=224, vision_layers=2, vision_width=32,
                            vision_patch_size=16, vision_heads=2, transformer_width=4,
                            transformer_heads=2, transformer_layers=1)


def rn50_config(**kw) -> ModelConfig:
    base = dict(backbone="RN50", bins=official_bins(8, 4), anchor_points=official_anchor_points(8, 4, "sha"))
    base.update(kw)
    return ModelConfig(**base)


# Spec §1.2: CLIP embed E, encoder channels, decoder defaults, text width/heads/layers, vision heads.
SPEC_TABLE = {
    "RN50": (1024, 2048, (2048,), (512, 8, 12), 32),
    "RN101": (512, 2048, (2048, 1024), (512, 8, 12), 32),
    "RN50x4": (640, 2560, (1280,), (640, 10, 12), 40),
    "RN50x16": (768, 3072, (1536,), (768, 12, 12), 48),
    "RN50x64": (1024, 4096, (2048,), (1024, 16, 12), 64),
    "ViT-B-32": (512, 768, (768,), (512, 8, 12), 12),
    "ViT-B-16": (512, 768, (768,), (512, 8, 12), 12),
    "ViT-L-14": (768, 1024, (1024,), (768, 12, 12), 16),
}


@pytest.mark.parametrize("name", list(SPEC_TABLE))
def test_named_architectures_match_the_spec(name):
    embed, channels, decoder, text, heads = SPEC_TABLE[name]
    arch = ClipArchitecture.for_backbone(name)
    assert arch == ClipArchitecture.from_open_clip(name)  # the built-in table is open_clip's config
    assert (arch.embed_dim, arch.encoder_channels, arch.vision_heads) == (embed, channels, heads)
    assert (arch.transformer_width, arch.transformer_heads, arch.transformer_layers) == text
    assert (arch.context_length, arch.vocab_size) == (77, 49408)
    assert BACKBONES[name].decoder_channels == decoder
    config = ModelConfig(backbone=name, bins=official_bins(8, 4), anchor_points=[0, 1, 2, 3, 4])
    assert config.decoder_channels == decoder
    assert config.input_size == (448 if arch.is_resnet else 224)
    assert config.num_vpt == (0 if arch.is_resnet else 32)


@pytest.mark.parametrize(
    "alias, name",
    [("clip_resnet50", "RN50"), ("resnet50x16", "RN50x16"), ("rn101", "RN101"), ("clip_vit_b_16", "ViT-B-16"),
     ("ViT-B/32", "ViT-B-32"), ("vit_l_14", "ViT-L-14"), ("ViT-B-16-quickgelu", "ViT-B-16"), ("vgg19_ae", None),
     ("vit_l_14_336px", None)],
)
def test_backbone_aliases(alias, name):
    assert canonical_backbone(alias) == name


def test_defaults_are_filled_in():
    c = rn50_config()
    assert c.backbone == "RN50" and c.reduction == 8 and c.num_bins == 5
    assert c.prompts == ("There is no person.", "There is one person.", "There are two people.",
                         "There are three people.", "There are more than four people.")
    assert c.mean == (0.485, 0.456, 0.406) and c.std == (0.229, 0.224, 0.225)
    assert c.encoder_stride == 16 and rn50_config(reduction=32).encoder_stride == 32
    assert not c.is_vit


@pytest.mark.parametrize(
    "config",
    [
        lambda: rn50_config(provenance={"dataset": "sha", "source_sha256": "ab" * 32}),
        lambda: rn50_config(backbone="clip_resnet101", reduction=16, bins=official_bins(16, 8, "dynamic"),
                            anchor_points=official_anchor_points(16, 8, "qnrf", "dynamic"), prompt_type="number"),
        lambda: ModelConfig(backbone="vit_b_16", clip=TINY_VIT, bins=official_bins(8, 4), anchor_points=[0, 1, 2, 3, 4.3],
                            decoder_channels=("U", 32), num_vpt=8, deep_vpt=False, vpt_drop=0.1, input_size=256),
    ],
)
def test_json_round_trip(config, tmp_path):
    c = config()
    text = c.to_json(tmp_path / "config.json")
    data = json.loads(text)  # strict JSON: no Infinity
    assert data["bins"][-1][1] is None and data["format_version"] == 1
    assert ModelConfig.from_json(tmp_path / "config.json") == c
    assert ModelConfig.from_json(text) == c
    assert math.isinf(ModelConfig.from_dict(data).bins[-1][1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backbone="vgg19"), "unknown backbone 'vgg19'; choose one of RN50"),
        (dict(reduction=4), "reduction \\(block size\\) must be 8, 16 or 32, got 4"),
        (dict(anchor_points=[0, 1, 2]), "5 bins need 5 anchor points, got 3"),
        (dict(prompts=("a", "b")), "5 bins need 5 prompts, got 2"),
        (dict(prompt_type="digits"), "prompt_type must be 'word' or 'number'"),
        (dict(num_vpt=32), "applies to ViT backbones only"),
        (dict(decoder_channels=("U",)), "at least one positive width"),
        (dict(mean=(0.5, 0.5)), "mean needs 3 values"),
        (dict(std=(0.2, 0.0, 0.2)), "std values must be between 0.0001 and 10000"),
        (dict(format_version=99), "format_version 99.*upgrade clip-ebc"),
        (dict(anchor_points=[0, 1, 2, 3, math.nan]), "finite \\(in float32\\) and non-negative"),
        # values that are numbers in Python but break the model as it holds them (float32)
        (dict(std=(0.2, 1e-45, 0.2)), "std values must be between 0.0001 and 10000"),
        (dict(std=(0.2, math.nan, 0.2)), "std values must be between"),
        (dict(mean=(0.5, math.nan, 0.5)), "mean values must be finite numbers"),
        (dict(anchor_points=[0, 1, 2, 3, 1e39]), "finite \\(in float32\\) and non-negative"),
        (dict(decoder_channels=(1_000_000_000,)), "decoder_channels must be at most 65,536, got 1000000000"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        rn50_config(**kwargs)


def test_vit_input_size_must_fit_the_patch():
    with pytest.raises(ConfigError, match="input_size 230 must be a multiple of the patch size 16"):
        ModelConfig(backbone="ViT-B-16", bins=official_bins(8, 4), anchor_points=[0, 1, 2, 3, 4], input_size=230)


def test_from_dict_rejects_unknown_and_missing_fields():
    data = rn50_config().to_dict()
    with pytest.raises(ConfigError, match="unknown model config fields \\['colour'\\]"):
        ModelConfig.from_dict({**data, "colour": "red"})
    del data["bins"]
    with pytest.raises(ConfigError, match="missing the required fields \\['bins'\\]"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="nested too deeply"):
        ModelConfig.from_json('{"bins": ' + "[" * 100_000 + "]" * 100_000 + "}")


@pytest.mark.parametrize("bins, message", [([[0], [1, None]], "bin 0 must be a pair \\(lo, hi\\), got \\[0\\]"),
                                           ([0, [1, None]], "bin 0 must be a pair \\(lo, hi\\), got 0")])
def test_from_dict_reports_malformed_bins(bins, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({**rn50_config().to_dict(), "bins": bins, "anchor_points": [0, 1]})


def test_clip_architecture_from_official_fields():
    fields = {"embed_dim": 16, "image_resolution": 224, "vision_layers": [1, 1, 1, 1], "vision_width": 4,
              "vision_patch_size": None, "context_length": 77, "vocab_size": 49408, "transformer_width": 4,
              "transformer_heads": 2, "transformer_layers": 1}
    arch = ClipArchitecture.from_dict(fields)
    assert arch.is_resnet and arch.vision_layers == (1, 1, 1, 1) and arch.vision_heads == 2
    assert arch.encoder_channels == 128
    with pytest.raises(ConfigError, match="unknown CLIP architecture fields \\['depth'\\]"):
        ClipArchitecture.from_dict({**fields, "depth": 3})
    with pytest.raises(ConfigError, match="needs vision_patch_size"):
        ClipArchitecture.from_dict({**fields, "vision_layers": 12})


TINY_CLIP = {"embed_dim": 16, "image_resolution": 64, "vision_layers": [1, 1, 1, 1], "vision_width": 8,
             "vision_patch_size": None, "vision_heads": 2, "transformer_width": 8, "transformer_heads": 2,
             "transformer_layers": 1}


@pytest.mark.parametrize(
    "field, value, message",
    [  # what a hand-edited or damaged config.json may hold: one clear ConfigError each, no raw TypeError
        ("reduction", None, "reduction \\(block size\\) must be 8, 16 or 32, got None"),
        ("reduction", "x", "reduction \\(block size\\) must be 8, 16 or 32, got 'x'"),
        ("bins", 5, "bins must be a list of \\(lo, hi\\) pairs, got 5"),
        ("bins", [[0, 0], [1, "many"]], "bin 1 must be a pair of numbers \\(lo, hi\\), got \\[1, 'many'\\]"),
        ("bins", [[0, 0], [math.nan, None]], "bin 1 must be an integer range"),
        ("anchor_points", "abc", "ModelConfig.anchor_points must be a list of numbers, got 'abc'"),
        ("anchor_points", None, "ModelConfig.anchor_points must be a list of numbers, got None"),
        ("mean", None, "invalid model configuration: TypeError"),
        ("clip", [1, 2], "ModelConfig.clip must be a mapping of CLIP architecture fields"),
        ("provenance", [1], "ModelConfig.provenance must be a mapping, got \\[1\\]"),
        ("prompts", 3, "ModelConfig.prompts must be a list of texts, got 3"),
        ("format_version", "x", "ModelConfig.format_version must be an integer, got 'x'"),
        ("input_size", -5, "ModelConfig.input_size must be at least 8, got -5"),
        ("input_size", 447.5, "ModelConfig.input_size must be an integer, got 447.5"),
        ("decoder_channels", "128", "decoder_channels must be a list of widths, got '128'"),
        ("backbone", None, "ModelConfig.backbone must be a name \\(string\\), got None"),
    ],
)
def test_malformed_config_json_fields(field, value, message):
    data = {**rn50_config().to_dict(), "clip": TINY_CLIP, field: value}
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_malformed_clip_architecture_fields():
    with pytest.raises(ConfigError, match="ClipArchitecture.vision_width must be an integer, got 'abc'"):
        ClipArchitecture.from_dict({**TINY_CLIP, "vision_width": "abc"})
    with pytest.raises(ConfigError, match="ClipArchitecture.embed_dim must be at least 1, got 0"):
        ClipArchitecture.from_dict({**TINY_CLIP, "embed_dim": 0})
    without_heads = {k: v for k, v in TINY_CLIP.items() if k != "vision_heads"}
    with pytest.raises(ConfigError, match="ClipArchitecture.vision_width must be an integer, got 'abc'"):
        ClipArchitecture.from_dict({**without_heads, "vision_width": "abc"})
    assert ClipArchitecture.from_dict({**TINY_CLIP, "vision_width": 8.0}).vision_width == 8


def test_numpy_numbers_are_accepted():
    np = pytest.importorskip("numpy")
    c = ModelConfig.from_dict({**rn50_config().to_dict(), "clip": {**TINY_CLIP, "vision_width": np.int64(8)},
                               "reduction": np.int64(8), "input_size": np.int32(448), "decoder_channels": [np.int64(32)],
                               "anchor_points": np.array([0, 1, 2, 3, 4.3])})
    assert (c.reduction, c.input_size, c.decoder_channels, c.clip.vision_width) == (8, 448, (32,), 8)
    assert c.anchor_points == (0, 1, 2, 3, 4.3) and type(c.input_size) is int
    assert ModelConfig.from_dict({**rn50_config().to_dict(), "reduction": "16"}).reduction == 16
