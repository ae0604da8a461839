"""Every LogicError message, exact text."""

from __future__ import annotations

import pytest

from tensorlogic.logic import Atom, Compare, KnowledgeBase, LogicError, Rule, Var

X, Y, Z = Var("X"), Var("Y"), Var("Z")


def kb0():
    kb = KnowledgeBase()
    kb.declare_entity("Person", ["alice", "bob"])
    kb.declare_relation("Parent", ["Person", "Person"])
    kb.add_fact("Parent", ("alice", "bob"))
    return kb


def err(fn, msg):
    with pytest.raises(LogicError) as e:
        fn()
    assert str(e.value) == msg


def test_messages():
    kb = kb0()
    err(lambda: kb.add_rule(Rule(Atom("A", (X, Y)), (Atom("Parnet", (X, Y)),))),
        "rule for 'A': unknown relation 'Parnet' — did you mean 'Parent'?")
    err(lambda: kb.add_fact("Parent", ("alice",)), "fact Parent(alice): Parent takes 2 arguments, got 1")
    err(lambda: kb.add_fact("Parent", ("alice", "zed")),
        "fact Parent(alice, zed): 'zed' is not a Person (argument 2 of Parent)")
    err(lambda: kb.query(Atom("Parent", (X, "zed"))),
        "query Parent(X, zed): 'zed' is not a Person (argument 2 of Parent)")
    err(lambda: kb.query(Atom("Parent", (X, Y)), where=(Compare("<", Z, 1),)),
        "query Parent(X, Y): variable Z in the comparison Z < 1 is not bound by the query")
    err(lambda: Compare("=<", X, 1), "unknown comparison operator '=<' (use one of == != < <= > >=)")
    err(lambda: kb.add_rule(Rule(Atom("A", (X,)), (Atom("Parent", (X, X)), Atom("Parent", (X, Y), negated=True)))),
        "rule for 'A': variable Y appears only in the negated atom not Parent(X, Y)")
    err(lambda: kb.add_rule(Rule(Atom("A", (X, Y)), (Atom("Parent", (X, Z)),))),
        "rule for 'A': head variable Y does not appear in a positive body atom")
    err(lambda: kb.add_rule(Rule(Atom("A", (X,)), (Atom("Parent", (X, Var("_"))), Compare("!=", Var("_"), X)))),
        "rule for 'A': variable _ in the comparison _ != X is not bound by a positive atom")
    kb.add_rule(Rule(Atom("Q", (X,)), (Atom("Person", (X,)),)))
    kb.add_rule(Rule(Atom("P", (X,)), (Atom("Person", (X,)), Atom("Q", (X,), negated=True))))
    err(lambda: kb.add_rule(Rule(Atom("Q", (X,)), (Atom("P", (X,)),))), "negation through recursion: P -> not Q -> P")
    err(lambda: kb.add_rule(Rule(Atom("W", (X,)), (Atom("Person", (X,)), Atom("W", (X,), negated=True)))),
        "negation through recursion: W -> not W")
    err(lambda: kb.query(Atom("Parent", (X, Y)), method="sideways"),
        "unknown query method 'sideways' (use 'forward' or 'backward')")
    err(lambda: KnowledgeBase(layout="csr"), "unknown layout 'csr' (use 'dense', 'sparse' or 'auto')")
    err(lambda: kb.declare_entity("Person"), "entity type 'Person' is already declared")
    err(lambda: kb.declare_relation("Likes", ["Persn"]),
        "relation Likes: unknown entity type 'Persn' — did you mean 'Person'?")
    err(lambda: kb.declare_relation("Parent", ["Person"]),
        "relation Parent is already declared as Parent(Person, Person)")
    err(lambda: kb.declare_relation("Person", ["entity"]), "'Person' is already declared as an entity type")
    err(lambda: kb.add_rule(Rule(Atom("Person", (X,)), (Atom("Parent", (X, Y)),))),
        "rule for 'Person': the head cannot be the entity type 'Person'")
    err(lambda: kb.add_rule(Rule(Atom("A", (Var("_"),)), (Atom("Parent", (X, Y)),))),
        "rule for 'A': the head cannot contain the anonymous variable _")
    err(lambda: kb.add_fact("Parent", (X, "bob")), "fact Parent(X, bob): a fact cannot contain the variable X")
    err(lambda: kb.add_fact("Parent", ([1], "bob")), "a constant must be str, int, float or bool, got list")
    import torch

    err(lambda: kb.set_relation_tensor("Parent", torch.zeros(3, 3)),
        "set_relation_tensor('Parent'): expected shape (2, 2), got (3, 3)")
    err(lambda: kb.soft_query(Atom("Parent", (X, Y)), temperature=0.0), "soft_query: temperature must be > 0, got 0.0")
    kb.declare_entity("City")
    kb.declare_relation("Lives", ["Person", "City"])
    err(lambda: kb.add_rule(Rule(Atom("B", (X,)), (Atom("Parent", (X, Y)), Atom("Lives", (Y, X))))),
        "rule for 'B': variable X is used both as Person and as City")
    err(lambda: kb.domain("Persn"), "unknown entity type 'Persn' — did you mean 'Person'?")
    e = LogicError("boom", (3, 7))
    assert str(e) == "3:7: boom" and e.message == "boom"
