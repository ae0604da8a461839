"""Every TrainError message, word for word."""

from __future__ import annotations

import math

import pytest
import torch

from tensorlogic.errors import TensorLogicError
from tensorlogic.train import Trainer, TrainError, make_optimizer, make_scheduler


def _w() -> torch.Tensor:
    return torch.ones(2, requires_grad=True)


def _fails(match: str, **kwargs) -> None:
    with pytest.raises(TrainError) as info:
        Trainer(**{"params": {"w": _w()}, "out": None, **kwargs})
    assert str(info.value) == match
    assert "\n" not in str(info.value)


def _run_fails(step, match: str, epochs: int = 3, params: dict | None = None) -> TrainError:
    params = params or {"w": _w()}
    with pytest.raises(TrainError) as info:
        Trainer(params, epochs=epochs, out=None).run(step)
    assert str(info.value) == match
    return info.value


def test_train_error_is_a_tensorlogic_error() -> None:
    assert issubclass(TrainError, TensorLogicError)


def test_objective_not_scalar() -> None:
    w = _w()
    _run_fails(lambda e: w.sum() * torch.ones(3),
               "the objective must be a single number, got a tensor of shape [3]", params={"w": w})


def test_objective_not_a_tensor() -> None:
    _run_fails(lambda e: 3.0, "the objective must be a tensor computed from the learnable tensors, got float")


def test_objective_independent_of_learnables() -> None:
    _run_fails(lambda e: torch.tensor(1.0), "the objective does not depend on any learnable tensor (w)")


def test_objective_depending_on_another_tensor_only() -> None:
    other = torch.ones(1, requires_grad=True)
    w, b = _w(), _w()
    with pytest.raises(TrainError, match=r"^the objective does not depend on any learnable tensor \(w, b\)$"):
        Trainer({"w": w, "b": b}, epochs=2, out=None).run(lambda e: (other * 2).sum())


def test_one_element_objective_is_fine() -> None:
    w = _w()
    assert len(Trainer({"w": w}, epochs=2, out=None).run(lambda e: (w * w).sum().reshape(1, 1))) == 2


def test_non_finite_loss_names_the_epoch() -> None:
    w = _w()
    seen = []

    def step(epoch: int) -> torch.Tensor:
        seen.append(w.detach().clone())
        return (w * w).sum() * (math.inf if epoch == 2 else 1.0)

    _run_fails(step, "the objective is inf at epoch 3; training stopped "
               "(the learnable tensors keep their values from before that epoch)", params={"w": w})
    assert torch.equal(w.detach(), seen[2])


def test_nan_loss() -> None:
    w = _w()
    _run_fails(lambda e: (w * w).sum() * math.nan, "the objective is nan at epoch 1; training stopped "
               "(the learnable tensors keep their values from before that epoch)", params={"w": w})


def test_no_learnables() -> None:
    _fails("no learnable tensors: declare at least one tensor as learnable", params={})


def test_learnable_not_a_tensor() -> None:
    _fails("learnable 'w' must be a tensor, got list", params={"w": [1.0]})


def test_learnable_integer() -> None:
    _fails("learnable 'w' has dtype int64; learnable tensors must be float16 or float32",
           params={"w": torch.ones(2, dtype=torch.int64)})


def test_learnable_not_a_leaf() -> None:
    _fails("learnable 'w' is computed from other tensors; a learnable tensor must be a leaf",
           params={"w": _w() * 2})


def test_bad_epochs() -> None:
    _fails("epochs must be a whole number >= 0, got -1", epochs=-1)


def test_unknown_optimizer() -> None:
    _fails("unknown optimizer 'adma'; did you mean 'adam'? (known: sgd, adam, adamw)", optimizer=("adma", {}))
    _fails("unknown optimizer 'rmsprop' (known: sgd, adam, adamw)", optimizer="rmsprop")


def test_unknown_scheduler() -> None:
    _fails("unknown scheduler 'cosin'; did you mean 'cosine'? (known: step, exponential, cosine)",
           scheduler=("cosin", {}))


def test_unknown_optimizer_argument() -> None:
    _fails("optimizer sgd has no argument 'lrr'; did you mean 'lr'? (arguments: lr, momentum, nesterov, "
           "weight_decay)", optimizer=("sgd", {"lrr": 0.1}))


def test_unknown_scheduler_argument() -> None:
    _fails("scheduler step has no argument 'gama'; did you mean 'gamma'? (arguments: step_size, gamma)",
           scheduler=("step", {"gama": 0.1}))


def test_bad_argument_values() -> None:
    _fails("optimizer sgd: lr must be a finite number, got 'fast'", optimizer=("sgd", {"lr": "fast"}))
    _fails("optimizer sgd: nesterov must be true or false, got 2", optimizer=("sgd", {"nesterov": 2}))
    _fails("optimizer adam: betas must be two numbers, got 0.9", optimizer=("adam", {"betas": 0.9}))
    _fails("optimizer adam: give betas or beta1/beta2, not both",
           optimizer=("adam", {"betas": (0.9, 0.99), "beta1": 0.8}))
    _fails("scheduler step: step_size must be a positive whole number, got 2.5",
           scheduler=("step", {"step_size": 2.5}))
    _fails("optimizer must be a name or (name, {arg: value}), got 42", optimizer=42)


def test_torch_range_checks_become_train_errors() -> None:
    _fails("optimizer sgd: Invalid learning rate: -1.0", optimizer=("sgd", {"lr": -1}))
    with pytest.raises(TrainError, match=r"^optimizer sgd: Nesterov momentum requires"):
        make_optimizer(("sgd", {"nesterov": True}), [_w()])


def test_make_scheduler_none() -> None:
    assert make_scheduler(None, make_optimizer("sgd", [_w()]), 5) is None
