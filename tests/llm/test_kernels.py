"""Quantized matmul kernels against gguf-py's dequantization and a float64 matmul.

Every expected value is gguf-py's ``gguf.quants.dequantize`` of the same bytes followed by a float64
matmul. Tolerances are derived per case (``_bound``): float32 accumulation over K terms bounds the
error by K * eps32 * sum|x||w|; operands rounded to float16/bfloat16 before a tensor-core dot add
eps(operand) * sum|x||w| each; rounding the result to the output dtype adds eps(out) * |y|.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from tensorlogic.errors import FormatError, OpError, TensorLogicError, UnsupportedError
from tensorlogic.formats.detect import Detected
from tensorlogic.formats.gguf import open_gguf
from tensorlogic.llm.kernels import QWeight, dequantize_cuda, qembedding, qmatmul, qmatmul_silu_mul

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from kernels_data import GT, KQUANT_TYPES, make_raw, raw_tensor, reference_matrix  # noqa: E402

EPS = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
EPS32 = 2.0**-24


def _bound(x64: np.ndarray, w64: np.ndarray, out_dtype: torch.dtype, operand_eps: float = 0.0) -> np.ndarray:
    """Largest error a correct float32-accumulated x @ W.T may show, element by element."""
    k = x64.shape[-1]
    spread = np.abs(x64) @ np.abs(w64).T
    ref = np.abs(x64 @ w64.T)
    return (k * EPS32 + 2 * operand_eps) * spread + EPS[out_dtype] * ref + 1e-30


def _check(y: torch.Tensor, x: torch.Tensor, w64: np.ndarray, operand_eps: float = 0.0) -> None:
    x64 = x.double().cpu().numpy().reshape(-1, x.shape[-1])
    ref = x64 @ w64.T
    got = y.double().cpu().numpy().reshape(ref.shape)
    bound = _bound(x64, w64, y.dtype, operand_eps)
    worst = np.max(np.abs(got - ref) - bound)
    assert worst <= 0, f"error exceeds the bound by {worst:.3g} (max |y| {np.abs(ref).max():.3g})"


def _weight(qtype: str, rows: int, cols: int, seed: int = 0) -> tuple[QWeight, np.ndarray]:
    raw = make_raw(qtype, rows, cols, seed)
    return QWeight(qtype, (rows, cols), raw_tensor(raw, qtype)), reference_matrix(raw, qtype, rows, cols)


CPU_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", *KQUANT_TYPES]


@pytest.mark.parametrize("qtype", CPU_TYPES)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_qmatmul(qtype, xdtype):
    w, w64 = _weight(qtype, 48, 512)
    x = torch.randn(2, 3, 512, generator=torch.Generator().manual_seed(1)).to(xdtype)
    y = qmatmul(x, w)
    assert y.shape == (2, 3, 48) and y.dtype == xdtype
    _check(y, x, w64)


def test_cpu_qmatmul_chunks_rows(monkeypatch):
    """Rows are dequantized a chunk at a time; a chunk that does not divide out_features still covers all rows."""
    from tensorlogic.llm.kernels import cpu

    monkeypatch.setattr(cpu, "CHUNK_ELEMENTS", 7 * 256)
    seen = []
    real = cpu.rows_float32
    monkeypatch.setattr(cpu, "rows_float32", lambda w, a, b: seen.append(b - a) or real(w, a, b))
    w, w64 = _weight("Q4_K", 30, 256)
    x = torch.randn(5, 256, dtype=torch.float32)
    out = torch.empty(5, 30)
    y = qmatmul(x, w, out=out)
    assert y is out and max(seen) == 7 and sum(seen) == 30
    _check(y, x, w64)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q6_K", "F16"])
def test_cpu_silu_mul(qtype):
    w, w64 = _weight(qtype, 40, 256)
    x = torch.randn(3, 512, dtype=torch.float32, generator=torch.Generator().manual_seed(2))
    y = qmatmul_silu_mul(x, w)
    g, u = x[:, :256].double(), x[:, 256:].double()
    act = (g / (1 + torch.exp(-g)) * u).float()
    _check(y, act, w64)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q5_K", "BF16"])
def test_cpu_embedding(qtype):
    w, w64 = _weight(qtype, 20, 256)
    ids = torch.tensor([[3, 0, 19], [7, 7, 1]])
    got = qembedding(w, ids, torch.float32)
    assert got.shape == (2, 3, 256)
    np.testing.assert_array_equal(got.numpy(), w64[ids.numpy()].astype(np.float32))


def test_dequantize_and_cat():
    a, a64 = _weight("Q6_K", 8, 512, seed=3)
    b, b64 = _weight("Q6_K", 5, 512, seed=4)
    both = QWeight.cat([a, b])
    assert both.shape == (13, 512) and both.nbytes == a.nbytes + b.nbytes
    np.testing.assert_array_equal(both.dequantize(torch.float32).numpy(), np.concatenate([a64, b64]))
    with pytest.raises(UnsupportedError, match="Q4_0"):
        QWeight.cat([a, _weight("Q4_0", 4, 512)[0]])


def test_from_gguf(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    q4 = gguf.quants.quantize(rng.standard_normal((16, 64)).astype(np.float32), GT["Q4_0"])
    writer.add_tensor("blk.0.attn_q.weight", q4, raw_dtype=GT["Q4_0"])
    writer.add_tensor("blk.0.ffn_up.weight", rng.standard_normal((8, 32)).astype(np.float16))
    writer.add_tensor("output_norm.weight", rng.standard_normal(32).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    f = open_gguf(Detected("GGUF", "file", path))
    w = QWeight.from_gguf(f, "blk.0.attn_q.weight", "cpu")
    assert (w.qtype, w.shape, w.nbytes) == ("Q4_0", (16, 64), q4.nbytes)
    np.testing.assert_array_equal(w.dequantize(torch.float32).numpy(), gguf.quants.dequantize(q4, GT["Q4_0"]))
    h = QWeight.from_gguf(f, "blk.0.ffn_up.weight", "cpu")
    assert h.qtype == "F16" and h.raw.dtype == torch.float16 and h.shape == (8, 32)
    with pytest.raises(FormatError, match="output_norm.weight.*2-D"):
        QWeight.from_gguf(f, "output_norm.weight", "cpu")
    with pytest.raises(TensorLogicError, match="no tensor named 'missing'"):
        QWeight.from_gguf(f, "missing", "cpu")


def test_bad_inputs():
    w, _ = _weight("Q4_0", 8, 64)
    with pytest.raises(OpError, match="x has 32 features.*needs 64") as e:
        qmatmul(torch.zeros(2, 32), w)
    assert "\n" not in str(e.value)
    with pytest.raises(OpError, match="needs 128"):
        qmatmul_silu_mul(torch.zeros(2, 64), w)
    with pytest.raises(OpError, match="float16, bfloat16 or float32"):
        qmatmul(torch.zeros(2, 64, dtype=torch.float64), w)
    with pytest.raises(OpError, match="out must be"):
        qmatmul(torch.zeros(2, 64), w, out=torch.empty(2, 9))
    with pytest.raises(UnsupportedError, match="'Q9_9'"):
        QWeight("Q9_9", (8, 64), torch.zeros(8, 36, dtype=torch.uint8))
    with pytest.raises(UnsupportedError, match="Q8_1"):
        QWeight("Q8_1", (8, 64), torch.zeros(8, 80, dtype=torch.uint8))
    with pytest.raises(FormatError, match=r"needs raw uint8 \[8, 36\], got uint8 \[8, 35\]"):
        QWeight("Q4_0", (8, 64), torch.zeros(8, 35, dtype=torch.uint8))
    with pytest.raises(FormatError, match="not a multiple of the Q4_K block size 256"):
        QWeight("Q4_K", (8, 64), torch.zeros(8, 36, dtype=torch.uint8))
    with pytest.raises(UnsupportedError, match="IQ2_XXS"):
        dequantize_cuda(torch.zeros(66, dtype=torch.uint8), "IQ2_XXS", (256,))
    with pytest.raises(OpError, match="token id 8 is outside"):
        qembedding(w, torch.tensor([1, 8]), torch.float16)


def test_import_does_not_load_triton():
    code = "import sys, tensorlogic, tensorlogic.llm.kernels; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
