"""Shared test helpers: the official reference fixtures and tiny model configs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"


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
