"""The child side of `bench.methods.isolation`: the programs a worker and a probe process run.

Kept apart from the parent side so that `bench.methods` can use the parent side (its probe)
while these children use `bench.methods` to import, inspect and check the user's function.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from bench.methods import MethodFailure, check_output, describe_exception, import_reference, user_function_facts


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this worker when the run dies: a run killed by a
    signal must not leave a hung method spinning behind it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the run died before the line above took effect
        os._exit(0)


def worker_main() -> None:
    """The worker's loop: load the method, then anonymize each image the run sends."""
    _die_with_parent()
    request_fd, reply_fd = (int(fd) for fd in os.environ["BENCH_WORKER_FDS"].split(","))
    requests, replies = Connection(request_fd, writable=False), Connection(reply_fd, readable=False)
    reference, name = os.environ["BENCH_WORKER_REFERENCE"], os.environ["BENCH_WORKER_NAME"]
    # The method's module is found the way the run found it: the run's sys.path came along
    # (BENCH_WORKER_PATH), the current folder with it where the CLI added it.
    try:
        _, function = import_reference(reference)
    except Exception as exc:  # the user's module may raise anything on import
        replies.send(("error", describe_exception(exc)))
        return
    replies.send(("ready", None))
    while True:
        try:
            request = requests.recv()
        except EOFError:  # the run ended (or was killed) without saying goodbye
            return
        if request is None:
            return
        image, pii_mask, boxes, where, params = request
        try:
            output = function(image, pii_mask, boxes, **params)
            check_output(name, output, image.shape, where=where)
        except MethodFailure as exc:
            replies.send(("failed", str(exc)))
            continue
        except SystemExit:
            raise  # reported by the run as "exited with code N"
        except BaseException as exc:  # KeyboardInterrupt, GeneratorExit, ...: still only this image
            replies.send(("failed", f"method {name!r} failed on {where}: {describe_exception(exc)}"))
            continue
        replies.send(("ok", np.ascontiguousarray(output)))


def probe_main() -> None:
    """Write what `bench.methods.user_function_facts` finds about the reference to the result
    file; an import that exits, crashes or hangs leaves no file, and the run says so."""
    _die_with_parent()
    facts = user_function_facts(os.environ["BENCH_PROBE_REFERENCE"], os.environ["BENCH_PROBE_WHAT"])
    Path(os.environ["BENCH_PROBE_RESULT"]).write_text(json.dumps(facts, default=str), encoding="utf-8")
    # The user's module may have started threads or atexit handlers: they do not get to run.
    os._exit(0)
