"""``Trainer``: one objective evaluation, one backward pass and one optimizer step per epoch.

Mixed precision: a float16 (or bfloat16) learnable tensor gets a float32 master copy. Each epoch the
objective is computed from the low-precision tensors (what a script sees), their gradients are converted
to float32 and given to the masters, the optimizer steps the masters, and the low-precision tensors are
refreshed in place from them, so a script's variables keep their identity while small updates are not
lost to float16 rounding. Loss scaling is not done: the objectives this serves (losses and gradients of
order 1e-4..1e4) fit float16's range, and an overflowing loss stops training with a clear error instead.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import TrainError
from .optim import make_optimizer, make_scheduler, split_spec

# The original reports the first parameter's value and the learning rate on every 10th epoch line.
REPORT_INTERVAL = 10
# Past this many epochs only every k-th epoch line is printed (k a multiple of REPORT_INTERVAL).
MAX_EPOCH_LINES = 200
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_STDOUT: Any = object()  # default for `out`: sys.stdout as it is when `run` prints


def rust_float(x: float) -> str:
    """A number as the original prints an f64 with ``{}``: shortest round-trip digits, never an exponent."""
    return np.format_float_positional(float(x), trim="-")


def rust_f32_debug(x: float) -> str:
    """A float32 as the original prints it with ``{:?}`` (``1.0``, ``0.099975586``, ``1e-5``)."""
    v = np.float32(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v != 0 and not (1e-4 <= abs(v) < 1e16):
        mant, _, exp = np.format_float_scientific(v, unique=True, trim="-").partition("e")
        return f"{mant.rstrip('.')}e{int(exp)}"
    return np.format_float_positional(v, unique=True, trim="0")


def _arg_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_arg_text(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return rust_float(value)
    return str(value)


def _values(t: torch.Tensor, n: int) -> str:
    flat = t.detach().reshape(-1)[:n].to("cpu", torch.float32).tolist()
    return "[" + ", ".join(rust_f32_debug(v) for v in flat) + "]"


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


class Trainer:
    """Train ``params`` by minimizing what ``step(epoch)`` returns, printing the original's progress lines.

    ``params``: name -> learnable tensor (a floating-point leaf; float16/bfloat16 train through float32
    masters). ``optimizer``/``scheduler``: learn-block specs (see ``tensorlogic.train.optim``). ``out``: where
    the progress goes (default ``sys.stdout``; ``None`` is silent). ``resume``: a checkpoint path to continue
    from; ``epochs`` counts the checkpoint's epochs too.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], optimizer: Any = ("sgd", {}), scheduler: Any = None,
                 epochs: int = 1, out: TextIO | None = _STDOUT, resume: str | os.PathLike | None = None):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise TrainError(f"epochs must be a whole number >= 0, got {epochs!r}")
        if not params:
            raise TrainError("no learnable tensors: declare at least one tensor as learnable")
        self.params: dict[str, torch.Tensor] = {}
        self.masters: dict[str, torch.Tensor] = {}
        for name, t in params.items():
            self.params[name] = self._check_param(name, t)
            if t.dtype in _LOW_PRECISION:
                self.masters[name] = t.detach().to(torch.float32).clone().requires_grad_(True)
            else:
                self.masters[name] = t
        self.epochs = epochs
        self.out = out
        self.optimizer_spec = split_spec(optimizer, "optimizer")
        self.scheduler_spec = None if scheduler is None else split_spec(scheduler, "scheduler")
        self.optimizer = make_optimizer(self.optimizer_spec, self.masters.values())
        self.scheduler = make_scheduler(self.scheduler_spec, self.optimizer, epochs)
        self.base_lr = float(self.optimizer.param_groups[0]["lr"])
        self.epoch = 0  # epochs completed
        self.history: list[float] = []
        if resume is not None:
            self._resume(resume)

    @staticmethod
    def _check_param(name: str, t: Any) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise TrainError(f"learnable '{name}' must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TrainError(f"learnable '{name}' has dtype {str(t.dtype).removeprefix('torch.')}; "
                             "learnable tensors must be float16 or float32")
        if not t.is_leaf:
            raise TrainError(f"learnable '{name}' is computed from other tensors; a learnable tensor must be a leaf")
        if not t.requires_grad:
            t.requires_grad_(True)
        return t

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Save params, float32 masters, optimizer and scheduler state and the epoch count to ``path``."""
        masters = {n: m for n, m in self.masters.items() if m is not self.params[n]}
        sched = None if self.scheduler is None else self.scheduler.state_dict()
        save_checkpoint(path, self.params, optimizer_state=self.optimizer.state_dict(), epoch=self.epoch,
                        masters=masters, scheduler_state=sched)

    def _resume(self, path: str | os.PathLike) -> None:
        ckpt = load_checkpoint(path)
        where = os.fspath(path)
        for name, t in self.params.items():
            saved = ckpt.params.get(name)
            if saved is None:
                raise TrainError(f"checkpoint {where} has no tensor for learnable '{name}'")
            if saved.shape != t.shape:
                raise TrainError(f"checkpoint {where}: learnable '{name}' has shape {_shape(saved)} there, "
                                 f"{_shape(t)} here")
            with torch.no_grad():
                t.copy_(saved)
                if self.masters[name] is not t:
                    self.masters[name].copy_(ckpt.masters.get(name, saved))
        if ckpt.optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(ckpt.optimizer_state)
            except (ValueError, KeyError) as e:
                raise TrainError(f"checkpoint {where}: optimizer state does not fit this optimizer ({e})") from None
        if self.scheduler is not None and ckpt.scheduler_state is not None:
            self.scheduler.load_state_dict(ckpt.scheduler_state)
        self.epoch = ckpt.epoch

    # --------------------------------------------------------------------------------------------- running

    def _objective(self, loss: Any) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor):
            raise TrainError(f"the objective must be a tensor computed from the learnable tensors, "
                             f"got {type(loss).__name__}")
        if loss.numel() != 1:
            raise TrainError(f"the objective must be a single number, got a tensor of shape {_shape(loss)}")
        if not loss.requires_grad:
            names = ", ".join(self.params)
            raise TrainError(f"the objective does not depend on any learnable tensor ({names})")
        return loss.reshape(())

    def _print(self, line: str) -> None:
        if self._console is not None:
            self._console.out(line, highlight=False)
        elif self.out is not None:
            self.out.write(line + "\n")

    def _header(self) -> None:
        name, args = self.optimizer_spec
        lines = ["", "=== Learning Started ===", f"Optimizer: {name}", f"Epochs: {self.epochs}"]
        lines += [f"  {k}: {_arg_text(v)}" for k, v in args.items()]
        if self.scheduler_spec is not None:
            lines += ["", f"Scheduler: {self.scheduler_spec[0]}"]
            lines += [f"  {k}: {_arg_text(v)}" for k, v in self.scheduler_spec[1].items()]
        for pname, t in self.params.items():
            # the original shows min(5, first dimension) values of the flattened tensor
            n = min(5, t.shape[0]) if t.dim() else 1
            lines += ["", f"Learnable parameter: {pname}", f"  Shape: {_shape(t)}",
                      f"  Initial values: {_values(t, n)}"]
        lines += ["", "--- Training Progress ---"]
        for line in lines:
            self._print(line)

    def _footer(self) -> None:
        self._print("")
        self._print("=== Learning Completed ===")
        self._print("")
        self._print("Final Parameter Values:")
        for name, t in self.params.items():
            self._print(f"  {name}: {_values(t, 5)}")

    def run(self, step: Callable[[int], Any]) -> list[float]:
        """Call ``step(epoch)`` (0-based) once per remaining epoch, minimizing what it returns; the losses."""
        out = sys.stdout if self.out is _STDOUT else self.out
        self.out = out
        every = 1
        if self.epochs > MAX_EPOCH_LINES:
            every = REPORT_INTERVAL * math.ceil(self.epochs / (MAX_EPOCH_LINES // 2) / REPORT_INTERVAL)
        self._console = None
        progress = None
        if out is not None and self.epochs > MAX_EPOCH_LINES and getattr(out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import Progress

            progress = Progress(console=Console(file=out), transient=True)
            self._console = progress.console
            task = progress.add_task("training", total=self.epochs - self.epoch)
            progress.start()
        try:
            if out is not None:
                self._header()
            names = list(self.params)
            tensors = [self.params[n] for n in names]
            masters = [self.masters[n] for n in names]
            first = names[0]
            for epoch in range(self.epoch, self.epochs):
                with torch.enable_grad():
                    loss = self._objective(step(epoch))
                    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                if all(g is None for g in grads):
                    raise TrainError(f"the objective does not depend on any learnable tensor ({', '.join(names)})")
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainError(f"the objective is {value} at epoch {epoch + 1}; training stopped "
                                     f"(the learnable tensors keep their values from before that epoch)")
                for m, g in zip(masters, grads):
                    m.grad = None if g is None else g.to(m.dtype)
                shown = out is not None and (epoch % every == 0 or epoch == self.epochs - 1)
                if shown:
                    norm = torch.linalg.vector_norm(torch.stack(
                        [torch.linalg.vector_norm(m.grad, dtype=torch.float32) for m in masters if m.grad is not None]))
                self.optimizer.step()
                with torch.no_grad():
                    for t, m in zip(tensors, masters):
                        if m is not t:
                            t.copy_(m)
                for m in masters:
                    m.grad = None
                if self.scheduler is not None:
                    self.scheduler.step()
                self.history.append(value)
                self.epoch = epoch + 1
                if shown:
                    line = f"Epoch {epoch + 1:3d}/{self.epochs}: Loss = {value:.6f}, Grad Norm: {norm.item():.6f}"
                    if epoch % REPORT_INTERVAL == 0 or epoch == self.epochs - 1:
                        first_value = self.params[first].detach().reshape(-1)[:1].float().tolist() or [0.0]
                        line += f", {first} = [{first_value[0]:.4f}, ...]"
                        lr = float(self.optimizer.param_groups[0]["lr"])
                        if epoch > 0 and abs(lr - self.base_lr) > 1e-6:
                            line += f", LR: {lr:.6f}"
                    self._print(line)
                if progress is not None:
                    progress.advance(task)
        finally:
            if progress is not None:
                progress.stop()
            self._console = None
        if out is not None:
            self._footer()
        return self.history
