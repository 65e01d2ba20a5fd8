"""PII regions: the boxes of pii.json, clipped to an image, as a mask, and the local scope.

Geometry only, shared by the benchmark set (which reads the boxes), the methods (which paint
over them) and `bench dataset init` (which writes them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
Box = tuple[int, int, int, int]


def clip_box(box: Sequence[int], height: int, width: int) -> Box | None:
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


def boxes_mask(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    """The union of `boxes` (x1, y1 exclusive) as a height x width bool mask, True = PII."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0):y1, max(0, x0):x1] = True
    return mask


def local_box(boxes: Sequence[Sequence[int]], height: int, width: int) -> Box | None:
    """The box of an image's local scope: the smallest box holding all its PII boxes, clipped
    to the image; None when no box overlaps the image."""
    clipped = [b for b in (clip_box(box, height, width) for box in boxes) if b is not None]
    if not clipped:
        return None
    x0s, y0s, x1s, y1s = zip(*clipped)
    return min(x0s), min(y0s), max(x1s), max(y1s)
