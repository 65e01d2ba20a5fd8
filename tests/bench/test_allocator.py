"""bench.allocator: large blocks come from the heap after keep_large_blocks(), not from mmap."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import child_pythonpath

# How many bytes glibc holds in mmap'd blocks (mallinfo2's hblkhd) while a 16 MB numpy array
# lives: over 16 MB by default, none once large blocks are kept in the heap.
_CHILD = """
import ctypes, json, sys
import numpy as np
from bench.allocator import keep_large_blocks

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

def mapped_while_alive():
    block = np.ones(16 << 20, dtype=np.uint8)
    return mallinfo2().hblkhd

before = mapped_while_alive()
kept = keep_large_blocks()
print(json.dumps({"kept": kept, "before": before, "after": mapped_while_alive()}))
"""


def _run(env: dict[str, str]) -> dict:
    completed = subprocess.run([sys.executable, "-c", _CHILD], env={**env, "PYTHONPATH": child_pythonpath()},
                               capture_output=True, text=True, timeout=120, check=True)
    return json.loads(completed.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_come_from_the_heap_once_kept():
    clean = {key: value for key, value in os.environ.items()
             if key not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    figures = _run(clean)
    assert figures["kept"] is True
    assert figures["before"] >= 16 << 20 and figures["after"] < 16 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_users_own_malloc_settings_win():
    figures = _run({**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    assert figures["kept"] is False and figures["after"] >= 16 << 20
