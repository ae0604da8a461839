"""IntVec / FloatVec / StringVec / BoolVec: constructors, methods, element checks, printing."""

from __future__ import annotations

import pytest
import torch

from tensorlogic.lang.attrs import get_attr
from tensorlogic.lang.builtins import BUILTINS
from tensorlogic.lang.format import format_value
from tensorlogic.lang.values import BuiltinError, Context, Vec, tensor_arg

CTX = Context(device="cpu")


def new(kind: str) -> Vec:
    return BUILTINS[f"{kind}::new"].fn()


def m(vec: Vec, name: str, *args):
    bound = get_attr(CTX, vec, name)
    return bound.fn(bound.self_value, *args)


def error(fn, *args) -> str:
    with pytest.raises(BuiltinError) as e:
        fn(*args)
    return str(e.value)


def test_int_vec_session():
    v = new("IntVec")
    assert v.name == "IntVec" and m(v, "len") == 0 and m(v, "is_empty") is True
    for x in (10, 20, 30):
        assert m(v, "push", x) is None
    assert v.items == [10, 20, 30] and BUILTINS["len"].fn(v) == 3
    assert m(v, "get", 0) == 10 and m(v, "get", -1) == 30 and BUILTINS["get"].fn(v, 2) == 30
    m(v, "set", 1, 99)
    assert format_value(v) == "Vec[10, 99, 30]"
    assert m(v, "pop") == 30 and v.items == [10, 99]
    m(v, "clear")
    assert v.items == [] and m(v, "is_empty") is True


def test_float_vec_widens_ints():
    v = new("FloatVec")
    m(v, "push", 1.5)
    m(v, "push", 2)
    assert v.items == [1.5, 2.0] and type(v.items[1]) is float
    assert format_value(v) == "Vec[1.5, 2.0]"


def test_string_and_bool_vecs():
    s, b = new("StringVec"), new("BoolVec")
    m(s, "push", "hello")
    m(s, "push", "world")
    m(b, "push", True)
    m(b, "push", False)
    assert format_value(s) == 'Vec["hello", "world"]' and format_value(b) == "Vec[true, false]"
    assert m(s, "get", 1) == "world" and m(b, "pop") is False


def test_long_vecs_print_abbreviated():
    v = Vec("int", range(12))
    assert format_value(v) == "Vec[0, 1, ..., 11] (len=12)"


def test_vecs_are_iterable_indexable_and_tensors():
    v = Vec("int", [3, 4, 5])
    assert list(v) == [3, 4, 5] and v[1] == 4 and v[-1] == 5
    t = tensor_arg(CTX, Vec("float", [1.0, 2.0]))
    assert t.dtype == torch.float16 and t.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "kind, bad, message",
    [
        ("IntVec", 1.5, "IntVec holds ints; got float 1.5, need an int"),
        ("IntVec", True, "IntVec holds ints; got bool true, need an int"),
        ("FloatVec", "x", 'FloatVec holds floats; got string "x", need a number'),
        ("StringVec", 3, "StringVec holds strings; got int 3, need a string"),
        ("BoolVec", 1, "BoolVec holds bools; got int 1, need a bool"),
    ],
)
def test_element_kind_is_checked(kind, bad, message):
    v = new(kind)
    assert error(m, v, "push", bad) == message
    v.items.append({"IntVec": 1, "FloatVec": 1.0, "StringVec": "a", "BoolVec": False}[kind])
    assert error(m, v, "set", 0, bad) == message


def test_vec_errors():
    v = new("IntVec")
    assert error(m, v, "pop") == "the IntVec is empty"
    m(v, "push", 1)
    assert error(m, v, "get", 1) == "index 1 is out of range for IntVec of length 1"
    assert error(m, v, "set", -2, 5) == "index -2 is out of range for IntVec of length 1"
    assert error(m, v, "get", "0") == 'the index must be an integer, got "0"'
    assert error(get_attr, CTX, v, "append") == (
        "IntVec has no method 'append' (it has push, pop, get, set, len, is_empty, clear)"
    )
