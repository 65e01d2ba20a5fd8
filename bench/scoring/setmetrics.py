"""Set metrics (FID, KID): one value per group of pairs, e.g. one method x scope of a benchmark.

A group's value is stored under (metric key, group key, the group's exact members) by
`ResultsStore.write_set_score`, so a re-run of an unchanged group computes nothing, and a
group whose images changed (a method re-run with other outputs) is computed afresh.

Each group's images are decoded once (through `bench.data.images`) and fed to every set metric
that still lacks a value for it, in batches of equal-size pairs. A group smaller than a
metric's ``min_samples`` gets a note ("too few pairs (8 < 10)") instead of a number; a metric
that cannot be built (missing weights) is reported unavailable with its reason, and the run
goes on.

A set metric that measures its own uncertainty (KID: `estimate`, a functional.KIDEstimate)
gets a `SetValueSpread` beside its value (std over subsets, standard error, 95% interval,
n pairs), stored beside the value (`ResultsStore.write_set_spread`), so a reused value
keeps its spread and `lookup_spread` gives it to the leaderboard and reports.

Under torchrun (`bench.scoring.dist`) each group's pairs are dealt round-robin to the ranks; each rank
feeds its share to the metric on its own device, and rank 0 merges the ranks' partial states
(`partial_state` / `merge_partial_states`: FID sends sums of features and of their outer
products, KID the features themselves) and alone computes and stores the value. A set metric
without partial states is computed by rank 0 alone, over the whole group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.data import images
from bench.errors import ImageError
from bench.scoring import dist
from bench.scoring.runner import MetricOutcome, to_device
from bench.scoring.store import PairKey, ResultsStore
from metrics.base import SetMetric
from metrics.errors import MetricError
from metrics.registry import build_metric
from metrics.schema import MetricInfo


@dataclass(frozen=True)
class GroupMember:
    """One pair of a group: its content key and where its two images are."""

    key: PairKey
    original: Path
    anonymized: Path


@dataclass
class SetMetricOutcome(MetricOutcome):
    """What happened to one requested set metric: a pair metric's outcome plus its minimum group."""

    min_samples: int = 0
    #: The metric's value-changing options (`Metric.config`, e.g. KID's subsets).
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetValueSpread:
    """How uncertain one set metric's value of one group is."""

    #: Population std of the value over random subsets (0 when one evaluation is the whole group).
    std: float
    #: Standard error of the value (KID: jackknife over pairs).
    stderr: float
    #: 95% interval of the value.
    ci_low: float
    ci_high: float
    #: Pairs in the group.
    n: int


SPREAD_FIELDS: tuple[str, ...] = ("std", "stderr", "ci_low", "ci_high")


def lookup_spread(store: ResultsStore, metric_key: str, group: str,
                  members: Sequence[PairKey]) -> SetValueSpread | None:
    """The stored spread of a group's value, or None when the metric records none."""
    stored = store.lookup_set_spread(metric_key, group, members)
    if any(name not in stored for name in SPREAD_FIELDS):
        return None
    return SetValueSpread(*(stored[name] for name in SPREAD_FIELDS), n=len(set(members)))


def spread_of(metric: SetMetric, n: int) -> SetValueSpread | None:
    estimate = getattr(metric, "estimate", None)
    if estimate is None:
        return None
    return SetValueSpread(std=float(estimate.std), stderr=float(estimate.stderr), ci_low=float(estimate.ci_low),
                          ci_high=float(estimate.ci_high), n=n)


@dataclass
class SetScores:
    metrics: list[SetMetricOutcome]
    #: (metric name, group key) -> value.
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    #: (metric name, group key) -> why there is no value.
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (metric name, group key) -> the value's spread, for metrics that measure it (KID).
    spreads: dict[tuple[str, str], SetValueSpread] = field(default_factory=dict)

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
    resolved = dist.rank_device(device)
    active = _build(metric_names, resolved, metric_options)
    for item in active:
        if item.metric is not None:
            store.register_metric(item.metric)
    scores = SetScores(metrics=[item.outcome for item in active])
    pending: dict[str, list[_Active]] = {}
    for name, members in groups.items():
        for item in (a for a in active if a.outcome.status == "ok"):
            _reuse_or_queue(item, name, members, store, scores, pending)
    job = _groups_job(groups, pending, device, batch_size, metric_options) if dist.current().distributed else None
    with (tqdm(total=len(pending), unit="group", desc="set metrics", disable=not progress or None) as bar,
          dist.job("score_groups", job) if job else nullcontext()):
        if job:
            _mark_failed(active, dist.agree_on_failures({}))
        for name, waiting in pending.items():
            compute = _compute_group_sharded if job else _compute_group
            compute(name, groups[name], waiting, store=store, scores=scores, device=resolved, batch_size=batch_size,
                    run_id=run_id)
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
        outcome = SetMetricOutcome(name=name, status="ok", info=MetricInfo.from_metric(metric),
                                   min_samples=metric.min_samples, config=metric.config())
        built.append(_Active(outcome, metric))
    return built


def _reuse_or_queue(item: _Active, name: str, members: Sequence[GroupMember], store: ResultsStore,
                    scores: SetScores, pending: dict[str, list[_Active]]) -> None:
    outcome = item.outcome
    if len(members) < outcome.min_samples:
        scores.notes[(outcome.name, name)] = too_few_note(len(members), outcome.min_samples)
        return
    keys = [m.key for m in members]
    stored = store.lookup_set_score(outcome.key, name, keys)
    if stored is not None:
        scores.values[(outcome.name, name)] = stored
        spread = lookup_spread(store, outcome.key, name, keys)
        if spread is not None:
            scores.spreads[(outcome.name, name)] = spread
        outcome.reused += 1
        return
    pending.setdefault(name, []).append(item)


def _compute_group(name: str, members: Sequence[GroupMember], waiting: list[_Active], *, store: ResultsStore,
                   scores: SetScores, device: torch.device, batch_size: int, run_id: int | None) -> None:
    for item in waiting:
        item.metric.reset()
    try:
        _feed(name, members, waiting, scores, device, batch_size)
    except ImageError as exc:
        for item in waiting:
            scores.notes[(item.outcome.name, name)] = str(exc)
        return
    for item in waiting:
        _finish(item, name, members, store=store, scores=scores, run_id=run_id)


def _feed(name: str, members: Sequence[GroupMember], items: list[_Active], scores: SetScores,
          device: torch.device, batch_size: int) -> None:
    """Decode `members` in batches and update every metric still ok; raises ImageError.
    Metrics of one `feature_key` (FID and KID) share one feature extraction per batch."""
    for originals, anonymized in _batches(members, batch_size):
        original_batch, anonymized_batch = to_device(originals, device), to_device(anonymized, device)
        extracted: dict[str, Any] = {}
        for item in (a for a in items if a.outcome.status == "ok"):
            key = item.metric.feature_key
            if key is None:
                _guarded(item, name, scores, item.metric.update, original_batch, anonymized_batch)
                continue
            if extracted.get(key) is None:  # not yet, or the metric that extracted it got a note
                extracted[key] = _guarded(item, name, scores, item.metric.batch_features, original_batch,
                                          anonymized_batch)
            if extracted[key] is not None:
                _guarded(item, name, scores, item.metric.update_features, extracted[key])


def _finish(item: _Active, name: str, members: Sequence[GroupMember], *, store: ResultsStore, scores: SetScores,
            run_id: int | None) -> None:
    """Compute and store a metric's value of the group, unless it failed or got a note."""
    if item.outcome.status != "ok" or (item.outcome.name, name) in scores.notes:
        return
    value = _guarded(item, name, scores, item.metric.compute)
    if value is None:
        return
    value = float(value)
    keys = [m.key for m in members]
    spread = spread_of(item.metric, len(set(keys)))
    if spread is not None:  # written first: a stored value always has its spread beside it
        store.write_set_spread(item.outcome.key, name, keys,
                               {field_name: getattr(spread, field_name) for field_name in SPREAD_FIELDS})
        scores.spreads[(item.outcome.name, name)] = spread
    store.write_set_score(item.outcome.key, name, keys, value, run_id=run_id)
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


# ----------------------------------------------------------------------------- under torchrun
@dataclass
class _GroupsJob:
    """What rank 0 hands every rank: the pending groups and the mergeable metrics they wait for."""

    #: (name, key) of every mergeable metric some group waits for.
    metrics: list[tuple[str, str]]
    options: dict[str, dict[str, Any]]
    #: (group key, members, keys of its waiting mergeable metrics), in rank 0's order.
    groups: list[tuple[str, list[GroupMember], list[str]]]
    device: str | torch.device
    batch_size: int


def _mergeable(metric: SetMetric) -> bool:
    """Whether a set metric can merge several processes' partial states (FID and KID can)."""
    return metric.merges_across_ranks


def _groups_job(groups: Mapping[str, Sequence[GroupMember]], pending: dict[str, list[_Active]],
                device: str | torch.device, batch_size: int,
                options: Mapping[str, Mapping[str, Any]] | None) -> _GroupsJob | None:
    if not pending:
        return None
    mergeable = {item.outcome.name: item.outcome.key for waiting in pending.values() for item in waiting
                 if _mergeable(item.metric)}
    return _GroupsJob(
        metrics=list(mergeable.items()),
        options={name: dict(values) for name, values in (options or {}).items()},
        groups=[(name, list(groups[name]), [item.outcome.key for item in waiting if _mergeable(item.metric)])
                for name, waiting in pending.items()],
        device=device, batch_size=batch_size,
    )


def _mark_failed(active: Sequence[_Active], failures: dict[str, str]) -> None:
    for item in active:
        if item.outcome.key in failures:
            item.outcome.status, item.outcome.reason = "failed", failures[item.outcome.key]


def _compute_group_sharded(name: str, members: Sequence[GroupMember], waiting: list[_Active], *,
                           store: ResultsStore, scores: SetScores, device: torch.device, batch_size: int,
                           run_id: int | None) -> None:
    """Rank 0's side of one group: its share, every rank's partial states merged, the value
    stored; set metrics that cannot merge are computed here alone, over the whole group."""
    mergeable = [item for item in waiting if _mergeable(item.metric)]
    shares = dist.current().gather(_share(name, dist.shard(members), mergeable, device, batch_size))
    for item in mergeable:
        # A rank that could not build the metric sends no entry (and has marked it failed everywhere).
        _merge_shares(item, name, [share.get(item.outcome.key, ("failed", "not built there")) for share in shares],
                      scores)
        _finish(item, name, members, store=store, scores=scores, run_id=run_id)
    alone = [item for item in waiting if not _mergeable(item.metric)]
    if alone:
        _compute_group(name, members, alone, store=store, scores=scores, device=device, batch_size=batch_size,
                       run_id=run_id)


def _share(name: str, shard: Sequence[GroupMember], items: list[_Active], device: torch.device,
           batch_size: int) -> dict[str, tuple[str, Any]]:
    """This rank's part of a group, per metric key: ("state", its partial state), ("note", why
    the group gets no value) or ("failed", why the metric is out of the run)."""
    local = SetScores(metrics=[])
    for item in items:
        item.metric.reset()
    try:
        _feed(name, shard, items, local, device, batch_size)
    except ImageError as exc:
        return {item.outcome.key: ("note", str(exc)) for item in items}
    share = {}
    for item in items:
        note = local.notes.get((item.outcome.name, name))
        if item.outcome.status != "ok":
            share[item.outcome.key] = ("failed", item.outcome.reason)
        elif note is not None:
            share[item.outcome.key] = ("note", note)
        else:
            share[item.outcome.key] = ("state", item.metric.partial_state())
    return share


def _merge_shares(item: _Active, name: str, entries: list[tuple[str, Any]], scores: SetScores) -> None:
    """Load the merge of every rank's partial state into rank 0's metric, or record why not."""
    if item.outcome.status != "ok":
        return
    for rank, (kind, content) in enumerate(entries):
        if kind == "failed":
            item.outcome.status, item.outcome.reason = "failed", f"on rank {rank}: {content}"
            return
    notes = [content for kind, content in entries if kind == "note"]
    if notes:
        scores.notes[(item.outcome.name, name)] = notes[0]
        return
    _guarded(item, name, scores, item.metric.merge_partial_states, [content for _, content in entries])


def follow_groups(job: _GroupsJob) -> None:
    """A rank other than 0: build the job's metrics here and send rank 0 this rank's share of each group."""
    device = dist.rank_device(job.device)
    expected = dict(job.metrics)
    failures, active = {}, {}
    for item in _build(list(expected), device, job.options):
        key = expected[item.outcome.name]
        if item.outcome.status != "ok":
            failures[key] = item.outcome.reason
        elif item.outcome.key != key:
            failures[key] = (f"{item.outcome.name} has other weights or options here (key {item.outcome.key}, "
                             f"rank 0: {key}); give every node the same weight files")
        else:
            active[key] = item
    _mark_failed(list(active.values()), dist.agree_on_failures(failures))
    for name, members, keys in job.groups:
        items = [active[key] for key in keys if key in active]
        dist.current().gather(_share(name, dist.shard(members), items, device, job.batch_size))
