"""The frontend: everything that turns something else into IR. The Python tracer (Tensor,
trace(), the tp.* functions) builds through ir/builder.py; so does the ONNX importer."""
from . import functions
from .tensor import Tensor
from .tracer import Spec
from .tracing import call, trace

__all__ = ["Tensor", "Spec", "trace", "call", "functions"]
