"""The PerceptAnon data protocol: the ten train/val/test splits and the label granularities.

Splits reproduce the paper's released `generate_splits.py` row for row, including the ORDER
of rows in every part, without calling scikit-learn: the stratified shuffle split that the
released code gets from `sklearn.model_selection.train_test_split(..., stratify=...)` is
re-implemented here with the same sequence of calls on numpy's legacy
`np.random.RandomState(seed)` (a fresh one per split call, as sklearn's `random_state=int`
does). tests/bench/data/test_protocol.py checks every split against scikit-learn itself.

Released algorithm, in short (60 / 20 / 20, seed 42):
- stratum of a row: r = round(score_mean) (half to even); 0 if r <= 4 else r - 4, so scores
  1-4 share one stratum and 5..10 have one each;
- all: (train+val, test) at 0.2, then (train, val) at 0.2/0.8 on train+val;
- loov-<dataset> / anon-<method>: test = the held-out rows in file order, (train, val) at
  0.2/0.8 on the others (file order);
- task-person (coco, voc) / task-face (celeba, lfw): (train, val+test) at 0.4 on the task's
  rows, strata with <= 1 member in val+test merged upward (counts taken once, before any
  merge), then (val, test) at 0.5.

Labels reproduce the released `utils.py` transforms, vectorised; the binary label keeps one
direction with every other granularity (higher = more anonymous) unless `binary_compat`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from bench.errors import InputError, SplitError
from metrics.atomic import write_atomic
from metrics.csvsafe import to_csv_text

# --------------------------------------------------------------------------- splits
# The released code's constants; the size expressions below are written exactly as there so
# that the floating-point fractions (and hence ceil(test_size * n)) are the same.
TRAIN_SIZE = 0.6
VALID_SIZE = 0.2
TEST_SIZE = 0.2
DEFAULT_SEED = 42

#: Split names in the order the released code writes them.
SPLITS: tuple[str, ...] = (
    "all",
    "task-person",
    "task-face",
    "loov-coco",
    "loov-voc",
    "loov-lfw",
    "loov-celeba",
    "anon-mask",
    "anon-inpaint",
    "anon-blurpix",
)

#: Datasets whose rows a task split keeps.
TASK_DATASETS: dict[str, tuple[str, ...]] = {
    "person": ("coco", "voc"),
    "face": ("celeba", "lfw"),
}

#: Method name -> the family an anon-* split holds out. The released data says "blurpix" for
#: blur and pixelation together; our own data may name them apart. Unlisted names map to
#: themselves.
METHOD_FAMILY: dict[str, str] = {
    "blur": "blurpix",
    "pixelate": "blurpix",
    "pixelation": "blurpix",
    "blurpix": "blurpix",
}

_REMEDY = "add pairs with that score, or skip this split with --split"


def method_family(method: str) -> str:
    """The anon-* family of a method name (case and surrounding spaces ignored)."""
    key = str(method).strip().lower()
    return METHOD_FAMILY.get(key, key)


@dataclass(frozen=True, eq=False)
class Split:
    """One split: positional row indices into the frame, int64, in the released order."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def empty(self) -> bool:
        """True when nothing is held out for test (e.g. anon-mask on HA2, which has no masks)."""
        return self.test.size == 0


def strata(scores) -> np.ndarray:
    """Stratum per row as the released code computes it: round half to even, 1-4 pooled."""
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"score_mean must be numeric: {exc}") from None
    if not np.all(np.isfinite(values)):
        raise InputError("score_mean has missing or non-finite values; fix those rows before splitting")
    rounded = np.rint(values).astype(np.int64)  # pandas Series.round() == np.round == rint here
    return np.where(rounded <= 4, 0, rounded - 4).astype(np.int64)


def _stratum_range(stratum: int) -> str:
    """What a stratum stands for on the rounded-score scale."""
    stratum = int(stratum)
    if stratum <= 0:
        return "scores 1-4"
    if stratum <= 6:
        return f"score {stratum + 4}"
    return f"score 10 (merged up into stratum {stratum})"


class _Impossible(Exception):
    """Raised by `_stratified_split` where scikit-learn would raise; turned into SplitError."""


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draw counts: the floored proportional share, the remainder handed out by
    largest fractional part with ties broken at random (the same RNG calls as sklearn)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(np.int64)


def _stratified_split(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) local indices into `y`, as train_test_split(stratify=y, random_state=seed)."""
    n_samples = len(y)
    n_test = math.ceil(test_size * n_samples)
    n_train = n_samples - n_test
    if n_train == 0:
        raise _Impossible("rows", n_samples)

    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise _Impossible("single", classes[class_counts < 2])
    if n_train < len(classes) or n_test < len(classes):
        raise _Impossible("few", n_samples, n_train, n_test, classes)

    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)

    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for members, count, n_tr, n_te in zip(class_indices, class_counts, n_i, t_i):
        shuffled = members[rng.permutation(count)]
        train.append(shuffled[:n_tr])
        test.append(shuffled[n_tr : n_tr + n_te])
    train_idx = rng.permutation(np.concatenate(train)).astype(np.int64)
    test_idx = rng.permutation(np.concatenate(test)).astype(np.int64)
    return train_idx, test_idx


def _merge_sparse_strata(labels: np.ndarray) -> np.ndarray:
    """The released adjust_low_sample_classes: each stratum with <= 1 member (counted ONCE,
    before any merge) is relabelled to the next stratum up, in ascending order. Because the
    counts are not updated, a chain of singletons moves up together; replicated on purpose."""
    merged = np.asarray(labels, dtype=np.int64).copy()
    classes, counts = np.unique(merged, return_counts=True)
    for cls, count in zip(classes, counts):
        if count <= 1:
            merged[merged == cls] = cls + 1
    return merged


def _normalised(values) -> np.ndarray:
    """Dataset names compared case- and space-insensitively (the released data is lower case,
    so this selects the same rows there)."""
    import pandas as pd

    return pd.Series(values).astype(str).str.strip().str.lower().to_numpy()


def _check_name(name: str) -> None:
    if name not in SPLITS:
        raise SplitError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}")


def _column(frame, column: str, source: str, name: str) -> np.ndarray:
    if column not in frame.columns:
        raise SplitError(
            f"{source}: split '{name}' needs a '{column}' column, which the table lacks; "
            f"add it, or skip this split with --split"
        )
    return frame[column].to_numpy()


def _split_or_raise(
    positions: np.ndarray,
    labels: np.ndarray,
    test_size: float,
    seed: int,
    *,
    source: str,
    name: str,
    part: str,
    rows: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of `positions` (frame rows, in order) by `labels`; one-line errors.
    `rows` says which rows are being split (for the message)."""
    try:
        first, second = _stratified_split(labels, test_size, seed)
    except _Impossible as exc:
        kind, *details = exc.args
        where = f"{source}: split '{name}' ({part})"
        if kind == "rows":
            raise SplitError(
                f"{where}: only {details[0]} row(s) {rows}, too few to split; "
                f"add pairs, or skip this split with --split"
            ) from None
        if kind == "single":
            lonely = [_stratum_range(c) for c in details[0]]
            if len(lonely) == 1:
                has, remedy = f"stratum {lonely[0]} has", _REMEDY
            else:
                has = f"strata {', '.join(lonely)} each have"
                remedy = _REMEDY.replace("that score", "those scores")
            raise SplitError(
                f"{where}: the {has} a single pair among the {len(labels)} rows {rows}, "
                f"and stratification needs at least 2; {remedy}"
            ) from None
        n_samples, n_train, n_test, classes = details
        present = ", ".join(_stratum_range(c) for c in classes)
        first_part, second_part = part.split("/")
        raise SplitError(
            f"{where}: the {n_samples} rows {rows} give {first_part} {n_train} and {second_part} {n_test} rows, "
            f"fewer than the {len(classes)} score strata ({present}) that each part must hold; "
            f"add pairs, or skip this split with --split"
        ) from None
    return positions[first], positions[second]


def make_split(frame, name: str, *, seed: int = DEFAULT_SEED, source: str = "annotations") -> Split:
    """One split of `frame` (columns dataset, method, score_mean; others ignored) exactly as
    the released generate_splits.py makes it. Indices are positional (iloc) rows of `frame`."""
    _check_name(name)
    kind, _, target = name.partition("-")
    n_rows = len(frame)
    try:
        stratum = strata(_column(frame, "score_mean", source, name))
    except SplitError:
        raise
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    everything = np.arange(n_rows, dtype=np.int64)

    def split(positions: np.ndarray, test_size: float, part: str, rows: str) -> tuple[np.ndarray, np.ndarray]:
        return _split_or_raise(
            positions, stratum[positions], test_size, seed, source=source, name=name, part=part, rows=rows
        )

    if kind == "all":
        train_val, test = split(everything, TEST_SIZE, "train+val/test", "in the table")
        train, val = split(train_val, VALID_SIZE / (TRAIN_SIZE + VALID_SIZE), "train/val", "in train+val")
    elif kind in ("loov", "anon"):
        if kind == "loov":
            held_out = _normalised(_column(frame, "dataset", source, name)) == target
        else:
            methods = _column(frame, "method", source, name)
            held_out = np.fromiter((method_family(m) == target for m in methods), dtype=bool, count=n_rows)
        test = everything[held_out]
        rest = f"outside {_held_out_description(name)}"
        train, val = split(everything[~held_out], VALID_SIZE / (TRAIN_SIZE + VALID_SIZE), "train/val", rest)
    else:  # task
        datasets = _normalised(_column(frame, "dataset", source, name))
        members = TASK_DATASETS[target]
        task_rows = everything[np.isin(datasets, members)]
        train, val_test = split(task_rows, VALID_SIZE + TEST_SIZE, "train/val+test", f"from datasets {'/'.join(members)}")
        val, test = _split_or_raise(
            val_test,
            _merge_sparse_strata(stratum[val_test]),
            TEST_SIZE / (VALID_SIZE + TEST_SIZE),
            seed,
            source=source,
            name=name,
            part="val/test",
            rows="in val+test (sparse strata merged upward)",
        )

    for part in (train, val, test):
        part.setflags(write=False)
    return Split(name=name, train=train, val=val, test=test)


def _held_out_description(name: str) -> str:
    kind, _, target = name.partition("-")
    if kind == "anon":
        return f"method family '{target}'"
    return f"dataset '{target}'"


def _write_csv_atomic(rows, path: Path) -> None:
    write_atomic(path, to_csv_text(rows))


def write_splits(table, out_dir: Path, *, splits: Iterable[str] | None = None, seed: int = DEFAULT_SEED) -> list[str]:
    """Write out_dir/dataset_splits/<CSV stem>/<split>/{train,val,test}.csv as the released
    code does (the CSV's own columns, released row order) and return one line per split.

    `table` is a bench.data.dataset.PairsTable (or anything with .raw, .frame and .source). Every
    split is computed before any file is written, so an impossible split writes nothing."""
    names = list(dict.fromkeys(SPLITS if splits is None else splits))
    for name in names:
        _check_name(name)
    source = Path(table.source)
    made = [make_split(table.frame, name, seed=seed, source=str(source)) for name in names]

    lines = []
    for split in made:
        folder = Path(out_dir) / "dataset_splits" / source.stem / split.name
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("train", "val", "test"):
            _write_csv_atomic(table.raw.iloc[getattr(split, part)], folder / f"{part}.csv")
        label = f"{source.stem}/{split.name}"
        if split.empty:
            lines.append(
                f"{label}: test set EMPTY (no rows with {_held_out_description(split.name)}); "
                f"train {len(split.train)}, val {len(split.val)} -> {folder}"
            )
        else:
            lines.append(
                f"{label}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)} -> {folder}"
            )
    return lines


# --------------------------------------------------------------------------- labels
GRANULARITIES: tuple[str, ...] = ("mean", "labels10", "labels5", "labels3", "binary")

_N_CLASSES = {"labels10": 10, "labels5": 5, "labels3": 3, "binary": 2}


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise InputError(f"unknown label granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")


def n_classes(granularity: str) -> int:
    """Number of classes of a classification granularity ('mean' is regression-only)."""
    _check_granularity(granularity)
    if granularity == "mean":
        raise InputError("granularity 'mean' is regression-only and has no classes; use labels10, labels5, labels3 or binary")
    return _N_CLASSES[granularity]


def _classes(scores: np.ndarray, granularity: str, binary_compat: bool) -> np.ndarray:
    if granularity == "labels10":
        return np.rint(scores).astype(np.int64) - 1  # Python round(): half to even, like rint
    if granularity == "labels5":
        return np.searchsorted([3.0, 5.0, 7.0, 9.0], scores, side="right").astype(np.int64)
    if granularity == "labels3":
        return np.searchsorted([5.0, 8.0], scores, side="right").astype(np.int64)
    anonymous = scores > 5.0  # binary
    return (~anonymous if binary_compat else anonymous).astype(np.int64)


def labels(scores, granularity: str, *, classification: bool, binary_compat: bool = False) -> np.ndarray:
    """Training targets from mean scores (1..10) as the released utils.py makes them.

    classification -> int64 class; regression -> float32 class / (n_classes - 1) in [0, 1]
    ('mean': (score - 1) / 9; 'binary': the class itself, as released). Every granularity has
    higher = more anonymous, except binary with binary_compat=True, which reproduces the
    released mapping (score > 5 -> 0, else 1)."""
    _check_granularity(granularity)
    values = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any((values < 1.0) | (values > 10.0)):
        raise InputError("mean scores must be finite numbers from 1 to 10; fix the score_mean column")
    if granularity == "mean":
        if classification:
            raise InputError("granularity 'mean' is regression-only; for classification use labels10, labels5, labels3 or binary")
        return ((values - 1) / (10 - 1)).astype(np.float32)
    classes = _classes(values, granularity, binary_compat)
    if classification:
        return classes
    if granularity == "binary":
        return classes.astype(np.float32)
    return (classes / (_N_CLASSES[granularity] - 1)).astype(np.float32)


def class_to_score(classes, granularity: str, *, binary_compat: bool = False) -> np.ndarray:
    """Place a class (or an expected class, e.g. softmax-weighted) on the 1-10 score scale for
    reporting: class 0 -> 1, the top class -> 10, linearly (labels10: exactly class + 1).
    Monotone, so rank correlations with human scores are unchanged. With binary_compat the
    released binary direction (0 = more anonymous) is undone first."""
    k = n_classes(granularity)
    values = np.asarray(classes, dtype=np.float64)
    if granularity == "binary" and binary_compat:
        values = 1.0 - values
    return 1.0 + 9.0 * values / (k - 1)
