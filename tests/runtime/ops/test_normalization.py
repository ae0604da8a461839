"""Normalization ops against the spec's numpy formulas in float64 (and torch float64 for LRN's window)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(17)


def _chan(p, ndim):
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def np_batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    y = (x - _chan(mean, x.ndim)) / np.sqrt(_chan(variance, x.ndim) + epsilon)
    if gamma is not None:
        y = y * _chan(gamma, x.ndim)
    if beta is not None:
        y = y + _chan(beta, x.ndim)
    return y


def np_instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)
    if gamma is not None:
        y = y * _chan(gamma, x.ndim)
    if beta is not None:
        y = y + _chan(beta, x.ndim)
    return y


def np_layer_norm(x, axes, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(sorted(a % x.ndim for a in axes))
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    num = x - x.mean(axis=axes, keepdims=True)
    y = num / np.sqrt((num**2).mean(axis=axes, keepdims=True) + epsilon)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def np_l2_norm(x, epsilon=1e-6):
    flat = x.reshape(int(np.prod(x.shape[:-3])), -1)
    return (flat / np.sqrt((flat**2).sum(axis=1, keepdims=True) + epsilon)).reshape(x.shape)


C = 3
MEAN, VAR = RNG.normal(size=C), RNG.uniform(0.5, 2, size=C)
GAMMA, BETA = RNG.normal(size=C), RNG.normal(size=C)

# (name, op, x, tensor inputs, params, reference)
CASES = [
    ("bn-4d", "batch_norm", (2, C, 4, 5), {"mean": MEAN, "variance": VAR, "gamma": GAMMA, "beta": BETA},
     {"epsilon": 1e-3}, lambda x, **k: np_batch_norm(x, **k, epsilon=1e-3)),
    ("bn-3d-plain", "batch_norm", (2, C, 6), {"mean": MEAN, "variance": VAR}, {},
     lambda x, **k: np_batch_norm(x, **k)),
    ("bn-5d", "batch_norm", (1, C, 2, 3, 4), {"mean": MEAN, "variance": VAR, "beta": BETA}, {},
     lambda x, **k: np_batch_norm(x, **k)),
    ("in-4d", "instance_norm", (2, C, 4, 5), {"gamma": GAMMA, "beta": BETA}, {"epsilon": 1e-2},
     lambda x, **k: np_instance_norm(x, **k, epsilon=1e-2)),
    ("in-3d-plain", "instance_norm", (2, C, 7), {}, {}, lambda x, **k: np_instance_norm(x)),
    ("ln-last", "layer_norm", (2, 3, 8), {"gamma": RNG.normal(size=8), "beta": RNG.normal(size=8)},
     {"axes": [-1], "epsilon": 1e-4}, lambda x, **k: np_layer_norm(x, [-1], **k, epsilon=1e-4)),
    ("ln-trailing2", "layer_norm", (2, 3, 4, 5), {"gamma": RNG.normal(size=(4, 5))}, {"axes": [3, 2]},
     lambda x, **k: np_layer_norm(x, [2, 3], **k)),
    ("ln-inner", "layer_norm", (2, 3, 4, 5), {"gamma": RNG.normal(size=(3, 5)), "beta": RNG.normal(size=(3, 5))},
     {"axes": [1, -1]}, lambda x, **k: np_layer_norm(x, [1, 3], **k)),
    ("ln-all", "layer_norm", (3, 4), {}, {}, lambda x, **k: np_layer_norm(x, [0, 1])),
    ("l2-3d", "l2_norm", (3, 4, 5), {}, {}, lambda x, **k: np_l2_norm(x)),
    ("l2-5d", "l2_norm", (2, 2, 3, 2, 4), {}, {"epsilon": 1e-2}, lambda x, **k: np_l2_norm(x, 1e-2)),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_normalization(case, device, dtype):
    _, name, xs, tensors, params, ref = case
    tdtype = getattr(torch, dtype)
    x = torch.tensor(RNG.normal(size=xs) * 3 + 1, dtype=tdtype, device=device)
    targs = {k: torch.tensor(v, dtype=tdtype, device=device) for k, v in tensors.items()}
    out = registry.get(name).fn(x, **targs, **params)
    expected = ref(x.double().cpu().numpy(), **{k: t.double().cpu().numpy() for k, t in targs.items()})
    assert out.dtype == tdtype and out.shape == x.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 5, rtol=rtol)


def test_params_of_another_dtype(device):
    """iOS17: fp16 x with fp32 params (and the reverse)."""
    x = torch.tensor(RNG.normal(size=(1, C, 4)), dtype=torch.float16, device=device)
    out = registry.get("batch_norm").fn(x, torch.tensor(MEAN, device=device, dtype=torch.float32),
                                        torch.tensor(VAR, device=device, dtype=torch.float32))
    assert out.dtype == torch.float16
    np.testing.assert_allclose(out.double().cpu().numpy(), np_batch_norm(x.double().cpu().numpy(), MEAN, VAR),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape, size", [((2, 6, 3, 4), 3), ((5, 7, 2), 4), ((1, 7, 2, 2), 1), ((2, 2, 5, 3, 2), 2)])
def test_local_response_norm(shape, size, device, dtype):
    alpha, beta, k = 1e-2, 0.6, 1.5

    def np_lrn(x):
        # The spec's formula across axis -3 (Core ML's channel axis), PyTorch's window:
        # size//2 channels before, (size-1)//2 after.
        c = x.shape[-3]
        flat = x.reshape((-1, c) + x.shape[-2:])
        sq = np.pad(flat**2, [(0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)])
        window = sum(sq[:, i:i + c] for i in range(size))
        return (flat / (k + alpha / size * window) ** beta).reshape(x.shape)

    x = RNG.normal(size=shape) * 2
    if len(shape) == 4:  # axis -3 is axis 1: PyTorch agrees
        ref_torch = torch.nn.functional.local_response_norm(torch.tensor(x), size, alpha, beta, k).numpy()
        np.testing.assert_allclose(np_lrn(x), ref_torch, rtol=1e-12)
    xt = torch.tensor(x, dtype=getattr(torch, dtype), device=device)
    out = registry.get("local_response_norm").fn(xt, size=size, alpha=alpha, beta=beta, k=k)
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), np_lrn(xt.double().cpu().numpy()), atol=atol, rtol=rtol)


def test_l2_norm_rank_error():
    with pytest.raises(ValueError, match="rank >= 3"):
        registry.get("l2_norm").fn(torch.zeros(2, 3))
