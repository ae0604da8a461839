"""GGUF reading and writing, checked against gguf-py (its writer makes the fixtures, its reader and
``gguf.quants`` are the reference for every value we read or write)."""

from __future__ import annotations

import argparse
import builtins
import json
import shutil
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.scripts.gguf_convert_endian import convert_byteorder

import tensorlogic as tl
from formats.gguf_helpers import Builder
from tensorlogic.cli import main as cli_main
from tensorlogic.errors import FormatError, TensorLogicError, UnsupportedError
from tensorlogic.formats import gguf as ours
from tensorlogic.formats.detect import Detected

RNG = np.random.default_rng(1234)

PLAIN = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64,
    "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
}


def _plain_sample(dtype, shape):
    if np.issubdtype(dtype, np.floating):
        return (RNG.standard_normal(shape) * 3).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _write(path: Path, build, endian=gguf.GGUFEndian.LITTLE, **kw) -> Path:
    w = gguf.GGUFWriter(str(path), "testarch", endianess=endian, **kw)
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _open(path: Path) -> ours.GGUFFile:
    return ours.open_gguf(Detected("GGUF", "file", Path(path)))


def _fields(path: Path) -> dict:
    """gguf-py's view of every key-value (its pseudo fields GGUF.* left out)."""
    r = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def _flatten(v):
    if isinstance(v, list):
        return [x for item in v for x in _flatten(item)] if any(isinstance(i, list) for i in v) else v
    return v


def _every_kv(w: gguf.GGUFWriter) -> None:
    w.add_uint8("t.uint8", 250)
    w.add_int8("t.int8", -120)
    w.add_uint16("t.uint16", 65000)
    w.add_int16("t.int16", -32000)
    w.add_uint32("t.uint32", 4_000_000_000)
    w.add_int32("t.int32", -2_000_000_000)
    w.add_float32("t.float32", 0.1)
    w.add_uint64("t.uint64", 2**64 - 1)
    w.add_int64("t.int64", -(2**63))
    w.add_float64("t.float64", 0.1)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "héllo wörld ✓")
    w.add_array("t.arr_int", [1, -2, 3])
    w.add_array("t.arr_float", [0.5, -1.25, 1e-3])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_str", ["a", "", "ünïcode", "x" * 300])
    w.add_key_value("t.arr_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)
    w.add_key_value("t.arr_i64", [-(2**62), 2**62], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT64)
    w.add_key_value("t.arr_f64", [0.1, 1e300], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT64)
    w.add_array("t.nested", [[1, 2], [3, 4, 5]])
    w.add_array("t.nested_str", [["a", "b"], ["c"]])
    w.add_name("every-kv")
    w.add_description("a test file")
    w.add_author("tests")
    w.add_license("mit")
    w.add_version("1.2")


NESTED = {"t.nested": [[1, 2], [3, 4, 5]], "t.nested_str": [["a", "b"], ["c"]]}


@pytest.fixture
def every_kv_file(tmp_path):
    def build(w):
        _every_kv(w)
        w.add_tensor("w", np.arange(8, dtype=np.float32).reshape(2, 4))

    return _write(tmp_path / "kv.gguf", build)


# ---------------------------------------------------------------------------------------------- tables


def test_type_table_matches_gguf_py():
    for qt in Q:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        assert ours.GGML_TYPES[int(qt)] == (qt.name, block, size)
    assert len(ours.GGML_TYPES) == len(Q)


def test_quant_module_agrees_on_sizes():
    from tensorlogic.formats import gguf_quants

    for name, (block, size) in gguf_quants.TYPE_INFO.items():
        assert ours.GGML_TYPES[ours.GGML_TYPE_IDS[name]][1:] == (block, size), name


def test_file_type_names_match_llama_cpp():
    for ft in gguf.LlamaFileType:
        if ft == gguf.LlamaFileType.GUESSED:
            continue
        assert ours.FILE_TYPES[int(ft)] == ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    assert len(ours.FILE_TYPES) == len(gguf.LlamaFileType) - 1


# ---------------------------------------------------------------------------------------------- metadata


def test_every_value_type_matches_gguf_py(every_kv_file):
    md = _open(every_kv_file).metadata()
    ref = _fields(every_kv_file)
    for key, want in ref.items():
        got = md.extra[key]
        # gguf-py flattens nested arrays; compare shapes against what was written.
        if key in NESTED:
            assert got == NESTED[key]
            assert _flatten(got) == want
        else:
            assert got == want, key
            assert type(got) is type(want), key
    assert set(md.extra) == set(ref) | {"gguf_version", "alignment", "endianness"}
    assert md.extra["t.float32"] == float(np.float32(0.1))
    assert md.extra["gguf_version"] == 3 and md.extra["alignment"] == 32 and md.extra["endianness"] == "little"
    assert (md.format, md.name, md.architecture) == ("GGUF", "every-kv", "testarch")
    assert (md.description, md.author, md.license, md.version) == ("a test file", "tests", "mit", "1.2")
    assert (md.tensor_count, md.parameter_count) == (1, 8)
    assert md.file_size == every_kv_file.stat().st_size
    assert md.quantization == "F32"


def test_metadata_does_not_import_torch(every_kv_file):
    code = (
        "import sys; from tensorlogic.formats import open_model_file; "
        f"f = open_model_file({str(every_kv_file)!r}); f.metadata(); f.tensor_infos(); f.read_numpy('w'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_big_endian_file(tmp_path):
    arrays = {f"t_{k}": _plain_sample(dt, (3, 5)) for k, dt in PLAIN.items()}

    def build(w):
        _every_kv(w)
        for name, arr in arrays.items():
            w.add_tensor(name, arr)

    path = _write(tmp_path / "be.gguf", build, endian=gguf.GGUFEndian.BIG)
    assert path.read_bytes()[4:8] == struct.pack(">I", 3)
    f = _open(path)
    md = f.metadata()
    for key, want in _fields(path).items():
        assert _flatten(md.extra[key]) == want, key
    assert md.extra["endianness"] == "big"
    r = gguf.GGUFReader(str(path))
    for t in r.tensors:
        got = f.read_numpy(t.name)
        assert got.dtype == arrays[t.name].dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, t.data)
        np.testing.assert_array_equal(got, arrays[t.name])


def test_version_2_reads_like_version_3(every_kv_file, tmp_path):
    # GGUF v2 (llama.cpp PR #2821, Aug 2023) made every count and length 64-bit; v3 (PR #3552,
    # Oct 2023) only added big-endian files, so a little-endian v2 file has exactly v3's layout.
    v2 = tmp_path / "v2.gguf"
    data = bytearray(every_kv_file.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    v2.write_bytes(data)
    got, want = _open(v2).metadata().extra, _open(every_kv_file).metadata().extra
    assert got.pop("gguf_version") == 2 and want.pop("gguf_version") == 3
    assert got == want
    for key, value in _fields(v2).items():
        assert _flatten(got[key]) == value
    np.testing.assert_array_equal(_open(v2).read_numpy("w"), gguf.GGUFReader(str(v2)).tensors[0].data)


def test_version_1_is_refused_clearly(every_kv_file, tmp_path):
    v1 = tmp_path / "v1.gguf"
    data = bytearray(every_kv_file.read_bytes())
    data[4:8] = struct.pack("<I", 1)
    v1.write_bytes(data)
    with pytest.raises(FormatError, match=r"v1\.gguf at byte 4: GGUF version 1 .* not supported") as e:
        tl.load_model(v1)
    assert e.value.offset == 4


def test_vocabulary_sized_arrays(tmp_path):
    # Compared with what gguf-py was told to write: its reader needs ~8 s for arrays this long.
    tokens = [f"▁tok{i}" if i % 3 else f"ü{i}" for i in range(150_000)]
    scores = RNG.standard_normal(150_000).astype(np.float32)
    types = RNG.integers(1, 6, 150_000).tolist()

    def build(w):
        w.add_array("tokenizer.ggml.tokens", tokens)
        w.add_array("tokenizer.ggml.scores", scores.tolist())
        w.add_key_value("tokenizer.ggml.token_type", types, gguf.GGUFValueType.ARRAY,
                        sub_type=gguf.GGUFValueType.INT32)

    path = _write(tmp_path / "vocab.gguf", build)
    extra = _open(path).metadata().extra
    assert extra["tokenizer.ggml.tokens"] == tokens
    assert extra["tokenizer.ggml.scores"] == scores.tolist()
    assert extra["tokenizer.ggml.token_type"] == types


@pytest.fixture
def plain_file(tmp_path):
    shapes = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]
    arrays = {f"{k}_{len(s)}d": _plain_sample(dt, s) for k, dt in PLAIN.items() for s in shapes}
    arrays["F32_empty"] = np.zeros((0, 4), np.float32)

    def build(w):
        for name, arr in arrays.items():
            w.add_tensor(name, arr)

    return _write(tmp_path / "plain.gguf", build), arrays


def test_plain_tensors_equal_gguf_py(plain_file):
    path, arrays = plain_file
    f = _open(path)
    r = gguf.GGUFReader(str(path))
    assert [t.name for t in f.tensor_infos()] == [t.name for t in r.tensors]
    for t in r.tensors:
        got = f.read_numpy(t.name)
        assert got.shape == arrays[t.name].shape == t.data.shape
        assert got.dtype == t.data.dtype
        np.testing.assert_array_equal(got, t.data)
    infos = {t.name: t for t in f.tensor_infos()}
    assert infos["F16_3d"].shape == (2, 3, 4) and infos["F16_3d"].dtype == "F16"
    assert infos["F16_3d"].nbytes == 48
    assert infos["I64_1d"].offset == r.tensors[[t.name for t in r.tensors].index("I64_1d")].data_offset


def test_plain_reads_are_views_of_the_map(plain_file):
    path, _ = plain_file
    arr = _open(path).read_numpy("F32_2d")
    assert not arr.flags.owndata


def test_load_model_api(plain_file):
    path, arrays = plain_file
    m = tl.load_model(path)
    assert m.metadata.format == "GGUF"
    assert m.tensor_names() == list(arrays)
    t = m.get_tensor("F32_2d")
    assert t.dtype == torch.float16
    assert torch.equal(t, torch.from_numpy(arrays["F32_2d"]).half())
    assert m.get_tensor("F32_2d", dtype="native").dtype == torch.float32
    assert torch.equal(m.get_tensor("F64_3d", dtype=torch.float32), torch.from_numpy(arrays["F64_3d"]).float())
    assert torch.equal(m.get_tensor("I16_2d"), torch.from_numpy(arrays["I16_2d"]))
    with pytest.raises(TensorLogicError, match="no tensor named 'nope'"):
        m.get_tensor("nope")
    m.close()


def test_read_torch_on_device(plain_file, device):
    path, arrays = plain_file
    t = _open(path).read_torch("F16_2d", device=device)
    assert t.device.type == device
    assert torch.equal(t.cpu(), torch.from_numpy(arrays["F16_2d"]))


def _bf16_file(tmp_path):
    values = (RNG.standard_normal((4, 8)) * 5).astype(np.float32)

    def build(w):
        w.add_tensor("b", gguf.quants.quantize(values, Q.BF16), raw_dtype=Q.BF16)

    return _write(tmp_path / "bf16.gguf", build)


def test_bf16_tensor(tmp_path, device):
    path = _bf16_file(tmp_path)
    r = gguf.GGUFReader(str(path))
    want = gguf.quants.dequantize(r.tensors[0].data, Q.BF16)
    f = _open(path)
    t = f.read_torch("b", device=device)
    assert t.dtype == torch.bfloat16 and t.shape == (4, 8) and t.device.type == device
    np.testing.assert_array_equal(t.float().cpu().numpy(), want)
    got = f.read_numpy("b")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


QUANT_SAMPLES = [Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.Q5_1, Q.IQ4_XS]


def _quant_file(tmp_path, types=QUANT_SAMPLES, ne=(512, 3)):
    def build(w):
        for i, qt in enumerate(types):
            block, size = gguf.GGML_QUANT_SIZES[qt]
            n_blocks = ne[0] // block * int(np.prod(ne[1:]))
            blocks = RNG.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            # Keep every f16 scale finite and small, so values compare without NaN noise.
            blocks[:, :2] = np.frombuffer(np.float16(0.03125).tobytes(), np.uint8)
            if qt == Q.Q6_K:
                blocks[:, 208:210] = np.frombuffer(np.float16(0.03125).tobytes(), np.uint8)
            if qt in (Q.Q4_K, Q.Q5_1):
                blocks[:, 2:4] = np.frombuffer(np.float16(0.0625).tobytes(), np.uint8)
            w.add_tensor(f"q{i}_{qt.name}", blocks.reshape(*reversed(ne[1:]), -1), raw_dtype=qt)
        w.add_tensor("norm", np.ones(ne[0], np.float32))

    return _write(tmp_path / "quant.gguf", build)


def test_quantized_tensors_dequantize_like_gguf_py(tmp_path, device):
    path = _quant_file(tmp_path)
    r = gguf.GGUFReader(str(path))
    f = _open(path)
    for t in r.tensors[:-1]:
        want = gguf.quants.dequantize(t.data, t.tensor_type)
        assert want.shape == (3, 512)
        got = f.read_numpy(t.name)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=t.name)
        on_dev = f.read_torch(t.name, device=device)
        assert on_dev.dtype == torch.float32 and on_dev.device.type == device
        np.testing.assert_array_equal(on_dev.cpu().numpy(), want, err_msg=t.name)
    info = {t.name: t for t in f.tensor_infos()}["q2_Q4_K"]
    assert (info.dtype, info.shape, info.nbytes) == ("Q4_K", (3, 512), 3 * 2 * 144)


def test_quantization_from_file_type(tmp_path):
    def build(w):
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
        w.add_tensor("blk.0.w", RNG.integers(0, 256, (4, 144), dtype=np.uint8), raw_dtype=Q.Q4_K)
        w.add_tensor("blk.0.norm", np.ones(256, np.float32))

    m = tl.load_model(_write(tmp_path / "m.gguf", build))
    assert m.metadata.quantization == "Q4_K_M"
    assert m.metadata.extra["general.file_type"] == 15


@pytest.mark.parametrize(
    ("types", "want"),
    [((Q.Q8_0, Q.Q8_0, Q.F32), "Q8_0"), ((Q.Q8_0, Q.F16), "MIXED"), ((Q.F16,), "F16")],
)
def test_quantization_from_dominant_type(tmp_path, types, want):
    def build(w):
        for i, qt in enumerate(types):
            block, size = gguf.GGML_QUANT_SIZES[qt]
            w.add_tensor(f"t{i}", np.zeros((2, 64 // block * size), np.uint8), raw_dtype=qt)

    assert _open(_write(tmp_path / "d.gguf", build)).metadata().quantization == want


def test_big_endian_quantized_via_gguf_py_converter(tmp_path, monkeypatch):
    types = [Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K]
    little = _quant_file(tmp_path, types)
    big = tmp_path / "big.gguf"
    shutil.copy(little, big)
    monkeypatch.setattr(builtins, "input", lambda *_: "YES")
    reader = gguf.GGUFReader(str(big), "r+")
    convert_byteorder(reader, argparse.Namespace(order="big", dry_run=False))
    reader.data.flush()
    del reader
    assert big.read_bytes()[4:8] == struct.pack(">I", 3)
    ref = gguf.GGUFReader(str(little))
    f = _open(big)
    for t in ref.tensors:
        want = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type != Q.F32 else t.data
        np.testing.assert_array_equal(f.read_numpy(t.name), want, err_msg=t.name)


def test_big_endian_quant_without_defined_byte_order(tmp_path):
    def build(w):
        w.add_tensor("q", np.zeros((1, 24), np.uint8), raw_dtype=Q.Q5_1)

    path = _write(tmp_path / "be5.gguf", build, endian=gguf.GGUFEndian.BIG)
    with pytest.raises(UnsupportedError, match=r"be5\.gguf: tensor 'q': Q5_1 data in a big-endian GGUF file"):
        _open(path).read_numpy("q")


# ---------------------------------------------------------------------------------------------- split files


@pytest.fixture
def split_model(tmp_path):
    arrays = {f"blk.{i}.w": _plain_sample(np.float32, (4, 3 + i)) for i in range(5)}

    def build(w):
        w.add_name("splitty")
        for name, arr in arrays.items():
            w.add_tensor(name, arr)

    _write(tmp_path / "m.gguf", build, split_max_tensors=2)
    parts = sorted(tmp_path.glob("m-*-of-00003.gguf"))
    assert [p.name for p in parts] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    return parts, arrays


def test_split_files_load_as_one_model(split_model):
    parts, arrays = split_model
    for given in (parts[0], parts[2], parts[0].parent):
        m = tl.load_model(given)
        assert m.path == parts[0]
        assert m.tensor_names() == list(arrays)
        for name, arr in arrays.items():
            assert torch.equal(m.get_tensor(name, dtype="native"), torch.from_numpy(arr))
        md = m.metadata
        assert md.name == "splitty" and md.tensor_count == 5
        assert md.file_size == sum(p.stat().st_size for p in parts)
        assert md.extra["split.count"] == 3 and md.extra["split_files"] == [p.name for p in parts]
        m.close()


def test_split_missing_part(split_model):
    parts, _ = split_model
    parts[1].unlink()
    with pytest.raises(FormatError, match=r"m-00001-of-00003\.gguf: split model of 3 parts is missing 1: "
                                          r"m-00002-of-00003\.gguf"):
        tl.load_model(parts[0])


def test_split_part_renamed(split_model, tmp_path):
    parts, _ = split_model
    odd = tmp_path / "renamed.gguf"
    shutil.copy(parts[0], odd)
    with pytest.raises(FormatError, match=r"split.count says the model has 3 parts"):
        tl.load_model(odd)


# ---------------------------------------------------------------------------------------------- inspect


def test_inspect_json(tmp_path, capsys):
    path = _quant_file(tmp_path, [Q.Q8_0, Q.Q8_0])
    assert cli_main(["inspect", str(path), "--json", "--tensors"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "GGUF" and doc["quantization"] == "Q8_0"
    r = gguf.GGUFReader(str(path))
    assert doc["tensor_count"] == len(r.tensors)
    assert doc["parameter_count"] == sum(int(t.n_elements) for t in r.tensors)
    assert [t["name"] for t in doc["tensors"]] == [t.name for t in r.tensors]
    assert doc["tensors"][0]["shape"] == [3, 512] and doc["tensors"][0]["dtype"] == "Q8_0"
    assert doc["tensors"][0]["offset"] == r.tensors[0].data_offset


def test_inspect_rich_table(every_kv_file, capsys):
    assert cli_main(["inspect", str(every_kv_file), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "GGUF" in out and "every-kv" in out and "t.arr_str" in out


# ---------------------------------------------------------------------------------------------- writer


def _sample_tensors():
    return {
        "w2d": (RNG.standard_normal((4, 64)) * 2).astype(np.float32),
        "w2d_f16": (RNG.standard_normal((3, 96))).astype(np.float16),
        "odd_row": RNG.standard_normal((2, 40)).astype(np.float32),
        "bias": RNG.standard_normal(64).astype(np.float32),
        "ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        "w3d": RNG.standard_normal((2, 3, 32)).astype(np.float32),
    }


EXPECTED_TYPES = {
    None: {"w2d": "F32", "w2d_f16": "F16", "odd_row": "F32", "bias": "F32", "ids": "I32", "w3d": "F32"},
    "F32": {"w2d": "F32", "w2d_f16": "F32", "odd_row": "F32", "bias": "F32", "ids": "I32", "w3d": "F32"},
    "F16": {"w2d": "F16", "w2d_f16": "F16", "odd_row": "F16", "bias": "F16", "ids": "I32", "w3d": "F16"},
    "BF16": {"w2d": "BF16", "w2d_f16": "BF16", "odd_row": "BF16", "bias": "BF16", "ids": "I32", "w3d": "BF16"},
    "Q8_0": {"w2d": "Q8_0", "w2d_f16": "Q8_0", "odd_row": "F32", "bias": "F32", "ids": "I32", "w3d": "Q8_0"},
    "Q4_0": {"w2d": "Q4_0", "w2d_f16": "Q4_0", "odd_row": "F32", "bias": "F32", "ids": "I32", "w3d": "Q4_0"},
}
FILE_TYPE = {None: 0, "F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7, "Q4_0": 2}


@pytest.mark.parametrize("qtype", list(EXPECTED_TYPES))
def test_writer_round_trips_through_gguf_py(tmp_path, qtype):
    tensors = _sample_tensors()
    path = tl.save_model(tensors, tmp_path / "out.gguf", qtype=qtype)
    r = gguf.GGUFReader(str(path))
    assert r.fields["general.alignment"].contents() == 32
    assert r.fields["general.alignment"].types == [gguf.GGUFValueType.UINT32]
    assert r.fields["general.file_type"].contents() == FILE_TYPE[qtype]
    assert int(r.fields["GGUF.version"].contents()) == 3
    by_name = {t.name: t for t in r.tensors}
    assert list(by_name) == list(tensors)
    for name, src in tensors.items():
        t = by_name[name]
        assert t.tensor_type.name == EXPECTED_TYPES[qtype][name], name
        assert tuple(reversed(t.shape.tolist())) == src.shape
        f32 = src.astype(np.float32)
        kind = t.tensor_type
        if kind in (Q.Q8_0, Q.Q4_0, Q.BF16):
            np.testing.assert_array_equal(t.data.reshape(-1), gguf.quants.quantize(f32, kind).reshape(-1))
        elif kind == Q.F16:
            np.testing.assert_array_equal(t.data, src.astype(np.float16))
        else:
            np.testing.assert_array_equal(t.data, src)
    ours_back = _open(path)
    for t in r.tensors:
        want = t.data if t.tensor_type in (Q.F32, Q.F16, Q.I32) else gguf.quants.dequantize(t.data, t.tensor_type)
        np.testing.assert_array_equal(ours_back.read_numpy(t.name), want)


def test_writer_torch_inputs_and_bf16_bits(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf": torch.randn(3, 32, generator=g).to(torch.bfloat16),
        "f32": torch.randn(2, 32, generator=g),
        "t_noncontig": torch.randn(32, 4, generator=g).t(),
        "i64": torch.arange(5),
    }
    path = tl.save_model(tensors, tmp_path / "t.gguf")
    r = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in r.tensors}
    assert by_name["bf"].tensor_type == Q.BF16
    np.testing.assert_array_equal(by_name["bf"].data.reshape(-1).view(np.int16),
                                  tensors["bf"].view(torch.int16).numpy().reshape(-1))
    np.testing.assert_array_equal(by_name["t_noncontig"].data, tensors["t_noncontig"].numpy())
    np.testing.assert_array_equal(by_name["i64"].data, tensors["i64"].numpy())
    m = tl.load_model(path)
    assert torch.equal(m.get_tensor("bf", dtype="native"), tensors["bf"])


def test_writer_bf16_rounding_matches_gguf_py(tmp_path):
    values = np.concatenate([RNG.standard_normal(60).astype(np.float32),
                             np.array([np.nan, np.inf, -np.inf, 1 + 2**-8], np.float32)]).reshape(2, 32)
    path = tl.save_model({"x": values}, tmp_path / "b.gguf", qtype="BF16")
    data = gguf.GGUFReader(str(path)).tensors[0].data
    np.testing.assert_array_equal(data.reshape(-1), gguf.quants.quantize(values, Q.BF16).reshape(-1))


def test_writer_metadata_round_trip(tmp_path):
    meta = {
        "general.name": "written", "general.architecture": "llama", "x.count": 7, "x.neg": -3,
        "x.big": 2**40, "x.ratio": 0.25, "x.flag": False, "x.words": ["a", "bé", ""],
        "x.ints": [1, 2, 3], "x.floats": [0.5, 1.5], "x.nested": [[1, 2], [3]], "x.huge": 1e300,
        "x.huge_list": [1.0, -1e300], "x.inf": float("inf"),
        "x.exact": np.float64(0.1), "x.u8": np.uint8(9), "x.vec": np.arange(4, dtype=np.int16),
        "general.alignment": "ignored", "gguf_version": 3,
    }
    path = tl.save_model({"w": np.zeros((2, 32), np.float32)}, tmp_path / "m.gguf", metadata=meta)
    ref = _fields(path)
    types = {k: f.types for k, f in gguf.GGUFReader(str(path)).fields.items()}
    V = gguf.GGUFValueType
    assert ref["general.name"] == "written" and ref["general.architecture"] == "llama"
    assert (ref["x.count"], types["x.count"]) == (7, [V.UINT32])
    assert (ref["x.neg"], types["x.neg"]) == (-3, [V.INT32])
    assert (ref["x.big"], types["x.big"]) == (2**40, [V.UINT64])
    assert (ref["x.ratio"], types["x.ratio"]) == (0.25, [V.FLOAT32])
    assert ref["x.flag"] is False
    assert ref["x.words"] == ["a", "bé", ""]
    assert ref["x.ints"] == [1, 2, 3] and ref["x.floats"] == [0.5, 1.5] and ref["x.nested"] == [1, 2, 3]
    assert (ref["x.exact"], types["x.exact"]) == (0.1, [V.FLOAT64])
    assert (ref["x.huge"], types["x.huge"]) == (1e300, [V.FLOAT64])
    assert (ref["x.huge_list"], types["x.huge_list"]) == ([1.0, -1e300], [V.ARRAY, V.FLOAT64])
    assert (ref["x.inf"], types["x.inf"]) == (float("inf"), [V.FLOAT32])
    assert (ref["x.u8"], types["x.u8"]) == (9, [V.UINT8])
    assert ref["x.vec"] == [0, 1, 2, 3] and types["x.vec"] == [V.ARRAY, V.INT16]
    assert ref["general.alignment"] == 32 and "gguf_version" not in ref
    extra = tl.load_model(path).metadata.extra
    assert extra["x.nested"] == [[1, 2], [3]]


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(TensorLogicError, match="qtype 'Q5_0' is not one of"):
        tl.save_model({"w": np.zeros((2, 32), np.float32)}, tmp_path / "a.gguf", qtype="Q5_0")
    with pytest.raises(TensorLogicError, match="tensor 'u': numpy dtype uint8 has no GGUF type"):
        tl.save_model({"u": np.zeros(3, np.uint8)}, tmp_path / "a.gguf")
    with pytest.raises(TensorLogicError, match=r"metadata 'm': a GGUF array holds one item type"):
        tl.save_model({"w": np.zeros(3, np.float32)}, tmp_path / "a.gguf", metadata={"m": [1, "a"]})
    with pytest.raises(TensorLogicError, match=r"string '\\udc80' cannot be stored: it is not valid Unicode"):
        tl.save_model({"w": np.zeros(3, np.float32)}, tmp_path / "a.gguf", metadata={"m": "\udc80"})
    with pytest.raises(TensorLogicError, match=r"metadata 'm': integer 18446744073709551616 does not fit in 64 bits"):
        tl.save_model({"w": np.zeros(3, np.float32)}, tmp_path / "a.gguf", metadata={"m": 2**64})
    with pytest.raises(TensorLogicError, match="unknown options"):
        tl.save_model({"w": np.zeros(3, np.float32)}, tmp_path / "a.gguf", quality=3)
    assert list(tmp_path.iterdir()) == []


class _FailingOnData(Mapping):
    """Hands out shapes fine, then fails while the second tensor's data is being written."""

    def __init__(self):
        self.arrays = {"a": np.ones((2, 32), np.float32), "b": np.ones((2, 32), np.float32)}
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        if self.reads == 4:
            raise RuntimeError("disk on fire")
        return self.arrays[key]

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self):
        return len(self.arrays)


def test_save_is_atomic(tmp_path):
    path = tmp_path / "keep.gguf"
    tl.save_model({"old": np.arange(4, dtype=np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk on fire"):
        tl.save_model(_FailingOnData(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.gguf"]
    tl.save_model({"new": np.arange(3, dtype=np.float32)}, path)
    assert [t.name for t in gguf.GGUFReader(str(path)).tensors] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.gguf"]


def test_save_model_of_loaded_gguf(plain_file, tmp_path):
    path, arrays = plain_file
    out = tl.save_model(tl.load_model(path), tmp_path / "copy.gguf")
    copy = _open(out)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(copy.read_numpy(name), arr)


# ---------------------------------------------------------------------------------------------- bad input


def _fails(path: Path, message: str, offset: int | None) -> FormatError:
    with pytest.raises(FormatError) as e:
        _open(path)
    assert e.value.offset == offset, str(e.value)
    assert message in e.value.message, str(e.value)
    assert str(e.value).startswith(f"{path} at byte {offset}: " if offset is not None else f"{path}: ")
    assert "\n" not in str(e.value)
    return e.value


def _one_tensor(dims=(32, 2), type_id=0, offset=0, data_bytes=256) -> Builder:
    b = Builder().counts(1, 0).tensor("t", list(dims), type_id, offset, "t").align()
    return b.raw(bytes(data_bytes))


def test_truncated_header(tmp_path):
    path = Builder().raw(b"\x01\x00\x00\x00").write(tmp_path / "short.gguf")
    _fails(path, "truncated file: tensor count needs 8 bytes, only 4 remain", 8)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(FormatError, match=r"tiny\.gguf at byte 4: truncated GGUF file: 6 bytes"):
        tl.load_model(path)
    with pytest.raises(FormatError, match=r"tiny\.gguf at byte 0: truncated GGUF header: the file has 6 bytes"):
        _open(path)


def test_truncated_in_the_middle(every_kv_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    data = every_kv_file.read_bytes()
    cut.write_bytes(data[:200])
    _fails(cut, "header claims 28 metadata key-values, but the 176 bytes after the header hold at most 11", 16)
    for size in range(420, len(data) - 64, 97):
        cut.write_bytes(data[:size])
        cut_message = r"cut\.gguf at byte \d+: .*(truncated|runs past the end|needs at least)"
        with pytest.raises(FormatError, match=cut_message) as e:
            _open(cut)
        assert 24 <= e.value.offset <= size


def test_tensor_count_beyond_file_fails_without_allocating(tmp_path):
    path = Builder().counts(2**60, 0).raw(bytes(64)).write(tmp_path / "huge.gguf")
    tracemalloc.start()
    try:
        _fails(path, "header claims 1,152,921,504,606,846,976 tensors", 8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_kv_count_beyond_file(tmp_path):
    path = Builder().counts(0, 2**40).raw(bytes(100)).write(tmp_path / "kv.gguf")
    _fails(path, "header claims 1,099,511,627,776 metadata key-values", 16)


def test_string_length_past_end(tmp_path):
    b = Builder().counts(0, 1)
    b.string(b"key", "key", length=10**6).raw(bytes(20))
    _fails(b.write(tmp_path / "s.gguf"), "metadata key #0: string length 1,000,000 runs past the end", b.at["key"])
    b = Builder().counts(0, 1).string("k").u32(9).u32(8).u64(3).string("ok").string(b"x", "long", length=2**63)
    b.string("z")
    _fails(b.write(tmp_path / "a.gguf"), "'k'[1]: string length 9,223,372,036,854,775,808 runs past", b.at["long"])


def test_non_utf8_strings(tmp_path):
    b = Builder().counts(0, 1).kv_str("k", b"ok\xffno", "kv")
    _fails(b.write(tmp_path / "u.gguf"), "metadata 'k': string is not valid UTF-8", b.at["kv.value"] + 8 + 2)
    b = Builder().counts(0, 1).string("k").u32(9).u32(8).u64(2).string("fine").string(b"\xc3", "bad")
    _fails(b.write(tmp_path / "ua.gguf"), "metadata 'k'[1]: string is not valid UTF-8", b.at["bad"] + 8)
    # "é" split across two items: their concatenation is valid UTF-8, neither item is.
    b = Builder().counts(0, 1).string("k").u32(9).u32(8).u64(2).string(b"a\xc3", "first").string(b"\xa9b")
    _fails(b.write(tmp_path / "us.gguf"), "metadata 'k'[0]: string is not valid UTF-8", b.at["first"] + 8 + 1)
    b = Builder().counts(1, 0).tensor(b"\xfe", [32], 0, 0, "t").align().raw(bytes(128))
    _fails(b.write(tmp_path / "ut.gguf"), "tensor #0 name: string is not valid UTF-8", b.at["t"] + 8)


def test_unknown_value_types(tmp_path):
    b = Builder().counts(0, 1).string("k").u32(13, "type").u32(0)
    _fails(b.write(tmp_path / "t.gguf"), "metadata 'k': unknown metadata value type 13", b.at["type"])
    b = Builder().counts(0, 1).string("k").u32(9).u32(42, "itype").u64(1).u32(0)
    _fails(b.write(tmp_path / "a.gguf"), "metadata 'k': unknown array item type 42", b.at["itype"])


def test_array_length_beyond_file(tmp_path):
    b = Builder().counts(0, 1).string("k").u32(9).u32(4).u64(2**50, "count").raw(bytes(16))
    _fails(b.write(tmp_path / "a.gguf"), "array of 1,125,899,906,842,624 UINT32 items needs at least", b.at["count"])


def test_arrays_nested_too_deep(tmp_path):
    b = Builder().counts(0, 1).string("k").u32(9)
    for depth in range(20):
        b.u32(9, f"depth{depth}").u64(1)
    b.raw(bytes(64))
    _fails(b.write(tmp_path / "n.gguf"), "metadata 'k'" + "[0]" * 16 + ": arrays nested more than 16 deep",
           b.at["depth16"])


def test_duplicate_metadata_key(tmp_path):
    b = Builder().counts(0, 2).kv_u32("k", 1).kv_u32("k", 2, "second")
    _fails(b.write(tmp_path / "d.gguf"), "metadata key 'k' appears twice", b.at["second"])


def test_bad_alignment(tmp_path):
    b = Builder().counts(0, 1).kv_u32("general.alignment", 48, "kv")
    _fails(b.write(tmp_path / "al.gguf"), "general.alignment is 48; it must be a positive power of two", b.at["kv"])


def test_unknown_ggml_type(tmp_path):
    b = _one_tensor(type_id=31)
    _fails(b.write(tmp_path / "t.gguf"), "tensor 't': unknown ggml type id 31", b.at["t.type"])


def test_too_many_dimensions(tmp_path):
    b = Builder().counts(1, 0).tensor("t", [1] * 5, 0, 0, "t").align().raw(bytes(64))
    _fails(b.write(tmp_path / "t.gguf"), "tensor 't': 5 dimensions, more than GGML_MAX_DIMS = 4", b.at["t.n_dims"])
    b = Builder().counts(1, 0).tensor("t", [], 0, 0, "t", n_dims=2**31).raw(bytes(64))
    _fails(b.write(tmp_path / "t2.gguf"), "2,147,483,648 dimensions", b.at["t.n_dims"])


def test_misaligned_tensor_offset(tmp_path):
    b = _one_tensor(offset=8)
    _fails(b.write(tmp_path / "m.gguf"), "data offset 8 is not a multiple of the alignment 32", b.at["t.offset"])


def test_tensor_past_end_of_file(tmp_path):
    b = _one_tensor(dims=(32, 4), data_bytes=256)
    err = _fails(b.write(tmp_path / "p.gguf"), "tensor 't': data [", b.at["t.offset"])
    assert "runs past the end of the" in err.message


def test_overlapping_tensors(tmp_path):
    b = Builder().counts(2, 0).tensor("a", [32], 0, 0, "a").tensor("b", [32], 0, 64, "b").align()
    b.raw(bytes(256))
    err = _fails(b.write(tmp_path / "o.gguf"), "tensor 'b': data at byte", b.at["b.offset"])
    assert "overlaps tensor 'a' [" in err.message


def test_duplicate_tensor_names(tmp_path):
    b = Builder().counts(2, 0).tensor("a", [8], 0, 0).tensor("a", [8], 0, 32, "again").align().raw(bytes(64))
    _fails(b.write(tmp_path / "d.gguf"), "tensor 'a' appears twice", b.at["again"])


def test_row_not_whole_blocks(tmp_path):
    b = _one_tensor(dims=(33, 2), type_id=int(Q.Q8_0))
    _fails(b.write(tmp_path / "q.gguf"), "row of 33 elements is not a whole number of Q8_0 blocks of 32",
           b.at["t.ne0"])


def test_bad_magic_and_version(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 7) + bytes(40))
    with pytest.raises(FormatError, match="version 7 is not supported") as e:
        _open(path)
    assert e.value.offset == 4


# ---------------------------------------------------------------------------------------------- large file


class _LazyRandom(Mapping):
    """``count`` random float32 matrices made on demand from per-name seeds (never all in memory)."""

    def __init__(self, count: int, shape: tuple[int, int]):
        self.names = [f"blk.{i}.weight" for i in range(count)]
        self.shape = shape

    def __getitem__(self, name):
        rng = np.random.default_rng(self.names.index(name))
        values = rng.random(self.shape, dtype=np.float32)
        values -= 0.5
        return values

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)


@pytest.mark.slow
def test_one_gigabyte_file_inspects(tmp_path):
    tensors = _LazyRandom(60, (4096, 4096))  # 60 x 16.8M elements, Q8_0: 17.8 MB each, 1.07 GB in all
    path = tl.save_model(tensors, tmp_path / "big.gguf", qtype="Q8_0", metadata={"general.name": "big"})
    assert path.stat().st_size > 1_000_000_000
    out = subprocess.run([sys.executable, "-m", "tensorlogic", "inspect", str(path), "--json", "--tensors"],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert (doc["format"], doc["quantization"], doc["name"]) == ("GGUF", "Q8_0", "big")
    assert doc["tensor_count"] == 60 and doc["parameter_count"] == 60 * 4096 * 4096
    assert doc["file_size"] == path.stat().st_size
    r = gguf.GGUFReader(str(path))
    last = r.tensors[-1]
    np.testing.assert_array_equal(_open(path).read_numpy(last.name), gguf.quants.dequantize(last.data, Q.Q8_0))


def test_random_damage_gives_only_format_errors(every_kv_file, tmp_path):
    data = every_kv_file.read_bytes()
    header_end = gguf.GGUFReader(str(every_kv_file)).data_offset
    rng = np.random.default_rng(7)
    bad = tmp_path / "bad.gguf"
    for _ in range(300):
        damaged = bytearray(data)
        for at in rng.integers(8, header_end, size=rng.integers(1, 4)):
            damaged[at] = int(rng.integers(0, 256))
        bad.write_bytes(damaged)
        try:
            f = _open(bad)
            f.metadata()
            for info in f.tensor_infos():
                f.read_numpy(info.name)
            f.close()
        except TensorLogicError as e:
            assert "\n" not in str(e) and str(bad) in str(e)
