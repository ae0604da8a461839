"""The TensorLogic syntax tree: frozen dataclasses, each with the 1-based line and column it starts at."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Node:
    """Base of every node; ``line``/``col`` are 1-based and point at the construct's first character."""

    line: int = 0
    col: int = 0


# ---------------------------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num(Node):
    value: int | float


@dataclass(frozen=True)
class Str(Node):
    value: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class DictLit(Node):
    items: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True)
class BinOp(Node):
    """``left op right``; the position is the operator's. ``and``/``or`` short-circuit."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str
    operand: Expr


@dataclass(frozen=True)
class Call(Node):
    """``func(args, key: value)``; the position is the callee's name (the method name for ``x.m()``)."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True)
class Slice(Node):
    start: Expr | None
    stop: Expr | None
    step: Expr | None


@dataclass(frozen=True)
class Index(Node):
    target: Expr
    items: tuple[Expr | Slice, ...]


@dataclass(frozen=True)
class Attr(Node):
    """``target.name``; the position is the attribute name's."""

    target: Expr
    name: str


@dataclass(frozen=True)
class TensorCtor(Node):
    """``tensor<dtype>(data, device: gpu)``; ``dtype`` is None for plain ``tensor(...)``."""

    dtype: str | None
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]


Expr = Num | Str | Bool | Name | ListLit | DictLit | BinOp | UnaryOp | Call | Index | Attr | TensorCtor


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class TypeSpec(Node):
    """``float16[N, 3, ?]``: ``dims`` holds ints, shape-variable names and ``"?"``; None when no brackets."""

    base: str
    dims: tuple[int | str, ...] | None


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: TypeSpec | None


# ---------------------------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Let(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Assign(Node):
    """``target = value`` or ``target := value``; ``target`` is a Name or an Index."""

    target: Expr
    value: Expr
    op: str


@dataclass(frozen=True)
class TensorDecl(Node):
    name: str
    type: TypeSpec
    qualifier: str | None
    value: Expr | None


@dataclass(frozen=True)
class ExprStmt(Node):
    expr: Expr


@dataclass(frozen=True)
class If(Node):
    cond: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]


@dataclass(frozen=True)
class For(Node):
    var: str
    iter: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class While(Node):
    cond: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Break(Node):
    pass


@dataclass(frozen=True)
class Continue(Node):
    pass


@dataclass(frozen=True)
class Return(Node):
    value: Expr | None


@dataclass(frozen=True)
class FnDecl(Node):
    """A function; ``file`` is the script it was written in, for error locations when called from elsewhere."""

    name: str
    params: tuple[Param, ...]
    ret: TypeSpec | None
    body: tuple[Stmt, ...]
    file: str


@dataclass(frozen=True)
class Import(Node):
    path: str


@dataclass(frozen=True)
class Main(Node):
    body: tuple[Stmt, ...]


Stmt = Let | Assign | TensorDecl | ExprStmt | If | For | While | Break | Continue | Return


@dataclass(frozen=True)
class Program(Node):
    items: tuple[Stmt | FnDecl | Import | Main, ...]
    file: str
