"""Backends: run a Graph, or write it as ONNX.

- numpy (numpy_backend.py, buffers in numpy_memory.py): an interpreter of the reference
  semantics, one kernel factory per op in `IMPL` (ir/reference.py); `compile_numpy(g)`.
- onnxruntime (onnxruntime_backend.py): exports once and runs one InferenceSession;
  `compile_onnxruntime(g, providers=, intra_op_num_threads=, graph_optimization_level=,
  opset=)`. Its "Known differences" from the numpy backend are listed there.
- ONNX export (onnx_export.py; one lowering rule per op in `EXPORT`, onnx_lowering.py;
  local functions in onnx_functions.py): `to_onnx(g, opset)`, `save_onnx(g, path)`.
- Pictures (graphviz.py): `to_dot(g)`, `write(g, path)` (.dot; .svg/.png/.pdf through Graphviz's
  `dot`), nodes coloured by `node_roles(g)`; imported on use.
ONNX import turns something else into IR, so it is a frontend (frontend/onnx/).

Both backends take their arguments through backends/signature.py. Only the numpy backend
loads with `import tapeir`; the other names import onnx/onnxruntime on first use.

>>> import numpy as np, tapeir as tp, tapeir.backends as B
>>> g = tp.trace(lambda x: x * 2.0, tp.Spec((2,)))
>>> B.compile_numpy(g)(np.ones(2, np.float32)).tolist(), B.to_onnx(g).graph.node[0].op_type
([2.0, 2.0], 'Mul')
"""
from __future__ import annotations

import importlib

from .numpy_backend import IMPL, NumpyFunction, compile_numpy

_LAZY = {  # name -> the submodule defining it, imported on first access (PEP 562)
    "compile_onnxruntime": "onnxruntime_backend", "OnnxRuntimeFunction": "onnxruntime_backend",
    "to_onnx": "onnx_export", "save_onnx": "onnx_export", "EXPORT": "onnx_lowering",
}

__all__ = ["IMPL", "NumpyFunction", "compile_numpy", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
