"""Train and evaluate PerceptAnon on annotated pairs with the paper's recipe.

The recipe (defaults, as the paper's released run_experiment.py trains):

- data: the split's train / val / test parts from `bench.data.protocol.make_split` (seed 42, as
  the paper); HA1 sees the anonymized image only, HA2 the (original, anonymized) pair;
  every image is decoded by `bench.data.images.load_rgb` and turned into network input by
  `metrics.perceptanon.preprocess` (224 x 224, ImageNet normalisation), the transform the
  PerceptAnon metric applies, so test predictions are the metric's scores;
- training only: horizontal flip (p 0.5) and rotation by U(-10, 10) degrees (nearest
  neighbour, black corners) applied to each image of an item independently, as the released
  transform does;
- network: `metrics.perceptanon` HA1 / HA2 layout, backbone initialised from ImageNet
  weights found by `metrics.weights` (`--no-pretrained`: from scratch; `--init`: from a
  PerceptAnon checkpoint, to fine-tune it or, with `--epochs 0`, to evaluate it);
- loss: MSE between sigmoid(output) and the regression target of `protocol.labels`, or
  cross-entropy on the class (optionally weighted n / count per class, from the train set,
  1 for classes the train set lacks, as released);
- SGD lr 0.01 momentum 0.9, CosineAnnealingLR over the epochs, batch 128, 200 epochs; the
  epoch with the lowest validation loss is kept as best.pt and evaluated on the test part.

Checkpoints (best.pt, last.pt) are written atomically as one dict: 'state_dict' (the
released module names: they load with strict=True into the paper's classes and into
`metrics.perceptanon.load_checkpoint`), 'epoch', 'optimizer', 'scheduler', 'val_loss', the
provenance (ha, backbone, label, ..., weights_status of the initial weights) and what a
resumed run needs: history, best epoch, RNG states. Everything is plain tensors, numbers,
strings, lists and dicts, so `torch.load(weights_only=True)` reads all of it.

Resuming is exact on CPU: the order of an epoch is a permutation drawn from (seed, epoch)
and an item's augmentation from (seed, epoch, row), so neither depends on what ran before
nor on the number of DataLoader workers; the global RNG states (torch, CUDA, numpy, python
`random`: dropout in VGG/AlexNet uses torch's) are saved in every checkpoint and restored.
A run killed after epoch k and resumed ends with the same weights as one never stopped.

Memory: with `workers == 0` and a set whose network inputs fit in `CACHE_BUDGET_BYTES`, each
pair's decoded, resized input is kept in memory for the run (decoded once); otherwise every
epoch streams the images from disk through DataLoader workers and nothing is kept.

Under torchrun (`bench.scoring.dist`) every rank trains a DistributedDataParallel replica on
``batch_size / W`` pairs per step: the epoch's permutation, padded to a multiple of W by
repeating its start, is dealt round-robin (`EpochOrder`, as DistributedSampler deals), so the
ranks' step-k batches together are exactly one process's step-k batch, and each rank's loss is
divided by the weight of the whole step's batch. W processes with batch B/W therefore take the
steps of one process with batch B -- exactly so where BatchNorm is synchronised (SyncBatchNorm,
on CUDA with nccl) and the train part's size is a multiple of W (otherwise the padding shows
up to W - 1 pairs twice per epoch); on the CPU torch has no SyncBatchNorm and BatchNorm
statistics are per process. Resuming stays exact on CPU: every rank restores rank 0's RNG
states, which equal its own (the ranks draw alike). Rank 0 alone validates, writes checkpoints (the unwrapped model's state dict: no
'module.' prefix, loadable without torch.distributed), the log and the evaluation.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import InterpolationMode

from bench.analysis.stats import correlation
from bench.data import images, protocol
from bench.data.dataset import PairsTable, load_pairs
from bench.errors import ImageError, InputError, SplitError
from bench.scoring import dist
from bench.scoring.store import run_provenance
from metrics import weights
from metrics.atomic import save_torch_atomic, write_atomic
from metrics.base import WeightsRecord, library_versions
from metrics.errors import WeightsError, checkpoint_load_reason
from metrics.schema import to_json_text
from metrics.perceptanon import (
    BACKBONES,
    HA_MODES,
    IMAGE_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OutputMapping,
    build_ha1,
    build_ha2,
    load_checkpoint,
    preprocess,
    resolve_output_mapping,
)

#: Network inputs kept in memory at most (float32 3 x 224 x 224 = 588 KiB per image).
CACHE_BUDGET_BYTES = 2 << 30
INPUT_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE * 4
MAX_ROTATION_DEGREES = 10.0
STATISTICS = ("pearson", "spearman", "kendall")

_BUILDERS: dict[str, Callable[[str, int], nn.Module]] = {"HA1": build_ha1, "HA2": build_ha2}
# What must be equal for --resume to continue a run rather than start a different one.
_RUN_IDENTITY = ("ha", "backbone", "label", "classification", "binary_compat", "num_outputs", "split",
                 "dataset_hash", "seed", "recipe")


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TrainConfig:
    """One training run; the defaults are the paper's recipe."""

    annotations: Path
    ha: str = "HA1"
    split: str = "all"
    label: str = "mean"
    classification: bool = False
    backbone: str = "resnet50"
    root: Path | None = None
    columns: dict[str, str] | None = None
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 42
    device: str = "auto"
    workers: int = 0
    out: Path | None = None
    resume: bool = False
    binary_compat: bool = False
    pretrained: bool = True
    init: Path | None = None
    augment: bool = True
    class_weighted: bool = False
    size_policy: str = "error"
    #: End this invocation after this epoch (time-limited jobs); `resume` continues it.
    stop_after: int | None = None
    #: How the test set is evaluated: "default" (predicted 1-10 score vs score_mean) or "paper"
    #: (the released eval.py: arg-max class or sigmoid output vs the training label).
    convention: str = "default"

    def __post_init__(self) -> None:
        _check_choice("--ha", self.ha, HA_MODES)
        _check_choice("--backbone", self.backbone, BACKBONES)
        _check_choice("--split", self.split, protocol.SPLITS)
        _check_choice("--label", self.label, protocol.GRANULARITIES)
        _check_choice("--convention", self.convention, EVALUATION_CONVENTIONS)
        images.check_size_policy(self.size_policy)
        if self.classification and self.label == "mean":
            raise InputError("--label mean is a regression target; with --classification use labels10, labels5, "
                             "labels3 or binary")
        if self.binary_compat and self.label != "binary":
            raise InputError(f"--binary-compat applies only to --label binary, not {self.label}; drop it")
        if self.class_weighted and not self.classification:
            raise InputError("--class-weighted weights the cross-entropy loss; add --classification or drop it")
        if self.epochs < 0 or (self.epochs == 0 and self.init is None):
            raise InputError(f"--epochs must be at least 1 (0 only with --init, to evaluate it), got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.workers < 0:
            raise InputError(f"--workers must be 0 or more, got {self.workers}")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.epochs:
            raise InputError(f"--stop-after must be an epoch from 1 to {self.epochs}, got {self.stop_after}")

    @property
    def mapping(self) -> OutputMapping:
        return OutputMapping(label=self.label, classification=self.classification, binary_compat=self.binary_compat)

    @property
    def run_name(self) -> str:
        """The default run folder's name (the CLI puts it under ./runs/train)."""
        kind = "-cls" if self.classification else ""
        return f"{self.ha}-{self.split}-{self.label}-{self.backbone}{kind}"

    @property
    def out_dir(self) -> Path:
        # The default folder depends on the working folder, which only the CLI sees.
        if self.out is None:
            raise InputError("TrainConfig.out is not set: give the run folder (the CLI's default is "
                             f"runs/train/{self.run_name})")
        return Path(self.out)

    @property
    def init_kind(self) -> str:
        return "checkpoint" if self.init is not None else "imagenet" if self.pretrained else "scratch"

    def recipe(self) -> dict[str, Any]:
        """Settings that change the trained weights (device and workers do not, on CPU)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum,
                "augment": self.augment, "class_weighted": self.class_weighted, "size_policy": self.size_policy,
                "image_size": IMAGE_SIZE, "split_seed": protocol.DEFAULT_SEED, "init": self.init_kind}


def _check_choice(option: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InputError(f"unknown {option} {value!r}; choose from: {', '.join(allowed)}")


# --------------------------------------------------------------------------- data
class Augmentation:
    """Flip and rotation drawn from (seed, epoch, row): the same on every run and worker."""

    # Black (0 in [0, 1]) after ImageNet normalisation: rotating the normalised image with this
    # fill equals the released order (rotate the resized image, then normalise), since
    # nearest-neighbour rotation and flips commute with a per-channel affine map.
    FILL: ClassVar[list[float]] = [-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)]

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generator(self, epoch: int, row: int) -> torch.Generator:
        entropy = np.random.SeedSequence([self.seed, epoch, row]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))

    def __call__(self, inputs: tuple[torch.Tensor, ...], *, epoch: int, row: int) -> tuple[torch.Tensor, ...]:
        generator = self.generator(epoch, row)
        return tuple(self._augment(image, generator) for image in inputs)

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if torch.rand(1, generator=generator).item() < 0.5:
            image = TF.horizontal_flip(image)
        angle = torch.empty(1).uniform_(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, generator=generator).item()
        return TF.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=self.FILL)


def network_input(rgb: np.ndarray) -> torch.Tensor:
    """A decoded H x W x 3 uint8 image -> 3 x 224 x 224 input, exactly as the metric makes it."""
    tensor = torch.from_numpy(images.to_float(rgb)).permute(2, 0, 1).unsqueeze(0)
    return preprocess(tensor)[0].contiguous()


class PairInputs:
    """Network inputs of a table's pairs: (anonymized,) for HA1, (original, anonymized) for HA2."""

    def __init__(self, table: PairsTable, ha: str, size_policy: str, *, cache: bool) -> None:
        self.ha = ha
        self.size_policy = size_policy
        self.anonymized = table.paths("anonymized")
        self.originals = table.paths("original") if ha == "HA2" else []
        self.where = [table.where(i) for i in range(len(table))] if ha == "HA2" else []
        self.cache: dict[int, tuple[torch.Tensor, ...]] | None = {} if cache else None

    def __call__(self, row: int) -> tuple[torch.Tensor, ...]:
        if self.cache is not None and row in self.cache:
            return self.cache[row]
        anonymized = images.load_rgb(self.anonymized[row])
        if self.ha == "HA1":
            decoded = (anonymized,)
        else:
            original = images.load_rgb(self.originals[row])
            decoded = (original, images.reconcile_sizes(original, anonymized, self.size_policy, where=self.where[row]))
        inputs = tuple(network_input(rgb) for rgb in decoded)
        if self.cache is not None:
            self.cache[row] = inputs
        return inputs


class PairImages(Dataset):
    """Item (epoch, i): the inputs of the part's i-th pair (augmented for training) and its target."""

    def __init__(self, inputs: PairInputs, rows: np.ndarray, targets: np.ndarray,
                 augmentation: Augmentation | None) -> None:
        self.inputs = inputs
        self.rows = rows
        self.targets = torch.from_numpy(np.asarray(targets))
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor] | ImageError:
        epoch, position = key
        row = int(self.rows[position])
        try:
            inputs = self.inputs(row)
        except ImageError as exc:
            # Handed to the main process as a value: DataLoader would wrap a raised error in
            # a multi-line traceback.
            return exc
        if self.augmentation is not None:
            inputs = self.augmentation(inputs, epoch=epoch, row=row)
        return inputs, self.targets[position]


class EpochOrder(Sampler):
    """(epoch, i) keys of one epoch: shuffled by a permutation drawn from (seed, epoch), or in order.

    With `world_size` W > 1, rank r's share: the order padded to a multiple of W by repeating
    its start, then every W-th key from position r (DistributedSampler's dealing).
    """

    def __init__(self, size: int, epoch: int, seed: int | None, *, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.epoch, self.seed = size, epoch, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (np.arange(self.size) if self.seed is None
                 else np.random.default_rng([self.seed, self.epoch]).permutation(self.size))
        padded = np.resize(order, len(self) * self.world_size)
        return ((self.epoch, int(i)) for i in padded[self.rank::self.world_size])


def _collate(items: list[Any]) -> Any:
    failed = [item for item in items if isinstance(item, ImageError)]
    return failed[0] if failed else default_collate(items)


def _batches(dataset: PairImages, *, epoch: int, shuffle_seed: int | None, batch_size: int, workers: int,
             device: torch.device, sharded: bool = False) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """The part's batches in epoch order; `sharded`: this rank's share only (see `EpochOrder`)."""
    ctx = dist.current() if sharded else dist.Context()
    order = EpochOrder(len(dataset), epoch, shuffle_seed, rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order,
                        num_workers=workers, collate_fn=_collate, pin_memory=device.type == "cuda")
    for batch in loader:
        if isinstance(batch, ImageError):
            raise ImageError(f"{batch}; run `bench validate` to list every unreadable image")
        inputs, targets = batch
        yield tuple(x.to(device, non_blocking=True) for x in inputs), targets.to(device, non_blocking=True)


@dataclass
class Parts:
    """The split's three parts as datasets, and how their images are held."""

    train: PairImages
    val: PairImages
    test: PairImages
    storage: str


def make_parts(table: PairsTable, split: protocol.Split, targets: np.ndarray, config: TrainConfig) -> Parts:
    n_images = (len(split.train) + len(split.val) + len(split.test)) * (2 if config.ha == "HA2" else 1)
    needed = n_images * INPUT_BYTES
    cache = config.workers == 0 and needed <= CACHE_BUDGET_BYTES
    if cache:
        storage = f"{n_images} network inputs cached in memory after their first decode ({needed / 2**20:.0f} MiB)"
    elif config.workers == 0:
        storage = (f"images decoded from disk every epoch in this process ({needed / 2**30:.1f} GiB of inputs "
                   f"exceed the {CACHE_BUDGET_BYTES / 2**30:.0f} GiB cache; --workers N decodes in parallel)")
    else:
        storage = f"images streamed from disk by {config.workers} DataLoader workers, nothing cached"
    inputs = PairInputs(table, config.ha, config.size_policy, cache=cache)
    augmentation = Augmentation(config.seed) if config.augment else None

    def part(rows: np.ndarray, augment: Augmentation | None) -> PairImages:
        return PairImages(inputs, rows, targets[rows], augment)

    return Parts(part(split.train, augmentation), part(split.val, None), part(split.test, None), storage)


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class InitialWeights:
    """Where a run's starting weights came from: 'stand-in'/'unverified'/'verified' or 'scratch'."""

    status: str
    sha256: str | None
    source: str


def build_model(config: TrainConfig) -> tuple[nn.Module, InitialWeights]:
    """The network to train, on CPU: seeded init, then the ImageNet backbone or a checkpoint."""
    _seed_everything(config.seed)
    if config.init is not None:
        model, info = load_checkpoint(config.init, ha=config.ha, backbone=config.backbone,
                                      num_outputs=config.mapping.num_outputs)
        # Refuses a checkpoint trained for another label or task.
        resolve_output_mapping(info, label=config.label, classification=config.classification,
                               binary_compat=config.binary_compat)
        return model.train(), InitialWeights(info.status, info.sha256, f"PerceptAnon checkpoint {info.path}")
    model = _BUILDERS[config.ha](config.backbone, config.mapping.num_outputs)
    if not config.pretrained:
        return model, InitialWeights("scratch", None, f"random initialisation (seed {config.seed})")
    record = load_imagenet_backbone(model, config.ha, config.backbone)
    return model, InitialWeights(record.status, record.sha256, f"ImageNet weights {record.name}")


def load_imagenet_backbone(model: nn.Module, ha: str, backbone: str) -> WeightsRecord:
    """Copy torchvision's ImageNet weights into every layer but the new output layer(s)."""
    try:
        state, record = weights.load_state_dict(backbone)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; or pass --no-pretrained to train from scratch") from None
    with torch.device("meta"):
        backbone_keys = list(build_ha2(backbone, 1).shared_extractor.state_dict())
    missing = [key for key in backbone_keys if key not in state]
    if missing:
        raise WeightsError(f"weights {record.name} lack {', '.join(missing[:3])}: not a torchvision {backbone} "
                           f"file; run `bench weights fetch {backbone}`")
    target = model.shared_extractor if ha == "HA2" else model
    try:
        # strict=False only leaves out HA1's output layer: every backbone key is given.
        target.load_state_dict({key: state[key] for key in backbone_keys}, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"weights {record.name} do not fit a torchvision {backbone} "
                           f"({str(exc).splitlines()[-1].strip()}); run `bench weights fetch {backbone}`") from None
    return record


# --------------------------------------------------------------------------- loss
def class_weights(classes: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse frequency n / count per class of the train set; 1 for classes it lacks (as released)."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    result = np.ones(n_classes, dtype=np.float64)
    result[present] = counts.sum() / counts[present]
    return torch.tensor(result, dtype=torch.float32)


class Criterion:
    """The training loss as (sum over items, weight of those items), so that epoch losses
    average over items exactly and a weighted cross-entropy keeps its own normalisation."""

    def __init__(self, classification: bool, weight: torch.Tensor | None = None) -> None:
        self.classification = classification
        self.weight = weight

    def terms(self, raw: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.classification:
            predicted = torch.sigmoid(raw[:, 0])
            return F.mse_loss(predicted, targets.to(predicted.dtype), reduction="sum"), raw.new_tensor(len(targets))
        if self.weight is None:
            return F.cross_entropy(raw, targets, reduction="sum"), raw.new_tensor(len(targets))
        weight = self.weight.to(raw.device)
        return F.cross_entropy(raw, targets, weight=weight, reduction="sum"), weight[targets].sum()


def make_criterion(config: TrainConfig, train_targets: np.ndarray) -> Criterion:
    weight = class_weights(train_targets, protocol.n_classes(config.label)) if config.class_weighted else None
    return Criterion(config.classification, weight)


# --------------------------------------------------------------------------- epochs
def train_epoch(model: nn.Module, dataset: PairImages, criterion: Criterion, optimizer: torch.optim.Optimizer, *,
                epoch: int, seed: int, batch_size: int, workers: int, device: torch.device) -> float:
    """One epoch; under torchrun `model` is the DDP replica and `batch_size` this rank's share."""
    ctx = dist.current()
    model.train()
    total = weight = 0.0
    for inputs, targets in _batches(dataset, epoch=epoch, shuffle_seed=seed, batch_size=batch_size,
                                    workers=workers, device=device, sharded=True):
        batch_total, batch_weight = criterion.terms(model(*inputs), targets)
        # The loss of the whole step's batch, over every rank: DDP averages the ranks' gradients,
        # hence the factor world_size (1 in one process, where this is batch_total / batch_weight).
        step_weight = ctx.sum(batch_weight.detach())
        optimizer.zero_grad()
        (batch_total * ctx.world_size / step_weight).backward()
        optimizer.step()
        total += batch_total.item()
        weight += batch_weight.item()
    total, weight = ctx.sum(torch.tensor([total, weight], dtype=torch.float64, device=device)).tolist()
    return total / weight


def predict(model: nn.Module, dataset: PairImages, *, batch_size: int, workers: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs and targets of a part, in its order, on the CPU."""
    model.eval()
    raw, targets = [], []
    with torch.inference_mode():
        for inputs, batch_targets in _batches(dataset, epoch=0, shuffle_seed=None, batch_size=batch_size,
                                              workers=workers, device=device):
            raw.append(model(*inputs).float().cpu())
            targets.append(batch_targets.cpu())
    return torch.cat(raw), torch.cat(targets)


def mean_loss(criterion: Criterion, raw: torch.Tensor, targets: torch.Tensor) -> float:
    total, weight = criterion.terms(raw, targets)
    return (total / weight).item()


# --------------------------------------------------------------------------- checkpoints
@dataclass
class Progress:
    """Where a run stands after `epoch` epochs; saved in every checkpoint."""

    epoch: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "val_loss": [], "lr": [], "seconds": []}
    )


def rng_states() -> dict[str, Any]:
    """Global RNG states as tensors and numbers (loadable with weights_only=True)."""
    numpy_state = np.random.get_state()
    python_version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": {"version": python_version, "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": python_gauss},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss_next"]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, every entry, loaded with weights_only=True on the CPU."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        raise InputError(f"{path} is not a readable training checkpoint ({checkpoint_load_reason(exc, path)}); "
                         "delete it to start the run again") from None
    if not isinstance(loaded, dict) or not {"state_dict", "optimizer", "scheduler", "progress"} <= loaded.keys():
        raise InputError(f"{path} was not written by `bench train` (no optimizer/scheduler/progress); "
                         "delete it or choose another --out")
    return loaded


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress,
                metadata: dict[str, Any]) -> dict[str, Any]:
    history = progress.history
    return {
        "state_dict": {key: tensor.detach().cpu() for key, tensor in model.state_dict().items()},
        "epoch": progress.epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "val_loss": history["val_loss"][-1],
        "train_loss": history["train_loss"][-1],
        "lr": history["lr"][-1],
        **metadata,
        "progress": asdict(progress),
        "rng": rng_states(),
    }


def _run_metadata(config: TrainConfig, table: PairsTable, initial: InitialWeights) -> dict[str, Any]:
    return {
        "ha": config.ha, "backbone": config.backbone, "label": config.label,
        "classification": config.classification, "binary_compat": config.binary_compat,
        "num_outputs": config.mapping.num_outputs, "split": config.split, "dataset_hash": table.dataset_hash,
        "seed": config.seed, "weights_status": initial.status, "weights_sha256": initial.sha256,
        "weights_source": initial.source, "versions": library_versions(), "recipe": config.recipe(),
    }


def _check_resumable(path: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    differing = [key for key in _RUN_IDENTITY if recorded.get(key) != current[key]]
    if differing:
        shown = "; ".join(f"{key}: run {recorded.get(key)!r}, now {current[key]!r}" for key in differing[:3])
        raise InputError(f"{path} belongs to another run ({shown}); repeat the run's own options with --resume, "
                         "or choose another --out")


# --------------------------------------------------------------------------- evaluation
EVALUATION_CONVENTIONS = ("default", "paper")
_CORRELATED = {
    "default": "between the predicted 1-10 score and the human score_mean of each test pair",
    "paper": "as the released eval.py: between the training label of each test pair and the model's "
             "arg-max class (classification) or sigmoid output (regression)",
}


@dataclass(frozen=True)
class Evaluation:
    """Test-set numbers of one model: the paper's (mse or accuracy/precision/recall) plus
    Pearson, Spearman and Kendall between predicted 1-10 score and human score_mean (or,
    under the paper convention, between the released eval.py's prediction and label)."""

    rows: np.ndarray
    scores: np.ndarray
    numbers: dict[str, float]
    #: Why a number is undefined (NaN), e.g. "constant prediction".
    notes: dict[str, str]

    def summary(self) -> str:
        shown = "  ".join(f"{name} {value:.4f}" for name, value in self.numbers.items())
        return f"test ({len(self.rows)} pairs): {shown}"


def macro_precision_recall(true: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Macro precision and recall over the classes in either array; 0 where undefined (as
    scikit-learn's average='macro', zero_division=0)."""
    classes = np.union1d(true, predicted)
    hits = np.array([np.sum((predicted == c) & (true == c)) for c in classes], dtype=np.float64)
    predicted_counts = np.array([np.sum(predicted == c) for c in classes], dtype=np.float64)
    true_counts = np.array([np.sum(true == c) for c in classes], dtype=np.float64)
    precision = np.divide(hits, predicted_counts, out=np.zeros_like(hits), where=predicted_counts > 0)
    recall = np.divide(hits, true_counts, out=np.zeros_like(hits), where=true_counts > 0)
    return float(precision.mean()), float(recall.mean())


def paper_prediction(raw: torch.Tensor, mapping: OutputMapping) -> np.ndarray:
    """What the released eval.py correlates with the label: the arg-max of the raw output
    (classes in the training labels' own order) or the sigmoid output (regression)."""
    if mapping.classification:
        return raw.argmax(dim=1).numpy().astype(np.float64)
    return torch.sigmoid(raw[:, 0]).numpy().astype(np.float64)


def summarise(raw: torch.Tensor, targets: torch.Tensor, score_mean: np.ndarray, rows: np.ndarray,
              mapping: OutputMapping, criterion: Criterion, convention: str = "default") -> Evaluation:
    numbers: dict[str, float] = {}
    if mapping.classification:
        true, predicted = targets.numpy(), raw.argmax(dim=1).numpy()
        numbers["accuracy"] = float(np.mean(true == predicted))
        numbers["precision"], numbers["recall"] = macro_precision_recall(true, predicted)
    else:
        numbers["mse"] = mean_loss(criterion, raw, targets)
    scores = mapping.scores(raw).numpy()
    if convention == "paper":
        predicted, human = paper_prediction(raw, mapping), targets.numpy().astype(np.float64).ravel()
    else:
        predicted, human = scores, score_mean
    notes = {}
    for statistic in STATISTICS:
        value, reason = correlation(predicted, human, statistic, names=("prediction", "human score"))
        numbers[statistic] = value
        if reason:
            notes[statistic] = reason
    return Evaluation(rows=rows, scores=scores, numbers=numbers, notes=notes)


def write_evaluation(evaluation: Evaluation, path: Path, **context: Any) -> None:
    document = {
        **context,
        "n_test": len(evaluation.rows),
        "metrics": evaluation.numbers,
        "undefined": evaluation.notes,
        "correlations": _CORRELATED[context.get("convention", "default")],
    }
    write_atomic(path, to_json_text(document, indent=2))


# --------------------------------------------------------------------------- logging
class RunLog:
    """Lines printed and appended to <out>/train.log."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None) -> None:
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.echo is not None:
            self.echo(line)


def plot_losses(history: dict[str, list[float]], best_epoch: int, path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs = range(1, len(history["train_loss"]) + 1)
    axes.plot(epochs, history["train_loss"], label="train")
    axes.plot(epochs, history["val_loss"], label="validation")
    if best_epoch:
        axes.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="epoch", ylabel="loss", title=title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


# --------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class TrainResult:
    config: TrainConfig
    out: Path
    #: best.pt / last.pt; None for an evaluation of --init without training.
    best: Path | None
    last: Path | None
    eval_path: Path
    evaluation: Evaluation
    progress: Progress


@dataclass
class _Training:
    """The stateful objects of a run, fresh or restored from last.pt."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    progress: Progress
    metadata: dict[str, Any]
    initial: InitialWeights
    resumed: bool


def train(config: TrainConfig, *, echo: Callable[[str], None] | None = print) -> TrainResult | None:
    """Train (or resume), keep the best epoch, evaluate it on the test part; see the module doc.

    Under torchrun every rank trains; rank 0 returns the result, the others None.
    """
    table = load_pairs(config.annotations, root=config.root, columns=config.columns)
    split = protocol.make_split(table.frame, config.split, source=str(table.source))
    if split.empty:
        raise SplitError(f"{table.source}: split '{config.split}' leaves no test pairs in this table; "
                         "choose another --split")
    out = config.out_dir
    last_path = out / "last.pt"
    _check_out(out, last_path, config.resume)
    ctx = dist.current()
    if config.batch_size % ctx.world_size:
        raise InputError(f"--batch-size {config.batch_size} must be a multiple of the {ctx.world_size} processes "
                         "(each takes an equal share of every step)")
    device = dist.rank_device(config.device)
    state = _start(config, table, last_path, device)
    trainable = dist.data_parallel(state.model)
    state.model = dist.unwrap(trainable)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "train.log", echo) if ctx.is_main else _silent

    score_mean = table.frame["score_mean"].to_numpy(dtype=np.float64)
    targets = protocol.labels(score_mean, config.label, classification=config.classification,
                              binary_compat=config.binary_compat)
    parts = make_parts(table, split, targets, config)
    criterion = make_criterion(config, targets[split.train])
    log(f"{'resuming' if state.resumed else 'training'} {_title(config)} on {table.source} split {config.split}: "
        f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)} pairs; device {device}; "
        f"seed {config.seed}; initial weights: {state.initial.source} ({state.initial.status}); {parts.storage}")
    if ctx.distributed:
        log(f"{ctx.world_size} processes ({ctx.backend}), {config.batch_size // ctx.world_size} pairs each per step; "
            + ("BatchNorm synchronised across processes (SyncBatchNorm)" if dist.syncs_batch_norm() else
               "BatchNorm statistics per process (torch's SyncBatchNorm needs CUDA devices with nccl)"))
    _train_epochs(config, state, trainable, parts, criterion, device, out, log)
    if not ctx.is_main:
        return None

    progress = state.progress
    if progress.epoch < config.epochs:
        log(f"stopped after epoch {progress.epoch} of {config.epochs}; continue with --resume")
    evaluated = out / "best.pt" if config.epochs else Path(config.init)
    evaluation = evaluate_checkpoint(evaluated, config, parts.test, score_mean[split.test], criterion, device)
    eval_path = out / "eval.json"
    write_evaluation(evaluation, eval_path, checkpoint=str(evaluated), epoch=progress.best_epoch or None,
                     val_loss=progress.best_val_loss if progress.best_epoch else None, ha=config.ha,
                     backbone=config.backbone,
                     label=config.label, classification=config.classification, split=config.split,
                     convention=config.convention,
                     score=config.mapping.describe(), weights_status=state.initial.status,
                     provenance=run_provenance(device=str(device), dataset_hash=table.dataset_hash,
                                               seeds={"train": config.seed, "split": protocol.DEFAULT_SEED},
                                               annotations=str(table.source), **config.recipe()))
    log(f"{evaluated.name}{f' (epoch {progress.best_epoch})' if config.epochs else ''} {evaluation.summary()}")
    for statistic, reason in evaluation.notes.items():
        log(f"  {statistic} undefined: {reason}")
    log(f"wrote {eval_path}")
    trained = config.epochs > 0
    return TrainResult(config=config, out=out, best=out / "best.pt" if trained else None,
                       last=last_path if trained else None, eval_path=eval_path, evaluation=evaluation,
                       progress=progress)


def _silent(line: str) -> None:
    """The log of ranks other than 0: rank 0 writes and prints the run's lines."""


def _title(config: TrainConfig) -> str:
    task = " classification" if config.classification else ""
    return f"PerceptAnon {config.ha} {config.backbone} {config.label}{task}"


def _check_out(out: Path, last_path: Path, resume: bool) -> None:
    if resume and not last_path.is_file():
        raise InputError(f"nothing to resume: {out} has no last.pt; drop --resume to start the run")
    if not resume and last_path.is_file():
        raise InputError(f"{out} already holds a training run (last.pt); pass --resume to continue it, "
                         "or choose another --out")


def _start(config: TrainConfig, table: PairsTable, last_path: Path, device: torch.device) -> _Training:
    """Model, optimizer, schedule and progress: new, or exactly as last.pt left them."""
    resumed = read_checkpoint(last_path) if config.resume else None
    if resumed is None:
        model, initial = build_model(config)
    else:
        # The weights come from last.pt: the initial weights are neither needed nor reloaded.
        initial = InitialWeights(resumed["weights_status"], resumed["weights_sha256"], resumed["weights_source"])
        _check_resumable(last_path, resumed, _run_metadata(config, table, initial))
        model = _BUILDERS[config.ha](config.backbone, config.mapping.num_outputs)
        model.load_state_dict(resumed["state_dict"])
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    progress = Progress()
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        progress = Progress(**resumed["progress"])
        restore_rng_states(resumed["rng"])
    return _Training(model, optimizer, scheduler, progress, _run_metadata(config, table, initial), initial,
                     resumed is not None)


def _train_epochs(config: TrainConfig, state: _Training, trainable: nn.Module, parts: Parts, criterion: Criterion,
                  device: torch.device, out: Path, log: Callable[[str], None]) -> None:
    """Epochs after the last finished one, up to --stop-after or --epochs; checkpoints each.

    `trainable` is `state.model` or, under torchrun, its DDP replica; rank 0 alone validates
    and writes checkpoints.
    """
    progress = state.progress
    ctx = dist.current()
    for epoch in range(progress.epoch + 1, (config.stop_after or config.epochs) + 1):
        started = time.perf_counter()
        lr = state.optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(trainable, parts.train, criterion, state.optimizer, epoch=epoch,
                                 seed=config.seed, batch_size=config.batch_size // ctx.world_size,
                                 workers=config.workers, device=device)
        state.scheduler.step()
        if not ctx.is_main:
            continue
        val_loss = mean_loss(criterion, *predict(state.model, parts.val, batch_size=config.batch_size,
                                                 workers=config.workers, device=device))
        progress.epoch = epoch
        for key, value in (("train_loss", train_loss), ("val_loss", val_loss), ("lr", lr),
                           ("seconds", time.perf_counter() - started)):
            progress.history[key].append(value)
        improved = val_loss < progress.best_val_loss
        if improved:
            progress.best_epoch, progress.best_val_loss = epoch, val_loss
        payload = _checkpoint(state.model, state.optimizer, state.scheduler, progress, state.metadata)
        if improved:
            save_torch_atomic(payload, out / "best.pt")
        save_torch_atomic(payload, out / "last.pt")
        plot_losses(progress.history, progress.best_epoch, out / "loss.png", _title(config))
        log(f"epoch {epoch}/{config.epochs}  train loss {train_loss:.5f}  val loss {val_loss:.5f}  lr {lr:.6g}  "
            f"{progress.history['seconds'][-1]:.1f} s{'  (best)' if improved else ''}")


def evaluate_checkpoint(path: Path, config: TrainConfig, test: PairImages, score_mean: np.ndarray,
                        criterion: Criterion, device: torch.device) -> Evaluation:
    """Test-set numbers of a checkpoint, loaded the way the PerceptAnon metric loads it."""
    model, _ = load_checkpoint(path, ha=config.ha, backbone=config.backbone,
                               num_outputs=config.mapping.num_outputs)
    raw, targets = predict(model.to(device), test, batch_size=config.batch_size, workers=config.workers,
                           device=device)
    return summarise(raw, targets, score_mean, test.rows, config.mapping, criterion, config.convention)
