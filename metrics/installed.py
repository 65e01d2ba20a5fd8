"""What the environment has installed: entry points and distribution versions, read once
per state of the import path.

importlib.metadata reads every installed distribution's metadata on each call (about 8 ms
on a 2-core EPYC with this suite's dependencies), and one `bench score` asks a dozen times:
for each registry lookup and each metric's convention card. The answers are cached under a
key of every sys.path entry's stat (inode, size, link count, modification time).
Installing or removing a package adds or removes a `*.dist-info` folder in its site
directory, which changes that directory's link count and mtime (a zip entry: its size and
mtime), so a cached answer never outlives what it describes, in a notebook or a test that
installs a plugin mid-process as much as in a command. Editing a file inside an installed
package's dist-info by hand is not seen until the process restarts.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

_entry_points: dict[tuple[object, ...], metadata.EntryPoints] = {}
_versions: dict[tuple[object, ...], dict[str, str | None]] = {}


def _path_state() -> tuple[object, ...]:
    state: list[object] = []
    for entry in sys.path:
        try:
            found = os.stat(entry or ".")
            state.append((entry, found.st_ino, found.st_size, found.st_nlink, found.st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def entry_points(group: str) -> metadata.EntryPoints:
    """importlib.metadata.entry_points(group=group), cached while the import path is unchanged."""
    key = (group, *_path_state())
    if key not in _entry_points:
        _entry_points[key] = metadata.entry_points(group=group)
    return _entry_points[key]


def version(distribution: str) -> str | None:
    """The installed version of `distribution`, None when it is not installed."""
    key = _path_state()
    known = _versions.setdefault(key, {})
    if distribution not in known:
        try:
            known[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            known[distribution] = None
    return known[distribution]
