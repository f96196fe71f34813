"""ONNX import rules that pick elements by index: Gather, OneHot, ArgMax/ArgMin, Hardmax,
Trilu, CumSum, Range.

  1. Gather with indices known at import time in arithmetic progression: a slice,
     reshaped to the index shape.
  2. Gather with other indices (computed: an embedding lookup): the IR's `take`, whose
     gradient with respect to the data is a scatter_add.
  3. ArgMax/ArgMin: the IR's argmax/argmin (axis normalized; keepdims and
     select_last_index as ONNX's).
  4. Hardmax: one_hot(argmax). OneHot: where(equal(ids, iota), on, off).
  5. Trilu, CumSum: the IR's trilu and cumsum (any size, symbolic included).
  6. Range: only with bounds known at import time (then it folds).
  7. GatherND (GPT-2's "the last token of each row" with computed indices, batch_dims 0
     or more): the index tuples become row-major flat indices into data reshaped to
     [prod(data.shape[:b+m]), *data.shape[b+m:]], then one `take`. No op of its own: it
     differentiates as take (scatter_add) and exports as Reshape + Gather. A symbolic
     stride (the sequence length) is read at run time as the length of an iota over it.
     A component out of range whose flat index lands in range is not caught (ONNX would
     fail); the flat index out of range is, when the graph runs.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functions as F
from .. import functions_index as FI
from .. import functions_nn as FN
from ..tensor import Tensor
from .node import check_constant, constant_fits, is_static, prod, rank_of, reshape, shape_of


def _static_size(n, x, axis):
    size = shape_of(x)[axis]
    if not isinstance(size, int):
        raise n.error(f"axis {axis} of {x.type} is symbolic", hint=f"{n.op} needs a static size on its axis")
    check_constant((size,), np.int64, f"the index vector over axis {axis} of shape {list(shape_of(x))}")
    return size


def _iota(size, axis, rank, dtype=np.int64):
    shape = [1] * rank
    shape[axis] = size
    return np.arange(size, dtype=dtype).reshape(shape)


def one_hot(labels, classes: int, dtype, axis: int):
    """labels [..] -> a one-hot of `dtype` with the class axis inserted at `axis`."""
    if isinstance(classes, int):
        check_constant((classes,), np.int64, f"the class vector of {classes} classes")
    hit = F.equal(F.expand_dims(labels, axis), _iota(classes, axis, rank_of(labels) + 1, labels.dtype))
    return F.astype(hit, dtype)


def _gather(n, x, indices):
    axis = n.axis(n.attr("axis", 0), rank_of(x))
    if isinstance(indices, Tensor):
        return FI.take(x, indices, axis=axis)
    size = _static_size(n, x, axis)
    idx = np.asarray(n.ints(indices, "indices"), dtype=np.int64).reshape(indices.shape)
    if ((idx < -size) | (idx >= size)).any():
        raise n.error(f"indices {idx.tolist()} out of range for axis {axis} of size {size}")
    idx = idx % size if size else idx
    if idx.ndim == 0:
        return x[(slice(None),) * axis + (int(idx),)]
    flat = idx.reshape(-1)
    if not flat.size:
        raise n.error("Gather with empty indices")
    step = int(flat[1] - flat[0]) if flat.size > 1 else 1
    if step and (np.diff(flat) == step).all():
        stop = int(flat[-1]) + step
        y = x[(slice(None),) * axis + (slice(int(flat[0]), None if stop < 0 else stop, step),)]
    else:  # any other known indices: one take of them
        return FI.take(x, idx, axis=axis)
    shape = shape_of(x)
    return reshape(y, shape[:axis] + idx.shape + shape[axis + 1:])


def _arg(reduce_max: bool):
    op = "argmax" if reduce_max else "argmin"

    def rule(n, x):
        return F.apply_op(op, [x], {"axis": n.axis(n.attr("axis", 0), rank_of(x)),
                                    "keepdims": bool(n.attr("keepdims", 1)),
                                    "select_last_index": bool(n.attr("select_last_index", 0))})
    return rule


def _hardmax_axis(n, x, axis):
    size = _static_size(n, x, axis)
    first = F.min(F.where(F.equal(x, F.max(x, axis, keepdims=True)), _iota(size, axis, rank_of(x)), size),
                  axis, keepdims=True)
    return F.astype(F.equal(first, _iota(size, axis, rank_of(x))), x.dtype)


def _hardmax(n, x):
    r = rank_of(x)
    if n.opset >= 13:
        return _hardmax_axis(n, x, n.axis(n.attr("axis", -1), r))
    axis = n.axis(n.attr("axis", 1), r)
    shape = shape_of(x)
    flat = reshape(x, (prod(shape[:axis]), prod(shape[axis:])))
    return reshape(_hardmax_axis(n, flat, 1), shape)


def _one_hot_rule(n, ids, depth, values):
    depth = int(n.scalar(depth, "depth"))
    if depth < 0:
        raise n.error(f"depth {depth} is negative")
    check_constant((depth,), np.int64, f"the class vector of depth {depth}")
    axis = n.axis(n.attr("axis", -1), rank_of(ids) + 1)
    if np.dtype(ids.dtype).kind == "f":
        ids = F.astype(ids, "i64")
    ids = F.where(F.less(ids, 0), ids + depth, ids)
    hit = F.equal(F.expand_dims(ids, axis), _iota(depth, axis, rank_of(ids) + 1, ids.dtype))
    off, on = (values[0], values[1]) if isinstance(values, Tensor) else (np.asarray(values[0]), np.asarray(values[1]))
    return F.where(hit, on, off)


def _trilu(n, x, k=None):
    k = 0 if k is None else int(n.scalar(k, "k"))
    return F.apply_op("trilu", [x], {"upper": bool(n.attr("upper", 1)), "k": k})


def _cumsum(n, x, axis):
    axis = n.axis(int(n.scalar(axis, "axis")), rank_of(x))
    return FI.cumsum(x, axis, exclusive=bool(n.attr("exclusive", 0)), reverse=bool(n.attr("reverse", 0)))


def _einsum(n, *xs):
    return FN.einsum(n.attr("equation"), *xs)


def _range(n, *bounds):
    if all(isinstance(b, np.ndarray) for b in bounds):  # known bounds the fold refused: too long
        start, limit, delta = (n.scalar(b, w) for b, w in zip(bounds, ("start", "limit", "delta")))
        length = max(math.ceil((limit - start) / delta), 0) if delta else 0
        check_constant((length,), bounds[0].dtype, f"Range({start}, {limit}, {delta})")
        raise n.error(f"Range({start}, {limit}, {delta}) cannot be computed at import time")
    raise n.error("Range with bounds computed at run time: its length must be known at import time")


def _run_dim(x, axis):
    """Dim `axis` of x: an int, or (symbolic) an i64 scalar computed when the graph runs."""
    d = shape_of(x)[axis]
    if isinstance(d, int):
        return d
    return F.sum(F.astype(F.greater_equal(F.apply_op("iota", [x], {"axis": axis}), 0), "i64"))


def _gather_nd(n, data, indices):
    b, ds, ishape = n.attr("batch_dims", 0), shape_of(data), shape_of(indices)
    m = ishape[-1] if ishape else None
    if not isinstance(m, int) or not 1 <= m <= len(ds) - b or not 0 <= b < len(ishape):
        raise n.error(f"GatherND of data {list(ds)} with indices {list(ishape)} and batch_dims {b}",
                      hint="indices' last dim must be a static m with 1 <= m <= rank(data) - batch_dims")
    if tuple(ishape[:b]) != tuple(ds[:b]):
        raise n.error(f"GatherND: batch dims of indices {list(ishape[:b])} differ from data's {list(ds[:b])}")
    if is_static(indices) and all(isinstance(d, int) for d in ds[:b + m]):
        idx = np.asarray(indices, dtype=np.int64)  # known indices (a folded model): numpy
        where, less = np.where, np.less
    else:
        idx, where, less = indices, F.where, F.less
    lead = len(ishape) - 1
    flat = None
    for axis in range(b + m):
        size = _run_dim(data, axis) if flat is not None or axis >= b else None
        if axis < b:  # the batch coordinate: an iota over that axis, broadcast over the rest
            d = ds[axis]
            comp = np.arange(d, dtype=np.int64) if isinstance(d, int) else F.apply_op("iota", [data], {"axis": axis})
            comp = reshape(comp, tuple(d if a == axis else 1 for a in range(lead)))
        else:
            comp = idx[(slice(None),) * lead + (axis - b,)]
            comp = where(less(comp, 0), comp + size, comp)
        flat = comp if flat is None else flat * size + comp
    table = reshape(data, (prod(ds[:b + m]),) + tuple(ds[b + m:]))
    return FI.take(table, flat, axis=0)


INDEX = {
    "Gather": _gather, "GatherND": _gather_nd, "ArgMax": _arg(True), "ArgMin": _arg(False), "Hardmax": _hardmax,
    "OneHot": _one_hot_rule, "Trilu": _trilu, "CumSum": _cumsum, "Range": _range,
    "Einsum": _einsum,
}
