"""Normalization, resampling, recurrent and NMS layers against numpy float64 references of the spec's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TOLERANCES

rng = np.random.default_rng(3)


def assert_close(got, want, dtype="float32", scale=1.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, atol=atol * scale, rtol=rtol * scale)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_batchnorm_variants(layer_case):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    gamma, beta = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    mean, var = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)

    def layers(b):
        b.add_batchnorm("bn", 3, gamma, beta, mean, var, "x", "out", epsilon=1e-3)
        b.add_batchnorm("in", 3, gamma, beta, input_name="x", output_name="inst", compute_mean_var=True,
                        instance_normalization=True, epsilon=1e-4)
        b.add_batchnorm("bb", 3, gamma, beta, input_name="x", output_name="batch", compute_mean_var=True,
                        instance_normalization=True, epsilon=1e-4)
        # The builder refuses batch statistics; the spec defines them (mean and variance over the batch too).
        b.spec.neuralNetwork.layers[-1].batchnorm.instanceNormalization = False

    out = layer_case(layers, {"x": x}, outputs=("out", "inst", "batch"))
    v, c = x.astype(np.float64), (slice(None), None, None)
    assert_close(out["out"], gamma[c] * (v - mean[c]) / np.sqrt(var[c] + 1e-3) + beta[c])
    for name, axes in (("inst", (2, 3)), ("batch", (0, 2, 3))):
        m, s = v.mean(axes, keepdims=True), v.var(axes, keepdims=True)
        assert_close(out[name], gamma[c] * (v - m) / np.sqrt(s + 1e-4) + beta[c])


def test_mvn_l2_lrn_softmax(layer_case):
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)

    def layers(b):
        b.add_mvn("m1", "x", "m1", across_channels=True, normalize_variance=True, epsilon=1e-4)
        b.add_mvn("m2", "x", "m2", across_channels=False, normalize_variance=False)
        b.add_l2_normalize("l2", "x", "l2", epsilon=1e-6)
        b.add_lrn("lrn", "x", "lrn", alpha=0.3, beta=0.75, local_size=3, k=2.0)
        b.add_softmax("sm", "x", "sm")
        b.add_softmax_nd("smn", "x", "smn", axis=-1)

    out = layer_case(layers, {"x": x}, outputs=("m1", "m2", "l2", "lrn", "sm", "smn"))
    v = x.astype(np.float64)
    chw = (1, 2, 3)
    assert_close(out["m1"], (v - v.mean(chw, keepdims=True)) / np.sqrt(v.var(chw, keepdims=True) + 1e-4))
    assert_close(out["m2"], v - v.mean((2, 3), keepdims=True))
    assert_close(out["l2"], v / np.sqrt((v * v).sum(chw, keepdims=True) + 1e-6))
    sq = np.pad(v * v, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = sum(sq[:, i:i + 4] for i in range(3))
    assert_close(out["lrn"], v / (2.0 + 0.3 / 3 * window) ** 0.75)
    e = np.exp(v - v.max(1, keepdims=True))
    assert_close(out["sm"], e / e.sum(1, keepdims=True))
    e = np.exp(v - v.max(-1, keepdims=True))
    assert_close(out["smn"], e / e.sum(-1, keepdims=True))


def test_layer_normalization(layer_case):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    gamma, beta = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    out = layer_case(lambda b: b.add_layer_normalization("ln", "x", "out", [4, 5], gamma, beta, eps=1e-5), {"x": x})
    v = x.astype(np.float64)
    m, s = v.mean((1, 2), keepdims=True), v.var((1, 2), keepdims=True)
    assert_close(out["out"], gamma * (v - m) / np.sqrt(s + 1e-5) + beta)


def lerp_axis(v, axis, pos):
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, v.shape[axis] - 1)
    w = (pos - lo).reshape([-1 if i == axis else 1 for i in range(v.ndim)])
    return np.take(v, lo, axis) * (1 - w) + np.take(v, hi, axis) * w


def test_upsample_spec_example(layer_case):
    """SimpleTest in coremltools: [1, 2, 3] upsampled ×3 (DEFAULT linear mode)."""
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 1, 3)
    out = layer_case(lambda b: b.add_upsample("u", 2, 3, "x", "out", mode="BILINEAR"), {"x": x}, rank5=True)
    row = [1, 4 / 3, 5 / 3, 2, 7 / 3, 8 / 3, 3, 3, 3]
    assert_close(out["out"][0, 0, 0], np.array([row, row]))


@pytest.mark.parametrize("mode,factors", [("NN", (2, 3)), ("ALIGN_CORNERS_TRUE", (2, 3)),
                                          ("ALIGN_CORNERS_FALSE", (2, 2)), ("ALIGN_CORNERS_TRUE", (1.5, 2.5))])
def test_upsample(layer_case, mode, factors):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    kw = {"mode": "NN"} if mode == "NN" else {"mode": "BILINEAR", "linear_upsample_mode": mode}
    out = layer_case(lambda b: b.add_upsample("u", factors[0], factors[1], "x", "out", **kw), {"x": x})
    v = x.astype(np.float64)
    if mode == "NN":
        want = v.repeat(factors[0], 2).repeat(factors[1], 3)
    else:
        want = v
        for axis, f in ((2, factors[0]), (3, factors[1])):
            n_in = v.shape[axis]
            n_out = int(np.floor(n_in * f))
            i = np.arange(n_out)
            pos = i * (n_in - 1) / (n_out - 1) if mode == "ALIGN_CORNERS_TRUE" else \
                np.clip((i + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
            want = lerp_axis(want, axis, pos)
    assert_close(out["out"], want)


@pytest.mark.parametrize("mode", ["STRICT_ALIGN_ENDPOINTS_MODE", "ALIGN_ENDPOINTS_MODE", "UPSAMPLE_MODE",
                                  "ROI_ALIGN_MODE"])
def test_resize_bilinear(layer_case, mode):
    x = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    out = layer_case(lambda b: b.add_resize_bilinear("r", "x", "out", 7, 3, mode=mode), {"x": x})
    want = x.astype(np.float64)
    for axis, n_out in ((2, 7), (3, 3)):
        n_in = x.shape[axis]
        # Grids per NeuralNetwork.proto SamplingMode, via numpy.linspace.
        if mode in ("STRICT_ALIGN_ENDPOINTS_MODE", "ALIGN_ENDPOINTS_MODE"):
            pos = np.linspace(0, n_in - 1, n_out)
        elif mode == "UPSAMPLE_MODE":
            pos = np.minimum(n_in - 1, np.linspace(0, n_in - n_in / n_out, n_out))
        else:
            spacing = max(1, n_in - 1) / n_out
            pos = np.minimum(n_in - 1, np.linspace(0.5 * spacing, 0.5 * spacing + (n_out - 1) * spacing, n_out))
        want = lerp_axis(want, axis, pos)
    assert_close(out["out"], want)


def test_crop_resize(layer_case):
    x = rng.standard_normal((1, 2, 3, 6, 7)).astype(np.float32)  # [1, B, C, H, W]
    rois = np.array([[0, 1, 1, 4, 5], [1, 0.5, 2, 5, 6]], np.float32).reshape(2, 1, 5, 1, 1)
    out = layer_case(lambda b: b.add_crop_resize("cr", ["x", "roi"], "out", target_height=3, target_width=4,
                                                  mode="STRICT_ALIGN_ENDPOINTS_MODE"), {"x": x, "roi": rois},
                     rank5=True)
    want = np.zeros((2, 1, 3, 3, 4))
    for n, (bi, h0, w0, h1, w1) in enumerate(rois.reshape(2, 5).astype(np.float64)):
        img = x[0, int(bi)].astype(np.float64)
        crop = lerp_axis(lerp_axis(img, 1, np.linspace(h0, h1, 3)), 2, np.linspace(w0, w1, 4))
        want[n, 0] = crop
    assert_close(out["out"], want)


def rnn_weights(h, i, n):
    return [rng.standard_normal((h, h)).astype(np.float32) * 0.5 for _ in range(n)], \
        [rng.standard_normal((h, i)).astype(np.float32) * 0.5 for _ in range(n)], \
        [rng.standard_normal(h).astype(np.float32) * 0.5 for _ in range(n)]


def test_simple_rnn_and_gru(layer_case):
    seq, batch, i, h = 4, 2, 3, 5
    x = rng.standard_normal((seq, batch, i, 1, 1)).astype(np.float32)
    h0 = rng.standard_normal((1, batch, h, 1, 1)).astype(np.float32)
    (r,), (w,), (bias,) = rnn_weights(h, i, 1)
    gr, gw, gb = rnn_weights(h, i, 3)

    def layers(b):
        b.add_simple_rnn("rnn", r, w, bias, h, i, "TANH", ["x", "h0"], ["y", "hn"], output_all=True)
        b.add_gru("gru", gr, gw, gb, h, i, ["x", "h0"], ["gy", "ghn"], output_all=False, reverse_input=True)

    out = layer_case(layers, {"x": x, "h0": h0}, outputs=("y", "hn", "gy", "ghn"))
    xs = x.reshape(seq, batch, i).astype(np.float64)
    state, ys = h0.reshape(batch, h).astype(np.float64), []
    for t in range(seq):
        state = np.tanh(np.clip(xs[t] @ w.T + state @ r.T + bias, -50, 50))
        ys.append(state)
    assert_close(out["y"], np.stack(ys).reshape(seq, batch, h, 1, 1))
    assert_close(out["hn"], state.reshape(1, batch, h, 1, 1))
    hard = lambda v: np.clip(0.2 * v + 0.5, 0, 1)  # noqa: E731 - the builder's default gate activation
    state = h0.reshape(batch, h).astype(np.float64)
    for t in reversed(range(seq)):
        z = hard(xs[t] @ gw[0].T + state @ gr[0].T + gb[0])
        rr = hard(xs[t] @ gw[1].T + state @ gr[1].T + gb[1])
        o = np.tanh(xs[t] @ gw[2].T + (state * rr) @ gr[2].T + gb[2])
        state = (1 - z) * o + z * state
    assert_close(out["gy"], state.reshape(1, batch, h, 1, 1))
    assert_close(out["ghn"], state.reshape(1, batch, h, 1, 1))


def lstm_ref(xs, h, c, wr, wx, b, peep=None, forget_bias=False, coupled=False, reverse=False, out_act=np.tanh):
    """NeuralNetwork.proto LSTMParams equations, gates ordered (i, f, o, z) as the builder takes them."""
    steps = range(len(xs))
    outs = []
    for t in (reversed(steps) if reverse else steps):
        pre = [xs[t] @ wx[k].T + h @ wr[k].T + b[k] for k in range(4)]
        if forget_bias:
            pre[1] = pre[1] + 1
        if peep is not None:
            pre[0], pre[1] = pre[0] + peep[0] * c, pre[1] + peep[1] * c
        i, z = sigmoid(pre[0]), np.tanh(pre[3])
        c = c * (1 - i) + i * z if coupled else c * sigmoid(pre[1]) + i * z
        o = sigmoid(pre[2] + (peep[2] * c if peep is not None else 0))
        h = out_act(c) * o
        outs.append(h)
    return outs, h, c


@pytest.mark.parametrize("peephole,forget_bias,coupled,reverse", [(False, False, False, False),
                                                                  (True, True, False, True),
                                                                  (True, False, True, False)])
def test_unidirectional_lstm(layer_case, peephole, forget_bias, coupled, reverse):
    seq, batch, i, h = 5, 2, 3, 4
    x = rng.standard_normal((seq, batch, i, 1, 1)).astype(np.float32)
    h0 = rng.standard_normal((1, batch, h, 1, 1)).astype(np.float32) * 0.5
    c0 = rng.standard_normal((1, batch, h, 1, 1)).astype(np.float32) * 0.5
    wr, wx, b = rnn_weights(h, i, 4)
    peep = [rng.standard_normal(h).astype(np.float32) * 0.5 for _ in range(3)] if peephole else None
    out = layer_case(lambda bl: bl.add_unilstm("lstm", wr, wx, b, h, i, ["x", "h0", "c0"], ["y", "hn", "cn"],
                                               peep=peep, output_all=True, forget_bias=forget_bias,
                                               coupled_input_forget_gate=coupled, reverse_input=reverse),
                     {"x": x, "h0": h0, "c0": c0}, outputs=("y", "hn", "cn"))
    f64 = lambda a: [v.astype(np.float64) for v in a]  # noqa: E731
    outs, hn, cn = lstm_ref(x.reshape(seq, batch, i).astype(np.float64), h0.reshape(batch, h).astype(np.float64),
                            c0.reshape(batch, h).astype(np.float64), f64(wr), f64(wx), f64(b),
                            f64(peep) if peep else None, forget_bias, coupled, reverse)
    assert_close(out["y"], np.stack(outs).reshape(seq, batch, h, 1, 1))
    assert_close(out["hn"], hn.reshape(1, batch, h, 1, 1))
    assert_close(out["cn"], cn.reshape(1, batch, h, 1, 1))


@pytest.mark.parametrize("name,act", [("LINEAR", lambda v: v), ("SCALED_TANH", np.tanh)])
def test_lstm_parameterless_activations(layer_case, name, act):
    """The builder writes recurrent linear / scaled tanh without parameters: identity and plain tanh."""
    seq, batch, i, h = 3, 1, 2, 3
    x = rng.standard_normal((seq, batch, i, 1, 1)).astype(np.float32)
    wr, wx, b = rnn_weights(h, i, 4)
    out = layer_case(lambda bl: bl.add_unilstm("lstm", wr, wx, b, h, i, ["x"], ["y"], output_activation=name,
                                               output_all=True), {"x": x}, outputs=("y",))
    zero = np.zeros((batch, h))
    f64 = lambda a: [v.astype(np.float64) for v in a]  # noqa: E731
    outs, _, _ = lstm_ref(x.reshape(seq, batch, i).astype(np.float64), zero, zero, f64(wr), f64(wx), f64(b),
                          out_act=act)
    assert_close(out["y"], np.stack(outs).reshape(seq, batch, h, 1, 1))


def test_bidirectional_lstm(layer_case):
    seq, batch, i, h = 4, 1, 3, 2
    x = rng.standard_normal((seq, batch, i, 1, 1)).astype(np.float32)
    wr, wx, b = rnn_weights(h, i, 4)
    wrb, wxb, bb = rnn_weights(h, i, 4)
    out = layer_case(lambda bl: bl.add_bidirlstm("bi", wr, wx, b, wrb, wxb, bb, h, i, ["x"],
                                                 ["y", "hf", "cf", "hb", "cb"], output_all=True),
                     {"x": x}, outputs=("y", "hf", "cf", "hb", "cb"))
    xs = x.reshape(seq, batch, i).astype(np.float64)
    zero = np.zeros((batch, h))
    f64 = lambda a: [v.astype(np.float64) for v in a]  # noqa: E731
    outs_f, hf, cf = lstm_ref(xs, zero, zero, f64(wr), f64(wx), f64(b))
    outs_b, hb, cb = lstm_ref(xs, zero, zero, f64(wrb), f64(wxb), f64(bb), reverse=True)
    # The backward output at step t is the backward LSTM after reading x_T .. x_t.
    want = np.concatenate([np.stack(outs_f), np.stack(outs_b[::-1])], -1)
    assert_close(out["y"], want.reshape(seq, batch, 2 * h, 1, 1))
    for name, v in (("hf", hf), ("cf", cf), ("hb", hb), ("cb", cb)):
        assert_close(out[name], v.reshape(1, batch, h, 1, 1))


def test_non_maximum_suppression(layer_case):
    boxes = np.array([[[0, 0, 2, 2], [0.1, 0.1, 2, 2], [5, 5, 1, 1], [5.2, 5, 1, 1], [9, 9, 1, 1]]], np.float32)
    scores = np.array([[[0.9, 0.1], [0.8, 0.3], [0.2, 0.7], [0.1, 0.75], [0.05, 0.1]]], np.float32)
    out = layer_case(lambda b: b.add_nms("nms", ["boxes", "scores"], ["ob", "os", "oi", "on"], iou_threshold=0.5,
                                         score_threshold=0.15, max_boxes=4, per_class_suppression=False),
                     {"boxes": boxes, "scores": scores}, outputs=("ob", "os", "oi", "on"))
    # Best scores 0.9, 0.8, 0.7, 0.75, 0.1: box 1 overlaps box 0 (IoU > 0.5) and box 2 overlaps box 3; box 4 is
    # below the score threshold. Kept in score order: 0, 3.
    assert out["oi"].tolist() == [[0, 3, -1, -1]]
    assert out["on"].tolist() == [2]
    assert_close(out["ob"][0, :2], boxes[0, [0, 3]])
    assert_close(out["os"][0, :2], scores[0, [0, 3]])
    assert not out["ob"][0, 2:].any()


def test_crop_resize_all_batches_normalized_center_boxes(layer_case):
    """Boxes without batch index are taken from every batch image; normalized centre-size (width first) boxes."""
    x = rng.standard_normal((1, 2, 1, 5, 9)).astype(np.float32)
    boxes = np.array([[0.5, 0.5, 0.5, 0.5]], np.float32).reshape(1, 1, 4, 1, 1)  # w_center, h_center, w, h
    out = layer_case(lambda b: b.add_crop_resize("cr", ["x", "box"], "out", target_height=2, target_width=3,
                                                  mode="ALIGN_ENDPOINTS_MODE", normalized_roi=True,
                                                  box_indices_mode="CENTER_SIZE_WIDTH_FIRST"),
                     {"x": x, "box": boxes}, rank5=True)
    # In pixels: h from 0.25*4 = 1 to 0.75*4 = 3, w from 0.25*8 = 2 to 0.75*8 = 6.
    want = np.stack([lerp_axis(lerp_axis(x[0, b].astype(np.float64), 1, np.linspace(1, 3, 2)), 2,
                               np.linspace(2, 6, 3)) for b in range(2)])
    assert_close(out["out"], want[None])
