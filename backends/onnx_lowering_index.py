"""EXPORT rules of ir/ops_index.py's ops beyond their derived twins (merged into
backends/onnx_lowering.EXPORT). argmax, argmin and take (Gather) are their twins as
derived; here:

  1. cumsum and trilu take their axis / diagonal as an int64 input (CumSum, Trilu).
  2. scatter_add calls the local function `tapeir.scatter_add` (ScatterND with
     reduction="add", opset 16+, indices wrapped into [0, n) by Mod and given a trailing
     axis of 1) on the data with the scattered axis moved first (Transpose); O(indices)
     work, where a one-hot matmul would be indices x rows. It imports back as the op
     (frontend/onnx/table.py).

ir/ops_nn.py's einsum and batch_norm (BatchNormalization) export as their derived twins
and need no module here.
"""
from __future__ import annotations

import numpy as np

from onnx import helper

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


# registered from here (not written into onnx_functions.py) so the family's export stays in one module
onnx_functions.register("scatter_add", _scatter_add_body,
                        "DATA with UPD added at IDX along axis 0 (ScatterND, reduction='add'): the adjoint of Gather")


EXPORT_INDEX = {"cumsum": _cumsum, "trilu": _trilu, "scatter_add": _scatter_add}
