"""Simplification passes. Each is Graph -> Graph and never mutates its input.

Rules:
  1. dce: drop nodes none of whose outputs reach a graph output, and unused constants.
  2. drop_identities: `mul(x, 1)`, `mul(1, x)`, `add(x, 0)`, `add(0, x)`, `sub(x, 0)` and
     `div(x, 1)` are x when the result has x's type (a constant operand that would
     broadcast x to a bigger shape is kept). Autodiff seeds make many of these.
  3. fold_constants: a node whose operands are all constants and whose result has at most
     FOLD_LIMIT elements becomes a constant (larger results stay computed, so dumps and
     files do not grow).
  4. cse: two nodes with the same op, operands and attributes are one (the first keeps
     its source line); equal constants are one.
  simplify applies 2-4 until nothing changes, then 1.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, constant
from ..ir.dtypes import to_numpy
from ..ir.reference import REFERENCE  # folding evaluates exactly what the interpreter runs

FOLD_LIMIT = 16
_IDENTITY = {"mul": (1, (0, 1)), "add": (0, (0, 1)), "sub": (0, (1,)), "div": (1, (1,))}


def _is_fill(v, value) -> bool:
    return v.data is not None and v.data.dtype.kind in "fiu" and bool(np.all(v.data == value))


def _rewrite(g: Graph, rule) -> Graph:
    """Walk g's nodes; rule(node, operands, new_constants) returns replacement values or None."""
    alias: dict[int, object] = {}
    nodes, new_consts = [], []
    for n in g.nodes:
        inputs = [alias.get(id(v), v) for v in n.inputs]
        rep = rule(n, inputs, new_consts)
        if rep is not None:
            alias.update((id(o), r) for o, r in zip(n.outputs, rep))
            continue
        same = all(a is b for a, b in zip(inputs, n.inputs))
        nodes.append(n if same else Node(n.op, inputs, n.attrs, n.outputs, n.source))
    outputs = [alias.get(id(v), v) for v in g.outputs]
    return dce(Graph(g.name, g.arg_names, g.in_tree, g.inputs, nodes, g.out_tree, outputs,
                     g.constants + new_consts, g.output_names))


def _identity_rule(n, inputs, new_consts):
    rule = _IDENTITY.get(n.op)
    if rule is not None:
        value, const_slots = rule
        for k in const_slots:
            other = inputs[1 - k]
            if _is_fill(inputs[k], value) and other.type == n.outputs[0].type:
                return [other]
    return None


def drop_identities(g: Graph) -> Graph:
    """Forward x through ops that leave it unchanged (rule 2), then remove what died.

    >>> import tapeir as tp
    >>> g = drop_identities(tp.trace(lambda x: (x * 1.0 + 0.0) / 1.0, tp.Spec((3,))))
    >>> len(g.nodes), g.outputs[0] is g.inputs[0]
    (0, True)
    """
    return _rewrite(g, _identity_rule)


def _fold_rule(n, inputs, new_consts):
    out = n.outputs[0].type
    if len(n.outputs) != 1 or not all(v.is_constant for v in inputs) or not out.is_static \
            or int(np.prod(out.shape, dtype=np.int64)) > FOLD_LIMIT:
        return None
    try:
        with np.errstate(all="ignore"):
            r = np.asarray(REFERENCE[n.op](n.attrs)(*[v.data for v in inputs]), dtype=to_numpy(out.dtype))
    except Exception:  # e.g. a label out of range: leave it to fail at run time, with its source
        return None
    if r.shape != tuple(out.shape):
        return None
    c = constant(r)
    new_consts.append(c)
    return [c]


def fold_constants(g: Graph) -> Graph:
    """Evaluate small all-constant subexpressions now (rule 3).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: x * tp.exp(np.zeros(3, np.float32)), tp.Spec((3,)))
    >>> [n.op for n in g.nodes], [n.op for n in fold_constants(g).nodes]
    (['exp', 'mul'], ['mul'])
    """
    return _rewrite(g, _fold_rule)


def cse(g: Graph) -> Graph:
    """Common-subexpression elimination (rule 4).

    >>> import tapeir as tp
    >>> g = tp.trace(lambda x: tp.exp(x) + tp.exp(x), tp.Spec((3,)))
    >>> [n.op for n in g.nodes], [n.op for n in cse(g).nodes]
    (['exp', 'exp', 'add'], ['exp', 'add'])
    """
    g = _dedupe_constants(g)
    seen: dict = {}

    def rule(n, inputs, new_consts):
        key = (n.op, tuple(id(v) for v in inputs), repr(sorted(n.attrs.items())))
        if key in seen:
            return seen[key]
        seen[key] = n.outputs
        return None

    return _rewrite(g, rule)


def _dedupe_constants(g: Graph) -> Graph:
    first: dict = {}
    alias = {id(c): first.setdefault((str(c.type), c.data.tobytes()), c) for c in g.constants}
    if all(alias[id(c)] is c for c in g.constants):
        return g
    nodes = [Node(n.op, [alias.get(id(v), v) for v in n.inputs], n.attrs, n.outputs, n.source)
             for n in g.nodes]
    outputs = [alias.get(id(v), v) for v in g.outputs]
    return Graph(g.name, g.arg_names, g.in_tree, g.inputs, nodes, g.out_tree, outputs,
                 [c for c in g.constants if alias[id(c)] is c], g.output_names)


def simplify(g: Graph) -> Graph:
    """Rules 2-4 until the graph stops shrinking, then dead-code elimination.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (x * (2.0 - 1.0) + tp.exp(x)) + tp.exp(x), tp.Spec((3,)))
    >>> [n.op for n in simplify(g).nodes]
    ['exp', 'add', 'add']
    """
    for _ in range(8):
        before = len(g.nodes)
        g = cse(fold_constants(drop_identities(g)))
        if len(g.nodes) == before:
            break
    return dce(g)


def dce(g: Graph) -> Graph:
    """Dead-code elimination (rule 1): keep the nodes and constants the outputs depend on.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (tp.exp(x), x * 2.0)[1], np.ones(2, np.float32))
    >>> len(g.nodes), len(dce(g).nodes)
    (2, 1)
    """
    live = {id(v) for v in g.outputs}
    kept = []
    for n in reversed(g.nodes):
        if any(id(o) in live for o in n.outputs):
            kept.append(n)
            live.update(id(v) for v in n.inputs)
    kept.reverse()
    consts = [c for c in g.constants if id(c) in live]
    return Graph(g.name, g.arg_names, g.in_tree, g.inputs, kept, g.out_tree, g.outputs, consts, g.output_names)
