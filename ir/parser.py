"""Parser for the text form printed by ir/printer.py. `parse(str(g)) == g`.

Grammar (tokens: NAME = [A-Za-z_][A-Za-z0-9_.]* or a JSON string, REF = %N or %cN,
NUMBER, STRING, and `# ...` to end of line, which is a node's source):

    graph    := "graph" NAME "(" [param ("," param)*] ")" "{" stmt* "return" tree "}"
    param    := NAME ":" typetree
    typetree := type | "{" [NAME ":" typetree ("," ...)*] "}" | "[" [typetree ("," ...)*] "]"
              | "(" [typetree ("," typetree)* [","]] ")"
    type     := DTYPE "[" [dim ("," dim)*] "]"          DTYPE: f16 f32 f64 i32 i64 bool
    dim      := (INT | NAME) ("*" (INT | NAME))*
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
"""
from __future__ import annotations

import base64
import json
import math
import re

import numpy as np

from .dtypes import DTYPES, to_numpy
from .errors import ParseError, TapeirError
from .graph import Graph, Node, Value
from .pytree import LEAF, TreeDef, default_output_names, leaf_names
from .registry import get_op
from .verifier import verify
from .types import TensorType

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<source>\#[^\n]*)
  | (?P<ref>%c?[0-9]+)
  | (?P<number>-?(?:[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?|inf(?![A-Za-z0-9_.])))
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<punct>[(){}\[\],:=*])
""", re.X)


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind, text, pos):
        self.kind, self.text, self.pos = kind, text, pos


def _tokenize(text: str, where) -> list[_Tok]:
    toks, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise where(pos, f"unexpected character {text[pos]!r}")
        if m.lastgroup != "ws":
            toks.append(_Tok(m.lastgroup, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("eof", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text, self.error)
        self.i = 0
        self.env: dict[str, Value] = {}   # graph inputs, by name
        self.refs: dict[str, Value] = {}  # %N and %cN; a separate namespace, so an input may be named "%0"

    # ---- token helpers ----
    def error(self, pos: int, message: str, hint: str | None = None) -> ParseError:
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        src = self.text[start:end if end >= 0 else len(self.text)]
        col = pos - start + 1
        return ParseError(f"line {line}, col {col}: {message}\n    {src}\n    {' ' * (col - 1)}^", hint=hint)

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at(self, text: str) -> bool:
        return self.tok.text == text and self.tok.kind in ("punct", "name")

    def expect(self, text: str, what: str | None = None) -> _Tok:
        if not self.at(text):
            raise self.error(self.tok.pos, f"expected {what or repr(text)}, found {self.tok.text!r}"
                             if self.tok.kind != "eof" else f"expected {what or repr(text)}, found end of input")
        return self.next()

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect_kind(self, kind: str, what: str) -> _Tok:
        if self.tok.kind != kind:
            found = "end of input" if self.tok.kind == "eof" else repr(self.tok.text)
            raise self.error(self.tok.pos, f"expected {what}, found {found}")
        return self.next()

    def name(self, what="a name") -> str:
        if self.tok.kind == "string":
            return json.loads(self.next().text)
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

    # ---- grammar ----
    def graph(self) -> Graph:
        g = self.nested_graph()
        if self.tok.kind != "eof":
            raise self.error(self.tok.pos, f"expected end of input after '}}', found {self.tok.text!r}")
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
                found = "end of input" if self.tok.kind == "eof" else repr(self.tok.text)
                raise self.error(self.tok.pos, f"expected a statement (%N: type = ...) or 'return', found {found}")
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
                raise self.error(self.tok.pos, f"dict keys {keys} must be sorted and unique")
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
            raise self.error(t.pos, f"expected a dtype ({', '.join(DTYPES)}), found {t.text!r}")
        self.next()
        self.expect("[")
        dims, _ = self.seq("]", self.dim)
        try:
            return TensorType(t.text, tuple(dims))
        except TapeirError as e:
            raise self.error(t.pos, e.problem) from None

    def dim(self):
        parts = [self.dim_part()]
        while self.accept("*"):
            parts.append(self.dim_part())
        if len(parts) == 1:
            return parts[0]
        return "*".join(str(p) for p in parts)

    def dim_part(self):
        t = self.tok
        if t.kind == "number" and t.text.isdigit():
            self.next()
            return int(t.text)
        if t.kind == "name" or t.text == "inf":  # a symbol may be called inf, which lexes as a number
            self.next()
            return t.text
        raise self.error(t.pos, f"expected a dim (an int or a symbol), found {t.text!r}")

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
                raise self.error(ref.pos, f"{ref.text} is defined twice")
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
                raise self.error(op_tok.pos, f"unknown op {op_tok.text!r}") from None
            self.expect("(")
            args, _ = self.seq(")", self.operand)
            attrs = {}
            nested = sorted(k for k, a in opdef.attrs.items() if a.kind == "graph")
            if self.accept("{"):
                for k, v, pos in self.seq("}", self.attr)[0]:
                    if k in attrs:
                        raise self.error(pos, f"attribute {k!r} is given twice")
                    attrs[k] = v
            source = None
            if self.tok.kind == "source":
                source = self.next().text[1:].strip() or None
            for k in nested:  # graph-valued attributes follow the line (attribute-name order)
                if k in attrs:
                    raise self.error(op_tok.pos, f"attribute {k!r} is a graph: it follows the line, not in {{...}}")
                if not self.at("graph"):
                    raise self.error(self.tok.pos, f"expected the {op_tok.text} node's {k} (a nested 'graph ...'), "
                                                   f"found {self.tok.text!r}")
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
            try:
                raw = base64.b64decode(json.loads(tok.text), validate=True)
            except ValueError:  # binascii.Error is a ValueError
                raise self.error(tok.pos, "invalid base64 data") from None
            if len(raw) % dt.itemsize:
                raise self.error(tok.pos, f"base64 data has {len(raw)} bytes, not a multiple of "
                                          f"{dt.itemsize} ({t.dtype})")
            arr = np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt)
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
                return int(t.text)
            return float(t.text)
        if t.kind == "name" and t.text in ("true", "false"):
            self.next()
            return t.text == "true"
        if t.kind == "name" and t.text == "nan":
            self.next()
            return float("nan")
        raise self.error(t.pos, f"expected a number, found {t.text!r}")

    def attr(self):
        k = self.expect_kind("name", "an attribute name")
        self.expect("=")
        return k.text, self.attr_value(), k.pos

    def attr_value(self):
        t = self.tok
        if t.kind == "string":
            return json.loads(self.next().text)
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
            raise self.error(t.pos, f"{key} is not defined here (used before its definition?)")
        return env[key]


def parse(text: str) -> Graph:
    """Parse the text form back into a Graph, and verify it (tp.VerifyError if ill-typed).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: tp.exp(x) * 2.0, np.ones(3, np.float32))
    >>> tp.parse(str(g)) == g
    True
    """
    p = _Parser(text)
    try:
        g = p.graph()
    except RecursionError:  # a hostile file: "[[[[..." thousands deep
        raise p.error(p.tok.pos, "trees are nested too deeply") from None
    verify(g)  # text can be edited by hand: a well-formed but ill-typed graph is an error here
    return g
