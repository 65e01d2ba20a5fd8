"""What every registered metric is, from its class: the rows of `bench metrics`.

Each fact is a class attribute of the adapter (`metrics.base.Metric`: level, direction, value
range, weights needed, convention), read here without building the metric, so listing loads
no network and no weights; the weights' state comes from `metrics.weights.status_of`, which
hashes cached files but never downloads or converts. A plugin that cannot be imported is
listed with the reason instead of ending the listing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from metrics import weights
from metrics.errors import MetricError
from metrics.registry import available_metrics, metric_class


@dataclass(frozen=True)
class WeightsNeed:
    """A weight file a metric loads, and its state on this machine."""

    name: str
    status: str


@dataclass(frozen=True)
class MetricFacts:
    """One registered metric as `bench metrics` lists it."""

    name: str
    #: "module:Class" in the registry.
    target: str
    label: str = ""
    #: "pair" (one value per pair) or "set" (one value per group of pairs); "" if not importable.
    level: str = ""
    higher_is_more_anonymous: bool | None = None
    value_range: str = ""
    weights: tuple[WeightsNeed, ...] = ()
    #: Weights the user must supply (a checkpoint), described.
    user_weights: str = ""
    convention: str = ""
    #: Smallest group a set metric computes.
    min_samples: int | None = None
    #: Why the class could not be imported (then only name and target are known).
    error: str = ""
    #: "perceptual" or "utility", and the direction as a utility (None: not a utility view).
    family: str = ""
    higher_is_more_useful: bool | None = None
    #: Packages the metric imports when built that are not installed here: it cannot run.
    missing_modules: tuple[str, ...] = ()

    @property
    def direction(self) -> str:
        if self.higher_is_more_anonymous is None:
            return "?"
        anonymous = "higher = more anonymous" if self.higher_is_more_anonymous else "lower = more anonymous"
        if self.family != "utility" or self.higher_is_more_useful is None:
            return anonymous
        return f"{'higher' if self.higher_is_more_useful else 'lower'} = more useful ({anonymous})"

    @property
    def weights_text(self) -> str:
        parts = [f"{need.name} ({need.status})" for need in self.weights]
        if self.user_weights:
            parts.append(self.user_weights)
        if self.missing_modules:
            # Weights shipped in one package can be verified while the code that runs them is absent.
            parts.append(f"cannot run here: {', '.join(self.missing_modules)} not installed")
        return "; ".join(parts) or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "target": self.target, "label": self.label, "level": self.level,
            "higher_is_more_anonymous": self.higher_is_more_anonymous, "direction": self.direction,
            "value_range": self.value_range,
            "weights": [{"name": need.name, "status": need.status} for need in self.weights],
            "user_weights": self.user_weights, "convention": self.convention, "min_samples": self.min_samples,
            "error": self.error, "family": self.family, "higher_is_more_useful": self.higher_is_more_useful,
            "missing_modules": list(self.missing_modules),
        }


def metric_facts(name: str, target: str | None = None) -> MetricFacts:
    """The facts of one metric (a registered name, or "module:Class")."""
    target = target or available_metrics().get(name, name)
    try:
        cls = metric_class(name)
    except MetricError as exc:
        return MetricFacts(name=name, target=target, error=str(exc))
    doc = (cls.__doc__ or "").strip().splitlines()
    return MetricFacts(
        name=name, target=target, label=cls.label or name, level=cls.level,
        higher_is_more_anonymous=getattr(cls, "higher_is_more_anonymous", None),
        value_range=cls.value_range,
        weights=tuple(WeightsNeed(need, weights.status_of(need)) for need in cls.weights_needed),
        user_weights=cls.user_weights,
        # A plugin without a stated convention shows its docstring's first line.
        convention=cls.convention or (doc[0] if doc else ""),
        min_samples=getattr(cls, "min_samples", None) if cls.level == "set" else None,
        family=cls.family, higher_is_more_useful=cls.higher_is_more_useful,
        missing_modules=tuple(package for package in dict.fromkeys(m.partition(".")[0] for m in cls.preload_modules)
                              if importlib.util.find_spec(package) is None),  # found, not imported: dlib takes seconds
    )


def all_metric_facts() -> list[MetricFacts]:
    """Every registered metric (built-ins, then plugins), in registry order."""
    return [metric_facts(name, target) for name, target in available_metrics().items()]


def table_lines(facts: list[MetricFacts]) -> list[str]:
    """A plain-text table: one row per metric, its convention on the line below."""
    header = ("name", "level", "direction", "range", "weights (status here)")
    rows = [header] + [(f.name, f.level or "?", f.direction, f.value_range or "-", f.weights_text) for f in facts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
        if index:
            fact = facts[index - 1]
            lines.append(f"    {fact.error or fact.convention}")
    return lines
