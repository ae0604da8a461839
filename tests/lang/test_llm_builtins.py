"""The language's LLM builtins on GGUF files, against independent references: the ``tokenizers`` library on the
same tokenizer.json, gguf-py's reader and dequantizer on the same model file, and a float64 torch forward pass
written here. The model is small (2 layers, hidden 64) but laid out like TinyLlama (GQA, SwiGLU, RoPE)."""

from __future__ import annotations

import importlib.util
import io
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from llm.vocab import spm_vocab_kv, write_tokenizer_json
from tensorlogic.errors import ScriptError
from tensorlogic.lang.evaluator import ScriptInterpreter
from tensorlogic.lang.values import Context

ROOT = Path(__file__).resolve().parents[2]
N_VOCAB = 1000
SHAPE = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 128, "vocab": N_VOCAB, "ctx": 256}
TEXTS = ["Hello world", "the quick brown fox, jumps!", "line one\nline two\ttab", "  spaced  out ", "ünïcödé 日本",
         "<|user|>\nHi</s>\n<|assistant|>\n", ""]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


llm_home = _tool("llm_home")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("llm")
    kv = spm_vocab_kv(N_VOCAB)
    return {
        "json": write_tokenizer_json(d / "tok" / "tokenizer.json", kv),
        "q4_0": llm_home.write_model(d / "small-q4_0.gguf", "q4_0", SHAPE, kv, seed=1),
        "f16": llm_home.write_model(d / "small-f16.gguf", "f16", SHAPE, kv, seed=2),
        "dir": d,
    }


def run(src: str, base: Path, **variables) -> tuple[ScriptInterpreter, str]:
    out = io.StringIO()
    interp = ScriptInterpreter(Context(base_dir=base, device="cpu", out=out, err=io.StringIO()))
    interp.globals.vars.update(variables)
    interp.run(textwrap.dedent(src), "t.tl")
    return interp, out.getvalue()


def script_error(src: str, base: Path, **variables) -> str:
    with pytest.raises(ScriptError) as info:
        run(src, base, **variables)
    return info.value.message


def reference_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the file as float64, read and dequantized by gguf-py."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    return out


def hf_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


# ---------------------------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("add_special", [True, False])
def test_tokenize_matches_the_tokenizers_library(files, add_special):
    hf = hf_tokenizer(files["json"])
    flag = "true" if add_special else "false"
    interp, out = run('let tok = load_tokenizer("tok/tokenizer.json")', files["dir"])
    assert out == "Loaded tokenizer from: tok/tokenizer.json\n"
    for text in TEXTS:
        want = hf.encode(text, add_special_tokens=add_special).ids
        interp.globals.vars["text"] = text
        interp.run(f"let a = tokenize(tok, text, {flag})\nlet b = tok.tokenize(text, {flag})", "t.tl")
        assert interp.globals.vars["a"] == want, text
        assert interp.globals.vars["b"] == want, text


def test_the_gguf_vocabulary_tokenizes_like_the_json(files):
    hf = hf_tokenizer(files["json"])
    interp, _ = run('let tok = load_tokenizer("small-q4_0.gguf")', files["dir"])
    for text in TEXTS:
        interp.globals.vars["text"] = text
        interp.run("let ids = tokenize(tok, text, true)", "t.tl")
        assert interp.globals.vars["ids"] == hf.encode(text, add_special_tokens=True).ids, text


def test_detokenize_family_matches_the_tokenizers_library(files):
    hf = hf_tokenizer(files["json"])
    ids = hf.encode("Hello world, ünïcödé!", add_special_tokens=True).ids + [2]
    interp, _ = run(
        """
        let tok = load_tokenizer("tok/tokenizer.json")
        let keep = detokenize(tok, ids, false)
        let skip = tok.detokenize(ids, true)
        let all = detokenize_incremental(tok, ids)
        let one = detokenize_single(tok, ids[1], false)
        let bos = detokenize_single(tok, 1, true)
        let single = int_to_tokenids(ids[1])
        """,
        files["dir"],
        ids=ids,
    )
    v = interp.globals.vars
    assert v["keep"] == hf.decode(ids, skip_special_tokens=False)
    assert v["skip"] == hf.decode(ids, skip_special_tokens=True)
    assert v["all"] == hf.decode(ids, skip_special_tokens=False)
    assert v["one"] == hf.decode([ids[1]], skip_special_tokens=False)
    assert v["bos"] == hf.decode([1], skip_special_tokens=True)
    assert v["single"] == [ids[1]]


def test_tokenizer_errors_are_one_line(files, tmp_path):
    (tmp_path / "notes.txt").write_text("not a tokenizer\n")
    vocab_less = tmp_path / "weights.gguf"
    llm_home.write_model(vocab_less, "f16", {**SHAPE, "layers": 1}, {}, seed=0)
    cases = [
        ('load_tokenizer("missing.json")', "missing.json"),
        ('load_tokenizer("notes.txt")', "neither a GGUF file nor a tokenizer.json"),
        ('load_tokenizer("weights.gguf")', "tokenizer.ggml.tokens"),
        ('tokenize("tok", "hi", true)', "takes a tokenizer first"),
    ]
    for src, part in cases:
        msg = script_error(src, tmp_path)
        assert part in msg and "\n" not in msg, (src, msg)
    msg = script_error("let t = load_tokenizer(p)\nlet s = detokenize(t, [5, 99999], false)", tmp_path,
                       p=str(files["json"]))
    assert "99999" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("kind", ["q4_0", "f16"])
def test_get_tensor_and_paths_match_gguf_py(files, kind):
    ref = reference_weights(files[kind])
    interp, out = run(
        f"""
        let m = load_model("small-{kind}.gguf")
        let emb = get_tensor(m, "token_embd.weight")
        let wk = m.blk[1].attn_k.weight
        let wk2 = m.get_tensor("blk.1.attn_k.weight")
        let norm = m.output_norm.weight
        let out_w = m.output.weight
        let m32 = load_model_f32("small-{kind}.gguf")
        let up32 = m32.blk[0].ffn_up.weight
        let i = 1
        let down32 = m32.blk[i].ffn_down.weight
        """,
        files["dir"],
    )
    v = interp.globals.vars
    assert out == f"Loaded model from: small-{kind}.gguf (f32, lazy)\n  Weights available: {len(ref)}\n"
    for var, name in [("emb", "token_embd.weight"), ("wk", "blk.1.attn_k.weight"), ("wk2", "blk.1.attn_k.weight"),
                      ("norm", "output_norm.weight"), ("out_w", "output.weight")]:
        t = v[var]
        assert t.dtype == torch.float16 and tuple(t.shape) == ref[name].shape
        np.testing.assert_array_equal(t.numpy(), ref[name].astype(np.float16))
    for var, name in [("up32", "blk.0.ffn_up.weight"), ("down32", "blk.1.ffn_down.weight")]:
        assert v[var].dtype == torch.float32
        np.testing.assert_array_equal(v[var].numpy(), ref[name].astype(np.float32))


def test_models_load_lazily_and_keep_what_they_read(files):
    interp, _ = run('let m = load_model("small-q4_0.gguf")', files["dir"])
    m = interp.globals.vars["m"]
    reads: list[str] = []
    original = m.file.read_torch

    def counting(name, *args, **kwargs):
        reads.append(name)
        return original(name, *args, **kwargs)

    m.file.read_torch = counting
    assert not m._kept
    interp.run("let a = m.blk[0].attn_q.weight\nlet b = get_tensor(m, \"blk.0.attn_q.weight\")", "t.tl")
    assert reads == ["blk.0.attn_q.weight"]
    assert interp.globals.vars["a"] is interp.globals.vars["b"]


def test_weight_caches_print_like_the_original_and_evict(files):
    interp, out = run(
        """
        let c = load_weight_cache_gguf_f16("small-q4_0.gguf", 2)
        let a = get_tensor(c, "blk.0.attn_q.weight")
        let b = get_tensor(c, "blk.0.attn_k.weight")
        let d = c.blk[1].attn_v.weight
        let f = load_model_f16("small-f16.gguf")
        """,
        files["dir"],
    )
    n = 3 + 9 * SHAPE["layers"]
    assert out.splitlines() == [
        "Created GGUF weight cache for: small-q4_0.gguf (f16, capacity=2)",
        f"  Weights available: {n}",
        "Created mmap loader for: small-f16.gguf",
        f"  Tensors: {n}",
        "  Version: 3",
        "Loaded model as f16 (mmap zero-copy)",
    ]
    kept = [k[0] for k in interp.globals.vars["c"]._kept]
    assert kept == ["blk.0.attn_k.weight", "blk.1.attn_v.weight"]
    assert interp.globals.vars["f"].file.format == "GGUF"


def test_bad_model_paths_are_one_line(files):
    cases = [
        ('load_model("missing.gguf")', "missing.gguf"),
        ('let m = load_model("small-q4_0.gguf")\nlet w = m.blk[0].attn_qq.weight',
         "model.blk[0].attn_qq: no tensor 'blk.0.attn_qq' in small-q4_0.gguf; the closest tensor is 'blk.0.attn_q"),
        ('let m = load_model("small-q4_0.gguf")\nlet w = m.blk[7].attn_q.weight', "model.blk[7]: no tensor 'blk.7'"),
        ('let m = load_model("small-q4_0.gguf")\nlet w = m.token_embd.bias', "no tensor 'token_embd.bias'"),
        ('let m = load_model("small-q4_0.gguf")\nlet w = get_tensor(m, "blk.0.attn_q")', "blk.0.attn_q.weight"),
        ('load_weight_cache_gguf_f16("small-q4_0.gguf", 0)', "cache_capacity must be at least 1"),
    ]
    for src, part in cases:
        msg = script_error(src, files["dir"])
        assert part in msg and "\n" not in msg, (src, msg)


# ---------------------------------------------------------------------------------------------- forward pass

FORWARD_TL = """
fn silu(x) { x * sigmoid(x) }

fn attention(Q, K, V, W_o, seq_len) {
    let Qh = rope(reshape(Q, [seq_len, 4, 16]))
    let Kh = rope(reshape(K, [seq_len, 2, 16]))
    let Vh = reshape(V, [seq_len, 2, 16])
    // GQA: each of the 2 KV heads serves 2 query heads
    let Ke = reshape(broadcast_to(reshape(Kh, [seq_len, 2, 1, 16]), [seq_len, 2, 2, 16]), [seq_len, 4, 16])
    let Ve = reshape(broadcast_to(reshape(Vh, [seq_len, 2, 1, 16]), [seq_len, 2, 2, 16]), [seq_len, 4, 16])
    let scores = einsum("ihd,jhd->ihj", Qh, Ke) * 0.25
    let mask = broadcast_to(reshape(causal_mask(seq_len), [seq_len, 1, seq_len]), [seq_len, 4, seq_len])
    let weights = softmax(apply_attention_mask(scores, mask), 2)
    let out = einsum("ihj,jhd->ihd", weights, Ve)
    linear(reshape(out, [seq_len, 64]), W_o)
}

fn forward(model, tokens) {
    let x = embedding(model.token_embd.weight, tokens)
    let seq_len = len(tokens)
    for layer_idx in range_i(2) {
        let h = rms_norm(x, model.blk[layer_idx].attn_norm.weight)
        let Q = linear(h, model.blk[layer_idx].attn_q.weight)
        let K = linear(h, model.blk[layer_idx].attn_k.weight)
        let V = linear(h, model.blk[layer_idx].attn_v.weight)
        x = x + attention(Q, K, V, model.blk[layer_idx].attn_output.weight, seq_len)
        let h2 = rms_norm(x, model.blk[layer_idx].ffn_norm.weight)
        let gate = silu(linear(h2, model.blk[layer_idx].ffn_gate.weight))
        let up = linear(h2, model.blk[layer_idx].ffn_up.weight)
        x = x + linear(gate * up, model.blk[layer_idx].ffn_down.weight)
    }
    linear(rms_norm(x, model.output_norm.weight), model.output.weight)
}

let logits = forward(load_model_f32("small-q4_0.gguf"), tokens)
"""


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor) -> torch.Tensor:
    """Adjacent pairs (2k, 2k+1) of [seq, heads, dim] rotated by pos * 10000^(-2k/dim) (llama.cpp's normal mode)."""
    seq, _, dim = x.shape
    pos = torch.arange(seq, dtype=torch.float64)[:, None]
    angle = pos * 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)[None, :]
    cos, sin = torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def reference_logits(w: dict[str, np.ndarray], ids: list[int], eps: float) -> torch.Tensor:
    """Llama forward in float64: [seq, vocab] logits."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    heads, kv_heads, hd = SHAPE["heads"], SHAPE["kv_heads"], SHAPE["hidden"] // SHAPE["heads"]
    n = len(ids)
    x = t["token_embd.weight"][ids]
    causal = torch.triu(torch.full((n, n), float("-inf"), dtype=torch.float64), 1)
    for i in range(SHAPE["layers"]):
        p = f"blk.{i}."
        h = _rms(x, t[p + "attn_norm.weight"], eps)
        q = _rope((h @ t[p + "attn_q.weight"].T).reshape(n, heads, hd))
        k = _rope((h @ t[p + "attn_k.weight"].T).reshape(n, kv_heads, hd))
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, kv_heads, hd)
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("ihd,jhd->hij", q, k) / hd**0.5 + causal
        att = torch.einsum("hij,jhd->ihd", torch.softmax(scores, -1), v).reshape(n, -1)
        x = x + att @ t[p + "attn_output.weight"].T
        h = _rms(x, t[p + "ffn_norm.weight"], eps)
        gate = h @ t[p + "ffn_gate.weight"].T
        x = x + (torch.nn.functional.silu(gate) * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
    return _rms(x, t["output_norm.weight"], eps) @ t["output.weight"].T


def test_language_forward_matches_float64_torch(files):
    ids = hf_tokenizer(files["json"]).encode("the quick brown fox jumps over", add_special_tokens=True).ids
    interp, _ = run(FORWARD_TL, files["dir"], tokens=ids)
    got = interp.globals.vars["logits"]
    want = reference_logits(reference_weights(files["q4_0"]), ids, eps=1e-6)
    assert got.dtype == torch.float32 and tuple(got.shape) == (len(ids), N_VOCAB)
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-3, atol=1e-3)


def test_generate_is_greedy_decoding_of_the_model(files):
    hf = hf_tokenizer(files["json"])
    prompt = "Hello world"
    ids = hf.encode(prompt, add_special_tokens=True).ids
    weights = reference_weights(files["f16"])
    new: list[int] = []
    for _ in range(4):
        nxt = int(reference_logits(weights, ids + new, eps=1e-5)[-1].argmax())
        if nxt == 2:
            break
        new.append(nxt)
    interp, _ = run('let m = load_model("small-f16.gguf")\nlet reply = generate(m, "Hello world", 4, 0.0)',
                    files["dir"])
    assert interp.globals.vars["reply"] == hf.decode(new)


# ---------------------------------------------------------------------------------------------- corpus tool


def test_corpus_run_only_mode(tmp_path):
    oc = _tool("original_corpus")
    fake_tl = tmp_path / "tl"
    fake_tl.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "src = open(sys.argv[2]).read()\n"
        "if 'fail' in src: sys.exit('tl: error: t.tl:1:1: it failed')\n"
        "print(os.environ['HOME'])\n"
    )
    fake_tl.chmod(0o755)
    orig = tmp_path / "orig"
    (orig / "ex").mkdir(parents=True)
    (orig / "ex" / "good.tl").write_text('// once read "/Users/someone/m.gguf"\nprint(1)\n')
    (orig / "ex" / "boom.tl").write_text("fail\n")
    (orig / "ex" / "mac.tl").write_text('load_model("/Users/someone/.llm/m.gguf")\n')
    listing = tmp_path / "list.txt"
    listing.write_text("ex/good.tl\nex/boom.tl\nex/mac.tl\n")
    report = tmp_path / "report.md"
    argv = ["--orig", str(orig), "--list", str(listing), "--tl", str(fake_tl), "--run-only", "--home", str(tmp_path)]
    assert oc.main([*argv, "--report", str(report)]) == 1
    text = report.read_text()
    assert "1 passed, 1 failed" in text and "ABSPATH 1" in text
    assert "| `ex/boom.tl` | ERROR | tl: error: t.tl:1:1: it failed |" in text
    assert "| `ex/mac.tl` | ABSPATH |" in text
    run_ = oc.run_program(fake_tl, orig / "ex" / "good.tl", 30, home=tmp_path)
    assert run_.stdout.strip() == str(tmp_path)


def test_llm_home_vocabulary_spells_the_programs_words_as_one_token(tmp_path):
    kv = spm_vocab_kv(N_VOCAB)
    words = llm_home.with_words(kv)
    assert len(words["tokenizer.ggml.tokens"]) == len(kv["tokenizer.ggml.tokens"])
    assert {t for t in kv["tokenizer.ggml.tokens"] if len(t) == 1} <= set(words["tokenizer.ggml.tokens"])
    hf = hf_tokenizer(write_tokenizer_json(tmp_path / "tokenizer.json", words))
    for word in llm_home.SINGLE_TOKEN_WORDS:
        assert hf.encode(word, add_special_tokens=False).tokens == ["\u2581" + word]
    assert hf.decode(hf.encode("Hello world, test", add_special_tokens=False).ids) == "Hello world, test"


def test_cndl_gguf_functions_match_gguf_py_and_safetensors(files, tmp_path):
    import gguf
    from safetensors.numpy import load_file

    ref = reference_weights(files["q4_0"])
    ref16 = reference_weights(files["f16"])
    interp, out = run(
        f"""
        let q = cndl_load_gguf_tensor(q_path, "blk.0.attn_v.weight")
        let h = cndl_load_gguf_tensor(h_path, "blk.0.attn_v.weight")
        cndl_list_gguf_tensors(q_path)
        let m = load_model(h_path)
        cndl_save_model_safetensor(m, "{tmp_path / 'm.safetensors'}")
        let back = cndl_load_model_safetensor("{tmp_path / 'm.safetensors'}")
        let w = back.blk[1].ffn_up.weight
        """,
        files["dir"],
        q_path=str(files["q4_0"]),
        h_path=str(files["f16"]),
    )
    v = interp.globals.vars
    assert v["q"].dtype == torch.float32 and v["h"].dtype == torch.float16
    np.testing.assert_array_equal(v["q"].numpy(), ref["blk.0.attn_v.weight"].astype(np.float32))
    np.testing.assert_array_equal(v["h"].numpy(), ref16["blk.0.attn_v.weight"].astype(np.float16))
    reader = gguf.GGUFReader(str(files["q4_0"]))
    listed = [f"  - {t.name} : {t.tensor_type.name} [{', '.join(str(int(d)) for d in t.shape)}]"
              for t in reader.tensors]
    lines = out.splitlines()
    start = lines.index(f"Tensors in {files['q4_0']}:")
    assert lines[start + 1 : start + 4] == ["  GGUF version: 3", f"  Total: {len(listed)} tensors", ""]
    assert lines[start + 4 : start + 4 + len(listed)] == listed
    assert f"✓ Saved model to {tmp_path / 'm.safetensors'} ({len(ref16)} tensors)" in lines
    saved = load_file(str(tmp_path / "m.safetensors"))
    assert set(saved) == set(ref16)
    for name, arr in saved.items():
        assert arr.dtype == np.float16
        np.testing.assert_array_equal(arr, ref16[name].astype(np.float16))
    assert v["w"].dtype == torch.float16
    np.testing.assert_array_equal(v["w"].numpy(), ref16["blk.1.ffn_up.weight"].astype(np.float16))
