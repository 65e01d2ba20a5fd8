"""Leaderboard renderings: compile-ready LaTeX, well-formed Markdown, escaped HTML, same numbers."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports import leaderboard as lb
from metrics.schema import MetricInfo
from reports.tables import NotComputed

ODD = r"mine & co 50% $x$ #1 my_method {a} ~b ^c \d"
ODD_LATEX = (r"mine \& co 50\% \$x\$ \#1 my\_method \{a\} \textasciitilde{}b \textasciicircum{}c "
             r"\textbackslash{}d")
SCRIPT = "<script>alert(1)</script>"
COLUMNS = (
    MetricInfo("mse", "MSE", True, "verified"),
    MetricInfo("psnr", "PSNR", False, "verified"),
    MetricInfo("lpips", "LPIPS", True, "unverified", "stand-in weights"),
    MetricInfo("fid", "FID", True, "verified"),
)


def _row(method: str, scope: str, mse: float, psnr: lb.Entry, fid: lb.Entry) -> lb.BoardRow:
    return lb.BoardRow(method, scope, {
        "mse": lb.Entry(mse, mse - 0.01, mse + 0.01, n=4),
        "psnr": psnr,
        "lpips": lb.Entry(mse * 2, n=4),
        "fid": fid,
    })


@pytest.fixture
def board(tmp_path: Path) -> lb.Leaderboard:
    image = tmp_path / "original.png"
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(image)
    too_few = lb.Entry(n=4, note="too few pairs (4 < 10)", level="set")
    rows = [
        _row(ODD, "global", 0.30, lb.Entry(9.0, 8.0, 10.0, n=3, n_infinite=1), too_few),
        _row("blur", "global", 0.02, lb.Entry(18.0, 17.0, 19.0, n=4), too_few),
        _row(SCRIPT, "local", 0.10, lb.Entry(n=0, n_infinite=4), lb.Entry(55.5, n=40, level="set")),
        _row("blur", "local", 0.05, lb.Entry(14.0, 13.0, 15.0, n=4), lb.Entry(40.25, n=40, level="set")),
    ]
    return lb.Leaderboard(
        title=f"Leaderboard: {ODD}",
        dataset=ODD,
        columns=COLUMNS,
        rows=tuple(lb.sort_rows(rows, COLUMNS[0])),
        sort_metric="mse",
        bootstrap={"n_boot": 100, "seed": 0},
        failures=(lb.Failure(SCRIPT, f"method '{SCRIPT}' failed on x.png: ValueError: no"),),
        notes=("blur: 2 folder files matched no original",),
        not_computed=(NotComputed("kid", "KID", "weights inception missing; run `bench weights fetch inception`"),),
        examples=(lb.Example("x.png", image, ((ODD, image), (SCRIPT, None))),),
        provenance={"dataset": ODD},
    )


def _markdown_cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return re.split(r"(?<!\\)\|", line[1:-1])


def _balanced(latex: str) -> bool:
    depth = 0
    for token in re.findall(r"\\.|[{}]", latex):
        if token in "{}":
            depth += 1 if token == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def test_latex_is_compile_ready_with_escaped_names(board):
    latex = lb.to_latex_table(board)
    assert _balanced(latex)
    assert ODD_LATEX in latex
    assert r"\textless{}script\textgreater{}" in latex
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llcccc}", r"\end{table}"):
        assert command in latex
    body = latex[latex.index(r"\midrule"):latex.index(r"\bottomrule")]
    for line in body.splitlines()[1:]:
        assert line.endswith(r"\\") and line.count(" & ") == 1 + len(COLUMNS), line
    # Outside commands, escapes and math, no character special to LaTeX is left but the
    # column separators.
    stripped = re.sub(r"\\[a-zA-Z]+|\\.|\$[^$]*\$", "", latex.split(r"\begin{table}")[1])
    assert not re.search(r"[%#_^~$\\]", stripped)
    assert "&" not in stripped.replace(" & ", "")
    assert "∞" not in latex and "†" not in latex and "↑" not in latex


def test_latex_bolds_the_most_anonymous_value_per_column_and_scope(board):
    latex = lb.to_latex_table(board)
    assert r"\textbf{0.300}" in latex  # global MSE: higher is more anonymous
    assert r"\textbf{9.00}" in latex  # global PSNR: lower is more anonymous
    assert r"\textbf{14.00}" in latex  # local PSNR: the other row has no finite mean
    # Local MSE: 0.10 [0.09, 0.11] overlaps 0.05 [0.04, 0.06]? No: bold. FID has no interval: never bold
    # beside another value, and every FID cell says on how many pairs it rests.
    assert r"\textbf{0.100}" in latex
    assert r"\textbf{55.50" not in latex and r"\textbf{40.25" not in latex
    assert "55.50\\,{\\scriptsize (n = 40)}" in latex
    assert r"\textbf{0.020}" not in latex


def test_markdown_renders_as_a_table(board):
    markdown = lb.to_markdown_document(board)
    lines = markdown.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(board.rows)
    widths = {len(_markdown_cells(line)) for line in table}
    assert widths == {2 + len(COLUMNS)}
    assert re.fullmatch(r"\|(:---\|){2}(---:\|){4}", table[1])
    assert "LPIPS† ↑" in table[0] and "PSNR ↓" in table[0]
    assert "computed with unverified or stand-in weights: LPIPS (stand-in weights)" in markdown
    assert "1 of 4 pairs infinite" in markdown and "all 4 pairs infinite" in markdown
    assert "too few pairs (4 \\< 10)" in markdown
    assert "#### Failures" in markdown and "failed on x.png" in markdown
    assert "KID: not computed — weights inception missing; run \\`bench weights fetch inception\\`" in markdown
    assert "Convention: default" in markdown


def document_not_computed(text: str) -> list[dict]:
    return json.loads(text)["not_computed"]


def test_csv_and_json_carry_every_cell_unrounded(board):
    rows = list(csv.DictReader(io.StringIO(lb.to_csv(board))))
    assert len(rows) == len(board.rows) * (len(COLUMNS) + 1)  # a row per method x scope for the KID not computed
    assert {row["note"] for row in rows if row["metric"] == "kid"} == {board.not_computed[0].line}
    assert {row["weights_status"] for row in rows if row["metric"] == "lpips"} == {"unverified"}
    assert {row["weights_status"] for row in rows if row["metric"] == "mse"} == {"verified"}
    first = rows[0]
    assert (first["method"], first["metric"], float(first["value"])) == (ODD, "mse", 0.30)
    assert [row["metric_label"] for row in rows[:4]] == ["MSE ↑", "PSNR ↓", "LPIPS† ↑", "FID ↑"]
    assert document_not_computed(lb.to_json(board)) == [{"name": "kid", "label": "KID", "status": "unavailable",
                                                         "reason": board.not_computed[0].reason}]
    document = json.loads(lb.to_json(board))
    infinite = next(row for row in document["rows"] if row["method"] == SCRIPT)["cells"]["psnr"]
    assert infinite["value"] is None and infinite["n_infinite"] == 4
    assert any("stand-in" in note for note in document["notes"])
    assert document["failures"][0]["method"] == SCRIPT


def test_html_is_escaped_self_contained_and_shows_examples(board):
    html = lb.to_html(board)
    assert SCRIPT not in html and "&lt;script&gt;" in html
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)
    assert html.count('src="data:image/jpeg;base64,') == 2  # the original twice (its own column and ODD's)
    assert f"{SCRIPT}: failed on this image".replace("<", "&lt;").replace(">", "&gt;") in html
    assert "computed with unverified or stand-in weights" in html
    section = lb.html_section(board)
    assert section.startswith('<div class="leaderboard">') and "<html" not in section


def test_write_leaderboard_writes_every_format(board, tmp_path):
    written = lb.write_leaderboard(board, tmp_path / "out")
    assert {path.name for path in written.values()} == set(lb.FILE_NAMES.values())
    assert all(path.stat().st_size > 0 for path in written.values())


def test_rows_without_a_sort_value_go_last(board):
    rows = [lb.BoardRow("a", "global", {"mse": lb.Entry()}), lb.BoardRow("b", "global", {"mse": lb.Entry(0.1)}),
            lb.BoardRow("c", "local", {"mse": lb.Entry(0.9)})]
    assert [row.method for row in lb.sort_rows(rows, COLUMNS[0])] == ["b", "a", "c"]
    assert not math.isfinite(rows[0].entries["mse"].value)
