"""Runs a parsed TensorLogic program: scopes, control flow, typed functions with shape variables, imports."""

from __future__ import annotations

import difflib
import math
import operator
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ScriptError, TensorLogicError
from . import ast
from .builtins import (
    APPROX_TOL,
    BUILTINS,
    DTYPES,
    BoundMethod,
    Builtin,
    BuiltinError,
    Context,
    Device,
    Record,
    dtype_name,
    format_value,
    get_attr,
    is_number,
    run_op,
    script_signature,
    shape_text,
    to_tensor,
    truth,
    type_name,
)
from .parser import parse

# Deepest chain of TensorLogic calls; far below the Python stack this interpreter needs for it.
MAX_CALL_DEPTH = 400
_PY_RECURSION_LIMIT = 12000

# Names every script sees unless it rebinds them.
PRELUDE: dict[str, Any] = {**DTYPES, "gpu": Device("gpu"), "cpu": Device("cpu")}
_SCALAR_TYPES = {"int", "float", "bool", "string", "str", "list", "dict", "model", "any", "void"}


@dataclass(frozen=True)
class Function:
    """A user-defined function value."""

    decl: ast.FnDecl

    def __str__(self) -> str:
        return f"<fn {self.decl.name}({', '.join(p.name for p in self.decl.params)})>"


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Any, node: ast.Return):
        self.value, self.node = value, node


def _debug() -> bool:
    return os.environ.get("TL_DEBUG", "") not in ("", "0")


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
    "**": operator.pow,
    "@": operator.matmul,
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
    "%": torch.remainder,
    "**": torch.pow,
    "@": torch.matmul,
    "==": torch.eq,
    "!=": torch.ne,
    "<": torch.lt,
    ">": torch.gt,
    "<=": torch.le,
    ">=": torch.ge,
}


class Interpreter:
    """Executes programs against one global scope; the REPL keeps one Interpreter across inputs."""

    def __init__(self, ctx: Context | None = None):
        self.ctx = ctx or Context()
        self.globals: dict[str, Any] = {}
        self.frames: list[dict[str, Any]] = []
        self.sources: dict[str, list[str]] = {}
        self.paths: dict[str, Path] = {}  # display file name -> real path, for relative imports
        self.file = "<script>"
        self.imported: set[Path] = set()
        self.import_stack: list[Path] = []
        self.depth = 0

    # ------------------------------------------------------------------ entry points
    def run(self, source: str, file: str, path: Path | None = None, echo: bool = False) -> Any:
        """Parse and run ``source``; with ``echo`` (the REPL) top-level expression values are printed."""
        self.sources[file] = source.splitlines()
        if path is not None:
            self.paths[file] = path.resolve()
        program = parse(source, file)
        old_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old_limit, _PY_RECURSION_LIMIT))
        self.file = file
        real = self.paths.get(file)
        if real is not None:
            self.import_stack.append(real)
        try:
            self._hoist(program.items)
            for item in program.items:
                self._top(item, echo)
        finally:
            if real is not None:
                self.import_stack.pop()
                self.imported.add(real)
            sys.setrecursionlimit(old_limit)

    def _hoist(self, items: tuple) -> None:
        # Functions are defined before anything runs, so a script may call one defined further down.
        for item in items:
            if isinstance(item, ast.FnDecl):
                self.globals[item.name] = Function(item)

    def _top(self, item: Any, echo: bool) -> None:
        if isinstance(item, ast.FnDecl):
            return
        if isinstance(item, ast.Import):
            self._import(item)
        elif isinstance(item, ast.Main):
            self._guard(self.exec_block, item.body, node=item)
        elif echo and isinstance(item, ast.ExprStmt):
            value = self._guard(self.eval, item.expr, node=item)
            if value is not None:
                print(format_value(value), file=self.ctx.stdout())
        else:
            self._guard(self.exec, item, node=item)

    def _guard(self, fn: Callable[[Any], Any], arg: Any, node: ast.Node) -> Any:
        """Run one top-level item; an unexpected Python error becomes a ScriptError there (unless TL_DEBUG)."""
        try:
            return fn(arg)
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

    def lookup(self, name: str, node: ast.Node) -> Any:
        if self.frames and name in self.frames[-1]:
            return self.frames[-1][name]
        if name in self.globals:
            return self.globals[name]
        if name in PRELUDE:
            return PRELUDE[name]
        if name in BUILTINS:
            return BUILTINS[name]
        known = set(self.globals) | set(PRELUDE) | set(BUILTINS) | (set(self.frames[-1]) if self.frames else set())
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise self.error(node, f"unknown name '{name}'{hint}")

    def bind(self, name: str, value: Any) -> None:
        (self.frames[-1] if self.frames else self.globals)[name] = value

    # ------------------------------------------------------------------ statements
    def exec_block(self, stmts: tuple) -> None:
        for s in stmts:
            self.exec(s)

    def exec(self, s: Any) -> None:
        method = getattr(self, "exec_" + type(s).__name__, None)
        if method is None:
            raise self.error(s, f"{type(s).__name__.lower()} is only allowed at the top level of a script")
        method(s)

    def exec_Let(self, s: ast.Let) -> None:
        self.bind(s.name, self.eval(s.value))

    def exec_Assign(self, s: ast.Assign) -> None:
        value = self.eval(s.value)
        if isinstance(s.target, ast.Name):
            self.bind(s.target.id, value)
            return
        target = s.target
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
            else:
                raise self.error(target, f"cannot assign into {_a(container)}")
        except ScriptError:
            raise
        except (IndexError, KeyError, TypeError, RuntimeError, ValueError, BuiltinError) as e:
            raise self.error(target, f"cannot assign here: {_first_line(e)}") from None

    def exec_TensorDecl(self, s: ast.TensorDecl) -> None:
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
                t = self._call_builtin_fn(lambda: to_tensor(self.ctx, value, dtype), s.value, "tensor")
                if isinstance(value, torch.Tensor):
                    t = t.clone()
            self._check_decl_shape(s, t)
        if s.qualifier == "learnable":
            if not t.is_floating_point():
                raise self.error(s, f"only floating tensors can be learnable; '{s.name}' is {dtype_name(dtype)}")
            t.requires_grad_(True)
        self.bind(s.name, t)

    def _decl_dim(self, d: int | str, s: ast.TensorDecl) -> int:
        if isinstance(d, int):
            return d
        if d == "?":
            raise self.error(s.type, f"'{s.name}' has a '?' dimension; give it an initial value to fix its size")
        value = self._maybe_lookup(d)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.error(s.type, f"dimension '{d}' of '{s.name}' has no value; define {d} or give an initial value")

    def _maybe_lookup(self, name: str) -> Any:
        if self.frames and name in self.frames[-1]:
            return self.frames[-1][name]
        return self.globals.get(name)

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
                bound = self._maybe_lookup(d)
                expect = bound if isinstance(bound, int) and not isinstance(bound, bool) else seen.setdefault(d, n)
            else:
                expect = d
            if expect != n:
                raise self.error(
                    s.type, f"'{s.name}' is declared {declared} but its value has shape {shape_text(t)} (dimension {i})"
                )

    def exec_ExprStmt(self, s: ast.ExprStmt) -> None:
        self.eval(s.expr)

    def exec_If(self, s: ast.If) -> None:
        if self._truth(self.eval(s.cond), s.cond):
            self.exec_block(s.body)
        else:
            self.exec_block(s.orelse)

    def exec_For(self, s: ast.For) -> None:
        iterable = self.eval(s.iter)
        if isinstance(iterable, torch.Tensor):
            if iterable.ndim == 0:
                raise self.error(s.iter, "cannot loop over a scalar tensor")
            items: Any = iterable.unbind(0)
        elif isinstance(iterable, (range, list, tuple, str)):
            items = iterable
        elif isinstance(iterable, dict):
            items = list(iterable)
        else:
            hint = "; use range(n)" if isinstance(iterable, int) else ""
            raise self.error(s.iter, f"cannot loop over {_a(iterable)}{hint}")
        for value in items:
            self.bind(s.var, value)
            try:
                self.exec_block(s.body)
            except _Break:
                break
            except _Continue:
                continue

    def exec_While(self, s: ast.While) -> None:
        while self._truth(self.eval(s.cond), s.cond):
            try:
                self.exec_block(s.body)
            except _Break:
                break
            except _Continue:
                continue

    def exec_Break(self, s: ast.Break) -> None:
        raise _Break()

    def exec_Continue(self, s: ast.Continue) -> None:
        raise _Continue()

    def exec_Return(self, s: ast.Return) -> None:
        raise _Return(None if s.value is None else self.eval(s.value), s)

    def _truth(self, value: Any, node: ast.Node) -> bool:
        try:
            return truth(value)
        except BuiltinError as e:
            raise self.error(node, str(e)) from None

    # ------------------------------------------------------------------ imports
    def _import(self, s: ast.Import) -> None:
        base = self.paths.get(self.file)
        folder = base.parent if base is not None else Path.cwd()
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
            raise self.error(s, f"cannot import '{s.path}': {_first_line(e)}") from None
        shown = os.path.normpath(os.path.join(os.path.dirname(self.file), s.path))
        self.sources[shown] = source.splitlines()
        self.paths[shown] = path
        program = parse(source, shown)
        caller = self.file
        self.import_stack.append(path)
        self.file = shown
        try:
            self._hoist(program.items)
            for item in program.items:
                # Only declarations come across: functions (hoisted above), tensors and nested imports.
                if isinstance(item, ast.Import):
                    self._import(item)
                elif isinstance(item, ast.TensorDecl):
                    self._guard(self.exec, item, node=item)
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

    def eval_ListLit(self, e: ast.ListLit) -> list:
        return [self.eval(x) for x in e.items]

    def eval_DictLit(self, e: ast.DictLit) -> dict:
        out = {}
        for k, v in e.items:
            key = self.eval(k)
            if not isinstance(key, (str, int, bool)):
                raise self.error(k, f"dict keys must be strings or integers, not {type_name(key)}")
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

    def eval_Attr(self, e: ast.Attr) -> Any:
        target = self.eval(e.target)
        try:
            return get_attr(self.ctx, target, e.name)
        except BuiltinError as err:
            raise self.error(e, str(err)) from None
        except TensorLogicError as err:
            raise self.error(e, str(err)) from None

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
        except ScriptError:
            raise
        except (IndexError, KeyError, TypeError, RuntimeError, ValueError) as err:
            raise self.error(e, f"bad index: {_first_line(err)}") from None
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
        raise self.error(node, f"an index must be an integer, got {format_value(value, nested=True)}")

    def eval_UnaryOp(self, e: ast.UnaryOp) -> Any:
        v = self.eval(e.operand)
        if e.op == "not":
            if isinstance(v, torch.Tensor) and v.numel() != 1:
                return torch.logical_not(v)
            return not self._truth(v, e.operand)
        if isinstance(v, (list, tuple)):
            v = self._call_builtin_fn(lambda: to_tensor(self.ctx, v), e, e.op)
        if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
            raise self.error(e, f"cannot apply unary '{e.op}' to a {type_name(v)}")
        return -v if e.op == "-" else +v

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
        """Apply a binary operator: Python semantics for numbers and strings, torch for tensors and lists."""
        if op == "≈":
            return self._approx(a, b, e)
        if isinstance(a, (torch.Tensor, list, tuple)) or isinstance(b, (torch.Tensor, list, tuple)):
            if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and op in ("==", "!="):
                return (a == b) == (op == "==")
            return self._tensor_op(_TORCH_OPS[op], op, a, b, e)
        if isinstance(a, str) or isinstance(b, str):
            if op == "+":
                return format_value(a) + format_value(b)
            if op in ("==", "!=") or (isinstance(a, str) and isinstance(b, str) and op in ("<", ">", "<=", ">=")):
                return _ARITH[op](a, b)
            raise self.error(e, f"cannot apply '{op}' to {type_name(a)} and {type_name(b)}")
        if op in ("==", "!="):
            return _ARITH[op](a, b)
        if not (is_number(a) and is_number(b)):
            raise self.error(e, f"cannot apply '{op}' to {type_name(a)} and {type_name(b)}")
        if op == "@":
            raise self.error(e, "'@' needs tensors, not numbers")
        try:
            result = _ARITH[op](a, b)
        except ZeroDivisionError:
            raise self.error(e, "division by zero") from None
        except OverflowError:
            raise self.error(e, f"'{op}' overflowed") from None
        if isinstance(result, complex):
            raise self.error(e, "a negative number raised to a fractional power has no real value")
        return result

    def _tensor_op(self, fn: Callable, op: str, a: Any, b: Any, e: ast.Node) -> Any:
        try:
            if isinstance(a, (list, tuple)):
                a = to_tensor(self.ctx, a, b.dtype if isinstance(b, torch.Tensor) else None)
            if isinstance(b, (list, tuple)):
                b = to_tensor(self.ctx, b, a.dtype if isinstance(a, torch.Tensor) else None)
            for v in (a, b):
                if not isinstance(v, (torch.Tensor, int, float)):
                    raise BuiltinError(f"cannot apply '{op}' to {type_name(a)} and {type_name(b)}")
            if op == "@" and not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                raise BuiltinError("'@' needs two tensors")
            if not isinstance(a, torch.Tensor):
                a = torch.tensor(a, dtype=_scalar_dtype(a, b), device=b.device)
            return run_op(fn, a, b)
        except BuiltinError as err:
            raise self.error(e, str(err)) from None
        except (RuntimeError, TypeError, ValueError) as err:
            raise self.error(e, f"'{op}' failed on {_describe(a)} and {_describe(b)}: {_first_line(err)}") from None

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
            raise self.error(e, f"'≈' failed on {_describe(a)} and {_describe(b)}: {_first_line(err)}") from None

    # ------------------------------------------------------------------ calls
    def eval_Call(self, e: ast.Call) -> Any:
        if isinstance(e.func, ast.Attr):
            target = self.eval(e.func.target)
            try:
                fn = get_attr(self.ctx, target, e.func.name)
            except BuiltinError as err:
                raise self.error(e.func, str(err)) from None
            name = e.func.name
        else:
            fn = self.eval(e.func)
            name = e.func.id if isinstance(e.func, ast.Name) else "this"
        args = [self.eval(a) for a in e.args]
        kwargs = {k: self.eval(v) for k, v in e.kwargs}
        return self.call_value(fn, args, kwargs, e, name, e.args, e.kwargs)

    def call_value(
        self, fn: Any, args: list, kwargs: dict, node: ast.Node, name: str, arg_nodes: tuple, kw_nodes: tuple
    ) -> Any:
        if isinstance(fn, Function):
            return self.call_function(fn, args, kwargs, node, arg_nodes, kw_nodes)
        if isinstance(fn, Builtin):
            call_args = [self.ctx, *args] if fn.needs_ctx else args
            self._check_signature(fn.signature, fn.name, args, kwargs, node)
            return self._call_builtin_fn(lambda: fn.fn(*call_args, **kwargs), node, fn.name)
        if isinstance(fn, BoundMethod):
            head = [self.ctx, fn.self_value] if fn.needs_ctx else [fn.self_value]
            sig = script_signature(fn.fn, 2 if fn.needs_ctx else 1)
            self._check_signature(sig, fn.name, args, kwargs, node)
            return self._call_builtin_fn(lambda: fn.fn(*head, *args, **kwargs), node, fn.name)
        raise self.error(node, f"'{name}' is {_a(fn)}, not a function")

    def _check_signature(self, sig: Any, name: str, args: list, kwargs: dict, node: ast.Node) -> None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as err:
            raise self.error(node, f"bad arguments for {name}{_sig_text(sig)}: {err}") from None

    def _call_builtin_fn(self, thunk: Callable[[], Any], node: ast.Node, name: str) -> Any:
        try:
            return thunk()
        except (ScriptError, _Break, _Continue, _Return, KeyboardInterrupt):
            raise
        except BuiltinError as err:
            raise self.error(node, f"{name}: {err}") from None
        except TensorLogicError as err:
            raise self.error(node, f"{name}: {str(err).splitlines()[0]}") from None
        except RecursionError:
            raise
        except Exception as err:
            if _debug():
                raise
            raise self.error(node, f"{name}: {_first_line(err)}") from None

    def call_function(
        self, fn: Function, args: list, kwargs: dict, node: ast.Node, arg_nodes: tuple, kw_nodes: tuple
    ) -> Any:
        decl = fn.decl
        params = decl.params
        sig = f"{decl.name}({', '.join(p.name for p in params)})"
        if len(args) > len(params):
            raise self.error(node, f"{sig} takes {len(params)} arguments but {len(args)} were given")
        bound: dict[str, Any] = {}
        where: dict[str, ast.Node] = {}
        for p, value, an in zip(params, args, arg_nodes):
            bound[p.name], where[p.name] = value, an
        kw_pos = dict(kw_nodes)
        for k, value in kwargs.items():
            if k not in {p.name for p in params}:
                raise self.error(node, f"{sig} has no parameter '{k}'")
            if k in bound:
                raise self.error(node, f"{sig} got two values for '{k}'")
            bound[k], where[k] = value, kw_pos.get(k, node)
        missing = [p.name for p in params if p.name not in bound]
        if missing:
            raise self.error(node, f"{sig} is missing argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        shapes: dict[str, int] = {}
        for p in params:
            if p.type is not None:
                bound[p.name] = self._check_param(p, bound[p.name], shapes, where[p.name], decl)
        if self.depth >= MAX_CALL_DEPTH:
            raise self.error(
                node, f"too deep: more than {MAX_CALL_DEPTH} nested calls (runaway recursion in '{decl.name}'?)"
            )
        frame = {k: v for k, v in shapes.items() if k not in bound}
        frame.update(bound)
        caller_file = self.file
        self.frames.append(frame)
        self.file = decl.file
        self.depth += 1
        try:
            self.exec_block(decl.body)
            result, ret_node = None, None
        except _Return as r:
            result, ret_node = r.value, r.node
        finally:
            self.depth -= 1
            self.frames.pop()
        try:
            if decl.ret is not None and decl.ret.base != "void":
                self.file = decl.file
                self._check_return(decl, result, shapes, ret_node)
        finally:
            self.file = caller_file
        return result

    def _dtype(self, name: str, node: ast.Node) -> torch.dtype:
        if name in DTYPES:
            return DTYPES[name]
        close = difflib.get_close_matches(name, list(DTYPES), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (expected one of {', '.join(DTYPES)})"
        raise self.error(node, f"unknown dtype '{name}'{hint}")

    def _check_param(self, p: ast.Param, value: Any, shapes: dict, at: ast.Node, decl: ast.FnDecl) -> Any:
        t = p.type
        if t.base in _SCALAR_TYPES and t.dims is None:
            if not _matches_scalar(t.base, value):
                raise self.error(at, f"parameter {p.name} of {decl.name} must be {t.base}, got {type_name(value)}")
            return value
        dtype = self._dtype(t.base, t)
        if not isinstance(value, torch.Tensor):
            if isinstance(value, (list, tuple, int, float)) and not isinstance(value, bool):
                value = self._call_builtin_fn(lambda: to_tensor(self.ctx, value, dtype), at, decl.name)
            else:
                raise self.error(at, f"parameter {p.name} of {decl.name} must be a tensor, got {type_name(value)}")
        if value.dtype != dtype:
            raise self.error(
                at, f"parameter {p.name} of {decl.name} must be a {dtype_name(dtype)} tensor, got {type_name(value)}"
            )
        if t.dims is not None:
            self._match_dims(t.dims, value, shapes, at, f"shape mismatch for parameter {p.name}")
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

    def _check_return(self, decl: ast.FnDecl, result: Any, shapes: dict, ret_node: ast.Return | None) -> None:
        at = ret_node or decl
        t = decl.ret
        if t.base in _SCALAR_TYPES and t.dims is None:
            if not _matches_scalar(t.base, result):
                raise self.error(at, f"{decl.name} must return {t.base}, got {type_name(result)}")
            return
        dtype = self._dtype(t.base, t)
        if not isinstance(result, torch.Tensor):
            raise self.error(at, f"{decl.name} must return a tensor, got {type_name(result)}")
        if result.dtype != dtype:
            raise self.error(at, f"{decl.name} must return a {dtype_name(dtype)} tensor, got {type_name(result)}")
        if t.dims is not None:
            self._match_dims(t.dims, result, dict(shapes), at, f"return value of {decl.name} has the wrong shape")


def _matches_scalar(base: str, value: Any) -> bool:
    checks: dict[str, Callable[[Any], bool]] = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "str": lambda v: isinstance(v, str),
        "list": lambda v: isinstance(v, (list, tuple)),
        "dict": lambda v: isinstance(v, dict),
        "model": lambda v: type_name(v) == "model",
        "void": lambda v: v is None,
        "any": lambda v: True,
    }
    return checks[base](value)


def _scalar_dtype(a: Any, b: torch.Tensor) -> torch.dtype:
    if isinstance(a, float) and not b.is_floating_point():
        return torch.float32
    return b.dtype


def _a(v: Any) -> str:
    """The value's type with an article: 'an int', 'a float16 tensor'."""
    name = type_name(v)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"{dtype_name(v.dtype)}{shape_text(v)}"
    return type_name(v)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


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
