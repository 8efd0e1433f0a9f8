"""Build the *official* CLIP-EBC model offline, with random weights, for benchmarks and parity checks.

The official implementation (github.com/Yiming-M/CLIP-EBC) is loaded at run time from a checkout that
the user supplies; none of its code is copied here. Importing its ``models`` package needs 27
prepared OpenAI CLIP names (a ``configs/<name>.json`` and a ``weights/<name>.pth`` each, under
``models/clip/_clip/``) and otherwise downloads about 3 GB of weights (spec §1.1); its tokeniser
imports ``pkg_resources`` (spec §10 item 10). This module avoids both:

1. It copies the checkout's ``models/`` tree into a cache directory (keyed by a hash of its sources),
   leaving out any prepared CLIP configs/weights the checkout may hold.
2. It writes the 54 files the import-time check looks for: the nine configs of each kind come from
   open_clip's copies of the OpenAI architectures; the weight files are empty placeholders, except
   the image- and text-encoder files of the requested backbone. Those hold random state dicts made by
   the official ``CLIP`` class itself (OpenAI's initialisation), with the all-zero / all-one tensors
   (norm affines, attention biases, the zero-initialised ``bn3`` gammas) perturbed so that every
   tensor matters. ``CLIP_EBC`` only reads those two files; the placeholders fail loudly if anything
   else is ever loaded.
3. It imports ``models`` from the copy with stand-ins for ``pkg_resources`` (and for ``einops``
   when that is not installed) and with any other top-level ``models`` package set aside; the
   caller's ``sys.modules`` and ``sys.path`` are restored afterwards.
4. It builds the model through ``models.get_model("clip_<backbone>", ...)`` with the bins and
   "average" anchor points of ``configs/reduction_<r>.json``; gives the decoder's BatchNorm, the
   projection bias and ``logit_scale`` (ln(1/0.07) + U(-0.25, 0.75)) random values; calibrates every
   BatchNorm's running statistics on one random batch (so activations stay well scaled); and returns
   it in eval mode.

Usage::

    python benchmarks/official.py /path/to/CLIP-EBC-checkout    # self-check for both backbones

A checkout can be made from a bare mirror with ``git --git-dir=<mirror> archive HEAD -- .
':!notebooks/count_distribution.ipynb' | tar -x -C <dir>`` (that notebook's blob is missing from the
mirror, and a plain ``git archive HEAD`` stops there, before ``utils/`` and the training scripts).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["build_official", "official_state_dict", "official_bins_and_anchors", "perturb_trivial", "calibrate_batchnorm"]

GENERATOR_VERSION = 1  # bump when the way random weights are made changes (invalidates cached files)

# Official CLIP names (models/clip/_clip/__init__.py) -> open_clip config names.
_OPEN_CLIP_NAME = {
    "resnet50": "RN50",
    "resnet101": "RN101",
    "resnet50x4": "RN50x4",
    "resnet50x16": "RN50x16",
    "resnet50x64": "RN50x64",
    "vit_b_32": "ViT-B-32",
    "vit_b_16": "ViT-B-16",
    "vit_l_14": "ViT-L-14",
    "vit_l_14_336px": "ViT-L-14-336",
}
# What official get_model accepts (it rejects vit_l_14_336px, spec §10 item 3).
_GET_MODEL_NAMES = ("resnet50", "resnet50x4", "resnet50x16", "resnet50x64", "resnet101", "vit_b_16", "vit_b_32", "vit_l_14")

_LOADED: dict[str, types.SimpleNamespace] = {}  # work dir -> imported official modules


# ----------------------------------------------------------------------------------------- names


def _canonical(backbone: str) -> str:
    """"resnet50", "clip_resnet50", "RN50", "ViT-B-16", "ViT-B/16" ... -> official name."""
    name = backbone.strip().lower()
    key = name.replace("/", "-").replace("@336px", "-336")  # OpenAI spelling -> open_clip spelling
    for official, oc in _OPEN_CLIP_NAME.items():
        if key == oc.lower():
            name = official
    if name.startswith("clip_"):
        name = name[len("clip_"):]
    if name not in _GET_MODEL_NAMES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(_GET_MODEL_NAMES)}.")
    return name


def _is_resnet(name: str) -> bool:
    return name.startswith("resnet")


# ------------------------------------------------------------------------------- CLIP configs


def _openai_configs(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(full, image, text) configs with the fields and values official prepare() would write."""
    import open_clip

    cfg = open_clip.get_model_config(_OPEN_CLIP_NAME[name])
    if cfg is None:
        raise RuntimeError(f"open_clip has no model config {_OPEN_CLIP_NAME[name]!r}.")
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    layers = vision["layers"]
    resnet = isinstance(layers, (list, tuple))
    width = int(vision["width"])
    full = {
        "embed_dim": int(cfg["embed_dim"]),
        "image_resolution": int(vision["image_size"]),
        "vision_layers": [int(v) for v in layers] if resnet else int(layers),
        "vision_width": width,
        "vision_patch_size": None if resnet else int(vision["patch_size"]),
        "context_length": int(text.get("context_length", 77)),
        "vocab_size": int(text.get("vocab_size", 49408)),
        "transformer_width": int(text["width"]),
        "transformer_heads": int(text["heads"]),
        "transformer_layers": int(text["layers"]),
    }
    image = {k: full[k] for k in ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size")}
    image["vision_heads"] = width * 32 // 64 if resnet else width // 64  # as official CLIP computes it
    text_cfg = {k: full[k] for k in ("embed_dim", "context_length", "vocab_size", "transformer_width",
                                     "transformer_heads", "transformer_layers")}
    return full, image, text_cfg


def _expected_files(clip_dir: Path) -> list[Path]:
    """The 54 paths (27 names x config + weights) models/clip/_clip/__init__.py checks at import."""
    paths = []
    for name in _OPEN_CLIP_NAME:
        for stem in (f"clip_{name}", f"clip_image_encoder_{name}", f"clip_text_encoder_{name}"):
            paths += [clip_dir / "configs" / f"{stem}.json", clip_dir / "weights" / f"{stem}.pth"]
    return paths


# ------------------------------------------------------------------------------- work copy


def _default_cache_dir() -> Path:
    env = os.environ.get("CLIP_EBC_OFFICIAL_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "clip_ebc_official"


def _ignore(dirpath: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
    if Path(dirpath).name == "_clip":
        skip |= {"configs", "weights"} & set(names)  # prepared OpenAI files, never used here
    return skip


def _source_digest(models_dir: Path) -> str:
    h = hashlib.sha256(f"v{GENERATOR_VERSION}".encode())
    for path in sorted(models_dir.rglob("*")):
        rel = path.relative_to(models_dir)
        if not path.is_file() or "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        if rel.parts[:3] in (("clip", "_clip", "configs"), ("clip", "_clip", "weights")):
            continue
        h.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _prepare_workdir(checkout: Path, cache_dir: Path) -> Path:
    """Copy of the checkout's models/ with every file the import-time check wants; idempotent."""
    models_dir = checkout / "models"
    if not (models_dir / "__init__.py").is_file() or not (models_dir / "clip" / "_clip" / "__init__.py").is_file():
        raise FileNotFoundError(f"{checkout} does not look like a CLIP-EBC checkout (no models/clip/_clip/__init__.py).")
    workdir = cache_dir / f"official-{_source_digest(models_dir)}"
    if not (workdir / ".copied").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir))
        try:
            shutil.copytree(models_dir, staging / "models", ignore=_ignore)
            (staging / ".copied").write_text(str(checkout) + "\n")
            try:
                os.replace(staging, workdir)  # atomic when workdir does not exist yet
            except OSError:
                if not (workdir / ".copied").is_file():  # not a concurrent winner: a stale half copy
                    shutil.rmtree(workdir, ignore_errors=True)
                    os.replace(staging, workdir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    clip_dir = workdir / "models" / "clip" / "_clip"
    (clip_dir / "configs").mkdir(exist_ok=True)
    (clip_dir / "weights").mkdir(exist_ok=True)
    for name in _OPEN_CLIP_NAME:
        configs = dict(zip((f"clip_{name}", f"clip_image_encoder_{name}", f"clip_text_encoder_{name}"),
                           _openai_configs(name)))
        for stem, cfg in configs.items():
            path = clip_dir / "configs" / f"{stem}.json"
            if not path.is_file():
                _atomic_write(path, lambda p, cfg=cfg: p.write_text(json.dumps(cfg, indent=4)))
            weights = clip_dir / "weights" / f"{stem}.pth"
            if not weights.exists():
                weights.touch()  # placeholder: torch.load fails on it, so it can never be used silently
    missing = [str(p) for p in _expected_files(clip_dir) if not p.is_file()]
    if missing:  # never let the official code fall back to downloading
        raise RuntimeError(f"could not create {missing}")
    return workdir


# ------------------------------------------------------------------------------- shims / import


def _rearrange(tensor: Tensor, pattern: str, **sizes: int) -> Tensor:
    """Minimal einops.rearrange: named axes and (grouped axes), no ellipsis or literals."""

    def groups(side: str) -> list[list[str]]:
        out: list[list[str]] = []
        current: list[str] | None = None
        for token in re.findall(r"\(|\)|\w+", side):
            if token == "(":
                current = []
            elif token == ")":
                out.append(current or [])
                current = None
            elif current is not None:
                current.append(token)
            else:
                out.append([token])
        return out

    lhs, rhs = (groups(s) for s in pattern.split("->"))
    if len(lhs) != tensor.dim():
        raise ValueError(f"pattern {pattern!r} does not fit a {tensor.dim()}-d tensor")
    known = dict(sizes)
    for group, dim in zip(lhs, tensor.shape):
        unknown = [a for a in group if a not in known]
        prod = math.prod(known[a] for a in group if a in known)
        if len(unknown) > 1:
            raise ValueError(f"cannot infer the sizes of {unknown} in {pattern!r}")
        if unknown:
            known[unknown[0]] = dim // prod
        if math.prod(known[a] for a in group) != dim:
            raise ValueError(f"axis sizes of {group} do not multiply to {dim} in {pattern!r}")
    flat_l = [a for g in lhs for a in g]
    flat_r = [a for g in rhs for a in g]
    tensor = tensor.reshape([known[a] for a in flat_l]).permute([flat_l.index(a) for a in flat_r])
    return tensor.reshape([math.prod(known[a] for a in g) for g in rhs])


def _shim_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for modules the official code imports but this environment may lack."""
    import importlib.util

    shims: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("pkg_resources") is None:  # setuptools >= 81 dropped it
        import packaging
        import packaging.version

        mod = types.ModuleType("pkg_resources")
        mod.packaging = packaging  # the tokeniser only uses pkg_resources.packaging.version.parse
        shims["pkg_resources"] = mod
    if importlib.util.find_spec("einops") is None:
        mod = types.ModuleType("einops")
        mod.rearrange = _rearrange
        shims["einops"] = mod
    return shims


def _is_models_module(key: str) -> bool:
    return key == "models" or key.startswith("models.")


def _import_official(workdir: Path) -> types.SimpleNamespace:
    """Import the official ``models`` package from workdir without leaving it in sys.modules."""
    key = str(workdir)
    if key in _LOADED:
        return _LOADED[key]
    import importlib

    shims = _shim_modules()
    stashed = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_models_module(k)}
    added_shims = [k for k in shims if k not in sys.modules]
    sys.modules.update({k: shims[k] for k in added_shims})
    sys.path.insert(0, key)
    importlib.invalidate_caches()
    try:
        models = importlib.import_module("models")
        loaded = {k: sys.modules[k] for k in list(sys.modules) if _is_models_module(k)}
        if Path(models.__file__).resolve().parent != (workdir / "models").resolve():
            raise ImportError(f"imported {models.__file__}, not the copy in {workdir}")
    finally:
        sys.path.remove(key)
        for k in [k for k in list(sys.modules) if _is_models_module(k)]:
            del sys.modules[k]
        sys.modules.update(stashed)
        for k in added_shims:
            sys.modules.pop(k, None)
    ns = types.SimpleNamespace(
        models=models,
        clip=loaded["models.clip._clip"],
        CLIP=loaded["models.clip._clip.model"].CLIP,
        CLIP_EBC=loaded["models.clip.model"].CLIP_EBC,
    )
    _LOADED[key] = ns
    return ns


# ------------------------------------------------------------------------------- random weights


def _uniform(shape, low: float, high: float, gen: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=gen) * (high - low) + low


def perturb_trivial(module: nn.Module, gen: torch.Generator) -> None:
    """Give norm affines, attention biases and zero-initialised conv biases random values."""
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                # OpenAI zero-initialises the last BN of each residual branch; keep it small but nonzero.
                low, high = (0.2, 0.5) if name.endswith("bn3") and torch.all(m.weight == 0) else (0.6, 1.4)
                m.weight.copy_(_uniform(m.weight.shape, low, high, gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(_uniform(m.running_var.shape, 0.5, 1.5, gen))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(_uniform(m.weight.shape, 0.8, 1.2, gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
            elif isinstance(m, nn.MultiheadAttention):
                if m.in_proj_bias is not None:
                    m.in_proj_bias.copy_(torch.randn(m.in_proj_bias.shape, generator=gen) * 0.02)
                if m.out_proj.bias is not None:
                    m.out_proj.bias.copy_(torch.randn(m.out_proj.bias.shape, generator=gen) * 0.02)
            elif isinstance(m, nn.Conv2d) and m.bias is not None and torch.all(m.bias == 0):
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.02)


_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _ensure_clip_weights(ns: types.SimpleNamespace, workdir: Path, name: str, seed: int) -> None:
    """Write random image/text encoder weights for `name` (official CLIP init, perturbed) unless cached."""
    weights = workdir / "models" / "clip" / "_clip" / "weights"
    stamp = weights / f".random_{name}.json"
    want = {"seed": int(seed), "version": GENERATOR_VERSION}
    img_path = weights / f"clip_image_encoder_{name}.pth"
    txt_path = weights / f"clip_text_encoder_{name}.pth"
    if (stamp.is_file() and json.loads(stamp.read_text()) == want
            and img_path.stat().st_size > 0 and txt_path.stat().st_size > 0):
        return
    full, _, _ = _openai_configs(name)
    if isinstance(full["vision_layers"], list):
        full["vision_layers"] = tuple(full["vision_layers"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = ns.CLIP(**full)  # the official class, with OpenAI's initialisation
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_trivial(clip, gen)
    state = clip.state_dict()
    image_sd = {k[len("visual."):]: v.float() for k, v in state.items() if k.startswith("visual.")}
    text_sd = {k: v.float() for k, v in state.items() if k.startswith(_TEXT_PREFIXES)}
    _atomic_write(img_path, lambda p: torch.save(image_sd, p))
    _atomic_write(txt_path, lambda p: torch.save(text_sd, p))
    _atomic_write(stamp, lambda p: p.write_text(json.dumps(want)))


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, input_size: int, gen: torch.Generator) -> None:
    """Set every BN's running stats to the batch stats of one random batch (train-mode pass).

    The batch is 2 images of at most 224x224 (BN statistics are per channel, so a smaller image than
    the model's input size gives the same scale and keeps this fast on a CPU).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, running stats = that batch's stats
    size = min(int(input_size), 224)
    x = torch.randn(2, 3, size, size, generator=gen)
    model.train()
    try:
        model(x)
    finally:
        model.eval()
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum


# ------------------------------------------------------------------------------- public API


def official_bins_and_anchors(checkout: str | Path, reduction: int = 8, truncation: int = 4,
                              dataset: str = "sha", anchor_kind: str = "average"):
    """Bins and anchor points from the checkout's configs/reduction_<r>.json, as the official scripts read them."""
    path = Path(checkout) / "configs" / f"reduction_{reduction}.json"
    with open(path) as f:
        config = json.load(f)[str(truncation)][dataset]
    bins = [(float(lo), float(hi)) for lo, hi in config["bins"]["fine"]]
    anchors = [float(a) for a in config["anchor_points"]["fine"][anchor_kind]]
    return bins, anchors


def build_official(
    checkout: str | Path,
    backbone: str,
    *,
    reduction: int = 8,
    truncation: int = 4,
    dataset: str = "sha",
    input_size: int | None = None,
    seed: int = 0,
    prompt_type: str = "word",
    num_vpt: int = 32,
    deep_vpt: bool = True,
    cache_dir: str | Path | None = None,
    verbose: bool = False,
) -> nn.Module:
    """The official ``CLIP_EBC`` (eval, float32, CPU) with random, well-conditioned weights.

    checkout: a CLIP-EBC checkout (needs ``models/`` and ``configs/``); it is not modified.
    backbone: "resnet50" or "vit_b_16" (other official CLIP backbones and open_clip names work too).
    input_size: 448 for ResNets, 224 for ViTs by default (the released models' sizes).
    seed: fixes every random weight; the same arguments always give the same model.
    cache_dir: where the patched copy and generated weights live (default $CLIP_EBC_OFFICIAL_CACHE or
    <tmp>/clip_ebc_official). verbose: show what the official code prints while building.
    """
    name = _canonical(backbone)
    checkout = Path(checkout).expanduser().resolve()
    if input_size is None:
        input_size = 448 if _is_resnet(name) else 224
    bins, anchors = official_bins_and_anchors(checkout, reduction, truncation, dataset)
    workdir = _prepare_workdir(checkout, Path(cache_dir) if cache_dir is not None else _default_cache_dir())
    ns = _import_official(workdir)
    _ensure_clip_weights(ns, workdir, name, seed)

    printed = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(printed):
        torch.manual_seed(seed + 2)  # decoder, projection, VPT tables and logit_scale are made here
        model = ns.models.get_model(
            f"clip_{name}",
            input_size=input_size,
            reduction=reduction,
            bins=bins,
            anchor_points=anchors,
            prompt_type=prompt_type,
            num_vpt=num_vpt,
            vpt_drop=0.0,
            deep_vpt=deep_vpt,
        )
    log = printed.getvalue()
    if verbose:
        print(log, end="")
    # Official loading is strict=False and only prints mismatches: insist that nothing was missing
    # (the only expected unexpected keys are the discarded attnpool.* / proj).
    for found in re.findall(r"Missing keys: (\[.*?\])", log):
        if found != "[]":
            raise RuntimeError(f"the official code did not find some CLIP weights: {found}")
    if not isinstance(model, ns.CLIP_EBC):
        raise RuntimeError(f"get_model returned a {type(model).__name__}, not CLIP_EBC")

    gen = torch.Generator().manual_seed(seed + 3)
    perturb_trivial(nn.ModuleList([model.image_decoder, model.projection]), gen)
    with torch.no_grad():  # the constant ln(1/0.07) init would not test that logit_scale is carried over
        model.logit_scale.add_(torch.rand((), generator=gen) - 0.25)
    calibrate_batchnorm(model, input_size, gen)
    model = model.float().eval()
    if not torch.isfinite(model.text_features).all():
        raise RuntimeError("the official text features are not finite")
    return model


def official_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The official model's state dict (official key names), detached CPU copies."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------- self-check


def _self_check(checkout: str) -> int:
    from clip_ebc.bins import official_anchor_points, official_bins
    from clip_ebc.convert import convert_official

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, checkout {checkout}")
    ok = True
    cases = [("resnet50", "RN50", 448), ("vit_b_16", "ViT-B-16", 224)]
    for official_name, ours_name, size in cases:
        print(f"\n== {official_name} ({size}x{size}) ==")
        t0 = time.perf_counter()
        model = build_official(checkout, official_name)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = build_official(checkout, official_name)  # cached files: a rebuild must be identical
        t_rebuild = time.perf_counter() - t0
        sd, sd2 = official_state_dict(model), official_state_dict(again)
        same = sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
        del again, sd2
        print(f"build {t_build:.1f} s, rebuild {t_rebuild:.1f} s, identical on rebuild: {same}; "
              f"{len(sd)} tensors, {sum(v.numel() for v in sd.values()) / 1e6:.1f} M numbers")

        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(123))
        with torch.no_grad():
            model(x)  # warm-up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                density = model(x)
                times.append(time.perf_counter() - t0)
            t_fwd = sorted(times)[1]
        finite = bool(torch.isfinite(density).all())
        print(f"official: output {tuple(density.shape)}, forward {t_fwd:.2f} s (median of 3), density min {density.min():.6f} "
              f"max {density.max():.6f} std {density.std():.6f} count {density.sum():.3f}")

        bins, anchors = official_bins_and_anchors(checkout, 8, 4, "sha")
        ours_bins, ours_anchors = official_bins(8, 4), official_anchor_points(8, 4, "sha")
        bins_match = [tuple(map(float, b)) for b in ours_bins] == bins and list(map(float, ours_anchors)) == anchors
        t0 = time.perf_counter()
        ours = convert_official(sd, backbone=ours_name, reduction=8, bins=ours_bins,
                                anchor_points=ours_anchors, prompt_type="word")
        t_conv = time.perf_counter() - t0
        with torch.no_grad():
            ours_density = ours(x).density
        diff = (ours_density - density).abs().max().item() if ours_density.shape == density.shape else float("inf")
        print(f"ours: converted in {t_conv:.1f} s, output {tuple(ours_density.shape)}; bins/anchors match checkout: "
              f"{bins_match}; max |official - ours| = {diff:.3e}")

        case_ok = same and finite and bool(density.max() > density.min()) and bins_match and diff < 1e-4
        print("PASS" if case_ok else "FAIL")
        ok &= case_ok
        del model, ours, sd
    print("\nself-check", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: {sys.argv[0]} /path/to/CLIP-EBC-checkout", file=sys.stderr)
        sys.exit(2)
    sys.exit(_self_check(sys.argv[1]))
