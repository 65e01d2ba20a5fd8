"""User-facing errors.

Every problem a user can cause (a bad annotation row, an unreadable image, a missing weight
file) is raised as a `BenchError` whose message is ONE line that names the file or row and
says what to do. The CLI prints it and exits non-zero; it never shows a traceback for these.
"""


def printable(text: str) -> str:
    """`text` on one line with no terminal control codes: a newline or an ANSI escape in a path
    or a method name is shown escaped (``\\n``, ``\\x1b``), never acted on by the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class BenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class InputError(BenchError):
    """Bad annotations, images or options."""


class ImageError(InputError):
    """An image that cannot be decoded or does not fit the size policy."""


class SplitError(InputError):
    """A split that cannot be made (stratification impossible, unknown split name)."""
