"""Model files: load_model, save_model, model methods, images and preprocessing."""

from __future__ import annotations

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


@builtin(ctx=True)
def load_model(ctx: Context, path: Any) -> Model:
    """Load a Core ML, SafeTensors or GGUF model (format by content); paths are relative to the script."""
    import tensorlogic

    return tensorlogic.load_model(ctx.path(path), device=ctx.model_device())


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
    names = model.tensor_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" ({len(names)} tensors; see tensor_names())"
        raise BuiltinError(f"no tensor named '{name}' in {model.path.name}{hint}")
    t = model.get_tensor(name, dtype=dtype_arg(dtype, None))
    return t.to(ctx.torch_device())


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
