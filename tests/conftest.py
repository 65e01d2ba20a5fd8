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
