"""Knowledge-graph embeddings: entity one-hots, TransE / DistMult / ComplEx scores, losses, link-prediction metrics.

Scores are one-element tensors ([1]) in the inputs' dtype, summed over every element of the embeddings in
float32. Semantics from the original's ``mod.rs`` arms for these names.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..values import DEFAULT_DTYPE, BuiltinError, Context, is_number, type_name
from . import builtin
from .nn import broadcast_floats, compute, finish, float_arg, number

_NORMS = ("L1", "L2")
# What the shape-mismatch error calls the arguments: "NAME: embedding shapes do not match (...)".
_WHAT = "embedding shapes"


def _entity_types(ctx: Context) -> dict[str, list[str]]:
    """The run's entity types: type name -> member names in index order (kept by the evaluator on ctx)."""
    return getattr(ctx, "entities", None) or {}


def _type_name(v: Any, name: str) -> str:
    """An entity type given as a string or as the type value the evaluator gives for a bare type name."""
    if isinstance(v, str):
        return v
    named = getattr(v, "name", None)
    if isinstance(named, str):
        return named
    raise BuiltinError(f"{name}() type must be an entity type or its name, got {type_name(v)}")


@builtin(ctx=True)
def entity_onehot(ctx: Context, entity_type: Any, entity: Any) -> torch.Tensor:
    """entity_onehot(Type, entity) -> float16 [entity_dim(Type)]: 1 at the entity's index, 0 elsewhere."""
    tname = _type_name(entity_type, "entity_onehot")
    if not isinstance(entity, str):
        raise BuiltinError(f"entity_onehot() entity must be an entity name, got {type_name(entity)}")
    members = _entity_types(ctx).get(tname)
    if members is None or entity not in members:
        raise BuiltinError(f"Entity '{entity}' not found in type '{tname}'")
    out = torch.zeros(len(members), dtype=DEFAULT_DTYPE, device=ctx.torch_device())
    out[members.index(entity)] = 1
    return out


@builtin(ctx=True)
def entity_dim(ctx: Context, entity_type: Any) -> int:
    """entity_dim(Type) -> int: how many entities the type has."""
    tname = _type_name(entity_type, "entity_dim")
    members = _entity_types(ctx).get(tname)
    if members is None:
        raise BuiltinError(f"Entity type '{tname}' not found")
    return len(members)


def _score(ctx: Context, name: str, dtype: torch.dtype, value: torch.Tensor) -> torch.Tensor:
    return finish(ctx, name, value.reshape(1), dtype)


def _transe(ctx: Context, name: str, h: Any, r: Any, t: Any, norm: Any, names: tuple[str, ...]) -> torch.Tensor:
    if not isinstance(norm, str):
        raise BuiltinError(f'{name}() norm must be a string ("L1" or "L2"), got {type_name(norm)}')
    if norm not in _NORMS:
        raise BuiltinError(f'{name}() norm must be "L1" or "L2", got "{norm}"')
    dtype, (hc, rc, tc) = compute(*broadcast_floats(ctx, name, (h, r, t), names, _WHAT))
    diff = hc + rc - tc
    dist = diff.abs().sum() if norm == "L1" else diff.pow(2).sum().sqrt()
    return _score(ctx, name, dtype, -dist)


@builtin(ctx=True)
def transe_score(ctx: Context, head: Any, relation: Any, tail: Any, norm: Any = "L2") -> torch.Tensor:
    """transe_score(head, relation, tail[, norm="L2"]) -> [1]: -||h + r - t|| (L2, or L1 which the original lacks)."""
    return _transe(ctx, "transe_score", head, relation, tail, norm, ("head", "relation", "tail"))


@builtin(ctx=True)
def predict_tail_transe(ctx: Context, head: Any, relation: Any, tail_candidate: Any, model: Any = "L2") -> torch.Tensor:
    """predict_tail_transe(head, relation, tail_candidate[, model="L2"]) -> [1]: the TransE score of the candidate."""
    return _transe(ctx, "predict_tail_transe", head, relation, tail_candidate, model,
                   ("head", "relation", "tail_candidate"))


@builtin(ctx=True)
def predict_head_transe(ctx: Context, head_candidate: Any, relation: Any, tail: Any, model: Any = "L2") -> torch.Tensor:
    """predict_head_transe(head_candidate, relation, tail[, model="L2"]) -> [1]: the TransE score of the candidate."""
    return _transe(ctx, "predict_head_transe", head_candidate, relation, tail, model,
                   ("head_candidate", "relation", "tail"))


def _distmult(ctx: Context, name: str, h: Any, r: Any, t: Any, names: tuple[str, ...]) -> torch.Tensor:
    dtype, (hc, rc, tc) = compute(*broadcast_floats(ctx, name, (h, r, t), names, _WHAT))
    return _score(ctx, name, dtype, (hc * rc * tc).sum())


@builtin(ctx=True)
def distmult_score(ctx: Context, head: Any, relation: Any, tail: Any) -> torch.Tensor:
    """distmult_score(head, relation, tail) -> [1]: sum(h * r * t)."""
    return _distmult(ctx, "distmult_score", head, relation, tail, ("head", "relation", "tail"))


@builtin(ctx=True)
def predict_tail_distmult(ctx: Context, head: Any, relation: Any, tail_candidate: Any) -> torch.Tensor:
    """predict_tail_distmult(head, relation, tail_candidate) -> [1]: sum(h * r * t)."""
    return _distmult(ctx, "predict_tail_distmult", head, relation, tail_candidate,
                     ("head", "relation", "tail_candidate"))


@builtin(ctx=True)
def predict_head_distmult(ctx: Context, head_candidate: Any, relation: Any, tail: Any) -> torch.Tensor:
    """predict_head_distmult(head_candidate, relation, tail) -> [1]: sum(h * r * t)."""
    return _distmult(ctx, "predict_head_distmult", head_candidate, relation, tail,
                     ("head_candidate", "relation", "tail"))


_COMPLEX_NAMES = ("h_re", "h_im", "r_re", "r_im", "t_re", "t_im")


def _complex(ctx: Context, name: str, values: tuple[Any, ...]) -> torch.Tensor:
    dtype, (hr, hi, rr, ri, tr, ti) = compute(*broadcast_floats(ctx, name, values, _COMPLEX_NAMES, _WHAT))
    return _score(ctx, name, dtype, (hr * rr * tr + hr * ri * ti + hi * rr * ti - hi * ri * tr).sum())


@builtin(ctx=True)
def complex_score(ctx: Context, h_re: Any, h_im: Any, r_re: Any, r_im: Any, t_re: Any, t_im: Any) -> torch.Tensor:
    """complex_score(h_re, h_im, r_re, r_im, t_re, t_im) -> [1]: Re(<h, r, conj(t)>), parts as separate tensors."""
    return _complex(ctx, "complex_score", (h_re, h_im, r_re, r_im, t_re, t_im))


@builtin(ctx=True)
def predict_tail_complex(
    ctx: Context, h_re: Any, h_im: Any, r_re: Any, r_im: Any, t_candidate_re: Any, t_candidate_im: Any
) -> torch.Tensor:
    """predict_tail_complex(h_re, h_im, r_re, r_im, t_candidate_re, t_candidate_im) -> [1]: the ComplEx score."""
    return _complex(ctx, "predict_tail_complex", (h_re, h_im, r_re, r_im, t_candidate_re, t_candidate_im))


@builtin(ctx=True)
def predict_head_complex(
    ctx: Context, h_candidate_re: Any, h_candidate_im: Any, r_re: Any, r_im: Any, t_re: Any, t_im: Any
) -> torch.Tensor:
    """predict_head_complex(h_candidate_re, h_candidate_im, r_re, r_im, t_re, t_im) -> [1]: the ComplEx score."""
    return _complex(ctx, "predict_head_complex", (h_candidate_re, h_candidate_im, r_re, r_im, t_re, t_im))


@builtin(ctx=True)
def margin_ranking_loss(ctx: Context, pos_score: Any, neg_score: Any, margin: Any) -> torch.Tensor:
    """margin_ranking_loss(pos_score, neg_score, margin): max(0, margin + neg_score - pos_score), elementwise."""
    m = number(margin, "margin_ranking_loss() margin")
    scores = broadcast_floats(ctx, "margin_ranking_loss", (pos_score, neg_score), ("pos_score", "neg_score"), _WHAT)
    dtype, (pos, neg) = compute(*scores)
    return finish(ctx, "margin_ranking_loss", torch.relu(m + neg - pos), dtype)


@builtin(ctx=True)
def binary_cross_entropy(ctx: Context, score: Any, target: Any) -> torch.Tensor:
    """binary_cross_entropy(score, target) -> [1]: -t log(sigmoid(s)) - (1 - t) log(1 - sigmoid(s)), logs >= -100.

    score holds logits; with several elements the loss is their mean (the original reads only the first).
    """
    s = float_arg(ctx, score, "score")
    if s.numel() == 0:
        raise BuiltinError("binary_cross_entropy() score is empty")
    t = number(target, "binary_cross_entropy() target")
    if not 0.0 <= t <= 1.0:
        raise BuiltinError(f"binary_cross_entropy() target must be between 0 and 1, got {t:g}")
    dtype, (sc,) = compute(s)
    probs = torch.sigmoid(sc)
    # torch's BCE clamps each log at -100, the original's guard for probabilities of exactly 0 or 1.
    loss = F.binary_cross_entropy(probs, torch.full_like(probs, t))
    return _score(ctx, "binary_cross_entropy", dtype, loss)


def _count(v: Any, name: str, what: str) -> int:
    """An int, or a float truncated toward zero as the original's casts do."""
    if isinstance(v, bool) or not is_number(v):
        raise BuiltinError(f"{name}: {what} must be a number, got {type_name(v)}")
    return int(v)


@builtin()
def compute_rank(target_score: Any, num_higher_scores: Any) -> int:
    """compute_rank(target_score, num_higher_scores) -> int: num_higher_scores + 1 (rank 1 is the best)."""
    if not isinstance(target_score, torch.Tensor):
        raise BuiltinError(f"compute_rank() target_score must be a tensor, got {type_name(target_score)}")
    higher = _count(num_higher_scores, "compute_rank", "num_higher_scores")
    if higher < 0:
        raise BuiltinError(f"compute_rank: num_higher_scores cannot be negative, got {higher}")
    return higher + 1


@builtin()
def compute_mrr(rank: Any) -> float:
    """compute_mrr(rank) -> float: the reciprocal rank 1 / rank."""
    if isinstance(rank, bool) or not is_number(rank):
        raise BuiltinError(f"compute_mrr: rank must be a number, got {type_name(rank)}")
    if rank <= 0:
        raise BuiltinError("compute_mrr: rank must be positive")
    return 1.0 / rank


@builtin()
def compute_hits_at_k(rank: Any, k: Any) -> int:
    """compute_hits_at_k(rank, k) -> int: 1 when 0 < rank <= k, else 0."""
    r = _count(rank, "compute_hits_at_k", "rank")
    n = _count(k, "compute_hits_at_k", "k")
    return 1 if 0 < r <= n else 0


@builtin()
def compute_mean_rank(sum_of_ranks: Any, num_queries: Any) -> float:
    """compute_mean_rank(sum_of_ranks, num_queries) -> float: sum_of_ranks / num_queries."""
    for v, what in ((sum_of_ranks, "sum_of_ranks"), (num_queries, "num_queries")):
        if isinstance(v, bool) or not is_number(v):
            raise BuiltinError(f"compute_mean_rank: {what} must be a number, got {type_name(v)}")
    if num_queries <= 0:
        raise BuiltinError("compute_mean_rank: num_queries must be positive")
    return sum_of_ranks / num_queries
