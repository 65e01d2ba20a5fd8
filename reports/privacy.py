"""The leaderboard's privacy block: can a machine find and re-identify the person?

One row per method x scope, one column per attack, each with its direction (↓: lower = more
anonymous, as in the perceptual block) and its 95% CI (Wilson, over the group's pairs).
Rendered once into Markdown and JSON from `metrics.attacks.PrivacyReport`.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable
from typing import Any

from metrics.atomic import write_atomic
from metrics.attacks import ATTACK_COLUMNS, FARS, PrivacyReport, PrivacyRow, Rate
from reports.html import Thumbnail, data_uri, environment, thumbnail
from metrics.schema import to_json_text
from reports.tables import markdown_escape

FILE_NAMES = {"markdown": "privacy.md", "json": "privacy.json", "roc": "privacy_roc.png", "html": "privacy.html"}
BOXED_SIZE = (160, 160)

COLUMNS = (*(f"{column.label} ↓" for column in ATTACK_COLUMNS), "EER ↑")


def _rate(rate: Rate | None) -> str:
    if rate is None:
        return "–"
    if rate.n == 0:
        return "no pairs"
    return f"{rate.value:.2f} [{rate.ci_low:.2f}, {rate.ci_high:.2f}]"


def _cells(row: PrivacyRow) -> list[str]:
    adaptive = "–"
    if row.adaptive is not None:
        adaptive = _rate(row.adaptive.rank1) if row.adaptive.rank1 else f"n/a ({row.adaptive.reason})"
    verification = row.verification
    return [
        _rate(row.detection), _rate(row.second_detection), _rate(row.rank1), _rate(row.rank5), adaptive,
        *(f"{verification.tar_at_far[far]:.2f}" if verification else "–" for far in FARS),
        f"{verification.eer:.2f}" if verification else "–",
    ]


DIRECTIONS = "↓: lower = more anonymous; ↑: higher = more anonymous. [low, high]: 95% Wilson interval."


def _notes(report: PrivacyReport) -> list[str]:
    notes = [DIRECTIONS, *general_notes(report)]
    for row in report.rows:
        notes += row_notes(row)
    return notes + unavailable_notes(report)


def unavailable_notes(report: PrivacyReport) -> list[str]:
    return [f"{attack} not run: {reason}" for attack, reason in report.unavailable.items()]


def row_notes(row: PrivacyRow) -> list[str]:
    """The counts a group's rates do not show: originals without a face, faces not found."""
    counts = []
    if row.originals_without_face:
        counts.append(f"{row.originals_without_face} original(s) without a detectable face (no detection value)")
    if row.identification and row.identification.not_found:
        counts.append(f"{row.identification.not_found} anonymized face(s) not found by the re-identification "
                      "detector (counted as not re-identified)")
    return [f"{row.method}/{row.scope}: " + "; ".join(counts) + "."] if counts else []


def general_notes(report: PrivacyReport) -> list[str]:
    """What the attacks are and their chance levels (the same for every method of the set)."""
    notes = ["Detection: MTCNN (or the LBP cascade) finds the original's face (IoU >= 0.5) on the anonymized "
             "image, over the pairs whose original has a face the detector finds. Re-identification: "
             "dlib 128-d embeddings (MTCNN's face box, or dlib's HOG detector without MTCNN; 5-point "
             "alignment); naive = identified against every original of the scope; adaptive = 1-NN trained on anonymized images of part of each identity's photos. "
             "A face the detector cannot find counts as not re-identified."]
    first = next((row for row in report.rows if row.identification), None)
    if first is not None and not first.identification.n_identities:
        notes.append("No original has a face the re-identification detector finds: the gallery is empty, "
                     "so no anonymized face can be identified.")
    elif first is not None:
        notes.append(f"Chance level: rank-1 {first.identification.chance(1):.2f}, rank-5 "
                     f"{first.identification.chance(5):.2f} ({first.identification.n_identities} gallery identities).")
    adaptive = next((row.adaptive for row in report.rows if row.adaptive and row.adaptive.rank1), None)
    if adaptive is not None:
        notes.append(f"Adaptive attacker's chance level: {adaptive.chance:.2f} ({adaptive.n_classes} identities learnt).")
    return notes


def to_markdown(report: PrivacyReport) -> str:
    header = ["scope", "method", *COLUMNS]
    lines = ["#### Privacy attacks", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.rows:
        cells = [row.scope, row.method, *_cells(row)]
        lines.append("| " + " | ".join(markdown_escape(cell) for cell in cells) + " |")
    lines.append("")
    lines += [f"- {markdown_escape(note)}" for note in _notes(report)]
    return "\n".join(lines) + "\n"


def _rate_json(rate: Rate | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    return dict(vars(rate))


def to_json(report: PrivacyReport) -> str:
    rows = []
    for row in report.rows:
        ident, verification, adaptive = row.identification, row.verification, row.adaptive
        rows.append({
            "method": row.method, "scope": row.scope, "n_pairs": row.n_pairs,
            "detection_rate": _rate_json(row.detection), "originals_without_face": row.originals_without_face,
            "detection_rate_lbp": _rate_json(row.second_detection),
            "rank1": _rate_json(row.rank1), "rank5": _rate_json(row.rank5),
            "chance_rank1": ident.chance(1) if ident else None,
            "chance_rank5": ident.chance(5) if ident else None,
            "faces_not_found": ident.not_found if ident else None,
            "tar_at_far": {f"{far:g}": value for far, value in verification.tar_at_far.items()} if verification else None,
            "eer": verification.eer if verification else None,
            "adaptive_rank1": _rate_json(adaptive.rank1) if adaptive else None,
            "adaptive_chance": adaptive.chance if adaptive else None,
            "adaptive_reason": adaptive.reason if adaptive else None,
        })
    document = {"higher_is_more_anonymous": {"detection_rate": False, "detection_rate_lbp": False, "rank1": False, "rank5": False,
                                             "adaptive_rank1": False, "tar_at_far": False, "eer": True},
                "rows": rows, "notes": _notes(report), "unavailable": report.unavailable,
                "conventions": report.conventions}
    return to_json_text(document, indent=1)


def boxed_thumbnail(path: str | Path, faces: Any, colour: str) -> Thumbnail:
    """A JPEG thumbnail with the face boxes drawn; an unreadable image is a note, not a failure."""
    return thumbnail(Path(path), BOXED_SIZE, boxes=faces, colour=colour)


def to_html(report: PrivacyReport, roc_png: bytes | None = None, title: str = "Privacy attacks") -> str:
    """A self-contained page: the table, its notes, the ROC and the detector's boxes per method."""
    examples = []
    for example in report.examples:
        images = [{"image": boxed_thumbnail(example.original, example.original_faces, "#1a7f37"),
                   "caption": "original"}]
        images += [{"image": boxed_thumbnail(path, faces, "#cf222e"),
                    "caption": f"{method}: {len(faces)} face(s) found"} for method, path, faces in example.anonymized]
        examples.append({"label": example.label, "images": images})
    return environment().get_template("privacy.html.j2").render(
        title=title, header=["scope", "method", *COLUMNS],
        rows=[[row.scope, row.method, *_cells(row)] for row in report.rows], notes=_notes(report),
        roc=data_uri(roc_png, "image/png") if roc_png else "", examples=examples)


def write_privacy(report: PrivacyReport, out_dir: Path, roc_png: bytes | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    written = {"markdown": write_atomic(out_dir / FILE_NAMES["markdown"], to_markdown(report)),
               "json": write_atomic(out_dir / FILE_NAMES["json"], to_json(report)),
               "html": write_atomic(out_dir / FILE_NAMES["html"], to_html(report, roc_png))}
    if roc_png is not None:
        written["roc"] = write_atomic(out_dir / FILE_NAMES["roc"], roc_png)
    remove_stale(out_dir, keep=written.values())
    return written


def remove_stale(out_dir: Path, keep: Iterable[Path] = ()) -> None:
    """An earlier run's privacy detail in `out_dir` that this run did not rewrite (a run with
    --no-privacy, or one whose ROC could not be drawn) would pass for this run's: it goes.
    The attacks' values stay in the results store."""
    kept = set(keep)
    for name in FILE_NAMES.values():
        path = Path(out_dir) / name
        if path not in kept:
            path.unlink(missing_ok=True)


def roc_plot(report: PrivacyReport) -> bytes:
    """PNG of every group's verification ROC (log FAR axis), the diagonal as chance."""
    import io

    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    from reports.plots import _STYLE

    # The plots' shared style: method names in the legend are never read as mathtext.
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(5, 4))
        axes = figure.add_subplot()
        for row in report.rows:
            if row.verification is not None:
                fpr, tpr = row.verification.fpr, row.verification.tpr
                axes.step(np.maximum(fpr, 1e-4), tpr, where="post", label=f"{row.method}/{row.scope}")
        grid = np.logspace(-4, 0, 50)
        axes.plot(grid, grid, linestyle=":", color="grey", label="chance")
        axes.set_xscale("log")
        axes.set_xlabel("false accept rate (impostor pairs accepted)")
        axes.set_ylabel("true accept rate (genuine pairs accepted)")
        axes.set_title("Re-identification: verification ROC (dlib)")
        axes.legend(fontsize=6)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
