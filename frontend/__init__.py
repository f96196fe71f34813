"""Frontends turn something into IR: the tracer (Tensor, trace(), the tp.* functions) and
the ONNX importer (frontend/onnx/, imported on first use: it needs onnx)."""
from .tensor import Tensor
from .tracer import Spec, trace
from . import functions

__all__ = ["Tensor", "Spec", "trace", "functions"]
