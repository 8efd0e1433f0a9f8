"""Convert official CLIP-EBC checkpoints into clip-ebc checkpoints.

From Python (:mod:`clip_ebc.convert.official`)::

    from clip_ebc.convert import convert_file
    convert_file("best_mae_0.pth", backbone="RN50", reduction=8, truncation=4, dataset="sha").save_pretrained("rn50-sha")

From the command line: ``python -m clip_ebc.convert SRC -o OUT`` (:mod:`clip_ebc.convert.__main__`).
The names are imported on first use, so the command's ``--help`` does not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_NAMES = ("OFFICIAL_REPO", "convert_file", "convert_official", "load_official_state_dict", "parse_run_name",
          "split_official_state_dict")
__all__ = list(_NAMES)

if TYPE_CHECKING:
    from .official import (  # noqa: F401 - re-exported lazily
        OFFICIAL_REPO,
        convert_file,
        convert_official,
        load_official_state_dict,
        parse_run_name,
        split_official_state_dict,
    )


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        from . import official

        value = getattr(official, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clip_ebc.convert' has no attribute {name!r}")
