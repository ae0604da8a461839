"""The GGUF transformer against Hugging Face transformers reading the same file.

transformers dequantizes the GGUF with gguf-py and runs its own Llama/Qwen2/Phi3 code, so agreement checks the
weight layout (permuted Llama Q/K rows, fused Phi-3 tensors, Qwen2 biases), RoPE, GQA, the KV cache and the
quantized matmuls at once.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from tensorlogic.errors import FormatError, InputError, TensorLogicError, UnsupportedError
from tensorlogic.llm import load_llm

from .fixtures import Shape, write_llm_gguf

transformers = pytest.importorskip("transformers")

PROMPT = [1, 50, 300, 999, 20, 7, 4000, 31999, 12, 345, 2048]

CASES = [
    ("llama", "F16"),
    ("llama", "Q8_0"),
    ("llama", "Q4_0"),
    ("llama", "Q4_K"),
    ("llama", "Q6_K"),
    ("qwen2", "F16"),
    ("qwen2", "Q4_0"),
    ("qwen2", "Q5_K"),
    ("phi3", "F16"),
    ("phi3", "Q8_0"),
    ("llama", "Q4_K_M"),
    ("mistral", "Q4_0"),
]

# Q4_K_M as llama.cpp mixes it (attn_v and ffn_down in Q6_K), plus ffn_up in Q5_K so gate and up differ too.
_MIXES = {"Q4_K_M": ("Q4_K", {"attn_v.weight": "Q6_K", "ffn_down.weight": "Q6_K", "ffn_up.weight": "Q5_K"})}


@functools.cache
def _model_file(tmp_root: str, arch: str, qtype: str) -> Path:
    folder = Path(tmp_root) / f"{arch}-{qtype}"
    folder.mkdir(parents=True, exist_ok=True)
    base, mixed = _MIXES.get(qtype, (qtype, None))
    return write_llm_gguf(folder / "model.gguf", arch, base, mixed=mixed)


@functools.cache
def _reference(path: Path) -> torch.nn.Module:
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    if path.parent.name.startswith("mistral-"):
        # transformers reads a Mistral GGUF (architecture "llama") as Mistral only with gguf-py's "mistral" tensor
        # map, which gguf-py 0.19 lacks: the weights it read go into its MistralForCausalLM instead.
        fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings")
        config = transformers.MistralConfig(**{f: getattr(hf.config, f) for f in fields},
                                            rope_theta=hf.config.rope_parameters["rope_theta"], sliding_window=None)
        mistral = transformers.MistralForCausalLM(config)
        mistral.load_state_dict(hf.state_dict())
        hf = mistral
    return hf.eval()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("llm-models"))


def _prompt(n_vocab: int) -> list[int]:
    return [i % n_vocab for i in PROMPT]


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.mark.parametrize(("arch", "qtype"), CASES)
def test_logits_and_greedy_match_transformers(root: str, arch: str, qtype: str) -> None:
    path = _model_file(root, arch, qtype)
    hf = _reference(path)
    assert hf.config.model_type == arch
    llm = load_llm(path, device="cpu", dtype="f32")
    ids = _prompt(llm.config.n_vocab)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    assert _rel_err(llm.logits(ids), ref) < 1e-4
    ours = llm.generate(ids, 32, temperature=0, ignore_eos=True)
    theirs = hf.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32, do_sample=False)
    assert ours.tokens == theirs[0, len(ids) :].tolist()
    assert ours.finish_reason == "length"


@pytest.mark.parametrize(("dtype", "qtype"), [("f16", "Q4_0"), ("bf16", "Q4_0"), ("bf16", "Q4_K_M"), ("f16", "F16")])
def test_half_precision_logits_within_1e_2(root: str, dtype: str, qtype: str) -> None:
    path = _model_file(root, "llama", qtype)
    llm = load_llm(path, device="cpu", dtype=dtype)
    ids = _prompt(llm.config.n_vocab)
    with torch.no_grad():
        ref = _reference(path)(torch.tensor([ids])).logits[0]
    tol = 1e-2 if dtype == "f16" else 3e-2  # bf16 keeps 8 bits of mantissa against f16's 11
    assert _rel_err(llm.logits(ids), ref) < tol


@pytest.mark.cuda
@pytest.mark.parametrize(("arch", "qtype"), [("llama", "Q4_K_M"), ("llama", "F16"), ("qwen2", "Q4_0"),
                                             ("phi3", "Q8_0"), ("llama", "Q6_K")])
def test_cuda_graph_decode_logits_match_transformers(root: str, arch: str, qtype: str) -> None:
    """The CUDA path end to end: an f16 prefill through its CUDA graph (250 tokens padded to the 256 bucket),
    then one decode step per token through the decode graphs, the Triton RoPE, attention and GEMV kernels,
    across an attention-span bucket boundary (256)."""
    path = _model_file(root, arch, qtype)
    llm = load_llm(path, device="cuda", dtype="f16")
    n = llm.config.n_vocab
    ids = [(i * 7919 + 13) % n for i in range(300)]
    model = llm.model
    prefix = 250
    steps = [model.prefill(torch.tensor([ids[:prefix]], device="cuda")).float().cpu()]
    for pos in range(prefix, len(ids)):
        steps.append(model.decode(torch.tensor([[ids[pos]]], device="cuda"), pos).float().cpu())
    ours = torch.cat(steps)
    with torch.no_grad():
        ref = _reference(path)(torch.tensor([ids])).logits[0, prefix - 1 :]
    assert ours.shape == ref.shape
    # The bound, or twice what transformers itself loses in f16 on the same sequence where f16 noise
    # alone exceeds it.
    hf16 = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float16).eval().cuda()
    with torch.no_grad():
        noise = _rel_err(hf16(torch.tensor([ids], device="cuda")).logits[0, prefix - 1 :].float().cpu(), ref)
    assert _rel_err(ours, ref) < max(1e-2, 2 * noise)
    # Greedy generation (each step queued before the last token reaches the host): every token is one that
    # transformers ranks first, up to f16 rounding of near-ties.
    prompt = ids[:20]
    gen = llm.generate(prompt, 24, temperature=0, ignore_eos=True)
    with torch.no_grad():
        hf_logits = _reference(path)(torch.tensor([prompt + gen.tokens])).logits[0, len(prompt) - 1 : -1]
    chosen = hf_logits.gather(1, torch.tensor(gen.tokens)[:, None])[:, 0]
    assert len(gen.tokens) == 24
    assert (hf_logits.max(-1).values - chosen <= 1e-2 * hf_logits.abs().max()).all()


def test_prefill_buckets_pad_by_at_most_half_and_stop_at_the_context() -> None:
    from tensorlogic.llm.model import PREFILL_BUCKETS, prefill_bucket

    assert all(b < c <= 1.5 * b for b, c in zip(PREFILL_BUCKETS, PREFILL_BUCKETS[1:]))
    for t in range(2, 2049):
        length = prefill_bucket(t, 2048)
        assert length is not None and t <= length <= max(16, 1.5 * t)
    assert prefill_bucket(250, 2048) == 256 and prefill_bucket(257, 2048) == 384
    assert prefill_bucket(2049, 4096) is None  # longer prompts run eagerly
    assert prefill_bucket(290, 300) is None  # no bucket fits the context: eagerly too


def test_batch_logits_pad_on_the_right(root: str) -> None:
    path = _model_file(root, "qwen2", "F16")
    llm = load_llm(path, device="cpu", dtype="f32")
    a, b = _prompt(llm.config.n_vocab), [5, 6, 7]
    out = llm.logits([a, b])
    hf = _reference(path)
    with torch.no_grad():
        ref_b = hf(torch.tensor([b])).logits[0]
    assert out.shape == (2, len(a), llm.config.n_vocab)
    assert _rel_err(out[1, :3], ref_b) < 1e-4
    assert torch.isnan(out[1, 3:]).all()


def test_next_prompt_reuses_the_cached_prefix(root: str) -> None:
    path = _model_file(root, "llama", "Q8_0")
    llm = load_llm(path, device="cpu", dtype="f32")
    ids = _prompt(llm.config.n_vocab)
    first = llm.generate(ids, 8, temperature=0, ignore_eos=True)
    follow = ids + first.tokens[:4] + [77, 78]
    continued = llm.generate(follow, 8, temperature=0, ignore_eos=True)
    llm.reset()
    fresh = llm.generate(follow, 8, temperature=0, ignore_eos=True)
    assert continued.tokens == fresh.tokens


def test_seeded_sampling_is_reproducible_and_varies_by_seed(root: str) -> None:
    llm = load_llm(_model_file(root, "llama", "F16"), device="cpu")
    ids = _prompt(llm.config.n_vocab)
    a = llm.generate(ids, 16, temperature=1.5, top_k=0, top_p=1.0, seed=1, ignore_eos=True).tokens
    b = llm.generate(ids, 16, temperature=1.5, top_k=0, top_p=1.0, seed=1, ignore_eos=True).tokens
    c = llm.generate(ids, 16, temperature=1.5, top_k=0, top_p=1.0, seed=2, ignore_eos=True).tokens
    assert a == b and a != c


def test_text_generation_streams_the_same_text(root: str) -> None:
    llm = load_llm(_model_file(root, "llama", "Q4_0"), device="cpu")
    whole = llm.generate("Hello world, this is", 24, temperature=0, ignore_eos=True)
    pieces = list(llm.generate("Hello world, this is", 24, temperature=0, ignore_eos=True, stream=True))
    assert "".join(pieces) == whole.text
    assert whole.text == llm.tokenizer.decode(whole.tokens)


def test_stop_string_ends_the_reply_before_it(root: str) -> None:
    llm = load_llm(_model_file(root, "llama", "Q4_0"), device="cpu")
    full = llm.generate("Hello world", 24, temperature=0, ignore_eos=True).text
    assert len(full) > 6
    stop = full[3:6]
    cut = llm.generate("Hello world", 24, temperature=0, ignore_eos=True, stop=[stop])
    assert cut.text == full[: full.find(stop)]
    assert cut.finish_reason == "stop"
    streamed = "".join(llm.generate("Hello world", 24, temperature=0, ignore_eos=True, stop=stop, stream=True))
    assert streamed == cut.text


def test_chat_renders_the_gguf_template_like_transformers(root: str) -> None:
    path = _model_file(root, "llama", "F16")
    llm = load_llm(path, device="cpu")
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there!"}]
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert llm.render_chat(messages) == expected
    reply = llm.chat(messages, 12, temperature=0)
    assert reply.tokens and reply.prompt_tokens == len(llm.chat_ids(messages))


def test_model_api_on_a_gguf(root: str) -> None:
    import tensorlogic as tl

    path = _model_file(root, "phi3", "F16")
    m = tl.load_model(path, device="cpu")
    ids = m.tokenizer.encode("Hello world")
    out = m.generate(ids, 5, temperature=0, ignore_eos=True)
    assert len(out.tokens) == 5
    with torch.no_grad():
        ref = _reference(path)(torch.tensor([ids])).logits[0]
    assert _rel_err(m.logits(ids), ref) < 1e-4


def test_quantized_weights_stay_quantized_in_memory(root: str) -> None:
    path = _model_file(root, "llama", "Q4_0")
    llm = load_llm(path, device="cpu")
    from gguf import GGUFReader

    stored = sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors if len(t.shape) == 2)
    assert llm.model.weight_bytes == stored


# --- bad input ------------------------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_unknown_architecture_is_named(tmp_path: Path) -> None:
    path = write_llm_gguf(tmp_path / "m.gguf", "falcon", "F16", Shape(n_layer=1))
    with pytest.raises(UnsupportedError) as err:
        load_llm(path, device="cpu")
    assert "'falcon'" in _one_line(err) and "llama" in str(err.value)


def test_mismatched_tensor_shape_is_named(tmp_path: Path) -> None:
    path = write_llm_gguf(
        tmp_path / "m.gguf", "llama", "F16", Shape(n_layer=1), reshape={"blk.0.attn_k.weight": (64, 256)}
    )
    with pytest.raises(FormatError) as err:
        load_llm(path, device="cpu")
    assert "blk.0.attn_k.weight" in _one_line(err) and "[64, 256]" in str(err.value)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    path = write_llm_gguf(tmp_path / "m.gguf", "llama", "F16", Shape(n_layer=1), drop=("blk.0.ffn_down.weight",))
    with pytest.raises(FormatError) as err:
        load_llm(path, device="cpu")
    assert "blk.0.ffn_down.weight" in _one_line(err)


def test_gguf_without_tokenizer_metadata(tmp_path: Path) -> None:
    path = write_llm_gguf(tmp_path / "m.gguf", "llama", "F16", Shape(n_layer=1), tokenizer_kv={})
    with pytest.raises(TensorLogicError) as err:
        load_llm(path, device="cpu")
    assert "tokenizer" in _one_line(err)


def test_context_longer_than_the_model(root: str) -> None:
    llm = load_llm(_model_file(root, "llama", "F16"), device="cpu")
    with pytest.raises(InputError) as err:
        llm.generate(list(range(3, 500)), 100)
    assert "512" in _one_line(err)
    with pytest.raises(InputError) as err:
        llm.logits(list(range(3, 600)))
    assert "597" in _one_line(err)
    with pytest.raises(InputError) as err:  # a prompt alone longer than the context (the prefill's check)
        llm.generate(list(range(3, 600)), 1)
    assert "597" in _one_line(err) and "512" in _one_line(err)
    with pytest.raises(InputError) as err:
        load_llm(_model_file(root, "llama", "F16"), device="cpu", n_ctx=4096)
    assert "4096" in _one_line(err)


def test_token_ids_outside_the_vocabulary(root: str) -> None:
    llm = load_llm(_model_file(root, "qwen2", "F16"), device="cpu")
    with pytest.raises(InputError) as err:
        llm.generate([1, 99999], 4)
    assert "99999" in _one_line(err)
