"""conv / conv_transpose against direct numpy float64 loops (and torch's own 'same' padding)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(3)


def np_conv(x, w, b, strides, dilations, pads, groups):
    """Direct convolution: x [N, Cin, *D], w [Cout, Cin/g, *K], pads [(before, after)] per dim."""
    n_sp = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    cout, cin_g = w.shape[:2]
    kernel = w.shape[2:]
    out_sp = [(x.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(n_sp)]
    y = np.zeros((x.shape[0], cout, *out_sp))
    cout_g = cout // groups
    for g in range(groups):
        xs = x[:, g * cin_g:(g + 1) * cin_g]
        ws = w[g * cout_g:(g + 1) * cout_g]
        for k in itertools.product(*[range(s) for s in kernel]):
            sl = tuple(slice(k[i] * dilations[i], k[i] * dilations[i] + (out_sp[i] - 1) * strides[i] + 1, strides[i])
                       for i in range(n_sp))
            patch = xs[(slice(None), slice(None)) + sl]
            y[:, g * cout_g:(g + 1) * cout_g] += np.einsum("nc...,oc->no...", patch, ws[(Ellipsis,) + k])
    if b is not None:
        y += b.reshape((1, -1) + (1,) * n_sp)
    return y


def np_conv_transpose(x, w, b, strides, dilations, groups):
    """Full (uncropped) transposed convolution: w [Cin, Cout/g, *K]."""
    n_sp = x.ndim - 2
    cin, cout_g = w.shape[:2]
    kernel = w.shape[2:]
    full = [(x.shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n_sp)]
    y = np.zeros((x.shape[0], cout_g * groups, *full))
    cin_g = cin // groups
    for g in range(groups):
        xs = x[:, g * cin_g:(g + 1) * cin_g]
        for k in itertools.product(*[range(s) for s in kernel]):
            sl = tuple(slice(k[i] * dilations[i], k[i] * dilations[i] + (x.shape[2 + i] - 1) * strides[i] + 1,
                             strides[i]) for i in range(n_sp))
            contrib = np.einsum("nc...,co->no...", xs, w[(slice(g * cin_g, (g + 1) * cin_g), slice(None)) + k])
            y[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + sl] += contrib
    if b is not None:
        y += b.reshape((1, -1) + (1,) * n_sp)
    return y


def spec_same_pads(sizes, kernel, strides, dilations, lower):
    """The spec's 'same' padding (coremltools defs/_utils.aggregated_pad), odd element after (before if lower)."""
    out = []
    for d, k, s, dil in zip(sizes, kernel, strides, dilations):
        total = max(0, s * math.ceil(d / s) - d + (k - 1) * dil + 1 - s)
        out.append((total - total // 2, total // 2) if lower else (total // 2, total - total // 2))
    return out


# (name, x shape, w shape, strides, dilations, groups, pad_type, pad, bias)
CONV_CASES = [
    ("1d-valid", (2, 3, 11), (4, 3, 3), [1], [1], 1, "valid", None, True),
    ("1d-custom-stride", (1, 2, 13), (3, 2, 4), [3], [1], 1, "custom", [2, 1], False),
    ("2d-valid", (2, 4, 7, 8), (6, 4, 3, 2), [1, 1], [1, 1], 1, "valid", None, True),
    ("2d-custom-asym", (1, 3, 9, 7), (2, 3, 3, 3), [2, 1], [1, 2], 1, "custom", [0, 2, 3, 1], True),
    ("2d-groups", (1, 6, 8, 8), (4, 3, 3, 3), [1, 1], [1, 1], 2, "custom", [1, 1, 1, 1], True),
    ("2d-depthwise", (2, 4, 6, 6), (8, 1, 3, 3), [2, 2], [1, 1], 4, "valid", None, False),
    ("2d-same-stride", (1, 2, 9, 10), (3, 2, 4, 3), [2, 3], [1, 1], 1, "same", None, True),
    ("2d-same_lower-stride", (1, 2, 9, 10), (3, 2, 4, 3), [2, 3], [1, 1], 1, "same_lower", None, True),
    ("2d-same-dilated", (1, 2, 8, 8), (2, 2, 2, 3), [1, 1], [2, 2], 1, "same", None, False),
    ("3d-custom", (1, 2, 5, 6, 4), (3, 2, 2, 3, 2), [1, 2, 1], [1, 1, 2], 1, "custom", [1, 0, 0, 1, 1, 1], True),
    ("3d-same_lower", (1, 1, 4, 5, 6), (1, 1, 2, 4, 3), [1, 1, 1], [1, 1, 1], 1, "same_lower", None, False),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(case, device, dtype):
    _, xs, ws, strides, dilations, groups, pad_type, pad, has_bias = case
    tdtype = getattr(torch, dtype)
    x = torch.tensor(RNG.standard_normal(xs), dtype=tdtype, device=device)
    w = torch.tensor(RNG.standard_normal(ws) * 0.3, dtype=tdtype, device=device)
    b = torch.tensor(RNG.standard_normal(ws[0]), dtype=tdtype, device=device) if has_bias else None
    kwargs = {"strides": strides, "dilations": dilations, "groups": groups, "pad_type": pad_type}
    if pad is not None:
        kwargs["pad"] = pad
    out = registry.get("conv").fn(x, w, b, **kwargs)
    xn, wn = x.double().cpu().numpy(), w.double().cpu().numpy()
    bn = None if b is None else b.double().cpu().numpy()
    if pad_type == "custom":
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(strides))]
    elif pad_type == "valid":
        pads = [(0, 0)] * len(strides)
    else:
        pads = spec_same_pads(xs[2:], ws[2:], strides, dilations, pad_type == "same_lower")
    expected = np_conv(xn, wn, bn, strides, dilations, pads, groups)
    assert out.dtype == tdtype and tuple(out.shape) == expected.shape
    if pad_type.startswith("same"):
        assert all(o == math.ceil(d / s) for o, d, s in zip(out.shape[2:], xs[2:], strides))
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 10, rtol=rtol)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("lower", [False, True])
def test_conv_same_matches_torch(lower, device):
    """Stride-1 'same' is torch's padding='same'; 'same_lower' is the same on flipped input and kernel."""
    x = torch.tensor(RNG.standard_normal((1, 1, 6, 7)), dtype=torch.float64)
    w = torch.tensor(RNG.standard_normal((1, 1, 4, 2)), dtype=torch.float64)
    if lower:
        expected = torch.nn.functional.conv2d(x.flip(2, 3), w.flip(2, 3), padding="same").flip(2, 3)
    else:
        expected = torch.nn.functional.conv2d(x, w, padding="same")
    pad_type = "same_lower" if lower else "same"
    out = registry.get("conv").fn(x.float().to(device), w.float().to(device), pad_type=pad_type)
    np.testing.assert_allclose(out.double().cpu().numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


# (name, x shape, w shape [Cin, Cout/g, *K], strides, dilations, groups, pad_type, pad, output_shape, bias)
CONVT_CASES = [
    ("1d-valid", (2, 3, 5), (3, 2, 3), [2], [1], 1, "valid", None, None, True),
    ("2d-custom", (1, 2, 4, 5), (2, 3, 3, 3), [2, 2], [1, 1], 1, "custom", [1, 1, 0, 2], None, True),
    ("2d-groups-dilated", (1, 4, 3, 4), (4, 2, 2, 3), [1, 2], [2, 1], 2, "custom", [0, 0, 1, 0], None, False),
    ("2d-same", (1, 2, 4, 3), (2, 2, 3, 3), [2, 2], [1, 1], 1, "same", None, None, True),
    ("2d-same-out-padding", (1, 2, 3, 3), (2, 1, 3, 3), [2, 2], [1, 1], 1, "custom", [1, 1, 1, 1], (1, 1, 6, 6), True),
    ("3d-valid", (1, 2, 2, 3, 2), (2, 2, 2, 2, 2), [1, 2, 1], [1, 1, 1], 1, "valid", None, None, True),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
def test_conv_transpose(case, device, dtype):
    _, xs, ws, strides, dilations, groups, pad_type, pad, output_shape, has_bias = case
    tdtype = getattr(torch, dtype)
    x = torch.tensor(RNG.standard_normal(xs), dtype=tdtype, device=device)
    w = torch.tensor(RNG.standard_normal(ws) * 0.3, dtype=tdtype, device=device)
    cout = ws[1] * groups
    b = torch.tensor(RNG.standard_normal(cout), dtype=tdtype, device=device) if has_bias else None
    kwargs = {"strides": strides, "dilations": dilations, "groups": groups, "pad_type": pad_type}
    if pad is not None:
        kwargs["pad"] = pad
    if output_shape is not None:
        kwargs["output_shape"] = output_shape
    out = registry.get("conv_transpose").fn(x, w, b, **kwargs)
    n = len(strides)
    full = np_conv_transpose(x.double().cpu().numpy(), w.double().cpu().numpy(),
                             None if b is None else b.double().cpu().numpy(), strides, dilations, groups)
    if pad_type == "custom":
        before = [pad[2 * i] for i in range(n)]
        size = [full.shape[2 + i] - pad[2 * i] - pad[2 * i + 1] for i in range(n)]
    elif pad_type == "same":
        size = [d * s for d, s in zip(xs[2:], strides)]
        before = [(full.shape[2 + i] - size[i]) // 2 for i in range(n)]
    else:
        before, size = [0] * n, list(full.shape[2:])
    if output_shape is not None:
        size = list(output_shape[2:])
    # Output positions past the full result get only the bias.
    bias = 0 if b is None else b.double().cpu().numpy().reshape((1, -1) + (1,) * n)
    expected = np.zeros((xs[0], cout, *size)) + bias
    src = tuple(slice(bf, min(bf + sz, f)) for bf, sz, f in zip(before, size, full.shape[2:]))
    dst = tuple(slice(0, s.stop - s.start) for s in src)
    expected[(slice(None), slice(None)) + dst] = full[(slice(None), slice(None)) + src]
    assert out.dtype == tdtype and tuple(out.shape) == expected.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 10, rtol=rtol)


def test_conv_transpose_output_padding_matches_torch(device):
    """output_shape one larger than the cropped size is torch's output_padding=1."""
    m = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = m(x).detach()
    out = registry.get("conv_transpose").fn(
        x.float().to(device), m.weight.detach().float().to(device), m.bias.detach().float().to(device),
        pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2], output_shape=list(expected.shape))
    np.testing.assert_allclose(out.double().cpu().numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_conv_quantized_linear(device):
    x = torch.tensor(RNG.standard_normal((1, 2, 5, 5)), dtype=torch.float32, device=device)
    q = RNG.integers(0, 255, size=(3, 2, 3, 3)).astype(np.uint8)
    scale, offset = 0.02, -1.3
    out = registry.get("conv_quantized").fn(
        x, torch.tensor(q, device=device), torch.tensor(scale, device=device), torch.tensor(offset, device=device),
        quantization_type="linear", nbits=8)
    expected = np_conv(x.double().cpu().numpy(), q * scale + offset, None, [1, 1], [1, 1], [(0, 0)] * 2, 1)
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=1e-4, rtol=1e-4)


def test_conv_errors():
    conv = registry.get("conv").fn
    with pytest.raises(ValueError, match="unknown pad_type 'bogus'"):
        conv(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2), pad_type="bogus")
    with pytest.raises(ValueError, match="rank 3 to 5"):
        conv(torch.zeros(1, 4), torch.zeros(1, 1, 2), pad_type="valid")
    with pytest.raises(ValueError, match="quantization_type 'lut' is not supported"):
        registry.get("conv_quantized").fn(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2), torch.ones(()),
                                          torch.zeros(()), quantization_type="lut")
