"""perceptanon-bench: how anonymous are anonymized images, and which metrics agree with humans."""

from pathlib import Path

__version__ = "0.1.0"

#: The folder that holds the `bench` package: a checkout's root, or site-packages when it is
#: installed.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def child_pythonpath() -> str:
    """PYTHONPATH for a child process that must run this very copy of the suite: SOURCE_ROOT first."""
    import os

    return os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
