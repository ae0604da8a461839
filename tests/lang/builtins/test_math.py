"""Element-wise math, rounding, clamp, softmax and the arithmetic builtins, against float64 references."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from lang.builtins.support import call, close, error
from tensorlogic.lang.values import Context

X64 = torch.linspace(0.1, 3.0, 12, dtype=torch.float64).reshape(3, 4)
NP = {
    "relu": lambda a: np.maximum(a, 0),
    # the original's tanh form of GELU (its Metal kernel), not the erf form
    "gelu": lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "abs": np.abs,
    "neg": np.negative,
    "floor": np.floor,
    "ceil": np.ceil,
}


SIGNED = ("relu", "gelu", "abs", "neg", "floor", "ceil", "tanh", "sigmoid")


@pytest.mark.parametrize("name", sorted(NP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_unary_tensors_keep_their_dtype(name, dtype):
    # Negative inputs too where the function is defined there.
    x = (X64 - 1.5 if name in SIGNED else X64).to(dtype)
    close(call(name, x), NP[name](x.double().numpy()), dtype)


@pytest.mark.parametrize(
    "name, x, expected",
    [
        ("abs", -3, 3),
        ("abs", -2.5, 2.5),
        ("floor", 2.7, 2),
        ("floor", -2.1, -3),
        ("ceil", 2.1, 3),
        ("floor", 5, 5),
        ("relu", -4, 0),
        ("relu", 2.5, 2.5),
        ("neg", 3, -3),
    ],
)
def test_numbers_keep_their_kind(name, x, expected):
    got = call(name, x)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "gelu"])
def test_float_functions_of_numbers_are_float64(name):
    got = call(name, 0.7)
    assert type(got) is float
    assert got == pytest.approx(float(NP[name](np.float64(0.7))), rel=1e-12)


def test_gelu_is_the_tanh_form():
    # hand-computed: 0.5 * -2 * (1 + tanh(sqrt(2/pi) * (-2 - 0.35772))) = -0.045402 (the erf form gives -0.045500)
    assert call("gelu", -2.0) == pytest.approx(-0.0454023, abs=1e-6)
    close(call("gelu", torch.tensor([-2.0, 1.5])), np.array([-0.0454023, 1.3995715]), torch.float32)


def test_number_functions_give_nan_and_inf_like_tensors():
    assert math.isnan(call("log", -1.0)) and math.isnan(call("sqrt", -4))
    assert call("exp", 1000.0) == math.inf
    assert call("log", 0) == -math.inf


def test_floor_ceil_of_infinity():
    assert error("floor", math.inf) == "cannot floor inf to an integer"
    assert error("ceil", -math.inf) == "cannot ceil -inf to an integer"


@pytest.mark.parametrize(
    "x, decimals, expected",
    [(2.5, 0, 3), (-2.5, 0, -3), (0.5, 0, 1), (1.4999, 0, 1), (7, 0, 7), (2.675, 2, 2.68), (1234, -2, 1200),
     (-1.25, 1, -1.3)],
)
def test_round_numbers_ties_away_from_zero(x, decimals, expected):
    got = call("round", x, decimals)
    assert got == expected and type(got) is type(expected)


def test_round_tensors():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 1.26], dtype=torch.float32)
    assert call("round", x).tolist() == [1.0, 2.0, 3.0, -1.0, -2.0, 1.0]
    close(call("round", x, 1), np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1.3]), torch.float32)
    assert call("round", torch.tensor([3, -4])).tolist() == [3, -4]
    assert error("round", math.nan) == "cannot round nan to an integer"


def test_clamp():
    x = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float16)
    close(call("clamp", x, 0.0, 1.0), np.array([0.0, 0.5, 1.0]))
    close(call("clamp", x, min=0.0), np.array([0.0, 0.5, 3.0]))
    close(call("clamp", x, max=0), np.array([-2.0, 0.0, 0.0]))
    assert call("clamp", 5, 0, 3) == 3 and call("clamp", -1.5, min=0.0) == 0.0


def test_clamp_errors():
    assert error("clamp", torch.zeros(2)) == "needs min, max or both"
    assert error("clamp", torch.zeros(2), "a") == "the bounds must be numbers, got string"
    assert error("clamp", torch.zeros(2), 2, 1) == "min 2 is above max 1"


def test_softmax_and_log_softmax():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, -1.0]], dtype=torch.float64)
    ref = np.exp(x.numpy()) / np.exp(x.numpy()).sum(axis=-1, keepdims=True)
    close(call("softmax", x.half()), ref)
    ref0 = np.exp(x.numpy()) / np.exp(x.numpy()).sum(axis=0, keepdims=True)
    close(call("softmax", x.float(), 0), ref0, torch.float32)
    close(call("log_softmax", x.half(), 1), np.log(ref))
    close(call("softmax", [1, 2]), np.exp([1, 2]) / np.exp([1, 2]).sum())
    assert error("softmax", x, 2) == "dim 2 is out of range for a tensor of shape [2, 3]"


@pytest.mark.parametrize(
    "name, ref",
    [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("div", np.divide), ("maximum", np.maximum),
     ("minimum", np.minimum), ("pow", np.power)],
)
def test_binary_tensors(name, ref):
    a64 = torch.tensor([[1.5, 2.0, 3.0], [0.5, 4.0, 2.0]], dtype=torch.float64)
    b64 = torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64)
    close(call(name, a64.half(), b64.half()), ref(a64.numpy(), b64.numpy()))
    close(call(name, a64.half(), [2.0, 0.5, 1.5]), ref(a64.numpy(), b64.numpy()))  # a list takes a's dtype
    close(call(name, a64.half(), 2.0), ref(a64.numpy(), 2.0))  # a number keeps float16
    close(call(name, 2.0, b64.float()), ref(2.0, b64.numpy()), torch.float32)


@pytest.mark.parametrize(
    "name, a, b, expected",
    [("add", 2, 3, 5), ("sub", 2.5, 1, 1.5), ("mul", 4, 3, 12), ("div", 7, 2, 3), ("div", -7, 2, -3),
     ("div", 7.0, 2, 3.5), ("pow", 2, 10, 1024), ("pow", 2, -1, 0.5), ("pow", 9, 0.5, 3.0), ("maximum", 2, 7, 7),
     ("minimum", 2.5, 1, 1.0), ("maximum", 2, 1.5, 2.0)],
)
def test_binary_numbers(name, a, b, expected):
    got = call(name, a, b)
    assert got == expected and type(got) is type(expected)


def test_binary_errors():
    assert error("div", 1, 0) == "integer division by zero"
    assert call("div", 1.0, 0) == math.inf
    assert error("add", torch.zeros(2), "x") == "needs tensors or numbers, got string"


def test_matmul_accumulates_in_float32():
    g = torch.Generator().manual_seed(3)
    a64 = torch.randn(4, 64, generator=g, dtype=torch.float64)
    b64 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    got = call("matmul", a64.half(), b64.half())
    close(got, (a64.half().double() @ b64.half().double()).numpy())
    close(call("matmul", a64.float(), b64.float()), (a64 @ b64).numpy(), torch.float32)
    batched = call("matmul", torch.ones(2, 3, 4, dtype=torch.float16), torch.ones(4, 5, dtype=torch.float16))
    close(batched, np.full((2, 3, 5), 4.0))
    close(call("matmul", torch.ones(2, 3, dtype=torch.float16), [1.0, 2.0, 3.0]), np.array([6.0, 6.0]))


def test_matmul_overflow_keeps_float32_and_warns():
    err = io.StringIO()
    ctx = Context(device="cpu", err=err)
    got = call("matmul", torch.full((1, 300), 300.0, dtype=torch.float16), torch.ones(300, 1, dtype=torch.float16),
               ctx=ctx)
    assert got.dtype == torch.float32 and got.tolist() == [[90000.0]]
    assert err.getvalue() == "tl: warning: matmul overflows float16 (max 65504); the result is kept in float32\n"


def test_matmul_errors():
    assert error("matmul", torch.ones(2, 3), torch.ones(2, 3)) == "shapes [2, 3] and [2, 3] do not match (3 vs 2)"
    assert error("matmul", torch.tensor(1.0), torch.ones(2)) == (
        "needs tensors with at least one dimension, got [] and [2]"
    )
