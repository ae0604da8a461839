"""Source text → ``ast.Program``: a hand-written recursive-descent parser with a precedence-climbing expression
parser.

The language is defined the PEG way, as the original's grammar is: whitespace (newlines included) only
separates tokens, choices are tried in order and every construct is greedy, so statements need no separator
and an expression runs on as long as the next token can continue it. Each ``parse`` call builds its own
``_Parser``, so parsing keeps no shared state and any number of threads may parse at once.

Words that start a construct only there (``main``, ``test``, ``entity``, ``learn``, ...) are names
everywhere else: at the start of a statement such a word begins its construct when the next token is a
name, a literal or ``{`` (a token that cannot continue an expression made of that one name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, TypeVar

from ..errors import ScriptError
from . import ast
from .lexer import Token, line_of, tokenize

_T = TypeVar("_T")

# Binary operators by token value: (precedence level, operator in the tree). Higher levels bind tighter;
# every level is left-associative. Level 3 is the prefix 'not', level 6 the 'as' cast, level 10 the prefix
# '-', '!' and 'inv', level 11 the postfix call, index and attribute.
_OR, _AND, _NOT, _EQ, _CMP, _CAST, _ADD, _MUL, _POW = range(1, 10)
_INFIX = {
    "||": (_OR, "or"), "or": (_OR, "or"),
    "&&": (_AND, "and"), "and": (_AND, "and"),
    "==": (_EQ, "=="), "!=": (_EQ, "!="),
    "<": (_CMP, "<"), "<=": (_CMP, "<="), ">": (_CMP, ">"), ">=": (_CMP, ">="), "≈": (_CMP, "≈"),
    "as": (_CAST, "as"),
    "+": (_ADD, "+"), "-": (_ADD, "-"),
    "*": (_MUL, "*"), "/": (_MUL, "/"), "%": (_MUL, "%"), "@": (_MUL, "@"), "⊙": (_MUL, "⊙"),
    "**": (_POW, "**"), "⊗": (_POW, "⊗"),
}
_CAST_TYPES = ("int", "float", "bool", "i32", "i64", "f16", "f32", "f64")
_ASSIGN_OPS = frozenset({"=", ":=", "+=", "-=", "*=", "/="})
_INFER_METHODS = ("forward", "backward", "gradient", "symbolic")
_LEARN_KEYS = ("objective", "optimizer", "epochs", "scheduler")
_QUALIFIERS = ("learnable", "frozen")
# Soft keywords that begin a statement-level construct (see the module docstring).
_TOP_ONLY = {
    "main": "'main' blocks are", "test": "'test' blocks are", "bench": "'bench' blocks are", "import": "'import' is",
}
_STATEMENT_WORDS = frozenset({
    "python", "entity", "relation", "embedding", "relation_embedding", "with", "learn", "infer", *_TOP_ONLY,
})
_DECL_WORDS = {"fn": "functions", "function": "functions", "struct": "structs", "impl": "impl blocks"}
_EXPR_START_KW = frozenset({"true", "false", "not", "tensor", "match", "if"})
_EXPR_START_OP = frozenset({"(", "[", "{", "-", "!"})
# Nesting depth of brackets and blocks beyond which the parser stops with a clean error rather than
# running out of Python stack.
MAX_NESTING = 200


def parse(source: str, file: str = "<script>") -> ast.Program:
    """Parse TensorLogic source; a syntax error raises ``ScriptError`` naming what was expected and what was
    found, with ``incomplete`` True when the input ended inside an unfinished construct."""
    parser = _Parser(tokenize(source, file), source, file)
    try:
        return parser.program()
    except RecursionError:
        parser.speculating = 0
        raise parser.error(
            f"the program is nested too deeply to parse (more than {MAX_NESTING} levels of brackets and blocks)",
            parser.tok,
        ) from None


def _describe(tok: Token) -> str:
    """How an error message names a token."""
    if tok.kind == "EOF":
        return "end of input"
    if tok.kind == "NAME":
        return f"name '{tok.text}'"
    if tok.kind in ("INT", "FLOAT", "IMAG"):
        return f"number {tok.text}"
    if tok.kind == "STR":
        return f"string {tok.text if len(tok.text) <= 30 else tok.text[:27] + '...'}"
    return f"'{tok.text}'"


def _what(node: ast.Node) -> str:
    """How an error message names an expression that cannot be assigned to."""
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the result of '{node.op}'"
    names = {
        ast.Call: "a call", ast.Num: "a number", ast.Str: "a string", ast.Bool: "a boolean",
        ast.ListLit: "a list literal", ast.TupleLit: "a tuple", ast.DictLit: "a dict literal",
        ast.Cast: "a cast", ast.Path: "a path (Type::name)", ast.TensorCtor: "a tensor constructor",
        ast.StructLit: "a struct literal", ast.Match: "a match expression", ast.IfExpr: "an if expression",
    }
    return names.get(type(node), "this expression")


def _type_text(t: ast.TypeSpec) -> str:
    """A type as written, for messages."""
    text = t.base
    if t.args:
        text += "<" + ", ".join(_type_text(a) for a in t.args) + ">"
    if t.dims is not None:
        text += "[" + ", ".join(str(d) for d in t.dims) + "]"
    return text


class _Backtrack(Exception):
    """A speculative parse (``Box<int>::new`` versus ``a < b``) did not match."""


class _Parser:
    """The state of one parse: the tokens, the position and what the enclosing constructs allow."""

    def __init__(self, tokens: list[Token], source: str, file: str):
        self.toks = tokens
        self.source = source
        self.file = file
        self.i = 0
        self.no_struct = False  # inside an if/while/for/match head: '{' opens the body, not a struct literal
        self.loops = 0  # enclosing loops of the current function or block (for break/continue)
        self.can_return = False  # inside a function, method, main, test or bench block
        self.depth = 0  # open brackets and blocks
        self.speculating = 0  # inside a speculative parse: errors only mean "not this way"

    # ------------------------------------------------------------------------------------------ tokens
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "EOF":
            self.i += 1
        return tok

    def at(self, text: str, tok: Token | None = None) -> bool:
        """Is the (current) token the operator ``text``?"""
        tok = tok or self.tok
        return tok.kind == "OP" and tok.text == text

    def at_kw(self, word: str, tok: Token | None = None) -> bool:
        tok = tok or self.tok
        return tok.kind == "KW" and tok.text == word

    def at_name(self, word: str, tok: Token | None = None) -> bool:
        tok = tok or self.tok
        return tok.kind == "NAME" and tok.text == word

    def prev_text(self) -> str:
        return _describe(self.toks[self.i - 1]) if self.i > 0 else "the start"

    # ------------------------------------------------------------------------------------------ errors
    def error(self, message: str, at: Token | ast.Node) -> ScriptError:
        if self.speculating:
            raise _Backtrack
        err = ScriptError(message, self.file, at.line, at.col, line_of(self.source, at.line))
        if isinstance(at, Token) and at.kind == "EOF":
            err.incomplete = True  # the REPL reads another line when the input ended too early
        return err

    def fail(self, expected: str) -> NoReturn:
        """Stop with "expected EXPECTED, found <the current token>"."""
        raise self.error(f"expected {expected}, found {_describe(self.tok)}", self.tok)

    def expect(self, text: str, context: str) -> Token:
        if not self.at(text):
            self.fail(f"'{text}' {context}")
        return self.advance()

    def expect_name(self, what: str) -> Token:
        if self.tok.kind != "NAME":
            self.fail(what)
        return self.advance()

    def close_error(self, opener: Token, close: str, comma: bool = True) -> NoReturn:
        where = f"the '{opener.text}' at line {opener.line}, column {opener.col}"
        if self.tok.kind == "EOF" or not comma:
            self.fail(f"'{close}' to close {where}")
        self.fail(f"',' or '{close}' to close {where}")

    def open(self, tok: Token) -> None:
        """Count one more open bracket or block (``tok``), stopping cleanly when they nest too deeply."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(
                f"the program is nested too deeply to parse (more than {MAX_NESTING} levels of brackets and "
                "blocks)", tok,
            )

    def comma_list(self, opener: Token, close: str, item: Callable[[], _T], structs: bool = False) -> list[_T]:
        """Items up to ``close`` (already past ``opener``), separated by commas, a trailing comma allowed.

        ``structs``: the items are expressions inside brackets, where struct literals are allowed again.
        """
        items: list[_T] = []
        self.open(opener)
        saved = self.no_struct
        if structs:
            self.no_struct = False
        while not self.at(close):
            if self.tok.kind == "EOF":
                self.close_error(opener, close)
            items.append(item())
            if self.at(","):
                self.advance()
            elif not self.at(close):
                self.close_error(opener, close)
        self.advance()
        self.depth -= 1
        self.no_struct = saved
        return items

    def speculate(self, attempt: Callable[[], _T]) -> _T | None:
        """Run ``attempt``; if it does not match, rewind and return None."""
        saved = (self.i, self.no_struct, self.depth)
        self.speculating += 1
        try:
            return attempt()
        except _Backtrack:
            self.i, self.no_struct, self.depth = saved
            return None
        finally:
            self.speculating -= 1

    # ------------------------------------------------------------------------------------------ program
    def program(self) -> ast.Program:
        items: list[ast.Node] = []
        while self.tok.kind != "EOF":
            item = self.statement(top=True)
            if item is not None:
                items.append(item)
        return ast.Program(tuple(items), self.file, line=1, col=1)

    def block(self, context: str, *, loop: bool | None = None, can_return: bool | None = None) -> tuple:
        """``{ statements }``; ``context`` completes "expected '{' ..." when the brace is missing.

        ``loop`` (True: a loop body, False: a function body) and ``can_return`` set what break, continue
        and return may do inside; None keeps what the enclosing block allows.
        """
        if not self.at("{"):
            self.fail(f"'{{' {context}")
        opener = self.advance()
        self.open(opener)
        saved = (self.loops, self.can_return, self.no_struct)
        if loop is not None:
            self.loops = self.loops + 1 if loop else 0
        if can_return is not None:
            self.can_return = can_return
        self.no_struct = False
        body = []
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}", comma=False)
            stmt = self.statement(top=False)
            if stmt is not None:
                body.append(stmt)
        self.advance()
        self.depth -= 1
        self.loops, self.can_return, self.no_struct = saved
        return tuple(body)

    # ------------------------------------------------------------------------------------------ statements
    def statement(self, top: bool) -> ast.Node | None:
        """One statement (or, at the top level, a declaration); None for a lone ';'."""
        tok = self.tok
        nxt = self.peek()
        if tok.kind == "OP":
            if tok.text == ";":
                self.advance()
                return None
            if tok.text == "{":
                return ast.Block(self.block(""), line=tok.line, col=tok.col)
        elif tok.kind == "KW":
            word = tok.text
            if word in _DECL_WORDS:
                if not top:
                    raise self.error(f"{_DECL_WORDS[word]} can only be declared at the top level", tok)
                if word == "struct":
                    return self.struct_decl()
                if word == "impl":
                    return self.impl_block()
                return self.fn_decl()
            handler = {
                "let": self.let_stmt, "if": self.if_stmt, "for": self.for_stmt, "while": self.while_stmt,
                "loop": self.loop_stmt, "break": self.jump_stmt, "continue": self.jump_stmt,
                "return": self.return_stmt,
            }.get(word)
            if handler is not None:
                return handler()
            if word == "else":
                raise self.error("'else' without a matching 'if'", tok)
            if word == "tensor" and nxt.kind == "NAME":
                return self.tensor_decl()
            if word == "match":
                # A match at the start of a statement ends with its '}', like Rust's block-like expressions.
                return ast.ExprStmt(self.match_expr(), line=tok.line, col=tok.col)
        elif (
            tok.kind == "NAME"
            and tok.text in _STATEMENT_WORDS
            and (nxt.kind in ("NAME", "STR", "INT", "FLOAT") or self.at("{", nxt))
        ):
            if tok.text in _TOP_ONLY:
                if not top:
                    raise self.error(f"{_TOP_ONLY[tok.text]} only allowed at the top level", tok)
                return getattr(self, f"{tok.text}_decl")()
            return getattr(self, f"{tok.text}_stmt")()
        elif tok.kind == "NAME" and self.at("(", nxt) and self.rule_follows():
            return self.rule()
        if not self.can_start_expr(tok):
            self.fail("a statement" if top else "a statement or '}'")
        return self.expr_stmt()

    def can_start_expr(self, tok: Token) -> bool:
        if tok.kind in ("NAME", "INT", "FLOAT", "STR", "IMAG"):
            return True
        if tok.kind == "KW":
            return tok.text in _EXPR_START_KW
        return tok.kind == "OP" and tok.text in _EXPR_START_OP

    def expr_stmt(self) -> ast.Node:
        """An expression statement, an assignment (``target op value``) or a query (``Atom(...)?``)."""
        start = self.tok
        e = self.expr()
        tok = self.tok
        if tok.kind == "OP" and tok.text in _ASSIGN_OPS:
            if not isinstance(e, (ast.Name, ast.Index, ast.Attr)):
                raise self.error(
                    f"cannot assign to {_what(e)}; the target of '{tok.text}' must be a name, an element (a[i]) "
                    "or a field (s.x)", start,
                )
            self.advance()
            value = self.expr()
            return ast.Assign(e, value, tok.text, line=start.line, col=start.col)
        if self.at("?"):
            return self.query_after(e, start)
        return ast.ExprStmt(e, line=start.line, col=start.col)

    def let_stmt(self) -> ast.Let:
        kw = self.advance()
        name = self.expect_name("a name after 'let'").text
        typ = None
        if self.at(":"):
            self.advance()
            typ = self.type_spec("after ':'")
            if not self.at("="):
                self.fail(f"'=' after the type of '{name}'")
        elif not self.at("="):
            self.fail(f"'=' after 'let {name}'")
        self.advance()
        return ast.Let(name, self.expr(), typ, line=kw.line, col=kw.col)

    def tensor_decl(self) -> ast.TensorDecl:
        kw = self.advance()
        name = self.advance().text
        if not self.at(":"):
            self.fail(f"':' and a type after 'tensor {name}' (e.g. tensor {name}: float16[3])")
        self.advance()
        typ = self.type_spec("after ':'")
        if typ.dims is None:
            raise self.error(
                f"expected dimensions after '{typ.base}' in the declaration of '{name}', e.g. {typ.base}[3, 4]",
                typ,
            )
        qualifier = self.qualifier()
        value = None
        if self.at("="):
            self.advance()
            value = self.expr()
        return ast.TensorDecl(name, typ, qualifier, value, line=kw.line, col=kw.col)

    def qualifier(self) -> str | None:
        """``learnable`` / ``frozen`` after a type (not a field of that name: ``frozen: bool``)."""
        if self.tok.kind == "NAME" and self.tok.text in _QUALIFIERS and not self.at(":", self.peek()):
            return self.advance().text
        return None

    def condition(self, keyword: str, what: str = "a condition") -> ast.Node:
        """The head of if/while/for/match: no struct literals, so '{' opens the body."""
        # Where the condition starts, '{' is the body (the condition is missing) unless a dict's first
        # 'KEY:' follows; at any later operand position a '{' can only be a dict.
        key, colon = self.peek(), self.peek(2)
        dict_start = key.kind in ("STR", "INT", "FLOAT", "NAME") and self.at(":", colon)
        if (self.at("{") and not dict_start) or not self.can_start_expr(self.tok):
            self.fail(f"{what} after '{keyword}'")
        saved = self.no_struct
        self.no_struct = True
        e = self.expr()
        self.no_struct = saved
        return e

    def if_stmt(self) -> ast.If:
        # An else-if chain is read in a loop and built from its end, so long chains need no deep recursion.
        chain = []
        tok = self.advance()
        while True:
            cond = self.condition("if")
            body = self.block("after the if condition")
            chain.append((tok, cond, body))
            if not self.at_kw("else"):
                orelse: tuple = ()
                break
            self.advance()
            if self.at_kw("if"):
                tok = self.advance()
                continue
            orelse = self.block("or 'if' after 'else'")
            break
        for tok, cond, body in reversed(chain):
            node = ast.If(cond, body, orelse, line=tok.line, col=tok.col)
            orelse = (node,)
        return node

    def for_stmt(self) -> ast.For:
        kw = self.advance()
        var = self.expect_name("a loop variable after 'for'").text
        if not self.at_kw("in"):
            self.fail("'in' after the loop variable")
        self.advance()
        it = self.condition("in", "an expression to loop over")
        body = self.block("after 'for ... in ...'", loop=True)
        return ast.For(var, it, body, line=kw.line, col=kw.col)

    def while_stmt(self) -> ast.While:
        kw = self.advance()
        cond = self.condition("while")
        return ast.While(cond, self.block("after the while condition", loop=True), line=kw.line, col=kw.col)

    def loop_stmt(self) -> ast.Loop:
        kw = self.advance()
        return ast.Loop(self.block("after 'loop'", loop=True), line=kw.line, col=kw.col)

    def jump_stmt(self) -> ast.Break | ast.Continue:
        kw = self.advance()
        if not self.loops:
            raise self.error(f"'{kw.text}' outside a loop", kw)
        node = ast.Break if kw.text == "break" else ast.Continue
        return node(line=kw.line, col=kw.col)

    def return_stmt(self) -> ast.Return:
        kw = self.advance()
        if not self.can_return:
            raise self.error("'return' outside a function, main, test or bench block", kw)
        value = self.expr() if self.can_start_expr(self.tok) else None
        return ast.Return(value, line=kw.line, col=kw.col)

    # ------------------------------------------------------------------------------------------ declarations
    def fn_decl(self) -> ast.FnDecl:
        kw = self.advance()
        name = self.expect_name(f"a function name after '{kw.text}'").text
        type_params = self.type_params()
        if not self.at("("):
            self.fail(f"'(' after the function name '{name}'")
        params = self.params(self.advance(), name)
        ret = None
        if self.at("->"):
            self.advance()
            ret = self.type_spec("after '->'")
        body = self.block(f"to start the body of '{name}'", loop=False, can_return=True)
        return ast.FnDecl(name, params, ret, body, self.file, type_params, line=kw.line, col=kw.col)

    def params(self, opener: Token, owner: str) -> tuple[ast.Param, ...]:
        def param() -> ast.Param:
            tok = self.expect_name("a parameter name")
            typ = None
            if self.at(":"):
                self.advance()
                typ = self.type_spec(f"for parameter '{tok.text}'")
            return ast.Param(tok.text, typ, line=tok.line, col=tok.col)

        params = self.comma_list(opener, ")", param)
        seen: set[str] = set()
        for p in params:
            if p.name in seen:
                raise self.error(f"parameter '{p.name}' appears twice in '{owner}'", p)
            seen.add(p.name)
        return tuple(params)

    def type_params(self) -> tuple[str, ...]:
        if not self.at("<"):
            return ()
        opener = self.advance()
        if self.at(">"):
            self.fail("a type parameter name after '<'")
        return tuple(self.comma_list(opener, ">", lambda: self.expect_name("a type parameter name").text))

    def type_spec(self, context: str) -> ast.TypeSpec:
        """``float16[N, 3, ?]``, ``int``, ``Point``, ``Box<T>``, ``Box<float16[3]>``."""
        tok = self.tok
        if tok.kind != "NAME":
            self.fail(f"a type {context}")
        self.advance()
        args: tuple[ast.TypeSpec, ...] = ()
        if self.at("<"):
            opener = self.advance()
            if self.at(">"):
                self.fail("a type after '<'")
            args = tuple(self.comma_list(opener, ">", lambda: self.type_spec("in '<...>'")))
        dims = None
        if self.at("["):
            opener = self.advance()
            if self.at("]"):
                self.fail("a dimension after '['")
            dims = tuple(self.comma_list(opener, "]", self.dim))
        return ast.TypeSpec(tok.text, dims, args, line=tok.line, col=tok.col)

    def dim(self) -> int | str:
        tok = self.tok
        if tok.kind == "INT":
            self.advance()
            return tok.value
        if tok.kind == "NAME" or self.at("?"):
            self.advance()
            return tok.text
        self.fail("a dimension (a number, a name or '?')")

    def struct_decl(self) -> ast.StructDecl:
        kw = self.advance()
        name = self.expect_name("a struct name after 'struct'").text
        type_params = self.type_params()
        opener = self.expect("{", f"after 'struct {name}'")
        self.open(opener)
        fields: list[ast.Field] = []
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}")
            tok = self.expect_name(f"a field name or '}}' in struct '{name}'")
            if any(f.name == tok.text for f in fields):
                raise self.error(f"field '{tok.text}' appears twice in struct '{name}'", tok)
            self.expect(":", f"after field '{tok.text}'")
            typ = self.type_spec(f"for field '{tok.text}'")
            fields.append(ast.Field(tok.text, typ, self.qualifier(), line=tok.line, col=tok.col))
            if self.at(","):
                self.advance()
        self.advance()
        self.depth -= 1
        return ast.StructDecl(name, type_params, tuple(fields), line=kw.line, col=kw.col)

    def impl_block(self) -> ast.ImplBlock:
        kw = self.advance()
        type_params = self.type_params()
        typ = self.type_spec("after 'impl'")
        trait = None
        if self.at_kw("for"):
            self.advance()
            trait = typ.base
            typ = self.type_spec(f"after '{trait} for'")
        opener = self.expect("{", f"after 'impl {_type_text(typ)}'")
        self.open(opener)
        methods = []
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}", comma=False)
            if not (self.at_kw("fn") or self.at_kw("function")):
                self.fail("'fn' or '}' in the impl block")
            methods.append(self.fn_decl())
        self.advance()
        self.depth -= 1
        return ast.ImplBlock(typ, trait, type_params, tuple(methods), line=kw.line, col=kw.col)

    def import_decl(self) -> ast.Import:
        kw = self.advance()
        if self.tok.kind != "STR":
            self.fail("a quoted file name after 'import'")
        return ast.Import(self.advance().value, line=kw.line, col=kw.col)

    def main_decl(self) -> ast.Main:
        kw = self.advance()
        return ast.Main(self.block("after 'main'", loop=False, can_return=True), line=kw.line, col=kw.col)

    def test_decl(self) -> ast.TestBlock:
        kw = self.advance()
        name = self.expect_name("a test name after 'test'").text
        body = self.block(f"after 'test {name}'", loop=False, can_return=True)
        return ast.TestBlock(name, body, line=kw.line, col=kw.col)

    def bench_decl(self) -> ast.BenchBlock:
        kw = self.advance()
        name = self.expect_name("a benchmark name after 'bench'").text
        body = self.block(f"after 'bench {name}'", loop=False, can_return=True)
        return ast.BenchBlock(name, body, line=kw.line, col=kw.col)

    def python_stmt(self) -> ast.PythonImport:
        kw = self.advance()
        if not self.at_name("import"):
            self.fail("'import' after 'python'")
        self.advance()
        module = self.expect_name("a module name after 'python import'").text
        while self.at("."):
            self.advance()
            module += "." + self.expect_name(f"a module name after '{module}.'").text
        alias = None
        if self.at_kw("as"):
            self.advance()
            alias = self.expect_name("a name after 'as'").text
        return ast.PythonImport(module, alias, line=kw.line, col=kw.col)

    # ------------------------------------------------------------------------------------------ logic
    def name_set(self, opener: Token, what: str) -> tuple[str, ...]:
        """``{a, b, c}`` (after its '{')."""
        return tuple(self.comma_list(opener, "}", lambda: self.expect_name(what).text))

    def entity_stmt(self) -> ast.EntityDecl:
        kw = self.advance()
        name = self.expect_name("an entity type name after 'entity'").text
        members = None
        if self.at("="):
            self.advance()
            opener = self.expect("{", f"after 'entity {name} ='")
            members = self.name_set(opener, "an entity name")
        return ast.EntityDecl(name, members, line=kw.line, col=kw.col)

    def relation_stmt(self) -> ast.RelationDecl:
        kw = self.advance()
        name = self.expect_name("a relation name after 'relation'").text
        if not self.at("("):
            self.fail(f"'(' after the relation name '{name}'")
        params = self.params(self.advance(), name)
        embed = None
        if self.at_name("embed") and self.peek().kind == "NAME":
            self.advance()
            embed = self.type_spec("after 'embed'")
        return ast.RelationDecl(name, params, embed, line=kw.line, col=kw.col)

    def embedding_stmt(self) -> ast.EmbeddingDecl:
        return self.embedding_decl("entities", ("auto",))

    def relation_embedding_stmt(self) -> ast.EmbeddingDecl:
        return self.embedding_decl("relations", ("all",))

    def embedding_decl(self, members_key: str, words: tuple[str, ...]) -> ast.EmbeddingDecl:
        kw = self.advance()
        name = self.expect_name(f"a name after '{kw.text}'").text
        opener = self.expect("{", f"after '{kw.text} {name}'")
        keys = (members_key, "dimension", "init")
        got: dict[str, object] = {}
        self.open(opener)
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}")
            key = self.tok
            if key.kind != "NAME" or key.text not in keys:
                self.fail(f"'{members_key}:', 'dimension:', 'init:' or '}}' in {kw.text} '{name}'")
            if key.text in got:
                raise self.error(f"'{key.text}' is given twice in {kw.text} '{name}'", key)
            self.advance()
            self.expect(":", f"after '{key.text}'")
            tok = self.tok
            if key.text == "dimension":
                if tok.kind != "INT":
                    self.fail("an integer after 'dimension:'")
                got["dimension"] = self.advance().value
            elif key.text == "init":
                got["init"] = self.expect_name("an initialisation method after 'init:' (e.g. xavier)").text
            elif self.at("{"):
                got[members_key] = self.name_set(self.advance(), "a name")
            elif tok.kind == "NAME" and (members_key == "entities" or tok.text in words):
                got[members_key] = self.advance().text
            else:
                alternatives = "'{', 'auto' or an entity type" if members_key == "entities" else "'{' or 'all'"
                self.fail(f"{alternatives} after '{members_key}:'")
            if self.at(","):
                self.advance()
        close = self.advance()
        self.depth -= 1
        for key, example in ((members_key, "{a, b}"), ("dimension", "16")):
            if key not in got:
                raise self.error(f"{kw.text} '{name}' lacks '{key}: {example}'", close)
        return ast.EmbeddingDecl(
            kw.text, name, got[members_key], got["dimension"], got.get("init"), line=kw.line, col=kw.col
        )

    def rule_follows(self) -> bool:
        """At ``NAME (``: does the matching ')' come right before a rule arrow '<-'?"""
        depth = 0
        for j in range(self.i + 1, len(self.toks) - 1):
            t = self.toks[j]
            if t.kind != "OP":
                continue
            if t.text in ("(", "[", "{"):
                depth += 1
            elif t.text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    a, b = self.toks[j + 1], self.toks[min(j + 2, len(self.toks) - 1)]
                    return self.at("<", a) and self.at("-", b) and b.start == a.end
        return False

    def as_atom(self, e: ast.Node, start: Token, what: str) -> ast.Atom:
        """The relation atom that the parsed ``Name(args)`` (or ``not Name(args)``) ``e`` stands for, in a query,
        a rule head or a rule body; ``what`` names that place in errors."""
        negated = False
        if isinstance(e, ast.UnaryOp) and e.op == "not":
            negated, e = True, e.operand
        if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name)):
            raise self.error(f"{what} must be a relation atom such as Parent(alice, X)", start)
        if e.kwargs:
            raise self.error(f"a relation atom takes no keyword arguments ('{e.kwargs[0][0]}' in {what})", start)
        args = []
        for a in e.args:
            # A negative number is a constant of the atom, not an operation.
            if isinstance(a, ast.UnaryOp) and a.op == "-" and isinstance(a.operand, ast.Num):
                a = ast.Num(-a.operand.value, line=a.line, col=a.col)
            args.append(a)
        return ast.Atom(e.func.id, tuple(args), negated, line=start.line, col=start.col)

    def rule(self) -> ast.Rule:
        start = self.tok
        head = self.as_atom(self.postfix(self.atom()), start, "a rule head")
        self.advance()  # '<' and '-': rule_follows checked them
        self.advance()
        body: list[ast.Atom | ast.Node] = []
        while True:
            term_start = self.tok
            if not self.can_start_expr(term_start):
                self.fail("a relation atom or a condition in the rule body")
            term = self.expr()
            inner = term.operand if isinstance(term, ast.UnaryOp) and term.op == "not" else term
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name):
                term = self.as_atom(term, term_start, "a rule body item")
            body.append(term)
            if not self.at(","):
                break
            self.advance()
        return ast.Rule(head, tuple(body), line=start.line, col=start.col)

    def query_after(self, e: ast.Node, start: Token) -> ast.Query:
        """``ATOM ? [where c1, c2]`` with ATOM already parsed and '?' current."""
        atom = self.as_atom(e, start, "a query")
        self.advance()
        where = []
        if self.at_name("where") and self.can_start_expr(self.peek()):
            self.advance()
            where.append(self.expr())
            while self.at(","):
                self.advance()
                where.append(self.expr())
        return ast.Query(atom, tuple(where), line=start.line, col=start.col)

    def query(self, context: str) -> ast.Query:
        start = self.tok
        if not self.can_start_expr(start):
            self.fail(f"a query such as Parent(alice, X)? {context}")
        e = self.expr()
        if not self.at("?"):
            self.fail("'?' after the query")
        return self.query_after(e, start)

    def infer_stmt(self) -> ast.Infer | ast.Block:
        kw = self.advance()
        methods = "an inference method (forward, backward, gradient or symbolic)"
        if self.at("{"):
            opener = self.advance()
            self.open(opener)
            items = []
            while not self.at("}"):
                if self.tok.kind == "EOF":
                    self.close_error(opener, "}", comma=False)
                if not (self.tok.kind == "NAME" and self.tok.text in _INFER_METHODS):
                    self.fail(f"{methods} or '}}' in the infer block")
                method = self.advance()
                items.append(ast.Infer(method.text, self.query(f"after '{method.text}'"),
                                       line=method.line, col=method.col))
            self.advance()
            self.depth -= 1
            return ast.Block(tuple(items), line=kw.line, col=kw.col)
        if not (self.tok.kind == "NAME" and self.tok.text in _INFER_METHODS):
            self.fail(f"{methods} or '{{' after 'infer'")
        method = self.advance().text
        return ast.Infer(method, self.query(f"after 'infer {method}'"), line=kw.line, col=kw.col)

    def with_stmt(self) -> ast.With:
        kw = self.advance()
        entity = self.expect_name("an entity type name after 'with'").text
        return ast.With(entity, self.block(f"after 'with {entity}'"), line=kw.line, col=kw.col)

    def learn_stmt(self) -> ast.Learn:
        kw = self.advance()
        opener = self.expect("{", "after 'learn'")
        self.open(opener)
        body = []
        while not (self.tok.kind == "NAME" and self.tok.text in _LEARN_KEYS and self.at(":", self.peek())):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}", comma=False)
            if self.at("}"):
                self.fail("'objective:' in the learn block")
            stmt = self.statement(top=False)
            if stmt is not None:
                body.append(stmt)
        spec: dict[str, object] = {}
        positions: dict[str, tuple[int, int]] = {}
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}")
            key = self.tok
            if not (key.kind == "NAME" and key.text in _LEARN_KEYS and self.at(":", self.peek())):
                self.fail("'objective:', 'optimizer:', 'epochs:', 'scheduler:' or '}' in the learn block")
            if key.text in spec:
                raise self.error(f"'{key.text}' is given twice in the learn block", key)
            self.advance()
            self.advance()
            if key.text in ("optimizer", "scheduler"):
                positions[key.text] = (self.tok.line, self.tok.col)
                spec[key.text] = self.learn_setting(key.text)
            else:
                if not self.can_start_expr(self.tok):
                    self.fail(f"an expression after '{key.text}:'")
                spec[key.text] = self.expr()
            if self.at(","):
                self.advance()
        close = self.advance()
        self.depth -= 1
        for key, example in (("objective", "loss"), ("optimizer", "sgd(lr: 0.1)"), ("epochs", "100")):
            if key not in spec:
                raise self.error(f"the learn block lacks '{key}: {example}'", close)
        optimizer, optimizer_args = spec["optimizer"]
        scheduler, scheduler_args = spec.get("scheduler", (None, ()))
        return ast.Learn(
            tuple(body), spec["objective"], optimizer, optimizer_args, spec["epochs"], scheduler, scheduler_args,
            positions["optimizer"], positions.get("scheduler", (0, 0)), line=kw.line, col=kw.col,
        )

    def learn_setting(self, key: str) -> tuple[str, tuple[tuple[str, int | float], ...]]:
        """``sgd(lr: 0.1, momentum = 0.9)`` after 'optimizer:' or 'scheduler:' (the parentheses optional)."""
        name = self.expect_name(f"a name after '{key}:' (e.g. {'sgd(lr: 0.1)' if key == 'optimizer' else 'step()'})")
        if not self.at("("):
            return name.text, ()

        seen: set[str] = set()

        def setting() -> tuple[str, int | float]:
            arg = self.expect_name(f"a setting name in {name.text}(...)")
            if arg.text in seen:
                raise self.error(f"'{arg.text}' is given twice in {name.text}(...)", arg)
            seen.add(arg.text)
            if not (self.at(":") or self.at("=")):
                self.fail(f"':' or '=' after '{arg.text}'")
            self.advance()
            sign = 1
            if self.at("-"):
                self.advance()
                sign = -1
            if self.tok.kind not in ("INT", "FLOAT"):
                self.fail(f"a number for '{arg.text}' in {name.text}(...)")
            return arg.text, sign * self.advance().value

        return name.text, tuple(self.comma_list(self.advance(), ")", setting))

    # ------------------------------------------------------------------------------------------ expressions
    def expr(self, min_level: int = 0) -> ast.Node:
        """An expression whose binary operators all have precedence ``min_level`` or tighter."""
        start = self.tok
        left = self.unary()
        last_cmp = False  # the previous operator at this level was a comparison: a second one would chain
        while True:
            tok = self.tok
            info = _INFIX.get(tok.value) if tok.kind in ("OP", "KW") else None
            if info is None or info[0] < min_level:
                break
            level, op = info
            if level == _CMP and last_cmp:
                raise self.error("comparisons cannot be chained; write (a < b) and (b < c)", tok)
            self.advance()
            if level == _CAST:
                type_tok = self.tok
                if type_tok.kind != "NAME" or type_tok.text not in _CAST_TYPES:
                    self.fail(f"a type after 'as' ({', '.join(_CAST_TYPES[:-1])} or {_CAST_TYPES[-1]})")
                self.advance()
                left = ast.Cast(left, type_tok.text, line=tok.line, col=tok.col)
            else:
                if not self.can_start_expr(self.tok):
                    self.fail(f"an expression after '{tok.text}'")
                right = self.expr(level + 1)
                left = ast.BinOp(op, left, right, line=tok.line, col=tok.col)
            last_cmp = level == _CMP
        if min_level == 0 and self.at("~"):
            raise self.error("tensor equations ('a ~ b') are not supported", start)
        return left

    # The functions below keep the Python frames per nesting level few (four for a parenthesis, a call, an
    # index or a list), so that MAX_NESTING levels fit in Python's default recursion limit.
    def unary(self) -> ast.Node:
        tok = self.tok
        if self.at_kw("not"):
            self.advance()
            self.operand_follows("not")
            return ast.UnaryOp("not", self.expr(_NOT + 1), line=tok.line, col=tok.col)
        if self.at("-") or self.at("!"):
            self.advance()
            self.operand_follows(tok.text)
            return ast.UnaryOp("-" if tok.text == "-" else "not", self.unary(), line=tok.line, col=tok.col)
        if self.at_name("inv") and self.can_start_expr(self.peek()) and not self.at("{", self.peek()):
            self.advance()
            return ast.UnaryOp("inv", self.unary(), line=tok.line, col=tok.col)
        return self.postfix(self.atom(), tok)

    def operand_follows(self, op: str) -> None:
        if not self.can_start_expr(self.tok):
            self.fail(f"an expression after '{op}'")

    def postfix(self, e: ast.Node, start: Token | None = None) -> ast.Node:
        """Calls, indexing and attributes after the atom ``e`` (which began at token ``start``)."""
        if isinstance(e, (ast.Match, ast.IfExpr)):
            return e
        start = start or e
        while True:
            tok = self.tok
            if self.at("("):
                self.advance()
                args, kwargs = self.arguments(tok)
                e = ast.Call(e, args, kwargs, line=e.line, col=e.col)
            elif self.at("["):
                self.advance()
                e = ast.Index(e, self.index_items(tok), line=start.line, col=start.col)
            elif self.at("."):
                self.advance()
                name = self.expect_name("an attribute or method name after '.'")
                e = ast.Attr(e, name.text, line=name.line, col=name.col)
            else:
                return e

    def arguments(self, opener: Token) -> tuple[tuple, tuple]:
        """Call arguments after '(': positional ones, then ``name: value`` or ``name = value``."""
        args: list[ast.Node] = []
        kwargs: list[tuple[str, ast.Node]] = []
        self.open(opener)
        saved = self.no_struct
        self.no_struct = False
        while not self.at(")"):
            tok = self.tok
            if tok.kind == "EOF":
                self.close_error(opener, ")")
            if tok.kind == "NAME" and (self.at(":", self.peek()) or self.at("=", self.peek())):
                if any(k == tok.text for k, _ in kwargs):
                    raise self.error(f"keyword argument '{tok.text}' given twice", tok)
                self.advance()
                self.advance()
                if not self.can_start_expr(self.tok):
                    self.fail(f"a value for '{tok.text}'")
                kwargs.append((tok.text, self.expr()))
            elif kwargs:
                raise self.error("positional argument after a keyword argument", tok)
            else:
                args.append(self.expr())
            if self.at(","):
                self.advance()
            elif not self.at(")"):
                self.close_error(opener, ")")
        self.advance()
        self.depth -= 1
        self.no_struct = saved
        return tuple(args), tuple(kwargs)

    def index_items(self, opener: Token) -> tuple:
        """The items of ``x[...]`` after '[': expressions or slices ``start:stop:step`` (each part optional)."""
        if self.at("]"):
            self.fail("an index after '['")
        items: list[ast.Node] = []
        self.open(opener)
        saved = self.no_struct
        self.no_struct = False
        while not self.at("]"):
            start = self.tok
            if start.kind == "EOF":
                self.close_error(opener, "]")
            parts: list[ast.Node | None] = []
            # '::' is two colons here: x[::2] and x[1::2] leave out the stop.
            while len(parts) < 3:
                if not self.can_start_expr(self.tok):
                    parts.append(None)
                else:
                    parts.append(self.expr())
                if self.at("::") and len(parts) == 1:
                    self.advance()
                    parts.append(None)
                elif self.at(":") and len(parts) < 3:
                    self.advance()
                else:
                    break
            if len(parts) == 1:
                if parts[0] is None:
                    self.fail(f"an index after {self.prev_text()}")
                items.append(parts[0])
            else:
                parts += [None] * (3 - len(parts))
                items.append(ast.Slice(*parts, line=start.line, col=start.col))
            if self.at(","):
                self.advance()
            elif not self.at("]"):
                self.close_error(opener, "]")
        self.advance()
        self.depth -= 1
        self.no_struct = saved
        return tuple(items)

    def atom(self) -> ast.Node:
        tok = self.tok
        kind = tok.kind
        if kind in ("INT", "FLOAT"):
            nxt = self.peek()
            if (self.at("+", nxt) or self.at("-", nxt)) and self.peek(2).kind == "IMAG":
                raise self.error("complex number literals are not supported", tok)
            self.advance()
            return ast.Num(tok.value, line=tok.line, col=tok.col)
        if kind == "IMAG":
            raise self.error("complex number literals are not supported", tok)
        if kind == "STR":
            self.advance()
            return ast.Str(tok.value, line=tok.line, col=tok.col)
        if kind == "NAME":
            return self.name_atom()
        if kind == "KW":
            if tok.text in ("true", "false"):
                self.advance()
                return ast.Bool(tok.text == "true", line=tok.line, col=tok.col)
            if tok.text == "tensor":
                return self.tensor_ctor()
            if tok.text == "match":
                return self.match_expr()
            if tok.text == "if":
                return ast.IfExpr(self.if_stmt(), line=tok.line, col=tok.col)
        elif kind == "OP":
            if tok.text == "(":
                return self.paren()
            if tok.text == "[":
                self.advance()
                items = self.comma_list(tok, "]", self.expr, structs=True)
                return ast.ListLit(tuple(items), line=tok.line, col=tok.col)
            if tok.text == "{":
                return self.dict_lit()
        self.fail(f"an expression after {self.prev_text()}")

    def paren(self) -> ast.Node:
        """``(e)``, or a tuple: ``(a, b)``, ``(a,)``."""
        opener = self.advance()
        if self.at(")"):
            self.fail("an expression after '('")
        self.open(opener)
        saved = self.no_struct
        self.no_struct = False
        items = [self.expr()]
        is_tuple = False
        while self.at(","):
            self.advance()
            is_tuple = True
            if self.at(")"):
                break
            items.append(self.expr())
        if not self.at(")"):
            self.close_error(opener, ")")
        self.advance()
        self.depth -= 1
        self.no_struct = saved
        if not is_tuple:
            return items[0]
        return ast.TupleLit(tuple(items), line=opener.line, col=opener.col)

    def dict_lit(self) -> ast.DictLit:
        opener = self.advance()
        self.open(opener)
        items: list[tuple[ast.Node, ast.Node]] = []
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}")
            key = self.expr()
            self.expect(":", "after the dict key")
            items.append((key, self.expr()))
            if self.at(","):
                self.advance()
            elif not self.at("}"):
                self.close_error(opener, "}")
        self.advance()
        self.depth -= 1
        return ast.DictLit(tuple(items), line=opener.line, col=opener.col)

    def name_atom(self) -> ast.Node:
        """A name, or what starts with one: ``Type::name``, ``Box<int>::new``, ``Point { x: 1 }``."""
        tok = self.advance()
        if self.at("::") and self.peek().kind == "NAME":
            self.advance()
            name = self.advance()
            return ast.Path(ast.TypeSpec(tok.text, line=tok.line, col=tok.col), name.text, line=tok.line, col=tok.col)
        if self.at("<") and self.peek().kind == "NAME":
            generic = self.speculate(lambda: self.generic_after(tok))
            if generic is not None:
                return generic
        if self.struct_literal_follows():
            return self.struct_lit(ast.TypeSpec(tok.text, line=tok.line, col=tok.col))
        return ast.Name(tok.text, line=tok.line, col=tok.col)

    def generic_after(self, tok: Token) -> ast.Node:
        """``<args>`` after the name ``tok``, then ``::name`` or a struct literal; else backtracks."""
        opener = self.advance()
        args = tuple(self.comma_list(opener, ">", lambda: self.type_spec("in '<...>'")))
        typ = ast.TypeSpec(tok.text, None, args, line=tok.line, col=tok.col)
        if self.at("::") and self.peek().kind == "NAME":
            self.advance()
            name = self.advance()
            return ast.Path(typ, name.text, line=tok.line, col=tok.col)
        if self.struct_literal_follows():
            self.speculating -= 1  # committed: errors inside the literal are real errors
            try:
                return self.struct_lit(typ)
            finally:
                self.speculating += 1
        raise _Backtrack

    def struct_literal_follows(self) -> bool:
        """At '{' after a type name: '}' or 'NAME :' follows (and no condition forbids a struct literal)."""
        if self.no_struct or not self.at("{"):
            return False
        a, b = self.peek(), self.peek(2)
        return self.at("}", a) or (a.kind == "NAME" and self.at(":", b))

    def struct_lit(self, typ: ast.TypeSpec) -> ast.StructLit:
        opener = self.advance()
        fields: list[tuple[str, ast.Node]] = []

        def field() -> None:
            name = self.expect_name(f"a field name in the {typ.base} literal")
            if any(f == name.text for f, _ in fields):
                raise self.error(f"field '{name.text}' is given twice in the {typ.base} literal", name)
            self.expect(":", f"after field '{name.text}'")
            fields.append((name.text, self.expr()))

        self.comma_list(opener, "}", field, structs=True)
        return ast.StructLit(typ, tuple(fields), line=typ.line, col=typ.col)

    def tensor_ctor(self) -> ast.TensorCtor:
        kw = self.advance()
        dtype = None
        if self.at("<"):
            self.advance()
            dtype = self.expect_name("a dtype name after 'tensor<'").text
            self.expect(">", f"after 'tensor<{dtype}'")
        if not self.at("("):
            self.fail(f"'(' after 'tensor<{dtype}>'" if dtype else "'<' or '(' after 'tensor'")
        args, kwargs = self.arguments(self.advance())
        return ast.TensorCtor(dtype, args, kwargs, line=kw.line, col=kw.col)

    def match_expr(self) -> ast.Match:
        kw = self.advance()
        subject = self.condition("match", "a value to match")
        opener = self.expect("{", "after the match subject")
        self.open(opener)
        saved = self.no_struct
        self.no_struct = False
        arms = []
        while not self.at("}"):
            if self.tok.kind == "EOF":
                self.close_error(opener, "}", comma=False)
            start = self.tok
            pattern = self.pattern()
            guard = None
            if self.at_kw("if"):
                self.advance()
                guard = self.expr()
            self.expect("=>", "after the match pattern")
            block_arm = self.at("{")
            if block_arm:
                body: ast.Node | tuple = self.block("")
            else:
                if not self.can_start_expr(self.tok):
                    self.fail("an expression or a block after '=>'")
                body = self.expr()
            arms.append(ast.MatchArm(pattern, guard, body, line=start.line, col=start.col))
            if self.at(","):
                self.advance()
            elif not (self.at("}") or block_arm):
                if self.tok.kind == "EOF":
                    self.close_error(opener, "}", comma=False)
                self.fail("',' or '}' after the match arm")
        self.advance()
        self.depth -= 1
        self.no_struct = saved
        return ast.Match(subject, tuple(arms), line=kw.line, col=kw.col)

    def pattern(self) -> ast.Node:
        first = self.pattern_term()
        alts = [first]
        while self.at("|"):
            self.advance()
            alts.append(self.pattern_term())
        if len(alts) == 1:
            return first
        return ast.POr(tuple(alts), line=first.line, col=first.col)

    def pattern_term(self) -> ast.Node:
        tok = self.tok
        pos = {"line": tok.line, "col": tok.col}
        if tok.kind in ("INT", "FLOAT", "STR"):
            self.advance()
            return ast.PLit(tok.value, **pos)
        if self.at("-") and self.peek().kind in ("INT", "FLOAT"):
            self.advance()
            return ast.PLit(-self.advance().value, **pos)
        if self.at_kw("true") or self.at_kw("false"):
            self.advance()
            return ast.PLit(tok.text == "true", **pos)
        if self.at("("):
            opener = self.advance()
            if self.at(")"):
                self.fail("a pattern after '('")
            items = self.comma_list(opener, ")", self.pattern)
            # '(p)' groups; a comma makes a tuple: '(p, q)', '(p,)'.
            is_tuple = len(items) > 1 or self.at(",", self.toks[self.i - 2])
            return ast.PTuple(tuple(items), **pos) if is_tuple else items[0]
        if tok.kind == "NAME":
            self.advance()
            if tok.text == "_":
                return ast.PWild(**pos)
            if self.at("{"):
                return self.struct_pattern(tok)
            return ast.PVar(tok.text, **pos)
        self.fail("a pattern")

    def struct_pattern(self, type_tok: Token) -> ast.PStruct:
        opener = self.advance()

        def field() -> tuple[str, ast.Node]:
            name = self.expect_name(f"a field name in the {type_tok.text} pattern")
            if self.at(":"):
                self.advance()
                return name.text, self.pattern()
            # A field without a pattern binds the field's value to its own name.
            return name.text, ast.PVar(name.text, line=name.line, col=name.col)

        fields = self.comma_list(opener, "}", field)
        return ast.PStruct(type_tok.text, tuple(fields), line=type_tok.line, col=type_tok.col)
