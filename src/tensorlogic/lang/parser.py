"""Source text → ``ast.Program``: lark LALR over ``tensorlogic.lark``, with errors that say what was expected."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import ScriptError
from . import ast

GRAMMAR = Path(__file__).with_name("tensorlogic.lark")

# A newline right after one of these continues the expression on the next line.
_CONTINUES = {
    "COMMA", "EQUAL", "WALRUS", "ARROW", "COLON", "DOT", "LPAR", "LSQB",
    "COMP_OP", "ADD_OP", "MUL_OP", "MATMUL", "POW", "UNARY_OP",
    "NOT", "AND_KW", "AND_SYM", "OR_KW", "OR_SYM", "ELSE",
}
# A '{' after one of these opens a dict literal (newlines inside are insignificant); otherwise a block.
_DICT_AFTER = _CONTINUES - {"DOT", "ARROW", "ELSE"} | {"RETURN", "LBRACE"}
_CLOSERS = {"RPAR", "RSQB", "RBRACE"}
# A '(' or '[' after one of these is a call or an index; otherwise a group or a list literal.
_POSTFIX_AFTER = {"NAME", "RPAR", "RSQB", "STRING", "TENSOR"}
# Keywords that begin a statement with a body; syntax errors name them.
_HEADS = {"IF", "WHILE", "FOR", "FN", "FUNCTION", "MAIN", "ELSE", "LET", "TENSOR", "IMPORT"}


class _PostLexer:
    """Turns newlines and ';' into statement separators (_NL) only where a statement can end."""

    # It also remembers, for each token it hands to the parser, which brackets were open and which
    # statement keyword was in force, so that a syntax error can say what was expected there.

    always_accept = ("NEWLINE", "SEMICOLON", "UNCLOSED_COMMENT")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stack: list[tuple[Token, str]] = []  # open bracket and its kind (call, group, list, ...)
        self.prev: Token | None = None  # last token handed to the parser
        self.head: Token | None = None  # keyword that started the current block-level statement
        self.context: tuple[list[tuple[Token, str]], Token | None, Token | None] = ([], None, None)

    def _emit(self, tok: Token) -> Token:
        self.context = (list(self.stack), self.prev, self.head)
        return tok

    def _block_level(self) -> bool:
        return not self.stack or self.stack[-1][1] == "block"

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.reset()
        heads: list[Token | None] = []  # statement keyword of each enclosing block
        pending: Token | None = None  # a separator waiting to see the next token
        closed_block = False
        for tok in stream:
            if tok.type in ("NEWLINE", "SEMICOLON"):
                prev = self.prev
                if (
                    pending is None
                    and self._block_level()
                    and prev is not None
                    and prev.type not in _CONTINUES
                    and not (prev.type == "LBRACE" and self.stack and self.stack[-1][0] is prev)
                ):
                    pending = Token.new_borrow_pos("_NL", tok.value, tok)
                continue
            if pending is None and closed_block and tok.type not in ("RBRACE", "ELSE", "RPAR", "RSQB", "COMMA"):
                # `if c { ... } print(x)`: a statement may follow a closing brace on the same line.
                pending = Token.new_borrow_pos("_NL", "", tok)
            closed_block = False
            if pending is not None:
                if tok.type not in ("RBRACE", "ELSE", "LBRACE", "DOT"):
                    yield self._emit(pending)
                    self.prev, self.head = pending, None
                pending = None
            kind = None
            if tok.type in ("LPAR", "LSQB"):
                postfix = self.prev is not None and self.prev.type in _POSTFIX_AFTER
                if tok.type == "LPAR":
                    kind = "params" if self._after_fn_name() else "call" if postfix else "group"
                else:
                    kind = "index" if postfix else "list"
            elif tok.type == "LBRACE":
                kind = "dict" if self.prev is None or self.prev.type in _DICT_AFTER else "block"
            yield self._emit(tok)
            if kind == "block":
                heads.append(self.head)
                self.head = None
            elif tok.type == "RBRACE" and self.stack and self.stack[-1][1] == "block":
                self.head = heads.pop() if heads else None
                closed_block = True
            elif tok.type in _HEADS and self._block_level() and (self.head is None or tok.type in ("IF", "ELSE")):
                self.head = tok
            if kind is not None:
                self.stack.append((tok, kind))
            elif tok.type in _CLOSERS and self.stack:
                self.stack.pop()
            self.prev = tok

    def _after_fn_name(self) -> bool:
        return (
            self.prev is not None
            and self.prev.type == "NAME"
            and self.head is not None
            and self.head.type in ("FN", "FUNCTION")
            and self._block_level()
        )


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        start="program",
        parser="lalr",
        lexer="basic",
        postlex=_PostLexer(),
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _pos(tok: Token) -> dict[str, int]:
    return {"line": tok.line or 0, "col": tok.column or 0}


def _mpos(meta) -> dict[str, int]:
    return {"line": getattr(meta, "line", 0), "col": getattr(meta, "column", 0)}


def _unescape(raw: str) -> str:
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append(simple.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class _SyntaxProblem(Exception):
    """A construct that parsed but is not valid (raised inside the transformer, reported with a position)."""

    def __init__(self, message: str, line: int, col: int):
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


def _split_args(items: list) -> tuple[tuple, tuple]:
    args, kwargs, seen = [], [], set()
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):
            name, value, tok = item
            if name in seen:
                raise _SyntaxProblem(f"keyword argument '{name}' given twice", tok.line, tok.column)
            seen.add(name)
            kwargs.append((name, value))
        else:
            if kwargs:
                raise _SyntaxProblem(
                    "positional argument after a keyword argument", item.line, item.col
                )
            args.append(item)
    return tuple(args), tuple(kwargs)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ``ast`` nodes from lark's tree."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    # ------------------------------------------------------------------ program structure
    def program(self, meta, items):
        return ast.Program(tuple(items), self.file, **_mpos(meta))

    def import_stmt(self, meta, items):
        return ast.Import(_unescape(items[0]), **_mpos(meta))

    def main_block(self, meta, items):
        return ast.Main(items[0], **_mpos(meta))

    def block(self, meta, items):
        return tuple(items)

    def fn_decl(self, meta, items):
        # items: fn-keyword, name, params (None when there are none), arrow, return type, body
        _kw, name, *params, _arrow, ret_type, body = items
        params = [p for p in params if p is not None]
        names = set()
        for p in params:
            if p.name in names:
                raise _SyntaxProblem(f"parameter '{p.name}' appears twice in '{name}'", p.line, p.col)
            names.add(p.name)
        return ast.FnDecl(str(name), tuple(params), ret_type, body, self.file, **_pos(name))

    def param(self, meta, items):
        name, typ = items
        return ast.Param(str(name), typ, **_pos(name))

    def type_spec(self, meta, items):
        base, *dims = items
        if len(dims) == 1 and dims[0] is None:
            return ast.TypeSpec(str(base), None, **_pos(base))
        return ast.TypeSpec(str(base), tuple(d for d in dims if d is not None), **_pos(base))

    def dim_int(self, meta, items):
        return int(items[0])

    def dim_name(self, meta, items):
        return str(items[0])

    def dim_any(self, meta, items):
        return "?"

    # ------------------------------------------------------------------ statements
    def let_stmt(self, meta, items):
        name, value = items
        return ast.Let(str(name), value, **_mpos(meta))

    def assign_stmt(self, meta, items):
        target, op, value = items
        if not isinstance(target, (ast.Name, ast.Index)):
            raise _SyntaxProblem(
                f"cannot assign to this expression; expected a name or an indexed tensor before '{op}'",
                target.line,
                target.col,
            )
        return ast.Assign(target, value, str(op), **_mpos(meta))

    def tensor_decl(self, meta, items):
        _kw, name, typ, qual, value = items
        if typ.dims is None:
            raise _SyntaxProblem(
                f"expected dimensions after '{typ.base}' in the declaration of '{name}', e.g. {typ.base}[3, 4]",
                typ.line,
                typ.col,
            )
        return ast.TensorDecl(str(name), typ, None if qual is None else str(qual), value, **_mpos(meta))

    def if_stmt(self, meta, items):
        cond, body, orelse = items
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, ast.If):
            orelse = (orelse,)
        return ast.If(cond, body, orelse, **_mpos(meta))

    def for_stmt(self, meta, items):
        var, it, body = items
        return ast.For(str(var), it, body, **_mpos(meta))

    def while_stmt(self, meta, items):
        cond, body = items
        return ast.While(cond, body, **_mpos(meta))

    def break_stmt(self, meta, items):
        return ast.Break(**_pos(items[0]))

    def continue_stmt(self, meta, items):
        return ast.Continue(**_pos(items[0]))

    def return_stmt(self, meta, items):
        return ast.Return(items[1], **_pos(items[0]))

    def expr_stmt(self, meta, items):
        expr = items[0]
        return ast.ExprStmt(expr, line=expr.line, col=expr.col)

    # ------------------------------------------------------------------ expressions
    def logic(self, meta, items):
        left, op, right = items
        name = "and" if op.type.startswith("AND") else "or"
        return ast.BinOp(name, left, right, **_pos(op))

    def binop(self, meta, items):
        left, op, right = items
        text = "≈" if op == "~=" else str(op)
        return ast.BinOp(text, left, right, **_pos(op))

    def unary(self, meta, items):
        op, operand = items
        text = "not" if op in ("!", "not") else str(op)
        return ast.UnaryOp(text, operand, **_pos(op))

    def call(self, meta, items):
        func, _lpar, *rest = items
        args, kwargs = _split_args(rest)
        return ast.Call(func, args, kwargs, line=func.line, col=func.col)

    def index(self, meta, items):
        target, lsqb, *subs = items
        return ast.Index(target, tuple(subs), **_pos(lsqb))

    def slice(self, meta, items):
        start, stop, step = items
        return ast.Slice(start, stop, step, **_mpos(meta))

    def attr(self, meta, items):
        target, name = items
        return ast.Attr(target, str(name), **_pos(name))

    def pos_arg(self, meta, items):
        return items[0]

    def kw_arg(self, meta, items):
        name, value = items
        return (str(name), value, name)

    def int_lit(self, meta, items):
        return ast.Num(int(items[0]), **_pos(items[0]))

    def float_lit(self, meta, items):
        return ast.Num(float(items[0]), **_pos(items[0]))

    def str_lit(self, meta, items):
        return ast.Str(_unescape(str(items[0])), **_pos(items[0]))

    def bool_lit(self, meta, items):
        return ast.Bool(items[0] == "true", **_pos(items[0]))

    def name(self, meta, items):
        return ast.Name(str(items[0]), **_pos(items[0]))

    def list_lit(self, meta, items):
        lsqb, *elems = items
        return ast.ListLit(tuple(e for e in elems if e is not None), **_pos(lsqb))

    def dict_lit(self, meta, items):
        lbrace, *pairs = items
        return ast.DictLit(tuple(p for p in pairs if p is not None), **_pos(lbrace))

    def dict_item(self, meta, items):
        return (items[0], items[1])

    def tensor_ctor(self, meta, items):
        kw = items[0]
        if len(items) > 1 and isinstance(items[1], Token) and items[1].type == "COMP_OP":
            lt, dtype, gt, *rest = items[1:]
            if lt != "<" or gt != ">":
                raise _SyntaxProblem(
                    "expected tensor<dtype>(...), e.g. tensor<float16>([1.0, 2.0])", kw.line, kw.column
                )
            dtype = str(dtype)
        else:
            dtype, rest = None, items[1:]
        args, kwargs = _split_args(rest)
        return ast.TensorCtor(dtype, args, kwargs, **_pos(kw))


# ---------------------------------------------------------------------------------------------- errors

_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "LPAR", "LSQB", "LBRACE", "TENSOR"}
# Operators that can only continue an expression ('+'/'-' can also start one, so they are not here).
_BINARY = {"COMP_OP", "MUL_OP", "MATMUL", "POW", "AND_KW", "OR_KW"}
_CLOSE_TEXT = {
    "call": ("')'", "after arguments"),
    "params": ("')'", "after the parameters"),
    "group": ("')'", "to close '('"),
    "index": ("']'", "after the index"),
    "list": ("']'", "to close the list"),
    "dict": ("'}'", "to close the dict"),
    "block": ("'}'", "to close the block"),
}
_CLOSE_TOKEN = {"call": "RPAR", "params": "RPAR", "group": "RPAR", "index": "RSQB", "list": "RSQB",
                "dict": "RBRACE", "block": "RBRACE"}
# Statements of the original language that this implementation does not have.
_NOT_SUPPORTED = {
    "learn": "training blocks", "relation": "logic relations", "rule": "logic rules", "query": "logic queries",
    "infer": "logic inference", "embedding": "entity embeddings",
}
_PRETTY = {
    "_NL": "a newline", "$END": "end of input", "NAME": "a name", "INT": "a number", "FLOAT": "a number",
    "STRING": "a string", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/' or '%'",
}


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type == "_NL":
        return "end of line" if tok.value != ";" else "';'"
    if tok.type == "NAME":
        return f"name '{tok.value}'"
    if tok.type in ("INT", "FLOAT"):
        return f"number {tok.value}"
    if tok.type == "STRING":
        return f"string {tok.value}"
    return f"'{tok.value}'"


def _pretty_expected(expected: set[str]) -> str:
    names: list[str] = []
    rest = set(expected)
    if {"NAME", "INT"} <= rest:
        names.append("an expression")
        rest -= _EXPR_START | {"UNARY_OP", "ADD_OP", "NOT"}
    for term in sorted(rest):
        text = _PRETTY.get(term)
        if text is None:
            try:
                text = f"'{_lark().get_terminal(term).pattern.value}'"
            except (KeyError, AttributeError):
                text = term
        if text not in names:
            names.append(text)
    if len(names) > 6:
        names = names[:6] + ["..."]
    return ", ".join(names)


def _token_message(err: UnexpectedToken | UnexpectedEOF, post: _PostLexer) -> str:
    tok = err.token
    expected = set(getattr(err, "expected", ()) or ())
    stack, prev, head = post.context if tok.type != "$END" else (post.stack, post.prev, post.head)
    kind = stack[-1][1] if stack else "block"
    after = f" after {_describe(prev)}" if prev is not None and prev.type != "_NL" else ""

    if prev is not None and prev.type == "NAME" and prev.value in _NOT_SUPPORTED and tok.type in ("NAME", "LBRACE"):
        return (
            f"'{prev.value}' ({_NOT_SUPPORTED[prev.value]}) belongs to the original TensorLogic and is not "
            "supported by TensorLogic for Python"
        )
    if tok.type == "UNCLOSED_COMMENT":
        return "unterminated comment: '/*' has no closing '*/'"
    if tok.type == "$END" and stack:
        opener, open_kind = stack[-1]
        closing, why = _CLOSE_TEXT[open_kind]
        where = f"line {opener.line}, column {opener.column}"
        return f"unexpected end of input: expected {closing} {why}; the '{opener.value}' at {where} is never closed"
    if "BREAK" in expected and "NAME" in expected:
        return f"unexpected {_describe(tok)}; expected a statement"
    if tok.type == "COMP_OP" and "COMP_OP" not in expected and "ADD_OP" in expected:
        return "comparisons cannot be chained; write (a < b) and (b < c)"
    if {"NAME", "INT"} <= expected and not expected & _BINARY:
        if tok.type == "RPAR" and kind == "params":
            return "expected a parameter name"
        if tok.type == "$END":
            return f"unexpected end of input: expected an expression{after}"
        return f"expected an expression{after}, found {_describe(tok)}"
    if head is not None and kind == "block":
        keyword = head.type
        if "LBRACE" in expected and tok.type != "LBRACE":
            body = {
                "IF": "after the if condition", "WHILE": "after the while condition",
                "FOR": "after 'for NAME in ...'", "MAIN": "after 'main'", "ELSE": "or 'if' after 'else'",
                "FN": "to start the function body", "FUNCTION": "to start the function body",
            }.get(keyword)
            if body is not None:
                return f"expected '{{' {body}, found {_describe(tok)}"
        if keyword == "FOR" and "IN" in expected:
            return f"expected 'in' after the loop variable, found {_describe(tok)}"
        if keyword == "LET" and "EQUAL" in expected:
            return f"expected '=' after 'let NAME', found {_describe(tok)}"
        if keyword == "TENSOR" and "COLON" in expected:
            return f"expected ':' and a type after the tensor name (e.g. tensor w: float16[3]), found {_describe(tok)}"
        if keyword == "IMPORT" and "STRING" in expected:
            return f"expected a quoted file name after 'import', found {_describe(tok)}"
        if keyword in ("FN", "FUNCTION") and "NAME" in expected and "LPAR" not in expected:
            return f"expected a function name after '{head.value}', found {_describe(tok)}"
        if keyword in ("FN", "FUNCTION") and "LPAR" in expected:
            return f"expected '(' after the function name, found {_describe(tok)}"
    close = _CLOSE_TOKEN.get(kind)
    if kind != "block" and close in expected:
        closing, why = _CLOSE_TEXT[kind]
        if "COMMA" in expected:
            return f"expected ',' or {closing} {why}, found {_describe(tok)}"
        return f"expected {closing} {why}, found {_describe(tok)}"
    if expected == {"COMP_OP"}:
        return f"expected tensor<dtype>(...), e.g. tensor<float16>([1.0, 2.0]); found {_describe(tok)}"
    if kind == "block" and "_NL" in expected:
        return f"expected end of statement (newline or ';') before {_describe(tok)}"
    return f"unexpected {_describe(tok)}; expected {_pretty_expected(expected)}"


def _script_error(message: str, file: str, source: str, line: int, col: int) -> ScriptError:
    lines = source.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else None
    return ScriptError(message, file, line, col, text)


def _end_position(source: str, post: _PostLexer) -> tuple[int, int]:
    tok = post.prev
    if tok is not None and tok.end_line is not None:
        return tok.end_line, tok.end_column
    return 1, 1


def parse(source: str, file: str = "<script>") -> ast.Program:
    """Parse TensorLogic source; syntax errors raise ``ScriptError`` with the position and what was expected."""
    parser = _lark()
    post: _PostLexer = parser.options.postlex
    try:
        tree = parser.parse(source)
    except UnexpectedCharacters as e:
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else ""
        if ch in "\"'":
            msg = f"unterminated string: no closing {ch} on this line"
        else:
            msg = f"unexpected character {ch!r}"
        raise _script_error(msg, file, source, e.line, e.column) from None
    except (UnexpectedToken, UnexpectedEOF) as e:
        msg = _token_message(e, post)
        if e.token.type == "$END":
            line, col = _end_position(source, post)
        else:
            line, col = e.token.line, e.token.column
        raise _script_error(msg, file, source, line, col) from None
    except UnexpectedInput as e:
        raise _script_error(f"syntax error: {e}", file, source, e.line, e.column) from None
    try:
        program = _ToAst(file).transform(tree)
    except VisitError as e:
        inner = e.orig_exc
        if isinstance(inner, _SyntaxProblem):
            raise _script_error(inner.message, file, source, inner.line, inner.col) from None
        raise
    _check(program.items, file, source, loop=False, fn=False)
    return program


def _check(stmts, file: str, source: str, loop: bool, fn: bool) -> None:
    """Static checks: break/continue only in loops, return only in functions."""
    for s in stmts:
        if isinstance(s, (ast.Break, ast.Continue)) and not loop:
            word = "break" if isinstance(s, ast.Break) else "continue"
            raise _script_error(f"'{word}' outside a loop", file, source, s.line, s.col)
        if isinstance(s, ast.Return) and not fn:
            raise _script_error("'return' outside a function", file, source, s.line, s.col)
        if isinstance(s, ast.FnDecl):
            _check(s.body, file, source, loop=False, fn=True)
        elif isinstance(s, ast.Main):
            _check(s.body, file, source, loop=loop, fn=fn)
        elif isinstance(s, ast.If):
            _check(s.body, file, source, loop, fn)
            _check(s.orelse, file, source, loop, fn)
        elif isinstance(s, (ast.For, ast.While)):
            _check(s.body, file, source, loop=True, fn=fn)

