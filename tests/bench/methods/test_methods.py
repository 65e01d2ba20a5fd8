"""Built-in anonymization methods: hand-computed expectations and the method contract."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bench import methods
from bench.data import regions
from bench.errors import InputError


def _random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _box_mask(shape, box):
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# --------------------------------------------------------------------------- mask
def test_mask_fills_the_pii_region_with_the_fill_colour():
    image = _random_image(8, 8)
    pii = np.zeros((8, 8), dtype=bool)
    pii[2:5, 1:7] = True
    pii[6, 0] = True  # masks need not be boxes
    out = methods.mask(image, pii, [(1, 2, 7, 5)])
    expected = image.copy()
    expected[pii] = methods.MASK_FILL
    np.testing.assert_array_equal(out, expected)
    assert methods.MASK_FILL == (0, 0, 0)


# --------------------------------------------------------------------------- pixelate
def test_pixelate_block_means_by_hand():
    # One channel pattern known by hand: a 20 x 18 box at (2, 3) has blocks of 16x16, 16x2,
    # 4x16 and 4x2 pixels (the grid is anchored at the box corner and clipped at its edge).
    image = np.zeros((24, 24, 3), dtype=np.uint8)
    image[..., 0] = 10
    image[..., 1] = np.arange(24, dtype=np.uint8)[None, :]  # value = x
    image[..., 2] = np.arange(24, dtype=np.uint8)[:, None]  # value = y
    box = (2, 3, 22, 21)  # x 2..21, y 3..20
    out = methods.pixelate(image, _box_mask((24, 24), box), [box])

    # Block x 2..17, y 3..18: mean x = 9.5 -> 10 (half up), mean y = 10.5 -> 11.
    np.testing.assert_array_equal(out[3:19, 2:18], np.broadcast_to([10, 10, 11], (16, 16, 3)))
    # Block x 18..21, y 3..18: mean x = 19.5 -> 20, mean y = 10.5 -> 11.
    np.testing.assert_array_equal(out[3:19, 18:22], np.broadcast_to([10, 20, 11], (16, 4, 3)))
    # Block x 2..17, y 19..20: mean x = 9.5 -> 10, mean y = 19.5 -> 20.
    np.testing.assert_array_equal(out[19:21, 2:18], np.broadcast_to([10, 10, 20], (2, 16, 3)))
    # Block x 18..21, y 19..20: mean x = 19.5 -> 20, mean y = 19.5 -> 20.
    np.testing.assert_array_equal(out[19:21, 18:22], np.broadcast_to([10, 20, 20], (2, 4, 3)))
    # Outside the box nothing moved.
    outside = ~_box_mask((24, 24), box)
    np.testing.assert_array_equal(out[outside], image[outside])


def test_pixelate_rounds_half_up_and_uses_all_block_pixels():
    # An 8x8 image, the box covers it all: one (clipped) block of 64 pixels.
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:4, :, 0] = 1  # 32 ones / 64 = 0.5  -> 1 (half up; np.round would give 0)
    image[:2, :, 1] = 255  # 16 * 255 / 64 = 63.75 -> 64
    image[0, 0, 2] = 200  # 200 / 64 = 3.125 -> 3
    pii = np.zeros((8, 8), dtype=bool)
    pii[:, 4:] = True  # only the right half is PII, but the mean is over the whole block
    out = methods.pixelate(image, pii, [(0, 0, 8, 8)])
    np.testing.assert_array_equal(out[:, 4:], np.broadcast_to([1, 64, 3], (8, 4, 3)))
    np.testing.assert_array_equal(out[:, :4], image[:, :4])


# --------------------------------------------------------------------------- blur
@pytest.mark.parametrize("box", [(4, 6, 28, 30), (0, 0, 32, 32), (10, 0, 19, 9), (1, 1, 3, 2)])
def test_blur_matches_pil_gaussian_blur_of_the_whole_image(box):
    image = _random_image(32, 32, seed=1)
    pii = _box_mask((32, 32), box)
    out = methods.blur(image, pii, [box])
    radius = (box[2] - box[0]) / 8
    assert methods.blur_radius(box) == radius
    reference = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    np.testing.assert_array_equal(out[pii], reference[pii])
    np.testing.assert_array_equal(out[~pii], image[~pii])


def test_blur_matches_pil_on_the_crop_when_the_box_is_the_whole_crop():
    # The image *is* the crop: blurring it directly with PIL gives the expected values.
    crop = _random_image(24, 16, seed=2)
    box = (0, 0, 16, 24)
    out = methods.blur(crop, np.ones((24, 16), dtype=bool), [box])
    expected = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(16 / 8)))
    np.testing.assert_array_equal(out, expected)


def test_blur_changes_only_the_pii_pixels_of_the_box():
    image = _random_image(32, 32, seed=3)
    box = (4, 4, 28, 28)
    pii = np.zeros((32, 32), dtype=bool)
    pii[8:20, 8:20] = True  # a mask smaller than its box
    out = methods.blur(image, pii, [box])
    np.testing.assert_array_equal(out[~pii], image[~pii])
    assert (out[pii] != image[pii]).any()


# --------------------------------------------------------------------------- inpaint
def test_inpaint_fills_a_smooth_hole_smoothly():
    # A linear ramp is biharmonic: inpainting a hole in it restores it (up to rounding).
    y, x = np.mgrid[0:32, 0:32]
    ramp = np.stack([4 * x + 10, 3 * y + 20, 2 * x + 2 * y + 5], axis=-1).astype(np.uint8)
    box = (10, 12, 20, 22)
    pii = _box_mask((32, 32), box)
    damaged = ramp.copy()
    damaged[pii] = 0
    out = methods.inpaint(damaged, pii, [box])
    assert np.abs(out.astype(int) - ramp.astype(int)).max() <= 1
    np.testing.assert_array_equal(out[~pii], damaged[~pii])


# --------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", sorted(methods.BUILTIN_METHODS))
@pytest.mark.parametrize("shape,box", [((32, 32), (5, 7, 27, 30)), ((40, 24), (0, 3, 24, 40))])
def test_builtin_contract(name, shape, box):
    image = _random_image(*shape, seed=4)
    before = image.copy()
    pii = _box_mask(shape, box)
    pii[box[1], box[0]] = False  # a mask that is not exactly the box
    out = methods.get_method(name)(image, pii, [box])
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # the input is not modified
    np.testing.assert_array_equal(out[~pii], image[~pii])  # bit-identical outside the PII
    assert (out[pii] != image[pii]).any()  # the PII region changed


@pytest.mark.parametrize("name", sorted(methods.BUILTIN_METHODS))
def test_builtin_with_an_empty_mask_changes_nothing(name):
    image = _random_image(16, 16, seed=5)
    out = methods.get_method(name)(image, np.zeros((16, 16), dtype=bool), [(2, 2, 10, 10)])
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("name", ["blur", "pixelate"])
def test_box_methods_clip_boxes_to_the_image(name):
    image = _random_image(16, 16, seed=6)
    pii = _box_mask((16, 16), (8, 8, 16, 16))
    out = methods.get_method(name)(image, pii, [(8, 8, 40, 40), (-5, -5, -1, -1)])
    np.testing.assert_array_equal(out[~pii], image[~pii])
    assert (out[pii] != image[pii]).any()


def test_builtin_methods_are_the_four_of_the_paper():
    assert set(methods.BUILTIN_METHODS) == {"mask", "blur", "pixelate", "inpaint"}
    for name, fn in methods.BUILTIN_METHODS.items():
        assert methods.get_method(name) is fn


def test_identity_is_a_reference_method_run_beside_the_builtins():
    image = _random_image(16, 16, seed=7)
    out = methods.REFERENCE_METHODS["identity"](image, np.ones((16, 16), dtype=bool), [(0, 0, 16, 16)])
    np.testing.assert_array_equal(out, image)
    assert out is not image
    assert [method.name for method in methods.builtin_methods()] == [*methods.BUILTIN_METHODS, "identity"]
    assert methods.resolve_method("identity").kind == "built-in"


def test_get_method_unknown_name_lists_allowed():
    with pytest.raises(InputError) as excinfo:
        methods.get_method("swirl")
    message = str(excinfo.value)
    assert "swirl" in message
    for name in methods.BUILTIN_METHODS:
        assert name in message


def test_local_crop():
    image = _random_image(10, 12, seed=7)
    crop = regions.local_crop(image, (2, 3, 9, 8))
    assert crop.shape == (5, 7, 3)
    np.testing.assert_array_equal(crop, image[3:8, 2:9])
