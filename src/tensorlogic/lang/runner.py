"""``tl run FILE.tl``: run a script file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TensorLogicError
from .builtins import Context
from .evaluator import Interpreter


def run_file(path: str | os.PathLike, device: str | None = None) -> int:
    """Run a TensorLogic script; errors raise ``ScriptError`` (the CLI prints them). Returns the exit code."""
    script = Path(path)
    if not script.is_file():
        raise TensorLogicError(f"{script}: no such script")
    try:
        source = script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TensorLogicError(f"{script}: cannot read the script ({e})") from None
    ctx = Context(base_dir=script.resolve().parent, device=device)
    Interpreter(ctx).run(source, str(path), path=script)
    return 0
