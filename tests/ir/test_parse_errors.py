"""Malformed text gives a ParseError with line, column, what was expected, and a caret."""
from __future__ import annotations

import re

import pytest

import tapeir as tp

GOOD = """graph f(x: f32[B,3], p: {w: f32[3,2]}) {
  %c0: f32[2] = const [1.0, 2.0]
  %0: f32[B,2] = matmul(x, p.w)  # m.py:1
  %1: f32[B,2] = add(%0, %c0)    # m.py:2
  return (%1,)
}
"""


def test_the_base_text_parses():
    g = tp.parse(GOOD)
    tp.verify(g)
    assert str(g) == GOOD


def _error(text: str) -> tp.ParseError:
    with pytest.raises(tp.ParseError) as info:
        tp.parse(text)
    return info.value


def _position(e: tp.ParseError) -> tuple[int, int]:
    m = re.match(r"line (\d+), col (\d+): ", str(e))
    assert m, str(e)
    return int(m.group(1)), int(m.group(2))


def _check(text, line, anchor, *needles):
    """The error is on `line`, at the first occurrence of `anchor` in it."""
    e = _error(text)
    src = text.splitlines()[line - 1]
    col = src.index(anchor) + 1
    assert _position(e) == (line, col), str(e)
    first = str(e).splitlines()[0]
    for n in needles:
        assert n in first, (n, str(e))
    # the offending line is quoted, with a caret under the column
    quoted, caret = str(e).splitlines()[1:3]
    indent = quoted.index(src) if src else len(quoted)
    assert quoted[indent:] == src and caret.index("^") == indent + col - 1
    return e


def test_missing_close_paren():
    text = GOOD.replace("matmul(x, p.w)", "matmul(x, p.w")
    _check(text, 3, "# m.py", "expected ')'", "found '# m.py:1'")


def test_missing_close_paren_at_end_of_input():
    e = _error("graph f(x: f32[3]")
    assert _position(e) == (1, 18) and "expected ')', found end of input" in str(e)


def test_unknown_op():
    text = GOOD.replace("add(%0", "addd(%0")
    _check(text, 4, "addd", "unknown op 'addd'")


def test_bad_dtype():
    text = GOOD.replace("x: f32[B,3]", "x: f8[B,3]")
    _check(text, 1, "f8", "expected a dtype", "f16, f32, f64, i32, i64, bool", "'f8'")


def test_undefined_value():
    text = GOOD.replace("add(%0, %c0)", "add(%7, %c0)")
    _check(text, 4, "%7", "%7 is not defined")


def test_undefined_input_name():
    text = GOOD.replace("matmul(x, p.w)", "matmul(x, p.v)")
    _check(text, 3, "p.v", "p.v is not defined")


def test_use_before_definition():
    text = GOOD.replace("add(%0, %c0)", "add(%1, %c0)")
    _check(text, 4, "%1,", "%1 is not defined", "before its definition")


def test_duplicate_definition():
    text = GOOD.replace("%1: f32[B,2] = add", "%0: f32[B,2] = add")
    _check(text, 4, "%0", "%0 is defined twice")


def test_duplicate_input_name():
    _check('graph f(x: f32[3], "x": f32[3]) {\n  return x\n}\n', 1, '"x"', "duplicate input name 'x'")
    # a dotted dict key can collide with a nested path
    text = 'graph f(p: {a: {b: f32[3]}, a.b: f32[3]}) {\n  return p.a.b\n}\n'
    e = _check(text, 1, "p:", "duplicate input name 'p.a.b'")
    assert "hint: input names are the argument name plus" in str(e)


def test_const_with_too_few_and_too_many_values():
    _check(GOOD.replace("[1.0, 2.0]", "[1.0]"), 2, "[1.0]", "constant has 1 values", "f32[2] needs 2")
    _check(GOOD.replace("[1.0, 2.0]", "[1.0, 2.0, 3.0]"), 2, "[1.0, 2.0, 3.0]", "constant has 3 values", "needs 2")
    _check(GOOD.replace("[1.0, 2.0]", "1.0"), 2, "1.0", "constant has 1 values")


@pytest.mark.parametrize("const, needle", [
    ('base64 "AAA="', "2 bytes, not a multiple of 4"),
    ('base64 "!!!!"', "invalid base64"),
    ("[1.0, true]", "expected a number"),
    ("[1.0, 1e39]", "out of range for f32"),
])
def test_bad_float_const_payloads(const, needle):
    e = _error(GOOD.replace("[1.0, 2.0]", const))
    assert _position(e)[0] == 2 and needle in str(e), str(e)


@pytest.mark.parametrize("decl, needle", [
    ("%c0: i32[2] = const [1, 2147483648]", "out of range for i32"),
    ("%c0: i64[2] = const [1, 1.5]", "expected an integer"),
    ("%c0: i32[2] = const [1, nan]", "expected an integer"),
    ("%c0: bool[2] = const [true, 1]", "expected true or false"),
    ("%c0: f32[B] = const [1.0]", "must have a static shape"),
    ("%c0: f32[2], %c1: f32[2] = const [1.0, 2.0]", "exactly one value"),
])
def test_bad_const_declarations(decl, needle):
    text = f"graph f() {{\n  {decl}\n  return %c0\n}}\n"
    e = _error(text)
    assert _position(e)[0] == 2 and needle in str(e), str(e)


@pytest.mark.parametrize("old, new, needle", [
    ("p: {w: f32[3,2]}", "p: {w: f32[3,2], a: f32[1]}", "must be sorted and unique"),
    ("f32[B,3]", "f32[B.x,3]", "bad symbolic dim"),
    ("f32[B,3]", "f32[-3]", "negative size -3"),
    ("add(%0, %c0)", "add(%0, %c0) {alpha=1.0}", "unknown attribute(s) ['alpha']"),
    ("return (%1,)", "return (%1,) trailing", "expected '}', found 'trailing'"),
    ("  return (%1,)\n", "", "expected a statement (%N: type = ...) or 'return', found '}'"),
    ("%1: f32", "%1 f32", "expected ':'"),
    ("%0: f32[B,2] = matmul", "x: f32[B,2] = matmul", "expected a statement (%N: type = ...) or 'return', found 'x'"),
])
def test_other_malformed_inputs(old, new, needle):
    assert old in GOOD
    e = _error(GOOD.replace(old, new))
    _position(e)
    assert needle in str(e), str(e)


def test_attribute_errors():
    base = "graph f(x: f32[3]) {\n  %0: f32[3] = leaky_relu(x) ATTRS\n  return %0\n}\n"
    tp.parse(base.replace("ATTRS", "{alpha=0.5}"))
    text = base.replace("ATTRS", "{alpha=0.5, alpha=0.25}")
    e = _error(text)
    assert _position(e) == (2, text.splitlines()[1].rindex("alpha") + 1) and "attribute 'alpha' is given twice" in str(e)
    e = _error(base.replace("ATTRS", '{alpha="big"}'))
    assert _position(e)[0] == 2 and "alpha='big' is not a float" in str(e)


def test_python_code_is_a_parse_error():
    e = _error("import os\nos.system(x)\n")
    assert _position(e) == (1, 1) and "expected 'graph', found 'import'" in str(e)
    # tokens are read on demand, so the first one already fails
    e = _error("__import__('os').system('true')")
    assert _position(e) == (1, 1) and "expected 'graph', found '__import__'" in str(e)
    # a character no token starts with is reported where the parser reaches it
    e = _error("graph f(x: f32[3]) {\n  return x'os'\n}\n")
    assert _position(e) == (2, 11) and "unexpected character \"'\"" in str(e)


def test_empty_input_and_stray_characters():
    assert "expected 'graph', found end of input" in str(_error(""))
    e = _error("graph f(x: f32[3]) {\n  return x;\n}\n")
    assert _position(e) == (2, 11) and "unexpected character ';'" in str(e)


def test_parse_errors_are_tapeir_errors():
    assert issubclass(tp.ParseError, tp.TapeirError)


def test_deep_nesting_is_a_parse_error_not_a_crash():
    n = 5000
    text = "graph f(x: " + "[" * n + "f32[]" + "]" * n + ") {\n  return x\n}\n"
    e = _error(text)
    assert "nested too deeply" in str(e) and _position(e)[0] == 1


def test_parse_verifies_what_it_reads():
    """Well-formed text with wrong types is rejected, not run with silently wrong shapes."""
    text = """graph f(x: f32[3]) {
  %0: f32[7] = exp(x)
  return %0
}"""
    with pytest.raises(tp.VerifyError, match=r"node 0.*f32\[7\].*f32\[3\]"):
        tp.parse(text)
