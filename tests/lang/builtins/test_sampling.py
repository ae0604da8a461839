"""Sampling builtins: filters against hand-worked examples, draws checked with a seeded generator."""

from __future__ import annotations

import io
import math

import pytest
import torch

from lang.builtins.support import call, error
from tensorlogic.lang.values import Context

NEG = -math.inf


def seeded(n=0):
    ctx = Context()
    ctx.generator.manual_seed(n)
    return ctx


def values(t):
    return t.detach().cpu().double().numpy().tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_temperature_divides(dtype):
    out = call("temperature", torch.tensor([1.0, -2.0, 3.0], dtype=dtype), 0.5)
    assert out.dtype == dtype and values(out) == [2.0, -4.0, 6.0]


def test_temperature_must_be_positive():
    error("temperature", torch.ones(3), 0, match=r"^temperature must be positive, got 0\.0$")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_top_k_keeps_largest(dtype):
    out = call("top_k", torch.tensor([1.0, 3.0, 2.0, 5.0], dtype=dtype), 2)
    assert out.dtype == dtype and values(out) == [NEG, 3.0, NEG, 5.0]
    rows = call("top_k", torch.tensor([[1.0, 3.0, 2.0], [9.0, 7.0, 8.0]], dtype=dtype), 1)
    assert values(rows) == [[NEG, 3.0, NEG], [9.0, NEG, NEG]]


def test_top_k_ties_keep_lower_indices():
    assert values(call("top_k", torch.tensor([1.0, 0.0, 1.0, 1.0]), 2)) == [1.0, NEG, 1.0, NEG]


def test_top_k_range():
    error("top_k", torch.ones(4), 5, match=r"^top_k: k must be between 0 and the vocabulary size 4, got 5$")


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.2, 0.3]))
    # sorted: 0.5, 0.3 (sum 0.8 >= 0.7), so index 1 goes
    assert values(call("top_p", logits, 0.7)) == [values(logits)[0], NEG, values(logits)[2]]
    assert values(call("top_p", logits, 0.4)) == [values(logits)[0], NEG, NEG]
    assert values(call("top_p", logits, 1.0)) == values(logits)
    rows = call("top_p", torch.log(torch.tensor([[0.1, 0.9], [0.6, 0.4]])), 0.55)
    assert [[v != NEG for v in r] for r in values(rows)] == [[False, True], [True, False]]


def test_top_p_range():
    error("top_p", torch.ones(4), 1.5, match=r"^top_p: p must be in \[0, 1\], got 1\.5$")


def test_sample_certain_and_seeded():
    assert call("sample", torch.tensor([0.0, 0.0, 1.0, 0.0]).half()) == 2
    ctx = seeded(3)
    draws = [call("sample", torch.tensor([0.2, 0.8]), ctx=ctx) for _ in range(2000)]
    assert set(draws) == {0, 1}
    assert 0.75 < sum(draws) / len(draws) < 0.85
    again = seeded(3)
    assert [call("sample", torch.tensor([0.2, 0.8]), ctx=again) for _ in range(2000)] == draws


def test_sample_errors():
    error("sample", torch.ones(2, 2) / 4,
          match=r"^sample: probs must be a 1-D probability distribution, got shape \[2, 2\]$")
    error("sample", torch.tensor([0.25, 0.25]),
          match=r"^sample: probabilities must sum to 1, got sum 0\.5 \(apply softmax first\)$")


def test_temperature_sample_greedy_and_rows():
    assert call("temperature_sample", torch.tensor([1.0, 5.0, 2.0]).half(), 0.0) == 1
    # ties go to the last maximal index, like the original's max_by
    assert call("temperature_sample", torch.tensor([5.0, 1.0, 5.0, 2.0]), 0.0) == 2
    two_d = torch.tensor([[10.0, 1.0, 1.0], [1.0, 1.0, 15.0]])
    assert call("temperature_sample", two_d, 0.0) == 2
    assert call("temperature_sample", torch.tensor([0.0, 100.0, 0.0]), 1.0, ctx=seeded(1)) == 1


def test_temperature_sample_follows_softmax():
    ctx = seeded(5)
    logits = torch.tensor([0.0, math.log(3.0)])  # probabilities 1/4, 3/4 at temperature 1
    draws = [call("temperature_sample", logits, 1.0, ctx=ctx) for _ in range(2000)]
    assert 0.70 < sum(draws) / len(draws) < 0.80
    hot = [call("temperature_sample", logits, 1000.0, ctx=ctx) for _ in range(2000)]
    assert 0.45 < sum(hot) / len(hot) < 0.55


def test_temperature_sample_shape_error():
    error("temperature_sample", torch.ones(2, 2, 2), 1.0,
          match=r"^temperature_sample: logits must be 1-D \[vocab\] or 2-D \[seq, vocab\], got shape \[2, 2, 2\]$")


def test_top_p_sample():
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3]))
    ctx = seeded(2)
    assert {call("top_p_sample", logits, 0.5, ctx=ctx) for _ in range(50)} == {1}
    draws = [call("top_p_sample", logits, 0.8, ctx=ctx) for _ in range(2000)]
    assert set(draws) == {1, 2}
    # renormalized nucleus: 0.6 / 0.9 for index 1
    assert 0.62 < draws.count(1) / len(draws) < 0.72
    assert call("top_p_sample", torch.tensor([[9.0, 0.0], [0.0, 9.0]]), 0.5) == 1


def test_top_p_sample_range():
    error("top_p_sample", torch.ones(3), 0.0, match=r"^top_p_sample: p must be in \(0, 1\], got 0\.0$")


def test_print_top_k_output():
    out = io.StringIO()
    result = call("print_top_k", torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.5, -2.25]]), 2, ctx=Context(out=out))
    assert result == 0
    assert out.getvalue() == "      Top 2 logits:\n        [    1] =     3.5000\n        [    0] =     1.0000\n"
