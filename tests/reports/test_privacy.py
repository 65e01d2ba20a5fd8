"""The privacy block: Markdown, JSON and HTML from one report record, with directions, CIs,
counts of faces not found, and escaped names."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from metrics.attacks import (
    AdaptiveAttack, DetectionExample, Identification, PrivacyReport, PrivacyRow, Rate, verify,
)
from reports.privacy import to_html, to_json, to_markdown, write_privacy


def _report(tmp_path) -> PrivacyReport:
    image = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (200, 180, 160)).save(image)
    identification = Identification(ranks=np.array([1, 2, np.inf, 1]), n_identities=3, not_found=1)
    verification = verify(np.array([0.0, -0.2, -np.inf]), np.array([-1.0, -0.9, -0.1, -2.0]))
    rows = [
        PrivacyRow(method="<script>mine</script>", scope="global", n_pairs=4, detection=Rate.of(3, 4),
                   originals_without_face=1, identification=identification, verification=verification,
                   adaptive=AdaptiveAttack(rank1=Rate.of(1, 2), chance=1 / 3, n_classes=3, n_train=2)),
        PrivacyRow(method="mask", scope="local", n_pairs=4, detection=Rate.of(0, 4),
                   adaptive=AdaptiveAttack(rank1=None, reason="no identity has two photos")),
    ]
    example = DetectionExample(label="originals/a.png", original=str(image), original_faces=((8, 8, 40, 40, 0.99),),
                               anonymized=(("mask", str(image), ()), ("<b>x</b>", str(tmp_path / "gone.png"), ())))
    return PrivacyReport(rows=rows, examples=[example], unavailable={"detection (LBP)": "weights missing"})


def test_markdown_has_directions_cis_counts_and_reasons(tmp_path):
    text = to_markdown(_report(tmp_path))
    assert "MTCNN detection rate ↓" in text and "EER ↑" in text and "TAR@FAR=0.01 ↓" in text
    assert "0.75 \\[0.30, 0.95\\]" in text  # 3/4 with its Wilson interval
    assert "n/a (no identity has two photos)" in text
    assert "Chance level: rank-1 0.33" in text and "1 anonymized face(s) not found" in text
    assert "1 original(s) without a detectable face" in text and "weights missing" in text


def test_json_is_strict_and_oriented(tmp_path):
    document = json.loads(to_json(_report(tmp_path)))
    row = document["rows"][0]
    assert row["detection_rate"]["successes"] == 3 and row["rank1"]["successes"] == 2
    assert row["chance_rank1"] == 1 / 3 and row["faces_not_found"] == 1
    assert document["higher_is_more_anonymous"]["eer"] is True
    assert document["rows"][1]["adaptive_rank1"] is None and document["rows"][1]["eer"] is None


def test_html_escapes_names_and_shows_boxes(tmp_path):
    page = to_html(_report(tmp_path), roc_png=b"\x89PNG fake")
    assert "<script>mine" not in page and "&lt;script&gt;mine" in page and "&lt;b&gt;x" in page
    assert page.count("data:image/jpeg;base64,") == 2 and "gone.png: file not found" in page
    written = write_privacy(_report(tmp_path), tmp_path / "out", b"\x89PNG fake")
    assert sorted(written) == ["html", "json", "markdown", "roc"]


# ----------------------------------------------------------------------------- in the leaderboard
def _board(tmp_path, *, faces: bool):
    from reports import leaderboard as lb
    from metrics.schema import MetricInfo
    from reports.tables import NotComputed

    image = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (255, 255, 255)).save(image)
    columns = (MetricInfo("reid_dlib", "dlib identity distance", True, "verified",
                          infinite_means="no face found on the anonymized image: not re-identified"),)
    rows = (lb.BoardRow("<i>m</i>", "global", {"reid_dlib": lb.Entry(0.5, 0.4, 0.6, n=3, n_infinite=1)}),)
    found = Rate.of(3, 4)
    block = lb.PrivacyBlock(
        columns=(MetricInfo("detection_mtcnn", "MTCNN detection rate", False, "verified"),),
        rows=(lb.BoardRow("<i>m</i>", "global", {"detection_mtcnn": lb.Entry(
            found.value, found.ci_low, found.ci_high, n=found.n, level="privacy")}),),
        notes=("Chance level: rank-1 0.33",),
        not_computed=(NotComputed("re-identification (dlib)", "re-identification (dlib)",
                                  "dlib is not importable; pip install dlib-bin"),))
    example = lb.Example("face.png", image, (("<i>m</i>", image),),
                         original_faces=((8, 8, 40, 40, 0.99),) if faces else None,
                         faces={"<i>m</i>": ((8, 8, 40, 40, 0.9),)} if faces else {})
    return lb.Leaderboard(title="t", dataset="d", columns=columns, rows=rows, sort_metric="reid_dlib",
                          bootstrap={"n_boot": 10, "seed": 0}, examples=(example,), privacy=block)


def _decoded(page: str) -> list[np.ndarray]:
    import base64
    import io
    import re

    return [np.array(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            for data in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)]


def test_leaderboard_privacy_block_in_markdown_latex_and_json(tmp_path):
    from reports import leaderboard as lb

    board = _board(tmp_path, faces=True)
    markdown = lb.to_markdown_document(board)
    assert "### Privacy attacks: d" in markdown and "MTCNN detection rate ↓" in markdown
    assert "0.75** [0.30, 0.95] (n = 4)" in markdown  # 3/4 with its Wilson interval, as in privacy.md
    assert "re-identification (dlib): not computed — dlib is not importable; pip install dlib-bin" in markdown
    # +inf of the identity distance means "not re-identified", not "identical images"
    assert "1 of 4 pairs infinite (no face found on the anonymized image: not re-identified)" in markdown
    assert "PSNR" not in markdown
    assert lb.to_latex_table(board).count(r"\begin{table}") == 2
    document = json.loads(lb.to_json(board))
    cell = document["privacy"]["rows"][0]["cells"]["detection_mtcnn"]
    assert cell["value"] == 0.75 and cell["level"] == "privacy"
    assert document["privacy"]["metrics"][0]["higher_is_more_anonymous"] is False


def test_leaderboard_html_draws_the_detectors_boxes_and_escapes(tmp_path):
    from reports import leaderboard as lb

    page = lb.to_html(_board(tmp_path, faces=True))
    assert "<i>m</i>" not in page and "&lt;i&gt;m&lt;/i&gt;" in page
    assert "1 face found" in page and 'id="privacy-d"' in page
    original, anonymized = _decoded(page)
    # The white image gets a green box on the original and a red one on the result.
    green = original[..., 1].astype(int) - original[..., 0] > 60
    red = anonymized[..., 0].astype(int) - anonymized[..., 1] > 60
    assert green.sum() > 20 and red.sum() > 20
    plain = lb.to_html(_board(tmp_path, faces=False))
    assert "1 face found" not in plain and all((image > 200).all() for image in _decoded(plain))
