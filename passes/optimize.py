"""The default pipeline: simplify, then fuse, through the pass manager.

  1. canonicalize (passes/simplify.py rules 2-5: identities, small constant folding, CSE,
     double negation, transpose/reshape chains), then dce: fewer, simpler nodes first, so
     fusion sees the chains that are really there;
  2. fuse (passes/fusion.py): connected elementwise ops become fused nodes.
tp.compile runs it by default (optimize=False opts out); `tapeir dump FILE --passes` prints
the IR after each pass through the manager's dump hook.
"""
from __future__ import annotations

from typing import Callable

from ..ir.graph import Graph, require_graph
from .fusion import fuse
from .manager import PassManager
from .simplify import canonicalize, dce

PASSES = (canonicalize, dce, fuse)


def optimize(g: Graph, *, dump: Callable[[str, Graph], None] | None = None, verify: bool | None = None) -> Graph:
    """g after the default pipeline (canonicalize, dce, fuse); `dump(name, graph)` sees the
    IR after each pass (e.g. passes.print_after); verify=True runs the verifier after each.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: tp.tanh(x * 1.0) * 2.0 + tp.tanh(x), tp.Spec(("B",)))
    >>> [n.op for n in g.nodes], [n.op for n in tp.optimize(g).nodes]
    (['mul', 'tanh', 'mul', 'tanh', 'add'], ['fused'])
    >>> x = np.linspace(-1, 1, 5, dtype=np.float32)
    >>> bool(np.array_equal(tp.run(tp.optimize(g), x, optimize=False), tp.run(g, x, optimize=False)))
    True
    """
    return PassManager(PASSES, verify=verify, dump=dump)(require_graph(g, "tp.optimize"))
