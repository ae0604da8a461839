"""Terms of the logic engine: variables, atoms, comparisons, rules, and the one error type."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

from ..errors import TensorLogicError

Constant = Union[str, int, float, bool]  # noqa: UP007 (a runtime alias, py3.10 needs Union here)
Term = Union["Var", Constant]  # noqa: UP007
OPS = ("==", "!=", "<", "<=", ">", ">=")
ANON = "_"


class LogicError(TensorLogicError):
    """A logic program is malformed (unknown name, arity, type, safety, stratification).

    ``where`` is an optional ``(line, col)`` that the language fills in; the message stands alone.
    """

    def __init__(self, message: str, where: tuple[int, int] | None = None):
        self.message = message
        self.where = where
        super().__init__(message)

    def __str__(self) -> str:
        if self.where is None:
            return self.message
        return f"{self.where[0]}:{self.where[1]}: {self.message}"


@dataclass(frozen=True)
class Var:
    """A logic variable; ``Var("_")`` is anonymous (every occurrence is a fresh variable)."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Atom:
    """``relation(args...)``, optionally negated (``not relation(args...)``) inside a rule body."""

    relation: str
    args: tuple = ()
    negated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        for a in self.args:
            check_term(a)

    def __str__(self) -> str:
        inner = ", ".join(term_str(a) for a in self.args)
        return f"{'not ' if self.negated else ''}{self.relation}({inner})"


@dataclass(frozen=True)
class Compare:
    """A filter ``a op b`` with op in == != < <= > >=; both sides must be bound when it is checked."""

    op: str
    left: Term
    right: Term

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise LogicError(f"unknown comparison operator '{self.op}' (use one of {' '.join(OPS)})")
        check_term(self.left)
        check_term(self.right)

    @property
    def args(self) -> tuple:
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"{term_str(self.left)} {self.op} {term_str(self.right)}"


Literal = Union[Atom, Compare]  # noqa: UP007


@dataclass(frozen=True)
class Rule:
    """``head <- body``: the body is a tuple of atoms (possibly negated) and comparisons."""

    head: Atom
    body: tuple = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "body", tuple(self.body))

    def __str__(self) -> str:
        return f"{self.head} <- {', '.join(str(b) for b in self.body)}"


def check_term(t: object) -> None:
    if isinstance(t, Var):
        return
    if not isinstance(t, (str, int, float, bool)):
        raise LogicError(f"a constant must be str, int, float or bool, got {type(t).__name__}")
    if isinstance(t, float) and math.isnan(t):
        raise LogicError("a constant cannot be NaN")


def term_str(t: object) -> str:
    return str(t) if isinstance(t, Var) else repr(t) if not isinstance(t, str) else t


def named_vars(args: tuple) -> list[str]:
    """Named (non-anonymous) variables in first-occurrence order."""
    out: list[str] = []
    for a in args:
        if isinstance(a, Var) and a.name != ANON and a.name not in out:
            out.append(a.name)
    return out


def answer_vars(args: tuple) -> list[str]:
    """The variables a query reports: named ones, not ``_`` nor its renamed-apart copies ``_#n``."""
    return [v for v in named_vars(args) if not v.startswith(ANON + "#")]


def rename_anonymous(args: tuple, start: int = 0) -> tuple:
    """Every ``_`` as its own variable ``_#n`` (each occurrence of ``_`` is a fresh variable)."""
    out, n = [], start
    for a in args:
        if isinstance(a, Var) and a.name == ANON:
            n += 1
            a = Var(f"{ANON}#{n}")
        out.append(a)
    return tuple(out)


def compare_values(op: str, a: Constant, b: Constant) -> bool:
    """The one comparison rule both engines use.

    == and != compare constants by identity (numbers by value); the order operators compare two numbers
    numerically and two strings lexicographically; an order comparison of mixed kinds (or of bools) is false.
    """
    if op == "==":
        return same_constant(a, b)
    if op == "!=":
        return not same_constant(a, b)
    if is_num(a) and is_num(b):
        pass
    elif isinstance(a, str) and isinstance(b, str):
        pass
    else:
        return False
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def is_num(c: object) -> bool:
    return isinstance(c, (int, float)) and not isinstance(c, bool)


def const_key(c: Constant) -> tuple:
    """Identity of a constant: bools, numbers and strings never coincide (True is not 1)."""
    if isinstance(c, bool):
        return ("b", c)
    if isinstance(c, (int, float)):
        return ("n", c)
    return ("s", c)


def same_constant(a: Constant, b: Constant) -> bool:
    return const_key(a) == const_key(b)
