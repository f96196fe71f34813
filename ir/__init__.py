"""The IR: dtypes, types, the op registry, Value/Node/Graph, text form, verifier."""
from . import ops as _ops  # noqa: F401  (fills the registry; then the op families beyond it)
from . import ops_index as _ops_index  # noqa: F401  (argmax, argmin, take, scatter_add, cumsum, trilu)
from . import ops_nn as _ops_nn  # noqa: F401  (einsum, batch_norm)
from . import ops_random as _ops_random  # noqa: F401  (random_uniform)
from .dtypes import DTYPES, dtype_of
from .errors import ParseError, RunError, TapeirError, TraceError, TypeRuleError, VerifyError
from .graph import Graph, Node, Value, constant
from .parser import parse
from .printer import print_graph
from .pytree import TreeDef, flatten, unflatten
from .registry import OPS, Attr, Category, OpDef, get_op, ops_in
from .serialize import load, save
from .types import TensorType
from .verifier import verify

# tapeir's version lives here, the lowest layer, so backends can stamp it (ONNX
# producer_version) without importing the package root; tapeir.__version__ re-exports it.
__version__ = "0.1.0"

__all__ = [
    "DTYPES", "dtype_of", "ParseError", "RunError", "TapeirError", "TraceError", "TypeRuleError",
    "VerifyError", "Graph", "Node", "Value", "constant", "parse", "print_graph", "TreeDef",
    "flatten", "unflatten", "OPS", "Attr", "Category", "OpDef", "get_op", "ops_in", "load", "save",
    "TensorType", "verify",
]
