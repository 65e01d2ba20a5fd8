"""A hostile-input corpus, each case through the real CLI as a user types it.

Every case runs ``python -m bench ...`` in a fresh working folder with relative paths and
checks the README's promise for bad input: a non-zero exit, exactly ONE line on stderr that
names the culprit, no traceback, no raw control codes, and nothing written outside the
case's output folder (``out/``). The cases cover the README's "Bad input" table, files that
are not files (FIFOs, devices, folders), symlinks out of a folder, damaged stores, option
values, names that would break outputs, and OS refusals.

User methods that attack the run (exit, os._exit, hang, segfault, flood) are in the second
half: one benchmark run holds all of them, and each is checked for its own report line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bench.benchset import write_benchmark_set

REPO = Path(__file__).resolve().parents[2]
HEADER = "img1,img2,dataset,scope,method,ann_a,ann_b,score_mean"
GOOD = [
    "imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,6",
    "imgs/o2.png,imgs/a2.png,celeba,global,blurpix,8,,8",
]
OUT = "out"
# Folders a run may write outside out/: matplotlib's and torch's caches, set to the case folder.
_CACHES = ("cache",)


def environment(cwd: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.update(MPLCONFIGDIR=str(cwd / "cache" / "mpl"), BENCH_WEIGHTS_DIR=str(cwd / "cache" / "weights"),
               TORCH_HOME=str(cwd / "cache" / "torch"))
    return env


def bench(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=environment(cwd),
                          capture_output=True, text=True, timeout=timeout, check=False)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file outside out/ and the caches, with its size and mtime."""
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0] in (OUT, *_CACHES):
            continue
        if path.is_symlink() or not path.is_file():
            found[relative.as_posix()] = (-1, -1)
        else:
            stat = path.stat()
            found[relative.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


# ----------------------------------------------------------------------------- builders
def images(cwd: Path) -> None:
    (cwd / "imgs").mkdir(exist_ok=True)
    for i, name in enumerate(["o1", "o2", "a1", "a2"]):
        Image.fromarray(np.full((8, 10, 3), 40 * i, np.uint8)).save(cwd / "imgs" / f"{name}.png")


def annotations(cwd: Path, rows: list[str] | None = None, header: str = HEADER, name: str = "HA1.csv") -> str:
    images(cwd)
    (cwd / name).write_text("\n".join([header, *(GOOD if rows is None else rows)]) + "\n")
    return name


def score(csv: str, *extra: str, metrics: str = "mse", out: str = OUT) -> list[str]:
    return ["score", "--annotations", csv, "--metrics", metrics, "--out", out, "--no-progress", *extra]


def run_method(*extra: str) -> list[str]:
    # Relative --out for `run --method` is resolved by the CLI (another branch); "{cwd}" keeps
    # these cases independent of that change: `bench` replaces nothing, the test does below.
    return ["run", "--metrics", "mse", "--out", "{cwd}/" + OUT, "--store", f"{OUT}/r.sqlite", "--n-boot", "20",
            "--no-progress", *extra]


def benchset(cwd: Path) -> Path:
    return write_benchmark_set(cwd / "set")


def png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def row_with(cwd: Path, image: str) -> list[str]:
    """GOOD plus a third row whose anonymized image is `image`."""
    return GOOD + [f"imgs/o1.png,{image},coco,local,mask,5,7,6"]


def store_with_tables(path: Path) -> None:
    from bench.scoring.store import ResultsStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore(path):
        pass


def damage_pages(path: Path) -> None:
    """Random bytes over every page but the first (the schema stays readable)."""
    rng = np.random.default_rng(0)
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset + 8:offset + 4000] = rng.integers(0, 256, 3992, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def store_with_benchmark_record(cwd: Path, record: str) -> str:
    """A store holding one benchmark run of the demo set whose record column is `record`."""
    from bench.data.benchmark_set import load_benchmark_set
    from bench.scoring.store import ResultsStore

    path = cwd / OUT / "r.sqlite"
    path.parent.mkdir(parents=True)
    demo = load_benchmark_set("fixtures")
    with ResultsStore(path) as store:
        run_id = store.start_run("test", {})
        store.record_benchmark(run_id, demo.name, demo.sha256, {"methods": {}})
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE benchmark_runs SET record = ?", (record,))
    return f"{OUT}/r.sqlite"


def torch_file(path: Path, value: object) -> None:
    import torch

    torch.save(value, path)


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    #: Builds the case's files in the working folder and returns the command's arguments.
    setup: Callable[[Path], list[str]]
    #: Words the one stderr line must hold.
    expect: tuple[str, ...]
    code: int = 2
    #: "stderr": the command stops with one error line. "stdout": a per-pair problem (an image
    #: that cannot be read) is one line of the run's report, the other pairs go on, exit 1.
    stream: str = "stderr"


def _then(effect: object, result: list[str]) -> list[str]:
    """For one-line setups: `effect` was done (its value ignored), the command is `result`."""
    return result


def _csv_case(rows: list[str] | None = None, header: str = HEADER, *extra: str) -> Callable[[Path], list[str]]:
    return lambda cwd: score(annotations(cwd, rows, header), *extra)


def _pair_case(make: Callable[[Path], str], *expect: str, extra: tuple[str, ...] = ()) -> Case:
    """An image problem `score` reports for its pair, going on with the others."""
    return Case(_image_case(make, *extra), expect, code=1, stream="stdout")


def _image_case(make: Callable[[Path], str], *extra: str) -> Callable[[Path], list[str]]:
    def setup(cwd: Path) -> list[str]:
        images(cwd)
        return score(annotations(cwd, row_with(cwd, make(cwd))), *extra)
    return setup


def _fifo(cwd: Path) -> str:
    os.mkfifo(cwd / "imgs" / "pipe.png")
    return "imgs/pipe.png"


def _folder_image(cwd: Path) -> str:
    (cwd / "imgs" / "folder.png").mkdir()
    return "imgs/folder.png"


def _truncated(cwd: Path) -> str:
    noisy = np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(cwd / "imgs" / "full.png")
    blob = (cwd / "imgs" / "full.png").read_bytes()
    (cwd / "imgs" / "cut.png").write_bytes(blob[: len(blob) // 2])
    return "imgs/cut.png"


def _bomb(cwd: Path) -> str:
    png_header_only(cwd / "imgs" / "huge.png", 10_000, 10_000)
    return "imgs/huge.png"


def _wide(cwd: Path) -> str:
    Image.new("RGB", (12, 8)).save(cwd / "imgs" / "wide.png")
    return "imgs/wide.png"


def _link_out(cwd: Path) -> str:
    Image.new("RGB", (10, 8)).save(cwd / "outside.png")
    (cwd / "data").mkdir()
    return "../outside.png"


def _escaping_symlink(cwd: Path) -> list[str]:
    images(cwd)
    Image.new("RGB", (10, 8)).save(cwd.parent / "secret.png")  # outside the image root, the CSV's folder
    (cwd / "imgs" / "link.png").symlink_to(cwd.parent / "secret.png")
    return score(annotations(cwd, row_with(cwd, "imgs/link.png")))


def _set_with(change: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(cwd: Path) -> list[str]:
        change(benchset(cwd))
        return run_method("--method", "blur", "--dataset", "{cwd}/set")
    return setup


def _symlinked_original(folder: Path) -> None:
    original = folder / "images" / "originals" / "coco" / "img0.png"
    (folder.parent / "foreign.png").write_bytes(original.read_bytes())
    original.unlink()
    original.symlink_to(folder.parent / "foreign.png")


def _symlinked_mask(folder: Path) -> None:
    mask = folder / "masks" / "coco" / "img0.png"
    (folder.parent / "foreign-mask.png").write_bytes(mask.read_bytes())
    mask.unlink()
    mask.symlink_to(folder.parent / "foreign-mask.png")


def _pii(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "pii.json").write_text(text)


def _pii_fifo(folder: Path) -> None:
    (folder / "pii.json").unlink()
    os.mkfifo(folder / "pii.json")


def _pii_key_folder(folder: Path) -> None:
    (folder / "images" / "originals" / "dir.png").mkdir()
    (folder / "pii.json").write_text(json.dumps({"originals/dir.png": [[1, 2, 3, 4]]}))


def _method_folder(make: Callable[[Path], None], name: str = "mine") -> Callable[[Path], list[str]]:
    def setup(cwd: Path) -> list[str]:
        benchset(cwd)
        (cwd / "anon").mkdir()
        make(cwd)
        return run_method("--method", f"{name}=anon", "--dataset", "{cwd}/set")
    return setup


def _folder_symlink(cwd: Path) -> None:
    Image.new("RGB", (24, 28)).save(cwd / "elsewhere.png")
    (cwd / "anon" / "coco").mkdir()
    (cwd / "anon" / "coco" / "img0.png").symlink_to(cwd / "elsewhere.png")


def _importing_exits(cwd: Path) -> list[str]:
    (cwd / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    return run_method("--method", "exits_on_import:anonymize")


def _importing_ends_the_process(cwd: Path) -> list[str]:
    # os._exit cannot be caught: only importing in another process keeps the run alive.
    (cwd / "ends_on_import.py").write_text("import os\nos._exit(3)\n")
    return run_method("--method", "ends_on_import:anonymize")


def _store_case(make: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    def setup(cwd: Path) -> list[str]:
        return score(annotations(cwd), "--store", make(cwd))
    return setup


def _garbage_store(cwd: Path) -> str:
    (cwd / "garbage.sqlite").write_bytes(np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    return "garbage.sqlite"


def _damaged_store(cwd: Path) -> str:
    store_with_tables(cwd / "damaged.sqlite")
    damage_pages(cwd / "damaged.sqlite")
    return "damaged.sqlite"


def _foreign_sqlite(cwd: Path) -> str:
    with closing(sqlite3.connect(cwd / "other.sqlite")) as db, db:
        db.execute("CREATE TABLE t (x)")
    return "other.sqlite"


def _schema_text(cwd: Path) -> str:
    store_with_tables(cwd / "s.sqlite")
    with closing(sqlite3.connect(cwd / "s.sqlite")) as db, db:
        db.execute("UPDATE schema_version SET version = 'one'")
    return "s.sqlite"


def _store_folder(cwd: Path) -> str:
    (cwd / "store.sqlite").mkdir()
    return "store.sqlite"


def _leaderboard_record(record: str) -> Callable[[Path], list[str]]:
    return lambda cwd: ["leaderboard", "--store", store_with_benchmark_record(cwd, record), "--out", OUT]


def _explain_with(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(cwd: Path) -> list[str]:
        images(cwd)
        make(cwd / "model.pt")
        return ["explain", "--checkpoint", "model.pt", "imgs/a1.png", "--out", OUT, "--device", "cpu"]
    return setup


def _unsafe_pickle(path: Path) -> None:
    import argparse

    torch_file(path, {"state_dict": {}, "config": argparse.Namespace(backbone="resnet18")})


def _weights_import(make: Callable[[Path], None], name: str = "alexnet") -> Callable[[Path], list[str]]:
    def setup(cwd: Path) -> list[str]:
        make(cwd / "w.pth")
        return ["weights", "import", "w.pth", "--as", name]
    return setup


def _wrong_architecture(path: Path) -> None:
    import torch

    torch_file(path, {"features.0.weight": torch.zeros(3, 3), "classifier.weight": torch.zeros(2, 2)})


CASES: dict[str, Case] = {
    # --- the README's "Bad input" table
    "missing annotation file": Case(lambda cwd: score("HA1.csv"), ("HA1.csv: annotation file not found",)),
    # Scoring needs no score column (issue 11); correlating does.
    "missing column": Case(lambda cwd: ["correlate", "--annotations", annotations(cwd, [r.rsplit(",", 1)[0] for r in GOOD],
                                                                       HEADER.rsplit(",", 1)[0]),
                                        "--metrics", "mse", "--out", OUT, "--no-progress"],
                           ("HA1.csv line 1", "'score_mean'", "--columns")),
    "non-numeric score": Case(_csv_case(GOOD + ["imgs/o1.png,imgs/a2.png,coco,local,mask,5,7,six"]),
                              ("HA1.csv line 4", "non-numeric score 'six'")),
    "out-of-range score": Case(_csv_case(GOOD + ["imgs/o1.png,imgs/a2.png,coco,local,mask,5,70,6"]),
                               ("line 4", "outside 1..10")),
    "duplicate row": Case(_csv_case(GOOD + [GOOD[0]]), ("line 4", "duplicate pair", "line 2")),
    "absolute path": Case(_csv_case(GOOD + ["/data/o1.png,imgs/a2.png,coco,local,mask,5,7,6"]),
                          ("line 4", "absolute path", "--allow-outside-root")),
    "path escaping the root": Case(_image_case(lambda cwd: "../../etc/a.png"), ("line 4", "leaves the image root")),
    "missing image": _pair_case(lambda cwd: "imgs/gone.png", "line 4", "gone.png", "No such file"),
    "wrong image root": Case(lambda cwd: ["validate", annotations(cwd), "--root", "imgs"], ("none of the", "--root"),
                             code=1, stream="stdout"),
    "truncated image": _pair_case(_truncated, "line 4", "cannot decode image", "cut.png"),
    "decompression bomb": _pair_case(_bomb, "huge.png", "decompression bomb"),
    "size mismatch": _pair_case(_wide, "line 4", "size mismatch", "--size-policy resize"),
    "split impossible to stratify": Case(lambda cwd: ["splits", annotations(cwd), "--out", OUT],
                                         ("HA1.csv", "stratif")),
    # --- CSV text
    "empty CSV": Case(lambda cwd: _then((cwd / "HA1.csv").write_text(""), score("HA1.csv")), ("HA1.csv: empty file",)),
    "header only": Case(_csv_case([]), ("no data rows",)),
    "not UTF-8": Case(lambda cwd: _then((cwd / "HA1.csv").write_bytes(b"img1,img2\n\xff\xfe,\x80\n"), score("HA1.csv")),
                      ("not UTF-8",)),
    "ragged row": Case(_csv_case(GOOD + ["imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,6,9,9"]), ("cannot parse",)),
    "empty method": Case(_csv_case(GOOD + ["imgs/o1.png,imgs/a2.png,coco,local,,5,7,6"]), ("line 4", "empty 'method'")),
    "empty image path": Case(_csv_case(GOOD + [",imgs/a2.png,coco,local,mask,5,7,6"]), ("line 4", "empty 'img1'")),
    "quoted newline in a path": Case(_csv_case(GOOD + ['"imgs/o\n1.png",imgs/a2.png,coco,local,mask,5,7,6']),
                                     ("line 4", "o\\n1.png", "No such file"), code=1, stream="stdout"),
    "ANSI escape in a path": Case(_csv_case(GOOD + ["imgs/\x1b[31mred.png,imgs/a2.png,coco,local,mask,5,7,6"]),
                                  ("line 4", "\\x1b[31mred.png"), code=1, stream="stdout"),
    "newline in the file name": Case(lambda cwd: score("new\nline.csv"), ("new\\nline.csv", "not found")),
    # --- things that are not files
    "annotations are a folder": Case(lambda cwd: _then((cwd / "HA1.csv").mkdir(), score("HA1.csv")), ("is a folder",)),
    "annotations are a FIFO": Case(lambda cwd: _then(os.mkfifo(cwd / "HA1.csv"), score("HA1.csv")), ("FIFO",)),
    "annotations are a device": Case(lambda cwd: score("/dev/zero"), ("character device",)),
    "image is a FIFO": _pair_case(_fifo, "line 4", "pipe.png", "FIFO"),
    "image is a folder": _pair_case(_folder_image, "line 4", "folder.png", "directory"),
    "image is a device": _pair_case(lambda cwd: "/dev/zero", "/dev/zero", "character device",
                                    extra=("--allow-outside-root",)),
    "image symlink out of the root": Case(_escaping_symlink, ("line 4", "through a symlink", "--allow-outside-root")),
    # --- option values
    "seed -1 (run)": Case(lambda cwd: run_method("--method", "blur", "--seed", "-1"), ("--seed", "non-negative")),
    "seed -1 (splits)": Case(lambda cwd: ["splits", annotations(cwd), "--out", OUT, "--seed", "-1"],
                             ("--seed", "non-negative")),
    "seed not a number": Case(lambda cwd: run_method("--seed", "abc"), ("--seed", "'abc'")),
    "batch size 0": Case(lambda cwd: run_method("--method", "blur", "--batch-size", "0"), ("--batch-size",)),
    "n-boot 0": Case(lambda cwd: run_method("--method", "blur", "--n-boot", "0"), ("--n-boot",)),
    "workers -1": Case(lambda cwd: run_method("--method", "blur", "--workers", "-1"), ("--workers",)),
    "method timeout 0": Case(lambda cwd: run_method("--method", "blur", "--method-timeout", "0"),
                             ("--method-timeout", "positive")),
    "method timeout not a number": Case(lambda cwd: run_method("--method", "blur", "--method-timeout", "soon"),
                                        ("--method-timeout", "'soon'")),
    "unknown command": Case(lambda cwd: ["nosuchcommand"], ("invalid choice", "'nosuchcommand'")),
    "unknown option": Case(lambda cwd: ["validate", "x.csv", "--frobnicate"], ("unrecognized arguments",)),
    "unknown metric": Case(lambda cwd: score(annotations(cwd), metrics="no_such_metric"),
                           ("no_such_metric",)),
    "unknown split": Case(lambda cwd: ["splits", annotations(cwd), "--out", OUT, "--split", "no-such"], ("no-such",)),
    # --- benchmark sets and methods
    "original symlinked out of the set": Case(_set_with(_symlinked_original),
                                              ("pii.json", "img0.png", "outside the image root", "--allow-outside-root")),
    "mask symlinked out of the set": Case(_set_with(_symlinked_mask), ("mask", "outside the mask root")),
    "pii.json key with ..": Case(_set_with(_pii('{"../escape.png": [[1, 2, 3, 4]]}')), ("without '..'",)),
    "pii.json absolute key": Case(_set_with(_pii('{"/etc/passwd": [[1, 2, 3, 4]]}')), ("'/etc/passwd'",)),
    "pii.json not JSON": Case(_set_with(_pii("{not json")), ("pii.json", "not valid JSON")),
    "pii.json is a FIFO": Case(_set_with(_pii_fifo), ("pii.json", "FIFO")),
    "pii.json key is a folder": Case(_set_with(_pii_key_folder), ("dir.png", "not a regular file")),
    "dataset is a file": Case(lambda cwd: _then((cwd / "set").write_text("x"),
                                                   run_method("--method", "blur", "--dataset", "{cwd}/set")),
                              ("/set", "no such folder")),
    "method folder symlink out": Case(_method_folder(_folder_symlink), ("--method mine=/", "/work/anon", "outside that folder")),
    "method folder is a file": Case(lambda cwd: _then((cwd / "anon").write_text("x"), run_method("--method", "mine=anon")),
                                    ("--method mine=/", "/work/anon", "no such folder")),
    "method named like an output file": Case(_method_folder(lambda cwd: None, "leaderboard.html"),
                                             ("'leaderboard.html'", "file of the run folder")),
    "method named pairs.csv": Case(_method_folder(lambda cwd: None, "pairs.csv"), ("'pairs.csv'",)),
    "method name with a newline": Case(_method_folder(lambda cwd: None, "mi\nne"), ("'mi\\nne'", "control character")),
    "method exits on import": Case(_importing_exits, ("exits_on_import:anonymize", "cannot import it", "SystemExit")),
    "method ends the process on import": Case(_importing_ends_the_process,
                                              ("ends_on_import:anonymize", "cannot import it", "exited with code 3")),
    # --- results stores
    "store of random bytes": Case(_store_case(_garbage_store), ("garbage.sqlite", "damaged", "mv ")),
    "store with garbage pages": Case(_store_case(_damaged_store), ("damaged.sqlite", "damaged")),
    "store from another program": Case(_store_case(_foreign_sqlite), ("other.sqlite", "not a bench results store")),
    "store schema version is text": Case(_store_case(_schema_text), ("s.sqlite", "damaged")),
    "store is a folder": Case(_store_case(_store_folder), ("store.sqlite",)),
    "store record is not JSON": Case(_leaderboard_record("{garbage"), ("r.sqlite", "damaged", "not JSON")),
    "no store for the leaderboard": Case(lambda cwd: ["leaderboard", "--store", "none.sqlite", "--out", OUT],
                                         ("none.sqlite", "no results store")),
    # --- the disk and the OS
    "output folder under a file": Case(lambda cwd: _then((cwd / "afile").write_text("x"),
                                                         score(annotations(cwd), out="afile/sub")), ("afile",)),
    "output name too long": Case(lambda cwd: score(annotations(cwd), out="x" * 300),
                                 ("File name too long",)),
    "output under /proc": Case(lambda cwd: score(annotations(cwd), out="/proc/no/such"), ("/proc/no/such",)),
    "no requested metric can be computed": Case(lambda cwd: ["run", "--annotations", annotations(cwd), "--metrics",
                                                                 "no_such_module:Metric", "--out", OUT, "--no-progress"],
                                                ("no metric could be computed", "no_such_module")),
    "report of an empty folder": Case(lambda cwd: _then((cwd / "results").mkdir(), ["report", "results"]),
                                      ("results", "no results here")),
    "report of damaged results": Case(lambda cwd: _then([(cwd / "results").mkdir(), (cwd / "results" / "results.json").write_text("{")],
                                                        ["report", "results"]),
                                      ("unreadable results",)),
    # --- checkpoints and weights
    "checkpoint of random bytes": Case(_explain_with(lambda p: p.write_bytes(b"\x80\x02garbage" * 50)),
                                       ("model.pt", "not a readable torch checkpoint")),
    "checkpoint holding Python objects": Case(_explain_with(_unsafe_pickle), ("model.pt", "could run code")),
    "weights import of random bytes": Case(_weights_import(lambda p: p.write_bytes(os.urandom(4096))),
                                           ("w.pth", "alexnet")),
    "weights import of another architecture": Case(_weights_import(_wrong_architecture), ("w.pth", "alexnet")),
    "weights import of a FIFO": Case(_weights_import(os.mkfifo), ("w.pth",)),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_hostile_input_is_one_line(tmp_path, kind):
    case = CASES[kind]
    cwd = tmp_path / "work"
    cwd.mkdir()
    arguments = [argument.replace("{cwd}", str(cwd)) for argument in case.setup(cwd)]
    before = snapshot(cwd)
    finished = bench(cwd, *arguments, timeout=240)
    err, out = finished.stderr, finished.stdout
    assert finished.returncode == case.code, (finished.returncode, err[-2000:], out[-2000:])
    assert "Traceback" not in err + out, err[-3000:]
    assert "\x1b" not in err + out, err + out
    assert "weights_only=False" not in err + out and "weights_only` set to `False" not in err + out, err
    if case.stream == "stderr":
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1 and err.endswith("\n"), err[-3000:]
    else:
        assert err == "", err[-3000:]
        lines = [line for line in out.splitlines() if all(word in line for word in case.expect)]
        assert len(lines) == 1, out[-3000:]
    for word in case.expect:
        assert word in lines[0], (word, lines[0])
    assert snapshot(cwd) == before, "something was written outside out/"


def test_the_corpus_is_large_enough():
    assert len(CASES) + len(HOSTILE_METHODS) >= 60


# ----------------------------------------------------------------------------- hostile methods
HOSTILE = "tests.bench.hostile_methods"
#: method -> what the run reports for its landscape image (img2); None: it works everywhere.
HOSTILE_METHODS = {
    "exits": "exited with code 0",
    "exits_hard": "exited with code 0",
    "exits_three": "exited with code 3",
    "hangs": "timed out after 4 s",
    "hangs_ignoring_sigterm": "timed out after 4 s",
    "segfaults": "killed by signal 11 (SIGSEGV)",
    "kills_itself": "killed by signal 9 (SIGKILL)",
    "interrupts": "failed on originals/coco/img2.png: KeyboardInterrupt",
    "floods": None,
    "escapes_output": None,
}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One `bench run` with every hostile method beside the built-ins, as a user types it."""
    cwd = tmp_path_factory.mktemp("hostile-run")
    benchset(cwd)
    methods = [argument for name in HOSTILE_METHODS for argument in ("--method", f"{HOSTILE}:{name}")]
    arguments = [a.replace("{cwd}", str(cwd)) for a in run_method("--dataset", "{cwd}/set", "--method-timeout", "4", *methods)]
    arguments[arguments.index("--metrics") + 1] = "mse,psnr"
    finished = bench(cwd, *arguments, timeout=400)
    return cwd, finished


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HOSTILE_METHODS))
def test_a_hostile_method_is_reported_and_the_run_goes_on(hostile_run, name):
    cwd, finished = hostile_run
    out = finished.stdout
    assert finished.returncode == 1, finished.stderr[-3000:] + out[-3000:]  # failures make the run incomplete
    assert "Traceback" not in finished.stderr and "FLOOD" not in out + finished.stderr
    assert "\x1b" not in out and "wrote /etc/passwd" not in out
    board = json.loads((cwd / OUT / "set" / "leaderboard.json").read_text())
    counts = {row["method"]: row for row in board["rows"] if row["scope"] == "global"}
    method = f"{HOSTILE}:{name}"
    assert method in counts and "blur" in counts  # the run finished, with the built-ins
    summary = next(line for line in out.splitlines() if line.startswith(f"  {method}:"))
    expected = HOSTILE_METHODS[name]
    if expected is None:
        assert "anonymized 4" in summary and "failed" not in summary
    else:
        assert "anonymized 3" in summary and "failed 1" in summary, summary
        # The summary's line (indented); the leaderboard's Failures list below it says the same.
        reports = [line for line in out.splitlines()
                   if f"'{method}'" in line and "img2.png" in line and line.startswith("    ")]
        assert len(reports) == 1 and expected in reports[0], reports
    log = cwd / OUT / "set" / "_logs" / f"{method.replace(':', '_')}.log"
    assert log.is_file()
    if name == "floods":
        assert log.stat().st_size > 4 * 2_000_000  # its output was kept, not printed


def test_validate_does_not_hang_on_a_fifo(tmp_path):
    rows = row_with(tmp_path, "imgs/pipe.png")
    images(tmp_path)
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    csv = annotations(tmp_path, rows)
    finished = bench(tmp_path, "validate", csv, timeout=60)
    assert finished.returncode == 1 and "FIFO" in finished.stdout and "Traceback" not in finished.stderr


@pytest.mark.slow
def test_a_formula_for_a_method_name_is_neutralised_in_csv_and_kept_in_json(tmp_path):
    folder = benchset(tmp_path)
    anonymized = tmp_path / "anon"
    for original in (folder / "images" / "originals").rglob("*.png"):
        target = anonymized / original.relative_to(folder / "images" / "originals")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(original.read_bytes())
    name = "@SUM(A1)"  # a spreadsheet formula ("=" would split NAME=DIR)
    arguments = [a.replace("{cwd}", str(tmp_path)) for a in run_method("--dataset", "{cwd}/set", "--method",
                                                                        f"{name}=anon")]
    finished = bench(tmp_path, *arguments)
    assert finished.returncode == 0, finished.stderr[-3000:] + finished.stdout[-3000:]
    out = tmp_path / OUT / "set"
    for csv in [out / "leaderboard.csv", out / "pairs.csv"]:
        cells = [cell for line in csv.read_text().splitlines() for cell in line.split(",")]
        assert not any(cell.lstrip('"').startswith(("=", "+", "@")) for cell in cells), csv
        assert "'@SUM(A1)" in csv.read_text()
    methods = {row["method"] for row in json.loads((out / "leaderboard.json").read_text())["rows"]}
    assert name in methods  # the raw name in JSON
