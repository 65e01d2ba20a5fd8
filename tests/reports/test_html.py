import base64
import io
import re

import pytest
from markupsafe import Markup
from PIL import Image

from reports import html, tables
from tests.browser import CONSOLE_ERROR, needs_chromium, render
from tests.reports.factory import make_results, with_simulated

ODD = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def results():
    return make_results(odd_name=ODD)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    original, anonymized = folder / "face.png", folder / "face_blur.jpg"
    Image.new("RGB", (300, 200), (200, 120, 90)).save(original)
    Image.new("RGB", (300, 200), (90, 90, 90)).save(anonymized)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def report(results, images, tmp_path_factory):
    rows = results.pairs.to_dict(orient="records")
    samples = [
        (images / "face.png", images / "face_blur.jpg", rows[0]),  # PSNR +inf in this row
        (images / "face.png", images / "face_blur.jpg", rows[5]),  # LPIPS missing in this row
        (images / "missing.png", images / "broken.png", rows[7]),
    ]
    out = tmp_path_factory.mktemp("report") / "report.html"
    written = html.render_report(
        correlations=results.correlations, ceiling=results.ceiling, pairs=results.pairs, metrics=results.metrics,
        provenance=results.provenance, sample_pairs=lambda: samples, out_path=out,
        sections=[("Leaderboard", Markup("<p class='board'>built <em>safely</em></p>")),
                  ("Notes", "plain text with <b>tags</b> & ampersands")],
    )
    assert written == out
    return out


@pytest.fixture(scope="module")
def page(report):
    return report.read_text(encoding="utf-8")


def quick_html(results, **changes) -> str:
    """The report without figures: for checks that do not need them."""
    arguments = {"correlations": results.correlations, "ceiling": results.ceiling, "pairs": results.pairs,
                 "metrics": results.metrics, "provenance": results.provenance, "plots": []}
    return html.render_html(**{**arguments, **changes})


def test_contains_every_table_with_its_marks(results, page):
    every = tables.build_tables(results)
    assert page.count('<table class="results">') == len(every)
    for table in every:
        assert f'id="{table.key}"' in page
    assert "<strong>0.908</strong>" in page  # the best of the headline row
    assert '<sup>**</sup>' in page and 'title="constant metric column"' in page
    assert "LPIPS† ↑" in page and "<details class=\"view\" open>" in page


def test_every_figure_is_an_embedded_png(page):
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 4
    for source in sources:
        assert Image.open(io.BytesIO(base64.b64decode(source))).format == "PNG"


def test_sample_pairs_have_thumbnails_and_say_which_images_failed(page):
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(thumbnails) == 4
    assert max(Image.open(io.BytesIO(base64.b64decode(t))).size[0] for t in thumbnails) <= html.THUMBNAIL_SIZE[0]
    assert "missing.png: file not found" in page and "broken.png: not a readable image" in page
    assert '<td class="num">∞</td>' in page and '<td class="num">n/a</td>' in page


def test_nothing_external_and_no_script(page):
    for attribute, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        assert value.startswith("data:" if attribute == "src" else "#"), (attribute, value[:60])
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?\s*(?:https?:)?//", page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "default-src 'none'" in page  # the browser refuses anything else too


def test_names_are_escaped_never_live(page):
    assert ODD not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_sections_escape_text_and_keep_markup(page):
    assert "<p class='board'>built <em>safely</em></p>" in page
    assert "plain text with &lt;b&gt;tags&lt;/b&gt; &amp; ampersands" in page
    assert 'href="#section-1-leaderboard"' in page and 'id="section-2-notes"' in page


def test_provenance_footer(results, page):
    footer = page[page.index('<footer class="page" id="provenance">'):]
    provenance = results.provenance
    for expected in (provenance["git_commit"], provenance["dataset_hash"], provenance["weights"][0]["sha256"],
                     "stand-in", "split=42, bootstrap=0", "torch 2.14.1", "cpu", provenance["command"]):
        assert expected in footer, expected


def test_banners_only_when_they_apply(results, page):
    assert '<div class="banner simulated"' in page and tables.SIMULATED_NOTE in page
    assert '<div class="banner unverified"' in page
    verified = [dict(info, verified=True) for info in results.metrics]
    plain = quick_html(with_simulated(results, False), metrics=verified)
    assert "SIMULATED" not in plain and "banner unverified" not in plain and "†" not in plain


def test_report_written_atomically(report):
    assert [path.name for path in report.parent.iterdir()] == ["report.html"]


@needs_chromium
def test_headless_chromium_renders_without_console_errors(report, page, tmp_path):
    rendered = render(report, tmp_path)
    assert Image.open(rendered.screenshot).size == (1280, 2400)
    assert not CONSOLE_ERROR.search(rendered.log), rendered.log[-2000:]
    # The parsed DOM holds what the file does: every table, 4 figures + 4 thumbnails, no script.
    assert rendered.dom.count('<table class="results">') == page.count('<table class="results">')
    assert rendered.dom.count("<img ") == 8 and "<script" not in rendered.dom.lower()


def test_report_without_per_pair_scores_has_only_the_correlation_figure(results):
    page = html.render_html(correlations=results.correlations, ceiling=results.ceiling, pairs=None,
                            metrics=results.metrics, provenance=results.provenance)
    assert page.count('<img src="data:image/png;base64,') == 1 and 'id="figure-correlation_bars-mean-regression"' in page
    assert 'id="samples"' not in page


def test_metrics_that_did_not_run_are_named_with_reason_and_fix(results):
    reason = "weights alexnet not found in /x; run `bench weights fetch alexnet` <now>"
    page = quick_html(results, not_computed=[{"name": "lpips", "label": "LPIPS", "reason": reason}])
    banner = page[page.index('<div class="banner missing"'):]
    banner = banner[:banner.index("</div>")]
    assert "<strong>LPIPS</strong>: weights alexnet not found in /x; run `bench weights fetch alexnet` &lt;now&gt;" in banner
    assert page.count("LPIPS: not computed — weights alexnet not found") >= len(tables.build_tables(results)) // 3 * 2
    assert "banner missing" not in quick_html(results)


def test_report_states_its_convention(results):
    page = quick_html(results)
    from markupsafe import escape

    assert page.count(str(escape(tables.convention_note("default")))) >= 1 + len(tables.build_tables(results))
