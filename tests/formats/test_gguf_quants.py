"""GGUF dequantization and quantization against gguf-py's ``gguf.quants`` (the reference), bit for bit.

Types gguf-py cannot dequantize (Q8_K, Q1_0) are checked against a block-by-block transcription of
ggml-quants.c's formula in this file; plain numeric types against numpy's casts.
"""

from __future__ import annotations

import math
import warnings

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants as ref

import tensorlogic as tl
from tensorlogic.errors import FormatError, UnsupportedError
from tensorlogic.formats import gguf_quants as gq
from tensorlogic.formats import gguf_quants_torch as gqt

RNG = np.random.default_rng(20261126)

# Every type gguf-py dequantizes (its F32/F16 paths included); then the ones only ggml does.
REF_TYPES = ["F32", "F16"] + sorted(q.name for q in ref._type_traits)
GGML_ONLY = ["Q8_K", "Q1_0"]
ALL_TYPES = REF_TYPES + GGML_ONLY


@pytest.fixture(autouse=True)
def _quiet():
    # gguf-py's arithmetic on NaN/inf scales warns; so would ours on the same bytes.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def n_blocks_for(name: str) -> int:
    block = gq.TYPE_INFO[name][0]
    return 4096 if block == 1 else max(8, 2048 // block)


def sane_blocks(name: str, n_blocks: int, rng: np.random.Generator = RNG) -> np.ndarray:
    """Random blocks whose scales are finite and small: values a real model could hold."""
    block, size = gq.TYPE_INFO[name]
    if block == 1:  # F32, F16, BF16: the bytes of normal-distributed values
        return gq.quantize(rng.standard_normal(n_blocks).astype(np.float32), name)
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scales = rng.uniform(1e-3, 1e-1, n_blocks)
    for at in gq.F16_FIELDS.get(name, ()):
        raw[:, at : at + 2] = scales.astype("<f2").view(np.uint8).reshape(-1, 2)
    if name == "Q8_K":
        raw[:, :4] = scales.astype("<f4").view(np.uint8).reshape(-1, 4)
    if name == "MXFP4":  # E8M0 exponents near 2**0
        raw[:, 0] = rng.integers(117, 137, n_blocks)
    if name == "IQ1_M":
        bits = scales.astype("<f2").view(np.uint16)
        words = raw[:, 48:56].copy().view("<u2")
        for k in range(4):
            words[:, k] = (words[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
        raw[:, 48:56] = words.view(np.uint8)
    return raw.reshape(-1)


def random_blocks(name: str, n_blocks: int) -> np.ndarray:
    return RNG.integers(0, 256, n_blocks * gq.TYPE_INFO[name][1], dtype=np.uint8)


def ggml_reference(name: str, raw: np.ndarray) -> np.ndarray:
    """ggml-quants.c's dequantize_row_* for types gguf-py lacks, one block and one value at a time."""
    block, size = gq.TYPE_INFO[name]
    out = []
    for blk in raw.reshape(-1, size):
        if name == "Q8_K":
            d = blk[:4].view("<f4")[0]
            out += [d * np.float32(q) for q in blk[4 : 4 + block].view(np.int8)]
        elif name == "Q1_0":
            d = blk[:2].view("<f2").astype(np.float32)[0]
            out += [d if (blk[2 + j // 8] >> (j % 8)) & 1 else -d for j in range(block)]
    return np.array(out, np.float32)


def expected(name: str, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if name in GGML_ONLY:
        return ggml_reference(name, raw).reshape(shape)
    return ref.dequantize(raw.reshape(math.prod(shape[:-1]), -1), Q[name]).reshape(shape)


def shape_for(name: str, raw: np.ndarray) -> tuple[int, ...]:
    block, size = gq.TYPE_INFO[name]
    n = raw.size // size * block
    return (2, n // 2) if n % 2 == 0 and (n // 2) % block == 0 else (n,)


def assert_bits(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, name
    same = got.view(np.uint32) == want.view(np.uint32)
    if not same.all():
        i = int(np.argmin(same.reshape(-1)))
        g, w = got.reshape(-1).view(np.uint32)[i], want.reshape(-1).view(np.uint32)[i]
        pytest.fail(f"{name}: {int((~same).sum())} values differ; first at {i}: {g:#010x} != {w:#010x}")


# ---------------------------------------------------------------------------------------------------
# Tables and sizes.


def test_type_info_matches_gguf_py():
    assert {q.name: gguf.GGML_QUANT_SIZES[q] for q in Q} == gq.TYPE_INFO


def test_every_gguf_py_dequantizer_is_covered():
    assert set(REF_TYPES) <= set(gq._KERNELS) | {"F32", "F16"}
    assert set(REF_TYPES) <= set(gqt.KERNELS) | set(gqt._PLAIN)


def test_small_tables_match_gguf_py():
    assert gq.ksigns().tobytes() == ref.IQ2_XXS.ksigns
    x = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(gq.e8m0_half().view(np.uint32), ref.MXFP4.e8m0_to_fp32_half(x).view(np.uint32))
    np.testing.assert_array_equal(gq.ue4m3_half(), ref.NVFP4.ue4m3_to_fp32(x).astype(np.float32))
    assert gq.KVALUES_IQ4NL == ref.IQ4_NL.kvalues and gq.KVALUES_MXFP4 == ref.MXFP4.kvalues


@pytest.mark.parametrize("name", ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S"])
def test_grids_match_gguf_py(name):
    cls = getattr(ref, name)
    cls.init_grid()
    np.testing.assert_array_equal(gq.grid(name), cls.grid.reshape(cls.grid_shape))


# ---------------------------------------------------------------------------------------------------
# Dequantization, numpy.


@pytest.mark.parametrize("name", ALL_TYPES)
def test_numpy_bit_exact_on_sane_blocks(name):
    raw = sane_blocks(name, n_blocks_for(name))
    shape = shape_for(name, raw)
    want = expected(name, raw, shape)
    assert np.isfinite(want).all()
    assert_bits(gq.dequantize(raw, name, shape), want, name)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_numpy_bit_exact_on_random_bytes(name):
    """NaN and inf scales included: payloads and signs match too."""
    raw = random_blocks(name, n_blocks_for(name))
    shape = shape_for(name, raw)
    assert_bits(gq.dequantize(raw, name, shape), expected(name, raw, shape), name)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name", ["F16", "BF16", "Q4_0", "Q5_1", "Q4_K", "Q6_K", "IQ2_XS", "IQ4_XS", "TQ1_0"])
def test_numpy_chunks_and_threads(name, threads, monkeypatch):
    """Many chunks, the last one partial, split over threads: the values of gguf-py's single pass."""
    block = gq.TYPE_INFO[name][0]
    monkeypatch.setattr(gq, "CHUNK_ELEMENTS", 3 * max(block, 64))
    monkeypatch.setattr(gq, "THREAD_MIN_CHUNKS", 2)
    raw = random_blocks(name, 13 * max(1, 256 // block) + 1)
    shape = shape_for(name, raw)
    assert_bits(gq.dequantize(raw, name, shape, threads=threads), expected(name, raw, shape), name)


def test_numpy_reads_read_only_memory_and_other_views():
    raw = sane_blocks("Q4_K", 4)
    view = np.frombuffer(raw.tobytes(), np.uint8)  # read-only, like a memory map
    assert not view.flags.writeable
    want = expected("Q4_K", raw, (1024,))
    assert_bits(gq.dequantize(view, "Q4_K", (1024,)), want, "Q4_K")
    assert_bits(gq.dequantize(view.view(np.int8), Q.Q4_K, [4, 256]), want.reshape(4, 256), "Q4_K")


def test_f32_is_a_view_and_empty_tensors_work():
    raw = sane_blocks("F32", 64)
    out = gq.dequantize(raw, "F32", (8, 8))
    assert np.shares_memory(out, raw)
    assert gq.dequantize(np.zeros(0, np.uint8), "Q4_K", (0, 256)).shape == (0, 256)


@pytest.mark.parametrize("name", ["F64", "I8", "I16", "I32", "I64"])
def test_plain_numeric_types_cast_like_numpy(name):
    values = (RNG.standard_normal(64) * 1000).astype(gq._PLAIN[name])
    want = values.astype(np.float32).reshape(8, 8)
    assert_bits(gq.dequantize(values.view(np.uint8), name, (8, 8)), want, name)
    t = gqt.dequantize_torch(torch.from_numpy(values.view(np.uint8).copy()), name, (8, 8))
    assert_bits(t.numpy(), want, name)


# ---------------------------------------------------------------------------------------------------
# Dequantization, torch (CPU here; CUDA where present).


def torch_matches(name: str, raw: np.ndarray, device: str, exact_nan: bool) -> None:
    shape = shape_for(name, raw)
    want = expected(name, raw, shape)
    src = torch.from_numpy(raw.copy()).to(device)
    got = gqt.dequantize_torch(src, name, shape)
    assert got.device.type == device and got.dtype == torch.float32
    if exact_nan:
        assert_bits(got.cpu().numpy(), want, name)
    else:
        # CUDA arithmetic returns its canonical NaN, whatever NaNs went in.
        np.testing.assert_array_equal(got.cpu().numpy(), want, err_msg=name)
    half = gqt.dequantize_torch(src, name, shape, dtype=torch.float16)
    assert half.dtype == torch.float16
    np.testing.assert_array_equal(half.cpu().numpy(), want.astype(np.float16), err_msg=name)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_torch_bit_exact_on_sane_blocks(name, device):
    torch_matches(name, sane_blocks(name, n_blocks_for(name)), device, exact_nan=True)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_torch_on_random_bytes(name, device):
    torch_matches(name, random_blocks(name, n_blocks_for(name)), device, exact_nan=device == "cpu")


def test_torch_accepts_unaligned_and_strided_bytes():
    raw = sane_blocks("F16", 33)
    padded = torch.from_numpy(np.concatenate([np.zeros(1, np.uint8), raw]))[1:]
    assert padded.storage_offset() == 1
    want = raw.view("<f2").astype(np.float32)
    np.testing.assert_array_equal(gqt.dequantize_torch(padded, "F16", (33,)).numpy(), want)
    q = sane_blocks("Q8_0", 4)
    strided = torch.from_numpy(np.stack([q, q], axis=1)).reshape(-1)[::2]
    assert_bits(gqt.dequantize_torch(strided, "Q8_0", (128,)).numpy(), expected("Q8_0", q, (128,)), "Q8_0")


@pytest.mark.parametrize("name", ["Q8_0", "Q4_K", "IQ2_XXS"])
def test_torch_compile_matches(name):
    raw = sane_blocks(name, 8)
    blocks = torch.from_numpy(raw).reshape(8, -1)
    shape = shape_for(name, raw)
    want = expected(name, raw, shape)
    for dtype in (torch.float32, torch.float16):
        got = gqt.dequantize_torch(blocks, name, shape, dtype, compile=True)
        if dtype == torch.float32:
            assert_bits(got.numpy(), want, name)
        else:
            np.testing.assert_array_equal(got.numpy(), want.astype(np.float16))


# ---------------------------------------------------------------------------------------------------
# End to end: a GGUF file written by gguf-py, read back through tl.load_model.


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("quants") / "all_types.gguf"
    rng = np.random.default_rng(7)
    blocks = {}
    w = gguf.GGUFWriter(str(path), "testarch")
    for name in ALL_TYPES:
        if name in ("F32", "F16"):
            continue
        block, size = gq.TYPE_INFO[name]
        raw = sane_blocks(name, 3 * max(1, 256 // block), rng)
        blocks[name] = raw
        w.add_tensor(name, raw.reshape(3, -1), raw_dtype=Q[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, blocks


@pytest.mark.parametrize("name", [t for t in ALL_TYPES if t not in ("F32", "F16")])
def test_end_to_end_through_load_model(gguf_file, name):
    path, blocks = gguf_file
    raw = blocks[name]
    want = expected(name, raw, (3, raw.size // 3 // gq.TYPE_INFO[name][1] * gq.TYPE_INFO[name][0]))
    with tl.load_model(path) as m:
        got = m.get_tensor(name, dtype="native")
        assert tuple(got.shape) == want.shape
        assert_bits(got.float().numpy(), want, name)
        assert_bits(m.get_numpy(name), want, name)


# ---------------------------------------------------------------------------------------------------
# Bad input.


def test_wrong_byte_count_names_type_shape_and_sizes():
    with pytest.raises(FormatError) as e:
        gq.dequantize(np.zeros(143, np.uint8), "Q4_K", (256,))
    assert str(e.value) == "<input>: Q4_K tensor of shape (256,) takes 144 bytes, got 143"
    with pytest.raises(FormatError) as e:
        gq.dequantize(np.zeros(10, np.uint8), "Q8_0", (2, 32), path="model.gguf", offset=4096)
    assert str(e.value) == "model.gguf at byte 4096: Q8_0 tensor of shape (2, 32) takes 68 bytes, got 10"
    with pytest.raises(FormatError, match="takes 144 bytes, got 288"):
        gqt.dequantize_torch(torch.zeros(288, dtype=torch.uint8), "Q4_K", (256,))


def test_row_not_whole_blocks_and_negative_dims():
    with pytest.raises(FormatError, match=r"Q4_0 tensor of shape \(2, 48\): last dimension is not a multiple "
                                          r"of the block size 32"):
        gq.dequantize(np.zeros(54, np.uint8), "Q4_0", (2, 48))
    with pytest.raises(FormatError, match="negative dimension"):
        gq.dequantize(np.zeros(0, np.uint8), "Q4_0", (-1, 32))


def test_unknown_and_undequantizable_types():
    with pytest.raises(UnsupportedError, match=r"^unknown GGUF tensor type 'Q9_9' \(known: F32, F16"):
        gq.dequantize(np.zeros(4, np.uint8), "Q9_9", (1,))
    with pytest.raises(UnsupportedError, match=r"^m\.gguf at byte 64: unknown GGUF tensor type 'Q3_0'"):
        gqt.dequantize_torch(torch.zeros(4, dtype=torch.uint8), "Q3_0", (1,), path="m.gguf", offset=64)
    with pytest.raises(UnsupportedError, match="Q8_1 tensors cannot be dequantized"):
        gq.dequantize(np.zeros(40, np.uint8), "Q8_1", (32,))
    with pytest.raises(UnsupportedError, match="float32, float16 or bfloat16, not torch.int8"):
        gqt.dequantize_torch(torch.zeros(34, dtype=torch.uint8), "Q8_0", (32,), dtype=torch.int8)


# ---------------------------------------------------------------------------------------------------
# Quantization.

QUANT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def quant_inputs() -> np.ndarray:
    rows = RNG.standard_normal((6, 256)).astype(np.float32)
    rows[1] = 0.0  # all-zero blocks: scale 0
    rows[2] = np.round(rows[2] * 8) / 8  # exact ties for the rounding
    rows[3, :32] = 7.0  # a constant block: max == min
    rows[4] *= 1e-30  # subnormal-range products
    rows[5, ::7] = np.resize(np.array([np.inf, -np.inf, np.nan, 1e38, -1e38], np.float32), 37)
    return rows


@pytest.mark.parametrize("name", QUANT_TYPES)
def test_quantize_bit_exact(name):
    data = quant_inputs()
    got = gq.quantize(data, name)
    want = ref.quantize(data, Q[name])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want.view(np.uint8).reshape(got.shape))
    finite = data[:5]
    round_trip = gq.dequantize(gq.quantize(finite, name).reshape(-1), name, finite.shape)
    assert_bits(round_trip, ref.dequantize(ref.quantize(finite, Q[name]), Q[name]).reshape(finite.shape), name)


def test_quantize_errors():
    with pytest.raises(UnsupportedError, match="cannot quantize to 'Q4_K'; supported: F32, F16, BF16, Q8_0"):
        gq.quantize(np.zeros(256, np.float32), "Q4_K")
    with pytest.raises(UnsupportedError, match=r"rows of 30 values cannot be stored as Q8_0 \(blocks of 32\)"):
        gq.quantize(np.zeros((2, 30), np.float32), Q.Q8_0)


def test_quantize_keeps_leading_dims():
    data = RNG.standard_normal((2, 3, 64)).astype(np.float32)
    assert gq.quantize(data, "Q4_0").shape == (2, 3, 36)
    assert gq.quantize(data, "BF16").shape == (2, 3, 128)
    assert math.prod(gq.quantize(data, "F32").shape) == data.nbytes
