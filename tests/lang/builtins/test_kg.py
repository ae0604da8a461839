"""Knowledge-graph builtins against numpy float64 references and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lang.builtins.support import call, close, error, f64, rnd
from tensorlogic.lang.values import Context


def score(got, want, dtype):
    """got is a one-element score tensor of dtype holding want."""
    close(got, [want], dtype)


def kg_context():
    ctx = Context()
    ctx.entities = {"Person": ["alice", "bob", "charlie"], "City": ["tokyo"]}
    return ctx


class TypeValue:
    """Stands in for the evaluator's value of a bare type name such as Person."""

    def __init__(self, name):
        self.name = name


def test_entity_onehot_and_dim():
    ctx = kg_context()
    out = call("entity_onehot", "Person", "bob", ctx=ctx)
    assert out.dtype == torch.float16 and f64(out).tolist() == [0.0, 1.0, 0.0]
    assert f64(call("entity_onehot", TypeValue("City"), "tokyo", ctx=ctx)).tolist() == [1.0]
    assert call("entity_dim", "Person", ctx=ctx) == 3
    assert call("entity_dim", TypeValue("City"), ctx=ctx) == 1


def test_entity_errors():
    ctx = kg_context()
    error("entity_onehot", "Person", "dave", ctx=ctx, match=r"^Entity 'dave' not found in type 'Person'$")
    error("entity_dim", "Item", ctx=ctx, match=r"^Entity type 'Item' not found$")
    error("entity_dim", 3, ctx=ctx, match=r"^entity_dim\(\) type must be an entity type or its name, got int$")
    error("entity_onehot", "Person", 1, ctx=ctx, match=r"^entity_onehot\(\) entity must be an entity name, got int$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("name", ["transe_score", "predict_tail_transe", "predict_head_transe"])
def test_transe(name, dtype):
    h, r, t = (rnd(8, seed=s, dtype=dtype) for s in (1, 2, 3))
    d = f64(h) + f64(r) - f64(t)
    score(call(name, h, r, t), -np.sqrt((d**2).sum()), dtype)
    score(call(name, h, r, t, "L2"), -np.sqrt((d**2).sum()), dtype)
    score(call(name, h, r, t, "L1"), -np.abs(d).sum(), dtype)


def test_transe_hand_value():
    # h + r - t = [3, 4]: distance 5
    assert f64(call("transe_score", [1.0, 2.0], [2.0, 2.0], [0.0, 0.0])).tolist() == [-5.0]


def test_transe_errors():
    v = torch.ones(3)
    error("transe_score", v, v, v, "L3", match=r'^transe_score\(\) norm must be "L1" or "L2", got "L3"$')
    error("transe_score", v, v, v, 2, match=r'^transe_score\(\) norm must be a string \("L1" or "L2"\), got int$')
    error("transe_score", v, torch.ones(2), v,
          match=r"^transe_score: embedding shapes do not match \(head \[3\], relation \[2\], tail \[3\]\)$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("name", ["distmult_score", "predict_tail_distmult", "predict_head_distmult"])
def test_distmult(name, dtype):
    h, r, t = (rnd(8, seed=s, dtype=dtype) for s in (4, 5, 6))
    score(call(name, h, r, t), (f64(h) * f64(r) * f64(t)).sum(), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("name", ["complex_score", "predict_tail_complex", "predict_head_complex"])
def test_complex(name, dtype):
    parts = [rnd(6, seed=s, dtype=dtype) for s in range(10, 16)]
    h, r, t = (f64(parts[i]) + 1j * f64(parts[i + 1]) for i in (0, 2, 4))
    score(call(name, *parts), np.real((h * r * np.conj(t)).sum()), dtype)


def test_margin_ranking_loss():
    out = call("margin_ranking_loss", torch.tensor([2.0, 0.5]).half(), torch.tensor([1.5, 0.0]).half(), 1.0)
    assert out.dtype == torch.float16 and f64(out).tolist() == [0.5, 0.5]
    assert f64(call("margin_ranking_loss", torch.tensor([3.0]), torch.tensor([1.0]), 1)).tolist() == [0.0]
    error("margin_ranking_loss", torch.ones(1), torch.ones(1), "1",
          match=r"^margin_ranking_loss\(\) margin must be a number, got string$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_binary_cross_entropy(dtype):
    s = torch.tensor([0.7], dtype=dtype)
    p = 1 / (1 + math.exp(-f64(s)[0]))
    score(call("binary_cross_entropy", s, 1), -math.log(p), dtype)
    score(call("binary_cross_entropy", s, 0.0), -math.log(1 - p), dtype)
    many = torch.tensor([0.5, -1.0], dtype=dtype)
    ps = 1 / (1 + np.exp(-f64(many)))
    score(call("binary_cross_entropy", many, 1), -np.log(ps).mean(), dtype)


def test_binary_cross_entropy_saturates_at_100():
    # sigmoid(200) is exactly 1 in float32: log(1 - 1) is clamped to -100
    assert f64(call("binary_cross_entropy", torch.tensor([200.0]), 0)).tolist() == [100.0]


def test_binary_cross_entropy_errors():
    error("binary_cross_entropy", torch.ones(1), "1",
          match=r"^binary_cross_entropy\(\) target must be a number, got string$")
    error("binary_cross_entropy", torch.ones(1), 2,
          match=r"^binary_cross_entropy\(\) target must be between 0 and 1, got 2$")


def test_ranking_metrics():
    assert call("compute_rank", torch.tensor([0.3]), 4) == 5
    assert call("compute_rank", torch.tensor([0.3]), 2.7) == 3
    assert call("compute_mrr", 4) == 0.25
    assert call("compute_hits_at_k", 3, 3) == 1
    assert call("compute_hits_at_k", 4, 3) == 0
    assert call("compute_hits_at_k", 0, 3) == 0
    assert call("compute_mean_rank", 9, 4) == 2.25


def test_ranking_metric_errors():
    error("compute_rank", 0.3, 1, match=r"^compute_rank\(\) target_score must be a tensor, got float$")
    error("compute_rank", torch.ones(1), -1, match=r"^compute_rank: num_higher_scores cannot be negative, got -1$")
    error("compute_mrr", 0, match=r"^compute_mrr: rank must be positive$")
    error("compute_mrr", "1", match=r"^compute_mrr: rank must be a number, got string$")
    error("compute_hits_at_k", 1, "k", match=r"^compute_hits_at_k: k must be a number, got string$")
    error("compute_mean_rank", 3, 0, match=r"^compute_mean_rank: num_queries must be positive$")
    error("compute_mean_rank", None, 1, match=r"^compute_mean_rank: sum_of_ranks must be a number, got void$")
