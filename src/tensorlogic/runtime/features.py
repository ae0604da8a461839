"""Model features at the predict boundary: what each input, output and state looks like, and conversion.

A ``Feature`` joins what the model description declares (kind, image colour space and sizes, flexible
shapes, classifier roles) with what the ML Program function declares (MIL dtype, shape). Inputs arrive
as numpy arrays, torch tensors, Python scalars/lists or PIL images and leave for the interpreter as
numpy arrays in the declared dtype; outputs come back as numpy arrays, PIL images, class labels and
probability dicts, the way ``coremltools.models.MLModel.predict`` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..mil import ir
from .dtypes import numpy_dtype

_PIL_MODES = {"RGB": "RGB", "BGR": "RGB", "GRAYSCALE": "L", "GRAYSCALE_FLOAT16": "F"}


def pil_mode(feature: Any) -> str:
    """The PIL image mode an image input of ``feature``'s colour space takes (RGB when it declares none)."""
    return _PIL_MODES.get(getattr(feature, "colorspace", None) or "RGB", "RGB")


@dataclass
class Feature:
    """One input, output or state at the predict boundary."""

    name: str
    kind: str  # multiArray, image, int64, double, string, dictionary, sequence, state
    dtype: str | None = None  # MIL dtype
    shape: tuple[int | str, ...] | None = None  # declared; str dims are flexible
    optional: bool = False
    ranges: list[tuple[int, int]] | None = None  # per dim (lo, hi); hi -1 = unbounded
    enumerated: list[tuple[int, ...]] | None = None
    colorspace: str | None = None
    image_sizes: dict[str, Any] = field(default_factory=dict)  # width, height, enumerated, ranges
    default: Any = None  # fill value of an optional multiArray input left out

    def default_array(self) -> np.ndarray | None:
        """The value an optional input takes when left out (its declared shape, filled), if it has one."""
        if self.default is None or self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return np.full(tuple(int(d) for d in self.shape), self.default, dtype=numpy_dtype(self.dtype or "fp32"))

    def describe_shape(self) -> str:
        if self.enumerated:
            return " or ".join("[" + ", ".join(map(str, s)) + "]" for s in self.enumerated)
        if self.ranges:
            return "[" + ", ".join(_range_text(lo, hi) for lo, hi in self.ranges) + "]"
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


def _range_text(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"{lo}..{'inf' if hi < 0 else hi}"


@dataclass
class Signature:
    """The features of one function, and the classifier roles if the model is a classifier."""

    inputs: list[Feature]
    outputs: list[Feature]
    states: list[Feature]
    predicted_feature: str | None = None
    predicted_probabilities: str | None = None

    def input(self, name: str) -> Feature | None:
        return next((f for f in self.inputs if f.name == name), None)


# --- building a signature ----------------------------------------------------------------------


def _feature(fs: Any) -> Feature:
    """A ``Feature`` from the Core ML reader's ``FeatureSpec``."""
    feat = Feature(fs.name, fs.kind, fs.dtype, tuple(fs.shape) if fs.shape is not None else None,
                   bool(fs.optional), default=(fs.extra or {}).get("default"))
    flex = fs.flexibility or {}
    if flex.get("ranges"):
        feat.ranges = [(int(lo), int(hi)) for lo, hi in flex["ranges"]]
    if flex.get("enumerated"):
        feat.enumerated = [tuple(int(d) for d in s) for s in flex["enumerated"]]
    if fs.image:
        im = fs.image
        feat.colorspace = str(im.get("colorspace", "RGB")).upper()
        sizes: dict[str, Any] = {"width": im.get("width"), "height": im.get("height")}
        if im.get("sizes"):
            sizes["enumerated"] = [tuple(int(d) for d in wh) for wh in im["sizes"]]
        if im.get("width_range"):
            sizes["width_range"] = tuple(int(d) for d in im["width_range"])
            sizes["height_range"] = tuple(int(d) for d in im["height_range"])
        feat.image_sizes = sizes
    return feat


def _merge_program_types(features: list[Feature], types: dict[str, ir.ValueType]) -> None:
    # The ML Program's own declaration is the truth for dtype and rank.
    for feat in features:
        vt = types.get(feat.name)
        if isinstance(vt, ir.StateType):
            vt = vt.wrapped
        if isinstance(vt, ir.TensorType):
            feat.dtype = vt.dtype
            if feat.kind in ("multiArray", "state", "image") or feat.shape is None:
                feat.shape = vt.shape


def build_signature(
    inputs: list[Any],
    outputs: list[Any],
    states: list[Any],
    program_types: dict[str, ir.ValueType],
    predicted_feature: str | None = None,
    predicted_probabilities: str | None = None,
) -> Signature:
    """A signature from the reader's FeatureSpecs, with dtype and shape from the program's types."""
    sig = Signature(
        [_feature(f) for f in inputs],
        [_feature(f) for f in outputs],
        [_feature(f) for f in states],
        predicted_feature or None,
        predicted_probabilities or None,
    )
    for group in (sig.inputs, sig.outputs, sig.states):
        _merge_program_types(group, program_types)
    return sig


# --- inputs ------------------------------------------------------------------------------------


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_shape(feat: Feature, shape: tuple[int, ...]) -> None:
    """Raise InputError unless ``shape`` is one the feature accepts."""
    bad = f"input {feat.name!r} has shape {_shape_text(shape)}, the model accepts {feat.describe_shape()}"
    if feat.enumerated:
        if tuple(shape) not in feat.enumerated:
            raise InputError(bad)
        return
    if feat.ranges:
        if len(shape) != len(feat.ranges):
            raise InputError(bad)
        for d, (lo, hi) in zip(shape, feat.ranges):
            if d < lo or (hi >= 0 and d > hi):
                raise InputError(bad)
        return
    if feat.shape is None:
        return
    if len(shape) != len(feat.shape):
        raise InputError(bad)
    for d, want in zip(shape, feat.shape):
        if isinstance(want, int) and d != want:
            raise InputError(bad)


def _declared_rank(feat: Feature) -> int | None:
    if feat.enumerated:
        return len(feat.enumerated[0])
    if feat.ranges:
        return len(feat.ranges)
    return len(feat.shape) if feat.shape is not None else None


def check_shape_leading(feat: Feature, shape: tuple[int, ...], leading: int) -> None:
    """``check_shape``, also accepting up to ``leading`` extra leading axes before an accepted shape."""
    try:
        check_shape(feat, shape)
    except InputError as error:
        rank = _declared_rank(feat)
        if not leading or rank is None or not rank < len(shape) <= rank + leading:
            raise
        try:
            check_shape(feat, shape[len(shape) - rank:])
        except InputError:
            raise error from None


def array_input(feat: Feature, value: Any, leading: int = 0, flat: bool = False) -> np.ndarray:
    """A non-image input as a numpy array of the declared dtype and an accepted shape.

    ``leading``: extra leading axes allowed (NeuralNetworks with the rank-5 mapping take ``[Seq, Batch]``
    in front). ``flat``: any shape holding the declared number of elements is reshaped to the declared
    shape (classic models read their arrays flat, so Core ML takes ``[1, N]`` for ``[N]``)."""
    tensor_type = type(value).__module__.startswith("torch")
    if tensor_type and hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    if type(value).__module__.startswith("PIL"):
        raise InputError(f"input {feat.name!r} is an array input ({feat.describe_shape()}), not an image")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"input {feat.name!r}: cannot make an array from {type(value).__name__}: {e}") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise InputError(
            f"input {feat.name!r} holds {arr.dtype} data, the model expects {feat.dtype or 'numbers'}"
        )
    if feat.dtype is not None and feat.dtype != "string":
        want = numpy_dtype(feat.dtype)
        if arr.dtype != want:
            arr = arr.astype(want)
    if feat.shape is not None and len(feat.shape) == 0 and arr.size == 1:
        arr = arr.reshape(())
    elif feat.kind in ("int64", "double") and arr.ndim == 0:
        arr = arr.reshape(1)
    static = feat.shape is not None and all(isinstance(d, int) for d in feat.shape) and not feat.ranges \
        and not feat.enumerated
    if flat and static and arr.shape != feat.shape and arr.size == int(np.prod(feat.shape, dtype=np.int64)):
        arr = arr.reshape(feat.shape)
    check_shape_leading(feat, tuple(arr.shape), leading)
    return arr


def _check_image_size(feat: Feature, width: int, height: int) -> None:
    sizes = feat.image_sizes
    got = f"{width}x{height}"
    if "enumerated" in sizes and sizes["enumerated"]:
        allowed = [tuple(s) for s in sizes["enumerated"]]
        if (width, height) not in allowed:
            listed = ", ".join(f"{w}x{h}" for w, h in allowed)
            raise InputError(f"image input {feat.name!r} is {got}, the model accepts {listed}")
        return
    if "width_range" in sizes:
        (wlo, whi), (hlo, hhi) = sizes["width_range"], sizes["height_range"]
        if not (wlo <= width and (whi < 0 or width <= whi) and hlo <= height and (hhi < 0 or height <= hhi)):
            raise InputError(
                f"image input {feat.name!r} is {got}, the model accepts width {_range_text(wlo, whi)} "
                f"and height {_range_text(hlo, hhi)}"
            )
        return
    w, h = sizes.get("width"), sizes.get("height")
    if w and h and (width, height) != (int(w), int(h)):
        raise InputError(f"image input {feat.name!r} is {got}, the model expects {w}x{h}")


def image_input(feat: Feature, value: Any) -> np.ndarray:
    """A PIL image as the program sees it: channels first, 0–255, in the declared channel order."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise InputError("image inputs need pillow") from None
    if not isinstance(value, Image.Image):
        raise InputError(f"input {feat.name!r} is an image input: pass a PIL.Image, not {type(value).__name__}")
    space = feat.colorspace or "RGB"
    mode = pil_mode(feat)
    if value.mode != mode:
        raise InputError(f"image input {feat.name!r} is {space}: it needs a PIL image of mode {mode!r}, "
                         f"not {value.mode!r}")
    _check_image_size(feat, value.width, value.height)
    pixels = np.asarray(value, dtype=np.float32)
    if pixels.ndim == 2:
        chw = pixels[None]
    else:
        chw = pixels.transpose(2, 0, 1)
        if space == "BGR":
            chw = chw[::-1]
    rank = len(feat.shape) if feat.shape is not None else 4
    arr = chw[None] if rank == 4 else chw
    want = numpy_dtype(feat.dtype) if feat.dtype else np.float32
    return np.ascontiguousarray(arr, dtype=want)


# --- outputs -----------------------------------------------------------------------------------


def image_output(feat: Feature, arr: np.ndarray) -> Any:
    """A program's image output (channels first, 0–255) as a PIL image: ``L``, ``F``, or ``RGBA`` for colour."""
    from PIL import Image

    data = np.asarray(arr, dtype=np.float32)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[None]
    space = feat.colorspace or "RGB"
    if space == "GRAYSCALE_FLOAT16":
        return Image.fromarray(data[0].astype(np.float32), mode="F")
    pixels = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    if space == "GRAYSCALE" or pixels.shape[0] == 1:
        return Image.fromarray(pixels[0], mode="L")
    if space == "BGR":
        pixels = pixels[::-1]
    # Core ML hands colour images out in 32-bit pixel buffers, which coremltools returns as RGBA.
    alpha = np.full((1, *pixels.shape[1:]), 255, np.uint8)
    rgba = np.concatenate([pixels[:3], alpha])
    return Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 2, 0)), mode="RGBA")


def label_value(value: Any) -> Any:
    """A class label as ``str`` or ``int``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.str_):
        return str(value)
    return value


def probabilities_value(value: Any) -> dict:
    """Class probabilities as ``{label: float}``."""
    out = {}
    for k, v in dict(value).items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out[label_value(k)] = float(np.asarray(v).reshape(-1)[0])
    return out
