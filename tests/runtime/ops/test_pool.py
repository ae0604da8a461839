"""Pooling against a direct numpy float64 loop over windows, and PyTorch's ceil_mode."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(9)


def _pads(pad_type, pad, sizes, kernel, strides):
    n = len(sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    out = []
    for d, k, s in zip(sizes, kernel, strides):
        total = max(0, s * math.ceil(d / s) - d + k - s)
        out.append((total - total // 2, total // 2) if pad_type == "same_lower" else (total // 2, total - total // 2))
    return out


def np_pool(x, kind, kernel, strides, pads, ceil_mode=False, exclude_pad=False):
    """Each window over the input padded by ``pads``; windows may run past the padded end in ceil mode."""
    sizes = x.shape[2:]
    outs = []
    for d, k, s, (a, b) in zip(sizes, kernel, strides, pads):
        total = d + a + b
        if ceil_mode:
            o = math.floor((total - k + s - 1) / s) + 1
            if (o - 1) * s >= d + a and a + b > 0:
                o -= 1
        else:
            o = (total - k) // s + 1
        outs.append(o)
    y = np.zeros(x.shape[:2] + tuple(outs))
    for idx in itertools.product(*[range(o) for o in outs]):
        lo = [i * s - a for i, s, (a, _) in zip(idx, strides, pads)]
        hi_pad = [min(lo_ + k, d + b) for lo_, k, d, (_, b) in zip(lo, kernel, sizes, pads)]  # inside padded input
        real = tuple(slice(max(lo_, 0), min(h, d)) for lo_, h, d in zip(lo, hi_pad, sizes))
        win = x[(slice(None), slice(None)) + real].reshape(x.shape[0], x.shape[1], -1)
        n_real = win.shape[-1]
        n_padded = math.prod(h - lo_ for lo_, h in zip(lo, hi_pad))
        if kind == "max":
            v = win.max(-1)
            if n_padded > n_real:
                v = np.maximum(v, -np.inf)  # padding never wins
        elif kind == "avg":
            v = win.sum(-1) / (n_real if exclude_pad else n_padded)
        else:
            v = np.sqrt((win**2).sum(-1))
        y[(slice(None), slice(None)) + idx] = v
    return y


# (name, kind, x shape, kernel, strides, pad_type, pad, ceil_mode, exclude_padding)
CASES = [
    ("avg-1d-valid", "avg", (2, 3, 9), [3], [2], "valid", None, False, False),
    ("avg-2d-custom-incl", "avg", (1, 2, 7, 6), [3, 2], [2, 1], "custom", [1, 2, 0, 1], False, False),
    ("avg-2d-custom-excl", "avg", (1, 2, 7, 6), [3, 2], [2, 1], "custom", [1, 2, 0, 1], False, True),
    ("avg-2d-same-excl", "avg", (1, 3, 5, 7), [3, 3], [2, 2], "same", None, False, True),
    ("avg-2d-same_lower", "avg", (1, 1, 4, 5), [2, 2], [1, 1], "same_lower", None, False, False),
    ("avg-2d-ceil", "avg", (1, 2, 7, 8), [3, 3], [2, 3], "custom", [1, 1, 1, 1], True, False),
    ("avg-2d-ceil-excl", "avg", (1, 2, 7, 8), [3, 3], [2, 3], "valid", None, True, True),
    ("avg-3d-same", "avg", (1, 2, 4, 5, 3), [2, 3, 2], [2, 1, 2], "same", None, False, False),
    ("max-1d-same", "max", (2, 2, 7), [4], [3], "same", None, False, False),
    ("max-2d-symmetric", "max", (1, 2, 6, 7), [3, 3], [2, 2], "custom", [1, 1, 1, 1], False, False),
    ("avg-2d-symmetric-excl", "avg", (1, 2, 6, 7), [3, 3], [2, 2], "custom", [1, 1, 1, 1], False, True),
    ("max-2d-custom", "max", (1, 3, 6, 6), [3, 3], [2, 2], "custom", [1, 0, 2, 1], False, False),
    ("max-2d-ceil", "max", (1, 2, 7, 8), [2, 3], [2, 2], "valid", None, True, False),
    ("max-3d-same_lower", "max", (1, 1, 3, 4, 5), [2, 2, 3], [1, 2, 2], "same_lower", None, False, False),
    ("l2-1d-same_lower", "l2", (1, 2, 6), [2], [1], "same_lower", None, False, False),
    ("l2-2d-custom", "l2", (1, 2, 5, 6), [2, 3], [2, 2], "custom", [1, 0, 1, 1], False, False),
]

_OPS = {"avg": "avg_pool", "max": "max_pool", "l2": "l2_pool"}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_pool(case, device, dtype):
    _, kind, xs, kernel, strides, pad_type, pad, ceil_mode, exclude = case
    tdtype = getattr(torch, dtype)
    x = torch.tensor(RNG.standard_normal(xs), dtype=tdtype, device=device)
    kwargs = {"kernel_sizes": kernel, "strides": strides, "pad_type": pad_type, "ceil_mode": ceil_mode}
    if pad is not None:
        kwargs["pad"] = pad
    if kind == "avg":
        kwargs["exclude_padding_from_average"] = exclude
    out = registry.get(_OPS[kind]).fn(x, **kwargs)
    pads = _pads(pad_type, pad, xs[2:], kernel, strides)
    expected = np_pool(x.double().cpu().numpy(), kind, kernel, strides, pads, ceil_mode, exclude)
    assert out.dtype == tdtype and tuple(out.shape) == expected.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 5, rtol=rtol)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_ceil_mode_matches_torch(count_include_pad, device):
    x = torch.tensor(RNG.standard_normal((1, 2, 9, 10)), dtype=torch.float64)
    avg = torch.nn.functional.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=count_include_pad)
    mx = torch.nn.functional.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
    kwargs = {"kernel_sizes": [3, 3], "strides": [2, 2], "pad_type": "custom", "pad": [1, 1, 1, 1], "ceil_mode": True}
    xd = x.float().to(device)
    out_avg = registry.get("avg_pool").fn(xd, exclude_padding_from_average=not count_include_pad, **kwargs)
    out_max = registry.get("max_pool").fn(xd, **kwargs)
    np.testing.assert_allclose(out_avg.double().cpu().numpy(), avg.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out_max.double().cpu().numpy(), mx.numpy(), atol=1e-6)


def test_pool_errors():
    with pytest.raises(ValueError, match="do not fit an input of rank 4"):
        registry.get("max_pool").fn(torch.zeros(1, 1, 4, 4), kernel_sizes=[2], pad_type="valid")
    with pytest.raises(ValueError, match="leaves no output"):
        registry.get("avg_pool").fn(torch.zeros(1, 1, 2, 2), kernel_sizes=[3, 3], pad_type="valid")
