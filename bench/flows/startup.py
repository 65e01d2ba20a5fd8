"""What a short `bench score` costs beyond importing torch and torchvision.

Each run is a fresh interpreter that imports torch and torchvision (timed: the floor every
PyTorch program pays), then runs `bench score` on one synthetic 256x256 pair through
`bench.cli.main`, as a user's command would (timed: our start-up, from importing bench to
the written outputs). Weights are the user's where `metrics.weights` finds them, else
stand-ins (as `bench perf` makes them: timings do not depend on weight values).

The first run finds the sha256 cache empty (it hashes the weight files, as a first run on a
machine does); the rest reuse it, as every later run does. A fresh results store each run, so
every run computes its scores. The fastest warm run counts: a shared machine's load only
ever slows one down. Usage: ``python -m bench.flows.startup --metrics lpips,inception_dist``
(its options are parsed by `bench.cli.startup_main`, as every command line is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import child_pythonpath
from bench.errors import BenchError, InputError

#: What is measured without --metrics: the two metrics whose networks dominate start-up.
MEASURED_METRICS = ("lpips", "inception_dist")
DEFAULT_REPEAT = 5

_CHILD = """
import json, os, sys, time
start_wall, start_cpu = time.perf_counter(), time.process_time()
import torch, torchvision
imported_wall, imported_cpu = time.perf_counter(), time.process_time()
from bench.cli import main
code = main(json.load(sys.stdin), owns_process=True)  # as the `bench` command runs
end_wall, end_cpu = time.perf_counter(), time.process_time()
print(json.dumps({"exit": code, "import_s": imported_wall - start_wall, "import_cpu_s": imported_cpu - start_cpu,
                  "beyond_s": end_wall - imported_wall, "beyond_cpu_s": end_cpu - imported_cpu}))
"""


@dataclass
class StartupRun:
    #: Wall seconds to import torch and torchvision, and CPU seconds of this process for it.
    import_s: float
    import_cpu_s: float
    #: Wall and CPU seconds from there to `bench score`'s written outputs.
    beyond_s: float
    beyond_cpu_s: float
    #: False for the first run, which found no hash cache.
    hash_cache_warm: bool


@dataclass
class StartupReport:
    metrics: list[str]
    device: str
    runs: list[StartupRun]
    weights: dict[str, str]
    load_average_before: list[float]
    load_average_after: list[float]
    #: torch threads of each run; None: torch's default.
    threads: int | None = None

    @property
    def warm(self) -> list[StartupRun]:
        return [run for run in self.runs if run.hash_cache_warm] or self.runs

    def to_json(self) -> dict[str, Any]:
        fastest = min(self.warm, key=lambda run: run.beyond_s)
        threads = "" if self.threads is None else f", {self.threads} torch thread(s)"
        return {
            "command": f"bench score of 1 pair (256x256), --metrics {','.join(self.metrics)} --device {self.device}"
                       + threads,
            "metrics": self.metrics,
            "device": self.device,
            "threads": self.threads,
            "beyond_import_s": fastest.beyond_s,
            "beyond_import_cpu_s": fastest.beyond_cpu_s,
            "import_torch_torchvision_s": min(run.import_s for run in self.runs),
            "first_run_beyond_import_s": self.runs[0].beyond_s,
            "runs": [asdict(run) for run in self.runs],
            "weights": self.weights,
            "load_average_before": self.load_average_before,
            "load_average_after": self.load_average_after,
            "note": ("fastest warm run (sha256 cache filled by the first run); wall seconds from the end of "
                     "`import torch, torchvision` to bench score's outputs written, in a fresh process"),
        }

    def lines(self) -> list[str]:
        from bench.flows import perf

        data = self.to_json()
        return [f"start-up: {data['command']}",
                f"  beyond importing torch + torchvision: {data['beyond_import_s']:.2f} s wall "
                f"({data['beyond_import_cpu_s']:.2f} s CPU), fastest of {len(self.warm)} warm runs; "
                f"first run (no hash cache) {data['first_run_beyond_import_s']:.2f} s",
                f"  importing torch + torchvision: {data['import_torch_torchvision_s']:.2f} s",
                f"  load average before/after: {self.load_average_before[0]:.1f} / {self.load_average_after[0]:.1f}",
                *(f"  weights: {name}: {text}" for name, text in self.weights.items()),
                *(["  note: stand-in weights: timings do not depend on weight values"]
                  if perf.stand_ins(self.weights) else [])]


def measure_startup(work: Path, metrics: list[str] | tuple[str, ...] = MEASURED_METRICS, *, repeat: int = DEFAULT_REPEAT,
                    device: str = "cpu", threads: int | None = None) -> StartupReport:
    """`repeat` fresh `bench score` runs of one pair in `work` (data, weights, hash cache, outputs)."""
    from bench.flows import perf

    if repeat < 2:
        raise InputError(f"--repeat must be at least 2 (the first run fills the hash cache), got {repeat}")
    metrics = list(metrics)
    from metrics.registry import metric_class

    fed = [name for name in metrics if metric_class(name).checkpoint_option]
    if fed:
        raise InputError(f"bench.flows.startup measures metrics that need no checkpoint; drop {', '.join(fed)}")
    load_before = list(os.getloadavg())
    csv_path = perf.write_synthetic_pairs(work / "data", 1, (256, 256))
    setup = perf.prepare_weights(metrics, work / "weights")
    env = {**os.environ, "BENCH_WEIGHTS_DIR": str(setup.directory), "BENCH_HASH_CACHE": str(work / "hash-cache"),
           "PYTHONPATH": child_pythonpath()}
    if threads is not None:
        # One torch thread makes CPU seconds a load-independent measure (no spinning threads).
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    # Weight files written just now are not yet "settled" for the hash cache (metrics/hashing.py).
    time.sleep(2.1)
    runs = []
    for index in range(repeat):
        out = work / f"run{index + 1}"
        argv = ["score", "--annotations", str(csv_path), "--metrics", ",".join(metrics), "--device", device,
                "--out", str(out), "--no-progress"]
        # The child reads its `bench` arguments from stdin: only bench.cli parses a command line.
        completed = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(argv), env=env,
                                   capture_output=True, text=True, check=False, cwd=work)
        try:
            result = json.loads(completed.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            result = None
        if completed.returncode != 0 or not result or result["exit"] != 0:
            tail = " | ".join((completed.stderr or completed.stdout).strip().splitlines()[-3:])
            raise BenchError(f"bench.flows.startup: run {index + 1} failed (exit {completed.returncode}): {tail}")
        runs.append(StartupRun(result["import_s"], result["import_cpu_s"], result["beyond_s"], result["beyond_cpu_s"],
                               hash_cache_warm=index > 0))
    return StartupReport(metrics, device, runs, setup.described, load_before, list(os.getloadavg()), threads)


if __name__ == "__main__":
    from bench.cli import startup_main

    raise SystemExit(startup_main())
