"""Gather/scatter ops against numpy (take, take_along_axis, ufunc.at), per opset index convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(7)
X = RNG.uniform(-2, 2, size=(3, 4, 5))


def _gather_ref(x, idx, axis, batch_dims):
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    return np.stack([_gather_ref(xb, ib, axis - 1, batch_dims - 1) for xb, ib in zip(x, idx)])


def _gather_nd_ref(x, idx, batch_dims):
    if batch_dims:
        return np.stack([_gather_nd_ref(xb, ib, batch_dims - 1) for xb, ib in zip(x, idx)])
    flat = idx.reshape(-1, idx.shape[-1])
    out = np.stack([x[tuple(i)] for i in flat])
    return out.reshape(*idx.shape[:-1], *x.shape[idx.shape[-1]:])


_UFUNC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
          "min": np.minimum}


def _apply(out, where, upd, mode):
    """Apply updates one by one (the order duplicates are resolved in), numpy style."""
    if mode == "update":
        out[where] = upd
    else:
        _UFUNC[mode].at(out, where, upd)


def _scatter_ref(data, idx, upd, axis, mode, wrap=True):
    out = data.copy()
    n = data.shape[axis]
    upd = np.moveaxis(upd.reshape(*data.shape[:axis], idx.size, *data.shape[axis + 1:]), axis, 0)
    view = np.moveaxis(out, axis, 0)
    for k, i in enumerate(idx.reshape(-1)):
        i = i + n if (wrap and i < 0) else i
        if 0 <= i < n:
            _apply(view, i, upd[k], mode)
    return out


def _scatter_along_ref(data, idx, upd, axis, mode):
    out = data.copy()
    for pos in np.ndindex(idx.shape):
        target = list(pos)
        target[axis] = idx[pos] % data.shape[axis]
        _apply(out, tuple(target), upd[pos], mode)
    return out


def _scatter_nd_ref(data, idx, upd, mode):
    out = data.copy()
    k = idx.shape[-1]
    upd = upd.reshape(-1, *data.shape[k:])
    for j, i in enumerate(idx.reshape(-1, k)):
        _apply(out, tuple(i), upd[j], mode)
    return out


IDX = np.array([[2, 0], [1, 2]], dtype=np.int32)


def _cases():
    # name, opset, inputs (float arrays are cast to the test dtype), kwargs, reference
    for axis, bd in [(0, 0), (1, 0), (-1, 0), (2, 1), (1, 1)]:
        idx = RNG.integers(-3, 3, size=(3, 2) if bd else (2, 3)).astype(np.int32)
        yield f"gather-axis{axis}-bd{bd}", "gather", "CoreML9", {"x": X, "indices": idx}, \
            {"axis": axis, "batch_dims": bd}, lambda x, indices, a=axis, b=bd: _gather_ref(x, indices, a % 3, b)
    yield "gather-scalar", "gather", "CoreML5", {"x": X, "indices": np.array(-1, dtype=np.int32)}, {"axis": 1}, \
        lambda x, indices: np.take(x, -1, axis=1)
    for axis in (0, 1, -1):
        shape = list(X.shape)
        shape[axis] = 6
        idx = RNG.integers(-X.shape[axis], X.shape[axis], size=shape).astype(np.int32)
        yield f"gather_along_axis-{axis}", "gather_along_axis", "CoreML9", {"x": X, "indices": idx}, {"axis": axis}, \
            lambda x, indices, a=axis: np.take_along_axis(x, indices % x.shape[a], axis=a)
    yield "gather_nd", "gather_nd", "CoreML9", {"x": X, "indices": np.array([[[1, -1], [2, 3]]], dtype=np.int32)}, {}, \
        lambda x, indices: _gather_nd_ref(x, indices, 0)
    yield "gather_nd-batch", "gather_nd", "CoreML9", \
        {"x": X, "indices": RNG.integers(0, 4, (3, 2, 1)).astype(np.int32)}, {"batch_dims": 1}, \
        lambda x, indices: _gather_nd_ref(x, indices, 1)
    data = RNG.uniform(0.5, 2, size=(4, 3))
    for mode in ("update", "add", "sub", "mul", "div", "max", "min"):
        upd = RNG.uniform(0.5, 2, size=(3, 2, 3))
        # Repeated indices: for "update" the last one in order wins, on every device.
        idx = np.array([[1, -1], [3, 1], [0, 1]], dtype=np.int32)
        yield f"scatter-{mode}", "scatter", "CoreML5", {"data": data, "indices": idx, "updates": upd}, {"mode": mode}, \
            lambda data, indices, updates, m=mode: _scatter_ref(data, indices, updates, 0, m)
        idx17 = np.array([1, 7, -1, 2], dtype=np.int32)
        yield f"scatter17-axis1-{mode}", "scatter", "CoreML7", \
            {"data": data, "indices": idx17, "updates": RNG.uniform(0.5, 2, size=(4, 4))}, {"axis": 1, "mode": mode}, \
            lambda data, indices, updates, m=mode: _scatter_ref(data, indices, updates, 1, m, wrap=False)
        aidx = RNG.integers(-3, 3, size=(4, 5)).astype(np.int32)
        yield f"scatter_along_axis-{mode}", "scatter_along_axis", "CoreML5", \
            {"data": data, "indices": aidx, "updates": RNG.uniform(0.5, 2, size=aidx.shape)}, \
            {"axis": -1, "mode": mode}, \
            lambda data, indices, updates, m=mode: _scatter_along_ref(data, indices, updates, 1, m)
        nidx = np.array([[[0, 1], [3, 2]], [[0, 1], [1, 0]]], dtype=np.int32)
        yield f"scatter_nd-{mode}", "scatter_nd", "CoreML7", \
            {"data": data, "indices": nidx, "updates": RNG.uniform(0.5, 2, size=(2, 2))}, {"mode": mode}, \
            lambda data, indices, updates, m=mode: _scatter_nd_ref(data, indices, updates, m)
    yield "scatter_nd-rows", "scatter_nd", "CoreML5", \
        {"data": X, "indices": np.array([[-1], [0]], dtype=np.int32), "updates": RNG.uniform(size=(2, 4, 5))}, {}, \
        lambda data, indices, updates: _scatter_nd_ref(data, indices % 3, updates, "add")


CASES = {c[0]: c[1:] for c in _cases()}


def _tensor(v, dtype, device):
    if isinstance(v, np.ndarray) and v.dtype == np.float64:
        return torch.tensor(v, dtype=dtype, device=device)
    return torch.tensor(v, device=device)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_scatter_gather(case, device, dtype):
    name, opset, inputs, kwargs, ref = CASES[case]
    tdtype = getattr(torch, dtype)
    args = {k: _tensor(v, tdtype, device) for k, v in inputs.items()}
    out = registry.get(name, opset).fn(**args, **kwargs)
    expected = ref(**{k: v.double().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                      for k, v in args.items()})
    assert tuple(out.shape) == expected.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol, rtol=rtol)


def test_int_data(device):
    x = torch.tensor([[5, -7, 9], [2, 4, 6]], dtype=torch.int32, device=device)
    idx = torch.tensor([[1, 0, 1]], dtype=torch.int32, device=device)
    got = registry.get("gather_along_axis").fn(x, idx, axis=0)
    assert got.dtype == torch.int32 and got.cpu().tolist() == [[2, -7, 6]]
    upd = torch.tensor([[2, 3, 4]], dtype=torch.int32, device=device)
    got = registry.get("scatter_along_axis").fn(x, idx, upd, axis=0, mode="div")
    assert got.cpu().tolist() == [[5, -2, 9], [1, 4, 1]]  # integer division truncates, like TensorFlow


def test_validate_indices_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(IndexError, match="gather index 3 is out of bounds for size 3"):
        registry.get("gather").fn(x, torch.tensor([0, 3]), axis=1, validate_indices=True)
    with pytest.raises(IndexError, match="scatter index -1 is out of bounds for size 2"):
        registry.get("scatter", "CoreML7").fn(x, torch.tensor([-1, 0]), torch.ones(2, 3), validate_indices=True)
    with pytest.raises(IndexError, match=r"scatter_nd index 5 is out of bounds for size 3"):
        registry.get("scatter_nd", "CoreML8").fn(x, torch.tensor([[0, 5]]), torch.ones(1), validate_indices=True)
    with pytest.raises(ValueError, match="unknown scatter mode 'avg'"):
        registry.get("scatter").fn(x, torch.tensor([0]), torch.ones(1, 3), mode="avg")


def test_unchecked_out_of_bounds_is_safe():
    x = torch.arange(6.0).reshape(2, 3)
    got = registry.get("gather").fn(x, torch.tensor([5, -9]), axis=1)
    assert got.shape == (2, 2) and torch.isfinite(got).all()
