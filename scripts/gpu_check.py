"""Measure the GPU paths and write every figure into one JSON file.

    python scripts/gpu_check.py                      # on the first GPU, 2,000 pairs, all steps
    python scripts/gpu_check.py --device cpu --pairs 8 --sets pixel --steps perf,run   # smoke test

Steps (`--steps`, default all):
- tests:    the CUDA-marked tests (`pytest -m cuda`): device placement, per-pair GPU values
            against the CPU's, pinned-memory transfers. They skip without CUDA.
- perf:     `bench perf` on `--pairs` synthetic 256x256 pairs (4 anonymizations per original)
            for each metric set (`--sets`: paper = MSE, PSNR, SSIM, LPIPS, Inception distance;
            full = those plus PerceptAnon HA1 and HA2), in float32 with every phase (naive,
            runner, per metric, floor), then for each `--precisions` variant (bfloat16, and
            float16 on CUDA) with the runner and floor phases.
- run:      `bench run` and `bench run --method mask` on the demo set with `--device`.
- torchrun: a 2-process `bench score` under torchrun, where there are 2 GPUs (else recorded
            as skipped, with the reason).

Weights are the user's where the weights manager finds them, else stand-ins written into the
work folder (timings do not depend on weight values; the JSON says which were stand-ins).
The JSON holds pairs/s, ratios to the naive baseline and to the compute floor, peak GPU
memory, the GPU model, driver, CUDA, cuDNN and package versions, and the issue's goals
(at least 2,000 pairs/s for the paper's five metrics, at least 50x the naive baseline, at
most 1.25x the floor) with whether each was met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = {
    "paper": ["mse", "psnr", "ssim", "lpips", "inception_dist"],
    "full": ["mse", "psnr", "ssim", "lpips", "inception_dist", "perceptanon_ha1", "perceptanon_ha2"],
    # No networks: for smoke tests of this script.
    "pixel": ["mse", "psnr"],
}
STEPS = ("tests", "perf", "run", "torchrun")
# The runner's time within 1.25x of "the networks' batched forward time": the floor's forward
# passes alone (runner_over_forward_passes), without LPIPS' comparison heads.
GOALS = {"paper_pairs_per_s_at_least": 2000.0, "speedup_vs_naive_at_least": 50.0,
         "runner_over_forward_passes_at_most": 1.25}

# Run one bench command in a fresh process; report its wall time and peak GPU memory.
_CHILD = """
import json, sys, time
import torch
from bench.cli import main
start = time.perf_counter()
code = main(json.loads(sys.argv[1]))
seconds = time.perf_counter() - start
peak = [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
print("GPU_CHECK " + json.dumps({"exit": code, "seconds": seconds, "peak_gpu_bytes": peak}))
"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    parser.add_argument("--pairs", type=int, default=2000, help="synthetic pairs for bench perf (default 2000)")
    parser.add_argument("--sets", default="paper,full",
                        help=f"metric sets for bench perf, of {', '.join(SETS)} (default: paper,full)")
    parser.add_argument("--precisions", default=None,
                        help="mixed-precision variants (default: bfloat16,float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)} (default: all)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="runner pairs per batch (default: 256 on CUDA, 32 on CPU)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: min(8, CPUs - 1) on CUDA, 0 on CPU)")
    parser.add_argument("--repeat", type=int, default=1, help="bench perf --repeat (default 1)")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where the figures go")
    parser.add_argument("--work", type=Path, default=None, help="keep data and outputs here (default: a temp folder)")
    args = parser.parse_args(argv)
    args.sets = [name for name in args.sets.split(",") if name]
    args.steps = [step for step in args.steps.split(",") if step]
    for name in args.sets:
        if name not in SETS:
            parser.error(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    for step in args.steps:
        if step not in STEPS:
            parser.error(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    cuda = args.device.startswith("cuda")
    if args.precisions is None:
        args.precisions = "bfloat16,float16" if cuda else "bfloat16"
    args.precisions = [name for name in args.precisions.split(",") if name]
    if args.batch_size is None:
        args.batch_size = 256 if cuda else 32
    if args.workers is None:
        args.workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    return args


# ----------------------------------------------------------------------------- machine
def machine(device: str) -> dict[str, Any]:
    import numpy
    import torch
    import torchvision

    from bench.flows.perf import cpu_model

    info: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [],
        "driver": None,
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"index": index, "name": props.name, "memory_mb": props.total_memory / (1 << 20),
                                 "capability": f"{props.major}.{props.minor}"})
        info["driver"] = _nvidia_smi("driver_version")
    return info


def _nvidia_smi(field: str) -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


# ----------------------------------------------------------------------------- steps
def _env(weights: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_WEIGHTS_DIR": str(weights),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_cuda_tests(work: Path) -> dict[str, Any]:
    report = work / "cuda-tests.xml"
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                                f"--junitxml={report}", str(ROOT / "tests")], cwd=ROOT, capture_output=True,
                               text=True, check=False)
    result: dict[str, Any] = {"command": "pytest -m cuda tests", "exit": completed.returncode,
                              "seconds": time.perf_counter() - start,
                              "output_tail": completed.stdout.strip().splitlines()[-5:]}
    if report.is_file():
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        result.update(counts)
    return result


def run_perf_variants(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from bench.flows import perf

    variants = [(name, "float32", list(perf.PHASES)) for name in args.sets]
    variants += [(name, precision, ["runner", "floor"]) for name in args.sets for precision in args.precisions]
    results = []
    for name, precision, phases in variants:
        label = f"{name}-{precision}"
        start = time.perf_counter()
        report = perf.run_perf(metric_names=SETS[name], work=work / "perf" / label, pairs=args.pairs,
                               device=args.device, batch_size=args.batch_size, workers=args.workers,
                               phases=phases, precision=precision, repeat=args.repeat,
                               command=f"scripts/gpu_check.py perf {label}")
        data = report.to_json()
        full = data["full_set"]
        results.append({
            "set": name, "precision": precision, "phases": phases, "pairs": args.pairs,
            "seconds_total": time.perf_counter() - start,
            "runner_pairs_per_s": (full["runner"] or {}).get("pairs_per_s"),
            "naive_pairs_per_s": (full["naive"] or {}).get("pairs_per_s"),
            "floor_pairs_per_s": (full["floor"] or {}).get("pairs_per_s"),
            "speedup_vs_naive": full["speedup_vs_naive"],
            "runner_over_floor": full["runner_over_floor"],
            "runner_over_forward_passes": full["runner_over_forward_passes"],
            "peak_gpu_mb": (full["runner"] or {}).get("peak_gpu_mb"),
            "report": data,
        })
    return results


def run_bench(argv: list[str], work: Path, weights: Path, label: str, *, launcher: list[str] | None = None
              ) -> dict[str, Any]:
    """One bench command in a fresh process (or under `launcher`, e.g. torchrun), from `work`."""
    start = time.perf_counter()
    if launcher:
        command = [*launcher, "-m", "bench", *argv]
    else:
        command = [sys.executable, "-c", _CHILD, json.dumps(argv)]
    completed = subprocess.run(command, cwd=work, env=_env(weights), capture_output=True, text=True, check=False)
    result: dict[str, Any] = {"step": label, "command": " ".join(["bench", *argv]),
                              "exit": completed.returncode, "seconds": time.perf_counter() - start}
    for line in completed.stdout.splitlines():
        if line.startswith("GPU_CHECK "):
            child = json.loads(line.removeprefix("GPU_CHECK "))
            result.update(seconds=child["seconds"], exit=child["exit"],
                          peak_gpu_mb=[value / (1 << 20) for value in child["peak_gpu_bytes"]])
    if result["exit"] != 0:
        result["error_tail"] = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
    return result


def _run_metrics(args: argparse.Namespace) -> list[str]:
    """Metrics of `bench run` and torchrun: the first set's, less PerceptAnon (it needs checkpoints)."""
    return [name for name in SETS[args.sets[0]] if not name.startswith("perceptanon")]


def run_demo(args: argparse.Namespace, work: Path, weights: Path) -> list[dict[str, Any]]:
    metrics = ",".join(_run_metrics(args))
    common = ["--device", args.device, "--metrics", metrics, "--batch-size", str(args.batch_size),
              "--workers", str(args.workers), "--no-progress"]
    demo = work / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    # Absolute --out: `bench run --method` with its default relative --out fails (a bug outside
    # the GPU paths, reported separately).
    return [run_bench(["run", *common, "--out", str(demo / "evaluate")], demo, weights, "bench run (demo)"),
            run_bench(["run", "--method", "mask", *common, "--out", str(demo / "bench")], demo, weights,
                      "bench run --method mask (demo)")]


def run_torchrun(args: argparse.Namespace, work: Path, weights: Path) -> dict[str, Any]:
    import torch

    from bench.flows import perf

    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    if gpus < 2:
        return {"step": "torchrun", "ran": False,
                "reason": f"needs 2 GPUs, found {gpus}" if args.device.startswith("cuda") else "CPU smoke test"}
    csv_path = perf.write_synthetic_pairs(work / "torchrun-data", args.pairs, (256, 256))
    argv = ["score", "--annotations", str(csv_path), "--metrics", ",".join(_run_metrics(args)), "--device", "cuda",
            "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--out", str(work / "torchrun-out"),
            "--no-progress"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_bench(argv, work, weights, "torchrun 2 processes: bench score", launcher=launcher)
    result.update(ran=True, pairs=args.pairs, pairs_per_s=args.pairs / result["seconds"] if result["seconds"] else None)
    return result


def goals(perf_results: list[dict[str, Any]], device: str) -> dict[str, Any]:
    paper = next((r for r in perf_results if r["set"] == "paper" and r["precision"] == "float32"), None)
    if not device.startswith("cuda") or paper is None:
        return {"evaluated": False, "reason": "the goals are for a GPU and the paper set in float32", **GOALS}
    rate, speedup, overhead = paper["runner_pairs_per_s"], paper["speedup_vs_naive"], paper["runner_over_forward_passes"]
    return {
        "evaluated": True, **GOALS,
        "paper_pairs_per_s": rate, "paper_pairs_per_s_met": rate is not None and rate >= GOALS[
            "paper_pairs_per_s_at_least"],
        "speedup_vs_naive": speedup, "speedup_met": speedup is not None and speedup >= GOALS[
            "speedup_vs_naive_at_least"],
        "runner_over_forward_passes": overhead, "runner_over_forward_passes_met": overhead is not None
        and overhead <= GOALS["runner_over_forward_passes_at_most"],
    }


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """The headline figures on screen; every figure is in the JSON file."""
    def number(value: float | None, unit: str) -> str:
        return "-" if value is None else f"{value:.2f}{unit}"

    lines = [f"perf {r['set']} {r['precision']}: runner {number(r['runner_pairs_per_s'], ' pairs/s')}, "
             f"speedup vs naive {number(r['speedup_vs_naive'], 'x')}, runner/floor time {number(r['runner_over_floor'], 'x')}"
             for r in figures.get("perf", [])]
    lines += [f"{r['step']}: exit {r['exit']}" for r in figures.get("runs", [])]
    if "cuda_tests" in figures:
        lines.append(f"cuda tests: exit {figures['cuda_tests'].get('exit')}")
    goals_met = figures.get("goals", {})
    lines.append("goals: " + ("evaluated, see the JSON" if goals_met.get("evaluated") else
                              goals_met.get("reason", "not evaluated")))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from bench.flows import perf
    from metrics.atomic import write_atomic

    json_path = args.json.resolve()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    keep = args.work is not None
    work = args.work.resolve() if keep else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"script": "scripts/gpu_check.py", "argv": sys.argv[1:] if argv is None else argv,
                               "started": started, "machine": machine(args.device),
                               "config": {"pairs": args.pairs, "size": "256x256", "per_original": 4,
                                          "sets": {name: SETS[name] for name in args.sets},
                                          "precisions": ["float32", *args.precisions], "batch_size": args.batch_size,
                                          "workers": args.workers, "repeat": args.repeat, "steps": args.steps}}
    try:
        weights = perf.prepare_weights(_run_metrics(args), work / "weights")
        figures["weights"] = weights.described
        if "tests" in args.steps:
            figures["cuda_tests"] = run_cuda_tests(work)
        if "perf" in args.steps:
            figures["perf"] = run_perf_variants(args, work)
            figures["goals"] = goals(figures["perf"], args.device)
        if "run" in args.steps:
            figures["runs"] = run_demo(args, work, weights.directory)
        if "torchrun" in args.steps:
            figures["torchrun"] = run_torchrun(args, work, weights.directory)
    finally:
        figures["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        figures["machine"]["load_average_after"] = list(os.getloadavg())
        write_atomic(json_path, json.dumps(figures, indent=2, default=str) + "\n")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    for line in summary_lines(figures):
        print(line)
    print(f"wrote {json_path}")
    failed = [r["step"] for r in figures.get("runs", []) if r["exit"] != 0]
    failed += ["cuda tests"] if figures.get("cuda_tests", {}).get("exit", 0) not in (0, 5) else []
    failed += ["torchrun"] if figures.get("torchrun", {}).get("ran") and figures["torchrun"]["exit"] != 0 else []
    if failed:
        print(f"failed: {', '.join(failed)} (see {json_path})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
