"""Report formats are names in one registry (reports.formats.FORMATS): the built-ins, a user's
"module:function", or a `bench.report_formats` entry point, each a function (results, out_dir)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from reports import formats
from reports.tables import Results
from tests.reports.factory import make_results

TOY_FORMAT = textwrap.dedent('''\
    def write_tsv(results, out_dir):
        """The whole-set correlations of the primary view as tab-separated text."""
        frame = results.correlations
        chosen = frame[(frame["split"] == "all") & (frame["granularity"] == "mean") & (frame["form"] == "regression")]
        path = out_dir / "correlations.tsv"
        chosen[["metric", "statistic", "value"]].to_csv(path, sep="\\t", index=False)
        return [path]

    NOT_A_FUNCTION = "tsv"
    ''')


@pytest.fixture(scope="module")
def results() -> Results:
    return Results.coerce(make_results())


@pytest.fixture()
def toy_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "toy_format.py").write_text(TOY_FORMAT, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_format", None)
    yield "toy_format"
    sys.modules.pop("toy_format", None)


def test_every_built_in_is_the_default_and_writes_its_files(results, tmp_path):
    assert formats.parse_formats(None) == ["md", "tex", "csv", "json", "png", "html"]
    written = formats.write_formats(results, tmp_path, formats.writers(formats.parse_formats(None)))
    assert [path.relative_to(tmp_path).as_posix() for path in written["md"]] == ["tables/tables.md"]
    assert written["tex"] and {path.parent for path in written["tex"]} == {tmp_path / "tables" / "latex"}
    assert written["png"] and {path.parent for path in written["png"]} == {tmp_path / "plots"}
    assert [path.name for path in written["csv"]] == ["correlations.csv", "ceiling.csv"]
    assert [path.name for path in written["json"]] == ["correlations.json", "ceiling.json"]
    assert written["html"] == [tmp_path / "report.html"] and all(path.is_file() for paths in written.values()
                                                                   for path in paths)


def test_a_chosen_format_writes_only_its_own_files(results, tmp_path):
    formats.write_formats(results, tmp_path, formats.writers(["csv"]))
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()) == [
        "tables/ceiling.csv", "tables/correlations.csv"]


def test_a_user_format_by_module_function_gets_the_typed_results(results, toy_module, tmp_path):
    written = formats.write_formats(results, tmp_path, formats.writers(formats.parse_formats(f"{toy_module}:write_tsv")))
    lines = (tmp_path / "correlations.tsv").read_text(encoding="utf-8").splitlines()
    assert written == {f"{toy_module}:write_tsv": [tmp_path / "correlations.tsv"]}
    assert lines[0] == "metric\tstatistic\tvalue" and len(lines) == 1 + 5 * 3  # 5 metrics x 3 statistics


def test_a_registered_format_is_found_by_name_and_taken_once(toy_module):
    formats.FORMATS.register("tsv", f"{toy_module}:write_tsv")
    try:
        assert formats.parse_formats("md,tsv,md") == ["md", "tsv"]
        with pytest.raises(formats.FormatError, match="report format 'tsv' is registered twice"):
            formats.FORMATS.register("tsv", "elsewhere:write")
    finally:
        formats.FORMATS.unregister("tsv")


@pytest.mark.parametrize("spec, message", [
    ("md,htlm", r"unknown report format htlm \(did you mean 'html'\?\); choose from: csv, html, json, md, png, tex; "
                "or module:function for a format of your own"),
    ("toy_format:NOT_A_FUNCTION", "which is not a function"),
    ("toy_format:missing", "cannot import toy_format:missing"),
])
def test_bad_formats_are_one_line_errors(toy_module, spec, message):
    with pytest.raises(formats.FormatError, match=message):
        formats.writers(formats.parse_formats(spec))
