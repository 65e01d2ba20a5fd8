"""The results store: one SQLite file that remembers every score ever computed.

A score is keyed by *what was compared*, not by where the files live: the sha256 of both
images' bytes plus the metric key (name, version, config, weights sha256; see
`metrics.base.Metric.key`). Moving a folder, renaming a CSV or re-running a finished job
therefore computes nothing new, and a changed image or a changed metric computes afresh.

Durability and concurrency, on purpose:

- WAL journal + a busy timeout: two runs against one store wait for each other instead of
  failing, and readers never block the writer.
- Every batch is ONE transaction (`write_batch`): a SIGKILL loses at most the batch in flight,
  never half of one.
- Scores are inserted with INSERT OR IGNORE: when two runs compute the same pair, the first
  value stays and each (pair, metric) exists once.

Values: +inf/-inf are stored as REAL (PSNR of identical images is +inf and stays so); SQLite
cannot store NaN, so NaN is stored as NULL with `is_nan = 1`.

A score records whether the anonymized image was resized to its original (``--size-policy
resize``); a run under ``--size-policy error`` does not reuse such a score, because under its
policy that pair is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import SOURCE_ROOT
from bench.errors import BenchError, InputError
from metrics.base import Metric
from metrics.schema import WeightsStatus

#: Bumped whenever a table changes shape; a store of another version is refused, never migrated
#: silently.
SCHEMA_VERSION = 1

#: File name of the store inside a run's output folder (``--store`` overrides it).
DEFAULT_STORE_NAME = "results.sqlite"

#: How long a writer waits for another run's transaction before giving up.
BUSY_TIMEOUT_S = 120.0

# Row values per IN (...) query: well under SQLite's bound-parameter limit.
_LOOKUP_CHUNK = 400

PairKey = tuple[str, str]
"""(original_sha256, anonymized_sha256)."""

ScoreRow = tuple[str, str, float, bool]
"""(original_sha256, anonymized_sha256, value, resized)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    metric_key     TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    version        TEXT NOT NULL,
    weights_status TEXT NOT NULL,
    card           TEXT NOT NULL,
    registered_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    command     TEXT NOT NULL,
    provenance  TEXT NOT NULL,
    status      TEXT NOT NULL,
    summary     TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    original_sha256   TEXT NOT NULL,
    anonymized_sha256 TEXT NOT NULL,
    metric_key        TEXT NOT NULL,
    value             REAL,
    is_nan            INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),
    resized           INTEGER NOT NULL DEFAULT 0 CHECK (resized IN (0, 1)),
    run_id            INTEGER REFERENCES runs (run_id),
    CHECK ((value IS NULL) = (is_nan = 1)),
    PRIMARY KEY (original_sha256, anonymized_sha256, metric_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS set_scores (
    group_key      TEXT NOT NULL,
    metric_key     TEXT NOT NULL,
    members_sha256 TEXT NOT NULL,
    value          REAL,
    is_nan         INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),
    n_pairs        INTEGER NOT NULL,
    run_id         INTEGER REFERENCES runs (run_id),
    CHECK ((value IS NULL) = (is_nan = 1)),
    PRIMARY KEY (group_key, metric_key, members_sha256)
) WITHOUT ROWID;
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _to_sql(value: float) -> tuple[float | None, int]:
    value = float(value)
    return (None, 1) if math.isnan(value) else (value, 0)


class DamagedStoreError(sqlite3.DatabaseError):
    """A value SQLite returned that the schema does not allow (a text in a REAL column, a
    record that is not JSON): the file was changed by something other than this suite."""


def _from_sql(value: float | None, is_nan: int) -> float:
    if is_nan:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DamagedStoreError(f"a score is {type(value).__name__} {str(value)[:40]!r}, not a number")
    return float(value)


def _loads(text: object) -> Any:
    try:
        return json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DamagedStoreError(f"a stored record is not JSON ({str(text)[:40]!r})") from None


def _is_damage(exc: BaseException) -> bool:
    """SQLite's own "malformed" / "not a database" errors and our type checks; not the
    operational ones (locked, disk full, read-only), which have their own message."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.OperationalError, sqlite3.IntegrityError, sqlite3.ProgrammingError))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class ResultsStore:
    """An open results store; use as a context manager so the connection is closed."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        # What this open makes (the file; the missing folders, deepest first), for `_discard`.
        self._created = not self.path.exists()
        self._made_folders = [folder for folder in self.path.parents if not folder.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) so a writer
            # takes the write lock up front and waits for it, instead of failing on upgrade.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._unreadable(exc) from None
        try:
            self._open_schema_waiting(busy_timeout_s)
            self._checkpoint()
            self._mark_interrupted_runs()
        except BenchError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise (self._damaged(exc) if _is_damage(exc) else self._unreadable(exc)) from None

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        discard = exc is not None and self._created and self._holds_nothing()
        self.close()
        if exc is not None and _is_damage(exc):
            raise self._damaged(exc) from None
        if discard:
            self._discard()

    def _holds_nothing(self) -> bool:
        """No run was ever started in it (by this process or another that opened it since)."""
        try:
            return self._db.execute("SELECT NOT EXISTS (SELECT 1 FROM runs)").fetchone()[0] == 1
        except sqlite3.Error:
            return False

    def _discard(self) -> None:
        """A command that failed before it started a run leaves no empty store (nor the folders
        made for it) to be mistaken for results."""
        try:
            for extra in ("", "-wal", "-shm", "-journal"):
                Path(str(self.path) + extra).unlink(missing_ok=True)
            for folder in self._made_folders:
                folder.rmdir()  # only when empty: another command may have written beside it
        except OSError:
            return

    def close(self) -> None:
        self._checkpoint()
        self._db.close()

    def _checkpoint(self) -> None:
        """Fold the WAL back into the database and truncate it. A run that failed on a full
        disk leaves a large WAL behind; truncating it at every open and close gives that space
        back, so the re-run after freeing disk finishes."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # another connection is reading: it checkpoints when it closes

    def _damaged(self, exc: BaseException) -> BenchError:
        return InputError(
            f"results store {self.path} is damaged ({_one_line(exc)}); move it aside to start a new one "
            f"(mv {shlex.quote(str(self.path))} {shlex.quote(str(self.path) + '.damaged')}) or pass --store with a new path"
        )

    def _mark_interrupted_runs(self) -> None:
        """Runs still "running" whose process on this machine is gone were ended by a signal
        (SIGKILL, a closed terminal): mark them "interrupted" so they do not look alive forever."""
        host = platform.node()
        dead = []
        for run_id, owner in self._db.execute("SELECT run_id, summary FROM runs WHERE status = 'running'"):
            try:
                owner = json.loads(owner) if owner else {}
                pid = int(owner.get("pid"))
            except (TypeError, ValueError, AttributeError):
                continue
            if owner.get("host") == host and not _process_alive(pid):
                dead.append(run_id)
        if dead:
            with self._transaction():
                self._db.executemany(
                    "UPDATE runs SET status = 'interrupted', finished_at = ?, summary = ? WHERE run_id = ?",
                    [(_now(), json.dumps({"reason": "its process ended without finishing (killed by a signal?)"}),
                      run_id) for run_id in dead])

    def _unreadable(self, exc: BaseException) -> BenchError:
        # SQLite says only "unable to open database file" when its folder cannot be written.
        folder = self.path.parent
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return InputError(f"results store {self.path} cannot be written: its folder {folder} is read-only (or not "
                              "writable by you); pass --store with a path in a writable folder")
        return InputError(
            f"results store {self.path} cannot be used ({_one_line(exc)}); "
            "move the file aside or pass --store with a new path"
        )

    def _open_schema_waiting(self, timeout_s: float) -> None:
        """`_open_schema`, retried while another connection holds the file.

        Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
        locked" at once (no busy wait) when two connections race for it; so wait here.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._open_schema()
            except (sqlite3.OperationalError, InputError) as exc:
                sqlite_error = exc if isinstance(exc, sqlite3.OperationalError) else exc.__cause__
                if "locked" not in str(sqlite_error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _open_schema(self) -> None:
        # Look before switching to WAL: that switch writes the file, and a file that is not a
        # bench store (or is damaged) must be left exactly as it was.
        self._schema_version()
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a killed process; only a power cut can lose the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            found = self._schema_version()
            if found is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif found != SCHEMA_VERSION:
                raise InputError(
                    f"results store {self.path} has schema version {found}, this bench uses "
                    f"{SCHEMA_VERSION}; pass --store with a new path (or use the bench version that wrote it)"
                )

    def _schema_version(self) -> int | None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "schema_version" not in tables:
            raise InputError(
                f"results store {self.path} is an SQLite file but not a bench results store; "
                "pass --store with a new path"
            )
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if row[0] is not None and not isinstance(row[0], int):
            raise DamagedStoreError(f"its schema version is {row[0]!r}")
        return None if row[0] is None else int(row[0])

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises.

        A write that SQLite refuses (disk full, the file held by another run past the busy
        timeout) becomes a one-line error.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._unwritable(exc) from exc
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._unwritable(exc) from exc
            raise

    def _unwritable(self, exc: BaseException) -> BenchError:
        return InputError(
            f"results store {self.path} cannot be written ({_one_line(exc)}); check the free disk space "
            "and that no other run holds it, or pass --store with a new path"
        )

    # -- metrics ----------------------------------------------------------------------
    def register_metric(self, metric: Metric) -> str:
        """Record a metric's convention card under its key (the first card of a key stays)."""
        card = metric.card().to_dict()
        key = metric.key()
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO metrics (metric_key, name, version, weights_status, card, registered_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, metric.name, metric.version, weights_status(metric).value, json.dumps(card, sort_keys=True),
                 _now()),
            )
        return key

    def metric_card(self, metric_key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT card FROM metrics WHERE metric_key = ?", (metric_key,)).fetchone()
        return None if row is None else _loads(row[0])

    # -- runs -------------------------------------------------------------------------
    def start_run(self, command: str, provenance: Mapping[str, Any]) -> int:
        with self._transaction():
            cursor = self._db.execute(
                # While running, `summary` names the process, so a later open can tell a run that
                # was killed from one still going (see _mark_interrupted_runs).
                "INSERT INTO runs (started_at, command, provenance, status, summary) VALUES (?, ?, ?, 'running', ?)",
                (_now(), command, json.dumps(provenance, sort_keys=True, default=str),
                 json.dumps({"pid": os.getpid(), "host": platform.node()})),
            )
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, summary: Mapping[str, Any] | None = None) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE run_id = ?",
                (_now(), status, json.dumps(summary or {}, sort_keys=True, default=str), run_id),
            )

    def run(self, run_id: int) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT run_id, started_at, finished_at, command, provenance, status, summary FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        names = ("run_id", "started_at", "finished_at", "command", "provenance", "status", "summary")
        record = dict(zip(names, row))
        record["provenance"] = _loads(record["provenance"])
        record["summary"] = _loads(record["summary"]) if record["summary"] else None
        return record

    # -- pair scores ------------------------------------------------------------------
    def lookup(self, metric_key: str, pair_keys: Iterable[PairKey], *, allow_resized: bool = True) -> dict[PairKey, float]:
        """Stored values of `metric_key` for those of `pair_keys` that have one.

        `allow_resized=False` ignores scores whose anonymized image had been resized.
        """
        unique = list(dict.fromkeys(pair_keys))
        found: dict[PairKey, float] = {}
        resized_filter = "" if allow_resized else " AND resized = 0"
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            placeholders = ", ".join("(?, ?)" for _ in chunk)
            params = [metric_key] + [h for pair in chunk for h in pair]
            rows = self._db.execute(
                "SELECT original_sha256, anonymized_sha256, value, is_nan FROM scores "
                f"WHERE metric_key = ? AND (original_sha256, anonymized_sha256) IN (VALUES {placeholders})"
                + resized_filter,
                params,
            )
            for original, anonymized, value, is_nan in rows:
                found[(original, anonymized)] = _from_sql(value, is_nan)
        return found

    def write_scores(self, metric_key: str, rows: Iterable[ScoreRow], *, run_id: int | None = None) -> int:
        """Insert one metric's scores in one transaction; returns how many were new."""
        return self.write_batch({metric_key: rows}, run_id=run_id)

    def write_batch(self, rows_by_metric: Mapping[str, Iterable[ScoreRow]], *, run_id: int | None = None) -> int:
        """Insert the scores of several metrics in ONE transaction; returns how many were new."""
        params = [
            (original, anonymized, metric_key, *_to_sql(value), int(bool(resized)), run_id)
            for metric_key, rows in rows_by_metric.items()
            for original, anonymized, value, resized in rows
        ]
        if not params:
            return 0
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO scores "
                "(original_sha256, anonymized_sha256, metric_key, value, is_nan, resized, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return self._db.total_changes - before

    def count_scores(self, metric_key: str | None = None, *, run_id: int | None = None) -> int:
        """Stored pair scores, optionally of one metric and/or written by one run."""
        clauses, params = [], []
        if metric_key is not None:
            clauses.append("metric_key = ?")
            params.append(metric_key)
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return int(self._db.execute(f"SELECT COUNT(*) FROM scores{where}", params).fetchone()[0])

    # -- set scores -------------------------------------------------------------------
    def write_set_score(
        self,
        metric_key: str,
        group_key: str,
        members: Iterable[PairKey],
        value: float,
        *,
        run_id: int | None = None,
    ) -> bool:
        """Store one set metric's value for a group (e.g. method x scope x dataset).

        The group is identified by its name AND its exact members, so adding or changing a
        pair in the group makes a new entry instead of reusing a stale value.
        """
        member_list = sorted(set(members))
        with self._transaction():
            before = self._db.total_changes
            self._db.execute(
                "INSERT OR IGNORE INTO set_scores (group_key, metric_key, members_sha256, value, is_nan, n_pairs, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (group_key, metric_key, members_digest(member_list), *_to_sql(value), len(member_list), run_id),
            )
            return self._db.total_changes > before

    def lookup_set_score(self, metric_key: str, group_key: str, members: Iterable[PairKey]) -> float | None:
        row = self._db.execute(
            "SELECT value, is_nan FROM set_scores WHERE group_key = ? AND metric_key = ? AND members_sha256 = ?",
            (group_key, metric_key, members_digest(members)),
        ).fetchone()
        return None if row is None else _from_sql(*row)

    # -- spreads of set-metric values ---------------------------------------------------
    # Created on first use, like benchmark_runs (additive; no schema version change).
    _SPREAD_TABLE = (
        "CREATE TABLE IF NOT EXISTS set_score_spreads ("
        " group_key TEXT NOT NULL,"
        " metric_key TEXT NOT NULL,"
        " members_sha256 TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " value REAL,"
        " is_nan INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),"
        " PRIMARY KEY (group_key, metric_key, members_sha256, name)) WITHOUT ROWID"
    )

    def write_set_spread(self, metric_key: str, group_key: str, members: Iterable[PairKey],
                         spread: Mapping[str, float]) -> None:
        """Store named measures of how uncertain a stored set value is (e.g. KID's std, stderr,
        interval), under the same group and members as the value."""
        digest = members_digest(members)
        with self._transaction():
            self._db.execute(self._SPREAD_TABLE)
            self._db.executemany(
                "INSERT OR REPLACE INTO set_score_spreads (group_key, metric_key, members_sha256, name, value, is_nan) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(group_key, metric_key, digest, name, *_to_sql(value)) for name, value in spread.items()],
            )

    def lookup_set_spread(self, metric_key: str, group_key: str, members: Iterable[PairKey]) -> dict[str, float]:
        """The measures `write_set_spread` stored for this value ({} when none)."""
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'set_score_spreads'"
        ).fetchone()
        if exists is None:
            return {}
        rows = self._db.execute(
            "SELECT name, value, is_nan FROM set_score_spreads WHERE group_key = ? AND metric_key = ? "
            "AND members_sha256 = ?", (group_key, metric_key, members_digest(members)),
        )
        return {name: _from_sql(value, is_nan) for name, value, is_nan in rows}

    # -- benchmark runs ---------------------------------------------------------------
    # Created on first use, so stores written before it existed keep working (additive; no
    # schema version change).
    _BENCHMARK_TABLE = (
        "CREATE TABLE IF NOT EXISTS benchmark_runs ("
        " run_id INTEGER PRIMARY KEY REFERENCES runs (run_id),"
        " dataset TEXT NOT NULL,"
        " dataset_sha256 TEXT NOT NULL,"
        " record TEXT NOT NULL)"
    )

    def record_benchmark(self, run_id: int, dataset: str, dataset_sha256: str, record: Mapping[str, Any]) -> None:
        """Remember what a `bench run --method` run benchmarked: its methods (identities and
        pairs), metric keys and failures, as a JSON `record`, under its dataset's identity."""
        with self._transaction():
            self._db.execute(self._BENCHMARK_TABLE)
            self._db.execute(
                "INSERT OR REPLACE INTO benchmark_runs (run_id, dataset, dataset_sha256, record) VALUES (?, ?, ?, ?)",
                # Unsorted: the order of methods and metrics is the order a leaderboard shows.
                (run_id, dataset, dataset_sha256, json.dumps(record, default=str)),
            )

    def drop_benchmark_method(self, dataset_sha256: str, method: str) -> int:
        """Remove `method` from every benchmark record of the dataset (a record left without
        methods goes too); its scores stay. Returns how many records changed."""
        changed = 0
        with self._transaction():
            self._db.execute(self._BENCHMARK_TABLE)
            rows = self._db.execute(
                "SELECT run_id, record FROM benchmark_runs WHERE dataset_sha256 = ?", (dataset_sha256,)
            ).fetchall()
            for run_id, text in rows:
                record = json.loads(text)
                if method not in record.get("methods", {}):
                    continue
                del record["methods"][method]
                changed += 1
                if record["methods"]:
                    self._db.execute("UPDATE benchmark_runs SET record = ? WHERE run_id = ?",
                                     (json.dumps(record, default=str), run_id))
                else:
                    self._db.execute("DELETE FROM benchmark_runs WHERE run_id = ?", (run_id,))
        return changed

    def benchmark_records(self, dataset_sha256: str) -> list[dict[str, Any]]:
        """The records of every benchmark run on the dataset with this identity, oldest first."""
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'benchmark_runs'"
        ).fetchone()
        if exists is None:
            return []
        rows = self._db.execute(
            "SELECT record FROM benchmark_runs WHERE dataset_sha256 = ? ORDER BY run_id", (dataset_sha256,)
        )
        return [_loads(record) for (record,) in rows]


# ------------------------------------------------------------------------------ helpers
def members_digest(members: Iterable[PairKey]) -> str:
    """sha256 over a group's sorted, de-duplicated pair keys."""
    digest = hashlib.sha256()
    for original, anonymized in sorted(set(members)):
        digest.update(f"{original}:{anonymized}\n".encode())
    return digest.hexdigest()


def weights_status(metric: Metric) -> WeightsStatus:
    """The weakest status of a metric's weight files (NONE for metrics without weights)."""
    return WeightsStatus.weakest(record.status for record in metric.weights())


def run_provenance(
    *,
    device: str,
    dataset_hash: str | None = None,
    seeds: Mapping[str, int] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """What a run needs recorded to be reproduced: versions, commit, device, seeds, data."""
    import bench
    from metrics.base import library_versions
    from metrics.installed import version

    packages = library_versions()
    packages.update({dist: found for dist in ("pillow", "pandas") if (found := version(dist)) is not None})
    return {
        "bench": bench.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "git_commit": _git_commit(),
        "device": device,
        "seeds": dict(seeds or {}),
        "dataset_sha256": dataset_hash,
        "settings": settings,
    }


def _git_commit() -> str | None:
    """The suite's own commit when it runs from a git checkout; None when it is installed
    (an installed copy's folder may sit inside some other repository, whose commit it is not)."""
    if not (SOURCE_ROOT / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None
