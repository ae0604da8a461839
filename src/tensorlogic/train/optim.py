"""Optimizer and scheduler specs of a learn block -> real ``torch.optim`` objects.

A spec is ``(name, {arg: value})`` (or just ``name``) with the learn block's names: ``sgd(lr, momentum,
nesterov, weight_decay)``, ``adam(lr, betas | beta1, beta2, eps, amsgrad, weight_decay)``, ``adamw(lr, betas |
beta1, beta2, eps, weight_decay, amsgrad)``; schedulers ``step(step_size, gamma)``, ``exponential(gamma)``,
``cosine(t_max, eta_min)``. Defaults follow the original where it has one (lr 0.001, step gamma 0.1,
exponential gamma 0.95, cosine t_max = epochs) and torch otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .errors import TrainError, did_you_mean

# kind of each argument: "num" (a real number), "int" (a positive whole number), "bool", "pair" (two numbers)
OPTIMIZERS: dict[str, dict[str, str]] = {
    "sgd": {"lr": "num", "momentum": "num", "nesterov": "bool", "weight_decay": "num"},
    "adam": {"lr": "num", "betas": "pair", "beta1": "num", "beta2": "num", "eps": "num", "amsgrad": "bool",
             "weight_decay": "num"},
    "adamw": {"lr": "num", "betas": "pair", "beta1": "num", "beta2": "num", "eps": "num", "weight_decay": "num",
              "amsgrad": "bool"},
}
SCHEDULERS: dict[str, dict[str, str]] = {
    "step": {"step_size": "int", "gamma": "num"},
    "exponential": {"gamma": "num"},
    "cosine": {"t_max": "int", "eta_min": "num"},
}
DEFAULT_LR = 0.001  # the original's learn block uses this when lr is not given


def split_spec(spec: Any, what: str) -> tuple[str, dict[str, Any]]:
    """``"sgd"`` or ``("sgd", {"lr": 0.1})`` -> (name, args), checked for shape only."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        return spec[0], dict(spec[1])
    raise TrainError(f"{what} must be a name or (name, {{arg: value}}), got {spec!r}")


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _number(what: str, key: str, value: Any) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TrainError(f"{what}: {key} must be a finite number, got {value!r}")
    return float(value)


def _check_args(what: str, args: Mapping[str, Any], kinds: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key not in kinds:
            raise TrainError(f"{what} has no argument '{key}'{did_you_mean(key, kinds)} "
                             f"(arguments: {', '.join(kinds)})")
        kind = kinds[key]
        value = _scalar(value)
        if kind == "bool":
            # The original's learn-block arguments are all numbers, so 0/1 mean false/true.
            if not isinstance(value, bool) and not (isinstance(value, numbers.Real) and value in (0, 1)):
                raise TrainError(f"{what}: {key} must be true or false, got {value!r}")
            out[key] = bool(value)
        elif kind == "int":
            num = _number(what, key, value)
            if num != int(num) or num < 1:
                raise TrainError(f"{what}: {key} must be a positive whole number, got {value!r}")
            out[key] = int(num)
        elif kind == "pair":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TrainError(f"{what}: {key} must be two numbers, got {value!r}")
            out[key] = (_number(what, key, value[0]), _number(what, key, value[1]))
        else:
            out[key] = _number(what, key, value)
    return out


def _known(kind: str, name: str, table: Mapping[str, Any]) -> None:
    if name not in table:
        raise TrainError(f"unknown {kind} '{name}'{did_you_mean(name, table)} (known: {', '.join(table)})")


def make_optimizer(spec: Any, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer a learn-block spec names, over ``params`` (float32 leaves)."""
    name, raw = split_spec(spec, "optimizer")
    _known("optimizer", name, OPTIMIZERS)
    what = f"optimizer {name}"
    args = _check_args(what, raw, OPTIMIZERS[name])
    args.setdefault("lr", DEFAULT_LR)
    if "beta1" in args or "beta2" in args:
        if "betas" in args:
            raise TrainError(f"{what}: give betas or beta1/beta2, not both")
        args["betas"] = (args.pop("beta1", 0.9), args.pop("beta2", 0.999))
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    try:
        return cls(list(params), **args)
    except ValueError as e:  # torch's own range checks ("Invalid learning rate: -1.0", nesterov needs momentum)
        raise TrainError(f"{what}: {e}") from None


def make_scheduler(spec: Any, optimizer: torch.optim.Optimizer,
                   epochs: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The ``torch.optim.lr_scheduler`` a spec names (None for none), stepped once per epoch."""
    if spec is None:
        return None
    name, raw = split_spec(spec, "scheduler")
    _known("scheduler", name, SCHEDULERS)
    args = _check_args(f"scheduler {name}", raw, SCHEDULERS[name])
    sched = torch.optim.lr_scheduler
    if name == "step":
        return sched.StepLR(optimizer, step_size=args.get("step_size", 10), gamma=args.get("gamma", 0.1))
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=args.get("gamma", 0.95))
    return sched.CosineAnnealingLR(optimizer, T_max=args.get("t_max", max(epochs, 1)), eta_min=args.get("eta_min", 0.0))
