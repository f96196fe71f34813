"""Parser for the text form printed by ir/printer.py. `parse(str(g)) == g`.

Grammar (tokens: NAME = [A-Za-z_][A-Za-z0-9_.]* or a JSON string, REF = %N or %cN,
NUMBER, STRING, and `# ...` to end of line, which is a node's source):

    graph    := "graph" NAME "(" [param ("," param)*] ")" "{" stmt* "return" tree "}"
    param    := NAME ":" typetree
    typetree := type | "{" [NAME ":" typetree ("," ...)*] "}" | "[" [typetree ("," ...)*] "]"
              | "(" [typetree ("," typetree)* [","]] ")"
    type     := DTYPE "[" [dim ("," dim)*] "]"          DTYPE: f16 f32 f64 i32 i64 bool
    dim      := ["-"] term (("+" | "-") term)*     term := (INT | NAME) ("*" (INT | NAME))*
    stmt     := binder ("," binder)* "=" (const | call [SOURCE] graph*) [SOURCE]
                (a call's graph-valued attributes, such as a fused node's body, follow
                 its line as nested graphs, in attribute-name order; a body sees only
                 its own inputs and values)
    binder   := REF ":" type
    const    := "const" (scalar | "[" [scalar ("," scalar)*] "]" | "base64" STRING)
    call     := NAME "(" [operand ("," operand)*] ")" ["{" [attr ("," attr)*] "}"]
    attr     := NAME "=" value        value := scalar | STRING | "none" | "[" [value,...] "]"
    operand  := REF | NAME
    tree     := result | "{" [NAME ":" tree, ...] "}" | "[" [tree, ...] "]" | "(" [tree, ...] ")"
    result   := operand ["as" NAME]      (an output name, printed when it is not the default)

A SOURCE that starts and ends with '"' is a JSON string (the printer quotes a source holding
a newline or another unprintable character); any other comment is the source as written.

Speed and memory (bench/bench_load.py): a statement line in the printer's own form is read
by one regex match (`fast_stmts`); any other line, and every line that is wrong, goes to the
token parser, which reads tokens on demand and gives the errors, so both read one language
(tests/ir/test_parse_fuzz.py checks they agree). Base64 is decoded from the text itself a
chunk at a time into the constant's buffer: loading peaks at about twice the file's size.
Limits: integers of at most 4300 digits; errors quote at most a window of a long line.
"""
from __future__ import annotations

import binascii
import json
import math
import re
import sys

import numpy as np

from .builder import paused_gc
from .dtypes import DTYPES, to_numpy
from .errors import ParseError, TapeirError
from .graph import Graph, Node, Value
from .pytree import LEAF, TreeDef, default_output_names, leaf_names
from .registry import OPS, get_op
from .verifier import verify
from .types import TensorType

# Strings are lexed by `_string_end` (str.find, GB/s), not by a regex: the old pattern
# `"(?:[^"\\]|\\.)*"` read a 22 MB base64 constant at 3 MB/s.
_TOKEN = re.compile(r"""
    (?P<source>\#[^\n]*)
  | (?P<ref>%c?[0-9]+)
  | (?P<number>-?(?:[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?|inf(?![A-Za-z0-9_.])))
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[(){}\[\],:=*+-])
""", re.X)
_WS = re.compile(r"[ \t\r\n]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_REF = re.compile(r"%c?[0-9]+\Z")
MAX_INT_DIGITS = 4300   # Python's own default limit, whatever sys.set_int_max_str_digits says
WINDOW = 100            # an error on a longer line quotes this many characters each side of the column

# ---- the fast path: one regex per statement line, in the exact form the printer writes ----
# A line it does not match (or matches but cannot settle: an unknown op, an undefined
# operand, a bad type) is parsed again by the token parser below, which gives the errors.
_TYPE = r"[a-z0-9]+\[[A-Za-z0-9_.,*+-]*\]"
_SCAL = r'-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|-?inf|nan|true|false|none|"[^"\\\x00-\x1f]*"'
_FAST = re.compile(
    rf"(%[0-9]+): ({_TYPE})((?:, %[0-9]+: {_TYPE})*)"  # the first binder, then any more
    r" = ([a-z_][a-z0-9_]*)\(([^()\"\n#]*)\)"          # op(operands)
    r"(?: \{([^{}\n#\\]*)\})?"                         # {attrs}
    r"(?: +#([^\n]*))?"                                # source
    r"[ \t\r]*(?=\n|\Z)[ \t\r\n]*")                   # the line's end, and blanks up to the next token
_TYPE_PARTS = re.compile(r"([a-z0-9]+)\[(.*)\]\Z")
_TERM = r"(?:[0-9]{1,18}|[A-Za-z_][A-Za-z0-9_.]*)(?:\*(?:[0-9]{1,18}|[A-Za-z_][A-Za-z0-9_.]*))*"
_DIM = re.compile(rf"-?{_TERM}(?:[+-]{_TERM})*\Z")
_ATTR = re.compile(rf'([A-Za-z_][A-Za-z0-9_.]*)=((?:{_SCAL})|\[(?:(?:{_SCAL})(?:, (?:{_SCAL}))*)?\])(?:, |\Z)')
_SCAL_RE = re.compile(_SCAL)
_WORDS = {"true": True, "false": False, "none": None}

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64_CHUNK = 1 << 18    # characters decoded at a time (a multiple of 4): memory stays flat
_STRICT_B64 = {"strict_mode": True} if sys.version_info >= (3, 11) else {}


def _fast_scalar(s: str):
    if s[0] == '"':
        return s[1:-1]  # no escapes or control characters (the pattern says so): JSON is the text itself
    if s in _WORDS:
        return _WORDS[s]
    if s == "nan" or "." in s or "e" in s or "E" in s or "inf" in s:
        return float(s)
    if len(s) > MAX_INT_DIGITS:
        raise ValueError(s)
    return int(s)


def _fast_value(s: str):
    if s[0] == "[":
        return tuple(_fast_scalar(m.group()) for m in _SCAL_RE.finditer(s, 1, len(s) - 1))
    return _fast_scalar(s)


def unquote_source(text: str) -> str | None:
    """A node's source from its comment (without the '#'): the printer JSON-quotes a source that
    holds a newline or another unprintable character, or starts with a quote (see fmt_source)."""
    s = text.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        try:
            return json.loads(s)
        except ValueError:  # a hand-written comment that only looks quoted: keep it as written
            return s
    return s or None


def _printable(s: str) -> str:
    """A quoted source line as a terminal shows it, one column per character."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else " " if c == "\t" else "?" for c in s)


def _cut(s: str, total: int | None = None, limit: int = 60) -> str:
    """User text in a message, cut short: a token can be megabytes long."""
    total = len(s) if total is None else total
    return s if total <= limit else f"{s[:limit]}... ({total} characters)"


def _shown(s: str, total: int | None = None, limit: int = 60) -> str:
    """repr of user text in a message, cut short like _cut."""
    total = len(s) if total is None else total
    return repr(s) if total <= limit else f"{s[:limit]!r}... ({total} characters)"


class _Tok:
    __slots__ = ("kind", "pos", "end", "src")

    def __init__(self, kind, pos, end, src):
        self.kind, self.pos, self.end, self.src = kind, pos, end, src

    @property
    def text(self) -> str:
        return self.src[self.pos:self.end]

    @property
    def shown(self) -> str:
        return _shown(self.src[self.pos:min(self.end, self.pos + 61)], self.end - self.pos)


class _Parser:
    """Tokens are lexed one at a time, on demand (`self.tok` is the current one): the fast path
    skips whole statement lines without making tokens for them."""

    FAST = True  # tests switch the fast path off to check that both paths read the same graphs

    def __init__(self, text: str, start: int = 0):
        self.text = text
        self.env: dict[str, Value] = {}   # graph inputs, by name
        self.refs: dict[str, Value] = {}  # %N and %cN; a separate namespace, so an input may be named "%0"
        self.types: dict[str, TensorType] = {}  # type text -> TensorType, for the fast path
        self.attr_cache: dict[tuple, dict] = {}  # (op, attribute text) -> normalized attributes
        self.tok = self.lex(start)

    # ---- errors ----
    def error(self, pos: int, message: str, hint: str | None = None) -> ParseError:
        """A ParseError at `pos`: line and column, the line quoted (a window of it when it is
        long: a base64 line can be megabytes) and a caret under the column."""
        text = self.text
        pos = min(pos, len(text))
        line = text.count("\n", 0, pos) + 1
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        if end > start and text[end - 1] == "\r":
            end -= 1
        col = pos - start + 1
        lo, hi = start, end
        if end - start > 2 * WINDOW + 40:
            lo, hi = max(start, pos - WINDOW), min(end, pos + WINDOW)
        pre, post = ("..." if lo > start else ""), ("..." if hi < end else "")
        src = pre + _printable(text[lo:hi]) + post
        caret = " " * (len(pre) + pos - lo)
        return ParseError(f"line {line}, col {col}: {message}\n    {src}\n    {caret}^", hint=hint)

    # ---- tokens ----
    def lex(self, pos: int) -> _Tok:
        text = self.text
        pos = _WS.match(text, pos).end()
        if pos >= len(text):
            return _Tok("eof", len(text), len(text), text)
        if text[pos] == '"':
            return _Tok("string", pos, self._string_end(pos), text)
        m = _TOKEN.match(text, pos)
        if not m:
            raise self.error(pos, f"unexpected character {text[pos]!r}")
        return _Tok(m.lastgroup, pos, m.end(), text)

    def _string_end(self, pos: int) -> int:
        """The end of the quoted string opening at `pos`: after the first '"' not escaped by
        an odd run of backslashes. What is inside is checked when it is read (unquote)."""
        text, i = self.text, pos + 1
        while True:
            j = text.find('"', i)
            if j < 0:
                raise self.error(pos, "a quoted string that is never closed",
                                 hint='quoted names and strings end with an unescaped "')
            k = j
            while text[k - 1] == "\\":
                k -= 1
            if (j - k) % 2 == 0:
                return j + 1
            i = j + 1

    def found(self) -> str:
        return "end of input" if self.tok.kind == "eof" else self.tok.shown

    def next(self) -> _Tok:
        t = self.tok
        self.tok = self.lex(t.end)
        return t

    def at(self, text: str) -> bool:
        t = self.tok
        return t.kind in ("punct", "name") and t.end - t.pos == len(text) and t.text == text

    def expect(self, text: str, what: str | None = None) -> _Tok:
        if not self.at(text):
            raise self.error(self.tok.pos, f"expected {what or repr(text)}, found {self.found()}")
        return self.next()

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.next()
            return True
        return False

    def expect_kind(self, kind: str, what: str) -> _Tok:
        if self.tok.kind != kind:
            raise self.error(self.tok.pos, f"expected {what}, found {self.found()}")
        return self.next()

    def unquote(self, tok: _Tok) -> str:
        """A quoted name or string attribute: a JSON string; a bad one is a ParseError at the
        offending character."""
        try:
            return json.loads(tok.text)
        except ValueError as e:  # json.JSONDecodeError; e.pos indexes the token's text
            at = tok.pos + e.pos
            c = self.text[at] if at < len(self.text) else ""
            if c == "\\":
                raise self.error(at, f"invalid escape {self.text[at:at + 2]!r} in a quoted string",
                                 hint='quoted strings are JSON strings: the escapes are \\" \\\\ \\/ \\b '
                                      '\\f \\n \\r \\t and \\uXXXX') from None
            if c and c < " ":
                raise self.error(at, f"a raw control character {c!r} in a quoted string",
                                 hint="write it escaped (\\n, \\t, \\u0000): a quoted string is one line") from None
            raise self.error(at, f"invalid quoted string: {e.msg}") from None

    def integer(self, tok: _Tok) -> int:
        digits = tok.end - tok.pos - (self.text[tok.pos] == "-")
        if digits > MAX_INT_DIGITS:
            raise self.error(tok.pos, f"an integer with {digits} digits (at most {MAX_INT_DIGITS})")
        return int(tok.text)

    def name(self, what="a name") -> str:
        if self.tok.kind == "string":
            return self.unquote(self.next())
        return self.expect_kind("name", what).text

    def seq(self, close: str, item):
        out, trailing = [], False
        while not self.at(close):
            out.append(item())
            trailing = self.accept(",")
            if not trailing:
                break
        self.expect(close)
        return out, trailing

    # ---- the fast path ----
    def fast_type(self, text: str) -> TensorType | None:
        t = self.types.get(text)
        if t is None:
            m = _TYPE_PARTS.match(text)
            if not m or m.group(1) not in DTYPES:
                return None
            dims = m.group(2).split(",") if m.group(2) else []
            if not all(_DIM.match(d) for d in dims):
                return None
            try:
                t = TensorType(m.group(1), tuple(int(d) if d.isdigit() else d for d in dims))
            except TapeirError:
                return None
            self.types[text] = t
        return t

    def fast_attrs(self, opdef, attrs_text: str | None) -> dict | None:
        """The normalized attributes of `{attrs_text}`, or None: leave the line to stmt()."""
        key = (opdef.name, attrs_text)
        attrs = {}
        if attrs_text:
            pos, n = 0, len(attrs_text)
            while pos < n:
                am = _ATTR.match(attrs_text, pos)
                if not am or am.group(1) in attrs:
                    return None
                try:
                    attrs[am.group(1)] = _fast_value(am.group(2))
                except ValueError:
                    return None
                pos = am.end()
        elif attrs_text is not None:
            return None  # "{}": the token parser takes it
        try:
            attrs = opdef.normalize_attrs(attrs)
        except TapeirError:
            return None
        self.attr_cache[key] = attrs  # shared read-only: Node copies its attrs
        return attrs

    def fast_stmts(self, nodes) -> None:
        """Parse statements from the current token on, one regex match a line, while they are
        in the printer's own form; leaves self.tok at the first one it cannot settle (an odd
        spelling, an unknown op, an undefined operand, a bad type) for stmt(), which parses it
        token by token and gives the errors."""
        text, refs, env, types, attr_cache = self.text, self.refs, self.env, self.types, self.attr_cache
        sources: dict[str, str | None] = {}  # comment text -> source (a few lines repeat)
        pos, n = self.tok.pos, len(text)
        while True:
            m = _FAST.match(text, pos)
            if not m:
                break
            ref, ttext, more, op, args_text, attrs_text, source = m.groups()
            t = types.get(ttext) or self.fast_type(ttext)
            if t is None or ref in refs:
                break
            outs, names = [Value(t)], [ref]
            if more:
                for b in more[2:].split(", "):
                    ref, _, ttext = b.partition(": ")
                    t = types.get(ttext) or self.fast_type(ttext)
                    if t is None or ref in refs or ref in names:
                        break
                    names.append(ref)
                    outs.append(Value(t))
                else:
                    ref = None
                if ref is not None:
                    break
            opdef = OPS.get(op)
            if opdef is None:
                break
            args = [refs.get(a) if a[0] == "%" else env.get(a) if a != "inf" and _NAME.match(a) else None
                    for a in args_text.split(", ")] if args_text else []  # ("inf" lexes as a number)
            attrs = attr_cache.get((op, attrs_text))
            if attrs is None:
                attrs = self.fast_attrs(opdef, attrs_text)
            if attrs is None or None in args:
                break
            after = m.end()
            if after < n and text[after] in "{#":
                break  # the token parser takes attributes or a comment on a later line: so do we
            if source is not None:
                raw = source
                source = sources.get(raw, raw)
                if source is raw:
                    source = sources[raw] = unquote_source(raw)
            nodes.append(Node(op, args, attrs, outs, source))
            if more:
                for r, v in zip(names, outs):
                    refs[r] = v
            else:
                refs[ref] = outs[0]
            pos = after
            if after >= n or text[after] != "%":
                break
        if pos != self.tok.pos:
            self.tok = self.lex(pos)

    # ---- grammar ----
    def graph(self) -> Graph:
        g = self.nested_graph()
        if self.tok.kind != "eof":
            raise self.error(self.tok.pos, f"expected end of input after '}}', found {self.tok.shown}")
        return g

    def nested_graph(self) -> Graph:
        """A graph in its own scope: a fused node's body sees its inputs and values only."""
        outer = self.env, self.refs
        self.env, self.refs = {}, {}
        try:
            return self._graph()
        finally:
            self.env, self.refs = outer

    def _graph(self) -> Graph:
        self.expect("graph")
        gname = self.name("a graph name")
        self.expect("(")
        params, _ = self.seq(")", self.param)
        arg_names = [p[0] for p in params]
        in_tree = TreeDef("tuple", tuple(p[1] for p in params))
        inputs = [v for p in params for v in p[2]]
        for (arg, td, values, _), names in ((p, leaf_names(p[0], p[1])) for p in params):
            for v, name in zip(values, names):  # the parser's own fresh Values: named here, once
                v.name = name
        for v, pos in ((v, p[3]) for p in params for v in p[2]):
            if v.name in self.env:
                raise self.error(pos, f"duplicate input name {v.name!r}",
                                 hint="input names are the argument name plus the dict keys and list "
                                      "indices on the path, joined by dots")
            self.env[v.name] = v
        self.expect("{")
        constants, nodes = [], []
        while not self.at("return"):
            if self.tok.kind != "ref":
                raise self.error(self.tok.pos, f"expected a statement (%N: type = ...) or 'return', found {self.found()}")
            pos = self.tok.pos
            if self.FAST:
                self.fast_stmts(nodes)
            if self.tok.pos == pos:
                self.stmt(constants, nodes)
        self.expect("return")
        leaves: list[Value] = []
        named: list[str | None] = []

        def result():
            leaves.append(self.operand())
            named.append(self.name("an output name") if self.accept("as") else None)
        out_tree = self.tree(result)
        self.expect("}")
        names = [n if n is not None else d for n, d in zip(named, default_output_names(out_tree))]
        return Graph(gname, arg_names, in_tree, inputs, nodes, out_tree, leaves, constants, names)

    def param(self):
        pos = self.tok.pos
        arg = self.name("an argument name")
        self.expect(":")
        values: list[Value] = []
        td = self.tree(lambda: values.append(Value(self.type())), keyed=True, typed=True)
        return arg, td, values, pos

    def tree(self, leaf, keyed=True, typed=False) -> TreeDef:
        if self.accept("{"):
            def entry():
                k = self.name("a dict key")
                self.expect(":")
                return k, self.tree(leaf, keyed, typed)
            items, _ = self.seq("}", entry)
            keys = [k for k, _ in items]
            if keys != sorted(keys) or len(set(keys)) != len(keys):
                raise self.error(self.tok.pos, f"dict keys {_cut(str(keys))} must be sorted and unique")
            return TreeDef("dict", tuple(t for _, t in items), tuple(keys))
        if self.accept("["):
            kids, _ = self.seq("]", lambda: self.tree(leaf, keyed, typed))
            return TreeDef("list", tuple(kids))
        if self.at("(") :
            self.next()
            kids, _ = self.seq(")", lambda: self.tree(leaf, keyed, typed))
            return TreeDef("tuple", tuple(kids))
        leaf()
        return LEAF

    def type(self) -> TensorType:
        t = self.tok
        if t.kind != "name" or t.text not in DTYPES:
            raise self.error(t.pos, f"expected a dtype ({', '.join(DTYPES)}), found {self.found()}")
        self.next()
        self.expect("[")
        dims, _ = self.seq("]", self.dim)
        try:
            return TensorType(t.text, tuple(dims))
        except TapeirError as e:
            raise self.error(t.pos, e.problem) from None

    def dim(self):
        # a number token may carry the term's sign ("T-1" lexes as T, -1)
        text = "-" if self.accept("-") else ""
        text += self.term()
        while True:
            t = self.tok
            if self.accept("+") or self.accept("-"):
                text += t.text + self.term()
            elif t.kind == "number" and t.text.startswith("-"):
                text += self.term()
            else:
                break
        return text  # TensorType makes it canonical (an int when it has no symbol)

    def term(self) -> str:
        t = self.tok
        if t.kind == "number" and t.text.startswith("-") and t.text[1:].isdigit():
            self.next()  # a signed constant, as in "T-1"; "T-0" keeps its sign (str(-0) is "0": "T0")
            text = f"-{-self.integer(t)}"
        elif t.kind == "number" and t.text == "-inf":  # the symbol inf, negated ("T-inf"): "-inf" lexes as one number
            self.next()
            text = "-inf"
        else:
            text = str(self.dim_part())
        while self.accept("*"):
            text += "*" + str(self.dim_part())
        return text

    def dim_part(self):
        t = self.tok
        if t.kind == "number" and t.text.isdigit():
            self.next()
            return self.integer(t)
        if t.kind == "name" or t.text == "inf":  # a symbol may be called inf, which lexes as a number
            self.next()
            return t.text
        raise self.error(t.pos, f"expected a dim (an int or a symbol), found {self.found()}")

    def stmt(self, constants, nodes):
        binders = []
        while True:
            ref = self.expect_kind("ref", "a value like %3 or %c0")
            self.expect(":")
            binders.append((ref, Value(self.type())))
            if not self.accept(","):
                break
        self.expect("=")
        seen = set()
        for ref, v in binders:
            if ref.text in self.refs or ref.text in seen:
                raise self.error(ref.pos, f"{_cut(ref.text)} is defined twice")
            seen.add(ref.text)
        if self.accept("const"):
            if len(binders) != 1:
                raise self.error(self.tok.pos, "a const defines exactly one value")
            ref, v = binders[0]
            v.data = self.const_data(v.type)
            constants.append(v)
        else:
            op_tok = self.expect_kind("name", "an op name or 'const'")
            try:
                opdef = get_op(op_tok.text)
            except TapeirError:
                raise self.error(op_tok.pos, f"unknown op {op_tok.shown}") from None
            self.expect("(")
            args, _ = self.seq(")", self.operand)
            attrs = {}
            nested = sorted(k for k, a in opdef.attrs.items() if a.kind == "graph")
            if self.accept("{"):
                for k, v, pos in self.seq("}", self.attr)[0]:
                    if k in attrs:
                        raise self.error(pos, f"attribute {_shown(k)} is given twice")
                    attrs[k] = v
            source = None
            if self.tok.kind == "source":
                source = unquote_source(self.next().text[1:])
            for k in nested:  # graph-valued attributes follow the line (attribute-name order)
                if k in attrs:
                    raise self.error(op_tok.pos, f"attribute {k!r} is a graph: it follows the line, not in {{...}}")
                if not self.at("graph"):
                    raise self.error(self.tok.pos, f"expected the {op_tok.text} node's {k} (a nested 'graph ...'), "
                                                   f"found {self.found()}")
                attrs[k] = self.nested_graph()
            try:
                attrs = opdef.normalize_attrs(attrs)
            except TapeirError as e:
                raise self.error(op_tok.pos, e.problem) from None
            nodes.append(Node(op_tok.text, args, attrs, [v for _, v in binders], source))
        for ref, v in binders:
            self.refs[ref.text] = v

    def const_data(self, t: TensorType) -> np.ndarray:
        dt = to_numpy(t.dtype)
        shape = tuple(t.shape)
        if not t.is_static:
            raise self.error(self.tok.pos, f"constant type {t} must have a static shape")
        start = self.tok.pos
        if self.accept("base64"):
            tok = self.expect_kind("string", "a base64 string")
            arr = self.base64_data(start, tok, t, dt)
        elif self.accept("["):
            vals, _ = self.seq("]", lambda: self.const_scalar(t.dtype, dt))
            arr = np.array(vals, dtype=dt) if vals else np.zeros(0, dt)
        else:
            arr = np.array(self.const_scalar(t.dtype, dt), dtype=dt)
        if arr.size != math.prod(shape):
            raise self.error(start, f"constant has {arr.size} values, its type {t} needs {math.prod(shape)}")
        arr = arr.reshape(shape)
        arr.flags.writeable = False
        return arr

    def base64_data(self, start: int, tok: _Tok, t: TensorType, dt: np.dtype) -> np.ndarray:
        """Decode a base64 string token straight from the source text into the constant's
        array, a chunk at a time into one preallocated buffer: no copy of the span, so the
        peak is the text plus the array (plus one chunk)."""
        text, lo, hi = self.text, tok.pos + 1, tok.end - 1
        # '=' only as the last one or two characters; the alphabet is checked by strict
        # decoding (Python 3.11+) or, before that, by a regex over the span (no copy either way)
        if (hi - lo) % 4 or text.find("=", lo, max(lo, hi - 2)) >= 0 or \
                (hi - lo >= 2 and text[hi - 2] == "=" and text[hi - 1] != "=") or \
                (not _STRICT_B64 and not _B64.fullmatch(text, lo, hi)):
            raise self._bad_base64(tok)
        pad = (hi > lo and text[hi - 1] == "=") + (hi - lo > 1 and text[hi - 2] == "=")
        nbytes = (hi - lo) // 4 * 3 - pad
        buf = np.empty(nbytes, np.uint8)  # no larger than the text it comes from
        o = 0
        for a in range(lo, hi, _B64_CHUNK):
            try:
                chunk = binascii.a2b_base64(text[a:min(a + _B64_CHUNK, hi)], **_STRICT_B64)
            except (binascii.Error, ValueError):  # a character outside the alphabet (a str with
                raise self._bad_base64(tok) from None  # non-ASCII is a ValueError)
            buf[o:o + len(chunk)] = np.frombuffer(chunk, np.uint8)
            o += len(chunk)
        if nbytes % dt.itemsize:
            raise self.error(tok.pos, f"base64 data has {nbytes} bytes, not a multiple of "
                                      f"{dt.itemsize} ({t.dtype})")
        if nbytes // dt.itemsize != math.prod(t.shape):
            raise self.error(start, f"constant has {nbytes // dt.itemsize} values, its type {t} needs "
                                    f"{math.prod(t.shape)}")
        if sys.byteorder == "little" or dt.itemsize == 1:
            return buf.view(dt)
        return buf.view(dt.newbyteorder("<")).astype(dt)

    def _bad_base64(self, tok: _Tok) -> ParseError:
        return self.error(tok.pos, "invalid base64 data",
                          hint="base64 of the little-endian bytes: A-Z a-z 0-9 + /, padded with = "
                               "to a multiple of 4 characters")

    def const_scalar(self, dtype: str, dt: np.dtype):
        """One element of an inline constant, checked against the constant's dtype."""
        pos = self.tok.pos
        x = self.scalar()
        if dtype == "bool":
            if not isinstance(x, bool):
                raise self.error(pos, f"expected true or false in a bool constant, found {x!r}")
            return x
        if isinstance(x, bool):
            raise self.error(pos, f"expected a number in a {dtype} constant, found {str(x).lower()}")
        if dt.kind in "iu":
            if not isinstance(x, int):
                raise self.error(pos, f"expected an integer in a {dtype} constant, found {x!r}")
            info = np.iinfo(dt)
            if not info.min <= x <= info.max:
                raise self.error(pos, f"{x} is out of range for {dtype} [{info.min}, {info.max}]")
            return x
        with np.errstate(all="ignore"):
            y = dt.type(x)
        if np.isinf(y) and math.isfinite(x):
            raise self.error(pos, f"{x!r} is out of range for {dtype}")
        return y

    def scalar(self):
        t = self.tok
        if t.kind == "number":
            self.next()
            if t.text.lstrip("-").isdigit():
                return self.integer(t)
            return float(t.text)
        if t.kind == "name" and t.text in ("true", "false"):
            self.next()
            return t.text == "true"
        if t.kind == "name" and t.text == "nan":
            self.next()
            return float("nan")
        raise self.error(t.pos, f"expected a number, found {self.found()}")

    def attr(self):
        k = self.expect_kind("name", "an attribute name")
        self.expect("=")
        return k.text, self.attr_value(), k.pos

    def attr_value(self):
        t = self.tok
        if t.kind == "string":
            return self.unquote(self.next())
        if self.accept("none"):
            return None
        if self.accept("["):
            return tuple(self.seq("]", self.attr_value)[0])
        return self.scalar()

    def operand(self) -> Value:
        t = self.tok
        if t.kind == "ref":
            key, env = self.next().text, self.refs
        else:
            key, env = self.name("a value (%N, %cN or an input name)"), self.env
        if key not in env:
            raise self.error(t.pos, f"{_cut(key)} is not defined here (used before its definition?)")
        return env[key]


def parse(text: str) -> Graph:
    """Parse the text form back into a Graph, and verify it (tp.VerifyError if ill-typed).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: tp.exp(x) * 2.0, np.ones(3, np.float32))
    >>> tp.parse(str(g)) == g
    True
    """
    if not isinstance(text, str):
        raise TapeirError(f"tp.parse expects the text form as a str, got a {type(text).__name__}",
                          hint="tp.load(path) reads a file; bytes need .decode('utf-8') first")
    return parse_at(text, 0)


def parse_at(text: str, start: int) -> Graph:
    """parse(text[start:]) without copying the text; errors give the line in all of `text`
    (tp.load passes the file after its header line, so the numbers are the file's lines)."""
    p = _Parser(text, start)
    # parsing and verifying make no reference cycles: the collector would only rescan the
    # growing graph, which made loading superlinear (23 -> 45 us/op from 1k to 100k ops)
    with paused_gc():
        try:
            g = p.graph()
        except RecursionError:  # a hostile file: "[[[[..." thousands deep
            raise p.error(p.tok.pos, "trees are nested too deeply") from None
        verify(g)  # text can be edited by hand: a well-formed but ill-typed graph is an error here
    return g
