"""MIL recurrent family: gru, lstm, rnn with coremltools' weight layouts and gate orders.

Layouts: x is [seq, batch, input]; lstm gates are stacked [input, forget, output, cell] and its
peephole [input, forget, output]; gru gates are [reset, output(new), update]. A "reverse" layer
reads the sequence backwards and emits its outputs in processing order; a bidirectional lstm emits
the backward half aligned with the input time steps (as PyTorch does). Half-precision inputs run
the recurrence in float32 and are cast back, so long sequences do not drift.
"""

from __future__ import annotations

import torch

from ..registry import op

_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "scaled_tanh": torch.tanh,  # alpha = beta = 1, the only values MIL can express here
    "relu": torch.relu,
    "linear": lambda v: v,
    "hard_sigmoid": lambda v: (0.2 * v + 0.5).clamp(0, 1),
    "sigmoid_hard": lambda v: (0.2 * v + 0.5).clamp(0, 1),
}


def _act(name: str):
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (expected one of {', '.join(_ACTIVATIONS)})") from None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _f(t, dtype):
    return None if t is None else t.to(dtype)


def _check_direction(direction: str, allowed: tuple[str, ...]) -> None:
    if direction not in allowed:
        raise ValueError(f"unknown direction {direction!r} (expected {' or '.join(allowed)})")


def _input_proj(x, weight_ih, bias):
    """x @ W_ih^T (+ bias) for every time step at once: [seq, batch, gates*H]."""
    proj = x @ weight_ih.t()
    return proj if bias is None else proj + bias


@op("rnn", params={"direction": "str", "output_sequence": "bool", "activation": "str"}, since="iOS15")
def rnn(x: torch.Tensor, initial_h: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
        bias: torch.Tensor | None = None, *, direction: str = "forward", output_sequence: bool = False,
        activation: str = "tanh") -> tuple[torch.Tensor, ...]:
    """h_t = activation(W_ih x_t + W_hh h_{t-1} + bias)."""
    _check_direction(direction, ("forward", "reverse"))
    dt, act = _compute_dtype(x), _act(activation)
    xs = x.to(dt).flip(0) if direction == "reverse" else x.to(dt)
    proj = _input_proj(xs, weight_ih.to(dt), _f(bias, dt))
    h, w_hh, outs = initial_h.to(dt), weight_hh.to(dt).t(), []
    for t in range(xs.shape[0]):
        h = act(proj[t] + h @ w_hh)
        outs.append(h)
    return _outputs(outs, h, output_sequence, x.dtype)


def _outputs(outs, h, output_sequence, dtype, *states):
    seq = torch.stack(outs) if output_sequence else h.unsqueeze(0)
    return (seq.to(dtype), h.to(dtype), *(s.to(dtype) for s in states))


@op("gru", params={"direction": "str", "output_sequence": "bool", "recurrent_activation": "str",
                   "activation": "str", "reset_after": "bool"}, since="iOS15")
def gru(x: torch.Tensor, initial_h: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
        bias: torch.Tensor | None = None, input_bias: torch.Tensor | None = None, *, direction: str = "forward",
        output_sequence: bool = False, recurrent_activation: str = "sigmoid", activation: str = "tanh",
        reset_after: bool = False) -> tuple[torch.Tensor, ...]:
    """GRU with gates [r, o, z]; reset_after (iOS18) applies r after W_ho h + b_ho as PyTorch does."""
    _check_direction(direction, ("forward", "reverse"))
    dt, f, g = _compute_dtype(x), _act(recurrent_activation), _act(activation)
    xs = x.to(dt).flip(0) if direction == "reverse" else x.to(dt)
    hidden = weight_hh.shape[1]
    w = weight_hh.to(dt)
    w_r, w_o, w_z = w.split(hidden)
    w_rz = torch.cat([w_r, w_z]).t()
    # Without reset_after both biases simply add to the input projection.
    in_bias = _f(input_bias, dt) if reset_after else _merge(_f(input_bias, dt), _f(bias, dt))
    h_bias = _f(bias, dt) if reset_after else None
    proj = _input_proj(xs, weight_ih.to(dt), in_bias)
    h, outs = initial_h.to(dt), []
    for t in range(xs.shape[0]):
        p_r, p_o, p_z = proj[t].split(hidden, -1)
        if reset_after:
            h_r, h_o, h_z = _merge(h @ w.t(), h_bias).split(hidden, -1)
            r, z = f(p_r + h_r), f(p_z + h_z)
            o = g(p_o + r * h_o)
        else:
            h_r, h_z = (h @ w_rz).split(hidden, -1)
            r, z = f(p_r + h_r), f(p_z + h_z)
            o = g(p_o + (r * h) @ w_o.t())
        h = (1 - z) * o + z * h
        outs.append(h)
    return _outputs(outs, h, output_sequence, x.dtype)


def _merge(a, b):
    """a + b where either may be absent."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


def _lstm_direction(xs, h, c, w_ih, w_hh, bias, peephole, acts, clip):
    """One lstm pass over xs in order; returns per-step hidden states and the final (h, c)."""
    f_rec, f_cell, f_out = acts
    hidden = w_hh.shape[1]
    proj = _input_proj(xs, w_ih, bias)
    p_i, p_f, p_o = peephole.split(hidden) if peephole is not None else (None, None, None)
    w_hh_t, outs = w_hh.t(), []
    for t in range(xs.shape[0]):
        gi, gf, go, gz = (proj[t] + h @ w_hh_t).split(hidden, -1)
        if peephole is not None:
            gi, gf = gi + c * p_i, gf + c * p_f
        c = f_rec(gf) * c + f_rec(gi) * f_cell(gz)
        if clip is not None:
            c = c.clamp(-clip, clip)
        if peephole is not None:
            go = go + c * p_o
        h = f_rec(go) * f_out(c)
        outs.append(h)
    return outs, h, c


_LSTM_PARAMS = {"direction": "str", "output_sequence": "bool", "recurrent_activation": "str",
                "cell_activation": "str", "activation": "str", "clip": "float"}


@op("lstm", params=_LSTM_PARAMS, since="iOS15")
def lstm(x: torch.Tensor, initial_h: torch.Tensor, initial_c: torch.Tensor, weight_ih: torch.Tensor,
        weight_hh: torch.Tensor, bias: torch.Tensor | None = None, peephole: torch.Tensor | None = None,
        weight_ih_back: torch.Tensor | None = None, weight_hh_back: torch.Tensor | None = None,
        bias_back: torch.Tensor | None = None, peephole_back: torch.Tensor | None = None, *,
        direction: str = "forward", output_sequence: bool = False, recurrent_activation: str = "sigmoid",
        cell_activation: str = "tanh", activation: str = "tanh",
        clip: float | None = None) -> tuple[torch.Tensor, ...]:
    """LSTM with gates [i, f, o, z], optional peephole [i, f, o] and cell-state clipping to [-clip, clip]."""
    _check_direction(direction, ("forward", "reverse", "bidirectional"))
    dt = _compute_dtype(x)
    acts = (_act(recurrent_activation), _act(cell_activation), _act(activation))
    xs, h0, c0 = x.to(dt), initial_h.to(dt), initial_c.to(dt)
    fwd = (weight_ih.to(dt), weight_hh.to(dt), _f(bias, dt), _f(peephole, dt))
    if direction != "bidirectional":
        seq = xs.flip(0) if direction == "reverse" else xs
        outs, h, c = _lstm_direction(seq, h0, c0, *fwd, acts, clip)
        return _outputs(outs, h, output_sequence, x.dtype, c)
    if weight_ih_back is None or weight_hh_back is None:
        raise ValueError("a bidirectional lstm needs weight_ih_back and weight_hh_back")
    hidden = weight_hh.shape[1]
    back = (weight_ih_back.to(dt), weight_hh_back.to(dt), _f(bias_back, dt), _f(peephole_back, dt))
    outs_f, h_f, c_f = _lstm_direction(xs, h0[:, :hidden], c0[:, :hidden], *fwd, acts, clip)
    outs_b, h_b, c_b = _lstm_direction(xs.flip(0), h0[:, hidden:], c0[:, hidden:], *back, acts, clip)
    h, c = torch.cat([h_f, h_b], -1), torch.cat([c_f, c_b], -1)
    if output_sequence:
        seq = torch.cat([torch.stack(outs_f), torch.stack(outs_b[::-1])], -1)
    else:
        seq = h.unsqueeze(0)
    return seq.to(x.dtype), h.to(x.dtype), c.to(x.dtype)
