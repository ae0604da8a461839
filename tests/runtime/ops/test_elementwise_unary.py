"""Elementwise unary ops and cast against numpy float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry
from tensorlogic.runtime.dtypes import torch_dtype

RNG = np.random.default_rng(11)
X = RNG.uniform(-3, 3, size=(3, 4, 5))
UNIT = RNG.uniform(-0.95, 0.95, size=(4, 6))
POS = RNG.uniform(0.05, 5, size=(4, 6))
HALVES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -0.51, 3.7])

# (op, x, params, reference on float64 x)
CASES = [
    ("abs", X, {}, np.abs),
    ("acos", UNIT, {}, np.arccos),
    ("asin", UNIT, {}, np.arcsin),
    ("atan", X, {}, np.arctan),
    ("atanh", UNIT, {}, np.arctanh),
    ("ceil", X, {}, np.ceil),
    ("clip", X, {"alpha": -1.0, "beta": 1.5}, lambda x: np.minimum(np.maximum(x, -1.0), 1.5)),
    ("cos", X, {}, np.cos),
    ("cosh", X, {}, np.cosh),
    ("erf", X, {}, np.vectorize(math.erf)),
    ("exp", X, {}, np.exp),
    ("exp2", X, {}, np.exp2),
    ("floor", X, {}, np.floor),
    ("inverse", POS, {}, lambda x: 1 / (x + 1e-4)),
    ("inverse", POS, {"epsilon": 0.5}, lambda x: 1 / (x + 0.5)),
    ("log", POS, {}, np.log),
    ("log", POS, {"epsilon": 1.0}, lambda x: np.log(x + 1.0)),
    ("round", HALVES, {}, np.round),
    ("rsqrt", POS, {}, lambda x: 1 / np.sqrt(x + 1e-12)),
    ("rsqrt", POS, {"epsilon": 0.1}, lambda x: 1 / np.sqrt(x + 0.1)),
    ("sign", np.concatenate([X.ravel(), [0.0]]), {}, np.sign),
    ("sin", X, {}, np.sin),
    ("sinh", X, {}, np.sinh),
    ("sqrt", POS, {}, np.sqrt),
    ("square", X, {}, np.square),
    ("tan", UNIT, {}, np.tan),
    ("tanh", X, {}, np.tanh),
    ("threshold", X, {"alpha": 0.75}, lambda x: np.maximum(x, 0.75)),
]


def _id(case):
    return case[0] + ("-" + "-".join(f"{k}={v}" for k, v in case[2].items()) if case[2] else "")


def _run(name, **kwargs):
    return registry.get(name).fn(**kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_unary(case, device, dtype):
    name, x, params, ref = case
    tdtype = getattr(torch, dtype)
    xt = torch.tensor(x, dtype=tdtype, device=device)
    out = _run(name, x=xt, **params)
    assert out.dtype == tdtype and out.shape == xt.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), ref(xt.double().cpu().numpy()), atol=atol, rtol=rtol)


INT = np.array([[-7, -1, 0, 3], [5, -128, 100, 2]], dtype=np.int32)

# Ops whose type domain includes int32: (op, params, numpy reference).
INT_CASES = [
    ("abs", {}, np.abs),
    ("sign", {}, np.sign),
    ("square", {}, np.square),
    ("threshold", {"alpha": 2.0}, lambda x: np.maximum(x, 2)),
    ("exp2", {}, lambda x: np.exp2(x.astype(np.float64))),
]


@pytest.mark.parametrize("case", INT_CASES, ids=[c[0] for c in INT_CASES])
def test_unary_int32(case, device):
    name, params, ref = case
    out = _run(name, x=torch.tensor(INT, device=device), **params)
    np.testing.assert_allclose(out.double().cpu().numpy(), ref(INT), rtol=1e-6)


def test_logical_not(device):
    x = torch.tensor([True, False, True], device=device)
    assert _run("logical_not", x=x).cpu().tolist() == [False, True, False]


# (source numpy array, MIL target dtype, torch storage dtype, numpy reference dtype)
CAST_CASES = [
    (np.array([-1.2, 2.0, -3.6, 4.5, -5.0, 6.7], np.float32), "int32", torch.int32, np.int32),  # truncates
    (np.array([-1.2, 0.0, 3.5], np.float32), "bool", torch.bool, np.bool_),
    (np.array([0, 7, -3], np.int32), "bool", torch.bool, np.bool_),
    (np.array([1, -2, 300], np.int32), "fp16", torch.float16, np.float16),
    (np.array([1.0, 2.0, 3.0], np.float16), "fp32", torch.float32, np.float32),
    (np.array([1, 2, 250], np.int32), "uint8", torch.uint8, np.uint8),
    (np.array([1, -2, 127], np.int32), "int8", torch.int8, np.int8),
    (np.array([1, -2, 30000], np.int32), "int16", torch.int16, np.int16),
    (np.array([1, 2, 65535], np.int32), "uint16", torch.int32, np.uint16),
    (np.array([True, False]), "int32", torch.int32, np.int32),
    (np.array([True, False]), "fp32", torch.float32, np.float32),
    (np.array([65504.0, 1e-3, 0.1, 1.0001], np.float32), "fp16", torch.float16, np.float16),
]


@pytest.mark.parametrize("case", CAST_CASES, ids=[f"{c[0].dtype}-to-{c[1]}" for c in CAST_CASES])
def test_cast(case, device):
    src, mil_dtype, target, np_target = case
    out = _run("cast", x=torch.tensor(src, device=device), dtype=torch_dtype(mil_dtype))
    assert out.dtype == target
    np.testing.assert_array_equal(out.cpu().numpy(), src.astype(np_target))
