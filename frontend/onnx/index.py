"""ONNX import rules that pick elements by index: Gather, OneHot, ArgMax/ArgMin, Hardmax,
Trilu, CumSum, Range.

tapeir's IR has no gather or scan ops, so these are rewritten into ones it has:
  1. Gather with indices known at import time: a slice (indices in arithmetic
     progression) or a concatenate of one-element slices, reshaped to the index shape.
  2. Gather with computed indices (an embedding lookup): one_hot(ids) @ data, so its
     gradient with respect to the data is the usual scatter-add.
  3. ArgMax/ArgMin: the smallest (or, with select_last_index, largest) position whose
     value equals the max (min): a where() over a constant iota, then min (max).
  4. Hardmax: one_hot(argmax). OneHot: where(equal(ids, iota), on, off).
  5. Trilu: where(constant triangle mask, x, 0).
  6. CumSum: x @ a constant 0/1 triangle (exclusive and reverse pick the triangle).
  7. Range: only with bounds known at import time (then it folds).
"""
from __future__ import annotations

import math

import numpy as np

from .. import functions as F
from ..tensor import Tensor
from .node import check_constant, constant_fits, prod, rank_of, reshape, shape_of


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


def _take(x, axis: int, k: int):
    return x[(slice(None),) * axis + (slice(k, k + 1),)]


def _gather(n, x, indices):
    axis = n.axis(n.attr("axis", 0), rank_of(x))
    size = _static_size(n, x, axis)
    if isinstance(indices, Tensor):
        return _gather_dynamic(n, x, indices, axis, size)
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
    else:
        y = F.concatenate([_take(x, axis, int(k)) for k in flat], axis=axis)
    shape = shape_of(x)
    return reshape(y, shape[:axis] + idx.shape + shape[axis + 1:])


def _gather_dynamic(n, x, ids, axis, size):
    if np.dtype(x.dtype).kind != "f":
        raise n.error(f"Gather with computed indices from {x.dtype} data",
                      hint="tapeir gathers computed indices (as a one-hot matmul) only from float data")
    ids = F.where(F.less(ids, 0), ids + size, ids)
    hot = one_hot(ids, size, x.dtype, rank_of(ids))                  # ids.shape + [size]
    rest = shape_of(x)[:axis] + shape_of(x)[axis + 1:]
    moved = x if axis == 0 else F.transpose(x, (axis,) + tuple(i for i in range(rank_of(x)) if i != axis))
    y = reshape(F.matmul(hot, reshape(moved, (size, prod(rest)))), shape_of(ids) + rest)
    if axis:
        q = rank_of(ids)
        y = F.transpose(y, tuple(range(q, q + axis)) + tuple(range(q)) + tuple(range(q + axis, rank_of(y))))
    return y


def _arg(reduce_max: bool):
    def rule(n, x):
        axis = n.axis(n.attr("axis", 0), rank_of(x))
        size = _static_size(n, x, axis)
        keep = bool(n.attr("keepdims", 1))
        best = (F.max if reduce_max else F.min)(x, axis, keepdims=True)
        iota = _iota(size, axis, rank_of(x))
        hit = F.equal(x, best)
        if n.attr("select_last_index", 0):
            return F.max(F.where(hit, iota, -1), axis, keep)
        return F.min(F.where(hit, iota, size), axis, keep)
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
    h, w = (_static_size(n, x, rank_of(x) - 2), _static_size(n, x, rank_of(x) - 1))
    upper = bool(n.attr("upper", 1))
    if not constant_fits((h, w), bool):  # the mask as IR, from two index vectors: j - i >= k (<= k for lower)
        rows, cols = _iota(h, 0, 2), _iota(w, 1, 2)
        check_constant((max(h, w),), np.int64, "Trilu's index vectors")
        mask = (F.greater_equal if upper else F.less_equal)(F.subtract(cols, rows), np.int64(k))
        return F.where(mask, x, np.zeros((), x.dtype))
    mask = (np.triu if upper else np.tril)(np.ones((h, w), dtype=bool), k)
    if mask.all():
        return x
    return F.where(mask, x, np.zeros((), x.dtype))


def _cumsum(n, x, axis):
    axis = n.axis(int(n.scalar(axis, "axis")), rank_of(x))
    size = _static_size(n, x, axis)
    check_constant((size, size), x.dtype, f"CumSum's {size}x{size} summing matrix")
    i, j = np.indices((size, size))
    src_before = i > j if n.attr("reverse", 0) else i < j
    tri = (src_before | ((i == j) & (not n.attr("exclusive", 0)))).astype(x.dtype)   # [from, to]
    last = rank_of(x) - 1
    if axis == last:
        return F.matmul(x, tri)
    perm = tuple(a for a in range(rank_of(x)) if a != axis) + (axis,)
    back = tuple(int(p) for p in np.argsort(perm))
    return F.transpose(F.matmul(F.transpose(x, perm), tri), back)


def _range(n, *bounds):
    if all(isinstance(b, np.ndarray) for b in bounds):  # known bounds the fold refused: too long
        start, limit, delta = (n.scalar(b, w) for b, w in zip(bounds, ("start", "limit", "delta")))
        length = max(math.ceil((limit - start) / delta), 0) if delta else 0
        check_constant((length,), bounds[0].dtype, f"Range({start}, {limit}, {delta})")
        raise n.error(f"Range({start}, {limit}, {delta}) cannot be computed at import time")
    raise n.error("Range with bounds computed at run time: its length must be known at import time")


INDEX = {
    "Gather": _gather, "ArgMax": _arg(True), "ArgMin": _arg(False), "Hardmax": _hardmax,
    "OneHot": _one_hot_rule, "Trilu": _trilu, "CumSum": _cumsum, "Range": _range,
}
