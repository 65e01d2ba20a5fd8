"""Anonymization methods: the four built-ins (pure numpy functions) and finding a user's method.

Contract of a method (the built-ins and a user's alike)::

    fn(image, pii_mask, boxes) -> anonymized

- ``image``: H x W x 3 ``uint8`` RGB.
- ``pii_mask``: H x W ``bool``, True on the PII region (person or face).
- ``boxes``: list of ``(x0, y0, x1, y1)`` integer pixel boxes around the PII, ``x1``/``y1``
  exclusive (so ``image[y0:y1, x0:x1]`` is the box).
- returns a new H x W x 3 ``uint8`` array; only pixels inside ``pii_mask`` may differ from
  ``image``, every pixel outside it is bit-identical. The input is never modified.

Box-based methods (blur, pixelate) take their parameters from each box and change the PII
pixels inside that box (``pii_mask`` AND box); PII pixels outside every box are left as they
are. Boxes are clipped to the image; a box that is empty after clipping is skipped. Boxes are
processed in the given order, each from the unmodified input, so where two boxes overlap the
later one wins.

`anonymize` calls any method through this contract: it passes copies (a method cannot spoil
the original for the next one) and checks the output's type, shape, dtype and NaNs, turning
every problem into a one-line `MethodFailure` naming the method and the image. The built-ins
satisfy the checks by construction.

`resolve_method` finds a method by the ``--method`` spec, in this order:

- ``NAME=DIR``: a folder of already-anonymized images, matched to the originals by relative
  path (any image extension; see `match_folder`).
- a built-in name (`BUILTIN_METHODS`);
- an entry point in the group ``bench.methods`` of an installed package (a plugin may not
  reuse a built-in's name, nor another plugin's: that is an error, never an override);
- ``module:function``, imported (the current folder is searched last).

Each resolved `Method` carries an ``identity`` that changes whenever its outputs may change,
so unchanged methods are not re-run: built-ins by name and suite version, plugins by their
distribution's name and version, ``module:function`` by the sha256 of the named module's file
and of the file defining the function (its own source where there is no file), folders by the
sha256 of every file in them.

Parameters. A method declares its tunable parameters (`Parameter`): a built-in, or a user's
function, through an attribute ``bench_parameters`` (a sequence of `Parameter`), or else
through the keyword arguments after ``(image, pii_mask, boxes)`` that have defaults
(`inspect.signature`; the type is the default's). `sweep` turns ``NAME=V1,V2`` assignments
into one `Method` per setting (several assignments make a grid), named ``blur[radius=8]``;
its identity is the base method's plus the values, so every setting is cached on its own,
and the values are called as keyword arguments: ``fn(image, pii_mask, boxes, radius=8.0)``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.dataset import require_inside
from bench.data.layout import ORIGINALS_FOLDER, method_slug
from bench.data.regions import Box, clip_box
from bench.errors import InputError
from bench.methods.isolation import WorkerDied, probe
from metrics.hashing import file_sha256
from metrics.registry import Registry, distribution_of

MethodFunction = Callable[[np.ndarray, np.ndarray, Sequence[Box]], np.ndarray]

#: Entry-point group in which installed packages offer methods.
ENTRY_POINT_GROUP = "bench.methods"

#: RGB colour that `mask` paints over the PII region.
MASK_FILL: tuple[int, int, int] = (0, 0, 0)
#: Gaussian blur radius (PIL's standard deviation) as a fraction of the box width.
BLUR_RADIUS_PER_BOX_WIDTH: float = 1.0 / 8.0
#: Side of the square pixelation blocks, in pixels.
PIXELATE_BLOCK: int = 16


def mask(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box], *,
         colour: tuple[int, int, int] = MASK_FILL) -> np.ndarray:
    """Solid fill: every PII pixel becomes `colour` (default `MASK_FILL`). ``boxes`` is not used."""
    out = image.copy()
    out[pii_mask] = np.asarray(colour, dtype=np.uint8)
    return out


def blur_radius(box: Sequence[int]) -> float:
    """The Gaussian blur radius (PIL's standard deviation, pixels) used for ``box``."""
    x0, _, x1, _ = box
    return (int(x1) - int(x0)) * BLUR_RADIUS_PER_BOX_WIDTH


def _blur_margin(radius: float) -> int:
    # PIL approximates the Gaussian by three passes of an (extended) box blur whose radius is
    # at most ceil(radius) + 1 pixels, so a pixel depends on pixels at most
    # 3 * (ceil(radius) + 1) away. Blurring the box plus this margin therefore gives, inside
    # the box, exactly what blurring the whole image gives (edges are clamped alike where the
    # margin reaches the image border). A generous extra keeps it true if PIL changes slightly.
    return 4 * (math.ceil(radius) + 1)


def blur(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box], *,
         radius: float | None = None) -> np.ndarray:
    """Gaussian blur of each box (PIL ``GaussianBlur``) with standard deviation `radius`
    pixels; by default ``radius = box width / 8`` (`blur_radius`).

    Per box: blur the box plus a margin (same result inside the box as blurring the whole
    image), then copy back only the PII pixels of that box.
    """
    from PIL import Image, ImageFilter

    height, width = pii_mask.shape
    out = image.copy()
    for raw in boxes:
        box = clip_box(raw, height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        box_radius = blur_radius(box) if radius is None else float(radius)
        margin = _blur_margin(box_radius)
        cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
        cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
        region = Image.fromarray(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]), mode="RGB")
        blurred = np.asarray(region.filter(ImageFilter.GaussianBlur(box_radius)))
        inner = blurred[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
        sel = pii_mask[y0:y1, x0:x1]
        out[y0:y1, x0:x1][sel] = inner[sel]
    return out


def pixelate(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box], *,
             block: int = PIXELATE_BLOCK) -> np.ndarray:
    """`block` x `block` pixel blocks (default 16), each replaced by its mean colour inside
    the PII mask.

    The block grid is anchored at the box's top-left corner and clipped at the box edge (the
    last row/column of blocks may be narrower). The mean is over all pixels of the block
    (PII or not), per channel, rounded half up exactly in integer arithmetic:
    ``(2 * sum + n) // (2 * n)``. Only the PII pixels of the block take that colour.
    """
    height, width = pii_mask.shape
    out = image.copy()
    b = int(block)
    for raw in boxes:
        box = clip_box(raw, height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        for by in range(y0, y1, b):
            for bx in range(x0, x1, b):
                ey, ex = min(by + b, y1), min(bx + b, x1)
                block = image[by:ey, bx:ex].reshape(-1, 3).astype(np.int64)
                n = block.shape[0]
                mean = (2 * block.sum(axis=0) + n) // (2 * n)
                sel = pii_mask[by:ey, bx:ex]
                out[by:ey, bx:ex][sel] = mean.astype(np.uint8)
    return out


def inpaint(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Classical biharmonic inpainting of the PII mask (scikit-image).

    ``inpaint_biharmonic`` on the image as floats in [0, 1] with ``channel_axis=-1``; the
    result is scaled back by 255, rounded (``np.rint``, half to even) and clipped to uint8,
    and only the PII pixels are copied into the output. ``boxes`` is not used.
    """
    from skimage.restoration import inpaint_biharmonic

    out = image.copy()
    if not pii_mask.any():
        return out
    filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, pii_mask, channel_axis=-1)
    filled = np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)
    out[pii_mask] = filled[pii_mask]
    return out


#: The built-in methods by name. The protocol maps ``blur`` and ``pixelate`` to the paper's
#: ``blurpix`` family.
BUILTIN_METHODS: dict[str, MethodFunction] = {
    "mask": mask,
    "blur": blur,
    "pixelate": pixelate,
    "inpaint": inpaint,
}


def identity(image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The original, unchanged: the reference row of a leaderboard (what "no change" scores:
    PSNR = +inf, FID about 0, KID slightly below 0 on paired data)."""
    return image.copy()


#: Reference methods: not anonymizations, run beside the built-ins so that every leaderboard
#: shows what an unchanged image scores.
REFERENCE_METHODS: dict[str, MethodFunction] = {"identity": identity}
#: Every name the suite itself runs: no plugin, module or folder method may take one.
RESERVED_METHODS: dict[str, MethodFunction] = {**BUILTIN_METHODS, **REFERENCE_METHODS}
#: Methods by name: the suite's own, then the `bench.methods` entry points of installed packages.
METHODS = Registry("anonymization method", {name: f"bench.methods:{function.__name__}"
                                            for name, function in RESERVED_METHODS.items()},
                   ENTRY_POINT_GROUP, error=InputError)


# ----------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Parameter:
    """One tunable parameter of a method: what ``--param NAME=V1,V2`` may set."""

    name: str
    #: The value the method uses when the parameter is not given (None: the method decides).
    default: Any
    #: "int", "float", "bool", "str" or "colour" (``#RRGGBB``, called as an (r, g, b) tuple).
    kind: str = "str"
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def describe(self) -> str:
        """``radius (float, default: box width / 8)``, for one-line errors and help."""
        default = self.help if self.default is None and self.help else format_value(self.default)
        low, high = (None if bound is None else format_value(bound) for bound in (self.minimum, self.maximum))
        bounds = (f", in [{low}, {high}]" if low is not None and high is not None
                  else f", >= {low}" if low is not None else f", <= {high}" if high is not None else "")
        return f"{self.name} ({self.kind}{bounds}, default {default})"

    def parse(self, text: str) -> Any:
        """The value of `text` for this parameter; ValueError (a short reason) if it is not one."""
        text = text.strip()
        if self.kind == "int":
            value: Any = int(text)
        elif self.kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError("not a finite number")
        elif self.kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("not true or false")
            value = text.lower() in ("true", "1", "yes")
        elif self.kind == "colour":
            digits = text.removeprefix("#")
            if len(digits) != 6:
                raise ValueError("not a colour #RRGGBB")
            value = tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))
        else:
            value = _guess_value(text) if self.default is None else text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"below its minimum {format_value(self.minimum)}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"above its maximum {format_value(self.maximum)}")
        return value


def format_value(value: Any) -> str:
    """A parameter value as row names show it: 8.0 -> "8", (0, 0, 0) -> "#000000"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, int) for v in value):
        return "#" + "".join(f"{v:02x}" for v in value)
    return str(value)


def _guess_value(text: str) -> Any:
    """A value for a parameter whose default says nothing of its type: int, else float, else text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


_KINDS_OF_DEFAULTS = {bool: "bool", int: "int", float: "float", str: "str"}


def method_parameters(function: Callable[..., Any] | None) -> tuple[Parameter, ...]:
    """The parameters `function` declares: its ``bench_parameters`` attribute, else its
    keyword arguments after the first three that have defaults."""
    if function is None:
        return ()
    declared = getattr(function, "bench_parameters", None)
    if declared is not None:
        if not all(isinstance(p, Parameter) for p in declared):
            raise InputError(f"{getattr(function, '__qualname__', function)}.bench_parameters must be a sequence "
                             "of bench.methods.Parameter")
        return tuple(declared)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return ()
    found = []
    for position, parameter in enumerate(signature.parameters.values()):
        if position < 3 or parameter.default is inspect.Parameter.empty:
            continue
        if parameter.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            continue
        kind = _KINDS_OF_DEFAULTS.get(type(parameter.default), "str")
        found.append(Parameter(parameter.name, parameter.default, kind))
    return tuple(found)


mask.bench_parameters = (  # type: ignore[attr-defined]
    Parameter("colour", MASK_FILL, "colour", help="#000000"),
)
blur.bench_parameters = (  # type: ignore[attr-defined]
    Parameter("radius", None, "float", help="box width / 8", minimum=0.0),
)
pixelate.bench_parameters = (  # type: ignore[attr-defined]
    Parameter("block", PIXELATE_BLOCK, "int", minimum=1),
)
# Biharmonic inpainting has no radius to tune (OpenCV's Telea/Navier-Stokes have one).
inpaint.bench_parameters = ()  # type: ignore[attr-defined]


def get_method(name: str) -> MethodFunction:
    """The built-in method called ``name``; an `InputError` lists the allowed names."""
    try:
        return BUILTIN_METHODS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(BUILTIN_METHODS)
        hint = METHODS.suggestion(str(name), BUILTIN_METHODS)
        raise InputError(f"unknown anonymization method {name!r}; {hint + ' ' if hint else ''}allowed: {allowed}") from None


# ----------------------------------------------------------------------------- resolution
KINDS = ("built-in", "plugin", "function", "folder")
# Folder names of a method's outputs; a leading "_" or "." is left to the suite's own folders.



@dataclass(frozen=True)
class Method:
    """A method found by `resolve_method`: a function to call, or a folder of outputs."""

    name: str
    #: One of `KINDS`.
    kind: str
    #: Changes whenever the method's outputs may change (see the module docstring).
    identity: str
    #: Where it comes from, for provenance: "bench.methods:blur", "mypkg:anon (mypkg 1.0)", a folder.
    source: str
    function: MethodFunction | None = field(default=None, compare=False, repr=False)
    #: The folder of already-anonymized images (kind "folder").
    folder: Path | None = None
    #: ``module:attribute`` by which a worker process imports a user's function (plugins and
    #: module:function; see `bench.methods.isolation`); None for built-ins and folders.
    reference: str | None = None
    #: A user's function's parameters, as its probe process found them (the run never imports
    #: the function itself); None for built-ins, whose `function` is at hand.
    declared: tuple[Parameter, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def isolated(self) -> bool:
        """Whether it runs in a worker process: a user's code, not a built-in."""
        return self.kind in ("plugin", "function")
    #: One setting of a sweep: (parameter, value) pairs in declaration order; () = the defaults.
    params: tuple[tuple[str, Any], ...] = ()
    #: The name without the setting ("blur" for "blur[radius=8]"); "" when it is the name.
    base: str = ""

    @property
    def base_name(self) -> str:
        return self.base or self.name

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """What ``--param`` may set on this method."""
        return self.declared if self.declared is not None else method_parameters(self.function)

    @property
    def slug(self) -> str:
        """The method's folder name: its name with anything unsafe in a path replaced by ``_``."""
        return method_slug(self.name)


class MethodFailure(InputError):
    """A method that failed on one image: raised, or returned something off the contract."""


def resolve_method(spec: str, *, allow_outside_root: bool = False) -> Method:
    """The method named by a ``--method`` value (see the module docstring for the order)."""
    spec = spec.strip()
    if not spec:
        raise InputError("empty --method; give a built-in name, a plugin name, module:function or NAME=DIR")
    name, is_folder, folder = spec.partition("=")
    if is_folder:
        return _folder_method(name.strip(), Path(folder.strip()), allow_outside_root=allow_outside_root)
    if spec in RESERVED_METHODS:
        return _builtin(spec)
    plugins = plugin_entry_points()
    if spec in plugins:
        return _plugin(plugins[spec])
    if ":" in spec:
        return _function_method(spec)
    installed = ", ".join(sorted(plugins)) or "none installed"
    hint = METHODS.suggestion(spec, [*BUILTIN_METHODS, *plugins])
    raise InputError(
        f"unknown anonymization method {spec!r}; {hint + ' ' if hint else ''}use a built-in "
        f"({', '.join(BUILTIN_METHODS)}), "
        f"an installed plugin ({installed}), module:function, or NAME=DIR for a folder of anonymized images"
    )


def sweep(method: Method, assignments: Sequence[str]) -> list[Method]:
    """One `Method` per setting of ``NAME=V1,V2,...`` `assignments` (several make a grid, in
    the order given); `method` itself when there are none. A bad name or value is one
    `InputError` listing the method's parameters."""
    if not assignments:
        return [method]
    declared = {parameter.name: parameter for parameter in method.parameters}
    listing = ", ".join(p.describe() for p in declared.values()) or "none"
    what = f"--param for method {method.name!r}"
    if method.params:
        raise InputError(f"{what}: it is already a setting; give --param to the base method {method.base_name!r}")
    if method.kind == "folder" or not declared:
        reason = "is a folder of images" if method.kind == "folder" else "declares no parameters"
        raise InputError(f"{what}: it {reason}, so it takes no --param (its parameters: none)")
    axes: dict[str, list[Any]] = {}
    for assignment in assignments:
        name, has_value, values = assignment.partition("=")
        name = name.strip()
        if not has_value or not name:
            raise InputError(f"{what}: {assignment!r} is not NAME=V1,V2,...; its parameters: {listing}")
        if name not in declared:
            raise InputError(f"{what}: unknown parameter {name!r}; its parameters: {listing}")
        if name in axes:
            raise InputError(f"{what}: {name!r} is given twice; list all its values in one --param {name}=V1,V2")
        texts = [text for text in values.split(",") if text.strip()]
        if not texts:
            raise InputError(f"{what}: {name!r} has no values; its parameters: {listing}")
        parsed = []
        for text in texts:
            try:
                parsed.append(declared[name].parse(text))
            except ValueError as exc:
                raise InputError(f"{what}: {name}={text.strip()!r} is not a valid value ({exc}); "
                                 f"its parameters: {listing}") from None
        axes[name] = list(dict.fromkeys(parsed))
    order = [p.name for p in declared.values() if p.name in axes]
    settings = []
    for combination in itertools.product(*(axes[name] for name in order)):
        params = tuple(zip(order, combination))
        label = ",".join(f"{name}={format_value(value)}" for name, value in params)
        values_json = json.dumps({name: format_value(value) for name, value in params}, sort_keys=True)
        settings.append(replace(method, name=f"{method.name}[{label}]", base=method.name, params=params,
                                identity=f"{method.identity}, parameters {values_json}"))
    return settings


def builtin_methods() -> list[Method]:
    """The built-ins, then the reference methods: every benchmark run shows them all."""
    return [_builtin(name) for name in RESERVED_METHODS]


def _builtin(name: str) -> Method:
    from bench import __version__

    return Method(name=name, kind="built-in", identity=f"built-in {name}, perceptanon-bench {__version__}",
                  source=f"bench.methods:{name}", function=RESERVED_METHODS[name])


def plugin_entry_points() -> dict[str, EntryPoint]:
    """Installed plugin methods by name; a name used twice (or a built-in's) is an error."""
    return METHODS.entry_points()


def _plugin(ep: EntryPoint) -> Method:
    origin = distribution_of(ep)
    facts = _probe(ep.value, f"method plugin {ep.name!r} ({ep.value})", lambda reason: (
        f"method plugin {ep.name!r}: cannot load {ep.value} ({reason}); fix or reinstall {origin}"))
    return Method(name=ep.name, kind="plugin", identity=f"plugin {ep.value} from {origin}",
                  source=f"{ep.value} ({origin})", reference=ep.value, declared=_parameters_from_json(facts["parameters"]))


def import_reference(reference: str) -> tuple[Any, Any]:
    """(module, target) of "module:attr.attr"; raises whatever the import raises.

    No bytecode is cached beside the user's module: a benchmark writes only under its output folder."""
    module_name, _, attribute = reference.partition(":")
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    target = module
    for part in filter(None, attribute.split(".")):
        target = getattr(target, part)
    return module, target


def _function_method(spec: str) -> Method:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--method {spec!r}: expected module:function, e.g. mymethod:anonymize")
    facts = _probe(spec, f"--method {spec!r}", lambda reason: (
        f"--method {spec!r}: cannot import it ({reason}); check the module is on PYTHONPATH (or in the current "
        "folder) and the function name"))
    identity = f"function {spec}, source sha256 {facts['source_sha256']}"
    return Method(name=spec, kind="function", identity=identity, source=spec, reference=spec,
                  declared=_parameters_from_json(facts["parameters"]))


def user_function_facts(reference: str, what: str) -> dict[str, Any]:
    """What the run needs to know about a user's function (run in a probe process, see
    `bench.methods.isolation.probe`): {"import_error": line}, {"refused": line}, or its source sha256
    and declared parameters."""
    try:
        module, target = import_reference(reference)
    except (Exception, SystemExit) as exc:  # the user's module may raise anything on import, even sys.exit
        return {"import_error": describe_exception(exc)}
    try:
        _check_callable(target, what)
        return {"source_sha256": _source_sha256(what, module, target),
                "parameters": [asdict(parameter) for parameter in method_parameters(target)]}
    except InputError as exc:
        return {"refused": str(exc)}


def _probe(reference: str, what: str, cannot_import: Callable[[str], str]) -> dict[str, Any]:
    try:
        facts = probe(reference, what)
    except WorkerDied as exc:
        raise InputError(cannot_import(str(exc))) from None
    if "import_error" in facts:
        raise InputError(cannot_import(facts["import_error"]))
    if "refused" in facts:
        raise InputError(facts["refused"])
    return facts


def _parameters_from_json(records: Sequence[dict[str, Any]]) -> tuple[Parameter, ...]:
    parameters = []
    for record in records:
        default = record["default"]
        parameters.append(Parameter(**{**record, "default": tuple(default) if isinstance(default, list) else default}))
    return tuple(parameters)


def _source_sha256(spec: str, module: object, function: object) -> str:
    """sha256 over the files of the named module and of the module defining the function
    (so edits to helpers beside it count too); of the function's source where neither is a file."""
    modules = [module, sys.modules.get(getattr(function, "__module__", None) or "")]
    paths = (getattr(m, "__file__", None) for m in modules)
    files = sorted({str(path) for path in paths if path and Path(path).is_file()})
    if files:
        return hashlib.sha256("\n".join(file_sha256(path) for path in files).encode()).hexdigest()
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError) as exc:
        raise InputError(f"--method {spec!r}: cannot read its source to tell when it changes ({describe_exception(exc)}); "
                         "define the function in a .py file") from exc
    return hashlib.sha256(source.encode()).hexdigest()


def _check_callable(target: object, what: str) -> None:
    if not callable(target):
        raise InputError(f"{what} is a {type(target).__name__}, not a function "
                         "fn(image, pii_mask, boxes) -> anonymized image")


def _folder_method(name: str, folder: Path, *, allow_outside_root: bool = False) -> Method:
    if not name:
        raise InputError(f"--method ={folder}: give the folder's method a name, e.g. mine={folder}")
    if name in RESERVED_METHODS:
        raise InputError(f"--method {name}={folder}: {name!r} is a built-in method; choose another name")
    method_slug(name)
    if not folder.is_dir():
        raise InputError(f"--method {name}={folder}: no such folder; give the folder of anonymized images")
    digest = hashlib.sha256()
    files = _folder_files(folder)
    if not allow_outside_root:
        for path in files:
            require_inside(path, folder, what=f"--method {name}={folder}: {path}", where="that folder",
                           fix="copy the image into the folder")
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return Method(name=name, kind="folder", identity=f"folder of {digest.hexdigest()}", source=str(folder),
                  folder=folder)


def _folder_files(folder: Path) -> list[Path]:
    """Every regular file under `folder`, hidden ones (``.DS_Store``, ``.git``) left out."""
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


@dataclass
class FolderMatch:
    """How a folder's files match the originals (by relative path, extension ignored)."""

    #: original's relative path -> its anonymized file.
    found: dict[str, Path]
    #: originals without a file.
    missing: list[str]
    #: originals with several candidate files (e.g. a.png and a.jpg), with the candidates.
    ambiguous: dict[str, list[Path]]
    #: files that match no original.
    extra: list[Path]


#: The folder of a benchmark set's originals, as its pii.json keys begin.
def match_folder(folder: Path, originals: Sequence[str]) -> FolderMatch:
    """Match the files of `folder` to `originals` (paths such as ``coco/a.png``) by relative
    path without extension: ``coco/a.jpg`` in the folder is the anonymized ``coco/a.png``, and
    so is ``originals/coco/a.jpg`` (the pii.json key's layout)."""
    by_stem: dict[str, list[Path]] = {}
    for path in _folder_files(folder):
        # Both layouts name the same original: coco/a.png, and originals/coco/a.png as pii.json keys it.
        relative = path.relative_to(folder).as_posix().removeprefix(ORIGINALS_FOLDER)
        by_stem.setdefault(_stem(relative), []).append(path)
    match = FolderMatch(found={}, missing=[], ambiguous={}, extra=[])
    wanted = set()
    for original in originals:
        stem = _stem(original)
        wanted.add(stem)
        candidates = by_stem.get(stem, [])
        if not candidates:
            match.missing.append(original)
        elif len(candidates) > 1:
            match.ambiguous[original] = candidates
        else:
            match.found[original] = candidates[0]
    match.extra = [path for stem, paths in by_stem.items() if stem not in wanted for path in paths]
    return match


def _stem(relative: str) -> str:
    path = Path(relative)
    return path.with_suffix("").as_posix() if path.suffix else path.as_posix()


# ----------------------------------------------------------------------------- calling
def anonymize(method: Method, image: np.ndarray, pii_mask: np.ndarray, boxes: Sequence[Box], *,
              where: str) -> np.ndarray:
    """Call a function method on copies of its inputs and check what it returns.

    Raises `MethodFailure` (one line naming the method and `where`, e.g. the image's path)
    when it raises, or returns anything but an array of the image's shape and dtype uint8.
    """
    if method.function is None:
        raise TypeError(f"method {method.name!r} is not a function of this process (a folder, or a user's "
                        "function, which runs in its worker)")
    try:
        output = method.function(image.copy(), pii_mask.copy(), [tuple(box) for box in boxes], **dict(method.params))
    except Exception as exc:  # the user's method may raise anything
        raise MethodFailure(f"method {method.name!r} failed on {where}: {describe_exception(exc)}") from exc
    check_output(method.name, output, image.shape, where=where)
    return output


def check_output(name: str, output: object, shape: tuple[int, ...], *, where: str) -> None:
    """The output contract: an ``H x W x 3`` uint8 array of the input's shape, no NaN."""
    expected = f"expected a {' x '.join(map(str, shape))} uint8 array"
    if not isinstance(output, np.ndarray):
        raise MethodFailure(f"method {name!r} returned a {type(output).__name__} for {where}; {expected}")
    if np.issubdtype(output.dtype, np.floating) and np.isnan(output).any():
        raise MethodFailure(f"method {name!r} returned NaN values for {where}; {expected}")
    if output.shape != tuple(shape):
        raise MethodFailure(f"method {name!r} returned shape {' x '.join(map(str, output.shape))} for {where}; "
                            f"{expected}")
    if output.dtype != np.uint8:
        raise MethodFailure(f"method {name!r} returned dtype {output.dtype} for {where}; {expected} "
                            "(0-255, e.g. np.clip(x, 0, 255).astype(np.uint8))")


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: the message"`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


