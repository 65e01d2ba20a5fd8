"""metrics.csvsafe: formula-looking text cells are neutralised in CSV, numbers are not."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from metrics.csvsafe import FORMULA_PREFIXES, neutralize, restore_frame, to_csv_text


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_each_formula_prefix_gets_a_quote(prefix):
    assert neutralize(f"{prefix}SUM(A1)") == f"'{prefix}SUM(A1)"


def test_plain_text_and_numbers_are_unchanged():
    assert neutralize("blur") == "blur" and neutralize("'quoted") == "'quoted"
    assert neutralize(-1.5) == -1.5 and neutralize(None) is None


def test_a_frame_round_trips_through_the_csv():
    frame = pd.DataFrame({"method": ["=HYPERLINK(\"http://x\")", "@cmd", "blur", "-x"],
                          "value": [-0.5, 1.0, np.inf, 2.0], "=header": ["a", "b", "c", "d"]})
    text = to_csv_text(frame)
    read = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert list(read["method"]) == ["'=HYPERLINK(\"http://x\")", "'@cmd", "blur", "'-x"]
    assert read["value"].iloc[0] == -0.5  # a negative number stays a number
    assert "'=header" in read.columns
    restored = restore_frame(read)
    assert list(restored["method"]) == list(frame["method"]) and "=header" in restored.columns
