"""tensor_transformation ops against numpy float64 (slicing with masks and negative strides, reshape 0/-1, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(5)
X = RNG.uniform(-2, 2, size=(2, 3, 4))
IMG = RNG.uniform(-2, 2, size=(2, 8, 4, 6))


def _d2s_ref(x, b):
    """TensorFlow DepthToSpace (DCR) written with explicit loops over the block."""
    n, c, h, w = x.shape
    out = np.zeros((n, c // (b * b), h * b, w * b))
    for i in range(b):
        for j in range(b):
            out[:, :, i::b, j::b] = x[:, (i * b + j) * (c // (b * b)):(i * b + j + 1) * (c // (b * b))]
    return out


def _s2d_ref(x, b):
    n, c, h, w = x.shape
    return np.concatenate([x[:, :, i::b, j::b] for i in range(b) for j in range(b)], axis=1)


def _s2b_ref(x, block, pads):
    x = np.pad(x, [(0, 0), (0, 0), tuple(pads[0:2]), tuple(pads[2:4])])
    return np.concatenate([x[:, :, i::block[0], j::block[1]] for i in range(block[0]) for j in range(block[1])])


def _pixel_shuffle_ref(x, f):
    n, c, h, w = x.shape
    out = np.zeros((n, c // (f * f), h * f, w * f))
    for ch in range(c // (f * f)):
        for i in range(f):
            for j in range(f):
                out[:, ch, i::f, j::f] = x[:, ch * f * f + i * f + j]
    return out


def _sliding_ref(x, axis, size, stride):
    n = (x.shape[axis] - size) // stride + 1
    windows = [np.take(x, np.arange(k * stride, k * stride + size), axis=axis) for k in range(n)]
    return np.stack(windows, axis=axis % x.ndim)


def _slice_ref(x, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    index = []
    for d in range(x.ndim):
        if squeeze_mask[d]:
            index.append(begin[d])
        else:
            index.append(slice(None if begin_mask[d] else begin[d], None if end_mask[d] else end[d], stride[d]))
    return x[tuple(index)]


def _reverse_sequence_ref(x, lengths, seq_axis, batch_axis):
    out = x.copy()
    for b, n in enumerate(lengths):
        src = np.take(x, b, axis=batch_axis)
        part = np.take(src, np.arange(n)[::-1], axis=seq_axis - (seq_axis > batch_axis))
        view = np.moveaxis(np.take(out, b, axis=batch_axis), seq_axis - (seq_axis > batch_axis), 0)
        view[:n] = np.moveaxis(part, seq_axis - (seq_axis > batch_axis), 0)
        idx = [slice(None)] * x.ndim
        idx[batch_axis] = b
        out[tuple(idx)] = np.moveaxis(view, 0, seq_axis - (seq_axis > batch_axis))
    return out


SLICES = [
    # begin, end, stride, begin_mask, end_mask, squeeze_mask
    ([1, 1, 1], [2, 3, 3], [1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]),
    ([-1, -1, -1], [0, 1, -3], [-2, -1, -3], [0, 0, 0], [0, 0, 0], [0, 0, 0]),
    ([1, 1, 1], [2, 3, 4], [1, 1, 2], [1, 0, 1], [1, 1, 0], [0, 0, 0]),
    ([1, 1, 1], [2, 3, 3], [1, 1, 2], [0, 0, 1], [1, 0, 0], [0, 1, 0]),
    ([0, 0, 0], [0, 0, 0], [1, 1, -1], [1, 1, 1], [1, 1, 1], [0, 0, 0]),
    ([0, -1, 0], [2, 0, 0], [1, 2, -2], [0, 0, 0], [0, 1, 1], [0, 0, 0]),
    ([4, -1, 0], [4, -1, 0], [1, -1, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]),
    ([-1, 0, 2], [0, 0, 0], [1, 1, 1], [0, 1, 0], [0, 1, 0], [1, 0, 1]),
]


def _cases():
    yield "depth_to_space", "depth_to_space", "CoreML9", {"x": IMG}, {"block_size": 2}, lambda x: _d2s_ref(x, 2)
    yield "space_to_depth", "space_to_depth", "CoreML9", {"x": IMG}, {"block_size": 2}, lambda x: _s2d_ref(x, 2)
    yield "pixel_shuffle", "pixel_shuffle", "CoreML9", {"x": IMG}, {"upscale_factor": 2}, \
        lambda x: _pixel_shuffle_ref(x, 2)
    yield "pixel_unshuffle", "pixel_unshuffle", "CoreML9", {"x": _pixel_shuffle_ref(IMG, 2)}, \
        {"downscale_factor": 2}, lambda x: IMG
    yield "space_to_batch", "space_to_batch", "CoreML9", {"x": IMG}, \
        {"block_shape": (2, 3), "paddings": (0, 2, 2, 1)}, lambda x: _s2b_ref(x, (2, 3), (0, 2, 2, 1))
    moved = _s2b_ref(IMG, (2, 3), (0, 2, 2, 1))
    yield "batch_to_space", "batch_to_space", "CoreML9", {"x": moved}, \
        {"block_shape": (2, 3), "crops": (0, 2, 2, 1)}, lambda x: IMG
    for axes in ([0], [-1], [0, 1], [-2, -1], [1, -1]):
        yield f"expand_dims-{axes}", "expand_dims", "CoreML9", {"x": X}, {"axes": axes}, \
            lambda x, a=axes: np.expand_dims(x, tuple(a))
    for shape, opset, target in [((0, -1, 2), "CoreML5", (2, 6, 2)), ((0, 3, -1), "CoreML5", (2, 3, 4)),
                                 ((-1,), "CoreML5", (24,)), ((6, 4), "CoreML5", (6, 4)),
                                 ((1, 0, -1, 0), "CoreML7", (1, 2, 3, 4)),
                                 ((0, 0, 0, 0, 0), "CoreML7", (1, 1, 2, 3, 4)),
                                 ((0, -1), "CoreML7", (3, 8))]:
        yield f"reshape-{opset}-{shape}", "reshape", opset, {"x": X}, {"shape": shape}, \
            lambda x, t=target: x.reshape(t)
    yield "reshape_like", "reshape_like", "CoreML9", \
        {"x": X, "ref_tensors": (np.zeros((2, 3, 4)), np.zeros((1, 12)))}, \
        {"begins": (0, 1), "ends": (1, 0), "end_masks": (False, True)}, lambda x, ref_tensors: x.reshape(2, 12)
    for axes in (None, [0], [-1, 1]):
        yield f"reverse-{axes}", "reverse", "CoreML9", {"x": X}, {} if axes is None else {"axes": axes}, \
            lambda x, a=axes: np.flip(x, None if a is None else tuple(a))
    for seq_axis, batch_axis in [(1, 0), (0, 1), (2, 1)]:
        lengths = RNG.integers(0, X.shape[seq_axis] + 1, size=X.shape[batch_axis]).astype(np.int32)
        yield f"reverse_sequence-{seq_axis}-{batch_axis}", "reverse_sequence", "CoreML9", \
            {"x": X, "lengths": lengths}, {"seq_axis": seq_axis, "batch_axis": batch_axis}, \
            lambda x, lengths, s=seq_axis, b=batch_axis: _reverse_sequence_ref(x, lengths, s, b)
    for k, spec in enumerate(SLICES):
        names = ("begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask")
        kw = {n: tuple(bool(v) for v in s) if "mask" in n else tuple(s) for n, s in zip(names, spec)}
        yield f"slice_by_index-{k}", "slice_by_index", "CoreML9", {"x": X}, kw, \
            lambda x, s=spec: _slice_ref(x, *s)
        region = _slice_ref(X, *spec)
        if region.ndim:
            upd = RNG.uniform(-5, 5, size=region.shape)

            def ref(x, update, s=spec):
                out = x.copy()
                _slice_ref(out, *s)[...] = update  # numpy basic indexing gives a view to write through
                return out
            yield f"slice_update-{k}", "slice_update", "CoreML9", {"x": X, "update": upd}, kw, ref
    for begin, size in [((0, 1, 1), (2, -1, 2)), ((-1, 0, -3), (1, 3, -1))]:
        yield f"slice_by_size-{begin}", "slice_by_size", "CoreML9", {"x": X}, {"begin": begin, "size": size}, \
            lambda x, b=begin, s=size: x[tuple(slice(bi % d, None if si == -1 else bi % d + si)
                                               for bi, si, d in zip(b, s, x.shape))]
    sq = RNG.uniform(size=(1, 3, 1, 2))
    for axes in (None, [0], [-2, 0], [1]):
        yield f"squeeze-{axes}", "squeeze", "CoreML9", {"x": sq}, {} if axes is None else {"axes": axes}, \
            lambda x, a=axes: np.squeeze(x, None if a is None else tuple(d for d in a if x.shape[d] == 1))
    for perm in ([2, 0, 1], [-1, 0, 1], [0, 1, 2]):
        yield f"transpose-{perm}", "transpose", "CoreML9", {"x": X}, {"perm": perm}, \
            lambda x, p=perm: np.transpose(x, p)
    for axis, size, stride in [(1, 2, 1), (-1, 3, 1), (2, 2, 2), (0, 1, 1)]:
        yield f"sliding_windows-{axis}-{size}-{stride}", "sliding_windows", "CoreML9", {"x": X}, \
            {"axis": axis, "size": size, "stride": stride}, lambda x, a=axis, n=size, s=stride: _sliding_ref(x, a, n, s)


CASES = {c[0]: c[1:] for c in _cases()}


def _tensor(v, dtype, device):
    if isinstance(v, tuple):
        return tuple(_tensor(e, dtype, device) for e in v)
    if isinstance(v, np.ndarray) and v.dtype == np.float64:
        return torch.tensor(v, dtype=dtype, device=device)
    return torch.tensor(v, device=device)


def _numpy(v):
    if isinstance(v, tuple):
        return tuple(_numpy(e) for e in v)
    return v.double().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_tensor_transformation(case, device, dtype):
    name, opset, inputs, kwargs, ref = CASES[case]
    args = {k: _tensor(v, getattr(torch, dtype), device) for k, v in inputs.items()}
    out = registry.get(name, opset).fn(**args, **kwargs)
    expected = np.asarray(ref(**{k: _numpy(v) for k, v in args.items()}))
    assert tuple(out.shape) == expected.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.int8, torch.uint8])
def test_non_float_dtypes(device, dtype):
    x = torch.tensor(RNG.integers(0, 2, size=(2, 3, 4)), device=device).to(dtype)
    xn = x.cpu().numpy()
    sl = registry.get("slice_by_index").fn(x, begin=(1, -1, 0), end=(0, 0, 4), stride=(1, -1, 2),
                                           begin_mask=(True, False, False), end_mask=(True, True, False))
    assert sl.dtype == dtype and sl.cpu().numpy().tolist() == xn[:, -1::-1, 0:4:2].tolist()
    assert registry.get("transpose").fn(x, perm=(1, 2, 0)).cpu().numpy().tolist() == xn.transpose(1, 2, 0).tolist()
    assert registry.get("reverse").fn(x, axes=(1,)).cpu().numpy().tolist() == xn[:, ::-1].tolist()
    assert registry.get("reshape").fn(x, shape=(4, -1)).cpu().numpy().tolist() == xn.reshape(4, -1).tolist()


def test_reshape_errors():
    with pytest.raises(ValueError, match="more than one -1"):
        registry.get("reshape").fn(torch.zeros(2, 3), shape=(-1, -1))
    with pytest.raises(ValueError, match="has a 0 but its length differs from rank 2"):
        registry.get("reshape", "CoreML5").fn(torch.zeros(2, 3), shape=(0, 3, 1))
