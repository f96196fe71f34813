"""IMPORT, one rule per ONNX op type, and the other tables the driver reads.

  IMPORT            derived rows first: each IR op's ONNX twin (`onnx=` in ir/ops.py)
                    imports as that op, same inputs, the attributes the op declares (a
                    missing one takes the op's default, which is ONNX's); then the rules of
                    elementwise.py, reduce.py, shape.py, index.py, nn.py and recurrent.py, which override
                    a derived row or add an op type.
  TAPEIR_FUNCTIONS  tapeir's local functions (domain ir.registry.ONNX_DOMAIN) come back as
                    the IR ops they were exported from (`softplus`, not its body).
  FOLD_ONLY         op types imported only on values known at import time (Mod): not in IMPORT.
  STATIC_OPERANDS   operands that must be known at import time (shapes, axes, pads);
                    tests/backends/test_onnx_conformance.py bakes them into node tests.
"""
from __future__ import annotations

from .. import functions as F
from .. import functions_index as FI
from .. import functions_random as FR
from ...ir.registry import OPS
from .elementwise import ELEMENTWISE, FOLD_ONLY
from .index import INDEX
from .nn import NN
from .recurrent import RECURRENT
from .reduce import REDUCE
from .shape import SHAPE


def _twin(op: str):
    declared = OPS[op].attrs

    def rule(n, *xs):
        return F.apply_op(op, list(xs), {k: v for k, v in n.attrs.items() if k in declared})
    return rule


IMPORT = {**{d.onnx: _twin(op) for op, d in OPS.items() if d.onnx},
          **ELEMENTWISE, **REDUCE, **SHAPE, **INDEX, **NN, **RECURRENT}

TAPEIR_FUNCTIONS = {
    "softplus": lambda n, x: F.softplus(x),
    "logsumexp": lambda n, x: F.logsumexp(x, axis=tuple(n.attr("axes")), keepdims=bool(n.attr("keepdims", 0))),
    "gelu": lambda n, x: F.gelu(x),
    "gelu_tanh": lambda n, x: F.gelu(x, approximate="tanh"),
    "scatter_add": lambda n, data, idx, upd: FI.scatter_add(data, idx, upd, axis=0),
    "random_uniform": lambda n, key, shape: FR.random_uniform(key, n.dims(shape, "shape")),
    "pad_to": lambda n, x, ref: F.apply_op("pad_to", [x, ref], {"axes": tuple(n.attr("axes"))}),
}

STATIC_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Pad": (1, 2, 3), "Slice": (1, 2, 3, 4), "Squeeze": (1,),
    "Unsqueeze": (1,), "Split": (1,), "ConstantOfShape": (0,), "Dropout": (1, 2),
    "Range": (0, 1, 2), "OneHot": (1,), "Trilu": (1,), "CumSum": (1,), "LSTM": (4,), "GRU": (4,),
    "SplitToSequence": (1,),
    **{op: (1,) for op in REDUCE if op.startswith("Reduce")},
}
