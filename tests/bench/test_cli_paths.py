"""Paths as a user types them: relative options and default outputs, from a fresh working
directory, and a run resumed from another working directory with absolute paths.

Every test goes through `bench.cli.main` with the working directory changed, as a shell would
run `bench ...`; none passes an absolute temporary path where a user would type a relative one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from bench.cli import main
from bench.scoring.store import ResultsStore
from tests.bench.benchset import BUILTINS, THIS, write_benchmark_set

METRICS = "mse,psnr,ssim"


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _bench(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out + captured.err


def test_relative_run_resumes_from_another_folder_with_absolute_paths(tmp_path, monkeypatch, capsys, umask_022):
    first, second = tmp_path / "first", tmp_path / "second"
    write_benchmark_set(first / "set")
    second.mkdir()
    monkeypatch.chdir(first)
    code, out = _bench(capsys, "run", "--method", "mask", "--dataset", "set", "--metrics", METRICS,
                       "--n-boot", "20", "--no-progress")
    assert code == 0, out
    run_folder = first / "runs" / "bench" / "set"
    board = (run_folder / "leaderboard.md").read_text()
    assert "this run's methods only" in board and "bench leaderboard" in board
    # pairs.csv and the store record hold paths relative to the run folder, nothing absolute.
    pairs = (run_folder / "pairs.csv").read_text().splitlines()[1:]
    assert pairs and not any(cell.startswith("/") for line in pairs for cell in line.split(","))
    assert pairs[0].startswith("../../../set/images/originals/")
    with ResultsStore(first / "runs" / "results.sqlite") as store:
        (record,) = store.benchmark_records(json.loads((run_folder / "leaderboard.json").read_text())
                                            ["provenance"]["dataset sha256"])
    assert record["methods"]["mask"]["run_folder"] == str(run_folder)
    # Output files get the user's umask, not mkstemp's 0600.
    for written in (run_folder / "leaderboard.md", run_folder / "pairs.csv", run_folder / "mask" / "manifest.json"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written

    monkeypatch.chdir(second)
    code, out = _bench(capsys, "run", "--method", "mask", "--dataset", str(first / "set"), "--metrics", METRICS,
                       "--out", str(first / "runs" / "bench"), "--store", str(first / "runs" / "results.sqlite"),
                       "--n-boot", "20", "--no-progress")
    assert code == 0, out
    for method in BUILTINS:
        assert f"{method}: anonymized 0, reused 4" in out
    for metric in METRICS.split(","):
        assert re.search(rf"{metric}: computed 0, reused from the store {len(BUILTINS) * 8}\b", out), out
    assert not (second / "runs").exists()


def test_default_out_and_store_are_under_runs_of_the_working_folder(tmp_path, monkeypatch, capsys):
    write_benchmark_set(tmp_path / "set")
    monkeypatch.chdir(tmp_path)
    code, out = _bench(capsys, "run", "--method", "blur", "--dataset", "set", "--metrics", "mse",
                       "--n-boot", "20", "--no-progress")
    assert code == 0, out
    assert (tmp_path / "runs" / "results.sqlite").is_file()
    code, out = _bench(capsys, "leaderboard", "--dataset", "set", "--n-boot", "20")
    assert code == 0, out
    assert (tmp_path / "runs" / "leaderboard" / "set" / "leaderboard.md").is_file()

    # `bench report` on the method run's folder says what to pass instead, in one line.
    code, out = _bench(capsys, "report", "runs/bench/set")
    assert code != 0
    (line,) = out.strip().splitlines()
    assert "bench leaderboard" in line and "runs/demo/HA1" in line


def test_leaderboard_drop_removes_a_method_from_the_stored_leaderboard(tmp_path, monkeypatch, capsys):
    write_benchmark_set(tmp_path / "set")
    monkeypatch.chdir(tmp_path)
    invert = f"{THIS}:invert"
    code, out = _bench(capsys, "run", "--method", invert, "--dataset", "set",
                       "--metrics", "mse", "--n-boot", "20", "--no-progress")
    assert code == 0, out
    board = tmp_path / "runs" / "leaderboard" / "set" / "leaderboard.json"

    def methods() -> set[str]:
        return {row["method"] for row in json.loads(board.read_text())["rows"]}

    assert _bench(capsys, "leaderboard", "--dataset", "set", "--n-boot", "20")[0] == 0
    assert invert in methods()
    code, out = _bench(capsys, "leaderboard", "--dataset", "set", "--n-boot", "20", "--drop", invert)
    assert code == 0, out
    assert f"dropped {invert}" in out and methods() == set(BUILTINS)
    # For good: a later plain `bench leaderboard` does not bring it back.
    assert _bench(capsys, "leaderboard", "--dataset", "set", "--n-boot", "20")[0] == 0
    assert methods() == set(BUILTINS)
    code, out = _bench(capsys, "leaderboard", "--dataset", "set", "--drop", "nonesuch")
    assert code == 2
    (line,) = out.strip().splitlines()
    assert "--drop nonesuch" in line and "mask" in line


def test_method_folder_in_the_pii_json_layout_and_a_wrong_folder(tmp_path, monkeypatch, capsys):
    write_benchmark_set(tmp_path / "set")
    # The pii.json keys' layout: outputs/originals/coco/img0.png (here: the originals themselves, as JPEG-free copies).
    shutil.copytree(tmp_path / "set" / "images" / "originals", tmp_path / "outputs" / "originals")
    monkeypatch.chdir(tmp_path)
    code, out = _bench(capsys, "run", "--method", "mine=outputs", "--dataset", "set", "--metrics", "mse",
                       "--n-boot", "20", "--no-progress")
    assert code == 0, out
    assert "mine: anonymized 4, reused 0" in out

    (tmp_path / "elsewhere" / "nested").mkdir(parents=True)
    shutil.copy(tmp_path / "set" / "images" / "originals" / "coco" / "img0.png", tmp_path / "elsewhere" / "nested")
    code, out = _bench(capsys, "run", "--method", "wrong=elsewhere", "--dataset", "set", "--metrics", "mse",
                       "--n-boot", "20", "--no-progress")
    assert code == 1
    summary = out.split("### Anonymization leaderboard")[0]  # the console summary, before the printed board
    expected = [line for line in summary.splitlines() if "expected" in line and "wrong" in line]
    assert len(expected) == 1, out
    assert f"{tmp_path / 'elsewhere' / 'coco' / 'img0'}.<ext>" in expected[0]


def test_correlate_with_the_wrong_image_root_names_the_root_to_pass(tmp_path, monkeypatch, capsys):
    demo = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
    shutil.copytree(demo, tmp_path / "fixtures" / "demo")
    monkeypatch.chdir(tmp_path)
    code, out = _bench(capsys, "correlate", "--annotations", "fixtures/demo/HA1.csv", "--metrics", "mse",
                       "--no-progress")
    assert code == 2
    (line,) = out.strip().splitlines()
    assert f"image root {tmp_path / 'fixtures' / 'demo'} " in line
    assert f"pass --root {tmp_path / 'fixtures' / 'demo' / 'images'}," in line


def test_correlate_with_relative_paths_resumes_from_another_folder(tmp_path, monkeypatch, capsys):
    demo = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(demo, first / "data")
    second.mkdir()
    monkeypatch.chdir(first)
    options = ("--metrics", "mse", "--split", "all", "--n-boot", "20", "--no-progress")
    code, out = _bench(capsys, "correlate", "--annotations", "data/HA1.csv", "--root", "data/images", *options)
    assert code == 0, out
    assert "mse: computed 64, reused from the store 0" in out
    assert (first / "runs" / "evaluate" / "HA1" / "report.html").is_file()

    monkeypatch.chdir(second)
    code, out = _bench(capsys, "correlate", "--annotations", str(first / "data" / "HA1.csv"),
                       "--root", str(first / "data" / "images"), "--out", str(first / "runs" / "evaluate"), *options)
    assert code == 0, out
    assert "mse: computed 0, reused from the store 64" in out
    assert not (second / "runs").exists()
    # The re-rendered report reads the stored results from any folder.
    code, out = _bench(capsys, "report", str(first / "runs" / "evaluate" / "HA1"))
    assert code == 0, out
