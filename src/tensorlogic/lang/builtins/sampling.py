"""Sampling for text generation: temperature, top-k, top-p filters, and drawing a token id.

Random draws use the run's generator, so ``seed(n)`` makes them repeatable. Ties between equal logits are
broken as the original's stable sort does: the lower index ranks first.
"""

from __future__ import annotations

from typing import Any

import torch

from ..values import BuiltinError, Context, as_int, shape_text
from . import builtin
from .nn import float_arg, number


def _uniform(ctx: Context) -> float:
    """One draw in [0, 1)."""
    return float(torch.rand((), generator=ctx.generator))


def _rows(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 0:
        raise BuiltinError(f"{name}: logits must have a vocabulary dimension, got a scalar")
    return t.detach().to("cpu", torch.float32).reshape(-1, t.shape[-1])


def _last_row(name: str, t: torch.Tensor) -> torch.Tensor:
    """The logits of a 1-D [vocab] tensor, or the last row of a 2-D [seq, vocab] one (the newest position)."""
    if t.ndim not in (1, 2) or t.shape[-1] == 0 or t.numel() == 0:
        raise BuiltinError(f"{name}: logits must be 1-D [vocab] or 2-D [seq, vocab], got shape {shape_text(t)}")
    return t.detach().to("cpu", torch.float32).reshape(-1, t.shape[-1])[-1]


def _draw(ctx: Context, probs: torch.Tensor, fallback: int) -> int:
    """The first index whose cumulative probability exceeds a uniform draw; fallback if rounding leaves none."""
    idx = int((torch.cumsum(probs, 0) <= _uniform(ctx)).sum())
    return idx if idx < probs.numel() else fallback


def _sorted_desc(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sort(v, descending=True, stable=True)


def _nucleus_size(sorted_probs: torch.Tensor, p: float) -> int:
    """How many of the sorted probabilities it takes for their running sum to reach p (at least one)."""
    return min(int((torch.cumsum(sorted_probs, 0) < p).sum()) + 1, sorted_probs.numel())


@builtin(ctx=True, method=True)
def temperature(ctx: Context, logits: Any, temp: Any) -> torch.Tensor:
    """temperature(logits, temp): logits / temp; temp must be positive."""
    t = float_arg(ctx, logits, "logits")
    value = number(temp, "temperature() temp")
    if value <= 0:
        raise BuiltinError(f"temperature must be positive, got {value}")
    return (t.to(torch.float32) / value).to(t.dtype)


@builtin(ctx=True, method=True)
def top_k(ctx: Context, logits: Any, k: Any) -> torch.Tensor:
    """top_k(logits, k): keep the k largest logits of each row (last dim), set the others to -inf."""
    t = float_arg(ctx, logits, "logits")
    n = as_int(k, "top_k() k")
    rows = _rows("top_k", t)
    vocab = rows.shape[1]
    if not 0 <= n <= vocab:
        raise BuiltinError(f"top_k: k must be between 0 and the vocabulary size {vocab}, got {n}")
    out = torch.full_like(rows, float("-inf"))
    order = _sorted_desc(rows)[1][:, :n]
    out.scatter_(1, order, rows.gather(1, order))
    return out.reshape(t.shape).to(t.dtype).to(t.device)


@builtin(ctx=True, method=True)
def top_p(ctx: Context, logits: Any, p: Any) -> torch.Tensor:
    """top_p(logits, p): keep, per row, the most likely logits whose softmax probabilities first sum to >= p."""
    t = float_arg(ctx, logits, "logits")
    value = number(p, "top_p() p")
    if not 0.0 <= value <= 1.0:
        raise BuiltinError(f"top_p: p must be in [0, 1], got {value}")
    rows = _rows("top_p", t)
    out = torch.full_like(rows, float("-inf"))
    for r, row in enumerate(rows):
        probs, order = _sorted_desc(torch.softmax(row, 0))
        keep = order[:_nucleus_size(probs, value)]
        out[r, keep] = row[keep]
    return out.reshape(t.shape).to(t.dtype).to(t.device)


@builtin(ctx=True)
def sample(ctx: Context, probs: Any) -> int:
    """sample(probs) -> int: draw a token id from a 1-D probability distribution (it must sum to 1 +- 0.01)."""
    t = float_arg(ctx, probs, "probs")
    if t.ndim != 1 or t.numel() == 0:
        raise BuiltinError(f"sample: probs must be a 1-D probability distribution, got shape {shape_text(t)}")
    pr = t.detach().to("cpu", torch.float32)
    total = float(pr.sum())
    if not abs(total - 1.0) <= 0.01:
        raise BuiltinError(f"sample: probabilities must sum to 1, got sum {total:g} (apply softmax first)")
    return _draw(ctx, pr, 0)


@builtin(ctx=True)
def temperature_sample(ctx: Context, logits: Any, temperature: Any) -> int:
    """temperature_sample(logits, temperature) -> int: sample softmax(logits / temperature).

    2-D logits [seq, vocab] use the last row. A temperature <= 0.0001 is greedy: the index of the largest logit
    (the last such index on ties, as the original's max_by).
    """
    row = _last_row("temperature_sample", float_arg(ctx, logits, "logits"))
    temp = number(temperature, "temperature_sample() temperature")
    if temp <= 1e-4:
        return row.numel() - 1 - int(torch.argmax(row.flip(0)))
    return _draw(ctx, torch.softmax(row / temp, 0), row.numel() - 1)


@builtin(ctx=True)
def top_p_sample(ctx: Context, logits: Any, p: Any) -> int:
    """top_p_sample(logits, p) -> int: nucleus sampling; the nucleus is renormalized. 2-D logits use the last row."""
    row = _last_row("top_p_sample", float_arg(ctx, logits, "logits"))
    value = number(p, "top_p_sample() p")
    if not 0.0 < value <= 1.0:
        raise BuiltinError(f"top_p_sample: p must be in (0, 1], got {value}")
    probs, order = _sorted_desc(torch.softmax(row, 0))
    n = _nucleus_size(probs, value)
    nucleus = probs[:n] / probs[:n].sum()
    return int(order[_draw(ctx, nucleus, 0)])


@builtin(ctx=True)
def print_top_k(ctx: Context, logits: Any, k: Any) -> int:
    """print_top_k(logits, k) -> 0: print the k largest logits (of the last row) with their indices, for debugging."""
    row = _last_row("print_top_k", float_arg(ctx, logits, "logits"))
    n = as_int(k, "print_top_k() k")
    values, order = _sorted_desc(row)
    out = ctx.stdout()
    print(f"      Top {n} logits:", file=out)
    for idx, val in zip(order[: max(n, 0)].tolist(), values[: max(n, 0)].tolist()):
        print(f"        [{idx:5d}] = {val:10.4f}", file=out)
    return 0
