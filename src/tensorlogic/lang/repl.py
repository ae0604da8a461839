"""``tl repl`` (and bare ``tl``): an interactive prompt with line editing and history where readline exists."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ScriptError
from .evaluator import ScriptInterpreter
from .parser import parse
from .values import Context

PROMPT = "tl> "
MORE = "... "
BANNER = "TensorLogic REPL — statements run as you type; expressions print their value. Ctrl-D quits."


def history_path() -> Path:
    """Where the REPL keeps its history: $TL_HISTORY, else ~/.tl_history."""
    return Path(os.environ.get("TL_HISTORY") or Path.home() / ".tl_history")


def _readline() -> Any:
    try:
        import readline
    except ImportError:
        return None
    return readline


def _incomplete(source: str) -> bool:
    """True when the text so far ends inside a bracket, block, comment or expression."""
    try:
        parse(source, "<repl>")
    except ScriptError as e:
        return getattr(e, "incomplete", False)
    return False


def repl(device: str | None = None) -> int:
    """Read-eval-print loop over stdin; returns 0 at end of input."""
    rl = _readline()
    hist = history_path()
    interactive = sys.stdin.isatty()
    if rl is not None:
        try:
            rl.read_history_file(hist)
        except (FileNotFoundError, OSError):
            pass
        rl.set_history_length(1000)
    interp = ScriptInterpreter(Context(base_dir=Path.cwd(), device=device))
    if interactive:
        print(BANNER)
    buffer: list[str] = []
    count = 0
    try:
        while True:
            prompt = (MORE if buffer else PROMPT) if interactive else ""
            try:
                line = input(prompt)
            except EOFError:
                if buffer:
                    _run(interp, "\n".join(buffer), count + 1)
                break
            except KeyboardInterrupt:
                print("\nKeyboardInterrupt", file=sys.stderr)
                buffer = []
                continue
            if rl is not None and not interactive and line.strip():
                # readline records lines typed at a terminal by itself; piped input is added here.
                rl.add_history(line)
            buffer.append(line)
            text = "\n".join(buffer)
            if not text.strip() or _incomplete(text):
                if not text.strip():
                    buffer = []
                continue
            buffer = []
            count += 1
            _run(interp, text, count)
    finally:
        if rl is not None:
            try:
                hist.parent.mkdir(parents=True, exist_ok=True)
                rl.write_history_file(hist)
            except OSError as e:
                print(f"tl: note: could not save history to {hist}: {e}", file=sys.stderr)
    return 0


def _run(interp: ScriptInterpreter, text: str, number: int) -> None:
    # Each input gets its own name, so an error inside a function typed earlier shows that input's line.
    try:
        interp.run(text, f"<repl#{number}>", echo=True)
    except ScriptError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
