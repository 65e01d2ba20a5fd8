"""CSV cells that a spreadsheet would run as formulas, neutralised: the one writer of CSV text.

A cell whose text begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a
formula to Excel, LibreOffice and Google Sheets (OWASP's "CSV injection"): a method named
``=HYPERLINK(...)`` or an image path ``@SUM(...)`` would run when someone opens the
leaderboard. Every CSV the suite writes goes through `to_csv_text`, which prefixes such text
cells with a single quote; numbers are left alone (a negative score stays a number), and the
JSON outputs keep the raw text. `restore_text` undoes it for the suite's own readers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def neutralize(value: Any) -> Any:
    """`value` with a leading quote if it is text a spreadsheet would run; else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return _QUOTE + value
    return value


def restore_text(value: Any) -> Any:
    """The text `neutralize` was given (for reading the suite's own CSVs back)."""
    if isinstance(value, str) and value.startswith(_QUOTE) and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def _is_text(column: pd.Series) -> bool:
    # object columns, and pandas' string dtype (the default for text from pandas 3 on).
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def to_csv_text(frame: pd.DataFrame, **options: Any) -> str:
    """``frame.to_csv(index=False, **options)`` with every text cell and header neutralised."""
    safe = frame.copy()
    for column in safe.columns:
        if _is_text(safe[column]):
            safe[column] = safe[column].map(neutralize)
    safe.columns = [neutralize(str(column)) for column in safe.columns]
    return safe.to_csv(index=False, **options)


def restore_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read from a `to_csv_text` file, with its text cells as they were."""
    restored = frame.copy()
    for column in restored.columns:
        if _is_text(restored[column]):
            restored[column] = restored[column].map(restore_text)
    restored.columns = [restore_text(column) for column in restored.columns]
    return restored
