"""Top-down resolution with linear tabling: complete on recursive rules, answers in depth-first order.

Each call variant (relation + which arguments are which constants / which are the same variable) owns an
answer table kept in discovery order. A call met again while it is being evaluated consumes its table as it
grows; the first call of a strongly connected set of looping calls (the leader) re-runs its clauses until a
whole pass adds no answer anywhere, then marks every table of the set complete. There is no depth limit.
"""

from __future__ import annotations

import sys

from .kb import ENTITY, KnowledgeBase
from .terms import Atom, Compare, LogicError, Var, answer_vars, compare_values, const_key


class _Table:
    __slots__ = ("answers", "seen", "complete", "evaluating", "depth", "low", "pending", "pass_id")

    def __init__(self) -> None:
        self.answers: list[tuple] = []
        self.seen: set = set()
        self.complete = False
        self.evaluating = False
        self.depth = 0
        self.low = 0
        self.pending: list[_Table] = []
        self.pass_id = -1


class Chainer:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.tables: dict[tuple, _Table] = {}
        self.stack: list[_Table] = []
        self.added = 0
        self.pass_id = 0
        self.version = kb.version

    # a call pattern: per argument ('c', key, const) or ('v', first position of that variable)
    @staticmethod
    def pattern(args: tuple, env: dict) -> tuple:
        out = []
        first: dict[str, int] = {}
        for i, a in enumerate(args):
            if isinstance(a, Var):
                if a.name in env:
                    c = env[a.name]
                    out.append(("c", const_key(c), c))
                else:
                    out.append(("v", first.setdefault(a.name, i)))
            else:
                out.append(("c", const_key(a), a))
        return tuple(out)

    def table(self, relation: str, pat: tuple) -> _Table:
        key = (relation, tuple(p[:2] for p in pat))
        t = self.tables.get(key)
        if t is None:
            t = self.tables[key] = _Table()
        if t.complete:
            return t
        top = self.stack[-1] if self.stack else None
        if t.evaluating or self.ran_this_pass(t):
            # A looping call (or one already run in this pass): consume what it has; the caller is part of
            # the same leader's set and cannot complete before it.
            if top is not None:
                top.low = min(top.low, t.low)
            return t
        self.evaluate(t, relation, pat)
        if not t.complete and top is not None:
            top.low = min(top.low, t.low)
            top.pending.extend([t, *t.pending])
            t.pending = []
        return t

    def ran_this_pass(self, t: _Table) -> bool:
        return t.pass_id >= 0 and t.low < len(self.stack) and self.stack[t.low].pass_id == t.pass_id

    def evaluate(self, t: _Table, relation: str, pat: tuple) -> None:
        t.evaluating = True
        t.depth = t.low = len(self.stack)
        self.stack.append(t)
        try:
            while True:
                start = self.added
                self.pass_id += 1
                t.pass_id = self.pass_id
                self.run_clauses(t, relation, pat)
                if t.low < t.depth or self.added == start:
                    break
        finally:
            self.stack.pop()
            t.evaluating = False
        if t.low >= t.depth:
            t.complete = True
            for p in t.pending:
                p.complete = True
            t.pending = []
        else:
            # remember the leader's pass: calling this table again in the same pass only reads it
            t.pass_id = self.stack[t.low].pass_id

    def add(self, t: _Table, row: tuple, pat: tuple, types: tuple) -> None:
        for p, c in zip(pat, row):
            if p[0] == "c" and const_key(c) != p[1]:
                return
        for p, c in zip(pat, row):
            if p[0] == "v" and const_key(row[p[1]]) != const_key(c):
                return
        for c, ty in zip(row, types):
            if ty != ENTITY and not self.kb.is_member(c, ty):
                return
        k = tuple(const_key(c) for c in row)
        if k not in t.seen:
            t.seen.add(k)
            t.answers.append(row)
            self.added += 1

    def run_clauses(self, t: _Table, relation: str, pat: tuple) -> None:
        kb = self.kb
        if relation in kb.types:
            for m in kb.types[relation].members:
                self.add(t, (m,), pat, ())
            return
        types = kb.relations[relation]
        for row in kb.facts[relation]:
            self.add(t, row, pat, ())
        for rule in kb.rules_for(relation):
            env: dict = {}
            ok = True
            for a, p in zip(rule.head.args, pat):
                if p[0] != "c":
                    continue
                if isinstance(a, Var):
                    if a.name in env and const_key(env[a.name]) != p[1]:
                        ok = False
                        break
                    env[a.name] = p[2]
                elif const_key(a) != p[1]:
                    ok = False
                    break
            if not ok:
                continue
            for sol in self.solve(rule.positive, 0, env, rule.negative + rule.compares):
                row = tuple(sol[a.name] if isinstance(a, Var) else a for a in rule.head.args)
                self.add(t, row, pat, types)

    def solve(self, positive: tuple, i: int, env: dict, pending: tuple):
        """Depth-first, left to right; a negation or comparison runs as soon as its variables are bound."""
        waiting = []
        for lit in pending:
            need = [a.name for a in lit.args if isinstance(a, Var) and not a.name.startswith("_#")]
            if all(n in env for n in need):
                if not self.check(lit, env):
                    return
            else:
                waiting.append(lit)
        if i == len(positive):
            yield env
            return
        atom = positive[i]
        pat = self.pattern(atom.args, env)
        t = self.table(atom.relation, pat)
        rest = tuple(waiting)
        j = 0
        while j < len(t.answers):  # by index: a looping call's table grows while we read it
            row = t.answers[j]
            j += 1
            env2 = dict(env)
            for a, c in zip(atom.args, row):
                if isinstance(a, Var):
                    env2[a.name] = c
            yield from self.solve(positive, i + 1, env2, rest)

    def check(self, lit, env: dict) -> bool:
        if isinstance(lit, Compare):
            a, b = (env[x.name] if isinstance(x, Var) else x for x in lit.args)
            return compare_values(lit.op, a, b)
        pat = self.pattern(lit.args, env)
        t = self.table(lit.relation, pat)
        if not t.complete:  # stratification guarantees this; a failure here is a bug, not a user error
            raise AssertionError(f"negated call {lit} was not completed")
        return not t.answers


def chainer(kb: KnowledgeBase) -> Chainer:
    """Tables stay valid until the program changes."""
    c = getattr(kb, "_chainer", None)
    if c is None or c.version != kb.version:
        c = Chainer(kb)
        kb._chainer = c
    return c


def backward_query(kb: KnowledgeBase, atom: Atom, where: tuple) -> list[dict[str, object]]:
    c = chainer(kb)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 200_000))
    try:
        t = c.table(atom.relation, c.pattern(atom.args, {}))
    except RecursionError:
        c.stack.clear()
        kb._chainer = None
        raise LogicError(f"query {atom}: backward chaining nested too deeply; use method='forward'") from None
    finally:
        sys.setrecursionlimit(old)
    names = answer_vars(atom.args)
    out, seen = [], set()
    for row in t.answers:
        env = {}
        for a, v in zip(atom.args, row):
            if isinstance(a, Var):
                env[a.name] = v
        if not all(
            compare_values(w.op, *(env[x.name] if isinstance(x, Var) else x for x in w.args)) for w in where
        ):
            continue
        b = {n: env[n] for n in names}
        k = tuple(const_key(v) for v in b.values())
        if k not in seen:
            seen.add(k)
            out.append(b)
    return out
