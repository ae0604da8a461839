"""Source text → a list of tokens for the TensorLogic parser.

Whitespace (newlines included) only separates tokens, and comments (``//`` to the end of the line,
``/* ... */``) are dropped. The lexer keeps no state between calls, so any number of threads may use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ScriptError

# Words that are never names. Every other word is a name; the parser gives a few of them (main, test,
# entity, learn, ...) a meaning only where their construct can start.
HARD_KEYWORDS = frozenset(
    "let fn function if else for in while loop break continue return true false not and or as match struct "
    "impl tensor".split()
)

# By first character, longest first, so that '**' wins over '*' and '::' over ':'. '<-' is deliberately
# absent: the parser takes '<' directly followed by '-' as a rule arrow only after a relation atom at the
# start of a statement, so that 'x<-1' still compares x with -1.
_OPERATORS: dict[str, list[str]] = {}
for _op in sorted(
    "-> => :: := += -= *= /= && || == != <= >= ** ~= + - * / % @ < > = ! ? | ~ ( ) [ ] { } , ; : . ⊙ ⊗ ≈".split(),
    key=len,
    reverse=True,
):
    _OPERATORS.setdefault(_op[0], []).append(_op)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


@dataclass(frozen=True, slots=True)
class Token:
    """One token. ``kind`` is NAME, KW (hard keyword), INT, FLOAT, IMAG, STR, OP or EOF.

    ``text`` is the token as written; ``value`` the int, float or unescaped string for literals (the number
    before the 'i' for IMAG) and the text otherwise, with '~=' read as '≈'. ``line``/``col`` are 1-based;
    ``start`` is the offset of the first character and ``end`` the offset just past the token (the parser
    uses them to tell whether two tokens touch).
    """

    kind: str
    text: str
    value: object
    line: int
    col: int
    start: int
    end: int


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_name_char(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


def line_of(source: str, line: int) -> str | None:
    """The text of 1-based ``line`` of ``source`` (lines split at '\\n' only, as the lexer counts them)."""
    lines = source.split("\n")
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else None


def tokenize(source: str, file: str = "<script>") -> list[Token]:
    """Split ``source`` into tokens, ending with one EOF token placed just after the last real token."""
    tokens: list[Token] = []
    n = len(source)
    i = 0
    line, line_start = 1, 0
    if source.startswith("\ufeff"):
        i = 1
        line_start = 1

    def error(message: str, at: int, at_line: int, at_line_start: int) -> ScriptError:
        return ScriptError(message, file, at_line, at - at_line_start + 1, line_of(source, at_line))

    while i < n:
        ch = source[i]
        if ch == "\n":
            i += 1
            line, line_start = line + 1, i
            continue
        if ch in " \t\r\f\v":
            i += 1
            continue
        if source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
            continue
        if source.startswith("/*", i):
            j = source.find("*/", i + 2)
            if j < 0:
                err = error(
                    f"unterminated comment: the '/*' at line {line}, column {i - line_start + 1} is never closed",
                    i, line, line_start,
                )
                err.incomplete = True  # more input may close it (the REPL asks for another line)
                raise err
            line += source.count("\n", i, j)
            nl = source.rfind("\n", i, j)
            if nl >= 0:
                line_start = nl + 1
            i = j + 2
            continue
        col = i - line_start + 1
        start = i
        if ch.isdigit() and ch.isascii():
            j = i
            while j < n and source[j].isdigit() and source[j].isascii():
                j += 1
            is_float = False
            if j + 1 < n and source[j] == "." and source[j + 1].isdigit() and source[j + 1].isascii():
                j += 1
                while j < n and source[j].isdigit() and source[j].isascii():
                    j += 1
                is_float = True
            if j < n and source[j] in "eE":
                k = j + 1
                if k < n and source[k] in "+-":
                    k += 1
                if k < n and source[k].isdigit() and source[k].isascii():
                    while k < n and source[k].isdigit() and source[k].isascii():
                        k += 1
                    j = k
                    is_float = True
            text = source[i:j]
            value: object = float(text) if is_float else int(text)
            kind = "FLOAT" if is_float else "INT"
            # '2.0i' is the imaginary part of a complex literal, which the parser rejects by name.
            if j < n and source[j] == "i" and not (j + 1 < n and _is_name_char(source[j + 1])):
                j += 1
                kind, text = "IMAG", source[i:j]
            tokens.append(Token(kind, text, value, line, col, start, j))
            i = j
            continue
        if _is_name_start(ch):
            j = i + 1
            while j < n and _is_name_char(source[j]):
                j += 1
            text = source[i:j]
            tokens.append(Token("KW" if text in HARD_KEYWORDS else "NAME", text, text, line, col, start, j))
            i = j
            continue
        if ch in "\"'":
            out: list[str] = []
            j = i + 1
            while True:
                if j >= n or source[j] == "\n":
                    raise error(f"unterminated string: no closing {ch} on this line", i, line, line_start)
                c = source[j]
                if c == ch:
                    break
                if c == "\\" and j + 1 < n and source[j + 1] != "\n":
                    nxt = source[j + 1]
                    # An unknown escape keeps its backslash, as the original does.
                    out.append(_ESCAPES.get(nxt, "\\" + nxt))
                    j += 2
                    continue
                out.append(c)
                j += 1
            tokens.append(Token("STR", source[i:j + 1], "".join(out), line, col, start, j + 1))
            i = j + 1
            continue
        for op in _OPERATORS.get(ch, ()):
            if source.startswith(op, i):
                value = "≈" if op == "~=" else op
                tokens.append(Token("OP", op, value, line, col, start, i + len(op)))
                i += len(op)
                break
        else:
            raise error(f"unexpected character {ch!r}", i, line, line_start)
    if tokens:
        last = tokens[-1]
        end_line = last.line  # no token spans lines
        end_col = last.col + (last.end - last.start)
        tokens.append(Token("EOF", "", "", end_line, end_col, last.end, last.end))
    else:
        tokens.append(Token("EOF", "", "", 1, 1, 0, 0))
    return tokens
