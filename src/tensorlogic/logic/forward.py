"""The tensor engine: relations as Boolean tensors, rules as einsums, semi-naive fixpoints per stratum.

Every constant of the program gets an index in one universe of size n (``kb.universe()``), so a k-ary
relation is a bool tensor of shape (n,)*k (dense layout) or a sorted set of int64 codes
``sum(idx_i * n**(k-1-i))`` (sparse layout: joins by sort + searchsorted). Argument types act as masks.
``relation_tensor`` slices the dense form down to the argument domains.
"""

from __future__ import annotations

import bisect
import math

import torch

from .kb import ENTITY, KnowledgeBase
from .terms import Atom, Compare, LogicError, Var, answer_vars, compare_values, is_num, named_vars

CPU_DENSE_LIMIT = 2**28  # elements of the largest einsum operand/intermediate the CPU dense layout accepts


def _letters(names):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(names) > len(alphabet):
        raise LogicError(f"a rule with more than {len(alphabet)} variables is not supported")
    return {v: alphabet[i] for i, v in enumerate(names)}


class _Space:
    """The universe as tensors: per-index numeric value, string rank and kind, for comparison masks."""

    def __init__(self, kb: KnowledgeBase, device: torch.device) -> None:
        self.kb = kb
        self.device = device
        u = kb.universe()
        self.n = len(u)
        self.strings = sorted({c for c in u if isinstance(c, str)})
        self.num = torch.tensor([float(c) if is_num(c) else math.nan for c in u], dtype=torch.float64, device=device)
        self.isnum = torch.tensor([is_num(c) for c in u], dtype=torch.bool, device=device)
        self.isstr = torch.tensor([isinstance(c, str) for c in u], dtype=torch.bool, device=device)
        self.rank = torch.tensor([self.str_rank(c) if isinstance(c, str) else -1 for c in u], device=device)
        self.masks: dict[str, torch.Tensor] = {}

    def str_rank(self, s: str) -> int:
        i = bisect.bisect_left(self.strings, s)
        return 2 * i if i < len(self.strings) and self.strings[i] == s else 2 * i - 1

    def type_mask(self, ty: str) -> torch.Tensor:
        if ty not in self.masks:
            m = torch.zeros(self.n, dtype=torch.bool, device=self.device)
            if ty == ENTITY:
                m[:] = True
            else:
                idx = [self.kb.index_of(c) for c in self.kb.types[ty].members]
                m[torch.tensor(idx, dtype=torch.long, device=self.device)] = True
            self.masks[ty] = m
        return self.masks[ty]

    def compare(self, op: str, left, right) -> torch.Tensor | bool:
        """``left op right`` where each side is an index tensor (broadcastable) or a constant."""
        lt, rt = isinstance(left, torch.Tensor), isinstance(right, torch.Tensor)
        if not lt and not rt:
            return compare_values(op, left, right)
        if op in ("==", "!="):
            if lt and rt:
                eq = left == right
            else:
                idx, c = (left, right) if lt else (right, left)
                ci = self.kb.index_of(c)
                eq = idx == ci if ci is not None else torch.zeros_like(idx, dtype=torch.bool)
            return eq if op == "==" else ~eq

        def side(x):
            if isinstance(x, torch.Tensor):
                return self.num[x], self.isnum[x], self.rank[x], self.isstr[x]
            num = float(x) if is_num(x) else math.nan
            rank = self.str_rank(x) if isinstance(x, str) else -1
            return num, is_num(x), rank, isinstance(x, str)

        (ln, lin, lr, lis), (rn, rin, rr, ris) = side(left), side(right)
        fn = {"<": torch.lt, "<=": torch.le, ">": torch.gt, ">=": torch.ge}[op]
        ln_t = ln if isinstance(ln, torch.Tensor) else torch.tensor(ln, dtype=torch.float64, device=self.device)
        lr_t = lr if isinstance(lr, torch.Tensor) else torch.tensor(lr, device=self.device)
        numeric = fn(ln_t, rn) & torch.as_tensor(lin, device=self.device) & torch.as_tensor(rin, device=self.device)
        textual = fn(lr_t, rr) & torch.as_tensor(lis, device=self.device) & torch.as_tensor(ris, device=self.device)
        return numeric | textual


def _choose_layout(kb: KnowledgeBase, n: int, device: torch.device) -> tuple[str, int]:
    """Largest dense tensor (elements) any relation or left-to-right einsum step would need, and the choice."""
    biggest = max([n ** len(t) for t in kb.relations.values()] + [n])
    for r in kb.rules:
        ops = [named_vars(a.args) for a in (*r.positive, *r.negative)]
        ops += [[a.name for a in c.args if isinstance(a, Var)] for c in r.compares]
        out = set(named_vars(r.head.args))
        acc: set = set()
        for i, o in enumerate(ops):
            biggest = max(biggest, n ** len(o))
            acc |= set(o)
            later = set(out).union(*ops[i + 1 :]) if i + 1 < len(ops) else out
            acc &= later
            biggest = max(biggest, n ** len(acc))
    if kb.layout != "auto":
        return kb.layout, biggest
    limit = kb.dense_limit
    if limit is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            limit = free // 16  # a bool tensor plus float copies of two operands and the result
        else:
            limit = CPU_DENSE_LIMIT
    return ("dense" if biggest <= limit else "sparse"), biggest


# ---------------------------------------------------------------- dense layout


def _prep_dense(t: torch.Tensor, args: tuple, kb: KnowledgeBase, reduce=torch.any):
    """Index constants, take diagonals for repeated variables, reduce anonymous ones; None if impossible."""
    sel = []
    for a in args:
        if isinstance(a, Var):
            sel.append(slice(None))
        else:
            ci = kb.index_of(a)
            if ci is None:
                return None
            sel.append(ci)
    if sel:
        t = t[tuple(sel)]
    names = [a.name for a in args if isinstance(a, Var)]
    while len(set(names)) < len(names):
        i = next(k for k, v in enumerate(names) if names.index(v) != k)
        j = names.index(names[i])
        t = torch.diagonal(t, 0, j, i)
        names = [v for k, v in enumerate(names) if k not in (i, j)] + [names[j]]
    anon = [k for k, v in enumerate(names) if v.startswith("_#")]
    if anon:
        t = reduce(t, dim=tuple(anon)) if reduce is torch.amax else _reduce_each(t, anon, reduce)
        names = [v for v in names if not v.startswith("_#")]
    return t, names


def _reduce_each(t, dims, fn):
    for d in sorted(dims, reverse=True):
        t = fn(t, dim=d)
    return t


def _compare_dense(space: _Space, c: Compare):
    names = []
    for a in c.args:
        if isinstance(a, Var) and a.name not in names:
            names.append(a.name)
    ar = torch.arange(space.n, device=space.device)
    views = {}
    for i, v in enumerate(names):
        shape = [1] * len(names)
        shape[i] = space.n
        views[v] = ar.view(shape)
    sides = [views[a.name] if isinstance(a, Var) else a for a in c.args]
    m = space.compare(c.op, *sides)
    if isinstance(m, torch.Tensor) and m.dim() < len(names):
        m = m.expand(*([space.n] * len(names)))
    return m, names


def _rule_dense(kb, space, rule, full, delta_pos, dtype):
    """One rule as one einsum over its body tensors, then the step; None when it cannot fire."""
    ops, subs = [], []
    for k, atom in enumerate(rule.positive):
        if k == delta_pos:
            t = full["__delta__"]
        else:
            t = space.type_mask(atom.relation) if atom.relation in kb.types else full[atom.relation]
        p = _prep_dense(t, atom.args, kb)
        if p is None:
            return None
        ops.append(p[0])
        subs.append(p[1])
    for atom in rule.negative:
        t = space.type_mask(atom.relation) if atom.relation in kb.types else full[atom.relation]
        p = _prep_dense(t, atom.args, kb)
        if p is None:
            continue  # an unknown constant: the negated atom is false, so its negation holds
        if not p[1]:
            if bool(p[0]):
                return None
            continue
        ops.append(~p[0])
        subs.append(p[1])
    if not _add_compares(space, rule, ops, subs, lambda m: m):
        return None
    head_vars = named_vars(rule.head.args)
    letters = _letters(sorted({v for s in subs for v in s}, key=lambda v: (v not in head_vars, v)))
    eq = ",".join("".join(letters[v] for v in s) for s in subs) + "->" + "".join(letters[v] for v in head_vars)
    res = torch.einsum(eq, *[o.to(dtype) for o in ops]) > 0
    for a, ty in zip(rule.head.args, kb.relations[rule.head.relation]):
        if isinstance(a, Var) and ty != ENTITY:
            shape = [1] * len(head_vars)
            shape[head_vars.index(a.name)] = space.n
            res = res & space.type_mask(ty).view(shape)
    return _place_head(kb, space, rule.head, head_vars, res)


def _place_head(kb, space, head: Atom, head_vars, res):
    k = len(head.args)
    if k == 0:
        return res
    if [a.name if isinstance(a, Var) else None for a in head.args] == head_vars:
        return res
    out = torch.zeros((space.n,) * k, dtype=res.dtype, device=res.device)
    nz = res.nonzero()
    idx = []
    for a in head.args:
        if isinstance(a, Var):
            idx.append(nz[:, head_vars.index(a.name)])
        else:
            idx.append(torch.full((nz.shape[0],), kb.index_of(a), dtype=torch.long, device=res.device))
    out[tuple(idx)] = True
    return out


def _fixpoint_dense(kb: KnowledgeBase, space: _Space) -> dict[str, torch.Tensor]:
    n, dev = space.n, space.device
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # 0/1 inputs: sums > 0 stay > 0
    full: dict[str, torch.Tensor] = {}
    for rel, types in kb.relations.items():
        t = torch.zeros((n,) * len(types), dtype=torch.bool, device=dev)
        rows = kb.facts[rel]
        if rows:
            idx = torch.tensor([[kb.index_of(c) for c in r] for r in rows], dtype=torch.long, device=dev)
            if len(types):
                t[tuple(idx.T)] = True
            else:
                t.fill_(True)
        full[rel] = t
    for comp in kb.strata():
        members = set(comp)
        rules = [r for r in kb.rules if r.head.relation in members]
        if not rules:
            continue
        delta = None
        while True:
            derived = {r: torch.zeros_like(full[r]) for r in members if r in full}
            for rule in rules:
                if delta is None:
                    positions = [None]
                else:
                    positions = [k for k, a in enumerate(rule.positive) if a.relation in members]
                for pos in positions:
                    if pos is not None:
                        d = delta[rule.positive[pos].relation]
                        if not bool(d.any()):
                            continue
                        full["__delta__"] = d
                    res = _rule_dense(kb, space, rule, full, pos, dtype)
                    if res is not None:
                        derived[rule.head.relation] |= res
            full.pop("__delta__", None)
            delta = {r: derived[r] & ~full[r] for r in derived}
            changed = False
            for r, d in delta.items():
                if bool(d.any()):
                    full[r] = full[r] | d
                    changed = True
            if not changed:
                break
    return full


# ---------------------------------------------------------------- sparse layout


def _encode(cols: torch.Tensor, n: int) -> torch.Tensor:
    """Row codes of an (m, k) index table in base n (0 for k = 0)."""
    code = torch.zeros(cols.shape[0], dtype=torch.long, device=cols.device)
    for i in range(cols.shape[1]):
        code = code * n + cols[:, i]
    return code


def _decode(codes: torch.Tensor, n: int, k: int) -> torch.Tensor:
    cols = []
    c = codes
    for _ in range(k):
        cols.append(c % n)
        c = c // n
    return torch.stack(cols[::-1], dim=1) if k else codes.new_zeros((codes.shape[0], 0))


def _check_codes(n: int, k: int, what: str) -> None:
    if k and n ** k >= 2**62:
        raise LogicError(f"{what}: {n}^{k} tuples do not fit the sparse layout's int64 codes")


class _Table:
    """Bindings of some variables: one row per binding, columns in ``names`` order."""

    def __init__(self, cols: torch.Tensor, names: list[str]) -> None:
        self.cols, self.names = cols, names


def _atom_table(kb, space, codes: torch.Tensor, args: tuple, k: int) -> _Table:
    n = space.n
    cols = _decode(codes, n, k)
    keep = torch.ones(cols.shape[0], dtype=torch.bool, device=cols.device)
    first: dict[str, int] = {}
    for i, a in enumerate(args):
        if isinstance(a, Var):
            if a.name in first:
                keep &= cols[:, i] == cols[:, first[a.name]]
            else:
                first[a.name] = i
        else:
            ci = kb.index_of(a)
            keep &= (cols[:, i] == ci) if ci is not None else torch.zeros_like(keep)
    names = [v for v in first if not v.startswith("_#")]
    cols = cols[keep][:, [first[v] for v in names]]
    if len(names) < k:
        _check_codes(n, len(names), "join")
        cols = _decode(torch.unique(_encode(cols, n)), n, len(names))
    return _Table(cols, names)


def _join(a: _Table, b: _Table, n: int) -> _Table:
    shared = [v for v in a.names if v in b.names]
    _check_codes(n, len(shared), "join")
    ka = _encode(a.cols[:, [a.names.index(v) for v in shared]], n)
    kb_ = _encode(b.cols[:, [b.names.index(v) for v in shared]], n)
    kb_sorted, order = torch.sort(kb_)
    lo = torch.searchsorted(kb_sorted, ka)
    hi = torch.searchsorted(kb_sorted, ka, right=True)
    counts = hi - lo
    total = int(counts.sum())
    ia = torch.repeat_interleave(torch.arange(a.cols.shape[0], device=ka.device), counts, output_size=total)
    starts = torch.cumsum(counts, 0) - counts
    offs = torch.arange(total, device=ka.device) - torch.repeat_interleave(starts - lo, counts, output_size=total)
    ib = order[offs]
    extra = [i for i, v in enumerate(b.names) if v not in shared]
    cols = torch.cat([a.cols[ia], b.cols[ib][:, extra]], dim=1)
    return _Table(cols, a.names + [b.names[i] for i in extra])


def _member(t: _Table, s: _Table, n: int) -> torch.Tensor:
    """Which rows of t have their s-variables' values in s."""
    key_s = torch.sort(_encode(s.cols, n))[0]
    key_t = _encode(t.cols[:, [t.names.index(v) for v in s.names]], n)
    pos = torch.searchsorted(key_s, key_t).clamp(max=max(key_s.shape[0] - 1, 0))
    if key_s.shape[0] == 0:
        return torch.zeros_like(key_t, dtype=torch.bool)
    return key_s[pos] == key_t


def _relation_codes(kb, space, store, rel):
    if rel in kb.types:
        idx = [kb.index_of(c) for c in kb.types[rel].members]
        return torch.tensor(idx, dtype=torch.long, device=space.device), 1
    return store[rel], len(kb.relations[rel])


def _rule_sparse(kb, space, rule, store, delta_pos, delta):
    n = space.n
    order = list(range(len(rule.positive)))
    if delta_pos is not None:
        order.remove(delta_pos)
        order.insert(0, delta_pos)
    table = None
    pending = list(rule.negative) + list(rule.compares)
    while order:
        if table is None:
            k = order.pop(0)
        else:
            k = next((j for j in order if set(named_vars(rule.positive[j].args)) & set(table.names)), order[0])
            order.remove(k)
        atom = rule.positive[k]
        codes, arity = _relation_codes(kb, space, store, atom.relation)
        if k == delta_pos:
            codes = delta
        t = _atom_table(kb, space, codes, atom.args, arity)
        table = t if table is None else _join(table, t, n)
        still = []
        for lit in pending:
            need = [a.name for a in lit.args if isinstance(a, Var) and not a.name.startswith("_#")]
            if not all(v in table.names for v in need):
                still.append(lit)
                continue
            if isinstance(lit, Compare):
                sides = [table.cols[:, table.names.index(a.name)] if isinstance(a, Var) else a for a in lit.args]
                m = space.compare(lit.op, *sides)
                if not isinstance(m, torch.Tensor):
                    m = torch.full((table.cols.shape[0],), bool(m), device=space.device)
            else:
                codes, arity = _relation_codes(kb, space, store, lit.relation)
                neg = _atom_table(kb, space, codes, lit.args, arity)
                if not neg.names:
                    m = torch.full((table.cols.shape[0],), neg.cols.shape[0] == 0, device=space.device)
                else:
                    m = ~_member(table, neg, n)
            table = _Table(table.cols[m], table.names)
        pending = still
        if table.cols.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=space.device)
    head = rule.head
    keep = torch.ones(table.cols.shape[0], dtype=torch.bool, device=space.device)
    cols = []
    for a, ty in zip(head.args, kb.relations[head.relation]):
        if isinstance(a, Var):
            c = table.cols[:, table.names.index(a.name)]
            if ty != ENTITY:
                keep &= space.type_mask(ty)[c]
        else:
            c = torch.full((table.cols.shape[0],), kb.index_of(a), dtype=torch.long, device=space.device)
        cols.append(c)
    stacked = torch.stack(cols, 1) if cols else table.cols.new_zeros((table.cols.shape[0], 0))
    return torch.unique(_encode(stacked[keep], n))


def _union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.unique(torch.cat([a, b]))


def _minus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sorted unique a without the elements of sorted b."""
    if b.shape[0] == 0 or a.shape[0] == 0:
        return a
    pos = torch.searchsorted(b, a).clamp(max=b.shape[0] - 1)
    return a[b[pos] != a]


def _fixpoint_sparse(kb: KnowledgeBase, space: _Space) -> dict[str, torch.Tensor]:
    n, dev = space.n, space.device
    store: dict[str, torch.Tensor] = {}
    for rel, types in kb.relations.items():
        _check_codes(n, len(types), f"relation {rel}")
        rows = kb.facts[rel]
        idx = torch.tensor([[kb.index_of(c) for c in r] for r in rows], dtype=torch.long, device=dev)
        store[rel] = torch.unique(_encode(idx.view(len(rows), len(types)), n))
    for comp in kb.strata():
        members = set(comp)
        rules = [r for r in kb.rules if r.head.relation in members]
        if not rules:
            continue
        delta = None
        while True:
            derived = {r: [] for r in members if r in store}
            for rule in rules:
                positions = [None] if delta is None else [
                    k for k, a in enumerate(rule.positive) if a.relation in members
                ]
                for pos in positions:
                    d = None if pos is None else delta[rule.positive[pos].relation]
                    if d is not None and d.shape[0] == 0:
                        continue
                    derived[rule.head.relation].append(_rule_sparse(kb, space, rule, store, pos, d))
            delta = {}
            changed = False
            for r, parts in derived.items():
                new = torch.unique(torch.cat(parts)) if parts else store[r][:0]
                new = _minus(new, store[r])
                delta[r] = new
                if new.shape[0]:
                    store[r] = _union(store[r], new)
                    changed = True
            if not changed:
                break
    return store


# ---------------------------------------------------------------- front door


def _results(kb: KnowledgeBase):
    """The fixpoint of the current program (cached until it changes)."""
    if kb.forward_cache is None:
        space = _Space(kb, kb.device)
        layout, biggest = _choose_layout(kb, space.n, kb.device)
        store = _fixpoint_dense(kb, space) if layout == "dense" else _fixpoint_sparse(kb, space)
        nbytes = sum(t.numel() * t.element_size() for t in store.values())
        kb.last_layout = layout
        kb.last_stats = {"layout": layout, "universe": space.n, "largest_dense_elements": biggest, "bytes": nbytes}
        kb.forward_cache = (layout, space, store)
    return kb.forward_cache


def forward_query(kb: KnowledgeBase, atom: Atom, where: tuple) -> list[dict[str, object]]:
    layout, space, store = _results(kb)
    names = answer_vars(atom.args)
    u = kb.universe()
    if layout == "dense":
        src = space.type_mask(atom.relation) if atom.relation in kb.types else store[atom.relation]
        p = _prep_dense(src, atom.args, kb)
        if p is None:
            return []
        t, got = _drop_unreported(*p, names, lambda t, d: t.any(dim=d))
        if not names:
            return [{}] if bool(t) else []
        t = t.permute([got.index(v) for v in names])
        for c in where:
            m, cn = _compare_dense(space, c)
            if not isinstance(m, torch.Tensor):
                if not m:
                    return []
                continue
            shape = [1] * len(names)
            for v in cn:
                shape[names.index(v)] = space.n
            perm = sorted(range(len(cn)), key=lambda i: names.index(cn[i]))
            t = t & m.permute(perm).reshape(shape)
        rows = t.nonzero().tolist()
    else:
        codes, arity = _relation_codes(kb, space, store, atom.relation)
        table = _atom_table(kb, space, codes, atom.args, arity)
        if not names:
            return [{}] if table.cols.shape[0] else []
        cols = table.cols[:, [table.names.index(v) for v in names]]
        keep = torch.ones(cols.shape[0], dtype=torch.bool, device=cols.device)
        for c in where:
            sides = [cols[:, names.index(a.name)] if isinstance(a, Var) else a for a in c.args]
            m = space.compare(c.op, *sides)
            keep &= m if isinstance(m, torch.Tensor) else torch.full_like(keep, bool(m))
        cols = torch.unique(cols[keep], dim=0)  # anonymous columns dropped: answers may repeat
        cols = cols[torch.argsort(_encode(cols, space.n))]
        rows = cols.tolist()
    return [{v: u[i] for v, i in zip(names, r)} for r in rows]


def _add_compares(space, rule, ops: list, subs: list, as_operand) -> bool:
    """Append the rule's comparison masks as einsum operands; False when a constant comparison fails."""
    for c in rule.compares:
        m, names = _compare_dense(space, c)
        if not isinstance(m, torch.Tensor):
            if not m:
                return False
            continue
        ops.append(as_operand(m))
        subs.append(names)
    return True


def _drop_unreported(t: torch.Tensor, got: list, names: list, reduce) -> tuple[torch.Tensor, list]:
    """Reduce the dimensions of variables the query does not report (anonymous ones)."""
    for d in reversed([i for i, v in enumerate(got) if v not in names]):
        t = reduce(t, d)
    return t, [v for v in got if v in names]


def _domain_index(kb, ty, device):
    return torch.tensor([kb.index_of(c) for c in kb.domain(ty)], dtype=torch.long, device=device)


def relation_tensor(kb: KnowledgeBase, name: str) -> torch.Tensor:
    layout, space, store = _results(kb)
    types = kb.arg_types(name)
    if name in kb.types:
        full = space.type_mask(name)
    elif layout == "dense":
        full = store[name]
    else:
        size = space.n ** len(types)
        if size > (kb.dense_limit or CPU_DENSE_LIMIT):
            raise LogicError(f"relation_tensor('{name}'): the dense form has {size} elements, too many")
        full = torch.zeros(size, dtype=torch.bool, device=space.device)
        full[store[name]] = True
        full = full.view((space.n,) * len(types))
    if not types:
        return full
    idx = [_domain_index(kb, ty, space.device) for ty in types]
    return full[torch.meshgrid(*idx, indexing="ij")] if len(idx) > 1 else full[idx[0]]


# ---------------------------------------------------------------- soft evaluation


def _noisy_or(parts):
    out = None
    for p in parts:
        out = p if out is None else 1 - (1 - out) * (1 - p)
    return out


def _soft_values(kb: KnowledgeBase, temperature: float, bias: float, iterations: int):
    space = _Space(kb, kb.device)
    n, dev = space.n, space.device
    vals: dict[str, torch.Tensor] = {}
    base: dict[str, torch.Tensor] = {}
    for rel, types in kb.relations.items():
        k = len(types)
        if rel in kb.soft_tensors:
            src = kb.soft_tensors[rel].to(dev)
            t = torch.zeros((n,) * k, dtype=src.dtype, device=dev)
            idx = [_domain_index(kb, ty, dev) for ty in types]
            t = t.index_put(tuple(torch.meshgrid(*idx, indexing="ij")), src) if k else src
        else:
            t = torch.zeros((n,) * k, dtype=torch.float32, device=dev)
            rows = kb.facts[rel]
            if rows:
                idx = torch.tensor([[kb.index_of(c) for c in r] for r in rows], dtype=torch.long, device=dev)
                if k:
                    t[tuple(idx.T)] = 1.0
                else:
                    t.fill_(1.0)
        base[rel] = vals[rel] = t

    def soft_noisy_any(t, dim):
        return 1 - torch.prod(1 - t, dim=dim)

    def value(rel):
        return space.type_mask(rel).float() if rel in kb.types else vals[rel]

    def fire(rule):
        ops, subs = [], []
        for atom in rule.positive:
            p = _prep_dense(value(atom.relation), atom.args, kb, reduce=soft_noisy_any)
            if p is None:
                return None
            ops.append(p[0])
            subs.append(p[1])
        for atom in rule.negative:
            p = _prep_dense(value(atom.relation), atom.args, kb, reduce=soft_noisy_any)
            if p is None:
                continue
            ops.append(1 - p[0])
            subs.append(p[1])
        if not _add_compares(space, rule, ops, subs, lambda m: m.float()):
            return None
        head_vars = named_vars(rule.head.args)
        letters = _letters(sorted({v for s in subs for v in s}, key=lambda v: (v not in head_vars, v)))
        eq = ",".join("".join(letters[v] for v in s) for s in subs) + "->" + "".join(letters[v] for v in head_vars)
        dtype = torch.promote_types(torch.float32, ops[0].dtype) if ops else torch.float32
        res = torch.sigmoid((torch.einsum(eq, *[o.to(dtype) for o in ops]) - bias) / temperature)
        for a, ty in zip(rule.head.args, kb.relations[rule.head.relation]):
            if isinstance(a, Var) and ty != ENTITY:
                shape = [1] * len(head_vars)
                shape[head_vars.index(a.name)] = n
                res = res * space.type_mask(ty).float().view(shape)
        head = rule.head
        if not head.args or [a.name if isinstance(a, Var) else None for a in head.args] == head_vars:
            return res
        grids = torch.meshgrid(*[torch.arange(n, device=dev)] * len(head_vars), indexing="ij") if head_vars else ()
        idx = []
        for a in head.args:
            if isinstance(a, Var):
                idx.append(grids[head_vars.index(a.name)].reshape(-1))
            else:
                idx.append(torch.full((max(1, n ** len(head_vars)),), kb.index_of(a), dtype=torch.long, device=dev))
        out = torch.zeros((n,) * len(head.args), dtype=res.dtype, device=dev)
        return out.index_put(tuple(idx), res.reshape(-1))

    for comp in kb.strata():
        members = [r for r in comp if r in kb.relations]
        rules = [r for r in kb.rules if r.head.relation in members]
        if not rules:
            continue
        recursive = any(a.relation in members for r in rules for a in r.positive)
        for _ in range(iterations if recursive else 1):
            parts = {r: [base[r]] for r in members}
            for rule in rules:
                res = fire(rule)
                if res is not None:
                    parts[rule.head.relation].append(res)
            new = {r: _noisy_or(p) for r, p in parts.items()}
            delta = max(float((new[r] - vals[r]).detach().abs().max()) if new[r].numel() else 0.0 for r in members)
            vals.update(new)
            if delta < 1e-6:
                break
    return space, vals


def soft_query(kb: KnowledgeBase, atom: Atom, temperature: float, bias: float, iterations: int) -> torch.Tensor:
    if temperature <= 0:
        raise LogicError(f"soft_query: temperature must be > 0, got {temperature}")
    space, vals = _soft_values(kb, temperature, bias, iterations)
    src = space.type_mask(atom.relation).float() if atom.relation in kb.types else vals[atom.relation]
    noisy_or = lambda t, dim: 1 - torch.prod(1 - t, dim=dim)  # noqa: E731
    p = _prep_dense(src, atom.args, kb, reduce=noisy_or)
    names = answer_vars(atom.args)
    if p is None:
        return torch.zeros((0,) * len(names), device=space.device)
    t, got = _drop_unreported(*p, names, noisy_or)
    if not names:
        return t
    t = t.permute([got.index(v) for v in names])
    types = kb.arg_types(atom.relation)
    for d, v in enumerate(names):
        ty = types[next(i for i, a in enumerate(atom.args) if isinstance(a, Var) and a.name == v)]
        t = t.index_select(d, _domain_index(kb, ty, space.device))
    return t
