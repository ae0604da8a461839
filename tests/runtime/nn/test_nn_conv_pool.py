"""Convolution, deconvolution, pooling and the other weighted layers against naive numpy float64 references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import TOLERANCES

rng = np.random.default_rng(0)


def assert_close(got, want, dtype="float32"):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    atol, rtol = TOLERANCES[dtype]
    # Half-precision sums err in proportion to the size of their terms, not of the (possibly tiny) result.
    scale = max(1.0, float(np.abs(want).max())) if dtype == "float16" else 1.0
    np.testing.assert_allclose(got, want, atol=atol * scale, rtol=rtol)


def ref_conv(x, w, b, stride, pads, dilation=(1, 1), groups=1):
    """x [N, C, H, W], w [O, C/g, kh, kw], pads (top, bottom, left, right): direct sum over windows."""
    t, bo, le, ri = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (le, ri)))
    n, c, h, wd = xp.shape
    o, cg, kh, kw = w.shape
    eh, ew = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    oh, ow = (h - eh) // stride[0] + 1, (wd - ew) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for g, i, j in itertools.product(range(groups), range(oh), range(ow)):
        patch = xp[:, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + eh:dilation[0],
                   j * stride[1]:j * stride[1] + ew:dilation[1]]
        out[:, g * og:(g + 1) * og, i, j] = np.einsum("nchw,ochw->no", patch, w[g * og:(g + 1) * og])
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


def ref_deconv_full(x, w, stride, groups=1):
    """Transposed convolution without cropping: every input pixel scatters its kernel. w [C, O/g, kh, kw]."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // groups
    out = np.zeros((n, og * groups, (h - 1) * stride[0] + kh, (wd - 1) * stride[1] + kw))
    for g, i, j in itertools.product(range(groups), range(h), range(wd)):
        contrib = np.einsum("nc,cokl->nokl", x[:, g * cg:(g + 1) * cg, i, j], w[g * cg:(g + 1) * cg])
        out[:, g * og:(g + 1) * og, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw] += contrib
    return out


def _builder_weights(w):
    """coremltools' builder takes conv weights as (kh, kw, C_in/g, C_out)."""
    return w.transpose(2, 3, 1, 0)


CONV_CASES = [
    # (C, H, W, O, k, stride, border, pads, asym, dilation, groups)
    (3, 7, 6, 4, (3, 3), (1, 1), "valid", (0, 0, 0, 0), None, (1, 1), 1),
    (3, 7, 6, 4, (3, 2), (2, 1), "valid", (1, 2, 0, 3), None, (1, 1), 1),
    (4, 8, 9, 6, (3, 3), (2, 2), "same", None, "BOTTOM_RIGHT_HEAVY", (1, 1), 2),
    (4, 8, 9, 6, (2, 4), (2, 3), "same", None, "TOP_LEFT_HEAVY", (1, 1), 1),
    (4, 9, 9, 4, (3, 3), (1, 1), "valid", (1, 1, 1, 1), None, (1, 1), 4),  # depthwise
    (2, 9, 10, 3, (3, 2), (1, 1), "same", None, "BOTTOM_RIGHT_HEAVY", (2, 3), 1),
]


def _same_pads(size, k, s, asym):
    out = -(-size // s)
    total = max(0, (out - 1) * s + k - size)
    small = total // 2
    return (small, total - small) if asym == "BOTTOM_RIGHT_HEAVY" else (total - small, small)


@pytest.mark.parametrize("policy", ["fp32", "fp16"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_convolution(layer_case, case, policy):
    c, h, wd, o, k, stride, border, pads, asym, dil, groups = case
    x = rng.standard_normal((2, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((o, c // groups, *k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    pad_kw = {} if pads is None else dict(zip(("padding_top", "padding_bottom", "padding_left", "padding_right"),
                                              pads))
    out = layer_case(lambda bl: bl.add_convolution(
        "conv", c // groups, o, k[0], k[1], stride[0], stride[1], border, groups, _builder_weights(w), b, True,
        input_name="x", output_name="out", dilation_factors=list(dil), same_padding_asymmetry_mode=asym or
        "BOTTOM_RIGHT_HEAVY", **pad_kw), {"x": x}, policy=policy)
    if pads is None:
        eff = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
        pads = (*_same_pads(h, eff[0], stride[0], asym), *_same_pads(wd, eff[1], stride[1], asym))
    want = ref_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride, pads, dil, groups)
    assert_close(out["out"], want, "float32" if policy == "fp32" else "float16")


def test_convolution_weights_from_second_input(layer_case):
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    out = layer_case(lambda bl: bl.add_convolution(
        "conv", 3, 5, 3, 3, 1, 1, "valid", 1, None, None, False, input_name=["x", "w"], output_name="out"),
        {"x": x, "w": w})
    assert_close(out["out"], ref_conv(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (0,) * 4))


DECONV_CASES = [
    # (C, H, W, O, k, stride, border, pads, output_shape, groups)
    (3, 4, 5, 2, (3, 3), (2, 2), "valid", (0, 0, 0, 0), None, 1),
    (4, 4, 4, 6, (3, 2), (2, 3), "valid", (1, 0, 2, 1), None, 2),
    (3, 4, 5, 2, (3, 3), (2, 2), "valid", (1, 1, 1, 1), (8, 10), 1),  # output_padding-like extra row/col
    (2, 5, 3, 3, (4, 4), (2, 2), "same", None, None, 1),
]


@pytest.mark.parametrize("case", DECONV_CASES, ids=[f"deconv{i}" for i in range(len(DECONV_CASES))])
def test_deconvolution(layer_case, case):
    c, h, wd, o, k, stride, border, pads, out_shape, groups = case
    x = rng.standard_normal((1, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((c, o // groups, *k)).astype(np.float32)  # spec layout [C_in, C_out/g, kh, kw]
    b = rng.standard_normal(o).astype(np.float32)
    pad_kw = {} if pads is None else dict(zip(("padding_top", "padding_bottom", "padding_left", "padding_right"),
                                              pads))
    out = layer_case(lambda bl: bl.add_convolution(
        "deconv", c, o, k[0], k[1], stride[0], stride[1], border, groups, w.transpose(2, 3, 0, 1), b, True,
        is_deconv=True, output_shape=out_shape, input_name="x", output_name="out", **pad_kw), {"x": x})
    full = ref_deconv_full(x.astype(np.float64), w.astype(np.float64), stride, groups)
    if border == "same":
        # Spec: H_out = H_in * stride; the surplus is cropped as SAME padding splits it (bottom/right heavy).
        th, tw = full.shape[2] - h * stride[0], full.shape[3] - wd * stride[1]
        want = full[:, :, th // 2:th // 2 + h * stride[0], tw // 2:tw // 2 + wd * stride[1]]
    else:
        t, bo, le, ri = pads
        hh, ww = out_shape or (full.shape[2] - t - bo, full.shape[3] - le - ri)
        want = np.zeros((1, o, hh, ww))
        crop = full[:, :, t:t + hh, le:le + ww]
        want[:, :, :crop.shape[2], :crop.shape[3]] = crop
    assert_close(out["out"], want + b.reshape(1, -1, 1, 1))


def test_convolution3d(layer_case):
    import torch

    x = rng.standard_normal((1, 4, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    out = layer_case(lambda bl: bl.add_convolution3d(
        "c3", 4, 6, 3, 2, 3, w, b, True, groups=2, stride_depth=2, stride_height=1, stride_width=2,
        padding_mode="custom", padding_front=1, padding_back=0, padding_top=0, padding_bottom=1, padding_left=2,
        padding_right=1, input_name="x", output_name="out"), {"x": x})
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 0), (0, 1), (2, 1)))
    want = torch.nn.functional.conv3d(torch.from_numpy(xp), torch.from_numpy(w.astype(np.float64)),
                                      torch.from_numpy(b.astype(np.float64)), stride=(2, 1, 2), groups=2).numpy()
    assert_close(out["out"], want)


def test_deconvolution3d_same(layer_case):
    import torch

    x = rng.standard_normal((1, 2, 3, 3, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)  # builder layout (C_out/g, C_in, D, H, W)
    out = layer_case(lambda bl: bl.add_convolution3d(
        "d3", 2, 3, 3, 3, 3, w, None, False, stride_depth=2, stride_height=2, stride_width=2, is_deconv=True,
        padding_mode="same", input_name="x", output_name="out"), {"x": x})
    full = torch.nn.functional.conv_transpose3d(torch.from_numpy(x.astype(np.float64)),
                                                torch.from_numpy(w.astype(np.float64).transpose(1, 0, 2, 3, 4)),
                                                stride=2).numpy()
    want = full[:, :, 0:6, 0:6, 0:8]  # total crop 1 per axis, bottom-right heavy: all of it at the end
    assert_close(out["out"], want)


def ref_pool(x, kind, k, s, pads, extra=(0, 0), exclude=True):
    """Windows over explicitly padded input; averages count real pixels, plus pads unless ``exclude``."""
    t, bo, le, ri = pads
    n, c, h, w = x.shape
    oh = (h + t + bo + extra[0] - k[0]) // s[0] + 1
    ow = (w + le + ri + extra[1] - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        r0, c0 = i * s[0] - t, j * s[1] - le
        rows = [r for r in range(r0, r0 + k[0]) if 0 <= r < h]
        cols = [q for q in range(c0, c0 + k[1]) if 0 <= q < w]
        win = x[:, :, rows][:, :, :, cols]
        if kind == "MAX":
            out[:, :, i, j] = win.max(axis=(2, 3))
        elif kind == "L2":
            out[:, :, i, j] = np.sqrt((win ** 2).sum(axis=(2, 3)))
        else:
            if exclude:
                count = len(rows) * len(cols)
            else:  # padded positions count, the extra include-last-pixel region does not
                rr = [r for r in range(r0, r0 + k[0]) if -t <= r < h + bo]
                cc = [q for q in range(c0, c0 + k[1]) if -le <= q < w + ri]
                count = len(rr) * len(cc)
            out[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return out


POOL_CASES = [
    # (kind, k, s, padding_type, pads, exclude)
    ("MAX", (2, 2), (2, 2), "VALID", (0, 0, 0, 0), True),
    ("AVERAGE", (3, 3), (2, 2), "VALID", (1, 1, 1, 1), True),
    ("AVERAGE", (3, 3), (2, 2), "VALID", (1, 1, 1, 1), False),
    ("L2", (2, 3), (1, 2), "VALID", (0, 1, 1, 0), True),
    ("MAX", (3, 3), (2, 2), "SAME", None, True),
    ("AVERAGE", (3, 2), (2, 2), "SAME", None, True),
    ("MAX", (3, 3), (2, 2), "INCLUDE_LAST_PIXEL", (1, 1, 1, 1), True),
    ("AVERAGE", (3, 3), (2, 2), "INCLUDE_LAST_PIXEL", (1, 1, 1, 1), False),
    ("AVERAGE", (2, 2), (2, 2), "INCLUDE_LAST_PIXEL", (0, 0, 0, 0), True),
]


@pytest.mark.parametrize("policy", ["fp32", "fp16"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(POOL_CASES)])
def test_pooling(layer_case, case, policy):
    kind, k, s, ptype, pads, exclude = case
    x = rng.standard_normal((1, 3, 8, 7)).astype(np.float32)
    kw = {} if pads is None else dict(zip(("padding_top", "padding_bottom", "padding_left", "padding_right"), pads))
    out = layer_case(lambda bl: bl.add_pooling("pool", k[0], k[1], s[0], s[1], kind, ptype, "x", "out",
                                               exclude_pad_area=exclude, **kw), {"x": x}, policy=policy)
    x64 = x.astype(np.float64)
    extra = (0, 0)
    if ptype == "SAME":
        pads = (*_same_pads(8, k[0], s[0], "BOTTOM_RIGHT_HEAVY"), *_same_pads(7, k[1], s[1], "BOTTOM_RIGHT_HEAVY"))
    elif ptype == "INCLUDE_LAST_PIXEL":
        # Caffe's ceil mode: out = ceil((H + 2p - k) / s) + 1, dropping a last window that starts in the padding.
        sizes = []
        for n, kk, ss, p in ((8, k[0], s[0], pads[0]), (7, k[1], s[1], pads[2])):
            o = -(-(n + 2 * p - kk) // ss) + 1
            if p > 0 and (o - 1) * ss >= n + p:
                o -= 1
            sizes.append((o - 1) * ss + kk - (n + 2 * p))
        extra = tuple(max(0, e) for e in sizes)
    want = ref_pool(x64, kind, k, s, pads, extra, exclude)
    assert_close(out["out"], want, "float32" if policy == "fp32" else "float16")


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_global_pooling_rank5(layer_case, kind):
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    out = layer_case(lambda bl: bl.add_pooling("gp", 1, 1, 1, 1, kind, "VALID", "x", "out", is_global=True),
                     {"x": x}, rank5=True)
    want = x.max(axis=(1, 2)) if kind == "MAX" else x.mean(axis=(1, 2))
    assert out["out"].shape == (1, 1, 2, 1, 1)  # rank-5 [Seq, Batch, C, H, W]
    assert_close(out["out"], want.reshape(1, 1, 2, 1, 1))


def test_pooling3d_and_global(layer_case):
    x = rng.standard_normal((1, 2, 4, 5, 6)).astype(np.float32)

    def layers(bl):
        bl.add_pooling3d("p3", "x", "out", "AVERAGE", 2, 2, 3, 2, 1, 3, padding_mode="custom", custom_padding_front=1,
                         custom_padding_back=1, average_pooling_count_excludes_padding=True)
        bl.add_global_pooling3d("g3", "x", "g", "MAX")

    out = layer_case(layers, {"x": x}, outputs=("out", "g"))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)), constant_values=np.nan)
    want = np.zeros((1, 2, 3, 4, 2))
    for d, i, j in itertools.product(range(3), range(4), range(2)):
        win = xp[:, :, d * 2:d * 2 + 2, i:i + 2, j * 3:j * 3 + 3]
        want[:, :, d, i, j] = np.nanmean(win, axis=(2, 3, 4))
    assert_close(out["out"], want)
    assert_close(out["g"], x.max(axis=(2, 3, 4), keepdims=True))


@pytest.mark.parametrize("shape", [(6,), (3, 6), (2, 3, 6), (2, 6, 1, 1), (2, 3, 2, 3, 1)])
def test_inner_product_ranks(layer_case, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out = layer_case(lambda bl: bl.add_inner_product("fc", w, b, 6, 4, True, "x", "out"), {"x": x})
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    if len(shape) <= 3:
        want = x64 @ w64.T + b
    elif len(shape) == 4:
        want = (x64.reshape(shape[0], -1) @ w64.T + b).reshape(shape[0], 4, 1, 1)
    else:
        want = (x64.reshape(shape[0] * shape[1], -1) @ w64.T + b).reshape(shape[0], shape[1], 4, 1, 1)
    assert_close(out["out"], want)


@pytest.mark.parametrize("ta,tb,sa,sb", [(False, False, (2, 3, 4), (4, 5)), (True, False, (4, 3), (1, 4, 5)),
                                         (False, True, (2, 1, 3, 4), (3, 5, 4)), (False, False, (4,), (4, 3))])
def test_batched_matmul_two_inputs(layer_case, ta, tb, sa, sb):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    out = layer_case(lambda bl: bl.add_batched_mat_mul("mm", ["a", "b"], "out", transpose_a=ta, transpose_b=tb),
                     {"a": a, "b": b})
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    a64 = a64[None] if a64.ndim == 1 else np.swapaxes(a64, -1, -2) if ta else a64
    b64 = np.swapaxes(b64, -1, -2) if tb else b64
    assert_close(out["out"], np.matmul(a64, b64))


def test_batched_matmul_weight(layer_case):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    out = layer_case(lambda bl: bl.add_batched_mat_mul("mm", ["a"], "out", weight_matrix_rows=4,
                                                       weight_matrix_columns=5, W=w, bias=bias), {"a": a})
    assert_close(out["out"], a.astype(np.float64) @ w.astype(np.float64) + bias)


def test_embeddings(layer_case):
    w = rng.standard_normal((5, 7)).astype(np.float32)  # [outputChannels, inputDim]
    idx = np.array([[3], [0], [6]], dtype=np.float32)

    def layers(bl):
        bl.add_embedding_nd("e", "i", "out", 7, 5, w, b=np.arange(5, dtype=np.float32))

    out = layer_case(layers, {"i": idx})
    assert_close(out["out"], w.T[[3, 0, 6]].astype(np.float64) + np.arange(5))
    legacy = layer_case(lambda bl: bl.add_embedding("e", w, None, 7, 5, False, "i", "out"),
                        {"i": np.array([4, 1], np.float32).reshape(2, 1, 1, 1)})
    assert_close(legacy["out"], w.T[[4, 1]].reshape(2, 5, 1, 1))


def _quantize(w, nbits, axis=0):
    """Per-channel linear quantization along ``axis``: codes, scales, biases (w ≈ codes * scale + bias)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    lo, hi = moved.min(1), moved.max(1)
    scale = (hi - lo) / (2 ** nbits - 1)
    codes = np.round((moved - lo[:, None]) / scale[:, None]).astype(np.uint8)
    deq = codes * scale[:, None] + lo[:, None]
    return codes, scale, lo, np.moveaxis(deq.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)


def _pack(codes, nbits):
    bits = ((codes.reshape(-1, 1) >> np.arange(nbits - 1, -1, -1)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


@pytest.mark.parametrize("nbits", [8, 4, 2])
def test_quantized_inner_product_linear(layer_case, nbits):
    w = rng.standard_normal((6, 5)).astype(np.float32)
    codes, scale, bias, deq = _quantize(w, nbits)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    raw = codes.tobytes() if nbits == 8 else _pack(codes, nbits)
    out = layer_case(lambda bl: bl.add_inner_product(
        "fc", raw, None, 5, 6, False, "x", "out", is_quantized_weight=True, quantization_type="linear", nbits=nbits,
        quant_scale=scale, quant_bias=bias), {"x": x})
    assert_close(out["out"], x.astype(np.float64) @ deq.T)


def test_quantized_lut_convolution(layer_case):
    lut = np.array([-1.5, -0.25, 0.5, 2.0], dtype=np.float32)
    codes = rng.integers(0, 4, size=(4, 3, 2, 2)).astype(np.uint8)  # [O, C, kh, kw]
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    raw = _pack(codes.transpose(2, 3, 1, 0), 2)  # the builder reshapes packed codes as (kh, kw, C, O)
    out = layer_case(lambda bl: bl.add_convolution(
        "conv", 3, 4, 2, 2, 1, 1, "valid", 1, raw, None, False, input_name="x", output_name="out",
        quantization_type="lut", nbits=2, quant_lut=lut), {"x": x})
    assert_close(out["out"], ref_conv(x.astype(np.float64), lut[codes].astype(np.float64), None, (1, 1), (0,) * 4))


def test_quantized_deconvolution_per_output_channel(device, nnh):
    """Deconvolution weights quantize per output channel, which is axis 1 of [C_in, C_out, kh, kw]."""
    from coremltools.models.neural_network.quantization_utils import _quantize_nn_spec

    make_builder, run_spec = nnh.make_builder, nnh.run_spec

    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    bl = make_builder({"x": x.shape})
    bl.add_convolution("deconv", 3, 4, 3, 3, 2, 2, "valid", 1, w.transpose(2, 3, 0, 1), None, False, is_deconv=True,
                       input_name="x", output_name="out")
    float_out = run_spec(bl.spec, {"x": x}, device)["out"]
    _quantize_nn_spec(bl.spec.neuralNetwork, 8, "_linear_quantization")
    assert bl.spec.neuralNetwork.layers[0].convolution.weights.rawValue  # really quantized
    q = bl.spec.neuralNetwork.layers[0].convolution.weights.quantization.linearQuantization
    assert len(q.scale) == 4  # one scale per output channel
    quant_out = run_spec(bl.spec, {"x": x}, device)["out"]
    err = np.abs(quant_out - float_out).max()
    assert err < 0.05 * np.abs(float_out).max()
    assert err > 0  # the dequantized weights differ from the float ones


def test_int8_dynamic_quantized_matmul(layer_case):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    wq = rng.integers(-127, 128, size=(4, 5)).astype(np.int8)
    out = layer_case(lambda bl: bl.add_batched_mat_mul(
        "mm", ["x"], "out", weight_matrix_rows=4, weight_matrix_columns=5, W=wq.tobytes(), int_8_dynamic_quantize=True,
        is_quantized_weight=True, quantization_type="linear", nbits=8, quant_scale=np.array([0.02])), {"x": x})
    assert_close(out["out"], x.astype(np.float64) @ (wq.astype(np.float64) * 0.02))


def test_fp16_weights_are_read_as_fp16(device, nnh):
    from coremltools.models.utils import _convert_neural_network_spec_weights_to_fp16

    make_builder, run_spec = nnh.make_builder, nnh.run_spec

    w = rng.standard_normal((4, 6)).astype(np.float32)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    bl = make_builder({"x": x.shape})
    bl.add_inner_product("fc", w, np.ones(4, np.float32), 6, 4, True, "x", "out")
    spec = _convert_neural_network_spec_weights_to_fp16(bl.spec)
    assert spec.neuralNetwork.layers[0].innerProduct.weights.float16Value
    got = run_spec(spec, {"x": x}, device, policy="fp32")["out"]
    w16 = w.astype(np.float16).astype(np.float64)
    assert_close(got, x.astype(np.float64) @ w16.T + 1)
