"""The logic and learning statements of the language, carried out by ``tensorlogic.logic`` / ``tensorlogic.train``.

Terms: in facts, rules and queries a name is a **variable** when it is ``_`` or starts with an uppercase letter
followed only by uppercase letters, digits and underscores (``X``, ``Y2``, ``PERSON``); every other name
(``alice``, ``Alice``, ``bob_1``) is a **constant** standing for itself. Numbers and strings are constants.
A statement ``Rel(a, b)`` whose name is a declared relation (or a rule head) adds a fact; a user function or
builtin of that name is called instead, as in the original.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ScriptError
from . import ast
from .builtins import BUILTINS
from .format import format_value
from .values import BuiltinError

if TYPE_CHECKING:
    from .evaluator import ScriptInterpreter

_VARIABLE = re.compile(r"_|[A-Z][A-Z0-9_]*")
_INITS = ("random", "xavier", "he", "zeros", "ones")
SOFT_TEMPERATURE = 0.1


def is_variable(name: str) -> bool:
    """The one rule for variables vs constants (see the module docstring)."""
    return _VARIABLE.fullmatch(name) is not None


@dataclass(eq=False)
class EntityEmbedding:
    """``embedding E { entities: ..., dimension: D }``: a learnable [N, D] table indexed by entity name."""

    name: str
    members: list[str]
    dimension: int
    table: torch.Tensor
    source: str | None = None  # the entity type whose members it follows ("auto": every constant)
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {m: i for i, m in enumerate(self.members)}

    def row(self, key: str) -> torch.Tensor:
        if key not in self.index:
            known = ", ".join(self.members[:8]) + (", ..." if len(self.members) > 8 else "")
            raise BuiltinError(f"embedding {self.name} has no entity '{key}' (it has {known or 'none'})")
        return self.table[self.index[key]]

    def __str__(self) -> str:
        return f"Embedding {self.name} ({len(self.members)} × {self.dimension})"


@dataclass(frozen=True)
class EntityType:
    """An entity type used as a value (``entity_dim(Person)``)."""

    name: str

    def __str__(self) -> str:
        return self.name


class _Domains:
    """``ctx.entities``: the knowledge base's entity types as a read-only mapping name -> members."""

    def __init__(self, kb: Any):
        self.kb = kb

    def get(self, name: str, default: Any = None) -> Any:
        return self.kb.domain(name) if name in self.kb.entity_types() else default

    def __contains__(self, name: object) -> bool:
        return name in self.kb.entity_types()

    def __bool__(self) -> bool:
        return True


class LogicStatements:
    """Mixed into the script interpreter: one ``exec_`` method per logic/learning statement."""

    kb: Any

    def _kb(self: ScriptInterpreter) -> Any:
        if self.kb is None:
            from ..logic import KnowledgeBase

            self.kb = KnowledgeBase(device=str(self.ctx.torch_device()))
            self.ctx.entities = _Domains(self.kb)
        return self.kb

    def logic_name(self: ScriptInterpreter, name: str) -> Any:
        """A bare name the script does not define: an entity type (as a value) or an entity (its name)."""
        if self.kb is None:
            return None
        types = self.kb.entity_types()
        if name in types:
            return EntityType(name)
        if any(name in self.kb.domain(t) for t in types):
            return name
        return None

    def _logic_call(self: ScriptInterpreter, node: ast.Node, thunk: Any) -> Any:
        from ..logic import LogicError

        try:
            return thunk()
        except LogicError as e:
            raise self.error(node, str(e)) from None

    # ------------------------------------------------------------------ declarations
    def exec_EntityDecl(self: ScriptInterpreter, s: ast.EntityDecl) -> Any:
        kb = self._kb()
        self._logic_call(s, lambda: kb.declare_entity(s.name, members=list(s.members) if s.members else None))
        if s.members:
            print(f"✓ Entity type '{s.name}' registered with {len(s.members)} entities", file=self.ctx.stdout())
        else:
            print(f"✓ Entity type '{s.name}' registered (data-driven)", file=self.ctx.stdout())
        return None

    def exec_RelationDecl(self: ScriptInterpreter, s: ast.RelationDecl) -> Any:
        kb = self._kb()
        types = [p.type.base if p.type is not None else "entity" for p in s.params]
        self._logic_call(s, lambda: kb.declare_relation(s.name, types))
        self.relations.add(s.name)
        return None

    def exec_EmbeddingDecl(self: ScriptInterpreter, s: ast.EmbeddingDecl) -> Any:
        if s.init is not None and s.init not in _INITS:
            raise self.error(s, f"unknown init '{s.init}' (expected one of {', '.join(_INITS)})")
        if s.dimension <= 0:
            raise self.error(s, f"embedding {s.name}: dimension must be positive, got {s.dimension}")
        source = None
        if isinstance(s.members, tuple):
            members = list(s.members)
        elif s.kind == "relation_embedding":
            members = sorted(self.relations) if s.members == "all" else [s.members]
        else:
            source = s.members
            kb = self._kb()
            members = self._logic_call(s, lambda: list(kb.domain("entity" if s.members == "auto" else s.members)))
        table = _init_table(len(members), s.dimension, s.init or "xavier", self.ctx)
        emb = EntityEmbedding(s.name, members, s.dimension, table, source)
        self.declare(s.name, emb)
        what = "relations" if s.kind == "relation_embedding" else "entities"
        kind = "relation embedding" if s.kind == "relation_embedding" else "embedding"
        print(f"Initialized {kind} '{s.name}': {len(members)} {what} × {s.dimension} dimensions",
              file=self.ctx.stdout())
        return None

    # ------------------------------------------------------------------ facts, rules, queries
    def fact_relation(self: ScriptInterpreter, call: ast.Call) -> str | None:
        """The relation a call statement asserts a fact of, or None when it is an ordinary call."""
        if not isinstance(call.func, ast.Name) or call.kwargs:
            return None
        name = call.func.id
        if name not in self.relations or self.scope.find(name) is not None or name in BUILTINS:
            return None
        return name

    def add_fact(self: ScriptInterpreter, name: str, call: ast.Call) -> None:
        terms = tuple(self._term(a, allow_vars=False) for a in call.args)
        kb = self._kb()
        print(f"Adding fact: {name}", file=self.ctx.stdout())
        self._logic_call(call, lambda: kb.add_fact(name, terms))
        print("  ✓ Fact added to knowledge base", file=self.ctx.stdout())

    def exec_Rule(self: ScriptInterpreter, s: ast.Rule) -> Any:
        from ..logic import Rule

        head = self._atom(s.head)
        body = tuple(self._atom(b) if isinstance(b, ast.Atom) else self._compare(b) for b in s.body)
        kb = self._kb()
        self._logic_call(s, lambda: kb.add_rule(Rule(head, body)))
        self.relations.add(s.head.predicate)
        return None

    def exec_Query(self: ScriptInterpreter, s: ast.Query) -> Any:
        self._run_query(s, method="backward")
        return None

    def exec_Infer(self: ScriptInterpreter, s: ast.Infer) -> Any:
        labels = {
            "forward": "Forward inference (tensor fixpoint)",
            "backward": "Backward inference (tabled resolution)",
            "symbolic": "Symbolic inference (tabled resolution)",
            "gradient": "Gradient inference (soft rules)",
        }
        print(f"{labels[s.method]}:", file=self.ctx.stdout())
        if s.method == "gradient":
            self._soft_query(s.query)
        else:
            self._run_query(s.query, method="forward" if s.method == "forward" else "backward")
        return None

    def exec_With(self: ScriptInterpreter, s: ast.With) -> Any:
        kb = self._kb()
        self._logic_call(s, lambda: kb.domain(s.entity))
        outer, self.with_entity = self.with_entity, s.entity
        try:
            self.exec_scoped(s.body)
        finally:
            self.with_entity = outer
        return None

    def _run_query(self: ScriptInterpreter, q: ast.Query, method: str) -> None:
        atom = self._atom(q.atom)
        where = tuple(self._compare(c) for c in q.where)
        kb = self._kb()
        out = self.ctx.stdout()
        print(f"Query: {_atom_text(q.atom)}", file=out)
        answers = self._logic_call(q, lambda: kb.query(atom, where=where, method=method))
        if not answers:
            print("  No solutions found", file=out)
            return
        print(f"  Found {len(answers)} solution(s)", file=out)
        for i, binding in enumerate(answers, 1):
            if not binding:
                print(f"  Solution {i}: Yes", file=out)
                continue
            print(f"  Solution {i}:", file=out)
            for var, value in binding.items():
                print(f"    {var} = {format_value(value)}", file=out)

    def _soft_query(self: ScriptInterpreter, q: ast.Query) -> None:
        """Soft (sigmoid) evaluation: every binding whose truth value is above 0.5, with that value."""
        from ..logic import Var

        atom = self._atom(q.atom)
        kb = self._kb()
        out = self.ctx.stdout()
        print(f"Query: {_atom_text(q.atom)}", file=out)
        # A low temperature keeps "no evidence" near 0 and one supporting derivation near 1 (sigmoid(±5)).
        scores = self._logic_call(q, lambda: kb.soft_query(atom, temperature=SOFT_TEMPERATURE)).detach().float().cpu()
        names: list[str] = []
        domains: list[list] = []
        types = self._logic_call(q, lambda: kb.arg_types(atom.relation))
        for term, typ in zip(atom.args, types):
            if isinstance(term, Var) and term.name != "_" and term.name not in names:
                names.append(term.name)
                domains.append(self._logic_call(q, lambda typ=typ: kb.domain(typ)))
        found = [(idx, float(scores[idx])) for idx in _indices(scores.shape) if float(scores[idx]) > 0.5]
        if not found:
            print("  No solutions found", file=out)
            return
        print(f"  Found {len(found)} solution(s)", file=out)
        for i, (idx, score) in enumerate(found, 1):
            text = ", ".join(f"{n} = {format_value(d[j])}" for n, d, j in zip(names, domains, idx)) or "Yes"
            print(f"  Solution {i}: {text} (truth {score:.4f})", file=out)

    def _atom(self: ScriptInterpreter, a: ast.Atom | ast.Call) -> Any:
        from ..logic import Atom

        if isinstance(a, ast.Call):
            if not isinstance(a.func, ast.Name):
                raise self.error(a, "expected a relation name before '('")
            a = ast.Atom(a.func.id, a.args, line=a.line, col=a.col)
        return Atom(a.predicate, tuple(self._term(t) for t in a.args), negated=a.negated)

    def _term(self: ScriptInterpreter, t: ast.Expr, allow_vars: bool = True) -> Any:
        from ..logic import Var

        if isinstance(t, ast.Name):
            if is_variable(t.id):
                if not allow_vars:
                    raise self.error(t, f"a fact cannot contain the variable '{t.id}' (names like X, Y2 are "
                                        "variables; write constants in lower or mixed case)")
                return Var(t.id)
            return t.id
        if isinstance(t, (ast.Num, ast.Str, ast.Bool)):
            return t.value
        if isinstance(t, ast.UnaryOp) and t.op == "-" and isinstance(t.operand, ast.Num):
            return -t.operand.value
        value = self.eval(t)
        if isinstance(value, (str, int, float, bool)):
            return value
        raise self.error(t, f"a logic term must be a name, a number or a string, got {_kind(value)}")

    def _compare(self: ScriptInterpreter, e: ast.Expr) -> Any:
        from ..logic import Compare

        if not isinstance(e, ast.BinOp) or e.op not in ("==", "!=", "<", "<=", ">", ">="):
            raise self.error(e, "a condition in a rule or 'where' must be a comparison such as X != bob")
        return Compare(e.op, self._term(e.left), self._term(e.right))

    # ------------------------------------------------------------------ learning
    def exec_Learn(self: ScriptInterpreter, s: ast.Learn) -> Any:
        from ..train import Trainer, TrainError

        params = self._learnables()
        if not params:
            raise self.error(s, "learn: no learnable tensors (declare one with 'tensor w: float16[3] learnable')")
        epochs = self.eval(s.epochs)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise self.error(s.epochs, f"epochs must be a non-negative integer, got {epochs!r}")
        scheduler = (s.scheduler, dict(s.scheduler_args)) if s.scheduler else None

        def step(epoch: int) -> Any:
            # The objective sees what the block's statements computed in this epoch.
            return self.exec_scoped((*s.body, ast.ExprStmt(s.objective, line=s.objective.line, col=s.objective.col)))

        try:
            trainer = Trainer(params=params, optimizer=(s.optimizer, dict(s.optimizer_args)), scheduler=scheduler,
                              epochs=epochs, out=self.ctx.stdout())
            trainer.run(step)
        except TrainError as e:
            raise self.error(_learn_part(s, str(e)), f"learn: {e}") from None
        except ScriptError:
            raise
        except RuntimeError as e:
            if "backward through the graph a second time" not in str(e):
                raise
            raise self.error(s.objective, "learn: the objective uses a value computed from a learnable tensor "
                             "before the learn block, which cannot change while training; compute it inside "
                             "the learn block") from None
        return None

    def _learnables(self: ScriptInterpreter) -> dict[str, torch.Tensor]:
        """The learnable tensors in scope, outermost scope first, each scope in declaration order."""
        scopes = []
        scope = self.scope
        while scope is not None:
            scopes.append(scope)
            scope = scope.parent
        found: dict[str, torch.Tensor] = {}
        hidden: set[str] = set()
        for scope in scopes:  # inner scopes first: a name declared there hides outer ones
            for name, value in scope.vars.items():
                if name in hidden:
                    continue
                hidden.add(name)
                if isinstance(value, torch.Tensor) and value.requires_grad and value.is_leaf:
                    found[name] = value
                elif isinstance(value, EntityEmbedding):
                    found[name] = value.table
        order = [name for scope in reversed(scopes) for name in scope.vars if name in found]
        return {name: found[name] for name in dict.fromkeys(order)}


def _learn_part(s: ast.Learn, message: str) -> ast.Node:
    """Where a training error points: the optimizer's or scheduler's name when it is about them."""
    head = message.split(":")[0]
    for word, (line, col) in (("scheduler", s.scheduler_pos), ("optimizer", s.optimizer_pos)):
        if word in head and line:
            return ast.Name(word, line=line, col=col)
    return s.objective


def _init_table(n: int, d: int, init: str, ctx: Any) -> torch.Tensor:
    t = torch.empty(n, d, dtype=torch.float32)
    if init == "zeros":
        t.zero_()
    elif init == "ones":
        t.fill_(1.0)
    elif n and d:
        if init == "xavier":
            torch.nn.init.xavier_uniform_(t, generator=ctx.generator)
        elif init == "he":
            torch.nn.init.kaiming_uniform_(t, generator=ctx.generator)
        else:
            t.uniform_(-0.1, 0.1, generator=ctx.generator)
    return t.to(torch.float16).to(ctx.torch_device()).requires_grad_(True)


def _indices(shape: torch.Size) -> list[tuple[int, ...]]:
    if not shape:
        return [()]
    return [tuple(int(v) for v in idx) for idx in torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(
        -1, len(shape)).tolist()]


def _atom_text(a: ast.Atom | ast.Call) -> str:
    if isinstance(a, ast.Call):
        name = a.func.id if isinstance(a.func, ast.Name) else "?"
        args = a.args
        negated = False
    else:
        name, args, negated = a.predicate, a.args, a.negated
    parts = []
    for t in args:
        if isinstance(t, ast.Name):
            parts.append(t.id)
        elif isinstance(t, (ast.Num, ast.Bool)):
            parts.append(str(t.value).lower() if isinstance(t.value, bool) else str(t.value))
        elif isinstance(t, ast.Str):
            parts.append(t.value)
        else:
            parts.append("<expr>")
    return ("not " if negated else "") + f"{name}({', '.join(parts)})"


def _kind(v: Any) -> str:
    from .values import type_name

    return type_name(v)
