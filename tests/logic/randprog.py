"""Seeded random Datalog programs (safe, stratified, recursive) shared by the engine and reference tests."""

from __future__ import annotations

import random

from tensorlogic.logic import Atom, Compare, KnowledgeBase, Rule, Var

CONSTS = ["a", "b", "c", "d", "e"]
EDB = {"e0": 2, "e1": 2, "u0": 1}


def random_program(seed: int, layout: str = "auto") -> tuple[KnowledgeBase, dict[str, int]]:
    rng = random.Random(seed)
    kb = KnowledgeBase(layout=layout)
    consts = CONSTS[: rng.randint(3, 5)]
    for rel, k in EDB.items():
        kb.declare_relation(rel, ["entity"] * k)
        for _ in range(rng.randint(1, 7)):
            kb.add_fact(rel, tuple(rng.choice(consts) for _ in range(k)))
    idb = {f"p{i}": rng.randint(1, 2) for i in range(rng.randint(1, 3))}
    names = list(idb)
    for i, head in enumerate(names):
        for _ in range(rng.randint(1, 3)):
            pool_pos = list(EDB) + names[: i + 1]
            pool_neg = list(EDB) + names[:i]
            vars_ = [Var(v) for v in "XYZW"]
            body = []
            for _ in range(rng.randint(1, 3)):
                rel = rng.choice(pool_pos)
                k = EDB.get(rel) or idb[rel]
                args = tuple(rng.choice(consts) if rng.random() < 0.15 else rng.choice(vars_[:3]) for _ in range(k))
                body.append(Atom(rel, args))
            bound = [a for b in body for a in b.args if isinstance(a, Var)]
            if not bound:
                body.append(Atom("e0", (Var("X"), Var("Y"))))
                bound = [Var("X"), Var("Y")]
            if rng.random() < 0.3:
                rel = rng.choice(pool_neg)
                k = EDB.get(rel) or idb[rel]
                args = tuple(rng.choice(bound) if rng.random() < 0.8 else Var("_") for _ in range(k))
                body.append(Atom(rel, args, negated=True))
            if rng.random() < 0.25:
                body.append(Compare(rng.choice(["!=", "=="]), rng.choice(bound), rng.choice(bound + consts)))
            hargs = tuple(rng.choice(bound) if rng.random() < 0.9 else rng.choice(consts) for _ in range(idb[head]))
            kb.add_rule(Rule(Atom(head, hargs), tuple(body)))
    return kb, idb


def answer_set(answers: list[dict], names: list[str]) -> set:
    return {tuple(a[n] for n in names) for a in answers}
