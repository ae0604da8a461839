"""Core builtins called directly: print, panic, assertions, len/get/append, ranges, conversions, buffers."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tensorlogic.lang.attrs import get_attr
from tensorlogic.lang.builtins import BUILTINS
from tensorlogic.lang.values import BuiltinError, Context, TensorBuffer, Vec, truth


class Run:
    """Calls builtins with one Context whose output and warnings are captured."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.ctx = Context(device="cpu", out=self.out, err=self.err)

    def __call__(self, name: str, *args, **kwargs):
        b = BUILTINS[name]
        return b.fn(self.ctx, *args, **kwargs) if b.needs_ctx else b.fn(*args, **kwargs)

    def method(self, value, name: str, *args):
        m = get_attr(self.ctx, value, name)
        return m.fn(self.ctx, m.self_value, *args) if m.needs_ctx else m.fn(m.self_value, *args)


@pytest.fixture
def run() -> Run:
    return Run()


def error(run: Run, name: str, *args, **kwargs) -> str:
    with pytest.raises(BuiltinError) as e:
        run(name, *args, **kwargs)
    return str(e.value)


# ---------------------------------------------------------------------------------------------- print


@pytest.mark.parametrize(
    "args, line",
    [
        ((), ""),
        (("hello",), "hello"),
        (("a:", 1, 2.5, True, None), "a: 1 2.5 true void"),
        (("items", [1, 2], ["x", "y"]), 'items [1, 2] ["x", "y"]'),
        (("x = {}, y = {}", 3, "s"), "x = 3, y = s"),
        (("{}+{}={}", 1, 2, 3), "1+2=3"),
        (("just {} braces",), "just {} braces"),
        (("open { brace", 5), "open { brace 5"),
        ((torch.tensor([1.0, 2.5]),), "[1.0000, 2.5000]"),
        (("t = {}", torch.tensor([[1, 2], [3, 4]])), "t = [[1, 2], [3, 4]]"),
    ],
)
def test_print(run, args, line):
    run("print", *args)
    assert run.out.getvalue() == line + "\n"
    assert run.err.getvalue() == ""


def test_print_drops_extra_values_with_a_warning(run):
    run("print", "only {}", 1, 2, 3)
    assert run.out.getvalue() == "only 1\n"
    assert run.err.getvalue() == (
        "tl: warning: 3 values for 1 '{}' placeholder; the extra values are not shown\n"
    )


def test_print_too_few_values(run):
    assert error(run, "print", "{} and {} and {}", 1, 2) == (
        "the format string has 3 '{}' placeholders but 2 values follow"
    )


def test_print_vec_and_buffer(run):
    run("print", Vec("int", [1, 2, 3]), Vec("string", ["a"]), TensorBuffer(3 * 1024 * 1024))
    assert run.out.getvalue() == 'Vec[1, 2, 3] Vec["a"] TensorBuffer(capacity=3MB, used=0MB)\n'


def test_panic_formats_its_message(run):
    assert error(run, "panic", "bad value {} at {}", 7, "x") == "bad value 7 at x"
    assert error(run, "panic", "plain") == "plain"
    assert error(run, "panic", 42) == "42"


# ---------------------------------------------------------------------------------------------- assertions


def test_assert(run):
    assert run("assert", True) is None
    assert run("assert", torch.tensor([1.0])) is None
    assert error(run, "assert", 1 > 2) == "assertion failed"
    assert error(run, "assert", False, "x must be positive") == "x must be positive"


@pytest.mark.parametrize(
    "a, b",
    [
        (3, 3),
        (1, 1.0),
        ("ab", "ab"),
        ([1, [2, 3]], [1, [2, 3]]),
        (torch.tensor([1.0, 2.0], dtype=torch.float16), torch.tensor([1.0, 2.0], dtype=torch.float64)),
        (torch.tensor([1, 2]), [1, 2]),
        (Vec("int", [1, 2]), [1, 2]),
    ],
)
def test_assert_eq_passes(run, a, b):
    assert run("assert_eq", a, b) is None


@pytest.mark.parametrize(
    "a, b, message",
    [
        (3, 4, "assertion failed: 3 != 4"),
        (True, 1, "assertion failed: true != 1"),
        ("a", "b", 'assertion failed: "a" != "b"'),
        ([1, 2], [1, 2, 3], "assertion failed: [1, 2] != [1, 2, 3]"),
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), "assertion failed: [1.0000, 2.0000] != [1.0000, 2.5000]"),
        (torch.zeros(2), torch.zeros(1, 2), "assertion failed: [0.0000, 0.0000] != [[0.0000, 0.0000]]"),
        (torch.zeros(1), "0", 'assertion failed: [0.0000] != "0"'),
    ],
)
def test_assert_eq_fails(run, a, b, message):
    assert error(run, "assert_eq", a, b) == message


def test_assert_about_eq(run):
    run("assert_about_eq", 1.0, 1.05, 0.1)
    run("assert_about_eq", torch.tensor([1.0, 2.0]), [1.001, 2.001], 0.01)
    # Without a tolerance, float16's (rtol 1e-2, atol 1e-3): 100 vs 100.5 passes, 100 vs 102 does not.
    run("assert_about_eq", torch.tensor(100.0, dtype=torch.float16), 100.5)
    assert error(run, "assert_about_eq", torch.tensor(100.0, dtype=torch.float16), 102.0) == (
        "assertion failed: 100.0000 and 102.0 differ by up to 2 (within the float16 tolerance)"
    )
    assert error(run, "assert_about_eq", 1.0, 1.2, 0.1) == (
        "assertion failed: 1.0 and 1.2 differ by up to 0.2 (within 0.1)"
    )
    # The original's comparison is strict: a difference equal to the tolerance fails.
    assert "differ by up to 0.5" in error(run, "assert_about_eq", 1, 1.5, 0.5)


def test_assert_about_eq_errors(run):
    assert error(run, "assert_about_eq", "a", 1.0, 0.1) == "compares numbers or tensors, got string"
    assert error(run, "assert_about_eq", torch.zeros(2), torch.zeros(3), 0.1) == (
        "assertion failed: [0.0000, 0.0000] and [0.0000, 0.0000, 0.0000] have different shapes [2] and [3]"
    )
    assert error(run, "assert_about_eq", 1.0, 1.0, -1) == "the tolerance must be a number >= 0, got -1"


# ---------------------------------------------------------------------------------------------- collections


def test_len(run):
    assert run("len", [1, 2, 3]) == 3
    assert run("len", "héllo") == 5  # characters, not UTF-8 bytes
    assert run("len", torch.zeros(4, 2)) == 4
    assert run("len", Vec("bool", [True])) == 1
    assert run("len", {"a": 1}) == 1


def test_len_errors(run):
    assert error(run, "len", torch.tensor(1.0)) == "a scalar tensor has no length; use numel or shape"
    assert error(run, "len", 5) == "needs a list, Vec, string or tensor, got int"


def test_get(run):
    assert run("get", [10, 20, 30], 1) == 20
    assert run("get", [10, 20, 30], -1) == 30
    assert run("get", ["a", "b"], 1.0) == "b"
    assert run("get", Vec("float", [1.5, 2.5]), 0) == 1.5


def test_get_errors(run):
    assert error(run, "get", [1, 2], 2) == "index 2 is out of range for a list of length 2"
    assert error(run, "get", [1, 2], -3) == "index -3 is out of range for a list of length 2"
    assert error(run, "get", Vec("int", [1]), 5) == "index 5 is out of range for IntVec of length 1"
    assert error(run, "get", "abc", 0) == "needs a list or a Vec, got string"
    assert error(run, "get", [1], 0.5) == "the index must be an integer, got 0.5"


def test_append_returns_a_new_list(run):
    original = [1, 2]
    assert run("append", original, 3) == [1, 2, 3]
    assert original == [1, 2]


def test_append_errors(run):
    assert error(run, "append", Vec("int"), 1) == "does not change an IntVec; use v.push(x)"
    assert error(run, "append", 5, 1) == "needs a list, got int"


def test_ranges(run):
    assert run("range", 4) == [0, 1, 2, 3]
    assert run("range", 2, 5) == [2, 3, 4]
    assert run("range", 10, 0, -3) == [10, 7, 4, 1]
    assert run("range_i", 3) == [0, 1, 2]
    assert run("range_i", 3, 6) == [3, 4, 5]
    assert run("range_i", 2.0) == [0, 1]  # the original passes counts as floats too
    assert run("range_i", torch.tensor(3)) == [0, 1, 2]
    assert run("range_i", 5, 2) == []


def test_range_errors(run):
    assert error(run, "range") == "takes 1 to 3 integers, got 0 arguments"
    assert error(run, "range", 1, 5, 0) == "the step cannot be 0"
    assert error(run, "range_i", 2.5) == "end must be an integer, got 2.5"


# ---------------------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    "x, expected",
    [(7, 7), (3.9, 3), (-3.9, -3), ("42", 42), (" -5 ", -5), (torch.tensor([2.7]), 2), (torch.tensor(9), 9)],
)
def test_to_int_and_int(run, x, expected):
    got = run("to_int", x)
    assert got == expected and type(got) is int
    assert run("int", x) == expected


def test_to_int_errors(run):
    assert error(run, "to_int", "4.5") == "cannot convert '4.5' to int"
    assert error(run, "to_int", True) == "needs a number, a one-element tensor or a string, got bool"
    assert error(run, "to_int", [1]) == "needs a number, a one-element tensor or a string, got list"
    assert error(run, "to_int", math.inf) == "cannot convert inf to int"
    assert error(run, "to_int", torch.zeros(2)) == "needs a tensor with one element, got shape [2]"
    assert error(run, "int", None) == "cannot convert void to int"


def test_float(run):
    assert run("float", 3) == 3.0
    assert run("float", "2.5") == 2.5
    assert run("float", torch.tensor([0.25])) == 0.25
    assert error(run, "float", "x") == 'cannot convert "x" to float'


def test_item_to_cast_describe(run):
    assert run("item", torch.tensor([[4.5]])) == 4.5
    t = torch.tensor([1.5, 2.5])
    assert run("to", t, torch.float32).dtype == torch.float32
    assert run("to", t, "cpu").device.type == "cpu"
    assert run("cast", [1, 2], "int32").dtype == torch.int32
    assert run("describe", torch.zeros(4, 2)) == "Tensor<float32>(shape=[4, 2], device=cpu)"
    assert run("describe", [1, 2]) == "list [1, 2]"


def test_clone_is_independent(run):
    t = torch.zeros(3)
    c = run("clone", t)
    c[0] = 5
    assert t.tolist() == [0.0, 0.0, 0.0]


def test_any_all(run):
    assert run("any", torch.tensor([0.0, 2.0])) is True
    assert run("all", torch.tensor([0.0, 2.0])) is False
    assert run("all", [True, True]) is True


def test_truth():
    assert truth(torch.tensor([2.0])) and not truth(torch.tensor(0)) and not truth(None) and truth("x")
    assert not truth(Vec("int")) and truth(Vec("int", [0]))
    with pytest.raises(BuiltinError) as e:
        truth(torch.zeros(2))
    assert str(e.value) == "a condition must be a single value, got a tensor of shape [2]; use all(...) or any(...)"


# ---------------------------------------------------------------------------------------------- memory


def test_cleanup(run):
    assert run("cleanup") is None
    assert run("cleanup", "a", "b") is None
    assert error(run, "cleanup", "a", 3) == "takes variable names as strings, got int"


def test_tensor_buffer(run):
    mb = 1024 * 1024
    buf = run("new_tensor_buffer", 3 * mb)
    run.method(buf, "alloc", [512, 512], 2, 2)  # two 512x512 float16 slots: 1 MiB
    assert (buf.capacity, buf.used) == (3 * mb, mb)
    w = run.method(buf, "zeros", [512, 512])
    assert w.dtype == torch.float16 and w.shape == (512, 512) and not w.any()
    assert buf.used == mb  # taken from a reserved slot
    o = run.method(buf, "ones", [4])
    assert o.tolist() == [1.0] * 4 and buf.used == mb + 8
    run("print", buf)
    assert run.out.getvalue() == "TensorBuffer(capacity=3MB, used=1MB)\n"


def test_tensor_buffer_errors(run):
    buf = run("new_tensor_buffer", 100)
    with pytest.raises(BuiltinError) as e:
        run.method(buf, "zeros", [10, 10])
    assert str(e.value) == "the tensor buffer is exhausted: 200 bytes requested, 100 available"
    with pytest.raises(BuiltinError) as e:
        run.method(buf, "alloc", [2], -1, 2)
    assert str(e.value) == "needs count >= 0 and elem_size > 0, got -1 and 2"
    with pytest.raises(BuiltinError) as e:
        get_attr(run.ctx, buf, "free")
    assert str(e.value) == "a TensorBuffer has no method 'free' (it has zeros, ones, alloc)"
    assert error(run, "new_tensor_buffer", -5) == "the capacity must be >= 0 bytes, got -5"
