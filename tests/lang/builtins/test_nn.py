"""NN builtins against float64 numpy references written here (and hand-computed values)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from lang.builtins.support import call, close, error, f64, rnd
from tensorlogic.lang.values import Context

# ---------------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_linear_is_x_times_w_transposed(dtype):
    x, w, b = rnd(3, 5, seed=1, dtype=dtype), rnd(4, 5, seed=2, dtype=dtype), rnd(4, seed=3, dtype=dtype)
    close(call("linear", x, w, b), f64(x) @ f64(w).T + f64(b), dtype)
    close(call("linear", x, w), f64(x) @ f64(w).T, dtype)


def test_linear_shape_error():
    error("linear", torch.ones(2, 3), torch.ones(4, 5),
          match=r"^linear: x \[2, 3\] does not fit weight \[4, 5\] \(weight is \[out, in\]\)$")


def test_linear_float16_overflow_warns():
    err = io.StringIO()
    ctx = Context(err=err)
    out = call("linear", torch.full((1, 4), 200.0).half(), torch.full((1, 4), 200.0).half(), ctx=ctx)
    assert torch.isinf(out).all()
    assert err.getvalue() == "tl: warning: linear overflows float16 (max 65504); the result holds inf\n"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_silu(dtype):
    x = rnd(7, seed=4, dtype=dtype)
    close(call("silu", x), f64(x) / (1 + np.exp(-f64(x))), dtype)


# ---------------------------------------------------------------------------------------------- norms


def test_rms_norm_hand_values():
    # rms([2, 4, 6, 8]) = sqrt(120 / 4) = sqrt(30)
    out = call("rms_norm", torch.tensor([2.0, 4.0, 6.0, 8.0]).half(), [1.0, 1.0, 1.0, 1.0])
    close(out, np.array([2, 4, 6, 8]) / math.sqrt(30), torch.float16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_rms_norm_over_weight_dims(dtype):
    x, w = rnd(2, 3, 4, seed=5, dtype=dtype), rnd(4, seed=6, dtype=dtype)
    xs = f64(x)
    want = xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 1e-6) * f64(w)
    close(call("rms_norm", x, w), want, dtype)
    want2 = xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 0.5) * f64(w)
    close(call("rms_norm", x, w, 0.5), want2, dtype)
    w2 = rnd(3, 4, seed=7, dtype=dtype)
    want3 = xs / np.sqrt((xs**2).mean((-2, -1), keepdims=True) + 1e-6) * f64(w2)
    close(call("rms_norm", x, w2), want3, dtype)


def test_rms_norm_weight_mismatch():
    error("rms_norm", torch.ones(2, 4), torch.ones(3),
          match=r"^rms_norm: weight shape \[3\] does not match the last dimensions of x \[2, 4\]$")


def _layer_norm_ref(x, axes, eps=1e-5):
    mean = x.mean(axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + eps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_layer_norm_forms(dtype):
    x = rnd(2, 3, 5, seed=8, dtype=dtype)
    w, b = rnd(5, seed=9, dtype=dtype), rnd(5, seed=10, dtype=dtype)
    xs = f64(x)
    close(call("layer_norm", x), _layer_norm_ref(xs, -1), dtype)
    close(call("layer_norm", x, [5], 0.1), _layer_norm_ref(xs, -1, 0.1), dtype)
    close(call("layer_norm", x, [3, 5]), _layer_norm_ref(xs, (-2, -1)), dtype)
    close(call("layer_norm", x, w, b), _layer_norm_ref(xs, -1) * f64(w) + f64(b), dtype)
    close(call("layer_norm", x, w, b, 0.1), _layer_norm_ref(xs, -1, 0.1) * f64(w) + f64(b), dtype)
    close(call("layer_norm", x, w), _layer_norm_ref(xs, -1) * f64(w), dtype)


def test_layer_norm_hand_values():
    # [1, 2, 3]: mean 2, variance 2/3
    out = call("layer_norm", torch.tensor([[1.0, 2.0, 3.0]]), 3, 0.0)
    close(out, [[-math.sqrt(1.5), 0.0, math.sqrt(1.5)]], torch.float32)


def test_layer_norm_errors():
    error("layer_norm", torch.ones(2, 4), [3],
          match=r"^layer_norm: normalized_shape \[3\] does not match the last dimensions of x \[2, 4\]$")
    error("layer_norm", torch.ones(2, 4), torch.ones(4), torch.ones(3),
          match=r"^layer_norm: bias shape \[3\] must be \[4\]$")
    error("layer_norm", torch.ones(2, 4), [], match=r"^layer_norm: normalized_shape cannot be empty$")
    error("layer_norm", torch.ones(2, 4), [4], 1e-5, 1e-3,
          match=r"^layer_norm: eps given twice \(third argument and eps\)$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_batch_norm_batch_statistics_hand_values(dtype):
    x = torch.tensor([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]], dtype=dtype)
    r = math.sqrt(1.5)  # (x - 2) / sqrt(2/3)
    close(call("batch_norm", x, [1.0, 1.0], [0.0, 0.0], 0.0), [[-r, -r], [0, 0], [r, r]], dtype)
    close(call("batch_norm", x, [2.0, 1.0], [1.0, 0.5]), [[1 - 2 * r, 0.5 - r], [1, 0.5], [1 + 2 * r, 0.5 + r]], dtype)


def test_batch_norm_4d_normalizes_per_channel():
    x, g, b = rnd(2, 3, 4, 4, seed=11), rnd(3, seed=12), rnd(3, seed=13)
    xs = f64(x)
    mean = xs.mean((0, 2, 3), keepdims=True)
    var = ((xs - mean) ** 2).mean((0, 2, 3), keepdims=True)
    want = (xs - mean) / np.sqrt(var + 1e-5) * f64(g)[None, :, None, None] + f64(b)[None, :, None, None]
    close(call("batch_norm", x, g, b, 1e-5), want, torch.float32)


def test_batch_norm_running_statistics_form():
    x = rnd(2, 3, 4, seed=14).half()
    m, v = rnd(3, seed=15).half(), (rnd(3, seed=16).abs() + 0.5).half()
    g, b = rnd(3, seed=17).half(), rnd(3, seed=18).half()
    c = (slice(None), slice(None), None)
    want = (f64(x) - f64(m)[c[1:]]) / np.sqrt(f64(v)[c[1:]] + 1e-5) * f64(g)[c[1:]] + f64(b)[c[1:]]
    close(call("batch_norm", x, m, v, g, b), want, torch.float16)


def test_batch_norm_errors():
    error("batch_norm", torch.ones(3), [1.0], [0.0],
          match=r"^batch_norm needs x with at least 2 dimensions \[batch, features, \.\.\.\], got \[3\]$")
    error("batch_norm", torch.ones(3, 2), [1.0, 1.0, 1.0], [0.0, 0.0],
          match=r"^batch_norm: gamma must have shape \[2\] \(the size of dim 1 of x\), got \[3\]$")
    error("batch_norm", torch.ones(3, 2), [1.0, 1.0], [0.0, 0.0], 1e-5, [0.0, 0.0],
          match=r"^batch_norm: a bias argument needs the form batch_norm\(x, mean, var, weight, bias\)$")


# ---------------------------------------------------------------------------------------------- dropout


def test_dropout_inference_and_p0_return_input():
    x = rnd(4, 4, seed=19).half()
    assert torch.equal(call("dropout", x, 0.5, False), x)
    assert torch.equal(call("dropout", x, 0.0), x)
    assert torch.equal(call("dropout", x, 1.0), torch.zeros_like(x))


def test_dropout_training_zeroes_and_scales():
    ctx = Context()
    ctx.generator.manual_seed(1)
    x = torch.ones(100, 100).half()
    out = call("dropout", x, 0.25, ctx=ctx)
    assert out.dtype == torch.float16
    assert set(out.unique().tolist()) == {0.0, float(np.float16(4.0 / 3.0))}
    dropped = float((out == 0).float().mean())
    assert 0.22 < dropped < 0.28
    ctx.generator.manual_seed(1)
    assert torch.equal(call("dropout", x, 0.25, ctx=ctx), out)


def test_dropout_errors():
    error("dropout", torch.ones(2), 1.5, match=r"^dropout probability must be in \[0, 1\], got 1\.5$")
    error("dropout", torch.ones(2), 0.5, 1, match=r"^dropout training must be true or false, got int$")


# ---------------------------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_embedding_rows(dtype):
    table = rnd(10, 4, seed=20, dtype=dtype)
    t = f64(table)
    out = call("embedding", table, [0, 2, 5, 1])
    assert out.shape == (4, 4) and out.dtype == dtype
    assert np.array_equal(f64(out), t[[0, 2, 5, 1]])
    assert np.array_equal(f64(call("embedding", table, [0.0, 2.0])), t[[0, 2]])
    assert np.array_equal(f64(call("embedding", table, 7)), t[[7]])
    ids = np.array([[1, 2], [3, 4]])
    assert np.array_equal(f64(call("embedding", table, torch.from_numpy(ids))), t[ids])


def test_embedding_errors():
    table = torch.ones(10, 4)
    error("embedding", table, [3, 10], match=r"^embedding: token id 10 is out of range for vocab size 10$")
    error("embedding", torch.ones(10), [1], match=r"^embedding: the table must be 2-D \[vocab, dim\], got \[10\]$")
    error("embedding", table, [1.5], match=r"^embedding: token ids must be whole numbers$")
    error("embedding", table, "a",
          match=r"^embedding: token ids must be an int, a list of ints or a tensor, got string$")


def test_positional_encoding_layout():
    out = call("positional_encoding", 5, 6)
    assert out.shape == (5, 6) and out.dtype == torch.float16
    pos, i = np.arange(5)[:, None], np.arange(6)[None, :]
    angle = pos / 10000.0 ** (i / 6)
    close(out, np.where(i % 2 == 0, np.sin(angle), np.cos(angle)))
    # row 1 of d_model 4: sin(1), cos(1/10), sin(1/100), cos(1/1000)
    close(call("positional_encoding", 2, 4)[1], [math.sin(1), math.cos(0.1), math.sin(0.01), math.cos(0.001)])


def test_positional_encoding_negative():
    error("positional_encoding", -1, 4, match=r"^positional_encoding sizes cannot be negative, got \(-1, 4\)$")


# ---------------------------------------------------------------------------------------------- RoPE


def _rope_ref(x, positions, base=10000.0):
    """Interleaved RoPE as complex multiplication: pair (2k, 2k+1) is x[2k] + i x[2k+1]."""
    d = x.shape[-1]
    z = x[..., 0::2] + 1j * x[..., 1::2]
    angle = np.asarray(positions, dtype=np.float64)[:, None, None] * base ** (-np.arange(0, d, 2) / d)
    r = z * np.exp(1j * angle)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = r.real, r.imag
    return out


def test_rope_position_zero_is_identity():
    x = torch.arange(1.0, 9.0).reshape(1, 1, 8).half()
    assert torch.equal(call("rope", x, 0), x)


def test_rope_hand_values():
    # pair 0 turns by 1 radian at position 1; pair 1 by 10000^(-1/2) = 0.01
    out = call("rope", torch.tensor([[[1.0, 0.0, 1.0, 0.0]]]), 1)
    close(out, [[[math.cos(1), math.sin(1), math.cos(0.01), math.sin(0.01)]]], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_rope_reference(dtype):
    x = rnd(5, 2, 8, seed=21, dtype=dtype)
    close(call("rope", x, 3), _rope_ref(f64(x), np.arange(5) + 3), dtype)
    x4 = rnd(2, 3, 2, 4, seed=22, dtype=dtype)
    close(call("rope", x4), _rope_ref(f64(x4), np.arange(3)), dtype)
    close(call("rope", x, torch.tensor([2.0])), _rope_ref(f64(x), np.arange(5) + 2), dtype)


def test_rope_with_precomputed_tables():
    x = rnd(4, 2, 8, seed=23)
    cos = call("precompute_rope_cos", 8, 6, 10000.0)
    sin = call("precompute_rope_sin", 8, 6, 10000.0)
    # The tables are float16 (as the original's), so the rotation is float16-accurate.
    got = call("rope", x, cos, sin)
    assert got.dtype == torch.float32
    atol, rtol = TOLERANCES["float16"]
    np.testing.assert_allclose(f64(got), _rope_ref(f64(x), np.arange(4)), atol=atol, rtol=rtol)


def test_precompute_rope_tables():
    cos = call("precompute_rope_cos", 4, 3, 100.0)
    sin = call("precompute_rope_sin", 4, 3, 100.0)
    assert cos.shape == (3, 4) and cos.dtype == torch.float16
    angle = np.arange(3)[:, None] * 100.0 ** (-np.array([0, 0, 2, 2]) / 4)
    close(cos, np.cos(angle))
    close(sin, np.sin(angle))


def test_rope_errors():
    error("rope", torch.ones(2, 4),
          match=r"^rope needs x at least 3-D \[\.\.\., seq_len, n_heads, head_dim\], got \[2, 4\]$")
    error("rope", torch.ones(1, 1, 3), match=r"^rope needs an even head_dim, got 3$")
    error("rope", torch.ones(1, 1, 4), -1, match=r"^rope\(\) position_offset cannot be negative, got -1$")
    error("rope", torch.ones(1, 1, 4), "a", match=r"^rope\(\) position_offset must be a scalar integer, got string$")
    error("rope", torch.ones(2, 1, 4), torch.ones(1, 4), torch.ones(1, 4),
          match=r"^rope: cos must be \[max_seq_len >= 2, head_dim = 4\], got \[1, 4\]$")
    error("rope", torch.ones(1, 2, 1, 4), torch.ones(1, 4), torch.ones(1, 4),
          match=r"^rope needs x 3-D \[seq_len, n_heads, head_dim\], got \[1, 2, 1, 4\]$")
    error("precompute_rope_cos", 5, 3, 10000.0, match=r"^precompute_rope_cos: head_dim must be even, got 5$")


# ---------------------------------------------------------------------------------------------- masks


def test_causal_mask():
    out = call("causal_mask", 4)
    assert out.dtype == torch.float16
    assert np.array_equal(f64(out), np.tril(np.ones((4, 4))))
    error("causal_mask", -2, match=r"^causal_mask seq_len cannot be negative, got -2$")


def test_apply_attention_mask_float32():
    s, m = rnd(3, 3, seed=24), torch.tril(torch.ones(3, 3))
    close(call("apply_attention_mask", s, m), f64(s) + (1 - f64(m)) * -1e9, torch.float32)


def test_apply_attention_mask_float16_has_no_nan():
    s = rnd(3, 3, seed=25).half()
    out = call("apply_attention_mask", s, torch.tril(torch.ones(3, 3)).half())
    assert out.dtype == torch.float16 and not torch.isnan(out).any()
    low = np.tril(np.ones((3, 3), bool))
    assert np.array_equal(f64(out)[low], f64(s)[low])
    assert (f64(out)[~low] == -65504.0).all()
    kept = call("apply_attention_mask", s, torch.ones(3, 3).half())
    assert torch.equal(kept, s)


def test_apply_mask_fills_minus_10000():
    s, m = rnd(2, 3, seed=26).half(), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]).half()
    assert np.array_equal(f64(call("apply_mask", s, m)), np.where(f64(m) == 0, -10000.0, f64(s)))
    bcast = call("apply_mask", rnd(2, 2, 2, seed=27), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert (f64(bcast)[:, 0, 1] == -10000.0).all()


def test_mask_shape_errors():
    error("apply_mask", torch.ones(2, 3), torch.ones(3, 2),
          match=r"^apply_mask: mask \[3, 2\] does not fit scores \[2, 3\]$")
    error("apply_attention_mask", torch.ones(2), torch.ones(2, 2),
          match=r"^apply_attention_mask: mask \[2, 2\] does not fit scores \[2\]$")


def test_padding_mask():
    want = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
    out = call("padding_mask", [3, 5, 2, 4], 5)
    assert out.dtype == torch.float16 and np.array_equal(f64(out), want)
    assert np.array_equal(f64(call("padding_mask", torch.tensor([3.0, 5.0, 2.0, 4.0]).half(), 5)), want)
    error("padding_mask", "3", 5, match=r"^padding_mask\(\) lengths must be a list or tensor of lengths, got string$")


def test_combine_masks():
    a = call("padding_mask", [1, 2], 3)
    b = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]).half()
    assert np.array_equal(f64(call("combine_masks", a, b)), [[1, 0, 0], [0, 1, 0]])
    error("combine_masks", torch.ones(2, 3), torch.ones(2, 2),
          match=r"^combine_masks: shapes \[2, 3\] and \[2, 2\] do not broadcast$")


# ---------------------------------------------------------------------------------------------- fused ops


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_fused_ops(dtype):
    a, b, c = rnd(3, 4, seed=28, dtype=dtype), rnd(3, 4, seed=29, dtype=dtype), rnd(4, seed=30, dtype=dtype)
    close(call("fused_add_relu", a, b), np.maximum(f64(a) + f64(b), 0), dtype)
    close(call("fused_mul_relu", a, b), np.maximum(f64(a) * f64(b), 0), dtype)
    close(call("fused_affine", a, b, c), f64(a) * f64(b) + f64(c), dtype)
    w, bias = rnd(4, 2, seed=31, dtype=dtype), rnd(3, 2, seed=32, dtype=dtype)
    close(call("fused_gelu_linear", a, w, bias), _gelu_tanh(f64(a)) @ f64(w) + f64(bias), dtype)


def test_fused_errors():
    error("fused_add_relu", torch.ones(2, 3), torch.ones(4),
          match=r"^fused_add_relu: shapes \[2, 3\] and \[4\] do not broadcast$")
    error("fused_gelu_linear", torch.ones(2, 3), torch.ones(4, 2), torch.ones(2),
          match=r"^fused_gelu_linear needs x \[m, k\] and weight \[k, n\], got \[2, 3\] and \[4, 2\]$")
    error("fused_gelu_linear", torch.ones(2, 3), torch.ones(3, 2), torch.ones(3),
          match=r"^fused_gelu_linear: bias \[3\] does not fit \[2, 2\]$")


# ---------------------------------------------------------------------------------------------- attention


def _attention_ref(q, k, v, w_o, n_heads):
    s, e = q.shape
    c, ek = k.shape
    hd = e // n_heads
    kv = ek // hd
    qh = _rope_ref(q.reshape(s, n_heads, hd), np.arange(s) + c - s)
    out = np.zeros((s, n_heads, hd))
    for h in range(n_heads):
        g = h // (n_heads // kv)
        kh, vh = k.reshape(c, kv, hd)[:, g], v.reshape(c, kv, hd)[:, g]
        for i in range(s):
            scores = kh @ qh[i, h] / math.sqrt(hd)
            scores[np.arange(c) > i + c - s] = -np.inf
            p = np.exp(scores - scores.max())
            out[i, h] = (p / p.sum()) @ vh
    return out.reshape(s, e) @ w_o.T


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("seq,cache", [(3, 3), (1, 4), (2, 5)])
def test_attention_with_cache(dtype, seq, cache):
    q, w_o = rnd(seq, 8, seed=33, dtype=dtype), rnd(6, 8, seed=34, dtype=dtype)
    k, v = rnd(cache, 4, seed=35, dtype=dtype), rnd(cache, 4, seed=36, dtype=dtype)
    want = _attention_ref(f64(q), f64(k), f64(v), f64(w_o), 4)
    close(call("attention_with_cache", q, k, v, w_o, 4), want, dtype)


def test_attention_with_cache_errors():
    q, w = torch.ones(2, 8), torch.ones(8, 8)
    error("attention_with_cache", q, torch.ones(1, 8), torch.ones(1, 8), w, 2,
          match=r"^attention_with_cache: cache_len 1 is shorter than Q's seq_len 2$")
    error("attention_with_cache", q, torch.ones(2, 8), torch.ones(2, 8), w, 3,
          match=r"^attention_with_cache: Q dim 8 does not split into n_heads = 3 heads$")
    error("attention_with_cache", q, torch.ones(2, 6), torch.ones(2, 6), w, 2,
          match=r"^attention_with_cache: K/V dim 6 must be a whole number of heads of size 4 that divides n_heads = 2$")
    error("attention_with_cache", q, torch.ones(2, 8), torch.ones(2, 4), w, 2,
          match=r"^attention_with_cache needs Q \[seq, dim\] and K, V \[cache_len, kv_dim\] of one shape")
    error("attention_with_cache", q, torch.ones(2, 8), torch.ones(2, 8), torch.ones(8, 4), 2,
          match=r"^attention_with_cache: W_o must be \[d_out, 8\], got \[8, 4\]$")
