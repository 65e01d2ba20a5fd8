"""`bench dataset init FOLDER`: a benchmark set from any folder of photos.

Every image under FOLDER (jpg, jpeg, png, bmp, webp; sorted) is decoded with the suite's
rules and searched for faces with MTCNN (`metrics.detection`, confidence >= MIN_CONFIDENCE).
Each image with a face is copied unchanged to ``<out>/images/originals/<set>/<its path under
FOLDER>``; its face boxes (rounded outwards to whole pixels, clipped to the image) go into
``pii.json`` and their union into ``masks/``. When FOLDER holds a folder per person (LFW's
layout, ``FOLDER/<person>/<photo>``), ``identities.json`` maps each original to <person>.

People (whole-body PII, as COCO's and VOC's person boxes) are not detected: no person
detector with pinned weights ships in the installed packages, so such sets need their boxes
from elsewhere. Images with no face are left out and listed; images with several faces are
kept with every box and listed, so that the user can check them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data import images
from bench.data.layout import method_slug
from bench.data.regions import boxes_mask
from bench.errors import ImageError, InputError
from bench.scoring.runner import to_device
from metrics.atomic import write_atomic

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MIN_CONFIDENCE = 0.9


@dataclass
class InitResult:
    out: Path
    originals: int = 0
    identities: int = 0
    no_face: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        lines = [f"wrote {self.out}: {self.originals} originals with a face"
                 + (f", {self.identities} identities (folder per person)" if self.identities else "")]
        for title, names in (("no face found (left out)", self.no_face),
                             ("several faces (all boxed; check them)", self.several_faces),
                             ("not decodable (left out)", self.unreadable)):
            if names:
                lines.append(f"{title}: {len(names)}")
                lines += [f"  {name}" for name in names]
        return lines


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _pixel_box(face: tuple[float, ...], width: int, height: int) -> list[int] | None:
    x0, y0 = max(0, math.floor(face[0])), max(0, math.floor(face[1]))
    x1, y1 = min(width, math.ceil(face[2])), min(height, math.ceil(face[3]))
    return [x0, y0, x1, y1] if x1 > x0 and y1 > y0 else None


def init_dataset(folder: Path, out: Path, *, device: str = "cpu") -> InitResult:
    """Detect, copy and write the set; refuses an `out` that already holds a pii.json."""
    from metrics.detection import MTCNNDetection

    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise InputError(f"bench dataset init: {folder} is not a folder of photos")
    if (out / "pii.json").exists():
        raise InputError(f"{out / 'pii.json'} exists already; give another --out or remove it")
    photos = _photos(folder)
    if not photos:
        raise InputError(f"{folder}: no images ({', '.join(sorted(SUFFIXES))}) found under it")
    detector = MTCNNDetection(device=device)
    name = method_slug(folder.resolve().name)
    result = InitResult(out=out)
    pii: dict[str, list[list[int]]] = {}
    identities: dict[str, str] = {}
    for photo in photos:
        relative = photo.relative_to(folder).as_posix()
        try:
            rgb = images.load_rgb(photo)
        except ImageError:
            result.unreadable.append(relative)
            continue
        height, width = rgb.shape[:2]
        tensor = to_device([rgb], detector.device)
        faces = [face for face in detector.detect(tensor)[0] if face[4] >= MIN_CONFIDENCE]
        boxes = [box for box in (_pixel_box(face, width, height) for face in faces) if box is not None]
        if not boxes:
            result.no_face.append(relative)
            continue
        if len(boxes) > 1:
            result.several_faces.append(relative)
        key = f"originals/{name}/{relative}"
        write_atomic(out / "images" / key, photo.read_bytes())
        mask = boxes_mask(boxes, height, width).astype(np.uint8) * 255
        mask_path = out / "masks" / name / Path(relative).with_suffix(".png")
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(mask_path, _png(mask))
        pii[key] = boxes
        if len(Path(relative).parts) >= 2:
            identities[key] = Path(relative).parts[0]
    if not pii:
        raise InputError(f"{folder}: MTCNN found no face in any of its {len(photos)} images; nothing was written")
    write_atomic(out / "pii.json", _json_lines(pii))
    if identities:
        write_atomic(out / "identities.json", _json_lines(identities))
    result.originals, result.identities = len(pii), len(set(identities.values()))
    return result


def _json_lines(mapping: dict) -> str:
    """One key per line, sorted, as the demo set's pii.json is laid out."""
    return "{\n" + ",\n".join(f"  {json.dumps(key)}: {json.dumps(mapping[key])}" for key in sorted(mapping)) + "\n}\n"


def _png(mask: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
