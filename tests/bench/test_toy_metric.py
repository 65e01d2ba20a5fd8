"""A new metric is one module plus one registry line, and every command sees it.

The toy metric is written into a temporary folder with an entry point (`bench.metrics`) in a
hand-made dist-info beside it -- what `pip install` of a plugin package leaves -- and that
folder is put on PYTHONPATH. Nothing in the suite is edited: `bench metrics`, `bench score`,
`bench correlate`, `bench run --method` (its leaderboard) and `bench perf` all list or score it.
Each command runs on the demo set with a small --metrics list, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures" / "demo"
TOY = "toy_mad"

TOY_MODULE = textwrap.dedent('''\
    """Mean absolute difference: a distance, so larger means more anonymous."""

    from metrics.base import PairMetric


    class MeanAbsoluteDifference(PairMetric):
        """Mean |original - anonymized| of [0, 1] RGB over channels and pixels."""

        name = "toy_mad"
        label = "Toy MAD"
        version = "1"
        higher_is_more_anonymous = True
        value_range = "[0, 1]; 0 for identical images"
        convention = "mean absolute difference of [0, 1] RGB over channels and pixels, float64"
        # Sorts the leaderboard before every built-in.
        sort_priority = 1

        def conventions(self):
            return {"reduction": "mean over channels and pixels", "precision": "float64"}

        def _score(self, original, anonymized):
            return (original.double() - anonymized.double()).abs().mean(dim=(1, 2, 3))
    ''')


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "toy_metric.py").write_text(TOY_MODULE, encoding="utf-8")
    info = site / "toy_metric-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-metric\nVersion: 1.0\n", encoding="utf-8")
    # The one registry line.
    (info / "entry_points.txt").write_text(f"[bench.metrics]\n{TOY} = toy_metric:MeanAbsoluteDifference\n",
                                           encoding="utf-8")
    return site


def bench(plugin_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)]), "MPLBACKEND": "Agg"}
    env.pop("WORLD_SIZE", None)
    finished = subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return finished


def test_bench_metrics_lists_it(plugin_path, tmp_path):
    facts = {fact["name"]: fact for fact in json.loads(bench(plugin_path, tmp_path, "metrics", "--json").stdout)}
    assert facts[TOY]["target"] == "toy_metric:MeanAbsoluteDifference" and not facts[TOY]["error"]
    assert facts[TOY]["level"] == "pair" and facts[TOY]["direction"] == "higher = more anonymous"


def test_bench_score_scores_it(plugin_path, tmp_path):
    bench(plugin_path, tmp_path, "score", "--annotations", str(DEMO / "HA1.csv"), "--root", str(DEMO / "images"),
          "--metrics", f"{TOY},mse", "--out", "out", "--n-boot", "20", "--no-progress", "--device", "cpu")
    scores = (tmp_path / "out" / "scores.csv").read_text(encoding="utf-8")
    assert scores.count(f",{TOY},") == scores.count(",mse,") > 0


def test_bench_correlate_correlates_it(plugin_path, tmp_path):
    bench(plugin_path, tmp_path, "correlate", "--annotations", str(DEMO / "HA1.csv"), "--root", str(DEMO / "images"),
          "--metrics", TOY, "--split", "all", "--n-boot", "20", "--out", "out", "--no-progress", "--device", "cpu")
    results = json.loads((tmp_path / "out" / "HA1" / "results.json").read_text(encoding="utf-8"))
    assert TOY in {row["metric"] for row in results["correlations"]}


def test_the_leaderboard_ranks_by_it(plugin_path, tmp_path):
    bench(plugin_path, tmp_path, "run", "--method", "blur", "--metrics", f"mse,{TOY}", "--no-privacy",
          "--n-boot", "20", "--out", "out", "--store", "r.sqlite", "--no-progress", "--device", "cpu")
    board = json.loads((tmp_path / "out" / "demo" / "leaderboard.json").read_text(encoding="utf-8"))
    assert TOY in [metric["name"] for metric in board["metrics"]]
    assert all(TOY in row["cells"] for row in board["rows"])
    # Its sort_priority (1) is below every built-in's: it is the default sort column.
    assert board["sort_metric"] == TOY


def test_bench_perf_measures_it(plugin_path, tmp_path):
    bench(plugin_path, tmp_path, "perf", "--metrics", f"mse,{TOY}", "--pairs", "4", "--size", "32x32",
          "--phases", "naive,runner", "--out", "out", "--device", "cpu")
    report = json.loads((tmp_path / "out" / "perf.json").read_text(encoding="utf-8"))
    assert TOY in report["metrics"] and report["agreement_max_abs_diff"][TOY] == 0.0
