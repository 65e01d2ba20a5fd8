"""Annotations -> one validated table of (original, anonymized, score) pairs.

The released PerceptAnon files (``HA1.csv``, ``HA2.csv``) have the columns::

    img1, img2, dataset, scope, method, <one column per annotator ...>, score_mean

``img1`` is the original image and ``img2`` its anonymized version, both relative to the
image root (by default the CSV's folder); ``dataset`` is coco/voc/lfw/celeba, ``scope``
local/global; each annotator column holds that annotator's integer score 1-10 (empty where
they skipped the pair) and ``score_mean`` their mean (1-10).

A generic CSV can use other names through a column mapping, e.g.
``original=src,anonymized=dst,score_mean=mos,annotators=r1;r2`` (see
`parse_column_mapping`). With a mapping only original, anonymized and score_mean are
required; dataset/scope/method fall back to their released names (or the canonical name)
and are left empty when the file has no such column. Annotator columns are the ones given by
``annotators=``, otherwise every column between ``method`` and ``score_mean`` (released layout).

`load_pairs` reads the table and raises `InputError` on the first problem (it does not open
images). `validate` collects every problem, one line each, opens every referenced image once
through `bench.data.images.check_image` and compares the sizes of each pair under the size policy.
Line numbers are those of the CSV file: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

from bench.data import images
from bench.errors import ImageError, InputError, printable

#: Released column name -> canonical name.
RELEASED_COLUMNS = {
    "img1": "original",
    "img2": "anonymized",
    "dataset": "dataset",
    "scope": "scope",
    "method": "method",
    "score_mean": "score_mean",
}
CANONICAL_COLUMNS = ("original", "anonymized", "dataset", "scope", "method", "score_mean")
_RELEASED_NAME = {canon: released for released, canon in RELEASED_COLUMNS.items()}
#: Required when a column mapping is given (the released format requires all six).
REQUIRED_GENERIC = ("original", "anonymized", "score_mean")
PATH_COLUMNS = ("original", "anonymized")
TEXT_COLUMNS = ("dataset", "scope", "method")
MAPPING_KEYS = CANONICAL_COLUMNS + ("annotators",)

SCORE_MIN = 1.0
SCORE_MAX = 10.0
#: Largest accepted |score_mean - mean(annotator scores)|.
MEAN_TOLERANCE = 0.01
KNOWN_DATASETS = ("coco", "voc", "lfw", "celeba")
KNOWN_SCOPES = ("local", "global")

_COLUMNS_HINT = "--columns original=COL,anonymized=COL,score_mean=COL[,dataset=COL,scope=COL,method=COL,annotators=A;B]"


# --------------------------------------------------------------------------- mapping
def parse_column_mapping(spec: str | None) -> dict[str, str] | None:
    """Parse ``"original=src,anonymized=dst,score_mean=mos,annotators=a1;a2"``.

    Returns ``{canonical: column}`` (``annotators`` keeps its ``;``-separated value), or
    None for an empty spec. A bad spec raises `InputError` listing the canonical names.
    """
    if spec is None or not spec.strip():
        return None
    valid = ", ".join(MAPPING_KEYS)
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise InputError(f"bad --columns item {item!r}: expected NAME=COLUMN; names are: {valid}")
        if key not in MAPPING_KEYS:
            raise InputError(f"bad --columns name {key!r}; names are: {valid}")
        if key in mapping:
            raise InputError(f"--columns gives {key!r} twice; names are: {valid}")
        if not value and key != "annotators":
            raise InputError(f"--columns item {item!r} has no column name; names are: {valid}")
        mapping[key] = value
    if not mapping:
        return None
    return mapping


def _annotator_list(value: str) -> list[str]:
    return [a.strip() for a in value.split(";") if a.strip()]


# --------------------------------------------------------------------------- table
#: Optional column of a pairs table: the pair's PII mask, which benchmark runs write (global scope).
MASK_COLUMN = "pii_mask"


@dataclass
class PairsTable:
    """One annotation file as a table of pairs.

    `frame` has the columns original, anonymized, dataset, scope, method, score_mean (float),
    one float column per annotator, and ``row`` (the pair's line number in the CSV file);
    its index equals `raw`'s, so ``raw.loc[frame.index[mask]]`` selects the same rows as
    written in the file.
    """

    frame: pd.DataFrame
    annotators: list[str]
    source: Path
    root: Path
    raw: pd.DataFrame
    #: canonical name -> the column name used in the file (only for columns the file has).
    column_names: dict[str, str] = field(default_factory=dict)
    #: canonical text columns the file does not have (filled with "").
    absent_columns: tuple[str, ...] = ()
    #: non-fatal problems (score_mean disagreeing with the annotators' mean).
    warnings: list[str] = field(default_factory=list)
    sha256: str = field(default="", repr=False)

    @property
    def dataset_hash(self) -> str:
        """sha256 (hex) of the annotation file's bytes, as read."""
        return self.sha256

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_scores(self) -> bool:
        """Whether any pair has a human score (a table loaded for scoring alone may have none)."""
        return bool(self.frame["score_mean"].notna().any())

    def _abs(self, value: str) -> Path:
        p = Path(value)
        # normpath: a benchmark run's pairs.csv reaches originals outside its folder via "..".
        return p if p.is_absolute() else Path(os.path.normpath(self.root / p))

    def original_path(self, i: int) -> Path:
        """Absolute path of the original image of the pair at position `i` (0-based)."""
        return self._abs(self.frame["original"].iat[i])

    def anonymized_path(self, i: int) -> Path:
        """Absolute path of the anonymized image of the pair at position `i` (0-based)."""
        return self._abs(self.frame["anonymized"].iat[i])

    def paths(self, which: str) -> list[Path]:
        """Absolute paths of every pair's ``"original"`` or ``"anonymized"`` image, in order."""
        if which not in PATH_COLUMNS:
            raise ValueError(f"which must be one of {PATH_COLUMNS}, not {which!r}")
        return [self._abs(v) for v in self.frame[which].tolist()]

    def original_paths(self) -> list[Path]:
        return self.paths("original")

    def mask_paths(self) -> list[Path | None] | None:
        """Absolute path of each pair's PII mask (``pii_mask`` column: white = PII), None where a
        pair has none; None when the table has no such column (annotation CSVs)."""
        if MASK_COLUMN not in self.frame.columns:
            return None
        return [self._abs(v) if isinstance(v, str) and v else None for v in self.frame[MASK_COLUMN].tolist()]

    def anonymized_paths(self) -> list[Path]:
        return self.paths("anonymized")

    def where(self, i: int) -> str:
        """``"HA1.csv line 12"`` for the pair at position `i`, for one-line messages."""
        return f"{self.source} line {int(self.frame['row'].iat[i])}"


@dataclass
class _Problem:
    line: int
    message: str
    warning: bool = False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fmt_score(v: float) -> str:
    return f"{v:g}"


def _record_lines(text: str) -> list[int] | None:
    """Start line of every non-blank CSV record (header first), or None if unparseable."""
    starts: list[int] = []
    reader = csv.reader(io.StringIO(text))
    prev_end = 0
    try:
        for rec in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # pandas skips blank lines
            starts.append(start)
    except csv.Error:
        return None
    return starts


def _is_absolute(value: str) -> bool:
    return value.startswith(("/", "\\")) or bool(PureWindowsPath(value).drive)


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def outside_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """Where `path` really is (``..`` and symlinks resolved) when that is outside `root`
    (resolved alike), else None: the one containment rule for every file a user's folder names."""
    real = os.path.realpath(path)
    return None if _inside(real, os.path.realpath(root)) else real


def require_inside(path: str | os.PathLike[str], root: str | os.PathLike[str], *, what: str, where: str,
                   fix: str) -> None:
    """`InputError` when `path` resolves (through a symlink) outside `root`: "WHAT resolves to
    REAL, outside WHERE (through a symlink); FIX, or pass --allow-outside-root"."""
    escaped = outside_root(path, root)
    if escaped is not None:
        raise InputError(f"{what} resolves to {escaped}, outside {where} (through a symlink); {fix}, "
                         "or pass --allow-outside-root")


# --------------------------------------------------------------------------- reading, step by step
# `_read` runs these steps in order. A step that finds the table unusable raises `_Unusable`
# (one problem, reading stops); the others return their problems and reading goes on, so
# `validate` lists every problem of a usable table at once.
class _Unusable(Exception):
    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.problem = _Problem(line, message)


@dataclass(frozen=True)
class _CsvFile:
    """The annotation file as read: its bytes, their text and hash, and the three readings of it."""

    data: bytes
    text: str
    sha256: str
    #: pandas' own types (numbers where a column holds numbers).
    raw: pd.DataFrame
    #: every cell as text, empty cells NaN (the score columns are parsed from these).
    strings: pd.DataFrame
    #: every cell as written: a method called "None" or a dataset "NA" is not a missing value.
    texts: pd.DataFrame


@dataclass(frozen=True)
class _Header:
    """Which file column holds each canonical column, and which hold annotators."""

    #: the CSV line of each data row.
    row_lines: np.ndarray
    #: canonical name -> column name, for the columns the file has.
    column_of: dict[str, str]
    annotators: list[str]


@dataclass(frozen=True)
class _RowLines:
    """Names each row by its CSV line in one-line messages: ``"HA1.csv line 12: ..."``."""

    name: str
    lines: np.ndarray

    def line(self, i: int) -> int:
        return int(self.lines[i])

    def problem(self, i: int, message: str, *, warning: bool = False) -> _Problem:
        return _Problem(self.line(i), f"{self.name} line {self.line(i)}: {message}", warning)


def _read_file(source: Path) -> tuple[bytes, str, str]:
    """The file's bytes, their text and their sha256; `_Unusable` if it is not a readable text file."""
    name = str(source)
    if not source.exists():
        raise _Unusable(f"{name}: annotation file not found; check the path (HA1.csv / HA2.csv or your CSV)")
    if source.is_dir():
        raise _Unusable(f"{name}: is a folder, not an annotation CSV; pass the CSV file itself")
    kind = images.not_a_regular_file(source)
    if kind is not None:  # reading a FIFO or a device would block or never end
        raise _Unusable(f"{name}: is {kind}, not an annotation CSV; pass the CSV file itself")
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise _Unusable(f"{name}: cannot read the annotation file: {_one_line(exc.strerror or exc)}") from None
    sha = hashlib.sha256(data).hexdigest()
    if not data.strip():
        raise _Unusable(f"{name}: empty file (no header, no rows); export the annotations again")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unusable(f"{name}: not UTF-8 text ({_one_line(exc)}); save the CSV as UTF-8") from None
    return data, text, sha


def _parse_csv(source: Path) -> _CsvFile:
    data, text, sha = _read_file(source)
    name = str(source)
    try:
        raw = pd.read_csv(io.BytesIO(data))
        strings = pd.read_csv(io.BytesIO(data), dtype=str)
        texts = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise _Unusable(f"{name}: empty file (no header, no rows); export the annotations again") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise _Unusable(f"{name}: cannot parse the CSV: {_one_line(exc)}; fix that line (every row needs "
                        "as many fields as the header)") from None
    return _CsvFile(data=data, text=text, sha256=sha, raw=raw, strings=strings, texts=texts)


def _line_numbers(text: str, n_rows: int) -> tuple[int, list[int]]:
    """The CSV line of the header and of each of the `n_rows` data rows."""
    starts = _record_lines(text)
    if starts and len(starts) - 1 == n_rows:
        return starts[0], starts[1:]
    return 1, list(range(2, 2 + n_rows))  # pragma: no cover - exotic quoting; one record per line


def _repeated_header_names(name: str, text: str, header_line: int) -> list[_Problem]:
    """A column name given twice (pandas would silently rename the second one)."""
    first_record = next(csv.reader(io.StringIO(text.lstrip("\r\n"))), [])
    counts: dict[str, int] = {}
    for column in first_record:
        counts[column] = counts.get(column, 0) + 1
    return [_Problem(header_line, f"{name} line {header_line}: column name {column!r} appears "
                                  f"{n} times in the header; rename the duplicates")
            for column, n in counts.items() if n > 1]


def _column_mapping(header: list[str], columns: dict[str, str] | None,
                    require_scores: bool) -> tuple[dict[str, str], list[str]]:
    """canonical name -> the column name to look for, and the canonical names that must be present."""
    if columns is None:
        return dict(_RELEASED_NAME), list(CANONICAL_COLUMNS if require_scores else PATH_COLUMNS)
    mapping: dict[str, str] = {}
    for canon in CANONICAL_COLUMNS:
        if columns.get(canon):
            mapping[canon] = columns[canon]
        elif _RELEASED_NAME[canon] in header:
            mapping[canon] = _RELEASED_NAME[canon]
        else:
            mapping[canon] = canon
    needed = REQUIRED_GENERIC if require_scores else PATH_COLUMNS
    required = list(dict.fromkeys(list(needed) + [c for c in CANONICAL_COLUMNS if columns.get(c)]))
    return mapping, required


def _annotator_columns(header: list[str], mapping: dict[str, str], columns: dict[str, str] | None) -> list[str]:
    """``annotators=`` of the mapping, else (released layout) every column between method and score_mean."""
    if columns is not None and "annotators" in columns:
        return _annotator_list(columns["annotators"])
    method, score_mean = mapping["method"], mapping["score_mean"]
    if method in header and score_mean in header and header.index(method) < header.index(score_mean):
        return header[header.index(method) + 1: header.index(score_mean)]
    return []


def _read_header(name: str, csv_file: _CsvFile, columns: dict[str, str] | None, require_scores: bool,
                 problems: list[_Problem]) -> _Header:
    """Map the header onto the canonical columns; `_Unusable` when a required column is missing,
    an annotator column clashes with a pair column, or there is no data row."""
    raw = csv_file.raw
    header = [str(c) for c in raw.columns]
    header_line, lines = _line_numbers(csv_file.text, len(raw))
    problems += _repeated_header_names(name, csv_file.text, header_line)
    mapping, required = _column_mapping(header, columns, require_scores)
    missing = [mapping[c] for c in required if mapping[c] not in header]
    annotators = _annotator_columns(header, mapping, columns)
    if columns is not None and "annotators" in columns:
        missing += [a for a in annotators if a not in header]
    if missing:
        raise _Unusable(
            f"{name} line {header_line}: missing required column(s) {', '.join(repr(m) for m in missing)} "
            f"(found: {', '.join(map(repr, header)) or 'none'}); rename the header or map your names with {_COLUMNS_HINT}",
            header_line,
        )
    used = {mapping[c] for c in CANONICAL_COLUMNS if mapping[c] in header}
    reserved = set(CANONICAL_COLUMNS) | {"row"}
    clash = [a for a in annotators if a in used or a in reserved]
    if clash:
        raise _Unusable(f"{name} line {header_line}: annotator column(s) {', '.join(map(repr, clash))} clash with "
                        f"the pair columns; rename them or list the annotators with --columns annotators=A;B",
                        header_line)
    if len(raw) == 0:
        raise _Unusable(f"{name}: no data rows (only a header); the table is empty", header_line)
    return _Header(row_lines=np.asarray(lines, dtype=np.int64),
                   column_of={c: mapping[c] for c in CANONICAL_COLUMNS if mapping[c] in header},
                   annotators=list(annotators))


def _text_columns(csv_file: _CsvFile, header: _Header) -> pd.DataFrame:
    """The frame's path and text columns as written ("" for a text column the file lacks)."""
    frame = pd.DataFrame(index=csv_file.raw.index)
    for canon in PATH_COLUMNS + TEXT_COLUMNS:
        column = header.column_of.get(canon)
        if column is None:
            frame[canon] = ""
            continue
        frame[canon] = csv_file.texts[column].astype(str)
        csv_file.raw[column] = csv_file.texts[column]  # the split CSVs write them back as they were
    return frame


def _score_values(cells: pd.Series, column: str, label: str, *, allow_empty: bool,
                  rows: _RowLines) -> tuple[np.ndarray, list[_Problem]]:
    """A score column as floats on SCORE_MIN..SCORE_MAX, NaN where a cell is empty or invalid."""
    problems: list[_Problem] = []
    numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    empty = cells.isna().to_numpy()
    values = numbers.copy()
    for i in np.flatnonzero(empty) if not allow_empty else ():
        problems.append(rows.problem(i, f"empty {column!r} ({label}); fill in a score "
                                        f"from {SCORE_MIN:g} to {SCORE_MAX:g} or remove the row"))
    for i in np.flatnonzero(~empty & np.isnan(numbers)):
        problems.append(rows.problem(i, f"non-numeric score {cells.iat[i]!r} in column "
                                        f"{column!r} ({label}); scores are numbers from {SCORE_MIN:g} to "
                                        f"{SCORE_MAX:g} (leave an annotator's cell empty if they skipped)"))
        values[i] = np.nan
    with np.errstate(invalid="ignore"):
        outside = ~np.isnan(numbers) & ~((numbers >= SCORE_MIN) & (numbers <= SCORE_MAX))
    for i in np.flatnonzero(outside):
        problems.append(rows.problem(i, f"score {cells.iat[i].strip()} in column {column!r} "
                                        f"({label}) is outside {SCORE_MIN:g}..{SCORE_MAX:g}; fix or remove it"))
        values[i] = np.nan
    return values, problems


def _add_scores(frame: pd.DataFrame, csv_file: _CsvFile, header: _Header, *, require_scores: bool,
                rows: _RowLines, problems: list[_Problem]) -> np.ndarray:
    """score_mean and one column per annotator into `frame`; returns the rows where an annotator's
    cell holds something that is not a valid score (their mean is not checked)."""
    score_mean = header.column_of.get("score_mean")
    if score_mean is None:
        frame["score_mean"] = np.nan
    else:
        frame["score_mean"], found = _score_values(csv_file.strings[score_mean], score_mean, "mean score",
                                                   allow_empty=not require_scores, rows=rows)
        problems += found
    invalid_cell = np.zeros(len(frame), dtype=bool)
    for annotator in header.annotators:
        values, found = _score_values(csv_file.strings[annotator], annotator, "annotator score",
                                      allow_empty=True, rows=rows)
        problems += found
        invalid_cell |= csv_file.strings[annotator].notna().to_numpy() & np.isnan(values)
        frame[annotator] = values
    return invalid_cell


def _mean_disagreements(frame: pd.DataFrame, header: _Header, invalid_cell: np.ndarray,
                        rows: _RowLines) -> list[_Problem]:
    """Warnings (not errors) where score_mean is not the mean of the pair's annotator scores."""
    if not header.annotators:
        return []
    scores = frame[header.annotators].to_numpy(dtype=np.float64)
    count = (~np.isnan(scores)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(scores, axis=1) / count
    score_mean = frame["score_mean"].to_numpy()
    checked = (count > 0) & ~np.isnan(score_mean) & ~invalid_cell
    off = checked & (np.abs(score_mean - mean) > MEAN_TOLERANCE + 1e-9)
    return [rows.problem(i, f"score_mean {_fmt_score(score_mean[i])} differs from the "
                            f"mean of its {count[i]} annotator scores ({mean[i]:.4f}) by more than "
                            f"{MEAN_TOLERANCE:g}; recompute {header.column_of['score_mean']!r} or check the "
                            "annotator columns", warning=True)
            for i in np.flatnonzero(off)]


def _empty_text_cells(frame: pd.DataFrame, header: _Header, columns: dict[str, str] | None,
                      rows: _RowLines) -> list[_Problem]:
    """A pair of the released format (or a mapped column) names its dataset, scope and method;
    the splits select rows by them, so empty is an error."""
    problems = []
    for canon in TEXT_COLUMNS:
        if canon in header.column_of and (columns is None or columns.get(canon)):
            for i in np.flatnonzero(~frame[canon].str.strip().astype(bool).to_numpy()):
                problems.append(rows.problem(i, f"empty {header.column_of[canon]!r} (the pair's {canon}); "
                                                "fill it in or remove the row"))
    return problems


def _path_problem(value: str, root_norm: str, allow_outside_root: bool) -> str | None:
    """Why the image path `value` (non-empty) must not be opened, or None."""
    if _is_absolute(value):
        if allow_outside_root:
            return None
        return (f"absolute path {value!r}; make it relative to the image root {root_norm} "
                "(or pass --allow-outside-root)")
    if allow_outside_root:
        return None
    joined = os.path.normpath(os.path.join(root_norm, value))
    if not _inside(joined, root_norm):
        return (f"path {value!r} leaves the image root {root_norm} (via '..'); fix the path, "
                "--root, or pass --allow-outside-root")
    if os.path.lexists(joined) and (escaped := outside_root(joined, root_norm)) is not None:
        return (f"path {value!r} resolves outside the image root {root_norm} through a symlink "
                f"(to {escaped}); fix the link, --root, or pass --allow-outside-root")
    return None


def _bad_paths(frame: pd.DataFrame, header: _Header, root_norm: str, allow_outside_root: bool,
               rows: _RowLines) -> tuple[list[_Problem], dict[str, np.ndarray]]:
    """Empty, absolute and escaping image paths, and per path column the rows not to open."""
    problems: list[_Problem] = []
    bad_cells: dict[str, np.ndarray] = {}
    verdicts: dict[str, str | None] = {}  # a path repeated over many rows is checked once
    for canon in PATH_COLUMNS:
        bad = bad_cells[canon] = np.zeros(len(frame), dtype=bool)
        column = header.column_of[canon]
        for i, value in enumerate(frame[canon].tolist()):
            if not value.strip():
                problems.append(rows.problem(i, f"empty {column!r} (the {canon} image path); "
                                                "fill it in or remove the row"))
                bad[i] = True
                continue
            if value not in verdicts:
                verdicts[value] = _path_problem(value, root_norm, allow_outside_root)
            if verdicts[value]:
                problems.append(rows.problem(i, f"column {column!r}: {verdicts[value]}"))
                bad[i] = True
    return problems, bad_cells


def _duplicate_pairs(frame: pd.DataFrame, header: _Header, rows: _RowLines) -> list[_Problem]:
    """Rows naming the same (original, anonymized) pair as an earlier row."""
    problems = []
    first_line: dict[tuple[str, str], int] = {}
    for i, (original, anonymized) in enumerate(zip(frame["original"].tolist(), frame["anonymized"].tolist())):
        if not original.strip() or not anonymized.strip():
            continue
        key = (os.path.normpath(original), os.path.normpath(anonymized))
        if key in first_line:
            problems.append(rows.problem(i, f"duplicate pair ({header.column_of['original']} {original!r}, "
                                            f"{header.column_of['anonymized']} {anonymized!r}) already on line "
                                            f"{first_line[key]}; remove one of the two rows"))
        else:
            first_line[key] = rows.line(i)
    return problems


def _read(path: str | os.PathLike[str], root: str | os.PathLike[str] | None, columns: dict[str, str] | str | None,
          allow_outside_root: bool, require_scores: bool = True,
          ) -> tuple[PairsTable | None, list[_Problem], dict[str, np.ndarray]]:
    """Read and check the table (no image is opened).

    With `require_scores` False only the two image columns are required: score_mean may be
    absent (then NaN) or empty, and the released layout's dataset/scope/method columns may be
    absent too (then empty), as with a column mapping.

    Returns (table or None, problems, bad_cells) where bad_cells maps "original"/"anonymized"
    to a boolean array of the rows whose path must not be opened (empty, absolute, outside root).
    """
    source = Path(path)
    name = str(source)
    if isinstance(columns, str):
        columns = parse_column_mapping(columns)
    problems: list[_Problem] = []
    try:
        csv_file = _parse_csv(source)
        root_path = (Path(root) if root is not None else source.parent).absolute()
        header = _read_header(name, csv_file, columns, require_scores, problems)
    except _Unusable as exc:
        return None, [*problems, exc.problem], {}
    rows = _RowLines(name, header.row_lines)
    frame = _text_columns(csv_file, header)
    invalid_cell = _add_scores(frame, csv_file, header, require_scores=require_scores, rows=rows, problems=problems)
    frame["row"] = header.row_lines
    problems += _mean_disagreements(frame, header, invalid_cell, rows)
    problems += _empty_text_cells(frame, header, columns, rows)
    path_problems, bad_cells = _bad_paths(frame, header, os.path.normpath(str(root_path)), allow_outside_root, rows)
    problems += path_problems
    problems += _duplicate_pairs(frame, header, rows)
    table = PairsTable(
        frame=frame,
        annotators=list(header.annotators),
        source=source,
        root=root_path,
        raw=csv_file.raw,
        column_names=header.column_of,
        absent_columns=tuple(c for c in TEXT_COLUMNS if c not in header.column_of),
        warnings=[p.message for p in problems if p.warning],
        sha256=csv_file.sha256,
    )
    return table, problems, bad_cells


def _sorted_messages(problems: list[_Problem]) -> list[str]:
    return [p.message for p in sorted(problems, key=lambda p: p.line)]


def load_pairs(path, *, root=None, columns=None, allow_outside_root=False, require_scores=True) -> PairsTable:
    """Read an annotation CSV into a `PairsTable`; `InputError` on the first problem.

    Only the table is checked (columns, scores, paths, duplicates); images are not opened.
    A score_mean that disagrees with its annotators' mean is not fatal here: it is kept in
    ``table.warnings`` (and reported by `validate`). Scores are needed only to correlate:
    with `require_scores` False (`bench score`) a table of image pairs alone loads, its
    score_mean NaN where absent or empty (see `PairsTable.has_scores`).
    """
    table, problems, _ = _read(path, root, columns, allow_outside_root, require_scores)
    errors = _sorted_messages([p for p in problems if not p.warning])
    if errors:
        more = ""
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more problem(s); run `bench validate {path}` to list them all)"
        raise InputError(errors[0] + more)
    assert table is not None
    return table


# --------------------------------------------------------------------------- image root
def _wrong_root_message(table: PairsTable, count: int, first: Path, line: int, column: str) -> str:
    """One line for a table none of whose images exists: names the root and, where one of
    its subfolders holds the first image (the demo's images/), the --root to pass."""
    relative = first.relative_to(table.root) if first.is_relative_to(table.root) else None
    hint = "pass --root, the folder the image paths are relative to"
    if relative is not None and table.root.is_dir():
        for folder in sorted(p for p in table.root.iterdir() if p.is_dir()):
            if (folder / relative).is_file():
                hint = f"pass --root {folder}, the folder the image paths are relative to"
                break
    return (f"{table.source}: none of the {count} images exists under the image root {table.root} "
            f"(line {line} {column!r}: {first}); {hint}")


def check_image_root(table: PairsTable) -> None:
    """`InputError` when not one image of `table` exists: the image root is wrong, and
    scoring every pair only to fail each would hide that behind a page of failures."""
    paths = {}
    for canon in PATH_COLUMNS:
        for i in range(len(table.frame)):
            paths.setdefault(table._abs(table.frame[canon].iat[i]),
                             (int(table.frame["row"].iat[i]), table.column_names.get(canon, canon)))
    if len(paths) > 1 and not any(path.exists() for path in paths):
        first, (line, column) = next(iter(paths.items()))
        raise InputError(_wrong_root_message(table, len(paths), first, line, column))


# --------------------------------------------------------------------------- validate
@dataclass
class ValidationReport:
    table: PairsTable | None
    problems: list[str]
    source: Path | None = None
    root: Path | None = None
    images_checked: int | None = None  # unique image files opened; None when not checked
    resized_pairs: int = 0  # pairs whose sizes differ, accepted under --size-policy resize
    size_policy: str = "error"

    def render(self) -> str:
        out: list[str] = []
        t = self.table
        out.append(f"annotations: {self.source}" + (f" (sha256 {t.dataset_hash[:16]})" if t is not None else ""))
        if self.root is not None:
            out.append(f"image root:  {self.root}")
        if t is not None:
            f = t.frame
            rows = f["row"]
            out.append(f"rows:        {len(f)} (CSV lines {int(rows.min())}-{int(rows.max())})")
            out.append(f"annotators:  {len(t.annotators)}")
            if self.images_checked is None:
                out.append("images:      not opened (--no-images)")
            else:
                extra = ""
                if self.resized_pairs:
                    extra = (f"; {self.resized_pairs} pair(s) differ in size and will be resized "
                             f"({images.RESIZE_FILTER}, --size-policy resize)")
                out.append(f"images:      {self.images_checked} unique file(s) opened{extra}")
            known = {"dataset": KNOWN_DATASETS, "scope": KNOWN_SCOPES}
            unknown: list[str] = []
            for canon in TEXT_COLUMNS:
                if canon in t.absent_columns:
                    out.append(f"{canon + ':':<12} (no such column)")
                    continue
                counts = f[canon].replace("", "(empty)").value_counts()
                out.append(f"{canon + ':':<12} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
                if canon in known:
                    odd = [k for k in counts.index if k not in known[canon]]
                    if odd:
                        unknown.append(f"{canon} {', '.join(map(repr, odd))} (known: {', '.join(known[canon])})")
            for u in unknown:
                out.append(f"note:        values outside the released vocabulary: {u}")
            sm = f["score_mean"].to_numpy(dtype=np.float64)
            sm = sm[~np.isnan(sm)]
            if len(sm):
                out.append(f"score_mean:  mean {sm.mean():.2f}, median {np.median(sm):.2f}, "
                           f"min {sm.min():.2f}, max {sm.max():.2f}")
                counts, edges = np.histogram(sm, bins=np.arange(SCORE_MIN, SCORE_MAX + 1))
                top = max(int(counts.max()), 1)
                for c, lo in zip(counts, edges[:-1]):
                    bar = "#" * int(round(40 * c / top))
                    out.append(f"  {int(lo):>2}-{int(lo) + 1:<2} {bar:<40} {int(c)}")
        if self.problems:
            out.append(f"{len(self.problems)} problem(s):")
            out.extend(f"  {p}" for p in self.problems)
        else:
            out.append("no problems found")
        return "\n".join(printable(line) for line in out)  # a newline in a path stays on its line


def _also(lines: list[int], limit: int = 5) -> str:
    if not lines:
        return ""
    shown = ", ".join(str(n) for n in lines[:limit])
    more = f" and {len(lines) - limit} more" if len(lines) > limit else ""
    return f" (also used on line(s) {shown}{more})"


def validate(path, *, root=None, columns=None, allow_outside_root=False, size_policy="error",
             check_images=True) -> ValidationReport:
    """Check an annotation file and (unless `check_images` is False) every image it names.

    Collects every problem as one line naming the file and the CSV line; never raises for
    bad input except an unknown `size_policy`.
    """
    images.check_size_policy(size_policy)
    table, problems, bad_cells = _read(path, root, columns, allow_outside_root)
    root_path = (Path(root) if root is not None else Path(path).parent).absolute()
    report = ValidationReport(table=None, problems=[], source=Path(path), root=root_path,
                              size_policy=size_policy)
    if table is not None and check_images:
        report.images_checked = 0
        name = str(table.source)
        if not table.root.is_dir():
            problems.append(_Problem(1, f"{name}: image root {table.root} is not a folder; pass --root (the "
                                        "folder the image paths are relative to)"))
        else:
            uses: dict[Path, list[tuple[int, str]]] = {}
            pair_paths: list[tuple[Path | None, Path | None]] = []
            for i in range(len(table.frame)):
                pair: list[Path | None] = []
                for canon in PATH_COLUMNS:
                    if bad_cells[canon][i]:
                        pair.append(None)
                        continue
                    p = table._abs(table.frame[canon].iat[i])
                    uses.setdefault(p, []).append((int(table.frame["row"].iat[i]), table.column_names[canon]))
                    pair.append(p)
                pair_paths.append((pair[0], pair[1]))
            sizes: dict[Path, tuple[int, int]] = {}
            missing = [p for p in uses if not p.exists()]
            if len(uses) > 1 and len(missing) == len(uses):
                # Not one image is where the table says: the root is wrong, not every row.
                first = missing[0]
                line, col = uses[first][0]
                problems.append(_Problem(line, _wrong_root_message(table, len(uses), first, line, col)))
                uses = {}
            for p, refs in uses.items():
                line, col = refs[0]
                others = sorted({n for n, _ in refs[1:] if n != line})
                if not p.exists():
                    problems.append(_Problem(line, f"{name} line {line}: column {col!r}: image not found: {p}; fix "
                                                   f"the path or --root (now {table.root}){_also(others)}"))
                    continue
                try:
                    sizes[p] = images.check_image(p)
                except ImageError as exc:
                    problems.append(_Problem(line, f"{name} line {line}: column {col!r}: {exc}{_also(others)}"))
                report.images_checked += 1
            for i, (po, pa) in enumerate(pair_paths):
                if po is None or pa is None or po not in sizes or pa not in sizes:
                    continue
                if sizes[po] != sizes[pa]:
                    if size_policy == "error":
                        line = int(table.frame["row"].iat[i])
                        problems.append(_Problem(line, images.describe_size_mismatch(
                            f"{name} line {line}", sizes[po], sizes[pa])))
                    else:
                        report.resized_pairs += 1
    report.table = table
    report.problems = _sorted_messages(problems)
    return report
