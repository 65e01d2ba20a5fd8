"""A statistic is one `bench.analysis.stats.Statistic` record, found by name in the registry or as an
explicit "module:attr": correlate, the noise ceiling and the tables read the record.

The toy statistic (Goodman-Kruskal gamma) is written into a temporary module, as a user's
file is, and given only its point function: the suite bootstraps it by expanding each
resample, and its rows get an interval like the built-ins'."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.analysis import stats
from bench.analysis.correlate import correlate
from bench.data import protocol
from bench.errors import InputError
from tests.bench.analysis.test_correlate import ANNOTATORS, METRICS, synthetic_pairs

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures" / "demo"

TOY_MODULE = textwrap.dedent('''\
    import numpy as np

    from bench.analysis.stats import Statistic


    def signs(values):
        """sign(v_i - v_j) for every pair, by comparison so that +inf ranks highest."""
        return (values[:, None] > values[None, :]).astype(int) - (values[:, None] < values[None, :])


    def gamma(x, y):
        """Goodman-Kruskal gamma: (concordant - discordant) / (concordant + discordant) pairs."""
        agreement = signs(x) * signs(y)
        return agreement.sum() / np.abs(agreement).sum()


    GAMMA = Statistic("gamma", "γ", "Goodman-Kruskal gamma", gamma, rank_based=True)
    NOT_A_STATISTIC = 42
    ''')


@pytest.fixture()
def toy_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "toy_statistic.py").write_text(TOY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_statistic", None)
    yield "toy_statistic"
    sys.modules.pop("toy_statistic", None)


def test_a_toy_statistic_by_module_attr_gets_rows_with_an_interval(toy_module):
    pairs = synthetic_pairs()
    result = correlate(pairs, METRICS, annotators=ANNOTATORS, splits=["all"], granularities=["mean"],
                       forms=["regression"], statistics=["spearman", f"{toy_module}:GAMMA"], n_boot=100)
    assert [statistic.name for statistic in result.statistics] == ["spearman", "gamma"]
    assert result.tabulated == ("spearman", "gamma")
    rows = result.correlations[result.correlations["statistic"] == "gamma"].set_index("metric")
    test = protocol.make_split(pairs, "all", seed=protocol.DEFAULT_SEED, source="annotations").test
    target = protocol.labels(pairs["score_mean"].to_numpy()[test], "mean", classification=False)
    toy = importlib.import_module(toy_module)
    for metric in METRICS:
        row = rows.loc[metric["name"]]
        oriented = pairs[metric["name"]].to_numpy()[test] * (1 if metric["higher_is_more_anonymous"] else -1)
        assert row["value"] == pytest.approx(toy.gamma(oriented, np.asarray(target, dtype=np.float64)), abs=1e-12)
        assert row["ci_low"] < row["value"] < row["ci_high"] and row["reason"] == ""
        # No ceiling conversion: no fraction, rather than a Spearman ceiling on another scale.
        assert math.isnan(row["fraction_of_ceiling"])
    assert rows["is_best"].sum() == 1 and rows.loc[~rows["is_best"], "p_vs_best"].notna().all()


def test_the_expanded_bootstrap_equals_the_closed_weighted_forms():
    """A statistic with no bootstrap form of its own gets the same resamples a built-in's closed
    form computes (ties and infinities included)."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=30), 1)
    x[:2] = np.inf
    y = np.round(x + rng.normal(size=30), 0)
    weights = stats.cluster_weights(np.repeat(np.arange(10), 3), n_boot=50, seed=1)
    for builtin in (stats.SPEARMAN, stats.KENDALL, stats.PEARSON):
        plain = stats.Statistic(builtin.name, builtin.symbol, builtin.label, builtin.point,
                                finite_only=builtin.finite_only)
        np.testing.assert_allclose(stats.bootstrap_distribution(x, y, weights, plain),
                                   stats.bootstrap_distribution(x, y, weights, builtin), atol=1e-12)


def test_the_record_carries_what_was_branched_on_names():
    assert [stats.resolve_statistic(name).symbol for name in ("spearman", "kendall", "pearson")] == ["ρ", "τ", "r"]
    assert [stats.resolve_statistic(name).finite_only for name in stats.STATISTICS] == [False, False, True]
    assert stats.ceiling_for(stats.PEARSON, 0.5) == pytest.approx(2 * math.sin(math.pi * 0.5 / 6))
    assert stats.parse_statistics(None) == list(stats.DEFAULT_STATISTICS) == ["spearman", "kendall"]


def test_a_registered_statistic_is_found_by_name_and_a_name_is_taken_once(toy_module):
    stats.STATISTIC_REGISTRY.register("gamma", f"{toy_module}:GAMMA")
    try:
        assert stats.parse_statistics("kendall,gamma,kendall") == ["kendall", "gamma"]
        assert stats.resolve_statistic("gamma").label == "Goodman-Kruskal gamma"
        with pytest.raises(InputError, match="statistic 'gamma' is registered twice"):
            stats.STATISTIC_REGISTRY.register("gamma", "elsewhere:GAMMA")
    finally:
        stats.STATISTIC_REGISTRY.unregister("gamma")
    stats.STATISTIC_REGISTRY.register("gama", f"{toy_module}:GAMMA")
    try:
        with pytest.raises(InputError, match="points to a Statistic named 'gamma'; give both one name"):
            stats.resolve_statistic("gama")
    finally:
        stats.STATISTIC_REGISTRY.unregister("gama")


@pytest.mark.parametrize("spec, message", [
    ("kendal", r"unknown statistic kendal \(did you mean 'kendall'\?\); choose from: kendall, pearson, spearman; "
               "or module:RECORD for a Statistic of your own"),
    ("toy_statistic:NOT_A_STATISTIC", "which is not a bench.analysis.stats.Statistic; make it one"),
    ("toy_statistic:MISSING", "cannot import toy_statistic:MISSING"),
])
def test_bad_statistics_are_one_line_errors(toy_module, spec, message):
    with pytest.raises(InputError, match=message):
        stats.resolve_statistics(stats.parse_statistics(spec))


def test_two_records_of_one_name_are_refused(toy_module):
    other = stats.Statistic("spearman", "S", "Mine", stats.SPEARMAN.point)
    with pytest.raises(InputError, match="two statistics are named 'spearman'"):
        stats.resolve_statistics(["spearman", other])


def test_bench_correlate_statistics_option_end_to_end(tmp_path):
    """`--statistics` with a module in the current folder: the long table has its rows and the
    Markdown tables its symbol; `bench report --formats md` re-renders the tables only; a
    misspelt statistic or format is one line with a suggestion."""
    (tmp_path / "toy_statistic.py").write_text(TOY_MODULE, encoding="utf-8")
    annotations = pd.read_csv(DEMO / "HA1.csv")
    annotations["mine"] = np.random.default_rng(0).uniform(size=len(annotations))
    annotations.to_csv(tmp_path / "HA1_mine.csv", index=False)
    command = [sys.executable, "-m", "bench", "correlate", "--annotations", "HA1_mine.csv", "--root", str(DEMO),
               "--metric-columns", "mine", "--direction", "mine=up", "--split", "all", "--n-boot", "100",
               "--out", "runs", "--no-progress"]
    done = subprocess.run([*command, "--statistics", "kendall,toy_statistic:GAMMA"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "runs" / "HA1_mine"
    long_table = pd.read_csv(folder / "tables" / "correlations.csv")
    assert list(dict.fromkeys(long_table["statistic"])) == ["kendall", "gamma"]
    gamma = long_table[long_table["statistic"] == "gamma"]
    assert gamma["ci_low"].notna().any() and gamma["value"].notna().all()
    assert "| all | " in (folder / "tables" / "tables.md").read_text(encoding="utf-8")
    assert " γ |" in (folder / "tables" / "tables.md").read_text(encoding="utf-8")
    # Re-rendering reads the symbol from results.json: the plugin need not be importable.
    (tmp_path / "toy_statistic.py").unlink()
    (folder / "tables" / "tables.md").unlink()
    (folder / "report.html").unlink()
    again = subprocess.run([sys.executable, "-m", "bench", "report", "runs/HA1_mine", "--formats", "md"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and " γ |" in (folder / "tables" / "tables.md").read_text(encoding="utf-8")
    assert not (folder / "report.html").exists()
    misspelt = subprocess.run([sys.executable, "-m", "bench", "report", "runs/HA1_mine", "--formats", "md,htlm"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert misspelt.returncode == 2 and "Traceback" not in misspelt.stderr
    assert "unknown report format htlm (did you mean 'html'?)" in misspelt.stderr
    wrong = subprocess.run([*command, "--statistics", "kendal"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "unknown statistic kendal (did you mean 'kendall'?)" in wrong.stderr
