"""VJP rules of ir/ops_nn.py's ops: einsum, batch_norm (registered into
passes/vjp_rules.VJP).
"""
from __future__ import annotations

from ..frontend import functions as F
from ..frontend import functions_nn as FN
from ..ir.errors import TraceError
from ..ir.ops_nn import parse_equation

VJP_NN: dict = {}  # merged into passes/vjp_rules.VJP (which imports this module)


def rule(*ops, selective=False):
    """As vjp_rules.rule, into VJP_NN."""
    def deco(fn):
        fn.selective = selective
        VJP_NN.update(dict.fromkeys(ops, fn))
        return fn
    return deco


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
        gi = FN.einsum(eq, *[o for _, o in others], g)
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
