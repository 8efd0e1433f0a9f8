"""clip-ebc: count people in images with CLIP-EBC (Ma, Sanchez, Guha; arXiv 2403.09281).

The public API::

    from clip_ebc import CrowdCounter

    result = CrowdCounter().count("crowd.jpg")     # the default registry model, fetched once
    result.count, result.density                     # people; (h, w) people per 8x8 block
    result.save_heatmap("crowd_heatmap.png")

Heavy dependencies (torch, open_clip) are imported on first use of a name, so ``import clip_ebc``
and the command line's ``--help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    CLIPEBCError,
    ConfigError,
    ConversionError,
    DownloadError,
    ImageError,
    MissingExtraError,
    ModelNotFoundError,
    NumericalError,
    VideoError,
    ZoneError,
)

__version__ = "0.1.0.dev0"

_LAZY = {
    "CrowdCounter": ".counter",
    "CountResult": ".counter",
    "list_models": ".registry",
    "load_model": ".loading",
    "CLIPEBC": ".model",
    "CLIPEBCOutput": ".model",
    "ModelConfig": ".config",
    "ClipArchitecture": ".config",
    "sliding_window_density": ".sliding_window",
    "Zone": ".zones",
    "load_zones": ".zones",
}

__all__ = [
    "CLIPEBC",
    "CLIPEBCError",
    "CLIPEBCOutput",
    "CheckpointError",
    "ClipArchitecture",
    "ConfigError",
    "ConversionError",
    "CountResult",
    "CrowdCounter",
    "DownloadError",
    "ImageError",
    "ModelConfig",
    "MissingExtraError",
    "ModelNotFoundError",
    "NumericalError",
    "VideoError",
    "Zone",
    "ZoneError",
    "__version__",
    "list_models",
    "load_model",
    "load_zones",
    "sliding_window_density",
]

if TYPE_CHECKING:
    from .config import ClipArchitecture, ModelConfig
    from .counter import CountResult, CrowdCounter
    from .loading import load_model
    from .model import CLIPEBC, CLIPEBCOutput
    from .registry import list_models
    from .sliding_window import sliding_window_density
    from .zones import Zone, load_zones


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clip_ebc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
