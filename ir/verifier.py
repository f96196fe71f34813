"""The verifier: checks a Graph's invariants and names the node that breaks one.

Rules:
  1. every node's op is registered and its arity and attributes fit the schema;
  2. every operand is a graph input, a constant or an output of an earlier node
     (use before definition and values from another graph are errors);
  3. every value is defined once;
  4. the type rule, re-run on the operand types, gives exactly the recorded output types;
  5. constants hold arrays of their declared type; graph outputs are defined;
     every symbolic dim a node uses is a dim of some input;
  6. input names are unique and the trees match the input/output counts; dict keys in
     the trees are sorted, unique strings (the order flatten gives and the parser demands);
     each input is named by its argument name and pytree path (`params.w1`);
  7. a graph-valued attribute (a fused node's body) is itself a valid graph, and the
     fused type rule (ir/ops.py) holds: elementwise body nodes of one shape.
"""
from __future__ import annotations

from .errors import TapeirError, VerifyError
from .registry import get_op
from .types import symbols_of

CONTEXT = 5  # lines of IR shown on each side of the failing node


def _fail(g, index: int | None, problem: str, hint: str | None = None):
    where = None
    if index is not None:
        node = g.nodes[index]
        where = f"node {index} ({node.op}{', ' + node.source if node.source else ''})"
        try:
            lines = str(g).splitlines()
        except Exception:  # the broken part may not print (say, an attribute of a foreign type)
            lines = None
        if lines:
            # the node's line: header + constants + index
            at = 1 + len(g.constants) + index
            lo, hi = max(1, at - CONTEXT), min(len(lines), at + CONTEXT + 1)
            where += "\n" + "\n".join(("  > " if i == at else "    ") + _cut(lines[i]) for i in range(lo, hi))
    raise VerifyError(f"verification failed at node {index}: {problem}" if index is not None
                      else f"verification failed: {problem}", where=where, hint=hint)


def _cut(line: str, limit: int = 200) -> str:
    """A context line, cut short: a constant's base64 line can be megabytes long."""
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line)} characters)"


def verify(g) -> None:
    """Raise VerifyError if `g` breaks an IR invariant; return None if it is well formed.

    >>> import numpy as np, tapeir as tp
    >>> tp.verify(tp.trace(lambda x: x + 1.0, np.ones(2, np.float32)))
    """
    from .graph import require_graph

    require_graph(g, "tp.verify")
    defined: set[int] = set()
    names = [v.name for v in g.inputs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        _fail(g, None, f"duplicate input names {dup}")
    if g.in_tree.num_leaves != len(g.inputs) or len(g.in_tree.children) != len(g.arg_names):
        _fail(g, None, "input tree does not match the inputs")
    if g.out_tree.num_leaves != len(g.outputs):
        _fail(g, None, "output tree does not match the outputs")
    if len(g.output_names) != len(g.outputs) or not all(isinstance(n, str) and n for n in g.output_names):
        _fail(g, None, f"output_names {g.output_names!r} must be one non-empty string per output")
    if len(set(g.output_names)) != len(g.output_names):
        dup = sorted({n for n in g.output_names if g.output_names.count(n) > 1})
        _fail(g, None, f"duplicate output names {dup}", hint="every result needs its own name (ONNX requires it)")
    for what, tree in (("input", g.in_tree), ("output", g.out_tree)):
        problem = _tree_problem(tree)
        if problem:
            _fail(g, None, f"{what} tree: {problem}", "build trees with tapeir.ir.flatten")
    expected = g.input_names()
    if names != expected:
        bad = next(k for k, (a, b) in enumerate(zip(names, expected)) if a != b)
        _fail(g, None, f"input {bad} is named {names[bad]!r} but its argument and path make it {expected[bad]!r}",
              "create inputs with their path names (ir/builder.py Builder.input)")
    for v in g.inputs:
        if v.is_constant:
            _fail(g, None, f"input {v.name} carries constant data")
        defined.add(id(v))
    for i, c in enumerate(g.constants):
        if c.data is None or tuple(c.data.shape) != c.type.shape or str(c.data.dtype) != str(_np(c.type.dtype)):
            _fail(g, None, f"constant %c{i} does not hold an array of its type {c.type}")
        if id(c) in defined:
            _fail(g, None, f"constant %c{i} is defined twice")
        defined.add(id(c))
    bound = {s for v in g.inputs for d in v.type.shape if isinstance(d, str) for s in symbols_of(d)}
    for i, n in enumerate(g.nodes):
        try:
            opdef = get_op(n.op)
            attrs = opdef.normalize_attrs(n.attrs)
        except TapeirError as e:
            _fail(g, i, e.problem, e.hint)
        if attrs != n.attrs:
            _fail(g, i, f"attributes {n.attrs} are not canonical (expected {attrs})",
                  "build nodes through the frontend or fill defaults with the op's schema")
        for k, v in attrs.items():
            if opdef.attrs[k].kind == "graph":  # rule 7
                try:
                    verify(v)
                except VerifyError as e:
                    _fail(g, i, f"its {k} graph: {e.problem}" + (f" ({e.where.splitlines()[0]})" if e.where else ""),
                          e.hint)
        for k, v in enumerate(n.inputs):
            if id(v) not in defined:
                if any(v is o for m in g.nodes[i:] for o in m.outputs):
                    _fail(g, i, f"operand {k} is a value defined later", "nodes must come in topological order")
                _fail(g, i, f"operand {k} is a value that no node, input or constant of this graph defines "
                      "(dangling)", "a node copied from another graph must have its operands remapped")
        try:
            want = opdef.infer([v.type for v in n.inputs], n.attrs)
        except TapeirError as e:
            _fail(g, i, e.problem, e.hint)
        got = [o.type for o in n.outputs]
        if want != got:
            _fail(g, i, f"recorded output types {', '.join(map(str, got))} but the type rule gives "
                  f"{', '.join(map(str, want))}")
        for o in n.outputs:
            if id(o) in defined:
                _fail(g, i, "an output is defined twice (SSA: one producer per value)")
            defined.add(id(o))
        used = {s for o in n.outputs for d in o.type.shape if isinstance(d, str) for s in symbols_of(d)}
        for k in opdef.shape_attrs:
            used.update(s for d in n.attrs[k] if isinstance(d, str) for s in symbols_of(d))
        if used - bound:
            _fail(g, i, f"symbolic dim {', '.join(map(repr, sorted(used - bound)))} is not a dim of any input",
                  "a graph can only be run when its inputs bind every symbol it uses")
    for k, v in enumerate(g.outputs):
        if id(v) not in defined:
            _fail(g, None, f"graph output {k} is not defined in the graph (dangling)")


def _tree_problem(t) -> str | None:
    if t.kind not in ("leaf", "tuple", "list", "dict"):
        return f"unknown node kind {t.kind!r}"
    if t.kind == "dict":
        keys = list(t.keys)
        if len(keys) != len(t.children) or not all(isinstance(k, str) for k in keys):
            return f"dict keys {keys!r} must be one string per child"
        if keys != sorted(set(keys)):
            return f"dict keys {keys} must be sorted and unique"
    return next((p for p in map(_tree_problem, t.children) if p), None)


def _np(dtype):
    from .dtypes import to_numpy

    return to_numpy(dtype)
