"""GNN builtins against numpy float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang.builtins.support import call, close, error, f64, rnd


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_aggregate_neighbors(dtype):
    x = rnd(4, 3, seed=1, dtype=dtype)
    close(call("aggregate_neighbors", x, 4), f64(x) / 4, dtype)
    close(call("aggregate_neighbors", x, 4, "sum"), f64(x), dtype)
    close(call("aggregate_neighbors", x, 0), f64(x), dtype)


def test_aggregate_neighbors_errors():
    error("aggregate_neighbors", torch.ones(2), 2, "max",
          match=r'^aggregate_neighbors\(\) aggregation must be "mean" or "sum", got "max"$')
    error("aggregate_neighbors", torch.ones(2), "2",
          match=r"^aggregate_neighbors: num_neighbors must be an integer, got \"2\"$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_relational_aggregate(dtype):
    n, r, m = (rnd(8, seed=s, dtype=dtype) for s in (2, 3, 4))
    close(call("relational_aggregate", n, r, m), f64(n) + f64(r) * f64(m), dtype)


def test_relational_aggregate_shape_error():
    error("relational_aggregate", torch.ones(3), torch.ones(2), torch.ones(3),
          match=(r"^relational_aggregate: shapes do not match "
                 r"\(node_emb \[3\], relation_emb \[2\], neighbor_emb \[3\]\)$"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_graph_attention(dtype):
    q, k, v = (rnd(6, seed=s, dtype=dtype) for s in (5, 6, 7))
    weight = 1 / (1 + np.exp(-(f64(q) * f64(k)).sum()))
    close(call("graph_attention", q, k, v), f64(v) * weight, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_normalize_features(dtype):
    x = rnd(2, 5, seed=8, dtype=dtype)
    xs = f64(x)
    close(call("normalize_features", x), xs / np.sqrt((xs**2).sum()), dtype)
    close(call("normalize_features", x, "l2"), xs / np.sqrt((xs**2).sum()), dtype)
    mean = xs.mean(-1, keepdims=True)
    want = (xs - mean) / np.sqrt(((xs - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    close(call("normalize_features", x, "layer"), want, dtype)
    zero = torch.zeros(3, dtype=dtype)
    assert torch.equal(call("normalize_features", zero), zero)


def test_normalize_features_errors():
    error("normalize_features", torch.ones(2), "l1",
          match=r'^normalize_features\(\) norm_type must be "l2" or "layer", got "l1"$')
    error("normalize_features", 1.0, "layer",
          match=r'^normalize_features\(\) "layer" needs features with at least one dimension$')
