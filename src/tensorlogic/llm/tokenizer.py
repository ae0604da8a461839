"""LLM tokenizers: from a GGUF file's ``tokenizer.ggml.*`` metadata, or from a Hugging Face tokenizer.json.

GGUF vocabularies are encoded the way llama.cpp does it:

- ``llama`` (SentencePiece BPE): spaces become ``▁``, a ``▁`` is prefixed to each run of text that starts the
  input or follows a special token (``add_space_prefix``), then adjacent symbols are merged best-score first;
  characters left outside the vocabulary fall back to ``<0xNN>`` byte tokens.
- ``gpt2`` (byte-level BPE): the text is split by the pre-tokenizer pattern ``tokenizer.ggml.pre`` names, each
  piece is spelled in GPT-2's byte alphabet and merged by merge rank.

Special (control) and user-defined tokens written in the text are matched leftmost-longest and emitted whole.
A tokenizer.json is run by the ``tokenizers`` library itself; only BOS/EOS handling is ours.
"""

from __future__ import annotations

import codecs
import heapq
import json
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FormatError, UnsupportedError

SPACE = "\u2581"

# llama.cpp's token types (gguf.TokenType).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> (split pattern, whole words found in the vocabulary skip the merges as llama.cpp does).
_PRE = {
    "default": (_GPT2_SPLIT, False),
    "gpt2": (_GPT2_SPLIT, False),
    "llama-bpe": (_LLAMA3_SPLIT, True),
    "llama3": (_LLAMA3_SPLIT, True),
    "llama-v3": (_LLAMA3_SPLIT, True),
    "qwen2": (_QWEN2_SPLIT, False),
    "deepseek-r1-qwen": (_QWEN2_SPLIT, False),
}
# End-of-turn markers of common chat formats; generation stops at these as at EOS.
_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|eom_id|>", "<end_of_turn>")


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's spelling of each byte as a printable character (printable Latin-1 bytes stand for themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelled = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in spelled:
            spelled[b] = chr(256 + extra)
            extra += 1
    return spelled


_BYTE_TO_CHAR = _byte_alphabet()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


class _SpecialSplitter:
    """Cuts text at special tokens, leftmost-longest, as Hugging Face's added-vocabulary matching does."""

    def __init__(self, tokens: Mapping[str, int]):
        # An empty token (a damaged vocabulary) would match between every two characters.
        self.ids = {t: i for t, i in tokens.items() if t}
        ordered = sorted(self.ids, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(t) for t in ordered)) if ordered else None

    def split(self, text: str) -> list[str | int]:
        """Text pieces (str) and special token ids (int), in order; empty pieces are dropped."""
        if self.pattern is None:
            return [text] if text else []
        out: list[str | int] = []
        pos = 0
        for m in self.pattern.finditer(text):
            if m.start() > pos:
                out.append(text[pos : m.start()])
            out.append(self.ids[m.group()])
            pos = m.end()
        if pos < len(text):
            out.append(text[pos:])
        return out


def _merge(symbols: list[str], rank_of: Any) -> list[str]:
    """Merge adjacent symbols best pair first (lowest key, then leftmost) until no pair is known.

    ``rank_of(left, right)`` gives a pair's sort key or None. A heap of candidate pairs with lazy
    invalidation keeps long inputs O(n log n): a popped pair is stale when either side has changed length.
    """
    n = len(symbols)
    if n < 2:
        return symbols
    text = list(symbols)
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    heap: list[tuple[Any, int, int, int]] = []

    def offer(left: int) -> None:
        right = nxt[left]
        if right < 0:
            return
        key = rank_of(text[left], text[right])
        if key is not None:
            heapq.heappush(heap, (key, left, right, len(text[left]) + len(text[right])))

    for i in range(n - 1):
        offer(i)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        if not text[left] or not text[right] or len(text[left]) + len(text[right]) != size:
            continue
        text[left] += text[right]
        text[right] = ""
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prev[after] = left
        if prev[left] >= 0:
            offer(prev[left])
        offer(left)
    return [t for t in text if t]


class _SpmModel:
    """llama.cpp's SentencePiece BPE: best-score merges over characters, byte fallback for the rest."""

    def __init__(self, tokens: list[str], scores: list[float], unk_id: int | None, add_space_prefix: bool):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.scores = scores
        self.unk_id = unk_id
        self.add_space_prefix = add_space_prefix
        self.byte_ids = [self.ids.get(f"<0x{b:02X}>", unk_id) for b in range(256)]

    def _pair_key(self, left: str, right: str) -> tuple[float] | None:
        i = self.ids.get(left + right)
        return None if i is None else (-self.scores[i],)

    def encode(self, text: str, after_special: bool) -> list[int]:
        if self.add_space_prefix and after_special:
            text = " " + text
        out: list[int] = []
        for piece in _merge(list(text.replace(" ", SPACE)), self._pair_key):
            i = self.ids.get(piece)
            if i is not None:
                out.append(i)
                continue
            for b in piece.encode("utf-8"):
                if self.byte_ids[b] is None:
                    raise UnsupportedError(f"cannot encode {piece!r}: no <0x{b:02X}> byte token and no unknown token")
                out.append(self.byte_ids[b])
        return out


class _BpeModel:
    """llama.cpp's byte-level BPE: split by the pre-tokenizer pattern, merge by rank within each piece."""

    def __init__(self, tokens: list[str], ranks: dict[tuple[str, str], int], pre: str):
        from tokenizers import Regex, pre_tokenizers

        pattern, self.ignore_merges = _PRE[pre]
        self.splitter = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = ranks
        self.cache: dict[str, list[int]] = {}

    def _pair_key(self, left: str, right: str) -> int | None:
        return self.ranks.get((left, right))

    def _word(self, word: str) -> list[int]:
        spelled = "".join(_BYTE_TO_CHAR[b] for b in word.encode("utf-8"))
        whole = self.ids.get(spelled)
        if whole is not None and self.ignore_merges:
            return [whole]
        out = []
        for piece in _merge(list(spelled), self._pair_key):
            i = self.ids.get(piece)
            if i is not None:
                out.append(i)
                continue
            for ch in piece:
                if ch not in self.ids:
                    raise UnsupportedError(f"cannot encode {piece!r}: the byte-level alphabet lacks {ch!r}")
                out.append(self.ids[ch])
        return out

    def encode(self, text: str, after_special: bool) -> list[int]:
        out: list[int] = []
        for word, _ in self.splitter.pre_tokenize_str(text):
            ids = self.cache.get(word)
            if ids is None:
                ids = self._word(word)
                if len(self.cache) < 100_000:
                    self.cache[word] = ids
            out.extend(ids)
        return out


class StreamDecoder:
    """Turns ids into text as they arrive: ``push`` returns only the new text, holding back a character
    whose UTF-8 bytes are still incomplete; ``flush`` returns whatever is left.

    It decodes a short window of recent ids and emits what the window's text gained, so the output equals
    ``Tokenizer.decode`` of all ids, including the leading-space rule and byte tokens split mid-character.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        # A run of <0xNN> tokens decodes as a whole (one U+FFFD per byte if it is broken UTF-8), so nothing is
        # emitted until the run ends; the window then never starts or ends inside a run.
        if self.ids[-1] in self.tokenizer._byte_tokens:
            return ""
        done = self.tokenizer.decode(self.ids[self.prefix : self.read], self.skip_special)
        text = self.tokenizer.decode(self.ids[self.prefix :], self.skip_special)
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done) :]

    def flush(self) -> str:
        done = self.tokenizer.decode(self.ids[self.prefix : self.read], self.skip_special)
        text = self.tokenizer.decode(self.ids[self.prefix :], self.skip_special)
        self.prefix = self.read = len(self.ids)
        return text[len(done) :]


class Tokenizer:
    """Text to token ids and back, for one model's vocabulary. Build with :meth:`from_gguf`, :meth:`from_json`
    or :func:`load_tokenizer`."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    stop_ids: frozenset[int]
    chat_template: str | None
    special_ids: frozenset[int]

    def __init__(self) -> None:
        self._model: _SpmModel | _BpeModel | None = None
        self._hf: Any = None
        self._hf_literal: Any = None
        self._pieces: list[str] = []
        self._piece_ids: dict[str, int] = {}
        self._bytes: list[bytes] = []
        self._skip: frozenset[int] = frozenset()
        self._strip_space = False
        self._byte_tokens: frozenset[int] = frozenset()
        self._splitter = _SpecialSplitter({})
        self._literal_splitter = _SpecialSplitter({})

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, kv: Mapping[str, Any], path: str | Path) -> Tokenizer:
        """The tokenizer a GGUF file's key-values describe (``kv`` = ``GGUFFile(...).kv``)."""
        model = kv.get("tokenizer.ggml.model")
        tokens = kv.get("tokenizer.ggml.tokens")
        if model is None or tokens is None:
            raise FormatError("no tokenizer metadata (tokenizer.ggml.tokens); pass a tokenizer.json", path)
        if model not in ("llama", "gpt2"):
            raise UnsupportedError(
                f"{path}: tokenizer model {model!r} (tokenizer.ggml.model) is not supported; supported: 'llama', 'gpt2'"
            )
        tokens = _string_list(kv, "tokenizer.ggml.tokens", path)
        n = len(tokens)
        types = _number_list(kv, "tokenizer.ggml.token_type", path, n, int) or [_NORMAL] * n
        self = cls()
        self.vocab_size = n
        self._pieces = tokens
        self._piece_ids = {t: i for i, t in enumerate(tokens)}
        self.bos_id = _token_id(kv, "tokenizer.ggml.bos_token_id", path, n)
        self.eos_id = _token_id(kv, "tokenizer.ggml.eos_token_id", path, n)
        self.unk_id = _token_id(kv, "tokenizer.ggml.unknown_token_id", path, n)
        self.pad_id = _token_id(kv, "tokenizer.ggml.padding_token_id", path, n)
        self.add_bos = _flag(kv, "tokenizer.ggml.add_bos_token", path, model == "llama")
        self.add_eos = _flag(kv, "tokenizer.ggml.add_eos_token", path, False)
        template = kv.get("tokenizer.chat_template")
        self.chat_template = template if isinstance(template, str) else None
        if model == "llama":
            scores = _number_list(kv, "tokenizer.ggml.scores", path, n, float)
            if scores is None:
                raise FormatError("tokenizer.ggml.scores is missing (a 'llama' vocabulary needs it)", path)
            prefix = _flag(kv, "tokenizer.ggml.add_space_prefix", path, True)
            self._model = _SpmModel(tokens, scores, self.unk_id, prefix)
            self._strip_space = prefix
        else:
            pre = kv.get("tokenizer.ggml.pre", "default")
            if pre not in _PRE:
                warnings.warn(
                    f"{path}: unknown tokenizer.ggml.pre {pre!r}; splitting text with the GPT-2 pattern", stacklevel=2
                )
                pre = "gpt2"
            self._model = _BpeModel(tokens, _merge_ranks(kv, path), pre)
        control = {i for i, t in enumerate(types) if t in (_CONTROL, _UNKNOWN)}
        user = {i for i, t in enumerate(types) if t == _USER_DEFINED}
        self.special_ids = frozenset(control | user)
        self._skip = frozenset(control)
        # llama.cpp matches user-defined tokens in text always, control tokens only when parsing specials.
        self._splitter = _SpecialSplitter({tokens[i]: i for i in sorted(control | user)})
        self._literal_splitter = _SpecialSplitter({tokens[i]: i for i in sorted(user)})
        self._bytes = [_piece_bytes(t, k, model) for t, k in zip(tokens, types)]
        if model == "llama":
            self._byte_tokens = frozenset(i for i, k in enumerate(types) if k == _BYTE and len(self._bytes[i]) == 1)
        eot = _token_id(kv, "tokenizer.ggml.eot_token_id", path, n)
        eom = _token_id(kv, "tokenizer.ggml.eom_token_id", path, n)
        named = {self._piece_ids[t] for t in _END_OF_TURN if t in self._piece_ids}
        self.stop_ids = frozenset(i for i in (self.eos_id, eot, eom, *(named & self.special_ids)) if i is not None)
        return self

    @classmethod
    def from_json(cls, path: str | Path) -> Tokenizer:
        """A Hugging Face tokenizer.json, run by the ``tokenizers`` library; BOS/EOS and the chat template come
        from a tokenizer_config.json beside it when there is one."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the library raises plain Exceptions with multi-line serde messages
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FormatError(f"not a readable tokenizer.json ({first})", path) from None
        config = _read_config(path.parent / "tokenizer_config.json")
        self = cls()
        self._hf = hf
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        byte_piece = re.compile(r"<0x[0-9A-F]{2}>")
        self._byte_tokens = frozenset(i for t, i in hf.get_vocab().items() if byte_piece.fullmatch(t))
        added = hf.get_added_tokens_decoder()
        self.special_ids = frozenset(added)
        self._skip = frozenset(i for i, t in added.items() if t.special)
        implicit = [i for i in hf.encode("", add_special_tokens=True).ids if i in self._skip]
        self.bos_id = _config_token(hf, config, "bos_token")
        if self.bos_id is None and implicit:
            self.bos_id = implicit[0]
        self.eos_id = _config_token(hf, config, "eos_token")
        self.unk_id = _config_token(hf, config, "unk_token")
        self.pad_id = _config_token(hf, config, "pad_token")
        self.add_bos = bool(config.get("add_bos_token", bool(implicit))) and self.bos_id is not None
        self.add_eos = bool(config.get("add_eos_token", False)) and self.eos_id is not None
        template = config.get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        self.chat_template = template if isinstance(template, str) else None
        named_ids = {hf.token_to_id(t) for t in _END_OF_TURN} - {None}
        self.stop_ids = frozenset(i for i in (self.eos_id, *named_ids) if i is not None)
        return self

    # ---- encoding and decoding ----------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``. ``add_bos`` None follows the model (BOS and EOS as its metadata says), True
        forces BOS, False adds neither. ``parse_special`` False reads control tokens in the text as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, not {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"text holds a lone surrogate {text[e.start]!r} at index {e.start}; it has no UTF-8 form"
            ) from None
        ids: list[int] = []
        bos = self.add_bos if add_bos is None else add_bos
        if bos and self.bos_id is not None:
            ids.append(self.bos_id)
        if self._hf is not None:
            ids.extend(self._encode_hf(text, parse_special))
        else:
            assert self._model is not None
            splitter = self._splitter if parse_special else self._literal_splitter
            after_special = True
            for part in splitter.split(text):
                if isinstance(part, int):
                    ids.append(part)
                    after_special = True
                else:
                    ids.extend(self._model.encode(part, after_special))
                    after_special = False
        if self.add_eos and add_bos is not False and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _encode_hf(self, text: str, parse_special: bool) -> list[int]:
        if parse_special:
            return self._hf.encode(text, add_special_tokens=False).ids
        if self._hf_literal is None:
            from tokenizers import Tokenizer as HFTokenizer

            # A second instance, so the flag never changes under a concurrent encode on the first.
            self._hf_literal = HFTokenizer.from_str(self._hf.to_str())
            self._hf_literal.encode_special_tokens = True
        return self._hf_literal.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """The text of ``ids``; ``skip_special`` leaves out control tokens (BOS, EOS, ...)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=skip_special)
        kept = [i for i in ids if not (skip_special and i in self._skip)]
        if self._byte_tokens:
            text = self._decode_with_byte_tokens(kept)
        else:
            text = codecs.decode(b"".join(self._bytes[i] for i in kept), "utf-8", "replace")
        # SentencePiece added a space in front of the text; take it back off, as Hugging Face's decoder does.
        if self._strip_space and text.startswith(" "):
            text = text[1:]
        return text

    def _decode_with_byte_tokens(self, ids: list[int]) -> str:
        """SentencePiece text: each run of <0xNN> tokens is one UTF-8 string, or one U+FFFD per byte when the
        run is not valid UTF-8 -- Hugging Face's ByteFallback rule, so outputs agree on broken bytes too."""
        parts: list[str] = []
        run = bytearray()
        for i in ids:
            if i in self._byte_tokens:
                run += self._bytes[i]
                continue
            if run:
                parts.append(_run_text(run))
                run.clear()
            parts.append(self._bytes[i].decode("utf-8"))
        if run:
            parts.append(_run_text(run))
        return "".join(parts)

    def stream(self, skip_special: bool = False) -> StreamDecoder:
        """An incremental decoder: feed ids one at a time, get text as soon as it is complete."""
        return StreamDecoder(self, skip_special)

    def id_to_piece(self, i: int) -> str:
        """The vocabulary's own spelling of token ``i`` (``▁the``, ``<0x0A>``, ``Ġthe``)."""
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        if self._hf is not None:
            return self._hf.id_to_token(i)
        return self._pieces[i]

    def piece_to_id(self, s: str) -> int | None:
        """The id of the vocabulary entry spelled ``s``, or None."""
        if self._hf is not None:
            return self._hf.token_to_id(s)
        return self._piece_ids.get(s)

    def __repr__(self) -> str:
        kind = "tokenizer.json" if self._hf is not None else type(self._model).__name__.strip("_")
        return f"Tokenizer({kind}, vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id})"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a GGUF model file, a tokenizer.json, or a folder holding a tokenizer.json."""
    p = Path(path)
    if p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise FormatError("folder without a tokenizer.json", p)
        return Tokenizer.from_json(p / "tokenizer.json")
    if not p.is_file():
        raise FormatError("no such file", p)
    with open(p, "rb") as f:
        head = f.read(64)
    if head.startswith(b"GGUF"):
        from ..formats.detect import detect
        from ..formats.gguf import open_gguf

        gguf = open_gguf(detect(p))
        try:
            return Tokenizer.from_gguf(gguf.kv, p)
        finally:
            gguf.close()
    if head.lstrip().startswith(b"{"):
        return Tokenizer.from_json(p)
    raise FormatError("neither a GGUF file nor a tokenizer.json", p)


# ---- metadata checks ----------------------------------------------------------------------------------------


def _string_list(kv: Mapping[str, Any], key: str, path: str | Path) -> list[str]:
    value = kv.get(key)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise FormatError(f"{key} must be an array of strings, not {type(value).__name__}", path)
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise FormatError(f"{key}[{i}] must be a string, not {type(item).__name__}", path)
    return items


def _number_list(kv: Mapping[str, Any], key: str, path: str | Path, n: int, kind: type) -> list[Any] | None:
    value = kv.get(key)
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise FormatError(f"{key} must be an array of numbers, not {type(value).__name__}", path)
    if len(value) != n:
        raise FormatError(f"{key} has {len(value)} entries but tokenizer.ggml.tokens has {n}", path)
    try:
        return [kind(v) for v in value]
    except (TypeError, ValueError):
        raise FormatError(f"{key} must be an array of numbers", path) from None


def _token_id(kv: Mapping[str, Any], key: str, path: str | Path, n: int) -> int | None:
    value = kv.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{key} must be an integer, not {type(value).__name__}", path)
    if not 0 <= value < n:
        raise FormatError(f"{key} = {value} is outside the vocabulary of {n} tokens", path)
    return value


def _flag(kv: Mapping[str, Any], key: str, path: str | Path, default: bool) -> bool:
    value = kv.get(key, default)
    if not isinstance(value, bool):
        raise FormatError(f"{key} must be a boolean, not {type(value).__name__}", path)
    return value


def _merge_ranks(kv: Mapping[str, Any], path: str | Path) -> dict[tuple[str, str], int]:
    if kv.get("tokenizer.ggml.merges") is None:
        raise FormatError("tokenizer.ggml.merges is missing (a 'gpt2' vocabulary needs it)", path)
    ranks: dict[tuple[str, str], int] = {}
    for rank, merge in enumerate(_string_list(kv, "tokenizer.ggml.merges", path)):
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right:
            raise FormatError(f"tokenizer.ggml.merges[{rank}] = {merge!r} is not two pieces separated by a space", path)
        ranks.setdefault((left, right), rank)
    return ranks


def _piece_bytes(piece: str, kind: int, model: str) -> bytes:
    """The bytes a token stands for in decoded text."""
    if kind in (_CONTROL, _UNKNOWN, _USER_DEFINED):
        return piece.replace(SPACE, " ").encode("utf-8") if model == "llama" else piece.encode("utf-8")
    if model == "llama":
        if kind == _BYTE and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace(SPACE, " ").encode("utf-8")
    if all(ch in _CHAR_TO_BYTE for ch in piece):
        return bytes(_CHAR_TO_BYTE[ch] for ch in piece)
    return piece.encode("utf-8")


def _run_text(run: bytearray) -> str:
    try:
        return run.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(run)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"not valid JSON ({e.__class__.__name__})", path) from None
    return config if isinstance(config, dict) else {}


def _config_token(hf: Any, config: Mapping[str, Any], name: str) -> int | None:
    value = config.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return hf.token_to_id(value) if isinstance(value, str) else None
