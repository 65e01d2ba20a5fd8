"""User methods run in a worker process of their own, fed one image at a time.

A user's method (a plugin or ``module:function``) is code we did not write: it may call
``sys.exit`` or ``os._exit``, raise ``KeyboardInterrupt``, hang, segfault, or print megabytes.
None of that may end, hang or pollute the benchmark run, so each user method gets one
persistent worker (a fresh interpreter running `bench.methods.worker.worker_main`) that:

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

Before any of that, the run learns what it needs about the method (that it imports, is
callable, its parameters, the source hash behind its identity) from a throwaway process
(`probe`): the run never imports the user's module itself.

Why a persistent worker and not one process per image: starting an interpreter that imports
numpy (and often torch) costs seconds, more than most methods take per image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
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


def _bootstrap(entry: str) -> str:
    """The child's program: the run's sys.path first (so the method's module is found the way
    the run found it, the current folder with it where the CLI added it), then `entry`."""
    return ("import sys, json, os; sys.path[:0] = json.loads(os.environ['BENCH_WORKER_PATH']); "
            f"from bench.methods.worker import {entry}; {entry}()")


def _child_environment(**extra: str) -> dict[str, str]:
    return dict(os.environ, BENCH_WORKER_PATH=json.dumps([p for p in sys.path if p]), **extra)


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
        env = _child_environment(BENCH_WORKER_FDS=f"{request_read},{reply_write}", BENCH_WORKER_REFERENCE=self.reference,
                                 BENCH_WORKER_NAME=self.name)
        with open(self.log_path, "ab") as log:
            log.write(f"--- worker for method {self.name!r} ({self.reference}) started {time.ctime()}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [sys.executable, "-c", _bootstrap("worker_main")], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
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


# ---------------------------------------------------------------------------- probing
def probe(reference: str, what: str, *, timeout_s: float = _START_TIMEOUT_S) -> dict[str, Any]:
    """The facts `bench.methods.worker.probe_main` finds about a user's `reference` (a JSON dict),
    learned in a throwaway process: importing the user's module may exit, hang or crash, and
    the run must not (so the run itself never imports it). `what` names the method in the
    child's own one-line refusals. Raises `WorkerDied` with the one-line reason otherwise."""
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as folder:
        result = Path(folder) / "facts.json"
        env = _child_environment(BENCH_PROBE_REFERENCE=reference, BENCH_PROBE_WHAT=what, BENCH_PROBE_RESULT=str(result))
        process = subprocess.Popen([sys.executable, "-c", _bootstrap("probe_main")], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise WorkerDied(f"importing it did not finish within {timeout_s:g} s") from None
        _kill_group(process)  # whatever the import left running
        try:
            return json.loads(result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise WorkerDied(f"importing it {describe_exit(returncode)}") from None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    process.wait()
