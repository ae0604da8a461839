"""Random ops: shapes, seeding, and distribution moments (as coremltools' own tests check them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorlogic.runtime import registry

N = 200_000  # moments within ~5 standard errors


def _fn(name):
    return registry.get(name).fn


def _shape(dims, device):
    return torch.tensor(dims, dtype=torch.int32, device=device)


def test_bernoulli(device):
    out = _fn("random_bernoulli")(_shape([N], device), prob=0.3, seed=5)
    v = out.cpu().numpy()
    assert set(np.unique(v)) <= {0.0, 1.0}
    assert abs(v.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / N)
    for p in (0.0, 1.0):
        edge = _fn("random_bernoulli")(_shape([2, 1, 3], device), prob=p)
        assert edge.shape == (2, 1, 3) and bool((edge == p).all())


def test_normal(device):
    v = _fn("random_normal")(_shape([400, 500], device), mean=1.5, stddev=2.0, seed=1).double().cpu().numpy()
    assert v.shape == (400, 500)
    assert abs(v.mean() - 1.5) < 5 * 2.0 / np.sqrt(N)
    assert abs(v.std() - 2.0) < 0.02
    skew = ((v - v.mean()) ** 3).mean() / v.std() ** 3
    assert abs(skew) < 0.05


def test_uniform(device):
    v = _fn("random_uniform")(_shape([N], device), low=-2.0, high=3.0, seed=2).double().cpu().numpy()
    assert v.min() >= -2.0 and v.max() < 3.0
    assert abs(v.mean() - 0.5) < 5 * (5 / np.sqrt(12)) / np.sqrt(N)
    assert abs(v.var() - 25 / 12) < 0.05
    same = _fn("random_uniform")(_shape([3], device), low=4.0, high=4.0)
    assert bool((same == 4.0).all())


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_categorical(mode, device):
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]])
    x = np.log(probs + 1e-30) if mode == "logits" else probs
    out = _fn("random_categorical")(torch.tensor(x, dtype=torch.float32, device=device), mode=mode,
                                    size=50_000, seed=3)
    assert out.shape == (2, 50_000) and out.dtype == torch.float32
    counts = np.stack([np.bincount(r.astype(int), minlength=3) for r in out.cpu().numpy()]) / 50_000
    np.testing.assert_allclose(counts, probs, atol=0.015)


def test_categorical_default_size_and_single_class(device):
    out = _fn("random_categorical")(torch.tensor([1.0], device=device), seed=1)
    assert out.shape == (1,) and out.item() == 0.0


@pytest.mark.parametrize("name, params", [("random_normal", {}), ("random_uniform", {}),
                                          ("random_bernoulli", {"prob": 0.5})])
def test_seed_reproducible(name, params, device):
    a = _fn(name)(_shape([64], device), seed=42, **params)
    b = _fn(name)(_shape([64], device), seed=42, **params)
    c = _fn(name)(_shape([64], device), seed=43, **params)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_categorical_seed_reproducible(device):
    x = torch.zeros(4, 10, device=device)
    a = _fn("random_categorical")(x, size=8, seed=9)
    assert torch.equal(a, _fn("random_categorical")(x, size=8, seed=9))


def test_errors():
    with pytest.raises(ValueError, match="negative dimension"):
        _fn("random_normal")(torch.tensor([2, -1]))
    with pytest.raises(ValueError, match="unknown mode 'odds'"):
        _fn("random_categorical")(torch.zeros(3), mode="odds")
