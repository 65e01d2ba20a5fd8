"""Names inside a benchmark run folder: the originals' folder and one folder per method.

"""

from __future__ import annotations

import re

from bench.errors import InputError

_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def method_slug(name: str) -> str:
    slug = _SLUG_UNSAFE.sub("_", name).strip("._")
    if not slug:
        raise InputError(f"method name {name!r} has no letters or digits; give it a name like mine=DIR")
    return slug


ORIGINALS_FOLDER = "originals/"
