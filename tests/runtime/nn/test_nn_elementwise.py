"""Activations, unary math, element-wise arithmetic, comparisons and logic against numpy/scipy float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from conftest import TOLERANCES

rng = np.random.default_rng(1)


def assert_close(got, want, dtype="float32"):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


ALPHA, BETA = np.array([0.1, 0.2, 0.3]), np.array([0.5, 1.0, 2.0])
ACTIVATIONS = [
    ("RELU", None, lambda x: np.maximum(x, 0)),
    ("LEAKYRELU", [0.3], lambda x: np.where(x >= 0, x, 0.3 * x)),
    ("THRESHOLDEDRELU", 0.4, lambda x: np.where(x >= 0.4, x, 0)),
    ("TANH", None, np.tanh),
    ("SCALED_TANH", [1.5, 0.7], lambda x: 1.5 * np.tanh(0.7 * x)),
    ("SIGMOID", None, sigmoid),
    ("SIGMOID_HARD", [0.2, 0.5], lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    ("LINEAR", [2.0, -1.0], lambda x: 2 * x - 1),
    ("ELU", 0.8, lambda x: np.where(x >= 0, x, 0.8 * np.expm1(x))),
    ("SOFTSIGN", None, lambda x: x / (1 + np.abs(x))),
    ("SOFTPLUS", None, lambda x: np.log1p(np.exp(x))),
    ("PRELU", np.array([0.1, 0.2, 0.3]), lambda x: np.where(x >= 0, x, ALPHA[:, None, None] * x)),
    ("PARAMETRICSOFTPLUS", [ALPHA * 10, BETA],
     lambda x: 10 * ALPHA[:, None, None] * np.log1p(np.exp(BETA[:, None, None] * x))),
]


@pytest.mark.parametrize("name,params,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation(layer_case, name, params, ref):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32) * 2
    out = layer_case(lambda b: b.add_activation("act", name, "x", "out", params=params), {"x": x})
    assert_close(out["out"], ref(x.astype(np.float64)))


@pytest.mark.parametrize("mode", ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"])
def test_gelu(layer_case, mode):
    x = rng.standard_normal((3, 7)).astype(np.float32) * 2
    out = layer_case(lambda b: b.add_gelu("g", "x", "out", mode=mode), {"x": x})
    v = x.astype(np.float64)
    want = {"EXACT": 0.5 * v * (1 + special.erf(v / math.sqrt(2))),
            "TANH_APPROXIMATION": 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))),
            "SIGMOID_APPROXIMATION": v * sigmoid(1.702 * v)}[mode]
    assert_close(out["out"], want)


UNARY = [
    ("sqrt", {}, lambda x: np.sqrt(x)),
    ("rsqrt", {"epsilon": 1e-3}, lambda x: 1 / np.sqrt(x + 1e-3)),
    ("inverse", {"epsilon": 1e-4}, lambda x: 1 / (x + 1e-4)),
    ("power", {"alpha": 2.5}, lambda x: x ** 2.5),
    ("exp", {"scale": 0.5, "shift": -1.0}, lambda x: np.exp(0.5 * x - 1)),
    ("log", {"epsilon": 0.25}, lambda x: np.log(x + 0.25)),
    ("abs", {"shift": -1.0}, lambda x: np.abs(x - 1)),
    ("threshold", {"alpha": 1.2}, lambda x: np.maximum(x, 1.2)),
]


@pytest.mark.parametrize("mode,kw,ref", UNARY, ids=[u[0] for u in UNARY])
def test_unary(layer_case, mode, kw, ref):
    x = rng.uniform(0.1, 3.0, (4, 5)).astype(np.float32)
    out = layer_case(lambda b: b.add_unary("u", "x", "out", mode, **kw), {"x": x})
    assert_close(out["out"], ref(x.astype(np.float64)))


MATH = [
    ("sin", np.sin), ("cos", np.cos), ("tan", np.tan), ("asin", np.arcsin), ("acos", np.arccos),
    ("atan", np.arctan), ("sinh", np.sinh), ("cosh", np.cosh), ("tanh", np.tanh), ("asinh", np.arcsinh),
    ("acosh", lambda v: np.arccosh(v + 2)), ("atanh", np.arctanh), ("erf", special.erf), ("exp2", np.exp2),
    ("ceil", np.ceil), ("floor", np.floor), ("round", np.round), ("sign", np.sign),
]


@pytest.mark.parametrize("name,ref", MATH, ids=[m[0] for m in MATH])
def test_math_layers(layer_case, name, ref):
    x = rng.uniform(-0.9, 0.9, (3, 4)).astype(np.float32) * (3 if name in ("ceil", "floor", "round", "sign") else 1)
    if name == "acosh":
        x = x + np.float32(2)
        out = layer_case(lambda b: b.add_acosh("m", "x", "out"), {"x": x})
        assert_close(out["out"], np.arccosh(x.astype(np.float64)))
        return
    out = layer_case(lambda b: getattr(b, f"add_{name}")("m", "x", "out"), {"x": x})
    assert_close(out["out"], ref(x.astype(np.float64)))


def test_clip_and_clamped_relu(layer_case):
    x = rng.standard_normal((5, 6)).astype(np.float32) * 3

    def layers(b):
        b.add_clip("c", "x", "out", min_value=-1.0, max_value=0.5)
        b.add_clamped_relu("cr", "x", "cr", alpha=0.1, beta=2.0)

    out = layer_case(layers, {"x": x}, outputs=("out", "cr"))
    v = x.astype(np.float64)
    assert_close(out["out"], np.clip(v, -1.0, 0.5))
    assert_close(out["cr"], np.minimum(np.where(v >= 0, v, 0.1 * v), 2.0))


BINARY = [
    ("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply), ("divide", np.divide),
    ("max", np.maximum), ("min", np.minimum), ("pow", np.power), ("mod", np.mod), ("floor_div", np.floor_divide),
]


@pytest.mark.parametrize("name,ref", BINARY, ids=[b[0] for b in BINARY])
def test_broadcastable_binary(layer_case, name, ref):
    a = rng.uniform(0.5, 3, (2, 1, 4)).astype(np.float32)
    c = rng.uniform(0.5, 3, (3, 1)).astype(np.float32) * (np.where(rng.random((3, 1)) < 0.5, -1, 1).astype(np.float32)
                                                          if name in ("mod", "floor_div") else 1)
    out = layer_case(lambda b: getattr(b, f"add_{name}_broadcastable")("op", ["a", "c"], "out"), {"a": a, "c": c})
    assert_close(out["out"], ref(a.astype(np.float64), c.astype(np.float64)))


@pytest.mark.parametrize("mode,ref", [("ADD", lambda xs: sum(xs)), ("MULTIPLY", lambda xs: np.prod(xs, axis=0)),
                                      ("AVE", lambda xs: sum(xs) / 3), ("MAX", lambda xs: np.max(xs, axis=0)),
                                      ("MIN", lambda xs: np.min(xs, axis=0))])
def test_legacy_elementwise(layer_case, mode, ref):
    xs = [rng.standard_normal((3, 4, 5)).astype(np.float32) for _ in range(3)]
    out = layer_case(lambda b: b.add_elementwise("e", ["a", "b", "c"], "out", mode), dict(zip("abc", xs)),
                     rank5=True)
    assert out["out"].shape == (1, 1, 3, 4, 5)
    assert_close(out["out"][0, 0], ref(np.stack([x.astype(np.float64) for x in xs])))


def test_legacy_elementwise_scalar_alpha(layer_case):
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)

    def layers(b):
        b.add_elementwise("a", ["x"], "out", "ADD", alpha=2.5)
        b.add_elementwise("m", ["x"], "m", "MULTIPLY", alpha=-3.0)

    out = layer_case(layers, {"x": x}, outputs=("out", "m"))
    assert_close(out["out"], x + 2.5)
    assert_close(out["m"], x * -3.0)


def test_legacy_add_broadcasts_channel_vector(layer_case):
    a = rng.standard_normal((4, 3, 3)).astype(np.float32)
    v = rng.standard_normal((4, 1, 1)).astype(np.float32)
    out = layer_case(lambda b: b.add_elementwise("e", ["a", "v"], "out", "ADD"), {"a": a, "v": v}, rank5=True)
    assert_close(out["out"][0, 0], a.astype(np.float64) + v)


COMPARE = [("greater_than", False, np.greater), ("greater_than", True, np.greater_equal),
           ("less_than", False, np.less), ("less_than", True, np.less_equal)]


@pytest.mark.parametrize("name,or_equal,ref", COMPARE, ids=[f"{c[0]}-{c[1]}" for c in COMPARE])
def test_comparisons(layer_case, name, or_equal, ref):
    a = rng.integers(0, 3, (3, 4)).astype(np.float32)
    c = rng.integers(0, 3, (4,)).astype(np.float32)

    def layers(b):
        getattr(b, f"add_{name}")("cmp", ["a", "c"], "out", use_greater_than_equal=or_equal) if name == "greater_than" \
            else getattr(b, f"add_{name}")("cmp", ["a", "c"], "out", use_less_than_equal=or_equal)
        getattr(b, f"add_{name}")("cmp1", ["a"], "one", alpha=1.0, **({"use_greater_than_equal": or_equal}
                                  if name == "greater_than" else {"use_less_than_equal": or_equal}))

    out = layer_case(layers, {"a": a, "c": c}, outputs=("out", "one"))
    assert_close(out["out"], ref(a, c).astype(np.float64))
    assert_close(out["one"], ref(a, 1.0).astype(np.float64))


def test_equality_logic_and_where(layer_case):
    a = rng.integers(0, 2, (3, 4)).astype(np.float32)
    c = rng.integers(0, 2, (3, 4)).astype(np.float32)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = rng.standard_normal((1, 4)).astype(np.float32)

    def layers(b):
        b.add_equal("eq", ["a", "c"], "eq")
        b.add_not_equal("ne", ["a"], "ne", alpha=1.0)
        b.add_logical("and", ["a", "c"], "and", "AND")
        b.add_logical("or", ["a", "c"], "or", "OR")
        b.add_logical("xor", ["a", "c"], "xor", "XOR")
        b.add_logical("not", ["a"], "not", "NOT")
        b.add_where_broadcastable("w", ["a", "x", "y"], "out")

    out = layer_case(layers, {"a": a, "c": c, "x": x, "y": y},
                     outputs=("eq", "ne", "and", "or", "xor", "not", "out"))
    ab, cb = a != 0, c != 0
    for name, want in (("eq", a == c), ("ne", a != 1), ("and", ab & cb), ("or", ab | cb), ("xor", ab ^ cb),
                       ("not", ~ab)):
        assert_close(out[name], want.astype(np.float64))
    assert_close(out["out"], np.where(ab, x, y))


def test_bias_scale_dot(layer_case):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    y = rng.standard_normal((3, 1, 1)).astype(np.float32)
    bias = rng.standard_normal((1, 4, 5)).astype(np.float32)
    s = rng.standard_normal(3).astype(np.float32)
    sb = np.float32(0.25)

    def layers(b):
        b.add_bias("b", bias, "x", "out", shape_bias=[1, 4, 5])
        b.add_scale("s", s, np.array([sb]), True, "x", "sc", shape_scale=[3], shape_bias=[1])
        b.add_elementwise("d", ["y", "y"], "dot", "DOT")
        b.add_elementwise("cos", ["y", "y"], "cos", "COS")

    out = layer_case(layers, {"x": x, "y": y}, outputs=("out", "sc", "dot", "cos"), rank5=True)
    x64 = x.astype(np.float64)
    assert_close(out["out"][0, 0], x64 + bias)
    assert_close(out["sc"][0, 0], x64 * s.reshape(3, 1, 1) + sb)
    assert_close(np.squeeze(out["dot"]), np.sum(y.astype(np.float64) ** 2))
    assert_close(np.squeeze(out["cos"]), 1.0)


def test_fp16_policy_rounds_results(device, nnh):
    """Under the fp16 policy the network computes in float16 (checked against float16 tolerances)."""
    x = rng.standard_normal((4, 8)).astype(np.float32)
    b = nnh.make_builder({"x": x.shape})
    b.add_activation("a", "SIGMOID", "x", "s")
    b.add_unary("u", "s", "out", "exp")
    got = nnh.run_spec(b.spec, {"x": x}, device, policy="fp16")["out"]
    assert_close(got, np.exp(sigmoid(x.astype(np.float64))), "float16")
    if device == "cpu":
        exact = nnh.run_spec(b.spec, {"x": x}, device, policy="fp32")["out"]
        assert np.abs(got - exact).max() > 1e-6  # really rounded through float16
