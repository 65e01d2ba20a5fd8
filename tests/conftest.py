import os
import sys
from pathlib import Path

# Tests run against the checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MPLBACKEND", "Agg")
# Weight hashes are cached on disk between processes (metrics/hashing.py): tests keep theirs
# out of the user's cache.
if "BENCH_HASH_CACHE" not in os.environ:
    import tempfile

    os.environ["BENCH_HASH_CACHE"] = tempfile.mkdtemp(prefix="bench-hash-cache-")


# The quick tier (`pytest -m "not slow"`) stays quick only if slow tests carry the mark: name
# every unmarked test that took longer than the limit at the end of the run.
SLOW_LIMIT_S = 20.0
_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > SLOW_LIMIT_S and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section("tests over 20 s without @pytest.mark.slow")
        for nodeid, duration in sorted(_unmarked_slow, key=lambda item: -item[1]):
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}")
