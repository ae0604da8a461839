"""cndl_* builtins against numpy float64 references; SafeTensors files written and read back."""

from __future__ import annotations

import io
import json
import math
import struct

import numpy as np
import pytest
import torch

from lang.builtins.support import call, close, error, f64, rnd
from tensorlogic.lang.values import Context


def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_tensor_and_math_ops(dtype):
    a, b = rnd(2, 3, seed=1, dtype=dtype), rnd(3, 4, seed=2, dtype=dtype)
    close(call("cndl_matmul", a, b), f64(a) @ f64(b), dtype)
    x = rnd(2, 3, 4, seed=3, dtype=dtype)
    close(call("cndl_transpose", x, 0, 2), f64(x).transpose(2, 1, 0), dtype)
    close(call("cndl_reshape", torch.arange(12.0).to(dtype), torch.tensor([3.0, 4.0])), np.arange(12.0).reshape(3, 4),
          dtype)
    close(call("cndl_reshape", x, [4, 6]), f64(x).reshape(4, 6), dtype)
    close(call("cndl_softmax", x, 1), _softmax(f64(x), 1), dtype)
    close(call("cndl_log_softmax", x, -1), np.log(_softmax(f64(x), -1)), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_activations(dtype):
    x = rnd(9, seed=4, dtype=dtype)
    xs = f64(x)
    close(call("cndl_gelu", x), 0.5 * xs * (1 + np.tanh(math.sqrt(2 / math.pi) * (xs + 0.044715 * xs**3))), dtype)
    close(call("cndl_silu", x), xs / (1 + np.exp(-xs)), dtype)
    close(call("cndl_relu", x), np.maximum(xs, 0), dtype)
    close(call("cndl_tanh", x), np.tanh(xs), dtype)


def test_tensor_op_errors():
    error("cndl_matmul", torch.ones(2, 3), torch.ones(2, 3),
          match=r"^cndl_matmul: cannot multiply \[2, 3\] by \[2, 3\]$")
    error("cndl_transpose", torch.ones(2, 3), 0, 2,
          match=r"^cndl_transpose: dim1 2 is out of range for a tensor of shape \[2, 3\]$")
    error("cndl_reshape", torch.ones(12), [5, 3],
          match=r"^cndl_reshape: cannot reshape \[12\] \(12 elements\) to \[5, 3\]$")
    error("cndl_reshape", torch.ones(12), "3x4",
          match=r"^cndl_reshape\(\) shape must be a tensor or list of sizes, got string$")
    error("cndl_softmax", torch.ones(3), 1, match=r"^cndl_softmax: dim 1 is out of range for a tensor of shape \[3\]$")


def _ln(x, eps):
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + eps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_norms(dtype):
    x, w, b = rnd(3, 4, seed=5, dtype=dtype), rnd(4, seed=6, dtype=dtype), rnd(4, seed=7, dtype=dtype)
    xs = f64(x)
    close(call("cndl_layer_norm", x, 4), _ln(xs, 1e-5), dtype)
    close(call("cndl_layer_norm", x, [4], w, b, 0.1), _ln(xs, 0.1) * f64(w) + f64(b), dtype)
    close(call("cndl_rms_norm", x), xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 1e-5), dtype)
    close(call("cndl_rms_norm", x, w, 0.5), xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 0.5) * f64(w), dtype)


def test_norm_errors():
    error("cndl_layer_norm", torch.ones(2, 4), 3,
          match=r"^cndl_layer_norm: normalized_shape \[3\] does not match the last dimensions of x \[2, 4\]$")
    error("cndl_layer_norm", torch.ones(2, 4), 4, torch.ones(3),
          match=r"^cndl_layer_norm: weight shape \[3\] must be \[4\]$")
    error("cndl_layer_norm", torch.ones(2, 4), "4",
          match=r"^cndl_layer_norm\(\) normalized_shape must be an integer or tensor, got string$")
    error("cndl_rms_norm", 2.0, match=r"^cndl_rms_norm needs a tensor with at least one dimension$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_embedding_takes_ids_first(dtype):
    table = rnd(5, 3, seed=8, dtype=dtype)
    t = f64(table)
    assert np.array_equal(f64(call("cndl_embedding", torch.tensor([4.0, 0.0, 2.0]), table)), t[[4, 0, 2]])
    assert np.array_equal(f64(call("cndl_embedding", 3, table)), t[3])
    ids = np.array([[1, 2], [0, 4]])
    assert np.array_equal(f64(call("cndl_embedding", torch.from_numpy(ids).float(), table)), t[ids])
    error("cndl_embedding", [5], table, match=r"^cndl_embedding: token id 5 is out of range for vocab size 5$")


def _rope_halves_ref(x, positions, theta=10000.0):
    """Candle's layout as complex numbers: element k pairs with element k + d/2."""
    d = x.shape[-1]
    z = x[..., : d // 2] + 1j * x[..., d // 2:]
    angle = np.asarray(positions, dtype=np.float64)[:, None, None] * theta ** (-2 * np.arange(d // 2) / d)
    r = z * np.exp(1j * angle)
    return np.concatenate([r.real, r.imag], axis=-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_rope_halves_layout(dtype):
    x = rnd(4, 2, 8, seed=9, dtype=dtype)
    close(call("cndl_rope", x, 3), _rope_halves_ref(f64(x), np.arange(4) + 3), dtype)
    close(call("cndl_rope", x, torch.tensor([0.0]), 500.0), _rope_halves_ref(f64(x), np.arange(4), 500.0), dtype)
    # hand value: [1, 0 | 0, 0] at position 1 turns the first pair by 1 radian
    out = call("cndl_rope", torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]), 1)
    close(out, [[[math.cos(1), 0.0, math.sin(1), 0.0]]], torch.float32)


def test_rope_errors():
    error("cndl_rope", torch.ones(2, 4), 0,
          match=r"^cndl_rope needs x at least 3-D \[\.\.\., seq_len, n_heads, head_dim\], got \[2, 4\]$")
    error("cndl_rope", torch.ones(1, 1, 5), 0, match=r"^cndl_rope needs an even head_dim, got 5$")
    error("cndl_rope", torch.ones(1, 1, 4), -1, match=r"^cndl_rope position offset cannot be negative, got -1$")


def _header(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8: 8 + n]), raw[8 + n:]


@pytest.mark.parametrize("dtype,tag", [(torch.float16, "F16"), (torch.float32, "F32")])
def test_save_load_list(tmp_path, dtype, tag):
    out = io.StringIO()
    ctx = Context(base_dir=tmp_path, out=out)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=dtype).reshape(2, 3)
    assert call("cndl_save_safetensor", w, "w.safetensors", "my_weights", ctx=ctx) is None
    header, data = _header(tmp_path / "w.safetensors")
    assert header["my_weights"] == {"dtype": tag, "shape": [2, 3], "data_offsets": [0, 6 * w.element_size()]}
    stored = np.frombuffer(data, dtype=np.float16 if dtype == torch.float16 else np.float32)
    assert stored.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    loaded = call("cndl_load_safetensor", "w.safetensors", "my_weights", ctx=ctx)
    assert loaded.dtype == dtype and f64(loaded).tolist() == [[1, 2, 3], [4, 5, 6]]
    call("cndl_list_safetensors", "w.safetensors", ctx=ctx)
    kind = "f16" if dtype == torch.float16 else "f32"
    assert out.getvalue() == (
        "Saved tensor 'my_weights' to w.safetensors\n"
        f"Loaded tensor 'my_weights' from w.safetensors ({kind}, shape: [2, 3])\n"
        "Tensors in w.safetensors:\n  Total: 1 tensors\n\n"
        f"  - my_weights : {tag} [2, 3]\n"
    )


def test_load_converts_other_dtypes_to_f32(tmp_path):
    from tensorlogic.formats.safetensors import save_safetensors

    save_safetensors({"ids": torch.tensor([1, 2, 3], dtype=torch.int64), "a": torch.zeros(1)}, tmp_path / "m.st")
    out = io.StringIO()
    ctx = Context(base_dir=tmp_path, out=out)
    t = call("cndl_load_safetensor", "m.st", "ids", ctx=ctx)
    assert t.dtype == torch.float32 and f64(t).tolist() == [1.0, 2.0, 3.0]
    assert out.getvalue() == "Loaded tensor 'ids' from m.st (converted from I64 to f32, shape: [3])\n"
    call("cndl_list_safetensors", "m.st", ctx=ctx)
    assert out.getvalue().endswith("  Total: 2 tensors\n\n  - a : F32 [1]\n  - ids : I64 [3]\n")


def test_safetensor_errors(tmp_path):
    ctx = Context(base_dir=tmp_path, out=io.StringIO())
    error("cndl_load_safetensor", "none.safetensors", "w", ctx=ctx,
          match=r"^cndl_load_safetensor: no such file: none\.safetensors$")
    call("cndl_save_safetensor", torch.ones(2), "one.safetensors", "w", ctx=ctx)
    error("cndl_load_safetensor", "one.safetensors", "v", ctx=ctx,
          match=r"^cndl_load_safetensor: no tensor named 'v' in one\.safetensors \(it has w\)$")
    (tmp_path / "bad.safetensors").write_bytes(b"\x01\x00\x00")
    error("cndl_list_safetensors", "bad.safetensors", ctx=ctx,
          match=r"^cndl_list_safetensors: cannot read bad\.safetensors: ")
    error("cndl_save_safetensor", [1.0], "x.safetensors", "w", ctx=ctx,
          match=r"^cndl_save_safetensor\(\) first argument must be a tensor, got list$")
    error("cndl_save_safetensor", torch.ones(1), 3, "w", ctx=ctx,
          match=r"^cndl_save_safetensor\(\) path must be a string, got int$")
    error("cndl_save_safetensor", torch.ones(1), "missing/dir/x.safetensors", "w", ctx=ctx,
          match=r"^cndl_save_safetensor: cannot write missing/dir/x\.safetensors: ")
