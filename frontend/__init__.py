"""The tracing frontend: Tensor, trace(), and the tp.* functions."""
from .tensor import Tensor
from .tracer import Spec, trace
from . import functions

__all__ = ["Tensor", "Spec", "trace", "functions"]
