"""Weighted layers: ``convolution`` (incl. deconvolution), ``convolution3d``, ``innerProduct``,
``batchedMatmul``, ``embedding``, ``embeddingND``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .common import as_nchw, from_nchw, indices
from .registry import layer

Fn = Callable[..., torch.Tensor]

BOTTOM_RIGHT_HEAVY = 0


def _pair(values: Sequence[int], default: int) -> tuple[int, int]:
    v = [int(x) for x in values]
    if not v:
        return default, default
    if len(v) != 2:
        raise ValueError(f"expected 2 values [H, W], got {v}")
    return v[0], v[1]


def border(amounts: Any) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from a BorderAmounts message ([H, W] edge sizes)."""
    edges = list(amounts.borderAmounts)
    if not edges:
        return 0, 0, 0, 0
    if len(edges) != 2:
        raise ValueError(f"border amounts need 2 entries [H, W], got {len(edges)}")
    return (int(edges[0].startEdgeSize), int(edges[0].endEdgeSize),
            int(edges[1].startEdgeSize), int(edges[1].endEdgeSize))


def same_split(total: int, mode: int) -> tuple[int, int]:
    """Split a total padding (or crop) into (start, end) by SamePadding's asymmetry mode."""
    total = max(0, total)
    small = total // 2
    return (small, total - small) if mode == BOTTOM_RIGHT_HEAVY else (total - small, small)


def same_pads(size: int, kernel: int, stride: int, mode: int) -> tuple[int, int]:
    """SAME padding of one spatial axis so that out = ceil(size / stride)."""
    out = -(-size // stride)
    return same_split((out - 1) * stride + kernel - size, mode)


def fit(y: torch.Tensor, starts: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``y`` to ``sizes`` from ``starts``, zero-padding at the end if short."""
    n = len(sizes)
    pads: list[int] = []
    for i, (start, size) in enumerate(zip(starts, sizes)):
        axis = y.dim() - n + i
        y = y.narrow(axis, start, max(0, min(size, y.shape[axis] - start)))
        pads = [0, size - y.shape[axis]] + pads
    return F.pad(y, pads) if any(pads) else y


@layer("convolution")
def convolution(p: Any, ctx: Any) -> Fn:
    """2-D convolution or deconvolution over [..., C, H, W]; the weight may come as a second input."""
    ctx.require(1, 2)
    groups = int(p.nGroups) or 1
    kh, kw = _pair(p.kernelSize, 3)
    sh, sw = _pair(p.stride, 1)
    dh, dw = _pair(p.dilationFactor, 1)
    cout, kc = int(p.outputChannels), int(p.kernelChannels)
    bias = ctx.weight(p.bias, cout, "bias") if p.hasBias else None
    if p.isDeconvolution:
        if ctx.n_inputs != 1:
            raise ctx.error("a deconvolution takes its weights from the layer, not from a second input")
        w = ctx.weight(p.weights, None, "weights", (kc, cout // groups, kh, kw), axis=1)
        return _deconvolution(p, w, bias, groups, (sh, sw), (dh, dw))
    w = ctx.weight(p.weights, None, "weights", (cout, kc, kh, kw)) if ctx.n_inputs == 1 else None
    padding = p.WhichOneof("ConvolutionPaddingType")
    pads = border(p.valid.paddingAmounts) if padding == "valid" else None
    mode = p.same.asymmetryMode

    def run(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        k = w if weight is None else weight
        x4, lead = as_nchw(x, "convolution")
        if pads is None:
            top, bottom = same_pads(x4.shape[2], (kh - 1) * dh + 1, sh, mode)
            left, right = same_pads(x4.shape[3], (kw - 1) * dw + 1, sw, mode)
        else:
            top, bottom, left, right = pads
        if top or bottom or left or right:
            x4 = F.pad(x4, (left, right, top, bottom))
        y = F.conv2d(x4, k, bias, stride=(sh, sw), dilation=(dh, dw), groups=groups)
        return from_nchw(y, lead)

    return run


def _deconvolution(p: Any, w: torch.Tensor, bias: torch.Tensor | None, groups: int, stride: tuple[int, int],
                   dilation: tuple[int, int]) -> Fn:
    padding = p.WhichOneof("ConvolutionPaddingType")
    pads = border(p.valid.paddingAmounts) if padding == "valid" else None
    mode = p.same.asymmetryMode
    out_shape = [int(d) for d in p.outputShape]

    def run(x: torch.Tensor) -> torch.Tensor:
        x4, lead = as_nchw(x, "convolution")
        y = F.conv_transpose2d(x4, w, None, stride=stride, dilation=dilation, groups=groups)
        full = y.shape[2:]
        if pads is not None:
            top, bottom, left, right = pads
        else:
            top, bottom = same_split(full[0] - x4.shape[2] * stride[0], mode)
            left, right = same_split(full[1] - x4.shape[3] * stride[1], mode)
        size = out_shape or [full[0] - top - bottom, full[1] - left - right]
        y = fit(y, (top, left), size)
        if bias is not None:
            y = y + bias.reshape(-1, 1, 1)
        return from_nchw(y, lead)

    return run


_CUSTOM, _VALID, _SAME = 0, 1, 2


@layer("convolution3d")
def convolution3d(p: Any, ctx: Any) -> Fn:
    """3-D convolution or deconvolution over [..., C, D, H, W]."""
    ctx.require(1)
    groups = int(p.nGroups) or 1
    kernel = (int(p.kernelDepth) or 1, int(p.kernelHeight) or 1, int(p.kernelWidth) or 1)
    stride = (int(p.strideDepth) or 1, int(p.strideHeight) or 1, int(p.strideWidth) or 1)
    dilation = (int(p.dilationDepth) or 1, int(p.dilationHeight) or 1, int(p.dilationWidth) or 1)
    cin, cout = int(p.inputChannels), int(p.outputChannels)
    bias = ctx.weight(p.bias, cout, "bias") if p.hasBias else None
    custom = [(int(p.customPaddingFront), int(p.customPaddingBack)), (int(p.customPaddingTop),
              int(p.customPaddingBottom)), (int(p.customPaddingLeft), int(p.customPaddingRight))]
    kind = int(p.paddingType)
    if p.isDeconvolution:
        # Stored [C_in, C_out / groups, D, H, W], as coremltools' builder writes it (the proto comment
        # lists the first two axes the other way round).
        w = ctx.weight(p.weights, None, "weights", (cin, cout // groups, *kernel))
    else:
        w = ctx.weight(p.weights, None, "weights", (cout, cin // groups, *kernel))
    out_shape = [int(d) for d in p.outputShape]

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 4:
            raise ValueError(f"convolution3d needs a blob of rank at least 4, got {list(x.shape)}")
        lead = x.shape[:-4]
        x5 = x.reshape(-1, *x.shape[-4:])
        spatial = x5.shape[2:]
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        if p.isDeconvolution:
            y = F.conv_transpose3d(x5, w, None, stride=stride, dilation=dilation, groups=groups)
            if kind == _SAME:
                crops = [same_split(f - n * s, BOTTOM_RIGHT_HEAVY) for f, n, s in zip(y.shape[2:], spatial, stride)]
            else:
                crops = custom if kind == _CUSTOM else [(0, 0)] * 3
            size = out_shape or [f - a - b for f, (a, b) in zip(y.shape[2:], crops)]
            y = fit(y, [a for a, _ in crops], size)
        else:
            if kind == _SAME:
                pads = [same_pads(n, k, s, BOTTOM_RIGHT_HEAVY) for n, k, s in zip(spatial, eff, stride)]
            else:
                pads = custom if kind == _CUSTOM else [(0, 0)] * 3
            flat = [v for pair in reversed(pads) for v in pair]
            y = F.conv3d(F.pad(x5, flat) if any(flat) else x5, w, None, stride=stride, dilation=dilation,
                         groups=groups)
        if bias is not None:
            y = y + bias.reshape(-1, 1, 1, 1)
        return y.reshape(*lead, *y.shape[1:])

    return run


@layer("innerProduct")
def innerProduct(p: Any, ctx: Any) -> Fn:
    """Fully connected: [Cin] → [Cout], [x1, Cin] → [x1, Cout], [x1, x2, Cin] → [x1, x2, Cout],
    [x1, C, H, W] → [x1, Cout, 1, 1], [x1, x2, C, H, W] → [x1, x2, Cout, 1, 1].

    With int8DynamicQuantize the int8 weights are dequantized at load and the product is computed in
    float; Core ML quantizes the input to int8 as well, which changes results by quantization noise only.
    """
    ctx.require(1)
    cin, cout = int(p.inputChannels), int(p.outputChannels)
    w = ctx.weight(p.weights, None, "weights", (cout, cin))
    b = ctx.weight(p.bias, cout, "bias") if p.hasBias else None

    def run(x: torch.Tensor) -> torch.Tensor:
        r = x.dim()
        if r <= 3:
            return F.linear(x, w, b)
        if r == 4:
            return F.linear(x.reshape(x.shape[0], -1), w, b).reshape(x.shape[0], cout, 1, 1)
        if r == 5:
            y = F.linear(x.reshape(x.shape[0] * x.shape[1], -1), w, b)
            return y.reshape(x.shape[0], x.shape[1], cout, 1, 1)
        raise ValueError(f"innerProduct takes ranks 1 to 5, got shape {list(x.shape)}")

    return run


@layer("batchedMatmul")
def batchedMatmul(p: Any, ctx: Any) -> Fn:
    """Matrix product with numpy broadcasting; one input multiplies by the stored [X1, X2] weight."""
    ctx.require(1, 2)
    if ctx.n_inputs == 1:
        x1, x2 = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
        # Stored column-major: the row-major reading is W transposed, [X2, X1].
        wt = ctx.weight(p.weights, None, "weights", (x2, x1))
        b = ctx.weight(p.bias, x2, "bias") if p.hasBias else None
        return lambda a: F.linear(a, wt, b)
    ta, tb = p.transposeA, p.transposeB

    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a.unsqueeze(0) if a.dim() == 1 else a.transpose(-1, -2) if ta else a
        b = b.unsqueeze(-1) if b.dim() == 1 else b.transpose(-1, -2) if tb else b
        return torch.matmul(a, b)

    return run


@layer("embedding")
def embedding(p: Any, ctx: Any) -> Fn:
    """Row lookup: [..., 1, 1, 1] indices → [..., outputChannels, 1, 1]."""
    ctx.require(1)
    n_in, n_out = int(p.inputDim), int(p.outputChannels)
    table = ctx.weight(p.weights, None, "weights", (n_out, n_in)).t().contiguous()
    b = ctx.weight(p.bias, n_out, "bias") if p.hasBias else None

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or math.prod(x.shape[-3:]) != 1:
            raise ValueError(f"embedding takes [..., 1, 1, 1] indices, got shape {list(x.shape)}")
        y = F.embedding(indices(x.reshape(-1)), table)
        if b is not None:
            y = y + b
        return y.reshape(*x.shape[:-3], n_out, 1, 1)

    return run


@layer("embeddingND")
def embeddingND(p: Any, ctx: Any) -> Fn:
    """Row lookup: [..., 1] indices → [..., embeddingSize]."""
    ctx.require(1)
    vocab, size = int(p.vocabSize), int(p.embeddingSize)
    table = ctx.weight(p.weights, None, "weights", (size, vocab)).t().contiguous()
    b = ctx.weight(p.bias, size, "bias") if p.hasBias else None

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != 1:
            raise ValueError(f"embeddingND takes [..., 1] indices, got shape {list(x.shape)}")
        y = F.embedding(indices(x[..., 0]), table)
        return y + b if b is not None else y

    return run
