"""Run the suite under torchrun: one process per GPU (or CPU slot), on one node or many.

``torchrun --nproc_per_node N [--nnodes ...] -m bench score|run|correlate|train ...`` starts
N copies of the command line; `run_command` makes them one job on torch.distributed:

- **Scoring (score, run, correlate) is driven by rank 0.** Rank 0 runs the command exactly as
  one process would: it reads the annotations, looks up the results store, and alone writes
  the store, scores.csv/json and the reports. The other ranks serve it: whenever rank 0 reaches
  work that can be shared -- pair scores (`bench.scoring.runner`) or set metrics (`bench.scoring.setmetrics`)
  -- it broadcasts the pending work as a *job* (`job`), every rank computes its shard on its
  own device and sends the results back to rank 0 (`Context.gather`). Between jobs the other
  ranks wait (`serve`). One reader, one writer: the store may live on rank 0's disk only.
- **Training (train) runs on every rank** with DistributedDataParallel (`data_parallel`).

Devices: under ``--device auto`` (or ``cuda``) rank r uses ``cuda:LOCAL_RANK`` when the node
has GPUs, else the CPU (`rank_device`). Backend: nccl on CUDA devices, gloo on the CPU, or
``--backend`` / ``BENCH_DIST_BACKEND`` (`choose_backend`).

Timeouts: a collective inside a job waits at most ``--dist-timeout`` seconds
(``BENCH_DIST_TIMEOUT``, default `DEFAULT_TIMEOUT_S`), so survivors of a hung rank do not
wait forever. Ranks idle between jobs wait on a separate gloo group whose timeout is
`IDLE_TIMEOUT_S`: rank 0 may spend long stretches alone (anonymizing, bootstrapping, writing
reports). A rank that dies closes its connections, so gloo peers fail at once; torchrun stops
the remaining ranks (SIGTERM) as soon as one exits non-zero.

Failures: each rank catches its own exception, prints ``bench: rank R of W failed: <reason>``
and exits non-zero (`run_command`); torchrun's SIGTERM to the survivors is such an exception
(`Stopped`), so they say why they stop and the results store marks their run failed. Rank 0
writes one transaction per round, so a failed job leaves complete rounds in the store and a
re-run computes only what is missing.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bench.errors import BenchError, InputError
from metrics.base import resolve_device
from metrics.errors import MetricError

BACKENDS = ("auto", "nccl", "gloo")
BACKEND_ENV = "BENCH_DIST_BACKEND"
TIMEOUT_ENV = "BENCH_DIST_TIMEOUT"
#: Seconds a collective inside a job may wait for the slowest rank.
DEFAULT_TIMEOUT_S = 1800.0
#: Seconds ranks idle between jobs wait for rank 0's next one.
IDLE_TIMEOUT_S = 24 * 3600.0

#: Jobs rank 0 can hand to the other ranks: name -> lazy "module:function(payload)".
JOBS = {
    "score_pairs": "bench.scoring.runner:follow_scoring",
    "score_groups": "bench.scoring.setmetrics:follow_groups",
}
_STOP = "stop"

T = TypeVar("T")


class PeerLost(BenchError):
    """Another rank stopped answering: it failed, was killed, or exceeded the timeout."""

    exit_code = 1


class Stopped(BenchError):
    """torchrun (or the user) sent SIGTERM: usually because another rank failed."""

    exit_code = 128 + signal.SIGTERM


def _stop_on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise Stopped("stopped by SIGTERM (torchrun stops every rank when one fails, see its report below); "
                  "a re-run resumes from the results store")


# ----------------------------------------------------------------------------- context
@dataclass(frozen=True)
class Context:
    """This process's place in the job; one process alone is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    #: This rank's device; None in one process (commands resolve their own --device).
    device: torch.device | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: The gloo group on which idle ranks wait for jobs.
    control: Any = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any] | None:
        """What a run's provenance records about the processes; None in one process."""
        if not self.distributed:
            return None
        return {"world_size": self.world_size, "backend": self.backend, "timeout_s": self.timeout_s}

    # -- collectives: every rank calls them in the same order; one process returns at once.
    def gather(self, value: T) -> list[T] | None:
        """Every rank's `value`, in rank order, on rank 0; None on the others."""
        if not self.distributed:
            return [value]
        received = [None] * self.world_size if self.is_main else None
        self._collective("gathering results on rank 0", torch_dist.gather_object, value, received, dst=0)
        return received

    def all_gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        received: list[Any] = [None] * self.world_size
        self._collective("exchanging state", torch_dist.all_gather_object, received, value)
        return received

    def max(self, value: int) -> int:
        """The largest `value` over all ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self._tensor_device())
        self._collective("agreeing on a maximum", torch_dist.all_reduce, tensor, op=torch_dist.ReduceOp.MAX)
        return int(tensor.item())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over all ranks (a new tensor on `tensor`'s device)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().clone()
        self._collective("summing over ranks", torch_dist.all_reduce, total)
        return total

    def _tensor_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def _collective(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except RuntimeError as exc:  # gloo and nccl report a lost peer or a timeout as RuntimeError
            raise self.lost(what, exc) from exc

    def lost(self, what: str, exc: BaseException) -> PeerLost:
        cause = _first_line(exc).split(". ")[0]
        return PeerLost(f"lost contact with another rank while {what} ({cause}): it failed or was stopped, "
                        f"or one waited longer than --dist-timeout {self.timeout_s:g} s; "
                        "a re-run resumes from the results store")


_SINGLE = Context()
_current = _SINGLE
# Whether rank 0 is inside a job, i.e. the other ranks are busy with it rather than idle.
_in_job = False


def current() -> Context:
    """The running job's context; rank 0 of 1 outside torchrun."""
    return _current


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: every world_size-th item from its rank (round-robin).

    Every rank must pass the same sequence in the same order.
    """
    ctx = current()
    return list(items[ctx.rank::ctx.world_size])


# ----------------------------------------------------------------------------- choices
def rank_device(spec: str | torch.device = "auto") -> torch.device:
    """The device `spec` means for this rank: under torchrun, ``auto`` and ``cuda`` give
    ``cuda:LOCAL_RANK`` (``auto`` falls back to the CPU on a node without GPUs)."""
    ctx = current()
    return _device_for(spec, ctx.local_rank) if ctx.distributed else resolve_device(spec)


def _device_for(spec: str | torch.device, local_rank: int) -> torch.device:
    if isinstance(spec, torch.device) or spec not in ("auto", "cuda"):
        return resolve_device(spec)
    return _local_gpu(local_rank, required=spec == "cuda") or torch.device("cpu")


def _local_gpu(local_rank: int, *, required: bool) -> torch.device | None:
    if not torch.cuda.is_available():
        if required:
            raise InputError("--device cuda asked for, but torch sees no CUDA GPU: use --device cpu or auto")
        return None
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise InputError(f"local rank {local_rank} has no GPU of its own: this node shows {count}; start at most "
                         f"{count} processes per node (--nproc_per_node {count}) or pass --device cpu")
    return torch.device("cuda", local_rank)


def choose_backend(device: torch.device, requested: str | None = None) -> str:
    """nccl for CUDA devices, gloo for the CPU; `requested` (or $BENCH_DIST_BACKEND) overrides."""
    choice = requested or os.environ.get(BACKEND_ENV) or "auto"
    if choice not in BACKENDS:
        raise InputError(f"unknown backend {choice!r} (--backend or {BACKEND_ENV}); choose from: {', '.join(BACKENDS)}")
    if choice == "auto":
        choice = "nccl" if device.type == "cuda" else "gloo"
    if choice == "nccl" and device.type != "cuda":
        raise InputError(f"backend nccl needs CUDA devices but this rank runs on {device}; "
                         "use --backend gloo, or --device auto/cuda on GPU nodes")
    if not torch_dist.is_backend_available(choice):
        raise InputError(f"this torch build has no {choice} backend; use --backend gloo")
    return choice


def collective_timeout(requested: float | None = None) -> float:
    """Seconds a collective may wait: `requested`, else $BENCH_DIST_TIMEOUT, else the default."""
    raw = requested if requested is not None else os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InputError(f"--dist-timeout / {TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return seconds


# ----------------------------------------------------------------------------- session
def _environment() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them in every process it starts."""
    try:
        return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise InputError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc}); "
                         "start bench with torchrun") from None


@contextmanager
def session(device: str = "auto", backend: str | None = None, timeout_s: float | None = None) -> Iterator[Context]:
    """torch.distributed for the processes torchrun started; one process alone gets rank 0 of 1.

    Picks this rank's device and the backend, initialises the default process group (with
    the collective timeout) and the idle gloo group, and destroys them when the block ends
    normally. After a failure the group is left to the process's exit: a group whose peer
    is gone cannot be torn down collectively.
    """
    global _current
    rank, world_size, local_rank = _environment()
    if world_size == 1:
        yield _SINGLE
        return
    seconds = collective_timeout(timeout_s)
    rank_dev = _device_for(device, local_rank)
    chosen = choose_backend(rank_dev, backend)
    if rank_dev.type == "cuda":
        torch.cuda.set_device(rank_dev)
    torch_dist.init_process_group(chosen, timeout=timedelta(seconds=seconds),
                                  device_id=rank_dev if chosen == "nccl" else None)
    control = torch_dist.new_group(backend="gloo", timeout=timedelta(seconds=IDLE_TIMEOUT_S))
    _current = Context(rank=rank, world_size=world_size, local_rank=local_rank, backend=chosen,
                       device=rank_dev, timeout_s=seconds, control=control)
    try:
        yield _current
        torch_dist.destroy_process_group()
    finally:
        _current = _SINGLE


# ----------------------------------------------------------------------------- jobs
@contextmanager
def job(name: str, payload: Any) -> Iterator[None]:
    """On rank 0: hand `payload` to every other rank's handler ``JOBS[name]``, then run the
    block, which makes the same collective calls as the handlers."""
    global _in_job
    _broadcast_control((name, payload))
    _in_job = True
    yield
    _in_job = False


def serve() -> None:
    """On ranks other than 0: run the jobs rank 0 hands out until it says stop."""
    while True:
        name, payload = _broadcast_control(None)
        if name == _STOP:
            return
        module_name, _, function = JOBS[name].partition(":")
        getattr(importlib.import_module(module_name), function)(payload)


def _broadcast_control(message: Any) -> Any:
    ctx = current()
    box = [message]
    try:
        torch_dist.broadcast_object_list(box, src=0, group=ctx.control)
    except RuntimeError as exc:
        raise ctx.lost("handing out the next job" if ctx.is_main else "waiting for rank 0's next job", exc) from exc
    return box[0]


def agree_on_failures(local: dict[str, str]) -> dict[str, str]:
    """Metric key -> why it cannot run, merged over every rank ("on rank R: reason").

    Each rank builds a job's metrics itself; one that fails anywhere (missing weights on a
    node, weights that differ from rank 0's) is left out everywhere.
    """
    merged: dict[str, str] = {}
    for rank, failures in enumerate(current().all_gather(local)):
        for key, reason in failures.items():
            merged.setdefault(key, f"on rank {rank}: {reason}")
    return merged


# ----------------------------------------------------------------------------- the CLI
def run_command(command: Callable[[], int], *, name: str, mode: str | None, device: str = "auto",
                backend: str | None = None, timeout_s: float | None = None) -> int:
    """Run a CLI command in a process that torchrun started; returns its exit code.

    `mode` "driven": rank 0 runs `command`, the others `serve` it; "every-rank": every rank
    runs it (training); None: the command runs in one process only and is refused. A failure
    prints one line and ends this process with a non-zero code.
    """
    rank, world_size, _ = _environment()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if mode is None:
            raise InputError(f"bench {name} runs in one process; start it without torchrun")
        with session(device, backend, timeout_s) as ctx:
            if mode == "every-rank":
                return command()
            if not ctx.is_main:
                serve()
                return 0
            try:
                return command()
            finally:
                # After a failure outside a job the other ranks are idle: tell them to stop.
                if not _in_job:
                    _broadcast_control((_STOP, None))
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure of a rank ends in one line
        _fail(rank, world_size, exc)


def _fail(rank: int, world_size: int, exc: BaseException) -> NoReturn:
    if isinstance(exc, (BenchError, MetricError)):
        reason, code = str(exc), exc.exit_code
    elif isinstance(exc, KeyboardInterrupt):
        reason, code = "interrupted; results written so far are kept and a re-run resumes", 130
    else:
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
        reason, code = f"{type(exc).__name__}: {_first_line(exc)}{at}", 1
    print(f"bench: rank {rank} of {world_size} failed: {reason}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Not sys.exit: destroying a process group whose peer is gone aborts the interpreter.
    os._exit(code)


def _first_line(exc: BaseException) -> str:
    # gloo and c10d start their messages with the C++ source location: not the user's business.
    text = re.sub(r"^\[[^\]]+:\d+\] ", "", " ".join(str(exc).split()))
    return text[:300] or type(exc).__name__


# ----------------------------------------------------------------------------- training
def syncs_batch_norm() -> bool:
    """Whether `data_parallel` turns BatchNorm into SyncBatchNorm: torch runs it on CUDA
    devices (nccl) only; on the CPU BatchNorm statistics stay per process."""
    ctx = current()
    return ctx.distributed and ctx.backend == "nccl"


def data_parallel(model: nn.Module) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (BatchNorm synchronised where torch can,
    see `syncs_batch_norm`); the model itself in one process. Its parameters stay the same
    objects, so an optimizer built on `model` keeps working."""
    ctx = current()
    if not ctx.distributed:
        return model
    if syncs_batch_norm():
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (state dict keys without 'module.')."""
    return model.module if isinstance(model, DistributedDataParallel) else model
