"""Shared test helpers: the official reference fixtures and tiny model configs."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"


def meta_model(name: str, reduction: int, **kw):
    """A real-size ``name`` CLIP-EBC model on the meta device (no memory, no weights): shapes only."""
    from clip_ebc import CLIPEBC, ModelConfig
    from clip_ebc.bins import official_bins

    config = ModelConfig(backbone=name, reduction=reduction, bins=official_bins(8, 4),
                         anchor_points=[0, 1, 2, 3, 4.3], **kw)
    with torch.device("meta"):
        return CLIPEBC(config)


def python_with_sigint(module: str) -> list[str]:
    """The command line that runs ``python -m module`` with Python's Ctrl-C handler. A shell without job
    control starts background commands (``pytest &``, ``nohup``) with SIGINT ignored, children inherit
    that, and Python then never raises KeyboardInterrupt; the child puts the handler back itself."""
    code = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.argv[0] = {module!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code]


@dataclass
class OfficialFixture:
    """One tiny model made with the official implementation, and what that code produced for it."""

    name: str
    meta: dict
    state_dict: dict[str, torch.Tensor]
    io: dict[str, torch.Tensor]
    intermediates: dict[str, torch.Tensor]

    @property
    def bins(self) -> list[tuple[float, float]]:
        return [(float(lo), math.inf if hi in (None, float("inf")) else float(hi)) for lo, hi in self.meta["bins"]]

    def convert_kwargs(self) -> dict:
        kw = self.meta["get_model_kwargs"]
        return dict(
            backbone=kw["backbone"],
            reduction=kw["reduction"],
            bins=self.bins,
            anchor_points=self.meta["anchor_points"],
            prompt_type=kw["prompt_type"],
            input_size=kw["input_size"],
            num_vpt=kw.get("num_vpt"),
            deep_vpt=kw.get("deep_vpt", True),
            clip_config=self.meta["clip_config"],
            decoder_channels=self.meta["decoder_cfg_effective"],
        )


def load_official(name: str) -> OfficialFixture:
    return OfficialFixture(
        name=name,
        meta=json.loads((OFFICIAL / f"{name}.json").read_text()),
        state_dict=load_file(str(OFFICIAL / f"{name}.safetensors")),
        io=load_file(str(OFFICIAL / f"{name}_io.safetensors")),
        intermediates=load_file(str(OFFICIAL / f"{name}_intermediates.safetensors")),
    )


@pytest.fixture(scope="session")
def official_rn50() -> OfficialFixture:
    return load_official("tiny_rn50")


@pytest.fixture(scope="session")
def official_vit() -> OfficialFixture:
    return load_official("tiny_vit")


@pytest.fixture(scope="session")
def converted_rn50(official_rn50):
    from clip_ebc.convert import convert_official

    return convert_official(official_rn50.state_dict, **official_rn50.convert_kwargs())


@pytest.fixture(scope="session")
def converted_vit(official_vit):
    from clip_ebc.convert import convert_official

    return convert_official(official_vit.state_dict, **official_vit.convert_kwargs())


@pytest.fixture(params=["tiny_rn50", "tiny_vit"])
def official_pair(request, official_rn50, official_vit, converted_rn50, converted_vit):
    """(fixture, converted model) for both reference models."""
    if request.param == "tiny_rn50":
        return official_rn50, converted_rn50
    return official_vit, converted_vit


@pytest.fixture(scope="session")
def tiny_dirs(converted_rn50, converted_vit, tmp_path_factory):
    """Checkpoint folders (config.json + model.safetensors) of both converted tiny models."""
    root = tmp_path_factory.mktemp("checkpoints")
    converted_rn50.save_pretrained(root / "tiny_rn50")
    converted_vit.save_pretrained(root / "tiny_vit")
    return {"rn50": root / "tiny_rn50", "vit": root / "tiny_vit"}


def make_scene(height: int, width: int, people: int, seed: int = 0):
    """A synthetic crowd-like RGB uint8 image: a smooth textured background with ``people`` bright
    blobs at random places. Returns (image, points (N, 2) as x, y)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = 70 + 35 * np.sin(xx / 37.0)[..., None] + 25 * np.cos(yy / 53.0)[..., None]
    img = img + rng.normal(0, 8, (height, width, 3))
    points = np.stack([rng.uniform(0, width, people), rng.uniform(0, height, people)], axis=1)
    for x, y in points:
        r = rng.uniform(2.5, 6)
        img[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = rng.integers(150, 256, 3)
    return img.clip(0, 255).astype(np.uint8), points


@pytest.fixture(scope="session")
def official_pth(official_rn50, tmp_path_factory) -> bytes:
    """The tiny RN50 as an official .pth file (torch.save of its state dict), as bytes."""
    path = tmp_path_factory.mktemp("pth") / "best_mae_0.pth"
    torch.save(official_rn50.state_dict, path)
    return path.read_bytes()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated weights cache and Hugging Face home, no offline flag, and an empty manifest file
    (``CLIP_EBC_MANIFEST``) for the test to fill in."""
    from clip_ebc import registry

    monkeypatch.setenv("CLIP_EBC_CACHE", str(tmp_path / "clip-ebc-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    manifest = tmp_path / "manifest.json"
    monkeypatch.setenv("CLIP_EBC_MANIFEST", str(manifest))
    registry._load_manifest.cache_clear()
    yield manifest
    registry._load_manifest.cache_clear()
