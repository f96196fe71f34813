"""VJP rules of ir/ops_extra.py's differentiable ops (registered into passes/vjp_rules.VJP).

argmax/argmin and random_uniform have no gradient (integer or random outputs).
"""
from __future__ import annotations

import numpy as np

from ..frontend import functions as F
from ..ir.errors import TraceError
from ..ir.ops_extra import parse_equation
from ..frontend import functions_extra as FX

VJP_EXTRA: dict = {}  # merged into passes/vjp_rules.VJP (which imports this module)


def rule(*ops, selective=False):
    """As vjp_rules.rule, into VJP_EXTRA."""
    def deco(fn):
        fn.selective = selective
        VJP_EXTRA.update(dict.fromkeys(ops, fn))
        return fn
    return deco


@rule("take", selective=True)
def _take(g, x, y, a, need):
    table, idx = x
    if not need[0]:
        return [None, None]
    zeros = F.broadcast_to(np.array(0, table.dtype), table.shape)
    return [FX.scatter_add(zeros, idx, g, axis=a["axis"]), None]


@rule("scatter_add", selective=True)
def _scatter_add(g, x, y, a, need):
    return [g if need[0] else None, None, FX.take(g, x[1], axis=a["axis"]) if need[2] else None]


@rule("cumsum")
def _cumsum(g, x, y, a):
    return [FX.cumsum(g, a["axis"], exclusive=a["exclusive"], reverse=not a["reverse"])]


@rule("trilu")
def _trilu(g, x, y, a):
    return [(FX.triu if a["upper"] else FX.tril)(g, a["k"])]


@rule("einsum", selective=True)
def _einsum(g, x, y, a, need):
    """d/dx_i of einsum: the einsum of the other operands and g onto x_i's subscripts; a
    letter x_i alone had (summed out before the product) comes back by broadcasting."""
    subs, out = parse_equation(a["equation"])
    grads = []
    for i, (s, xi) in enumerate(zip(subs, x)):
        if not need[i]:
            grads.append(None)
            continue
        if len(set(s)) != len(s):
            raise TraceError(f"einsum: no gradient for operand {i} of {a['equation']!r}: a letter repeated "
                             "within one operand (a diagonal)", hint="take the diagonal with a mask instead")
        others = [(t, o) for j, (t, o) in enumerate(zip(subs, x)) if j != i]
        seen = set(out).union(*[set(t) for t, _ in others])
        kept = "".join(ch for ch in s if ch in seen)
        eq = ",".join([t for t, _ in others] + [out]) + "->" + kept
        gi = FX.einsum(eq, *[o for _, o in others], g)
        if kept != s:  # broadcast over the letters only x_i had
            gi = F.expand_dims(gi, tuple(k for k, ch in enumerate(s) if ch not in seen))
            gi = F.broadcast_to(gi, xi.shape)
        grads.append(gi)
    return grads


@rule("batch_norm")
def _batch_norm(g, x, y, a):
    xs, scale, bias, mean, var = x
    shape = (xs.shape[1],) + (1,) * (xs.ndim - 2)
    axes = (0,) + tuple(range(2, xs.ndim))
    rstd = F.reciprocal(F.sqrt(var + a["epsilon"]))
    k = F.reshape(scale * rstd, shape)
    d = xs - F.reshape(mean, shape)
    gd = F.sum(g * d, axis=axes)
    return [g * k, gd * rstd, F.sum(g, axis=axes), -F.sum(g * k, axis=axes),
            gd * scale * (rstd * rstd * rstd) * -0.5]
