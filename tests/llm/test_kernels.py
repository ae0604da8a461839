"""Quantized matmul kernels against gguf-py's dequantization and a float64 matmul.

Every expected value is gguf-py's ``gguf.quants.dequantize`` of the same bytes followed by a float64
matmul. Tolerances are derived per case (``_bound``): float32 accumulation over K terms bounds the
error by K * eps32 * sum|x||w|; operands rounded to float16/bfloat16 before a tensor-core dot add
eps(operand) * sum|x||w| each; rounding the result to the output dtype adds eps(out) * |y|.
"""

from __future__ import annotations

import json
import os
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

import kernels_interp  # noqa: E402
from kernels_data import EPS, EPS32, GT, KQUANT_TYPES, excess, make_raw, raw_tensor, reference_matrix  # noqa: E402


def _check(y: torch.Tensor, x: torch.Tensor, w64: np.ndarray, operand_eps: float = 0.0) -> None:
    worst = excess(y, x, w64, operand_eps)
    assert worst <= 0, f"error exceeds the derived bound by {worst:.3g}"


def _weight(qtype: str, rows: int, cols: int, seed: int = 0) -> tuple[QWeight, np.ndarray]:
    raw = make_raw(qtype, rows, cols, seed)
    return QWeight(qtype, (rows, cols), raw_tensor(raw, qtype)), reference_matrix(raw, qtype, rows, cols)


CPU_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", *KQUANT_TYPES]


@pytest.mark.parametrize("qtype", CPU_TYPES)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_qmatmul(qtype, xdtype):
    from tensorlogic.llm.kernels import cpu

    w, w64 = _weight(qtype, 48, 512)
    x = torch.randn(2, 3, 512, generator=torch.Generator().manual_seed(1)).to(xdtype)
    y = qmatmul(x, w)
    assert y.shape == (2, 3, 48) and y.dtype == xdtype
    int4 = xdtype == torch.bfloat16 and qtype in cpu.INT4_TYPES and cpu._have_int4_matmul()
    assert (w._int4 is not None) == int4  # bfloat16 x on Q4_0/Q4_K takes torch's int4 matmul
    # Its scales and offsets are bfloat16: each weight is rounded about as a bfloat16 operand would be.
    _check(y, x, w64, EPS[torch.bfloat16] if int4 else 0.0)


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


# ------------------------------------------------------------------------------------------------
# The Triton kernels under Triton's CPU interpreter (one subprocess runs every case).


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict[str, object]]:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "kernels_interp.py")], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(kernels_interp.cases()))
def test_triton_interpreted(interpreted, case):
    result = interpreted[case]
    assert "error" not in result, result.get("error")
    assert result["excess"] <= 0, f"error exceeds the derived bound by {result['excess']:.3g}"


# ------------------------------------------------------------------------------------------------
# CUDA at TinyLlama sizes (the lead's GPU run).

FUSED = ["Q4_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
CUDA_SHAPES = [(2048, 2048), (5632, 2048), (2048, 5632), (32000, 2048)]


@pytest.fixture(scope="module")
def cuda_weights():
    cache: dict[tuple[str, int, int], tuple[QWeight, torch.Tensor]] = {}

    def get(qtype: str, n: int, k: int) -> tuple[QWeight, torch.Tensor]:
        if (qtype, n, k) not in cache:
            raw = make_raw(qtype, n, k, seed=n + k)
            w = QWeight(qtype, (n, k), raw_tensor(raw, qtype).cuda())
            cache[qtype, n, k] = w, torch.from_numpy(reference_matrix(raw, qtype, n, k)).cuda()
        return cache[qtype, n, k]

    return get


def _excess_cuda(y: torch.Tensor, x: torch.Tensor, w64: torch.Tensor, operand_eps: float) -> float:
    """``kernels_data.excess`` on the GPU in float64 (the reference matmuls are too big for the CPU)."""
    x64 = x.double().reshape(-1, x.shape[-1])
    ref = x64 @ w64.T
    bound = (x64.shape[1] * EPS32 + 2 * operand_eps) * (x64.abs() @ w64.abs().T) + EPS[y.dtype] * ref.abs()
    return float(((y.double().reshape(ref.shape) - ref).abs() - bound).max())


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("qtype", FUSED)
@pytest.mark.parametrize("rows", [1, 4, 16, 512])
def test_cuda_qmatmul(qtype, shape, rows, cuda_weights, monkeypatch):
    # cuBLAS may otherwise reduce float16 products in float16 on the prefill path.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction", False)
    w, w64 = cuda_weights(qtype, *shape)
    x = torch.randn(rows, shape[1], device="cuda", generator=torch.Generator("cuda").manual_seed(rows))
    x = x.half()
    y = qmatmul(x, w)
    # The GEMV keeps the weights in float32; the GEMM and cuBLAS paths round them to float16 for the dot.
    operand_eps = 0.0 if rows <= 8 else EPS[torch.float16]
    assert _excess_cuda(y, x, w64, operand_eps) <= 0


@pytest.mark.cuda
@pytest.mark.parametrize("xdtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("qtype", ["Q4_0", "Q6_K"])
def test_cuda_qmatmul_dtypes(qtype, xdtype, cuda_weights):
    w, w64 = cuda_weights(qtype, 2048, 2048)
    for rows in (3, 40):
        x = torch.randn(rows, 2048, device="cuda").to(xdtype)
        operand_eps = 0.0 if rows <= 8 or xdtype == torch.float32 else EPS[xdtype]
        assert _excess_cuda(qmatmul(x, w), x, w64, operand_eps) <= 0


@pytest.mark.cuda
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q6_K"])
def test_cuda_silu_mul(qtype, cuda_weights):
    w, w64 = cuda_weights(qtype, 2048, 5632)
    for rows in (1, 4, 64):
        x = torch.randn(rows, 2 * 5632, device="cuda", dtype=torch.float16)
        y = qmatmul_silu_mul(x, w)
        g, u = x[:, :5632].double(), x[:, 5632:].double()
        act = g * torch.sigmoid(g) * u
        # Fused (<= 8 rows): silu in float32. Otherwise torch's float16 silu and product, then float16 dots.
        operand_eps = 8 * EPS32 if rows <= 8 else 3 * EPS[torch.float16]
        assert _excess_cuda(y, act, w64, operand_eps) <= 0


@pytest.mark.cuda
@pytest.mark.parametrize("qtype", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_dequantize(qtype, dtype, cuda_weights):
    w, w64 = cuda_weights(qtype, 5632, 2048)
    assert w.packed
    bound = (EPS[dtype] + EPS32) * w64.abs()
    # From GGUF bytes (the public function) and from the weight's device layout.
    for got in (dequantize_cuda(w.gguf_bytes(), qtype, w.shape, dtype), w.dequantize(dtype)):
        assert float(((got.double() - w64).abs() - bound).max()) <= 0
    ids = torch.tensor([[5, 0], [5631, 17]], device="cuda")
    np.testing.assert_array_equal(qembedding(w, ids, torch.float32).cpu().numpy(),
                                  w64[ids].float().cpu().numpy())


@pytest.mark.cuda
def test_cuda_graph_capture():
    raw = make_raw("Q4_K", 2048, 5632, seed=9)
    w = QWeight("Q4_K", (2048, 5632), raw_tensor(raw, "Q4_K").cuda())
    x = torch.randn(1, 5632, device="cuda", dtype=torch.float16)
    gu = torch.randn(1, 2 * 5632, device="cuda", dtype=torch.float16)
    out = torch.empty(1, 2048, device="cuda", dtype=torch.float16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compile the kernels before capture
        qmatmul(x, w, out=out)
        qmatmul_silu_mul(gu, w)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        qmatmul(x, w, out=out)
        act_out = qmatmul_silu_mul(gu, w)
    x.copy_(torch.randn_like(x))
    gu.copy_(torch.randn_like(gu))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, qmatmul(x, w))
    assert torch.equal(act_out, qmatmul_silu_mul(gu, w))


@pytest.mark.cuda
def test_cuda_gemv_allocates_only_its_output():
    raw = make_raw("Q4_0", 32000, 2048, seed=10)
    w = QWeight("Q4_0", (32000, 2048), raw_tensor(raw, "Q4_0").cuda())
    assert w.nbytes == 32000 * 2048 // 32 * 18
    x = torch.randn(4, 2048, device="cuda", dtype=torch.float16)
    out = torch.empty(4, 32000, device="cuda", dtype=torch.float16)
    qmatmul(x, w, out=out)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    qmatmul(x, w, out=out)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() == before
