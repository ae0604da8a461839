"""The original's ``cndl_*`` builtins (its Candle-backed twins of native ops), implemented with torch.

Same names, argument order and results as ``builtin_candle.rs``; float16 inputs compute in float32 and come
back as float16. The GGUF and whole-model ``cndl_*`` functions belong to the GGUF/LLM builtins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import TensorLogicError
from ..values import BuiltinError, Context, as_int, first_line, shape_text, type_name
from . import builtin
from .nn import (
    ROPE_BASE,
    check_trailing,
    compute,
    dims_text,
    finish,
    float_arg,
    lookup,
    number,
    rms_norm,
    rope_angles,
    standardize,
    token_ids,
)


def _dim(t: torch.Tensor, v: Any, name: str, what: str = "dim") -> int:
    d = as_int(v, f"{name} {what}")
    if not -max(t.ndim, 1) <= d < max(t.ndim, 1):
        raise BuiltinError(f"{name}: {what} {d} is out of range for a tensor of shape {shape_text(t)}")
    return d


def _unary(ctx: Context, name: str, x: Any, fn: Any) -> torch.Tensor:
    dtype, (t,) = compute(float_arg(ctx, x, "x"))
    return finish(ctx, name, fn(t), dtype)


@builtin(ctx=True)
def cndl_matmul(ctx: Context, a: Any, b: Any) -> torch.Tensor:
    """cndl_matmul(a, b): a @ b."""
    x, y = float_arg(ctx, a, "a"), float_arg(ctx, b, "b")
    dtype, (xc, yc) = compute(x, y)
    try:
        out = xc @ yc
    except RuntimeError:
        raise BuiltinError(f"cndl_matmul: cannot multiply {shape_text(x)} by {shape_text(y)}") from None
    return finish(ctx, "cndl_matmul", out, dtype)


@builtin(ctx=True)
def cndl_transpose(ctx: Context, x: Any, dim0: Any, dim1: Any) -> torch.Tensor:
    """cndl_transpose(x, dim0, dim1): swap two dimensions."""
    t = float_arg(ctx, x, "x")
    return t.transpose(_dim(t, dim0, "cndl_transpose", "dim0"), _dim(t, dim1, "cndl_transpose", "dim1")).contiguous()


@builtin(ctx=True)
def cndl_reshape(ctx: Context, x: Any, shape: Any) -> torch.Tensor:
    """cndl_reshape(x, shape): shape given as a tensor of sizes (f32::from_array([3.0, 4.0])) or a list."""
    t = float_arg(ctx, x, "x")
    if isinstance(shape, torch.Tensor):
        raw = shape.reshape(-1).tolist()
    elif isinstance(shape, (list, tuple)):
        raw = list(shape)
    else:
        raise BuiltinError(f"cndl_reshape() shape must be a tensor or list of sizes, got {type_name(shape)}")
    # Sizes stored in a float tensor are truncated, as the original casts them.
    dims = [int(v) if isinstance(v, float) else as_int(v, "cndl_reshape shape") for v in raw]
    numel = 1
    for d in dims:
        numel *= d
    if any(d < 0 for d in dims) or numel != t.numel():
        raise BuiltinError(f"cndl_reshape: cannot reshape {shape_text(t)} ({t.numel()} elements) to {dims_text(dims)}")
    return t.reshape(dims)


@builtin(ctx=True)
def cndl_softmax(ctx: Context, x: Any, dim: Any) -> torch.Tensor:
    """cndl_softmax(x, dim): softmax along dim (dim is required, as in the original)."""
    t = float_arg(ctx, x, "x")
    d = _dim(t, dim, "cndl_softmax")
    return _unary(ctx, "cndl_softmax", t, lambda v: torch.softmax(v, d))


@builtin(ctx=True)
def cndl_log_softmax(ctx: Context, x: Any, dim: Any) -> torch.Tensor:
    """cndl_log_softmax(x, dim): log-softmax along dim."""
    t = float_arg(ctx, x, "x")
    d = _dim(t, dim, "cndl_log_softmax")
    return _unary(ctx, "cndl_log_softmax", t, lambda v: torch.log_softmax(v, d))


@builtin(ctx=True)
def cndl_gelu(ctx: Context, x: Any) -> torch.Tensor:
    """cndl_gelu(x): GELU, tanh approximation (Candle's gelu)."""
    return _unary(ctx, "cndl_gelu", x, lambda v: F.gelu(v, approximate="tanh"))


@builtin(ctx=True)
def cndl_silu(ctx: Context, x: Any) -> torch.Tensor:
    """cndl_silu(x): x * sigmoid(x)."""
    return _unary(ctx, "cndl_silu", x, F.silu)


@builtin(ctx=True)
def cndl_relu(ctx: Context, x: Any) -> torch.Tensor:
    """cndl_relu(x): max(x, 0)."""
    return _unary(ctx, "cndl_relu", x, torch.relu)


@builtin(ctx=True)
def cndl_tanh(ctx: Context, x: Any) -> torch.Tensor:
    """cndl_tanh(x): hyperbolic tangent."""
    return _unary(ctx, "cndl_tanh", x, torch.tanh)


def _shape_list(v: Any, name: str) -> list[int]:
    if isinstance(v, torch.Tensor):
        return [int(d) for d in v.reshape(-1).tolist()]
    if isinstance(v, (list, tuple)):
        return [as_int(d, f"{name} normalized_shape") for d in v]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BuiltinError(f"{name}() normalized_shape must be an integer or tensor, got {type_name(v)}")
    return [v]


@builtin(ctx=True)
def cndl_layer_norm(
    ctx: Context, x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5
) -> torch.Tensor:
    """cndl_layer_norm(x, normalized_shape[, weight][, bias][, eps=1e-5]): layer normalization.

    The original normalizes the last dimension and ignores weight and bias; we normalize over normalized_shape
    and apply weight and bias when given.
    """
    t = float_arg(ctx, x, "x")
    dims = _shape_list(normalized_shape, "cndl_layer_norm")
    check_trailing("cndl_layer_norm", t, dims, "normalized_shape")
    params = [None if v is None else float_arg(ctx, v, n) for v, n in ((weight, "weight"), (bias, "bias"))]
    for p, n in zip(params, ("weight", "bias")):
        if p is not None and list(p.shape) != dims:
            raise BuiltinError(f"cndl_layer_norm: {n} shape {shape_text(p)} must be {dims_text(dims)}")
    dtype, (tc, *pc) = compute(t, *[p for p in params if p is not None])
    w = pc.pop(0) if params[0] is not None else None
    b = pc.pop(0) if params[1] is not None else None
    out = standardize(tc, range(t.ndim - len(dims), t.ndim), number(eps, "cndl_layer_norm eps"))
    out = out if w is None else out * w
    return finish(ctx, "cndl_layer_norm", out if b is None else out + b, dtype)


@builtin(ctx=True)
def cndl_rms_norm(ctx: Context, x: Any, weight: Any = None, eps: Any = 1e-5) -> torch.Tensor:
    """cndl_rms_norm(x[, weight][, eps=1e-5]): x / sqrt(mean(x^2) + eps) over the last dim, times weight if given.

    The original ignores weight; we apply it.
    """
    t = float_arg(ctx, x, "x")
    if t.ndim == 0:
        raise BuiltinError("cndl_rms_norm needs a tensor with at least one dimension")
    w = torch.ones(t.shape[-1], dtype=t.dtype, device=t.device) if weight is None else weight
    return rms_norm(ctx, t, w, eps)


@builtin(ctx=True)
def cndl_embedding(ctx: Context, indices: Any, embeddings: Any) -> torch.Tensor:
    """cndl_embedding(indices, embeddings): rows of embeddings [vocab, dim] (note: ids first, table second).

    An int index gives one row [dim]; a tensor or list of ids of shape S gives S + [dim].
    """
    table = float_arg(ctx, embeddings, "embeddings")
    ids = token_ids(ctx, indices, "cndl_embedding")
    if isinstance(indices, int):
        return lookup("cndl_embedding", table, ids)[0]
    if isinstance(indices, torch.Tensor):
        ids = ids.reshape(indices.shape)
    return lookup("cndl_embedding", table, ids)


@builtin(ctx=True)
def cndl_rope(ctx: Context, x: Any, position_ids: Any, rope_theta: Any = ROPE_BASE) -> torch.Tensor:
    """cndl_rope(x, position_offset[, rope_theta=10000]): RoPE on [..., seq, heads, head_dim], halves layout.

    Candle's layout: the first half of head_dim pairs with the second half (rotate_half), unlike rope()'s
    interleaved pairs. Positions are position_offset, position_offset + 1, ... along dim -3.
    """
    t = float_arg(ctx, x, "x")
    if t.ndim < 3:
        raise BuiltinError(f"cndl_rope needs x at least 3-D [..., seq_len, n_heads, head_dim], got {shape_text(t)}")
    if t.shape[-1] % 2:
        raise BuiltinError(f"cndl_rope needs an even head_dim, got {t.shape[-1]}")
    if isinstance(position_ids, torch.Tensor) and position_ids.numel() == 1:
        position_ids = position_ids.item()
    offset = as_int(position_ids, "cndl_rope position_ids")
    if offset < 0:
        raise BuiltinError(f"cndl_rope position offset cannot be negative, got {offset}")
    dtype, (tc,) = compute(t)
    half = t.shape[-1] // 2
    angles = rope_angles(torch.arange(t.shape[-3]) + offset, t.shape[-1], number(rope_theta, "cndl_rope rope_theta"))
    cos, sin = (f(angles).to(tc)[:, None, :] for f in (torch.cos, torch.sin))
    x1, x2 = tc[..., :half], tc[..., half:]
    return finish(ctx, "cndl_rope", torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1), dtype)


# ---------------------------------------------------------------------------------------------- safetensors


def _path(ctx: Context, v: Any, name: str) -> Path:
    if not isinstance(v, str):
        raise BuiltinError(f"{name}() path must be a string, got {type_name(v)}")
    return ctx.path(v)


def _open(ctx: Context, path: Any, name: str) -> Any:
    from ...formats.safetensors import SafeTensorsFile

    p = _path(ctx, path, name)
    if not p.is_file():
        raise BuiltinError(f"{name}: no such file: {path}")
    try:
        return SafeTensorsFile(p, [p])
    except (OSError, TensorLogicError) as e:
        raise BuiltinError(f"{name}: cannot read {path}: {first_line(e)}") from None


@builtin(ctx=True)
def cndl_save_safetensor(ctx: Context, tensor: Any, path: Any, tensor_name: Any) -> None:
    """cndl_save_safetensor(tensor, path, tensor_name): write a file holding this one tensor (replacing the file)."""
    from ...formats.safetensors import save_safetensors

    if not isinstance(tensor, torch.Tensor):
        raise BuiltinError(f"cndl_save_safetensor() first argument must be a tensor, got {type_name(tensor)}")
    if not isinstance(tensor_name, str):
        raise BuiltinError(f"cndl_save_safetensor() tensor_name must be a string, got {type_name(tensor_name)}")
    p = _path(ctx, path, "cndl_save_safetensor")
    try:
        save_safetensors({tensor_name: tensor.detach().cpu().contiguous()}, p)
    except (OSError, TensorLogicError) as e:
        raise BuiltinError(f"cndl_save_safetensor: cannot write {path}: {first_line(e)}") from None
    print(f"Saved tensor '{tensor_name}' to {path}", file=ctx.stdout())


@builtin(ctx=True)
def cndl_load_safetensor(ctx: Context, path: Any, tensor_name: Any) -> torch.Tensor:
    """cndl_load_safetensor(path, tensor_name): one tensor of a file; f16 and f32 stay, other dtypes become f32."""
    if not isinstance(tensor_name, str):
        raise BuiltinError(f"cndl_load_safetensor() tensor_name must be a string, got {type_name(tensor_name)}")
    f = _open(ctx, path, "cndl_load_safetensor")
    try:
        infos = {i.name: i for i in f.tensor_infos()}
        if tensor_name not in infos:
            raise BuiltinError(f"cndl_load_safetensor: no tensor named '{tensor_name}' in {path} "
                               f"(it has {', '.join(sorted(infos)) or 'none'})")
        t = f.read_torch(tensor_name).clone()
    finally:
        f.close()
    stored = infos[tensor_name].dtype
    if t.dtype not in (torch.float16, torch.float32):
        t = t.to(torch.float32)
    kind = {torch.float16: "f16", torch.float32: "f32"}[t.dtype]
    note = kind if stored in ("F16", "F32") else f"converted from {stored} to f32"
    print(f"Loaded tensor '{tensor_name}' from {path} ({note}, shape: {dims_text(t.shape)})", file=ctx.stdout())
    return t.to(ctx.torch_device())


@builtin(ctx=True)
def cndl_list_safetensors(ctx: Context, path: Any) -> None:
    """cndl_list_safetensors(path): print each tensor's name, dtype and shape, sorted by name."""
    f = _open(ctx, path, "cndl_list_safetensors")
    try:
        infos = sorted(f.tensor_infos(), key=lambda i: i.name)
    finally:
        f.close()
    out = ctx.stdout()
    print(f"Tensors in {path}:", file=out)
    print(f"  Total: {len(infos)} tensors", file=out)
    print("", file=out)
    for info in infos:
        print(f"  - {info.name} : {info.dtype} {dims_text(info.shape)}", file=out)
