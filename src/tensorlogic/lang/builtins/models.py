"""Model files: load_model, save_model, model methods, images and preprocessing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...model import FeatureSpec, Model
from ..values import (
    DEFAULT_DTYPE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BuiltinError,
    Context,
    as_int,
    dtype_arg,
    first_line,
    is_number,
    shape_text,
    tensor_arg,
    type_name,
)
from . import builtin
from .core import item
from .nn import _pair


class CachedModel(Model):
    """A weights file as the language's LLM programs use it: each tensor is read (and dequantized) on first
    access, converted to the model's float dtype and kept, so a 1.1B GGUF model loads at once and a layer
    loop that fetches the same weights every token reads each one from the file only once.

    ``capacity`` bounds how many tensors are kept (least recently used go first), like the original's
    weight caches; None keeps every tensor read. ``model.blk[0].attn_q.weight`` is ``blk.0.attn_q.weight``.
    """

    def __init__(self, file: Any, dtype: torch.dtype, capacity: int | None = None):
        super().__init__(file)
        self.dtype = dtype
        self.capacity = capacity
        self._kept: OrderedDict[tuple[str, torch.dtype, str], torch.Tensor] = OrderedDict()
        self._names: set[str] | None = None
        self.llm: Any = None  # the tensorlogic.llm.LLM that generate() builds once per model

    def names(self) -> set[str]:
        if self._names is None:
            self._names = set(self.tensor_names())
        return self._names

    def get_tensor(self, name: str, dtype: Any = None, device: Any = None) -> torch.Tensor:
        """A stored tensor as ``dtype`` (default: the model's float dtype for floating data), kept for reuse."""
        want = self.dtype if dtype is None else dtype
        key = (name, want if isinstance(want, torch.dtype) else str(want), str(device or "cpu"))
        t = self._kept.get(key)
        if t is not None:
            self._kept.move_to_end(key)
            return t
        t = super().get_tensor(name, dtype=want, device=device)
        self._kept[key] = t
        if self.capacity is not None:
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        return t

    def tl_attr(self, ctx: Context, name: str) -> Any:
        """``model.name``: the model's own attributes and methods, else the start of a tensor path."""
        from ..attrs import MODEL_ATTRS

        if name in MODEL_ATTRS or name in MODEL_METHODS:
            from ..attrs import get_attr

            return get_attr(ctx, self, name)
        return TensorPath(self, name).resolve(ctx)


class TensorPath:
    """A prefix of tensor names, like ``blk.0``: what ``model.blk[0]`` is before ``.attn_q.weight`` ends it."""

    def __init__(self, model: CachedModel, prefix: str):
        self.model = model
        self.prefix = prefix

    def script_text(self) -> str:
        """The prefix as a script writes it: ``model.blk[0].attn_q``."""
        return "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in self.prefix.split("."))

    def resolve(self, ctx: Context) -> Any:
        """The tensor when the prefix names one, this path when it starts some names, else a one-line error."""
        names = self.model.names()
        if self.prefix in names:
            return self.model.get_tensor(self.prefix, device=ctx.torch_device())
        start = self.prefix + "."
        if any(n.startswith(start) for n in names):
            return self
        import difflib

        close = difflib.get_close_matches(self.prefix, sorted(names), n=1, cutoff=0.0)
        hint = f"; the closest tensor is '{close[0]}'" if close else ""
        raise BuiltinError(f"{self.script_text()}: no tensor '{self.prefix}' in {self.model.path.name}{hint}")

    def tl_attr(self, ctx: Context, name: str) -> Any:
        return TensorPath(self.model, f"{self.prefix}.{name}").resolve(ctx)

    def tl_index(self, ctx: Context, key: Any) -> Any:
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise BuiltinError(f"{self.script_text()}[...] takes a layer number, got {type_name(key)}")
        return TensorPath(self.model, f"{self.prefix}.{key}").resolve(ctx)

    def __str__(self) -> str:
        return f"ModelPath({self.prefix})"


def open_cached(ctx: Context, path: Any, dtype: torch.dtype, capacity: int | None = None,
                what: str = "a model") -> CachedModel:
    """A weights file (GGUF or SafeTensors, by content) opened lazily as a ``CachedModel``."""
    from ...formats import open_model_file

    file = open_model_file(ctx.path(path))
    if file.format not in ("GGUF", "SafeTensors"):
        file.close()
        raise BuiltinError(f"{ctx.path(path)}: {what} needs a GGUF or SafeTensors file, this is {file.format}")
    return CachedModel(file, dtype, capacity)


@builtin(ctx=True)
def load_model(ctx: Context, path: Any) -> Model:
    """Load a Core ML, SafeTensors or GGUF model (format by content); paths are relative to the script.

    A GGUF model is opened lazily with float16 tensors and tensor paths (``model.blk[0].attn_q.weight``)."""
    import tensorlogic

    from ...formats.detect import detect

    if detect(ctx.path(path)).format == "GGUF":
        return open_cached(ctx, path, DEFAULT_DTYPE)
    return tensorlogic.load_model(ctx.path(path), device=ctx.model_device())


@builtin("get_tensor", ctx=True)
def get_tensor_(ctx: Context, model: Any, name: Any) -> torch.Tensor:
    """get_tensor(model, "blk.0.attn_q.weight"): the model's float dtype (float16 unless load_model_f32)."""
    if not isinstance(model, Model):
        raise BuiltinError(f"get_tensor takes a model first, got {type_name(model)}")
    return _model_get_tensor(ctx, model, name)


@builtin(ctx=True)
def save_model(ctx: Context, obj: Any, path: Any) -> None:
    """save_model(model, "out.safetensors") or save_model({"w": w}, "out.safetensors"); .gguf works too."""
    import tensorlogic

    if isinstance(obj, dict):
        tensors = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise BuiltinError(f"tensor names must be strings, got {type_name(k)}")
            tensors[k] = tensor_arg(ctx, v, f"tensor '{k}'").detach().cpu().contiguous()
        obj = tensors
    elif not isinstance(obj, Model):
        raise BuiltinError(f"save_model takes a model or a dict of tensors, got {type_name(obj)}")
    tensorlogic.save_model(obj, ctx.path(path))


def _model_get_tensor(ctx: Context, model: Model, name: Any, dtype: Any = None) -> torch.Tensor:
    """model.get_tensor("layer.0.weight"): float16 unless dtype says otherwise."""
    if not isinstance(name, str):
        raise BuiltinError(f"get_tensor takes a tensor name string, got {type_name(name)}")
    names = model.names() if isinstance(model, CachedModel) else model.tensor_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, sorted(names), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" ({len(names)} tensors; see tensor_names())"
        raise BuiltinError(f"no tensor named '{name}' in {model.path.name}{hint}")
    # Read straight onto the run's device: a cached model then keeps the device copy.
    return model.get_tensor(name, dtype=dtype_arg(dtype, None), device=ctx.torch_device())


def _model_tensor_names(ctx: Context, model: Model) -> list[str]:
    return model.tensor_names()


def _feature_value(ctx: Context, value: Any, spec: FeatureSpec | None) -> Any:
    if spec is not None and spec.kind == "image" and isinstance(value, torch.Tensor):
        return _to_pil(value, spec)
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return t.numpy()
    if isinstance(value, (list, tuple)) or is_number(value):
        return np.asarray(value, dtype=np.float32)
    return value


def _to_pil(t: torch.Tensor, spec: FeatureSpec) -> Any:
    """A [3, H, W] / [1, 3, H, W] tensor of 0–255 values as a PIL image at the model's input size."""
    from PIL import Image

    x = t.detach().float().cpu()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    gray = (spec.image or {}).get("colorspace", "RGB").upper().startswith("GRAY")
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if gray and x.ndim == 3:
        raise BuiltinError(f"input '{spec.name}' is a grayscale image; pass a [H, W] tensor")
    if not gray and (x.ndim != 3 or x.shape[0] != 3):
        raise BuiltinError(f"input '{spec.name}' is an RGB image; pass a [3, H, W] tensor of 0-255 values")
    arr = x.clamp(0, 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr if gray else arr.transpose(1, 2, 0), "L" if gray else "RGB")
    w, h = (spec.image or {}).get("width"), (spec.image or {}).get("height")
    if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 and img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return img


def _result_value(ctx: Context, v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "fiub":
            return torch.from_numpy(np.ascontiguousarray(v)).to(ctx.torch_device())
        return v.tolist()
    if isinstance(v, torch.Tensor):
        return v.to(ctx.torch_device())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _result_value(ctx, x) for k, x in v.items()}
    return v


def _model_predict(ctx: Context, model: Model, x: Any) -> Any:
    """model.predict(x): one tensor in and out for a one-input, one-output model; a dict in gives a dict out."""
    model.runner  # noqa: B018 — a weights-only format says so here, before inputs are looked at
    md = model.metadata
    specs = {s.name: s for s in md.inputs}
    if isinstance(x, dict):
        data = {str(k): _feature_value(ctx, v, specs.get(str(k))) for k, v in x.items()}
    else:
        if len(md.inputs) != 1:
            names = ", ".join(s.name for s in md.inputs) or "none declared"
            raise BuiltinError(
                f"the model has {len(md.inputs)} inputs ({names}); pass a dict like {{\"name\": tensor}}"
            )
        spec = md.inputs[0]
        data = {spec.name: _feature_value(ctx, x, spec)}
    out = model.predict(data)
    if not isinstance(out, dict):
        return _result_value(ctx, out)
    if len(out) == 1 and not isinstance(x, dict):
        return _result_value(ctx, next(iter(out.values())))
    return {k: _result_value(ctx, v) for k, v in out.items()}


MODEL_METHODS: dict[str, Callable[..., Any]] = {
    "get_tensor": _model_get_tensor,
    "tensor_names": _model_tensor_names,
    "predict": _model_predict,
}


@builtin(ctx=True)
def load_image(ctx: Context, path: Any) -> torch.Tensor:
    """An image file as an RGB float16 tensor [3, H, W] of 0–255 values."""
    from PIL import Image, UnidentifiedImageError

    p = ctx.path(path)
    if not p.is_file():
        raise BuiltinError(f"no image file at {p}")
    try:
        with Image.open(p) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise BuiltinError(f"{p}: not a readable image ({first_line(e)})") from None
    t = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(DEFAULT_DTYPE)
    return t.to(ctx.torch_device())


@builtin(ctx=True)
def preprocess(
    ctx: Context, image: Any, size: Any = 224, mean: Any = None, std: Any = None
) -> torch.Tensor:
    """Resize an RGB image tensor (0–255) to size×size (bilinear), scale to 0–1, normalize: [1, 3, H, W]."""
    from PIL import Image

    t = tensor_arg(ctx, image, "image").detach().float().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise BuiltinError(f"preprocess needs an RGB image tensor [3, H, W], got shape {shape_text(t)}")
    h, w = (as_int(size, "size"),) * 2 if not isinstance(size, (list, tuple)) else _pair(size, "size")
    m = [float(item(v)) for v in (IMAGENET_MEAN if mean is None else mean)]
    s = [float(item(v)) for v in (IMAGENET_STD if std is None else std)]
    if len(m) != 3 or len(s) != 3:
        raise BuiltinError("mean and std need one value per channel (3 each)")
    if any(v == 0 for v in s):
        raise BuiltinError("std values must not be 0")
    arr = t.clamp(0, 255).round().to(torch.uint8).numpy().transpose(1, 2, 0)
    img = Image.fromarray(arr, "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(m, dtype=np.float32)) / np.asarray(s, dtype=np.float32)
    out = torch.from_numpy(x.transpose(2, 0, 1).copy()).unsqueeze(0)
    return out.to(dtype=DEFAULT_DTYPE, device=ctx.torch_device())
