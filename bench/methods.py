"""Built-in anonymization methods: pure numpy functions, one per method.

Contract of a method (the built-ins and a user's alike)::

    fn(image, pii_mask, boxes) -> anonymized

- ``image``: H x W x 3 ``uint8`` RGB.
- ``pii_mask``: H x W ``bool``, True on the PII region (person or face).
- ``boxes``: list of ``(x0, y0, x1, y1)`` integer pixel boxes around the PII, ``x1``/``y1``
  exclusive (so ``image[y0:y1, x0:x1]`` is the box).
- returns a new H x W x 3 ``uint8`` array; only pixels inside ``pii_mask`` may differ from
  ``image``, every pixel outside it is bit-identical. The input is never modified.

Box-based methods (blur, pixelate) take their parameters from each box and change the PII
pixels inside that box (``pii_mask`` AND box); PII pixels outside every box are left as they
are. Boxes are clipped to the image; a box that is empty after clipping is skipped. Boxes are
processed in the given order, each from the unmodified input, so where two boxes overlap the
later one wins.

The checks that a method's output has the right shape, dtype and no NaN live elsewhere (they
apply to user methods too); the built-ins satisfy them by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from bench.errors import InputError

Box = tuple[int, int, int, int]
Method = Callable[[np.ndarray, np.ndarray, Sequence[Box]], np.ndarray]

#: RGB colour that `mask` paints over the PII region.
MASK_FILL: tuple[int, int, int] = (0, 0, 0)
#: Gaussian blur radius (PIL's standard deviation) as a fraction of the box width.
BLUR_RADIUS_PER_BOX_WIDTH: float = 1.0 / 8.0
#: Side of the square pixelation blocks, in pixels.
PIXELATE_BLOCK: int = 16


def _clip_box(box: Sequence[int], height: int, width: int) -> Box | None:
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def local_crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The local scope of a pair: the PII box cropped, ``image[y0:y1, x0:x1]``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return image[y0:y1, x0:x1]


def mask(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Solid fill: every PII pixel becomes `MASK_FILL`. ``boxes`` is not used."""
    out = image.copy()
    out[pii_mask] = np.asarray(MASK_FILL, dtype=np.uint8)
    return out


def blur_radius(box: Sequence[int]) -> float:
    """The Gaussian blur radius (PIL's standard deviation, pixels) used for ``box``."""
    x0, _, x1, _ = box
    return (int(x1) - int(x0)) * BLUR_RADIUS_PER_BOX_WIDTH


def _blur_margin(radius: float) -> int:
    # PIL approximates the Gaussian by three passes of an (extended) box blur whose radius is
    # at most ceil(radius) + 1 pixels, so a pixel depends on pixels at most
    # 3 * (ceil(radius) + 1) away. Blurring the box plus this margin therefore gives, inside
    # the box, exactly what blurring the whole image gives (edges are clamped alike where the
    # margin reaches the image border). A generous extra keeps it true if PIL changes slightly.
    return 4 * (math.ceil(radius) + 1)


def blur(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Gaussian blur of each box with ``radius = box width / 8`` (PIL ``GaussianBlur``).

    Per box: blur the box plus a margin (same result inside the box as blurring the whole
    image), then copy back only the PII pixels of that box.
    """
    from PIL import Image, ImageFilter

    height, width = pii_mask.shape
    out = image.copy()
    for raw in boxes:
        box = _clip_box(raw, height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        radius = blur_radius(box)
        margin = _blur_margin(radius)
        cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
        cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
        region = Image.fromarray(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]), mode="RGB")
        blurred = np.asarray(region.filter(ImageFilter.GaussianBlur(radius)))
        inner = blurred[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
        sel = pii_mask[y0:y1, x0:x1]
        out[y0:y1, x0:x1][sel] = inner[sel]
    return out


def pixelate(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """16 x 16 pixel blocks, each replaced by its mean colour inside the PII mask.

    The block grid is anchored at the box's top-left corner and clipped at the box edge (the
    last row/column of blocks may be narrower). The mean is over all pixels of the block
    (PII or not), per channel, rounded half up exactly in integer arithmetic:
    ``(2 * sum + n) // (2 * n)``. Only the PII pixels of the block take that colour.
    """
    height, width = pii_mask.shape
    out = image.copy()
    b = PIXELATE_BLOCK
    for raw in boxes:
        box = _clip_box(raw, height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        for by in range(y0, y1, b):
            for bx in range(x0, x1, b):
                ey, ex = min(by + b, y1), min(bx + b, x1)
                block = image[by:ey, bx:ex].reshape(-1, 3).astype(np.int64)
                n = block.shape[0]
                mean = (2 * block.sum(axis=0) + n) // (2 * n)
                sel = pii_mask[by:ey, bx:ex]
                out[by:ey, bx:ex][sel] = mean.astype(np.uint8)
    return out


def inpaint(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Classical biharmonic inpainting of the PII mask (scikit-image).

    ``inpaint_biharmonic`` on the image as floats in [0, 1] with ``channel_axis=-1``; the
    result is scaled back by 255, rounded (``np.rint``, half to even) and clipped to uint8,
    and only the PII pixels are copied into the output. ``boxes`` is not used.
    """
    from skimage.restoration import inpaint_biharmonic

    out = image.copy()
    if not pii_mask.any():
        return out
    filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, pii_mask, channel_axis=-1)
    filled = np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)
    out[pii_mask] = filled[pii_mask]
    return out


#: The built-in methods by name. The protocol maps ``blur`` and ``pixelate`` to the paper's
#: ``blurpix`` family.
BUILTIN_METHODS: dict[str, Method] = {
    "mask": mask,
    "blur": blur,
    "pixelate": pixelate,
    "inpaint": inpaint,
}


def get_method(name: str) -> Method:
    """The built-in method called ``name``; an `InputError` lists the allowed names."""
    try:
        return BUILTIN_METHODS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(BUILTIN_METHODS)
        raise InputError(f"unknown anonymization method {name!r}; allowed: {allowed}") from None
