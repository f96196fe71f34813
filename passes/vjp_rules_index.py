"""VJP rules of ir/ops_index.py's differentiable ops: take, scatter_add, cumsum, trilu
(registered into passes/vjp_rules.VJP). argmax/argmin have no gradient (integer outputs).
"""
from __future__ import annotations

import numpy as np

from ..frontend import functions as F
from ..frontend import functions_index as FI

VJP_INDEX: dict = {}  # merged into passes/vjp_rules.VJP (which imports this module)


def rule(*ops, selective=False):
    """As vjp_rules.rule, into VJP_INDEX."""
    def deco(fn):
        fn.selective = selective
        VJP_INDEX.update(dict.fromkeys(ops, fn))
        return fn
    return deco


@rule("take", selective=True)
def _take(g, x, y, a, need):
    table, idx = x
    if not need[0]:
        return [None, None]
    zeros = F.broadcast_to(np.array(0, table.dtype), table.shape)
    return [FI.scatter_add(zeros, idx, g, axis=a["axis"]), None]


@rule("scatter_add", selective=True)
def _scatter_add(g, x, y, a, need):
    return [g if need[0] else None, None, FI.take(g, x[1], axis=a["axis"]) if need[2] else None]


@rule("cumsum")
def _cumsum(g, x, y, a):
    return [FI.cumsum(g, a["axis"], exclusive=a["exclusive"], reverse=not a["reverse"])]


@rule("trilu")
def _trilu(g, x, y, a):
    return [(FI.triu if a["upper"] else FI.tril)(g, a["k"])]
