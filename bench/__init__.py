"""perceptanon-bench: how anonymous are anonymized images, and which metrics agree with humans."""

__version__ = "0.1.0"
