"""Tokenizer fixtures: real-shaped vocabularies as GGUF key-values, trained at fixture time.

Nothing is downloaded. The pieces come from training a BPE with Hugging Face's ``tokenizers`` library on a
corpus generated from a seed, so merges and scores behave like a real model's: frequent words become single
pieces, rare text falls back to shorter pieces or (SentencePiece) to ``<0xNN>`` byte tokens.

- :func:`spm_vocab_kv` -- a Llama/SentencePiece vocabulary (``tokenizer.ggml.model`` = "llama").
- :func:`bpe_vocab_kv` -- a GPT-2 style byte-level BPE (``tokenizer.ggml.model`` = "gpt2").
- :func:`write_tokenizer_json` -- the same vocabulary as a Hugging Face tokenizer.json (+ tokenizer_config.json).
- :func:`vocab_only_gguf` -- a GGUF file holding just the tokenizer keys and one tiny tensor.
"""

from __future__ import annotations

import copy
import functools
import json
import random
from pathlib import Path
from typing import Any

# Token types as llama.cpp numbers them (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPACE = "\u2581"

# Split patterns the vocabularies are trained with; the same ones llama.cpp names by ``tokenizer.ggml.pre``.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {"gpt2": GPT2_SPLIT, "default": GPT2_SPLIT, "llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}

# TinyLlama-1.1B-Chat's (Zephyr-style) template.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)
# Meta Llama 3 Instruct's template.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# ChatML (Qwen2 and others).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the of and to in is was for that on as with by he at from his it an were are which this be or has had "
    "not first one their its new after but who they have her she two been other when there all during into "
    "school time may years more most only over city some world would where later up such used many can state "
    "about national out known university united then made also part between people could system these under "
    "model token language tensor logic inference memory python kernel matrix vector quantized weights layer "
    "attention head cache prompt chat assistant user system message content generate sample temperature"
).split()
_UNICODE_WORDS = (
    "café naïve résumé Zürich façade über São Paulo España Ελληνικά Москва 東京 日本語 中文 你好 世界 "
    "学生 大学 安녕 안녕하세요 한국어 감사합니다 서울"
).split()
_PUNCT = [".", ",", "!", "?", ";", ":", "'s", "'t", "'re", "-", "(", ")", '"']


def _corpus(seed: int, n_lines: int, newlines: bool) -> list[str]:
    """Deterministic text with a Zipf-like word distribution, generated words, digits and some Unicode."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    made = {"".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4))) for _ in range(3000)}
    lexicon = _WORDS + sorted(made)
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    lines = []
    for _ in range(n_lines):
        words = rng.choices(lexicon, weights, k=rng.randint(6, 18))
        if rng.random() < 0.15:
            words.append(rng.choice(_UNICODE_WORDS))
        if rng.random() < 0.2:
            words.append(str(rng.randint(0, 99999)))
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        text = " ".join(words)
        if rng.random() < 0.5:
            text += rng.choice(_PUNCT)
        if newlines and rng.random() < 0.2:
            text += rng.choice(["\n", "\n\n", "\t", "  "])
        lines.append(text)
    return lines


@functools.lru_cache(maxsize=8)
def _spm_kv(n_vocab: int, seed: int) -> dict[str, Any]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    reserved = 3 + 256
    if n_vocab < reserved + 64:
        raise ValueError(f"n_vocab must be at least {reserved + 64}")
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    # Newlines and tabs stay out of the training text, as in Llama's vocabulary: they must take the
    # <0x0A>/<0x09> byte fallback.
    target = min(n_vocab - reserved, 6000)
    trainer = trainers.BpeTrainer(vocab_size=target, min_frequency=2, show_progress=False)
    trained.train_from_iterator(_corpus(seed, 6000, newlines=False), trainer)
    by_id = sorted(trained.get_vocab().items(), key=lambda kv: kv[1])
    merged = [t for t, _ in by_id if len(t) > 1]
    singles = [t for t, _ in by_id if len(t) == 1]

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * reserved
    # Merged pieces score by merge order (earlier merge = higher score), as SentencePiece BPE models do.
    pieces = list(merged)
    seen = set(tokens) | set(merged) | set(singles)
    rng = random.Random(seed + 1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    # Rare pieces fill the vocabulary up to n_vocab; single characters come last with the lowest scores.
    while len(tokens) + len(pieces) + len(singles) < n_vocab:
        piece = "".join(rng.choice(letters) for _ in range(rng.randint(3, 7)))
        if rng.random() < 0.6:
            piece = SPACE + piece
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    for rank, piece in enumerate(pieces + singles):
        tokens.append(piece)
        types.append(NORMAL)
        scores.append(-float(rank))
    return {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.padding_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,
        "tokenizer.chat_template": ZEPHYR_TEMPLATE,
    }


def spm_vocab_kv(n_vocab: int = 32000, seed: int = 0) -> dict[str, Any]:
    """A Llama/SentencePiece vocabulary as GGUF key-values (<unk>=0, <s>=1, </s>=2, bytes at 3..258)."""
    return copy.deepcopy(_spm_kv(n_vocab, seed))


def _special_tokens(pre: str) -> tuple[list[str], dict[str, Any]]:
    """Special tokens, the ids they take (as offsets into the list) and the chat template for a pre-tokenizer."""
    if pre == "llama-bpe":
        names = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        return names, {"bos": 0, "eos": 1, "eot": 4, "add_bos": True, "template": LLAMA3_TEMPLATE}
    if pre == "qwen2":
        names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        return names, {"bos": 0, "eos": 2, "eot": 2, "pad": 0, "add_bos": False, "template": CHATML_TEMPLATE}
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return names, {"bos": 0, "eos": 0, "eot": 2, "add_bos": False, "template": CHATML_TEMPLATE}


@functools.lru_cache(maxsize=8)
def _bpe_kv(n_vocab: int, pre: str, seed: int) -> dict[str, Any]:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    specials, info = _special_tokens(pre)
    user_defined = ["<think>"]
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLITS.get(pre, GPT2_SPLIT)), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    budget = n_vocab - len(specials) - len(user_defined)
    if budget < 256 + 64:
        raise ValueError(f"n_vocab must be at least {256 + 64 + len(specials) + len(user_defined)}")
    trainer = trainers.BpeTrainer(
        vocab_size=budget, min_frequency=2, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    trained.train_from_iterator(_corpus(seed, 4000, newlines=True), trainer)
    model = json.loads(trained.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [NORMAL] * len(tokens)
    # A small corpus may not fill the budget; Llama 3 pads the same way, with reserved control tokens.
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(budget - len(tokens))]
    base = len(tokens)
    tokens += user_defined + specials + reserved
    types += [USER_DEFINED] * len(user_defined) + [CONTROL] * (len(specials) + len(reserved))
    first_special = base + len(user_defined)
    kv: dict[str, Any] = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": first_special + info["bos"],
        "tokenizer.ggml.eos_token_id": first_special + info["eos"],
        "tokenizer.ggml.eot_token_id": first_special + info["eot"],
        "tokenizer.ggml.add_bos_token": info["add_bos"],
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.chat_template": info["template"],
    }
    if "pad" in info:
        kv["tokenizer.ggml.padding_token_id"] = first_special + info["pad"]
    return kv


def bpe_vocab_kv(n_vocab: int = 4096, pre: str = "llama-bpe", seed: int = 0) -> dict[str, Any]:
    """A GPT-2 style byte-level BPE vocabulary as GGUF key-values, with special tokens and a chat template.

    ``pre`` picks the split pattern and the special tokens: "llama-bpe" (Llama 3: ``<|begin_of_text|>``,
    ``<|eot_id|>``, ...), "qwen2" (ChatML ``<|im_start|>``/``<|im_end|>``) or "gpt2"/"default".
    """
    return copy.deepcopy(_bpe_kv(n_vocab, pre, seed))


def spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Merges a SentencePiece vocabulary implies: every split of a piece into two pieces, best score first."""
    index = {t: i for i, t in enumerate(tokens)}
    found = []
    for token, score in zip(tokens, scores):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in index and right in index:
                found.append((-score, index[left], index[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _tokenizer_from_kv(kv: dict[str, Any]) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokens = kv["tokenizer.ggml.tokens"]
    types = kv.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}
    kind = kv["tokenizer.ggml.model"]
    if kind == "llama":
        unk = tokens[kv.get("tokenizer.ggml.unknown_token_id", 0)]
        merges = spm_merges(tokens, kv["tokenizer.ggml.scores"])
        tok = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
        steps = [normalizers.Replace(" ", SPACE)]
        if kv.get("tokenizer.ggml.add_space_prefix", True):
            # Prepend in the normalizer (not Metaspace) runs on every piece of text between special tokens,
            # which is where llama.cpp adds its space prefix too.
            steps.insert(0, normalizers.Prepend(SPACE))
        tok.normalizer = normalizers.Sequence(steps)
        strip = [decoders.Strip(" ", 1, 0)] if kv.get("tokenizer.ggml.add_space_prefix", True) else []
        tok.decoder = decoders.Sequence(
            [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()] + strip
        )
    else:
        pairs = [tuple(m.split(" ")) for m in kv["tokenizer.ggml.merges"]]
        pre = kv.get("tokenizer.ggml.pre", "default")
        tok = Tokenizer(models.BPE(vocab, pairs, ignore_merges=pre == "llama-bpe"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLITS.get(pre, GPT2_SPLIT)), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN)]
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    bos_id = kv.get("tokenizer.ggml.bos_token_id")
    if kv.get("tokenizer.ggml.add_bos_token", kind == "llama") and bos_id is not None:
        bos = tokens[bos_id]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tok


def write_tokenizer_json(path: str | Path, kv: dict[str, Any]) -> Path:
    """Write ``kv``'s vocabulary as a Hugging Face tokenizer.json, and a tokenizer_config.json beside it.

    The config carries the chat template, the special token strings and add_bos/add_eos, so
    ``AutoTokenizer.from_pretrained(folder)`` sees the same tokenizer a GGUF with ``kv`` describes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _tokenizer_from_kv(kv).save(str(path))
    tokens = kv["tokenizer.ggml.tokens"]
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    for name, key in [("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding")]:
        token_id = kv.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            config[name] = tokens[token_id]
    config["add_bos_token"] = bool(kv.get("tokenizer.ggml.add_bos_token", kv["tokenizer.ggml.model"] == "llama"))
    config["add_eos_token"] = bool(kv.get("tokenizer.ggml.add_eos_token", False))
    if "tokenizer.chat_template" in kv:
        config["chat_template"] = kv["tokenizer.chat_template"]
    (path.parent / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))
    return path


def add_kv(writer: Any, kv: dict[str, Any]) -> None:
    """Write key-values to a gguf-py ``GGUFWriter``, typed as llama.cpp writes them (integers uint32, floats
    float32, token scores float32 and token types int32 arrays); the architecture is the writer's own."""
    for key, value in kv.items():
        if key == "general.architecture":
            continue
        if key == "tokenizer.ggml.scores":
            writer.add_array(key, [float(v) for v in value])
        elif key == "tokenizer.ggml.token_type":
            writer.add_array(key, [int(v) for v in value])
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, (list, tuple)):
            writer.add_array(key, list(value))
        else:
            raise TypeError(f"cannot write {key!r} ({type(value).__name__}) to a GGUF")


def vocab_only_gguf(path: str | Path, kv: dict[str, Any]) -> Path:
    """Write a GGUF (architecture "llama") holding ``kv``, a minimal llama header and one 4-element tensor."""
    import gguf
    import numpy as np

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    n_vocab = len(kv["tokenizer.ggml.tokens"])
    header = {
        "llama.vocab_size": n_vocab,
        "llama.context_length": 2048,
        "llama.embedding_length": 64,
        "llama.block_count": 1,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 4,
        "llama.rope.dimension_count": 16,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
    }
    add_kv(writer, {**header, **kv})
    writer.add_tensor("token_embd.weight", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
