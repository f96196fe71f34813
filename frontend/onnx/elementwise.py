"""ONNX import rules for elementwise ops that need more than their IR twin.

An ONNX op that is the twin of an IR op (`onnx=` in ir/ops.py) imports as that op by a
derived row (frontend/onnx/table.py); the rules here override it or add op types the IR
has no twin for. Each rule is `rule(node, *inputs) -> output`; inputs are traced Tensors
or numpy arrays (see node.py), a missing optional input is None. Rules record IR by
calling tp.* functions, so composites (Selu, HardSigmoid, ...) become the same few IR
ops a user would write by hand:
  1. Max(x, 0) with a zero constant is relu (how tapeir exports relu of integers and
     float64); Max/Min/Sum/Mean are variadic folds of the binary ops.
  2. Integer Div and Pow compute in float64 and cast back (truncating, as ONNX does).
  3. Clip bounds are inputs from opset 11 (attributes before); computed bounds compose
     maximum/minimum; an infinite bound is no bound.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import functions as F
from ..tensor import Tensor
from ...ir.dtypes import INTS
from .node import value_dtype

def _variadic(fn):
    return lambda n, *xs: functools.reduce(fn, xs)


def _max(n, *xs):
    """Max; Max(x, 0) with a zero scalar is relu (how tapeir exports relu of integers and of
    float64, so IR -> ONNX -> IR keeps relu's gradient at 0, which is 0, not maximum's 1/2)."""
    if len(xs) == 2:
        x, z = xs if isinstance(xs[0], Tensor) else xs[::-1]
        if isinstance(x, Tensor) and isinstance(z, np.ndarray) and z.dtype != object and z.size == 1 \
                and z.ndim <= x.ndim and z.dtype == x.dtype and not z.any():
            return F.relu(x)
    return functools.reduce(F.maximum, xs)


def _via_f64(fn):
    """Integer Div/Pow: compute in f64, cast back (the cast truncates toward zero, as ONNX
    integer Div does). Exact while operands and results stay below 2**53."""
    def rule(n, a, b):
        dt = value_dtype(a)
        if dt not in INTS:
            if value_dtype(b) != dt:  # Pow's exponent may have its own type
                b = F.astype(b, dt) if isinstance(b, Tensor) else b.astype(a.dtype)
            return fn(a, b)
        return F.astype(fn(F.astype(a, "f64"), F.astype(b, "f64")), dt)
    return rule


def _clip(n, x, lo=None, hi=None):
    if n.opset < 11:
        lo, hi = n.attr("min"), n.attr("max")
    elif isinstance(lo, Tensor) or isinstance(hi, Tensor):  # computed bounds: compose
        y = x if lo is None else F.maximum(x, lo)
        return y if hi is None else F.minimum(y, hi)
    else:
        lo, hi = n.scalar(lo, "min"), n.scalar(hi, "max")
    if lo is not None and hi is not None and lo > hi:
        lo = hi  # ONNX: min > max sets every element to max
    lo = None if lo is not None and lo == -np.inf else lo  # an infinite bound is no bound (how tapeir
    hi = None if hi is not None and hi == np.inf else hi   # exports a missing float one)
    return F.clip(x, lo, hi)


def _is_inf(n, x):
    pos, neg = n.attr("detect_positive", 1), n.attr("detect_negative", 1)
    if pos and neg:
        return F.equal(F.abs(x), np.inf)
    if pos or neg:
        return F.equal(x, np.inf if pos else -np.inf)
    return F.less(F.abs(x), -1.0)  # detects nothing: always false (nan compares false too)


def _mod(n, a, b):
    """Mod on values known at import time folds before any rule runs (torch's
    nn.MultiheadAttention writes `embed_dim % num_heads` checks); tapeir has no IR op for a
    remainder of computed tensors."""
    raise n.error(f"Mod of computed tensors ({value_dtype(a)}, {value_dtype(b)}) has no tapeir op",
                  hint="tapeir imports Mod only on values known at import time (constants, static shapes)")


# op types imported only when their inputs are known (they fold before any rule runs): the
# driver's op-type check accepts them, and this rule speaks when they are not known.
# Not in IMPORT: tapeir cannot import them in general (ONNX's node tests compute on inputs)
FOLD_ONLY = {"Mod": _mod}

ELEMENTWISE = {
    "Div": _via_f64(F.div), "Pow": _via_f64(F.power), "Tan": lambda n, x: F.sin(x) / F.cos(x),
    "Celu": lambda n, x: F.elu(x / n.attr("alpha", 1.0)) * n.attr("alpha", 1.0),
    "Selu": lambda n, x: F.elu(x, n.attr("alpha", 1.67326319217681884765625)) * n.attr("gamma", 1.05070102214813232421875),
    "HardSigmoid": lambda n, x: F.clip(x * n.attr("alpha", 0.2) + n.attr("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda n, x: x * F.clip(x * (1 / 6) + 0.5, 0.0, 1.0),
    "Softsign": lambda n, x: x / (F.abs(x) + 1.0),
    "Mish": lambda n, x: x * F.tanh(F.softplus(x)),
    "Swish": lambda n, x: x * F.sigmoid(x * n.attr("alpha", 1.0)),
    "ThresholdedRelu": lambda n, x: F.where(F.greater(x, n.attr("alpha", 1.0)), x, 0.0),
    "PRelu": lambda n, x, slope: F.where(F.less(x, 0.0), x * slope, x),
    "Max": _max, "Min": _variadic(F.minimum), "Sum": _variadic(F.add),
    "Mean": lambda n, *xs: functools.reduce(F.add, xs) / float(len(xs)) if len(xs) > 1 else xs[0],
    "Clip": _clip,
    "Cast": lambda n, x: F.astype(x, n.ir_dtype(n.attr("to"), "the target")),
    "CastLike": lambda n, x, like: F.astype(x, value_dtype(like)),
    "Not": lambda n, x: F.equal(x, False),
    "And": lambda n, a, b: F.where(a, b, False),
    "Or": lambda n, a, b: F.where(a, True, b),
    "Xor": lambda n, a, b: F.not_equal(a, b),
    "IsNaN": lambda n, x: F.not_equal(x, x),
    "IsInf": _is_inf,
}
