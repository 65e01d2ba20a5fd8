import io

import numpy as np
import pytest
from PIL import Image

from metrics.schema import metric_infos
from reports import plots
from tests.reports.factory import make_results

# Two dollars would turn on matplotlib's mathtext, which cannot parse this, if labels were not literal.
ODD = "my_method & <b>50%</b> $\\frac{$ #1"


@pytest.fixture(scope="module")
def results():
    return make_results(odd_name=ODD)


@pytest.fixture(scope="module")
def rendered(results):
    return {plot.name: plot for plot in plots.all_plots(correlations=results.correlations, metrics=results.metrics,
                                                          provenance=results.provenance, pairs=results.pairs)}


def open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_factory_pairs_hold_infinities_and_missing_values(results):
    assert np.isinf(results.pairs["psnr"]).any() and results.pairs["lpips"].isna().any()


@pytest.mark.parametrize("name", ["rank_plot", "metric_scatter", "correlation_bars-mean-regression",
                                  "score_distributions"])
def test_each_plot_is_a_sensible_png(rendered, name):
    plot = rendered[name]
    image = open_png(plot.png)
    assert 600 <= image.width <= 2500 and 400 <= image.height <= 2500, image.size
    # Drawn, not blank: a white page has one colour, a chart many.
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    assert plot.title and plot.caption


def test_simulated_scores_are_named_in_every_title(rendered):
    assert all("SIMULATED" in plot.title for plot in rendered.values())


def test_captions_say_infinities_were_clipped_for_display(results, rendered):
    clipped = int(np.isinf(results.pairs["psnr"]).sum())
    for name in ("rank_plot", "metric_scatter", "score_distributions"):
        assert f"PSNR: {clipped}" in rendered[name].caption
        assert "largest finite value" in rendered[name].caption
    finite = results.pairs.assign(psnr=results.pairs["psnr"].replace(np.inf, 40.0))
    assert "Infinite" not in plots.metric_scatter(finite, results.metrics[:1]).caption


def test_constant_or_absent_metrics_are_named_not_drawn(results):
    pairs = results.pairs.assign(ssim=0.5).drop(columns="mse")
    plot = plots.rank_plot(pairs, results.metrics[:3])
    assert "SSIM (constant or missing)" in plot.caption and "MSE (no per-pair scores)" in plot.caption
    open_png(plot.png)


def test_bars_draw_all_nan_splits_and_chosen_views(results):
    only_empty = results.correlations[results.correlations["split"] == "anon-blurpix"]
    open_png(plots.correlation_bars(only_empty, results.metrics).png)
    plot = plots.correlation_bars(results.correlations, results.metrics, granularity="binary",
                                  form="classification", statistics=results.statistics[1:2])
    assert plot.name == "correlation_bars-binary-classification"
    assert open_png(plot.png).height < 900  # one panel only


def test_oriented_unit_puts_the_most_anonymous_at_one():
    distances = np.array([0.1, 0.3, np.nan, 0.5])
    np.testing.assert_allclose(plots.oriented_unit(distances, True), [0.0, 0.5, np.nan, 1.0])
    np.testing.assert_allclose(plots.oriented_unit(distances, False), [1.0, 0.5, np.nan, 0.0])
    assert plots.oriented_unit(np.array([2.0, 2.0]), True) is None
    assert plots.oriented_unit(np.array([np.nan]), True) is None


def test_write_plots_writes_the_pngs(rendered, tmp_path):
    paths = plots.write_plots(rendered.values(), tmp_path)
    assert sorted(path.name for path in paths) == sorted(f"{name}.png" for name in rendered)
    for path in paths:
        open_png(path.read_bytes())


def test_display_values_move_infinities_to_the_finite_extremes(results):
    frame = results.pairs.assign(psnr=[np.inf, -np.inf, 12.0, np.nan] + [20.0] * (len(results.pairs) - 4))
    shown = plots.display_values(frame, "psnr")
    assert shown.clipped == 2
    np.testing.assert_array_equal(shown.values[:4], [20.0, 12.0, 12.0, np.nan])
    assert np.isnan(plots.display_values(frame.assign(psnr=np.inf), "psnr").values).all()


def test_bars_refuse_a_view_that_is_not_there(results):
    with pytest.raises(ValueError, match="no correlations for granularity 'labels10'.*available: mean/regression"):
        plots.correlation_bars(results.correlations, results.metrics, granularity="labels10")


def test_plots_draw_all_missing_values_as_read_back_from_json(results):
    # A results bundle stores NaN as null: every correlation of a run whose pairs all failed is None.
    correlations = results.correlations.astype({"value": object, "ci_low": object, "ci_high": object})
    correlations[["value", "ci_low", "ci_high"]] = None
    pairs = results.pairs.assign(**{info["name"]: np.nan for info in results.metrics if info["name"] in results.pairs})
    for few in (pairs, pairs.iloc[:1]):
        drawn = plots.all_plots(correlations=correlations, metrics=results.metrics, provenance=results.provenance,
                                pairs=few)
        assert len(drawn) == 4
        for plot in drawn:
            open_png(plot.png)


def test_scatter_rho_is_computed_on_the_points_drawn(results):
    from scipy import stats

    pairs = results.pairs
    human = pairs["score_mean"].to_numpy(dtype=float)
    for name, higher in (("psnr", False), ("lpips", True)):  # infinities kept (ranked last), NaN dropped
        values = pairs[name].to_numpy(dtype=float)
        rho, n = plots.drawn_spearman(values, human, higher)
        kept = ~np.isnan(values)
        expected = stats.spearmanr((1 if higher else -1) * values[kept], human[kept]).statistic
        assert n == int(kept.sum()) and rho == pytest.approx(expected, abs=1e-12)
    caption = plots.metric_scatter(pairs, results.metrics).caption
    assert f"{len(pairs)} pairs: all rows, not a split's test set" in caption


def test_legends_and_captions_explain_the_dagger_and_hatching(results, rendered):
    assert "hatched bars and † after a name: unverified or stand-in weights" in \
        rendered["correlation_bars-mean-regression"].caption.lower()
    for name in ("rank_plot", "metric_scatter", "score_distributions"):
        assert "† after a name: computed with unverified or stand-in weights (LPIPS)" in rendered[name].caption
    verified = [dict(info, verified=True) for info in results.metrics]
    assert "†" not in plots.metric_scatter(results.pairs, verified).caption
    assert plots._dagger_labels(metric_infos(results.metrics), hatched=True) == [plots.HATCH_LEGEND]
