"""ONNX import rules for elementwise ops, reductions and the softmax family.

Each rule is `rule(node, *inputs) -> output or tuple of outputs`; inputs are traced
Tensors or numpy arrays (see onnx_import_base), a missing optional input is None. Rules
record IR by calling tp.* functions, so composites (Selu, HardSigmoid, ...) become the
same few IR ops a user would write by hand.
"""
from __future__ import annotations

import functools

import numpy as np

from ..frontend import functions as F
from ..frontend.tensor import Tensor
from ..ir.dtypes import INTS, dtype_of
from .onnx_import_base import OnnxNode, prod, rank_of, shape_of

# ONNX TensorProto element types tapeir has a dtype for
ONNX_DTYPES = {1: "f32", 10: "f16", 11: "f64", 6: "i32", 7: "i64", 9: "bool"}


def onnx_dtype(n: OnnxNode, elem: int, what: str) -> str:
    if elem not in ONNX_DTYPES:
        from onnx import TensorProto
        raise n.error(f"{what} has ONNX type {TensorProto.DataType.Name(elem)}, which tapeir has no dtype for",
                      hint="tapeir supports float16/32/64, int32/64 and bool")
    return ONNX_DTYPES[elem]


def _dtype(x) -> str:
    return x.type.dtype if isinstance(x, Tensor) else dtype_of(x.dtype)


# ---- elementwise --------------------------------------------------------------------

def _unary(fn):
    return lambda n, x: fn(x)


def _binary(fn):
    return lambda n, a, b: fn(a, b)


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
        dt = _dtype(a)
        if dt not in INTS:
            if _dtype(b) != dt:  # Pow's exponent may have its own type
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


ELEMENTWISE = {
    "Add": _binary(F.add), "Sub": _binary(F.sub), "Mul": _binary(F.mul), "Div": _via_f64(F.div),
    "Pow": _via_f64(F.power), "Neg": _unary(F.negative), "Abs": _unary(F.abs), "Exp": _unary(F.exp),
    "Log": _unary(F.log), "Sqrt": _unary(F.sqrt), "Reciprocal": _unary(F.reciprocal),
    "Tanh": _unary(F.tanh), "Sigmoid": _unary(F.sigmoid), "Softplus": _unary(F.softplus),
    "Relu": _unary(F.relu), "Erf": _unary(F.erf), "Sin": _unary(F.sin), "Cos": _unary(F.cos),
    "Tan": _unary(lambda x: F.sin(x) / F.cos(x)),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, n.attr("alpha", 0.01)),
    "Elu": lambda n, x: F.elu(x, n.attr("alpha", 1.0)),
    "Celu": lambda n, x: F.elu(x / n.attr("alpha", 1.0)) * n.attr("alpha", 1.0),
    "Selu": lambda n, x: F.elu(x, n.attr("alpha", 1.67326319217681884765625)) * n.attr("gamma", 1.05070102214813232421875),
    "Gelu": lambda n, x: F.gelu(x, n.attr("approximate", "none")),
    "HardSigmoid": lambda n, x: F.clip(x * n.attr("alpha", 0.2) + n.attr("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda n, x: x * F.clip(x * (1 / 6) + 0.5, 0.0, 1.0),
    "Softsign": lambda n, x: x / (F.abs(x) + 1.0),
    "Mish": lambda n, x: x * F.tanh(F.softplus(x)),
    "Swish": lambda n, x: x * F.sigmoid(x * n.attr("alpha", 1.0)),
    "ThresholdedRelu": lambda n, x: F.where(F.greater(x, n.attr("alpha", 1.0)), x, 0.0),
    "PRelu": lambda n, x, slope: F.where(F.less(x, 0.0), x * slope, x),
    "Max": _max, "Min": _variadic(F.minimum), "Sum": _variadic(F.add),
    "Mean": lambda n, *xs: functools.reduce(F.add, xs) / float(len(xs)) if len(xs) > 1 else xs[0],
    "Where": lambda n, c, a, b: F.where(c, a, b),
    "Clip": _clip,
    "Cast": lambda n, x: F.astype(x, onnx_dtype(n, n.attr("to"), "the target")),
    "CastLike": lambda n, x, like: F.astype(x, _dtype(like)),
    "Equal": _binary(F.equal), "Less": _binary(F.less), "LessOrEqual": _binary(F.less_equal),
    "Greater": _binary(F.greater), "GreaterOrEqual": _binary(F.greater_equal),
    "Not": lambda n, x: F.equal(x, False),
    "And": lambda n, a, b: F.where(a, b, False),
    "Or": lambda n, a, b: F.where(a, True, b),
    "Xor": _binary(F.not_equal),
    "IsNaN": lambda n, x: F.not_equal(x, x),
    "IsInf": _is_inf,
}


# ---- reductions ---------------------------------------------------------------------

def _reduce(fn, empty=None):
    """ReduceX: axes as an attribute (older opsets) or as an input (opset 13/18+).

    Reducing a static empty axis gives ONNX's identity element (`empty`: -inf for
    ReduceMax, ...) as a constant, where numpy has no identity to reduce with.
    """
    def rule(n, x, axes=None):
        axes = n.attr("axes") if axes is None else n.ints(axes, "axes")
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
            return np.full(out, empty(np.dtype(x.dtype)), dtype=x.dtype)
        if _dtype(x) == "bool":  # ReduceMax/Min of bool (opset 20): any/all through int32
            return F.astype(fn(F.astype(x, "i32"), axes, keep), "bool")
        return fn(x, axes, keep)
    return rule


def _lowest(dt):
    return -np.inf if dt.kind == "f" else False if dt.kind == "b" else np.iinfo(dt).min


def _highest(dt):
    return np.inf if dt.kind == "f" else True if dt.kind == "b" else np.iinfo(dt).max


REDUCE = {
    "ReduceSum": _reduce(F.sum), "ReduceMean": _reduce(F.mean), "ReduceMax": _reduce(F.max, _lowest),
    "ReduceMin": _reduce(F.min, _highest), "ReduceLogSumExp": _reduce(F.logsumexp, _lowest),
    "ReduceSumSquare": _reduce(lambda x, a, k: F.sum(x * x, a, k)),
    "ReduceL1": _reduce(lambda x, a, k: F.sum(F.abs(x), a, k)),
    "ReduceL2": _reduce(lambda x, a, k: F.sqrt(F.sum(x * x, a, k))),
    "ReduceLogSum": _reduce(lambda x, a, k: F.log(F.sum(x, a, k)), _lowest),
}


def _softmax(fn):
    """Opset 13+: one axis (default -1). Before: coerce to 2-D at axis (default 1)."""
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


REDUCE.update({"Softmax": _softmax(F.softmax), "LogSoftmax": _softmax(F.log_softmax)})
