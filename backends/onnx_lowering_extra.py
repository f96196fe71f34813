"""EXPORT rules of ir/ops_extra.py's ops beyond their derived twins (merged into
backends/onnx_lowering.EXPORT). argmax, argmin, take (Gather), einsum and batch_norm
(BatchNormalization) are their twins as derived; here:

  1. cumsum and trilu take their axis / diagonal as an int64 input (CumSum, Trilu).
  2. scatter_add calls the local function `tapeir.scatter_add` (ScatterND with
     reduction="add", opset 16+, indices wrapped into [0, n) by Mod and given a trailing
     axis of 1) on the data with the scattered axis moved first (Transpose); O(indices)
     work, where a one-hot matmul would be indices x rows.
  3. random_uniform calls the local function `tapeir.random_uniform(key, shape)`:
     ir/reference_extra.py's hash, op for op in int64 (Range over the element count,
     Add/Mul/Mod with every product below 2**62, Div by 128), then Cast to float32 and Mul
     by 2**-24: exact steps, so onnxruntime draws the numbers the numpy backend draws, bit
     for bit. Both functions import back as the ops (frontend/onnx/table.py).
"""
from __future__ import annotations

import numpy as np

from onnx import helper

from ..ir.reference_extra import KEY_MULT, P, RANDOM_ROUNDS
from . import onnx_functions
from ..ir.dtypes import to_numpy


def elem_type(dtype: str) -> int:  # as onnx_lowering's (which imports this module)
    return helper.np_dtype_to_tensor_dtype(to_numpy(dtype))


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
    if not axis:
        low.call("scatter_add", d, i, u, out=outs[0])
        return
    perm_d = [axis] + [k for k in range(r) if k != axis]
    perm_u = list(range(axis, axis + q)) + list(range(axis)) + list(range(axis + q, r - 1 + q))
    y = low.call("scatter_add", low.op("Transpose", d, perm=perm_d), i, low.op("Transpose", u, perm=perm_u))
    low.op("Transpose", y, out=outs[0], perm=[int(k) for k in np.argsort(perm_d)])


def _random_uniform(low, n, ins, outs):
    f64 = n.attrs["dtype"] == "f64"
    u = low.call("random_uniform", ins[0], low.shape_tensor(n.attrs["shape"]), out=None if f64 else outs[0])
    if f64:  # exact: the numbers are multiples of 2**-24 below 1
        low.op("Cast", u, out=outs[0], to=elem_type("f64"))


# ---- the local functions' bodies (registered into backends/onnx_functions.py) ----------

def _scatter_add_body(opset):
    """Y = DATA with UPD added at IDX along axis 0; IDX wrapped into [0, n) first (Mod,
    fmod=0: Python's, so -1 is n - 1), as ScatterND wants indices in range."""
    n = helper.make_node
    return ["DATA", "IDX", "UPD"], ["Y"], [], [
        n("Shape", ["DATA"], ["rows"], start=0, end=1),
        n("Mod", ["IDX", "rows"], ["wrapped"]),
        n("Constant", [], ["last"], value_ints=[-1]),
        n("Unsqueeze", ["wrapped", "last"], ["at"]),
        n("ScatterND", ["DATA", "at", "UPD"], ["Y"], reduction="add"),
    ]


def _random_uniform_body(opset):
    """U (float32, of shape SHAPE) from int64 KEY: ir/reference_extra.py's hash, step for step."""
    nodes = []

    def op(op_type, *ins, **attrs):
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op_type, list(ins), [out], **attrs))
        return out

    def c(v):
        return op("Constant", value_int=int(v))

    def mod(x):
        return op("Mod", x, c(P))

    count = op("ReduceProd", "SHAPE", keepdims=0)
    x = op("Reshape", op("Range", c(0), count, c(1)), "SHAPE")
    k = mod("KEY")
    x = mod(op("Add", x, mod(op("Mul", k, c(KEY_MULT)))))
    for km, ko, m in RANDOM_ROUNDS:
        x = mod(op("Add", x, mod(op("Add", op("Mul", k, c(km)), c(ko)))))
        x2 = mod(op("Mul", x, x))
        x = mod(op("Mul", mod(op("Mul", x2, x2)), x))
        x = mod(op("Mul", x, c(m)))
    bits = op("Cast", op("Div", x, c(128)), to=helper.TensorProto.FLOAT)
    nodes.append(helper.make_node("Mul", [bits, op("Constant", value_float=2.0 ** -24)], ["U"]))
    return ["KEY", "SHAPE"], ["U"], [], nodes


# registered from here (not written into onnx_functions.py) so issue 11's export stays in one module
onnx_functions._BODIES.update(scatter_add=_scatter_add_body, random_uniform=_random_uniform_body)
onnx_functions.NAMES = tuple(onnx_functions._BODIES)
onnx_functions._DOCS.update(
    scatter_add="DATA with UPD added at IDX along axis 0 (ScatterND, reduction='add'): the adjoint of Gather",
    random_uniform="uniform float32 in [0, 1) of shape SHAPE from int64 KEY: a counter-based integer hash "
                   "(identical to tapeir's numpy backend)")


EXPORT_EXTRA = {"cumsum": _cumsum, "trilu": _trilu, "scatter_add": _scatter_add, "random_uniform": _random_uniform}
