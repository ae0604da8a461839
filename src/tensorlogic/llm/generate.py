"""``LLM``: a GGUF model with its tokenizer — logits, generation (whole or streamed) and chat."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, TensorLogicError
from ..formats.gguf import GGUFFile
from .model import Transformer, default_dtype
from .sampling import SamplingParams, sample


@dataclass
class Generation:
    """What ``generate`` returns: the new text and tokens, why it ended, and how fast it went."""

    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token or stop string) or "length"
    prefill_s: float = 0.0
    decode_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def decode_tok_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if self.decode_s > 0 and len(self.tokens) > 1 else 0.0

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    def __str__(self) -> str:
        return self.text


def _device(device: Any) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine")
    return dev


class LLM:
    """A llama-family GGUF model ready to generate.

    The KV cache keeps the last sequence: a prompt that starts with the tokens already in the cache (the next
    turn of a chat) only runs its new tokens.
    """

    def __init__(self, path: str | Path | GGUFFile, *, device: Any = None, dtype: Any = None,
                 n_ctx: int | None = None, tokenizer: Any = None):
        from .tokenizer import Tokenizer, load_tokenizer

        gguf = path if isinstance(path, GGUFFile) else _open(path)
        self.device = _device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.model = Transformer(gguf, self.device, self.dtype, n_ctx=n_ctx)
        self.config = self.model.cfg
        self.path = Path(gguf.path)
        if tokenizer is None:
            self.tokenizer = Tokenizer.from_gguf(gguf.kv, gguf.path)
        elif isinstance(tokenizer, (str, Path)):
            self.tokenizer = load_tokenizer(tokenizer)
        else:
            self.tokenizer = tokenizer
        self._cached: list[int] = []

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    def reset(self) -> None:
        """Forget the cached sequence (the next prompt runs from scratch)."""
        self._cached = []

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise InputError("the prompt is empty (no tokens)")
        bad = [i for i in ids if not 0 <= i < self.config.n_vocab]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the vocabulary of {self.config.n_vocab}")
        return ids

    @torch.inference_mode()
    def logits(self, ids: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
        """Float32 logits of every position: [T, vocab] for one sequence, [B, T, vocab] for a batch.

        Sequences of different lengths are padded on the right (padding never affects earlier positions of a
        causal model); positions past a sequence's end hold NaN.
        """
        if isinstance(ids, torch.Tensor):
            rows = ids.tolist() if ids.dim() == 2 else [ids.tolist()]
            single = ids.dim() == 1
        else:
            single = not ids or not isinstance(ids[0], (list, tuple, torch.Tensor))
            rows = [list(ids)] if single else [list(r) for r in ids]
        rows = [self.encode(r) for r in rows]
        t = max(len(r) for r in rows)
        if t > self.n_ctx:
            raise InputError(f"a sequence of {t} tokens is longer than the model's context of {self.n_ctx}")
        out = torch.full((len(rows), t, self.config.n_vocab), float("nan"))
        self._cached = []
        for start in range(0, len(rows), self.model.batch):
            for j, row in enumerate(rows[start : start + self.model.batch]):
                batch = torch.tensor([row], device=self.device)
                out[start + j, : len(row)] = self.model.forward(batch, 0, all_logits=True)[0].cpu()
        return out[0] if single else out

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        keep = 0
        for a, b in zip(self._cached, ids[:-1]):
            if a != b:
                break
            keep += 1
        new = ids[keep:]
        self._cached = ids[:keep]  # what stays valid if this forward is interrupted
        tensor = torch.tensor([new], device=self.device)
        logits = self.model.forward(tensor, keep)[:, -1] if keep else self.model.prefill(tensor)
        self._cached = list(ids)
        return logits

    @torch.inference_mode()
    def stream(self, prompt: str | Sequence[int], max_new_tokens: int = 128, *, temperature: float = 0.8,
               top_k: int = 40, top_p: float = 0.95, seed: int | None = None, stop: Iterable[str] | str | None = None,
               ignore_eos: bool = False, result: Generation | None = None) -> Iterator[str]:
        """Yield the reply piece by piece; ``result`` (if given) is filled in as it goes."""
        params = SamplingParams(temperature, top_k, top_p)
        ids = self.encode(prompt)
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be >= 0 (got {max_new_tokens})")
        if len(ids) + max_new_tokens > self.n_ctx:
            raise InputError(f"prompt of {len(ids)} tokens + {max_new_tokens} new ones is longer than the model's "
                             f"context of {self.n_ctx}")
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        gen = result if result is not None else Generation("", [], len(ids), "length")
        gen.prompt_tokens, gen.text, gen.tokens, gen.finish_reason = len(ids), "", [], "length"
        if max_new_tokens == 0:
            return
        generator = None
        if seed is not None:
            generator = torch.Generator(self.device).manual_seed(seed)
        decoder = self.tokenizer.stream()
        stop_ids = set() if ignore_eos else set(self.tokenizer.stop_ids)
        reader = _TokenReader(self.device)
        t0 = time.perf_counter()
        next_token = sample(self._prefill(ids), params, generator)
        pending = ""  # text held back because it may be the start of a stop string
        t1 = t0
        for step in range(max_new_tokens):
            on_device = next_token
            reader.start(on_device)
            if step + 1 < max_new_tokens:
                # The next step is queued before this token reaches the host, so the device computes it while
                # the host detokenizes and checks stops. The token joins the cached sequence as its step is
                # queued: stream order puts its keys and values in the cache before anything that reads them,
                # so an interrupted reply (Ctrl-C) leaves the cache consistent.
                logits = self.model.decode(on_device.view(1, 1), len(self._cached))
                self._cached.append(-1)
                next_token = sample(logits, params, generator)
            token = reader.wait()
            if step + 1 < max_new_tokens:
                self._cached[-1] = token
            if step == 0:
                t1 = time.perf_counter()
                gen.prefill_s = t1 - t0
            gen.tokens.append(token)
            if token in stop_ids:
                gen.finish_reason = "stop"
                break
            pending += decoder.push(token)
            cut = _find_stop(pending, stops)
            if cut is not None:
                gen.text += pending[:cut]
                yield pending[:cut]
                pending = ""
                gen.finish_reason = "stop"
                break
            safe = len(pending) - _held_back(pending, stops)
            if safe:
                gen.text += pending[:safe]
                yield pending[:safe]
                pending = pending[safe:]
        else:
            pending += decoder.flush()
            cut = _find_stop(pending, stops)
            tail = pending if cut is None else pending[:cut]
            if tail:
                gen.text += tail
                yield tail
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        gen.decode_s = time.perf_counter() - t1

    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 128, *, stream: bool = False,
                 **options: Any) -> Generation | Iterator[str]:
        """Generate up to ``max_new_tokens`` after ``prompt`` (text or token ids).

        Options: temperature (0 = greedy; default 0.8), top_k (40; 0 = off), top_p (0.95), seed, stop (strings
        that end the reply, not included), ignore_eos.  ``stream=True`` returns an iterator of text pieces.
        """
        if stream:
            return self.stream(prompt, max_new_tokens, **options)
        gen = Generation("", [], 0, "length")
        for _ in self.stream(prompt, max_new_tokens, result=gen, **options):
            pass
        return gen

    def render_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        from .chat import render_chat

        template = self.tokenizer.chat_template
        if not template:
            raise TensorLogicError(f"{self.path.name}: the model has no chat template (tokenizer.chat_template)")
        tok = self.tokenizer
        bos = tok.id_to_piece(tok.bos_id) if tok.bos_id is not None else ""
        eos = tok.id_to_piece(tok.eos_id) if tok.eos_id is not None else ""
        return render_chat(template, list(messages), add_generation_prompt=add_generation_prompt, bos_token=bos,
                           eos_token=eos)

    def chat_ids(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        text = self.render_chat(messages)
        tok = self.tokenizer
        bos = tok.id_to_piece(tok.bos_id) if tok.bos_id is not None else None
        # Templates that write the BOS token themselves must not get a second one.
        add_bos = tok.add_bos and not (bos and text.startswith(bos))
        return tok.encode(text, add_bos=add_bos)

    def chat(self, messages: Sequence[dict[str, Any]], max_new_tokens: int = 256, *, stream: bool = False,
             **options: Any) -> Generation | Iterator[str]:
        """Reply to ``messages`` ([{"role": ..., "content": ...}]) using the model's chat template."""
        return self.generate(self.chat_ids(messages), max_new_tokens, stream=stream, **options)

    @torch.inference_mode()
    def prefill_benchmark(self, n_tokens: int, seed: int = 0) -> float:
        """Seconds for one forward of ``n_tokens`` random ids from an empty cache (llama-bench's pp)."""
        ids = torch.randint(0, self.config.n_vocab, (1, n_tokens), generator=torch.Generator().manual_seed(seed))
        ids = ids.to(self.device)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        self.model.prefill(ids)
        sync()
        self._cached = []
        return time.perf_counter() - t0


class _TokenReader:
    """Brings a sampled token id to the host without waiting for work queued after it (CUDA: a pinned buffer
    and an event; elsewhere a plain read)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.host = torch.empty(1, dtype=torch.long, pin_memory=True)
            self.event = torch.cuda.Event()
        self.value: torch.Tensor | None = None

    def start(self, token: torch.Tensor) -> None:
        if self.cuda:
            self.host.copy_(token.reshape(1), non_blocking=True)
            self.event.record()
        else:
            self.value = token

    def wait(self) -> int:
        if self.cuda:
            self.event.synchronize()
            return int(self.host[0])
        return int(self.value.reshape(-1)[0])


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


def _open(path: str | Path) -> GGUFFile:
    from ..formats import open_model_file

    found = open_model_file(path)
    if not isinstance(found, GGUFFile):
        raise InputError(f"{path}: an LLM needs a GGUF file (this is {found.format})")
    return found


def load_llm(path: str | Path | GGUFFile, *, device: Any = None, dtype: Any = None, n_ctx: int | None = None,
             tokenizer: Any = None) -> LLM:
    """Load a llama/mistral/qwen2/phi3 GGUF for generation (device: "cuda", "cpu" or None = best)."""
    return LLM(path, device=device, dtype=dtype, n_ctx=n_ctx, tokenizer=tokenizer)
