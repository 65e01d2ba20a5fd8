"""bench.data.protocol against an independent implementation: the released split algorithm written
here with pandas + scikit-learn's train_test_split, and the released label rules per scalar
with Python's round(). Splits must agree row for row and in order; labels exactly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

sklearn_split = pytest.importorskip("sklearn.model_selection").train_test_split

from bench.data import protocol  # noqa: E402
from bench.errors import InputError, SplitError  # noqa: E402

ANNOTATORS = [f"annotator_{i}" for i in range(1, 6)]


# --------------------------------------------------------------------------- synthetic data
def released_frame(n_rows: int, *, methods=("mask", "inpaint", "blurpix"), seed: int = 0) -> pd.DataFrame:
    """An annotation table in the released format (img1, img2, dataset, scope, method,
    annotator columns, score_mean), with scores skewed high as in the paper and every
    stratum populated."""
    rng = np.random.default_rng(seed)
    datasets = rng.choice(["coco", "voc", "lfw", "celeba"], size=n_rows)
    method = rng.choice(list(methods), size=n_rows)
    scope = rng.choice(["local", "global"], size=n_rows)
    # Mostly high scores, with a tail reaching 1; each row's annotators cluster around a centre.
    centre = rng.choice(np.arange(1, 11), size=n_rows, p=[0.04, 0.04, 0.05, 0.07, 0.09, 0.11, 0.14, 0.16, 0.15, 0.15])
    votes = np.clip(centre[:, None] + rng.integers(-1, 2, size=(n_rows, len(ANNOTATORS))), 1, 10)
    frame = pd.DataFrame(
        {
            "img1": [f"{d}/orig_{i:05d}.jpg" for i, d in enumerate(datasets)],
            "img2": [f"{d}/{m}_{i:05d}.jpg" for i, (d, m) in enumerate(zip(datasets, method))],
            "dataset": datasets,
            "scope": scope,
            "method": method,
        }
    )
    for j, column in enumerate(ANNOTATORS):
        frame[column] = votes[:, j]
    frame["score_mean"] = votes.mean(axis=1)
    return frame


HA1_LIKE = released_frame(2500, seed=1)
HA2_LIKE = released_frame(3000, methods=("inpaint", "blurpix"), seed=2)  # HA2 has no masks


# --------------------------------------------------------------------------- the reference
# The released generate_splits.py algorithm, written fresh against pandas and scikit-learn.
def _ref_with_strata(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True).copy()
    rounded = df["score_mean"].round().astype(int)
    df["stratum"] = rounded.map(lambda r: 0 if r <= 4 else r - 4)
    return df


def _tts(df: pd.DataFrame, test_size: float, seed: int):
    return sklearn_split(df, test_size=test_size, stratify=df["stratum"], random_state=seed)


def reference_split(df: pd.DataFrame, name: str, seed: int):
    """(train, val, test) positional indices of `df` as the released code orders them."""
    df = _ref_with_strata(df)
    kind, _, target = name.partition("-")
    if kind == "all":
        train_val, test = _tts(df, 0.2, seed)
        train, val = _tts(train_val, 0.2 / (0.6 + 0.2), seed)
    elif kind in ("loov", "anon"):
        column = "dataset" if kind == "loov" else "method"
        test = df[df[column] == target]
        train, val = _tts(df[df[column] != target], 0.2 / (0.6 + 0.2), seed)
    else:
        members = {"person": ["coco", "voc"], "face": ["celeba", "lfw"]}[target]
        train, val_test = _tts(df[df["dataset"].isin(members)], 0.2 + 0.2, seed)
        val_test = val_test.copy()
        val_test["stratum"] = reference_merge(val_test["stratum"])
        val, test = _tts(val_test, 0.2 / (0.2 + 0.2), seed)
    # df has a RangeIndex, so index labels are the positional rows.
    return tuple(part.index.to_numpy(dtype=np.int64) for part in (train, val, test))


def reference_merge(labels: pd.Series) -> pd.Series:
    labels = labels.copy()
    counts = labels.value_counts()
    for cls in sorted(counts.index):
        if counts[cls] <= 1:
            labels[labels == cls] = cls + 1
    return labels


def assert_same_split(ours: protocol.Split, theirs) -> None:
    for part, expected in zip(("train", "val", "test"), theirs):
        got = getattr(ours, part)
        assert got.dtype == np.int64, part
        np.testing.assert_array_equal(got, expected, err_msg=f"{ours.name} {part}")


# --------------------------------------------------------------------------- splits
def test_split_names_in_released_order():
    assert protocol.SPLITS == (
        "all", "task-person", "task-face", "loov-coco", "loov-voc", "loov-lfw", "loov-celeba",
        "anon-mask", "anon-inpaint", "anon-blurpix",
    )


@pytest.mark.parametrize("frame", [HA1_LIKE, HA2_LIKE], ids=["HA1-like-2500", "HA2-like-3000"])
@pytest.mark.parametrize("seed", [42, 7])
def test_every_split_matches_sklearn_row_for_row(frame, seed):
    for name in protocol.SPLITS:
        ours = protocol.make_split(frame, name, seed=seed)
        theirs = reference_split(frame, name, seed)
        assert_same_split(ours, theirs)
        # A partition of the rows it uses, with no row twice.
        used = np.concatenate([ours.train, ours.val, ours.test])
        assert len(np.unique(used)) == len(used)


def test_sizes_are_60_20_20_on_all():
    split = protocol.make_split(HA1_LIKE, "all")
    assert (len(split.train), len(split.val), len(split.test)) == (1500, 500, 500)


def test_extra_columns_and_index_are_ignored():
    shuffled = HA1_LIKE.set_index(np.arange(len(HA1_LIKE))[::-1] * 3)
    shuffled = shuffled.assign(extra=1.0)[["extra", "score_mean", "method", "dataset"]]
    for name in ("all", "task-face", "anon-blurpix"):
        assert_same_split(protocol.make_split(shuffled, name), reference_split(HA1_LIKE, name, 42))


def test_stratum_rounding_is_half_to_even():
    scores = np.array([1.0, 4.4, 4.5, 4.6, 5.5, 6.5, 9.5, 9.6, 10.0])
    np.testing.assert_array_equal(protocol.strata(scores), [0, 0, 0, 1, 2, 2, 6, 6, 6])


def test_sparse_strata_merge_like_released_counts_taken_once():
    # 0 and 1 are singletons: 0 -> 1, then 1 (count taken before merging: 1) -> 2, so both
    # rows end in 2; 5 is a singleton at the top and moves to a new stratum 6.
    labels = pd.Series([0, 1, 2, 2, 3, 3, 3, 5])
    expected = reference_merge(labels).to_numpy()
    np.testing.assert_array_equal(protocol._merge_sparse_strata(labels.to_numpy()), expected)
    np.testing.assert_array_equal(expected, [2, 2, 2, 2, 3, 3, 3, 6])


def test_task_split_with_merged_strata_matches_sklearn():
    # Small task frames where some stratum ends up with one row in val+test, so the merge
    # changes the labels; the two implementations must still agree row for row.
    merged_cases = 0
    for seed in range(40):
        frame = released_frame(60, seed=100 + seed)
        df = _ref_with_strata(frame)
        task = df[df["dataset"].isin(["celeba", "lfw"])]
        try:
            _, val_test = _tts(task, 0.4, 42)
            theirs = reference_split(frame, "task-face", 42)
        except ValueError:
            with pytest.raises(SplitError):
                protocol.make_split(frame, "task-face")
            continue
        merged_cases += int(val_test["stratum"].value_counts().min() <= 1)
        assert_same_split(protocol.make_split(frame, "task-face"), theirs)
    assert merged_cases > 0, "no case exercised the merge of sparse strata"


def _frame(scores, datasets=None, methods=None) -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame(
        {
            "dataset": datasets if datasets is not None else ["coco"] * n,
            "method": methods if methods is not None else ["inpaint"] * n,
            "score_mean": scores,
        }
    )


def test_single_member_stratum_is_a_one_line_split_error():
    scores = [6.0] * 20 + [10.0]  # score 10 has a single pair
    with pytest.raises(ValueError):
        sklearn_split(_ref_with_strata(_frame(scores)), test_size=0.2, stratify=protocol.strata(scores), random_state=42)
    with pytest.raises(SplitError) as info:
        protocol.make_split(_frame(scores), "all", source="HA1.csv")
    message = str(info.value)
    assert "\n" not in message
    for needed in ("HA1.csv", "'all'", "train+val/test", "score 10", "--split"):
        assert needed in message, needed


def test_pooled_stratum_is_named_as_scores_1_to_4():
    scores = [6.0] * 20 + [2.0]
    with pytest.raises(SplitError, match="scores 1-4"):
        protocol.make_split(_frame(scores), "all")


def test_fewer_test_rows_than_strata():
    # 10 rows over 5 strata, two each: the 0.2 test part has 2 rows for 5 strata.
    scores = [2.0, 2.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 8.0, 8.0]
    with pytest.raises(ValueError):
        sklearn_split(np.arange(10), test_size=0.2, stratify=protocol.strata(scores), random_state=42)
    with pytest.raises(SplitError) as info:
        protocol.make_split(_frame(scores), "all", source="tiny.csv")
    message = str(info.value)
    assert "\n" not in message and "tiny.csv" in message and "5 score strata" in message


def test_empty_frame_and_empty_task_are_split_errors():
    with pytest.raises(SplitError, match="'all'"):
        protocol.make_split(_frame([]), "all")
    with pytest.raises(SplitError, match="'task-face'"):
        protocol.make_split(_frame([5.0, 6.0] * 10), "task-face")  # only coco rows


def test_unknown_split_lists_allowed_names():
    with pytest.raises(SplitError) as info:
        protocol.make_split(HA1_LIKE, "loov-imagenet")
    assert "loov-celeba" in str(info.value) and "anon-blurpix" in str(info.value)


def test_anon_split_without_held_out_rows_is_empty_not_an_error():
    split = protocol.make_split(HA2_LIKE, "anon-mask")
    assert split.empty and split.test.size == 0
    assert len(split.train) + len(split.val) == len(HA2_LIKE)
    assert not protocol.make_split(HA1_LIKE, "anon-mask").empty


def test_method_families_group_blur_and_pixelate():
    methods = ["blur", "pixelate", "Pixelation", "blurpix", "inpaint", "mask"] * 10
    frame = _frame([5.0, 6.0, 7.0, 8.0, 9.0, 3.0] * 10, methods=methods)
    split = protocol.make_split(frame, "anon-blurpix")
    np.testing.assert_array_equal(split.test, [i for i, m in enumerate(methods) if i % 6 < 4])
    assert protocol.method_family("inpaint") == "inpaint"


# --------------------------------------------------------------------------- write_splits
def _table(raw: pd.DataFrame, name: str) -> SimpleNamespace:
    frame = raw.rename(columns={"img1": "original", "img2": "anonymized"})
    return SimpleNamespace(raw=raw, frame=frame, source=Path("/data") / name)


def test_write_splits_writes_released_rows_and_reports_empty(tmp_path):
    raw = released_frame(300, methods=("inpaint", "blurpix"), seed=5)
    lines = protocol.write_splits(_table(raw, "HA2.csv"), tmp_path, splits=["all", "anon-mask"])
    assert len(lines) == 2
    assert lines[0].startswith("HA2/all: train 180, val 60, test 60 -> ")
    assert lines[1].startswith("HA2/anon-mask: test set EMPTY (no rows with method family 'mask')")
    for name in ("all", "anon-mask"):
        split = protocol.make_split(raw, name)
        folder = tmp_path / "dataset_splits" / "HA2" / name
        assert sorted(p.name for p in folder.iterdir()) == ["test.csv", "train.csv", "val.csv"]
        for part in ("train", "val", "test"):
            text = (folder / f"{part}.csv").read_text()
            assert text == raw.iloc[getattr(split, part)].to_csv(index=False)
    assert pd.read_csv(tmp_path / "dataset_splits" / "HA2" / "anon-mask" / "test.csv").empty


def test_write_splits_rejects_unknown_names_before_writing(tmp_path):
    with pytest.raises(SplitError, match="allowed"):
        protocol.write_splits(_table(released_frame(100), "HA1.csv"), tmp_path, splits=["all", "nope"])
    assert not (tmp_path / "dataset_splits").exists()


# --------------------------------------------------------------------------- labels
def released_label(score: float, granularity: str, classification: bool, compat: bool):
    """The released utils.py rules, one Python float at a time."""
    if granularity == "mean":
        return np.float32((score - 1) / (10 - 1))
    if granularity == "labels10":
        label, top = round(score) - 1, 9
    elif granularity == "labels5":
        label = 0 if score < 3 else 1 if score < 5 else 2 if score < 7 else 3 if score < 9 else 4
        top = 4
    elif granularity == "labels3":
        label, top = (0 if score < 5 else 1 if score < 8 else 2), 2
    else:
        label = (0 if score > 5 else 1) if compat else (1 if score > 5 else 0)
        return label if classification else np.float32(label)
    return label if classification else np.float32(label / top)


SCORES = np.round(np.arange(1.0, 10.0 + 1e-9, 0.05), 2)


def test_score_grid_holds_the_exact_halves():
    for half in (1.5, 2.5, 3.5, 4.5, 5.5, 8.5, 9.5):
        assert half in SCORES
    assert SCORES[0] == 1.0 and SCORES[-1] == 10.0


@pytest.mark.parametrize("granularity", protocol.GRANULARITIES)
@pytest.mark.parametrize("classification", [True, False])
@pytest.mark.parametrize("compat", [False, True])
def test_labels_match_released_rules(granularity, classification, compat):
    if granularity == "mean" and classification:
        with pytest.raises(InputError, match="regression-only"):
            protocol.labels(SCORES, granularity, classification=True)
        return
    got = protocol.labels(SCORES, granularity, classification=classification, binary_compat=compat)
    expected = np.array([released_label(float(s), granularity, classification, compat) for s in SCORES])
    assert got.dtype == (np.int64 if classification else np.float32)
    np.testing.assert_array_equal(got, expected.astype(got.dtype))


def test_binary_directions():
    scores = np.array([1.0, 5.0, 5.05, 10.0])
    np.testing.assert_array_equal(protocol.labels(scores, "binary", classification=True), [0, 0, 1, 1])
    np.testing.assert_array_equal(
        protocol.labels(scores, "binary", classification=True, binary_compat=True), [1, 1, 0, 0]
    )


def test_labels10_half_to_even():
    got = protocol.labels(np.array([1.5, 2.5, 3.5, 4.5, 9.5]), "labels10", classification=True)
    np.testing.assert_array_equal(got, [1, 1, 3, 3, 9])


def test_label_errors_list_allowed_values():
    with pytest.raises(InputError, match="labels5"):
        protocol.labels(SCORES, "labels7", classification=True)
    with pytest.raises(InputError, match="1 to 10"):
        protocol.labels(np.array([0.5]), "labels10", classification=True)
    assert [protocol.n_classes(g) for g in protocol.GRANULARITIES[1:]] == [10, 5, 3, 2]
    with pytest.raises(InputError):
        protocol.n_classes("mean")


def test_class_to_score_inverts_the_regression_scale():
    np.testing.assert_allclose(protocol.class_to_score(np.arange(10), "labels10"), np.arange(1, 11))
    np.testing.assert_allclose(protocol.class_to_score([0, 2], "labels3"), [1, 10])
    np.testing.assert_allclose(protocol.class_to_score([0, 1], "binary", binary_compat=True), [10, 1])


def test_synthetic_frames_populate_every_stratum():
    for frame in (HA1_LIKE, HA2_LIKE):
        counts = np.bincount(protocol.strata(frame["score_mean"]), minlength=7)
        assert len(counts) == 7 and counts.min() >= 20


def test_missing_score_is_an_input_error_naming_the_file():
    with pytest.raises(InputError, match="HA1.csv: score_mean"):
        protocol.make_split(_frame([5.0, float("nan")] * 10), "all", source="HA1.csv")
