"""Method parameters: declarations, sweeps (one row per setting), caching and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bench import methods
from bench.cli import main
from bench.errors import InputError
from bench.flows.benchmark import BenchmarkConfig, run_benchmark
from bench.options import Bootstrap, ScoringOptions
from tests.bench.benchset import BUILTINS, write_benchmark_set


def _image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _box_mask(size, box):
    x0, y0, x1, y1 = box
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def tunable(image, pii_mask, boxes, strength=0.5, *, steps=3, label="x", flag=False):
    """A plugin whose parameters come from its keyword arguments' defaults."""
    out = image.copy()
    out[pii_mask] = (out[pii_mask].astype(np.float64) * (1 - strength)).astype(np.uint8)
    return out


@pytest.fixture()
def benchset(tmp_path):
    return write_benchmark_set(tmp_path / "set")


# --------------------------------------------------------------------------- declarations
def test_builtins_declare_their_parameters_and_defaults():
    declared = {name: [(p.name, p.default, p.kind) for p in methods.method_parameters(fn)]
                for name, fn in methods.BUILTIN_METHODS.items()}
    assert declared == {"mask": [("colour", (0, 0, 0), "colour")], "blur": [("radius", None, "float")],
                        "pixelate": [("block", 16, "int")], "inpaint": []}


def test_plugin_parameters_come_from_keyword_defaults():
    found = {p.name: (p.default, p.kind) for p in methods.method_parameters(tunable)}
    assert found == {"strength": (0.5, "float"), "steps": (3, "int"), "label": ("x", "str"), "flag": (False, "bool")}


def test_builtin_parameters_change_the_output_as_documented():
    image, box = _image(), (4, 6, 28, 30)
    pii = _box_mask(32, box)
    reference = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(5.0)))
    np.testing.assert_array_equal(methods.blur(image, pii, [box], radius=5.0)[pii], reference[pii])
    np.testing.assert_array_equal(methods.blur(image, pii, [box], radius=None), methods.blur(image, pii, [box]))
    whole = np.ones((32, 32), dtype=bool)
    one_block = methods.pixelate(image, whole, [(0, 0, 32, 32)], block=32)
    mean = (2 * image.reshape(-1, 3).astype(np.int64).sum(axis=0) + 1024) // 2048
    np.testing.assert_array_equal(one_block, np.broadcast_to(mean.astype(np.uint8), image.shape))
    painted = methods.mask(image, pii, [box], colour=(255, 128, 0))
    assert (painted[pii] == [255, 128, 0]).all() and (painted[~pii] == image[~pii]).all()


# --------------------------------------------------------------------------- sweeps
def test_sweep_makes_one_method_per_setting_of_the_grid():
    settings = methods.sweep(methods.resolve_method("blur"), ["radius=2,4,8,16"])
    assert [m.name for m in settings] == ["blur[radius=2]", "blur[radius=4]", "blur[radius=8]", "blur[radius=16]"]
    assert [m.params for m in settings] == [(("radius", 2.0),), (("radius", 4.0),), (("radius", 8.0),),
                                            (("radius", 16.0),)]
    assert all(m.base_name == "blur" and m.kind == "built-in" for m in settings)
    assert len({m.identity for m in settings}) == 4  # each setting cached on its own
    assert methods.resolve_method("blur").identity not in {m.identity for m in settings}
    grid = methods.sweep(methods.resolve_method(f"{__name__}:tunable"), ["steps=1,2", "strength=0.25,1"])
    # Declaration order names the setting, the grid holds every combination.
    assert [m.name.removeprefix(f"{__name__}:tunable") for m in grid] == [
        "[strength=0.25,steps=1]", "[strength=0.25,steps=2]", "[strength=1,steps=1]", "[strength=1,steps=2]"]
    assert methods.sweep(methods.resolve_method("mask"), ["colour=#ff8000"])[0].params == (("colour", (255, 128, 0)),)


@pytest.mark.parametrize("assignment, expected", [
    ("sigma=2", "unknown parameter 'sigma'; its parameters: radius (float, >= 0, default box width / 8)"),
    ("radius=big", "radius='big' is not a valid value"),
    ("radius=-1", "radius='-1' is not a valid value (below its minimum 0)"),
    ("radius", "'radius' is not NAME=V1,V2,...; its parameters: radius"),
    ("radius=", "'radius' has no values"),
])
def test_a_bad_parameter_is_one_line_listing_the_parameters(assignment, expected):
    with pytest.raises(InputError) as excinfo:
        methods.sweep(methods.resolve_method("blur"), [assignment])
    message = str(excinfo.value)
    assert expected in message and "\n" not in message
    assert "its parameters: radius (float" in message


def test_the_blend_example_declares_a_bounded_strength():
    from examples.tunable_blend import blend

    (alpha,) = methods.method_parameters(blend)
    assert alpha.describe() == "alpha (float, in [0, 1], default 1)"
    with pytest.raises(InputError, match=r"alpha='2' is not a valid value \(above its maximum 1\)"):
        methods.sweep(methods.resolve_method("examples.tunable_blend:blend"), ["alpha=0.5,2"])
    image, box = _image(), (4, 6, 28, 30)
    pii = _box_mask(32, box)
    np.testing.assert_array_equal(blend(image, pii, [box], alpha=0.0), image)
    np.testing.assert_array_equal(blend(image, pii, [box], alpha=1.0), methods.pixelate(image, pii, [box]))


def test_methods_without_parameters_refuse_param(tmp_path):
    with pytest.raises(InputError, match="inpaint.*declares no parameters"):
        methods.sweep(methods.resolve_method("inpaint"), ["radius=3"])
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="is a folder of images, so it takes no --param"):
        methods.sweep(methods.resolve_method(f"mine={tmp_path / 'a'}"), ["x=1"])


def test_a_sweep_runs_each_setting_as_a_row_and_a_rerun_costs_nothing(tmp_path, benchset):
    def run():
        return run_benchmark(BenchmarkConfig(
            methods=(f"{__name__}:tunable", "blur"), method_params=(("strength=0,0.5,1",), ("radius=1,3",)),
            dataset=benchset, out=tmp_path / "runs", bootstrap=Bootstrap(n_boot=20),
            scoring=ScoringOptions(metrics="mse,psnr", store=tmp_path / "r.sqlite", progress=False)))

    first = run()
    names = [o.method.name for o in first.outputs]
    sweeps = [f"{__name__}:tunable[strength=0]", f"{__name__}:tunable[strength=0.5]",
              f"{__name__}:tunable[strength=1]", "blur[radius=1]", "blur[radius=3]"]
    assert names == [*BUILTINS, *sweeps]
    assert {row.method for row in first.board.rows} == {*BUILTINS, *sweeps}
    assert first.complete
    second = run()
    assert all(o.anonymized == 0 for o in second.outputs)
    assert all(m.computed == 0 for m in second.scores.metrics)
    record_methods = {o.method.name: o.method for o in second.outputs}
    assert record_methods["blur[radius=3]"].params == (("radius", 3.0),)
    # strength 0 changes nothing: MSE exactly 0 on every pair of that row.
    wide = second.scores.wide()
    assert (wide.loc[wide["method"] == f"{__name__}:tunable[strength=0]", "mse"] == 0).all()
    assert (wide.loc[wide["method"] == f"{__name__}:tunable[strength=1]", "mse"] > 0).all()


def test_param_values_are_in_the_store_record_and_the_leaderboard_json(tmp_path, benchset):
    import json

    result = run_benchmark(BenchmarkConfig(
        methods=("pixelate",), method_params=(("block=2,4",),), dataset=benchset, out=tmp_path / "runs",
        bootstrap=Bootstrap(n_boot=20), scoring=ScoringOptions(metrics="mse", store=tmp_path / "r.sqlite",
                                                               progress=False)))
    from bench.scoring.store import ResultsStore

    with ResultsStore(tmp_path / "r.sqlite") as store:
        (record,) = store.benchmark_records(result.benchmark_set.sha256)
    assert record["methods"]["pixelate[block=2]"]["params"] == {"block": "2"}
    assert record["methods"]["pixelate[block=2]"]["base"] == "pixelate"
    assert record["methods"]["pixelate"]["params"] == {}
    document = json.loads(result.written["json"].read_text())
    assert {row["method"] for row in document["rows"]} >= {"pixelate[block=2]", "pixelate[block=4]"}
    params = {row["method"]: row["params"] for row in document["rows"]}
    assert params["pixelate[block=4]"] == {"block": "4"} and params["pixelate"] == {}


# --------------------------------------------------------------------------- CLI
def test_cli_param_belongs_to_the_method_before_it(tmp_path, benchset, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--method", "blur", "--param", "radius=2,4", "--method", "pixelate", "--param", "block=4",
                 "--dataset", str(benchset), "--metrics", "mse", "--no-progress", "--n-boot", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("blur[radius=2]", "blur[radius=4]", "pixelate[block=4]"):  # as typed: a terminal renders no Markdown
        assert name in out
    assert "pixelate[radius" not in out and "\\[" not in out


def test_cli_param_errors_are_one_line(tmp_path, benchset, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as excinfo:
        main(["run", "--param", "radius=2", "--method", "blur"])
    assert excinfo.value.code == 2
    assert "give --method before it" in capsys.readouterr().err
    code = main(["run", "--method", "pixelate", "--param", "size=4", "--dataset", str(benchset), "--metrics", "mse",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "unknown parameter 'size'; its parameters: block (int, >= 1, default 16)" in err
