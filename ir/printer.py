"""The text form: deterministic, typed, one node a line, parses back (ir/parser.py).

    graph NAME(ARG: TREE, ...) {
      %c0: f32[] = const 2.0
      %0: f32[B,32] = matmul(x, params.w1)             # model.py:14
      %1: f32[B,32] = mul(%0, %c0) {}                  # model.py:15
      return %1
    }

A node with a graph-valued attribute (a fused node's body) prints it under its line, as
a nested graph indented two more spaces, in its own scope (its values restart at %0):

      %1: f32[B,3], %2: f32[B,3] = fused(%0, w)       # model.py:2
        graph fused_0(a: f32[N,3], b: f32[3]) {
          %0: f32[N,3] = add(a, b)                      # model.py:4
          %1: f32[N,3] = tanh(%0)                       # model.py:4
          return (%0, %1)
        }

Intermediates are numbered %0, %1, ... in order, constants %c0, %c1, ...; graph inputs
are referred to by their path names. Attributes print sorted. Constants with at most
`INLINE_LIMIT` elements print their values; larger ones (or ones holding NaN) print
their raw little-endian bytes in base64, so the round trip is bit-exact.
"""
from __future__ import annotations

import base64
import gc
import json
import re

import numpy as np

from .pytree import TreeDef, default_output_names

INLINE_LIMIT = 16
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_KEYWORDS = {"graph", "return", "const", "base64", "true", "false", "none", "inf", "nan", "as"}


def fmt_name(name: str) -> str:
    """A name prints bare when it is identifier-like (dots allowed), else JSON-quoted."""
    return name if _BARE.match(name) and name not in _KEYWORDS else json.dumps(name)


def fmt_source(source: str | None) -> str | None:
    r"""A node's source as its comment prints it: as is, or JSON-quoted (ASCII) when it holds a
    newline or another unprintable character (a file named "a\nb.py"), a non-ASCII one, blanks
    at either end, nothing, or starts with a quote. Raw, a newline would end the comment and
    inject a line; quoted, the text form stays ASCII like the names, so the text of a saved
    graph takes one byte a character in memory when it is loaded.

    >>> print(fmt_source("model.py:3"), fmt_source("a\nb.py:3"), fmt_source("é.py:1"), fmt_source(None))
    model.py:3 "a\nb.py:3" "\u00e9.py:1" None
    """
    if source is None:
        return None
    if source.isascii() and source.isprintable() and source and source[0] != '"' and source == source.strip():
        return source
    return json.dumps(source)


def fmt_scalar(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, np.floating):
        # numpy's shortest repr that round-trips in x's own dtype; legacy print modes
        # (np.set_printoptions(legacy="1.13")) drop digits, so pin the modern one
        with np.printoptions(legacy=False):
            s = str(x)
    else:
        s = repr(float(x))
    if s in ("inf", "-inf", "nan"):
        return s
    return s if any(c in s for c in ".en") else s + ".0"


def fmt_attr(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(fmt_attr(x) for x in v) + "]"
    return fmt_scalar(v)


def fmt_const(data: np.ndarray) -> str:
    if data.size <= INLINE_LIMIT and not (data.dtype.kind == "f" and np.isnan(data).any()):
        if data.ndim == 0:
            return fmt_scalar(data[()])
        return "[" + ", ".join(fmt_scalar(x) for x in data.reshape(-1)) + "]"
    raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
    return "base64 " + json.dumps(base64.b64encode(raw).decode("ascii"))


def fmt_tree(td: TreeDef, leaves) -> str:
    it = iter(leaves)

    def go(t):
        if t.kind == "leaf":
            return next(it)
        kids = [go(c) for c in t.children]
        if t.kind == "dict":
            return "{" + ", ".join(f"{fmt_name(k)}: {v}" for k, v in zip(t.keys, kids)) + "}"
        if t.kind == "list":
            return "[" + ", ".join(kids) + "]"
        return "(" + ", ".join(kids) + ("," if len(kids) == 1 else "") + ")"

    return go(td)


def print_graph(g, *, constants_by_name: bool = False) -> str:
    """The text form of `g` (what `str(g)` gives), ending in a newline.

    constants_by_name=True prints each constant too large to inline as `const initializer
    "%cK"` instead of its bytes: the form ONNX export puts in the model's doc_string, where
    the initializer of that name holds the data (weights are stored once). It is for
    reading; it does not parse back.

    >>> import tapeir as tp
    >>> print(print_graph(tp.trace(lambda x: x * 2.0, tp.Spec(("B",)))))  # doctest: +ELLIPSIS
    graph lambda(x: f32[B]) {
      %c0: f32[] = const 2.0
      %0: f32[B] = mul(x, %c0)  # ...
      return %0
    }
    <BLANKLINE>
    """
    # the lines make no reference cycles: the collector would only rescan the graph, which
    # made printing 100k ops cost ~3x per op what 10k cost (ir/builder.py's paused_gc; not
    # imported from there, which would be an import cycle through ir/graph.py)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return "\n".join(_graph_lines(g, constants_by_name)) + "\n"
    finally:
        if was_enabled:
            gc.enable()


def _graph_lines(g, constants_by_name: bool) -> list[str]:
    names: dict[int, str] = {}
    for v in g.inputs:
        names[id(v)] = fmt_name(v.name)
    lines: list[tuple[str, str | None]] = []
    bodies: dict[int, list[str]] = {}  # line index -> the nested graphs printed under it
    for i, c in enumerate(g.constants):
        names[id(c)] = f"%c{i}"
        body = fmt_const(c.data)
        if constants_by_name and body.startswith("base64 "):
            body = f'initializer "{c.name or f"%c{i}"}"'  # tp.bind names constants after inputs
        lines.append((f"%c{i}: {c.type} = const {body}", None))
    counter = 0
    for n in g.nodes:
        binders = []
        for o in n.outputs:
            names[id(o)] = f"%{counter}"
            binders.append(f"%{counter}: {o.type}")
            counter += 1
        args = ", ".join(names.get(id(v), "%?") for v in n.inputs)
        text = f"{', '.join(binders)} = {n.op}({args})"
        plain = sorted((k, v) for k, v in n.attrs.items() if not _is_graph(v))
        if plain:
            text += " {" + ", ".join(f"{k}={fmt_attr(v)}" for k, v in plain) + "}"
        nested = [v for k, v in sorted(n.attrs.items()) if _is_graph(v)]
        if nested:  # a fused node's body: the graph itself, printed under the node, indented
            bodies[len(lines)] = ["  " + line for sub in nested for line in _graph_lines(sub, constants_by_name)]
        lines.append((text, fmt_source(n.source)))

    in_types = iter(str(v.type) for v in g.inputs)
    params = ", ".join(f"{fmt_name(a)}: {fmt_tree(td, in_types)}"
                       for a, td in zip(g.arg_names, g.in_tree.children))
    width = min(max((len(t) for t, s in lines if s is not None), default=0), 72)
    out = [f"graph {fmt_name(g.name)}({params}) {{"]
    for k, (text, source) in enumerate(lines):
        out.append(f"  {text.ljust(width)}  # {source}" if source is not None else f"  {text}")
        out.extend("  " + line for line in bodies.get(k, ()))
    refs = [names.get(id(v), "%?") for v in g.outputs]
    refs = [r if n == d else f"{r} as {fmt_name(n)}"  # only names that differ from the default print
            for r, n, d in zip(refs, g.output_names, default_output_names(g.out_tree))]
    out.append(f"  return {fmt_tree(g.out_tree, refs)}")
    out.append("}")
    return out


def _is_graph(v) -> bool:
    return hasattr(v, "nodes") and hasattr(v, "out_tree")  # a Graph (ir/graph.py imports this module)

