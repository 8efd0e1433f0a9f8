"""Exception types raised by clip-ebc.

Every error meant for a user derives from :class:`CLIPEBCError`, so a caller (or the command line)
can catch one type and show the message, which is written as a sentence naming the input and the fix.
"""

from __future__ import annotations


class CLIPEBCError(Exception):
    """Base class of every error clip-ebc raises on purpose."""


class ConfigError(CLIPEBCError, ValueError):
    """A model configuration (or an argument that becomes one) is invalid."""


class CheckpointError(CLIPEBCError):
    """A checkpoint is missing, incomplete, or does not fit the model it is loaded into."""


class ConversionError(CheckpointError):
    """An official CLIP-EBC checkpoint cannot be converted."""


class ImageError(CLIPEBCError, ValueError):
    """An input image cannot be read or used (missing, empty, truncated, not an image, too large)."""


class ModelNotFoundError(CLIPEBCError, LookupError):
    """A model name, path or Hub id does not resolve to a checkpoint."""


class DownloadError(CLIPEBCError):
    """Weights could not be fetched, or what was fetched failed verification."""


class ZoneError(ConfigError):
    """A zone file or polygon is invalid (not JSON, degenerate, self-intersecting, outside the image)."""


class VideoError(CLIPEBCError):
    """A video file, stream or camera cannot be opened or decoded (or stopped for good)."""


class MissingExtraError(CLIPEBCError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""


def missing_extra(extra: str, what: str, module: str) -> MissingExtraError:
    """The error for a missing optional extra: ``{what} needs {module}: pip install "clip-ebc[{extra}]"``."""
    return MissingExtraError(f'{what} needs the optional dependency {module}; install it with: pip install "clip-ebc[{extra}]"')


class NumericalError(CLIPEBCError, ArithmeticError):
    """A model produced NaN or infinite values: its weights or configuration are broken, or the
    precision overflowed; never reported as a count."""
