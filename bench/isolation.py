"""User methods run in a worker process of their own, fed one image at a time.

A user's method (a plugin or ``module:function``) is code we did not write: it may call
``sys.exit`` or ``os._exit``, raise ``KeyboardInterrupt``, hang, segfault, or print megabytes.
None of that may end, hang or pollute the benchmark run, so each user method gets one
persistent worker (a fresh interpreter, ``python -m bench.isolation``) that:

- imports the method itself, by its ``module:attribute`` reference;
- has its stdout and stderr redirected to a log file in the run folder (the method's own
  output is kept there, never printed among the run's lines);
- talks to the run through a private pipe (two inherited file descriptors, not stdout), so
  what the method prints cannot be mistaken for a result.

The run waits at most ``timeout_s`` per image. A worker that dies or stops answering is
reported as one line for that image -- "exited with code 0", "timed out after 120 s",
"killed by signal 11 (SIGSEGV)" -- killed if needed, and started afresh for the next image.
A method that raises an ordinary exception, or returns something off the contract, keeps its
worker: the failure is the same one line as for an in-process call (`bench.methods.anonymize`).

Why a persistent worker and not one process per image: starting an interpreter that imports
numpy (and often torch) costs seconds, more than most methods take per image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

#: Default per-image time limit of a user method (``--method-timeout``).
DEFAULT_TIMEOUT_S = 120.0
# How long a worker gets to import its method before the first image's clock starts.
_START_TIMEOUT_S = 300.0
# How long a finished worker gets to exit after being told to.
_STOP_GRACE_S = 5.0


class WorkerDied(Exception):
    """The worker ended or stopped answering; the message is the one-line reason."""


def describe_exit(returncode: int) -> str:
    """ "exited with code N" or "killed by signal S (SIGNAME)" for a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    return f"killed by signal {number} ({name})"


class MethodWorker:
    """One user method in its own process; `call` anonymizes one image there."""

    def __init__(self, name: str, reference: str, log_path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.name, self.reference, self.log_path, self.timeout_s = name, reference, Path(log_path), float(timeout_s)
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self._ready = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker without waiting for it (its imports overlap other work)."""
        if self._process is not None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        bootstrap = ("import sys, json, os; sys.path[:0] = json.loads(os.environ['BENCH_WORKER_PATH']); "
                     "from bench.isolation import worker_main; worker_main()")
        env = dict(os.environ, BENCH_WORKER_PATH=json.dumps([p for p in sys.path if p]),
                   BENCH_WORKER_FDS=f"{request_read},{reply_write}", BENCH_WORKER_REFERENCE=self.reference, BENCH_WORKER_NAME=self.name)
        with open(self.log_path, "ab") as log:
            log.write(f"--- worker for method {self.name!r} ({self.reference}) started {time.ctime()}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [sys.executable, "-c", bootstrap], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(request_read, reply_write), env=env, start_new_session=True,
            )
        os.close(request_read)
        os.close(reply_write)
        self._requests = Connection(request_write, readable=False)
        self._replies = Connection(reply_read, writable=False)
        self._ready = False

    def close(self) -> None:
        """Tell the worker to stop; kill it if it does not within a few seconds."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None and self._requests is not None:
                self._requests.send(None)
            process.wait(timeout=_STOP_GRACE_S)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            pass
        self._kill()

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: children of the method go too
            except OSError:
                process.kill()
            process.wait()
        for connection in (self._requests, self._replies):
            if connection is not None:
                connection.close()
        self._requests = self._replies = None

    def __enter__(self) -> MethodWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one image
    def call(self, image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[tuple[int, ...]], *,
             where: str, params: Sequence[tuple[str, Any]] = ()) -> tuple[str, Any]:
        """``("ok", array)`` or ``("failed", one-line message)`` from the worker; raises
        `WorkerDied` (and restarts on the next call) when the worker ends or times out.
        `params` (a sweep's setting) are passed to the method as keyword arguments."""
        self.start()
        assert self._process is not None and self._requests is not None and self._replies is not None
        if not self._ready:
            self._wait_reply(_START_TIMEOUT_S, starting=True)
            self._ready = True
        try:
            self._requests.send((image, pii_mask, [tuple(int(v) for v in box) for box in boxes], where, dict(params)))
        except (OSError, EOFError):
            raise self._died(None) from None
        return self._wait_reply(self.timeout_s, starting=False)

    def _wait_reply(self, timeout_s: float, *, starting: bool) -> Any:
        assert self._replies is not None
        try:
            if not self._replies.poll(timeout_s):
                raise self._died(timeout_s, starting=starting)
            reply = self._replies.recv()
        except (OSError, EOFError):
            raise self._died(None, starting=starting) from None
        if starting:
            if reply[0] != "ready":
                self._kill()
                raise WorkerDied(f"cannot load it in its worker: {reply[1]}")
            return reply
        return reply

    def _died(self, timed_out_after: float | None, *, starting: bool = False) -> WorkerDied:
        process = self._process
        if timed_out_after is None and process is not None:
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        returncode = None if process is None else process.poll()
        self._kill()
        prefix = "while loading, " if starting else ""
        if timed_out_after is not None:
            return WorkerDied(f"{prefix}timed out after {timed_out_after:g} s")
        if returncode is None:
            return WorkerDied(f"{prefix}closed its pipe and was killed")
        return WorkerDied(f"{prefix}{describe_exit(returncode)}")


# ---------------------------------------------------------------------------- worker side
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
    from bench.methods import MethodFailure, check_output, describe_exception, import_reference

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


if __name__ == "__main__":  # pragma: no cover
    worker_main()
