"""Simplification passes. Each is Graph -> Graph and never mutates its input.

Rules:
  1. dce: drop nodes none of whose outputs reach a graph output, and unused constants.
"""
from __future__ import annotations

from ..ir.graph import Graph


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
    return Graph(g.name, g.arg_names, g.in_tree, g.inputs, kept, g.out_tree, g.outputs, consts)
