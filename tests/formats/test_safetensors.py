"""SafeTensors reading and writing, checked against the `safetensors` reference library."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tensorlogic as tl
from tensorlogic.errors import FormatError

ALL_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
]


def _sample(dtype: torch.dtype, shape=(3, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(hash(str(dtype)) % 1000)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=torch.float32) * 4).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=g, dtype=torch.int64).to(dtype)


@pytest.fixture
def all_dtypes_file(tmp_path):
    tensors = {f"t_{str(d).split('.')[-1]}": _sample(d) for d in ALL_DTYPES}
    tensors["scalar"] = torch.tensor(3.5, dtype=torch.float32)
    tensors["empty"] = torch.zeros((0, 4), dtype=torch.float16)
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "héllo"})
    return path, tensors


def test_every_dtype_matches_reference(all_dtypes_file):
    path, tensors = all_dtypes_file
    model = tl.load_model(path)
    ref = load_file(str(path))
    assert sorted(model.tensor_names()) == sorted(ref)
    for name, want in ref.items():
        got = model.get_tensor(name, dtype="native")
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert torch.equal(got.view(torch.uint8) if got.dtype.itemsize == 1 and got.is_floating_point()
                           else got, want.view(torch.uint8) if want.dtype.itemsize == 1 and want.is_floating_point()
                           else want), name


def test_numpy_view_matches_reference_floats(all_dtypes_file):
    path, _ = all_dtypes_file
    model = tl.load_model(path)
    for name in model.tensor_names():
        ref = load_file(str(path))[name]
        got = model.get_numpy(name)
        if ref.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, ref.to(torch.float32).numpy())
        else:
            np.testing.assert_array_equal(got, ref.numpy())


def test_fp8_decode_covers_every_bit_pattern(tmp_path):
    codes = torch.arange(256, dtype=torch.uint8)
    tensors = {"e4m3": codes.clone().view(torch.float8_e4m3fn), "e5m2": codes.clone().view(torch.float8_e5m2)}
    path = tmp_path / "fp8.safetensors"
    save_file(tensors, str(path))
    model = tl.load_model(path)
    for name, t in tensors.items():
        want = t.to(torch.float32).numpy()
        got = model.get_numpy(name)
        assert np.array_equal(got, want, equal_nan=True), name


def test_default_dtype_is_float16_for_floats_and_native_for_ints(all_dtypes_file):
    path, _ = all_dtypes_file
    model = tl.load_model(path)
    assert model.get_tensor("t_float64").dtype == torch.float16
    assert model.get_tensor("t_int32").dtype == torch.int32
    assert model.get_tensor("t_float64", dtype=torch.float32).dtype == torch.float32
    assert model.get_tensor("t_float64", dtype="float64").dtype == torch.float64


def test_metadata(all_dtypes_file):
    path, tensors = all_dtypes_file
    md = tl.load_model(path).metadata
    assert md.format == "SafeTensors"
    assert md.tensor_count == len(tensors)
    assert md.parameter_count == sum(t.numel() for t in tensors.values())
    assert md.file_size == path.stat().st_size
    assert md.extra["note"] == "héllo"
    assert md.quantization == "MIXED"  # twelve dtypes of equal size: none dominates


def test_quantization_is_dominant_dtype(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(100, 100, dtype=torch.bfloat16), "norm": torch.zeros(100)}, str(path))
    assert tl.load_model(path).metadata.quantization == "BF16"


def test_detected_by_content_not_extension(tmp_path):
    path = tmp_path / "weights.bin"
    save_file({"a": torch.ones(2)}, str(path))
    assert tl.load_model(path).metadata.format == "SafeTensors"


def test_save_roundtrip_through_reference(tmp_path):
    tensors = {f"t{i}": _sample(d) for i, d in enumerate(ALL_DTYPES)}
    tensors["np"] = np.arange(12, dtype=np.int16).reshape(3, 4)
    tensors["np_be"] = np.arange(6, dtype=">f4")
    path = tl.save_model(tensors, tmp_path / "out.safetensors", metadata={"k": "v"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        for name, want in tensors.items():
            got = f.get_tensor(name)
            want_t = torch.from_numpy(np.asarray(want, dtype=np.asarray(want).dtype.newbyteorder("<"))) \
                if isinstance(want, np.ndarray) else want
            assert got.dtype == want_t.dtype, name
            assert torch.equal(got.view(torch.uint8), want_t.contiguous().view(torch.uint8)), name


def test_save_model_object_preserves_dtypes(all_dtypes_file, tmp_path):
    path, _ = all_dtypes_file
    model = tl.load_model(path)
    out = tl.save_model(model, tmp_path / "copy.safetensors")
    ref, got = load_file(str(path)), load_file(str(out))
    assert sorted(ref) == sorted(got)
    for name in ref:
        assert ref[name].dtype == got[name].dtype
        assert torch.equal(ref[name].view(torch.uint8) if ref[name].dtype.itemsize == 1 else ref[name],
                           got[name].view(torch.uint8) if got[name].dtype.itemsize == 1 else got[name])


def test_save_is_atomic(tmp_path):
    path = tmp_path / "keep.safetensors"
    save_file({"old": torch.ones(3)}, str(path))
    before = path.read_bytes()
    with pytest.raises(tl.TensorLogicError, match="cannot save a str"):
        tl.save_model({"good": torch.ones(2), "bad": "not a tensor"}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def _write_sharded(tmp_path):
    a = {"layer.0.w": torch.randn(4, 4), "layer.0.b": torch.randn(4)}
    b = {"layer.1.w": torch.randn(4, 4).half()}
    save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in a}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in b})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 100}, "weight_map": weight_map}))
    return index, {**a, **b}


def test_sharded_checkpoint_via_index(tmp_path):
    index, tensors = _write_sharded(tmp_path)
    for target in (index, tmp_path):
        model = tl.load_model(target)
        assert sorted(model.tensor_names()) == sorted(tensors)
        for name, want in tensors.items():
            assert torch.equal(model.get_tensor(name, dtype="native"), want)
        assert model.metadata.extra["total_size"] == 100


def test_sharded_missing_shard(tmp_path):
    index, _ = _write_sharded(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FormatError, match=r"shard model-00002-of-00002.safetensors listed in the index is missing"):
        tl.load_model(index)


def test_sharded_index_points_to_wrong_shard(tmp_path):
    index, _ = _write_sharded(tmp_path)
    doc = json.loads(index.read_text())
    doc["weight_map"]["layer.1.w"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"maps tensor 'layer.1.w' to model-00001-of-00002.safetensors"):
        tl.load_model(index)


# ------------------------------------------------------------------------------------------ bad input

def _raw_file(tmp_path, header: bytes | dict, data: bytes = b"", length: int | None = None):
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path


def test_truncated_header_length(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    with pytest.raises(FormatError, match=r"bad.safetensors.*truncated SafeTensors file: 3 bytes"):
        tl.load_model(path)


def test_header_length_past_end(tmp_path):
    path = _raw_file(tmp_path, b'{"a": 1}', length=1 << 40)
    with pytest.raises(FormatError, match=r"at byte 0: SafeTensors header length 1,099,511,627,776 exceeds"):
        tl.load_model(path)


def test_header_not_json(tmp_path):
    path = _raw_file(tmp_path, b'{"a": [1, 2}')
    with pytest.raises(FormatError, match=r"at byte 19: SafeTensors header is not valid JSON"):
        tl.load_model(path)


def test_header_json_not_object(tmp_path):
    path = tmp_path / "bad.safetensors"
    body = b'{"x"  :   1 }'
    # A header that is a JSON list but still starts with '{' is impossible; use a list after the brace check.
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(FormatError, match=r"tensor 'x': header entry is not an object"):
        tl.load_model(path)
    body = b"[1, 2]"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(FormatError, match=r"JSON list, not an object|not a model"):
        tl.load_model(path)


def test_header_not_utf8(tmp_path):
    path = _raw_file(tmp_path, b'{"\xff\xfe": 1}')
    with pytest.raises(FormatError, match=r"at byte 10: SafeTensors header is not valid UTF-8"):
        tl.load_model(path)


def test_tensor_past_end(tmp_path):
    path = _raw_file(tmp_path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    with pytest.raises(FormatError, match=r"tensor 'w': data ends at byte .*past the end"):
        tl.load_model(path)


def test_tensor_size_mismatch(tmp_path):
    path = _raw_file(tmp_path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16)
    with pytest.raises(FormatError, match=r"tensor 'w': 12 data bytes, but F32\[4\] needs 16"):
        tl.load_model(path)


def test_tensors_overlap(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = _raw_file(tmp_path, header, b"\0" * 12)
    with pytest.raises(FormatError, match=r"tensors 'a' and 'b' overlap"):
        tl.load_model(path)


def test_unknown_dtype_and_bad_shape(tmp_path):
    path = _raw_file(tmp_path, {"w": {"dtype": "F12", "shape": [1], "data_offsets": [0, 2]}}, b"\0" * 2)
    with pytest.raises(FormatError, match=r"tensor 'w': unknown dtype 'F12'"):
        tl.load_model(path)
    path = _raw_file(tmp_path, {"w": {"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}}, b"\0" * 2)
    with pytest.raises(FormatError, match=r"shape \[-1\] is not a list of non-negative integers"):
        tl.load_model(path)


def test_huge_shape_does_not_allocate(tmp_path):
    path = _raw_file(tmp_path, {"w": {"dtype": "F32", "shape": [1 << 30, 1 << 30], "data_offsets": [0, 16]}},
                     b"\0" * 16)
    with pytest.raises(FormatError, match=r"needs 4,611,686,018,427,387,904"):
        tl.load_model(path)


def test_inspect_does_not_import_torch(all_dtypes_file):
    path, _ = all_dtypes_file
    code = (
        "import sys, json, io, contextlib\n"
        "from tensorlogic.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        f"    rc = main(['inspect', '--json', '--tensors', {str(path)!r}])\n"
        "doc = json.loads(buf.getvalue())\n"
        "print(rc, doc['format'], len(doc['tensors']), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "SafeTensors", "14", "False"]
