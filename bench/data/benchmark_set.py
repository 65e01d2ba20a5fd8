"""Benchmark sets, and the pairs a benchmark run records of them.

A benchmark set is a folder with ``images/`` (originals under ``images/originals/``),
``pii.json`` (an original's path relative to ``images/`` -> its ``[x0, y0, x1, y1]`` PII
boxes, x1/y1 exclusive) and optionally ``masks/`` (``masks/<path under originals/>``, white =
PII; an original without a mask file uses the union of its boxes). ``fixtures``
(`bench.data.demo.DEMO_DATASET`) names the demo set. Its identity is the sha256 of pii.json,
every original and every mask.

Both the flow that runs methods on a set (`bench.flows.benchmark`) and the leaderboard, which
reads a set's runs back from the store (`bench.analysis.leaderboard`), use this module; neither
needs the other for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from bench.data import images
from bench.data.dataset import require_inside
from bench.data.demo import DEMO_DATASET, DEMO_FOLDER
from bench.data.layout import ORIGINALS_FOLDER, method_slug
from bench.data.regions import Box
from bench.errors import InputError
from metrics.hashing import file_sha256


# ----------------------------------------------------------------------------- the set
@dataclass(frozen=True)
class OriginalImage:
    #: Its pii.json key: the path relative to images/ ("originals/coco/a.png").
    key: str
    #: The path under originals/ ("coco/a.png"), by which outputs and folders are matched.
    relative: str
    path: Path
    boxes: tuple[Box, ...]
    mask_path: Path | None
    #: The folder under originals/ ("coco"), "" for an original directly in it.
    dataset: str

    @property
    def output_name(self) -> str:
        return Path(self.relative).with_suffix(".png").as_posix()


@dataclass(frozen=True)
class BenchmarkSet:
    name: str
    folder: Path
    originals: tuple[OriginalImage, ...]
    sha256: str


def load_benchmark_set(spec: str | os.PathLike[str], *, allow_outside_root: bool = False) -> BenchmarkSet:
    """The benchmark set in folder `spec` (``fixtures``: the demo set); one-line `InputError`
    on anything missing or malformed. Images are not decoded here. Every original must
    really lie under ``images/`` and every mask under ``masks/`` (symlinks resolved), unless
    `allow_outside_root`: a link out of the set would put a foreign image into its outputs."""
    folder = DEMO_FOLDER if str(spec) == DEMO_DATASET else Path(os.path.abspath(spec))
    pii_path, images_dir, masks_dir = folder / "pii.json", folder / "images", folder / "masks"
    if not folder.is_dir():
        if folder == DEMO_FOLDER:
            raise InputError(f"--dataset {DEMO_DATASET}: the demo set is not at {folder}: this installation lacks it; "
                             "reinstall the suite (pip install . from a clone), or pass --dataset FOLDER")
        raise InputError(f"--dataset {spec}: no such folder; give 'fixtures' or a folder with images/ and pii.json")
    for needed in (pii_path, images_dir):
        if not needed.exists():
            raise InputError(f"--dataset {spec}: {needed} is missing; a benchmark set has images/ and pii.json")
    raw = _read_bytes(pii_path)
    entries = _parse_pii(pii_path, raw)
    originals = tuple(_original(pii_path, images_dir, masks_dir, key, boxes, allow_outside_root)
                      for key, boxes in entries.items())
    _check_output_names(pii_path, originals)
    digest = hashlib.sha256(raw)
    for original in originals:
        digest.update(f"\n{original.key}\0{file_sha256(original.path)}".encode())
        if original.mask_path is not None:
            digest.update(f"\0mask {file_sha256(original.mask_path)}".encode())
    name = "demo" if folder == DEMO_FOLDER else folder.resolve().name
    return BenchmarkSet(name=method_slug(name), folder=folder, originals=originals, sha256=digest.hexdigest())


def _read_bytes(path: Path) -> bytes:
    kind = images.not_a_regular_file(path)
    if kind is not None:  # a FIFO would block the read forever
        raise InputError(f"cannot read {path}: it is {kind}, not a file; a benchmark set has a pii.json file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse_pii(path: Path, raw: bytes) -> dict[str, tuple[Box, ...]]:
    shape = "an object mapping each original's path (relative to images/) to a list of [x0, y0, x1, y1] boxes"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({' '.join(str(exc).split())}); it must be {shape}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: expected {shape}")
    return {str(key): _boxes(path, key, value) for key, value in data.items()}


def _boxes(path: Path, key: str, value: Any) -> tuple[Box, ...]:
    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(value, list) or not value:
        raise InputError(f"{path}: {key!r} needs a non-empty list of [x0, y0, x1, y1] boxes, got {value!r}")
    boxes = []
    for box in value:
        if not (isinstance(box, list) and len(box) == 4 and all(integer(v) for v in box)):
            raise InputError(f"{path}: {key!r} has box {box!r}; a box is four integers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            raise InputError(f"{path}: {key!r} has the empty box {box!r}; x1 > x0 and y1 > y0 (x1, y1 exclusive)")
        boxes.append((x0, y0, x1, y1))
    return tuple(boxes)


def _original(pii_path: Path, images_dir: Path, masks_dir: Path, key: str, boxes: tuple[Box, ...],
              allow_outside_root: bool = False) -> OriginalImage:
    relative_path = Path(key)
    if relative_path.is_absolute() or ".." in relative_path.parts:
        raise InputError(f"{pii_path}: {key!r} must be a path relative to {images_dir} without '..'")
    path = images_dir / relative_path
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise InputError(f"{pii_path}: original {key!r} {what} at {path}; fix the key or add the image")
    if not allow_outside_root:
        require_inside(path, images_dir, what=f"{pii_path}: original {key!r}",
                       where=f"the image root {os.path.realpath(images_dir)}", fix="copy the image into the set")
    relative = key.removeprefix(ORIGINALS_FOLDER)
    parts = Path(relative).parts
    mask_candidates = (masks_dir / relative, masks_dir / Path(relative).with_suffix(".png"))
    mask_path = next((candidate for candidate in mask_candidates if candidate.is_file()), None)
    if not allow_outside_root and mask_path is not None:
        require_inside(mask_path, masks_dir, what=f"mask {mask_path}",
                       where=f"the mask root {os.path.realpath(masks_dir)}", fix="copy the mask into the set")
    return OriginalImage(key=key, relative=relative, path=path, boxes=boxes, mask_path=mask_path,
                         dataset=parts[0] if len(parts) > 1 else "")


def _check_output_names(pii_path: Path, originals: Sequence[OriginalImage]) -> None:
    seen: dict[str, str] = {}
    for original in originals:
        other = seen.setdefault(original.output_name, original.key)
        if other != original.key:
            raise InputError(f"{pii_path}: {other!r} and {original.key!r} differ only in their extension; "
                             "their outputs would share a file name, rename one")


# ----------------------------------------------------------------------------- recorded pairs
@dataclass(frozen=True)
class BenchmarkPair:
    """One (original, anonymized) pair of a method in a benchmark run's record.

    Records keep a pair as the list of these fields in this order (`stored`), as every
    record in a results store already does; `from_stored` reads one back.
    """

    #: The original's pii.json key: its global and local pairs form one bootstrap cluster.
    image: str
    scope: str
    original_sha256: str
    anonymized_sha256: str
    #: Relative to the method's ``run_folder`` (records of older versions: as written then).
    original_path: str
    anonymized_path: str

    @property
    def key(self) -> tuple[str, str]:
        """The content hashes that key the pair's scores in the store."""
        return self.original_sha256, self.anonymized_sha256

    def stored(self) -> list[str]:
        return list(astuple(self))

    @classmethod
    def from_stored(cls, values: Sequence[str]) -> BenchmarkPair:
        return cls(*values)
