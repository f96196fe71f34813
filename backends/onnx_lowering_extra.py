"""EXPORT rules of ir/ops_extra.py's ops beyond their derived twins (merged into
backends/onnx_lowering.EXPORT). argmax, argmin, take (Gather), einsum and batch_norm
(BatchNormalization) are their twins as derived; here:

  1. cumsum and trilu take their axis / diagonal as an int64 input (CumSum, Trilu).
  2. scatter_add is ScatterND(reduction="add") (opset 16+) on the data with the scattered
     axis moved first (Transpose), indices wrapped into [0, n) (Mod) and given a trailing
     axis of 1; O(indices) work, where a one-hot matmul would be indices x rows.
  3. random_uniform is ir/reference_extra.py's hash, op for op in int64 (Range over the
     element count, Add/Mul/Mod with every product below 2**62, Div by 128), then Cast
     to float32 and Mul by 2**-24: exact steps, so onnxruntime draws the numbers the
     numpy backend draws, bit for bit.
"""
from __future__ import annotations

import numpy as np

from ..ir.reference_extra import KEY_MULT, P, RANDOM_ROUNDS
from .onnx_lowering import elem_type


def _cumsum(low, n, ins, outs):
    a = n.attrs
    low.op("CumSum", ins[0], low.const(np.array(a["axis"], np.int64)), out=outs[0],
           exclusive=int(a["exclusive"]), reverse=int(a["reverse"]))


def _trilu(low, n, ins, outs):
    low.op("Trilu", ins[0], low.const(np.array(n.attrs["k"], np.int64)), out=outs[0], upper=int(n.attrs["upper"]))


def _scatter_add(low, n, ins, outs):
    low.require(16, "scatter_add (ScatterND with reduction='add')")
    data, idx, upd = n.inputs
    axis, r, q = n.attrs["axis"], data.type.rank, idx.type.rank
    d, i, u = ins
    if idx.type.dtype != "i64":
        i = low.op("Cast", i, to=elem_type("i64"))
    i = low.op("Mod", i, low.dim(data.type.shape[axis]) if isinstance(data.type.shape[axis], str)
               else low.ints([data.type.shape[axis]]))  # fmod=0: Python's mod, so -1 is n-1
    i = low.op("Unsqueeze", i, low.ints([q]))
    if axis:
        perm_d = [axis] + [k for k in range(r) if k != axis]
        perm_u = list(range(axis, axis + q)) + list(range(axis)) + list(range(axis + q, r - 1 + q))
        d = low.op("Transpose", d, perm=perm_d)
        u = low.op("Transpose", u, perm=perm_u)
        y = low.op("ScatterND", d, i, u, reduction="add")
        low.op("Transpose", y, out=outs[0], perm=[int(k) for k in np.argsort(perm_d)])
    else:
        low.op("ScatterND", d, i, u, out=outs[0], reduction="add")


def _random_uniform(low, n, ins, outs):
    shape = n.attrs["shape"]

    def s(v):
        return low.const(np.array(v, np.int64))

    def mod(x):
        return low.op("Mod", x, s(P))

    if all(isinstance(d, int) for d in shape):
        count = s(int(np.prod(shape, dtype=np.int64)))
    else:
        count = low.op("ReduceProd", low.shape_tensor(shape), keepdims=0)
    x = low.op("Reshape", low.op("Range", s(0), count, s(1)), low.shape_tensor(shape))
    k = mod(ins[0])
    x = mod(low.op("Add", x, mod(low.op("Mul", k, s(KEY_MULT)))))
    for km, ko, m in RANDOM_ROUNDS:
        x = mod(low.op("Add", x, mod(low.op("Add", low.op("Mul", k, s(km)), s(ko)))))
        x2 = mod(low.op("Mul", x, x))
        x = mod(low.op("Mul", mod(low.op("Mul", x2, x2)), x))
        x = mod(low.op("Mul", x, s(m)))
    bits = low.op("Cast", low.op("Div", x, s(128)), to=elem_type("f32"))
    f64 = n.attrs["dtype"] == "f64"
    u = low.op("Mul", bits, low.const(np.array(2.0 ** -24, np.float32)), out=None if f64 else outs[0])
    if f64:
        low.op("Cast", u, out=outs[0], to=elem_type("f64"))


EXPORT_EXTRA = {"cumsum": _cumsum, "trilu": _trilu, "scatter_add": _scatter_add, "random_uniform": _random_uniform}
