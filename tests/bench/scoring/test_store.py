"""The SQLite results store: exact round trips, concurrent writers, refusing bad files."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchError, InputError
from bench.scoring.store import SCHEMA_VERSION, ResultsStore
from metrics.hashing import file_sha256
from metrics.base import PairMetric, WeightsRecord

KEY = "psnr@1:0123456789abcdef"


def _pair(i: int) -> tuple[str, str]:
    return (f"{i:064x}", f"{i + 10_000:064x}")


def test_round_trip_keeps_inf_nan_and_exact_values(tmp_path):
    values = [0.1 + 0.2, math.inf, -math.inf, math.nan, 5e-324, -0.0]
    rows = [(*_pair(i), value, False) for i, value in enumerate(values)]
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert store.write_scores(KEY, rows) == len(values)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        found = store.lookup(KEY, [_pair(i) for i in range(len(values) + 2)])
    assert set(found) == {_pair(i) for i in range(len(values))}
    for i, value in enumerate(values):
        got = found[_pair(i)]
        assert (math.isnan(got) and math.isnan(value)) or got == value


def test_insert_or_ignore_keeps_first_value_and_other_keys_apart(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.write_scores(KEY, [(*_pair(0), 1.0, False)])
        assert store.write_scores(KEY, [(*_pair(0), 2.0, False)]) == 0
        store.write_scores("mse@1:ffff", [(*_pair(0), 3.0, False)])
        assert store.lookup(KEY, [_pair(0)]) == {_pair(0): 1.0}
        assert store.lookup("mse@1:ffff", [_pair(0)]) == {_pair(0): 3.0}
        assert store.count_scores() == 2


def test_lookup_beyond_one_query_chunk(tmp_path):
    pairs = [_pair(i) for i in range(1234)]
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.write_scores(KEY, [(*pair, float(i), False) for i, pair in enumerate(pairs)])
        found = store.lookup(KEY, pairs[::2])
    assert found == {pair: float(i) for i, pair in enumerate(pairs) if i % 2 == 0}


def test_resized_scores_are_not_reused_under_the_error_policy(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.write_scores(KEY, [(*_pair(0), 1.0, True), (*_pair(1), 2.0, False)])
        assert set(store.lookup(KEY, [_pair(0), _pair(1)], allow_resized=False)) == {_pair(1)}
        assert set(store.lookup(KEY, [_pair(0), _pair(1)])) == {_pair(0), _pair(1)}


def test_batch_of_several_metrics_is_one_transaction(tmp_path):
    """A batch that fails half-way leaves nothing behind (no half-written batch)."""
    with ResultsStore(tmp_path / "r.sqlite") as store:
        bad_rows = [(object(), "cannot be bound", 2.0, False)]
        with pytest.raises(sqlite3.Error):
            store.write_batch({KEY: [(*_pair(0), 1.0, False)], "mse@1:ffff": bad_rows})
        assert store.count_scores() == 0


class _StandIn(PairMetric):
    name = "standin"
    version = "3"
    higher_is_more_anonymous = True

    def weights(self):
        return [WeightsRecord(name="net", sha256="ab" * 32, status="stand-in")]


def test_metric_card_and_run_records(tmp_path):
    metric = _StandIn()
    with ResultsStore(tmp_path / "r.sqlite") as store:
        key = store.register_metric(metric)
        run_id = store.start_run("bench score x", {"device": "cpu"})
        store.finish_run(run_id, "finished", {"pairs": 3})
        card, run = store.metric_card(key), store.run(run_id)
    assert key == metric.key()
    assert card["weights"][0]["status"] == "stand-in"
    assert run["status"] == "finished" and run["summary"] == {"pairs": 3}
    assert run["provenance"] == {"device": "cpu"} and run["finished_at"]


def test_set_scores_are_keyed_by_group_members(tmp_path):
    members = [_pair(0), _pair(1)]
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert store.write_set_score("fid@1:aa", "coco/local/blur", members, 12.5)
        assert store.lookup_set_score("fid@1:aa", "coco/local/blur", reversed(members)) == 12.5
        assert store.lookup_set_score("fid@1:aa", "coco/local/blur", members[:1]) is None


def test_file_sha256_is_that_of_the_bytes(tmp_path):
    import hashlib

    data = bytes(range(256)) * 9000  # several read chunks
    (tmp_path / "f.bin").write_bytes(data)
    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- concurrency
def _writer(path: str, offset: int, barrier) -> None:
    barrier.wait()
    with ResultsStore(path) as store:
        for start in range(0, 200, 10):
            # half the keys are shared with the other writer, half are its own
            shared = [(*_pair(i), float(i), False) for i in range(start, start + 10)]
            own = [(*_pair(offset + i), float(offset + i), False) for i in range(start, start + 10)]
            store.write_batch({KEY: shared + own})


def test_two_processes_writing_at_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context()
    barrier = ctx.Barrier(2)
    writers = [ctx.Process(target=_writer, args=(path, offset, barrier)) for offset in (1000, 2000)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT original_sha256, anonymized_sha256, value FROM scores").fetchall()
    db.close()
    expected = {_pair(i): float(i) for base in (0, 1000, 2000) for i in range(base, base + 200)}
    assert len(rows) == len(expected)
    assert {(o, a): v for o, a, v in rows} == expected


# ----------------------------------------------------------------------------- bad files
def test_corrupt_file_is_one_line_error(tmp_path):
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not an sqlite database\n" * 200)
    with pytest.raises(BenchError) as info:
        ResultsStore(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "--store" in message


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
    with pytest.raises(BenchError, match="not a bench results store"):
        ResultsStore(path)


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "old.sqlite"
    ResultsStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(BenchError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ResultsStore(path)


def test_a_run_killed_by_a_signal_is_marked_interrupted_on_the_next_open(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / "r.sqlite"
    code = ("import os, signal, sys; from bench.scoring.store import ResultsStore; "
            "store = ResultsStore(sys.argv[1]); store.start_run('bench run', {}); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert killed.returncode == -signal.SIGKILL
    with ResultsStore(path) as store:
        run = store.run(1)
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    with ResultsStore(path) as store:  # a live run (this process) is left alone
        live = store.start_run("bench run", {})
        with ResultsStore(path) as again:
            assert again.run(live)["status"] == "running"


def test_the_wal_is_truncated_when_the_store_closes(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.start_run("bench run", {})
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("damage", ["pages", "text score", "record"])
def test_a_damaged_store_is_one_line_naming_the_file(tmp_path, damage):
    import sqlite3
    from contextlib import closing

    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        run_id = store.start_run("bench run", {})
        store.write_scores("m", [("a" * 64, "b" * 64, 0.5, False)], run_id=run_id)
        store.record_benchmark(run_id, "demo", "d" * 64, {"methods": {}})
    if damage == "pages":
        data = bytearray(path.read_bytes())
        noise = np.random.default_rng(0).integers(0, 256, len(data), dtype="uint8").tobytes()
        data[4096:] = noise[4096:]  # every page but the first (the schema) is garbage
        path.write_bytes(bytes(data))
    else:
        statement = ("UPDATE scores SET value = 'abc'" if damage == "text score"
                     else "UPDATE benchmark_runs SET record = 'not json'")
        with closing(sqlite3.connect(path)) as db, db:
            db.execute(statement)
    with pytest.raises(InputError) as info:
        with ResultsStore(path) as store:
            store.lookup("m", [("a" * 64, "b" * 64)])
            store.benchmark_records("d" * 64)
    message = str(info.value)
    assert f"results store {path} is damaged" in message and "move it aside" in message and "\n" not in message


def test_a_command_that_fails_before_any_run_leaves_no_new_store(tmp_path):
    new = tmp_path / "runs" / "evaluate" / "results.sqlite"
    with pytest.raises(InputError), ResultsStore(new):
        raise InputError("the annotations are bad")
    assert not (tmp_path / "runs").exists(), "the store and the folders made for it are gone"

    with pytest.raises(InputError), ResultsStore(new) as store:
        store.start_run("bench score", {})
        raise InputError("failed after the run started")
    assert new.is_file(), "a store that holds a run is kept"

    existing = tmp_path / "old.sqlite"
    ResultsStore(existing).close()
    with pytest.raises(InputError), ResultsStore(existing):
        raise InputError("bad input")
    assert existing.is_file(), "a store that was there before is never removed"


def test_a_failed_correlate_leaves_no_empty_store(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    annotations = repo / "fixtures" / "demo" / "HA1.csv"
    proc = subprocess.run([sys.executable, "-m", "bench", "correlate", "--annotations", str(annotations),
                           "--root", str(tmp_path), "--metrics", "mse"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "none of the" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists(), sorted(str(p) for p in tmp_path.rglob("*"))
