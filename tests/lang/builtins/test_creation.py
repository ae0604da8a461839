"""Tensor creation builtins and the typed constructors f32::zeros, f16::arange, Tensor::from_array, ..."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang.builtins.support import call, error
from tensorlogic.lang.values import Context


@pytest.mark.parametrize("shape", [([2, 3],), (2, 3), ([2.0, 3.0],), (torch.tensor([2, 3]),), ([],)])
def test_zeros_ones_shapes(shape):
    want = tuple(int(d) for d in (shape[0] if len(shape) == 1 else shape))
    z, o = call("zeros", *shape), call("ones", *shape)
    assert z.shape == want and z.dtype == torch.float16 and not z.any()
    assert o.shape == want and o.dtype == torch.float16 and bool((o == 1).all())


def test_zeros_dtype_and_errors():
    assert call("zeros", [2], dtype="int64").dtype == torch.int64
    assert error("zeros", [2, -1]) == "shape cannot have negative sizes: [2, -1]"
    assert error("ones", [2.5]) == "shape must be an integer, got 2.5"
    assert error("ones", torch.zeros(2, 2)) == "shape must be a list of integers, got a tensor of shape [2, 2]"
    assert error("zeros", "3") == "shape must be a list of integers, got string"


def test_tensor_full_eye():
    t = call("tensor", [[1, 2], [3, 4]])
    assert t.dtype == torch.float16 and t.tolist() == [[1, 2], [3, 4]]
    assert call("tensor", [1, 2], dtype="float32").dtype == torch.float32
    f = call("full", [2, 2], 7.5)
    assert f.dtype == torch.float16 and f.tolist() == [[7.5, 7.5], [7.5, 7.5]]
    np.testing.assert_array_equal(call("eye", 3).double().numpy(), np.eye(3))


@pytest.mark.parametrize(
    "args, expected",
    [
        ((5,), np.arange(5)),
        ((10, 15), np.arange(10, 15)),
        ((0, 1, 0.25), np.arange(0, 1, 0.25)),
        ((3, 0, -1), [3, 2, 1]),
    ],
)
def test_arange_is_float32_like_the_original(args, expected):
    r = call("arange", *args)
    assert r.dtype == torch.float32
    np.testing.assert_array_equal(r.numpy(), np.asarray(expected, dtype=np.float32))


def test_arange_dtype_and_errors():
    assert call("arange", 1, 7, 2, dtype="int64").tolist() == [1, 3, 5]
    assert call("arange", torch.tensor(3.0)).tolist() == [0.0, 1.0, 2.0]
    assert error("arange", 0, 5, 0) == "the step cannot be 0"
    assert error("arange", "5") == "start, end and step must be numbers, got string"


@pytest.mark.parametrize("ns, dtype", [("f32", torch.float32), ("f16", torch.float16)])
def test_typed_constructors(ns, dtype):
    z = call(f"{ns}::zeros", [3, 2])
    o = call(f"{ns}::ones", [2, 3])
    r = call(f"{ns}::arange", 5)
    a = call(f"{ns}::from_array", [[1.5, 2.0], [3.0, 4.0]])
    assert (z.dtype, o.dtype, r.dtype, a.dtype) == (dtype,) * 4
    assert z.shape == (3, 2) and not z.any() and o.shape == (2, 3) and bool((o == 1).all())
    assert r.tolist() == [0, 1, 2, 3, 4]
    assert call(f"{ns}::arange", 2, 5).tolist() == [2, 3, 4]
    assert a.tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_tensor_namespace_is_the_plain_functions():
    assert call("Tensor::zeros", [2]).dtype == torch.float16
    assert call("Tensor::ones", 2, dtype="float32").dtype == torch.float32
    assert call("Tensor::arange", 3).dtype == torch.float32
    assert call("Tensor::from_array", [1, 2]).dtype == torch.float16


def test_rand_is_seeded_by_the_context():
    ctx = Context(device="cpu")
    call("seed", 7, ctx=ctx)
    a = call("rand", [2, 3], ctx=ctx)
    b = call("randn", 4, ctx=ctx)
    ref = torch.Generator().manual_seed(7)
    want_a = torch.rand(2, 3, generator=ref, dtype=torch.float32).half()
    want_b = torch.randn(4, generator=ref, dtype=torch.float32).half()
    assert torch.equal(a, want_a) and torch.equal(b, want_b)
    assert a.dtype == torch.float16 and bool(((a >= 0) & (a < 1)).all())
    again = call("rand", [2, 3], seed=7, ctx=ctx)
    assert torch.equal(again, want_a)


def test_rand_needs_a_float_dtype():
    assert error("rand", [2], dtype="int64") == "random values need a floating dtype, got int64"
