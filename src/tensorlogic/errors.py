"""One exception tree for everything a user can cause.

Every message is one line and names where the problem is: the file and byte offset (formats),
the op (runtime) or the script line and column (language). The CLI prints ``str(error)`` and
exits 2; tracebacks appear only with ``TL_DEBUG=1``.
"""

from __future__ import annotations

import os


class TensorLogicError(Exception):
    """Root of every error TensorLogic raises on purpose."""


class FormatError(TensorLogicError):
    """A model file is not what it claims to be, or is damaged.

    ``path`` is the file (or folder) and ``offset`` the byte offset where reading went wrong,
    when one applies.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, offset: int | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.offset = offset
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<input>"
        if self.offset is not None:
            where += f" at byte {self.offset}"
        return f"{where}: {self.message}"


class UnsupportedError(TensorLogicError):
    """A valid model uses something TensorLogic cannot run (an op, a layer, an Apple-only resource)."""


class OpError(TensorLogicError):
    """An op failed while running; says which op, which output, and what it was given."""

    def __init__(self, message: str, op: str | None = None, var: str | None = None, inputs: str | None = None):
        self.message = message
        self.op = op
        self.var = var
        self.inputs = inputs
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.op:
            parts.append(f"op {self.op}")
        if self.var:
            parts.append(f"-> {self.var}")
        head = " ".join(parts)
        tail = f" (inputs: {self.inputs})" if self.inputs else ""
        return f"{head}: {self.message}{tail}" if head else f"{self.message}{tail}"


class InputError(TensorLogicError):
    """Inputs given to predict do not match the model's description (name, shape, dtype, state)."""


class JobError(TensorLogicError):
    """A batch job failed as a whole (its Ray cluster, or an actor that cannot start), not row by row."""


class ScriptError(TensorLogicError):
    """A TensorLogic script failed to parse or to run.

    Rendered as ``file:line:col: message`` followed by the source line and a caret.
    """

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        col: int | None = None,
        source_line: str | None = None,
    ):
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.source_line = source_line
        super().__init__(str(self))

    def __str__(self) -> str:
        loc = self.file or "<script>"
        if self.line is not None:
            loc += f":{self.line}"
            if self.col is not None:
                loc += f":{self.col}"
        text = f"{loc}: {self.message}"
        if self.source_line is not None and self.col is not None:
            text += f"\n    {self.source_line}\n    {' ' * (self.col - 1)}^"
        return text
