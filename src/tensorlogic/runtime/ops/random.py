"""MIL random ops (coremltools ``defs/iOS15/random.py``).

A ``seed`` other than -1 makes a call reproducible (a fresh generator seeded with it); -1 draws
from torch's global generator. The streams are torch's, not Core ML's: only the distributions
match. The output shape is data (the ``shape`` input), so it is read back from the device.
"""

from __future__ import annotations

import torch

from ..registry import op


def _generator(seed: int, device: torch.device) -> torch.Generator | None:
    if seed == -1:
        return None
    return torch.Generator(device=device).manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)


def _shape(shape: torch.Tensor) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape.reshape(-1).tolist())
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {list(dims)} has a negative dimension")
    return dims


@op("random_bernoulli", params={"prob": "float", "seed": "int"}, since="iOS15")
def random_bernoulli(shape: torch.Tensor, *, prob: float = 0.5, seed: int = -1) -> torch.Tensor:
    """1.0 with probability ``prob``, else 0.0."""
    dims = _shape(shape)
    u = torch.rand(dims, generator=_generator(seed, shape.device), device=shape.device)
    return (u < prob).to(torch.float32)


@op("random_categorical", params={"mode": "str", "size": "int", "seed": "int"}, since="iOS15")
def random_categorical(x: torch.Tensor, *, mode: str = "logits", size: int = 1, seed: int = -1) -> torch.Tensor:
    """``size`` class indices (as floats) per distribution along the last axis, drawn with replacement."""
    xf = x.to(torch.float32)
    if mode == "logits":
        probs = torch.softmax(xf, dim=-1)
    elif mode == "probs":
        probs = xf
    else:
        raise ValueError(f"unknown mode {mode!r} (expected 'logits' or 'probs')")
    flat = probs.reshape(-1, probs.shape[-1]) if probs.dim() else probs.reshape(1, 1)
    idx = torch.multinomial(flat, size, replacement=True, generator=_generator(seed, x.device))
    return idx.reshape(tuple(x.shape[:-1]) + (size,)).to(torch.float32)


@op("random_normal", params={"mean": "float", "stddev": "float", "seed": "int"}, since="iOS15")
def random_normal(shape: torch.Tensor, *, mean: float = 0.0, stddev: float = 1.0, seed: int = -1) -> torch.Tensor:
    """Normal samples with ``mean`` and ``stddev``."""
    dims = _shape(shape)
    z = torch.randn(dims, generator=_generator(seed, shape.device), device=shape.device)
    return z * stddev + mean


@op("random_uniform", params={"low": "float", "high": "float", "seed": "int"}, since="iOS15")
def random_uniform(shape: torch.Tensor, *, low: float = 0.0, high: float = 1.0, seed: int = -1) -> torch.Tensor:
    """Uniform samples in ``[low, high)``."""
    dims = _shape(shape)
    u = torch.rand(dims, generator=_generator(seed, shape.device), device=shape.device)
    return u * (high - low) + low
