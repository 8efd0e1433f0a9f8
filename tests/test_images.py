"""Reading images: formats, EXIF orientation, modes, and every kind of bad input."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clip_ebc import ImageError
from clip_ebc.images import load_image


def gradient(h=20, w=30) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 8, y * 12, (x + y) * 4], axis=2).astype(np.uint8)


def test_sources_agree(tmp_path):
    rgb = gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    chw_u8 = torch.from_numpy(rgb).permute(2, 0, 1)
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(rgb), rgb, chw_u8, chw_u8.float() / 255):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
        assert np.array_equal(out, rgb)


def test_exif_orientation_is_applied(tmp_path):
    rgb = gradient(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (30, 20, 3)
    expected = np.rot90(rgb, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4  # JPEG noise only


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I", "F"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.fromarray(gradient()).convert(mode)
    out = load_image(img)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    suffix = ".tif" if mode in ("CMYK", "I", "F") else ".png"
    img.save(tmp_path / f"x{suffix}")
    assert load_image(tmp_path / f"x{suffix}").shape == (20, 30, 3)


def test_sixteen_bit_images_are_scaled(tmp_path):
    values = np.array([[0, 257, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    img.save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out[0, :, 0].tolist() == [0, 1, 255] and (out[..., 0] == out[..., 2]).all()


def test_palette_with_transparency(tmp_path):
    img = Image.fromarray(gradient()).convert("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png").shape == (20, 30, 3)


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data is tiny): a decompression bomb."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def test_bad_inputs(tmp_path):
    cases = {}
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases["empty.jpg"] = "is empty"
    (tmp_path / "notes.jpg").write_text("these are not pixels")
    cases["notes.jpg"] = "is not an image file"
    buf = io.BytesIO()
    Image.fromarray(gradient(200, 200)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases["cut.jpg"] = "is truncated or corrupt"
    (tmp_path / "bomb.png").write_bytes(png_with_header(40_000, 40_000))
    cases["bomb.png"] = "is too large to decode safely"
    (tmp_path / "folder").mkdir()
    cases["folder"] = "is a directory"
    cases["missing.jpg"] = "no such file"
    for name, message in cases.items():
        with pytest.raises(ImageError, match=message) as info:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    (tmp_path / "big.png").write_bytes(png_with_header(9_000, 9_000))  # header only: 81 megapixels claimed
    with pytest.raises(ImageError, match="9000x9000 = 81,000,000 pixels, more than the limit of 50,000,000"):
        load_image(tmp_path / "big.png", max_pixels=50_000_000)


def test_pixel_limit_is_adjustable(tmp_path):
    Image.fromarray(gradient(100, 100)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="more than the limit of 5,000"):
        load_image(tmp_path / "a.png", max_pixels=5000)
    assert load_image(tmp_path / "a.png", max_pixels=None).shape == (100, 100, 3)


@pytest.mark.parametrize(
    "source, message",
    [
        (np.zeros((10, 10), np.uint8), r"expected an \(H, W, 3\) RGB array"),
        (np.zeros((10, 10, 3), np.float32), "expected dtype uint8"),
        (torch.zeros(10, 10, 3), r"expected a \(3, H, W\) RGB tensor"),
        (torch.full((3, 4, 4), 2.0), r"must hold RGB values in \[0, 1\]"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "expected uint8 .* or float"),
        (12345, "cannot read an image from a int"),
    ],
)
def test_bad_in_memory_inputs(source, message):
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_non_finite_tensor():
    t = torch.zeros(3, 4, 4)
    t[0, 0, 0] = float("nan")
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_image(t)
