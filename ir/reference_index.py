"""Reference kernels of ir/ops_index.py's ops (merged into REFERENCE by ir/reference.py).

Indices are checked here (an out-of-range one is an error when the graph runs); negative
ones count from the end.
"""
from __future__ import annotations

import math

import numpy as np


def _index(idx, n, op):
    bad = (idx < -n) | (idx >= n)
    if bad.any():
        raise ValueError(f"{op}: index {int(idx[bad].flat[0])} is out of range for an axis of size {n} "
                         f"(indices must be in [-{n}, {n - 1}])")
    return np.where(idx < 0, idx + n, idx)


def take(x, idx, *, axis):
    return np.take(x, _index(idx, x.shape[axis], "take"), axis=axis)


ONE_HOT_ELEMS = 1 << 20  # scatter_add as a product with a one-hot matrix up to this size (vocab x indices)


def scatter_add(data, idx, upd, *, axis):
    n = data.shape[axis] if data.ndim else 0
    if (axis == 0 and data.dtype.kind == "f" and upd.dtype == data.dtype and n * idx.size <= ONE_HOT_ELEMS
            and np.isfinite(upd).all()):
        # an embedding's gradient: one BLAS product with a one-hot [n, indices] matrix (np.add.at
        # took ~0.2 ms for 256 rows of 64); finite updates only, as 0 * inf would be nan elsewhere
        i = _index(idx, n, "scatter_add").reshape(-1)
        hot = np.zeros((n, i.size), data.dtype)
        hot[i, np.arange(i.size)] = 1
        width = math.prod(data.shape[1:])
        return (data.reshape(n, width) + hot @ upd.reshape(i.size, width)).reshape(data.shape)
    out = data.copy()
    moved = np.moveaxis(out, axis, 0)  # a view: adding into it adds into out
    i = _index(idx, data.shape[axis], "scatter_add").reshape(-1)
    u = np.moveaxis(upd.reshape(data.shape[:axis] + (i.size,) + data.shape[axis + 1:]), axis, 0)
    np.add.at(moved, i, u)
    return out


def cumsum(x, *, axis, exclusive, reverse):
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:  # shifted by one (not y - x: that would round differently from onnxruntime)
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)), np.take(y, range(y.shape[axis] - 1), axis=axis)],
                           axis=axis) if y.shape[axis] else y
    return np.ascontiguousarray(np.flip(y, axis) if reverse else y)


def trilu(x, *, upper, k):
    return (np.triu if upper else np.tril)(x, k)


def _with(fn, *names):
    return lambda attrs: (lambda *xs: fn(*xs, **{n: attrs[n] for n in names}))


def _arg(fn):
    def make(a):
        axis, keep, last = a["axis"], a["keepdims"], a["select_last_index"]

        def run(x):
            if last:  # the last extreme: the first one in the flipped axis, counted from the end
                i = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis, keepdims=True)
            else:
                i = fn(x, axis=axis, keepdims=True)
            return np.asarray(i if keep else np.squeeze(i, axis), dtype=np.int64)
        return run
    return make


REFERENCE_INDEX = {
    "argmax": _arg(np.argmax), "argmin": _arg(np.argmin),
    "take": _with(take, "axis"), "scatter_add": _with(scatter_add, "axis"),
    "cumsum": _with(cumsum, "axis", "exclusive", "reverse"),
    "trilu": _with(trilu, "upper", "k"),
}
