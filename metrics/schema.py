"""The records every stage hands the next, defined once on the lowest layer (bench/ and reports/
both import this; it imports neither): the weights status of a result, the description of a
metric column, and the one JSON codec of every result file.

The JSON rule for numbers (`json_number`): +inf and -inf are the strings "inf" and "-inf", NaN
is null, numpy scalars are plain numbers. Infinities are real values here -- the PSNR of
identical images is +inf, kept in per-pair scores because rank statistics handle it -- so
they must not read back as missing; NaN is undefined (a constant column, an empty split).
Aggregates never average an infinity (they count such pairs apart), so the report files only
ever meet NaN, which is null under either choice. `from_json_number` reads the rule back.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

DAGGER = "†"

# --------------------------------------------------------------------------- weights status


class WeightsStatus(enum.StrEnum):
    """Where the weights behind a result come from; the weakest file decides for a metric.

    Serialized as its value (results.json, the store, leaderboard.json)."""

    #: Every file's sha256 is the published one (or it was converted offline and checked).
    VERIFIED = "verified"
    #: A file the user imported whose hash is not the published one.
    UNVERIFIED = "unverified"
    #: Made up by tests or demos: never a real pretrained network.
    STAND_IN = "stand-in"
    #: The metric needs no weights (pixel metrics).
    NONE = "none"
    #: Values read from the annotation file's own columns (`bench correlate --metric-columns`):
    #: no weights of ours are involved.
    PRECOMPUTED = "precomputed"

    @property
    def marked(self) -> bool:
        """True when every table must mark results made with it (dagger, "[... weights]")."""
        return self in (WeightsStatus.UNVERIFIED, WeightsStatus.STAND_IN)

    @property
    def note(self) -> str:
        """The short note beside a marked result ("stand-in weights"); "" when unmarked."""
        return f"{self.value} weights" if self.marked else ""

    @classmethod
    def parse(cls, value: Any) -> WeightsStatus:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"weights status {value!r} is not one of {', '.join(s.value for s in cls)}") from None

    @classmethod
    def weakest(cls, statuses: Iterable[str]) -> WeightsStatus:
        """A metric's status from its weight files': stand-in < unverified < verified; NONE
        when it has no weight files."""
        found = {cls.parse(status) for status in statuses}
        for status in (cls.STAND_IN, cls.UNVERIFIED):
            if status in found:
                return status
        return cls.VERIFIED if found else cls.NONE


# --------------------------------------------------------------------------- metric info
@dataclass(frozen=True)
class MetricInfo:
    """The one description of a metric column: what tables, plots, the leaderboard and the
    correlations need to know of a metric, built from its class or read from stored JSON."""

    name: str
    label: str
    higher_is_more_anonymous: bool
    weights_status: WeightsStatus = WeightsStatus.NONE
    #: Why the weights are marked, for the footnote ("" when they are not).
    weights_note: str = ""
    #: What an infinite value means (the metric class's `infinite_means`), for the footnote.
    infinite_means: str = "infinite value"
    #: The store's metric key (name, version, config, weights); None when not scored by us.
    key: str | None = None
    #: -1 where the released model's raw output runs the other way (PerceptAnon trained on
    #: the released binary labels): the paper convention's sign.
    released_sign: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights_status", WeightsStatus.parse(self.weights_status))

    @property
    def marked(self) -> bool:
        return self.weights_status.marked

    @property
    def verified(self) -> bool:
        """False when its values come from unverified or stand-in weights: tables mark them."""
        return not self.marked

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_more_anonymous else "↓"

    @property
    def header(self) -> str:
        """Label, direction arrow, and the dagger when the weights are not verified."""
        return f"{self.label}{DAGGER if self.marked else ''} {self.arrow}"

    @classmethod
    def from_metric(cls, metric: Any, *, label: str | None = None, key: str | None = None,
                    weights_status: WeightsStatus | str | None = None) -> MetricInfo:
        """From a built metric (its label, key, weight files and conventions) or from a metric
        class (its declared facts; label, key and weights status as given)."""
        built = not isinstance(metric, type)
        if weights_status is None:
            weights_status = WeightsStatus.weakest(w.status for w in metric.weights()) if built else WeightsStatus.NONE
        status = WeightsStatus.parse(weights_status)
        return cls(
            name=metric.name,
            label=label or (metric.display_label if built else metric.label) or metric.name,
            higher_is_more_anonymous=bool(metric.higher_is_more_anonymous),
            weights_status=status,
            weights_note=status.note,
            infinite_means=metric.infinite_means,
            key=key if key is not None or not built else metric.key(),
            released_sign=int(metric.conventions().get("released_sign", 1)) if built else 1,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, name: str | None = None) -> MetricInfo:
        """From a stored dict (results.json "metrics", a benchmark record's metric entry); `name`
        when the dict is keyed by it. Older bundles lack "weights_status": it follows from
        "verified", and a dict without "verified" counts as unverified (a missing flag must
        not hide stand-in weights)."""
        data = dict(data) if name is None else {"name": name, **data}
        missing = [key for key in ("name", "higher_is_more_anonymous") if key not in data]
        if missing:
            raise ValueError(f"metric info {data!r} lacks {', '.join(missing)}")
        stored = data.get("weights_status")
        status = WeightsStatus.parse(stored) if stored else (
            WeightsStatus.VERIFIED if data.get("verified", False) else WeightsStatus.UNVERIFIED)
        return cls(
            name=str(data["name"]),
            label=str(data.get("label") or data["name"]),
            higher_is_more_anonymous=bool(data["higher_is_more_anonymous"]),
            weights_status=status,
            weights_note=str(data.get("weights_note") or status.note),
            infinite_means=str(data.get("infinite_means") or cls.infinite_means),
            key=data.get("key"),
            released_sign=int(data.get("released_sign", 1)),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored dict (results.json "metrics"); "verified" is kept for older readers."""
        return {"name": self.name, "label": self.label, "higher_is_more_anonymous": self.higher_is_more_anonymous,
                "verified": self.verified, "weights_note": self.weights_note,
                "weights_status": self.weights_status.value, "key": self.key, "released_sign": self.released_sign}


#: What renderers accept as metric columns: MetricInfo records, or their stored dicts (a list, or
#: a mapping name -> dict) as results.json and older bundles hold them.
MetricInfos = Iterable[MetricInfo | Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]


def metric_infos(metrics: MetricInfos) -> list[MetricInfo]:
    """MetricInfo records from records or stored dicts, in order (the one reader of stored ones)."""
    if isinstance(metrics, Mapping):
        return [MetricInfo.from_json(info, name=name) for name, info in metrics.items()]
    return [info if isinstance(info, MetricInfo) else MetricInfo.from_json(info) for info in metrics]


# --------------------------------------------------------------------------- JSON codec
#: How the rule reads in a file that states it (scores.json "value_encoding").
VALUE_ENCODING = 'JSON numbers; +inf and -inf as the strings "inf" and "-inf"; NaN and missing as null'
_INFINITIES = {"inf": math.inf, "-inf": -math.inf}


def json_number(value: Any) -> Any:
    """A value under the one JSON rule: +inf/-inf as "inf"/"-inf", NaN as None, numpy scalars
    as Python numbers; anything else as it is."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def from_json_number(value: Any) -> float:
    """A number written under the rule, back as a float (null -> NaN, "inf" -> +inf)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value not in _INFINITIES:
            raise ValueError(f"{value!r} is not a number under the JSON rule (a number, \"inf\", \"-inf\" or null)")
        return _INFINITIES[value]
    return float(value)


def decode_infinities(frame: Any) -> Any:
    """A DataFrame read from records written under the rule, with "inf"/"-inf" as floats (a
    column that held them is numeric again, its nulls NaN)."""
    return frame.replace(_INFINITIES).infer_objects()


def to_json_value(value: Any) -> Any:
    """`value` as plain JSON data: numbers by `json_number`, mappings, sequences and numpy
    arrays recursively, enums as their value, pandas' missing markers as None, and any other
    object as its str() (paths, dates)."""
    if value is None or isinstance(value, (str, bool, int, float, np.generic)):
        return value.value if isinstance(value, enum.Enum) else json_number(value)
    if isinstance(value, Mapping):
        return {(key.value if isinstance(key, enum.Enum) else key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json_value(item) for item in value]
    if _is_missing_marker(value):
        return None
    return str(value)


def _is_missing_marker(value: Any) -> bool:
    import pandas as pd

    return value is pd.NA or value is pd.NaT


def to_json_text(value: Any, *, indent: int | None = None, sort_keys: bool = False, ensure_ascii: bool = True) -> str:
    """The text of a result JSON file (or `--json` output) under the one rule, newline-terminated."""
    return json.dumps(to_json_value(value), indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                      allow_nan=False) + "\n"
