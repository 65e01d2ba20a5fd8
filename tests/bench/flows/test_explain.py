"""Grad-CAM of PerceptAnon: hooks against a hand-split network, heatmap shape and range,
HA2 pairs, in-place ReLU backbones, overlays and `bench explain`.

Networks are seeded random initialisations saved as stand-in checkpoints: Grad-CAM is a
function of any weights, so no trained model is needed to check it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.cli import main
from bench.data import images
from bench.errors import InputError
from bench.flows import explain
from metrics.perceptanon import (
    build_ha1,
    build_ha2,
    load_checkpoint,
    preprocess,
    save_checkpoint,
)

IMAGES = Path(__file__).resolve().parents[3] / "fixtures" / "demo" / "images"
ANONYMIZED = IMAGES / "anonymized" / "blur" / "global" / "coco" / "astronaut.png"
ORIGINAL = IMAGES / "originals" / "coco" / "astronaut.png"
# Heatmaps are float32 maps scaled to [0, 1]; the two computations below differ only in
# float32 summation order.
TOLERANCE = 1e-5

torch.set_num_threads(2)


def _checkpoint(tmp_path: Path, ha: str, backbone: str = "resnet18", outputs: int = 1, **metadata) -> Path:
    torch.manual_seed(5)
    model = (build_ha2 if ha == "HA2" else build_ha1)(backbone, outputs)
    # Random batch-norm statistics: with the defaults (mean 0, var 1) activations of a random
    # network barely vary, which would make weak heatmaps.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{ha}-{backbone}-{outputs}.pt"
    save_checkpoint(model, path, weights_status="stand-in", classification=outputs > 1, **metadata)
    return path


def _image(path: Path = ANONYMIZED) -> torch.Tensor:
    return torch.from_numpy(images.to_float(images.load_rgb(path))).permute(2, 0, 1).unsqueeze(0)


def _resnet_cut(model) -> tuple[torch.nn.Module, callable]:
    trunk = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                                model.layer3, model.layer4)
    return trunk, lambda activations: model.fc(torch.flatten(model.avgpool(activations), 1))


def _alexnet_cut(model) -> tuple[torch.nn.Module, callable]:
    def head(activations):
        # The next layer is an in-place ReLU, which a leaf tensor that requires grad refuses.
        rest = model.features[11:](activations * 1)
        return model.classifier(torch.flatten(model.avgpool(rest), 1))

    return model.features[:11], head


def _manual_gradcam(cut, image: torch.Tensor, classification: bool) -> np.ndarray:
    """Grad-CAM with the network cut by hand at its last conv block (no hooks)."""
    trunk, head = cut
    activations = trunk(preprocess(image)).detach().requires_grad_(True)
    raw = head(activations)
    target = raw[0, raw[0].argmax()] if classification else 1 + 9 * torch.sigmoid(raw[0, 0])
    (gradients,) = torch.autograd.grad(target, activations)
    cam = torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return ((cam - cam.min()) / (cam.max() - cam.min())).detach().numpy()


@pytest.mark.parametrize("outputs", [1, 10])
def test_gradcam_matches_a_hand_split_resnet(outputs, tmp_path):
    model, info = load_checkpoint(_checkpoint(tmp_path, "HA1", outputs=outputs), ha="HA1")
    image = _image()
    result = explain.explain(model, info, image)
    assert result.anonymized.shape == (1, *image.shape[-2:]) and result.original is None
    heatmap = result.anonymized[0]
    assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0) and heatmap.std() > 0.05
    np.testing.assert_allclose(heatmap, _manual_gradcam(_resnet_cut(model), image, outputs > 1), rtol=0, atol=TOLERANCE)
    assert result.target == ("logit of the predicted class" if outputs > 1 else "predicted score")


def test_gradcam_leaves_the_model_and_its_predictions_alone(tmp_path):
    model, info = load_checkpoint(_checkpoint(tmp_path, "HA1"), ha="HA1")
    model.train()
    image = _image()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = explain.explain(model, info, image)
    assert model.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    with torch.no_grad():
        expected = 1 + 9 * torch.sigmoid(model.eval()(preprocess(image)).double()[:, 0])
    np.testing.assert_allclose(result.score, expected.numpy(), rtol=0, atol=1e-6)
    assert all(not module._forward_hooks for module in model.modules())


def test_ha2_explains_both_images_of_the_pair(tmp_path):
    model, info = load_checkpoint(_checkpoint(tmp_path, "HA2"), ha="HA2")
    model.requires_grad_(False)  # frozen, as the metric adapters hold it
    original, anonymized = _image(ORIGINAL), _image()
    result = explain.explain(model, info, anonymized, original)
    assert result.original.shape == result.anonymized.shape == (1, *anonymized.shape[-2:])
    assert result.original.std() > 0.05 and result.anonymized.std() > 0.05
    assert not np.allclose(result.original, result.anonymized)
    with pytest.raises(InputError, match="both images"):
        explain.explain(model, info, anonymized)


@pytest.mark.parametrize("backbone,layer", [("resnet50", "layer4"), ("densenet121", "features"),
                                            ("vgg11", "features.18"), ("alexnet", "features.10")])
def test_cam_layer_is_the_last_convolutional_block(backbone, layer):
    with torch.device("meta"):
        ha1, ha2 = build_ha1(backbone, 1), build_ha2(backbone, 1)
    assert explain.cam_layer(ha1, "HA1", backbone) is ha1.get_submodule(layer)
    assert explain.cam_layer(ha2, "HA2", backbone) is ha2.shared_extractor.get_submodule(layer)


def test_in_place_relu_after_the_hooked_conv_does_not_corrupt_the_map(tmp_path):
    # AlexNet's hooked conv feeds an in-place ReLU: the kept activations must stay the conv's.
    model, info = load_checkpoint(_checkpoint(tmp_path, "HA1", backbone="alexnet"), ha="HA1")
    image = _image()
    result = explain.explain(model, info, image)
    assert result.anonymized.std() > 0.01 and result.anonymized.shape == (1, *image.shape[-2:])
    np.testing.assert_allclose(result.anonymized[0], _manual_gradcam(_alexnet_cut(model), image, False),
                               rtol=0, atol=TOLERANCE)


def test_overlay_blends_a_colormap_over_the_image():
    rgb = images.load_rgb(ANONYMIZED)
    heatmap = np.linspace(0, 1, rgb.shape[0] * rgb.shape[1], dtype=np.float32).reshape(rgb.shape[:2])
    assert np.array_equal(explain.overlay(rgb, heatmap, alpha=0.0), rgb)
    import matplotlib

    coloured = np.rint(matplotlib.colormaps["jet"](heatmap)[..., :3] * 255).astype(np.uint8)
    assert np.array_equal(explain.overlay(rgb, heatmap, alpha=1.0), coloured)
    decoded = np.asarray(Image.open(io.BytesIO(explain.overlay_png(rgb, heatmap))))
    assert decoded.shape == rgb.shape and np.array_equal(decoded, explain.overlay(rgb, heatmap))
    with pytest.raises(InputError, match="differ in size"):
        explain.overlay(rgb, heatmap[:-1])


def test_checkpoint_kind_is_read_from_metadata_or_keys(tmp_path):
    assert explain.checkpoint_ha(_checkpoint(tmp_path, "HA2")) == "HA2"
    released = tmp_path / "released.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in build_ha2("resnet18", 1).state_dict().items()}},
               released)
    assert explain.checkpoint_ha(released) == "HA2"
    assert explain.checkpoint_ha(_checkpoint(tmp_path, "HA1")) == "HA1"


def test_cli_writes_one_overlay_per_image(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path, "HA1")
    second = IMAGES / "anonymized" / "pixelate" / "local" / "lfw" / "astronaut_face.png"
    out = tmp_path / "maps"
    assert main(["explain", "--checkpoint", str(checkpoint), str(ANONYMIZED), str(second), "--out", str(out),
                 "--device", "cpu"]) == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["001-astronaut-gradcam.png", "002-astronaut_face-gradcam.png"]
    for png, source in zip(written, (ANONYMIZED, second)):
        assert Image.open(png).size == Image.open(source).size
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_cli_explains_an_ha2_pair_and_asks_for_the_original(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path, "HA2")
    out = tmp_path / "maps"
    assert main(["explain", "--checkpoint", str(checkpoint), str(ANONYMIZED), "--original", str(ORIGINAL),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["001-astronaut-gradcam.png",
                                                         "001-astronaut-original-gradcam.png"]
    capsys.readouterr()
    assert main(["explain", "--checkpoint", str(checkpoint), str(ANONYMIZED), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--original" in error
