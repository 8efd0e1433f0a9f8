"""Reading images safely: paths, PIL images, arrays and tensors to RGB uint8 (H, W, 3).

EXIF orientation is applied; palette, grey, alpha, CMYK and 16/32-bit images become RGB; missing,
empty, truncated and non-image files, and images with more pixels than a limit (decompression bombs),
raise :class:`~clip_ebc.errors.ImageError` naming the input.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, "torch.Tensor"]
"""What :func:`load_image` accepts: a file path, a PIL image, an (H, W, 3) uint8 array, or a
(3, H, W) tensor (uint8 0-255, or float 0-1)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".avif", ".heic",
                  ".heif")
"""File suffixes treated as images when scanning folders."""

DEFAULT_MAX_PIXELS = 178_956_970
"""Images with more pixels than this are refused before decoding (a guard against decompression
bombs; the same value as PIL's own hard limit, which applies on top of it)."""


def describe(source: Any) -> str:
    """A short name for an input, for messages: the path, or the kind of object."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"PIL image ({source.mode}, {source.width}x{source.height})"
    shape = getattr(source, "shape", None)
    return f"{type(source).__name__} of shape {tuple(shape)}" if shape is not None else type(source).__name__


def load_image(source: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read ``source`` as RGB: (H, W, 3) uint8, EXIF orientation applied.

    Raises :class:`ImageError` for anything that is not a usable image.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), max_pixels)
    if isinstance(source, Image.Image):
        name = describe(source)
        _check_pixels(source.size, name, max_pixels)
        try:  # a lazily opened image decodes here
            return to_rgb_array(ImageOps.exif_transpose(source))
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name} cannot be decoded: {e}.") from e
    if isinstance(source, np.ndarray):
        return _from_array(source, describe(source), max_pixels)
    if type(source).__module__.startswith("torch"):
        return _from_tensor(source, max_pixels)
    raise ImageError(
        f"cannot read an image from a {type(source).__name__}; pass a file path, a PIL image, an (H, W, 3) "
        "uint8 array or a (3, H, W) tensor."
    )


def _load_path(path: Path, max_pixels: int | None) -> np.ndarray:
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(f"{path} is a broken link (its target does not exist).") from None
        raise ImageError(f"{path}: no such file.") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read it ({e.strerror}).") from e
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path} is a directory, not an image.")
    if not stat.S_ISREG(info.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "a socket or device"
        raise ImageError(f"{path} is {kind}, not a file; save the image to a file first.")
    if info.st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes).")
    if path.suffix.lower() in HEIF_SUFFIXES:
        _register_heif(str(path))
    return _decode(path, str(path), max_pixels)


HEIF_SUFFIXES = (".heic", ".heif")


def _register_heif(name: str) -> None:
    """Let PIL read HEIC/HEIF photos through pillow-heif (the ``heic`` extra), once."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        from .errors import missing_extra

        raise ImageError(f"{name}: {missing_extra('heic', 'reading HEIC/HEIF photos', 'pillow-heif')}") from None
    register_heif_opener()


def load_image_bytes(data: bytes, name: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ... bytes, e.g. read from object storage or a URL) as
    :func:`load_image` reads a file: (H, W, 3) uint8 RGB, EXIF applied; ``name`` is used in messages."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes).")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(file: Path | io.BytesIO, name: str, max_pixels: int | None) -> np.ndarray:
    try:
        # Our max_pixels check is the limit; PIL's own hard error (twice its MAX_IMAGE_PIXELS) still
        # applies, and between the two PIL may emit a DecompressionBombWarning. PIL's warnings (corrupt
        # EXIF data, ...) do not say which file they are about: they are raised again naming it.
        with warnings.catch_warnings(record=True) as caught, Image.open(file) as img:
            warnings.simplefilter("always")
            _check_pixels(img.size, name, max_pixels)
            img = ImageOps.exif_transpose(img)
            img.load()
            rgb = to_rgb_array(img, name)
        for message, category in dict.fromkeys((str(w.message).strip(), w.category) for w in caught):
            warnings.warn(f"{name}: {message}", category, stacklevel=2)
        return rgb
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image file that can be read (unknown or unsupported format).") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name} is too large to decode safely ({e}); downscale it first.") from e
    except OSError as e:
        if "truncated" in str(e).lower():
            raise ImageError(f"{name} is truncated or corrupt: {e}.") from e
        raise ImageError(f"{name} cannot be decoded: {e}.") from e
    except (SyntaxError, ValueError) as e:  # PIL raises these for some malformed files
        raise ImageError(f"{name} is corrupt: {e}.") from e


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height}).")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}x{height} = {width * height:,} pixels, more than the limit of {max_pixels:,} "
            "(a guard against decompression bombs); downscale it, or raise max_pixels if you trust the file."
        )


def to_rgb_array(img: Image.Image, name: str | None = None) -> np.ndarray:
    """Convert any PIL mode to RGB uint8 (H, W, 3); 16/32-bit and float images are rescaled to 8 bits.
    A float image holding NaN or infinite values raises :class:`ImageError` (``name`` names it)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if mode == "F" and not np.isfinite(values).all():
            raise ImageError(f"{name or describe(img)} holds NaN or infinite pixel values; it is not a usable image.")
        if mode.startswith("I;16"):
            values = values / 257.0
        elif mode == "I":
            values = values / 257.0 if values.max(initial=0) > 255 else values
        else:  # float images: [0, 1] data stays, anything else is min-max scaled
            lo, hi = float(values.min(initial=0)), float(values.max(initial=0))
            values = values * 255.0 if lo >= 0 and hi <= 1 else (values - lo) / max(hi - lo, 1e-12) * 255.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _from_array(array: np.ndarray, name: str, max_pixels: int | None) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"{name}: expected an (H, W, 3) RGB array.")
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: expected dtype uint8 (0-255), got {array.dtype}; convert it with .astype(np.uint8).")
    _check_pixels((array.shape[1], array.shape[0]), name, max_pixels)
    if not array.flags.writeable:  # np.asarray(PIL image) is read-only, which torch.from_numpy warns about
        return array.copy(order="C")
    return np.ascontiguousarray(array)


def _from_tensor(tensor: Any, max_pixels: int | None) -> np.ndarray:
    import torch

    name = describe(tensor)
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ImageError(f"{name}: expected a (3, H, W) RGB tensor.")
    _check_pixels((int(tensor.shape[2]), int(tensor.shape[1])), name, max_pixels)
    t = tensor.detach().cpu()
    if t.dtype == torch.uint8:
        return t.permute(1, 2, 0).contiguous().numpy()
    if not t.is_floating_point():
        raise ImageError(f"{name}: expected uint8 (0-255) or float (0-1) values, got {t.dtype}.")
    if not bool(torch.isfinite(t).all()):
        raise ImageError(f"{name}: the tensor holds NaN or infinite values.")
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ImageError(f"{name}: float tensors must hold RGB values in [0, 1]; this one is not normalised that way.")
    return (t.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()

