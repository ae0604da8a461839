"""Tokenizer tests: our GGUF tokenizers against Hugging Face's reading of the same GGUF file, and against the
``tokenizers`` library running the equivalent tokenizer.json.

Known deviation of the reference: transformers builds a GGUF "llama" vocabulary with a ``Metaspace``
pre-tokenizer (prepend_scheme "first"), which adds the ``▁`` prefix only when the text does not already start
with a space, and never after a special token. llama.cpp prefixes a space to every text run that starts the
input or follows a special token, unconditionally (``"  hi"`` -> ``▁▁▁hi``). We follow llama.cpp; for inputs
with leading spaces or special tokens the SentencePiece tests compare against the tokenizers library on a
tokenizer.json that prepends in the normalizer (which runs per text run, as llama.cpp does).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import warnings

import gguf
import numpy as np
import pytest

from llm.vocab import CONTROL, USER_DEFINED, bpe_vocab_kv, spm_vocab_kv, vocab_only_gguf, write_tokenizer_json
from tensorlogic.errors import FormatError, UnsupportedError
from tensorlogic.llm.tokenizer import Tokenizer, load_tokenizer

SPECIALS = ["<s>", "</s>", "<unk>", "<|eot_id|>", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "<think>"]

CORPUS = [
    "",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "model token language tensor logic inference",
    "café naïve résumé Zürich façade über São Paulo",
    "東京 日本語 中文 你好 世界",
    "안녕하세요 한국어 감사합니다 서울",
    "emoji 🙂😀👍🏽 and flags 🇰🇷",
    "Ελληνικά Москва España",
    "digits 0 12 345 6789 1234567890 3.14159",
    "tabs\tand\nnewlines\n\n\nand\r\nwindows",
    "runs  of   spaces    here     ",
    "trailing space ",
    "x",
    "it's we're they've I'm you'll he'd DON'T",
    "punctuation!!! ??? ... --- (brackets) [x] {y} <z> @#$%^&*",
    "mixed日本語text with 한국어and emoji🙂inside",
    "   leading spaces",
    " one leading space",
    "\nleading newline",
    "<s>Hello</s> world",
    "user: hi<|eot_id|>assistant: hello<|begin_of_text|>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<think>reasoning</think> answer",
    "almost <|eot_id| special <s",
    "<s><s></s>",
]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    parts = [
        "the",
        "model",
        "cat",
        "Zürich",
        "東京",
        "한국어",
        "🙂",
        "👍🏽",
        "é",
        "ñ",
        "42",
        "2024",
        "3.5",
        "'s",
        "don't",
        " ",
        "  ",
        "\n",
        "\t",
        "\n\n",
        ",",
        ".",
        "!",
        "?",
        "-",
        "ß",
        "中",
        "字",
        "ا",
        "ع",
        "ру",
        "\u00a0",
        "\u200b",
    ]
    texts = []
    for _ in range(n):
        words = rng.choices(parts + SPECIALS[:4], k=rng.randint(1, 25))
        texts.append("".join(w if rng.random() < 0.5 else " " + w for w in words))
    return texts


ALL_TEXTS = CORPUS + _random_texts(60, 1)


def _plain_start(text: str) -> bool:
    """A text the transformers GGUF "llama" tokenizer handles like llama.cpp (see the module docstring)."""
    return not text[:1].isspace() and not any(s in text for s in SPECIALS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """GGUF files and tokenizer.json folders for each fixture vocabulary."""
    root = tmp_path_factory.mktemp("tok")
    kvs = {
        "spm": spm_vocab_kv(),
        "llama-bpe": bpe_vocab_kv(pre="llama-bpe"),
        "qwen2": bpe_vocab_kv(pre="qwen2"),
        "gpt2": bpe_vocab_kv(pre="gpt2"),
    }
    out = {}
    for name, kv in kvs.items():
        out[name] = {
            "kv": kv,
            "gguf": vocab_only_gguf(root / f"{name}.gguf", kv),
            "json": write_tokenizer_json(root / name / "tokenizer.json", kv),
            "root": root,
        }
    return out


@pytest.fixture(scope="module")
def hf_gguf(files):
    """transformers' tokenizer read from each GGUF file, loaded once."""
    from transformers import AutoTokenizer

    cache = {}

    def get(name):
        if name not in cache:
            f = files[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[name] = AutoTokenizer.from_pretrained(str(f["root"]), gguf_file=f["gguf"].name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def ours(files):
    return {name: load_tokenizer(f["gguf"]) for name, f in files.items()}


def _json_tok(files, name):
    from tokenizers import Tokenizer as HFTokenizer

    return HFTokenizer.from_file(str(files[name]["json"]))


# ---- encoding -------------------------------------------------------------------------------------------------


def test_spm_encode_matches_transformers_gguf(ours, hf_gguf):
    hf = hf_gguf("spm")
    texts = [t for t in ALL_TEXTS if _plain_start(t)]
    assert len(texts) > 20
    for text in texts:
        assert ours["spm"].encode(text) == hf.encode(text), text
        assert ours["spm"].encode(text, add_bos=False) == hf.encode(text, add_special_tokens=False), text


def test_spm_encode_matches_tokenizers_json(ours, files):
    ref = _json_tok(files, "spm")
    for text in ALL_TEXTS:
        assert ours["spm"].encode(text) == ref.encode(text).ids, text


def test_spm_byte_fallback(ours):
    """Characters outside the vocabulary become their UTF-8 bytes as <0xNN> tokens (llama.cpp / SentencePiece)."""
    tok = ours["spm"]
    ids = tok.encode("\n", add_bos=False)
    assert [tok.id_to_piece(i) for i in ids] == ["▁", "<0x0A>"]
    emoji = tok.encode("🙂", add_bos=False)
    assert [tok.id_to_piece(i) for i in emoji[1:]] == [f"<0x{b:02X}>" for b in "🙂".encode()]


def test_spm_without_space_prefix(files):
    kv = dict(files["spm"]["kv"], **{"tokenizer.ggml.add_space_prefix": False})
    path = write_tokenizer_json(files["spm"]["root"] / "spm-noprefix" / "tokenizer.json", kv)
    from tokenizers import Tokenizer as HFTokenizer

    ref = HFTokenizer.from_file(str(path))
    tok = Tokenizer.from_gguf(kv, "noprefix.gguf")
    for text in ALL_TEXTS:
        ids = tok.encode(text)
        assert ids == ref.encode(text).ids, text
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=False), text


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt2"])
def test_bpe_encode_matches_transformers_gguf(ours, hf_gguf, files, pre):
    hf = hf_gguf(pre)
    ref = _json_tok(files, pre)
    for text in ALL_TEXTS:
        ids = ours[pre].encode(text)
        assert ids == hf.encode(text), text
        assert ids == ref.encode(text).ids, text


def test_parse_special_false_reads_control_tokens_as_text(ours, files):
    for name in ("spm", "llama-bpe"):
        ref = _json_tok(files, name)
        ref.encode_special_tokens = True
        for text in CORPUS:
            ids = ours[name].encode(text, add_bos=False, parse_special=False)
            assert ids == ref.encode(text, add_special_tokens=False).ids, text
    tok = ours["llama-bpe"]
    eot = tok.piece_to_id("<|eot_id|>")
    assert eot not in tok.encode("a<|eot_id|>b", parse_special=False)
    assert eot in tok.encode("a<|eot_id|>b")
    # User-defined tokens are matched whole either way, as in llama.cpp.
    assert tok.piece_to_id("<think>") in tok.encode("<think>", parse_special=False)


def test_special_tokens_longest_match(ours):
    tok = ours["llama-bpe"]
    ids = tok.encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>", add_bos=False)
    pieces = [tok.id_to_piece(i) for i in ids]
    assert pieces[:2] == ["<|begin_of_text|>", "<|start_header_id|>"]
    assert pieces[-1] == "<|end_header_id|>"


def test_long_text_is_fast_and_exact(ours, files):
    rng = random.Random(7)
    text = " ".join(_random_texts(600, 3))
    glued = "".join(rng.choice("abcdefghij東🙂") for _ in range(20000))
    for name in ("spm", "llama-bpe"):
        ref = _json_tok(files, name)
        for sample in (text, glued):
            start = time.perf_counter()
            ids = ours[name].encode(sample)
            elapsed = time.perf_counter() - start
            assert ids == ref.encode(sample).ids
            # Generous: a quadratic merge loop takes minutes here; ours takes well under a second.
            assert elapsed < 10, (name, elapsed)


# ---- decoding and streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spm", "llama-bpe", "qwen2", "gpt2"])
def test_decode_matches_transformers(ours, hf_gguf, name):
    hf = hf_gguf(name)
    tok = ours[name]
    for text in ALL_TEXTS:
        ids = hf.encode(text)
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False), text
        assert tok.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True), text


@pytest.mark.parametrize("name", ["spm", "llama-bpe"])
def test_decode_random_ids_matches_transformers(ours, hf_gguf, name):
    """Arbitrary ids, as a sampler may produce them: broken UTF-8 from byte tokens must decode the same way."""
    hf = hf_gguf(name)
    tok = ours[name]
    rng = random.Random(5)
    byte_ids = [i for i in range(tok.vocab_size) if tok.id_to_piece(i).startswith("<0x")] or list(range(256))
    for _ in range(200):
        ids = [rng.choice(byte_ids) if rng.random() < 0.5 else rng.randrange(tok.vocab_size) for _ in range(12)]
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False), ids
        assert tok.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True), ids
        stream = tok.stream()
        assert "".join(stream.push(i) for i in ids) + stream.flush() == hf.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("name", ["spm", "llama-bpe", "qwen2", "gpt2"])
def test_decode_inverts_encode(ours, name):
    tok = ours[name]
    texts = [t for t in ALL_TEXTS if not any(s in t for s in SPECIALS)]
    for text in texts:
        assert tok.decode(tok.encode(text), skip_special=True) == text, text


@pytest.mark.parametrize("name", ["spm", "llama-bpe", "gpt2"])
def test_stream_concatenates_to_decode(ours, hf_gguf, name):
    hf = hf_gguf(name)
    tok = ours[name]
    for text in ALL_TEXTS:
        ids = hf.encode(text)
        stream = tok.stream()
        pieces = [stream.push(i) for i in ids]
        pieces.append(stream.flush())
        assert "".join(pieces) == hf.decode(ids, skip_special_tokens=False), text
        assert not any("\ufffd" in p for p in pieces), text


def test_stream_holds_back_split_characters(ours):
    tok = ours["spm"]
    ids = tok.encode("a🙂 the", add_bos=False)
    pieces = [tok.id_to_piece(i) for i in ids]
    assert pieces[-5:-1] == [f"<0x{b:02X}>" for b in "🙂".encode()]
    stream = tok.stream()
    out = [stream.push(i) for i in ids]
    # Nothing of the character shows until its byte run is over; then it comes whole.
    assert out[-5:-1] == ["", "", "", ""] and out[-1] == "🙂 the"
    assert stream.flush() == ""
    stream = tok.stream()
    assert [stream.push(i) for i in ids[:-1]][-4:] == ["", "", "", ""]
    assert stream.flush().endswith("🙂")
    bpe = ours["llama-bpe"]
    stream = bpe.stream()
    out = [stream.push(i) for i in bpe.encode("🙂🙂🙂", add_bos=False)]
    assert "".join(out) + stream.flush() == "🙂🙂🙂"
    assert all(p in ("", "🙂", "🙂🙂", "🙂🙂🙂") for p in out)


def test_stream_skip_special(ours, hf_gguf):
    hf = hf_gguf("llama-bpe")
    tok = ours["llama-bpe"]
    ids = tok.encode("hi<|eot_id|> there <|start_header_id|>x")
    stream = tok.stream(skip_special=True)
    text = "".join(stream.push(i) for i in ids) + stream.flush()
    assert text == hf.decode(ids, skip_special_tokens=True)


# ---- vocabulary facts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spm", "llama-bpe", "qwen2", "gpt2"])
def test_vocabulary_facts_follow_metadata(ours, files, name):
    kv = files[name]["kv"]
    tok = ours[name]
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    assert tok.vocab_size == len(tokens)
    assert tok.bos_id == kv["tokenizer.ggml.bos_token_id"]
    assert tok.eos_id == kv["tokenizer.ggml.eos_token_id"]
    assert tok.unk_id == kv.get("tokenizer.ggml.unknown_token_id")
    assert tok.pad_id == kv.get("tokenizer.ggml.padding_token_id")
    assert tok.add_bos is kv["tokenizer.ggml.add_bos_token"]
    assert tok.add_eos is False
    assert tok.chat_template == kv["tokenizer.chat_template"]
    assert tok.special_ids == {i for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)} | (
        {kv["tokenizer.ggml.unknown_token_id"]} if "tokenizer.ggml.unknown_token_id" in kv else set()
    )
    assert tok.eos_id in tok.stop_ids
    if "tokenizer.ggml.eot_token_id" in kv:
        assert kv["tokenizer.ggml.eot_token_id"] in tok.stop_ids
    for i in (0, 5, len(tokens) // 2, len(tokens) - 1):
        assert tok.id_to_piece(i) == tokens[i]
        assert tok.piece_to_id(tokens[i]) == i
    assert tok.piece_to_id("definitely not a token \x00") is None


def test_stop_ids_include_end_of_turn_tokens(ours):
    llama3, qwen = ours["llama-bpe"], ours["qwen2"]
    assert llama3.piece_to_id("<|eot_id|>") in llama3.stop_ids
    assert llama3.piece_to_id("<|end_of_text|>") in llama3.stop_ids
    assert qwen.piece_to_id("<|im_end|>") in qwen.stop_ids


def test_add_bos_defaults_by_model_type(files):
    spm = {k: v for k, v in files["spm"]["kv"].items() if k != "tokenizer.ggml.add_bos_token"}
    bpe = {k: v for k, v in files["gpt2"]["kv"].items() if k != "tokenizer.ggml.add_bos_token"}
    assert Tokenizer.from_gguf(spm, "a.gguf").add_bos is True
    assert Tokenizer.from_gguf(bpe, "b.gguf").add_bos is False
    eos = dict(files["spm"]["kv"], **{"tokenizer.ggml.add_eos_token": True})
    tok = Tokenizer.from_gguf(eos, "c.gguf")
    assert tok.encode("hi")[-1] == 2 and tok.encode("hi")[0] == 1
    assert tok.encode("hi", add_bos=False)[-1] != 2


def test_from_json_matches_tokenizers_library(files):
    from tokenizers import Tokenizer as HFTokenizer

    for name in ("spm", "llama-bpe", "qwen2"):
        kv = files[name]["kv"]
        path = files[name]["json"]
        ref = HFTokenizer.from_file(str(path))
        tok = Tokenizer.from_json(path)
        assert tok.vocab_size == len(kv["tokenizer.ggml.tokens"])
        assert tok.bos_id == kv["tokenizer.ggml.bos_token_id"]
        assert tok.eos_id == kv["tokenizer.ggml.eos_token_id"]
        assert tok.add_bos is kv["tokenizer.ggml.add_bos_token"]
        assert tok.chat_template == kv["tokenizer.chat_template"]
        for text in ALL_TEXTS[:40]:
            ids = tok.encode(text)
            assert ids == ref.encode(text).ids, text
            assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=False)
            stream = tok.stream()
            assert "".join(stream.push(i) for i in ids) + stream.flush() == ref.decode(ids, skip_special_tokens=False)
        assert load_tokenizer(path.parent).encode("hello") == ref.encode("hello").ids


def test_load_tokenizer_reads_gguf_through_our_reader(files, ours):
    tok = load_tokenizer(files["spm"]["gguf"])
    assert tok.encode("Hello world") == ours["spm"].encode("Hello world")
    assert tok.vocab_size == 32000


def test_import_tensorlogic_does_not_import_heavy_libraries():
    code = (
        "import sys, tensorlogic, tensorlogic.llm.tokenizer, tensorlogic.llm.chat;"
        "bad = [m for m in ('transformers', 'tokenizers', 'jinja2') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- bad input ------------------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_gguf_without_tokenizer_metadata(tmp_path):
    path = tmp_path / "weights-only.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(FormatError) as e:
        load_tokenizer(path)
    text = _one_line(e.value)
    assert str(path) in text
    assert "no tokenizer metadata (tokenizer.ggml.tokens); pass a tokenizer.json" in text


def test_unknown_tokenizer_model(files):
    kv = dict(files["gpt2"]["kv"], **{"tokenizer.ggml.model": "rwkv"})
    with pytest.raises(UnsupportedError) as e:
        Tokenizer.from_gguf(kv, "m.gguf")
    text = _one_line(e.value)
    assert "'rwkv'" in text and "m.gguf" in text


@pytest.mark.parametrize("key", ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"])
def test_mismatched_array_lengths(files, key):
    kv = dict(files["spm"]["kv"])
    kv[key] = kv[key][:-3]
    with pytest.raises(FormatError) as e:
        Tokenizer.from_gguf(kv, "m.gguf")
    text = _one_line(e.value)
    assert key in text and "31997" in text and "32000" in text


@pytest.mark.parametrize(
    "key, value, expect",
    [
        ("tokenizer.ggml.merges", ["a b", "nospace"], "tokenizer.ggml.merges[1]"),
        ("tokenizer.ggml.merges", None, "tokenizer.ggml.merges is missing"),
        ("tokenizer.ggml.bos_token_id", 99999, "tokenizer.ggml.bos_token_id = 99999"),
        ("tokenizer.ggml.eos_token_id", "2", "tokenizer.ggml.eos_token_id must be an integer"),
        ("tokenizer.ggml.tokens", "abc", "tokenizer.ggml.tokens must be an array"),
        ("tokenizer.ggml.add_bos_token", 1, "tokenizer.ggml.add_bos_token must be a boolean"),
    ],
)
def test_bad_metadata_values(files, key, value, expect):
    kv = dict(files["gpt2"]["kv"])
    if value is None:
        del kv[key]
    else:
        kv[key] = value
    with pytest.raises(FormatError) as e:
        Tokenizer.from_gguf(kv, "m.gguf")
    text = _one_line(e.value)
    assert expect in text and "m.gguf" in text


def test_missing_scores_for_llama_model(files):
    kv = {k: v for k, v in files["spm"]["kv"].items() if k != "tokenizer.ggml.scores"}
    with pytest.raises(FormatError, match="tokenizer.ggml.scores is missing"):
        Tokenizer.from_gguf(kv, "m.gguf")


def test_unknown_pre_tokenizer_warns_and_uses_gpt2_pattern(files, hf_gguf, tmp_path):
    kv = dict(files["gpt2"]["kv"], **{"tokenizer.ggml.pre": "mystery-pre"})
    with pytest.warns(UserWarning, match="mystery-pre"):
        tok = Tokenizer.from_gguf(kv, "m.gguf")
    hf = hf_gguf("gpt2")  # transformers uses GPT-2's pattern for both "gpt2" and an unknown pre
    for text in ALL_TEXTS:
        assert tok.encode(text) == hf.encode(text), text


def test_bad_tokenizer_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01not a tokenizer")
    with pytest.raises(FormatError, match="neither a GGUF file nor a tokenizer.json"):
        load_tokenizer(junk)
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(FormatError) as e:
        load_tokenizer(broken)
    assert "not a readable tokenizer.json" in _one_line(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError, match="folder without a tokenizer.json"):
        load_tokenizer(empty)
    with pytest.raises(FormatError, match="no such file"):
        load_tokenizer(tmp_path / "missing.gguf")


def test_decode_rejects_out_of_range_ids(ours):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours["spm"].decode([1, 32000])


def test_encode_rejects_text_without_utf8_form(ours):
    with pytest.raises(ValueError, match="lone surrogate"):
        ours["spm"].encode("ok \ud800")
    with pytest.raises(TypeError, match="expects a str"):
        ours["gpt2"].encode(b"bytes")


def test_empty_control_token_is_not_matched(files):
    kv = dict(files["gpt2"]["kv"])
    tokens = list(kv["tokenizer.ggml.tokens"])
    tokens[-1] = ""
    kv["tokenizer.ggml.tokens"] = tokens
    tok = Tokenizer.from_gguf(kv, "m.gguf")
    assert len(tokens) - 1 not in tok.encode("abc def")
