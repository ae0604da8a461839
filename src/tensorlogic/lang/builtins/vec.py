"""Mutable vectors: IntVec::new(), FloatVec::new(), StringVec::new(), BoolVec::new() and their methods
push, pop, get, set, len, is_empty, clear (VEC_METHODS; attrs.get_attr binds them to the vector).

A Vec holds one kind of element: an IntVec ints, a FloatVec numbers (ints are widened), a StringVec strings,
a BoolVec bools; anything else is an error naming the vector's type. print shows Vec[1, 2, 3].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..values import VEC_KINDS, BuiltinError, Vec
from . import builtin


def _register_constructor(kind: str) -> None:
    def new() -> Vec:
        return Vec(kind)

    new.__doc__ = f"{VEC_KINDS[kind]}::new(): an empty {VEC_KINDS[kind]}"
    builtin(f"{VEC_KINDS[kind]}::new")(new)


for _kind in VEC_KINDS:
    _register_constructor(_kind)


def push(v: Vec, value: Any) -> None:
    """v.push(x): x added at the end."""
    v.items.append(v.coerce(value))


def pop(v: Vec) -> Any:
    """v.pop(): removes and returns the last element; an error on an empty vector."""
    if not v.items:
        raise BuiltinError(f"the {v.name} is empty")
    return v.items.pop()


def get(v: Vec, index: Any) -> Any:
    """v.get(i): the element at i; negative i counts from the end (not a method in the original)."""
    return v[index]


def set_(v: Vec, index: Any, value: Any) -> None:
    """v.set(i, x): replaces the element at i."""
    v.items[v.index(index)] = v.coerce(value)


def len_(v: Vec) -> int:
    """v.len(): the number of elements (the original has len(v) only)."""
    return len(v.items)


def is_empty(v: Vec) -> bool:
    """v.is_empty(): whether it has no elements."""
    return not v.items


def clear(v: Vec) -> None:
    """v.clear(): removes every element."""
    v.items.clear()


VEC_METHODS: dict[str, Callable[..., Any]] = {
    "push": push,
    "pop": pop,
    "get": get,
    "set": set_,
    "len": len_,
    "is_empty": is_empty,
    "clear": clear,
}
