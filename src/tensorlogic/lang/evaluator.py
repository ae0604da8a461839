"""Runs a parsed TensorLogic program: scopes, functions, structs, control flow and operators.

Semantics follow the original TensorLogic (docs/LANGUAGE.md says where we differ on purpose):
- ``let`` declares in the current block (shadowing); plain ``x = v`` updates the nearest enclosing binding
  and declares ``x`` in the current block only when there is none. Functions see their own scope and the
  globals (lexical scoping; the original's scope stack let a function see its caller's variables).
- Integers are 64-bit: ``/`` and ``%`` of two integers truncate toward zero, overflow is an error.
- A function returns its ``return`` value or else the value of its last expression statement.
- Tensor parameters are checked for rank and shape variables; a different float dtype is converted.
"""

from __future__ import annotations

import difflib
import inspect
import math
import operator
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ScriptError, TensorLogicError
from . import ast
from .attrs import get_attr, get_method
from .builtins import BUILTINS
from .builtins.core import fill_placeholders
from .format import format_value
from .logic_stmts import EntityEmbedding, LogicStatements
from .parser import parse
from .values import (
    APPROX_TOL,
    DTYPES,
    BoundMethod,
    Builtin,
    BuiltinError,
    Context,
    Device,
    Record,
    dtype_name,
    first_line,
    is_number,
    run_op,
    script_signature,
    shape_text,
    to_tensor,
    truth,
    type_name,
)

# Deepest chain of TensorLogic calls; far below the Python stack this interpreter needs for it.
MAX_CALL_DEPTH = 400
_PY_RECURSION_LIMIT = 20000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

# Names every script sees unless it rebinds them.
PRELUDE: dict[str, Any] = {**DTYPES, "gpu": Device("gpu"), "cpu": Device("cpu")}
# Written types that name tensor element types (a tensor parameter or return type).
TENSOR_TYPES: dict[str, torch.dtype] = {
    **{k: v for k, v in DTYPES.items()},
    "int16": torch.int16,
    "f16": torch.float16,
    "f32": torch.float32,
    "f64": torch.float64,
    "i32": torch.int32,
    "i64": torch.int64,
}
_SCALAR_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, (list, tuple)),
    "dict": lambda v: isinstance(v, dict),
    "void": lambda v: v is None,
    "any": lambda v: True,
}
# Written types that accept any value: tensors of unknown type, models, and the original's handle types.
_OPEN_TYPES = {"Tensor", "tensor", "model", "Model", "Tokenizer", "KVCache", "entity", "concept"}
_CMP = {"==", "!=", "<", "<=", ">", ">="}


def _debug() -> bool:
    return os.environ.get("TL_DEBUG", "") not in ("", "0")


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Function:
    """A user-defined function value (or a struct's associated function / method)."""

    decl: ast.FnDecl
    owner: str | None = None  # the struct type of a method

    @property
    def title(self) -> str:
        return f"{self.owner}::{self.decl.name}" if self.owner else self.decl.name

    def __str__(self) -> str:
        return f"<fn {self.title}({', '.join(p.name for p in self.decl.params)})>"


@dataclass(frozen=True)
class BoundStructMethod:
    """``s.method`` waiting for its call: the method with ``s`` as ``self``."""

    fn: Function
    self_value: Any


@dataclass(eq=False)
class StructValue:
    """An instance of a ``struct``; fields keep declaration order."""

    type: str
    fields: dict[str, Any]
    type_args: tuple[str, ...] = ()
    dropped: bool = field(default=False, repr=False)

    def __str__(self) -> str:
        args = f"<{', '.join(self.type_args)}>" if self.type_args else ""
        inner = ", ".join(f"{k}: {format_value(v, nested=True)}" for k, v in self.fields.items())
        return f"{self.type}{args} {{ {inner} }}" if inner else f"{self.type}{args} {{}}"


class Scope:
    """One block's variables, with a link to the enclosing block (None above the globals)."""

    __slots__ = ("vars", "parent")

    def __init__(self, parent: Scope | None = None):
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def find(self, name: str) -> Scope | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.vars:
                return scope
            scope = scope.parent
        return None

    def names(self) -> set[str]:
        out: set[str] = set()
        scope: Scope | None = self
        while scope is not None:
            out |= set(scope.vars)
            scope = scope.parent
        return out


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Any, node: ast.Node):
        self.value, self.node = value, node


_NO_VALUE = object()  # a block whose last statement is not an expression


# ---------------------------------------------------------------------------------------------- interpreter


class ScriptInterpreter(LogicStatements):
    """Executes programs against one global scope; the REPL keeps one interpreter across inputs."""

    def __init__(self, ctx: Context | None = None):
        self.ctx = ctx or Context()
        self.globals = Scope()
        self.scope = self.globals
        self.structs: dict[str, ast.StructDecl] = {}
        self.methods: dict[str, dict[str, Function]] = {}  # struct name -> method name -> function
        self.drops: dict[str, Function] = {}
        self.python_modules: dict[str, Any] = {}
        self.sources: dict[str, list[str]] = {}
        self.paths: dict[str, Path] = {}  # display file name -> real path, for relative imports
        self.file = "<script>"
        self.imported: set[Path] = set()
        self.import_stack: list[Path] = []
        self.depth = 0
        self.tests: list[ast.TestBlock] = []
        self.benches: list[ast.BenchBlock] = []
        self.kb: Any = None  # the logic knowledge base, made on first use
        self.relations: set[str] = set()  # declared relations and rule heads: a call statement is a fact
        self.with_entity: str | None = None

    # ------------------------------------------------------------------ entry points
    def run(self, source: str, file: str, path: Path | None = None, echo: bool = False) -> None:
        """Parse and run ``source``: declarations, then top-level statements and ``main`` in order.

        ``test``/``bench`` blocks are collected (``run_tests`` / ``run_benches`` run them). With ``echo``
        (the REPL) the values of top-level expression statements are printed.
        """
        program = self.load(source, file, path)
        with self._deep_stack():
            for item in program.items:
                self._top(item, echo)

    def load(self, source: str, file: str, path: Path | None = None) -> ast.Program:
        """Parse ``source`` and register its declarations (functions, structs, impls, imports)."""
        self.sources[file] = source.splitlines()
        if path is not None:
            self.paths[file] = path.resolve()
        program = parse(source, file)
        self.file = file
        real = self.paths.get(file)
        if real is not None:
            self.import_stack.append(real)
        try:
            self._declare(program.items, imported=False)
        finally:
            if real is not None:
                self.import_stack.pop()
                self.imported.add(real)
        return program

    def run_declarations(self, program: ast.Program) -> None:
        """Run the program's top-level declarations that make values (tensors, logic), not its statements
        or ``main``: what ``tl test`` does before the test blocks, as the original does."""
        kinds = (ast.TensorDecl, ast.EntityDecl, ast.RelationDecl, ast.Rule, ast.EmbeddingDecl)
        with self._deep_stack():
            for item in program.items:
                if isinstance(item, kinds):
                    self._guard(lambda item=item: self.exec(item), item)

    def run_tests(self, out: Any = None) -> tuple[int, int]:
        """Run every collected ``test`` block in a fresh scope; returns (passed, failed)."""
        stream = out or self.ctx.stdout()
        passed = failed = 0
        for block in self.tests:
            try:
                with self._deep_stack():
                    self._run_block_scoped(block.body, block)
            except ScriptError as e:
                failed += 1
                print(f"test {block.name} ... FAILED", file=stream)
                print(f"  {e.message} ({e.file}:{e.line}:{e.col})", file=stream)
            else:
                passed += 1
                print(f"test {block.name} ... ok", file=stream)
        return passed, failed

    def run_benches(self, out: Any = None) -> list[tuple[str, float]]:
        """Run every collected ``bench`` block once; returns (name, seconds) and prints the timings."""
        stream = out or self.ctx.stdout()
        results = []
        for block in self.benches:
            start = time.perf_counter()
            with self._deep_stack():
                self._run_block_scoped(block.body, block)
            elapsed = time.perf_counter() - start
            results.append((block.name, elapsed))
            print(f"bench {block.name}: {elapsed * 1000:.3f} ms", file=stream)
        return results

    class _deep_stack:
        """Raise Python's recursion limit while a program runs (deep TensorLogic recursion)."""

        def __enter__(self) -> None:
            self.old = sys.getrecursionlimit()
            sys.setrecursionlimit(max(self.old, _PY_RECURSION_LIMIT))

        def __exit__(self, *exc: Any) -> None:
            sys.setrecursionlimit(self.old)

    # ------------------------------------------------------------------ declarations
    def _declare(self, items: tuple, imported: bool) -> None:
        # Functions and types exist before anything runs, so code may use one declared further down.
        for item in items:
            if isinstance(item, ast.FnDecl):
                self.globals.vars[item.name] = Function(item)
            elif isinstance(item, ast.StructDecl):
                self._declare_struct(item)
        for item in items:
            if isinstance(item, ast.ImplBlock):
                self._declare_impl(item)
            elif isinstance(item, ast.Import):
                self._import(item)
            elif isinstance(item, ast.TestBlock) and not imported:
                self.tests.append(item)
            elif isinstance(item, ast.BenchBlock) and not imported:
                self.benches.append(item)

    def _declare_struct(self, decl: ast.StructDecl) -> None:
        seen = set()
        for f in decl.fields:
            if f.name in seen:
                raise self.error(f, f"struct {decl.name} has two fields named '{f.name}'")
            seen.add(f.name)
        self.structs[decl.name] = decl

    def _declare_impl(self, block: ast.ImplBlock) -> None:
        name = block.type.base
        if name not in self.structs:
            raise self.error(block.type, f"impl for unknown struct '{name}'{self._hint(name, self.structs)}")
        table = self.methods.setdefault(name, {})
        for m in block.methods:
            fn = Function(m, owner=name)
            if block.trait == "Drop":
                if m.name != "drop":
                    raise self.error(m, f"impl Drop for {name} may only define 'drop', not '{m.name}'")
                self.drops[name] = fn
                continue
            if m.name in table:
                raise self.error(m, f"{name} already has a method '{m.name}'")
            table[m.name] = fn

    def _top(self, item: Any, echo: bool) -> None:
        if isinstance(item, (ast.FnDecl, ast.StructDecl, ast.ImplBlock, ast.Import, ast.TestBlock, ast.BenchBlock)):
            return
        if isinstance(item, ast.Main):
            self._guard(lambda: self._run_block_scoped(item.body, item), item)
        elif echo and isinstance(item, ast.ExprStmt):
            value = self._guard(lambda: self.eval(item.expr), item)
            if value is not None:
                print(format_value(value), file=self.ctx.stdout())
        else:
            self._guard(lambda: self.exec(item), item)

    def _run_block_scoped(self, body: tuple, node: ast.Node) -> None:
        try:
            self.exec_scoped(body)
        except _Return:
            pass  # `return` in main/test/bench ends the block
        except (_Break, _Continue):
            raise self.error(node, "break/continue outside a loop") from None

    def _guard(self, thunk: Callable[[], Any], node: ast.Node) -> Any:
        """Run one top-level item; an unexpected Python error becomes a ScriptError there (unless TL_DEBUG)."""
        try:
            return thunk()
        except (ScriptError, KeyboardInterrupt):
            raise
        except RecursionError:
            raise self.error(node, "too much recursion (the Python stack ran out)") from None
        except Exception as e:
            if _debug():
                raise
            raise self.error(node, f"internal error: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ errors and names
    def error(self, node: ast.Node, message: str, file: str | None = None) -> ScriptError:
        file = file or self.file
        lines = self.sources.get(file, [])
        text = lines[node.line - 1] if 0 < node.line <= len(lines) else None
        return ScriptError(message, file, node.line or None, node.col or None, text)

    @staticmethod
    def _hint(name: str, known: Any) -> str:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
        return f" — did you mean '{close[0]}'?" if close else ""

    def lookup(self, name: str, node: ast.Node) -> Any:
        scope = self.scope.find(name)
        if scope is not None:
            return scope.vars[name]
        if name in PRELUDE:
            return PRELUDE[name]
        if name in BUILTINS:
            return BUILTINS[name]
        if name in self.python_modules:
            return self.python_modules[name]
        logic = self.logic_name(name)
        if logic is not None:
            return logic
        known = self.scope.names() | set(PRELUDE) | set(BUILTINS)
        raise self.error(node, f"unknown name '{name}'{self._hint(name, known)}")

    def declare(self, name: str, value: Any) -> None:
        self.scope.vars[name] = value

    def assign(self, name: str, value: Any) -> None:
        scope = self.scope.find(name)
        (scope or self.scope).vars[name] = value

    # ------------------------------------------------------------------ statements
    def exec_block(self, stmts: tuple) -> Any:
        """Run statements in the current scope; the value of the last one when it is an expression."""
        result: Any = _NO_VALUE
        for s in stmts:
            result = self.exec(s)
        return result

    def exec_scoped(self, stmts: tuple, bindings: dict[str, Any] | None = None) -> Any:
        """Run statements in a new block scope (dropping its structs at the end)."""
        outer = self.scope
        self.scope = Scope(outer)
        if bindings:
            self.scope.vars.update(bindings)
        result: Any = _NO_VALUE
        try:
            result = self.exec_block(stmts)
            return result
        except _Return as r:
            result = r.value
            raise
        finally:
            inner, self.scope = self.scope, outer
            self._drop_scope(inner, result)

    def exec(self, s: Any) -> Any:
        method = getattr(self, "exec_" + type(s).__name__, None)
        if method is None:
            raise self.error(s, f"{_construct(s)} is only allowed at the top level of a program")
        return method(s)

    def exec_ExprStmt(self, s: ast.ExprStmt) -> Any:
        if isinstance(s.expr, ast.Call):
            relation = self.fact_relation(s.expr)
            if relation is not None:
                self.add_fact(relation, s.expr)
                return _NO_VALUE
        return self.eval(s.expr)

    def exec_Let(self, s: ast.Let) -> Any:
        value = self.eval(s.value)
        if s.type is not None:
            value = self._check_type(s.type, value, s.value, f"'{s.name}'", {})
        self.declare(s.name, value)
        return _NO_VALUE

    def exec_Assign(self, s: ast.Assign) -> Any:
        value = self.eval(s.value)
        if s.op in ("+=", "-=", "*=", "/="):
            value = self.binary(s.op[0], self.eval(s.target), value, s)
        target = s.target
        if isinstance(target, ast.Name):
            self.assign(target.id, value)
        elif isinstance(target, ast.Attr):
            self._set_field(target, value)
        elif isinstance(target, ast.Index):
            self._set_index(target, value)
        else:
            raise self.error(target, "cannot assign to this expression")
        return _NO_VALUE

    def _set_field(self, target: ast.Attr, value: Any) -> None:
        obj = self.eval(target.target)
        if isinstance(obj, StructValue):
            if target.name not in obj.fields:
                raise self.error(
                    target, f"struct {obj.type} has no field '{target.name}'{self._hint(target.name, obj.fields)}"
                )
            obj.fields[target.name] = value
        elif isinstance(obj, dict):
            obj[target.name] = value
        else:
            raise self.error(target, f"cannot set field '{target.name}' of {_a(obj)}")

    def _set_index(self, target: ast.Index, value: Any) -> None:
        container = self.eval(target.target)
        key = self._subscript(target)
        try:
            if isinstance(container, torch.Tensor):
                if isinstance(value, (list, tuple)):
                    value = to_tensor(self.ctx, value, container.dtype)
                with torch.no_grad():
                    container[key] = value.to(container.device) if isinstance(value, torch.Tensor) else value
            elif isinstance(container, (list, dict)):
                container[key[0] if len(key) == 1 else key] = value
            elif hasattr(container, "items") and hasattr(container, "kind"):  # a Vec
                container.items[key[0]] = value
            else:
                raise self.error(target, f"cannot assign into {_a(container)}")
        except ScriptError:
            raise
        except (IndexError, KeyError, TypeError, RuntimeError, ValueError, BuiltinError) as e:
            raise self.error(target, f"cannot assign here: {first_line(e)}") from None

    def exec_TensorDecl(self, s: ast.TensorDecl) -> Any:
        dtype = self._dtype(s.type.base, s.type)
        dims = s.type.dims or ()
        if s.value is None:
            shape = [self._decl_dim(d, s) for d in dims]
            t = torch.zeros(shape, dtype=dtype, device=self.ctx.torch_device())
        else:
            value = self.eval(s.value)
            if is_number(value) and dims and all(isinstance(d, int) for d in dims):
                t = torch.full(list(dims), value, dtype=dtype, device=self.ctx.torch_device())
            else:
                t = self._builtin_call(lambda: to_tensor(self.ctx, value, dtype), s.value, "tensor")
                if isinstance(value, torch.Tensor):
                    t = t.clone()
                t = self._reshape_flat(s, t)
            self._check_decl_shape(s, t)
        if s.qualifier == "learnable":
            if not t.is_floating_point():
                raise self.error(s, f"only floating tensors can be learnable; '{s.name}' is {dtype_name(dtype)}")
            t.requires_grad_(True)
        self.declare(s.name, t)
        return _NO_VALUE

    def _reshape_flat(self, s: ast.TensorDecl, t: torch.Tensor) -> torch.Tensor:
        # A flat initializer fills the declared shape in row-major order (as the original does).
        dims = s.type.dims or ()
        if t.numel() == 1 and t.ndim != len(dims) and all(d == 1 for d in dims):
            return t.reshape([1] * len(dims))
        if t.ndim != 1 or len(dims) <= 1:
            return t
        shape = [self._decl_dim(d, s, allow_unknown=True) for d in dims]
        if shape.count(-1) <= 1:
            try:
                return t.reshape(shape)
            except RuntimeError:
                pass
        declared = f"{s.type.base}[{', '.join(str(d) for d in dims)}]"
        raise self.error(s.type, f"'{s.name}' is declared {declared} but its initializer has {t.numel()} values")

    def _decl_dim(self, d: int | str, s: ast.TensorDecl, allow_unknown: bool = False) -> int:
        if isinstance(d, int):
            return d
        if d == "?":
            if allow_unknown:
                return -1
            raise self.error(s.type, f"'{s.name}' has a '?' dimension; give it an initial value to fix its size")
        scope = self.scope.find(d)
        value = scope.vars[d] if scope is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if allow_unknown:
            return -1
        raise self.error(s.type, f"dimension '{d}' of '{s.name}' has no value; define {d} or give an initial value")

    def _check_decl_shape(self, s: ast.TensorDecl, t: torch.Tensor) -> None:
        dims = s.type.dims or ()
        declared = f"{s.type.base}[{', '.join(str(d) for d in dims)}]"
        if t.ndim != len(dims):
            raise self.error(s.type, f"'{s.name}' is declared {declared} but its value has shape {shape_text(t)}")
        seen: dict[str, int] = {}
        for i, (d, n) in enumerate(zip(dims, t.shape)):
            if d == "?":
                continue
            if isinstance(d, str):
                scope = self.scope.find(d)
                bound = scope.vars[d] if scope is not None else None
                expect = bound if isinstance(bound, int) and not isinstance(bound, bool) else seen.setdefault(d, n)
            else:
                expect = d
            if expect != n:
                raise self.error(
                    s.type, f"'{s.name}' is declared {declared} but its value has shape {shape_text(t)} (dimension {i})"
                )

    def exec_If(self, s: ast.If) -> Any:
        if self._truth(self.eval(s.cond), s.cond):
            return self.exec_scoped(s.body)
        if len(s.orelse) == 1 and isinstance(s.orelse[0], ast.If):
            return self.exec_If(s.orelse[0])
        return self.exec_scoped(s.orelse) if s.orelse else _NO_VALUE

    def exec_Block(self, s: ast.Block) -> Any:
        return self.exec_scoped(s.body)

    def exec_For(self, s: ast.For) -> Any:
        iterable = self.eval(s.iter)
        for value in self._iterate(iterable, s.iter):
            try:
                self.exec_scoped(s.body, {s.var: value})
            except _Break:
                break
            except _Continue:
                continue
        return _NO_VALUE

    def _iterate(self, iterable: Any, node: ast.Node) -> Iterator[Any]:
        if isinstance(iterable, torch.Tensor):
            if iterable.ndim == 0:
                raise self.error(node, "cannot loop over a scalar tensor")
            return iter(iterable.unbind(0))
        if isinstance(iterable, (range, list, tuple, str)):
            return iter(list(iterable) if isinstance(iterable, list) else iterable)
        if isinstance(iterable, dict):
            return iter(list(iterable))
        items = getattr(iterable, "items", None)
        if isinstance(items, list):  # a Vec: iterate over a snapshot
            return iter(list(items))
        hint = "; use range(n)" if isinstance(iterable, int) else ""
        raise self.error(node, f"cannot loop over {_a(iterable)}{hint}")

    def exec_While(self, s: ast.While) -> Any:
        while self._truth(self.eval(s.cond), s.cond):
            try:
                self.exec_scoped(s.body)
            except _Break:
                break
            except _Continue:
                continue
        return _NO_VALUE

    def exec_Loop(self, s: ast.Loop) -> Any:
        while True:
            try:
                self.exec_scoped(s.body)
            except _Break:
                break
            except _Continue:
                continue
        return _NO_VALUE

    def exec_Break(self, s: ast.Break) -> Any:
        raise _Break()

    def exec_Continue(self, s: ast.Continue) -> Any:
        raise _Continue()

    def exec_Return(self, s: ast.Return) -> Any:
        raise _Return(None if s.value is None else self.eval(s.value), s)

    def exec_PythonImport(self, s: ast.PythonImport) -> Any:
        import importlib

        try:
            module = importlib.import_module(s.module)
        except ImportError as e:
            raise self.error(s, f"python import {s.module}: {first_line(e)}") from None
        self.python_modules[s.alias or s.module.split(".")[0]] = module if s.alias else importlib.import_module(
            s.module.split(".")[0]
        )
        return _NO_VALUE

    def _truth(self, value: Any, node: ast.Node) -> bool:
        try:
            return truth(value)
        except BuiltinError as e:
            raise self.error(node, str(e)) from None

    def _drop_scope(self, scope: Scope, result: Any) -> None:
        """Run ``drop`` of the structs that die with ``scope`` (newest first), as Rust does."""
        if not self.drops:
            return
        for value in reversed(list(scope.vars.values())):
            if not isinstance(value, StructValue) or value.dropped or value is result:
                continue
            fn = self.drops.get(value.type)
            if fn is None or self._alive_outside(value, scope.parent):
                continue
            value.dropped = True
            self.call_function(fn, [], {}, fn.decl, (), (), self_value=value)

    @staticmethod
    def _alive_outside(value: StructValue, scope: Scope | None) -> bool:
        while scope is not None:
            if any(v is value for v in scope.vars.values()):
                return True
            scope = scope.parent
        return False

    # ------------------------------------------------------------------ imports
    def _import(self, s: ast.Import) -> None:
        base = self.paths.get(self.file)
        folder = base.parent if base is not None else self.ctx.base_dir
        path = (folder / s.path).resolve()
        if path in self.import_stack:
            chain = [p.name for p in self.import_stack[self.import_stack.index(path):]] + [path.name]
            raise self.error(s, f"import cycle: {' -> '.join(chain)}")
        if path in self.imported:
            return
        if not path.is_file():
            raise self.error(s, f"cannot import '{s.path}': no such file ({path})")
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise self.error(s, f"cannot import '{s.path}': {first_line(e)}") from None
        shown = os.path.normpath(os.path.join(os.path.dirname(self.file), s.path))
        self.sources[shown] = source.splitlines()
        self.paths[shown] = path
        program = parse(source, shown)
        caller = self.file
        self.import_stack.append(path)
        self.file = shown
        try:
            # Only declarations come across: functions, structs, impls, tensors and nested imports.
            self._declare(program.items, imported=True)
            for item in program.items:
                if isinstance(item, ast.TensorDecl):
                    self._guard(lambda item=item: self.exec(item), item)
        finally:
            self.file = caller
            self.import_stack.pop()
        self.imported.add(path)

    # ------------------------------------------------------------------ expressions
    def eval(self, e: Any) -> Any:
        return getattr(self, "eval_" + type(e).__name__)(e)

    def eval_Num(self, e: ast.Num) -> Any:
        return e.value

    def eval_Str(self, e: ast.Str) -> str:
        return e.value

    def eval_Bool(self, e: ast.Bool) -> bool:
        return e.value

    def eval_Name(self, e: ast.Name) -> Any:
        return self.lookup(e.id, e)

    def eval_ListLit(self, e: ast.ListLit) -> Any:
        items = [self.eval(x) for x in e.items]
        if any(isinstance(x, list) for x in items) and all(isinstance(x, (list, int, float)) for x in items):
            # A nested numeric literal is a tensor (float16, as the language's default).
            return self._builtin_call(lambda: to_tensor(self.ctx, items), e, "tensor literal")
        numbers = [x for x in items if is_number(x) and not isinstance(x, bool)]
        if numbers and len(numbers) == len(items):
            # The first element decides the array's type (the original's rule): after a float, integers
            # become floats; after an integer, a float is an error.
            if isinstance(items[0], float):
                return [float(x) for x in items]
            if any(isinstance(x, float) for x in items):
                bad = next(i for i, x in enumerate(items) if isinstance(x, float))
                raise self.error(
                    e.items[bad],
                    "an array literal mixes integers and floats; write every element as a float (e.g. 1.0)",
                )
        return items

    def eval_TupleLit(self, e: ast.TupleLit) -> tuple:
        return tuple(self.eval(x) for x in e.items)

    def eval_DictLit(self, e: ast.DictLit) -> dict:
        out = {}
        for k, v in e.items:
            key = self.eval(k)
            if not isinstance(key, (str, int, bool)):
                raise self.error(k, f"dict keys must be strings or integers, not {_tname(key)}")
            out[key] = self.eval(v)
        return out

    def eval_TensorCtor(self, e: ast.TensorCtor) -> torch.Tensor:
        kwargs = {k: self.eval(v) for k, v in e.kwargs}
        args = [self.eval(a) for a in e.args]
        if e.dtype is not None:
            if "dtype" in kwargs:
                raise self.error(e, "give the dtype either as tensor<dtype> or as dtype:, not both")
            kwargs["dtype"] = self._dtype(e.dtype, e)
        return self.call_value(BUILTINS["tensor"], args, kwargs, e, "tensor", e.args, e.kwargs)

    def eval_StructLit(self, e: ast.StructLit) -> StructValue:
        decl = self.structs.get(e.type.base)
        if decl is None:
            raise self.error(e, f"unknown struct '{e.type.base}'{self._hint(e.type.base, self.structs)}")
        given = {}
        for name, expr in e.fields:
            if name in given:
                raise self.error(expr, f"field '{name}' given twice")
            given[name] = (self.eval(expr), expr)
        declared = [f.name for f in decl.fields]
        for name, (_, expr) in given.items():
            if name not in declared:
                raise self.error(expr, f"struct {decl.name} has no field '{name}'{self._hint(name, declared)}")
        missing = [n for n in declared if n not in given]
        if missing:
            raise self.error(e, f"struct {decl.name} literal is missing field{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}")
        generic = dict(zip(decl.type_params, (a.base for a in e.type.args)))
        fields = {}
        for f in decl.fields:
            value, expr = given[f.name]
            fields[f.name] = self._check_type(_substitute(f.type, generic), value, expr, f"field {f.name}", {})
        return StructValue(decl.name, fields, tuple(a.base for a in e.type.args))

    def eval_Attr(self, e: ast.Attr) -> Any:
        target = self.eval(e.target)
        return self._attr(target, e.name, e)

    def _attr(self, target: Any, name: str, node: ast.Node) -> Any:
        if isinstance(target, StructValue):
            if name in target.fields:
                return target.fields[name]
            method = self.methods.get(target.type, {}).get(name)
            if method is not None:
                return BoundStructMethod(method, target)
            known = list(target.fields) + list(self.methods.get(target.type, {}))
            raise self.error(node, f"struct {target.type} has no field or method '{name}'{self._hint(name, known)}")
        if type(target).__name__ == "module":
            try:
                return getattr(target, name)
            except AttributeError:
                raise self.error(node, f"python module {target.__name__} has no attribute '{name}'") from None
        try:
            # Values that resolve their own attributes (a GGUF model's tensor paths, a tokenizer's methods).
            if hasattr(type(target), "tl_attr"):
                return target.tl_attr(self.ctx, name)
            return get_attr(self.ctx, target, name)
        except (BuiltinError, TensorLogicError) as err:
            raise self.error(node, str(err)) from None

    def eval_Index(self, e: ast.Index) -> Any:
        target = self.eval(e.target)
        key = self._subscript(e)
        try:
            if isinstance(target, torch.Tensor):
                return target[key]
            if isinstance(target, (list, tuple, str, range)):
                if len(key) != 1:
                    raise self.error(e, f"{_a(target)} takes one index, got {len(key)}")
                return target[key[0]]
            if isinstance(target, dict):
                k = key[0] if len(key) == 1 else key
                if k not in target:
                    raise self.error(e, f"no key {format_value(k, nested=True)} in the dict")
                return target[k]
            if isinstance(target, Record):
                return target[key[0]]
            if isinstance(target, EntityEmbedding) and len(key) == 1 and isinstance(key[0], str):
                return target.row(key[0])
            if hasattr(type(target), "tl_index") and len(key) == 1:
                return target.tl_index(self.ctx, key[0])
            items = getattr(target, "items", None)
            if isinstance(items, list) and len(key) == 1:  # a Vec
                return items[key[0]]
        except ScriptError:
            raise
        except BuiltinError as err:
            raise self.error(e, str(err)) from None
        except (IndexError, KeyError, TypeError, RuntimeError, ValueError) as err:
            raise self.error(e, f"bad index: {first_line(err)}") from None
        raise self.error(e, f"cannot index {_a(target)}")

    def _subscript(self, e: ast.Index) -> tuple:
        out: list[Any] = []
        for item in e.items:
            if isinstance(item, ast.Slice):
                bounds = (item.start, item.stop, item.step)
                out.append(slice(*[None if p is None else self._index_int(self.eval(p), p) for p in bounds]))
            else:
                value = self.eval(item)
                if isinstance(value, torch.Tensor) and (value.ndim > 0 or value.dtype == torch.bool):
                    out.append(value)
                elif isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() == 1:
                    out.append(self._index_int(float(value.item()), item))
                elif isinstance(value, str):
                    out.append(value)
                elif isinstance(value, list):
                    out.append(torch.tensor(value))
                else:
                    out.append(self._index_int(value, item))
        return tuple(out)

    def _index_int(self, value: Any, node: ast.Node) -> int:
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            return int(value.item())
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise self.error(node, f"an index must be an integer, got {format_value(value, nested=True)}")

    def eval_UnaryOp(self, e: ast.UnaryOp) -> Any:
        v = self.eval(e.operand)
        if e.op == "not":
            if isinstance(v, torch.Tensor) and v.numel() != 1:
                return torch.logical_not(v)
            return not self._truth(v, e.operand)
        if isinstance(v, (list, tuple)):
            v = self._builtin_call(lambda: to_tensor(self.ctx, v), e, e.op)
        if e.op == "inv":
            if not isinstance(v, torch.Tensor) or v.ndim < 2:
                raise self.error(e, f"'inv' needs a square matrix, got {_describe(v)}")
            return self._builtin_call(lambda: run_op(torch.linalg.inv, v), e, "inv")
        if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
            raise self.error(e, f"cannot apply unary '{e.op}' to {_a(v)}")
        return self._int_result(-v, e) if e.op == "-" else +v

    def eval_Cast(self, e: ast.Cast) -> Any:
        v = self.eval(e.value)
        return self._builtin_call(lambda: _cast(v, e.type), e, f"as {e.type}")

    def eval_BinOp(self, e: ast.BinOp) -> Any:
        if e.op in ("and", "or"):
            return self._logic(e)
        left = self.eval(e.left)
        right = self.eval(e.right)
        return self.binary(e.op, left, right, e)

    def _logic(self, e: ast.BinOp) -> Any:
        left = self.eval(e.left)
        if isinstance(left, torch.Tensor) and left.numel() != 1:
            right = self.eval(e.right)
            fn = torch.logical_and if e.op == "and" else torch.logical_or
            return self._tensor_op(fn, e.op, left, right, e)
        lt = self._truth(left, e.left)
        if (e.op == "and" and not lt) or (e.op == "or" and lt):
            return lt
        return self._truth(self.eval(e.right), e.right)

    def binary(self, op: str, a: Any, b: Any, e: ast.Node) -> Any:
        """Apply a binary operator: 64-bit integer and float rules for numbers, torch for tensors and lists."""
        if op == "≈":
            return self._approx(a, b, e)
        if isinstance(a, StructValue) or isinstance(b, StructValue):
            if op in ("==", "!="):
                same = isinstance(a, StructValue) and isinstance(b, StructValue) and a.type == b.type and all(
                    truth(self.binary("==", a.fields[k], b.fields[k], e)) for k in a.fields
                )
                return same == (op == "==")
            raise self.error(e, f"cannot apply '{op}' to {_tname(a)} and {_tname(b)}")
        if isinstance(a, (torch.Tensor, list, tuple)) or isinstance(b, (torch.Tensor, list, tuple)):
            if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and op in ("==", "!="):
                return (list(a) == list(b)) == (op == "==")
            if op in ("⊙",):
                op = "*"
            if op == "⊗":
                return self._tensor_op(lambda x, y: torch.einsum("...i,...j->...ij", x, y), op, a, b, e)
            return self._tensor_op(_TORCH_OPS.get(op, _matmul), op, a, b, e)
        if isinstance(a, str) or isinstance(b, str):
            if op == "*" and isinstance(a, str) and isinstance(b, int) and not isinstance(b, bool):
                return a * max(b, 0)
            if op == "+":
                return format_value(a) + format_value(b)
            if op in ("==", "!=") or (isinstance(a, str) and isinstance(b, str) and op in _CMP):
                return _PY_OPS[op](a, b)
            raise self.error(e, f"cannot apply '{op}' to {_tname(a)} and {_tname(b)}")
        if op in ("==", "!="):
            return _PY_OPS[op](a, b)
        if not (is_number(a) and is_number(b)) or a is None or b is None:
            raise self.error(e, f"cannot apply '{op}' to {_tname(a)} and {_tname(b)}")
        if op in ("@", "⊗"):
            raise self.error(e, f"'{op}' needs tensors, not numbers")
        if op == "⊙":
            op = "*"
        ints = isinstance(a, int) and isinstance(b, int)
        try:
            if ints and op == "/":
                result = _int_div(a, b)
            elif ints and op == "%":
                result = _int_mod(a, b)
            elif ints and op == "**" and b < 0:
                result = float(a) ** b
            else:
                result = _PY_OPS[op](a, b)
        except (ZeroDivisionError, ValueError):  # math.fmod(x, 0) raises ValueError
            raise self.error(e, "division by zero") from None
        except OverflowError:
            raise self.error(e, f"'{op}' overflowed") from None
        if isinstance(result, complex):
            raise self.error(e, "a negative number raised to a fractional power has no real value")
        return self._int_result(result, e)

    def _int_result(self, result: Any, e: ast.Node) -> Any:
        if isinstance(result, int) and not isinstance(result, bool) and not INT_MIN <= result <= INT_MAX:
            raise self.error(e, "integer overflow: the result does not fit in 64 bits")
        return result

    def _tensor_op(self, fn: Callable, op: str, a: Any, b: Any, e: ast.Node) -> Any:
        try:
            if isinstance(a, (list, tuple)):
                a = to_tensor(self.ctx, list(a), b.dtype if isinstance(b, torch.Tensor) else None)
            if isinstance(b, (list, tuple)):
                b = to_tensor(self.ctx, list(b), a.dtype if isinstance(a, torch.Tensor) else None)
            for v in (a, b):
                if not isinstance(v, (torch.Tensor, int, float)):
                    raise BuiltinError(f"cannot apply '{op}' to {_tname(a)} and {_tname(b)}")
            if op in ("@", "⊗") and not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                raise BuiltinError(f"'{op}' needs two tensors")
            if not isinstance(a, torch.Tensor):
                a = torch.tensor(a, dtype=_scalar_dtype(a, b), device=b.device)
            if isinstance(b, torch.Tensor) and a.dtype != b.dtype and a.is_floating_point() and b.is_floating_point():
                # f16 (op) f32 computes in the wider type, as the original converts mixed operands.
                wide = torch.promote_types(a.dtype, b.dtype)
                a, b = a.to(wide), b.to(wide)
            if op == "@":
                return _matmul(a, b)
            return run_op(fn, a, b)
        except BuiltinError as err:
            raise self.error(e, str(err)) from None
        except (RuntimeError, TypeError, ValueError) as err:
            raise self.error(e, f"'{op}' failed on {_describe(a)} and {_describe(b)}: {first_line(err)}") from None

    def _approx(self, a: Any, b: Any, e: ast.Node) -> bool:
        if is_number(a) and is_number(b):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        try:
            other = b.dtype if isinstance(b, torch.Tensor) else None
            ta = a if isinstance(a, torch.Tensor) else to_tensor(self.ctx, a, other)
            tb = b if isinstance(b, torch.Tensor) else to_tensor(self.ctx, b, ta.dtype)
            ta, tb = ta.detach(), tb.detach().to(ta.device)
            wide = torch.promote_types(ta.dtype, tb.dtype)
            narrow = ta.dtype if ta.dtype.itemsize <= tb.dtype.itemsize else tb.dtype
            rtol, atol = APPROX_TOL.get(narrow, (1e-9, 1e-12))
            if not wide.is_floating_point:
                wide = torch.float64
            return bool(torch.allclose(ta.to(wide), tb.to(wide), rtol=rtol, atol=atol))
        except BuiltinError as err:
            raise self.error(e, str(err)) from None
        except RuntimeError as err:
            raise self.error(e, f"'≈' failed on {_describe(a)} and {_describe(b)}: {first_line(err)}") from None

    def eval_Match(self, e: ast.Match) -> Any:
        subject = self.eval(e.subject)
        for arm in e.arms:
            bindings: dict[str, Any] = {}
            if not self._match(arm.pattern, subject, bindings):
                continue
            if arm.guard is not None:
                outer = self.scope
                self.scope = Scope(outer)
                self.scope.vars.update(bindings)
                try:
                    ok = self._truth(self.eval(arm.guard), arm.guard)
                finally:
                    self.scope = outer
                if not ok:
                    continue
            if isinstance(arm.body, tuple):
                value = self.exec_scoped(arm.body, bindings)
                return None if value is _NO_VALUE else value
            outer = self.scope
            self.scope = Scope(outer)
            self.scope.vars.update(bindings)
            try:
                return self.eval(arm.body)
            finally:
                self.scope = outer
        raise self.error(e, f"no match arm fits the value {format_value(subject, nested=True)}")

    def _match(self, p: ast.Pattern, v: Any, out: dict[str, Any]) -> bool:
        if isinstance(p, ast.PWild):
            return True
        if isinstance(p, ast.PVar):
            out[p.name] = v
            return True
        if isinstance(p, ast.PLit):
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(p.value, bool) or isinstance(v, bool):
                return isinstance(v, bool) and isinstance(p.value, bool) and v == p.value
            if isinstance(p.value, str) or isinstance(v, str):
                return v == p.value
            return is_number(v) and v == p.value
        if isinstance(p, ast.POr):
            return any(self._match(alt, v, out) for alt in p.alts)
        if isinstance(p, ast.PTuple):
            if not isinstance(v, (tuple, list)) or len(v) != len(p.items):
                return False
            return all(self._match(sub, x, out) for sub, x in zip(p.items, v))
        if isinstance(p, ast.PStruct):
            if not isinstance(v, StructValue) or v.type != p.type:
                return False
            for name, sub in p.fields:
                if name not in v.fields:
                    raise self.error(p, f"struct {v.type} has no field '{name}'")
                if not self._match(sub, v.fields[name], out):
                    return False
            return True
        raise self.error(p, "unsupported pattern")

    def eval_IfExpr(self, e: ast.IfExpr) -> Any:
        value = self.exec_If(e.stmt)
        return None if value is _NO_VALUE else value

    def eval_Path(self, e: ast.Path) -> Any:
        return self._path_value(e)

    def _path_value(self, e: ast.Path) -> Any:
        base = e.type.base
        key = f"{base}::{e.name}"
        if key in BUILTINS:
            return BUILTINS[key]
        fn = self.methods.get(base, {}).get(e.name)
        if fn is not None:
            return fn
        if base in _TYPE_NAMESPACES and e.name in BUILTINS:
            return _in_dtype(BUILTINS[e.name], _TYPE_NAMESPACES[base])
        if base in self.structs:
            known = list(self.methods.get(base, {}))
            raise self.error(e, f"struct {base} has no associated function '{e.name}'{self._hint(e.name, known)}")
        known_paths = [k for k in BUILTINS if k.startswith(f"{base}::")]
        if known_paths:
            names = [k.split("::", 1)[1] for k in known_paths]
            raise self.error(e, f"unknown function '{key}'{self._hint(e.name, names)}")
        raise self.error(e, f"unknown type '{base}' in '{key}'")

    # ------------------------------------------------------------------ calls
    def eval_Call(self, e: ast.Call) -> Any:
        func = e.func
        if (isinstance(func, ast.Attr) and isinstance(func.target, ast.Name) and func.target.id == "python"
                and func.name == "call" and self.scope.find("python") is None):
            return self._python_dotted_call(e)
        if isinstance(func, ast.Attr):
            target = self.eval(func.target)
            name = func.name
            fn = self._method(target, name, func, bool(e.args or e.kwargs))
            if not _callable(fn):
                if e.args or e.kwargs:
                    raise self.error(func, f"'{name}' of {_a(target)} is not a method")
                return fn  # x.shape() reads the property, as the original allows
        elif isinstance(func, ast.Name) and func.id == "panic":
            args = [self.eval(a) for a in e.args]
            raise self.error(e, f"panic: {self._format_args(args, e)}")
        elif isinstance(func, ast.Name):
            fn = self.lookup(func.id, func)
            if not _callable(fn) and func.id in BUILTINS:
                # A variable named like a builtin does not hide the builtin from calls (as in the original).
                fn = BUILTINS[func.id]
            name = func.id
        else:
            fn = self.eval(func)
            name = func.id if isinstance(func, ast.Name) else (f"{func.type.base}::{func.name}" if isinstance(
                func, ast.Path) else "this")
        args = [self.eval(a) for a in e.args]
        kwargs = {k: self.eval(v) for k, v in e.kwargs}
        return self.call_value(fn, args, kwargs, e, name, e.args, e.kwargs)

    def _python_dotted_call(self, e: ast.Call) -> Any:
        """``python.call("np.sum", x)``: call a function of a module brought in with ``python import``."""
        if not e.args:
            raise self.error(e, 'python.call needs the function name first, e.g. python.call("np.sum", x)')
        target = self.eval(e.args[0])
        if not isinstance(target, str) or "." not in target:
            raise self.error(e.args[0], f"python.call: expected \"module.function\", got {format_value(target, True)}")
        module_name, *attrs = target.split(".")
        module = self.python_modules.get(module_name)
        if module is None:
            raise self.error(e.args[0], f"python.call: no python module '{module_name}'; add 'python import "
                             f"{module_name}' first")
        fn: Any = module
        for a in attrs:
            fn = getattr(fn, a, None)
            if fn is None:
                raise self.error(e.args[0], f"python.call: '{target}' does not exist")
        args = [self.eval(a) for a in e.args[1:]]
        kwargs = {k: self.eval(v) for k, v in e.kwargs}
        return self._python_call(fn, args, kwargs, e, target)

    def _method(self, target: Any, name: str, node: ast.Attr, has_args: bool) -> Any:
        if isinstance(target, StructValue):
            method = self.methods.get(target.type, {}).get(name)
            if method is not None:
                return BoundStructMethod(method, target)
            if name in target.fields:
                return target.fields[name]
            return self._attr(target, name, node)
        if isinstance(target, torch.Tensor):
            try:
                return get_method(self.ctx, target, name)
            except (BuiltinError, TensorLogicError) as err:
                raise self.error(node, str(err)) from None
        return self._attr(target, name, node)

    def _format_args(self, args: list, e: ast.Node) -> str:
        if not args:
            return "explicit panic"
        head, rest = args[0], args[1:]
        if isinstance(head, str) and "{}" in head:
            return self._builtin_call(lambda: fill_placeholders(self.ctx, head, tuple(rest)), e, "panic")
        return " ".join(format_value(v) for v in args)

    def call_value(
        self, fn: Any, args: list, kwargs: dict, node: ast.Node, name: str, arg_nodes: tuple, kw_nodes: tuple
    ) -> Any:
        if isinstance(fn, Function):
            return self.call_function(fn, args, kwargs, node, arg_nodes, kw_nodes)
        if isinstance(fn, BoundStructMethod):
            return self.call_function(fn.fn, args, kwargs, node, arg_nodes, kw_nodes, self_value=fn.self_value)
        if isinstance(fn, Builtin):
            call_args = [self.ctx, *args] if fn.needs_ctx else args
            self._check_signature(fn.signature, fn.name, args, kwargs, node)
            return self._builtin_call(lambda: fn.fn(*call_args, **kwargs), node, fn.name)
        if isinstance(fn, BoundMethod):
            head = [self.ctx, fn.self_value] if fn.needs_ctx else [fn.self_value]
            sig = script_signature(fn.fn, 2 if fn.needs_ctx else 1)
            self._check_signature(sig, fn.name, args, kwargs, node)
            return self._builtin_call(lambda: fn.fn(*head, *args, **kwargs), node, fn.name)
        if callable(fn) and not isinstance(fn, (torch.Tensor, type)):
            return self._python_call(fn, args, kwargs, node, name)
        raise self.error(node, f"'{name}' is {_a(fn)}, not a function")

    def _python_call(self, fn: Callable, args: list, kwargs: dict, node: ast.Node, name: str) -> Any:
        # Python interop: tensors cross as numpy arrays, numpy results come back as tensors.
        conv = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a for a in args]
        kconv = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        result = self._builtin_call(lambda: fn(*conv, **kconv), node, name)
        return from_python(result)

    def _check_signature(self, sig: Any, name: str, args: list, kwargs: dict, node: ast.Node) -> None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as err:
            raise self.error(node, f"bad arguments for {name}{_sig_text(sig)}: {err}") from None

    def _builtin_call(self, thunk: Callable[[], Any], node: ast.Node, name: str) -> Any:
        saved = self.ctx.where
        self.ctx.where = (self.file, node.line, node.col)
        try:
            return thunk()
        except (ScriptError, _Break, _Continue, _Return, KeyboardInterrupt):
            raise
        except BuiltinError as err:
            raise self.error(node, _prefixed(name, str(err))) from None
        except TensorLogicError as err:
            raise self.error(node, _prefixed(name, str(err).splitlines()[0])) from None
        except RecursionError:
            raise
        except Exception as err:
            if _debug():
                raise
            raise self.error(node, f"{name}: {first_line(err)}") from None
        finally:
            self.ctx.where = saved

    def call_function(
        self,
        fn: Function,
        args: list,
        kwargs: dict,
        node: ast.Node,
        arg_nodes: tuple,
        kw_nodes: tuple,
        self_value: Any = None,
    ) -> Any:
        decl = fn.decl
        params = list(decl.params)
        bound: dict[str, Any] = {}
        where: dict[str, ast.Node] = {}
        if params and params[0].name == "self" and params[0].type is None:
            if self_value is None:
                raise self.error(node, f"{fn.title} is a method; call it as value.{decl.name}(...)")
            bound["self"] = self_value
            params = params[1:]
        elif self_value is not None and fn.owner is not None and decl.name != "drop":
            raise self.error(node, f"{fn.title} takes no self; call it as {fn.owner}::{decl.name}(...)")
        sig = f"{fn.title}({', '.join(p.name for p in params)})"
        if len(args) > len(params):
            raise self.error(node, f"{sig} takes {len(params)} argument{'s' if len(params) != 1 else ''} "
                             f"but {len(args)} were given")
        for p, value, an in zip(params, args, arg_nodes):
            bound[p.name], where[p.name] = value, an
        kw_pos = dict(kw_nodes)
        names = {p.name for p in params}
        for k, value in kwargs.items():
            if k not in names:
                raise self.error(node, f"{sig} has no parameter '{k}'")
            if k in bound:
                raise self.error(node, f"{sig} got two values for '{k}'")
            bound[k], where[k] = value, kw_pos.get(k, node)
        missing = [p.name for p in params if p.name not in bound]
        if missing:
            raise self.error(node, f"{sig} is missing argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        shapes: dict[str, int] = {}
        generics = set(decl.type_params) | set(self._owner_params(fn))
        for p in params:
            if p.type is not None and p.type.base not in generics:
                bound[p.name] = self._check_type(p.type, bound[p.name], where[p.name], f"parameter {p.name} of "
                                                 f"{fn.title}", shapes)
        if self.depth >= MAX_CALL_DEPTH:
            raise self.error(node, f"too deep: more than {MAX_CALL_DEPTH} nested calls (runaway recursion in "
                             f"'{fn.title}'?)")
        frame = Scope(self.globals)
        frame.vars.update({k: v for k, v in shapes.items() if k not in bound})
        frame.vars.update(bound)
        caller_file, caller_scope = self.file, self.scope
        self.scope, self.file = frame, decl.file
        self.depth += 1
        result: Any = None
        ret_node: ast.Node = decl
        try:
            value = self.exec_scoped(decl.body)
            if value is not _NO_VALUE:
                result = value
        except _Return as r:
            result, ret_node = r.value, r.node
        except (_Break, _Continue):
            raise self.error(decl, f"break/continue outside a loop in {fn.title}") from None
        finally:
            self.depth -= 1
            self.scope = caller_scope
            self._drop_scope(frame, result)
        try:
            ret = decl.ret
            if ret is not None and ret.base == "void":
                result = None
            elif ret is not None and ret.base not in generics and result is not None:
                self.file = decl.file
                result = self._check_type(ret, result, ret_node, f"the return value of {fn.title}", dict(shapes))
        finally:
            self.file = caller_file
        return result

    def _owner_params(self, fn: Function) -> tuple[str, ...]:
        if fn.owner is None or fn.owner not in self.structs:
            return ()
        return self.structs[fn.owner].type_params

    def _dtype(self, name: str, node: ast.Node) -> torch.dtype:
        if name in TENSOR_TYPES:
            return TENSOR_TYPES[name]
        close = difflib.get_close_matches(name, list(TENSOR_TYPES), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (expected one of {', '.join(DTYPES)})"
        raise self.error(node, f"unknown dtype '{name}'{hint}")

    def _check_type(self, t: ast.TypeSpec, value: Any, at: ast.Node, what: str, shapes: dict) -> Any:
        """Check ``value`` against a written type; a tensor of another float dtype is converted."""
        base = t.base
        if t.dims is None and base in _SCALAR_CHECKS:
            if base == "float" and isinstance(value, torch.Tensor) and value.numel() == 1:
                return float(value.item())
            if base == "int" and isinstance(value, torch.Tensor) and value.numel() == 1 and not (
                    value.is_floating_point()):
                return int(value.item())
            if not _SCALAR_CHECKS[base](value):
                raise self.error(at, f"{what} must be {base}, got {_tname(value)}")
            return float(value) if base == "float" else value
        if base in self.structs:
            if not isinstance(value, StructValue) or value.type != base:
                raise self.error(at, f"{what} must be a {base}, got {_tname(value)}")
            return value
        if base in _OPEN_TYPES or (t.dims is None and base not in TENSOR_TYPES):
            return value
        dtype = self._dtype(base, t)
        if not isinstance(value, torch.Tensor):
            if isinstance(value, (list, tuple, int, float)) and not isinstance(value, bool):
                value = self._builtin_call(lambda: to_tensor(self.ctx, value, dtype), at, what)
            else:
                raise self.error(at, f"{what} must be a tensor, got {_tname(value)}")
        if value.dtype != dtype and value.is_floating_point() and dtype.is_floating_point:
            value = value.to(dtype)
        if t.dims is not None:
            self._match_dims(t.dims, value, shapes, at, f"shape mismatch for {what}")
        return value

    def _match_dims(self, dims: tuple, value: torch.Tensor, shapes: dict, at: ast.Node, what: str) -> None:
        spec = f"[{', '.join(str(d) for d in dims)}]"
        if value.ndim != len(dims):
            raise self.error(at, f"{what}: expected {len(dims)} dimensions {spec}, got shape {shape_text(value)}")
        for i, (d, n) in enumerate(zip(dims, value.shape)):
            if d == "?":
                continue
            if isinstance(d, int):
                if d != n:
                    raise self.error(at, f"{what}: dimension {i} must be {d}, got {n}")
            elif d in shapes and shapes[d] != n:
                raise self.error(at, f"{what}: {d} is {shapes[d]} from earlier, {n} here")
            else:
                shapes[d] = n


# ---------------------------------------------------------------------------------------------- helpers

_PY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": math.fmod,
    "**": operator.pow,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
_TORCH_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": torch.add,
    "-": torch.sub,
    "*": torch.mul,
    "/": torch.div,
    "%": torch.fmod,
    "**": torch.pow,
    "==": torch.eq,
    "!=": torch.ne,
    "<": torch.lt,
    ">": torch.gt,
    "<=": torch.le,
    ">=": torch.ge,
}


def _prefixed(name: str, message: str) -> str:
    return message if message.startswith(f"{name}:") else f"{name}: {message}"


def _int_div(a: int, b: int) -> int:
    """Integer division truncating toward zero (Rust's i64 ``/``)."""
    if b == 0:
        raise ZeroDivisionError
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _int_mod(a: int, b: int) -> int:
    """Remainder with the sign of the dividend (Rust's i64 ``%``): ``-7 % 3 == -1``."""
    return a - b * _int_div(a, b)


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` accumulating half-precision products in float32 (on every device)."""
    if a.dtype in (torch.float16, torch.bfloat16):
        return torch.matmul(a.float(), b.float()).to(a.dtype)
    return torch.matmul(a, b)


_CASTS: dict[str, str] = {
    "int": "int", "i32": "int", "i64": "int", "float": "float", "f64": "float", "f32": "f32", "f16": "f16",
    "bool": "bool",
}


def _cast(v: Any, to: str) -> Any:
    """``v as TYPE``: numbers convert like Rust's ``as`` (floats truncate toward zero); tensors change dtype."""
    kind = _CASTS.get(to)
    if kind is None:
        raise BuiltinError(f"cannot cast to '{to}' (expected int, float, i32, i64, f16, f32, f64 or bool)")
    if isinstance(v, torch.Tensor):
        if v.numel() == 1 and kind in ("int", "float", "bool"):
            v = v.item()
        else:
            dtypes = {"int": torch.int64, "float": torch.float64, "f32": torch.float32, "f16": torch.float16,
                      "bool": torch.bool}
            return v.to(dtypes[kind])
    if isinstance(v, str):
        try:
            return int(v) if kind == "int" else float(v)
        except ValueError:
            raise BuiltinError(f"cannot convert the string {v!r} to {to}") from None
    if not is_number(v):
        raise BuiltinError(f"cannot cast {_tname(v)} to {to}")
    if kind == "int":
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            raise BuiltinError(f"cannot cast {v} to an integer")
        return int(v)
    if kind == "bool":
        return bool(v)
    if kind == "f16":
        return float(np.float16(v))
    if kind == "f32":
        return float(np.float32(v))
    return float(v)


def from_python(value: Any) -> Any:
    """A Python/numpy result as a script value: arrays become tensors, numpy scalars plain numbers."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [from_python(v) for v in value]
    return value


def _substitute(t: ast.TypeSpec, generic: dict[str, str]) -> ast.TypeSpec:
    if t.base in generic:
        return ast.TypeSpec(generic[t.base], t.dims, t.args, line=t.line, col=t.col)
    return t


_TYPE_NAMESPACES: dict[str, torch.dtype | None] = {"f32": torch.float32, "f16": torch.float16, "Tensor": None}


def _in_dtype(b: Builtin, dtype: torch.dtype | None) -> Builtin:
    """``f32::name``: the plain builtin, with floating tensor results in the namespace's dtype."""
    if dtype is None:
        return b

    def fn(*args: Any, **kwargs: Any) -> Any:
        out = b.fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return out.to(dtype)
        return out

    fn.__signature__ = inspect.signature(b.fn)  # type: ignore[attr-defined]
    return Builtin(b.name, fn, b.needs_ctx, b.method)


def _callable(v: Any) -> bool:
    return isinstance(v, (Function, BoundStructMethod, Builtin, BoundMethod)) or (
        callable(v) and not isinstance(v, (torch.Tensor, type, StructValue))
    )


def _scalar_dtype(a: Any, b: torch.Tensor) -> torch.dtype:
    if isinstance(a, float) and not b.is_floating_point():
        return torch.float32
    return b.dtype


def _construct(node: Any) -> str:
    names = {
        "EntityDecl": "'entity' declaration", "RelationDecl": "'relation' declaration", "Rule": "a logic rule",
        "Query": "a logic query", "Infer": "'infer'", "Learn": "a 'learn' block", "With": "a 'with' block",
        "EmbeddingDecl": "an 'embedding' declaration",
    }
    return names.get(type(node).__name__, type(node).__name__.lower())


def _tname(v: Any) -> str:
    """The script-facing type name, structs by their declared name."""
    if isinstance(v, StructValue):
        return v.type
    if isinstance(v, (Function, BoundStructMethod)):
        return "function"
    return type_name(v)


def _a(v: Any) -> str:
    """The value's type with an article: 'an int', 'a float16 tensor'."""
    name = _tname(v)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"{dtype_name(v.dtype)}{shape_text(v)}"
    return _tname(v)


def _sig_text(sig: Any) -> str:
    parts = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"{p.name}...")
        elif p.default is p.empty:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}: {format_value(p.default, nested=True)}")
    return "(" + ", ".join(parts) + ")"
