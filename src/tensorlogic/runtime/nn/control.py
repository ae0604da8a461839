"""Control-flow layers: ``branch``, ``loop``, ``loopBreak``, ``loopContinue``, ``copy``.

Nested networks read and write the enclosing blob environment, so these layers are registered as
scoped: they receive the environment first, then their input tensors.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import torch

from ...errors import OpError
from .executor import LoopSignal
from .registry import layer

Fn = Callable[..., Any]

# A while loop with neither a count input nor maxLoopIterations would run forever on a condition that
# never turns false; stop it with an error instead of hanging.
MAX_WHILE_ITERATIONS = 1_000_000


class _Break(LoopSignal):
    pass


class _Continue(LoopSignal):
    pass


def _true(t: torch.Tensor) -> bool:
    """The spec's truth for a scalar condition: |value| > 1e-6."""
    if t.numel() != 1:
        raise ValueError(f"a condition must hold one value, got shape {list(t.shape)}")
    return abs(float(t.reshape(()))) > 1e-6


@layer("branch", scoped=True)
def branch(p: Any, ctx: Any) -> Fn:
    """Run ``ifBranch`` when the condition is non-zero, else ``elseBranch`` (if any)."""
    ctx.require(1, outputs=(0, 0))
    if not p.HasField("ifBranch"):
        raise ctx.error("has no ifBranch network")
    then_net = ctx.network(p.ifBranch)
    else_net = ctx.network(p.elseBranch) if p.HasField("elseBranch") else None

    def run(env: MutableMapping[str, Any], cond: torch.Tensor) -> None:
        if _true(cond):
            then_net.run(env)
        elif else_net is not None:
            else_net.run(env)

    return run


@layer("loop", scoped=True)
def loop(p: Any, ctx: Any) -> Fn:
    """For loop (count from the input or ``maxLoopIterations``), while loop (``conditionNetwork``), or both."""
    ctx.require(0, 1, outputs=(0, 0))
    if not p.HasField("bodyNetwork"):
        raise ctx.error("has no bodyNetwork")
    cond_var = p.conditionVar
    # coremltools' builder always writes a (possibly empty) conditionNetwork; without conditionVar it is unused.
    if cond_var and not p.HasField("conditionNetwork"):
        raise ctx.error(f"conditionVar {cond_var!r} is given without a conditionNetwork")
    if not cond_var and len(p.conditionNetwork.layers):
        raise ctx.error("has a conditionNetwork but no conditionVar")
    cond_net = ctx.network(p.conditionNetwork) if cond_var else None
    if cond_net is not None and cond_var not in cond_net.writes():
        raise ctx.error(f"the condition network does not produce conditionVar {cond_var!r}")
    body = ctx.network(p.bodyNetwork, loop_body=True)
    static_limit = int(p.maxLoopIterations)
    name = ctx.name

    def run(env: MutableMapping[str, Any], *count: torch.Tensor) -> None:
        limit = int(round(float(count[0].reshape(-1)[0]))) if count else static_limit
        bounded = bool(count) or static_limit > 0 or cond_net is None
        i = 0
        while not bounded or i < limit:
            if cond_net is not None:
                cond_net.run(env)
                if not _true(env[cond_var]):
                    break
            if not bounded and i >= MAX_WHILE_ITERATIONS:
                raise OpError(f"while loop still running after {MAX_WHILE_ITERATIONS} iterations", op="loop",
                              var=name)
            try:
                body.run(env)
            except _Continue:
                pass
            except _Break:
                break
            i += 1

    return run


def _signal(name: str, signal: type[LoopSignal], doc: str) -> None:
    def build(p: Any, ctx: Any) -> Fn:
        ctx.require(0, outputs=(0, 0))
        if not ctx.in_loop:
            raise ctx.error(f"{name} is only allowed inside a loop body")

        def run(env: MutableMapping[str, Any]) -> None:
            raise signal()

        return run

    build.__name__ = name
    build.__doc__ = doc
    layer(name, scoped=True)(build)


_signal("loopBreak", _Break, "Leave the enclosing loop.")
_signal("loopContinue", _Continue, "Skip to the enclosing loop's next iteration.")


@layer("copy")
def copy(p: Any, ctx: Any) -> Fn:
    """The input, under the output's name (which may overwrite an existing blob)."""
    ctx.require(1)
    return lambda x: x
