"""scaled_dot_product_attention against a numpy float64 softmax(QK^T/sqrt(E) + mask) V."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(9)


def _attention_ref(q, k, v, mask):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True) @ v


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batches", [(3,), (2, 3)])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_scaled_dot_product_attention(device, dtype, batches, mask_kind):
    L, S, E, EV = 7, 5, 16, 8
    q, k, v = (RNG.uniform(-1, 1, (*batches, n, e)) for n, e in ((L, E), (S, E), (S, EV)))
    mask = None
    if mask_kind == "bool":
        mask = RNG.uniform(size=(L, S)) > 0.3
        mask[:, 0] = True  # every query keeps at least one key
    elif mask_kind == "float":
        mask = RNG.uniform(-2, 0, size=(1, S))
    tdtype = getattr(torch, dtype)
    t = lambda a: torch.tensor(a, dtype=tdtype, device=device)  # noqa: E731
    args = [t(q), t(k), t(v)]
    if mask is not None:
        args.append(torch.tensor(mask, device=device) if mask.dtype == bool else t(mask))
    out = registry.get("scaled_dot_product_attention").fn(*args)
    assert out.dtype == tdtype
    rounded = [a.double().cpu().numpy() for a in args]
    expected = _attention_ref(*rounded[:3], rounded[3] if mask is not None and mask.dtype != bool else mask)
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol, rtol=rtol)
