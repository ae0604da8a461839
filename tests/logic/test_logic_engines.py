"""Both engines on hand-checked programs, and forward (dense, sparse) vs backward on random programs."""

from __future__ import annotations

import pytest
import torch

from logic.randprog import answer_set, random_program
from tensorlogic.logic import Atom, Compare, KnowledgeBase, Rule, Var

X, Y, Z = Var("X"), Var("Y"), Var("Z")


def family(layout="auto", device="cpu"):
    kb = KnowledgeBase(device=device, layout=layout)
    kb.declare_entity("Person")
    kb.declare_relation("Parent", ["Person", "Person"])
    for a, b in [("alice", "bob"), ("bob", "charlie"), ("charlie", "david")]:
        kb.add_fact("Parent", (a, b))
    kb.add_rule(Rule(Atom("Ancestor", (X, Y)), (Atom("Parent", (X, Y)),)))
    kb.add_rule(Rule(Atom("Ancestor", (X, Z)), (Atom("Ancestor", (X, Y)), Atom("Parent", (Y, Z)))))
    return kb


def test_backward_order_is_depth_first_discovery():
    kb = family()
    assert kb.query(Atom("Ancestor", (X, "charlie"))) == [{"X": "bob"}, {"X": "alice"}]
    assert kb.query(Atom("Ancestor", ("alice", Y))) == [{"Y": "bob"}, {"Y": "charlie"}, {"Y": "david"}]
    assert kb.query(Atom("Ancestor", ("alice", "david"))) == [{}]
    assert kb.query(Atom("Ancestor", ("david", "alice"))) == []


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_forward_tensor_and_answers(layout):
    kb = family(layout)
    want = {("alice", "bob"), ("alice", "charlie"), ("alice", "david"), ("bob", "charlie"), ("bob", "david"),
            ("charlie", "david")}
    assert answer_set(kb.query(Atom("Ancestor", (X, Y)), method="forward"), ["X", "Y"]) == want
    people = kb.domain("Person")
    assert people == ["alice", "bob", "charlie", "david"]
    t = kb.relation_tensor("Ancestor")
    assert t.dtype == torch.bool and t.shape == (4, 4)
    assert {(people[i], people[j]) for i, j in t.nonzero().tolist()} == want
    assert kb.last_layout == layout


@pytest.mark.parametrize("method", ["forward", "backward"])
def test_where_negation_types_and_updates(method):
    kb = family()
    got = kb.query(Atom("Ancestor", (X, "david")), where=(Compare("!=", X, "bob"),), method=method)
    assert answer_set(got, ["X"]) == {("alice",), ("charlie",)}
    kb.add_rule(Rule(Atom("Leaf", (X,)), (Atom("Person", (X,)), Atom("Parent", (X, Var("_")), negated=True))))
    assert answer_set(kb.query(Atom("Leaf", (X,)), method=method), ["X"]) == {("david",)}
    kb.add_fact("Parent", ("david", "erin"))  # a fact after a query: results follow the program
    assert answer_set(kb.query(Atom("Leaf", (X,)), method=method), ["X"]) == {("erin",)}
    assert ("alice",) in answer_set(kb.query(Atom("Ancestor", (X, "erin")), method=method), ["X"])


@pytest.mark.parametrize("method", ["forward", "backward"])
def test_numeric_order_comparisons(method):
    kb = KnowledgeBase()
    kb.declare_relation("Age", ["entity", "entity"])
    for who, age in [("ann", 30), ("ben", 12), ("cal", 18), ("dee", 17.5)]:
        kb.add_fact("Age", (who, age))
    kb.add_rule(Rule(Atom("Adult", (X,)), (Atom("Age", (X, Y)), Compare(">=", Y, 18))))
    assert answer_set(kb.query(Atom("Adult", (X,)), method=method), ["X"]) == {("ann",), ("cal",)}
    older = kb.query(Atom("Age", (X, Y)), where=(Compare("<", Y, 17.9), Compare(">", Y, 12)), method=method)
    assert answer_set(older, ["X", "Y"]) == {("dee", 17.5)}


def test_constants_in_heads_and_repeated_variables():
    for method in ("forward", "backward"):
        kb = KnowledgeBase(layout="sparse")
        kb.declare_relation("E", ["entity", "entity"])
        for a, b in [("a", "a"), ("a", "b"), ("b", "b"), ("c", "a")]:
            kb.add_fact("E", (a, b))
        kb.add_rule(Rule(Atom("Loop", (X, "yes")), (Atom("E", (X, X)),)))
        kb.add_rule(Rule(Atom("Pair", (X, X)), (Atom("E", (X, "a")),)))
        assert answer_set(kb.query(Atom("Loop", (X, Y)), method=method), ["X", "Y"]) == {("a", "yes"), ("b", "yes")}
        assert answer_set(kb.query(Atom("Pair", (X, Y)), method=method), ["X", "Y"]) == {("a", "a"), ("c", "c")}
        assert kb.query(Atom("Pair", (X, X)), method=method) != []


def test_random_programs_engines_agree():
    for seed in range(300):
        kbs = {lay: random_program(seed, lay)[0] for lay in ("dense", "sparse")}
        idb = random_program(seed)[1]
        for rel, k in idb.items():
            names = ["A", "B"][:k]
            q = Atom(rel, tuple(Var(n) for n in names))
            back = answer_set(kbs["dense"].query(q, method="backward"), names)
            for lay, kb in kbs.items():
                fwd = answer_set(kb.query(q, method="forward"), names)
                assert fwd == back, (seed, rel, lay)
            # a bound-argument call exercises other call variants of the tabled chainer
            if back:
                first = sorted(back)[0][0]
                q2 = Atom(rel, (first, *q.args[1:]))
                assert answer_set(kbs["sparse"].query(q2, method="forward"), names[1:]) == answer_set(
                    kbs["dense"].query(q2, method="backward"), names[1:]
                ), (seed, rel)


def test_soft_query_matches_hand_formula_and_trains():
    kb = KnowledgeBase()
    kb.declare_entity("P", ["a", "b"])
    kb.declare_relation("R", ["P", "P"])
    kb.add_fact("R", ("a", "b"))
    kb.add_rule(Rule(Atom("S", (X,)), (Atom("R", (X, Y)),)))
    s = kb.soft_query(Atom("S", (X,)), temperature=0.5, bias=0.5)
    sig = lambda v: 1 / (1 + torch.exp(torch.tensor(-v)))  # noqa: E731
    assert torch.allclose(s, torch.stack([sig((1 - 0.5) / 0.5), sig((0 - 0.5) / 0.5)]))
    w = torch.tensor([[0.0, 0.2], [0.7, 0.0]], requires_grad=True)
    kb.set_relation_tensor("R", w)
    s = kb.soft_query(Atom("S", ("b",)), temperature=1.0, bias=0.0)
    assert torch.allclose(s, sig(0.7))
    s.backward()
    assert w.grad is not None and float(w.grad[1, 0]) > 0


@pytest.mark.cuda
def test_cuda_forward_equals_cpu():
    for seed in range(40):
        cpu_kb, idb = random_program(seed)
        gpu_kb = random_program(seed)[0]
        gpu_kb.device = torch.device("cuda")
        for rel, k in idb.items():
            q = Atom(rel, tuple(Var(n) for n in "AB"[:k]))
            assert gpu_kb.query(q, method="forward") == cpu_kb.query(q, method="forward")
