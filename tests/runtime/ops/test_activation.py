"""Activation ops against numpy float64 references written from the MIL spec's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(7)
X = RNG.uniform(-4, 4, size=(2, 3, 4, 5))
X[0, 0, 0, :3] = [0.0, -0.0, 6.5]  # the boundaries of the piecewise ops
ALPHA_C = np.array([0.1, -0.5, 2.0])
BETA_C = np.array([1.0, 0.5, -1.5])
_erf = np.vectorize(math.erf)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _chan(p, x):
    return p.reshape((1, -1) + (1,) * (x.ndim - 2))


# (op, tensor inputs, params, reference on float64 inputs)
CASES = [
    ("clamped_relu", {"x": X}, {"alpha": 0.3, "beta": 2.5},
     lambda x: np.minimum(np.where(x >= 0, x, 0.3 * x), 2.5)),
    ("elu", {"x": X}, {"alpha": 1.7}, lambda x: np.where(x > 0, x, 1.7 * (np.exp(x) - 1))),
    ("gelu", {"x": X}, {}, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    ("gelu", {"x": X}, {"mode": "EXACT"}, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    ("gelu", {"x": X}, {"mode": "TANH_APPROXIMATION"},
     lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    ("gelu", {"x": X}, {"mode": "SIGMOID_APPROXIMATION"}, lambda x: x * _sigmoid(1.702 * x)),
    ("leaky_relu", {"x": X}, {"alpha": 0.2}, lambda x: np.where(x >= 0, x, 0.2 * x)),
    ("linear_activation", {"x": X}, {"alpha": -1.5, "beta": 0.25}, lambda x: -1.5 * x + 0.25),
    ("prelu", {"x": X, "alpha": ALPHA_C}, {}, lambda x, alpha: np.where(x > 0, x, _chan(alpha, x) * x)),
    ("prelu", {"x": X[:, :, 0], "alpha": np.full(3, 0.25)}, {}, lambda x, alpha: np.where(x > 0, x, 0.25 * x)),
    ("relu", {"x": X}, {}, lambda x: np.maximum(x, 0)),
    ("relu6", {"x": X * 2}, {}, lambda x: np.minimum(np.maximum(x, 0), 6)),
    ("scaled_tanh", {"x": X}, {"alpha": 1.5, "beta": 0.7}, lambda x: 1.5 * np.tanh(0.7 * x)),
    ("sigmoid", {"x": X}, {}, _sigmoid),
    ("sigmoid_hard", {"x": X}, {"alpha": 0.2, "beta": 0.5}, lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    ("silu", {"x": X}, {}, lambda x: x * _sigmoid(x)),
    ("softplus", {"x": X * 5}, {}, lambda x: np.log1p(np.exp(x))),
    ("softplus_parametric", {"x": X, "alpha": ALPHA_C, "beta": BETA_C}, {},
     lambda x, alpha, beta: _chan(alpha, x) * np.log1p(np.exp(_chan(beta, x) * x))),
    ("softmax", {"x": X}, {}, lambda x: _softmax(x, -1)),
    ("softmax", {"x": X}, {"axis": 1}, lambda x: _softmax(x, 1)),
    ("softmax", {"x": X * 30}, {"axis": -3}, lambda x: _softmax(x, -3)),
    ("softsign", {"x": X}, {}, lambda x: x / (1 + np.abs(x))),
    ("thresholded_relu", {"x": X}, {"alpha": 0.5}, lambda x: np.where(x >= 0.5, x, 0)),
]


def _id(case):
    return case[0] + ("-" + "-".join(f"{k}={v}" for k, v in case[2].items()) if case[2] else "")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_activation(case, device, dtype):
    name, inputs, params, ref = case
    tdtype = getattr(torch, dtype)
    tensors = {k: torch.tensor(v, dtype=tdtype, device=device) for k, v in inputs.items()}
    # The reference sees exactly the values the op sees (after rounding to dtype).
    rounded = {k: t.double().cpu().numpy() for k, t in tensors.items()}
    out = registry.get(name).fn(**tensors, **params)
    assert out.dtype == tdtype and out.device.type == device
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), ref(**rounded), atol=atol, rtol=rtol)


def test_gelu_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown gelu mode 'FAST'"):
        registry.get("gelu").fn(torch.zeros(2), mode="FAST")
