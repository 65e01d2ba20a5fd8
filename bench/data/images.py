"""The one decode path for every image in the suite.

Every image a metric, a model or `bench validate` sees goes through `load_rgb`, so two
components can never disagree about what an image "is". The rules, in order:

1. **Open** with PIL. Missing, unreadable, truncated or corrupt files raise `ImageError`
   with one line: ``cannot decode image PATH: REASON; re-export it or remove its row``.
   Truncated files are *not* silently padded (`ImageFile.LOAD_TRUNCATED_IMAGES` is never
   touched). Multi-frame files (GIF, APNG, TIFF) use their first frame.
2. **Decompression bombs** are refused: an image with more than `MAX_IMAGE_PIXELS` pixels
   (width x height, read from the header before any pixel is decoded) raises `ImageError`.
   PIL's own `DecompressionBombWarning` is turned into an error while we open a file, and
   its `DecompressionBombError` is caught; both become the same one-line `ImageError`.
3. **EXIF orientation** is applied (`ImageOps.exif_transpose`), so sizes and pixels are
   those of the image as a viewer shows it.
4. **Mode -> 8-bit RGB** (`H x W x 3`, `uint8`), by this stated rule:

   * ``1``, ``L``, ``P`` (no transparency), ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``:
     PIL ``convert("RGB")``. Embedded ICC profiles are ignored (no colour management);
     CMYK uses PIL's formula ``R = (255 - C) * (255 - K) / 255`` (likewise G, B).
   * Anything with transparency -- ``LA``, ``RGBA``, ``PA``, ``RGBa``, and ``P``/``L``/``RGB``
     with a transparency key (PNG ``tRNS``) -- is converted to RGBA by PIL and then
     **alpha-composited over white** (`ALPHA_BACKGROUND`), per channel::

         out = round((c * a + 255 * (255 - a)) / 255)

     so a fully transparent pixel is white and an opaque one keeps its colour. (PIL's
     ``convert("RGB")`` would silently drop alpha and expose whatever colour hides under
     transparent pixels, often black.)
   * ``I;16`` (and ``I;16B``/``I;16L``/``I;16N``), 16-bit greyscale: ``round(v / 257)``,
     i.e. the full 0..65535 range maps linearly onto 0..255; the grey is copied to R, G, B.
   * ``I`` (32-bit signed integer greyscale): treated as 16-bit data, because PIL has long
     used mode ``I`` for 16-bit greyscale PNG/TIFF: clipped to 0..65535, then ``round(v / 257)``.
   * ``F`` (32-bit float greyscale): treated as intensities in [0, 1]: NaN -> 0, clipped to
     [0, 1], then ``round(v * 255)`` (round half to even).
   * 16-bit-per-channel RGB(A) files arrive from PIL's decoder already reduced to 8 bits.
   * Any other mode that PIL cannot convert to RGB raises `ImageError`.

`to_float` turns the result into float32 in [0, 1] (``x / 255``). `reconcile_sizes` applies
the size policy between an original and its anonymized version; the only resampling the
suite does on its own is `RESIZE_FILTER` under ``--size-policy resize``.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bench.errors import ImageError, InputError

#: Largest image accepted, in pixels (width x height); PIL's default limit, but enforced as
#: an error here instead of PIL's warning.
MAX_IMAGE_PIXELS = 89_478_485

#: What transparent pixels are composited over (RGB).
ALPHA_BACKGROUND = (255, 255, 255)

#: Accepted values of the size policy (``--size-policy``); the first is the default.
SIZE_POLICIES = ("error", "resize")

#: Resampling used by ``--size-policy resize`` (anonymized resized to the original's size);
#: results record this name.
RESIZE_FILTER = "bicubic"
_PIL_RESIZE_FILTER = Image.Resampling.BICUBIC

_OPEN_LOCK = threading.Lock()
_ALPHA_MODES = frozenset({"LA", "RGBA", "PA", "RGBa"})


def decode_settings() -> dict[str, object]:
    """The decode rules in force, for results to record next to their numbers."""
    import PIL

    return {
        "max_image_pixels": MAX_IMAGE_PIXELS,
        "exif_orientation": True,
        "alpha_background": list(ALPHA_BACKGROUND),
        "resize_filter": RESIZE_FILTER,
        "pillow": PIL.__version__,
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format (or an empty/corrupt file)"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return _one_line(exc.strerror)
    text = _one_line(str(exc)) or type(exc).__name__
    return text


def _decode_error(path: Path, reason: str) -> ImageError:
    return ImageError(f"cannot decode image {path}: {reason}; re-export it or remove its row")


def _bomb_error(path: Path, size: tuple[int, int] | None = None, detail: str = "") -> ImageError:
    dims = f" ({size[0]}x{size[1]} = {size[0] * size[1]:,} pixels)" if size else ""
    found = re.search(r"\((\d+) pixels\)", detail)  # PIL: "Image size (N pixels) exceeds limit ..."
    if not size and found:
        dims = f" ({int(found.group(1)):,} pixels)"
    return ImageError(
        f"cannot decode image {path}: refused as a possible decompression bomb{dims}, "
        f"more than the limit of {MAX_IMAGE_PIXELS:,} pixels; downscale it or remove its row"
    )


def _open_oriented(path: Path) -> Image.Image:
    """Open, fully decode and orient one image; every failure is a one-line ImageError."""
    path = Path(path)
    kind = not_a_regular_file(path)
    if kind is not None:  # checked before opening: reading a FIFO or a device would block or never end
        raise ImageError(f"cannot decode image {path}: it is {kind}, not an image file; fix the path or remove its row")
    try:
        # warnings.catch_warnings changes process-wide state: hold a lock while it is in force
        # (only around Image.open, which reads the header and runs PIL's bomb check).
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _bomb_error(path, (width, height))
            im.load()  # full decode: truncation and corrupt data surface here
            oriented = ImageOps.exif_transpose(im)  # a new, loaded image
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(path, detail=_one_line(exc)) from None
    except MemoryError:
        raise ImageError(f"cannot decode image {path}: out of memory while decoding; "
                         "downscale it or remove its row") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means a bad file
        raise _decode_error(path, _reason(exc)) from None
    return oriented


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES:
        return True
    return im.mode in ("1", "L", "P", "RGB") and im.info.get("transparency") is not None


def _gray16_to_rgb(values: np.ndarray) -> np.ndarray:
    v = np.clip(values.astype(np.int64), 0, 65535)
    gray = ((v + 128) // 257).astype(np.uint8)  # == round(v / 257); 257 is odd, no ties
    return np.repeat(gray[:, :, None], 3, axis=2)


def _composite_over_background(rgba: np.ndarray) -> np.ndarray:
    c = rgba[:, :, :3].astype(np.int32)
    a = rgba[:, :, 3:4].astype(np.int32)
    bg = np.asarray(ALPHA_BACKGROUND, dtype=np.int32)
    # round((c*a + bg*(255-a)) / 255); 255 is odd so there are no ties.
    out = (c * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _to_rgb_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return _gray16_to_rgb(np.asarray(im))
    if mode == "F":
        v = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        gray = np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    try:
        if _has_alpha(im):
            return _composite_over_background(np.asarray(im.convert("RGBA")))
        return np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"cannot decode image {path}: unsupported image mode {mode!r} ({_one_line(str(exc))}); "
            "re-export it as 8-bit RGB or remove its row"
        ) from None


def not_a_regular_file(path: Path) -> str | None:
    """What `path` is when it exists but is not a regular file ("a directory", "a FIFO", ...);
    None for a regular file or a missing one (missing files have their own messages)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def load_rgb(path: Path) -> np.ndarray:
    """Decode `path` into an ``H x W x 3`` uint8 RGB array by the module's stated rules."""
    path = Path(path)
    im = _open_oriented(path)
    rgb = _to_rgb_array(im, path)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # pragma: no cover - defensive
        raise ImageError(f"cannot decode image {path}: decoded to shape {rgb.shape}, not HxWx3")
    return rgb


def to_float(rgb_uint8: np.ndarray) -> np.ndarray:
    """``uint8`` RGB (HWC) -> float32 in [0, 1] as ``x / 255`` (HWC)."""
    arr = np.asarray(rgb_uint8)
    if arr.dtype != np.uint8:
        raise TypeError(f"to_float expects uint8 input from load_rgb, got {arr.dtype}")
    return arr.astype(np.float32) / np.float32(255.0)


def check_image(path: Path) -> tuple[int, int]:
    """Fully decode `path` (as `load_rgb` does) and return ``(width, height)`` after orientation.

    Raises `ImageError` (one line) for anything `load_rgb` would fail on.
    """
    rgb = load_rgb(path)
    return int(rgb.shape[1]), int(rgb.shape[0])


def describe_size_mismatch(where: str, original_wh: tuple[int, int], anonymized_wh: tuple[int, int]) -> str:
    """The one-line message for an original/anonymized size mismatch."""
    return (
        f"{where}: size mismatch: original is {original_wh[0]}x{original_wh[1]}, "
        f"anonymized is {anonymized_wh[0]}x{anonymized_wh[1]} (width x height); "
        "re-export the anonymized image at the original's size, or pass --size-policy resize "
        f"to resize it ({RESIZE_FILTER})"
    )


def check_size_policy(policy: str) -> str:
    if policy not in SIZE_POLICIES:
        raise InputError(f"unknown size policy {policy!r}; use one of: {', '.join(SIZE_POLICIES)}")
    return policy


def reconcile_sizes(original: np.ndarray, anonymized: np.ndarray, policy: str = "error", *, where: str) -> np.ndarray:
    """Return `anonymized`, resized to `original`'s size under policy ``"resize"``.

    ``"error"`` (the default) raises `ImageError` naming `where` (e.g. ``"HA1.csv line 12"``),
    both sizes and the remedy. ``"resize"`` resizes the anonymized image to the original's
    width x height with PIL `RESIZE_FILTER` resampling. Equal sizes return `anonymized` as is.
    """
    check_size_policy(policy)
    oh, ow = original.shape[:2]
    ah, aw = anonymized.shape[:2]
    if (oh, ow) == (ah, aw):
        return anonymized
    if policy == "error":
        raise ImageError(describe_size_mismatch(where, (ow, oh), (aw, ah)))
    resized = Image.fromarray(np.ascontiguousarray(anonymized)).resize((ow, oh), _PIL_RESIZE_FILTER)
    return np.asarray(resized)
