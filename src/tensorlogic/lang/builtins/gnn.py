"""Graph-neural-network helpers: neighbour aggregation, R-GCN style messages, graph attention, normalization.

These are the original's simplified per-node forms (``mod.rs`` arms for these names): each works on one
node's embedding tensors rather than on an adjacency structure.
"""

from __future__ import annotations

from typing import Any

import torch

from ..values import BuiltinError, Context, as_int, type_name
from . import builtin
from .nn import broadcast_floats, compute, finish, float_arg, standardize

_AGGREGATIONS = ("mean", "sum")
_NORMS = ("l2", "layer")


def _choice(v: Any, name: str, what: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in allowed:
        shown = f'"{v}"' if isinstance(v, str) else type_name(v)
        raise BuiltinError(f"{name}() {what} must be " + " or ".join(f'"{a}"' for a in allowed) + f", got {shown}")
    return v


@builtin(ctx=True)
def aggregate_neighbors(ctx: Context, node_features: Any, num_neighbors: Any, aggregation: Any = "mean") -> Any:
    """aggregate_neighbors(features, num_neighbors[, aggregation="mean"]): the mean or sum of summed features.

    features already hold the neighbours' sum: "mean" divides by num_neighbors (when > 0), "sum" returns them.
    """
    t = float_arg(ctx, node_features, "node_features")
    n = as_int(num_neighbors, "aggregate_neighbors: num_neighbors")
    how = _choice(aggregation, "aggregate_neighbors", "aggregation", _AGGREGATIONS)
    if how == "sum" or n <= 0:
        return t
    dtype, (tc,) = compute(t)
    return finish(ctx, "aggregate_neighbors", tc / n, dtype)


@builtin(ctx=True)
def relational_aggregate(ctx: Context, node_emb: Any, relation_emb: Any, neighbor_emb: Any) -> torch.Tensor:
    """relational_aggregate(node_emb, relation_emb, neighbor_emb): node + relation * neighbor (an R-GCN message)."""
    names = ("node_emb", "relation_emb", "neighbor_emb")
    embs = broadcast_floats(ctx, "relational_aggregate", (node_emb, relation_emb, neighbor_emb), names)
    dtype, (node, rel, nb) = compute(*embs)
    return finish(ctx, "relational_aggregate", node + rel * nb, dtype)


@builtin(ctx=True)
def graph_attention(ctx: Context, query: Any, key: Any, value: Any) -> torch.Tensor:
    """graph_attention(query, key, value): value * sigmoid(sum(query * key)), one neighbour's attention weight."""
    dtype, (q, k, v) = compute(*broadcast_floats(ctx, "graph_attention", (query, key), ("query", "key")),
                               float_arg(ctx, value, "value"))
    return finish(ctx, "graph_attention", v * torch.sigmoid((q * k).sum()), dtype)


@builtin(ctx=True)
def normalize_features(ctx: Context, features: Any, norm_type: Any = "l2") -> torch.Tensor:
    """normalize_features(features[, norm_type="l2"]): L2 or layer normalization of node features.

    "l2" divides by the L2 norm of all elements (unchanged when it is <= 1e-8); "layer" is layer normalization
    over the last dim (the original returns the features unchanged for it).
    """
    t = float_arg(ctx, features, "features")
    how = _choice(norm_type, "normalize_features", "norm_type", _NORMS)
    dtype, (tc,) = compute(t)
    if how == "layer":
        if t.ndim == 0:
            raise BuiltinError("normalize_features() \"layer\" needs features with at least one dimension")
        return finish(ctx, "normalize_features", standardize(tc, [-1], 1e-5), dtype)
    norm = float(tc.pow(2).sum().sqrt())
    return finish(ctx, "normalize_features", tc / norm, dtype) if norm > 1e-8 else t
