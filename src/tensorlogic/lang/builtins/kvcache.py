"""Key/value caches for attention: KVCache::new(n), KVCache::new_f16(n), KVCache::new_f32(n) and the methods
set, append, get_k, get_v (the original's), len, seq_len (ours) in KVCACHE_METHODS; attrs.get_attr binds them.

A cache has a fixed number of layers, each empty or holding one key tensor and one value tensor whose first
dimension is the sequence. ``set`` replaces a layer, ``append`` concatenates along dimension 0 (on an empty
layer it is ``set``), ``get_k``/``get_v`` read it back. print shows ``<KVCache: 22 layers>`` as the original.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..format import format_value
from ..values import BuiltinError, Context, shape_text, tensor_arg, type_name
from . import builtin


class KVCache:
    """Per-layer (key, value) tensors of one float dtype; ``None`` marks a layer nothing was stored in yet."""

    def __init__(self, num_layers: int, dtype: torch.dtype):
        self.dtype = dtype
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    def __str__(self) -> str:
        return f"<KVCache: {len(self.layers)} layers>"


def _strict_int(v: Any, what: str) -> int:
    # The original takes only an Integer here (no 2.0, unlike dimension arguments).
    if isinstance(v, bool) or not isinstance(v, int):
        raise BuiltinError(f"{what} must be an int, got {type_name(v)} {format_value(v, nested=True)}")
    return v


def _new(name: str, dtype: torch.dtype, num_layers: Any) -> KVCache:
    n = _strict_int(num_layers, f"{name}: the number of layers")
    if n < 0:
        raise BuiltinError(f"{name}: the number of layers must be 0 or more, got {n}")
    return KVCache(n, dtype)


@builtin("KVCache::new")
def new(num_layers: Any) -> KVCache:
    """KVCache::new(num_layers): an empty float16 cache (the same as KVCache::new_f16)."""
    return _new("KVCache::new", torch.float16, num_layers)


@builtin("KVCache::new_f16")
def new_f16(num_layers: Any) -> KVCache:
    """KVCache::new_f16(num_layers): an empty cache of num_layers layers holding float16 tensors."""
    return _new("KVCache::new_f16", torch.float16, num_layers)


@builtin("KVCache::new_f32")
def new_f32(num_layers: Any) -> KVCache:
    """KVCache::new_f32(num_layers): an empty cache of num_layers layers holding float32 tensors."""
    return _new("KVCache::new_f32", torch.float32, num_layers)


def _layer(cache: KVCache, method: str, layer: Any) -> int:
    i = _strict_int(layer, f"KVCache.{method}: the layer")
    if not 0 <= i < len(cache.layers):
        raise BuiltinError(f"KVCache.{method}: layer {i} is out of range (the cache has {len(cache.layers)} layers)")
    return i


def _entry(ctx: Context, cache: KVCache, method: str, which: str, value: Any) -> torch.Tensor:
    """``value`` as a tensor of the cache's dtype with a sequence dimension."""
    t = tensor_arg(ctx, value, f"KVCache.{method}: {which}")
    if t.dtype == torch.bool or t.is_complex():
        raise BuiltinError(f"KVCache.{method}: {which} must be a real-valued tensor, got {type_name(t)}")
    if t.ndim == 0:
        raise BuiltinError(f"KVCache.{method}: {which} must have a sequence dimension, got a 0-dimensional tensor")
    # The original requires the cache's own dtype; here tensors are converted, because literal tensors are
    # float16 in this implementation where the original makes them float32.
    if t.dtype != cache.dtype:
        converted = t.to(cache.dtype)
        if cache.dtype == torch.float16 and bool((torch.isinf(converted) & ~torch.isinf(t)).any()):
            ctx.warn(f"KVCache.{method}: {which} overflows float16 (max 65504) when stored in a float16 cache")
        return converted
    return t


def _pair(ctx: Context, cache: KVCache, method: str, k: Any, v: Any) -> tuple[torch.Tensor, torch.Tensor]:
    kt, vt = _entry(ctx, cache, method, "k", k), _entry(ctx, cache, method, "v", v)
    if kt.shape[0] != vt.shape[0]:
        raise BuiltinError(
            f"KVCache.{method}: k and v must have the same sequence length (dimension 0), "
            f"got k {shape_text(kt)} and v {shape_text(vt)}"
        )
    return kt, vt


def set_(ctx: Context, cache: KVCache, layer: Any, k: Any, v: Any) -> None:
    """cache.set(layer, k, v): layer's entry becomes copies of k and v, whatever it held before."""
    i = _layer(cache, "set", layer)
    kt, vt = _pair(ctx, cache, "set", k, v)
    # Copies, so that assigning into the script's k or v later does not change the cache.
    cache.layers[i] = (kt.clone(), vt.clone())


def _joined(method: str, which: str, old: torch.Tensor, new_: torch.Tensor) -> torch.Tensor:
    if new_.ndim != old.ndim or new_.shape[1:] != old.shape[1:]:
        raise BuiltinError(
            f"KVCache.{method}: the layer holds {which} of shape {shape_text(old)}; the new {which} has shape "
            f"{shape_text(new_)} (all but the first dimension must match)"
        )
    return torch.cat([old, new_.to(old.device)], dim=0)


def append(ctx: Context, cache: KVCache, layer: Any, k: Any, v: Any) -> None:
    """cache.append(layer, k, v): k and v concatenated after the layer's entry along dimension 0 (set when empty).

    The original panics when the layer is out of range; here that is an error like set's."""
    i = _layer(cache, "append", layer)
    kt, vt = _pair(ctx, cache, "append", k, v)
    held = cache.layers[i]
    if held is None:
        cache.layers[i] = (kt.clone(), vt.clone())
        return
    cache.layers[i] = (_joined("append", "k", held[0], kt), _joined("append", "v", held[1], vt))


def _held(cache: KVCache, method: str, layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    i = _layer(cache, method, layer)
    held = cache.layers[i]
    if held is None:
        raise BuiltinError(f"KVCache.{method}: layer {i} is empty (nothing was set or appended there yet)")
    return held


def get_k(ctx: Context, cache: KVCache, layer: Any) -> torch.Tensor:
    """cache.get_k(layer): a copy of the layer's key tensor; an error when the layer is empty."""
    return _held(cache, "get_k", layer)[0].clone()


def get_v(ctx: Context, cache: KVCache, layer: Any) -> torch.Tensor:
    """cache.get_v(layer): a copy of the layer's value tensor; an error when the layer is empty."""
    return _held(cache, "get_v", layer)[1].clone()


def len_(ctx: Context, cache: KVCache) -> int:
    """cache.len(): the number of layers (not in the original, whose print shows it)."""
    return len(cache.layers)


def seq_len(ctx: Context, cache: KVCache, layer: Any) -> int:
    """cache.seq_len(layer): how many positions the layer holds, 0 when empty (not in the original)."""
    held = cache.layers[_layer(cache, "seq_len", layer)]
    return 0 if held is None else held[0].shape[0]


# Methods of a KVCache value (attrs.get_attr binds them): all take the run's context first.
KVCACHE_METHODS: dict[str, Callable[..., Any]] = {
    "set": set_,
    "append": append,
    "get_k": get_k,
    "get_v": get_v,
    "len": len_,
    "seq_len": seq_len,
}
