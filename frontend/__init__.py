"""The frontend: everything that turns something else into IR, through ir/builder.py: the
Python tracer (Tensor, trace(), the tp.* functions) and the ONNX importer (frontend/onnx/,
imported on first use: it needs onnx)."""
from . import functions
from .tensor import Tensor
from .tracer import Spec
from .tracing import call, trace

__all__ = ["Tensor", "Spec", "trace", "call", "functions"]
