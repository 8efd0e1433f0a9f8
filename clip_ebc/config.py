"""Model configuration: everything needed to rebuild a CLIP-EBC model offline.

:class:`ModelConfig` is written to ``config.json`` next to ``model.safetensors``; together they are a
complete checkpoint. :class:`ClipArchitecture` describes the CLIP towers with the official
implementation's field names, so custom (for example tiny) CLIP models can be described too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

from .bins import PROMPT_TYPES, Bin, bin_prompts, validate_bins
from .errors import ConfigError

FORMAT_VERSION = 1
"""Version of the ``config.json`` layout written by this package."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
REDUCTIONS: tuple[int, ...] = (8, 16, 32)

DecoderEntry = Union[int, str]
"""A decoder block's output channels, or ``"U"`` for a parameter-free x2 bilinear upsampling."""


@dataclass(frozen=True)
class BackboneInfo:
    """A CLIP backbone the official implementation supports."""

    name: str
    """open_clip model name, e.g. ``"RN50"`` or ``"ViT-B-16"``."""
    official_name: str
    """Name in the official code, e.g. ``"resnet50"`` (used as ``clip_resnet50`` in run names)."""
    decoder_channels: tuple[int, ...]
    """Default decoder widths (hard-coded per backbone upstream, spec §1.6)."""
    clip: tuple[Any, ...]
    """The CLIP architecture as open_clip's model config gives it (``tests/test_config.py`` checks them):
    embed dim, image resolution, vision layers, vision width, patch size, text width, text heads."""


BACKBONES: dict[str, BackboneInfo] = {
    b.name: b
    for b in (
        BackboneInfo("RN50", "resnet50", (2048,), (1024, 224, (3, 4, 6, 3), 64, None, 512, 8)),
        BackboneInfo("RN101", "resnet101", (2048, 1024), (512, 224, (3, 4, 23, 3), 64, None, 512, 8)),
        BackboneInfo("RN50x4", "resnet50x4", (1280,), (640, 288, (4, 6, 10, 6), 80, None, 640, 10)),
        BackboneInfo("RN50x16", "resnet50x16", (1536,), (768, 384, (6, 8, 18, 8), 96, None, 768, 12)),
        BackboneInfo("RN50x64", "resnet50x64", (2048,), (1024, 448, (3, 15, 36, 10), 128, None, 1024, 16)),
        BackboneInfo("ViT-B-32", "vit_b_32", (768,), (512, 224, 12, 768, 32, 512, 8)),
        BackboneInfo("ViT-B-16", "vit_b_16", (768,), (512, 224, 12, 768, 16, 512, 8)),
        BackboneInfo("ViT-L-14", "vit_l_14", (1024,), (768, 224, 24, 1024, 14, 768, 12)),
    )
}


MAX_SIZE = 1 << 16
"""Largest width, depth, head count, resolution or count a config may hold: far above every CLIP model,
far below sizes whose tensors could not even be described (a hand-edited 10**9 would overflow)."""
FLOAT32_MAX = 3.4028234663852886e38
STD_RANGE = (1e-4, 1e4)
"""Normalisation standard deviations outside this range make the model's inputs overflow or vanish in
float32 (ImageNet's are about 0.22)."""


def _integer(owner: str, name: str, value: Any, *, minimum: int | None = None, maximum: int = MAX_SIZE) -> int:
    """``value`` as an int, or a ConfigError naming ``owner.name`` (a hand-edited config.json may hold
    strings, nulls or fractions)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):  # NumPy numbers are Real
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}.")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}.") from None
    if not number.is_integer():
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}.")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{owner}.{name} must be at least {minimum}, got {value!r}.")
    if number > maximum:
        raise ConfigError(f"{owner}.{name} must be at most {maximum:,}, got {value!r}.")
    return int(number)


def _alias_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace("/", "")


_ALIASES: dict[str, str] = {}
for _b in BACKBONES.values():
    for _alias in (_b.name, _b.official_name, "clip_" + _b.official_name, _b.name + "-quickgelu"):
        _ALIASES[_alias_key(_alias)] = _b.name


def canonical_backbone(name: str) -> str | None:
    """The open_clip name for a backbone alias (``"clip_resnet50"``, ``"vit_b_16"``, ``"ViT-B/16"``...).

    Returns ``None`` when the name is not one of the supported backbones.
    """
    return _ALIASES.get(_alias_key(str(name)))


@dataclass(frozen=True)
class ClipArchitecture:
    """The CLIP towers' hyperparameters, with the official implementation's field names.

    ``vision_layers`` is a 4-tuple for a ResNet (blocks per stage) and an int for a ViT (depth).
    """

    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, ...]
    vision_width: int
    vision_patch_size: int | None
    vision_heads: int
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        owner = "ClipArchitecture"
        if isinstance(self.vision_layers, (list, tuple)):
            if len(self.vision_layers) != 4:
                raise ConfigError(
                    f"a ResNet needs vision_layers with 4 stages, got {list(self.vision_layers)}."
                )
            set_("vision_layers", tuple(_integer(owner, "vision_layers", v, minimum=1) for v in self.vision_layers))
        else:
            set_("vision_layers", _integer(owner, "vision_layers", self.vision_layers, minimum=1))
            if not self.vision_patch_size:
                raise ConfigError("a ViT architecture (integer vision_layers) needs vision_patch_size.")
        if self.vision_patch_size is not None:
            set_("vision_patch_size", _integer(owner, "vision_patch_size", self.vision_patch_size, minimum=1))
        for name in ("embed_dim", "image_resolution", "vision_width", "vision_heads", "transformer_width",
                     "transformer_heads", "transformer_layers", "context_length", "vocab_size"):
            set_(name, _integer(owner, name, getattr(self, name), minimum=1))

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.vision_layers, tuple)

    @property
    def encoder_channels(self) -> int:
        """Channels of the feature map the image encoder returns (32 x width for a ResNet)."""
        return self.vision_width * 32 if self.is_resnet else self.vision_width

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.is_resnet:
            d["vision_layers"] = list(self.vision_layers)  # type: ignore[arg-type]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipArchitecture:
        """Build from the official config fields; ``vision_heads`` defaults as CLIP does."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown CLIP architecture fields {unknown}; expected {sorted(known)}.")
        if "vision_heads" not in data and "vision_width" in data:
            layers = data.get("vision_layers")
            width = _integer("ClipArchitecture", "vision_width", data["vision_width"], minimum=1)
            data["vision_heads"] = width * 32 // 64 if isinstance(layers, (list, tuple)) else width // 64
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING)
        if missing:
            raise ConfigError(f"the CLIP architecture is missing the fields {missing}.")
        return cls(**data)

    @classmethod
    def for_backbone(cls, name: str) -> ClipArchitecture:
        """The CLIP architecture of a supported backbone (:data:`BACKBONES`); no weights, no open_clip."""
        return _backbone_architecture(name)

    @classmethod
    def from_open_clip(cls, name: str) -> ClipArchitecture:
        """The architecture of one of open_clip's model configs (imports open_clip; no weights are touched)."""
        import open_clip

        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise ConfigError(f"open_clip has no model config named {name!r}.")
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        layers = v["layers"]
        width = int(v["width"])
        resnet = isinstance(layers, (list, tuple))
        head_width = int(v.get("head_width", 64))
        return cls(
            embed_dim=int(cfg["embed_dim"]),
            image_resolution=int(v["image_size"]),
            vision_layers=tuple(layers) if resnet else int(layers),
            vision_width=width,
            vision_patch_size=None if resnet else int(v["patch_size"]),
            vision_heads=width * 32 // head_width if resnet else width // head_width,
            context_length=int(t.get("context_length", 77)),
            vocab_size=int(t.get("vocab_size", 49408)),
            transformer_width=int(t["width"]),
            transformer_heads=int(t["heads"]),
            transformer_layers=int(t["layers"]),
        )


@lru_cache(maxsize=None)
def _backbone_architecture(name: str) -> ClipArchitecture:
    info = BACKBONES.get(name)
    if info is None:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    embed, resolution, layers, width, patch, text_width, text_heads = info.clip
    return ClipArchitecture(embed_dim=embed, image_resolution=resolution, vision_layers=layers, vision_width=width,
                            vision_patch_size=patch, vision_heads=width * 32 // 64 if patch is None else width // 64,
                            transformer_width=text_width, transformer_heads=text_heads)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a CLIP-EBC model without downloading anything.

    Units: ``reduction`` is the block size in pixels (one density-map cell covers ``reduction x
    reduction`` input pixels); ``anchor_points`` are people per block; ``input_size`` is in pixels.
    Fields left as ``None`` are filled from the backbone's defaults, so a saved config is explicit.
    """

    backbone: str
    """open_clip name of a supported backbone (aliases like ``clip_resnet50`` are accepted), or any
    name when ``clip`` describes a custom architecture."""
    bins: tuple[Bin, ...]
    """Inclusive integer ranges of people per block; the last is open (``hi = inf``)."""
    anchor_points: tuple[float, ...]
    """People per block that each bin contributes to the density map."""
    reduction: int = 8
    """Block size r in pixels: 8, 16 or 32."""
    prompt_type: str = "word"
    """``"word"`` ("There are three people.") or ``"number"`` ("There are 3 people.")."""
    prompts: tuple[str, ...] | None = None
    """One text prompt per bin; derived from ``bins`` and ``prompt_type`` when ``None``."""
    clip: ClipArchitecture | None = None
    """Custom CLIP architecture; ``None`` uses open_clip's config of ``backbone``."""
    decoder_channels: tuple[DecoderEntry, ...] | None = None
    """Output channels of each decoder block (``"U"`` = x2 upsampling); per-backbone default."""
    input_size: int | None = None
    """ViT: side of the positional-embedding grid in pixels and of the sliding window (224).
    ResNet: training crop side (448). Not a limit on inference image sizes."""
    num_vpt: int | None = None
    """Visual prompt tokens per ViT block (32 by default; 0 disables VPT; ResNets have none)."""
    deep_vpt: bool = True
    """Deep VPT (fresh prompts for every block) or shallow (prompts only before the first block)."""
    vpt_drop: float = 0.0
    """Dropout rate on the visual prompts during training."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel mean of RGB in [0, 1] used for normalisation (ImageNet, as upstream)."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Per-channel standard deviation used for normalisation (ImageNet, as upstream)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Free-form record of where the weights came from (source, commit, dataset, conversion)."""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        try:
            self._check()
        except ConfigError:
            raise
        except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong type in a config.json
            raise ConfigError(f"invalid model configuration: {type(e).__name__}: {e}.") from e

    def _check(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        owner = "ModelConfig"

        if isinstance(self.clip, Mapping):
            set_("clip", ClipArchitecture.from_dict(self.clip))
        elif self.clip is not None and not isinstance(self.clip, ClipArchitecture):
            raise ConfigError(f"ModelConfig.clip must be a mapping of CLIP architecture fields, got {self.clip!r}.")
        if not isinstance(self.backbone, str):
            raise ConfigError(f"ModelConfig.backbone must be a name (string), got {self.backbone!r}.")
        canonical = canonical_backbone(self.backbone)
        if canonical is not None:
            set_("backbone", canonical)
        elif self.clip is None:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)} or pass a "
                "custom CLIP architecture as `clip`."
            )
        set_("format_version", _integer(owner, "format_version", self.format_version, minimum=1))
        if self.format_version > FORMAT_VERSION:
            raise ConfigError(
                f"this config has format_version {self.format_version}, but this version of clip-ebc "
                f"reads up to {FORMAT_VERSION}; upgrade clip-ebc."
            )
        try:
            reduction: int | None = _integer(owner, "reduction", self.reduction)
        except ConfigError:
            reduction = None
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction (block size) must be 8, 16 or 32, got {self.reduction!r}.")
        set_("reduction", reduction)
        if self.prompt_type not in PROMPT_TYPES:
            raise ConfigError(f"prompt_type must be 'word' or 'number', got {self.prompt_type!r}.")

        bins = validate_bins(self.bins)
        set_("bins", bins)
        if isinstance(self.anchor_points, (str, bytes, Mapping)) or not isinstance(self.anchor_points, Iterable):
            raise ConfigError(f"ModelConfig.anchor_points must be a list of numbers, got {self.anchor_points!r}.")
        anchors = tuple(float(a) for a in self.anchor_points)
        if len(anchors) != len(bins):
            raise ConfigError(f"{len(bins)} bins need {len(bins)} anchor points, got {len(anchors)}.")
        if any(not math.isfinite(a) or a < 0 or a > FLOAT32_MAX for a in anchors):  # the model holds float32
            raise ConfigError(f"anchor points must be finite (in float32) and non-negative, got {list(anchors)}.")
        set_("anchor_points", anchors)
        if self.prompts is not None and (isinstance(self.prompts, str) or not isinstance(self.prompts, (list, tuple))
                                         or not all(isinstance(p, str) for p in self.prompts)):
            raise ConfigError(f"ModelConfig.prompts must be a list of texts, got {self.prompts!r}.")
        prompts = tuple(bin_prompts(bins, self.prompt_type)) if self.prompts is None else tuple(self.prompts)
        if len(prompts) != len(bins):
            raise ConfigError(f"{len(bins)} bins need {len(bins)} prompts, got {len(prompts)}.")
        set_("prompts", prompts)

        arch = self.architecture
        if self.decoder_channels is None:
            info = BACKBONES.get(self.backbone)
            default = info.decoder_channels if info else (arch.encoder_channels,)
            set_("decoder_channels", default)
        if isinstance(self.decoder_channels, str) or not isinstance(self.decoder_channels, (list, tuple)):
            raise ConfigError(f"decoder_channels must be a list of widths, got {self.decoder_channels!r}.")
        decoder = tuple(c if c == "U" else _integer(owner, "decoder_channels", c) for c in self.decoder_channels)
        if not any(c != "U" for c in decoder) or any(c != "U" and c <= 0 for c in decoder):
            raise ConfigError(
                f"decoder_channels needs at least one positive width (\"U\" = upsample), got {list(decoder)}."
            )
        set_("decoder_channels", decoder)

        if self.input_size is None:
            set_("input_size", 448 if arch.is_resnet else 224)
        set_("input_size", _integer(owner, "input_size", self.input_size, minimum=self.reduction))
        if arch.is_resnet:
            if self.num_vpt:
                raise ConfigError("visual prompt tuning (num_vpt) applies to ViT backbones only.")
            set_("num_vpt", 0)
        else:
            patch = int(arch.vision_patch_size)  # type: ignore[arg-type]
            if self.input_size % patch:
                raise ConfigError(
                    f"input_size {self.input_size} must be a multiple of the patch size {patch}."
                )
            set_("num_vpt", 32 if self.num_vpt is None else _integer(owner, "num_vpt", self.num_vpt, minimum=0))
        if not 0.0 <= float(self.vpt_drop) < 1.0:
            raise ConfigError(f"vpt_drop must be in [0, 1), got {self.vpt_drop!r}.")
        set_("vpt_drop", float(self.vpt_drop))
        set_("deep_vpt", bool(self.deep_vpt))
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ConfigError(f"{name} needs 3 values (R, G, B), got {list(value)}.")
            set_(name, value)
        if not all(math.isfinite(m) and abs(m) <= STD_RANGE[1] for m in self.mean):
            raise ConfigError(f"mean values must be finite numbers (ImageNet's are about 0.45), got {list(self.mean)}.")
        if not all(STD_RANGE[0] <= s <= STD_RANGE[1] for s in self.std):  # also refuses NaN
            raise ConfigError(f"std values must be between {STD_RANGE[0]:g} and {STD_RANGE[1]:g} (ImageNet's are about "
                              f"0.22), got {list(self.std)}.")
        if not isinstance(self.provenance, Mapping):
            raise ConfigError(f"ModelConfig.provenance must be a mapping, got {self.provenance!r}.")
        set_("provenance", dict(self.provenance))

    # ---------------------------------------------------------------------------------- derived

    @property
    def architecture(self) -> ClipArchitecture:
        """The CLIP architecture: the custom one, or the standard one of ``backbone``."""
        return self.clip if self.clip is not None else ClipArchitecture.for_backbone(self.backbone)

    @property
    def is_vit(self) -> bool:
        return not self.architecture.is_resnet

    @property
    def encoder_stride(self) -> int:
        """Output stride of the image encoder: the patch size for a ViT; 16 for a ResNet at
        reduction <= 16 (layer4 de-strided) and 32 otherwise."""
        arch = self.architecture
        if not arch.is_resnet:
            return int(arch.vision_patch_size)  # type: ignore[arg-type]
        return 16 if self.reduction <= 16 else 32

    @property
    def num_bins(self) -> int:
        return len(self.bins)

    # ------------------------------------------------------------------------------ serialising

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the open bin's upper bound is written as ``null``)."""
        return {
            "format_version": self.format_version,
            "backbone": self.backbone,
            "clip": None if self.clip is None else self.clip.to_dict(),
            "reduction": self.reduction,
            "bins": [[_json_number(lo), None if math.isinf(hi) else _json_number(hi)] for lo, hi in self.bins],
            "anchor_points": list(self.anchor_points),
            "prompt_type": self.prompt_type,
            "prompts": list(self.prompts or ()),
            "decoder_channels": list(self.decoder_channels or ()),
            "input_size": self.input_size,
            "num_vpt": self.num_vpt,
            "deep_vpt": self.deep_vpt,
            "vpt_drop": self.vpt_drop,
            "mean": list(self.mean),
            "std": list(self.std),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean a newer format)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config fields {unknown}; the file was written by a newer clip-ebc or "
                "is not a clip-ebc config."
            )
        missing = [n for n in ("backbone", "bins", "anchor_points") if n not in data]
        if missing:
            raise ConfigError(f"the model config is missing the required fields {missing}.")
        return cls(**data)  # __post_init__ turns JSON lists, null bin ends and the clip object into fields

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> ModelConfig:
        """Read a config from a JSON file (a ``Path``, or a ``str`` path) or a JSON string (a ``str``
        starting with ``{``)."""
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"cannot read the model config {path}: {e.strerror or e}.") from e
            except UnicodeDecodeError as e:
                raise ConfigError(f"the model config {path} is not UTF-8 text; it is not a clip-ebc config.json.") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"the model config is not valid JSON ({e.msg} at line {e.lineno}).") from e
        except RecursionError:
            raise ConfigError("the model config is nested too deeply to be a clip-ebc config.json.") from None
        return cls.from_dict(data)


def _json_number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)

