"""Transitive closure and same-generation on random graphs: our forward engine vs clingo vs SWI-Prolog.

Usage: python benchmarks/bench_logic.py [--quick] [--device cpu|cuda] [--sizes 1000 5000] [--skip-refs]
SWI-Prolog time is measured inside Prolog (statistics(cputime) around the query, loading excluded).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time

import torch

from tensorlogic.logic import Atom, KnowledgeBase, Rule, Var

X, Y, Z, A, B = (Var(v) for v in "XYZAB")
RULES = {
    "tc": ("path(X,Y) :- edge(X,Y).\npath(X,Z) :- path(X,Y), edge(Y,Z).", "path"),
    "sg": ("sg(X,Y) :- edge(A,X), edge(A,Y).\nsg(X,Y) :- edge(A,X), sg(A,B), edge(B,Y).", "sg"),
}


def edges(n: int, degree: int = 4, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return sorted({(rng.randrange(n), rng.randrange(n)) for _ in range(n * degree)})


def ours(problem: str, es, device: str):
    kb = KnowledgeBase(device=device)
    kb.declare_relation("edge", ["entity", "entity"])
    for e in es:
        kb.add_fact("edge", e)
    if problem == "tc":
        kb.add_rule(Rule(Atom("path", (X, Y)), (Atom("edge", (X, Y)),)))
        kb.add_rule(Rule(Atom("path", (X, Z)), (Atom("path", (X, Y)), Atom("edge", (Y, Z)))))
        rel = "path"
    else:
        kb.add_rule(Rule(Atom("sg", (X, Y)), (Atom("edge", (A, X)), Atom("edge", (A, Y)))))
        kb.add_rule(Rule(Atom("sg", (X, Y)), (Atom("edge", (A, X)), Atom("sg", (A, B)), Atom("edge", (B, Y)))))
        rel = "sg"
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    from tensorlogic.logic.forward import _results

    layout, space, store = _results(kb)
    t = store[rel]
    count = int(t.sum()) if layout == "dense" else int(t.shape[0])
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() if device == "cuda" else kb.last_stats["bytes"]
    return secs, count, f"{layout}, {mem / 2**20:.0f} MiB"


def clingo_run(problem, es):
    import clingo

    ctl = clingo.Control(["--warn=none"])
    prog = "\n".join(f"edge({a},{b})." for a, b in es) + "\n" + RULES[problem][0]
    t0 = time.perf_counter()
    ctl.add("base", [], prog)
    ctl.ground([("base", [])])
    count = 0
    with ctl.solve(yield_=True) as h:
        for m in h:
            count = sum(1 for s in m.symbols(atoms=True) if s.name == RULES[problem][1])
    return time.perf_counter() - t0, count


def swipl_run(problem, es):
    name = RULES[problem][1]
    prog = [f":- table {name}/2."] + [f"edge({a},{b})." for a, b in es] + [RULES[problem][0]]
    prog.append(
        f":- initialization((statistics(cputime,T0), aggregate_all(count, {name}(_,_), N), "
        f"statistics(cputime,T1), T is T1-T0, format('~w ~w~n', [T, N]), halt))."
    )
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "b.pl")
        with open(p, "w") as f:
            f.write("\n".join(prog) + "\n")
        out = subprocess.run(["swipl", "-q", p], capture_output=True, text=True, timeout=3600).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--skip-refs", action="store_true")
    args = ap.parse_args()
    sizes = args.sizes or ([1000] if args.quick else [1000, 5000, 20000])
    cols = ["problem", "N", "ours s", "ours answers", "ours layout, memory", "clingo s", "clingo answers", "swipl s",
            "swipl answers"]
    print("| " + " | ".join(cols) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for problem in ("tc", "sg"):
        for n in sizes:
            es = edges(n)
            s, c, mem = ours(problem, es, args.device)
            row = [problem, str(n), f"{s:.3f}", str(c), mem]
            if args.skip_refs:
                row += ["-"] * 4
            else:
                cs, cc = clingo_run(problem, es)
                row += [f"{cs:.3f}", str(cc)]
                if shutil.which("swipl"):
                    ps, pc = swipl_run(problem, es)
                    row += [f"{ps:.3f}", str(pc)]
                else:
                    row += ["not installed", "-"]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
