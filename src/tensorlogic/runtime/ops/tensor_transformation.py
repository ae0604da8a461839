"""MIL tensor_transformation family: reshape, slicing, transpose, depth/space/batch moves, ...

Slicing follows numpy semantics (negative begin/end count from the end, negative strides walk
backwards); torch has no negative strides, so those dims are sliced forwards and flipped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import op


@op("depth_to_space", params={"block_size": "int"}, since="iOS15")
def depth_to_space(x: torch.Tensor, *, block_size: int) -> torch.Tensor:
    """TensorFlow DepthToSpace (DCR order) on NCHW: channel (i*b + j)*C' + c goes to (h*b+i, w*b+j)."""
    n, c, h, w = x.shape
    b = block_size
    out = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return out.reshape(n, c // (b * b), h * b, w * b)


@op("space_to_depth", params={"block_size": "int"}, since="iOS15")
def space_to_depth(x: torch.Tensor, *, block_size: int) -> torch.Tensor:
    """TensorFlow SpaceToDepth on NCHW, the inverse of depth_to_space."""
    n, c, h, w = x.shape
    b = block_size
    out = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return out.reshape(n, c * b * b, h // b, w // b)


@op("space_to_batch", params={"block_shape": "ints", "paddings": "ints"}, since="iOS15")
def space_to_batch(x: torch.Tensor, *, block_shape: tuple[int, ...], paddings: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow SpaceToBatchND on NCHW with two spatial dims: pad, then move blocks into the batch."""
    (bh, bw), (pt, pb, pl, pr) = block_shape, paddings
    x = F.pad(x, (pl, pr, pt, pb))
    n, c, h, w = x.shape
    out = x.reshape(n, c, h // bh, bh, w // bw, bw).permute(3, 5, 0, 1, 2, 4)
    return out.reshape(bh * bw * n, c, h // bh, w // bw)


@op("batch_to_space", params={"block_shape": "ints", "crops": "ints"}, since="iOS15")
def batch_to_space(x: torch.Tensor, *, block_shape: tuple[int, ...], crops: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow BatchToSpaceND on NCHW with two spatial dims: move batch blocks back, then crop."""
    (bh, bw), (ct, cb, cl, cr) = block_shape, crops
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    out = x.reshape(bh, bw, n, c, h, w).permute(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return out[:, :, ct:h * bh - cb, cl:w * bw - cr]


@op("expand_dims", params={"axes": "ints"}, since="iOS15")
def expand_dims(x: torch.Tensor, *, axes: tuple[int, ...]) -> torch.Tensor:
    """Insert size-1 dims at axes (counted in the output's rank)."""
    rank = x.dim() + len(axes)
    shape = list(x.shape)
    for axis in sorted(a % rank for a in axes):
        shape.insert(axis, 1)
    return x.reshape(shape)


def _infer_minus_one(numel: int, shape: list[int]) -> list[int]:
    if shape.count(-1) > 1:
        raise ValueError(f"reshape target {shape} has more than one -1")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        shape[shape.index(-1)] = numel // known if known else 0
    return shape


@op("reshape", params={"shape": "ints"}, since="iOS15")
def reshape(x: torch.Tensor, *, shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape; 0 copies the same-index dim of x (len(shape) == rank), -1 is inferred."""
    shape = list(shape)
    if 0 in shape:
        if len(shape) != x.dim():
            raise ValueError(f"reshape target {shape} has a 0 but its length differs from rank {x.dim()}")
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(_infer_minus_one(x.numel(), shape))


@op("reshape", params={"shape": "ints"}, since="iOS17")
def reshape_ios17(x: torch.Tensor, *, shape: tuple[int, ...]) -> torch.Tensor:
    """iOS17 reshape: each 0 copies the dim of x aligned from the right (1 past x's rank)."""
    shape = list(shape)
    offset = x.dim() - len(shape)
    shape = [(x.shape[i + offset] if i + offset >= 0 else 1) if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(_infer_minus_one(x.numel(), shape))


@op("reshape_like", params={"begins": "ints", "ends": "ints", "end_masks": "bools"}, since="iOS16")
def reshape_like(x: torch.Tensor, ref_tensors: tuple[torch.Tensor, ...], *, begins: tuple[int, ...],
        ends: tuple[int, ...], end_masks: tuple[bool, ...]) -> torch.Tensor:
    """Reshape x to the concatenated slices ref_tensors[i].shape[begins[i]:ends[i]]."""
    shape: list[int] = []
    for ref, begin, end, to_end in zip(ref_tensors, begins, ends, end_masks):
        shape += ref.shape[begin:] if to_end else ref.shape[begin:end]
    return x.reshape(shape)


@op("reverse", params={"axes": "ints"}, since="iOS15")
def reverse(x: torch.Tensor, *, axes: tuple[int, ...] | None = None) -> torch.Tensor:
    """Flip x along axes (all dims when axes is not given)."""
    return x.flip(tuple(range(x.dim())) if axes is None else tuple(axes))


@op("reverse_sequence", params={"seq_axis": "int", "batch_axis": "int"}, since="iOS15")
def reverse_sequence(x: torch.Tensor, lengths: torch.Tensor, *, seq_axis: int = 0, batch_axis: int = 0) -> torch.Tensor:
    """Per batch entry b, reverse the first lengths[b] elements along seq_axis."""
    seq_axis, batch_axis = seq_axis % x.dim(), batch_axis % x.dim()
    steps = torch.arange(x.shape[seq_axis], device=x.device)
    lens = lengths.long().unsqueeze(1)
    index = torch.where(steps < lens, lens - 1 - steps, steps)
    view = [1] * x.dim()
    view[batch_axis], view[seq_axis] = x.shape[batch_axis], x.shape[seq_axis]
    if batch_axis > seq_axis:
        index = index.t()
    return x.gather(seq_axis, index.reshape(view).expand(x.shape))


def _slice_plan(shape, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    """Per dim: an int (squeezed) or a numpy-style range of the selected positions."""
    rank = len(shape)
    stride = stride or [1] * rank
    begin_mask = begin_mask or [False] * rank
    end_mask = end_mask or [False] * rank
    squeeze_mask = squeeze_mask or [False] * rank
    plan: list[int | range] = []
    for d in range(rank):
        if squeeze_mask[d]:
            plan.append(begin[d] + shape[d] if begin[d] < 0 else begin[d])
            continue
        sl = slice(None if begin_mask[d] else begin[d], None if end_mask[d] else end[d], stride[d])
        plan.append(range(*sl.indices(shape[d])))
    return plan


def _forward_slices(plan, keep_squeezed):
    """Basic-indexing slices with positive steps, and the output dims that must be flipped."""
    index, flips, out_dim = [], [], 0
    for p in plan:
        if isinstance(p, int):
            index.append(slice(p, p + 1) if keep_squeezed else p)
            continue
        if len(p) == 0:
            index.append(slice(0, 0))
        elif p.step > 0:
            index.append(slice(p.start, p.stop, p.step))
        else:
            index.append(slice(p[-1], p[0] + 1, -p.step))
            flips.append(out_dim)
        out_dim += 1
    return tuple(index), flips


_SLICE_PARAMS = {"begin": "ints", "end": "ints", "stride": "ints", "begin_mask": "bools", "end_mask": "bools",
                 "squeeze_mask": "bools"}


@op("slice_by_index", params=_SLICE_PARAMS, since="iOS15")
def slice_by_index(x: torch.Tensor, *, begin: tuple[int, ...], end: tuple[int, ...],
        stride: tuple[int, ...] | None = None, begin_mask: tuple[bool, ...] | None = None,
        end_mask: tuple[bool, ...] | None = None, squeeze_mask: tuple[bool, ...] | None = None) -> torch.Tensor:
    """numpy x[begin:end:stride, ...] with masks; squeeze_mask picks the single index begin[i]."""
    plan = _slice_plan(x.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    index, flips = _forward_slices(plan, keep_squeezed=False)
    out = x[index]
    return out.flip(flips) if flips else out


@op("slice_update", params=_SLICE_PARAMS, since="iOS18")
def slice_update(x: torch.Tensor, update: torch.Tensor, *, begin: tuple[int, ...], end: tuple[int, ...],
        stride: tuple[int, ...] | None = None, begin_mask: tuple[bool, ...] | None = None,
        end_mask: tuple[bool, ...] | None = None, squeeze_mask: tuple[bool, ...] | None = None) -> torch.Tensor:
    """A copy of x with the slice_by_index region replaced by update."""
    plan = _slice_plan(x.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    index, flips = _forward_slices(plan, keep_squeezed=False)
    if flips:
        update = update.flip(flips)
    out = x.clone()
    region, _ = _forward_slices(plan, keep_squeezed=True)
    out[region] = update.reshape(out[region].shape).to(out.dtype)
    return out


@op("slice_by_size", params={"begin": "ints", "size": "ints"}, since="iOS15")
def slice_by_size(x: torch.Tensor, *, begin: tuple[int, ...], size: tuple[int, ...]) -> torch.Tensor:
    """x[begin[i]:begin[i]+size[i]] per dim; size -1 takes the rest, negative begin counts from the end."""
    for d, (b, s) in enumerate(zip(begin, size)):
        b = b + x.shape[d] if b < 0 else b
        x = x.narrow(d, b, x.shape[d] - b if s == -1 else s)
    return x


@op("squeeze", params={"axes": "ints"}, since="iOS15")
def squeeze(x: torch.Tensor, *, axes: tuple[int, ...] | None = None) -> torch.Tensor:
    """Drop size-1 dims (only those in axes, when given; larger dims in axes are kept)."""
    return x.squeeze() if axes is None else x.squeeze(tuple(axes))


@op("transpose", params={"perm": "ints"}, since="iOS15")
def transpose(x: torch.Tensor, *, perm: tuple[int, ...]) -> torch.Tensor:
    """Permute the dims of x."""
    return x.permute(tuple(perm))


@op("pixel_shuffle", params={"upscale_factor": "int"}, since="iOS15")
def pixel_shuffle(x: torch.Tensor, *, upscale_factor: int) -> torch.Tensor:
    """PyTorch PixelShuffle: [n, C*f*f, H, W] -> [n, C, H*f, W*f]."""
    return F.pixel_shuffle(x, upscale_factor)


@op("pixel_unshuffle", params={"downscale_factor": "int"}, since="iOS16")
def pixel_unshuffle(x: torch.Tensor, *, downscale_factor: int) -> torch.Tensor:
    """PyTorch PixelUnshuffle: [n, C, H, W] -> [n, C*f*f, H/f, W/f]."""
    return F.pixel_unshuffle(x, downscale_factor)


@op("sliding_windows", params={"axis": "int", "size": "int", "stride": "int"}, since="iOS15")
def sliding_windows(x: torch.Tensor, *, axis: int, size: int, stride: int = 1) -> torch.Tensor:
    """Windows of size elements every stride along axis, inserted as a new dim after axis."""
    axis = axis % x.dim()
    return x.unfold(axis, size, stride).movedim(-1, axis + 1)
