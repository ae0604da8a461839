"""``tl generate`` and ``tl chat``: text generation from a GGUF model on the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a GGUF LLM, streaming, with tokens/s")
    _common(p)
    p.add_argument("-p", "--prompt", required=True, help="the prompt text ('-' reads standard input)")
    p.add_argument("-n", "--max-tokens", type=int, default=128, help="new tokens at most (default 128)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive chat with a GGUF LLM (/reset, /exit; Ctrl-C stops a reply)")
    _common(p)
    p.add_argument("-n", "--max-tokens", type=int, default=512, help="new tokens per reply at most (default 512)")
    p.add_argument("--system", default=None, help="a system message opening the conversation")
    p.set_defaults(func=cmd_chat)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .gguf file (llama, mistral, qwen2 or phi3)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--dtype", default=None, choices=["f16", "bf16", "f32"],
                   help="activation type (default f16 on CUDA, f32 on CPU; on the CPU, f16 runs F16/BF16 weights "
                   "~10x faster and bf16 Q4_0/Q4_K weights ~40x faster)")
    p.add_argument("--ctx", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--tokenizer", default=None, help="a tokenizer.json to use instead of the GGUF's own")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="0 = off (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="1 = off (default 0.95)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", help="end the reply at TEXT (repeatable)")


def _load(args: argparse.Namespace) -> Any:
    from . import load_llm

    return load_llm(args.model, device=args.device, dtype=args.dtype, n_ctx=args.ctx, tokenizer=args.tokenizer)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
            "stop": args.stop}


def _report(gen: Any) -> None:
    print(f"\n[prompt {gen.prompt_tokens} tokens, {gen.prefill_tok_s:,.1f} tok/s; generated {len(gen.tokens)} "
          f"tokens, {gen.decode_tok_s:,.1f} tok/s; {gen.finish_reason}]", file=sys.stderr)


def _stream(llm: Any, prompt: Any, max_tokens: int, options: dict[str, Any]) -> Any:
    """Print the reply as it comes; Ctrl-C ends it early.  Returns the (possibly partial) Generation."""
    from .generate import Generation

    gen = Generation("", [], 0, "length")
    pieces = llm.stream(prompt, max_tokens, result=gen, **options)
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pieces.close()
        gen.finish_reason = "interrupted"
    return gen


def cmd_generate(args: argparse.Namespace) -> int:
    llm = _load(args)
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    prompt: Any = llm.chat_ids([{"role": "user", "content": text}]) if args.chat else text
    gen = _stream(llm, prompt, args.max_tokens, _options(args))
    _report(gen)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    llm = _load(args)
    opening = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(opening)
    print(f"{llm.path.name}: {llm.config.arch}, {llm.config.n_layer} layers, context {llm.n_ctx}, on "
          f"{llm.device}. /reset starts over, /exit leaves, Ctrl-C stops a reply.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            messages = list(opening)
            llm.reset()
            print("[conversation cleared]", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        gen = _stream(llm, llm.chat_ids(messages), args.max_tokens, _options(args))
        print()
        messages.append({"role": "assistant", "content": gen.text})
        _report(gen)
