"""Rendering the trade-off views: every format from one record, user names escaped."""

from __future__ import annotations

import json
import math

from reports import tradeoff as render
from reports.tradeoff import Axis, Curve, Point, Tradeoff

HOSTILE = '<script>alert("x")</script>|_&'


def _view() -> Tradeoff:
    def point(method, base, x, y, *, front, anchor="", params=()):
        return Point(method=method, base=base, params=params, x=x, x_low=x - 0.01, x_high=x + 0.01, y=y,
                     y_low=math.nan, y_high=math.nan, x_unit=x, y_unit=y, on_front=front, dominated_by=(),
                     anchor=anchor)

    points = (point("identity", "identity", 0.0, 1.0, front=True, anchor="no anonymization"),
              point("mask", "mask", 1.0, 0.0, front=True, anchor="full mask"),
              point(f"{HOSTILE}[a=1]", HOSTILE, 0.4, 0.5, front=False, params=(("a", "1"),)),
              point(f"{HOSTILE}[a=2]", HOSTILE, 0.6, 0.5, front=True, params=(("a", "2"),)))
    curves = (Curve("identity", ("identity",), None, False, "no anonymization"), Curve("mask", ("mask",), None, False,
                                                                                     "full mask"),
              Curve(HOSTILE, (f"{HOSTILE}[a=1]", f"{HOSTILE}[a=2]"), 0.1, False))
    return Tradeoff(dataset="demo", scope="global", privacy=Axis("mse", "MSE", "privacy", True),
                    utility=Axis("ssim", "SSIM", "utility", True), points=points, curves=curves,
                    front=("identity", f"{HOSTILE}[a=2]", "mask"), excluded=(("inpaint", "MSE is infinite"),))


def test_every_format_carries_the_same_points(tmp_path):
    view = _view()
    written = render.write_tradeoffs([view], tmp_path)
    assert set(written) == {"tradeoff_markdown", "tradeoff_latex", "tradeoff_csv", "tradeoff_json",
                            "tradeoff_plot_global"}
    document = json.loads(written["tradeoff_json"].read_text())[0]
    assert [p["method"] for p in document["points"]] == [p.method for p in view.points]
    assert document["points"][2]["params"] == {"a": "1"} and document["points"][0]["y_low"] is None
    assert document["front"] == list(view.front) and document["dominated_methods"] == []
    csv = written["tradeoff_csv"].read_text()
    assert csv.count("\n") == 5 and "no anonymization" in csv
    markdown = written["tradeoff_markdown"].read_text()
    assert "inpaint: not drawn, MSE is infinite." in markdown and "\\<script\\>" in markdown
    assert "\\textless{}script\\textgreater{}" in written["tradeoff_latex"].read_text()


def test_the_html_section_escapes_user_names():
    html = str(render.html_section([_view()], plots=[b"png"]))
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert 'src="data:image/png;base64,' in html


def test_csv_cells_cannot_become_formulas():
    view = _view()
    formula = "=HYPERLINK(1)"
    points = tuple(p if p.method != "mask" else Point(**{**vars(p), "method": formula, "base": formula})
                   for p in view.points)
    curves = tuple(c if c.base != "mask" else Curve(formula, (formula,), None, False, "full mask") for c in view.curves)
    csv = render.to_csv([Tradeoff(**{**vars(view), "points": points, "curves": curves})])
    assert f"'{formula}" in csv and f",{formula}," not in csv
