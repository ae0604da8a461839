"""Shape and indexing builtins against numpy / torch float64 references and hand-written values."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lang.builtins.support import call, error
from tensorlogic.lang.attrs import get_method
from tensorlogic.lang.values import Context

CTX = Context(device="cpu")


def grid(*shape: int, dtype=torch.float16) -> torch.Tensor:
    """0, 1, 2, ... laid out in shape (exact in float16 up to 2048)."""
    return torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape).to(dtype)


def same(got: torch.Tensor, want: np.ndarray, dtype=torch.float16) -> None:
    assert got.dtype == dtype, got.dtype
    np.testing.assert_array_equal(got.double().numpy(), np.asarray(want, dtype=np.float64))


def test_shape_rank_and_the_shape_method():
    x = grid(2, 3, 4)
    assert call("shape", x) == [2, 3, 4]
    assert call("shape", [1, 2, 3]) == [3]
    assert call("rank", x) == 3
    m = get_method(CTX, x, "shape")  # x.shape() calls the builtin although x.shape is a property
    assert m.fn(CTX, m.self_value) == [2, 3, 4]


@pytest.mark.parametrize("new", [([3, 4],), (3, 4), ([3.0, 4.0],), (torch.tensor([3, 4]),), ([-1, 4],), ([3, -1],)])
def test_reshape(new):
    x = grid(2, 6)
    same(call("reshape", x, *new), np.arange(12).reshape(3, 4))


def test_reshape_copies_and_errors():
    x = grid(2, 3)
    y = call("reshape", x, [6])
    y[0] = 99
    assert x[0, 0] == 0  # the result does not share x's memory
    assert error("reshape", x, [4, 2]) == "cannot reshape a tensor of shape [2, 3] (6 values) to [4, 2]"


def test_flatten():
    same(call("flatten", grid(2, 3, 2)), np.arange(12))


def test_squeeze_unsqueeze():
    x = grid(1, 3, 1)
    assert call("squeeze", x).shape == (3,)
    assert call("squeeze", x, 0).shape == (3, 1)
    assert call("squeeze", x, -1).shape == (1, 3)
    a = grid(3)
    assert call("unsqueeze", a, 0).shape == (1, 3)
    assert call("unsqueeze", a, 1).shape == (3, 1)
    assert call("unsqueeze", a, -1).shape == (3, 1)
    assert call("unsqueeze", grid(2, 3), 2).shape == (2, 3, 1)
    same(call("unsqueeze", a, 1), np.arange(3).reshape(3, 1))


def test_squeeze_unsqueeze_errors():
    assert error("squeeze", grid(2, 3), 0) == "dimension 0 has size 2; only size-1 dimensions can be squeezed"
    assert error("unsqueeze", grid(3), 2) == "dim 2 is out of range for a 1-D tensor"
    assert error("squeeze", grid(1, 3), 5) == "dim 5 is out of range for a 2-D tensor"


def test_transpose_permute():
    ref = np.arange(24).reshape(2, 3, 4)
    x = grid(2, 3, 4)
    same(call("transpose", grid(2, 3)), np.arange(6).reshape(2, 3).T)
    same(call("transpose", x), ref.transpose(0, 2, 1))
    same(call("transpose", x, 0, 2), ref.transpose(2, 1, 0))
    same(call("permute", x, [2, 0, 1]), ref.transpose(2, 0, 1))
    same(call("permute", x, 1, 2, 0), ref.transpose(1, 2, 0))
    same(call("permute", x, [-1, 0, 1]), ref.transpose(2, 0, 1))


def test_transpose_permute_errors():
    assert error("transpose", grid(3)) == "needs at least 2 dimensions, got shape [3]"
    assert error("transpose", grid(2, 3), 0) == "takes no dimensions or two (dim0, dim1)"
    order_error = "is not an order of the 2 dimensions of a tensor of shape [2, 3]"
    assert error("permute", grid(2, 3), [0, 0]) == f"[0, 0] {order_error}"
    assert error("permute", grid(2, 3), [0]) == f"[0] {order_error}"


def test_broadcast_to():
    x = grid(1, 3)
    got = call("broadcast_to", x, [2, 2, 3])
    same(got, np.broadcast_to(np.arange(3).reshape(1, 3), (2, 2, 3)))
    got[0, 0, 0] = 7  # materialized: writing one element changes only that element
    assert int((got == 7).sum()) == 1
    assert call("broadcast_to", x, [2.0, 3.0]).shape == (2, 3)
    assert error("broadcast_to", grid(2, 3), [4, 5]) == "cannot broadcast shape [2, 3] to [4, 5]"


def test_concat_forms():
    a, b = grid(2, 3), grid(2, 3) + 10
    ref0 = np.concatenate([np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3) + 10], 0)
    same(call("concat", a, b, 0), ref0)
    same(call("concat", a, b, 0.0), ref0)  # the original's examples pass the dim as a float
    same(call("concat", [a, b], dim=1), np.concatenate([ref0[:2], ref0[2:]], 1))
    same(call("concat", a, b), ref0)
    same(call("concat", a, b, a, 1), np.concatenate([ref0[:2], ref0[2:], ref0[:2]], 1))
    assert call("concat", [1, 2], [3]).tolist() == [1, 2, 3]


def test_concat_stack_errors():
    assert error("concat", grid(2, 3), grid(3, 2), 0) == "cannot join shapes [2, 3] and [3, 2] along dimension 0"
    assert error("concat", []) == "needs at least one tensor"
    assert error("stack", grid(2), grid(3)) == "needs tensors of one shape, got [2], [3]"


def test_stack():
    a, b = grid(3), grid(3) + 5
    same(call("stack", [a, b]), np.stack([np.arange(3), np.arange(3) + 5]))
    same(call("stack", a, b, 1), np.stack([np.arange(3), np.arange(3) + 5], 1))


def test_split_and_chunk_return_the_first_piece_like_the_original():
    x = grid(7, 2)
    same(call("split", x, 3, 0), np.arange(14).reshape(7, 2)[:3])
    same(call("split", grid(6, 4), 2, 1), np.arange(24).reshape(6, 4)[:, :2])
    same(call("split", grid(10, 4), [3, 3, 4], 0), np.arange(40).reshape(10, 4)[:3])
    same(call("chunk", grid(6, 4), 3, 0), np.arange(24).reshape(6, 4)[:2])
    first = call("split", x, 3, 0)
    first[0, 0] = 100  # a copy, not a view of x
    assert x[0, 0] == 0


def test_split_and_chunk_all_pieces():
    x = grid(7, 2)
    parts = call("split", x, 3, 0, all=True)
    assert [p.shape[0] for p in parts] == [3, 3, 1]
    same(torch.cat(parts), np.arange(14).reshape(7, 2))
    sized = call("split", grid(10, 4), [3, 3, 4], 0, all=True)
    assert [tuple(p.shape) for p in sized] == [(3, 4), (3, 4), (4, 4)]
    same(sized[2], np.arange(40).reshape(10, 4)[6:])
    chunks = call("chunk", grid(12, 4), 3, 0, all=True)
    assert [tuple(p.shape) for p in chunks] == [(4, 4)] * 3
    same(chunks[1], np.arange(48).reshape(12, 4)[4:8])
    cols = call("chunk", grid(2, 5), 2, 1, all=True)  # ceil(5 / 2) = 3 columns, then 2
    assert [tuple(p.shape) for p in cols] == [(2, 3), (2, 2)]


def test_split_chunk_errors():
    assert error("split", grid(4), 0, 0) == "the split size must be > 0, got 0"
    assert error("split", grid(4), [1, 2], 0) == "sizes [1, 2] do not add up to 4, the size of dimension 0"
    assert error("chunk", grid(4), 0, 0) == "the number of chunks must be > 0, got 0"


def test_slice():
    same(call("slice", grid(10), 2, 5), [2, 3, 4])
    same(call("slice", grid(2, 4), 1, 1, 4), [5, 6, 7])  # row 1, columns 1..3
    assert call("slice", [10, 20, 30, 40], 1, 3) == [20, 30]
    assert call("slice", grid(5), -2, 5).tolist() == [3, 4]


def test_slice_errors():
    assert error("slice", grid(5), 3, 2) == "start 3 must be below end 2"
    assert error("slice", grid(5), 0, 6) == "end 6 is out of range for a size of 5"
    assert error("slice", grid(2, 3), 0, 2) == "slice(v, start, end) needs a 1-D tensor, got shape [2, 3]"
    assert error("slice", grid(6), 0, 0, 2) == "slice(m, row, start, end) needs a 2-D tensor, got shape [6]"
    assert error("slice", grid(2, 3), 2, 0, 1) == "row 2 is out of range for a size of 2"


def test_slice_last():
    ref = np.arange(24).reshape(2, 3, 4)
    same(call("slice_last", grid(2, 3, 4), 0), ref[-1])
    same(call("slice_last", grid(2, 3, 4), 2), ref[:, :, -1])
    got = call("slice_last", grid(5))
    assert got.shape == () and float(got) == 4
    assert error("slice_last", torch.tensor(1.0)) == "needs a tensor with at least one dimension"
    assert error("slice_last", torch.zeros(0, 2)) == "dimension 0 is empty"


def test_gather_torch_semantics_and_rows():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float16)
    # out[i][j] = x[i][index[i][j]] along dim 1 (hand-computed)
    same(call("gather", x, 1, torch.tensor([[0, 0], [1, 0]])), [[1, 1], [4, 3]])
    # the original's indices are float tensors
    same(call("gather", x, 0, torch.tensor([[1.0, 0.0]], dtype=torch.float16)), [[3, 2]])
    # a 1-D index picks whole rows (the original's examples gather rows of a cache this way)
    same(call("gather", grid(5, 2), 0, [4, 0, 4]), np.arange(10).reshape(5, 2)[[4, 0, 4]])
    same(call("gather", grid(4), 0, [-1, 0]), [3, 0])


def test_gather_errors():
    assert error("gather", grid(3, 2), 0, [3]) == "index 3 is out of range for dimension 0 of size 3"
    assert error("gather", grid(3), 0, [0.5]) == "indices must be whole numbers"
    assert error("gather", grid(3), 0, torch.tensor([True])) == "indices must be numbers, got a bool tensor"
    assert error("gather", grid(2, 2), 0, torch.zeros(1, 1, 1)) == (
        "the index has 3 dimensions; it needs 1 or 2 (the tensor's)"
    )
    assert error("gather", grid(2, 2), 0, torch.zeros(1, 3)) == (
        "an index of shape [1, 3] does not fit a tensor of shape [2, 2]"
    )


def test_scatter():
    x = torch.zeros(3, 2, dtype=torch.float16)
    got = call("scatter", x, 0, torch.tensor([[2, 0]]), torch.tensor([[5.0, 6.0]]))
    same(got, [[0, 6], [0, 0], [5, 0]])  # out[index[i][j]][j] = src[i][j]
    assert not x.any()  # a new tensor; x is unchanged
    cache = call("scatter", torch.zeros(5, 2), 0, torch.tensor([1.0, 3.0]), torch.ones(2, 2) * 2)
    same(cache, [[0, 0], [2, 2], [0, 0], [2, 2], [0, 0]], torch.float32)


def test_scatter_errors():
    assert error("scatter", torch.zeros(5, 2), 0, [1, 3], torch.ones(3, 2)) == (
        "src has shape [3, 2]; writing 2 slices needs [2, 2]"
    )
    assert error("scatter", torch.zeros(3), 0, torch.zeros(1, 1), torch.ones(1)) == (
        "index [1, 1] and src [1] need one shape of the tensor's rank 1"
    )


def test_index_select():
    same(call("index_select", grid(3, 4), 1, [3, 0]), np.arange(12).reshape(3, 4)[:, [3, 0]])
    assert error("index_select", grid(3, 4), 0, [[0]]) == "needs a 1-D list of indices, got shape [1, 1]"


def test_einsum_accumulates_in_float32():
    a64 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b64 = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = call("einsum", "ij,jk->ik", a64.half(), b64.half())
    assert got.dtype == torch.float16
    np.testing.assert_allclose(got.double().numpy(), (a64.half().double() @ b64.half().double()).numpy(), rtol=2e-3,
                               atol=2e-3)
    same(call("einsum", "ii->", torch.eye(3, dtype=torch.float16)), 3)


def test_einsum_overflow_and_errors():
    err = io.StringIO()
    ctx = Context(device="cpu", err=err)
    got = call("einsum", "i->", torch.full((300,), 300.0, dtype=torch.float16), ctx=ctx)
    assert got.dtype == torch.float32 and float(got) == 90000.0
    assert err.getvalue() == "tl: warning: einsum overflows float16 (max 65504); the result is kept in float32\n"
    assert error("einsum", 3, grid(2)) == "the first argument must be an equation string, got int"
    assert error("einsum", "ij->i") == "needs at least one tensor after the equation"
    assert error("einsum", "ij,jk->ik", grid(2, 3), grid(2, 3)).startswith(
        "'ij,jk->ik' does not fit shapes [2, 3], [2, 3]: "
    )
