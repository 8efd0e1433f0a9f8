"""Count bins, their text prompts, anchor points, and block-count labels.

A *bin* is an inclusive integer range ``(lo, hi)`` of people per block; ``hi`` is ``math.inf`` for the
last, open bin ``[t, inf)`` that holds every block with at least ``t`` people (``t`` is the
*truncation*). Each bin has one text prompt ("There are three people.") and one *anchor point*: the
number of people a block classified into that bin contributes to the density map.

The official constants (``configs/reduction_{8,16,32}.json`` of the reference implementation) are
available through :func:`official_bins` and :func:`official_anchor_points`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .errors import ConfigError

Bin = tuple[float, float]
"""An inclusive integer range ``(lo, hi)`` of people per block; ``hi`` may be ``math.inf``."""

Granularity = Literal["fine", "dynamic", "coarse"]
PromptType = Literal["word", "number"]
AnchorKind = Literal["average", "middle"]

GRANULARITIES: tuple[str, ...] = ("fine", "dynamic", "coarse")
PROMPT_TYPES: tuple[str, ...] = ("word", "number")
ANCHOR_KINDS: tuple[str, ...] = ("average", "middle")
DATASETS: tuple[str, ...] = ("sha", "shb", "nwpu", "qnrf", "jhu")
_DATASET_ALIASES: dict[str, str] = {
    "shanghaitech_a": "sha", "shanghaitech_b": "shb", "ucf_qnrf": "qnrf", "ucf-qnrf": "qnrf",
    "nwpu_crowd": "nwpu", "nwpu-crowd": "nwpu", "jhu_crowd": "jhu", "jhu_crowd_v2": "jhu",
}


def dataset_name(name: str) -> str:
    """The short name (``sha``, ``shb``, ``nwpu``, ``qnrf`` or ``jhu``) of a public dataset, accepting
    the official code's aliases in any case ("ShanghaiTech_A", "UCF-QNRF", "jhu_crowd_v2", ...)."""
    key = str(name).strip().lower()
    if key in DATASETS:
        return key
    if key in _DATASET_ALIASES:
        return _DATASET_ALIASES[key]
    raise ConfigError(
        f"unknown dataset {name!r}; the public datasets are {', '.join(DATASETS)} "
        f"(or {', '.join(sorted(_DATASET_ALIASES))})."
    )

# --------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell ``n`` the way the official prompts do.

    0-99 are words ("twenty-one"), 100, 200, ..., 900 are "one hundred" ... "nine hundred", 1000 is
    "one thousand"; every other integer stays in digits.
    """
    n = int(n)
    if 0 <= n < 20:
        return _ONES[n]
    if 20 <= n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens - 2] + ("" if ones == 0 else "-" + _ONES[ones])
    if 100 <= n <= 900 and n % 100 == 0:
        return _ONES[n // 100] + " hundred"
    if n == 1000:
        return "one thousand"
    return str(n)


def bin_prompt(bin: Bin, prompt_type: PromptType = "word") -> str:
    """The text prompt of one bin.

    Single counts read "There is no person." / "There is one person." / "There are {n} people.", the open
    bin reads "There are more than {lo} people." (it means "lo or more", as in the official code), and a
    finite range reads "There are between {lo} and {hi} people." (the official code crashes on ranges;
    this is the form it intended).
    """
    if prompt_type not in PROMPT_TYPES:
        raise ConfigError(f"prompt_type must be 'word' or 'number', got {prompt_type!r}.")
    lo, hi = bin
    spell = number_to_words if prompt_type == "word" else (lambda n: str(int(n)))
    if lo == hi:
        if lo == 0:
            return "There is no person." if prompt_type == "word" else "There is 0 person."
        if lo == 1:
            return "There is one person." if prompt_type == "word" else "There is 1 person."
        return f"There are {spell(lo)} people."
    if math.isinf(hi):
        return f"There are more than {spell(lo)} people."
    return f"There are between {spell(lo)} and {spell(hi)} people."


def bin_prompts(bins: Sequence[Bin], prompt_type: PromptType = "word") -> list[str]:
    """One prompt per bin, in order (see :func:`bin_prompt`)."""
    return [bin_prompt(b, prompt_type) for b in bins]


# --------------------------------------------------------------------------------------------------
# Bins
# --------------------------------------------------------------------------------------------------


def validate_bins(bins: Sequence[Sequence[float]]) -> tuple[Bin, ...]:
    """Check that ``bins`` are contiguous inclusive integer ranges starting at 0, ending open.

    Returns the bins as a tuple of float pairs. Raises :class:`ConfigError` otherwise.
    """
    if isinstance(bins, str) or not isinstance(bins, Sequence):
        raise ConfigError(f"bins must be a list of (lo, hi) pairs, got {bins!r}.")
    out: list[Bin] = []
    for i, b in enumerate(bins):
        if isinstance(b, str) or not isinstance(b, Sequence) or len(b) != 2:
            raise ConfigError(f"bin {i} must be a pair (lo, hi), got {b!r}.")
        try:
            lo = float(b[0])
            hi = math.inf if b[1] is None else float(b[1])
        except (TypeError, ValueError):
            raise ConfigError(f"bin {i} must be a pair of numbers (lo, hi), got {b!r}.") from None
        if math.isnan(lo) or math.isnan(hi) or math.isinf(lo):
            raise ConfigError(f"bin {i} must be an integer range 0 <= lo <= hi, got {b!r}.")
        if lo != int(lo) or (not math.isinf(hi) and hi != int(hi)) or hi < lo or lo < 0:
            raise ConfigError(f"bin {i} must be an integer range 0 <= lo <= hi, got {b!r}.")
        if out and lo != out[-1][1] + 1:
            raise ConfigError(
                f"bins must be contiguous: bin {i} starts at {lo:g} but the previous one ends at "
                f"{out[-1][1]:g}."
            )
        out.append((lo, hi))
    if len(out) < 2:
        raise ConfigError(f"at least two bins are needed, got {len(out)}.")
    if out[0][0] != 0:
        raise ConfigError(f"the first bin must start at 0, got {out[0]!r}.")
    if not math.isinf(out[-1][1]):
        raise ConfigError(f"the last bin must be open-ended (hi = inf), got {out[-1]!r}.")
    if any(math.isinf(b[1]) for b in out[:-1]):
        raise ConfigError("only the last bin may be open-ended.")
    return tuple(out)


def make_bins(truncation: int, granularity: Granularity = "fine") -> list[Bin]:
    """Bins for a truncation ``t`` at one granularity.

    * fine: ``{0} {1} ... {t-1} [t, inf)``;
    * dynamic: single counts below ``ceil(t/2)``, then pairs, then the open bin;
    * coarse: ``{0}``, then pairs from 1, then the open bin.

    A pair that would reach ``t`` is not made: the open bin starts where it would have started. This
    reproduces every bin set of the official configs (for example coarse with ``t = 8`` ends with
    ``[5, 6] [7, inf)``).
    """
    t = int(truncation)
    if t < 1:
        raise ConfigError(f"truncation must be a positive integer, got {truncation!r}.")
    if granularity == "fine":
        singles = t
    elif granularity == "dynamic":
        singles = (t + 1) // 2
    elif granularity == "coarse":
        singles = 1
    else:
        raise ConfigError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    bins: list[Bin] = [(float(c), float(c)) for c in range(min(singles, t))]
    lo = len(bins)
    while lo + 1 < t:
        bins.append((float(lo), float(lo + 1)))
        lo += 2
    bins.append((float(lo), math.inf))
    return bins


def middle_anchor_points(bins: Sequence[Bin]) -> list[float]:
    """The "middle" anchors: each finite bin's midpoint and the open bin's lower bound."""
    return [b[0] if math.isinf(b[1]) else (b[0] + b[1]) / 2 for b in bins]


def counts_to_labels(counts, bins: Sequence[Bin]):
    """The bin index of each block count: a tensor (int64, same shape and device) for a tensor, an
    array for an array. Bins are contiguous from 0, so a count belongs to the last bin whose lower
    bound it reaches; counts of t or more fall into the open last bin."""
    if isinstance(counts, np.ndarray) or not hasattr(counts, "device"):
        lows = np.array([b[0] for b in bins], dtype=np.float64)
        return (np.searchsorted(lows, np.asarray(counts), side="right") - 1).clip(0).astype(np.int64)
    import torch

    lows = torch.tensor([b[0] for b in bins], dtype=counts.dtype, device=counts.device)
    return (torch.bucketize(counts, lows, right=True) - 1).clamp_(min=0)


# --------------------------------------------------------------------------------------------------
# Official constants (configs/reduction_{r}.json of the official implementation, commit b52a594)
# --------------------------------------------------------------------------------------------------

# (reduction, truncation) -> granularity -> dataset -> average anchors of the bins that are not singles
# of their own count. Anchors of single-count bins equal the count and are filled in by the lookup.
_OFFICIAL_AVERAGE_TAILS: dict[tuple[int, int], dict[str, dict[str, list[float]]]] = {
    (8, 2): {
        "fine": {
            "sha": [2.24479], "shb": [2.15171], "nwpu": [2.10737], "qnrf": [2.09296], "jhu": [2.18589],
        },
    },
    (8, 4): {
        "fine": {
            "sha": [4.29992], "shb": [4.41009], "nwpu": [4.21931], "qnrf": [4.21937], "jhu": [4.24058],
        },
    },
    (8, 11): {"fine": {"qnrf": [11.0]}},
    (16, 8): {
        "fine": {"qnrf": [9.23349]},
        "dynamic": {"qnrf": [4.29278, 6.31441, 9.23349]},
        "coarse": {"qnrf": [1.14978, 3.27641, 5.30609, 8.11466]},
    },
    (32, 19): {
        "fine": {"qnrf": [23.01897]},
        "dynamic": {"qnrf": [10.42903, 12.43320, 14.43341, 16.43521, 21.93548]},
        "coarse": {
            "qnrf": [
                1.23498, 3.36108, 5.40298, 7.41406, 9.42356, 11.43094, 13.43244, 15.43697, 17.43759,
                23.01897,
            ]
        },
    },
}


def official_configurations() -> list[tuple[int, int, str, str]]:
    """Every ``(reduction, truncation, granularity, dataset)`` the official configs define."""
    return [
        (r, t, g, d)
        for (r, t), by_gran in _OFFICIAL_AVERAGE_TAILS.items()
        for g, by_ds in by_gran.items()
        for d in by_ds
    ]


def _official_entry(reduction: int, truncation: int, granularity: str, dataset: str | None):
    key = (int(reduction), int(truncation))
    if key not in _OFFICIAL_AVERAGE_TAILS:
        known = ", ".join(f"reduction {r} / truncation {t}" for r, t in _OFFICIAL_AVERAGE_TAILS)
        raise ConfigError(
            f"the official configs have no bins for reduction {reduction} with truncation "
            f"{truncation}; they define {known}. Use make_bins() for other settings."
        )
    by_gran = _OFFICIAL_AVERAGE_TAILS[key]
    if granularity not in by_gran:
        raise ConfigError(
            f"the official configs define only {sorted(by_gran)} granularity for reduction "
            f"{reduction} / truncation {truncation}, not {granularity!r}."
        )
    by_ds = by_gran[granularity]
    if dataset is not None and dataset not in by_ds:
        raise ConfigError(
            f"the official configs have no anchor points for dataset {dataset!r} at reduction "
            f"{reduction} / truncation {truncation} / {granularity}; available: {sorted(by_ds)}."
        )
    return by_ds


def official_bins(reduction: int, truncation: int, granularity: Granularity = "fine") -> list[Bin]:
    """The bins of ``configs/reduction_{reduction}.json[truncation]`` at ``granularity``.

    The bins are the same for every dataset of an entry. Raises :class:`ConfigError` for a
    combination the official configs do not define.
    """
    _official_entry(reduction, truncation, granularity, None)
    return make_bins(truncation, granularity)


def official_anchor_points(
    reduction: int,
    truncation: int,
    dataset: str,
    granularity: Granularity = "fine",
    kind: AnchorKind = "average",
) -> list[float]:
    """The official anchor points for ``(reduction, truncation, dataset, granularity, kind)``.

    ``kind="average"`` gives the per-dataset means the released models were trained with;
    ``kind="middle"`` gives bin midpoints (dataset-independent).
    """
    if kind not in ANCHOR_KINDS:
        raise ConfigError(f"anchor kind must be 'average' or 'middle', got {kind!r}.")
    dataset = dataset_name(dataset)
    by_ds = _official_entry(reduction, truncation, granularity, dataset)
    bins = make_bins(truncation, granularity)
    if kind == "middle":
        return middle_anchor_points(bins)
    tail = by_ds[dataset]
    head = [b[0] for b in bins[: len(bins) - len(tail)]]
    return head + list(tail)
