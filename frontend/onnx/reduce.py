"""ONNX import rules for reductions and the softmax family.

Rules follow elementwise.py: `rule(node, *inputs)`, recording IR through tp.* functions.
  1. Reduce*: axes are an attribute or an input, as the node's opset says
     (ir.registry.onnx_axes_are_input); no axes reduce all of them, unless
     noop_with_empty_axes. The IR twins (ReduceSum -> sum, ...) are read from the
     registry; the other Reduce* ops compose them.
  2. Reducing a static empty axis gives ONNX's identity element (-inf for ReduceMax, ...)
     as a constant, where numpy has no identity to reduce with.
  3. ReduceMax/Min of bool (opset 20) are any/all through int32.
  4. Softmax/LogSoftmax: one axis from opset 13; before, the input is coerced to 2-D at
     the axis.
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ...ir.registry import OPS, onnx_axes_are_input
from .node import constant_fits, prod, rank_of, shape_of, value_dtype


def _reduce(fn, empty=None):
    """A Reduce* rule computing fn(x, axes, keepdims); `empty` gives the identity element."""
    def rule(n, x, axes=None):
        axes = n.ints(axes, "axes") if onnx_axes_are_input(n.op, n.opset) else n.attr("axes")
        keep = bool(n.attr("keepdims", 1))
        if not axes:
            if n.attr("noop_with_empty_axes", 0):
                return x
            axes = None
        else:
            axes = n.axes(axes, rank_of(x))
        shape = shape_of(x)
        reduced = range(len(shape)) if axes is None else axes
        if empty is not None and any(shape[a] == 0 for a in reduced) and all(isinstance(d, int) for d in shape):
            out = [1 if i in reduced else d for i, d in enumerate(shape) if keep or i not in reduced]
            fill = np.array(empty(np.dtype(x.dtype)), dtype=x.dtype)
            return np.full(out, fill) if constant_fits(out, x.dtype) else F.broadcast_to(fill, out)
        if value_dtype(x) == "bool":
            return F.astype(fn(F.astype(x, "i32"), axes, keep), "bool")
        return fn(x, axes, keep)
    return rule


def _lowest(dt):
    return -np.inf if dt.kind == "f" else False if dt.kind == "b" else np.iinfo(dt).min


def _highest(dt):
    return np.inf if dt.kind == "f" else True if dt.kind == "b" else np.iinfo(dt).max


def _softmax(fn):
    def rule(n, x):
        r = rank_of(x)
        if n.opset >= 13:
            return fn(x, n.axis(n.attr("axis", -1), r))
        axis = n.axis(n.attr("axis", 1), r)
        if axis == r - 1:
            return fn(x, axis)
        shape = shape_of(x)
        y = fn(F.reshape(x, (prod(shape[:axis]), prod(shape[axis:]))), 1)
        return F.reshape(y, shape)
    return rule


REDUCE = {  # the IR reductions' twins: tp.<op> has the op's name
    **{OPS[op].onnx: _reduce(getattr(F, op), empty)
       for op, empty in [("sum", None), ("mean", None), ("max", _lowest), ("min", _highest), ("logsumexp", _lowest)]},
    "ReduceSumSquare": _reduce(lambda x, a, k: F.sum(x * x, a, k)),
    "ReduceL1": _reduce(lambda x, a, k: F.sum(F.abs(x), a, k)),
    "ReduceL2": _reduce(lambda x, a, k: F.sqrt(F.sum(x * x, a, k))),
    "ReduceLogSum": _reduce(lambda x, a, k: F.log(F.sum(x, a, k)), _lowest),
    "Softmax": _softmax(F.softmax), "LogSoftmax": _softmax(F.log_softmax),
}
