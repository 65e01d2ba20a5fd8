"""`bench perf`: what scoring costs, next to a naive pipeline and to the networks' own cost.

One invocation measures three things on the same pairs, each in a FRESH subprocess so that
one phase's peak memory cannot mask another's (peak RSS is the kernel's high-water mark of
that process: VmHWM from /proc/self/status; ru_maxrss where there is no /proc, which on
Linux would inherit the parent's peak):

(a) **naive**: the cost structure of the paper's released pipeline (metrics/get_metrics.py +
    metric_api.py): pairs one at a time; per pair both images decoded with PIL, every
    network built anew with its weights loaded again (LPIPS, Inception, PerceptAnon
    checkpoint), that one pair scored, and SSIM computed by scikit-image in a fresh
    ``multiprocessing.Pool(cpu_count())``. It runs our adapters (so its values must equal
    the runner's; checked, see ``agreement``) and scikit-image's SSIM in float64 with the
    metric's K1/K2. Networks are built as the released code built them: the package's
    constructor (which initialises every weight), then the weights loaded. Our LPIPS and
    Inception adapters do just that; the PerceptAnon adapter skips the initialisation, so its
    network is rebuilt that way for every pair (the released default also loaded ImageNet
    weights before the checkpoint: left out, so the baseline never costs more than the
    released pipeline). On large N it is measured on the first `baseline_pairs` pairs and
    reported per pair.
(b) **runner**: `bench.scoring.runner.score_pairs` into a fresh temporary store (nothing reused),
    timed from the call (metric construction and file hashing included) to its return.
(c) **floor**: each metric's pure compute on already-decoded tensors at its best batch size
    (a few are tried on a sample, then one timed pass over every item at the best one),
    summed over metrics. Feature metrics (LPIPS, Inception distance, PerceptAnon) count
    `features()` over exactly the images the runner encodes: each unique original once (the
    runner reuses its features for all its anonymizations) plus every anonymized image;
    HA1 never encodes originals. Each anonymized image's features are compared with its
    original's (`select`, `compare`: LPIPS' 1x1 heads and spatial means), which is the
    metric's compute too; the forward passes alone are also reported (`forward_seconds`).
    Other pair metrics (MSE, PSNR, SSIM) count `score()` over every pair. Decoding and
    metric construction are not in the floor.

Per metric, (a) and (b) are each metric scored on its own (the decode is part of its cost);
the full set is all metrics together, where (b) decodes each image once for all of them.
Ratios: speedup = naive seconds per pair / runner seconds per pair; overhead = runner
seconds per pair / floor seconds per pair.

Weights: metrics that need pretrained files use the user's verified or imported files when
present, else stand-ins written into the run's own weights folder; PerceptAnon uses
stand-in ResNet-50 checkpoints unless given real ones. Timings do not depend on weight
values, and the report says which files were stand-ins.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from bench import child_pythonpath
from bench.data import images
from bench.errors import BenchError, ImageError, InputError
from metrics.errors import MetricError

#: Measurement phases, in the order they run; `--phases` picks a subset.
PHASES = ("naive", "runner", "per-metric", "floor")
#: Synthetic pairs measured when `--pairs` is not given.
DEFAULT_PAIRS = 200
#: Pairs the naive baseline is measured on at most (it costs about a second per pair).
DEFAULT_BASELINE_PAIRS = 20
#: Batch sizes tried for the floor; the best one's time is reported.
FLOOR_BATCH_SIZES = (2, 4, 8, 16, 32, 64)
_FLOOR_SAMPLE_IMAGES = 32
_FLOOR_MIN_PASSES = 2
#: Precisions `--precision` accepts; anything but float32 runs under torch.autocast.
PRECISIONS = ("float32", "bfloat16", "float16")
_SYNTHETIC_METHODS = ("mask", "blur", "pixelate", "noise")
_SYNTHETIC_DATASETS = ("coco", "voc", "lfw", "celeba")
_SEED = 0
_MB = 1 << 20


# ----------------------------------------------------------------------------- synthetic data
def parse_size(text: str) -> tuple[int, int]:
    """'256x256' -> (width, height)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        raise InputError(f"--size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 256x256")
    return int(width), int(height)


def parse_phases(text: str | None) -> list[str]:
    """'naive,runner' -> ['naive', 'runner']; None means every phase."""
    if text is None:
        return list(PHASES)
    phases = [phase.strip() for phase in text.split(",") if phase.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown or not phases:
        raise InputError(f"bad --phases {text!r}; choose from: {', '.join(PHASES)}")
    return phases


def _synthetic_original(index: int, width: int, height: int) -> np.ndarray:
    """A deterministic image with smooth gradients, flat shapes and fine noise (like a photo,
    it has both structure and texture, so no metric sees a degenerate input)."""
    rng = np.random.default_rng([_SEED, index])
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    image = np.stack([96 + 64 * np.sin(cols / width * 3 + rows / height * 2 + p) for p in phase], axis=2)
    for _ in range(6):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(width // 8 + 1, width // 3 + 2), y0 + rng.integers(height // 8 + 1, height // 3 + 2)
        image[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _synthetic_anonymization(original: np.ndarray, method: str, scope: str, seed: int) -> np.ndarray:
    """`method` applied to the middle half of the image (local) or to all of it (global)."""
    height, width = original.shape[:2]
    box = (width // 4, height // 4, width - width // 4, height // 4 * 3) if scope == "local" else (0, 0, width, height)
    region = Image.fromarray(original).crop(box)
    if method == "mask":
        changed = np.zeros_like(np.asarray(region))
    elif method == "blur":
        changed = np.asarray(region.filter(ImageFilter.GaussianBlur(radius=max(2, width // 32))))
    elif method == "pixelate":
        block = max(2, width // 16)
        small = region.resize((max(1, region.width // block), max(1, region.height // block)), Image.Resampling.BOX)
        changed = np.asarray(small.resize(region.size, Image.Resampling.NEAREST))
    else:
        noise = np.random.default_rng([_SEED, seed]).normal(0, 40, np.asarray(region).shape)
        changed = np.clip(np.asarray(region) + noise, 0, 255).astype(np.uint8)
    anonymized = original.copy()
    anonymized[box[1]:box[3], box[0]:box[2]] = changed
    return anonymized


def write_synthetic_pairs(folder: Path, pairs: int, size: tuple[int, int], per_original: int = 4) -> Path:
    """Write `pairs` deterministic (original, anonymized) PNG pairs, `per_original` anonymizations
    of each original (mask, blur, pixelate, noise in turn), and a released-format annotations
    CSV with made-up annotator scores; returns the CSV's path (images are relative to it)."""
    if pairs < 1:
        raise InputError(f"--pairs must be at least 1, got {pairs}")
    if per_original < 1:
        raise InputError(f"--per-original must be at least 1, got {per_original}")
    import pandas as pd

    width, height = size
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for pair in range(pairs):
        index, variant = divmod(pair, per_original)
        dataset = _SYNTHETIC_DATASETS[index % len(_SYNTHETIC_DATASETS)]
        original_path = f"originals/{dataset}/{index:06d}.png"
        if variant == 0:
            original = _synthetic_original(index, width, height)
            _save_png(original, folder / original_path)
        method = _SYNTHETIC_METHODS[variant % len(_SYNTHETIC_METHODS)]
        scope = "local" if index % 2 == 0 else "global"
        anonymized_path = f"anonymized/{method}/{scope}/{dataset}/{index:06d}_{variant}.png"
        _save_png(_synthetic_anonymization(original, method, scope, pair), folder / anonymized_path)
        scores = np.random.default_rng([_SEED, pair, 1]).integers(1, 11, 2)
        rows.append((original_path, anonymized_path, dataset, scope, method, *scores, f"{scores.mean():.2f}"))
    csv_path = folder / "HA1.csv"
    frame = pd.DataFrame(rows, columns=["img1", "img2", "dataset", "scope", "method", "a1", "a2", "score_mean"])
    frame.to_csv(csv_path, index=False)
    return csv_path


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fast compression: writing thousands of test images should take seconds.
    Image.fromarray(array).save(path, compress_level=1)


def _first_rows(annotations: Path, root: Path | None, pairs: int | None, folder: Path) -> tuple[Path, Path]:
    """The annotations (a copy holding only their first `pairs` rows, if fewer), and the image root."""
    from bench.data import dataset

    table = dataset.load_pairs(annotations, root=root)
    if pairs is None or pairs >= len(table):
        return annotations, table.root
    folder.mkdir(parents=True, exist_ok=True)
    subset = folder / annotations.name
    table.raw.iloc[:pairs].to_csv(subset, index=False)
    return subset, table.root


# ----------------------------------------------------------------------------- weights
@dataclass
class WeightsSetup:
    """The run's weights folder and what each metric's weights are (verified, stand-in, ...)."""

    directory: Path
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: weights name -> one line: status and where the file came from.
    described: dict[str, str] = field(default_factory=dict)

    @property
    def stand_ins(self) -> list[str]:
        return stand_ins(self.described)


def stand_ins(described: Mapping[str, str]) -> list[str]:
    """The weights names that `described` (name -> status line) says are stand-ins."""
    return [name for name, text in described.items() if text.startswith("stand-in")]


def prepare_weights(metric_names: Sequence[str], folder: Path,
                    checkpoints: Mapping[str, Path | None] | None = None) -> WeightsSetup:
    """A weights folder for the run: the user's files where `metrics.weights.resolve` finds
    them (the FID Inception is converted offline if needed: real weights), linked in;
    stand-ins (`Metric.stand_in_state`) for the rest. A metric fed by a checkpoint option
    (`checkpoints`: option keyword -> path) gets the given file, else `stand_in_checkpoint`."""
    import torch

    from metrics import weights
    from metrics.errors import WeightsError
    from metrics.registry import metric_class

    folder.mkdir(parents=True, exist_ok=True)
    setup = WeightsSetup(folder)
    for metric in metric_names:
        cls = metric_class(metric)
        for name in cls.weights_needed:
            if name in setup.described:
                continue
            try:
                found = weights.resolve(name)
            except WeightsError:
                torch.manual_seed(_SEED)
                state = cls.stand_in_state(name)
                if state is None:
                    continue  # no recipe: the metric says what it lacks when it is built
                written = weights.write_stand_in(name, state, folder)
                setup.described[name] = f"stand-in (written to {written.path}; not pretrained)"
                continue
            for source in (found.path, found.path.with_name(found.path.name + weights.MANIFEST_SUFFIX)):
                if source.is_file():
                    _link_or_copy(source, folder / source.name)
            setup.described[name] = f"{found.status} ({found.path})"
        if cls.checkpoint_option:
            given = (checkpoints or {}).get(cls.checkpoint_option)
            torch.manual_seed(_SEED)
            path = Path(given) if given else cls.stand_in_checkpoint(folder)
            setup.metric_options[metric] = {"checkpoint": str(path)}
            setup.described[metric] = f"given checkpoint {path}" if given else f"stand-in checkpoint {path}; not trained"
    return setup


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(source.resolve())
    except OSError:  # filesystems without symlinks
        shutil.copy2(source, target)


# ----------------------------------------------------------------------------- the phases (child side)
def _peak_rss() -> tuple[int, str]:
    """(peak resident set size of this process in bytes, how it was measured)."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "VmHWM (/proc/self/status)"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def _autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, precision))


def _synchronize(device: Any) -> None:
    """Wait for queued GPU work, so that a timer stopped next counts it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_table(job: Mapping[str, Any]) -> Any:
    from bench.data import dataset

    return dataset.load_pairs(Path(job["annotations"]), root=Path(job["root"]))


def _phase_runner(job: Mapping[str, Any], device: Any) -> dict[str, Any]:
    """(b): one `score_pairs` call into a new store; values of the first pairs for the check."""
    from bench.scoring.runner import score_pairs
    from bench.scoring.store import ResultsStore

    table = _load_table(job)
    store_path = Path(job["work"]) / "store.sqlite"
    with ResultsStore(store_path) as store, _autocast(device, job["precision"]):
        start = time.perf_counter()
        result = score_pairs(table, job["metrics"], store=store, device=job["device"],
                             batch_size=job["batch_size"], workers=job["workers"], progress=False,
                             command="bench perf", metric_options=job["metric_options"])
        seconds = time.perf_counter() - start
    problems = [f"{m.name}: {m.status}: {m.reason}" for m in result.metrics if m.status != "ok"]
    problems += [f"line {f.row}: {f.reason}" for f in result.failures[:5]]
    if problems:
        raise InputError(f"bench perf: the runner did not score every pair ({problems[0]}); "
                         "fix the data or metric and measure again")
    first_rows = set(table.frame["row"].iloc[:job["check_pairs"]])
    checked = result.scores[result.scores["row"].isin(first_rows)].sort_values("row")
    return {
        "seconds": seconds,
        "pairs": len(table),
        "computed": {m.name: m.computed for m in result.metrics},
        "values": {name: group["value"].tolist() for name, group in checked.groupby("metric")},
    }


def _to_batch(arrays: list[np.ndarray], device: Any) -> Any:
    """The runner's own conversion (uint8 HWC -> float32 NCHW on `device`): every phase feeds
    the metrics the same tensors."""
    from bench.scoring.runner import to_device

    return to_device(arrays, device)


def _phase_naive(job: Mapping[str, Any], device: Any) -> dict[str, Any]:
    """(a): the released pipeline's per-pair structure; seconds per metric and for decoding."""
    from metrics.registry import build_metric, metric_class
    from metrics.ssim import SSIM

    table = _load_table(job)
    count = min(job["check_pairs"], len(table))
    originals, anonymized_paths = table.paths("original"), table.paths("anonymized")
    # Looked up before the timers: the released code had no registry.
    classes = {name: metric_class(name) for name in job["metrics"]}
    # Adapters that rebuild only their network (PerceptAnon), built once (untimed) for their
    # preprocessing and output mapping; the network is rebuilt for every pair as the released code did.
    shells = {name: build_metric(name, device=job["device"], **job["metric_options"].get(name, {}))
              for name in job["metrics"] if classes[name].naive_rebuild == "network"}
    seconds = {name: 0.0 for name in job["metrics"]}
    values: dict[str, list[float]] = {name: [] for name in job["metrics"]}
    decode_seconds = 0.0
    with _autocast(device, job["precision"]):
        for i in range(count):
            start = time.perf_counter()
            original_rgb, anonymized_rgb = images.load_rgb(originals[i]), images.load_rgb(anonymized_paths[i])
            original, anonymized = _to_batch([original_rgb], device), _to_batch([anonymized_rgb], device)
            decode_seconds += time.perf_counter() - start
            for name in job["metrics"]:
                start = time.perf_counter()
                if issubclass(classes[name], SSIM):
                    value = _pool_ssim(original_rgb, anonymized_rgb, classes[name])
                else:
                    if name in shells:
                        metric = shells[name]
                        metric.rebuild_network()
                    else:
                        metric = classes[name](device=job["device"], **job["metric_options"].get(name, {}))
                    value = float(metric.score(original, anonymized)[0])
                seconds[name] += time.perf_counter() - start
                values[name].append(value)
    return {"pairs": count, "decode_seconds": decode_seconds, "metric_seconds": seconds, "values": values,
            "seconds": decode_seconds + sum(seconds.values())}


def _skimage_ssim(original: np.ndarray, anonymized: np.ndarray, k1: float, k2: float, data_range: float,
                  sigma: float) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(original, anonymized, data_range=data_range, channel_axis=2, win_size=11,
                                       gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
                                       K1=k1, K2=k2))


def _pool_ssim(original_rgb: np.ndarray, anonymized_rgb: np.ndarray, cls: type) -> float:
    """SSIM of one pair as the released code ran it: in a pool started for this one call."""
    original, anonymized = (images.to_float(rgb).astype(np.float64) for rgb in (original_rgb, anonymized_rgb))
    with multiprocessing.Pool(multiprocessing.cpu_count()) as pool:
        job = pool.apply_async(_skimage_ssim, (original, anonymized, cls.k1, cls.k2, cls.data_range, cls.sigma))
        return job.get()


@dataclass
class _FloorWork:
    """What the runner computes for one metric. Pixel metrics: `pairs`, each (original,
    anonymized) path pair scored once. Feature metrics: `originals`, each encoded once (none
    for HA1), and `anonymized`, each (anonymized path, its original's position in
    `originals` or None) encoded and compared once."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    originals: list[Path] = field(default_factory=list)
    anonymized: list[tuple[Path, int | None]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "pairs" if self.pairs else "images"

    @property
    def items(self) -> int:
        """Pairs scored, or images encoded."""
        return len(self.pairs) or len(self.originals) + len(self.anonymized)


def _floor_work(table: Any, metric: Any) -> _FloorWork:
    from metrics.base import FeaturePairMetric

    pairs = list(dict.fromkeys(zip(table.paths("original"), table.paths("anonymized"))))
    if not isinstance(metric, FeaturePairMetric):
        return _FloorWork(pairs=pairs)
    if not metric.needs_original:
        return _FloorWork(anonymized=[(path, None) for path in dict.fromkeys(a for _, a in pairs)])
    position = {path: i for i, path in enumerate(dict.fromkeys(o for o, _ in pairs))}
    return _FloorWork(originals=list(position), anonymized=[(a, position[o]) for o, a in pairs])


def _decoded_batches(items: Iterable[Any], decode: Any, batch_size: int,
                     device: Any) -> Iterator[tuple[list[Any], tuple[Any, ...]]]:
    """(items, tensors) batches of equal-size decoded items: `decode(item)` gives a tuple of
    arrays ((image,), or (original, anonymized)), stacked here into device tensors.

    Items of many sizes wait in bounded buckets, so memory does not grow with the item count.
    """
    buckets: dict[tuple[int, ...], list[tuple[Any, tuple[np.ndarray, ...]]]] = {}
    pending = 0

    def batch(members: list[tuple[Any, tuple[np.ndarray, ...]]]) -> tuple[list[Any], tuple[Any, ...]]:
        return [item for item, _ in members], tuple(_to_batch(list(column), device)
                                                    for column in zip(*(arrays for _, arrays in members)))

    for item in items:
        try:
            decoded = decode(item)
        except ImageError:
            continue  # the runner records such pairs as failed; they cost it nothing to score
        bucket = buckets.setdefault(decoded[0].shape, [])
        bucket.append((item, decoded))
        pending += 1
        if len(bucket) == batch_size or pending > 4 * batch_size:
            fullest = max(buckets, key=lambda shape: len(buckets[shape]))
            members = buckets.pop(fullest)
            pending -= len(members)
            yield batch(members)
    for members in buckets.values():
        yield batch(members)


def _decoded_image(item: Path | tuple[Path, int | None]) -> tuple[np.ndarray]:
    return (images.load_rgb(item[0] if isinstance(item, tuple) else item),)


def _decoded_pair(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    original_path, anonymized_path = pair
    original = images.load_rgb(original_path)
    anonymized = images.reconcile_sizes(original, images.load_rgb(anonymized_path), "error",
                                        where=str(anonymized_path))
    return original, anonymized


def _timed(device: Any, work: Any) -> tuple[float, Any]:
    """(seconds, result) of `work()`, queued GPU work included."""
    start = time.perf_counter()
    result = work()
    _synchronize(device)
    return time.perf_counter() - start, result


def _forward_seconds(metric: Any, kind: str, batch: tuple[Any, ...], device: Any) -> float:
    """One forward pass: `features` of an image batch, or `score` of a pair batch."""
    return _timed(device, lambda: metric.features(*batch) if kind == "images" else metric.score(*batch))[0]


def _best_batch_size(metric: Any, kind: str, sample: tuple[Any, ...], sizes: Sequence[int],
                     device: Any) -> dict[int, float]:
    """Seconds per item of each batch size on `sample`, forward passes only (as the runner's
    ChunkSizer times them)."""
    per_item: dict[int, float] = {}
    for size in sizes:
        chunk = tuple(tensor[:size] for tensor in sample)
        _forward_seconds(metric, kind, chunk, device)  # warm-up: kernels, allocator, caches
        # One short pass is noise (on a shared 2-core machine, passes of 2 images varied by
        # 30%); the median of passes over at least _FLOOR_SAMPLE_IMAGES images picks the size.
        passes = max(_FLOOR_MIN_PASSES, math.ceil(_FLOOR_SAMPLE_IMAGES / len(chunk[0])))
        per_item[size] = statistics.median(_forward_seconds(metric, kind, chunk, device)
                                           for _ in range(passes)) / len(chunk[0])
    return per_item


def _feature_pass(metric: Any, work: _FloorWork, batch_size: int, device: Any) -> tuple[float, float]:
    """(all seconds, forward-pass seconds) of encoding `work`'s originals once, then each
    anonymized image, compared with its original's features as it is encoded (the runner's
    order). The comparison is the metric's own compute (LPIPS: its 1x1 heads over five
    activation maps), which the runner cannot skip; the forward passes alone are reported too."""
    import torch

    from bench.scoring.runner import concat_features

    forward = compare = 0.0
    parts, row = [], {}
    for members, (batch,) in _decoded_batches(work.originals, _decoded_image, batch_size, device):
        seconds, found = _timed(device, lambda: metric.features(batch))
        forward += seconds
        parts.append(found)
        row.update((path, len(row)) for path in members)
    if parts:
        seconds, original_features = _timed(device, lambda: concat_features(parts))
        compare += seconds
    for members, (batch,) in _decoded_batches(work.anonymized, _decoded_image, batch_size, device):
        if work.originals:
            # A pair whose original did not decode is a failure in the runner, not scored.
            kept = [i for i, (_, original) in enumerate(members) if work.originals[original] in row]
            if not kept:
                continue
            batch = batch[kept]
            index = torch.tensor([row[work.originals[members[i][1]]] for i in kept], dtype=torch.long)
        seconds, found = _timed(device, lambda: metric.features(batch))
        forward += seconds
        seconds, _ = _timed(device, lambda: metric.compare(
            metric.select(original_features, index) if work.originals else None, found))
        compare += seconds
    return forward + compare, forward


def _phase_floor(job: Mapping[str, Any], device: Any) -> dict[str, Any]:
    """(c) for one metric: best batch size on a sample, then one timed pass over every item."""
    from metrics.registry import build_metric

    (name,) = job["metrics"]
    table = _load_table(job)
    metric = build_metric(name, device=job["device"], **job["metric_options"].get(name, {}))
    work = _floor_work(table, metric)
    kind = work.kind
    sample_items = work.pairs or [*work.originals, *(path for path, _ in work.anonymized)]
    sizes = [size for size in job["floor_batch_sizes"] if size <= len(sample_items)] or [len(sample_items)]
    decode = _decoded_pair if kind == "pairs" else _decoded_image
    with _autocast(device, job["precision"]):
        _, sample = next(_decoded_batches(sample_items[:max(sizes)], decode, max(sizes), device))
        per_item = _best_batch_size(metric, kind, sample, sizes, device)
        del sample
        best = min(per_item, key=per_item.get)
        if kind == "pairs":
            seconds = forward = sum(_forward_seconds(metric, kind, batch, device)
                                    for _, batch in _decoded_batches(work.pairs, _decoded_pair, best, device))
        else:
            seconds, forward = _feature_pass(metric, work, best, device)
    return {"seconds": seconds, "forward_seconds": forward, "pairs": len(table), "kind": kind, "items": work.items,
            "batch_size": best, "seconds_per_item_by_batch_size": {str(size): value for size, value in per_item.items()}}


_PHASE_FUNCTIONS = {"runner": _phase_runner, "naive": _phase_naive, "floor": _phase_floor}

def _preload_modules(metric_names: Sequence[str]) -> None:
    """What the adapters import on first construction (`Metric.preload_modules`), imported
    before any timer starts: imports are a process's start-up cost, the same for every pipeline."""
    import importlib

    from metrics.registry import metric_class

    packages = ["bench.scoring.runner"] + [package for name in metric_names for package in metric_class(name).preload_modules]
    for package in packages:
        with contextlib.suppress(ImportError):  # an optional package: its metric says so when built
            importlib.import_module(package)


#: Names the job file of a measurement subprocess (`python -m bench.flows.perf`).
CHILD_JOB_VARIABLE = "BENCH_PERF_JOB"


def _child_main(job_path: str) -> int:
    """Entry of a measurement subprocess: run one phase, write its result JSON."""
    import torch

    from bench.allocator import keep_large_blocks
    from metrics.base import resolve_device

    keep_large_blocks()  # as in a process started as `bench`, in every phase alike
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    device = resolve_device(job["device"])
    _preload_modules(job["metrics"])
    try:
        result = _PHASE_FUNCTIONS[job["phase"]](job, device)
    except (BenchError, MetricError) as exc:
        result = {"error": str(exc)}
    peak, method = _peak_rss()
    result.update(peak_rss_bytes=peak, peak_rss_method=method, threads=torch.get_num_threads())
    if device.type == "cuda":
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


# ----------------------------------------------------------------------------- the phases (parent side)
def _run_child(job: dict[str, Any], work: Path, weights_dir: Path) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its result, or its one-line error raised here."""
    work.mkdir(parents=True, exist_ok=True)
    job = {**job, "work": str(work), "result": str(work / "result.json")}
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "BENCH_WEIGHTS_DIR": str(weights_dir), "PYTHONPATH": child_pythonpath()}
    # The job's path travels in the environment: only bench.cli parses a command line.
    completed = subprocess.run([sys.executable, "-m", "bench.flows.perf"], env={**env, CHILD_JOB_VARIABLE: str(job_path)},
                               capture_output=True, text=True, check=False)
    result_path = Path(job["result"])
    if completed.returncode != 0 or not result_path.is_file():
        tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
        raise BenchError(f"bench perf: the {job['phase']} measurement process failed (exit {completed.returncode}): "
                         f"{tail}; this is a bug, please report it")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    if "error" in result:
        raise InputError(result["error"])
    return result


@dataclass
class Timing:
    """One measured phase: seconds spent on `pairs` pairs, and the process's peak memory."""

    seconds: float
    pairs: int
    peak_rss_bytes: int | None = None
    peak_gpu_bytes: int | None = None

    @property
    def seconds_per_pair(self) -> float:
        return self.seconds / self.pairs

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "pairs": self.pairs, "seconds_per_pair": self.seconds_per_pair,
                "pairs_per_s": _finite(self.pairs_per_s),
                "peak_rss_mb": None if self.peak_rss_bytes is None else self.peak_rss_bytes / _MB,
                "peak_gpu_mb": None if self.peak_gpu_bytes is None else self.peak_gpu_bytes / _MB}


@dataclass
class Row:
    """(a), (b), (c) of one metric or of the full set, and their ratios."""

    name: str
    naive: Timing | None = None
    runner: Timing | None = None
    floor: Timing | None = None
    floor_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """naive / runner, per pair: how many times faster the runner is."""
        if self.naive and self.runner:
            return self.naive.seconds_per_pair / self.runner.seconds_per_pair
        return None

    @property
    def overhead(self) -> float | None:
        """runner / floor, per pair: 1.0 would be the cost of the compute alone."""
        if self.runner and self.floor and self.floor.seconds > 0:
            return self.runner.seconds_per_pair / self.floor.seconds_per_pair
        return None

    @property
    def over_forward_passes(self) -> float | None:
        """runner / the floor's forward passes alone (no comparison heads), per pair."""
        forward = self.floor_detail.get("forward_seconds")
        if self.runner and self.floor and forward:
            return self.runner.seconds / forward * self.floor.pairs / self.runner.pairs
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "naive": self.naive and self.naive.to_json(),
            "runner": self.runner and self.runner.to_json(),
            "floor": self.floor and {**self.floor.to_json(), **self.floor_detail},
            "speedup_vs_naive": self.speedup,
            "runner_over_floor": self.overhead,
            "runner_over_forward_passes": self.over_forward_passes,
        }


@dataclass
class PerfReport:
    """Everything one `bench perf` run measured, with the conditions it ran under."""

    config: dict[str, Any]
    machine: dict[str, Any]
    weights: dict[str, str]
    rows: list[Row]
    full: Row
    #: metric -> largest |naive - runner| over the checked pairs.
    agreement: dict[str, float]
    notes: list[str]
    conventions: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "machine": self.machine,
            "weights": self.weights,
            "conventions": self.conventions,
            "metrics": {row.name: row.to_json() for row in self.rows},
            "full_set": self.full.to_json(),
            "agreement_max_abs_diff": {name: _finite(value) for name, value in self.agreement.items()},
            "notes": self.notes,
        }

    def table_lines(self) -> list[str]:
        header = ("metric", "naive (a) pairs/s", "runner (b) pairs/s", "floor (c) pairs/s", "speedup (b) vs (a)",
                  "(b)/(c) time", "peak MB (a)/(b)/(c)")
        lines = [self._headline(), ""]
        measured = [row for row in self.rows if row.naive or row.runner or row.floor]
        body = [self._cells(row) for row in [*measured, self.full]]
        widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
        for cells in [header, *body]:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
        if self.agreement:
            lines += ["", "naive vs runner, largest |difference| of a value: " + ", ".join(
                f"{name} {difference:.1e}" for name, difference in self.agreement.items())]
        lines += [""] + [f"note: {note}" for note in self.notes]
        lines += [f"convention: {line}" for line in self.conventions]
        lines += [f"weights: {name}: {text}" for name, text in self.weights.items()]
        return lines

    def _headline(self) -> str:
        config, machine = self.config, self.machine
        return (f"bench perf: {config['pairs']} pairs of {config['size']} ({config['originals']} originals), "
                f"metrics {','.join(config['metrics'])}; {machine['device']}, {machine['cpu_model']} "
                f"({machine['cpu_family_model'] or 'family unknown'}, {machine['cpu_capability']}), "
                f"{machine['logical_cpus']} logical CPUs, {machine['torch_threads']} torch threads, "
                f"torch {machine['torch']}, numpy {machine['numpy']}, precision {config['precision']}; "
                f"load average {machine['load_average_before'][0]:.1f} before, {machine['load_average_after'][0]:.1f} after")

    @staticmethod
    def _cells(row: Row) -> tuple[str, ...]:
        def rate(timing: Timing | None) -> str:
            return "-" if timing is None else f"{timing.pairs_per_s:.2f}"

        def ratio(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}x"

        def memory(timing: Timing | None) -> str:
            return "-" if timing is None or timing.peak_rss_bytes is None else f"{timing.peak_rss_bytes / _MB:.0f}"

        return (row.name, rate(row.naive), rate(row.runner), rate(row.floor), ratio(row.speedup),
                ratio(row.overhead), "/".join(memory(t) for t in (row.naive, row.runner, row.floor)))


def _check_options(metric_names: Sequence[str], phases: Sequence[str], precision: str, *, pairs: int | None,
                   baseline_pairs: int, repeat: int) -> None:
    from metrics.registry import metric_class

    if not metric_names:
        raise InputError("bench perf: --metrics is empty; name at least one pair metric")
    for name in metric_names:
        cls = metric_class(name)
        if cls.level != "pair":
            raise InputError(f"bench perf measures pair metrics; {name} is a {cls.level} metric: "
                             "drop it from --metrics")
    parse_phases(",".join(phases))
    if precision not in PRECISIONS:
        raise InputError(f"unknown --precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    for option, value in (("--pairs", pairs), ("--baseline-pairs", baseline_pairs), ("--repeat", repeat)):
        if value is not None and value < 1:
            raise InputError(f"{option} must be at least 1, got {value}")


def run_perf(
    *,
    metric_names: Sequence[str],
    work: Path,
    pairs: int | None = None,
    size: tuple[int, int] = (256, 256),
    per_original: int = 4,
    annotations: Path | None = None,
    root: Path | None = None,
    device: str = "auto",
    batch_size: int = 32,
    workers: int = 0,
    baseline_pairs: int = DEFAULT_BASELINE_PAIRS,
    phases: Sequence[str] = PHASES,
    precision: str = "float32",
    checkpoints: Mapping[str, Path | None] | None = None,
    repeat: int = 1,
    command: str = "bench perf",
) -> PerfReport:
    """Measure (a) naive, (b) runner and (c) floor for `metric_names` on `pairs` synthetic pairs
    (default 200), or on the first `pairs` rows of `annotations` (default all); `work`
    receives the data, weights, stores and each phase's job and result. Each phase runs
    `repeat` times; the fastest run counts."""
    from bench.data import dataset
    from metrics.base import resolve_device

    metric_names = list(dict.fromkeys(metric_names))
    _check_options(metric_names, phases, precision, pairs=pairs, baseline_pairs=baseline_pairs, repeat=repeat)
    resolved = resolve_device(device)
    if precision == "float16" and resolved.type != "cuda":
        raise InputError("--precision float16 needs a CUDA device; use bfloat16 on a CPU")
    load_before = os.getloadavg()

    if annotations is None:
        csv_path = write_synthetic_pairs(work / "data", DEFAULT_PAIRS if pairs is None else pairs, size, per_original)
        image_root = csv_path.parent
    else:
        csv_path, image_root = _first_rows(annotations, root, pairs, work / "data")
    table = dataset.load_pairs(csv_path, root=image_root)
    setup = prepare_weights(metric_names, work / "weights", checkpoints)
    job = {"annotations": str(csv_path), "root": str(image_root), "device": str(resolved),
           "batch_size": batch_size, "workers": workers, "precision": precision,
           "metric_options": setup.metric_options, "check_pairs": min(baseline_pairs, len(table)),
           "floor_batch_sizes": list(FLOOR_BATCH_SIZES)}

    def measure(phase: str, names: Sequence[str], label: str) -> dict[str, Any]:
        """The fastest of `repeat` runs of a phase (others' load only ever slows one down),
        with the largest peak memory among them."""
        runs = [_run_child({**job, "phase": phase, "metrics": list(names)}, work / "phases" / label / f"run{i + 1}",
                           setup.directory) for i in range(repeat)]
        fastest = min(runs, key=lambda run: run["seconds"])
        return {**fastest, **{key: max(run[key] for run in runs) for key in ("peak_rss_bytes", "peak_gpu_bytes")
                              if key in fastest}}

    measured = _measure_all(measure, metric_names, phases, len(table))
    if setup.stand_ins:
        measured.notes.append(f"stand-in weights for {', '.join(setup.stand_ins)}: timings do not depend on "
                              "weight values; scores from them mean nothing")
    originals = len(dict.fromkeys(table.paths("original")))
    width, height = _image_size(table)
    config = {
        "command": command, "source": "synthetic" if annotations is None else str(annotations),
        "pairs": len(table), "originals": originals,
        "size": f"{width}x{height}" + ("" if annotations is None else " (first original)"),
        "per_original": round(len(table) / originals, 2),
        "metrics": metric_names, "device": str(resolved), "batch_size": batch_size, "workers": workers,
        "precision": precision, "baseline_pairs": job["check_pairs"], "phases": list(phases), "repeat": repeat,
        "floor_batch_sizes_tried": list(FLOOR_BATCH_SIZES),
    }
    machine = machine_info(resolved, measured.threads)
    machine["load_average_before"], machine["load_average_after"] = list(load_before), list(os.getloadavg())
    return PerfReport(config=config, machine=machine, weights=setup.described, rows=measured.rows,
                      full=measured.full, agreement=measured.agreement, notes=measured.notes,
                      conventions=CONVENTIONS)


@dataclass
class _Measured:
    rows: list[Row]
    full: Row
    agreement: dict[str, float]
    notes: list[str]
    threads: int | None


def _timing(result: Mapping[str, Any]) -> Timing:
    return Timing(result["seconds"], result["pairs"], result["peak_rss_bytes"], result.get("peak_gpu_bytes"))


def _measure_all(measure: Any, metric_names: list[str], phases: Sequence[str], total_pairs: int) -> _Measured:
    """Run the phases: naive (all metrics, one process), runner (all together), runner per
    metric and floor per metric (one process each)."""
    single = len(metric_names) == 1
    full = Row("full set" if not single else metric_names[0])
    rows = [full] if single else [Row(name) for name in metric_names]
    measured = _Measured(rows=[] if single else rows, full=full, agreement={}, notes=[], threads=None)
    naive = runner = None
    if "naive" in phases:
        naive = measure("naive", metric_names, "naive")
        measured.threads = naive["threads"]
        full.naive = _timing(naive)
        if not single:
            for row in rows:
                row.naive = Timing(naive["decode_seconds"] + naive["metric_seconds"][row.name], naive["pairs"])
        if naive["pairs"] < total_pairs:
            measured.notes.append(f"the naive baseline was measured on the first {naive['pairs']} of "
                                  f"{total_pairs} pairs and is reported per pair")
    if "runner" in phases:
        runner = measure("runner", metric_names, "runner-full")
        measured.threads = runner["threads"]
        full.runner = _timing(runner)
    if naive and runner:
        measured.agreement = _agreement(naive["values"], runner["values"])
    for row in rows:
        if "per-metric" in phases and not single:
            row.runner = _timing(measure("runner", [row.name], f"runner-{row.name}"))
        if "floor" in phases:
            floor = measure("floor", [row.name], f"floor-{row.name}")
            row.floor = _timing(floor)
            row.floor_detail = {key: floor[key] for key in ("kind", "items", "batch_size", "forward_seconds",
                                                             "seconds_per_item_by_batch_size")}
    if "floor" in phases and not single:
        full.floor = Timing(sum(row.floor.seconds for row in rows), total_pairs,
                            max(row.floor.peak_rss_bytes for row in rows))
        full.floor_detail = {"forward_seconds": sum(row.floor_detail["forward_seconds"] for row in rows)}
    return measured


CONVENTIONS = [
    ("naive: pair by pair, PIL decode, every network built anew (the packages' constructors, then the weights "
     "loaded) and SSIM in a new multiprocessing.Pool, as the released pipeline did; per metric, that metric "
     "alone plus decoding its pair"),
    "pairs/s = pairs / seconds; MB = 2^20 bytes",
    ("runner: one bench.scoring.runner.score_pairs call into a new store (metric construction and hashing included); "
     "per metric, that metric scored alone"),
    ("every phase runs in a fresh process whose module imports happen before its timers start; with --repeat R, "
     "each phase runs R times and its fastest run counts"),
    ("floor: metric compute on decoded tensors at the best batch size (each size tried: the median of its timed "
     f"passes over at least {_FLOOR_SAMPLE_IMAGES} sample images, after a warm-up pass); feature metrics encode each unique "
     "original ONCE (the runner reuses its features) plus every anonymized image, HA1 anonymized images only, "
     "and compare each pair's features (the forward passes alone: forward_seconds in the JSON); "
     "pixel metrics score every pair; full set = sum over metrics"),
    ("speedup (b) vs (a) = naive s/pair / runner s/pair; (b)/(c) time = runner s/pair / floor s/pair: below 1 "
     "only by noise (a loaded machine, or a few pairs), so measure 200 pairs or more on an idle machine"),
    "peak MB: peak resident memory of the fresh process that ran the phase; full-set floor = its largest",
]


def _agreement(naive: Mapping[str, list[float]], runner: Mapping[str, list[float]]) -> dict[str, float]:
    """Largest |naive - runner| per metric over the pairs both scored (equal infinities agree)."""
    found = {}
    for name, expected in naive.items():
        got = np.asarray(runner.get(name, []), dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if got.shape != expected.shape:
            found[name] = math.inf
            continue
        same = (got == expected) | (np.isnan(got) & np.isnan(expected))
        with np.errstate(invalid="ignore"):  # inf - inf where `same` already holds
            found[name] = float(np.max(np.where(same, 0.0, np.abs(got - expected)), initial=0.0))
    return found


def _finite(value: float) -> float | None:
    """JSON has no infinity: a value that is not finite is written as null."""
    return value if math.isfinite(value) else None


def _image_size(table: Any) -> tuple[int, int]:
    with Image.open(table.paths("original")[0]) as first:
        return first.size


def _first_cpu_fields() -> dict[str, str]:
    """The first CPU's block of /proc/cpuinfo as key -> value; empty where there is none."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform says."""
    return _first_cpu_fields().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_family_model() -> str | None:
    """"family F model M" from /proc/cpuinfo: what tells apart CPUs of one model name
    ("AMD EPYC", "Intel(R) Xeon(R) Processor") whose speeds differ several times over."""
    fields = _first_cpu_fields()
    if "cpu family" in fields and "model" in fields:
        return f"family {fields['cpu family']} model {fields['model']}"
    return None


def machine_info(device: Any, threads: int | None) -> dict[str, Any]:
    import torch

    described = str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})"
    return {
        "device": described,
        "cpu_model": cpu_model(),
        "cpu_family_model": cpu_family_model(),
        # The vector instructions torch's CPU kernels use (AVX2, AVX512, ...).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_report(report: PerfReport, json_path: Path | None, out: Path | None) -> list[Path]:
    """The JSON at `json_path` and, with `out`, perf.json and perf.txt there; returns the paths."""
    from metrics.atomic import write_atomic
    from metrics.schema import to_json_text

    text = to_json_text(report.to_json(), indent=2)
    written = []
    targets = [(json_path, text)] if json_path else []
    if out:
        targets += [(out / "perf.json", text), (out / "perf.txt", "\n".join(report.table_lines()) + "\n")]
    for path, content in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, content)
        written.append(path)
    return written


@contextlib.contextmanager
def work_folder(out: Path | None) -> Iterator[Path]:
    """`out` when given (kept), else a temporary folder removed afterwards."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as temporary:
        yield Path(temporary)


if __name__ == "__main__":
    raise SystemExit(_child_main(os.environ[CHILD_JOB_VARIABLE]))
