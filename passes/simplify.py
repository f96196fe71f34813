"""Simplification passes. Each is Graph -> Graph and never mutates its input.

Rules:
  1. dce: drop nodes none of whose outputs reach a graph output, and unused constants.
  2. drop_identities: `mul(x, 1)`, `mul(1, x)`, `add(x, 0)`, `add(0, x)`, `sub(x, 0)` and
     `div(x, 1)` are x when the result has x's type (a constant operand that would
     broadcast x to a bigger shape is kept). Autodiff seeds make many of these.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node

_IDENTITY = {"mul": (1, (0, 1)), "add": (0, (0, 1)), "sub": (0, (1,)), "div": (1, (1,))}


def _is_fill(v, value) -> bool:
    return v.data is not None and v.data.dtype.kind in "fiu" and bool(np.all(v.data == value))


def drop_identities(g: Graph) -> Graph:
    """Forward x through ops that leave it unchanged (rule 2), then remove what died."""
    alias: dict[int, object] = {}
    nodes = []
    for n in g.nodes:
        inputs = [alias.get(id(v), v) for v in n.inputs]
        rule = _IDENTITY.get(n.op)
        if rule is not None:
            value, const_slots = rule
            for k in const_slots:
                other = inputs[1 - k]
                if _is_fill(inputs[k], value) and other.type == n.outputs[0].type:
                    alias[id(n.outputs[0])] = other
                    break
            else:
                nodes.append(Node(n.op, inputs, n.attrs, n.outputs, n.source))
            continue
        nodes.append(n if inputs == list(n.inputs) else Node(n.op, inputs, n.attrs, n.outputs, n.source))
    outputs = [alias.get(id(v), v) for v in g.outputs]
    return dce(Graph(g.name, g.arg_names, g.in_tree, g.inputs, nodes, g.out_tree, outputs, g.constants,
                     g.output_names))


def dce(g: Graph) -> Graph:
    """Dead-code elimination.

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
