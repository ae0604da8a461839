"""The TensorLogic syntax tree: frozen dataclasses, each with the 1-based line and column it starts at.

One node per construct of the language (docs/LANGUAGE.md). The parser builds them; the evaluator walks
them by class name (``exec_<Stmt>`` / ``eval_<Expr>``); the logic engine reads the logic nodes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Node:
    """Base of every node; ``line``/``col`` are 1-based and point at the construct's first character."""

    line: int = 0
    col: int = 0


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class TypeSpec(Node):
    """A written type.

    ``float16[N, 3, ?]``: ``base`` "float16", ``dims`` ints, shape-variable names and ``"?"``.
    ``int``, ``string``, ``void``, ``Point``: ``dims`` None. ``Box<T>``: ``args`` holds the type arguments.
    """

    base: str
    dims: tuple[int | str, ...] | None = None
    args: tuple[TypeSpec, ...] = ()


# ---------------------------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num(Node):
    """An integer (Python int, 64-bit semantics) or a float literal."""

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
    """``[a, b, c]``: a 1-D literal of numbers is an array; nested literals become a tensor."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class TupleLit(Node):
    """``(a, b)``: a tuple (at least two items, or one with a trailing comma)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class DictLit(Node):
    items: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True)
class BinOp(Node):
    """``left op right``; the position is the operator's. ``and``/``or`` short-circuit.

    ``op`` is the operator as written, normalised: ``and``, ``or``, ``==``, ``!=``, ``<``, ``<=``, ``>``,
    ``>=``, ``≈``, ``+``, ``-``, ``*``, ``/``, ``%``, ``@``, ``**``, ``⊙`` (element-wise product),
    ``⊗`` (outer product).
    """

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Node):
    """``-x``, ``not x`` (also ``!x``), ``inv x`` (matrix inverse)."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Cast(Node):
    """``x as int`` (also float, i32, i64, f16, f32, f64, bool); the position is the ``as``."""

    value: Expr
    type: str


@dataclass(frozen=True)
class Call(Node):
    """``func(args, key: value)``; the position is the callee's name (the method name for ``x.m()``)."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...] = ()


@dataclass(frozen=True)
class Path(Node):
    """``Type::name`` (``f32::zeros``, ``Tensor::ones``, ``IntVec::new``, ``Box<T>::new``)."""

    type: TypeSpec
    name: str


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


@dataclass(frozen=True)
class StructLit(Node):
    """``Point { x: 1.0, y: 2.0 }`` (also ``Box<int> { value: 3 }``)."""

    type: TypeSpec
    fields: tuple[tuple[str, Expr], ...]


# Patterns of ``match`` arms.
@dataclass(frozen=True)
class PWild(Node):
    """``_``"""


@dataclass(frozen=True)
class PLit(Node):
    """A number, string or boolean literal (a negative number is a literal too)."""

    value: int | float | str | bool


@dataclass(frozen=True)
class PVar(Node):
    """A name: binds the matched value in the arm."""

    name: str


@dataclass(frozen=True)
class PTuple(Node):
    items: tuple[Pattern, ...]


@dataclass(frozen=True)
class PStruct(Node):
    """``Point { x: 0, y }``: a field without a pattern binds the field's value to its name."""

    type: str
    fields: tuple[tuple[str, Pattern], ...]


@dataclass(frozen=True)
class POr(Node):
    """``1 | 2 | 3``"""

    alts: tuple[Pattern, ...]


Pattern = PWild | PLit | PVar | PTuple | PStruct | POr


@dataclass(frozen=True)
class MatchArm(Node):
    pattern: Pattern
    guard: Expr | None
    body: Expr | tuple[Stmt, ...]  # an expression, or a ``{ ... }`` block whose last expression is the value


@dataclass(frozen=True)
class Match(Node):
    subject: Expr
    arms: tuple[MatchArm, ...]


@dataclass(frozen=True)
class IfExpr(Node):
    """``if c { a } else { b }`` used as a value (an ``If`` statement in expression position)."""

    stmt: If


Expr = (
    Num | Str | Bool | Name | ListLit | TupleLit | DictLit | BinOp | UnaryOp | Cast | Call | Path | Index | Attr
    | TensorCtor | StructLit | Match | IfExpr
)


# ---------------------------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Param(Node):
    """A parameter; ``self`` has ``type`` None and ``name`` "self"."""

    name: str
    type: TypeSpec | None


@dataclass(frozen=True)
class Let(Node):
    """``let name [: type] = value``: declares ``name`` in the current block (shadowing)."""

    name: str
    value: Expr
    type: TypeSpec | None = None


@dataclass(frozen=True)
class Assign(Node):
    """``target = value`` / ``target := value``; ``target`` is a Name, an Index or an Attr.

    ``op`` is ``=``, ``:=``, or a compound ``+=``, ``-=``, ``*=``, ``/=``.
    """

    target: Expr
    value: Expr
    op: str


@dataclass(frozen=True)
class TensorDecl(Node):
    """``tensor w: float16[3, 4] [learnable|frozen] [= value]``."""

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
    orelse: tuple[Stmt, ...]  # empty, a block, or one If for ``else if``


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
class Loop(Node):
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Block(Node):
    """A bare ``{ ... }`` block: its own scope."""

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
class PythonImport(Node):
    """``python import numpy as np``"""

    module: str
    alias: str | None


# ------------------------------------------------------------------------------------- logic and learning
# Parsed here; carried out by tensorlogic.logic / tensorlogic.train.


@dataclass(frozen=True)
class EntityDecl(Node):
    """``entity Person`` (open: members come from facts) or ``entity Person = {alice, bob}``."""

    name: str
    members: tuple[str, ...] | None


@dataclass(frozen=True)
class RelationDecl(Node):
    """``relation Parent(x: Person, y: Person) [embed float16[32]]``."""

    name: str
    params: tuple[Param, ...]
    embed: TypeSpec | None


@dataclass(frozen=True)
class Atom(Node):
    """``Parent(alice, X)``: args are Names (constants or variables), numbers or strings."""

    predicate: str
    args: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True)
class Rule(Node):
    """``Head(X, Z) <- Body1(X, Y), Body2(Y, Z), X != Z``: body items are Atoms or comparison Exprs."""

    head: Atom
    body: tuple[Atom | Expr, ...]


@dataclass(frozen=True)
class Query(Node):
    """``Ancestor(X, charlie)? [where X != bob, ...]``."""

    atom: Atom
    where: tuple[Expr, ...]


@dataclass(frozen=True)
class Infer(Node):
    """``infer forward Q?``; ``infer { forward Q1? backward Q2? }`` is several of these in one Block."""

    method: str
    query: Query


@dataclass(frozen=True)
class Learn(Node):
    """``learn { stmts objective: e, optimizer: sgd(lr: 0.1), epochs: N [, scheduler: s(...)] }``."""

    body: tuple[Stmt, ...]
    objective: Expr
    optimizer: str
    optimizer_args: tuple[tuple[str, int | float], ...]
    epochs: Expr
    scheduler: str | None = None
    scheduler_args: tuple[tuple[str, int | float], ...] = ()
    optimizer_pos: tuple[int, int] = (0, 0)  # line, col of the optimizer's name (errors point there)
    scheduler_pos: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class With(Node):
    """``with Person { facts and statements }``."""

    entity: str
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class EmbeddingDecl(Node):
    """``embedding E { entities: {a, b} | auto | Type, dimension: 32, init: xavier }`` (also relation_embedding)."""

    kind: str  # "embedding" or "relation_embedding"
    name: str
    members: tuple[str, ...] | str  # the names in braces, or "auto" / "all" / an entity type name
    dimension: int
    init: str | None


Stmt = (
    Let | Assign | TensorDecl | ExprStmt | If | For | While | Loop | Block | Break | Continue | Return
    | PythonImport | EntityDecl | RelationDecl | Rule | Query | Infer | Learn | With | EmbeddingDecl
)


# ---------------------------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class FnDecl(Node):
    """A function or method; ``file`` is the script it was written in, for error locations from elsewhere."""

    name: str
    params: tuple[Param, ...]
    ret: TypeSpec | None  # None when not written (methods may omit it); TypeSpec("void") for void
    body: tuple[Stmt, ...]
    file: str
    type_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Field(Node):
    name: str
    type: TypeSpec
    qualifier: str | None = None


@dataclass(frozen=True)
class StructDecl(Node):
    name: str
    type_params: tuple[str, ...]
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class ImplBlock(Node):
    """``impl<T> [Trait for] Type<T> { fn ... }``; ``trait`` is e.g. "Drop" or None."""

    type: TypeSpec
    trait: str | None
    type_params: tuple[str, ...]
    methods: tuple[FnDecl, ...]


@dataclass(frozen=True)
class Import(Node):
    path: str


@dataclass(frozen=True)
class Main(Node):
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class TestBlock(Node):
    """``test NAME { ... }``; run by ``tl test``."""

    name: str
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class BenchBlock(Node):
    """``bench NAME { ... }``; run by ``tl run --bench``."""

    name: str
    body: tuple[Stmt, ...]


Decl = FnDecl | StructDecl | ImplBlock | Import | Main | TestBlock | BenchBlock


@dataclass(frozen=True)
class Program(Node):
    """Top-level items in source order: declarations and statements (scripts may have no ``main``)."""

    items: tuple[Decl | Stmt, ...]
    file: str
