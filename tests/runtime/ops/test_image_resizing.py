"""Image resizing ops against torch float64 interpolate/grid_sample, numpy, and coremltools' documented values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TOLERANCES
from tensorlogic.runtime import registry

RNG = np.random.default_rng(3)
IMG = RNG.uniform(-2, 2, size=(2, 3, 5, 7))


def _interp(x, size, align_corners):
    return F.interpolate(torch.tensor(x), size=size, mode="bilinear", align_corners=align_corners).numpy()


def _lerp_axis(x, axis, pos):
    """numpy linear interpolation along axis at float positions inside [0, n-1]."""
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    w = (pos - lo).reshape([-1 if d == axis % x.ndim else 1 for d in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def _proto_grid(n_in, n_out, mode):
    """Grid points as NeuralNetwork.proto's SamplingMode spells them with numpy.linspace."""
    if mode == "DEFAULT":
        pts = np.linspace(0, n_in - n_in / n_out, n_out) if n_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        spacing = max(1, n_in - 1) / n_out
        pts = np.linspace(0.5 * spacing, 0.5 * spacing + (n_out - 1) * spacing, n_out)
    else:  # ALIGN_CORNERS
        pts = np.linspace(0, n_in - 1, n_out) if n_out > 1 else np.array([(n_in - 1) / 2])
    return np.minimum(pts, n_in - 1)


def _resize_ref(x, size, mode):
    if mode == "STRICT_ALIGN_CORNERS":
        return _interp(x, size, True)
    if mode == "UNALIGN_CORNERS":
        return _interp(x, size, False)
    out = _lerp_axis(x, -2, _proto_grid(x.shape[-2], size[0], mode))
    return _lerp_axis(out, -1, _proto_grid(x.shape[-1], size[1], mode))


def _cases():
    for size in [(9, 4), (1, 1), (5, 7), (12, 15)]:
        for mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"):
            yield f"resize_bilinear-{mode}-{size}", "resize_bilinear", "CoreML9", {"x": IMG}, \
                {"target_size_height": size[0], "target_size_width": size[1], "sampling_mode": mode}, \
                lambda x, s=size, m=mode: _resize_ref(x, s, m)
        yield f"resize-linear-{size}", "resize", "CoreML9", {"x": IMG}, \
            {"shape": (0, *size), "resized_dims": 2, "interpolation_mode": "LINEAR",
             "sampling_mode": "UNALIGN_CORNERS"}, \
            lambda x, s=size: _interp(x, s, False)
    for scales in [(2, 3), (2.5, 1.5), (0.6, 0.75)]:
        for align in (True, False):
            yield f"upsample_bilinear-{scales}-{align}", "upsample_bilinear", "CoreML9", {"x": IMG}, \
                {"scale_factor_height": scales[0], "scale_factor_width": scales[1], "align_corners": align}, \
                lambda x, s=scales, a=align: _interp(x, (int(5 * s[0]), int(7 * s[1])), a)
        yield f"upsample_bilinear-legacy-{scales}", "upsample_bilinear", "CoreML9", {"x": IMG}, \
            {"scale_factor_height": scales[0], "scale_factor_width": scales[1], "align_corners": False,
             "half_pixel_centers": False}, lambda x, s=scales: _resize_ref(x, (int(5 * s[0]), int(7 * s[1])), "DEFAULT")
        yield f"upsample_nearest_neighbor-{scales}", "upsample_nearest_neighbor", "CoreML9", {"x": IMG}, \
            {"scale_factor_height": scales[0], "scale_factor_width": scales[1]}, \
            lambda x, s=scales: F.interpolate(torch.tensor(x), size=(int(5 * s[0]), int(7 * s[1])),
                                              mode="nearest").numpy()
    for size in [(3, 10), (8, 2)]:
        yield f"resize_nearest_neighbor-{size}", "resize_nearest_neighbor", "CoreML9", {"x": IMG}, \
            {"target_size_height": size[0], "target_size_width": size[1]}, \
            lambda x, s=size: F.interpolate(torch.tensor(x), size=s, mode="nearest-exact").numpy()
    yield "crop", "crop", "CoreML9", {"x": IMG}, {"crop_height": (1, 2), "crop_width": (0, 3)}, \
        lambda x: x[..., 1:3, 0:4]


CASES = {c[0]: c[1:] for c in _cases()}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_image_resizing(case, device, dtype):
    name, opset, inputs, kwargs, ref = CASES[case]
    args = {k: torch.tensor(v, dtype=getattr(torch, dtype), device=device) for k, v in inputs.items()}
    out = registry.get(name, opset).fn(**args, **kwargs)
    expected = ref(**{k: v.double().cpu().numpy() for k, v in args.items()})
    assert tuple(out.shape) == expected.shape
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), expected, atol=atol * 4, rtol=rtol)


def _grid_sample_ref(x, px, py, padding):
    """torch float64 grid_sample with align_corners=True, fed pixel positions."""
    h, w = x.shape[-2:]
    grid = np.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], -1)
    return F.grid_sample(torch.tensor(x), torch.tensor(grid), mode="bilinear", padding_mode=padding,
                         align_corners=True).numpy()


@pytest.mark.parametrize("padding", ["constant", "border", "reflection"])
@pytest.mark.parametrize("coords", ["unnormalized", "normalized_minus_one_to_one", "normalized_zero_to_one"])
def test_resample_bilinear(device, padding, coords):
    px, py = RNG.uniform(-3, 10, size=(2, 4, 6)), RNG.uniform(-3, 8, size=(2, 4, 6))
    h, w = IMG.shape[-2:]
    scale = {"unnormalized": (1, 0), "normalized_minus_one_to_one": (2, -1), "normalized_zero_to_one": (1, 0)}
    if coords == "unnormalized":
        cx, cy = px, py
    else:
        a, b = scale[coords]
        cx, cy = px / (w - 1) * a + b, py / (h - 1) * a + b
    x = torch.tensor(IMG, dtype=torch.float32, device=device)
    c = torch.tensor(np.stack([cx, cy], -1), dtype=torch.float32, device=device)
    out = registry.get("resample").fn(x, c, sampling_mode="bilinear", padding_mode=padding, padding_value=0.0,
                                      coordinates_mode=coords, align_corners=True)
    ref = _grid_sample_ref(IMG, px, py, {"constant": "zeros"}.get(padding, padding))
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=1e-4, rtol=1e-4)


def test_resample_documented_values(device):
    """The four resample cases of coremltools' iOS15 op tests, with their expected values."""
    x = torch.tensor([11.0, 22.0, 33.0, 44.0], device=device).reshape(1, 1, 2, 2)
    c = torch.tensor([-1.0, -2.0, -3.7, -1.0, 0.0, 0.0, 3.5, 1.2], device=device).reshape(1, 2, 2, 2)
    runs = [
        (("bilinear", "constant", 6.17, "normalized_minus_one_to_one", True), [8.585, 6.17, 27.5, 6.17]),
        (("nearest", "border", -1.0, "unnormalized", False), [11.0, 11.0, 11.0, 44.0]),
        (("bilinear", "reflection", -1.0, "normalized_zero_to_one", True), [22.0, 36.3, 11.0, 34.1]),
        (("nearest", "symmetric", -1.0, "normalized_zero_to_one", False), [22.0, 33.0, 11.0, 33.0]),
    ]
    for (sampling, padding, value, coords, align), expected in runs:
        out = registry.get("resample").fn(x, c, sampling_mode=sampling, padding_mode=padding, padding_value=value,
                                          coordinates_mode=coords, align_corners=align)
        np.testing.assert_allclose(out.cpu().numpy().ravel(), expected, rtol=1e-5)


def test_affine_against_grid_sample(device):
    theta = RNG.uniform(-1, 1, size=(2, 6))
    x = torch.tensor(IMG, dtype=torch.float32, device=device)
    out = registry.get("affine").fn(x, torch.tensor(theta, dtype=torch.float32, device=device), output_height=4,
                                    output_width=9, sampling_mode="bilinear", padding_mode="constant",
                                    padding_value=0.0, coordinates_mode="normalized_minus_one_to_one",
                                    align_corners=True)
    grid = F.affine_grid(torch.tensor(theta).reshape(2, 2, 3), [2, 3, 4, 9], align_corners=True)
    ref = F.grid_sample(torch.tensor(IMG), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    np.testing.assert_allclose(out.cpu().numpy(), ref.numpy(), atol=1e-4, rtol=1e-4)


def _crop_and_resize_ref(img, boxes, box_index, th, tw, pad):
    """TensorFlow crop_and_resize (pixel boxes, corners height-first), written with explicit loops."""
    n, (_, c, h, w) = len(boxes), img.shape
    out = np.zeros((n, c, th, tw))
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        for i in range(th):
            y = (y1 + y2) / 2 if th == 1 else y1 + i * (y2 - y1) / (th - 1)
            for j in range(tw):
                xx = (x1 + x2) / 2 if tw == 1 else x1 + j * (x2 - x1) / (tw - 1)
                if not (0 <= y <= h - 1 and 0 <= xx <= w - 1):
                    out[k, :, i, j] = pad
                    continue
                y0, x0 = int(np.floor(y)), int(np.floor(xx))
                y1_, x1_ = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                dy, dx = y - y0, xx - x0
                src = img[box_index[k]]
                top = src[:, y0, x0] * (1 - dx) + src[:, y0, x1_] * dx
                bottom = src[:, y1_, x0] * (1 - dx) + src[:, y1_, x1_] * dx
                out[k, :, i, j] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize("target", [(3, 4), (1, 1), (2, 5)])
def test_crop_resize(device, target):
    boxes = np.array([[0.5, 1.0, 3.5, 5.0], [4.0, 6.0, 1.0, 0.5], [-1.0, 2.0, 2.0, 8.0]])
    index = np.array([1, 0, 1])
    x = torch.tensor(IMG, dtype=torch.float32, device=device)
    b = torch.tensor(boxes, dtype=torch.float32, device=device)
    kw = {"target_height": target[0], "target_width": target[1], "sampling_mode": "ALIGN_CORNERS", "pad_value": 2.5}
    out = registry.get("crop_resize", "CoreML7").fn(x, b, torch.tensor(index, device=device), **kw)
    np.testing.assert_allclose(out.cpu().numpy(), _crop_and_resize_ref(IMG, boxes, index, *target, 2.5), atol=1e-5)
    # iOS15/16 layout: roi [N, 1, 5, 1, 1] with the image index first; normalized width-first corners.
    norm = boxes[:, [1, 0, 3, 2]] / np.array([6, 4, 6, 4])
    roi = torch.tensor(np.concatenate([index[:, None], norm], 1), dtype=torch.float32, device=device)
    out16 = registry.get("crop_resize", "CoreML6").fn(x, roi.reshape(3, 1, 5, 1, 1), normalized_coordinates=True,
                                                      box_coordinate_mode="CORNERS_WIDTH_FIRST", **kw)
    assert out16.shape == (3, 1, 3, *target)
    np.testing.assert_allclose(out16[:, 0].cpu().numpy(), out.cpu().numpy(), atol=1e-5)
    # A 4-value roi crops every image of the batch.
    every = registry.get("crop_resize", "CoreML5").fn(x, roi[:, 1:].reshape(3, 1, 4, 1, 1), normalized_coordinates=True,
                                                      box_coordinate_mode="CORNERS_WIDTH_FIRST", **kw)
    ref = [_crop_and_resize_ref(IMG, boxes, np.full(3, i), *target, 2.5) for i in range(2)]
    np.testing.assert_allclose(every.cpu().numpy(), np.stack(ref, 1), atol=1e-5)


def test_crop_resize_documented_values(device):
    """coremltools' iOS14 crop_resize cases (ALIGN_CORNERS, 4x4 image 1..16)."""
    x = torch.arange(1, 17, dtype=torch.float32, device=device).reshape(1, 1, 4, 4)
    roi = torch.tensor([1.0, 1, 2, 2], device=device).reshape(1, 1, 4, 1, 1)
    fn = registry.get("crop_resize", "CoreML5").fn
    got = fn(x, roi, target_height=4, target_width=4, sampling_mode="ALIGN_CORNERS")
    expected = [[6, 6.333333, 6.66666, 7], [7.333333, 7.666666, 8, 8.333333],
                [8.666666, 9, 9.3333333, 9.666666], [10, 10.333333, 10.666666, 11]]
    np.testing.assert_allclose(got.cpu().numpy().reshape(4, 4), expected, rtol=1e-5)
    got = fn(x, roi, target_height=1, target_width=1, sampling_mode="ALIGN_CORNERS")
    assert got.cpu().numpy().ravel().tolist() == [8.5]


def test_errors():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="unknown sampling_mode 'BOGUS'"):
        registry.get("resize_bilinear").fn(x, sampling_mode="BOGUS")
    with pytest.raises(ValueError, match="unknown padding_mode 'wrap'"):
        registry.get("resample").fn(x, torch.zeros(1, 1, 1, 2), sampling_mode="bilinear", padding_mode="wrap",
                                    padding_value=0.0, coordinates_mode="unnormalized", align_corners=True)
    with pytest.raises(ValueError, match="unknown interpolation_mode 'CUBIC'"):
        registry.get("resize").fn(x, shape=(3, 3), resized_dims=2, interpolation_mode="CUBIC")
    with pytest.raises(ValueError, match="unknown box_coordinate_mode 'XYXY'"):
        registry.get("crop_resize", "CoreML7").fn(x, torch.zeros(1, 4), box_coordinate_mode="XYXY")
