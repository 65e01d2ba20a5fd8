"""`bench run --method`: plugins, folders, failing methods, re-runs that cost nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data.benchmark_set import load_benchmark_set
from bench.errors import InputError
from bench.flows.benchmark import BenchmarkConfig, run_benchmark
from bench.methods import Method, MethodFailure, anonymize, resolve_method
from bench.options import Bootstrap, ScoringOptions
from tests.bench import benchset as benchset_module
from tests.bench.benchset import BUILTINS, SIZES, THIS, write_benchmark_set

REPO = Path(__file__).resolve().parents[3]
METRICS = "mse,psnr,ssim"
PLUGIN = "swirlish"


@pytest.fixture
def benchset(tmp_path: Path) -> Path:
    return write_benchmark_set(tmp_path / "set")


def _run(tmp_path: Path, benchset: Path, methods: list[str], metrics: str = METRICS):
    return run_benchmark(BenchmarkConfig(
        methods=tuple(methods), dataset=benchset, out=tmp_path / "runs", bootstrap=Bootstrap(n_boot=50),
        scoring=ScoringOptions(metrics=metrics, store=tmp_path / "r.sqlite", progress=False)))


def _rows(leaderboard_json: Path) -> set[tuple[str, str]]:
    document = json.loads(leaderboard_json.read_text())
    return {(row["method"], row["scope"]) for row in document["rows"]}


# ----------------------------------------------------------------------------- plugin
PLUGIN_CODE = '''
import numpy as np

def swirl(image, pii_mask, boxes):
    """Rolls the PII pixels: a stand-in for someone's anonymizer."""
    out = image.copy()
    out[pii_mask] = np.roll(image, 7, axis=1)[pii_mask]
    return out
'''
PLUGIN_METADATA = {"name": "anon-swirlish", "version": "1.2.0"}


def _write_source_package(folder: Path) -> Path:
    (folder / "anon_swirlish").mkdir(parents=True)
    (folder / "anon_swirlish" / "__init__.py").write_text(PLUGIN_CODE)
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{PLUGIN_METADATA['name']}"
        version = "{PLUGIN_METADATA['version']}"

        [tool.setuptools]
        packages = ["anon_swirlish"]

        [project.entry-points."bench.methods"]
        {PLUGIN} = "anon_swirlish:swirl"
        """))
    return folder


def _write_wheel(folder: Path) -> Path:
    """The same package as a hand-made wheel, for environments without setuptools."""
    name, version = "anon_swirlish", PLUGIN_METADATA["version"]
    info = f"{name}-{version}.dist-info"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", PLUGIN_CODE)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {PLUGIN_METADATA['name']}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/entry_points.txt", f"[bench.methods]\n{PLUGIN} = anon_swirlish:swirl\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def _pip_install(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    if importlib.util.find_spec("setuptools") is not None:
        source = _write_source_package(tmp_path / "pkg")
        command = ["--no-build-isolation", str(source)]
    else:
        command = [str(_write_wheel(tmp_path / "wheel"))]
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--disable-pip-version-check",
         "--target", str(site), *command],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    return site


def test_an_installed_plugin_is_benchmarked_beside_the_builtins(tmp_path):
    site = _pip_install(tmp_path)
    environment = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "bench", "run", "--method", PLUGIN, "--metrics", METRICS,
               "--out", str(tmp_path / "out"), "--store", str(tmp_path / "r.sqlite"), "--no-progress", "--n-boot", "50",
               "--no-privacy"]  # the attacks on the demo's faces: tests/bench/scoring/test_privacy.py
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path,
                              check=False)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    rows = _rows(tmp_path / "out" / "demo" / "leaderboard.json")
    expected = {(method, scope) for method in (PLUGIN, *BUILTINS) for scope in ("global", "local")}
    assert rows == expected
    assert f"| {PLUGIN} |" in finished.stdout  # the Markdown leaderboard is printed
    record = json.loads((tmp_path / "out" / "demo" / "leaderboard.json").read_text())
    assert "anon-swirlish 1.2.0" in record["provenance"]["methods"]  # plugin identity: dist name + version
    # Its outputs are kept under the run folder, per scope.
    assert (tmp_path / "out" / "demo" / PLUGIN / "local" / "coco" / "astronaut.png").is_file()


# ----------------------------------------------------------------------------- folders
def test_a_folder_method_names_missing_extra_and_wrongly_sized_files(tmp_path, benchset, capsys):
    folder = tmp_path / "mine"
    originals = load_benchmark_set(benchset).originals
    for original in originals[:2]:  # img0 (as JPEG: any extension matches) and img1: fine
        target = folder / Path(original.relative).with_suffix(".jpg" if original.relative.endswith("img0.png") else ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(original.path).convert("RGB").save(target)
    wrong = folder / "coco" / "img2.png"  # wrongly sized; img3 is missing
    Image.new("RGB", (5, 7)).save(wrong)
    extra = folder / "coco" / "not_an_original.png"
    Image.new("RGB", (5, 7)).save(extra)

    code = main(["run", "--method", f"mine={folder}", "--dataset", str(benchset), "--metrics", METRICS,
                 "--out", str(tmp_path / "runs"), "--store", str(tmp_path / "r.sqlite"), "--no-progress",
                 "--n-boot", "50"])
    out = capsys.readouterr().out
    assert code == 1  # failures make the run incomplete, but it finished
    assert f"no anonymized image for originals/lfw/img3.png in {folder}" in out
    assert f"{wrong} is 5x7, its original originals/coco/img2.png is 32x24" in out
    assert f"{extra} matches no original" in out
    document = json.loads((tmp_path / "runs" / "set" / "leaderboard.json").read_text())
    messages = " ".join(failure["message"] for failure in document["failures"])
    assert "img3.png" in messages and str(wrong) in messages
    mine = [row for row in document["rows"] if row["method"] == "mine"]
    assert {row["scope"] for row in mine} == {"global", "local"}
    assert all(row["cells"]["mse"]["n"] == 2 for row in mine)


# ----------------------------------------------------------------------------- failures
FAILING = {
    "raises_on_landscape": "failed on originals/coco/img2.png: ValueError: landscape images are not supported",
    "wrong_shape": "returned shape 27 x 24 x 3 for originals/coco/img0.png",
    "wrong_dtype": "returned dtype int64 for originals/coco/img0.png",
    "nan_output": "returned NaN values for originals/coco/img0.png",
}


def test_failing_methods_are_named_and_the_others_go_on(tmp_path, benchset):
    specs = [f"{THIS}:{name}" for name in FAILING]
    result = _run(tmp_path, benchset, specs)
    lines = "\n".join(result.summary_lines())
    for name, message in FAILING.items():
        assert f"method '{THIS}:{name}' {message}" in lines
    assert not result.complete
    by_name = {output.method.name: output for output in result.outputs}
    for builtin in BUILTINS:
        assert not by_name[builtin].failures and by_name[builtin].anonymized == len(SIZES)
    assert by_name[f"{THIS}:raises_on_landscape"].anonymized == len(SIZES) - 1  # fails on one image only
    markdown = result.written["markdown"].read_text()
    assert "#### Failures" in markdown
    for message in FAILING.values():
        assert message.split(" for ")[0].split(":")[0] in markdown
    counts = {row.method: row.entries["mse"].n for row in result.board.rows if row.scope == "global"}
    assert counts[f"{THIS}:raises_on_landscape"] == len(SIZES) - 1
    assert counts[f"{THIS}:wrong_shape"] == 0 and counts["blur"] == len(SIZES)
    json_failures = json.loads(result.written["json"].read_text())["failures"]
    assert len(json_failures) == 1 + 3 * len(SIZES)


def _in_process(name: str) -> Method:
    # A user's function runs in its worker; the in-process contract check is what the
    # built-ins and the worker share, so it is tested on the function itself.
    return Method(name=name, kind="function", identity=name, source=name, function=getattr(benchset_module, name))


def test_anonymize_checks_the_contract_without_a_run():
    image = np.zeros((6, 5, 3), dtype=np.uint8)
    pii_mask = np.ones((6, 5), dtype=bool)
    with pytest.raises(MethodFailure, match="returned dtype int64 for here.png"):
        anonymize(_in_process("wrong_dtype"), image, pii_mask, [(0, 0, 5, 6)], where="here.png")
    assert anonymize(_in_process("invert"), image, pii_mask, [(0, 0, 5, 6)], where="x").max() == 255
    assert image.max() == 0  # the input was not modified


def test_a_users_function_is_not_imported_by_the_run():
    method = resolve_method(f"{THIS}:invert")
    assert method.function is None and method.reference == f"{THIS}:invert"
    with pytest.raises(TypeError, match="runs in its worker"):
        anonymize(method, np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), bool), [(0, 0, 2, 2)], where="x")


# ----------------------------------------------------------------------------- re-runs
def test_an_unchanged_rerun_costs_nothing(tmp_path, benchset):
    methods = [f"{THIS}:invert"]
    metrics = f"{METRICS},{THIS}:MeanShift"
    first = _run(tmp_path, benchset, methods, metrics)
    assert all(output.anonymized == len(SIZES) and output.reused == 0 for output in first.outputs)
    second = _run(tmp_path, benchset, methods, metrics)
    assert all(output.anonymized == 0 and output.reused == len(SIZES) for output in second.outputs)
    pairs = 2 * len(SIZES) * (len(BUILTINS) + 1)
    for metric in second.scores.metrics:
        assert (metric.computed, metric.reused) == (0, pairs), metric.name
    groups = 2 * (len(BUILTINS) + 1)
    assert [(m.computed, m.reused) for m in first.set_scores.metrics] == [(groups, 0)]
    assert [(m.computed, m.reused) for m in second.set_scores.metrics] == [(0, groups)]
    assert second.written["markdown"].read_text() == first.written["markdown"].read_text()


def test_a_changed_function_is_run_again(tmp_path, benchset, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "my_anonymizer.py").write_text("from tests.bench.benchset import invert as anonymize\n")
    monkeypatch.syspath_prepend(str(code))
    first = _run(tmp_path, benchset, ["my_anonymizer:anonymize"], "mse")
    (code / "my_anonymizer.py").write_text("from tests.bench.benchset import invert as anonymize  # edited\n")
    second = _run(tmp_path, benchset, ["my_anonymizer:anonymize"], "mse")
    mine = {o.method.name: o for o in second.outputs}["my_anonymizer:anonymize"]
    assert mine.anonymized == len(SIZES) and mine.reused == 0
    assert {o.method.name: o for o in first.outputs}["my_anonymizer:anonymize"].method.identity != mine.method.identity
    # Same pixels, so every score is still reused from the store.
    assert second.scores.metrics[0].computed == 0


# ----------------------------------------------------------------------------- set metrics, weights
def test_small_groups_get_a_too_few_note_and_missing_weights_do_not_stop_the_run(tmp_path, benchset, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    result = _run(tmp_path, benchset, [f"{THIS}:raises_on_landscape"], f"mse,lpips,{THIS}:MeanShift")
    markdown = result.written["markdown"].read_text()
    assert "too few pairs (3 \\< 3)" not in markdown  # 3 pairs are enough
    assert "LPIPS: not computed — weights alexnet not found" in markdown and "bench weights fetch alexnet" in markdown
    lpips = next(m for m in result.scores.metrics if m.name == "lpips")
    assert lpips.status == "unavailable"
    assert result.complete is False  # lpips was asked for by name
    assert "lpips asked for but unavailable" in result.shortfalls()
    assert f"{THIS}:raises_on_landscape failed on" in "; ".join(result.shortfalls())

    small = write_benchmark_set(tmp_path / "small")
    pii = json.loads((small / "pii.json").read_text())
    (small / "pii.json").write_text(json.dumps(dict(list(pii.items())[:2])))
    result = _run(tmp_path, small, [], f"mse,{THIS}:MeanShift")
    assert "too few pairs (2 \\< 3)" in result.written["markdown"].read_text()
    cell = result.board.rows[0].entries[f"{THIS}:MeanShift"]
    assert not cell.defined and cell.note == "too few pairs (2 < 3)"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--method", "no_such_method"], "unknown anonymization method 'no_such_method'"),
        (["--method", "mine=/no/such/folder"], "no such folder"),
        (["--method", "blur=."], "'blur' is a built-in method"),
        # The reference method's name too: its folder would otherwise be dropped without a word.
        (["--method", "identity=."], "'identity' is a built-in method"),
        (["--method", "no_such_module_xyz:f"], "cannot import it"),
        (["--method", "blur", "--dataset", "/no/such/set"], "no such folder"),
        (["--method", "blur", "--sort", "lpips", "--metrics", "mse"], "--sort 'lpips' is not among the metrics"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, arguments, expected):
    code = main(["run", *arguments, "--out", str(tmp_path / "runs"), "--store", str(tmp_path / "r.sqlite"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("pii", "expected"),
    [
        ("not json", "not valid JSON"),
        ('{"originals/coco/img0.png": [[5, 5, 5, 9]]}', "empty box"),
        ('{"originals/coco/img0.png": [[1, 2, 3]]}', "four integers"),
        ('{"originals/coco/missing.png": [[1, 2, 3, 4]]}', "not found"),
        ('{"../escape.png": [[1, 2, 3, 4]]}', "without '..'"),
    ],
)
def test_a_malformed_benchmark_set_is_refused_in_one_line(benchset, pii, expected):
    (benchset / "pii.json").write_text(pii)
    with pytest.raises(InputError, match=expected):
        load_benchmark_set(benchset)


def test_bench_run_says_why_it_exits_1(tmp_path, benchset, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--method", "mask", "--metrics", "mse,lpips", "--no-privacy", "--dataset", str(benchset),
                 "--no-progress", "--n-boot", "20"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.rstrip().splitlines()[-1] == "exit status 1: lpips asked for but unavailable"
