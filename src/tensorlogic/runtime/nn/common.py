"""Helpers shared by the NeuralNetwork layer families: rank conventions, axes, indices, booleans."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def as_nchw(x: torch.Tensor, layer: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` as [N, C, H, W], every axis before the last three folded into N; also the folded shape."""
    if x.dim() < 3:
        raise ValueError(f"{layer} needs a blob of rank at least 3, got shape {list(x.shape)}")
    lead = tuple(x.shape[:-3])
    return x.reshape(-1, *x.shape[-3:]), lead


def from_nchw(y: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """Undo ``as_nchw`` on a result whose last three axes may have changed size."""
    return y.reshape(*lead, *y.shape[1:])


def norm_axis(axis: int, rank: int) -> int:
    """A possibly negative axis as an index into a tensor of ``rank`` axes."""
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return a


def norm_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    return tuple(sorted({norm_axis(int(a), rank) for a in axes}))


def channel_param(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A parameter of length 1 or C shaped to broadcast along axis -3 of ``x``."""
    if p.numel() == 1:
        return p.reshape(())
    if x.dim() < 3 or x.shape[-3] != p.numel():
        raise ValueError(f"a {p.numel()}-channel parameter does not fit a blob of shape {list(x.shape)}")
    return p.reshape(-1, 1, 1)


def indices(t: torch.Tensor) -> torch.Tensor:
    """Float-valued indices (the network keeps every value as float) as int64."""
    return torch.round(t).long() if t.is_floating_point() else t.long()


def int_values(t: torch.Tensor) -> list[int]:
    """A small tensor of integer-valued floats (a shape, a count) as Python ints."""
    return [int(v) for v in indices(t.reshape(-1)).tolist()]


def truth(t: torch.Tensor) -> torch.Tensor:
    """Non-zero as true, the spec's rule for logical inputs."""
    return t != 0


def as_float(b: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A boolean or integer result as 1.0 / 0.0 (or its values) in ``like``'s dtype."""
    return b.to(like.dtype if like.is_floating_point() else torch.float32)
