"""Where the embedded demo set (fixtures/demo) is, however the suite was installed.

A checkout (an editable install, or the tests) has it at the top level, beside the packages.
A wheel or sdist has no top-level fixtures/: pyproject.toml ships the same files as package
data under ``bench/_demo``. Every module that needs the demo asks here, so `bench run` and
`bench run --method` find it from any working folder.
"""

from __future__ import annotations

from pathlib import Path

from bench import SOURCE_ROOT

_PACKAGE = SOURCE_ROOT / "bench"
#: The checkout's copy (the source of truth, rebuilt by fixtures/build_demo.py).
CHECKOUT_DEMO = _PACKAGE.parent / "fixtures" / "demo"
#: The installed copy (pyproject.toml: package `bench._demo` is the folder fixtures/demo).
INSTALLED_DEMO = _PACKAGE / "_demo"


def _locate() -> Path:
    for folder in (CHECKOUT_DEMO, INSTALLED_DEMO):
        if (folder / "pii.json").is_file():
            return folder
    return INSTALLED_DEMO  # neither: errors name where an installation should have put it


#: What `--dataset` (and `bench.data.benchmark_set.load_benchmark_set`) takes for the demo set.
DEMO_DATASET = "fixtures"
#: The demo set's folder: HA1.csv, HA2.csv, pii.json, identities.json, images/, masks/.
DEMO_FOLDER = _locate()
#: The folder the demo's annotation paths are relative to.
DEMO_IMAGES = DEMO_FOLDER / "images"
