"""LPIPS (Zhang et al. 2018) with the `lpips` package: AlexNet trunk, v0.1 linear heads.

The linear heads ship inside the lpips package and are checked against a pinned sha256; the
ImageNet AlexNet trunk comes from the weights manager, because lpips would download it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from metrics.base import FeaturePairMetric, WeightsRecord
from metrics.errors import WeightsError
from metrics.hashing import file_sha256

# sha256 of lpips/weights/v0.1/alex.pth as shipped in lpips 0.1.4.
LINEAR_HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
LINEAR_HEADS_NAME = "lpips-v0.1-alex-linear-heads"
TRUNK_WEIGHTS_NAME = "alexnet"


def _build_network() -> torch.nn.Module:
    """lpips' AlexNet LPIPS with random trunk and heads: nothing is downloaded or loaded here."""
    import lpips

    with warnings.catch_warnings():
        # lpips builds its trunk with torchvision's deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        return lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)


def _load_linear_heads(network: torch.nn.Module) -> WeightsRecord:
    """Load the v0.1 heads shipped with lpips, strictly, from the bytes whose hash is recorded."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if not path.is_file():
        raise WeightsError(f"LPIPS linear heads {path} are missing; reinstall the package: pip install lpips==0.1.4")
    sha256 = file_sha256(path)
    try:
        heads = torch.load(path, map_location="cpu", weights_only=True)
        # The file names the heads lin0..lin4; lpips holds the same modules as the list `lins`.
        network.lins.load_state_dict({key.removeprefix("lin"): value for key, value in heads.items()}, strict=True)
    except Exception as exc:  # torch raises several unrelated types for bad archives and layouts
        raise WeightsError(f"LPIPS linear heads {path} do not fit lpips' AlexNet heads; "
                           "reinstall the package: pip install lpips==0.1.4") from exc
    return WeightsRecord(name=LINEAR_HEADS_NAME, sha256=sha256,
                         status="verified" if sha256 == LINEAR_HEADS_SHA256 else "unverified")


def trunk_state_dict(network: torch.nn.Module, alexnet_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision AlexNet `features.<i>.<param>` keys -> lpips' `slice<k>.<i>.<param>` keys.

    lpips names each layer inside a slice by its index in torchvision's `features`, so the
    mapping is read off the network. Every trunk parameter must be found, and every
    `features.*` tensor must be used (the classifier is not part of LPIPS).
    """
    mapping = {f"features.{key.split('.', 1)[1]}": key for key in network.net.state_dict()}
    offered = {key for key in alexnet_state if key.startswith("features.")}
    missing = sorted(set(mapping) - offered)
    unexpected = sorted(offered - set(mapping))
    if missing or unexpected:
        raise WeightsError(
            f"alexnet weights do not fit the LPIPS trunk (missing {missing}, unexpected {unexpected}); "
            "check them with: bench weights verify alexnet"
        )
    return {trunk_key: alexnet_state[source_key] for source_key, trunk_key in mapping.items()}


class LPIPS(FeaturePairMetric):
    """Learned perceptual distance: a distance, so larger means more anonymous.

    Features are lpips' five unit-normalised AlexNet activations of the image mapped to
    [-1, 1]; the distance is the v0.1 linear heads on their squared differences, averaged
    over space and summed over layers, exactly as lpips.LPIPS.forward computes it.
    """

    name: ClassVar[str] = "lpips"
    label: ClassVar[str] = "LPIPS"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    # As a utility (trade-off views): perceptually closer to the original = more realistic.
    higher_is_more_useful: ClassVar[bool] = False
    utility_view: ClassVar[str] = "realism"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        from metrics.weights import load_state_dict

        network = _build_network()
        alexnet_state, self._trunk_record = load_state_dict(TRUNK_WEIGHTS_NAME)
        try:
            network.net.load_state_dict(trunk_state_dict(network, alexnet_state), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"alexnet weights do not fit the LPIPS trunk ({exc}); "
                               "check them with: bench weights verify alexnet") from exc
        self._heads_record = _load_linear_heads(network)
        # NHWC ("channels_last") convolutions are faster, on CPUs (oneDNN) too: 25% less time per
        # image on a 2-core EPYC; distances differ from NCHW's by float32 rounding.
        self._network = network.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    def weights(self) -> list[WeightsRecord]:
        return [self._trunk_record, self._heads_record]

    def conventions(self) -> dict[str, Any]:
        return {
            "package": "lpips",
            "trunk": "AlexNet (torchvision layout), ImageNet weights",
            "linear_heads": "v0.1",
            "network_input": "[0, 1] mapped to [-1, 1] (2x - 1), then lpips' ScalingLayer",
            "reduction": "spatial mean per layer, summed over 5 layers",
            "precision": "float32",
        }

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        import lpips

        scaled = self._network.scaling_layer(2 * images.to(self.device) - 1)
        scaled = scaled.contiguous(memory_format=torch.channels_last)
        return [lpips.normalize_tensor(activation) for activation in self._network.net(scaled)]

    def _compare(self, original_features: list[torch.Tensor], anonymized_features: list[torch.Tensor]) -> torch.Tensor:
        per_layer = [
            head((original - anonymized) ** 2).mean(dim=(2, 3))
            for head, original, anonymized in zip(self._network.lins, original_features, anonymized_features)
        ]
        # Summed in layer order, as lpips does, so float32 rounding matches it too.
        return sum(per_layer).flatten()
