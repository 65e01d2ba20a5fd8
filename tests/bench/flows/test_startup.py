"""Start-up: what a short run imports and builds, and `python -m bench.flows.startup` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import InputError
from bench.flows import startup
from metrics import weights
from metrics.registry import metric_class

ROOT = Path(__file__).resolve().parents[3]


def test_building_lpips_and_inception_imports_neither_lpips_nor_scipy(tmp_path):
    """lpips imports scipy.ndimage for its trainer: a third of a second of every start-up."""
    for metric, name in (("lpips", "alexnet"), ("inception_dist", "fid_inception")):
        weights.write_stand_in(name, metric_class(metric).stand_in_state(name), tmp_path)
    code = ("import sys; from metrics.registry import build_metric; "
            "[build_metric(name) for name in ('lpips', 'inception_dist')]; "
            "print(sorted(m for m in ('lpips', 'scipy', 'skimage', 'matplotlib') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                               env={**os.environ, "BENCH_WEIGHTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert completed.stdout.strip() == "[]"


@pytest.mark.slow
def test_startup_reports_fresh_runs_beyond_importing_torch(tmp_path):
    report = startup.measure_startup(tmp_path, ["mse"], repeat=2, threads=1)
    data = report.to_json()
    assert [run["hash_cache_warm"] for run in data["runs"]] == [False, True]
    assert data["beyond_import_s"] == data["runs"][1]["beyond_s"] > 0
    assert data["threads"] == 1 and data["import_torch_torchvision_s"] > 0
    json.dumps(data)  # plain JSON
    assert (tmp_path / "run2" / "scores.csv").is_file()


def test_startup_refuses_checkpoint_metrics_and_single_runs(tmp_path):
    with pytest.raises(InputError, match="perceptanon"):
        startup.measure_startup(tmp_path, ["perceptanon_ha1"])
    with pytest.raises(InputError, match="at least 2"):
        startup.measure_startup(tmp_path, ["mse"], repeat=1)


@pytest.mark.parametrize(("argv", "frozen"), [
    (["bench", "score", "--annotations", "missing.csv", "--no-progress"], True),  # a torch command, as started
    (["bench", "validate", "missing.csv"], False),  # needs no torch: not imported for it
])
def test_a_command_started_as_bench_freezes_the_collector_after_torch(argv, frozen, monkeypatch, tmp_path):
    import gc

    from bench import cli

    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("torch" in sys.modules))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", argv)
    assert cli.main() != 0  # the missing file is refused after the collector is settled
    assert calls == ([True] if frozen else [])
    calls.clear()
    assert cli.main(argv[1:]) != 0
    assert calls == [], "a library or test caller's collector is left as it was"


def test_child_processes_run_this_copy_of_the_suite():
    """perf and startup children put SOURCE_ROOT first on PYTHONPATH: it must hold this bench."""
    import bench

    assert (bench.SOURCE_ROOT / "bench" / "__init__.py").resolve() == Path(bench.__file__).resolve()
    assert bench.SOURCE_ROOT == ROOT


def test_the_commit_is_recorded_only_from_the_suites_own_checkout(monkeypatch, tmp_path):
    from bench.scoring import store

    assert store._git_commit() is not None  # this checkout
    installed = tmp_path / "project" / "venv" / "site-packages"  # an install inside a user's repository
    installed.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "project")], check=True)
    monkeypatch.setattr(store, "SOURCE_ROOT", installed)
    assert store._git_commit() is None
