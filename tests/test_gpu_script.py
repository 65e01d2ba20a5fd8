"""scripts/gpu_check.py as a CPU smoke test: it runs and writes every figure into one JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    json_path = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--pairs", "8", "--sets", "pixel",
         "--steps", "perf,run,torchrun", "--json", "figures.json"],
        cwd=tmp_path, env={**os.environ, "BENCH_WEIGHTS_DIR": str(tmp_path / "no-weights")},
        capture_output=True, text=True, timeout=1200, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    figures = json.loads(json_path.read_text(encoding="utf-8"))

    machine = figures["machine"]
    for key in ("cpu_model", "logical_cpus", "torch", "torchvision", "cuda_available", "gpus", "driver",
                "load_average", "load_average_after"):
        assert key in machine
    assert figures["config"]["pairs"] == 8 and figures["config"]["sets"] == {"pixel": ["mse", "psnr"]}

    variants = {(run["set"], run["precision"]): run for run in figures["perf"]}
    assert set(variants) == {("pixel", "float32"), ("pixel", "bfloat16")}
    float32 = variants["pixel", "float32"]
    assert float32["runner_pairs_per_s"] > 0 and float32["naive_pairs_per_s"] > 0 and float32["floor_pairs_per_s"] > 0
    assert float32["speedup_vs_naive"] == pytest.approx(
        float32["report"]["full_set"]["runner"]["pairs_per_s"] / float32["report"]["full_set"]["naive"]["pairs_per_s"])
    assert float32["runner_over_floor"] > 0 and float32["report"]["config"]["pairs"] == 8
    # Pixel metrics have no comparison heads: their floor is all forward passes.
    assert float32["runner_over_forward_passes"] == pytest.approx(float32["runner_over_floor"])
    assert variants["pixel", "bfloat16"]["report"]["config"]["precision"] == "bfloat16"
    assert variants["pixel", "bfloat16"]["naive_pairs_per_s"] is None  # precision variants skip the baseline

    assert [run["step"] for run in figures["runs"]] == ["bench run (demo)", "bench run --method mask (demo)"]
    assert all(run["exit"] == 0 and run["seconds"] > 0 for run in figures["runs"])
    assert figures["torchrun"] == {"step": "torchrun", "ran": False, "reason": "CPU smoke test"}
    assert figures["goals"]["evaluated"] is False
    assert "perf pixel float32: runner " in completed.stdout and "goals: the goals are for a GPU" in completed.stdout


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_goal_is_judged_on_the_networks_forward_passes():
    """The goal names "the networks' batched forward time": the floor without comparison heads."""
    gpu_check = _gpu_check_module()
    paper = {"set": "paper", "precision": "float32", "runner_pairs_per_s": 2500.0, "speedup_vs_naive": 60.0,
             "runner_over_floor": 1.2, "runner_over_forward_passes": 1.3}
    goals = gpu_check.goals([paper], "cuda")
    assert goals["evaluated"] and goals["paper_pairs_per_s_met"] and goals["speedup_met"]
    assert goals["runner_over_forward_passes"] == 1.3 and not goals["runner_over_forward_passes_met"]
    assert gpu_check.goals([{**paper, "runner_over_forward_passes": 1.2}], "cuda")["runner_over_forward_passes_met"]


def test_gpu_script_rejects_unknown_steps(tmp_path):
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--steps", "perf,bogus"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2 and "unknown step 'bogus'" in completed.stderr
    assert not (tmp_path / "gpu_check.json").exists()
