"""Malformed programs: each syntax error is one line naming what was expected and what was found, at the
right line and column, with the source line and a caret; input that ends too early is marked incomplete."""

from __future__ import annotations

import pytest

from tensorlogic.errors import ScriptError
from tensorlogic.lang.parser import parse

EOF_IN_CALL = "expected ')' to close the '(' at line 1, column 6, found end of input"

# (source, message, line, col). Errors at the end of the input point just past the last token.
SYNTAX_ERRORS = [
    # --- the ten malformed programs of the old table, in the new wording
    ('print("a" b)', "expected ',' or ')' to close the '(' at line 1, column 6, found name 'b'", 1, 11),
    ('print("Model format:", model.metadata.format', EOF_IN_CALL, 1, 45),
    ("x = ", "expected an expression after '=', found end of input", 1, 4),
    ("x = [1, 2 3]", "expected ',' or ']' to close the '[' at line 1, column 5, found number 3", 1, 11),
    ("if x > 0 print(x)", "expected '{' after the if condition, found name 'print'", 1, 10),
    ("while x > 0 {\n  x = x - 1\n", "expected '}' to close the '{' at line 1, column 13, found end of input", 2, 12),
    ("for i range(3) { }", "expected 'in' after the loop variable, found name 'range'", 1, 7),
    ("let x 5", "expected '=' after 'let x', found number 5", 1, 7),
    ("tensor w float16[3]", "expected ':' and a type after 'tensor w' (e.g. tensor w: float16[3]), found name "
     "'float16'", 1, 10),
    ('x = "abc', 'unterminated string: no closing " on this line', 1, 5),
    # --- lexing
    ("x = 5 $ 3", "unexpected character '$'", 1, 7),
    ("x = 'ab\ncd'", "unterminated string: no closing ' on this line", 1, 5),
    ("/* never closed\nx = 1", "unterminated comment: the '/*' at line 1, column 1 is never closed", 1, 1),
    ("x = 1\n  /* open", "unterminated comment: the '/*' at line 2, column 3 is never closed", 2, 3),
    ("x = 1.0 + 2.0i", "complex number literals are not supported", 1, 5),
    ("x = 2i", "complex number literals are not supported", 1, 5),
    # --- statements
    ("x = 1\n  )", "expected a statement, found ')'", 2, 3),
    ("main { ) }", "expected a statement or '}', found ')'", 1, 8),
    ("while go { x: 1 }", "expected a statement or '}', found ':'", 1, 13),  # no struct literal in a condition
    ("else { }", "'else' without a matching 'if'", 1, 1),
    ("if x { } else print(1)", "expected '{' or 'if' after 'else', found name 'print'", 1, 15),
    ("if { }", "expected a condition after 'if', found '{'", 1, 4),
    ("while { }", "expected a condition after 'while', found '{'", 1, 7),
    ("while c x", "expected '{' after the while condition, found name 'x'", 1, 9),
    ("loop x", "expected '{' after 'loop', found name 'x'", 1, 6),
    ("for 3 in x { }", "expected a loop variable after 'for', found number 3", 1, 5),
    ("for i in { }", "expected an expression to loop over after 'in', found '{'", 1, 10),
    ("for i in r x", "expected '{' after 'for ... in ...', found name 'x'", 1, 12),
    ("let if = 3", "expected a name after 'let', found 'if'", 1, 5),
    ("let x: = 1", "expected a type after ':', found '='", 1, 8),
    ("let x: float16[3] 5", "expected '=' after the type of 'x', found number 5", 1, 19),
    ("tensor w: float16 = [1.0]", "expected dimensions after 'float16' in the declaration of 'w', "
     "e.g. float16[3, 4]", 1, 11),
    ("f(1) = 3", "cannot assign to a call; the target of '=' must be a name, an element (a[i]) or a field (s.x)",
     1, 1),
    ("1 += 2", "cannot assign to a number; the target of '+=' must be a name, an element (a[i]) or a field (s.x)",
     1, 1),
    ("a + b = c", "cannot assign to the result of '+'; the target of '=' must be a name, an element (a[i]) or a "
     "field (s.x)", 1, 1),
    ("break", "'break' outside a loop", 1, 1),
    ("main { loop { } break }", "'break' outside a loop", 1, 17),
    ("continue", "'continue' outside a loop", 1, 1),
    ("fn f() { while true { } continue }", "'continue' outside a loop", 1, 25),
    ("return 5", "'return' outside a function, main, test or bench block", 1, 1),
    ("with P { return }", "'return' outside a function, main, test or bench block", 1, 10),
    ("python numpy", "expected 'import' after 'python', found name 'numpy'", 1, 8),
    ("python import 3", "expected a module name after 'python import', found number 3", 1, 15),
    ("python import numpy.3", "expected a module name after 'numpy.', found number 3", 1, 21),
    ("python import numpy as 3", "expected a name after 'as', found number 3", 1, 24),
    # --- declarations
    ("import foo", "expected a quoted file name after 'import', found name 'foo'", 1, 8),
    ('main { import "x.tl" }', "'import' is only allowed at the top level", 1, 8),
    ("fn f() { main { } }", "'main' blocks are only allowed at the top level", 1, 10),
    ("main { test t { } }", "'test' blocks are only allowed at the top level", 1, 8),
    ("main { bench b { } }", "'bench' blocks are only allowed at the top level", 1, 8),
    ("for i in r { fn g() { } }", "functions can only be declared at the top level", 1, 14),
    ("main { struct P { } }", "structs can only be declared at the top level", 1, 8),
    ("main { impl P { } }", "impl blocks can only be declared at the top level", 1, 8),
    ("main x", "expected '{' after 'main', found name 'x'", 1, 6),
    ("test { }", "expected a test name after 'test', found '{'", 1, 6),
    ("test t x", "expected '{' after 'test t', found name 'x'", 1, 8),
    ("bench { }", "expected a benchmark name after 'bench', found '{'", 1, 7),
    ("fn (a) { }", "expected a function name after 'fn', found '('", 1, 4),
    ("function 3() { }", "expected a function name after 'function', found number 3", 1, 10),
    ("fn f { }", "expected '(' after the function name 'f', found '{'", 1, 6),
    ("fn f(a, b { return a }", "expected ',' or ')' to close the '(' at line 1, column 5, found '{'", 1, 11),
    ("fn f(a", "expected ')' to close the '(' at line 1, column 5, found end of input", 1, 7),
    ("fn f(3) { }", "expected a parameter name, found number 3", 1, 6),
    ("fn f(a: ) { }", "expected a type for parameter 'a', found ')'", 1, 9),
    ("fn f(a, a) { }", "parameter 'a' appears twice in 'f'", 1, 9),
    ("fn f() -> { }", "expected a type after '->', found '{'", 1, 11),
    ("fn f() ", "expected '{' to start the body of 'f', found end of input", 1, 7),
    ("fn f<>() { }", "expected a type parameter name after '<', found '>'", 1, 6),
    ("fn f<T, 3>() { }", "expected a type parameter name, found number 3", 1, 9),
    ("fn f<T U>() { }", "expected ',' or '>' to close the '<' at line 1, column 5, found name 'U'", 1, 8),
    ("fn f(a: Box<>) { }", "expected a type after '<', found '>'", 1, 13),
    ("fn f(a: Box<3>) { }", "expected a type in '<...>', found number 3", 1, 13),
    ("fn f(a: float16[]) { }", "expected a dimension after '[', found ']'", 1, 17),
    ("fn f(a: float16[N, +]) { }", "expected a dimension (a number, a name or '?'), found '+'", 1, 20),
    ("struct { }", "expected a struct name after 'struct', found '{'", 1, 8),
    ("struct P x", "expected '{' after 'struct P', found name 'x'", 1, 10),
    ("struct P { 3 }", "expected a field name or '}' in struct 'P', found number 3", 1, 12),
    ("struct P { x int }", "expected ':' after field 'x', found name 'int'", 1, 14),
    ("struct P { x: 3 }", "expected a type for field 'x', found number 3", 1, 15),
    ("struct P { x: int, x: float }", "field 'x' appears twice in struct 'P'", 1, 20),
    ("impl { }", "expected a type after 'impl', found '{'", 1, 6),
    ("impl P x", "expected '{' after 'impl P', found name 'x'", 1, 8),
    ("impl Drop for { }", "expected a type after 'Drop for', found '{'", 1, 15),
    ("impl P { let x = 1 }", "expected 'fn' or '}' in the impl block, found 'let'", 1, 10),
    # --- expressions
    ("x = (1 2)", "expected ',' or ')' to close the '(' at line 1, column 5, found number 2", 1, 8),
    ("x = ()", "expected an expression after '(', found ')'", 1, 6),
    ("x = (", "expected an expression after '(', found end of input", 1, 6),
    ("x = 3 +* 4", "expected an expression after '+', found '*'", 1, 8),
    ("x = a\n+ ", "expected an expression after '+', found end of input", 2, 2),
    ("x = not", "expected an expression after 'not', found end of input", 1, 8),
    ("x = -", "expected an expression after '-', found end of input", 1, 6),
    ("x = [1, , 2]", "expected an expression after ',', found ','", 1, 9),
    ("y = a < b < c", "comparisons cannot be chained; write (a < b) and (b < c)", 1, 11),
    ("y = a <= b >= c", "comparisons cannot be chained; write (a < b) and (b < c)", 1, 12),
    ("a ~ b + c", "tensor equations ('a ~ b') are not supported", 1, 1),
    ("x = f(p ~ q)", "tensor equations ('a ~ b') are not supported", 1, 7),
    ("x = a as int32", "expected a type after 'as' (int, float, bool, i32, i64, f16, f32 or f64), found name "
     "'int32'", 1, 10),
    ("x = f(a: 1, 2)", "positional argument after a keyword argument", 1, 13),
    ("x = f(a: 1, a: 2)", "keyword argument 'a' given twice", 1, 13),
    ("x = f(a: )", "expected a value for 'a', found ')'", 1, 10),
    ("x = a.3", "expected an attribute or method name after '.', found number 3", 1, 7),
    ("x = a[]", "expected an index after '[', found ']'", 1, 7),
    ("x = a[1, ,]", "expected an index after ',', found ','", 1, 10),
    ("x = a[1 2]", "expected ',' or ']' to close the '[' at line 1, column 6, found number 2", 1, 9),
    ("x = a[1:", "expected ']' to close the '[' at line 1, column 6, found end of input", 1, 9),
    ("x = {1: 2, 3}", "expected ':' after the dict key, found '}'", 1, 13),
    ("x = {1: 2 3: 4}", "expected ',' or '}' to close the '{' at line 1, column 5, found number 3", 1, 11),
    ("x = tensor [1.0]", "expected '<' or '(' after 'tensor', found '['", 1, 12),
    ("x = tensor<>(1)", "expected a dtype name after 'tensor<', found '>'", 1, 12),
    ("x = tensor<float16 ([1.0])", "expected '>' after 'tensor<float16', found '('", 1, 20),
    ("x = tensor<f32> y", "expected '(' after 'tensor<f32>', found name 'y'", 1, 17),
    ("x = Point { x: 1, 3 }", "expected a field name in the Point literal, found number 3", 1, 19),
    ("x = Point { x: 1, y 2 }", "expected ':' after field 'y', found number 2", 1, 21),
    ("x = Point { x: 1, x: 2 }", "field 'x' is given twice in the Point literal", 1, 19),
    ("x = Point { x: 1", "expected '}' to close the '{' at line 1, column 11, found end of input", 1, 17),
    ("x = match { }", "expected a value to match after 'match', found '{'", 1, 11),
    ("x = match v x", "expected '{' after the match subject, found name 'x'", 1, 13),
    ("x = match y { => 2 }", "expected a pattern, found '=>'", 1, 15),
    ("x = match y { () => 2 }", "expected a pattern after '(', found ')'", 1, 16),
    ("x = match y { 1 2 }", "expected '=>' after the match pattern, found number 2", 1, 17),
    ("x = match y { 1 => }", "expected an expression or a block after '=>', found '}'", 1, 20),
    ("x = match y { 1 => 2 3 => 4 }", "expected ',' or '}' after the match arm, found number 3", 1, 22),
    ("x = match y { Point { 3 } => 1 }", "expected a field name in the Point pattern, found number 3", 1, 23),
    ("x = match y { 1 => 2", "expected '}' to close the '{' at line 1, column 13, found end of input", 1, 21),
    # --- logic and learning
    ("entity 3", "expected an entity type name after 'entity', found number 3", 1, 8),
    ("entity Person = alice", "expected '{' after 'entity Person =', found name 'alice'", 1, 17),
    ("entity P = {a, 3}", "expected an entity name, found number 3", 1, 16),
    ('relation "R"', "expected a relation name after 'relation', found string \"R\"", 1, 10),
    ("relation R x", "expected '(' after the relation name 'R', found name 'x'", 1, 12),
    ("relation R(x: P, x: P)", "parameter 'x' appears twice in 'R'", 1, 18),
    ("embedding { }", "expected a name after 'embedding', found '{'", 1, 11),
    ("embedding E entities", "expected '{' after 'embedding E', found name 'entities'", 1, 13),
    ("embedding E { entities: {a}, size: 3 }", "expected 'entities:', 'dimension:', 'init:' or '}' in "
     "embedding 'E', found name 'size'", 1, 30),
    ("embedding E { dimension 3 }", "expected ':' after 'dimension', found number 3", 1, 25),
    ("embedding E { entities: {a}, dimension: x }", "expected an integer after 'dimension:', found name 'x'",
     1, 41),
    ("embedding E { dimension: 2, dimension: 3 }", "'dimension' is given twice in embedding 'E'", 1, 29),
    ("embedding E { entities: 3 }", "expected '{', 'auto' or an entity type after 'entities:', found number 3",
     1, 25),
    ("embedding E { entities: auto, dimension: 2, init: 3 }", "expected an initialisation method after 'init:' "
     "(e.g. xavier), found number 3", 1, 51),
    ("embedding E { entities: {a} }", "embedding 'E' lacks 'dimension: 16'", 1, 29),
    ("embedding E { dimension: 3 }", "embedding 'E' lacks 'entities: {a, b}'", 1, 28),
    ("relation_embedding R { relations: some, dimension: 3 }", "expected '{' or 'all' after 'relations:', "
     "found name 'some'", 1, 35),
    ("relation_embedding R { dimension: 3 }", "relation_embedding 'R' lacks 'relations: {a, b}'", 1, 37),
    ("P(X) <- ", "expected a relation atom or a condition in the rule body, found end of input", 1, 8),
    ("P(k: 1) <- Q(k)", "a relation atom takes no keyword arguments ('k' in a rule head)", 1, 1),
    ("P(X) <- Q(k: 1)", "a relation atom takes no keyword arguments ('k' in a rule body item)", 1, 9),
    ("x?", "a query must be a relation atom such as Parent(alice, X)", 1, 1),
    ("P(k: 1)?", "a relation atom takes no keyword arguments ('k' in a query)", 1, 1),
    ("infer sideways P(a)?", "expected an inference method (forward, backward, gradient or symbolic) or '{' after "
     "'infer', found name 'sideways'", 1, 7),
    ("infer forward", "expected a query such as Parent(alice, X)? after 'infer forward', found end of input",
     1, 14),
    ("infer forward P(a)", "expected '?' after the query, found end of input", 1, 19),
    ("infer { forward P(a)? 3 }", "expected an inference method (forward, backward, gradient or symbolic) or '}' "
     "in the infer block, found number 3", 1, 23),
    ("infer { forward }", "expected a query such as Parent(alice, X)? after 'forward', found '}'", 1, 17),
    ("with { }", "expected an entity type name after 'with', found '{'", 1, 6),
    ("with P x", "expected '{' after 'with P', found name 'x'", 1, 8),
    ("learn x", "expected '{' after 'learn', found name 'x'", 1, 7),
    ("learn { x = 1 }", "expected 'objective:' in the learn block, found '}'", 1, 15),
    ("learn { objective: }", "expected an expression after 'objective:', found '}'", 1, 20),
    ("learn { objective: l, optimizer: 3 }", "expected a name after 'optimizer:' (e.g. sgd(lr: 0.1)), found "
     "number 3", 1, 34),
    ("learn { objective: l, optimizer: sgd(3) }", "expected a setting name in sgd(...), found number 3", 1, 38),
    ("learn { objective: l, optimizer: sgd(lr 1), epochs: 1 }", "expected ':' or '=' after 'lr', found number 1",
     1, 41),
    ("learn { objective: l, optimizer: sgd(lr: x), epochs: 1 }", "expected a number for 'lr' in sgd(...), found "
     "name 'x'", 1, 42),
    ("learn { objective: l, optimizer: sgd(lr: 1, lr: 2), epochs: 1 }", "'lr' is given twice in sgd(...)", 1, 45),
    ("learn { objective: l, objective: m }", "'objective' is given twice in the learn block", 1, 23),
    ("learn { objective: l, optimizer: sgd(lr: 1), epochs: 1 foo }", "expected 'objective:', 'optimizer:', "
     "'epochs:', 'scheduler:' or '}' in the learn block, found name 'foo'", 1, 56),
    ("learn { objective: l, epochs: 1 }", "the learn block lacks 'optimizer: sgd(lr: 0.1)'", 1, 33),
    ("learn { objective: l, optimizer: sgd() }", "the learn block lacks 'epochs: 100'", 1, 40),
    ("learn { epochs: 3, optimizer: sgd }", "the learn block lacks 'objective: loss'", 1, 35),
]


@pytest.mark.parametrize("src, message, line, col", SYNTAX_ERRORS)
def test_syntax_error_messages(src, message, line, col):
    with pytest.raises(ScriptError) as info:
        parse(src, "bad.tl")
    e = info.value
    assert (e.message, e.file, e.line, e.col) == (message, "bad.tl", line, col)
    assert e.source_line == src.split("\n")[line - 1]
    assert "\n" not in e.message
    # The REPL asks for another line exactly when the input stopped inside something unfinished.
    ended_early = message.endswith("found end of input") or message.startswith("unterminated comment")
    assert getattr(e, "incomplete", False) is ended_early


def test_rendering_has_location_line_and_caret():
    with pytest.raises(ScriptError) as info:
        parse('x = 1\nprint("a" b)\n', "prog.tl")
    assert str(info.value) == (
        "prog.tl:2:11: expected ',' or ')' to close the '(' at line 2, column 6, found name 'b'\n"
        '    print("a" b)\n'
        "              ^"
    )


@pytest.mark.parametrize(
    "src", ["x = (1 +", "if x {", "fn f(a,", "/* still open", "x = [1,\n 2,", 'print("a",', "P(X) <-"]
)
def test_unfinished_input_is_incomplete(src):
    with pytest.raises(ScriptError) as info:
        parse(src, "<repl>")
    assert info.value.incomplete is True


@pytest.mark.parametrize("src", ["x = (1 2", "x = )", 'x = "open', "if x } "])
def test_wrong_input_is_not_incomplete(src):
    with pytest.raises(ScriptError) as info:
        parse(src, "<repl>")
    assert getattr(info.value, "incomplete", False) is False
