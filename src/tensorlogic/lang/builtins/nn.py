"""Neural-network builtins: layers, normalization, masks, positional encodings, RoPE, attention, fused ops.

Semantics follow the original TensorLogic (``builtin_nn.rs``, ``builtin_tensor.rs`` for RoPE and the
legacy arms of ``mod.rs``); each docstring names where we deliberately differ. float16/bfloat16 inputs are
computed in float32 and cast back to the input's dtype (see ``compute``/``finish``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..values import (
    DEFAULT_DTYPE,
    BuiltinError,
    Context,
    align,
    as_int,
    is_number,
    run_op,
    shape_text,
    tensor_arg,
    type_name,
)
from . import builtin

_HALF = (torch.float16, torch.bfloat16)
ROPE_BASE = 10000.0
# What the original adds to masked attention scores: scores + (1 - mask) * -1e9.
MASK_PENALTY = -1e9
# What the original's apply_mask writes where the mask is 0.
MASK_FILL = -10000.0


# ---------------------------------------------------------------------------------------------- helpers
# Shared by the sampling, kg, gnn and candle families (private to these five modules).


def float_arg(ctx: Context, v: Any, what: str) -> torch.Tensor:
    """A floating tensor from a tensor, list or number (integer tensors become float16)."""
    t = tensor_arg(ctx, v, what)
    return t if t.is_floating_point() else t.to(DEFAULT_DTYPE)


def broadcast_floats(
    ctx: Context, name: str, values: tuple[Any, ...], names: tuple[str, ...], what: str = "shapes"
) -> list[torch.Tensor]:
    """float_arg of each value; unless their shapes broadcast together, an error naming every argument's shape."""
    ts = [float_arg(ctx, v, n) for v, n in zip(values, names)]
    try:
        torch.broadcast_shapes(*(t.shape for t in ts))
    except RuntimeError:
        shapes = ", ".join(f"{n} {shape_text(t)}" for n, t in zip(names, ts))
        raise BuiltinError(f"{name}: {what} do not match ({shapes})") from None
    return ts


def compute(*tensors: torch.Tensor) -> tuple[torch.dtype, list[torch.Tensor]]:
    """The first tensor's dtype and every tensor on one device in the compute dtype.

    float16/bfloat16 (and float32) compute in float32, float64 in float64: reductions and matmuls
    accumulate in float32 at least, and a dtype mismatch between arguments converts instead of failing.
    """
    dtype = tensors[0].dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return dtype, [t.to(work) for t in align(*tensors)]


def finish(ctx: Context, name: str, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float32 result back to ``dtype``; warn once if float16 overflows where float32 did not."""
    res = out.to(dtype)
    if dtype in _HALF and bool((torch.isinf(res) & torch.isfinite(out)).any()):
        ctx.warn(f"{name} overflows {str(dtype).removeprefix('torch.')} (max 65504); the result holds inf")
    return res


def number(v: Any, what: str) -> float:
    """A script number (int or float, not bool) or a one-element tensor, as a Python float."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v.item())
    if isinstance(v, bool) or not is_number(v):
        raise BuiltinError(f"{what} must be a number, got {type_name(v)}")
    return float(v)


def dims_text(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def standardize(x: torch.Tensor, dims: Sequence[int], eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over dims, biased variance, computed as the original does (sum / n)."""
    dims = tuple(dims)
    n = math.prod(x.shape[d] for d in dims) if dims else 1
    centered = x - x.sum(dim=dims, keepdim=True) / n
    var = centered.pow(2).sum(dim=dims, keepdim=True) / n
    return centered * (1.0 / torch.sqrt(var + eps))


def _pair(v: Any, what: str) -> int | tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise BuiltinError(f"{what} must be an integer or a pair [h, w]")
        return (as_int(v[0], what), as_int(v[1], what))
    return as_int(v, what)


def _opt(ctx: Context, v: Any, what: str) -> torch.Tensor | None:
    return None if v is None else tensor_arg(ctx, v, what)


def _is_shape(v: Any) -> bool:
    """An int or a list of ints: the original's normalized_shape argument (an IntArray)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, (list, tuple)) and all(isinstance(d, int) and not isinstance(d, bool) for d in v)


def check_trailing(name: str, t: torch.Tensor, dims: list[int], what: str) -> None:
    if len(dims) > t.ndim or list(t.shape[t.ndim - len(dims):]) != dims:
        raise BuiltinError(f"{name}: {what} {dims_text(dims)} does not match the last dimensions of x {shape_text(t)}")


# ---------------------------------------------------------------------------------------------- layers


@builtin(ctx=True)
def linear(ctx: Context, x: Any, weight: Any, bias: Any = None) -> torch.Tensor:
    """linear(x, weight[, bias]): x @ weight.T + bias, weight shaped [out, in] as in PyTorch and the original."""
    t, w = float_arg(ctx, x, "x"), float_arg(ctx, weight, "weight")
    b = None if bias is None else float_arg(ctx, bias, "bias")
    if t.ndim == 0 or w.ndim != 2 or t.shape[-1] != w.shape[1]:
        raise BuiltinError(f"linear: x {shape_text(t)} does not fit weight {shape_text(w)} (weight is [out, in])")
    dtype, (tc, wc, *bc) = compute(t, w, *([b] if b is not None else []))
    return finish(ctx, "linear", F.linear(tc, wc, bc[0] if bc else None), dtype)


@builtin(ctx=True)
def conv2d(
    ctx: Context, x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    groups: Any = 1,
) -> torch.Tensor:
    """conv2d(x, weight[, bias], stride, padding, dilation, groups): x [N, C, H, W], weight [O, C/groups, kH, kW]."""
    return run_op(
        F.conv2d, tensor_arg(ctx, x), tensor_arg(ctx, weight, "weight"), _opt(ctx, bias, "bias"),
        stride=_pair(stride, "stride"), padding=_pair(padding, "padding"), dilation=_pair(dilation, "dilation"),
        groups=as_int(groups, "groups"),
    )


@builtin(ctx=True)
def depthwise_conv2d(
    ctx: Context, x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
) -> torch.Tensor:
    """depthwise_conv2d(x, weight[, bias], ...): per-channel convolution, weight [C * m, 1, kH, kW]."""
    t = tensor_arg(ctx, x)
    if t.ndim != 4:
        raise BuiltinError(f"depthwise_conv2d needs x shaped [N, C, H, W], got {shape_text(t)}")
    return conv2d(ctx, t, weight, bias, stride, padding, dilation, groups=t.shape[1])


@builtin(ctx=True)
def max_pool2d(ctx: Context, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    """max_pool2d(x, kernel_size[, stride][, padding]): stride defaults to the kernel size."""
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return run_op(F.max_pool2d, tensor_arg(ctx, x), k, stride=s, padding=_pair(padding, "padding"))


@builtin(ctx=True)
def avg_pool2d(ctx: Context, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    """avg_pool2d(x, kernel_size[, stride][, padding]): stride defaults to the kernel size."""
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    return run_op(F.avg_pool2d, tensor_arg(ctx, x), k, stride=s, padding=_pair(padding, "padding"))


@builtin(ctx=True, method=True)
def silu(ctx: Context, x: Any) -> torch.Tensor:
    """silu(x): x * sigmoid(x) (the original has no builtin; its programs define it as a function)."""
    dtype, (t,) = compute(float_arg(ctx, x, "x"))
    return finish(ctx, "silu", F.silu(t), dtype)


# ---------------------------------------------------------------------------------------------- normalization


@builtin(ctx=True, method=True)
def rms_norm(ctx: Context, x: Any, weight: Any, eps: Any = 1e-6) -> torch.Tensor:
    """rms_norm(x, weight[, eps=1e-6]): x / sqrt(mean(x^2) + eps) * weight over the trailing dims of weight's shape."""
    t, w = float_arg(ctx, x, "x"), float_arg(ctx, weight, "weight")
    check_trailing("rms_norm", t, list(w.shape), "weight shape")
    dtype, (tc, wc) = compute(t, w)
    dims = tuple(range(t.ndim - w.ndim, t.ndim))
    inv_rms = 1.0 / torch.sqrt(tc.pow(2).mean(dim=dims, keepdim=True) + number(eps, "rms_norm eps"))
    out = tc * inv_rms * wc
    return finish(ctx, "rms_norm", out, dtype)


@builtin(ctx=True, method=True)
def layer_norm(
    ctx: Context, x: Any, shape_or_weight: Any = None, eps_or_bias: Any = None, eps: Any = None
) -> torch.Tensor:
    """layer_norm(x[, normalized_shape][, eps=1e-5]) as the original, or layer_norm(x, weight, bias[, eps]).

    The second argument is a normalized shape when it is an int or a list of ints, else a weight tensor; the
    third is eps when it is a number, else a bias. The original ignores normalized_shape (it always normalizes
    the last dimension) and has no weight/bias form; we normalize over the dims given.
    """
    t = float_arg(ctx, x, "x")
    w = b = None
    if shape_or_weight is None:
        dims = [t.shape[-1]] if t.ndim else []
    elif _is_shape(shape_or_weight):
        raw = shape_or_weight if isinstance(shape_or_weight, (list, tuple)) else [shape_or_weight]
        dims = [as_int(d, "layer_norm normalized_shape") for d in raw]
        if not dims:
            raise BuiltinError("layer_norm: normalized_shape cannot be empty")
        check_trailing("layer_norm", t, dims, "normalized_shape")
    else:
        w = float_arg(ctx, shape_or_weight, "weight")
        dims = list(w.shape)
        check_trailing("layer_norm", t, dims, "weight shape")
    eps_value = 1e-5
    if eps_or_bias is not None:
        if is_number(eps_or_bias) and not isinstance(eps_or_bias, bool):
            if eps is not None:
                raise BuiltinError("layer_norm: eps given twice (third argument and eps)")
            eps_value = float(eps_or_bias)
        else:
            b = float_arg(ctx, eps_or_bias, "bias")
            if list(b.shape) != dims:
                raise BuiltinError(f"layer_norm: bias shape {shape_text(b)} must be {dims_text(dims)}")
    if eps is not None:
        eps_value = number(eps, "layer_norm eps")
    dtype, (tc, *params) = compute(t, *[p for p in (w, b) if p is not None])
    wc = params.pop(0) if w is not None else None
    bc = params.pop(0) if b is not None else None
    out = standardize(tc, range(t.ndim - len(dims), t.ndim), eps_value)
    out = out if wc is None else out * wc
    return finish(ctx, "layer_norm", out if bc is None else out + bc, dtype)


@builtin(ctx=True, method=True)
def batch_norm(
    ctx: Context, x: Any, gamma_or_mean: Any, beta_or_var: Any, eps_or_weight: Any = 1e-5, bias: Any = None,
    eps: Any = None,
) -> torch.Tensor:
    """batch_norm(x, gamma, beta[, eps=1e-5]) as the original, or batch_norm(x, mean, var, weight, bias[, eps]).

    Original form: statistics of this batch over every dim except 1 (the features/channels), biased variance,
    y = gamma * (x - mean) / sqrt(var + eps) + beta. When the fourth argument is a tensor, the call is the
    inference form with the given running mean and variance instead.
    """
    t = float_arg(ctx, x, "x")
    if t.ndim < 2:
        raise BuiltinError(f"batch_norm needs x with at least 2 dimensions [batch, features, ...], got {shape_text(t)}")
    c = t.shape[1]
    running = isinstance(eps_or_weight, (torch.Tensor, list, tuple))
    if running:
        names = ("mean", "var", "weight", "bias")
        params = [float_arg(ctx, v, n) for v, n in zip((gamma_or_mean, beta_or_var, eps_or_weight, bias), names)
                  if v is not None]
        eps_value = 1e-5 if eps is None else number(eps, "batch_norm eps")
    else:
        names = ("gamma", "beta")
        params = [float_arg(ctx, gamma_or_mean, "gamma"), float_arg(ctx, beta_or_var, "beta")]
        if bias is not None:
            raise BuiltinError("batch_norm: a bias argument needs the form batch_norm(x, mean, var, weight, bias)")
        eps_value = number(eps_or_weight if eps is None else eps, "batch_norm eps")
    for p, n in zip(params, names):
        if list(p.shape) != [c]:
            raise BuiltinError(f"batch_norm: {n} must have shape [{c}] (the size of dim 1 of x), got {shape_text(p)}")
    dtype, (tc, *pc) = compute(t, *params)
    # Per-feature parameters broadcast along dim 1: [C] -> [C, 1, 1, ...].
    pc = [p.reshape([c] + [1] * (t.ndim - 2)) for p in pc]
    if running:
        out = (tc - pc[0]) / torch.sqrt(pc[1] + eps_value)
        out = out * pc[2] if len(pc) > 2 else out
        out = out + pc[3] if len(pc) > 3 else out
    else:
        out = standardize(tc, [0, *range(2, t.ndim)], eps_value) * pc[0] + pc[1]
    return finish(ctx, "batch_norm", out, dtype)


@builtin(ctx=True, method=True)
def dropout(ctx: Context, x: Any, p: Any, training: Any = True) -> torch.Tensor:
    """dropout(x, p[, training=true]): zero each element with probability p, scale the rest by 1/(1-p).

    The original requires training; when it is false x comes back unchanged. Draws use seed(n).
    """
    t = float_arg(ctx, x, "x")
    rate = number(p, "dropout p")
    if not 0.0 <= rate <= 1.0:
        raise BuiltinError(f"dropout probability must be in [0, 1], got {rate}")
    if not isinstance(training, bool):
        raise BuiltinError(f"dropout training must be true or false, got {type_name(training)}")
    if not training or rate == 0.0:
        return t
    keep = torch.rand(t.shape, generator=ctx.generator) >= rate
    dtype, (tc,) = compute(t)
    out = tc * keep.to(tc.device) / (1.0 - rate) if rate < 1.0 else torch.zeros_like(tc)
    return finish(ctx, "dropout", out, dtype)


# ---------------------------------------------------------------------------------------------- embeddings


def token_ids(ctx: Context, v: Any, name: str) -> torch.Tensor:
    """Token ids as an int64 tensor from an int, a list of ints (or integral floats) or a tensor."""
    if isinstance(v, bool):
        raise BuiltinError(f"{name}: token ids must be integers, got bool")
    if isinstance(v, int):
        return torch.tensor([v], dtype=torch.int64)
    if isinstance(v, (list, tuple)):
        if not all(is_number(i) and not isinstance(i, bool) for i in v):
            raise BuiltinError(f"{name}: token ids must be a list of integers")
        ids = torch.tensor([float(i) for i in v], dtype=torch.float64)
    elif isinstance(v, torch.Tensor):
        ids = v.detach()
    else:
        raise BuiltinError(f"{name}: token ids must be an int, a list of ints or a tensor, got {type_name(v)}")
    if ids.is_floating_point():
        if not bool((ids == ids.round()).all()):
            raise BuiltinError(f"{name}: token ids must be whole numbers")
    return ids.to(torch.int64)


def lookup(name: str, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows of a [vocab, dim] table; every id is checked against the vocabulary size."""
    if table.ndim != 2:
        raise BuiltinError(f"{name}: the table must be 2-D [vocab, dim], got {shape_text(table)}")
    bad = ids[(ids < 0) | (ids >= table.shape[0])]
    if bad.numel():
        raise BuiltinError(f"{name}: token id {int(bad[0])} is out of range for vocab size {table.shape[0]}")
    return table[ids.to(table.device)]


@builtin(ctx=True)
def embedding(ctx: Context, table: Any, ids: Any) -> torch.Tensor:
    """embedding(table, token_ids): rows of table [vocab, dim]; a list of n ids gives [n, dim], one int [1, dim]."""
    return lookup("embedding", tensor_arg(ctx, table, "table"), token_ids(ctx, ids, "embedding"))


@builtin(ctx=True)
def positional_encoding(ctx: Context, seq_len: Any, d_model: Any) -> torch.Tensor:
    """positional_encoding(seq_len, d_model) -> float16 [seq_len, d_model], the original's exact layout.

    Column i of row pos holds sin(pos / 10000^(i/d_model)) for even i and cos(...) for odd i: the exponent
    uses the column index itself (not the pair index of "Attention is all you need"), as the original does.
    """
    n, d = as_int(seq_len, "positional_encoding seq_len"), as_int(d_model, "positional_encoding d_model")
    if n < 0 or d < 0:
        raise BuiltinError(f"positional_encoding sizes cannot be negative, got ({n}, {d})")
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(d, dtype=torch.float32)
    angle = pos / torch.exp(i / d * math.log(ROPE_BASE))
    pe = torch.where(i.to(torch.int64) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return pe.to(DEFAULT_DTYPE).to(ctx.torch_device())


# ---------------------------------------------------------------------------------------------- RoPE


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2k], x[2k+1]) by angles whose cos/sin are [..., D/2]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def rope_angles(positions: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """[len(positions), head_dim/2] angles pos * base^(-2k/head_dim), computed in float32."""
    k = torch.arange(0, head_dim, 2, dtype=torch.float32)
    freq = 1.0 / torch.pow(torch.tensor(base, dtype=torch.float32), k / head_dim)
    return positions.to(torch.float32)[:, None] * freq[None, :]


def _rope_input(name: str, t: torch.Tensor, need_3d: bool = False) -> None:
    if (t.ndim != 3) if need_3d else (t.ndim < 3):
        want = "3-D [seq_len, n_heads, head_dim]" if need_3d else "at least 3-D [..., seq_len, n_heads, head_dim]"
        raise BuiltinError(f"{name} needs x {want}, got {shape_text(t)}")
    if t.shape[-1] % 2:
        raise BuiltinError(f"{name} needs an even head_dim, got {t.shape[-1]}")


def apply_rope(ctx: Context, t: torch.Tensor, offset: int, name: str = "rope") -> torch.Tensor:
    """Interleaved-pair RoPE (base 10000) on [..., seq, heads, head_dim] with positions offset, offset+1, ..."""
    _rope_input(name, t)
    dtype, (tc,) = compute(t)
    angles = rope_angles(torch.arange(t.shape[-3]) + offset, t.shape[-1], ROPE_BASE).to(tc.device)[:, None, :]
    return finish(ctx, name, _rotate_pairs(tc, angles.cos().to(tc.dtype), angles.sin().to(tc.dtype)), dtype)


def _offset(v: Any) -> int:
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = v[0]
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BuiltinError(f"rope() position_offset must be a scalar integer, got {type_name(v)}")
    if v < 0:
        raise BuiltinError(f"rope() position_offset cannot be negative, got {v}")
    return v


@builtin(ctx=True, method=True)
def rope(ctx: Context, x: Any, offset_or_cos: Any = 0, sin: Any = None) -> torch.Tensor:
    """rope(x[, position_offset=0]) or rope(x, cos, sin): rotary position embedding, interleaved pairs.

    x is [..., seq_len, n_heads, head_dim]; pair (2k, 2k+1) at position p is rotated by p * 10000^(-2k/head_dim)
    (the original's kernel). With precomputed cos/sin [max_seq_len, head_dim] (precompute_rope_cos/sin), x must
    be 3-D and row p is used for position p; pair k reads column 2k. The original's kernel reads column k there,
    which pairs the wrong frequencies; we read the column its tables were built for.
    """
    t = float_arg(ctx, x, "x")
    if sin is None:
        return apply_rope(ctx, t, _offset(offset_or_cos))
    _rope_input("rope", t, need_3d=True)
    cos_t, sin_t = float_arg(ctx, offset_or_cos, "cos"), float_arg(ctx, sin, "sin")
    s, d = t.shape[0], t.shape[-1]
    for nm, table in (("cos", cos_t), ("sin", sin_t)):
        if table.ndim != 2 or table.shape[1] != d or table.shape[0] < s:
            raise BuiltinError(
                f"rope: {nm} must be [max_seq_len >= {s}, head_dim = {d}], got {shape_text(table)}"
            )
    dtype, (tc, cc, sc) = compute(t, cos_t, sin_t)
    return finish(ctx, "rope", _rotate_pairs(tc, cc[:s, None, 0::2], sc[:s, None, 0::2]), dtype)


def _rope_table(ctx: Context, head_dim: Any, max_seq_len: Any, rope_base: Any, fn: Any, name: str) -> torch.Tensor:
    d = as_int(head_dim, f"{name} head_dim")
    n = as_int(max_seq_len, f"{name} max_seq_len")
    base = number(rope_base, f"{name} rope_base")
    if d % 2:
        raise BuiltinError(f"{name}: head_dim must be even, got {d}")
    if n < 0 or d < 0:
        raise BuiltinError(f"{name}: sizes cannot be negative, got head_dim {d}, max_seq_len {n}")
    angles = rope_angles(torch.arange(n), d, base)
    # Each pair's value is written twice, [pos, 2k] and [pos, 2k+1], as the original's tables are.
    return fn(angles).repeat_interleave(2, dim=1).to(DEFAULT_DTYPE).to(ctx.torch_device())


@builtin(ctx=True)
def precompute_rope_cos(ctx: Context, head_dim: Any, max_seq_len: Any, rope_base: Any) -> torch.Tensor:
    """precompute_rope_cos(head_dim, max_seq_len, rope_base) -> [max_seq_len, head_dim]: cos(p * base^(-2k/d))."""
    return _rope_table(ctx, head_dim, max_seq_len, rope_base, torch.cos, "precompute_rope_cos")


@builtin(ctx=True)
def precompute_rope_sin(ctx: Context, head_dim: Any, max_seq_len: Any, rope_base: Any) -> torch.Tensor:
    """precompute_rope_sin(head_dim, max_seq_len, rope_base) -> [max_seq_len, head_dim]: sin(p * base^(-2k/d))."""
    return _rope_table(ctx, head_dim, max_seq_len, rope_base, torch.sin, "precompute_rope_sin")


# ---------------------------------------------------------------------------------------------- masks


@builtin(ctx=True)
def causal_mask(ctx: Context, seq_len: Any) -> torch.Tensor:
    """causal_mask(seq_len) -> float16 [seq_len, seq_len]: 1 where column <= row (may attend), else 0."""
    n = as_int(seq_len, "causal_mask seq_len")
    if n < 0:
        raise BuiltinError(f"causal_mask seq_len cannot be negative, got {n}")
    return torch.tril(torch.ones(n, n, dtype=DEFAULT_DTYPE, device=ctx.torch_device()))


@builtin(ctx=True, method=True)
def apply_attention_mask(ctx: Context, scores: Any, mask: Any) -> torch.Tensor:
    """apply_attention_mask(scores, mask): scores + (1 - mask) * -1e9 (mask 1 = keep, 0 = mask out).

    In float16 a masked score becomes -65504 (the most negative float16): the original computes -1e9 in float16,
    which is -inf, and 0 * -inf = NaN at every kept position.
    """
    s, m = _masked_inputs(ctx, "apply_attention_mask", scores, mask)
    dtype, (sc, mc) = compute(s, m)
    out = sc + (1.0 - mc) * MASK_PENALTY
    if dtype in _HALF:
        out = out.clamp(min=torch.finfo(dtype).min)
    return out.to(dtype)


@builtin(ctx=True, method=True)
def apply_mask(ctx: Context, scores: Any, mask: Any) -> torch.Tensor:
    """apply_mask(scores, mask): scores where mask != 0, -10000 where mask == 0 (the original's kernel)."""
    s, m = _masked_inputs(ctx, "apply_mask", scores, mask)
    s, m = align(s, m)
    return torch.where(m == 0, torch.tensor(MASK_FILL, dtype=s.dtype, device=s.device), s)


def _masked_inputs(ctx: Context, name: str, scores: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s, m = float_arg(ctx, scores, "scores"), float_arg(ctx, mask, "mask")
    try:
        fits = torch.broadcast_shapes(m.shape, s.shape) == s.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise BuiltinError(f"{name}: mask {shape_text(m)} does not fit scores {shape_text(s)}")
    return s, m


@builtin(ctx=True)
def padding_mask(ctx: Context, lengths: Any, max_length: Any) -> torch.Tensor:
    """padding_mask(lengths, max_length) -> [batch, max_length]: 1 for positions < length, else 0; float32 for
    float32 lengths (as the original), float16 otherwise."""
    n = as_int(max_length, "padding_mask max_length")
    if isinstance(lengths, torch.Tensor):
        lens = lengths.detach().reshape(-1).to(torch.float64).floor().to(torch.int64)
    elif isinstance(lengths, (list, tuple)) and all(is_number(v) and not isinstance(v, bool) for v in lengths):
        lens = torch.tensor([math.floor(v) for v in lengths], dtype=torch.int64)
    else:
        raise BuiltinError(f"padding_mask() lengths must be a list or tensor of lengths, got {type_name(lengths)}")
    if n < 0:
        raise BuiltinError(f"padding_mask max_length cannot be negative, got {n}")
    mask = torch.arange(n)[None, :] < lens.cpu()[:, None]
    wide = isinstance(lengths, torch.Tensor) and lengths.dtype == torch.float32
    return mask.to(torch.float32 if wide else DEFAULT_DTYPE).to(ctx.torch_device())


def _binary(
    ctx: Context, name: str, a: Any, b: Any, names: tuple[str, str] = ("a", "b")
) -> tuple[torch.dtype, torch.Tensor, torch.Tensor]:
    """Two float arguments that broadcast together, in the compute dtype, with the first one's dtype."""
    x, y = float_arg(ctx, a, names[0]), float_arg(ctx, b, names[1])
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        raise BuiltinError(f"{name}: shapes {shape_text(x)} and {shape_text(y)} do not broadcast") from None
    dtype, (xc, yc) = compute(x, y)
    return dtype, xc, yc


@builtin(ctx=True)
def combine_masks(ctx: Context, mask1: Any, mask2: Any) -> torch.Tensor:
    """combine_masks(mask1, mask2): elementwise product (logical AND of 0/1 masks), broadcasting."""
    dtype, ac, bc = _binary(ctx, "combine_masks", mask1, mask2, ("mask1", "mask2"))
    return (ac * bc).to(dtype)


# ---------------------------------------------------------------------------------------------- fused ops


@builtin(ctx=True)
def fused_add_relu(ctx: Context, a: Any, b: Any) -> torch.Tensor:
    """fused_add_relu(a, b): relu(a + b)."""
    dtype, x, y = _binary(ctx, "fused_add_relu", a, b)
    return finish(ctx, "fused_add_relu", torch.relu(x + y), dtype)


@builtin(ctx=True)
def fused_mul_relu(ctx: Context, a: Any, b: Any) -> torch.Tensor:
    """fused_mul_relu(a, b): relu(a * b)."""
    dtype, x, y = _binary(ctx, "fused_mul_relu", a, b)
    return finish(ctx, "fused_mul_relu", torch.relu(x * y), dtype)


@builtin(ctx=True)
def fused_affine(ctx: Context, x: Any, scale: Any, bias: Any) -> torch.Tensor:
    """fused_affine(x, scale, bias): x * scale + bias (broadcasting)."""
    dtype, xc, sc = _binary(ctx, "fused_affine", x, scale)
    _, _, bc = _binary(ctx, "fused_affine", xc, bias)
    return finish(ctx, "fused_affine", xc * sc + bc, dtype)


@builtin(ctx=True)
def fused_gelu_linear(ctx: Context, x: Any, weight: Any, bias: Any) -> torch.Tensor:
    """fused_gelu_linear(x, weight, bias): gelu(x) @ weight + bias, weight [in, out] (no transpose).

    GELU is the tanh approximation, as the original's kernel computes it.
    """
    t, w, b = float_arg(ctx, x, "x"), float_arg(ctx, weight, "weight"), float_arg(ctx, bias, "bias")
    if t.ndim != 2 or w.ndim != 2 or t.shape[1] != w.shape[0]:
        raise BuiltinError(
            f"fused_gelu_linear needs x [m, k] and weight [k, n], got {shape_text(t)} and {shape_text(w)}"
        )
    dtype, (tc, wc, bc) = compute(t, w, b)
    try:
        out = F.gelu(tc, approximate="tanh") @ wc + bc
    except RuntimeError:
        out_shape = dims_text([t.shape[0], w.shape[1]])
        raise BuiltinError(f"fused_gelu_linear: bias {shape_text(b)} does not fit {out_shape}") from None
    return finish(ctx, "fused_gelu_linear", out, dtype)


# ---------------------------------------------------------------------------------------------- attention


@builtin(ctx=True)
def attention_with_cache(
    ctx: Context, q: Any, k_cache: Any, v_cache: Any, w_o: Any, n_heads: Any = 32
) -> torch.Tensor:
    """attention_with_cache(Q, K_cache, V_cache, W_o[, n_heads=32]) -> [seq, d_out] (decoder step with a KV cache).

    Q [seq, n_heads * head_dim] gets RoPE at positions cache_len - seq ...; K (already rotated) and V are
    [cache_len, n_kv_heads * head_dim], each KV head shared by n_heads / n_kv_heads query heads (GQA);
    query i attends to keys j <= i + cache_len - seq; the result is (softmax(Q K^T / sqrt(head_dim)) V) @ W_o^T.
    The original fixes n_heads at 32 and mixes all heads in one score matrix; we attend per head.
    """
    qt, kt, vt, wt = (float_arg(ctx, v, n) for v, n in ((q, "Q"), (k_cache, "K_cache"), (v_cache, "V_cache"),
                                                          (w_o, "W_o")))
    h = as_int(n_heads, "attention_with_cache n_heads")
    if qt.ndim != 2 or kt.ndim != 2 or vt.shape != kt.shape:
        raise BuiltinError(
            f"attention_with_cache needs Q [seq, dim] and K, V [cache_len, kv_dim] of one shape, got Q "
            f"{shape_text(qt)}, K {shape_text(kt)}, V {shape_text(vt)}"
        )
    s, e = qt.shape
    c, ek = kt.shape
    if h <= 0 or e % h:
        raise BuiltinError(f"attention_with_cache: Q dim {e} does not split into n_heads = {h} heads")
    hd = e // h
    kv = ek // hd
    if ek % hd or kv == 0 or h % kv:
        raise BuiltinError(
            f"attention_with_cache: K/V dim {ek} must be a whole number of heads of size {hd} "
            f"that divides n_heads = {h}"
        )
    if c < s:
        raise BuiltinError(f"attention_with_cache: cache_len {c} is shorter than Q's seq_len {s}")
    if wt.ndim != 2 or wt.shape[1] != e:
        raise BuiltinError(f"attention_with_cache: W_o must be [d_out, {e}], got {shape_text(wt)}")
    dtype, (qc, kc, vc, wc) = compute(qt, kt, vt, wt)
    qr = apply_rope(ctx, qc.reshape(s, h, hd), c - s, "attention_with_cache")
    kh = kc.reshape(c, kv, hd).repeat_interleave(h // kv, dim=1)
    vh = vc.reshape(c, kv, hd).repeat_interleave(h // kv, dim=1)
    scores = torch.einsum("shd,chd->hsc", qr, kh) / math.sqrt(hd)
    allowed = torch.arange(c)[None, :] <= torch.arange(s)[:, None] + (c - s)
    scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    out = torch.einsum("hsc,chd->shd", torch.softmax(scores, dim=-1), vh).reshape(s, e)
    return finish(ctx, "attention_with_cache", out @ wc.T, dtype)
