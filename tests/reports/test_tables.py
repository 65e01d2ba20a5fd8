import dataclasses
import io
import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from reports import tables
from reports.tables import DAGGER_NOTE, SIMULATED_NOTE
from tests.reports.factory import make_results, with_simulated

ODD = "my_method & <b>50%</b> #1 ~x^2 \\o/ {a} |"
ODD_LATEX = (r"my\_method \& \textless{}b\textgreater{}50\%\textless{}/b\textgreater{} \#1 "
             r"\textasciitilde{}x\textasciicircum{}2 \textbackslash{}o/ \{a\} \textbar{}")


@pytest.fixture(scope="module")
def results():
    return make_results(odd_name=ODD)


@pytest.fixture(scope="module")
def all_tables(results):
    return tables.build_tables(results)


def primary(results, **options):
    """The primary view's correlation table, with the rows bench tabulates unless `statistics` is given."""
    options = {"statistics": tables.Results.coerce(results).tabulated, **options}
    return tables.correlation_table(results.correlations, results.metrics, results.provenance, "mean", "regression",
                                    **options)


def split_markdown_row(line: str) -> list[str]:
    """Cells of a Markdown table row, splitting on pipes that are not backslash-escaped."""
    assert line.startswith("|") and line.endswith("|"), line
    return re.split(r"(?<!\\)\|", line[1:-1])


# --------------------------------------------------------------------------- layout
def test_primary_view_comes_first_and_each_view_has_three_tables(results):
    grouped = tables.tables_by_view(results)
    assert grouped[0][0] == ("mean", "regression")
    assert {view for view, _ in grouped} == {(g, f) for g in ("mean", "labels3", "binary")
                                             for f in ("regression", "classification")}
    assert all([t.key.split("-")[0] for t in group] == ["correlations", "fraction", "noise"] for _, group in grouped)


def test_rows_are_split_by_statistic_and_columns_are_metrics_in_order(results):
    table = primary(results, statistics=results.statistics)
    splits = list(dict.fromkeys(results.correlations["split"]))
    assert [(row.labels[0], row.labels[2]) for row in table.rows] == [
        (split, symbol) for split in splits for symbol in ("ρ", "τ", "r")]
    assert table.row_header == ("Split", "n / orig.", "Stat.")
    assert [column.header for column in table.columns] == [
        "PSNR ↓", "MSE ↑", "SSIM ↓", "LPIPS† ↑", "PerceptAnon ↑", f"{ODD} ↑"]


def test_cells_show_value_interval_and_significance(results):
    frame = results.correlations.copy()
    chosen = (frame["split"] == "all") & (frame["granularity"] == "mean") & (frame["form"] == "regression") & (
        frame["statistic"] == "spearman")
    frame.loc[chosen & (frame["metric"] == "psnr"), ["value", "ci_low", "ci_high", "p_vs_best"]] = [-0.25, -0.4, -0.2, 0.004]
    frame.loc[chosen & (frame["metric"] == "mse"), "p_vs_best"] = 0.03
    frame.loc[chosen & (frame["metric"] == "ssim"), "p_vs_best"] = 0.2
    results = dataclasses.replace(results, correlations=frame)
    row = primary(results).rows[0]
    psnr, mse, ssim, _, perceptanon, _ = row.cells
    # A percentile interval is not symmetric: never "± half-width", which would claim [−0.35, −0.15].
    assert (psnr.text, psnr.ci, psnr.marks) == ("−0.250", "[−0.400, −0.200]", "**")
    assert (mse.marks, ssim.marks) == ("*", "")
    assert perceptanon.best and not psnr.best and perceptanon.marks == ""
    halfwidth = tables.correlation_table(frame, results.metrics, results.provenance, "mean", "regression",
                                         ci="halfwidth").rows[0].cells[0]
    assert halfwidth.ci == "[−0.400, −0.200]"  # asked for ±, but the interval is asymmetric
    frame.loc[chosen & (frame["metric"] == "psnr"), ["ci_low", "ci_high"]] = [-0.35, -0.15]
    symmetric = tables.correlation_table(frame, results.metrics, results.provenance, "mean", "regression",
                                         ci="halfwidth").rows[0].cells[0]
    assert symmetric.ci == "± 0.100"


def test_fraction_of_ceiling_view_has_no_ci_and_keeps_best(results):
    table = primary(results, quantity="fraction_of_ceiling")
    assert table.title.startswith("Fraction of the noise ceiling")
    assert all(cell.ci == "" for row in table.rows for cell in row.cells)
    assert any(cell.best for cell in table.rows[0].cells)


def test_unknown_metric_and_bad_options_are_refused(results):
    with pytest.raises(ValueError, match="no MetricInfo"):
        tables.correlation_table(results.correlations, results.metrics[:2], results.provenance, "mean", "regression")
    with pytest.raises(ValueError, match="lacks 'symbol'; each needs name, symbol and label"):
        primary(results, statistics=[{"name": "spearman", "label": "Spearman"}])
    with pytest.raises(ValueError, match="ci must be one of"):
        primary(results, ci="both")
    with pytest.raises(ValueError, match="lacks column"):
        tables.correlation_table(results.correlations.drop(columns="reason"), results.metrics, results.provenance,
                                 "mean", "regression")


# --------------------------------------------------------------------------- Markdown
def test_markdown_is_a_table_with_the_same_column_count_on_every_row(all_tables):
    for table in all_tables:
        lines = tables.to_markdown(table).splitlines()
        rows = [line for line in lines if line.startswith("|")]
        width = len(table.row_header) + len(table.columns)
        assert re.fullmatch(r"\|(:?-{3,}:?\|)+", rows[1]), rows[1]
        assert len(rows) == 2 + len(table.rows)
        assert {len(split_markdown_row(line)) for line in rows} == {width}, table.key


def test_markdown_escapes_names_and_bolds_the_best(results):
    text = tables.to_markdown(primary(results))
    assert "<b>" not in text and "my\\_method & \\<b\\>50%\\</b\\> \\#1" in text
    assert "**0.908**" in text


def test_markdown_shows_nan_reasons_as_footnotes(results):
    text = tables.to_markdown(primary(results))
    keys = {reason: key for key, reason in primary(results).footnotes}
    assert f"n/a ({keys['constant metric column']})" in text
    assert f"- ({keys['empty test set']}) empty test set" in text
    assert f"({keys['NaN scores: 1 pairs dropped']})" in text  # a caveat next to a defined value


# --------------------------------------------------------------------------- LaTeX
def assert_balanced_braces(text: str) -> None:
    depth = 0
    for match in re.finditer(r"\\.|[{}]", text):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
        assert depth >= 0, f"unbalanced '}}' at {match.start()}"
    assert depth == 0


def test_latex_is_compile_ready(all_tables):
    for table in all_tables:
        latex = tables.to_latex(table)
        assert_balanced_braces(latex)
        order = [latex.index(command) for command in (r"\toprule", r"\midrule", r"\bottomrule")]
        assert order == sorted(order), table.key
        body = latex[latex.index(r"\toprule"):latex.index(r"\bottomrule")]
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert len(rows) == 1 + len(table.rows)
        width = len(table.row_header) + len(table.columns)
        assert {len(re.findall(r"(?<!\\)&", row)) for row in rows} == {width - 1}, table.key
        spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", latex).group(1)
        assert len(spec) == width


def test_latex_escapes_special_characters_in_metric_method_and_dataset_names(results):
    latex = tables.to_latex(primary(results))
    assert ODD_LATEX + r" $\uparrow$" in latex  # the metric's header
    assert re.search(re.escape(f"loov-{ODD_LATEX} & ") + r"\d+ / \d+ & \$\\rho\$", latex)  # a dataset, held out
    assert re.search(re.escape(f"anon-{ODD_LATEX} & ") + r"\d+ / \d+ & \$\\tau\$", latex)  # a method, held out
    stripped = re.sub(r"\\[a-zA-Z]+|\\[^a-zA-Z]", "", latex)  # drop commands and escaped characters
    text_mode = re.sub(r"\$[^$]*\$", "", stripped)  # and math, where ^ and _ belong
    for line in text_mode.splitlines():
        if not line.startswith("%"):
            assert not re.search(r"[#%~^_<>$]", line), line


def test_latex_bolds_the_best_of_each_row(results):
    table = primary(results)
    latex_rows = [line for line in tables.to_latex(table).splitlines() if line.endswith(r"\\")][1:]
    for row, line in zip(table.rows, latex_rows):
        best = [cell for cell in row.cells if cell.best]
        assert line.count(r"\textbf{") == len(best)
        for cell in best:
            assert rf"\textbf{{{cell.text}}}" in line


def test_latex_marks_and_footnotes_as_superscripts(results):
    latex = tables.to_latex(primary(results))
    assert "$^{**}$" in latex and "n/a$^{b}$" in latex and r"{\scriptsize [0." in latex and r"$\pm$" not in latex
    assert r"$^{c}$ empty test set\par" in latex


# --------------------------------------------------------------------------- caveats
def test_unverified_metric_gets_a_dagger_and_a_footnote_everywhere(results, tmp_path):
    written = tables.render_all(results, tmp_path)
    with_metrics = [path for path in written
                    if path.name == "tables.md" or path.name.startswith(("correlations-", "fraction-of-ceiling-"))]
    assert len(with_metrics) == 1 + 2 * 6  # the document, and two metric tables per granularity x form
    for path in with_metrics:
        text = path.read_text(encoding="utf-8")
        assert "LPIPS†" in text or r"LPIPS\textsuperscript{\dag}" in text, path
        assert "stand-in AlexNet weights" in text, path
    records = json.loads((tmp_path / "correlations.json").read_text(encoding="utf-8"))
    assert {r["weights_verified"] for r in records if r["metric"] == "lpips"} == {False}
    assert {r["weights_verified"] for r in records if r["metric"] == "psnr"} == {True}


def test_no_dagger_when_every_metric_is_verified(results):
    verified = [dict(info, verified=True) for info in results.metrics]
    table = tables.correlation_table(results.correlations, verified, results.provenance, "mean", "regression")
    text = tables.to_markdown(table) + tables.to_latex(table)
    assert "†" not in text and r"\dag" not in text and DAGGER_NOTE not in text


def test_simulated_line_in_every_file_only_when_simulated(results, tmp_path):
    for simulated in (True, False):
        out = tmp_path / str(simulated)
        for path in tables.render_all(with_simulated(results, simulated), out):
            text = path.read_text(encoding="utf-8")
            assert ("SIMULATED" in text) is simulated, path
        if simulated:
            frame = pd.read_csv(out / "correlations.csv", keep_default_na=False)
            assert set(frame["human_scores"]) == {"SIMULATED (not human judgments)"}
            assert SIMULATED_NOTE in (out / "tables.md").read_text(encoding="utf-8").splitlines()[2]


# --------------------------------------------------------------------------- CSV / JSON
def test_csv_round_trips_the_long_table(results):
    text = tables.to_csv(results.correlations, provenance=results.provenance, metrics=results.metrics)
    back = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values={c: [""] for c in
                       ("value", "ci_low", "ci_high", "p_vs_best", "p_williams", "fraction_of_ceiling")})
    original = results.correlations
    assert list(back.columns[: len(original.columns)]) == list(original.columns)
    assert len(back) == len(original)
    for column in original.columns:
        if original[column].dtype.kind == "f":
            np.testing.assert_allclose(back[column].to_numpy(float), original[column].to_numpy(float), rtol=1e-12)
        else:
            assert back[column].tolist() == original[column].tolist(), column
    assert back.loc[back["metric"] == ODD, "metric_label"].iloc[0] == ODD


def test_json_round_trips_the_long_table_with_nan_as_null(results):
    text = tables.to_json(results.ceiling, provenance=results.provenance)
    records = json.loads(text)  # strict JSON: NaN would be a syntax error for most readers
    assert "NaN" not in text
    assert len(records) == len(results.ceiling)
    empty = next(r for r in records if r["split"] == "anon-blurpix")
    assert empty["split_half"] is None and empty["reason"] == "empty test set" and empty["n"] == 0
    back = pd.DataFrame(records)
    np.testing.assert_allclose(back["loo"].astype(float), results.ceiling["loo"], rtol=1e-12)


# --------------------------------------------------------------------------- files
def test_render_all_writes_every_table_and_no_temporary_files(results, tmp_path):
    written = tables.render_all(results, tmp_path)
    assert all(path.exists() for path in written)
    names = {path.name for path in written}
    assert {"tables.md", "correlations.csv", "correlations.json", "ceiling.csv", "ceiling.json"} <= names
    assert len([path for path in written if path.suffix == ".tex"]) == len(tables.build_tables(results))
    leftovers = [name for _, _, files in os.walk(tmp_path) for name in files if name.endswith(".tmp")]
    assert leftovers == []


# --------------------------------------------------------------------------- issue 11 / 15 presentation
def _one_row(results, **changes):
    """The primary table after setting columns of its first row (split all, Spearman) for every metric."""
    frame = results.correlations.copy()
    chosen = (frame["split"] == "all") & (frame["granularity"] == "mean") & (frame["form"] == "regression") & (
        frame["statistic"] == "spearman")
    for column, value in changes.items():
        frame.loc[chosen, column] = value
    return primary(dataclasses.replace(results, correlations=frame)), frame, chosen


def test_few_originals_get_a_mark_and_below_five_no_interval(results):
    table, _, _ = _one_row(results, n_clusters=9)
    cells = table.rows[0].cells
    assert all(cell.flag == tables.FEW_CLUSTERS_MARK for cell in cells if not cell.missing)
    assert all(cell.ci.startswith("[") for cell in cells if not cell.missing)
    assert tables.FEW_CLUSTERS_NOTE in table.notes
    table, _, _ = _one_row(results, n_clusters=4)
    cell = table.rows[0].cells[0]
    assert cell.flag == tables.FEW_CLUSTERS_MARK and cell.ci == ""
    assert "no interval: only 4 original(s)" in cell.reason
    assert dict(table.footnotes)[cell.footnote] == cell.reason
    table, _, _ = _one_row(results, n_clusters=10)
    assert table.rows[0].cells[0].flag == "" and table.rows[0].cells[0].ci
    markdown = tables.to_markdown(table)
    latex = tables.to_latex(_one_row(results, n_clusters=4)[0])
    assert "‡" not in markdown.split("\n- ")[0].splitlines()[4]  # row "all ρ" has 10 originals now
    assert r"\textsuperscript{\ddag}" in latex


def test_every_row_shows_its_pairs_and_originals(results):
    table, frame, chosen = _one_row(results, n=21, n_clusters=7)
    assert table.rows[0].labels == ("all", "21 / 7", "ρ")
    assert any(note.startswith("Rows: the test set of each split") for note in table.notes)
    empty = next(row for row in table.rows if row.labels[0] == "anon-blurpix")
    assert empty.labels[1] == "0 / 0"


def test_values_equal_within_1e_12_share_the_bold(results):
    frame = results.correlations.copy()
    chosen = (frame["split"] == "all") & (frame["granularity"] == "mean") & (frame["form"] == "regression") & (
        frame["statistic"] == "spearman")
    frame.loc[chosen, "is_best"] = False
    frame.loc[chosen & (frame["metric"] == "psnr"), ["value", "is_best"]] = [0.95, True]
    frame.loc[chosen & (frame["metric"] == "mse"), "value"] = 0.95 * (1 - 4e-13)  # float rounding of a transform
    frame.loc[chosen & (frame["metric"] == "ssim"), "value"] = 0.95 * (1 - 1e-9)  # a real difference
    row = tables.correlation_table(frame, results.metrics, results.provenance, "mean", "regression").rows[0]
    psnr, mse, ssim = row.cells[:3]
    assert psnr.best and mse.best and not ssim.best


def test_convention_line_comes_from_one_function_and_is_in_every_table(results, tmp_path):
    default = tables.convention_note("default")
    assert "Wang et al. 2004" in default and "opposite sign of the paper" in default
    assert "released" in tables.convention_note("paper") and tables.convention_note("paper") != default
    with pytest.raises(ValueError, match="convention must be one of default, paper"):
        tables.convention_note("papers")
    values = tables.convention_note("default", of="values")  # a leaderboard: no correlation signs to flip
    assert "Wang et al. 2004" in values and "opposite sign" not in values
    for table in tables.build_tables(results):
        assert default in table.notes, table.key
    paper = dataclasses.replace(results, provenance={**results.provenance, "convention": "paper"})
    for table in tables.build_tables(paper):
        assert tables.convention_note("paper") in table.notes, table.key


def test_metrics_that_did_not_run_are_named_in_every_table_and_file(results, tmp_path):
    missing = tables.NotComputed("perceptanon_ha2", "PerceptAnon HA2",
                                 "no checkpoint; pass --checkpoint-ha2 FILE or train one with `bench train`")
    bundle = tables.Results(correlations=results.correlations, ceiling=results.ceiling, metrics=results.metrics,
                            provenance=results.provenance, not_computed=(missing,))
    for table in tables.build_tables(bundle):
        if not table.key.startswith("noise-ceiling"):
            assert missing.line in table.notes, table.key
    written = tables.render_all(bundle, tmp_path)
    for path in written:
        if path.suffix in (".md", ".tex") and "noise-ceiling" not in path.name:
            assert "PerceptAnon HA2: not computed" in path.read_text(encoding="utf-8"), path
    frame = pd.read_csv(tmp_path / "not_computed.csv")
    assert frame[["name", "label", "status"]].values.tolist() == [["perceptanon_ha2", "PerceptAnon HA2", "unavailable"]]
    assert json.loads((tmp_path / "not_computed.json").read_text())[0]["reason"] == missing.reason
    # From the dicts of a results.json, too.
    assert tables.Results.coerce({**vars(bundle), "not_computed": [vars(missing)]}).not_computed == (missing,)


def test_correlations_csv_names_the_weights_status(results):
    metrics = [dict(info, weights_status="stand-in") if info["name"] == "lpips" else info for info in results.metrics]
    frame = tables.long_table(results.correlations, provenance=results.provenance, metrics=metrics)
    assert set(frame.loc[frame["metric"] == "lpips", "weights_status"]) == {"stand-in"}
    assert set(frame.loc[frame["metric"] == "psnr", "weights_status"]) == {"verified"}  # no status: from `verified`
