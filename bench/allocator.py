"""glibc's malloc, told to keep the large blocks that CPU tensors come and go in.

Every forward pass allocates its activations anew, and by default glibc serves a block over
its mmap threshold (128 KB, raised as such blocks are freed, up to 32 MB) with a fresh mmap
and unmaps it when freed: the next pass pays the kernel to fault in and zero those pages
again. A fresh process pays it until the threshold has grown, which is the whole of a
short run. Measured on a 2-core Xeon, in fresh processes scoring 200 pairs with PerceptAnon
HA1: 8.7-9.5 s by default, 7.8-8.5 s with large blocks kept in the heap (batch_norm alone
1.32 s -> 0.88 s). Freed memory up to TRIM_THRESHOLD stays with the process for the next pass
instead of going back to the system; the peak is what it was.

Process-wide, so only a process started as `bench` (and `bench perf`'s measurement
processes, all phases alike) does this; a library caller's allocator is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap: glibc's largest mmap threshold on 64-bit.
MMAP_THRESHOLD = 32 << 20
#: Freed heap memory kept before it is returned to the system.
TRIM_THRESHOLD = 1 << 30
#: Set by the user, these (glibc's own) settings win.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_blocks() -> bool:
    """Set the thresholds above; False where there is no glibc mallopt or the user set them."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Both or neither: mallopt returns 1 on success.
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
