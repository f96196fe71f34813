"""Ops that address elements by position: index picking (argmax, argmin), gathering and
scattering along an axis (take, scatter_add), running sums (cumsum) and triangle masks
(trilu).

Declared like ir/ops.py's (one registration each, the ONNX twin with it); ir/__init__.py
imports this module after ir/ops.py, so the registry is whole once `ir` is imported.
Their tp.* functions are in frontend/functions_index.py.
"""
from __future__ import annotations

from .dtypes import INTS
from .errors import TypeRuleError
from .ops import NUMERIC, _need_dtype, _same_dtype
from .registry import Attr, Category, register
from .types import TensorType

R, S = Category.REDUCE, Category.SHAPE


def _axis_in(op, t, axis, what="axis"):
    if not 0 <= axis < t.rank:
        raise TypeRuleError(f"{op}: {what} {axis} out of range for {t}",
                            hint="the frontend normalizes negative axes; the axis must name an existing axis")


def arg_rule(op, ts, attrs):
    t = ts[0]
    _need_dtype(op, t, NUMERIC)
    _axis_in(op, t, attrs["axis"])
    a = attrs["axis"]
    shape = [1 if i == a else d for i, d in enumerate(t.shape)] if attrs["keepdims"] else [
        d for i, d in enumerate(t.shape) if i != a]
    return [TensorType("i64", shape)]


def take_rule(op, ts, attrs):
    t, idx = ts
    _need_dtype(op, idx, INTS, "indices")
    a = attrs["axis"]
    _axis_in(op, t, a)
    return [t.with_shape(t.shape[:a] + idx.shape + t.shape[a + 1:])]


def scatter_add_rule(op, ts, attrs):
    data, idx, upd = ts
    _need_dtype(op, data, NUMERIC, "data")
    _need_dtype(op, idx, INTS, "indices")
    _same_dtype(op, [data, upd])
    a = attrs["axis"]
    _axis_in(op, data, a)
    want = data.shape[:a] + idx.shape + data.shape[a + 1:]
    if upd.shape != want:
        raise TypeRuleError(f"{op}: updates {upd} do not fit data {data} and indices {idx} on axis {a}",
                            hint=f"updates must be data.shape[:axis] + indices.shape + data.shape[axis+1:] = {list(want)}")
    return [data]


def cumsum_rule(op, ts, attrs):
    _need_dtype(op, ts[0], NUMERIC)
    _axis_in(op, ts[0], attrs["axis"])
    return [ts[0]]


def trilu_rule(op, ts, attrs):
    if ts[0].rank < 2:
        raise TypeRuleError(f"{op}: needs a matrix (or a batch of them), got {ts[0]}",
                            hint="triu/tril mask the last two axes")
    return [ts[0]]


register("argmax", 1, R, arg_rule, {"axis": Attr("int"), "keepdims": Attr("bool", True),
                                    "select_last_index": Attr("bool", False)},
         differentiable=False, onnx="ArgMax", doc="the index of the largest element along axis (first on ties)")
register("argmin", 1, R, arg_rule, {"axis": Attr("int"), "keepdims": Attr("bool", True),
                                    "select_last_index": Attr("bool", False)},
         differentiable=False, onnx="ArgMin", doc="the index of the smallest element along axis (first on ties)")
register("take", 2, S, take_rule, {"axis": Attr("int", 0)}, onnx="Gather",
         doc="table[..., indices, ...] along axis (an embedding lookup); negative indices count from the end")
register("scatter_add", 3, S, scatter_add_rule, {"axis": Attr("int", 0)},
         doc="data with updates added at indices along axis (repeats accumulate): the adjoint of take")
register("cumsum", 1, Category.REDUCE, cumsum_rule,
         {"axis": Attr("int"), "exclusive": Attr("bool", False), "reverse": Attr("bool", False)}, onnx="CumSum")
register("trilu", 1, S, trilu_rule, {"upper": Attr("bool", True), "k": Attr("int", 0)}, onnx="Trilu",
         doc="the upper (triu) or lower (tril) triangle of the last two axes from diagonal k; zeros elsewhere")
