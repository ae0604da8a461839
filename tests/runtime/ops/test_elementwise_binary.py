"""Elementwise binary ops against numpy, incl. broadcasting and MIL's integer semantics."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(5)
A = RNG.uniform(-4, 4, size=(2, 3, 4))
B = RNG.uniform(-4, 4, size=(3, 1))  # broadcasts against A
B_NZ = np.where(np.abs(B) < 0.5, 0.75, B)
POS = RNG.uniform(0.5, 2.0, size=(2, 3, 4))
EXP = RNG.uniform(-2, 2, size=(4,))

# (op, x, y, numpy reference)
FLOAT_CASES = [
    ("add", A, B, np.add),
    ("sub", A, B, np.subtract),
    ("mul", A, B, np.multiply),
    ("real_div", A, B_NZ, np.true_divide),
    ("floor_div", A, B_NZ, np.floor_divide),
    ("mod", A, B_NZ, np.mod),
    ("pow", POS, EXP, np.power),
    ("maximum", A, B, np.maximum),
    ("minimum", A, B, np.minimum),
    ("add", A, np.array(1.5), np.add),  # rank-0 operand
]

COMPARE_CASES = [
    ("equal", operator.eq),
    ("not_equal", operator.ne),
    ("greater", operator.gt),
    ("greater_equal", operator.ge),
    ("less", operator.lt),
    ("less_equal", operator.le),
]


def _fn(name):
    return registry.get(name).fn


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", FLOAT_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FLOAT_CASES)])
def test_binary_float(case, device, dtype):
    name, x, y, ref = case
    tdtype = getattr(torch, dtype)
    xt = torch.tensor(x, dtype=tdtype, device=device)
    yt = torch.tensor(y, dtype=tdtype, device=device)
    out = _fn(name)(x=xt, y=yt)
    expected = ref(xt.double().cpu().numpy(), yt.double().cpu().numpy())
    assert out.dtype == tdtype and tuple(out.shape) == expected.shape
    atol, rtol = TOLERANCES[dtype]
    if name in ("floor_div", "mod") and dtype == "float16":
        # A quotient within rounding of an integer may floor either way in half precision.
        close = np.abs(np.round(xt.double().cpu().numpy() / yt.double().cpu().numpy()) -
                       xt.double().cpu().numpy() / yt.double().cpu().numpy()) < 1e-2
        expected = np.where(close, out.double().cpu().numpy(), expected)
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
def test_compare(case, device, dtype):
    name, ref = case
    tdtype = getattr(torch, dtype)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]])
    y = np.array([2.0, 2.0, 1.0])
    out = _fn(name)(x=torch.tensor(x, dtype=tdtype, device=device), y=torch.tensor(y, dtype=tdtype, device=device))
    assert out.dtype == torch.bool
    np.testing.assert_array_equal(out.cpu().numpy(), ref(x, y))


XI = np.array([7, -7, 7, -7, 0, 9, -9, 6], dtype=np.int32)
YI = np.array([2, 2, -2, -2, 3, 4, 4, -4], dtype=np.int32)

# Integer semantics as the spec's Python operators define them.
INT_CASES = [
    ("add", lambda x, y: x + y),
    ("sub", lambda x, y: x - y),
    ("mul", lambda x, y: x * y),
    ("floor_div", lambda x, y: x // y),  # toward negative infinity
    ("mod", lambda x, y: x % y),  # sign of the divisor
    ("real_div", lambda x, y: np.trunc(x / y)),  # ML Program int32 result
    ("maximum", np.maximum),
    ("minimum", np.minimum),
    ("pow", lambda x, y: np.power(x, np.abs(y))),
]


@pytest.mark.parametrize("case", INT_CASES, ids=[c[0] for c in INT_CASES])
def test_binary_int32(case, device):
    name, ref = case
    y = np.abs(YI) if name == "pow" else YI
    out = _fn(name)(x=torch.tensor(XI, device=device), y=torch.tensor(y, device=device))
    assert not out.is_floating_point()
    np.testing.assert_array_equal(out.cpu().numpy(), ref(XI, YI).astype(np.int64))


@pytest.mark.parametrize("name, ref", [("logical_and", np.logical_and), ("logical_or", np.logical_or),
                                       ("logical_xor", np.logical_xor)])
def test_logical(name, ref, device):
    x = np.array([[True, False], [True, True]])
    y = np.array([True, False])
    out = _fn(name)(x=torch.tensor(x, device=device), y=torch.tensor(y, device=device))
    np.testing.assert_array_equal(out.cpu().numpy(), ref(x, y))
