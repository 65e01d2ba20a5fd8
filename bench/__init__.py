"""perceptanon-bench: how anonymous are anonymized images, and which metrics agree with humans."""

from pathlib import Path

__version__ = "0.1.0"

#: The folder that holds the `bench` package: a checkout's root, or site-packages when it is
#: installed. Child processes put it first on PYTHONPATH to run this very copy of the suite.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
