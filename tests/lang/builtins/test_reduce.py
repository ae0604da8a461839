"""Reductions: sum, mean, max, min, argmax, argmin, topk — dims, keepdim, dtypes and the float16 overflow."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from lang.builtins.support import call, close, error
from tensorlogic.lang.values import Context, Record

A64 = torch.tensor([[1.5, -2.0, 3.25], [4.0, 0.5, -1.0]], dtype=torch.float64)
A = A64.numpy()


@pytest.mark.parametrize(
    "name, ref",
    [("sum", np.sum), ("mean", np.mean), ("max", np.max), ("min", np.min)],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_reductions(name, ref, dtype):
    x = A64.to(dtype)
    whole = call(name, x)  # the whole tensor: a number, as in the original
    atol, rtol = TOLERANCES[str(dtype).removeprefix("torch.")]
    assert isinstance(whole, float) and whole == pytest.approx(float(ref(A)), abs=atol, rel=rtol)
    close(call(name, x, 1), ref(A, axis=1), dtype)
    close(call(name, x, 0, True), ref(A, axis=0, keepdims=True), dtype)
    close(call(name, x, dim=-1, keepdim=True), ref(A, axis=-1, keepdims=True), dtype)
    close(call(name, x, [0, 1]), ref(A, axis=(0, 1)), dtype)
    close(call(name, x, keepdim=True), ref(A, keepdims=True), dtype)


def test_sum_of_ints_stays_int():
    got = call("sum", torch.tensor([[1, 2], [3, 4]]), 0)
    assert got.dtype == torch.int64 and got.tolist() == [4, 6]
    total = call("sum", [True, True, False])
    assert total == 2 and isinstance(total, int)
    assert call("sum", torch.tensor([[1, 2], [3, 4]])) == 10
    got = call("mean", torch.tensor([1, 2, 4]), 0)
    close(got, 7 / 3)  # an int tensor's mean is float16


def test_sum_accumulates_in_float32():
    # 2048 then 2000 ones: a float16 running sum stays at 2048 (2049 is not a float16); the exact sum, 4048, is.
    x = torch.cat([torch.tensor([2048.0]), torch.ones(2000)]).half()
    assert call("sum", x) == 4048.0
    assert call("sum", x, 0).dtype == torch.float16 and float(call("sum", x, 0)) == 4048.0


def test_sum_overflowing_float16_stays_float32_with_a_warning():
    err = io.StringIO()
    ctx = Context(device="cpu", err=err)
    ctx.where = ("t.tl", 3, 9)
    got = call("sum", torch.ones(300, 300, dtype=torch.float16), ctx=ctx)
    assert got == 90000.0
    assert err.getvalue() == (
        "tl: warning: t.tl:3:9: sum overflows float16 (max 65504); the result is kept in float32\n"
    )
    call("sum", torch.ones(300, 300, dtype=torch.float16), ctx=ctx)
    assert err.getvalue().count("warning") == 1  # once per script position
    by_dim = call("mean", torch.full((2, 3), 60000.0, dtype=torch.float16), 1, ctx=ctx)
    assert by_dim.dtype == torch.float16 and by_dim.tolist() == [60000.0] * 2  # the mean fits: no promotion


@pytest.mark.parametrize(
    "a, b, expected",
    [(3, 5, (5, 3)), (3, 5.5, (5.5, 3.0)), (-1.5, -2, (-1.5, -2.0)), (7, 7, (7, 7))],
)
def test_max_min_of_two_numbers(a, b, expected):
    # ints stay ints; with a float the result is a float, as in the original
    got = (call("max", a, b), call("min", a, b))
    assert got == expected and [type(v) for v in got] == [type(v) for v in expected]


def test_max_min_element_wise():
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float16)
    close(call("max", x, 0.0), [0.0, 0.5, 2.0])  # a float second argument is element-wise
    close(call("min", x, torch.tensor([0.0, 0.0, 3.0], dtype=torch.float16)), [-1.0, 0.0, 2.0])
    close(call("max", 1.0, x), [1.0, 1.0, 2.0])


def test_max_min_errors():
    assert error("max", torch.zeros(0)) == "the tensor is empty"
    assert error("sum", torch.zeros(2, 2), 2) == "dim 2 is out of range for a tensor of shape [2, 2]"
    assert error("mean", torch.zeros(2, 2), [1, -1]) == "dims [1, -1] name a dimension twice"


def test_argmax_argmin():
    a = torch.tensor([1.0, 5.0, 3.0, 2.0, 4.0], dtype=torch.float16)
    assert call("argmax", a) == 1 and call("argmin", a) == 0  # ints for the flattened tensor
    b = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float16)
    assert call("argmax", b) == 5
    got = call("argmax", b, 0)
    assert got.dtype == torch.int64 and got.tolist() == [1, 1, 1]
    assert call("argmax", b, 1).tolist() == [2, 2]
    assert call("argmin", b, 0).tolist() == [0, 0, 0]
    assert call("argmax", b, 1, True).tolist() == [[2], [2]]  # keepdim works (the original ignores `true`)
    assert call("argmax", b, keepdim=True).tolist() == [[5]]
    c = torch.tensor([-5.0, -1.0, -3.0, -2.0])
    assert call("argmax", c) == 1 and call("argmin", c) == 0


def test_argmax_errors():
    assert error("argmax", torch.zeros(0)) == "the tensor is empty"
    assert error("argmin", torch.zeros(2, 2), [0, 1]) == "takes one dim, not a list"


def test_topk():
    x = torch.tensor([[1.0, 9.0, 3.0, 7.0]], dtype=torch.float16)
    r = call("topk", x, 2)
    assert isinstance(r, Record)
    assert r["values"].tolist() == [[9.0, 7.0]] and r["indices"].tolist() == [[1, 3]]
    small = call("topk", x, 1, largest=False)
    assert small["values"].tolist() == [[1.0]]
    assert error("topk", x, 5) == "k=5 but dimension 1 has only 4 values"
    assert error("topk", torch.tensor(1.0), 1) == "needs a tensor with at least one dimension"
