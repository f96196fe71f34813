"""Backends that run a Graph: the numpy interpreter (more to come)."""
from .numpy_backend import IMPL, NumpyFunction, compile_numpy

__all__ = ["IMPL", "NumpyFunction", "compile_numpy"]
