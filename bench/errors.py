"""User-facing errors.

Every problem a user can cause (a bad annotation row, an unreadable image, a missing weight
file) is raised as a `BenchError` whose message is ONE line that names the file or row and
says what to do. The CLI prints it and exits non-zero; it never shows a traceback for these.
"""


class BenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class InputError(BenchError):
    """Bad annotations, images or options."""


class ImageError(InputError):
    """An image that cannot be decoded or does not fit the size policy."""


class SplitError(InputError):
    """A split that cannot be made (stratification impossible, unknown split name)."""
