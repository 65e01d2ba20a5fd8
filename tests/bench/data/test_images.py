"""bench.data.images: the one decode path (modes, orientation, bad files, bombs, size policy)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from bench.data import images
from bench.errors import ImageError, InputError


def over_white(c: int, a: int) -> int:
    """The documented compositing rule, computed independently in floating point."""
    return int(round((c * a + 255 * (255 - a)) / 255))


def save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


# --------------------------------------------------------------------------- modes
def test_rgb_is_identity(tmp_path):
    arr = np.array([[[0, 1, 2], [250, 128, 7]]], dtype=np.uint8)
    out = images.load_rgb(save(Image.fromarray(arr, "RGB"), tmp_path / "x.png"))
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out, arr)


def test_L_copies_grey_to_three_channels(tmp_path):
    arr = np.array([[0, 77, 255]], dtype=np.uint8)
    out = images.load_rgb(save(Image.fromarray(arr, "L"), tmp_path / "x.png"))
    np.testing.assert_array_equal(out, np.repeat(arr[:, :, None], 3, axis=2))


def test_1_bit(tmp_path):
    im = Image.new("1", (2, 1), 0)
    im.putpixel((1, 0), 1)
    out = images.load_rgb(save(im, tmp_path / "x.png"))
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]


def test_LA_composited_over_white(tmp_path):
    im = Image.new("LA", (3, 1))
    for x, px in enumerate([(100, 0), (100, 255), (100, 128)]):
        im.putpixel((x, 0), px)
    out = images.load_rgb(save(im, tmp_path / "x.png"))
    assert out[0, 0].tolist() == [255] * 3  # fully transparent -> white, not the hidden grey
    assert out[0, 1].tolist() == [100] * 3
    assert out[0, 2].tolist() == [over_white(100, 128)] * 3


def test_RGBA_composited_over_white(tmp_path):
    im = Image.new("RGBA", (3, 1))
    for x, px in enumerate([(10, 20, 30, 0), (10, 20, 30, 255), (200, 100, 50, 128)]):
        im.putpixel((x, 0), px)
    out = images.load_rgb(save(im, tmp_path / "x.png"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    assert out[0, 2].tolist() == [over_white(200, 128), over_white(100, 128), over_white(50, 128)]


def _palette_image() -> Image.Image:
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    return im


def test_P_without_transparency_uses_palette(tmp_path):
    out = images.load_rgb(save(_palette_image(), tmp_path / "x.png"))
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [200, 100, 50]


def test_P_with_transparency_composited_over_white(tmp_path):
    path = save(_palette_image(), tmp_path / "x.png", transparency=1)
    with Image.open(path) as im:
        assert im.mode == "P" and im.info.get("transparency") is not None
    out = images.load_rgb(path)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]


def test_L_with_transparency_key_composited_over_white(tmp_path):
    im = Image.fromarray(np.array([[7, 9]], dtype=np.uint8), "L")
    out = images.load_rgb(save(im, tmp_path / "x.png", transparency=7))
    assert out[0, 0].tolist() == [255] * 3
    assert out[0, 1].tolist() == [9] * 3


def test_CMYK_uses_pil_conversion(tmp_path):
    im = Image.new("CMYK", (3, 1))
    for x, px in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        im.putpixel((x, 0), px)
    out = images.load_rgb(save(im, tmp_path / "x.tif"))
    assert out[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]


def test_I16_scaled_by_full_range(tmp_path):
    values = np.array([[0, 128, 129, 257 * 100, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "x.png")
    with Image.open(path) as im:
        assert im.mode == "I;16"
    out = images.load_rgb(path)
    expected = [0, 0, 1, 100, 255]  # round(v / 257)
    assert out[0, :, 0].tolist() == expected
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_I32_treated_as_16_bit_and_clipped(tmp_path):
    values = np.array([[-5, 0, 257 * 3, 65535, 70000]], dtype=np.int32)
    path = save(Image.fromarray(values, "I"), tmp_path / "x.tif")
    with Image.open(path) as im:
        assert im.mode == "I"
    out = images.load_rgb(path)
    assert out[0, :, 0].tolist() == [0, 0, 3, 255, 255]


def test_F_treated_as_unit_range(tmp_path):
    values = np.array([[-0.5, 0.0, 0.2, 1.0, 2.0]], dtype=np.float32)
    path = save(Image.fromarray(values, "F"), tmp_path / "x.tif")
    out = images.load_rgb(path)
    assert out[0, :, 0].tolist() == [0, 0, 51, 255, 255]


def test_to_float():
    rgb = np.array([[[0, 51, 255]]], dtype=np.uint8)
    f = images.to_float(rgb)
    assert f.dtype == np.float32 and f.shape == rgb.shape
    np.testing.assert_allclose(f, [[[0.0, 0.2, 1.0]]], atol=1e-7)
    with pytest.raises(TypeError):
        images.to_float(rgb.astype(np.float32))


# --------------------------------------------------------------------------- orientation
def test_exif_orientation_6_is_applied(tmp_path):
    arr = np.zeros((32, 64, 3), dtype=np.uint8)  # 64 wide, 32 high
    arr[:16] = (255, 0, 0)  # top half red
    arr[16:] = (0, 0, 255)  # bottom half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(Image.fromarray(arr), tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)

    assert images.check_image(path) == (32, 64)  # width, height after orientation
    out = images.load_rgb(path)
    assert out.shape == (64, 32, 3)
    # Rotating clockwise puts the old top (red) on the right, the old bottom (blue) on the left.
    right, left = out[:, 24:].reshape(-1, 3).mean(0), out[:, :8].reshape(-1, 3).mean(0)
    assert right[0] > 200 and right[2] < 60
    assert left[2] > 200 and left[0] < 60


# --------------------------------------------------------------------------- bad files
def _noisy(tmp_path: Path, ext: str) -> Path:
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return save(Image.fromarray(arr), tmp_path / f"full.{ext}")


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_file_is_an_image_error(tmp_path, ext):
    data = _noisy(tmp_path, ext).read_bytes()
    bad = tmp_path / f"cut.{ext}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        images.load_rgb(bad)
    msg = str(info.value)
    assert str(bad) in msg and "cannot decode image" in msg and "truncated" in msg
    assert "\n" not in msg
    with pytest.raises(ImageError):
        images.check_image(bad)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found") as info:
        images.load_rgb(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(info.value)


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(ImageError, match="not a recognised image format") as info:
        images.check_image(bad)
    assert str(bad) in str(info.value)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 100_000])  # above the limit, and above PIL's 2x error limit
def test_decompression_bomb_header_refused(tmp_path, side):
    bomb = _png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageError, match="decompression bomb") as info:
        images.check_image(bomb)
    assert str(bomb) in str(info.value) and "\n" not in str(info.value)


def test_pixel_limit_is_the_module_constant(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (20, 20)), tmp_path / "x.png")
    assert images.check_image(path) == (20, 20)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(ImageError, match="decompression bomb.*20x20"):
        images.load_rgb(path)


# --------------------------------------------------------------------------- size policy
def test_reconcile_sizes_equal_sizes_untouched():
    a = np.zeros((4, 6, 3), np.uint8)
    b = np.ones((4, 6, 3), np.uint8)
    assert images.reconcile_sizes(a, b, "error", where="HA1.csv line 3") is b


def test_reconcile_sizes_error_names_row_sizes_and_remedy():
    a = np.zeros((4, 6, 3), np.uint8)
    b = np.zeros((5, 7, 3), np.uint8)
    with pytest.raises(ImageError) as info:
        images.reconcile_sizes(a, b, "error", where="HA1.csv line 12")
    msg = str(info.value)
    assert "HA1.csv line 12" in msg and "6x4" in msg and "7x5" in msg and "--size-policy resize" in msg


def test_reconcile_sizes_resize_is_pil_bicubic():
    rng = np.random.default_rng(1)
    a = np.zeros((4, 6, 3), np.uint8)
    b = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    out = images.reconcile_sizes(a, b, "resize", where="x")
    assert out.shape == a.shape and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(b).resize((6, 4), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out, expected)
    assert images.RESIZE_FILTER == "bicubic" and images.SIZE_POLICIES[0] == "error"


def test_reconcile_sizes_unknown_policy():
    a = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(InputError, match="error, resize"):
        images.reconcile_sizes(a, a, "stretch", where="x")
