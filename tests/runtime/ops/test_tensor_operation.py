"""tensor_operation ops against numpy float64 (pad modes, cumsum variants, sorting, NMS, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(11)
X = RNG.uniform(-2, 2, size=(2, 3, 4))
M = RNG.uniform(-2, 2, size=(2, 4, 5))


def _band_ref(x, lower, upper):
    m, n = np.indices(x.shape[-2:])
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, 0)


def _cumsum_ref(x, axis, exclusive, reverse):
    v = np.flip(x, axis) if reverse else x
    out = np.cumsum(v, axis=axis)
    if exclusive:
        out = out - v
    return np.flip(out, axis) if reverse else out


def _pad_ref(x, pad, mode, value=0.0):
    pairs = [(0, 0)] * (x.ndim - len(pad) // 2) + [tuple(pad[i:i + 2]) for i in range(0, len(pad), 2)]
    np_mode = {"replicate": "edge", "reflect": "reflect", "constant": "constant"}[mode]
    kw = {"constant_values": value} if mode == "constant" else {}
    return np.pad(x, pairs, mode=np_mode, **kw)


def _topk_ref(x, k, axis, ascending):
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx


def _interleave_ref(values, axis):
    out = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return out.reshape(shape)


def _cases():
    for lower, upper in [(-1, -1), (0, -1), (-1, 0), (0, 0), (1, 2)]:
        yield f"band_part-{lower}-{upper}", "band_part", {"x": M}, {"lower": lower, "upper": upper}, \
            lambda x, lo=lower, up=upper: _band_ref(x, lo, up)
    for axis in (0, 2, -1):
        for exclusive in (False, True):
            for reverse in (False, True):
                kw = {"axis": axis, "exclusive": exclusive, "reverse": reverse}
                yield f"cumsum-{axis}-{exclusive}-{reverse}", "cumsum", {"x": X}, kw, \
                    lambda x, k=kw: _cumsum_ref(x, k["axis"], k["exclusive"], k["reverse"])
    for pad, mode in [((1, 2), "constant"), ((0, 1, 2, 0), "reflect"), ((1, 1, 2, 3), "replicate"),
                      ((1, 0, 2, 1, 0, 3), "reflect"), ((2, 1, 1, 1), "constant")]:
        yield f"pad-{mode}-{len(pad)}", "pad", {"x": X}, {"pad": pad, "mode": mode, "constant_val": 0.5}, \
            lambda x, p=pad, m=mode: _pad_ref(x, p, m, 0.5)
    yield "tile", "tile", {"x": X}, {"reps": (2, 1, 3)}, lambda x: np.tile(x, (2, 1, 3))
    for axis, asc in [(-1, False), (0, True), (1, False)]:
        yield f"argsort-{axis}-{asc}", "argsort", {"x": X}, {"axis": axis, "ascending": asc}, \
            lambda x, a=axis, s=asc: np.argsort(x if s else -x, axis=a, kind="stable")
        yield f"topk-{axis}-{asc}", "topk", {"x": X}, {"k": 2, "axis": axis, "ascending": asc}, \
            lambda x, a=axis, s=asc: _topk_ref(x, 2, a, s)
    yield "topk-values-only", "topk", {"x": X}, {"k": 3, "return_indices": False, "sort": False}, \
        lambda x: _topk_ref(x, 3, -1, False)[0]
    yield "topk-all", "topk", {"x": X}, {"k": -1, "axis": 1}, lambda x: _topk_ref(x, 3, 1, False)
    for axis in (0, 1, -1, 3):
        yield f"flatten2d-{axis}", "flatten2d", {"x": X}, {"axis": axis}, \
            lambda x, a=axis: x.reshape(int(np.prod(x.shape[:a + x.ndim if a < 0 else a])), -1)
    parts = (X, RNG.uniform(size=(2, 3, 4)), RNG.uniform(size=(2, 3, 4)))
    for axis in (0, -1):
        yield f"concat-{axis}", "concat", {"values": parts}, {"axis": axis}, \
            lambda values, a=axis: np.concatenate(values, axis=a)
        yield f"concat-interleave-{axis}", "concat", {"values": parts}, {"axis": axis, "interleave": True}, \
            lambda values, a=axis: _interleave_ref(values, a % 3)
        yield f"stack-{axis}", "stack", {"values": parts}, {"axis": axis}, \
            lambda values, a=axis: np.stack(values, axis=a)
    yield "split-even", "split", {"x": M}, {"axis": 1, "num_splits": 2}, \
        lambda x: tuple(np.split(x, 2, axis=1))
    yield "split-sizes", "split", {"x": M}, {"axis": -1, "split_sizes": (1, 3, 1)}, \
        lambda x: tuple(np.split(x, [1, 4], axis=-1))
    yield "identity", "identity", {"x": X}, {}, lambda x: x
    yield "fill_like", "fill_like", {"ref_tensor": X}, {"value": np.float32(2.5)}, \
        lambda ref_tensor: np.full(X.shape, 2.5)


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


def _compare(out, expected, dtype):
    if isinstance(expected, tuple):
        assert isinstance(out, tuple) and len(out) == len(expected)
        for o, e in zip(out, expected):
            _compare(o, e, dtype)
        return
    assert tuple(out.shape) == expected.shape
    if np.issubdtype(expected.dtype, np.integer):
        assert out.cpu().tolist() == expected.tolist()
        return
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 4, rtol=rtol)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_tensor_operation(case, device, dtype):
    name, inputs, kwargs, ref = CASES[case]
    args = {k: _tensor(v, getattr(torch, dtype), device) for k, v in inputs.items()}
    out = registry.get(name).fn(**args, **kwargs)
    _compare(out, ref(**{k: _numpy(v) for k, v in args.items()}), dtype)


def test_int_and_bool_inputs(device):
    x = torch.tensor([[3, 0, -2], [0, 5, 1]], dtype=torch.int32, device=device)
    got = registry.get("cumsum").fn(x, axis=1)
    assert got.dtype == torch.int32 and got.cpu().tolist() == np.cumsum(x.cpu().numpy(), axis=1).tolist()
    nz = registry.get("non_zero").fn(x)
    assert nz.cpu().tolist() == np.transpose(np.nonzero(x.cpu().numpy())).tolist()
    b = registry.get("band_part").fn(torch.ones(3, 3, dtype=torch.bool, device=device), lower=0, upper=-1)
    assert b.cpu().numpy().tolist() == np.triu(np.ones((3, 3), dtype=bool)).tolist()
    assert registry.get("shape").fn(x).cpu().tolist() == [2, 3]
    values, idx = registry.get("topk").fn(torch.tensor([[2, 3, 1], [5, 4, 6]], dtype=torch.uint8, device=device),
                                          k=2, axis=1)
    assert values.cpu().tolist() == [[3, 2], [6, 5]] and idx.cpu().tolist() == [[1, 0], [2, 0]]


def test_shape_from_values(device):
    out = registry.get("fill").fn(torch.tensor([2, 3], dtype=torch.int32, device=device), value=np.int32(7))
    assert out.dtype == torch.int32 and out.cpu().tolist() == np.full((2, 3), 7).tolist()
    rng = registry.get("range_1d").fn(torch.tensor(10.0, device=device), torch.tensor(1.5, device=device),
                                      torch.tensor(2.5, device=device))
    np.testing.assert_allclose(rng.cpu().numpy(), np.arange(1.5, 10.0, 2.5))
    ints = registry.get("range_1d").fn(*(torch.tensor(v, dtype=torch.int32, device=device) for v in (-7, 5, -3)))
    assert ints.cpu().tolist() == np.arange(5, -7, -3).tolist()
    for axis, on, off in [(-1, 1.0, 0.0), (0, np.int32(4), np.int32(-1))]:
        idx = np.array([[1, 3], [0, 7]], dtype=np.int32)
        got = registry.get("one_hot").fn(torch.tensor(idx, device=device), one_hot_vector_size=4, axis=axis,
                                         on_value=on, off_value=off)
        eye = np.concatenate([np.eye(4), np.zeros((1, 4))])[np.where(idx < 4, idx, 4)]
        expected = np.moveaxis(np.where(eye > 0, on, off), -1, axis)
        np.testing.assert_allclose(got.cpu().numpy(), expected)


def _nms_ref(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    """Textbook greedy NMS (one batch item), written independently of the op."""
    best, cls = scores.max(-1), scores.argmax(-1)
    corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], -1)
    kept = []
    for i in sorted(range(len(best)), key=lambda j: -best[j]):
        if best[i] <= score_threshold or len(kept) == max_boxes:
            break
        ok = True
        for j in kept:
            if per_class and cls[i] != cls[j]:
                continue
            lo, hi = np.maximum(corners[i, :2], corners[j, :2]), np.minimum(corners[i, 2:], corners[j, 2:])
            inter = np.prod(np.clip(hi - lo, 0, None))
            union = np.prod(boxes[i, 2:]) + np.prod(boxes[j, 2:]) - inter
            ok &= not (inter / union > iou_threshold)
        if ok:
            kept.append(i)
    return kept or [int(np.argmax(best))]


@pytest.mark.parametrize("per_class", [False, True])
def test_non_maximum_suppression(device, per_class):
    n, nb, k, max_boxes = 2, 12, 3, 5
    boxes = np.concatenate([RNG.uniform(0, 10, (n, nb, 2)), RNG.uniform(1, 6, (n, nb, 2))], -1)
    scores = RNG.uniform(-1, 1, (n, nb, k))
    t = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    out_boxes, out_scores, out_idx, counts = registry.get("non_maximum_suppression", "CoreML5").fn(
        t(boxes), t(scores), iou_threshold=0.3, score_threshold=0.2, max_boxes=max_boxes,
        per_class_suppression=per_class)
    b17, s17, i17 = registry.get("non_maximum_suppression", "CoreML7").fn(
        t(boxes).transpose(1, 2), t(scores).transpose(1, 2), iou_threshold=0.3, max_boxes=max_boxes,
        per_class_suppression=per_class)
    for b in range(n):
        kept = _nms_ref(boxes[b], scores[b], 0.3, 0.2, max_boxes, per_class)
        idx = kept + [-1] * (max_boxes - len(kept))
        assert counts[b].item() == len(kept) and out_idx[b].cpu().tolist() == idx
        np.testing.assert_allclose(out_boxes[b, :len(kept)].cpu().numpy(), boxes[b, kept], rtol=1e-6)
        np.testing.assert_allclose(out_scores[b, :len(kept)].cpu().numpy(), scores[b, kept], rtol=1e-6)
        assert not out_boxes[b, len(kept):].any()
        all_kept = _nms_ref(boxes[b], scores[b], 0.3, -np.inf, max_boxes, per_class)
        assert i17[b].cpu().tolist() == all_kept + [-1] * (max_boxes - len(all_kept))
        np.testing.assert_allclose(b17[b, :, :len(all_kept)].cpu().numpy(), boxes[b, all_kept].T, rtol=1e-6)


def test_nms_keeps_best_box_when_all_are_below_threshold():
    boxes = torch.tensor([[[0.0, 0, 1, 1], [5, 5, 1, 1]]])
    scores = torch.tensor([[[0.1], [0.3]]])
    *_, idx, count = registry.get("non_maximum_suppression", "CoreML5").fn(
        boxes, scores, iou_threshold=0.5, score_threshold=0.9, max_boxes=2)
    assert idx.tolist() == [[1, -1]] and count.tolist() == [1]


def test_errors():
    with pytest.raises(ValueError, match="unknown pad mode 'wrap'"):
        registry.get("pad").fn(torch.zeros(2, 2), pad=(1, 1), mode="wrap")
    with pytest.raises(ValueError, match="split needs num_splits or split_sizes"):
        registry.get("split").fn(torch.zeros(4), axis=0)
