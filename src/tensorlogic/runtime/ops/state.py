"""States (iOS18): ``read_state``, ``write_state`` and ``coreml_update_state`` on ``StateValue`` objects.

Saved ML Programs hold ``write_state`` (no outputs) followed by ``read_state``; ``coreml_update_state``
is the builder's fused form of the two.
"""

from __future__ import annotations

import torch

from ..interpreter import StateValue
from ..registry import op


@op("read_state", since="iOS18")
def read_state(input: StateValue) -> torch.Tensor:
    """The state's current value (a later update replaces it; this tensor is not changed)."""
    return input.value


def _store(state: StateValue, value: torch.Tensor) -> None:
    if tuple(value.shape) != tuple(state.value.shape):
        raise ValueError(f"value shape {list(value.shape)} does not match state shape {list(state.value.shape)}")
    state.value = value.to(state.value.dtype)


@op("write_state", since="iOS18")
def write_state(input: StateValue, data: torch.Tensor) -> None:
    """Store ``data`` in the state, in the state's dtype."""
    _store(input, data)


@op("coreml_update_state", since="iOS18")
def coreml_update_state(state: StateValue, value: torch.Tensor) -> torch.Tensor:
    """Store ``value`` in the state (in the state's dtype) and return it."""
    _store(state, value)
    return value
