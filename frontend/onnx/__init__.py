"""ONNX import: `from_onnx(model) -> Graph`, a frontend like the tracer it records through.

  driver.py       from_onnx: load the model, its inputs as Specs, walk the nodes
  validate.py     the checks before the walk (inlining budget, names written once, outputs,
                  initializer data, arity and attribute types, UTF-8, dim names -> symbols)
  fold.py         known values fold in onnx's reference evaluator, within max_constant_bytes
  node.py         the node view rules see (OnnxNode), attribute and dtype decoding, the
                  import's bounds (MAX_NODES, MAX_CONSTANT_BYTES, check_constant)
  table.py        IMPORT (one rule per ONNX op type: rows derived from the registry's ONNX
                  twins, overridden by the families' rules), TAPEIR_FUNCTIONS, STATIC_OPERANDS
  elementwise.py  elementwise rules beyond the twins (composites, variadic, Clip, Cast)
  reduce.py       Reduce* and the softmax family
  shape.py        shape ops, known values (Constant, Shape) and SYMBOLIC shape arithmetic
  index.py        Gather, OneHot, ArgMax/ArgMin, Hardmax, Trilu, CumSum, Range
  nn.py           Gemm, convolution, pooling, normalization, losses
  recurrent.py    LSTM and GRU, unrolled over a static sequence length

Importing this package imports onnx; `import tapeir` does not.
"""
from .driver import from_onnx
from .node import MAX_CONSTANT_BYTES, MAX_NODES
from .table import IMPORT, STATIC_OPERANDS, TAPEIR_FUNCTIONS

__all__ = ["from_onnx", "IMPORT", "STATIC_OPERANDS", "TAPEIR_FUNCTIONS", "MAX_NODES", "MAX_CONSTANT_BYTES"]
