"""``tl run FILE.tl`` / ``tl test FILE.tl`` / ``tl run --bench FILE.tl``: run a script file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TensorLogicError
from .evaluator import ScriptInterpreter
from .values import Context


def _read(path: str | os.PathLike) -> tuple[Path, str]:
    script = Path(path)
    if not script.is_file():
        raise TensorLogicError(f"{script}: no such script")
    try:
        return script, script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TensorLogicError(f"{script}: cannot read the script ({e})") from None


def run_file(path: str | os.PathLike, device: str | None = None, bench: bool = False,
             ctx: Context | None = None) -> int:
    """Run a script (its statements and ``main``; with ``bench`` its ``bench`` blocks after them).

    Errors raise ``ScriptError`` (the CLI prints them). Returns the exit code.
    """
    script, source = _read(path)
    ctx = ctx or Context(base_dir=script.resolve().parent, device=device)
    interp = ScriptInterpreter(ctx)
    interp.run(source, str(path), path=script)
    if bench:
        if not interp.benches:
            print("no bench blocks", file=ctx.stdout())
        interp.run_benches()
    return 0


def run_test_blocks(path: str | os.PathLike, device: str | None = None, ctx: Context | None = None) -> int:
    """Run the ``test`` blocks of a script: one line per block, a summary; exit code 1 if any failed."""
    script, source = _read(path)
    ctx = ctx or Context(base_dir=script.resolve().parent, device=device)
    interp = ScriptInterpreter(ctx)
    program = interp.load(source, str(path), path=script)
    interp.run_declarations(program)
    out = ctx.stdout()
    if not interp.tests:
        print(f"{path}: no test blocks", file=out)
        return 0
    passed, failed = interp.run_tests()
    print(f"{passed} passed, {failed} failed", file=out)
    return 1 if failed else 0
