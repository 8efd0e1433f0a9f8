"""Converting official CLIP-EBC checkpoints into clip-ebc checkpoints (the library half of
:mod:`clip_ebc.convert`; the command line is ``python -m clip_ebc.convert``).

An official checkpoint is a plain ``state_dict`` (``best_mae_0.pth``) or a resume file holding one
under ``model_state_dict`` (``ckpt.pth``). It stores no bins, anchors, prompts or text embeddings
(spec §7): those come from the run's hyperparameters, and the text embeddings are computed here,
once, with the checkpoint's own text tower, which is then dropped.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..bins import (
    DATASETS,
    GRANULARITIES,
    Bin,
    make_bins,
    middle_anchor_points,
    official_anchor_points,
)
from ..archive import looks_like_checkpoint
from ..config import BACKBONES, ClipArchitecture, DecoderEntry, ModelConfig, canonical_backbone
from ..errors import CheckpointError, ConfigError, ConversionError
from ..fetch import sha256_file
from ..model import CLIPEBC, check_state_dict

OFFICIAL_REPO = "https://github.com/Yiming-M/CLIP-EBC"

_VPT_KEY = re.compile(r"^vpt_(\d+)$")
_DECODER_KEY = re.compile(r"^decoder\.(\d+)\.conv1\.weight$")


def split_official_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Map official keys onto clip-ebc's: returns (model tensors, text-tower tensors).

    ``image_encoder.*``, ``projection.*`` and ``logit_scale`` keep their names, ``image_decoder.*``
    becomes ``decoder.*``, the VPT tables ``vpt_0 ... vpt_{L-1}`` are stacked into
    ``image_encoder.vpt`` (L, n, C), and ``text_encoder.*`` loses its prefix (open_clip's text names).
    A ``module.`` prefix left by DistributedDataParallel is removed.
    """
    model: dict[str, Tensor] = {}
    text: dict[str, Tensor] = {}
    vpt: dict[int, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ConversionError(f"entry {key!r} of the checkpoint is a {type(value).__name__}, not a tensor.")
        name = key.removeprefix("module.")
        # a copy: the converted model must not share storage with the caller's state dict
        value = value.detach().to(torch.float32 if value.is_floating_point() else value.dtype, copy=True)
        if name.startswith("text_encoder."):
            text[name[len("text_encoder."):]] = value
        elif name.startswith("image_decoder."):
            model["decoder." + name[len("image_decoder."):]] = value
        elif name.startswith(("image_encoder.", "projection.")) or name == "logit_scale":
            model[name] = value
        elif (m := _VPT_KEY.match(name)) is not None:
            vpt[int(m.group(1))] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"the checkpoint has {len(unknown)} key(s) that are not part of a CLIP-EBC model, e.g. "
            f"{unknown[:3]}; is it a CLIP-EBC checkpoint (and not, say, a VGG or CSRNet one)?"
        )
    if not any(k.startswith("image_encoder.") for k in model) or not text:
        raise ConversionError(
            "the checkpoint has no image_encoder.* or text_encoder.* tensors; it is not a CLIP-EBC checkpoint."
        )
    if vpt:
        if sorted(vpt) != list(range(len(vpt))):
            raise ConversionError(f"the VPT tables are not numbered 0..n-1: found vpt_{sorted(vpt)}.")
        model["image_encoder.vpt"] = torch.stack([vpt[i] for i in range(len(vpt))])
    return model, text


def _decoder_channels(model_sd: Mapping[str, Tensor]) -> tuple[DecoderEntry, ...] | None:
    """Decoder widths read from the (mapped) decoder weights; indices without a conv are parameter-free
    x2 upsamplings ("U") in the official config."""
    widths = {int(m.group(1)): int(v.shape[0]) for k, v in model_sd.items() if (m := _DECODER_KEY.match(k))}
    if not widths:
        return None
    return tuple(widths.get(i, "U") for i in range(max(widths) + 1))


def convert_official(
    state_dict: Mapping[str, Tensor],
    *,
    backbone: str,
    reduction: int,
    bins: Sequence[Bin],
    anchor_points: Sequence[float],
    prompt_type: str,
    input_size: int | None = None,
    num_vpt: int | None = None,
    deep_vpt: bool | None = True,
    clip_config: Mapping[str, Any] | ClipArchitecture | None = None,
    decoder_channels: Sequence[DecoderEntry] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> CLIPEBC:
    """Convert an official CLIP-EBC ``state_dict`` into a ready :class:`~clip_ebc.CLIPEBC` (eval mode).

    backbone: open_clip or official name (``"RN50"``, ``"clip_resnet50"``, ``"vit_b_16"``...).
    reduction: block size r (8, 16, 32). bins, anchor_points, prompt_type: as the run was trained (see
    :func:`clip_ebc.bins.official_bins` / :func:`~clip_ebc.bins.official_anchor_points`).
    input_size (ViT): read from the positional-embedding table when ``None``. num_vpt: read from the VPT
    tables when ``None``; deep_vpt: ``None`` reads it from the number of VPT tables too. clip_config: the official CLIP config fields, for custom (e.g. tiny) CLIP
    models; the backbone's standard architecture otherwise. decoder_channels: read from the decoder
    weights when ``None``. Text embeddings are computed with the checkpoint's text tower.
    Raises :class:`~clip_ebc.errors.ConversionError` when the weights do not fit.
    """
    model_sd, text_sd = split_official_state_dict(state_dict)
    if isinstance(clip_config, Mapping):
        clip_config = ClipArchitecture.from_dict(clip_config)
    name = canonical_backbone(backbone) or backbone
    if clip_config is None and name not in BACKBONES:
        raise ConversionError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}.")
    arch = clip_config if clip_config is not None else ClipArchitecture.for_backbone(name)

    if arch.is_resnet:
        if "image_encoder.vpt" in model_sd:
            raise ConversionError(f"the checkpoint has VPT tables but {name} is a ResNet backbone.")
        if "image_encoder.class_embedding" in model_sd:
            raise ConversionError(f"the checkpoint holds a ViT image encoder, but {name} is a ResNet backbone.")
    else:
        if "image_encoder.class_embedding" not in model_sd:
            raise ConversionError(f"the checkpoint holds a ResNet image encoder, but {name} is a ViT backbone.")
        tables = model_sd.get("image_encoder.vpt")
        found = 0 if tables is None else int(tables.shape[1])
        if num_vpt is None:
            num_vpt = found
        elif num_vpt != found:
            raise ConversionError(f"num_vpt={num_vpt} was given, but the checkpoint has {found} VPT tokens per table.")
        if tables is not None:
            if deep_vpt is None:
                deep_vpt = tables.shape[0] != 1
            want = int(arch.vision_layers) if deep_vpt else 1  # type: ignore[arg-type]
            if tables.shape[0] != want:
                hint = "deep_vpt=False (shallow VPT)" if tables.shape[0] == 1 else "deep_vpt=True"
                raise ConversionError(
                    f"the checkpoint has {tables.shape[0]} VPT table(s) but {'deep' if deep_vpt else 'shallow'} "
                    f"VPT on a {arch.vision_layers}-block ViT needs {want}; pass {hint}."
                )
        if input_size is None:
            rows = int(model_sd["image_encoder.positional_embedding"].shape[0]) - 1
            side = math.isqrt(rows)
            if side * side != rows:
                raise ConversionError(f"the positional embedding has {rows} patch rows, not a square grid.")
            input_size = side * int(arch.vision_patch_size)  # type: ignore[arg-type]

    if decoder_channels is None:
        decoder_channels = _decoder_channels(model_sd)
    try:
        config = ModelConfig(
            backbone=name,
            clip=clip_config,
            reduction=reduction,
            bins=tuple(bins),
            anchor_points=tuple(anchor_points),
            prompt_type=prompt_type,
            decoder_channels=None if decoder_channels is None else tuple(decoder_channels),
            input_size=input_size,
            num_vpt=num_vpt if not arch.is_resnet else None,
            deep_vpt=True if deep_vpt is None else deep_vpt,
            provenance=dict(provenance or {}),
        )
    except ConfigError as e:
        raise ConversionError(f"invalid conversion settings: {e}") from e

    with torch.device("meta"):
        model = CLIPEBC(config)
    hint = f"Check the backbone ({name}), reduction, decoder channels and CLIP architecture."
    # check the image side first (cheap, and the likelier mistake), with a stand-in for the embeddings
    model_sd["text_embeddings"] = torch.empty(model.text_embeddings.shape)
    model_sd["anchor_points"] = torch.tensor(config.anchor_points, dtype=torch.float32)
    try:
        check_state_dict(model, model_sd, source=f"the official checkpoint does not fit a {name} model", advice=hint)
    except CheckpointError as e:
        raise ConversionError(str(e)) from e
    from ..text import encode_prompts  # open_clip's text tower: imported only when converting

    try:
        model_sd["text_embeddings"] = encode_prompts(config.prompts or (), arch, text_sd)
    except CheckpointError as e:
        raise ConversionError(f"{e} {hint}") from e
    model.load_state_dict(model_sd, strict=True, assign=True)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Files and run names
# --------------------------------------------------------------------------------------------------

_RUN_NAME = re.compile(
    r"^(?P<model>clip_(?:resnet\d+(?:x\d+)?|vit_[bl]_\d+))"
    r"_(?P<prompt_type>word|number)"
    r"_(?P<input_size>\d+)"
    r"_(?P<reduction>\d+)"
    r"_(?P<truncation>\d+)"
    r"_(?P<granularity>fine|dynamic|coarse)(?:_(?:fine|dynamic|coarse))?"  # one upstream run says fine_fine
    r"_(?P<weight_count_loss>\d+(?:\.\d+)?(?:e[-+]?\d+)?)"  # str(float): 1.0, 0.5, 1e-05
    r"_(?P<count_loss>dmcount|mae|mse)"
    r"(?P<augmented>_aug)?$"
)


def parse_run_name(name: str) -> dict[str, Any] | None:
    """Hyperparameters from an official run-directory name, or ``None`` if it does not parse.

    ``clip_resnet50_word_448_8_4_fine_1.0_dmcount_aug`` gives backbone RN50, word prompts, input 448,
    reduction 8, truncation 4, fine granularity, count-loss weight 1.0, DM-Count loss, augmented.
    """
    m = _RUN_NAME.match(name)
    if m is None:
        return None
    backbone = canonical_backbone(m.group("model"))
    if backbone is None:
        return None
    return {
        "backbone": backbone,
        "prompt_type": m.group("prompt_type"),
        "input_size": int(m.group("input_size")),
        "reduction": int(m.group("reduction")),
        "truncation": int(m.group("truncation")),
        "granularity": m.group("granularity"),
        "weight_count_loss": float(m.group("weight_count_loss")),
        "count_loss": m.group("count_loss"),
        "augmented": m.group("augmented") is not None,
    }


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read an official checkpoint: ``.pth``/``.pt`` (``torch.load`` with ``weights_only=True``; a resume
    file's ``model_state_dict`` is taken) or ``.safetensors`` with the official keys."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path} is empty; the download or copy was probably interrupted.")
    with path.open("rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, RuntimeError, OSError) as e:
            raise ConversionError(f"{path} is not a readable safetensors file ({e}).") from e
    if not looks_like_checkpoint(head, ".pth"):
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint (.pth) or a safetensors file; pass the best_mae_0.pth "
            "(or ckpt.pth) file of an official run."
        )
    try:
        with _numpy_scalars_allowed():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        reason = _load_failure_reason(e)
        raise ConversionError(
            f"{path} cannot be read as a PyTorch checkpoint ({reason})."
        ) from e
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConversionError(
            f"{path} holds a {type(obj).__name__} that is not a model state_dict (a mapping of names to "
            "tensors), nor a resume checkpoint with 'model_state_dict'."
        )
    return dict(obj)


def _numpy_scalars_allowed():
    """Let ``weights_only`` loading rebuild NumPy scalars and dtypes (data, not code): the official
    trainer stores ``np.float64`` losses and scores next to the weights in its resume ``ckpt.pth``."""
    import numpy as np

    scalar = (getattr(np, "_core", None) or np.core).multiarray.scalar
    allowed: list[Any] = [np.dtype, *{type(np.dtype(k)) for k in
                                      (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_)}]
    # NumPy 1 pickles name the function numpy.core.multiarray.scalar, NumPy 2 numpy._core...; torch
    # matches allowed globals by module and name, so each name gets a function that answers to it
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        def rebuild(*args: Any) -> Any:
            return scalar(*args)

        rebuild.__module__, rebuild.__qualname__ = module, "scalar"
        allowed.append(rebuild)
    return torch.serialization.safe_globals(allowed)


def _load_failure_reason(error: Exception) -> str:
    """Why ``torch.load`` refused a file, without torch's advice to load it with ``weights_only=False``
    (which would run whatever code the pickle names): the refused global when there is one (torch
    words it "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked",
    depending on the release), else the first line that is not advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"GLOBAL\s+([\w.]+)", text, re.IGNORECASE)
    if found:
        return (f"it names the Python global '{found.group(1)}', which a checkpoint may not contain: only tensors "
                "and plain data are loaded")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    advice = re.compile(r"weights_only|will likely succeed|Please |re-running|trust", re.IGNORECASE)
    useful = [line for line in lines if not advice.search(line)]
    return useful[0] if useful else type(error).__name__


def convert_file(
    src: str | Path,
    *,
    run_name: str | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
    reduction: int | None = None,
    truncation: int | None = None,
    granularity: str | None = None,
    anchor_kind: str = "average",
    anchor_values: Sequence[float] | None = None,
    prompt_type: str | None = None,
    input_size: int | None = None,
    num_vpt: int | None = None,
    deep_vpt: bool | None = None,
    clip_config: Mapping[str, Any] | None = None,
    decoder_channels: Sequence[DecoderEntry] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> CLIPEBC:
    """Convert the official checkpoint file ``src``; explicit arguments win over what the run-directory
    name (``run_name``, or ``src``'s parent folder) and dataset folder (``src``'s grandparent) say.
    ``provenance`` entries are added to the config's provenance record."""
    src = Path(src)
    state = load_official_state_dict(src)  # first, so that a file that is no checkpoint says so
    parsed: dict[str, Any] = {}
    # the folders the path names, not where a link points (git-annex, DVC and Hub snapshots link to blobs)
    run_dir = Path(os.path.abspath(src)).parent
    if run_name is not None:
        found = parse_run_name(run_name)
        if found is None:
            raise ConversionError(
                f"cannot read hyperparameters from the run name {run_name!r}; expected a name like "
                "clip_resnet50_word_448_8_4_fine_1.0_dmcount_aug, or pass --backbone, --reduction and "
                "--truncation instead."
            )
        parsed = found
    else:
        parsed = parse_run_name(run_dir.name) or {}
        if parsed:
            run_name = run_dir.name
    if dataset is None and parsed and run_dir.parent.name in DATASETS:
        dataset = run_dir.parent.name

    def pick(given, key, default=None):
        return given if given is not None else parsed.get(key, default)

    backbone = pick(backbone, "backbone")
    reduction = pick(reduction, "reduction")
    truncation = pick(truncation, "truncation")
    granularity = pick(granularity, "granularity", "fine")
    prompt_type = pick(prompt_type, "prompt_type", "word")
    missing = [flag for flag, v in (("--backbone", backbone), ("--reduction", reduction),
                                    ("--truncation", truncation)) if v is None]
    if missing:
        raise ConversionError(
            f"cannot tell the {', '.join(m.lstrip('-') for m in missing)} of {src.name}: its folder is not an "
            f"official run directory; pass {' '.join(missing)} (or --run-name)."
        )
    assert backbone is not None and reduction is not None and truncation is not None
    if granularity not in GRANULARITIES:
        raise ConversionError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    bins = make_bins(truncation, granularity)  # type: ignore[arg-type]
    if anchor_values is not None:
        anchors = [float(a) for a in anchor_values]
        anchor_source = "given"
    elif anchor_kind == "middle":
        anchors = middle_anchor_points(bins)
        anchor_source = "middle"
    else:
        if dataset is None:
            raise ConversionError(
                f"the 'average' anchor points depend on the training dataset, which {src} does not show; "
                f"pass --dataset ({'/'.join(DATASETS)}), or --anchor-points middle, or --anchor-values."
            )
        try:
            anchors = official_anchor_points(reduction, truncation, dataset, granularity, "average")  # type: ignore[arg-type]
        except ConfigError as e:
            raise ConversionError(f"{e} Pass --anchor-values to give them explicitly.") from e
        anchor_source = "official average"

    provenance = {
        "source": "official CLIP-EBC checkpoint",
        "official_repo": OFFICIAL_REPO,
        "converted_from": src.name,
        "source_sha256": sha256_file(src),
        "run_name": run_name,
        "dataset": dataset,
        "granularity": granularity,
        "truncation": int(truncation),
        "anchor_points": anchor_source,
        **dict(provenance or {}),
    }
    if input_size is None and parsed.get("input_size") is not None:
        input_size = parsed["input_size"]
    return convert_official(
        state,
        backbone=backbone,
        reduction=reduction,
        bins=bins,
        anchor_points=anchors,
        prompt_type=prompt_type,
        input_size=input_size,
        num_vpt=num_vpt,
        deep_vpt=deep_vpt,
        clip_config=clip_config,
        decoder_channels=decoder_channels,
        provenance={k: v for k, v in provenance.items() if v is not None},
    )


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
