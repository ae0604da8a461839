"""Reductions and orderings: the legacy ``reduce``, the iOS13 ``reduce*`` layers, ``argMax``/``argMin``,
``topK``, ``argSort``, ``cumSum``. Index outputs are float values, like every NeuralNetwork blob."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .common import int_values, norm_axes, norm_axis
from .registry import layer

Fn = Callable[..., Any]
Reducer = Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]  # keeps the reduced axes


def _lse(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return torch.logsumexp(x, dim=dims, keepdim=True)


def _amax(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.amax(dim=dims, keepdim=True)


def _amin(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.amin(dim=dims, keepdim=True)


def _prod(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    for d in dims:
        x = x.prod(dim=d, keepdim=True)
    return x


def _sum(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.sum(dim=dims, keepdim=True)


REDUCERS: dict[str, Reducer] = {
    "reduceSum": _sum,
    "reduceMean": lambda x, d: x.mean(dim=d, keepdim=True),
    "reduceProd": _prod,
    "reduceMax": _amax,
    "reduceMin": _amin,
    "reduceL1": lambda x, d: _sum(x.abs(), d),
    "reduceL2": lambda x, d: torch.sqrt(_sum(x * x, d)),
    "reduceSumSquare": lambda x, d: _sum(x * x, d),
    "reduceLogSum": lambda x, d: torch.log(_sum(x, d)),
    "reduceLogSumExp": _lse,
}


def _squeezed(y: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Drop reduced axes; a blob never drops below rank 1."""
    keep = [n for i, n in enumerate(y.shape) if i not in dims]
    return y.reshape(keep or [1])


def _reduce_nd(name: str, fn: Reducer) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(1)
        axes = [int(a) for a in p.axes]
        keep, everything = p.keepDims, p.reduceAll or not axes

        def run(x: torch.Tensor) -> torch.Tensor:
            dims = tuple(range(x.dim())) if everything else norm_axes(axes, x.dim())
            y = fn(x, dims)
            return y if keep else _squeezed(y, dims)

        return run

    build.__name__ = name
    build.__doc__ = f"{name[6:]} over ``axes`` (or every axis), keeping or dropping them."
    layer(name)(build)


for _name, _fn in REDUCERS.items():
    _reduce_nd(_name, _fn)

# ReduceLayerParams: modes and axes.
_LEGACY_AXES = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}
_SUM, _AVG, _PROD, _LOGSUM, _SUMSQUARE, _L1, _L2, _MAX, _MIN, _ARGMAX = range(10)


@layer("reduce")
def reduce(p: Any, ctx: Any) -> Fn:
    """Legacy reduction over C, H, W, HW or CHW, keeping the reduced axes as 1.
    LOGSUM is ``sum(log(x + epsilon))`` (epsilon 0 means 1e-6); ARGMAX gives float indices."""
    ctx.require(1)
    axes = _LEGACY_AXES.get(int(p.axis))
    mode = int(p.mode)
    if axes is None or not 0 <= mode <= _ARGMAX:
        raise ctx.error(f"unknown reduce axis {p.axis} or mode {p.mode}")
    if mode == _ARGMAX and len(axes) != 1:
        raise ctx.error("ARGMAX reduces a single axis (C, H or W)")
    eps = p.epsilon if p.epsilon != 0 else 1e-6
    fns: dict[int, Reducer] = {
        _SUM: REDUCERS["reduceSum"], _AVG: REDUCERS["reduceMean"], _PROD: _prod,
        _LOGSUM: lambda x, d: _sum(torch.log(x + eps), d), _SUMSQUARE: REDUCERS["reduceSumSquare"],
        _L1: REDUCERS["reduceL1"], _L2: REDUCERS["reduceL2"], _MAX: _amax, _MIN: _amin,
        _ARGMAX: lambda x, d: torch.argmax(x, dim=d[0], keepdim=True).to(x.dtype),
    }
    fn = fns[mode]

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < -min(axes):
            raise ValueError(f"reducing axes {list(axes)} needs rank at least {-min(axes)}, got {list(x.shape)}")
        return fn(x, tuple(x.dim() + a for a in axes))

    return run


def _arg(name: str, fn: Callable[..., torch.Tensor]) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(1)
        axis, remove = int(p.axis), p.removeDim

        def run(x: torch.Tensor) -> torch.Tensor:
            a = norm_axis(axis, x.dim())
            y = fn(x, dim=a, keepdim=True).to(x.dtype)
            return _squeezed(y, (a,)) if remove else y

        return run

    build.__name__ = name
    build.__doc__ = f"Index of the {name[3:].lower()}imum along ``axis`` (first on ties), as a float."
    layer(name)(build)


_arg("argMax", torch.argmax)
_arg("argMin", torch.argmin)


@layer("topK")
def topK(p: Any, ctx: Any) -> Fn:
    """The K largest (or smallest) values along ``axis`` and their float indices, ties in input order; K may
    come as input 2."""
    ctx.require(1, 2, outputs=(1, 2))
    axis, k_static, bottom = int(p.axis), int(p.K), p.useBottomK

    def run(x: torch.Tensor, k_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a = norm_axis(axis, x.dim())
        k = int_values(k_input)[0] if k_input is not None else k_static
        # A stable sort: equal values keep their input order (as numpy's argsort does on them).
        values, idx = torch.sort(x, dim=a, descending=not bottom, stable=True)
        n = min(k, x.shape[a])
        return values.narrow(a, 0, n), idx.narrow(a, 0, n).to(x.dtype)

    return run


@layer("argSort")
def argSort(p: Any, ctx: Any) -> Fn:
    """Float indices that sort ``axis`` ascending (or descending); ties keep input order."""
    ctx.require(1)
    axis, descending = int(p.axis), p.descending

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.argsort(x, dim=norm_axis(axis, x.dim()), descending=descending, stable=True).to(x.dtype)

    return run


@layer("cumSum")
def cumSum(p: Any, ctx: Any) -> Fn:
    """Cumulative sum along ``axis`` (or the axis held in input 2), exclusive and/or reversed."""
    ctx.require(1, 2)
    axis_static, exclusive, rev = int(p.axis), p.excludeFinalSum, p.reverse

    def run(x: torch.Tensor, axis_input: torch.Tensor | None = None) -> torch.Tensor:
        a = norm_axis(int_values(axis_input)[0] if axis_input is not None else axis_static, x.dim())
        y = x.flip(a) if rev else x
        out = torch.cumsum(y, dim=a)
        if exclusive:
            out = torch.cat([torch.zeros_like(out.narrow(a, 0, 1)), out.narrow(a, 0, out.shape[a] - 1)], a)
        return out.flip(a) if rev else out

    return run
