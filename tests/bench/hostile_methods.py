"""Methods that attack the run they are benchmarked in, reached as
``tests.bench.hostile_methods:NAME`` (module:function), the way a user's method is.

Each misbehaves on the landscape original only (img2 of `tests.bench.benchset`, the one
wider than tall), so a test can check that the run reports that image and goes on with the
others. Only numpy is imported: a worker starts in well under a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import numpy as np


def _invert(image, pii_mask):
    out = image.copy()
    out[pii_mask] = 255 - out[pii_mask]
    return out


def _landscape(image) -> bool:
    return image.shape[1] > image.shape[0]


def exits(image, pii_mask, boxes):
    if _landscape(image):
        sys.exit(0)
    return _invert(image, pii_mask)


def exits_hard(image, pii_mask, boxes):
    if _landscape(image):
        os._exit(0)
    return _invert(image, pii_mask)


def exits_three(image, pii_mask, boxes):
    if _landscape(image):
        os._exit(3)
    return _invert(image, pii_mask)


def hangs(image, pii_mask, boxes):
    if _landscape(image):
        while True:
            time.sleep(0.05)
    return _invert(image, pii_mask)


def hangs_ignoring_sigterm(image, pii_mask, boxes):
    if _landscape(image):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            pass
    return _invert(image, pii_mask)


def segfaults(image, pii_mask, boxes):
    if _landscape(image):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return _invert(image, pii_mask)


def kills_itself(image, pii_mask, boxes):
    if _landscape(image):
        os.kill(os.getpid(), signal.SIGKILL)
    return _invert(image, pii_mask)


def interrupts(image, pii_mask, boxes):
    if _landscape(image):
        raise KeyboardInterrupt
    return _invert(image, pii_mask)


def floods(image, pii_mask, boxes):
    """Prints ~2 MB to stdout and to stderr on every image, and works."""
    line = "FLOOD " * 170 + "\n"
    sys.stdout.write(line * 2000)
    sys.stdout.flush()
    os.write(2, (line * 2000).encode())
    return _invert(image, pii_mask)


def kills_parent(image, pii_mask, boxes):
    """Tries to end the run that called it."""
    if _landscape(image):
        os.kill(os.getppid(), signal.SIGTERM)
    return _invert(image, pii_mask)


def escapes_output(image, pii_mask, boxes):
    """Prints an ANSI escape and fake result lines."""
    print("\x1b[2J\x1b[31mbench: ok\nwrote /etc/passwd")
    return _invert(image, pii_mask)


def slow_invert(image, pii_mask, boxes):
    """Well behaved but slow (0.3 s an image): a wide window for killing the run mid-way."""
    time.sleep(0.3)
    return _invert(image, pii_mask)
