"""Numpy decompression of constexpr ops against coremltools' own ``decompress`` implementations."""

from __future__ import annotations

import numpy as np
import pytest

from tensorlogic.errors import OpError
from tensorlogic.mil import constexpr as cx
from tensorlogic.mil.ir import Op, TensorType, Var, scalar, tensor

pytest.importorskip("coremltools")
ios16 = pytest.importorskip("coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops")
ios18 = pytest.importorskip("coremltools.converters.mil.mil.ops.defs.iOS18.compression")

rng = np.random.default_rng(11)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("qdtype", [np.int8, np.uint8])
def test_affine_dequantize(axis, qdtype):
    q = rng.integers(np.iinfo(qdtype).min, np.iinfo(qdtype).max, (4, 6, 3)).astype(qdtype)
    n = q.shape[axis]
    scale = rng.uniform(0.01, 0.1, n).astype(np.float16)
    zp = rng.integers(0, 5, n).astype(qdtype)
    ref = ios16.constexpr_affine_dequantize.decompress(q, zp, scale, axis)
    got = cx.affine_dequantize(q, zp, scale, axis)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, ref)
    # scalar scale / zero point
    np.testing.assert_array_equal(cx.affine_dequantize(q, np.array(3, qdtype), np.float32(0.5), axis),
                                  ios16.constexpr_affine_dequantize.decompress(q, np.array(3, qdtype),
                                                                               np.float32(0.5), axis))


@pytest.mark.parametrize("offset", [True, False])
@pytest.mark.parametrize("scale_shape", [(1, 1), (8, 1), (8, 3), (2, 6)])
def test_blockwise_shift_scale(offset, scale_shape):
    data = rng.integers(-8, 8, (8, 12)).astype(np.int8)
    scale = rng.uniform(0.01, 0.2, scale_shape).astype(np.float16)
    off = rng.integers(-2, 3, scale_shape).astype(np.int8) if offset else None
    ref = ios18.constexpr_blockwise_shift_scale.decompress(data, scale, off)
    got = cx.blockwise_shift_scale(data, scale, off)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_lut_to_dense_ios16(nbits):
    shape = np.array([5, 7], np.uint32)
    lut = rng.standard_normal(2**nbits).astype(np.float16)
    codes = rng.integers(0, 2**nbits, 35).astype(np.uint8)
    from coremltools.optimize._utils import pack_elements_into_bits

    packed = pack_elements_into_bits(codes, nbits)
    ref = ios16.constexpr_lut_to_dense.decompress(lut, packed, shape)
    np.testing.assert_array_equal(cx.lut_to_dense_packed(packed, lut, shape), ref)
    np.testing.assert_array_equal(ref.reshape(-1), lut[codes])


@pytest.mark.parametrize("groups,vector,axis", [
    ((1, 1), 1, None), ((2, 1), 1, None), ((3, 2), 1, None), ((1, 1), 2, 0), ((1, 1), 3, 1), ((2, 1), 2, 1),
])
def test_lut_to_dense_ios18(groups, vector, axis):
    indices = rng.integers(0, 4, (6, 4)).astype(np.uint8)
    lut = rng.standard_normal((*groups, 4, vector)).astype(np.float16)
    ref = ios18.constexpr_lut_to_dense.decompress(indices, lut, axis)
    got = cx.lut_to_dense(indices, lut, axis)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_sparse_to_dense_both_generations():
    dense = rng.standard_normal((6, 5)).astype(np.float16)
    mask = rng.integers(0, 2, dense.shape).astype(np.uint8)
    nonzero = dense[mask != 0]
    np.testing.assert_array_equal(cx.sparse_to_dense(nonzero, mask),
                                  ios18.constexpr_sparse_to_dense.decompress(nonzero, mask))
    packed = np.packbits(mask.reshape(-1), bitorder="little")
    shape = np.array(dense.shape, np.uint32)
    np.testing.assert_array_equal(cx.sparse_to_dense_packed(nonzero, packed, shape),
                                  ios16.constexpr_sparse_to_dense.decompress(nonzero, packed, shape))


def test_sparse_lut_and_sparse_shift_scale():
    mask = rng.integers(0, 2, (4, 6)).astype(np.uint8)
    count = int(mask.sum())
    idx = rng.integers(0, 4, count).astype(np.uint8)
    lut = rng.standard_normal((2, 1, 4, 2)).astype(np.float16)
    ref = ios18.constexpr_lut_to_sparse.decompress(mask, idx, lut, 1)
    got = cx.lut_to_sparse(mask, idx, lut, 1)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    data = rng.integers(-8, 8, count).astype(np.int8)
    scale = rng.uniform(0.1, 1, (4, 2)).astype(np.float16)
    off = rng.integers(-2, 2, (4, 2)).astype(np.int8)
    ref = ios18.constexpr_sparse_blockwise_shift_scale.decompress(mask, data, scale, off)
    got = cx.sparse_blockwise_shift_scale(mask, data, scale, off)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


def test_cast():
    x = rng.standard_normal(5).astype(np.float16)
    np.testing.assert_array_equal(cx.cast(x, "fp32"), x.astype(np.float32))


def test_evaluate_constexpr_resolves_names_and_checks_shape():
    lut = tensor("fp16", [1.0, 2.0, 3.0, 4.0]).data.reshape(1, 1, 4, 1)
    op = Op(
        "constexpr_lut_to_dense",
        inputs={"indices": ("idx",), "lut": (tensor("fp16", lut),)},
        outputs=[Var("w", TensorType("fp16", (2, 2)))],
        attributes={"name": scalar("string", "w")},
    )
    out = cx.evaluate_constexpr(op, lambda name: np.array([[0, 3], [2, 1]], np.uint8))
    np.testing.assert_array_equal(out[0], np.array([[1, 4], [3, 2]], np.float16))
    bad = Op(op.type, op.inputs, [Var("w", TensorType("fp16", (4,)))], op.attributes)
    with pytest.raises(OpError, match=r"op constexpr_lut_to_dense -> w: decompressed shape \[2, 2\] differs"):
        cx.evaluate_constexpr(bad, lambda name: np.array([[0, 3], [2, 1]], np.uint8))
    with pytest.raises(OpError, match=r"index 9 is past the 4-entry palette"):
        cx.evaluate_constexpr(op, lambda name: np.array([[0, 9], [2, 1]], np.uint8))
