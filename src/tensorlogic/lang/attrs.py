"""``value.name``: attributes of tensors, models, records and structs, and methods bound to a value."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..model import Model
from .values import BoundMethod, BuiltinError, Context, Record, TensorBuffer, Vec, type_name

# ---------------------------------------------------------------------------------------------- attributes


def _tensor_attr(ctx: Context, t: torch.Tensor, name: str) -> Any:
    if name == "shape":
        return list(t.shape)
    if name == "dtype":
        return t.dtype
    if name == "device":
        return t.device.type
    if name in ("rank", "ndim"):
        return t.ndim
    if name == "numel":
        return t.numel()
    if name == "T":
        return t.transpose(-2, -1) if t.ndim >= 2 else t
    raise KeyError(name)


MODEL_ATTRS = ("metadata", "path", "format", "inputs", "outputs")


def _model_attr(m: Model, name: str) -> Any:
    if name == "metadata":
        return m.metadata
    if name == "path":
        return str(m.path)
    if name == "format":
        return m.metadata.format
    if name == "inputs":
        return list(m.metadata.inputs)
    if name == "outputs":
        return list(m.metadata.outputs)
    raise KeyError(name)


def get_attr(ctx: Context, value: Any, name: str) -> Any:
    """``value.name`` for the value kinds a script can see; ``BuiltinError`` names what exists."""
    from .builtins import BUILTINS
    from .builtins.core import TENSOR_BUFFER_METHODS
    from .builtins.kvcache import KVCACHE_METHODS, KVCache
    from .builtins.models import MODEL_METHODS
    from .builtins.vec import VEC_METHODS

    if isinstance(value, Vec):
        if name in VEC_METHODS:
            return BoundMethod(name, VEC_METHODS[name], value, False)
        raise BuiltinError(f"{value.name} has no method '{name}' (it has {', '.join(VEC_METHODS)})")
    if isinstance(value, KVCache):
        if name in KVCACHE_METHODS:
            # Named KVCache.<method> so that argument errors say whose method it is.
            return BoundMethod(f"KVCache.{name}", KVCACHE_METHODS[name], value, True)
        raise BuiltinError(f"a KVCache has no method '{name}' (it has {', '.join(KVCACHE_METHODS)})")
    if isinstance(value, TensorBuffer):
        if name in TENSOR_BUFFER_METHODS:
            return BoundMethod(name, TENSOR_BUFFER_METHODS[name], value, True)
        raise BuiltinError(f"a TensorBuffer has no method '{name}' (it has {', '.join(TENSOR_BUFFER_METHODS)})")
    if isinstance(value, torch.Tensor):
        try:
            return _tensor_attr(ctx, value, name)
        except KeyError:
            pass
        if name in BUILTINS and BUILTINS[name].method:
            b = BUILTINS[name]
            return BoundMethod(name, b.fn, value, b.needs_ctx)
        raise BuiltinError(
            f"a tensor has no attribute '{name}' (try shape, dtype, device, rank, T or a method like sum)"
        )
    if isinstance(value, Model):
        try:
            return _model_attr(value, name)
        except KeyError:
            pass
        if name in MODEL_METHODS:
            return BoundMethod(name, MODEL_METHODS[name], value, True)
        known = ", ".join(list(MODEL_ATTRS) + sorted(MODEL_METHODS))
        raise BuiltinError(f"a model has no attribute '{name}' (it has {known})")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        if name in names:
            return getattr(value, name)
        raise BuiltinError(f"{type(value).__name__.lower()} has no field '{name}' (it has {', '.join(names)})")
    if isinstance(value, Record):
        if name in value.fields:
            return value.fields[name]
        raise BuiltinError(f"this result has no field '{name}' (it has {', '.join(value.fields)})")
    if isinstance(value, dict):
        if name in value:
            return value[name]
        raise BuiltinError(f"the dict has no key '{name}'")
    raise BuiltinError(f"{type_name(value)} has no attribute '{name}'")



def get_method(ctx: Context, value: Any, name: str) -> Any:
    """The callee of ``value.name(...)``: a tensor's builtin method when there is one (so ``x.shape()`` calls
    the shape builtin although ``x.shape`` is the property), otherwise ``get_attr``."""
    if isinstance(value, torch.Tensor):
        from .builtins import BUILTINS

        b = BUILTINS.get(name)
        if b is not None and b.method:
            return BoundMethod(name, b.fn, value, b.needs_ctx)
    return get_attr(ctx, value, name)
