"""What every ONNX import rule shares: the node view, attribute and dtype decoding,
static values, dims.

While importing, an ONNX value is one of
  - a traced `Tensor` (it depends on a graph input),
  - a numeric numpy array (known at import time: a Constant, an initializer kept as a
    constant, or the folded result of a node whose inputs were all known),
  - a *symbolic* int64 vector: a numpy array of dtype object whose items are dims
    (ints and symbols like "B"). `Shape` of a tensor with a symbolic dim gives one, and
    the shape arithmetic exporters emit (Gather, Unsqueeze, Concat, ...) keeps it so,
    until a Reshape/Expand consumes it as its target shape.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass

import numpy as np
from onnx import helper, numpy_helper

from .. import functions as F
from ..tensor import Tensor
from ...ir.dtypes import dtype_of
from ...ir.errors import TapeirError
from ...ir.types import dim_product

INT_MAX = 2**63 - 1

# ONNX TensorProto element types tapeir has a dtype for
ONNX_DTYPES = {1: "f32", 10: "f16", 11: "f64", 6: "i32", 7: "i64", 9: "bool"}


# ---- the import's bounds (from_onnx's max_nodes and max_constant_bytes) ----------------

MAX_NODES = 200_000            # ONNX nodes once model-local functions are inlined (~10 s of import)
MAX_CONSTANT_BYTES = 1 << 24   # one constant computed at import time: 16 MiB


@dataclass(frozen=True)
class Limits:
    max_nodes: float = MAX_NODES
    max_constant_bytes: float = MAX_CONSTANT_BYTES


_LIMITS: contextvars.ContextVar[Limits] = contextvars.ContextVar("tapeir_onnx_limits", default=Limits())


@contextlib.contextmanager
def limits_in_force(limits: Limits):
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def limits() -> Limits:
    return _LIMITS.get()


# ---- where each symbolic dim can be read at run time ----------------------------------
# A Range over the sequence length or a Slice to it needs the dim as a run-time size; the
# IR reads it from the shape of a tensor that has it (iota, slice_to). The driver notes,
# per import, the first tensor seen with each symbol and the axis it sits on.

_DIM_SOURCES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tapeir_onnx_dims", default=None)


@contextlib.contextmanager
def dim_sources():
    token = _DIM_SOURCES.set({})
    try:
        yield
    finally:
        _DIM_SOURCES.reset(token)


def note_dims(x) -> None:
    table = _DIM_SOURCES.get()
    if table is not None and isinstance(x, Tensor):
        for axis, d in enumerate(x.shape):
            if isinstance(d, str):
                table.setdefault(d, (x, axis))


def dim_source(d):
    """(tensor, axis) holding symbolic dim `d` at run time, or None."""
    table = _DIM_SOURCES.get()
    return None if table is None or not isinstance(d, str) else table.get(d)


def nbytes(shape, dtype) -> int:
    """Bytes of an array of `shape` (exact, no overflow: Python ints)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def constant_fits(shape, dtype) -> bool:
    return nbytes(shape, dtype) <= limits().max_constant_bytes


def check_constant(shape, dtype, what: str) -> None:
    """Refuse to build a constant of `shape` at import time when it is over the bound: a
    few bytes of a model (a dim, a pad, a depth) must not cost gigabytes of memory."""
    if not constant_fits(shape, dtype):
        raise TapeirError(f"{what} would be a constant of shape {list(shape)} ({np.dtype(dtype)}, "
                          f"{nbytes(shape, dtype):,} bytes), over the import's max_constant_bytes="
                          f"{limits().max_constant_bytes:,}",
                          hint="if the model is trusted, pass a larger max_constant_bytes to tp.from_onnx")


def elem_name(elem: int) -> str:
    """An ONNX element type's name (FLOAT, UINT8, ...), or its number when it has none."""
    from onnx import TensorProto
    try:
        return TensorProto.DataType.Name(elem)
    except ValueError:
        return f"#{elem} (no ONNX type has that number)"


def is_static(v) -> bool:
    return isinstance(v, np.ndarray)


def is_symbolic(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object


def sparse_to_dense(sp) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    idx = numpy_helper.to_array(sp.indices)
    if any(d < 0 for d in sp.dims):
        raise TapeirError(f"sparse tensor {sp.values.name!r} has a negative dim in {list(sp.dims)}")
    check_constant(sp.dims, values.dtype, f"sparse tensor {sp.values.name!r} made dense")
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


def _f32_decimal(x: float) -> float:
    """An ONNX float attribute (always float32) as the shortest decimal that rounds to it:
    an exported alpha=0.2 reads back as 0.2, not 0.20000000298023224, so a float64 graph
    (whose numpy kernels use the attribute in float64) gives the same results after
    IR -> ONNX -> IR. In float32 both are the same number."""
    return float(str(np.float32(x)))


def attr_value(a):
    """An AttributeProto's value: numbers, strings, lists, numpy arrays for tensors."""
    if a.type == a.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == a.SPARSE_TENSOR:
        return sparse_to_dense(a.sparse_tensor)
    if a.type in (a.GRAPH, a.GRAPHS, a.TYPE_PROTO, a.TYPE_PROTOS, a.TENSORS, a.SPARSE_TENSORS):
        return a  # no rule reads these; kept so a rule can name them in its error
    v = helper.get_attribute_value(a)
    if a.type == a.FLOAT:
        return _f32_decimal(v)
    if a.type == a.FLOATS:
        return [_f32_decimal(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, list):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
    return v


def value_dtype(x) -> str:
    """The IR dtype of an imported value (a traced Tensor or a numpy array)."""
    return x.type.dtype if isinstance(x, Tensor) else dtype_of(x.dtype)


class OnnxNode:
    """The ONNX node being imported, as its rule sees it."""

    def __init__(self, proto, opset: int, where: str):
        self.proto = proto
        self.op = proto.op_type
        self.opset = opset
        self.where = where
        self.attrs = {}
        for a in proto.attribute:
            try:
                self.attrs[a.name] = attr_value(a)
            except UnicodeDecodeError as e:
                raise self.error(f"string attribute {a.name!r} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
            except TapeirError as e:
                raise self.error(f"attribute {a.name!r}: {e.problem}", hint=e.hint) from None
            except Exception as e:  # a tensor attribute whose data does not match its dims, ...
                raise self.error(f"attribute {a.name!r} cannot be decoded: {type(e).__name__}: {e}") from None
        self.wants = [bool(o) for o in proto.output]  # which outputs the model reads

    def attr(self, name, default=None):
        return self.attrs.get(name, default)

    def error(self, problem: str, hint: str | None = None) -> TapeirError:
        return TapeirError(f"ONNX {self.op} node {self.where!r}: {problem}", where=self.where, hint=hint)

    def wants_output(self, i: int) -> bool:
        return i < len(self.wants) and self.wants[i]

    def ints(self, v, what: str) -> list[int] | None:
        """A static integer input (axes, pads, starts...) as a list; None stays None."""
        if v is None:
            return None
        if not is_static(v) or is_symbolic(v) or v.dtype.kind not in "iu":
            raise self.error(f"{what} must be integers known at import time, got "
                             + (f"a computed tensor {v.type}" if isinstance(v, Tensor) else f"{v!r}"),
                             hint="tapeir needs static shapes and axes; export with constant folding on")
        return [int(x) for x in v.reshape(-1)]

    def scalar(self, v, what: str):
        """A static scalar input (Clip bounds, pad value) as a Python number; None stays None."""
        if v is None:
            return None
        if not is_static(v) or is_symbolic(v) or v.size != 1:
            raise self.error(f"{what} must be a scalar known at import time")
        return v.reshape(-1)[0].item()

    def dims(self, v, what: str) -> list:
        """A target shape: static ints, or dims of a symbolic shape vector."""
        if is_symbolic(v):
            return [d if isinstance(d, str) else int(d) for d in v.reshape(-1)]
        return self.ints(v, what)

    def axis(self, a: int, rank: int) -> int:
        if not -rank <= a < max(rank, 1):
            raise self.error(f"axis {a} is out of range for rank {rank}")
        return a % max(rank, 1)

    def axes(self, axes, rank: int) -> tuple[int, ...]:
        return tuple(sorted(self.axis(a, rank) for a in axes))

    def ir_dtype(self, elem: int, what: str) -> str:
        """The IR dtype of an ONNX element type (Cast's `to`)."""
        if elem not in ONNX_DTYPES:
            raise self.error(f"{what} has ONNX type {elem_name(elem)}, which tapeir has no dtype for",
                             hint="tapeir supports float16/32/64, int32/64 and bool")
        return ONNX_DTYPES[elem]


def shape_of(x) -> tuple:
    return tuple(x.shape)


def rank_of(x) -> int:
    return len(x.shape)


def reshape(x, shape):
    """Reshape unless the shape is already right (keeps IR dumps free of no-op reshapes)."""
    shape = tuple(shape)
    if shape_of(x) == shape:
        return x
    return np.reshape(x, shape) if isinstance(x, np.ndarray) else F.reshape(x, shape)


def prod(dims):
    return dim_product(dims)
