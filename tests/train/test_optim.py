"""Optimizer steps and learning rates through Trainer vs torch.optim and the schedulers' closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tensorlogic.train import Trainer

STEPS = 10


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=g)
    y = torch.randn(6, generator=g)
    w0 = torch.randn(3, generator=g)
    return a, y, w0


def _loss(a: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # not quadratic, so momentum/adam states matter
    return ((a @ w - y) ** 2).mean() + 0.1 * torch.sin(w).sum()


def _trainer_path(spec: tuple[str, dict]) -> list[torch.Tensor]:
    a, y, w0 = _problem()
    w = w0.clone().requires_grad_(True)
    seen: list[torch.Tensor] = []

    def step(epoch: int) -> torch.Tensor:
        seen.append(w.detach().clone())
        return _loss(a, y, w)

    Trainer({"w": w}, optimizer=spec, epochs=STEPS, out=None).run(step)
    return [*seen, w.detach().clone()]


def _torch_path(cls: type, kwargs: dict) -> list[torch.Tensor]:
    a, y, w0 = _problem()
    w = w0.clone().requires_grad_(True)
    opt = cls([w], **kwargs)
    path = [w.detach().clone()]
    for _ in range(STEPS):
        opt.zero_grad()
        _loss(a, y, w).backward()
        opt.step()
        path.append(w.detach().clone())
    return path


CASES = [
    (("sgd", {"lr": 0.1}), torch.optim.SGD, {"lr": 0.1}),
    (("sgd", {"lr": 0.05, "momentum": 0.9}), torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}), torch.optim.SGD,
     {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    (("adam", {"lr": 0.01}), torch.optim.Adam, {"lr": 0.01}),
    (("adam", {"lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}), torch.optim.Adam,
     {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6}),
    (("adam", {"lr": 0.02, "betas": [0.85, 0.995], "amsgrad": True}), torch.optim.Adam,
     {"lr": 0.02, "betas": (0.85, 0.995), "amsgrad": True}),
    (("adam", {"lr": 0.02, "amsgrad": 1, "weight_decay": 0.1}), torch.optim.Adam,
     {"lr": 0.02, "amsgrad": True, "weight_decay": 0.1}),
    (("adamw", {"lr": 0.03, "weight_decay": 0.05}), torch.optim.AdamW, {"lr": 0.03, "weight_decay": 0.05}),
    (("adamw", {"lr": 0.03, "betas": (0.9, 0.98), "eps": 1e-7, "amsgrad": True}), torch.optim.AdamW,
     {"lr": 0.03, "betas": (0.9, 0.98), "eps": 1e-7, "amsgrad": True}),
]


@pytest.mark.parametrize("spec,cls,kwargs", CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_steps_equal_torch_optim(spec: tuple, cls: type, kwargs: dict) -> None:
    ours = _trainer_path(spec)
    ref = _torch_path(cls, kwargs)
    assert len(ours) == len(ref) == STEPS + 1
    for i, (p, q) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=f"step {i}")
    assert not torch.equal(ours[-1], ours[0])


def test_adam_matches_the_papers_update_in_float64() -> None:
    # Kingma & Ba, Algorithm 1, written out in numpy: independent of torch's implementation.
    a, y, w0 = _problem()
    ours = _trainer_path(("adam", {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}))
    an, yn = a.double().numpy(), y.double().numpy()
    w = w0.double().numpy().copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t in range(1, STEPS + 1):
        g = 2 * an.T @ (an @ w - yn) / len(yn) + 0.1 * np.cos(w)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(ours[t].double().numpy(), w, rtol=0, atol=1e-6)


def _lrs(scheduler: tuple, epochs: int, lr: float = 0.4) -> list[float]:
    w = torch.zeros(2, requires_grad=True)
    trainer = Trainer({"w": w}, optimizer=("sgd", {"lr": lr}), scheduler=scheduler, epochs=epochs, out=None)
    seen: list[float] = []

    def step(epoch: int) -> torch.Tensor:
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return (w * w).sum() + w.sum()

    trainer.run(step)
    return seen


def _torch_lrs(make, epochs: int, lr: float = 0.4) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(opt)
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_step_scheduler() -> None:
    ours = _lrs(("step", {"step_size": 3, "gamma": 0.5}), 10)
    assert ours == pytest.approx([0.4 * 0.5 ** (e // 3) for e in range(10)], rel=1e-12)
    assert ours == _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), 10)


def test_step_scheduler_defaults_are_the_originals() -> None:
    assert _lrs("step", 12) == pytest.approx([0.4 * 0.1 ** (e // 10) for e in range(12)], rel=1e-12)


def test_exponential_scheduler() -> None:
    ours = _lrs(("exponential", {"gamma": 0.9}), 8)
    assert ours == pytest.approx([0.4 * 0.9**e for e in range(8)], rel=1e-12)
    assert ours == _torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9), 8)
    assert _lrs("exponential", 3) == pytest.approx([0.4, 0.4 * 0.95, 0.4 * 0.95**2], rel=1e-12)


def test_cosine_scheduler() -> None:
    ours = _lrs(("cosine", {"t_max": 8, "eta_min": 0.01}), 9)
    expect = [0.01 + (0.4 - 0.01) * (1 + math.cos(math.pi * e / 8)) / 2 for e in range(9)]
    assert ours == pytest.approx(expect, rel=1e-9, abs=1e-12)
    assert ours == pytest.approx(_torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8, 0.01), 9))


def test_cosine_t_max_defaults_to_epochs() -> None:
    ours = _lrs("cosine", 6)
    assert ours == pytest.approx([0.4 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)], rel=1e-9, abs=1e-12)
