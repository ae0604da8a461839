"""gru/lstm/rnn against torch float64 nn.GRU/LSTM/RNN (gates reordered to MIL layouts) and numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

S, B, I, H = 5, 3, 4, 6


def _ifzo_to_ifoz(w):
    i, f, z, o = np.split(w, 4)
    return np.concatenate([i, f, o, z])


def _rzn_to_ron(w):
    r, z, n = np.split(w, 3)
    return np.concatenate([r, n, z])


def _run(name, device, dtype, arrays, **kwargs):
    t = {k: torch.tensor(v, dtype=getattr(torch, dtype), device=device) for k, v in arrays.items()}
    return registry.get(name).fn(**t, **kwargs)


def _close(got, expected, dtype, scale=10):
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(got.double().cpu().numpy(), expected, atol=atol * scale, rtol=rtol * scale)


def _torch_layer(cls, seed, **kw):
    torch.manual_seed(seed)
    return cls(I, H, dtype=torch.float64, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("output_sequence", [True, False])
def test_lstm_vs_torch(device, dtype, direction, output_sequence):
    m = _torch_layer(torch.nn.LSTM, 1)
    x, h0, c0 = torch.randn(S, B, I, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64), \
        torch.randn(1, B, H, dtype=torch.float64)
    seq, (hn, cn) = m(x.flip(0) if direction == "reverse" else x, (h0, c0))
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    arrays = {"x": x.numpy(), "initial_h": h0[0].numpy(), "initial_c": c0[0].numpy(),
              "weight_ih": _ifzo_to_ifoz(sd["weight_ih_l0"]), "weight_hh": _ifzo_to_ifoz(sd["weight_hh_l0"]),
              "bias": _ifzo_to_ifoz(sd["bias_ih_l0"] + sd["bias_hh_l0"])}
    out, h, c = _run("lstm", device, dtype, arrays, direction=direction, output_sequence=output_sequence)
    _close(out, seq.detach().numpy() if output_sequence else hn.detach().numpy(), dtype)
    _close(h, hn[0].detach().numpy(), dtype)
    _close(c, cn[0].detach().numpy(), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("output_sequence", [True, False])
def test_bidirectional_lstm_vs_torch(device, dtype, output_sequence):
    m = _torch_layer(torch.nn.LSTM, 2, bidirectional=True)
    x, h0, c0 = (torch.randn(*s, dtype=torch.float64) for s in [(S, B, I), (2, B, H), (2, B, H)])
    seq, (hn, cn) = m(x, (h0, c0))
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    cat = lambda t: torch.cat([t[0], t[1]], -1).detach().numpy()  # noqa: E731
    arrays = {"x": x.numpy(), "initial_h": cat(h0), "initial_c": cat(c0)}
    for suffix, mil in (("", ""), ("_reverse", "_back")):
        arrays["weight_ih" + mil] = _ifzo_to_ifoz(sd["weight_ih_l0" + suffix])
        arrays["weight_hh" + mil] = _ifzo_to_ifoz(sd["weight_hh_l0" + suffix])
        arrays["bias" + mil] = _ifzo_to_ifoz(sd["bias_ih_l0" + suffix] + sd["bias_hh_l0" + suffix])
    out, h, c = _run("lstm", device, dtype, arrays, direction="bidirectional", output_sequence=output_sequence)
    last = torch.cat([seq[-1, :, :H], seq[0, :, H:]], -1).unsqueeze(0)
    _close(out, (seq if output_sequence else last).detach().numpy(), dtype)
    _close(h, cat(hn), dtype)
    _close(c, cat(cn), dtype)


_NP_ACT = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0),
           "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1), "linear": lambda v: v}


def _lstm_peephole_ref(x, w_ih, w_hh, b, p, clip, acts):
    f_rec, f_cell, f_out = (_NP_ACT[a] for a in acts)
    h, c, outs = np.zeros((x.shape[1], H)), np.zeros((x.shape[1], H)), []
    pi, pf, po = np.split(p, 3)
    for xt in x:
        gi, gf, go, gz = np.split(xt @ w_ih.T + h @ w_hh.T + b, 4, axis=-1)
        i, f = f_rec(gi + c * pi), f_rec(gf + c * pf)
        c = np.clip(f * c + i * f_cell(gz), -clip, clip)
        h = f_rec(go + c * po) * f_out(c)
        outs.append(h)
    return np.stack(outs), h, c


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("acts", [("sigmoid", "tanh", "tanh"), ("hard_sigmoid", "relu", "linear")])
@pytest.mark.parametrize("clip", [0.3, 50.0])
def test_lstm_peephole_clip_activations(device, dtype, acts, clip):
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (S, B, I))
    w_ih, w_hh = rng.uniform(-1, 1, (4 * H, I)), rng.uniform(-1, 1, (4 * H, H))
    b, p = rng.uniform(-0.5, 0.5, 4 * H), rng.uniform(-0.5, 0.5, 3 * H)
    arrays = {"x": x, "initial_h": np.zeros((B, H)), "initial_c": np.zeros((B, H)), "weight_ih": w_ih,
              "weight_hh": w_hh, "bias": b, "peephole": p}
    out, h, c = _run("lstm", device, dtype, arrays, output_sequence=True, recurrent_activation=acts[0],
                     cell_activation=acts[1], activation=acts[2], clip=clip)
    # Reference on the dtype-rounded weights, so fp16 only adds its compute error.
    r = lambda a: a.astype(dtype).astype(np.float64)  # noqa: E731
    seq, hn, cn = _lstm_peephole_ref(r(x), r(w_ih), r(w_hh), r(b), r(p), clip, acts)
    _close(out, seq, dtype)
    _close(h, hn, dtype)
    _close(c, cn, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_rnn_vs_torch(device, dtype, direction):
    m = _torch_layer(torch.nn.RNN, 3)
    x, h0 = torch.randn(S, B, I, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    seq, hn = m(x.flip(0) if direction == "reverse" else x, h0)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    arrays = {"x": x.numpy(), "initial_h": h0[0].numpy(), "weight_ih": sd["weight_ih_l0"],
              "weight_hh": sd["weight_hh_l0"], "bias": sd["bias_ih_l0"] + sd["bias_hh_l0"]}
    out, h = _run("rnn", device, dtype, arrays, direction=direction, output_sequence=True)
    _close(out, seq.detach().numpy(), dtype)
    _close(h, hn[0].detach().numpy(), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gru_reset_after_vs_torch(device, dtype):
    m = _torch_layer(torch.nn.GRU, 4)
    x, h0 = torch.randn(S, B, I, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    seq, hn = m(x, h0)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    arrays = {"x": x.numpy(), "initial_h": h0[0].numpy(), "weight_ih": _rzn_to_ron(sd["weight_ih_l0"]),
              "weight_hh": _rzn_to_ron(sd["weight_hh_l0"]), "input_bias": _rzn_to_ron(sd["bias_ih_l0"]),
              "bias": _rzn_to_ron(sd["bias_hh_l0"])}
    out, h = _run("gru", device, dtype, arrays, reset_after=True, output_sequence=True)
    _close(out, seq.detach().numpy(), dtype)
    _close(h, hn[0].detach().numpy(), dtype)


def _gru_ref(x, h, w_ih, w_hh, b, f, g):
    """coremltools' documented GRU: r applied to h before the hidden 'output' projection."""
    wr, wo, wz = np.split(w_ih, 3)
    rr, ro, rz = np.split(w_hh, 3)
    br, bo, bz = np.split(b, 3)
    outs = []
    for xt in x:
        z = f(xt @ wz.T + h @ rz.T + bz)
        r = f(xt @ wr.T + h @ rr.T + br)
        o = g(xt @ wo.T + (r * h) @ ro.T + bo)
        h = (1 - z) * o + z * h
        outs.append(h)
    return np.stack(outs), h


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("acts", [("sigmoid", "tanh"), ("tanh", "sigmoid")])
def test_gru(device, dtype, direction, acts):
    rng = np.random.default_rng(8)
    r = lambda a: a.astype(dtype).astype(np.float64)  # noqa: E731
    x, h0 = r(rng.uniform(-1, 1, (S, B, I))), r(rng.uniform(-1, 1, (B, H)))
    w_ih, w_hh, b = r(rng.uniform(-1, 1, (3 * H, I))), r(rng.uniform(-1, 1, (3 * H, H))), r(rng.uniform(-1, 1, 3 * H))
    arrays = {"x": x, "initial_h": h0, "weight_ih": w_ih, "weight_hh": w_hh, "bias": b}
    out, h = _run("gru", device, dtype, arrays, direction=direction, output_sequence=False,
                  recurrent_activation=acts[0], activation=acts[1])
    seq, hn = _gru_ref(x[::-1] if direction == "reverse" else x, h0, w_ih, w_hh, b, _NP_ACT[acts[0]], _NP_ACT[acts[1]])
    _close(out, seq[-1:], dtype)
    _close(h, hn, dtype)


def test_errors():
    x = torch.zeros(2, 1, 3)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        registry.get("rnn").fn(x, torch.zeros(1, 2), torch.zeros(2, 3), torch.zeros(2, 2), activation="swish")
    with pytest.raises(ValueError, match="unknown direction 'bidirectional'"):
        registry.get("gru").fn(x, torch.zeros(1, 2), torch.zeros(6, 3), torch.zeros(6, 2), direction="bidirectional")
    with pytest.raises(ValueError, match="needs weight_ih_back and weight_hh_back"):
        registry.get("lstm").fn(x, torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(8, 3), torch.zeros(8, 2),
                                direction="bidirectional")
