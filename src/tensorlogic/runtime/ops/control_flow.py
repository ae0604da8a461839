"""Control flow and lists: cond, while_loop, select, make_list and the list_* ops.

``cond`` and ``while_loop`` receive their nested blocks as ``blocks``: plain callables that take the
block's inputs and return a tuple of its outputs. A MIL list is a ``TensorList`` value; list ops
return a new list, never changing the one they were given (MIL values are immutable).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..registry import op


class TensorList:
    """A MIL list: element tensors (``None`` where never written) and what unwritten ones look like."""

    __slots__ = ("items", "elem_shape", "dtype", "dynamic")

    def __init__(self, items: list, elem_shape: tuple | None, dtype: torch.dtype, dynamic: bool):
        self.items = items
        self.elem_shape = elem_shape
        self.dtype = dtype
        self.dynamic = dynamic

    def copy(self) -> TensorList:
        return TensorList(list(self.items), self.elem_shape, self.dtype, self.dynamic)

    def put(self, index: int, value: torch.Tensor) -> None:
        if index < 0:
            raise IndexError(f"list index {index} is negative")
        if index >= len(self.items):
            if not self.dynamic:
                raise IndexError(f"list index {index} out of range for a fixed list of length {len(self.items)}")
            self.items.extend([None] * (index + 1 - len(self.items)))
        self.items[index] = value.to(self.dtype)

    def get(self, index: int, like: torch.Tensor) -> torch.Tensor:
        if not 0 <= index < len(self.items):
            raise IndexError(f"list index {index} out of range for length {len(self.items)}")
        item = self.items[index]
        if item is not None:
            return item
        # An element never written reads as zeros of the element shape.
        written = next((x for x in self.items if x is not None), None)
        if written is not None:
            return torch.zeros_like(written)
        if self.elem_shape is None or not all(isinstance(d, int) for d in self.elem_shape):
            raise ValueError(f"list element {index} was never written and the element shape is unknown")
        return torch.zeros(self.elem_shape, dtype=self.dtype, device=like.device)


@op("cond")
def cond(pred: torch.Tensor, *, blocks: tuple[Callable[[], tuple], ...]) -> tuple:
    """Run the true block (``blocks[0]``) or the false block (``blocks[1]``)."""
    true_fn, false_fn = blocks
    return true_fn() if bool(pred) else false_fn()


@op("while_loop")
def while_loop(loop_vars: tuple, *, blocks: tuple[Callable[..., tuple], ...]) -> tuple:
    """Run the body block while the cond block returns true."""
    cond_fn, body_fn = blocks
    values = tuple(loop_vars)
    while bool(cond_fn(*values)[0]):
        values = body_fn(*values)
    return values


@op("select")
def select(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise ``a`` where ``cond`` else ``b``, broadcasting all three."""
    if a.dtype != b.dtype:
        common = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(common), b.to(common)
    return torch.where(cond.to(torch.bool), a, b)


@op("make_list", params={"init_length": "int", "dynamic_length": "bool", "elem_shape": "value",
                         "dtype": "dtype"})
def make_list(*, init_length: int = 1, dynamic_length: bool = True, elem_shape: tuple = (),
              dtype: torch.dtype = torch.float32) -> TensorList:
    """A list of ``init_length`` unwritten elements; symbolic ``elem_shape`` dims take the written shape."""
    dims = []
    for d in elem_shape:
        item = d.item() if hasattr(d, "item") else d
        dims.append(int(item) if not isinstance(item, str) else item)
    return TensorList([None] * init_length, tuple(dims), dtype, dynamic_length)


@op("list_length")
def list_length(ls: TensorList) -> torch.Tensor:
    return torch.tensor(len(ls.items), dtype=torch.int32)


@op("list_write", params={"index": "int"})
def list_write(ls: TensorList, value: torch.Tensor, *, index: int) -> TensorList:
    new = ls.copy()
    new.put(index, value)
    return new


@op("list_read", params={"index": "int"})
def list_read(ls: TensorList, *, index: int) -> torch.Tensor:
    return ls.get(index, torch.empty(0))


@op("list_gather")
def list_gather(ls: TensorList, indices: torch.Tensor) -> torch.Tensor:
    """Stack the elements at ``indices`` along a new first axis."""
    idx = [int(i) for i in indices.reshape(-1).tolist()]
    if not idx:
        shape = ls.elem_shape if ls.elem_shape and all(isinstance(d, int) for d in ls.elem_shape) else ()
        return torch.zeros((0, *shape), dtype=ls.dtype, device=indices.device)
    return torch.stack([ls.get(i, indices) for i in idx])


@op("list_scatter")
def list_scatter(ls: TensorList, indices: torch.Tensor, value: torch.Tensor) -> TensorList:
    """Write ``value[k]`` at ``indices[k]``; indices past the end grow a dynamic list."""
    new = ls.copy()
    for k, i in enumerate(indices.reshape(-1).tolist()):
        new.put(int(i), value[k])
    return new
