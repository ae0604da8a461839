"""MIL image_resizing family: upsample/resize (nearest, bilinear), crop, crop_resize, affine, resample.

Sampling grids follow the SamplingMode definitions of Core ML's NeuralNetwork.proto (a grid of
source positions per output index, on the pixel-centre axis [0, X-1]); bilinear resizes interpolate
separably along each resized axis. Grids are computed on the host in float64 and cached.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..registry import op

_SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")


def _float(x: torch.Tensor) -> torch.Tensor:
    """x in a dtype interpolation can run in (CPU torch lacks some fp16 kernels; ints interpolate as f32)."""
    if x.dtype == torch.float32 or (x.is_floating_point() and x.device.type != "cpu"):
        return x
    return x.float()


def _restore(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return (y if like.is_floating_point() else y.round()).to(like.dtype)


def _check_sampling(mode: str) -> None:
    if mode not in _SAMPLING_MODES:
        raise ValueError(f"unknown sampling_mode {mode!r} (expected one of {', '.join(_SAMPLING_MODES)})")


@functools.lru_cache(maxsize=256)
def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Source positions (float64, pixel-centre units) of n_out samples from an axis of n_in pixels."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            pos = np.full(1, (n_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            pos = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        pos = i * n_in / n_out
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        pos = 0.5 * delta + i * delta
    else:
        pos = (i + 0.5) * n_in / n_out - 0.5
    return np.clip(pos, 0, n_in - 1)


@functools.lru_cache(maxsize=512)
def _linear_taps(n_in: int, n_out: int, mode: str, device: torch.device, dtype: torch.dtype):
    """Device tensors (i0, i1, w) for linear interpolation on a mode grid, or None for the identity.

    Cached per device: after a first (warm-up) run no host-to-device copy is left, so the op can be
    captured in a CUDA graph.
    """
    pos = _grid(n_in, n_out, mode)
    if np.array_equal(pos, np.arange(n_in)):
        return None
    low = np.floor(pos)
    i0 = torch.from_numpy(low.astype(np.int64)).to(device)
    i1 = torch.from_numpy(np.minimum(low + 1, n_in - 1).astype(np.int64)).to(device)
    return i0, i1, torch.from_numpy(pos - low).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=512)
def _nearest_taps(n_in: int, n_out: int, rule: str, device: torch.device) -> torch.Tensor:
    """Device source indices for nearest resampling (cached like _linear_taps)."""
    if rule == "floor":
        index = np.arange(n_out) * n_in // n_out
    elif rule == "half_pixel":
        index = np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)
    else:
        # A sampling_mode grid, rounded; DEFAULT rounds half-pixel centres, which converters emit it for.
        grid = _grid(n_in, n_out, "UNALIGN_CORNERS" if rule == "DEFAULT" else rule)
        index = np.minimum(np.floor(grid + 0.5).astype(np.int64), n_in - 1)
    return torch.from_numpy(index).to(device)


def _resize_linear(x: torch.Tensor, sizes: list[int], mode: str) -> torch.Tensor:
    """Separable linear resize of the last len(sizes) dims on the sampling-mode grid."""
    y = _float(x)
    first = x.dim() - len(sizes)
    for k, n_out in enumerate(sizes):
        dim = first + k
        taps = _linear_taps(x.shape[dim], n_out, mode, y.device, y.dtype)
        if taps is not None:
            i0, i1, w = taps
            view = [1] * y.dim()
            view[dim] = n_out
            a, b = y.index_select(dim, i0), y.index_select(dim, i1)
            y = a + (b - a) * w.reshape(view)
    return _restore(y, x)


def _resize_nearest(x: torch.Tensor, sizes: list[int], rule: str) -> torch.Tensor:
    first = x.dim() - len(sizes)
    for k, n_out in enumerate(sizes):
        x = x.index_select(first + k, _nearest_taps(x.shape[first + k], n_out, rule, x.device))
    return x


def _out_size(n: int, scale: float) -> int:
    # Computed like coremltools' type inference (float32 product), so shapes match the declared ones.
    return int(np.floor(np.float32(scale) * np.float32(n)))


@op("upsample_nearest_neighbor", params={"scale_factor_height": "float", "scale_factor_width": "float"},
    since="iOS15")
def upsample_nearest_neighbor(x: torch.Tensor, *, scale_factor_height: float = 1,
        scale_factor_width: float = 1) -> torch.Tensor:
    """Nearest upsampling by (fractional) scales: out = floor(in*scale), source = floor(i*in/out)."""
    h, w = x.shape[-2:]
    return _resize_nearest(x, [_out_size(h, scale_factor_height), _out_size(w, scale_factor_width)], "floor")


@op("resize_nearest_neighbor", params={"target_size_height": "int", "target_size_width": "int"}, since="iOS15")
def resize_nearest_neighbor(x: torch.Tensor, *, target_size_height: int, target_size_width: int) -> torch.Tensor:
    """Nearest resize with half-pixel centres (TensorFlow half_pixel_centers=True): floor((i+0.5)*in/out)."""
    return _resize_nearest(x, [target_size_height, target_size_width], "half_pixel")


@op("upsample_bilinear", params={"scale_factor_height": "float", "scale_factor_width": "float",
                                 "align_corners": "bool", "half_pixel_centers": "bool"}, since="iOS15")
def upsample_bilinear(x: torch.Tensor, *, scale_factor_height: float = 1, scale_factor_width: float = 1,
        align_corners: bool = True, half_pixel_centers: bool | None = None) -> torch.Tensor:
    """Bilinear upsampling by scales, with the scale recomputed from the floored output size."""
    if half_pixel_centers is None:
        half_pixel_centers = not align_corners
    mode = "STRICT_ALIGN_CORNERS" if align_corners else "UNALIGN_CORNERS" if half_pixel_centers else "DEFAULT"
    h, w = x.shape[-2:]
    sizes = [_out_size(h, scale_factor_height), _out_size(w, scale_factor_width)]
    return _resize_linear(x, sizes, mode)


@op("resize_bilinear", params={"target_size_height": "int", "target_size_width": "int", "sampling_mode": "str"},
    since="iOS15")
def resize_bilinear(x: torch.Tensor, *, target_size_height: int = 1, target_size_width: int = 1,
        sampling_mode: str = "DEFAULT") -> torch.Tensor:
    """Bilinear resize of the last two dims to a target size on the sampling_mode grid."""
    _check_sampling(sampling_mode)
    return _resize_linear(x, [target_size_height, target_size_width], sampling_mode)


@op("resize", params={"shape": "ints", "resized_dims": "int", "interpolation_mode": "str", "sampling_mode": "str"},
    since="iOS17")
def resize(x: torch.Tensor, *, shape: tuple[int, ...], resized_dims: int, interpolation_mode: str = "LINEAR",
        sampling_mode: str = "DEFAULT") -> torch.Tensor:
    """Resize the last resized_dims dims to the tail of shape (0 keeps a dim); NEAREST rounds the grid."""
    _check_sampling(sampling_mode)
    first = x.dim() - resized_dims
    tail = list(shape)[len(shape) - resized_dims:]
    sizes = [x.shape[first + k] if s == 0 else s for k, s in enumerate(tail)]
    if interpolation_mode == "LINEAR":
        return _resize_linear(x, sizes, sampling_mode)
    if interpolation_mode != "NEAREST_NEIGHBOR":
        raise ValueError(f"unknown interpolation_mode {interpolation_mode!r} (expected LINEAR or NEAREST_NEIGHBOR)")
    return _resize_nearest(x, sizes, sampling_mode)


@op("crop", params={"crop_height": "ints", "crop_width": "ints"}, since="iOS15")
def crop(x: torch.Tensor, *, crop_height: tuple[int, ...], crop_width: tuple[int, ...]) -> torch.Tensor:
    """Remove crop_height=(top, bottom) rows and crop_width=(left, right) columns."""
    h, w = x.shape[-2:]
    return x[..., crop_height[0]:h - crop_height[1], crop_width[0]:w - crop_width[1]]


def _box_corners(boxes: torch.Tensor, mode: str) -> torch.Tensor:
    """[N, 4] boxes in box_coordinate_mode as [N, 4] (h_start, w_start, h_end, w_end)."""
    a, b, c, d = boxes.unbind(-1)
    if mode == "CORNERS_HEIGHT_FIRST":
        return boxes
    if mode == "CORNERS_WIDTH_FIRST":
        return torch.stack([b, a, d, c], -1)
    if mode == "CENTER_SIZE_HEIGHT_FIRST":
        return torch.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], -1)
    if mode == "CENTER_SIZE_WIDTH_FIRST":
        return torch.stack([b - d / 2, a - c / 2, b + d / 2, a + c / 2], -1)
    raise ValueError(f"unknown box_coordinate_mode {mode!r}")


def _box_grid(start: torch.Tensor, end: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """[N, n] sample positions inside each box [start, end], the box playing the axis [0, X-1]."""
    i = torch.arange(n, dtype=start.dtype, device=start.device)
    s, span = start.unsqueeze(1), (end - start).unsqueeze(1)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n == 1:
            return s + span / 2 if mode == "ALIGN_CORNERS" else s
        return s + span * i / (n - 1)
    if mode == "DEFAULT":
        offset = i * (span + 1) / n
    elif mode == "OFFSET_CORNERS":
        delta = span.clamp(min=1) / n
        offset = 0.5 * delta + i * delta
    else:
        offset = (i + 0.5) * (span + 1) / n - 0.5
    return s + torch.minimum(offset.clamp(min=0), span.clamp(min=0))


def _gather_rows(img: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear interpolation of img [N, C, H, W] along dim (2 or 3) at per-box positions pos [N, K]."""
    size = img.shape[dim]
    p = pos.clamp(0, size - 1)
    low = p.floor()
    w = (p - low).to(img.dtype)
    shape = list(img.shape)
    shape[dim] = pos.shape[1]
    view = [pos.shape[0], 1, 1, 1]
    view[dim] = pos.shape[1]
    i0 = low.long().reshape(view).expand(shape)
    i1 = (low.long() + 1).clamp(max=size - 1).reshape(view).expand(shape)
    a, b = img.gather(dim, i0), img.gather(dim, i1)
    return a + (b - a) * w.reshape(view)


def _crop_resize(x, boxes, batch_index, target_height, target_width, normalized_coordinates, spatial_scale,
                 box_coordinate_mode, sampling_mode, pad_value):
    """[N, C, th, tw] bilinear crops; samples outside the image take pad_value."""
    _check_sampling(sampling_mode)
    img = _float(x)
    h, w = x.shape[-2:]
    corners = _box_corners(boxes.to(torch.float32 if img.dtype != torch.float64 else img.dtype), box_coordinate_mode)
    sy, sx = (spatial_scale * (h - 1), spatial_scale * (w - 1)) if normalized_coordinates else (spatial_scale,) * 2
    ys = _box_grid(corners[:, 0] * sy, corners[:, 2] * sy, target_height, sampling_mode)
    xs = _box_grid(corners[:, 1] * sx, corners[:, 3] * sx, target_width, sampling_mode)
    crops = _gather_rows(_gather_rows(img[batch_index], ys, 2), xs, 3)
    inside = ((ys >= 0) & (ys <= h - 1)).unsqueeze(2) & ((xs >= 0) & (xs <= w - 1)).unsqueeze(1)
    out = torch.where(inside.unsqueeze(1), crops, pad_value)
    return _restore(out, x)


_CROP_RESIZE_PARAMS = {"target_height": "int", "target_width": "int", "normalized_coordinates": "bool",
                       "spatial_scale": "float", "box_coordinate_mode": "str", "sampling_mode": "str",
                       "pad_value": "float"}


@op("crop_resize", params=_CROP_RESIZE_PARAMS, since="iOS15")
def crop_resize(x: torch.Tensor, roi: torch.Tensor, *, target_height: int = 1, target_width: int = 1,
        normalized_coordinates: bool = False, spatial_scale: float = 1.0,
        box_coordinate_mode: str = "CORNERS_HEIGHT_FIRST", sampling_mode: str = "DEFAULT",
        pad_value: float = 0.0) -> torch.Tensor:
    """Bilinear crops of roi [N,1,4|5,1,1] boxes: [N, B, C, th, tw], or [N, 1, C, th, tw] with batch ids."""
    rois = roi.reshape(roi.shape[0], roi.shape[2])
    n, b = rois.shape[0], x.shape[0]
    if rois.shape[1] == 5:
        batch_index, boxes, per_box = rois[:, 0].round().long(), rois[:, 1:], 1
    else:
        batch_index = torch.arange(b, device=x.device).repeat(n)
        boxes, per_box = rois.repeat_interleave(b, 0), b
    out = _crop_resize(x, boxes, batch_index, target_height, target_width, normalized_coordinates, spatial_scale,
                       box_coordinate_mode, sampling_mode, pad_value)
    return out.reshape(n, per_box, *out.shape[1:])


@op("crop_resize", params=_CROP_RESIZE_PARAMS, since="iOS17")
def crop_resize_ios17(x: torch.Tensor, boxes: torch.Tensor, box_indices: torch.Tensor | None = None, *,
        target_height: int = 1, target_width: int = 1, normalized_coordinates: bool = False,
        spatial_scale: float = 1.0, box_coordinate_mode: str = "CORNERS_HEIGHT_FIRST", sampling_mode: str = "DEFAULT",
        pad_value: float = 0.0) -> torch.Tensor:
    """iOS17 crop_resize: boxes [N, 4] taken from images box_indices (default 0..N-1): [N, C, th, tw]."""
    if box_indices is None:
        box_indices = torch.arange(boxes.shape[0], device=x.device)
    return _crop_resize(x, boxes, box_indices.long(), target_height, target_width, normalized_coordinates,
                        spatial_scale, box_coordinate_mode, sampling_mode, pad_value)


def _pad_index(i: torch.Tensor, n: int, padding: str):
    """Map integer positions onto [0, n) for a padding mode; constant mode also returns a validity mask."""
    if padding == "border":
        return i.clamp(0, n - 1), None
    if padding == "reflection":
        period = max(2 * (n - 1), 1)
        m = i.remainder(period)
        return torch.where(m >= n, period - m, m), None
    if padding == "symmetric":
        m = i.remainder(2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m), None
    if padding == "constant":
        return i.clamp(0, n - 1), (i >= 0) & (i < n)
    raise ValueError(f"unknown padding_mode {padding!r} (expected constant, border, reflection or symmetric)")


def _sample(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, sampling: str, padding: str, value: float):
    """Sample x [B, C, H, W] at pixel positions px, py [B, Ho, Wo] with the image padded per padding."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)

    def fetch(iy, ix):
        iy, vy = _pad_index(iy, h, padding)
        ix, vx = _pad_index(ix, w, padding)
        lin = (iy * w + ix).reshape(b, 1, -1).expand(b, c, -1)
        got = flat.gather(2, lin).reshape(b, c, *px.shape[1:])
        if vy is None:
            return got
        return torch.where((vy & vx).unsqueeze(1), got, value)

    if sampling == "nearest":
        return fetch(torch.floor(py + 0.5).long(), torch.floor(px + 0.5).long())
    if sampling != "bilinear":
        raise ValueError(f"unknown sampling_mode {sampling!r} (expected bilinear or nearest)")
    x0, y0 = px.floor(), py.floor()
    wx, wy = (px - x0).to(x.dtype).unsqueeze(1), (py - y0).to(x.dtype).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    top = fetch(y0, x0) * (1 - wx) + fetch(y0, x0 + 1) * wx
    bottom = fetch(y0 + 1, x0) * (1 - wx) + fetch(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def _to_pixels(coord: torch.Tensor, n: int, align_corners: bool) -> torch.Tensor:
    """Normalized [-1, 1] coordinates to pixel positions."""
    if align_corners:
        return (coord + 1) / 2 * (n - 1)
    return ((coord + 1) * n - 1) / 2


_RESAMPLE_PARAMS = {"sampling_mode": "str", "padding_mode": "str", "padding_value": "float", "coordinates_mode": "str",
                    "align_corners": "bool"}


@op("affine", params={"output_height": "int", "output_width": "int", **_RESAMPLE_PARAMS}, since="iOS15")
def affine(x: torch.Tensor, transform_matrix: torch.Tensor, *, output_height: int, output_width: int,
        sampling_mode: str, padding_mode: str, padding_value: float, coordinates_mode: str,
        align_corners: bool) -> torch.Tensor:
    """Sample x at (a0 x + a1 y + a2, b0 x + b1 y + b2) of normalized output coordinates."""
    if coordinates_mode != "normalized_minus_one_to_one":
        raise ValueError(f"affine supports coordinates_mode normalized_minus_one_to_one only, got {coordinates_mode!r}")
    img = _float(x)
    h, w = x.shape[-2:]
    theta = transform_matrix.to(torch.float32).reshape(-1, 2, 3)
    ys, xs = (_output_coords(n, align_corners, x.device) for n in (output_height, output_width))
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], -1)
    src = torch.einsum("hwk,bjk->bhwj", base, theta).expand(x.shape[0], -1, -1, -1)
    px, py = _to_pixels(src[..., 0], w, align_corners), _to_pixels(src[..., 1], h, align_corners)
    return _restore(_sample(img, px, py, sampling_mode, padding_mode, padding_value), x)


def _output_coords(n: int, align_corners: bool, device) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32, device=device)
    if align_corners:
        return i * 2 / max(n - 1, 1) - 1
    return (2 * i + 1) / n - 1


@op("resample", params=_RESAMPLE_PARAMS, since="iOS15")
def resample(x: torch.Tensor, coordinates: torch.Tensor, *, sampling_mode: str, padding_mode: str,
        padding_value: float, coordinates_mode: str, align_corners: bool) -> torch.Tensor:
    """Sample x at coordinates [B, Ho, Wo, (x, y)] given unnormalized or normalized per coordinates_mode."""
    img = _float(x)
    h, w = x.shape[-2:]
    coords = coordinates.to(torch.float32)
    cx, cy = coords[..., 0], coords[..., 1]
    if coordinates_mode == "normalized_zero_to_one":
        cx, cy = cx * 2 - 1, cy * 2 - 1
    elif coordinates_mode != "normalized_minus_one_to_one":
        if coordinates_mode != "unnormalized":
            raise ValueError(f"unknown coordinates_mode {coordinates_mode!r}")
        return _restore(_sample(img, cx, cy, sampling_mode, padding_mode, padding_value), x)
    px, py = _to_pixels(cx, w, align_corners), _to_pixels(cy, h, align_corners)
    return _restore(_sample(img, px, py, sampling_mode, padding_mode, padding_value), x)
