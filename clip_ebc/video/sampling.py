"""Which frames of a video to keep: :class:`Sampling` and :func:`parse_every` ("1s", "250ms", "12f")."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from ..errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """Which frames to keep: one per ``seconds`` of presentation time, or every ``frames``-th decoded
    frame. Exactly one of the two is set."""

    seconds: float | None = 1.0
    frames: int | None = None

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.frames is None):
            raise ConfigError("a Sampling needs exactly one of seconds= and frames=, e.g. Sampling(seconds=1.0).")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"sampling interval {self.seconds!r} s must be a positive number of seconds.")
        if self.frames is not None and (isinstance(self.frames, bool) or int(self.frames) != self.frames
                                        or self.frames < 1):
            raise ConfigError(f"sampling interval {self.frames!r} frames must be a whole number of at least 1.")

    def __str__(self) -> str:
        return f"{self.frames}f" if self.frames is not None else f"{self.seconds:g}s"


_EVERY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|ms|f)?", re.IGNORECASE)


def parse_every(text: str | float | Sampling) -> Sampling:
    """Parse a sampling interval: ``"1s"``, ``"0.5s"``, ``"250ms"``, ``"12f"`` (every 12th frame), or a
    plain number of seconds (``"2"``, ``0.5``).

    Raises :class:`~clip_ebc.errors.ConfigError` naming the value and the accepted forms.
    """
    if isinstance(text, Sampling):
        return text
    bad = ConfigError(
        f"invalid sampling interval {text!r}: use seconds ('1s', '0.5s' or a plain number), milliseconds "
        "('250ms') or a frame count ('12f' keeps every 12th frame); it must be more than zero."
    )
    if isinstance(text, bool):
        raise bad
    if isinstance(text, (int, float)):
        if not (math.isfinite(text) and text > 0):
            raise bad
        return Sampling(seconds=float(text))
    match = _EVERY.fullmatch(str(text).strip())
    if match is None:
        raise bad
    number, unit = match.group(1), (match.group(2) or "s").lower()
    if unit == "f":
        if "." in number or int(number) < 1:
            raise bad
        return Sampling(seconds=None, frames=int(number))
    seconds = float(number) / (1000.0 if unit == "ms" else 1.0)
    if seconds <= 0:
        raise bad
    return Sampling(seconds=seconds)


def _exact(x: float) -> Fraction:
    """A float as the decimal it was written as (0.1 -> 1/10), so timestamp comparisons are exact."""
    return Fraction(repr(float(x)))
