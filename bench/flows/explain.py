"""Grad-CAM heatmaps of PerceptAnon: which regions of an image drive its predicted anonymity.

Grad-CAM (Selvaraju et al., 2017) at the backbone's last convolutional block: ResNet
`layer4`, DenseNet `features`, VGG/AlexNet the last `Conv2d` of `features`. A forward hook
keeps that block's activations A (k channels); the gradient of the target with respect to
them is taken with `torch.autograd.grad`; the map is ReLU(sum_k mean_xy(dT/dA_k) * A_k),
resized bilinearly to the image's own size and min-max scaled to [0, 1] (all zeros when
nothing in the image raises the target). The target is the predicted 1-10 score for a
regression model and the logit of the arg-max class for a classifier, so a heatmap shows
what makes the model's own prediction.

For HA2 the block runs on the original and on the anonymized image; each gets its own map.
`overlay_png` turns an image and its map into PNG bytes (matplotlib colormap, alpha blend),
for the CLI and for reports.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bench.data import images
from bench.errors import InputError
from metrics.atomic import write_atomic
from metrics.base import check_inputs, resolve_device
from metrics.perceptanon import (
    HA_MODES,
    CheckpointInfo,
    OutputMapping,
    load_checkpoint,
    preprocess,
    resolve_output_mapping,
)

DEFAULT_ALPHA = 0.5
DEFAULT_COLORMAP = "jet"


@dataclass(frozen=True)
class Explanation:
    """Heatmaps in [0, 1], one per input image at its size (N x H x W), and the predictions."""

    anonymized: np.ndarray
    #: HA2 only: the original's heatmap in each pair.
    original: np.ndarray | None
    score: np.ndarray
    #: "predicted score" or "logit of the predicted class".
    target: str


def cam_layer(model: nn.Module, ha: str, backbone: str) -> nn.Module:
    """The module whose output Grad-CAM explains: the backbone's last convolutional block."""
    network = model.shared_extractor if ha == "HA2" else model
    if backbone.startswith("resnet"):
        return network.layer4
    if backbone.startswith("densenet"):
        return network.features
    return [module for module in network.features if isinstance(module, nn.Conv2d)][-1]


class _Activations:
    """Forward hook that keeps every output of a module (HA2 runs it twice per pair)."""

    def __init__(self, layer: nn.Module) -> None:
        self.outputs: list[torch.Tensor] = []
        self.handle = layer.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        self.outputs.append(output)
        # Downstream layers get a copy: VGG/AlexNet apply an in-place ReLU to it, which would
        # otherwise overwrite the kept activations.
        return output.clone()

    def __enter__(self) -> _Activations:  # noqa: PYI034 - a private, final class
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.handle.remove()


def _target(raw: torch.Tensor, mapping: OutputMapping) -> torch.Tensor:
    if mapping.classification:
        return raw.gather(1, raw.argmax(dim=1, keepdim=True)).sum()
    return mapping.scores(raw).sum()


def _heatmaps(activations: torch.Tensor, gradients: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    channel_weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((channel_weights * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - low
    scaled = torch.where(span > 0, (cam - low) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    return scaled.detach().cpu().numpy().astype(np.float32)


def explain(model: nn.Module, info: CheckpointInfo, anonymized: torch.Tensor, original: torch.Tensor | None = None,
            *, mapping: OutputMapping | None = None) -> Explanation:
    """Grad-CAM of a PerceptAnon model on float32 N x 3 x H x W images in [0, 1] (on the
    model's device); HA2 needs `original` too. The model is left in the mode it came in."""
    mapping = mapping or resolve_output_mapping(info)
    if (original is not None) != (info.ha == "HA2"):
        raise InputError("HA2 explains (original, anonymized) pairs: pass both images" if info.ha == "HA2"
                         else "HA1 judges the anonymized image alone: do not pass an original")
    check_inputs(original, anonymized, metric=f"perceptanon_{info.ha.lower()}")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), _Activations(cam_layer(model, info.ha, info.backbone)) as kept:
            pair = (anonymized,) if original is None else (original, anonymized)
            # Inputs that require grad give the activations a graph even when the weights are
            # frozen (as the metric adapters freeze them).
            raw = model(*(preprocess(x).requires_grad_(True) for x in pair))
            gradients = torch.autograd.grad(_target(raw, mapping), kept.outputs)
    finally:
        model.train(was_training)
    maps = [_heatmaps(a, g, tuple(anonymized.shape[-2:])) for a, g in zip(kept.outputs, gradients)]
    return Explanation(
        anonymized=maps[-1],
        original=maps[0] if original is not None else None,
        score=mapping.scores(raw.detach()).cpu().numpy(),
        target="logit of the predicted class" if mapping.classification else "predicted score",
    )


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = DEFAULT_ALPHA,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """An H x W x 3 uint8 image with its H x W heatmap blended over it in a matplotlib colormap."""
    import matplotlib

    if image.shape[:2] != heatmap.shape:
        raise InputError(f"heatmap {heatmap.shape} and image {image.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha must lie in [0, 1], got {alpha}")
    coloured = matplotlib.colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * images.to_float(image) + alpha * coloured
    return np.rint(blended * 255.0).astype(np.uint8)


def overlay_png(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = DEFAULT_ALPHA,
                colormap: str = DEFAULT_COLORMAP) -> bytes:
    """PNG bytes of `overlay`, e.g. for a report to embed."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, heatmap, alpha=alpha, colormap=colormap)).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- files
def checkpoint_ha(path: Path) -> str:
    """HA2 when the checkpoint records it or holds Siamese keys, else HA1 (tensors not read)."""
    try:
        loaded = torch.load(path, map_location="meta", weights_only=True)
    except Exception:  # noqa: BLE001 - load_checkpoint then reports what is wrong with the file
        return "HA1"
    if not isinstance(loaded, dict):
        return "HA1"
    if loaded.get("ha") in HA_MODES:
        return loaded["ha"]
    state = loaded.get("state_dict", loaded)
    siamese = isinstance(state, dict) and any(
        str(key).removeprefix("module.").startswith("shared_extractor.") for key in state
    )
    return "HA2" if siamese else "HA1"


def _as_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images.to_float(rgb)).permute(2, 0, 1).unsqueeze(0).to(device)


@dataclass(frozen=True)
class ExplainedPair:
    """The Grad-CAM overlays written for one pair, and the model's score for it."""

    anonymized: Path
    score: float
    overlays: tuple[Path, ...]


def explain_pairs(checkpoint: Path, pairs: Sequence[tuple[Path | None, Path]], out: Path, *,
                  ha: str | None = None, device: str = "auto", alpha: float = DEFAULT_ALPHA,
                  colormap: str = DEFAULT_COLORMAP) -> list[ExplainedPair]:
    """Write <out>/NNN-<name>-gradcam.png for each (original, anonymized) pair (HA2: and
    NNN-<name>-original-gradcam.png for its original); the model is loaded once for all.
    HA1 pairs have original None. HA2 compares images of one size: an anonymized image of
    another size is first resized to the original's, as `--size-policy resize` does."""
    ha = ha or checkpoint_ha(checkpoint)
    if ha == "HA2" and any(original is None for original, _ in pairs):
        raise InputError("an HA2 checkpoint explains pairs: pass the original image with --original")
    if ha == "HA1" and any(original is not None for original, _ in pairs):
        raise InputError("an HA1 checkpoint judges the anonymized image alone: drop --original")
    resolved = resolve_device(device)
    model, info = load_checkpoint(checkpoint, ha=ha)
    model.to(resolved)
    mapping = resolve_output_mapping(info)
    out.mkdir(parents=True, exist_ok=True)
    decoded: dict[Path, np.ndarray] = {}
    explained = []
    for number, (original, path) in enumerate(pairs, start=1):
        anonymized_rgb = images.load_rgb(path)
        original_rgb = original_input = None
        if original is not None:
            if original not in decoded:
                decoded[original] = images.load_rgb(original)
            original_rgb = decoded[original]
            anonymized_rgb = images.reconcile_sizes(original_rgb, anonymized_rgb, "resize", where=str(path))
            original_input = _as_tensor(original_rgb, resolved)
        explanation = explain(model, info, _as_tensor(anonymized_rgb, resolved), original_input, mapping=mapping)
        stem = f"{number:03d}-{Path(path).stem}"
        written = [write_atomic(out / f"{stem}-gradcam.png",
                                overlay_png(anonymized_rgb, explanation.anonymized[0], alpha=alpha, colormap=colormap))]
        if original_rgb is not None:
            written.append(write_atomic(out / f"{stem}-original-gradcam.png",
                                        overlay_png(original_rgb, explanation.original[0], alpha=alpha,
                                                    colormap=colormap)))
        explained.append(ExplainedPair(Path(path), float(explanation.score[0]), tuple(written)))
    return explained


def explain_files(checkpoint: Path, anonymized: Sequence[Path], out: Path, *, ha: str | None = None,
                  original: Path | None = None, device: str = "auto", alpha: float = DEFAULT_ALPHA,
                  colormap: str = DEFAULT_COLORMAP) -> list[str]:
    """`explain_pairs` for several anonymized images of one original (or none, HA1); one line each."""
    explained = explain_pairs(checkpoint, [(original, path) for path in anonymized], out, ha=ha, device=device,
                              alpha=alpha, colormap=colormap)
    return [f"{item.anonymized}: score {item.score:.2f} -> {', '.join(str(p) for p in item.overlays)}"
            for item in explained]
