"""The knowledge base: declarations, facts, rules, checks, and the query front door of both engines."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch

from .terms import (
    ANON,
    Atom,
    Compare,
    Constant,
    LogicError,
    Rule,
    Var,
    check_term,
    const_key,
    named_vars,
    rename_anonymous,
)

ENTITY = "entity"  # the argument type that admits any constant
LAYOUTS = ("dense", "sparse", "auto")


@dataclass
class EntityType:
    name: str
    closed: bool
    members: list = field(default_factory=list)
    keys: dict = field(default_factory=dict)  # const_key -> position in members

    def add(self, c: Constant) -> None:
        k = const_key(c)
        if k not in self.keys:
            self.keys[k] = len(self.members)
            self.members.append(c)


@dataclass
class CompiledRule:
    """A checked rule: anonymous variables renamed apart (``_#n``), literals split by kind."""

    rule: Rule
    head: Atom
    positive: tuple
    negative: tuple
    compares: tuple
    body: tuple  # all literals in written order (anonymous variables renamed)


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" — did you mean '{close[0]}'?" if close else ""


class KnowledgeBase:
    """Entity types, relations, facts and rules; queries run forward (tensors) or backward (tabled)."""

    def __init__(self, device: str | torch.device = "cpu", layout: str = "auto", dense_limit: int | None = None):
        if layout not in LAYOUTS:
            raise LogicError(f"unknown layout '{layout}' (use 'dense', 'sparse' or 'auto')")
        self.device = torch.device(device)
        self.layout = layout
        # Largest dense tensor (elements) the auto layout accepts; None = derived from the device's memory.
        self.dense_limit = dense_limit
        self.types: dict[str, EntityType] = {}
        self.relations: dict[str, tuple[str, ...]] = {}
        self.facts: dict[str, list[tuple]] = {}
        self.fact_keys: dict[str, set] = {}
        self.rules: list[CompiledRule] = []
        self.soft_tensors: dict[str, torch.Tensor] = {}
        self.version = 0
        self._universe_version = -1
        self._universe: list = []
        self._index: dict = {}
        self.forward_cache = None  # set by forward.py
        self.last_layout: str | None = None
        self.last_stats: dict = {}

    # ----- declarations -----
    def declare_entity(self, name: str, members: list | None = None) -> None:
        """Declare an entity type; ``members=None`` makes it open (members come from facts and rules)."""
        if name in self.types or name == ENTITY:
            raise LogicError(f"entity type '{name}' is already declared")
        if name in self.relations:
            raise LogicError(f"'{name}' is already declared as a relation")
        t = EntityType(name, closed=members is not None)
        for m in members or ():
            check_term(m)
            if isinstance(m, Var):
                raise LogicError(f"entity type '{name}': member {m} is a variable, not a constant")
            t.add(m)
        self.types[name] = t
        self._changed()

    def declare_relation(self, name: str, arg_types: list[str] | tuple[str, ...]) -> None:
        """Declare ``name(arg_types...)``; each argument type is an entity type or "entity" (any constant)."""
        if name in self.types:
            raise LogicError(f"'{name}' is already declared as an entity type")
        types = tuple(arg_types)
        for t in types:
            if t != ENTITY and t not in self.types:
                raise LogicError(f"relation {name}: unknown entity type '{t}'{_suggest(t, self.types)}")
        if name in self.relations:
            if self.relations[name] != types:
                raise LogicError(
                    f"relation {name} is already declared as {name}({', '.join(self.relations[name])})"
                )
            return
        self.relations[name] = types
        self.facts.setdefault(name, [])
        self.fact_keys.setdefault(name, set())
        self._changed()

    # ----- facts and rules -----
    def add_fact(self, relation: str, args: tuple | list) -> None:
        """Add the ground fact ``relation(args...)`` (a fact on an open entity type adds a member)."""
        args = tuple(args)
        ctx = f"fact {relation}({', '.join(map(str, args))})"
        for a in args:
            check_term(a)
            if isinstance(a, Var):
                raise LogicError(f"{ctx}: a fact cannot contain the variable {a}")
        if relation in self.types:
            t = self.types[relation]
            self._check_arity(ctx, relation, 1, len(args))
            if t.closed:
                self._check_member(ctx, relation, 0, args[0], relation)
            else:
                t.add(args[0])
                self._changed()
            return
        types = self._relation_types(ctx, relation)
        self._check_arity(ctx, relation, len(types), len(args))
        for i, (a, ty) in enumerate(zip(args, types)):
            self._check_member(ctx, relation, i, a, ty)
        key = tuple(const_key(a) for a in args)
        if key in self.fact_keys[relation]:
            return
        self.fact_keys[relation].add(key)
        self.facts[relation].append(args)
        for a, ty in zip(args, types):
            if ty != ENTITY:
                self.types[ty].add(a)
        self._changed()

    def add_rule(self, rule: Rule) -> None:
        """Add ``rule``; its head relation is declared implicitly (all arguments "entity") when unknown."""
        head = rule.head
        ctx = f"rule for '{head.relation}'"
        if head.negated:
            raise LogicError(f"{ctx}: the head cannot be negated")
        if head.relation in self.types:
            raise LogicError(f"{ctx}: the head cannot be the entity type '{head.relation}'")
        if any(isinstance(a, Var) and a.name == ANON for a in head.args):
            raise LogicError(f"{ctx}: the head cannot contain the anonymous variable _")
        implicit = head.relation not in self.relations
        head_types = (ENTITY,) * len(head.args) if implicit else self.relations[head.relation]
        self._check_arity(ctx, head.relation, len(head_types), len(head.args))
        counter = [0]

        def rename(atom):
            args = []
            for a in atom.args:
                if isinstance(a, Var) and a.name == ANON:
                    counter[0] += 1
                    a = Var(f"_#{counter[0]}")
                args.append(a)
            return type(atom)(atom.op, *args) if isinstance(atom, Compare) else Atom(atom.relation, args, atom.negated)

        body = []
        for lit in rule.body:
            if isinstance(lit, Atom):
                if lit.relation == head.relation and implicit:
                    types = head_types
                else:
                    types = self._relation_types(ctx, lit.relation)
                self._check_arity(ctx, lit.relation, len(types), len(lit.args))
                for i, (a, ty) in enumerate(zip(lit.args, types)):
                    if not isinstance(a, Var):
                        self._check_member(ctx, lit.relation, i, a, ty)
            elif not isinstance(lit, Compare):
                raise LogicError(f"{ctx}: a body literal must be an Atom or a Compare, got {type(lit).__name__}")
            body.append(rename(lit))
        for i, (a, ty) in enumerate(zip(head.args, head_types)):
            if not isinstance(a, Var):
                self._check_member(ctx, head.relation, i, a, ty)
        positive = tuple(b for b in body if isinstance(b, Atom) and not b.negated)
        negative = tuple(b for b in body if isinstance(b, Atom) and b.negated)
        compares = tuple(b for b in body if isinstance(b, Compare))
        bound = {a.name for p in positive for a in p.args if isinstance(a, Var)}
        for v in named_vars(head.args):
            if v not in bound:
                raise LogicError(f"{ctx}: head variable {v} does not appear in a positive body atom")
        for n in negative:
            for v in named_vars(n.args):
                if v not in bound and not v.startswith("_#"):
                    raise LogicError(f"{ctx}: variable {v} appears only in the negated atom {_show(n)}")
        for c in compares:
            for a in c.args:
                if isinstance(a, Var) and a.name not in bound:
                    name = ANON if a.name.startswith("_#") else a.name
                    raise LogicError(
                        f"{ctx}: variable {name} in the comparison {_show(c)} is not bound by a positive atom"
                    )
        self._check_var_types(ctx, head, head_types, positive + negative)
        compiled = CompiledRule(rule, head, positive, negative, compares, tuple(body))
        self._check_stratified(self.rules + [compiled])
        if implicit:
            self.relations[head.relation] = head_types
            self.facts.setdefault(head.relation, [])
            self.fact_keys.setdefault(head.relation, set())
        self.rules.append(compiled)
        for lit in (head, *positive, *negative):
            for a, ty in zip(lit.args, self.arg_types(lit.relation)):
                if not isinstance(a, Var) and ty != ENTITY and not self.types[ty].closed:
                    self.types[ty].add(a)
        self._changed()

    # ----- queries -----
    def query(self, atom: Atom, where: tuple = (), method: str = "backward") -> list[dict[str, object]]:
        """Answers to ``atom`` filtered by ``where``: one binding dict per distinct answer."""
        self.check_query(atom, where)
        atom = Atom(atom.relation, rename_anonymous(atom.args), atom.negated)
        if method == "backward":
            from .backward import backward_query

            return backward_query(self, atom, tuple(where))
        if method == "forward":
            from .forward import forward_query

            return forward_query(self, atom, tuple(where))
        raise LogicError(f"unknown query method '{method}' (use 'forward' or 'backward')")

    def relation_tensor(self, name: str) -> torch.Tensor:
        """The relation as a dense bool tensor over its argument domains (forward fixpoint)."""
        from .forward import relation_tensor

        self._relation_types(f"relation_tensor('{name}')", name)
        return relation_tensor(self, name)

    def soft_query(self, atom: Atom, temperature: float = 1.0, bias: float = 0.5, iterations: int = 50) -> torch.Tensor:
        """Soft truth values of ``atom``: one tensor dimension per named variable (over its argument domain).

        Rules are ``sigmoid((einsum - bias) / temperature)`` (bias 0.5 keeps an empty join near 0 instead of
        0.5; pass bias=0 for the bare formula), a relation's rules and facts combine by noisy-or.
        """
        self.check_query(atom, ())
        atom = Atom(atom.relation, rename_anonymous(atom.args), atom.negated)
        from .forward import soft_query

        return soft_query(self, atom, float(temperature), float(bias), int(iterations))

    def set_relation_tensor(self, name: str, tensor: torch.Tensor) -> None:
        """Give ``name`` a float tensor (over its argument domains) used by soft evaluation in place of facts."""
        types = self._relation_types(f"set_relation_tensor('{name}')", name)
        shape = tuple(len(self.domain(t)) for t in types)
        if tuple(tensor.shape) != shape:
            raise LogicError(f"set_relation_tensor('{name}'): expected shape {shape}, got {tuple(tensor.shape)}")
        self.soft_tensors[name] = tensor

    def entity_types(self) -> list[str]:
        """The declared entity types, in declaration order."""
        return list(self.types)

    def domain(self, type_name: str) -> list:
        """Members of an entity type in index order ("entity": every constant of the program)."""
        if type_name == ENTITY:
            return list(self.universe())
        if type_name not in self.types:
            raise LogicError(f"unknown entity type '{type_name}'{_suggest(type_name, self.types)}")
        return list(self.types[type_name].members)

    # ----- helpers shared by the engines -----
    def arg_types(self, relation: str) -> tuple[str, ...]:
        if relation in self.types:
            return (relation,)
        return self.relations[relation]

    def universe(self) -> list:
        """Every constant of the program, in first-appearance order (the engines' index space)."""
        if self._universe_version != self.version:
            self._universe, self._index = [], {}

            def add(c):
                k = const_key(c)
                if k not in self._index:
                    self._index[k] = len(self._universe)
                    self._universe.append(c)

            for t in self.types.values():
                for m in t.members:
                    add(m)
            for rows in self.facts.values():
                for row in rows:
                    for c in row:
                        add(c)
            for r in self.rules:
                for lit in (r.head, *r.positive, *r.negative):
                    for a in lit.args:
                        if not isinstance(a, Var):
                            add(a)
            self._universe_version = self.version
        return self._universe

    def index_of(self, c: Constant) -> int | None:
        self.universe()
        return self._index.get(const_key(c))

    def is_member(self, c: Constant, type_name: str) -> bool:
        return type_name == ENTITY or const_key(c) in self.types[type_name].keys

    def rules_for(self, relation: str) -> list[CompiledRule]:
        return [r for r in self.rules if r.head.relation == relation]

    def strata(self) -> list[list[str]]:
        """Derived relations grouped into strongly connected components, lowest stratum first."""
        return _sccs({r: set() for r in self.relations} | _graph(self.rules, pos_neg=False))

    def check_query(self, atom: Atom, where: tuple) -> None:
        ctx = f"query {atom}"
        if not isinstance(atom, Atom) or atom.negated:
            raise LogicError(f"{ctx}: a query is a positive atom")
        types = self._relation_types(ctx, atom.relation)
        self._check_arity(ctx, atom.relation, len(types), len(atom.args))
        for i, (a, ty) in enumerate(zip(atom.args, types)):
            if not isinstance(a, Var):
                self._check_member(ctx, atom.relation, i, a, ty)
        bound = set(named_vars(atom.args))
        for c in where:
            if not isinstance(c, Compare):
                raise LogicError(f"{ctx}: a where filter must be a Compare, got {type(c).__name__}")
            for a in c.args:
                if isinstance(a, Var) and a.name not in bound:
                    raise LogicError(f"{ctx}: variable {a} in the comparison {c} is not bound by the query")

    def _changed(self) -> None:
        self.version += 1
        self.forward_cache = None

    def _relation_types(self, ctx: str, name: str) -> tuple[str, ...]:
        if name in self.types:
            return (name,)
        if name not in self.relations:
            raise LogicError(f"{ctx}: unknown relation '{name}'{_suggest(name, [*self.relations, *self.types])}")
        return self.relations[name]

    @staticmethod
    def _check_arity(ctx: str, name: str, want: int, got: int) -> None:
        if want != got:
            raise LogicError(f"{ctx}: {name} takes {want} argument{'s' * (want != 1)}, got {got}")

    def _check_member(self, ctx: str, rel: str, i: int, c: Constant, ty: str) -> None:
        if ty != ENTITY and self.types[ty].closed and not self.is_member(c, ty):
            raise LogicError(f"{ctx}: {c!r} is not a {ty} (argument {i + 1} of {rel})")

    def _check_var_types(self, ctx: str, head: Atom, head_types: tuple, atoms: tuple) -> None:
        seen: dict[str, str] = {}
        for lit in (head, *atoms):
            types = head_types if lit.relation == head.relation else self.arg_types(lit.relation)
            for a, ty in zip(lit.args, types):
                if isinstance(a, Var) and ty != ENTITY:
                    if seen.setdefault(a.name, ty) != ty:
                        raise LogicError(f"{ctx}: variable {a} is used both as {seen[a.name]} and as {ty}")

    @staticmethod
    def _check_stratified(rules: list[CompiledRule]) -> None:
        graph = _graph(rules, pos_neg=True)
        plain = {h: {b for b, _ in es} for h, es in graph.items()}
        for comp in _sccs(plain):
            members = set(comp)
            for h in comp:
                for b, neg in sorted(graph.get(h, ())):
                    if neg and b in members:
                        path = _path(plain, b, h, members)
                        cycle = " -> ".join([h, f"not {b}", *path[1:]])
                        raise LogicError(f"negation through recursion: {cycle}")


def _show(lit) -> str:
    """A literal as the user wrote it (renamed anonymous variables shown as _)."""
    s = str(lit)
    import re

    return re.sub(r"_#\d+", ANON, s)


def _graph(rules, pos_neg: bool) -> dict:
    g: dict = {}
    for r in rules:
        es = g.setdefault(r.head.relation, set())
        for a in (*r.positive, *r.negative):
            es.add((a.relation, a.negated) if pos_neg else a.relation)
    return g


def _sccs(graph: dict) -> list[list[str]]:
    """Tarjan's strongly connected components, dependencies first (iterative: programs can be deep)."""
    nodes = sorted(set(graph) | {b for es in graph.values() for b in es})
    index: dict = {}
    low: dict = {}
    on: set = set()
    stack: list = []
    out: list = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def _path(graph: dict, src: str, dst: str, allowed: set) -> list[str]:
    """Shortest dependency path src -> ... -> dst inside one component."""
    prev = {src: None}
    queue = [src]
    for v in queue:
        if v == dst:
            break
        for w in sorted(graph.get(v, ())):
            if w in allowed and w not in prev:
                prev[w] = v
                queue.append(w)
    path = [dst]
    while prev[path[-1]] is not None:
        path.append(prev[path[-1]])
    return path[::-1]
