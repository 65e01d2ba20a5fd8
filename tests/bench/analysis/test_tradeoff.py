"""Trade-off analysis: the Pareto front against brute force, the area against numpy's
trapezoid rule, the axes, and the demo sweeps end to end (rows, re-run, files, trends)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.analysis import tradeoff
from bench.errors import InputError
from bench.flows.benchmark import BenchmarkConfig, run_benchmark
from bench.options import Bootstrap, ScoringOptions


def _brute_force_front(x, y):
    n = len(x)
    return np.array([not any(x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]) for j in range(n))
                     for i in range(n)])


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_equals_a_brute_force_dominance_check(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    if seed % 2:  # a coarse grid: ties on x, on y, and equal points
        x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)
    else:
        x, y = rng.normal(size=n), rng.normal(size=n)
    front = tradeoff.pareto_front(x, y)
    np.testing.assert_array_equal(front, _brute_force_front(x, y))
    beaten = tradeoff.dominated_by(x, y)
    assert [not b for b in beaten] == list(front)


def test_pareto_front_by_hand():
    x = [0, 1, 2, 2, 3, 1]
    y = [3, 2, 2, 1, 0, 2]
    assert tradeoff.pareto_front(x, y).tolist() == [True, False, True, False, True, False]
    # Equal points are both on the front; neither dominates the other.
    assert tradeoff.pareto_front([1, 1], [1, 1]).tolist() == [True, True]


@pytest.mark.parametrize("seed", range(20))
def test_curve_area_equals_numpy_trapezoid_on_the_sorted_points(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    x = rng.integers(0, 6, n).astype(float) if seed % 2 else rng.uniform(size=n)
    y = rng.uniform(size=n)
    order = np.lexsort((y, x))
    assert tradeoff.curve_area(x, y) == pytest.approx(np.trapezoid(y[order], x[order]), abs=1e-12)
    assert tradeoff.curve_area([0.3], [0.4]) is None


def test_normalise_orients_to_one_is_best():
    np.testing.assert_allclose(tradeoff.normalise([1, 2, 3], True), [0, 0.5, 1])
    np.testing.assert_allclose(tradeoff.normalise([1, 2, 3], False), [1, 0.5, 0])
    np.testing.assert_allclose(tradeoff.normalise([2, 2], True), [0.5, 0.5])


def test_axes_default_to_both_families_and_a_bad_spec_is_one_line():
    metrics = {"mse": {"higher_is_more_anonymous": True, "family": "perceptual"},
               "ssim": {"higher_is_more_anonymous": False, "family": "perceptual"},
               "background_ssim": {"higher_is_more_anonymous": False, "family": "utility",
                                   "higher_is_more_useful": True}}
    assert tradeoff.choose_axes(None, metrics) == ("mse", "background_ssim")
    assert tradeoff.choose_axes(None, {k: v for k, v in metrics.items() if k != "background_ssim"}) is None
    assert tradeoff.choose_axes("mse,ssim", metrics) == ("mse", "ssim")
    for spec, expected in (("mse", "give two metrics"), ("mse,lpips", "lpips not among the computed metrics"),
                           ("mse,mse", "two different metrics")):
        with pytest.raises(InputError, match=expected):
            tradeoff.choose_axes(spec, metrics)


# --------------------------------------------------------------------------- the demo sweeps
BLEND = "examples.tunable_blend:blend"
RADII, BLOCKS, ALPHAS = (2, 4, 8, 16), (4, 8, 16), (0, 0.25, 0.5, 0.75, 1)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tradeoff")

    def run():
        return run_benchmark(BenchmarkConfig(
            methods=("blur", "pixelate", BLEND),
            method_params=((f"radius={','.join(map(str, RADII))}",), (f"block={','.join(map(str, BLOCKS))}",),
                           (f"alpha={','.join(map(str, ALPHAS))}",)),
            dataset="fixtures", out=folder / "runs", tradeoff="mse,ssim", bootstrap=Bootstrap(n_boot=50),
            scoring=ScoringOptions(metrics="mse,psnr,ssim,background_ssim,background_psnr", store=folder / "r.sqlite",
                                   progress=False)))

    return run(), run()


@pytest.mark.slow  # ~30 s: 17 methods on the 8 demo originals
def test_demo_sweeps_are_rows_and_a_rerun_costs_nothing(demo_runs):
    first, second = demo_runs
    names = {o.method.name for o in first.outputs}
    expected = {f"blur[radius={r}]" for r in RADII} | {f"pixelate[block={b}]" for b in BLOCKS} \
        | {f"{BLEND}[alpha={a}]" for a in ALPHAS} | {"identity", "mask"}
    assert expected <= names
    assert first.complete and second.complete
    assert all(o.anonymized == 0 for o in second.outputs)
    assert all(m.computed == 0 for m in second.scores.metrics)


@pytest.mark.slow
def test_demo_tradeoff_files_and_trends(demo_runs):
    _, result = demo_runs
    written = result.written
    for kind in ("tradeoff_markdown", "tradeoff_latex", "tradeoff_csv", "tradeoff_json", "tradeoff_plot_global"):
        assert written[kind].is_file(), kind
    assert written["tradeoff_plot_global"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Privacy–utility trade-off" in written["html"].read_text()
    assert "blur | radius=16" in written["tradeoff_markdown"].read_text()
    assert "\\begin{tabular}" in written["tradeoff_latex"].read_text()

    views = {view["scope"]: view for view in json.loads(written["tradeoff_json"].read_text())}
    view = views["global"]
    assert (view["privacy"]["name"], view["utility"]["name"]) == ("mse", "ssim")
    points = {p["method"]: p for p in view["points"]}
    assert points["identity"]["anchor"] == "no anonymization" and points["mask"]["anchor"] == "full mask"

    # As the radius grows: more anonymous (MSE rises), less useful (SSIM falls).
    mse = [points[f"blur[radius={r}]"]["x"] for r in RADII]
    ssim = [points[f"blur[radius={r}]"]["y"] for r in RADII]
    assert mse == sorted(mse) and len(set(mse)) == 4
    assert ssim == sorted(ssim, reverse=True) and len(set(ssim)) == 4
    # The blend's knob runs from the identity (alpha 0) to the full pixelation (alpha 1).
    assert points[f"{BLEND}[alpha=0]"]["x"] == 0 and points[f"{BLEND}[alpha=0]"]["y"] == 1
    assert points[f"{BLEND}[alpha=1]"]["x"] == pytest.approx(points["pixelate[block=16]"]["x"], abs=1e-12)

    # The front and areas are those of the points as written.
    x = np.array([p["x_unit"] for p in view["points"]])
    y = np.array([p["y_unit"] for p in view["points"]])
    np.testing.assert_array_equal([p["on_front"] for p in view["points"]], _brute_force_front(x, y))
    assert points["mask"]["on_front"] and points["identity"]["on_front"]
    for curve in view["curves"]:
        members = [points[name] for name in curve["methods"]]
        if len(members) < 2:
            assert curve["area"] is None
            continue
        order = np.lexsort(([m["y_unit"] for m in members], [m["x_unit"] for m in members]))
        xs, ys = np.array([m["x_unit"] for m in members])[order], np.array([m["y_unit"] for m in members])[order]
        assert curve["area"] == pytest.approx(np.trapezoid(ys, xs), abs=1e-12)
        assert curve["dominated"] == (not any(m["on_front"] for m in members))

    # Background preservation stays at its maximum for every built-in setting (global scope).
    board = {(row.method, row.scope): row for row in result.board.rows}
    for name in [f"blur[radius={r}]" for r in RADII] + [f"pixelate[block={b}]" for b in BLOCKS] + ["mask", "inpaint"]:
        entries = board[(name, "global")].entries
        assert entries["background_ssim"].value == 1.0
        assert entries["background_psnr"].n_infinite == 8 and entries["background_psnr"].n == 0
        assert "global scope only" in board[(name, "local")].entries["background_ssim"].note


@pytest.mark.slow  # ~80 s on 2 CPU cores: MTCNN and dlib on 9 methods x 16 demo pairs
def test_demo_blur_sweep_on_the_face_axes(tmp_path):
    """Default axes with the face metrics: MTCNN's confidence (privacy) against dlib's
    landmark displacement (utility). The larger the radius, the more anonymous and the less
    useful; the background stays untouched."""
    result = run_benchmark(BenchmarkConfig(
        methods=("blur",), method_params=((f"radius={','.join(map(str, RADII))}",),), dataset="fixtures",
        out=tmp_path / "runs", bootstrap=Bootstrap(n_boot=50),
        scoring=ScoringOptions(metrics="face_detection_mtcnn,face_kept_mtcnn,landmarks_dlib,background_ssim",
                               store=tmp_path / "r.sqlite", progress=False)))
    assert result.complete
    (view, *_) = result.board.tradeoffs
    assert (view.scope, view.privacy.name, view.utility.name) == ("global", "face_detection_mtcnn", "landmarks_dlib")
    board = {(row.method, row.scope): row.entries for row in result.board.rows}
    rows = [board[(f"blur[radius={r}]", "global")] for r in RADII]
    confidence = [row["face_detection_mtcnn"].value for row in rows]
    kept = [row["face_kept_mtcnn"].value for row in rows]
    displacement = [row["landmarks_dlib"].value for row in rows]
    assert confidence == sorted(confidence, reverse=True) and confidence[0] > 0.5 > confidence[-1]
    assert kept == sorted(kept, reverse=True) and kept[0] > 0.5 > kept[-1]
    assert displacement == sorted(displacement) and len(set(displacement)) == 4
    assert all(row["background_ssim"].value == 1.0 for row in rows)
    identity = board[("identity", "global")]
    assert identity["landmarks_dlib"].value == 0.0 and identity["face_kept_mtcnn"].value == 1.0


def test_tradeoff_options_are_checked_in_one_line(tmp_path, monkeypatch, capsys):
    from bench.cli import main
    from tests.bench.benchset import write_benchmark_set

    benchset = write_benchmark_set(tmp_path / "set")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--method", "blur", "--dataset", str(benchset), "--metrics", "mse,ssim", "--tradeoff", "mse,lpips",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "lpips not among the metrics of this run" in err
    assert main(["run", "--method", "blur", "--param", "radius=1,3", "--dataset", str(benchset), "--metrics", "mse,ssim",
                 "--tradeoff", "mse,ssim", "--no-progress", "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert "Privacy–utility trade-off: set, global scope (MSE vs SSIM)" in out
    assert (tmp_path / "runs" / "bench" / "set" / "tradeoff_global.png").is_file()
    code = main(["leaderboard", "--dataset", str(benchset), "--tradeoff", "mse,psnr"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "psnr not among the computed metrics" in err and len(err.splitlines()) == 1
    assert main(["leaderboard", "--dataset", str(benchset), "--tradeoff", "ssim,mse", "--n-boot", "20"]) == 0
    assert "(SSIM vs MSE)" in capsys.readouterr().out
