"""weight.bin (MIL blob storage v2) against coremltools' C++ writer/reader and torch's float conversions."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tensorlogic.errors import FormatError
from tensorlogic.formats.milblob import BlobFile, decode_bytes, encode_bytes, unpack_bits, write_blob_file
from tensorlogic.mil.ir import NUMPY_STORAGE

storage = pytest.importorskip("coremltools.libmilstoragepython")

# dtype -> (writer method, values to write: full range of the type where it is small)
CASES = {
    "fp16": ("write_fp16_data", lambda rng: rng.standard_normal(37).astype(np.float16)),
    "fp32": ("write_float_data", lambda rng: rng.standard_normal(50).astype(np.float32)),
    "int8": ("write_int8_data", lambda rng: np.arange(-128, 128, dtype=np.int8)),
    "uint8": ("write_uint8_data", lambda rng: np.arange(256, dtype=np.uint8)),
    "int16": ("write_int16_data", lambda rng: rng.integers(-32768, 32768, 21).astype(np.int16)),
    "uint16": ("write_uint16_data", lambda rng: rng.integers(0, 65536, 21).astype(np.uint16)),
    "int32": ("write_int32_data", lambda rng: rng.integers(-2**31, 2**31, 9).astype(np.int32)),
    "uint32": ("write_uint32_data", lambda rng: rng.integers(0, 2**32, 9).astype(np.uint32)),
    "int4": ("write_int4_data", lambda rng: rng.integers(-8, 8, 33).astype(np.int8)),
    "uint4": ("write_uint4_data", lambda rng: rng.integers(0, 16, 33).astype(np.uint8)),
    "uint1": ("write_uint1_data", lambda rng: rng.integers(0, 2, 29).astype(np.uint8)),
    "uint2": ("write_uint2_data", lambda rng: rng.integers(0, 4, 31).astype(np.uint8)),
    "uint3": ("write_uint3_data", lambda rng: rng.integers(0, 8, 31).astype(np.uint8)),
    "uint6": ("write_uint6_data", lambda rng: rng.integers(0, 64, 31).astype(np.uint8)),
}


@pytest.fixture
def reference_blobs(tmp_path):
    """One weight.bin with a blob of every dtype coremltools' writer supports."""
    rng = np.random.default_rng(7)
    path = tmp_path / "weight.bin"
    writer = storage._BlobStorageWriter(str(path), truncate_file=True)
    written = {}
    for dtype, (method, make) in CASES.items():
        values = make(rng)
        arg = values.view(np.uint16) if dtype == "fp16" else values
        written[dtype] = (getattr(writer, method)(np.ascontiguousarray(arg)), values)
    del writer  # flushes and closes
    return path, written


def test_every_dtype_matches_coremltools(reference_blobs):
    path, written = reference_blobs
    reader = storage._BlobStorageReader(str(path))
    blob = BlobFile(path)
    assert blob.count == len(CASES)
    assert [i.offset for i in blob.infos()] == [off for off, _ in written.values()]
    for dtype, (offset, values) in written.items():
        got = blob.read(offset, dtype, values.shape)
        assert got.dtype == NUMPY_STORAGE[dtype], dtype
        np.testing.assert_array_equal(got, values, err_msg=dtype)
        theirs = getattr(reader, CASES[dtype][0].replace("write", "read"))(offset)
        theirs = np.frombuffer(theirs.tobytes(), np.float16) if dtype == "fp16" else theirs
        np.testing.assert_array_equal(got, theirs, err_msg=dtype)
        info = blob.info(offset)
        assert info.dtype == dtype and info.data_offset % 64 == 0 and info.numel() == values.size
    blob.close()


def test_byte_aligned_reads_are_zero_copy(reference_blobs):
    path, written = reference_blobs
    blob = BlobFile(path)
    for dtype in ("fp16", "fp32", "int8", "uint8", "int16", "uint16", "int32", "uint32"):
        arr = blob.read(written[dtype][0], dtype)
        assert not arr.flags.writeable and not arr.flags.owndata, dtype
        assert np.shares_memory(arr, blob._map), dtype


def _hand_blob(path, code: int, data: bytes, padding: int = 0, count: int = 1, version: int = 2):
    header = struct.pack("<II", count, version).ljust(64, b"\0")
    meta = struct.pack("<IIQQQ", 0xDEADBEEF, code, len(data), 128, padding).ljust(64, b"\0")
    path.write_bytes(header + meta + data + b"\0" * (-len(data) % 64))
    return path


def test_bf16_and_fp8_against_torch(tmp_path):
    torch = pytest.importorskip("torch")
    values = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.140625, 1e-3, 448.0, -17.75, float("inf"), float("nan")])
    bf16 = values.to(torch.bfloat16)
    path = _hand_blob(tmp_path / "bf16.bin", 5, bf16.view(torch.int16).numpy().tobytes())
    got = BlobFile(path).read(64, "bf16", (10,))
    np.testing.assert_array_equal(got, bf16.float().numpy())
    assert got.dtype == np.float32

    for code, dtype, tdtype in ((16, "fp8e4m3fn", torch.float8_e4m3fn), (17, "fp8e5m2", torch.float8_e5m2)):
        finite = values[:8]
        f8 = finite.to(tdtype)
        all_codes = torch.arange(256, dtype=torch.uint8)
        path = _hand_blob(tmp_path / f"{dtype}.bin", code, all_codes.numpy().tobytes())
        got = BlobFile(path).read(64, dtype, (256,))
        ref = all_codes.view(tdtype).float().numpy()
        np.testing.assert_array_equal(got, ref, err_msg=dtype)  # every code, NaNs included
        assert encode_bytes(dtype, f8.float().numpy()) == f8.view(torch.uint8).numpy().tobytes()


def test_decode_and_encode_bytes_round_trip():
    rng = np.random.default_rng(3)
    for dtype in ("int4", "uint1", "uint2", "uint3", "uint4", "uint6"):
        bits = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}[dtype]
        lo, hi = (-8, 8) if dtype == "int4" else (0, 1 << bits)
        values = rng.integers(lo, hi, 23)
        packed = encode_bytes(dtype, values)
        assert len(packed) == (23 * bits + 7) // 8
        np.testing.assert_array_equal(decode_bytes(dtype, packed, 23), values)
        # coremltools' own packer agrees on the bit order
        from coremltools.optimize._utils import pack_elements_into_bits

        ref = pack_elements_into_bits(values.astype(np.int8 if dtype == "int4" else np.uint8), bits)
        assert packed == ref.tobytes()
    assert unpack_bits(np.array([0xF8], np.uint8), 4, 2, signed=True).tolist() == [-8, -1]


def test_write_blob_file_is_read_by_coremltools(tmp_path):
    values = np.arange(-5, 6, dtype=np.int8)
    offsets = write_blob_file(tmp_path / "w.bin", [("int8", values), ("uint4", np.arange(9, dtype=np.uint8) % 16)])
    reader = storage._BlobStorageReader(str(tmp_path / "w.bin"))
    np.testing.assert_array_equal(reader.read_int8_data(offsets[0]), values)
    np.testing.assert_array_equal(reader.read_uint4_data(offsets[1]), np.arange(9) % 16)


# --- damaged files: one-line FormatErrors naming the file and byte offset -----------------------


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_short_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\x01\x00\x00\x00")
    with pytest.raises(FormatError) as e:
        BlobFile(tmp_path / "w.bin")
    assert _one_line(e).endswith("w.bin at byte 0: weight file of 4 bytes is shorter than the 64-byte blob "
                                 "storage header")


def test_wrong_version(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 2, b"\0" * 8, version=1)
    with pytest.raises(FormatError) as e:
        BlobFile(path)
    assert "at byte 4: blob storage version 1, expected 2" in _one_line(e)


def test_bad_sentinel(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 2, b"\0" * 8)
    raw = bytearray(path.read_bytes())
    raw[64:68] = b"\xef\xbe\xad\xdf"
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(64, "fp32")
    assert "at byte 64: bad blob metadata sentinel 0xDFADBEEF (expected 0xDEADBEEF)" in _one_line(e)


def test_offset_outside_file(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 2, b"\0" * 8)
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(4096, "fp32")
    assert "at byte 4096: blob metadata offset 4096 is outside the file (192 bytes" in _one_line(e)


def test_data_past_end_of_file(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 2, b"\0" * 8)
    raw = bytearray(path.read_bytes())
    raw[64 + 8: 64 + 16] = struct.pack("<Q", 1 << 40)  # sizeInBytes
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(64)
    assert f"at byte 80: blob data (offset 128, {1 << 40} bytes) runs past the end of the file (192 bytes)" in (
        _one_line(e))


def test_unknown_dtype(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 99, b"\0" * 8)
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(64)
    assert "at byte 68: unknown blob data type code 99" in _one_line(e)


def test_declared_dtype_and_shape_must_match(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 2, b"\0" * 8)
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(64, "fp16")
    assert "at byte 68: model declares fp16 but the blob holds fp32" in _one_line(e)
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(64, "fp32", (3,))
    assert "at byte 72: blob holds 2 fp32 elements, the model expects shape [3]" in _one_line(e)


def test_header_count_larger_than_file(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 2, b"\0" * 8, count=1_000_000)
    with pytest.raises(FormatError) as e:
        BlobFile(path).infos()
    assert "at byte 192: header says 1000000 blobs but the file ends after 1" in _one_line(e)


def test_bad_padding(tmp_path):
    path = _hand_blob(tmp_path / "w.bin", 11, b"\xff", padding=9)
    with pytest.raises(FormatError) as e:
        BlobFile(path).read(64)
    assert "at byte 88: blob padding of 9 bits is invalid for uint4 data" in _one_line(e)
