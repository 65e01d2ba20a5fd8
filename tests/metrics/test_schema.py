"""The typed contract between stages (metrics/schema.py): the weights status, the metric column
description, and the one JSON codec every result file is written with."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metrics.pixel import PSNR
from metrics.schema import (
    MetricInfo,
    WeightsStatus,
    decode_infinities,
    from_json_number,
    json_number,
    metric_infos,
    to_json_text,
)

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the JSON rule
@pytest.mark.parametrize("value, expected", [
    (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, None),
    (np.float64(math.inf), "inf"), (np.float32(-math.inf), "-inf"), (np.float64(math.nan), None),
    (np.float32(0.5), 0.5), (np.int64(7), 7), (np.bool_(True), True), (1.25, 1.25), (3, 3), (None, None), ("x", "x"),
])
def test_json_number_has_one_rule_for_non_finite_numbers(value, expected):
    encoded = json_number(value)
    assert encoded == expected and type(encoded) is type(expected)


def test_the_codec_applies_the_rule_at_every_depth_and_reads_back():
    document = {"a": [math.inf, {"b": (np.float64(math.nan), np.int64(2))}], "c": np.array([1.5, -np.inf]),
                "status": WeightsStatus.STAND_IN, "path": Path("/x/y"), "missing": pd.NA}
    text = to_json_text(document, indent=1)
    assert text.endswith("}\n") and "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"a": ["inf", {"b": [None, 2]}], "c": [1.5, "-inf"], "status": "stand-in",
                                "path": "/x/y", "missing": None}
    assert [from_json_number(v) for v in ("inf", "-inf", 2, None)][:3] == [math.inf, -math.inf, 2.0]
    assert math.isnan(from_json_number(None))
    with pytest.raises(ValueError, match="not a number under the JSON rule"):
        from_json_number("infinity")


def test_records_written_by_the_codec_read_back_with_their_infinities():
    frame = pd.DataFrame({"value": [math.inf, -math.inf, math.nan, 0.25], "reason": ["", "", "n < 3", ""]})
    records = json.loads(to_json_text(frame.to_dict(orient="records")))
    back = decode_infinities(pd.DataFrame.from_records(records))
    assert list(back["value"][:2]) == [math.inf, -math.inf] and math.isnan(back["value"][2])
    assert back["value"][3] == 0.25 and list(back["reason"]) == list(frame["reason"])


# --------------------------------------------------------------------------- weights status
def test_weights_status_marks_only_unverified_and_stand_in_weights():
    assert {status for status in WeightsStatus if status.marked} == {WeightsStatus.UNVERIFIED, WeightsStatus.STAND_IN}
    assert WeightsStatus.STAND_IN.note == "stand-in weights" and WeightsStatus.VERIFIED.note == ""
    # Serialized values stay the strings the store, results.json and leaderboard.json hold.
    assert [s.value for s in WeightsStatus] == ["verified", "unverified", "stand-in", "none", "precomputed"]
    assert f"{WeightsStatus.STAND_IN}" == "stand-in" and WeightsStatus("none") is WeightsStatus.NONE


def test_weakest_status_decides_for_a_metric():
    assert WeightsStatus.weakest([]) is WeightsStatus.NONE
    assert WeightsStatus.weakest(["verified", "verified"]) is WeightsStatus.VERIFIED
    assert WeightsStatus.weakest(["verified", "unverified"]) is WeightsStatus.UNVERIFIED
    assert WeightsStatus.weakest(["unverified", "stand-in", "verified"]) is WeightsStatus.STAND_IN
    with pytest.raises(ValueError, match="is not one of verified, unverified, stand-in, none, precomputed"):
        WeightsStatus.weakest(["checked"])


# --------------------------------------------------------------------------- metric info
def test_metric_info_round_trips_through_its_stored_dict():
    info = MetricInfo("perceptanon_ha1", "PerceptAnon HA1 (best.pt)", True, WeightsStatus.STAND_IN,
                      "stand-in weights", key="perceptanon_ha1@3:abcd", released_sign=-1)
    stored = info.to_json()
    assert list(stored) == ["name", "label", "higher_is_more_anonymous", "verified", "weights_note",
                            "weights_status", "key", "released_sign"]  # results.json "metrics" keys
    assert stored["verified"] is False and stored["weights_status"] == "stand-in"
    assert MetricInfo.from_json(json.loads(to_json_text(stored))) == info
    assert info.marked and not info.verified and info.header == "PerceptAnon HA1 (best.pt)† ↑"


@pytest.mark.parametrize("stored, status", [
    ({"verified": True}, WeightsStatus.VERIFIED),
    ({"verified": False}, WeightsStatus.UNVERIFIED),
    ({}, WeightsStatus.UNVERIFIED),  # a missing flag must not hide stand-in weights
    ({"verified": True, "weights_status": ""}, WeightsStatus.VERIFIED),
    ({"verified": True, "weights_status": "none"}, WeightsStatus.NONE),
])
def test_an_old_bundle_without_weights_status_reads_it_from_verified(stored, status):
    info = MetricInfo.from_json({"name": "lpips", "higher_is_more_anonymous": True, **stored})
    assert info.weights_status is status and info.label == "lpips" and info.released_sign == 1
    assert info.verified is not status.marked


def test_a_stored_mapping_keyed_by_name_and_bad_entries():
    (info,) = metric_infos({"mse": {"label": "MSE", "higher_is_more_anonymous": True, "weights_status": "none"}})
    assert (info.name, info.label, info.weights_status) == ("mse", "MSE", WeightsStatus.NONE)
    with pytest.raises(ValueError, match="lacks higher_is_more_anonymous"):
        MetricInfo.from_json({"name": "mse"})
    with pytest.raises(ValueError, match="weights status 'maybe' is not one of"):
        MetricInfo("mse", "MSE", True, "maybe")


def test_metric_info_from_a_metric_class_and_a_built_metric():
    from_class = MetricInfo.from_metric(PSNR)
    assert (from_class.name, from_class.higher_is_more_anonymous, from_class.key) == ("psnr", False, None)
    assert from_class.infinite_means == PSNR.infinite_means and from_class.weights_status is WeightsStatus.NONE
    built = PSNR()
    from_built = MetricInfo.from_metric(built)
    assert from_built.key == built.key() and from_built.label == built.display_label and from_built.verified
    assert MetricInfo.from_metric(PSNR, weights_status="stand-in", label="P").weights_note == "stand-in weights"


# --------------------------------------------------------------------------- one encoder
#: json.dumps outside the codec, each for a reason that is not a result file:
#: (module, enclosing function) -> why.
ALLOWED_DUMPS = {
    ("metrics/schema.py", "to_json_text"): "the codec itself",
    ("metrics/base.py", "Metric.key"): "hashes a metric's config into its store key",
    ("metrics/hashing.py", "_entry_path"): "hashes a cache key into a file name",
    ("metrics/hashing.py", "_store_entry"): "the sha256 cache's own entry (strings)",
    ("metrics/weights.py", "_commit"): "the weights sidecar manifest (status, sha256, source: strings)",
    ("bench/flows/benchmark.py", "_OutputFolder.save"): "a method's outputs manifest (file hashes)",
    ("bench/flows/dataset_init.py", "_json_lines"): "the pii.json / identities.json a user's set is made of (inputs)",
    ("bench/methods/isolation.py", "_child_environment"): "sys.path handed to the worker and probe processes",
    ("bench/methods/worker.py", "probe_main"): "the probe's facts file (strings and parameter defaults), read by isolation.probe",
    ("bench/methods/__init__.py", "sweep"): "a parameter setting's identity (strings), hashed",
    ("bench/flows/perf.py", "_child_main"): "subprocess result file, read back by json.loads (Infinity round-trips)",
    ("bench/flows/perf.py", "_run_child"): "subprocess job file",
    ("bench/flows/startup.py", "measure_startup"): "subprocess argv",
    ("bench/scoring/store.py", "ResultsStore._mark_interrupted_runs"): "sqlite JSON blob (the store's internals)",
    ("bench/scoring/store.py", "ResultsStore.register_metric"): "sqlite JSON blob",
    ("bench/scoring/store.py", "ResultsStore.start_run"): "sqlite JSON blobs",
    ("bench/scoring/store.py", "ResultsStore.finish_run"): "sqlite JSON blob",
    ("bench/scoring/store.py", "ResultsStore.record_benchmark"): "sqlite JSON blob",
    ("bench/scoring/store.py", "ResultsStore.drop_benchmark_method"): "sqlite JSON blob",
}


def _json_dumps_calls() -> set[tuple[str, str]]:
    found = set()
    for package in ("bench", "metrics", "reports"):
        for path in sorted((ROOT / package).rglob("*.py")):
            def walk(node: ast.AST, scope: str) -> None:
                for child in ast.iter_child_nodes(node):
                    inner = scope
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        inner = f"{scope}.{child.name}" if scope else child.name
                    if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                            and child.func.attr == "dumps" and isinstance(child.func.value, ast.Name)
                            and child.func.value.id == "json"):
                        found.add((path.relative_to(ROOT).as_posix(), inner or "<module>"))
                    walk(child, inner)

            walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_result_json_is_written_only_through_the_codec():
    calls = _json_dumps_calls()
    unexplained = sorted(calls - set(ALLOWED_DUMPS))
    assert not unexplained, (f"json.dumps outside metrics.schema.to_json_text: {unexplained}; write results with "
                             "to_json_text, or add the call to ALLOWED_DUMPS with why it is not a result")
    assert set(ALLOWED_DUMPS) <= calls, f"stale ALLOWED_DUMPS entries: {sorted(set(ALLOWED_DUMPS) - calls)}"
