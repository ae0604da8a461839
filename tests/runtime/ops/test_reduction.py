"""Reductions against numpy float64 (axes None / negative / empty, keep_dims, int32 inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(21)
X = RNG.uniform(-2, 2, size=(2, 3, 4, 5))
POS = RNG.uniform(0.1, 2, size=(2, 3, 4, 5))


def _lse(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


REFS = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _lse,
}

AXES = [None, [1], [-1, 0], [3, 1, 2], []]


def _cases():
    for name in REFS:
        for axes in AXES:
            for keep in (False, True):
                yield pytest.param(name, axes, keep, id=f"{name}-{axes}-{'keep' if keep else 'drop'}")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name, axes, keep", list(_cases()))
def test_reduce(name, axes, keep, device, dtype):
    tdtype = getattr(torch, dtype)
    src = POS if name in ("reduce_log_sum", "reduce_prod") else X
    if name == "reduce_prod":
        src = src[:, :, :2, :2]  # keep products in fp16 range
    x = torch.tensor(src, dtype=tdtype, device=device)
    kwargs = {"keep_dims": keep}
    if axes is not None:
        kwargs["axes"] = axes
    out = registry.get(name).fn(x, **kwargs)
    xn = x.double().cpu().numpy()
    axis = None if axes is None else tuple(a % xn.ndim for a in axes)
    expected = REFS[name](xn, axis=axis, keepdims=keep)
    assert tuple(out.shape) == np.shape(expected)
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 10, rtol=rtol)


def test_reduce_int32(device):
    x = torch.tensor([[1, -4, 7], [2, 5, -3]], dtype=torch.int32, device=device)
    xn = x.cpu().numpy()
    assert registry.get("reduce_sum").fn(x, axes=[1]).cpu().tolist() == np.sum(xn, axis=1).tolist()
    assert registry.get("reduce_max").fn(x, axes=[0]).cpu().tolist() == np.max(xn, axis=0).tolist()
    assert registry.get("reduce_prod").fn(x, axes=[1]).cpu().tolist() == np.prod(xn, axis=1).tolist()
    mean = registry.get("reduce_mean").fn(x, axes=[1], keep_dims=True)
    np.testing.assert_allclose(mean.cpu().numpy(), np.mean(xn, axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32"])
@pytest.mark.parametrize("axis, keep", [(1, False), (-1, True), (0, True), (-3, False)])
def test_arg_reductions(axis, keep, device, dtype):
    x = RNG.integers(-5, 5, size=(3, 4, 5))  # many ties: the first index must win, as numpy's
    xt = torch.tensor(x, dtype=getattr(torch, dtype), device=device)
    for name, ref in (("reduce_argmax", np.argmax), ("reduce_argmin", np.argmin)):
        out = registry.get(name).fn(xt, axis=axis, keep_dims=keep)
        expected = ref(x, axis=axis)
        if keep:
            expected = np.expand_dims(expected, axis)
        np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_argmax_output_dtype_param_accepted():
    out = registry.get("reduce_argmax").fn(torch.tensor([[1.0, 3.0, 2.0]]), axis=1, output_dtype="uint16")
    assert out.tolist() == [1]
