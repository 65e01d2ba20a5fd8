"""The adapter contract, checked on EVERY registered metric (built-ins and installed plugins).

One harness, the same checks for each (as torchmetrics' testers and pyiqa's general metric
test do): its class states every fact the suite reads (`metrics.base.Metric`), the single
input check refuses a wrong shape, dtype or range, a batch of four scores what the four pairs
score one by one, and its convention card is complete.

Weights: the metric's own stand-in recipe (`Metric.stand_in_state`, `stand_in_checkpoint`)
where it has one, else the offline sources of `metrics.weights` (converted into a temporary
folder, never the user's cache). A metric is skipped, with the reason, only where its weights
or packages cannot be had offline.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import weights
from metrics.base import FeaturePairMetric, Metric, PairMetric, SetMetric
from metrics.errors import MetricInputError, WeightsError
from metrics.registry import available_metrics, metric_class

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
#: Pairs of the batch-size check; set metrics take at least their `min_samples`.
BATCH = 4
SIDE = 96
#: Float32 networks may pick another convolution algorithm for another batch size: values
#: move by rounding only (observed: 0 for pixel metrics, below 1e-6 relative for networks).
RTOL, ATOL = 1e-5, 1e-6
#: Options a user must give that are not weights (the task metric scores the user's function).
USER_OPTIONS = {"task": {"function": f"{__name__}:mean_brightness"}}
NAMES = sorted(available_metrics())
#: A set metric's value is a statistic of a group (FID: a 2048 x 2048 matrix square root), computed twice here.
BATCH_NAMES = [pytest.param(name, marks=pytest.mark.slow) if metric_class(name).level == "set" else name
               for name in NAMES]


def mean_brightness(image: np.ndarray) -> float:
    """The task of the `task` metric here: mean brightness of the anonymized image in [0, 1]."""
    return float(image.mean() / 255)


# ----------------------------------------------------------------------------- inputs
def _demo_pairs(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo set's first `count` pairs (faces, several methods), resized to SIDE x SIDE."""
    with open(DEMO / "HA1.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = [rows[i * len(rows) // count] for i in range(count)]

    def batch(column: str) -> torch.Tensor:
        arrays = [np.asarray(Image.open(DEMO / "images" / row[column]).convert("RGB").resize((SIDE, SIDE),
                                                                                            Image.Resampling.BILINEAR))
                  for row in rows]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255).contiguous()

    return batch("img1"), batch("img2")


def _pii_mask(count: int) -> torch.Tensor:
    mask = torch.zeros(count, 1, SIDE, SIDE, dtype=torch.bool)
    mask[:, :, SIDE // 4:SIDE * 3 // 4, SIDE // 4:SIDE * 3 // 4] = True
    return mask


def _score(metric: PairMetric, original: torch.Tensor, anonymized: torch.Tensor) -> np.ndarray:
    mask = _pii_mask(len(anonymized)) if metric.needs_pii_mask else None
    return metric.score(original, anonymized, pii_mask=mask)


# ----------------------------------------------------------------------------- building
@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract-weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def built(weights_folder):
    """name -> the adapter (built once), or the reason it cannot be built offline."""
    cache: dict[str, Metric | str] = {}

    def build(name: str) -> Metric:
        if name not in cache:
            cache[name] = _build(name, weights_folder)
        if isinstance(cache[name], str):
            pytest.skip(cache[name])
        return cache[name]

    return build


def _build(name: str, folder: Path) -> Metric | str:
    cls = metric_class(name)
    options = dict(USER_OPTIONS.get(name, {}))
    torch.manual_seed(0)
    for weights_name in cls.weights_needed:
        state = cls.stand_in_state(weights_name)
        if state is not None and not (folder / weights.spec_for(weights_name).filename).exists():
            weights.write_stand_in(weights_name, state, folder)
    if cls.checkpoint_option:
        options["checkpoint"] = str(cls.stand_in_checkpoint(folder))
    try:
        return cls(device="cpu", **options)
    except (WeightsError, ImportError) as exc:  # weights or a package that cannot be had offline
        return f"{name}: not buildable offline here: {exc}"


# ----------------------------------------------------------------------------- class facts
@pytest.mark.parametrize("name", NAMES)
def test_the_class_states_every_fact(name):
    cls = metric_class(name)
    assert issubclass(cls, (PairMetric, SetMetric))
    assert cls.name == name
    assert isinstance(cls.version, str) and cls.version
    assert isinstance(cls.label, str) and isinstance(cls.convention, str) and cls.convention
    assert isinstance(cls.value_range, str) and cls.value_range != Metric.value_range
    assert isinstance(cls.higher_is_more_anonymous, bool)
    assert cls.level == ("pair" if issubclass(cls, PairMetric) else "set")
    assert cls.family in ("perceptual", "utility") and cls.higher_is_more_useful in (None, True, False)
    assert isinstance(cls.needs_original, bool) and isinstance(cls.needs_pii_mask, bool)
    assert isinstance(cls.weights_needed, tuple)
    for weights_name in cls.weights_needed:
        weights.spec_for(weights_name)  # a pinned spec, or WeightsError
    assert isinstance(cls.user_weights, str) and isinstance(cls.infinite_means, str)
    assert cls.sort_priority is None or isinstance(cls.sort_priority, int)
    assert isinstance(cls.preload_modules, tuple) and all(isinstance(m, str) for m in cls.preload_modules)
    assert isinstance(cls.paper_options, dict)
    if cls.paper_variant:
        variant = metric_class(cls.paper_variant)
        assert variant.level == cls.level and variant.higher_is_more_anonymous == cls.higher_is_more_anonymous
        assert not variant.paper_variant, "a paper variant is its own variant"
    assert isinstance(cls.checkpoint_option, str)
    if cls.checkpoint_option:
        assert cls.checkpoint_option.isidentifier()
        assert f"--{cls.checkpoint_option.replace('_', '-')}" in cls.user_weights, "say which option feeds it"
        assert cls.stand_in_checkpoint.__func__ is not Metric.stand_in_checkpoint.__func__
    assert cls.naive_rebuild in ("construct", "network")
    if cls.naive_rebuild == "network":
        assert cls.rebuild_network is not Metric.rebuild_network
    if cls.level == "set":
        assert isinstance(cls.min_samples, int) and cls.min_samples >= 1
        assert isinstance(cls.merges_across_ranks, bool)
        if cls.merges_across_ranks:
            assert cls.partial_state is not SetMetric.partial_state
            assert cls.merge_partial_states is not SetMetric.merge_partial_states


def test_priorities_and_checkpoint_options_are_each_one_metrics():
    classes = [metric_class(name) for name in NAMES]
    options = [cls.checkpoint_option for cls in classes if cls.checkpoint_option]
    priorities = [cls.sort_priority for cls in classes if cls.sort_priority is not None]
    assert len(set(options)) == len(options) and len(set(priorities)) == len(priorities)


# ----------------------------------------------------------------------------- the input contract
def _bad_inputs(original: torch.Tensor, anonymized: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        "float64": (original.double(), anonymized.double()),
        "grey (N x 1 x H x W)": (original[:, :1], anonymized[:, :1]),
        "no batch axis": (original[0], anonymized[0]),
        "outside [0, 1]": (original * 255, anonymized * 255),
        "NaN": (original, torch.full_like(anonymized, math.nan)),
        "shapes differ": (original, anonymized[:, :, :-8]),
    }


@pytest.mark.parametrize("name", NAMES)
def test_the_input_contract_is_enforced(name, built):
    metric = built(name)
    original, anonymized = _demo_pairs(2)
    for problem, (bad_original, bad_anonymized) in _bad_inputs(original, anonymized).items():
        if problem == "shapes differ" and not metric.needs_original:
            continue  # it never looks at the original
        with pytest.raises(MetricInputError):
            if isinstance(metric, SetMetric):
                metric.update(bad_original, bad_anonymized)
            else:
                _score(metric, bad_original, bad_anonymized)
        if isinstance(metric, FeaturePairMetric) and problem != "shapes differ":
            with pytest.raises(MetricInputError):
                metric.features(bad_anonymized)
    if isinstance(metric, SetMetric):
        metric.reset()


# ----------------------------------------------------------------------------- batch size
@pytest.mark.slow
@pytest.mark.parametrize("name", BATCH_NAMES)
def test_a_batch_scores_what_its_pairs_score_one_by_one(name, built):
    metric = built(name)
    count = max(BATCH, getattr(metric, "min_samples", 0))
    original, anonymized = _demo_pairs(count)
    if isinstance(metric, SetMetric):
        metric.reset()
        metric.update(original, anonymized)
        whole = metric.compute()
        metric.reset()
        for i in range(count):
            metric.update(original[i:i + 1], anonymized[i:i + 1])
        one_by_one = metric.compute()
        metric.reset()
        np.testing.assert_allclose(one_by_one, whole, rtol=RTOL, atol=ATOL)
        return
    whole = _score(metric, original, anonymized)
    assert whole.dtype == np.float64 and whole.shape == (count,)
    one_by_one = np.concatenate([_score(metric, original[i:i + 1], anonymized[i:i + 1]) for i in range(count)])
    np.testing.assert_allclose(one_by_one, whole, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- convention card
@pytest.mark.parametrize("name", NAMES)
def test_the_convention_card_is_complete(name, built):
    metric = built(name)
    card = metric.card()
    assert (card.metric, card.version, card.higher_is_more_anonymous) == (
        name, metric.version, metric.higher_is_more_anonymous)
    assert card.input_range and card.details, "conventions() must say what the number means"
    assert "torch" in card.libraries
    if metric.weights_needed or metric.checkpoint_option:
        assert card.weights, "a metric with weights names the files that produced its values"
    for record in card.weights:
        assert record.name and len(record.sha256) >= 16
        assert record.status in ("verified", "unverified", "stand-in")
    json.dumps(card.to_dict(), allow_nan=False)  # written into results as it is
    assert metric.key().startswith(f"{name}@{metric.version}:")

