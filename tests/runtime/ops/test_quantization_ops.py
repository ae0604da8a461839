"""quantize/dequantize against numpy (round half to even, clip to the integer range, per-axis params)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorlogic.runtime import registry

RNG = np.random.default_rng(13)
X = RNG.uniform(-30, 30, size=(2, 3, 4))


def _params(axis, out_dtype):
    n = 1 if axis is None else X.shape[axis]
    scale = RNG.uniform(0.05, 0.5, size=() if axis is None else (n,))
    low, high = (-20, 20) if out_dtype == "int8" else (0, 255)
    zp = RNG.integers(low, high, size=scale.shape).astype(out_dtype)
    return scale, zp


def _expand(p, axis):
    return p if axis is None else p.reshape([-1 if d == axis % X.ndim else 1 for d in range(X.ndim)])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("out_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("axis", [None, 0, -1, 1])
@pytest.mark.parametrize("with_zero_point", [True, False])
def test_quantize_dequantize(device, dtype, out_dtype, axis, with_zero_point):
    scale, zp = _params(axis, out_dtype)
    tdtype = getattr(torch, dtype)
    x = torch.tensor(X, dtype=tdtype, device=device)
    s = torch.tensor(scale, dtype=tdtype, device=device)
    z = torch.tensor(zp, device=device) if with_zero_point else None
    kw = {} if axis is None else {"axis": axis}
    q = registry.get("quantize").fn(x, s, z, output_dtype=out_dtype, **kw)
    s64 = s.double().cpu().numpy()
    ref = np.round(x.double().cpu().numpy() / _expand(s64, axis))
    if with_zero_point:
        ref = ref + _expand(zp.astype(np.float64), axis)
    info = np.iinfo(out_dtype)
    ref = np.clip(ref, info.min, info.max).astype(out_dtype)
    assert q.dtype == getattr(torch, out_dtype)
    # fp16 inputs may sit on a rounding boundary after the division: allow one step there.
    assert np.abs(q.cpu().numpy().astype(int) - ref.astype(int)).max() <= (0 if dtype == "float32" else 1)
    d = registry.get("dequantize").fn(q, s, z, **kw)
    expected = q.cpu().numpy().astype(np.float64)
    if with_zero_point:
        expected = expected - _expand(zp.astype(np.float64), axis)
    expected = expected * _expand(s64, axis)
    assert d.dtype == tdtype
    np.testing.assert_allclose(d.double().cpu().numpy(), expected, rtol=1e-3 if dtype == "float16" else 1e-6)


def test_round_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0])
    q = registry.get("quantize").fn(x, torch.tensor(1.0), output_dtype="int8")
    assert q.tolist() == np.clip(np.round(x.numpy()), -128, 127).astype(np.int8).tolist()


def test_bad_output_dtype():
    with pytest.raises(ValueError, match="quantize output_dtype must be int8 or uint8, got 'int16'"):
        registry.get("quantize").fn(torch.zeros(2), torch.tensor(1.0), output_dtype="int16")
