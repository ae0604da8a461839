"""How ``print`` and messages show values."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..model import FeatureSpec, Metadata, Model, TensorInfo
from .values import DISPLAY_LIMIT, BoundMethod, Builtin, Device, Record, TensorBuffer, Vec, dtype_name

# ---------------------------------------------------------------------------------------------- formatting


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}"


def format_value(v: Any, nested: bool = False) -> str:
    """How ``print`` shows a value: strings plainly (quoted inside lists), tensors by value."""
    if v is None:
        return "void"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' if nested else v
    if isinstance(v, torch.Tensor):
        return format_tensor(v)
    if isinstance(v, (list, tuple, range)):
        return format_list(list(v))
    if isinstance(v, Vec):
        return "Vec" + format_list(v.items)
    if isinstance(v, TensorBuffer):
        mb = 1024 * 1024
        return f"TensorBuffer(capacity={v.capacity // mb}MB, used={v.used // mb}MB)"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{format_value(k, True)}: {format_value(x, True)}" for k, x in v.items()) + "}"
    if isinstance(v, torch.dtype):
        return dtype_name(v)
    if isinstance(v, Device):
        return v.name
    if isinstance(v, Model):
        return f"Model({v.metadata.format})"
    if isinstance(v, Metadata):
        keep = ("format", "quantization", "name", "architecture", "model_type", "parameter_count", "tensor_count")
        shown = {k: getattr(v, k) for k in keep if getattr(v, k) not in (None, "", 0)}
        body = ", ".join(f"{k}={format_value(x, True)}" for k, x in shown.items())
        feats = [f"inputs=[{', '.join(str(f) for f in v.inputs)}]"] if v.inputs else []
        feats += [f"outputs=[{', '.join(str(f) for f in v.outputs)}]"] if v.outputs else []
        return "Metadata(" + ", ".join([body] + feats if body else feats) + ")"
    if isinstance(v, (FeatureSpec, TensorInfo)):
        return str(v) if isinstance(v, FeatureSpec) else f"{v.name}: {v.dtype}{list(v.shape)}"
    if isinstance(v, Record):
        return "(" + ", ".join(f"{k}={format_value(x, True)}" for k, x in v.fields.items()) + ")"
    if isinstance(v, Builtin):
        return f"<builtin {v.name}>"
    if isinstance(v, BoundMethod):
        return f"<method {v.name}>"
    return str(v)


def format_list(items: list[Any]) -> str:
    """``[1, 2, 3]``; more than DISPLAY_LIMIT items as ``[first, second, ..., last] (len=n)``."""
    if len(items) > DISPLAY_LIMIT:
        head = ", ".join(format_value(x, True) for x in items[:2])
        return f"[{head}, ..., {format_value(items[-1], True)}] (len={len(items)})"
    return "[" + ", ".join(format_value(x, True) for x in items) + "]"


def format_tensor(t: torch.Tensor) -> str:
    """Values with 4 decimals, nested by dimension; long dimensions as ``a, b, ..., z`` plus the full shape."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.ndim == 0:
        return _fmt_scalar(t.item())
    full = list(t.shape)
    keep = []
    for size in full:
        keep.append(size > DISPLAY_LIMIT)
    for dim, size in enumerate(full):
        if keep[dim]:
            t = t.index_select(dim, torch.tensor([0, 1, size - 1]))
    text = _nested(t.tolist(), keep)
    if not any(keep):
        return text
    return text + (f" (len={full[0]})" if len(full) == 1 else f" (shape={full})")


def _nested(values: Any, cut: list[bool]) -> str:
    if not cut:
        return _fmt_scalar(values)
    parts = [_nested(v, cut[1:]) for v in values]
    if cut[0]:
        parts = [parts[0], parts[1], "...", parts[2]]
    return "[" + ", ".join(parts) + "]"

