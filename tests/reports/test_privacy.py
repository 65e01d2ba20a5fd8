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
    assert page.count("data:image/jpeg;base64,") == 2 and "gone.png: not a readable image" in page
    written = write_privacy(_report(tmp_path), tmp_path / "out", b"\x89PNG fake")
    assert sorted(written) == ["html", "json", "markdown", "roc"]
