"""bench.data.dataset: annotations -> PairsTable, and validate() finding every problem by line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data import dataset, images
from bench.errors import InputError

HEADER = "img1,img2,dataset,scope,method,ann_a,ann_b,ann_c,score_mean"
GOOD_ROWS = [
    "imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,6,6",
    "imgs/o1.png,imgs/a2.png,voc,global,blurpix,3,,4,3.5",
    "imgs/o2.png,imgs/a3.png,lfw,local,inpaint,9,10,8,9",
]


def make_images(root: Path, size=(10, 8)) -> None:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["o1", "o2", "a1", "a2", "a3", "a4"]):
        arr = np.full((size[1], size[0], 3), 20 * i, dtype=np.uint8)
        Image.fromarray(arr).save(root / "imgs" / f"{name}.png")


def write_csv(root: Path, rows: list[str], header: str = HEADER, name: str = "HA1.csv") -> Path:
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    make_images(tmp_path)
    return tmp_path


def problems_for(csv: Path, **kw) -> list[str]:
    return dataset.validate(csv, **kw).problems


def only_problem(csv: Path, **kw) -> str:
    probs = problems_for(csv, **kw)
    assert len(probs) == 1, probs
    return probs[0]


# --------------------------------------------------------------------------- reading
def test_released_csv_round_trips(data):
    csv = write_csv(data, GOOD_ROWS)
    t = dataset.load_pairs(csv)
    assert list(t.frame.columns) == [
        "original", "anonymized", "dataset", "scope", "method", "score_mean", "ann_a", "ann_b", "ann_c", "row"]
    assert t.annotators == ["ann_a", "ann_b", "ann_c"]
    assert t.frame["row"].tolist() == [2, 3, 4]
    assert t.frame["original"].tolist() == ["imgs/o1.png", "imgs/o1.png", "imgs/o2.png"]
    assert t.frame["score_mean"].tolist() == [6.0, 3.5, 9.0]
    assert t.frame["score_mean"].dtype == np.float64 and t.frame["ann_b"].dtype == np.float64
    assert np.isnan(t.frame["ann_b"].iat[1])  # a skipped annotator stays empty
    assert list(t.raw.columns) == HEADER.split(",")
    pd.testing.assert_frame_equal(t.raw, pd.read_csv(csv))
    assert t.raw.index.equals(t.frame.index)
    assert t.dataset_hash == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert t.source == csv and t.root == data.absolute()
    assert t.original_path(2) == data.absolute() / "imgs/o2.png"
    assert t.anonymized_path(0).is_absolute() and t.anonymized_path(0).exists()
    assert t.anonymized_paths() == [data.absolute() / f"imgs/a{i}.png" for i in (1, 2, 3)]
    assert t.where(1) == f"{csv} line 3"
    assert t.warnings == [] and t.absent_columns == ()


def test_root_option_and_blank_lines_keep_file_line_numbers(tmp_path):
    make_images(tmp_path / "images")
    ann = tmp_path / "ann"
    ann.mkdir()
    csv = ann / "HA2.csv"
    csv.write_text(HEADER + "\n" + GOOD_ROWS[0] + "\n\n" + GOOD_ROWS[1] + "\n" + GOOD_ROWS[2] + "\n")
    t = dataset.load_pairs(csv, root=tmp_path / "images")
    assert t.frame["row"].tolist() == [2, 4, 5]
    assert t.original_path(0) == (tmp_path / "images").absolute() / "imgs/o1.png"
    assert dataset.validate(csv, root=tmp_path / "images").problems == []


def test_quoted_multiline_field_counts_lines(data):
    rows = ['imgs/o1.png,imgs/a1.png,coco,local,"mask\nstill mask",5,7,6,6', GOOD_ROWS[2]]
    t = dataset.load_pairs(write_csv(data, rows))
    assert t.frame["row"].tolist() == [2, 4]


def test_generic_csv_with_mapping(data):
    csv = write_csv(data, ["imgs/o1.png,imgs/a1.png,4,6,5", "imgs/o2.png,imgs/a3.png,8,,8"],
                    header="src,dst,r1,r2,mos", name="mine.csv")
    mapping = dataset.parse_column_mapping("original=src,anonymized=dst,score_mean=mos,annotators=r1;r2")
    assert mapping == {"original": "src", "anonymized": "dst", "score_mean": "mos", "annotators": "r1;r2"}
    t = dataset.load_pairs(csv, columns=mapping)
    assert t.annotators == ["r1", "r2"]
    assert t.frame["score_mean"].tolist() == [5.0, 8.0]
    assert t.frame["dataset"].tolist() == ["", ""]
    assert t.absent_columns == ("dataset", "scope", "method")
    assert t.column_names["original"] == "src"
    report = dataset.validate(csv, columns=mapping)
    assert report.problems == []
    assert "(no such column)" in report.render()


def test_generic_mapping_without_annotators(data):
    csv = write_csv(data, ["imgs/o1.png,imgs/a1.png,5.5"], header="src,dst,mos", name="g.csv")
    t = dataset.load_pairs(csv, columns="original=src,anonymized=dst,score_mean=mos")
    assert t.annotators == [] and t.frame["score_mean"].tolist() == [5.5]


@pytest.mark.parametrize("spec", ["foo=bar", "original", "original=", "original=a,original=b"])
def test_bad_mapping_spec(spec):
    with pytest.raises(InputError) as info:
        dataset.parse_column_mapping(spec)
    assert "original, anonymized, dataset, scope, method, score_mean, annotators" in str(info.value)


def test_empty_mapping_spec_is_none():
    assert dataset.parse_column_mapping(None) is None
    assert dataset.parse_column_mapping("  ") is None


# --------------------------------------------------------------------------- load_pairs
def test_load_pairs_raises_first_problem_with_hint(data):
    rows = [GOOD_ROWS[0], "imgs/o1.png,imgs/a2.png,voc,global,blurpix,3,,4,abc", GOOD_ROWS[0]]
    with pytest.raises(InputError) as info:
        dataset.load_pairs(write_csv(data, rows))
    msg = str(info.value)
    assert "line 3" in msg and "non-numeric" in msg and "1 more problem" in msg and "bench validate" in msg


def test_load_pairs_does_not_open_images(data):
    csv = write_csv(data, [GOOD_ROWS[0], "imgs/o1.png,imgs/gone.png,coco,local,mask,5,7,6,6"])
    assert len(dataset.load_pairs(csv)) == 2


def test_load_pairs_keeps_mean_disagreement_as_warning(data):
    csv = write_csv(data, ["imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,6,6.5"])
    t = dataset.load_pairs(csv)
    assert len(t.warnings) == 1 and "line 2" in t.warnings[0]


def test_load_pairs_missing_file(tmp_path):
    with pytest.raises(InputError, match="annotation file not found"):
        dataset.load_pairs(tmp_path / "HA1.csv")


# --------------------------------------------------------------------------- validate: one problem each
def test_scoring_needs_no_score_column_correlating_does(data):
    path = write_csv(data, ["imgs/o1.png,imgs/a1.png", "imgs/o2.png,imgs/a3.png"], header="img1,img2")
    table = dataset.load_pairs(path, require_scores=False)
    assert len(table) == 2 and not table.has_scores and table.frame["score_mean"].isna().all()
    assert table.frame["dataset"].tolist() == ["", ""] and table.absent_columns == ("dataset", "scope", "method")
    with pytest.raises(InputError, match=r"missing required column\(s\) 'dataset', 'scope', 'method', 'score_mean'"):
        dataset.load_pairs(path)
    # A score column that is present is still read, and may have gaps when only scoring.
    gaps = write_csv(data, ["imgs/o1.png,imgs/a1.png,7", "imgs/o2.png,imgs/a3.png,"], header="img1,img2,score_mean",
                     name="gaps.csv")
    scored = dataset.load_pairs(gaps, require_scores=False)
    assert scored.has_scores and scored.frame["score_mean"].tolist()[0] == 7.0
    with pytest.raises(InputError, match="non-numeric score 'x'"):
        dataset.load_pairs(write_csv(data, ["imgs/o1.png,imgs/a1.png,x"], header="img1,img2,score_mean",
                                     name="bad.csv"), require_scores=False)
    with pytest.raises(InputError, match="missing required column"):
        dataset.load_pairs(write_csv(data, ["imgs/o1.png"], header="img1", name="one.csv"), require_scores=False)


def test_clean_file_has_no_problems(data):
    report = dataset.validate(write_csv(data, GOOD_ROWS))
    assert report.problems == []
    text = report.render()
    for part in ("rows:        3 (CSV lines 2-4)", "annotators:  3", "coco 1", "local 2", "mask 1",
                 " 1-2 ", " 9-10", "no problems found", "5 unique file(s) opened"):
        assert part in text, part


def test_missing_annotation_file(tmp_path):
    report = dataset.validate(tmp_path / "HA1.csv")
    assert report.table is None
    assert report.problems == [f"{tmp_path / 'HA1.csv'}: annotation file not found; check the path "
                               "(HA1.csv / HA2.csv or your CSV)"]
    assert "1 problem(s):" in report.render()


def test_empty_file(tmp_path):
    (tmp_path / "HA1.csv").write_text("")
    assert "empty file" in only_problem(tmp_path / "HA1.csv")


def test_header_only(tmp_path):
    assert "no data rows" in only_problem(write_csv(tmp_path, []))


def test_missing_column_lists_found_columns_and_option(data):
    header = HEADER.replace("scope,", "")
    rows = [r.replace(",local", "").replace(",global", "") for r in GOOD_ROWS]
    msg = only_problem(write_csv(data, rows, header=header))
    assert "line 1" in msg and "'scope'" in msg and "found: 'img1', 'img2', 'dataset', 'method'," in msg
    assert "--columns" in msg


def test_non_numeric_score_mean(data):
    msg = only_problem(write_csv(data, [GOOD_ROWS[0], "imgs/o1.png,imgs/a2.png,voc,global,mask,3,,4,high"]))
    assert "line 3" in msg and "non-numeric" in msg and "'high'" in msg and "'score_mean'" in msg


def test_non_numeric_annotator_score(data):
    msg = only_problem(write_csv(data, [GOOD_ROWS[0], "imgs/o1.png,imgs/a2.png,voc,global,mask,3,x,4,3.5"]))
    assert "line 3" in msg and "non-numeric" in msg and "'ann_b'" in msg


@pytest.mark.parametrize("value", ["0", "11", "-3", "inf"])
def test_out_of_range_score_mean(data, value):
    msg = only_problem(write_csv(data, [GOOD_ROWS[0], f"imgs/o1.png,imgs/a2.png,voc,global,mask,,,,{value}"]))
    assert "line 3" in msg and "outside 1..10" in msg and "'score_mean'" in msg


def test_out_of_range_annotator_score(data):
    msg = only_problem(write_csv(data, ["imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,12,6"]))
    assert "line 2" in msg and "outside 1..10" in msg and "'ann_c'" in msg


def test_empty_score_mean(data):
    msg = only_problem(write_csv(data, ["imgs/o1.png,imgs/a1.png,coco,local,mask,,,,"]))
    assert "line 2" in msg and "empty 'score_mean'" in msg


def test_score_mean_disagrees_with_annotators(data):
    rows = [GOOD_ROWS[0], "imgs/o1.png,imgs/a2.png,voc,global,blurpix,3,,4,3.52",
            "imgs/o2.png,imgs/a3.png,lfw,local,inpaint,9,10,8,9.01"]  # 0.02 off (bad), 0.01 off (ok)
    msg = only_problem(write_csv(data, rows))
    assert "line 3" in msg and "3.52" in msg and "3.5000" in msg and "0.01" in msg


def test_duplicate_pair_names_both_lines(data):
    msg = only_problem(write_csv(data, GOOD_ROWS + [GOOD_ROWS[1]]))
    assert "line 5" in msg and "already on line 3" in msg and "duplicate pair" in msg


def test_absolute_path(data):
    absolute = str((data / "imgs/a1.png").absolute())
    csv = write_csv(data, [f"imgs/o1.png,{absolute},coco,local,mask,5,7,6,6"])
    msg = only_problem(csv)
    assert "line 2" in msg and "absolute path" in msg and "'img2'" in msg and "--allow-outside-root" in msg
    assert problems_for(csv, allow_outside_root=True) == []


def test_path_escaping_root_with_dotdot(data):
    sub = data / "sub"
    sub.mkdir()
    csv = write_csv(sub, ["../imgs/o1.png,../imgs/a1.png,coco,local,mask,5,7,6,6"])
    probs = problems_for(csv)
    assert len(probs) == 2 and all("line 2" in p and "leaves the image root" in p for p in probs)
    assert problems_for(csv, allow_outside_root=True) == []
    # '..' that stays inside the root is fine
    inside = write_csv(data, ["sub/../imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,6,6"], name="in.csv")
    assert problems_for(inside) == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_escaping_root(tmp_path):
    outside = tmp_path / "outside"
    make_images(outside)
    root = tmp_path / "root"
    make_images(root)
    (root / "link.png").symlink_to(outside / "imgs" / "a1.png")
    msg = only_problem(write_csv(root, ["imgs/o1.png,link.png,coco,local,mask,5,7,6,6"]))
    assert "line 2" in msg and "symlink" in msg and "'img2'" in msg


def test_empty_path(data):
    msg = only_problem(write_csv(data, [GOOD_ROWS[0], ",imgs/a2.png,voc,global,mask,3,,4,3.5"]))
    assert "line 3" in msg and "empty 'img1'" in msg


def test_missing_image(data):
    msg = only_problem(write_csv(data, [GOOD_ROWS[0], "imgs/o1.png,imgs/gone.png,voc,global,mask,3,,4,3.5"]))
    assert "line 3" in msg and "image not found" in msg and str(data.absolute() / "imgs/gone.png") in msg


def test_truncated_image_reported_once_with_other_lines(data):
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(data / "imgs" / "full.png")
    blob = (data / "imgs" / "full.png").read_bytes()
    (data / "imgs" / "cut.png").write_bytes(blob[: len(blob) // 2])
    rows = [GOOD_ROWS[0], "imgs/o1.png,imgs/cut.png,voc,global,mask,3,,4,3.5",
            "imgs/o2.png,imgs/cut.png,voc,global,mask,3,,4,3.5"]
    msg = only_problem(write_csv(data, rows))
    assert "line 3" in msg and "cannot decode image" in msg and "cut.png" in msg and "also used on line(s) 4" in msg


def test_size_mismatch_under_each_policy(data):
    Image.new("RGB", (11, 8)).save(data / "imgs" / "wide.png")
    csv = write_csv(data, [GOOD_ROWS[0], "imgs/o1.png,imgs/wide.png,voc,global,mask,3,,4,3.5"])
    msg = only_problem(csv)
    assert "line 3" in msg and "10x8" in msg and "11x8" in msg and "--size-policy resize" in msg
    report = dataset.validate(csv, size_policy="resize")
    assert report.problems == [] and report.resized_pairs == 1
    assert "will be resized" in report.render()


def test_unknown_dataset_and_scope_are_listed_not_problems(data):
    report = dataset.validate(write_csv(data, ["imgs/o1.png,imgs/a1.png,ffhq,part,mask,5,7,6,6"]))
    assert report.problems == []
    text = report.render()
    assert "dataset 'ffhq'" in text and "scope 'part'" in text


def test_no_images_option_skips_opening(data):
    csv = write_csv(data, [GOOD_ROWS[0], "imgs/o1.png,imgs/gone.png,voc,global,mask,3,,4,3.5"])
    report = dataset.validate(csv, check_images=False)
    assert report.problems == [] and "not opened" in report.render()


def test_wrong_root_is_one_problem_not_one_per_image(data, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    msg = only_problem(write_csv(data, GOOD_ROWS), root=elsewhere)
    assert "none of the 5 images exists" in msg and "--root" in msg and "line 2 'img1'" in msg


def test_missing_root_is_one_problem(data):
    csv = write_csv(data, GOOD_ROWS)
    msg = only_problem(csv, root=data / "nowhere")
    assert "is not a folder" in msg and "--root" in msg


def test_each_image_opened_once(data, monkeypatch):
    seen: list[Path] = []
    real = images.check_image

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(images, "check_image", counting)
    assert dataset.validate(write_csv(data, GOOD_ROWS)).problems == []
    assert len(seen) == len(set(seen)) == 5  # o1 is used twice but opened once


def test_outside_root_images_are_not_opened(data, monkeypatch):
    opened: list[Path] = []
    monkeypatch.setattr(images, "check_image", lambda p: opened.append(p) or (10, 8))
    sub = data / "sub"
    sub.mkdir()
    dataset.validate(write_csv(sub, ["../imgs/o1.png,../imgs/a1.png,coco,local,mask,5,7,6,6"]))
    assert opened == []


# --------------------------------------------------------------------------- validate: everything at once
def test_validate_finds_every_problem_in_one_file(data):
    Image.new("RGB", (11, 8)).save(data / "imgs" / "wide.png")
    rows = [
        GOOD_ROWS[0],                                                      # 2 ok
        "imgs/o1.png,imgs/a2.png,voc,global,blurpix,3,,4,many",            # 3 non-numeric
        "imgs/o2.png,imgs/a3.png,lfw,local,inpaint,9,10,8,42",             # 4 out of range
        GOOD_ROWS[0],                                                      # 5 duplicate of 2
        "/abs/o.png,imgs/a4.png,coco,local,mask,5,7,6,6",                  # 6 absolute
        "imgs/o2.png,../a.png,coco,local,mask,5,7,6,6",                    # 7 escapes root
        "imgs/o2.png,imgs/gone.png,coco,local,mask,5,7,6,6",               # 8 missing image
        "imgs/o2.png,imgs/wide.png,coco,local,mask,5,7,6,6",               # 9 size mismatch
        "imgs/o2.png,imgs/a1.png,coco,local,mask,5,7,6,7",                 # 10 mean disagrees
        ",imgs/a2.png,coco,local,mask,5,7,6,6",                            # 11 empty path
    ]
    probs = problems_for(write_csv(data, rows))
    expected = [(3, "non-numeric"), (4, "outside 1..10"), (5, "duplicate pair"), (6, "absolute path"),
                (7, "leaves the image root"), (8, "image not found"), (9, "size mismatch"),
                (10, "differs from the mean"), (11, "empty 'img1'")]
    assert len(probs) == len(expected), probs
    for (line, words), msg in zip(expected, probs):
        assert f"HA1.csv line {line}:" in msg and words in msg, (line, msg)
        assert "\n" not in msg
