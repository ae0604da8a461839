"""Strings: str, string_length, string_substring (+ concatenation and comparison are operators; len is core)."""

from __future__ import annotations

from typing import Any

from ..format import format_value
from ..values import BuiltinError, as_int, type_name
from . import builtin


@builtin("str")
def str_(x: Any) -> str:
    """str(x): how print shows x (1.5 -> "1.5", true -> "true"); the original converts only numbers, bools and
    strings (and shows 1.0 as "1")."""
    return format_value(x)


def _text(s: Any) -> str:
    if not isinstance(s, str):
        raise BuiltinError(f"needs a string, got {type_name(s)}")
    return s


@builtin()
def string_length(text: Any) -> int:
    """string_length(s): the number of characters (the original counts UTF-8 bytes)."""
    return len(_text(text))


@builtin()
def string_substring(text: Any, start: Any, length: Any) -> str:
    """string_substring(s, start, length): up to length characters from position start ("" past the end)."""
    s = _text(text)
    i, n = as_int(start, "start"), as_int(length, "length")
    if i < 0 or n < 0:
        raise BuiltinError(f"start and length must be >= 0, got {i} and {n}")
    return s[i : i + n]
