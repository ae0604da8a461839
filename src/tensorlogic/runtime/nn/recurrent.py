"""Recurrent layers: ``simpleRecurrent``, ``gru``, ``uniDirectionalLSTM``, ``biDirectionalLSTM``.

Inputs are [Seq, Batch, inputVectorSize, 1, 1] (trailing unit axes optional), optionally followed by the
initial states [1, Batch, outputVectorSize, 1, 1] (zeros when absent). Outputs keep the input's rank:
the output sequence (or last output), then the final states. Pre-activations are clipped to [-50, 50]
as the spec says. A reversed layer reads the sequence backwards and emits its outputs in processing
order; the backward half of a bidirectional LSTM is aligned with the input time steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .activation import activation_fn
from .registry import layer

Fn = Callable[..., tuple[torch.Tensor, ...]]
Act = Callable[[torch.Tensor], torch.Tensor]

CLIP = 50.0


def _clip(v: torch.Tensor) -> torch.Tensor:
    return v.clamp(-CLIP, CLIP)


def _sequence(x: torch.Tensor, size: int) -> torch.Tensor:
    """[Seq, Batch, I, 1, 1] (or [Seq, Batch, I]) as [Seq, Batch, I]."""
    if x.dim() < 3 or x.shape[2] != size or any(d != 1 for d in x.shape[3:]):
        raise ValueError(f"expected a [Seq, Batch, {size}, 1, 1] input, got {list(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1], size)


def _state(s: torch.Tensor | None, batch: int, size: int, like: torch.Tensor) -> torch.Tensor:
    if s is None:
        return like.new_zeros(batch, size)
    if s.numel() != batch * size:
        raise ValueError(f"an initial state of shape {list(s.shape)} does not hold [1, {batch}, {size}]")
    return s.reshape(batch, size)


def _emit(x: torch.Tensor, steps: Sequence[torch.Tensor], last: torch.Tensor, sequence: bool,
          *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Outputs in the input's rank: the sequence (or last step), then each final state as [1, B, H, ...]."""
    tail = (1,) * (x.dim() - 3)
    seq = torch.stack(list(steps)) if sequence else last.unsqueeze(0)
    return (seq.reshape(*seq.shape, *tail), *(s.reshape(1, *s.shape, *tail) for s in states))


def recurrent_activation(a: Any, ctx: Any) -> Act:
    """An activation inside a recurrent layer. coremltools' builder writes linear, hard sigmoid and scaled
    tanh without parameters; unset (zero) parameters take the standard defaults, which is what
    coremltools' own recurrent tests expect of Core ML: linear is the identity, hard sigmoid has alpha 0.2
    and beta 0.5, scaled tanh alpha = beta = 1 (plain tanh)."""
    kind = a.WhichOneof("NonlinearityType")
    if kind == "linear":
        alpha, beta = a.linear.alpha or 1.0, a.linear.beta
        return lambda x: x * alpha + beta
    if kind == "sigmoidHard":
        alpha, beta = a.sigmoidHard.alpha or 0.2, a.sigmoidHard.beta or 0.5
        return lambda x: (x * alpha + beta).clamp(0.0, 1.0)
    if kind == "scaledTanh":
        alpha, beta = a.scaledTanh.alpha or 1.0, a.scaledTanh.beta or 1.0
        return lambda x: alpha * torch.tanh(beta * x)
    return activation_fn(a, ctx)


def _acts(ctx: Any, params: Sequence[Any], n: int) -> list[Act]:
    if len(params) != n:
        raise ctx.error(f"needs {n} activations, the layer gives {len(params)}")
    return [recurrent_activation(a, ctx) for a in params]


@layer("simpleRecurrent")
def simpleRecurrent(p: Any, ctx: Any) -> Fn:
    """``y_t = f(clip(W x_t + R y_{t-1} + b))``."""
    ctx.require(1, 2, outputs=(1, 2))
    n_in, n_out = int(p.inputVectorSize), int(p.outputVectorSize)
    w = ctx.weight(p.weightMatrix, None, "weightMatrix", (n_out, n_in))
    r = ctx.weight(p.recursionMatrix, None, "recursionMatrix", (n_out, n_out))
    b = ctx.weight(p.biasVector, n_out, "biasVector") if p.hasBiasVector else None
    f = recurrent_activation(p.activation, ctx)
    reverse, sequence = p.reverseInput, p.sequenceOutput

    def run(x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        xs = _sequence(x, n_in)
        xs = xs.flip(0) if reverse else xs
        proj = F.linear(xs, w, b)
        h, outs = _state(h0, xs.shape[1], n_out, xs), []
        for t in range(xs.shape[0]):
            h = f(_clip(proj[t] + h @ r.t()))
            outs.append(h)
        return _emit(x, outs, h, sequence, h)

    return run


@layer("gru")
def gru(p: Any, ctx: Any) -> Fn:
    """GRU: z, r = f(...), o = g(W_o x + R_o (r * y) + b_o), ``y = (1 - z) * o + z * y_prev``."""
    ctx.require(1, 2, outputs=(1, 2))
    n_in, n_out = int(p.inputVectorSize), int(p.outputVectorSize)
    mats = [ctx.weight(getattr(p, f"{g}GateWeightMatrix"), None, f"{g}GateWeightMatrix", (n_out, n_in))
            for g in ("update", "reset", "output")]
    recs = [ctx.weight(getattr(p, f"{g}GateRecursionMatrix"), None, f"{g}GateRecursionMatrix", (n_out, n_out))
            for g in ("update", "reset", "output")]
    w = torch.cat(mats)
    b = torch.cat([ctx.weight(getattr(p, f"{g}GateBiasVector"), n_out, f"{g}GateBiasVector")
                   for g in ("update", "reset", "output")]) if p.hasBiasVectors else None
    r_zr, r_o = torch.cat(recs[:2]).t(), recs[2].t()
    f, g = _acts(ctx, p.activations, 2)
    reverse, sequence = p.reverseInput, p.sequenceOutput

    def run(x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        xs = _sequence(x, n_in)
        xs = xs.flip(0) if reverse else xs
        proj = F.linear(xs, w, b)
        h, outs = _state(h0, xs.shape[1], n_out, xs), []
        for t in range(xs.shape[0]):
            p_z, p_r, p_o = proj[t].split(n_out, -1)
            h_z, h_r = (h @ r_zr).split(n_out, -1)
            z, r = f(_clip(p_z + h_z)), f(_clip(p_r + h_r))
            o = g(_clip(p_o + (h * r) @ r_o))
            h = (1 - z) * o + z * h
            outs.append(h)
        return _emit(x, outs, h, sequence, h)

    return run


_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


class _LSTM:
    """One direction's weights: gates stacked [input, forget, block input, output]."""

    def __init__(self, ctx: Any, wp: Any, params: Any, n_in: int, n_out: int):
        self.n = n_out
        self.w = torch.cat([ctx.weight(getattr(wp, f"{g}WeightMatrix"), None, f"{g}WeightMatrix", (n_out, n_in))
                            for g in _GATES])
        self.r = torch.cat([ctx.weight(getattr(wp, f"{g}RecursionMatrix"), None, f"{g}RecursionMatrix",
                                       (n_out, n_out)) for g in _GATES]).t()
        self.b: torch.Tensor | None = None
        if params.hasBiasVectors:
            self.b = torch.cat([ctx.weight(getattr(wp, f"{g}BiasVector"), n_out, f"{g}BiasVector") for g in _GATES])
        if params.forgetBias:
            ones = torch.cat([torch.zeros(n_out), torch.ones(n_out), torch.zeros(2 * n_out)]).to(ctx.device, ctx.dtype)
            self.b = ones if self.b is None else self.b + ones
        self.peep = None
        if params.hasPeepholeVectors:
            self.peep = [ctx.weight(getattr(wp, f"{g}PeepholeVector"), n_out, f"{g}PeepholeVector")
                         for g in ("inputGate", "forgetGate", "outputGate")]

    def run(self, xs: torch.Tensor, h: torch.Tensor, c: torch.Tensor, acts: Sequence[Act], coupled: bool,
            cell_clip: float) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        f, g, hact = acts
        proj = F.linear(xs, self.w, self.b)
        outs = []
        for t in range(xs.shape[0]):
            gi, gf, gz, go = (proj[t] + h @ self.r).split(self.n, -1)
            if self.peep is not None:
                gi, gf = gi + self.peep[0] * c, gf + self.peep[1] * c
            i, z = f(_clip(gi)), g(_clip(gz))
            c = c * (1 - i) + i * z if coupled else c * f(_clip(gf)) + i * z
            c = c.clamp(-cell_clip, cell_clip)
            if self.peep is not None:
                go = go + self.peep[2] * c
            h = hact(c) * f(_clip(go))
            outs.append(h)
        return outs, h, c


def _lstm_params(p: Any) -> tuple[bool, bool, float]:
    params = p.params
    return params.sequenceOutput, params.coupledInputAndForgetGate, params.cellClipThreshold or 50.0


@layer("uniDirectionalLSTM")
def uniDirectionalLSTM(p: Any, ctx: Any) -> Fn:
    """LSTM with optional peepholes, forget-gate bias, coupled input/forget gates and cell clipping.
    Inputs (x, h0, c0); outputs (y, h, c)."""
    ctx.require(1, 3, outputs=(1, 3))
    n_in, n_out = int(p.inputVectorSize), int(p.outputVectorSize)
    cell = _LSTM(ctx, p.weightParams, p.params, n_in, n_out)
    acts = _acts(ctx, p.activations, 3)
    sequence, coupled, cell_clip = _lstm_params(p)
    reverse = p.reverseInput

    def run(x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None) -> tuple:
        xs = _sequence(x, n_in)
        xs = xs.flip(0) if reverse else xs
        batch = xs.shape[1]
        outs, h, c = cell.run(xs, _state(h0, batch, n_out, xs), _state(c0, batch, n_out, xs), acts, coupled,
                              cell_clip)
        return _emit(x, outs, h, sequence, h, c)

    return run


@layer("biDirectionalLSTM")
def biDirectionalLSTM(p: Any, ctx: Any) -> Fn:
    """Forward and backward LSTMs concatenated on the feature axis. Inputs (x, h0, c0, h0_back, c0_back);
    outputs (y, h, c, h_back, c_back)."""
    ctx.require(1, 5, outputs=(1, 5))
    n_in, n_out = int(p.inputVectorSize), int(p.outputVectorSize)
    if len(p.weightParams) != 2:
        raise ctx.error(f"needs 2 weightParams (forward, backward), got {len(p.weightParams)}")
    fwd = _LSTM(ctx, p.weightParams[0], p.params, n_in, n_out)
    bwd = _LSTM(ctx, p.weightParams[1], p.params, n_in, n_out)
    acts_f = _acts(ctx, p.activationsForwardLSTM, 3)
    acts_b = _acts(ctx, p.activationsBackwardLSTM, 3) if len(p.activationsBackwardLSTM) else acts_f
    sequence, coupled, cell_clip = _lstm_params(p)

    def run(x: torch.Tensor, *states: torch.Tensor) -> tuple:
        xs = _sequence(x, n_in)
        batch = xs.shape[1]
        init = [_state(states[i] if i < len(states) else None, batch, n_out, xs) for i in range(4)]
        outs_f, h_f, c_f = fwd.run(xs, init[0], init[1], acts_f, coupled, cell_clip)
        outs_b, h_b, c_b = bwd.run(xs.flip(0), init[2], init[3], acts_b, coupled, cell_clip)
        steps = [torch.cat([a, b], -1) for a, b in zip(outs_f, outs_b[::-1])]
        return _emit(x, steps, torch.cat([h_f, h_b], -1), sequence, h_f, c_f, h_b, c_b)

    return run
