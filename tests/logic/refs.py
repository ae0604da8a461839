"""Translate a KnowledgeBase to clingo and to tabled SWI-Prolog, and read back every relation's answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from tensorlogic.logic import Atom, Compare, KnowledgeBase, Var


def _names(kb: KnowledgeBase):
    consts = kb.universe()
    enc = {}
    for i, c in enumerate(consts):
        enc[repr(c)] = str(c) if isinstance(c, int) and not isinstance(c, bool) else f"c{i}"
    dec = {v: consts[i] for i, v in enumerate(enc.values())}
    return enc, dec


def _term(a, enc):
    if isinstance(a, Var):
        return "_" if a.name.startswith("_#") else f"V{a.name}"
    return enc.get(repr(a), "c_missing")


def _atom(a: Atom, enc, neg: str) -> str:
    inner = ", ".join(_term(x, enc) for x in a.args)
    name = f"r_{a.relation.lower()}"
    text = f"{name}({inner})" if a.args else name
    return f"{neg}{text}" if a.negated else text


def _body(kb, rule, enc, neg, eq, ne):
    lits = [_atom(a, enc, neg) for a in rule.positive]
    for a, ty in zip(rule.head.args, kb.relations[rule.head.relation]):
        if isinstance(a, Var) and ty != "entity":
            lits.append(f"r_{ty.lower()}({_term(a, enc)})")
    lits += [_atom(a, enc, neg) for a in rule.negative]
    for c in rule.compares:
        op = {"==": eq, "!=": ne}.get(c.op, c.op)
        op = "=<" if op == "<=" and neg == "\\+ " else op
        lits.append(f"{_term(c.left, enc)} {op} {_term(c.right, enc)}")
    return ", ".join(lits)


def _program(kb: KnowledgeBase, neg: str, eq: str, ne: str, enc) -> list[str]:
    lines = []
    for ty, t in kb.types.items():
        lines += [f"r_{ty.lower()}({_term(m, enc)})." for m in t.members]
    for rel, rows in kb.facts.items():
        lines += [_atom(Atom(rel, r), enc, neg) + "." for r in rows]
    for r in kb.rules:
        lines.append(f"{_atom(r.head, enc, neg)} :- {_body(kb, r, enc, neg, eq, ne)}.")
    return lines


def _decode(kb, rel, fields, dec):
    return tuple(dec[f] if f in dec else int(f) for f in fields)


def clingo_answers(kb: KnowledgeBase, relations: list[str]) -> dict[str, set]:
    import clingo

    enc, dec = _names(kb)
    ctl = clingo.Control(["--warn=none"])
    ctl.add("base", [], "\n".join(_program(kb, "not ", "=", "!=", enc)))
    ctl.ground([("base", [])])
    out: dict[str, set] = {r: set() for r in relations}
    with ctl.solve(yield_=True) as handle:
        models = list(handle)
        assert len(models) == 1  # stratified: exactly one answer set
        for sym in models[0].symbols(atoms=True):
            for r in relations:
                if sym.name == f"r_{r.lower()}":
                    out[r].add(_decode(kb, r, [str(a) for a in sym.arguments], dec))
    return out


def swipl_answers(kb: KnowledgeBase, relations: list[str]) -> dict[str, set]:
    if shutil.which("swipl") is None:
        raise FileNotFoundError("swipl")
    enc, dec = _names(kb)
    lines = [":- style_check(-singleton)."]
    for rel, types in kb.relations.items():
        lines.append(f":- dynamic r_{rel.lower()}/{len(types)}.")
    for rel in {r.head.relation for r in kb.rules}:
        lines.append(f":- table r_{rel.lower()}/{len(kb.relations[rel])}.")
    lines += _program(kb, "\\+ ", "==", "\\==", enc)
    goals = []
    for r in relations:
        k = len(kb.relations[r])
        vs = ", ".join(f"A{i}" for i in range(k))
        call = f"r_{r.lower()}({vs})" if k else f"r_{r.lower()}"
        out = " ".join("~w" for _ in range(k))
        goals.append(f"forall({call}, format(\"{r} {out}~n\", [{vs}]))")
    lines.append(f":- initialization(({', '.join(goals)}, halt)).")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "prog.pl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = subprocess.run(
            ["swipl", "-q", path], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    result: dict[str, set] = {r: set() for r in relations}
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        rel, *fields = line.split()
        result[rel].add(_decode(kb, rel, fields, dec))
    if proc.returncode != 0 or "error" in proc.stderr.lower():
        raise RuntimeError(proc.stderr)
    return result


__all__ = ["Compare", "clingo_answers", "swipl_answers"]
