"""linear / matmul / einsum against numpy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(13)


def _r(*shape):
    return RNG.standard_normal(shape)


# (name, op, tensor inputs, params, reference)
CASES = [
    ("linear-1d", "linear", {"x": _r(5), "weight": _r(3, 5), "bias": _r(3)}, {},
     lambda x, weight, bias: x @ weight.T + bias),
    ("linear-3d-nobias", "linear", {"x": _r(2, 4, 5), "weight": _r(6, 5)}, {}, lambda x, weight: x @ weight.T),
    ("matmul-2d", "matmul", {"x": _r(4, 3), "y": _r(3, 2)}, {}, lambda x, y: np.matmul(x, y)),
    ("matmul-bcast", "matmul", {"x": _r(10, 4, 3), "y": _r(5, 1, 3, 2)}, {}, lambda x, y: np.matmul(x, y)),
    ("matmul-vec-mat", "matmul", {"x": _r(4), "y": _r(2, 4, 3)}, {}, lambda x, y: np.matmul(x, y)),
    ("matmul-mat-vec", "matmul", {"x": _r(2, 3, 4), "y": _r(4)}, {}, lambda x, y: np.matmul(x, y)),
    ("matmul-vec-vec", "matmul", {"x": _r(4), "y": _r(4)}, {}, lambda x, y: np.matmul(x, y)),
    ("matmul-tx", "matmul", {"x": _r(2, 3, 4), "y": _r(3, 5)}, {"transpose_x": True},
     lambda x, y: np.swapaxes(x, -1, -2) @ y),
    ("matmul-txy", "matmul", {"x": _r(3, 4), "y": _r(2, 5, 3)}, {"transpose_x": True, "transpose_y": True},
     lambda x, y: x.T @ np.swapaxes(y, -1, -2)),
    ("matmul-ty-vec", "matmul", {"x": _r(4), "y": _r(3, 4)}, {"transpose_y": True}, lambda x, y: x @ y.T),
    ("einsum-rank4", "einsum", {"values": (_r(2, 3, 4, 5), _r(2, 5, 4, 6))}, {"equation": "nchw,nwhu->nchu"},
     lambda values: np.einsum("nchw,nwhu->nchu", *values)),
    ("einsum-rank4-bcast", "einsum", {"values": (_r(1, 3, 4, 5), _r(2, 5, 1, 6))}, {"equation": "abcd,adce->abce"},
     lambda values: np.einsum("abcd,adce->abce", *(np.broadcast_to(v, s) for v, s in
                                                    zip(values, [(2, 3, 4, 5), (2, 5, 4, 6)])))),
    ("einsum-rank3", "einsum", {"values": (_r(3, 4, 5), _r(5, 4, 2))}, {"equation": "chw,whr->chr"},
     lambda values: np.einsum("chw,whr->chr", *values)),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_linear_family(case, device, dtype):
    _, name, inputs, params, ref = case
    tdtype = getattr(torch, dtype)

    def conv(v):
        if isinstance(v, tuple):
            return tuple(conv(e) for e in v)
        return torch.tensor(v, dtype=tdtype, device=device)

    def back(v):
        return tuple(back(e) for e in v) if isinstance(v, tuple) else v.double().cpu().numpy()

    tensors = {k: conv(v) for k, v in inputs.items()}
    out = registry.get(name).fn(**tensors, **params)
    expected = ref(**{k: back(v) for k, v in tensors.items()})
    assert out.dtype == tdtype and tuple(out.shape) == np.shape(expected)
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 10, rtol=rtol)


def test_int32(device):
    x = RNG.integers(-50, 50, size=(2, 3, 4)).astype(np.int32)
    y = RNG.integers(-50, 50, size=(4, 5)).astype(np.int32)
    b = RNG.integers(-50, 50, size=(5,)).astype(np.int32)
    mm = registry.get("matmul").fn(torch.tensor(x, device=device), torch.tensor(y, device=device))
    np.testing.assert_array_equal(mm.cpu().numpy(), x.astype(np.int64) @ y)
    lin = registry.get("linear").fn(torch.tensor(x, device=device), torch.tensor(y.T.copy(), device=device),
                                    torch.tensor(b, device=device))
    np.testing.assert_array_equal(lin.cpu().numpy(), x.astype(np.int64) @ y + b)


def test_mixed_dtypes(device):
    """iOS17: a const operand (or linear's weight) may be another float dtype than the activations."""
    x = torch.tensor(_r(3, 4), dtype=torch.float16, device=device)
    w = torch.tensor(_r(5, 4), dtype=torch.float32, device=device)
    xn, wn = x.double().cpu().numpy(), w.double().cpu().numpy()
    lin = registry.get("linear").fn(x, w)
    assert lin.dtype == torch.float16
    np.testing.assert_allclose(lin.double().cpu().numpy(), xn @ wn.T, atol=2e-2, rtol=2e-2)
    mm = registry.get("matmul").fn(x, w, transpose_y=True)
    np.testing.assert_allclose(mm.double().cpu().numpy(), xn @ wn.T, atol=2e-2, rtol=2e-2)
