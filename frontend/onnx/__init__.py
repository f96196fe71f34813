"""ONNX import: `from_onnx(model) -> Graph`, a frontend like the tracer it records through.

  driver.py       from_onnx: load the model, its inputs as Specs, walk the nodes, fold
                  known values
  node.py         the node view rules see (OnnxNode), attribute and dtype decoding
  table.py        IMPORT (one rule per ONNX op type: rows derived from the registry's ONNX
                  twins, overridden by the families' rules), TAPEIR_FUNCTIONS, STATIC_OPERANDS
  elementwise.py  elementwise rules beyond the twins (composites, variadic, Clip, Cast)
  reduce.py       Reduce* and the softmax family
  shape.py        shape ops, known values (Constant, Shape) and SYMBOLIC shape arithmetic
  index.py        Gather, OneHot, ArgMax/ArgMin, Hardmax, Trilu, CumSum, Range
  nn.py           Gemm, convolution, pooling, normalization, losses

Importing this package imports onnx; `import tapeir` does not.
"""
from .driver import from_onnx
from .table import IMPORT, STATIC_OPERANDS, TAPEIR_FUNCTIONS

__all__ = ["from_onnx", "IMPORT", "STATIC_OPERANDS", "TAPEIR_FUNCTIONS"]
