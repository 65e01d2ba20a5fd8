"""Set metrics (FID, KID): one value per group of pairs, e.g. one method x scope of a benchmark.

A group's value is stored under (metric key, group key, the group's exact members) by
`ResultsStore.write_set_score`, so a re-run of an unchanged group computes nothing, and a
group whose images changed (a method re-run with other outputs) is computed afresh.

Each group's images are decoded once (through `bench.images`) and fed to every set metric
that still lacks a value for it, in batches of equal-size pairs. A group smaller than a
metric's ``min_samples`` gets a note ("too few pairs (8 < 10)") instead of a number; a metric
that cannot be built (missing weights) is reported unavailable with its reason, and the run
goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench import images
from bench.errors import ImageError
from bench.store import PairKey, ResultsStore, weights_status
from metrics.base import SetMetric, resolve_device
from metrics.errors import MetricError
from metrics.registry import build_metric


@dataclass(frozen=True)
class GroupMember:
    """One pair of a group: its content key and where its two images are."""

    key: PairKey
    original: Path
    anonymized: Path


@dataclass
class SetMetricOutcome:
    """What happened to one requested set metric."""

    name: str
    #: "ok", "unavailable" (could not be built) or "failed" (raised while computing).
    status: str
    label: str = ""
    #: The metric's declared direction; None when it could not be built.
    higher_is_more_anonymous: bool | None = None
    key: str | None = None
    reason: str = ""
    weights_status: str = "none"
    min_samples: int = 0
    computed: int = 0
    reused: int = 0


@dataclass
class SetScores:
    metrics: list[SetMetricOutcome]
    #: (metric name, group key) -> value.
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    #: (metric name, group key) -> why there is no value.
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = []
        for metric in self.metrics:
            if metric.status == "ok":
                notes = [note for (name, _), note in self.notes.items() if name == metric.name]
                without = f", no value for {len(notes)} (e.g. {notes[0]})" if notes else ""
                lines.append(f"  {metric.name}: groups computed {metric.computed}, reused from the store "
                             f"{metric.reused}{without}")
            else:
                lines.append(f"  {metric.name}: {metric.status}: {metric.reason}")
        return lines


def group_key(dataset: str, method: str, scope: str) -> str:
    """The store's name of a benchmark group; its members are stored beside it."""
    return f"benchmark/{dataset}/{method}/{scope}"


def too_few_note(n: int, min_samples: int) -> str:
    return f"too few pairs ({n} < {min_samples})"


@dataclass
class _Active:
    outcome: SetMetricOutcome
    #: None when the metric is unavailable.
    metric: SetMetric | None


def score_groups(
    groups: Mapping[str, Sequence[GroupMember]],
    metric_names: Sequence[str],
    *,
    store: ResultsStore,
    device: str = "auto",
    batch_size: int = 32,
    run_id: int | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> SetScores:
    """Each set metric's value for each group (group key -> members), reusing stored values."""
    resolved = resolve_device(device)
    active = _build(metric_names, resolved, metric_options)
    for item in active:
        if item.metric is not None:
            store.register_metric(item.metric)
    scores = SetScores(metrics=[item.outcome for item in active])
    pending: dict[str, list[_Active]] = {}
    for name, members in groups.items():
        for item in (a for a in active if a.outcome.status == "ok"):
            _reuse_or_queue(item, name, members, store, scores, pending)
    with tqdm(total=len(pending), unit="group", desc="set metrics", disable=not progress or None) as bar:
        for name, waiting in pending.items():
            _compute_group(name, groups[name], waiting, store=store, scores=scores, device=resolved,
                           batch_size=batch_size, run_id=run_id)
            bar.update(1)
    return scores


def _build(names: Sequence[str], device: torch.device,
           options: Mapping[str, Mapping[str, Any]] | None) -> list[_Active]:
    built = []
    for name in names:
        try:
            metric = build_metric(name, device=str(device), **dict((options or {}).get(name, {})))
        except MetricError as exc:
            built.append(_Active(SetMetricOutcome(name=name, status="unavailable", reason=str(exc)), None))
            continue
        outcome = SetMetricOutcome(name=name, status="ok", label=metric.display_label,
                                   higher_is_more_anonymous=metric.higher_is_more_anonymous, key=metric.key(),
                                   weights_status=weights_status(metric), min_samples=metric.min_samples)
        built.append(_Active(outcome, metric))
    return built


def _reuse_or_queue(item: _Active, name: str, members: Sequence[GroupMember], store: ResultsStore,
                    scores: SetScores, pending: dict[str, list[_Active]]) -> None:
    outcome = item.outcome
    if len(members) < outcome.min_samples:
        scores.notes[(outcome.name, name)] = too_few_note(len(members), outcome.min_samples)
        return
    stored = store.lookup_set_score(outcome.key, name, [m.key for m in members])
    if stored is not None:
        scores.values[(outcome.name, name)] = stored
        outcome.reused += 1
        return
    pending.setdefault(name, []).append(item)


def _compute_group(name: str, members: Sequence[GroupMember], waiting: list[_Active], *, store: ResultsStore,
                   scores: SetScores, device: torch.device, batch_size: int, run_id: int | None) -> None:
    for item in waiting:
        item.metric.reset()
    try:
        for originals, anonymized in _batches(members, batch_size):
            original_batch, anonymized_batch = _to_tensor(originals, device), _to_tensor(anonymized, device)
            for item in (a for a in waiting if a.outcome.status == "ok"):
                _guarded(item, name, scores, item.metric.update, original_batch, anonymized_batch)
    except ImageError as exc:
        for item in waiting:
            scores.notes[(item.outcome.name, name)] = str(exc)
        return
    for item in waiting:
        if item.outcome.status != "ok" or (item.outcome.name, name) in scores.notes:
            continue
        value = _guarded(item, name, scores, item.metric.compute)
        if value is None:
            continue
        value = float(value)
        store.write_set_score(item.outcome.key, name, [m.key for m in members], value, run_id=run_id)
        scores.values[(item.outcome.name, name)] = value
        item.outcome.computed += 1


def _guarded(item: _Active, group: str, scores: SetScores, call: Callable[..., Any], *args: Any) -> Any:
    """Run one metric call: a MetricError is a note on this group, anything else a bug that
    takes the metric out of the run."""
    try:
        return call(*args)
    except MetricError as exc:
        scores.notes[(item.outcome.name, group)] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a third-party metric's bug must not end the run
        item.outcome.status = "failed"
        item.outcome.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())} (a bug in the metric; report it)"
    return None


def _batches(members: Sequence[GroupMember], batch_size: int) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Decoded (originals, anonymized) lists of at most `batch_size` pairs of one image size."""
    buckets: dict[tuple[int, ...], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for member in members:
        original = images.load_rgb(member.original)
        anonymized = images.reconcile_sizes(original, images.load_rgb(member.anonymized), "error",
                                            where=f"{member.anonymized}")
        originals, anonymizeds = buckets.setdefault(original.shape, ([], []))
        originals.append(original)
        anonymizeds.append(anonymized)
        if len(originals) == batch_size:
            yield buckets.pop(original.shape)
    yield from buckets.values()


def _to_tensor(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """HWC uint8 arrays -> float32 NCHW in [0, 1] on `device` (the runner's conversion)."""
    return torch.from_numpy(images.to_float(np.stack(arrays))).to(device).permute(0, 3, 1, 2).contiguous()
