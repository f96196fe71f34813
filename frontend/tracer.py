"""The tracer: an IR builder (ir/builder.py) whose nodes record the user's source line.

Every node records the user's `file:line`: the first stack frame outside tapeir's own
folders. `recording(builder)` makes a builder the one tp.* functions record into when
none of their operands is a Tensor; `Spec` is an abstract argument of `tp.trace`
(frontend/tracing.py).
"""
from __future__ import annotations

import os
import sys
import threading

from ..ir.builder import Builder
from ..ir.dtypes import dtype_of
from ..ir.errors import TraceError, TypeRuleError
from ..ir.types import TensorType

# tapeir's own files: the four layer folders and the face's __init__.py. In a checkout they
# sit at the repo root beside tapeir/; installed, all of them live in site-packages/tapeir/.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL = tuple(os.path.join(_ROOT, d) + os.sep for d in ("frontend", "ir", "passes", "backends")) + (
    os.path.join(_ROOT, "tapeir", "__init__.py"), os.path.join(_ROOT, "__init__.py"))
_SOURCE_CACHE: dict[str, str] = {}


def user_source() -> str | None:
    """`file:line` of the innermost frame outside tapeir (relative to the cwd when inside it)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_INTERNAL):
        f = f.f_back
    if f is None:
        return None
    fname = f.f_code.co_filename
    short = _SOURCE_CACHE.get(fname)
    if short is None:
        short = fname
        if os.path.isabs(fname):
            rel = os.path.relpath(fname)
            if not rel.startswith(".."):
                short = rel
        _SOURCE_CACHE[fname] = short = short.replace(os.sep, "/")
    return f"{short}:{f.f_lineno}"


class Spec:
    """An abstract argument for `trace`: a shape and a dtype, no values.

    shape is a tuple of ints and symbolic dims (names such as "B", or products such as
    "4*B"), bound to sizes when the graph runs; dtype is anything numpy understands or a
    short name (default "float32").

    >>> import tapeir as tp
    >>> tp.Spec(("B", 64)).type, tp.Spec((3,), "int64").type
    (f32[B,64], i64[3])
    """

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype="float32"):
        if isinstance(shape, (int, str)):
            raise TraceError(f"Spec({shape!r}): shape must be a tuple of dims", where=user_source(),
                             hint=f"write tp.Spec(({shape!r},)) for a 1-d tensor")
        self.shape = tuple(shape)
        TensorType(dtype_of(dtype), self.shape)  # validate dims now, where the user wrote them
        self.dtype = dtype_of(dtype)

    @property
    def type(self) -> TensorType:
        """The TensorType an input traced from this Spec has."""
        return TensorType(self.dtype, self.shape)

    def __repr__(self) -> str:
        return f"Spec({self.shape}, {self.dtype!r})"


class Tracer(Builder):
    """The builder of one `trace` call: nodes record the user's `file:line`, and an op that
    rejects its operands is a TraceError at that line."""

    def default_source(self) -> str | None:
        return user_source()

    def emit(self, op: str, inputs: list, attrs: dict | None = None) -> list:
        try:
            return Builder.emit(self, op, inputs, attrs)
        except TypeRuleError as e:
            raise TraceError(e.problem, where=e.where, hint=e.hint) from None


class _Recording(threading.local):
    """The builders recording in this thread, innermost last (traces in two threads don't mix)."""

    def __init__(self):
        self.builders: list[Builder] = []


_STACK = _Recording()


class recording:
    """`with recording(b):` tp.* functions called without a Tensor operand record into b.

    trace() records into its Tracer this way; autodiff runs VJP rules into its Builder.
    """

    __slots__ = ("builder",)

    def __init__(self, builder: Builder):
        self.builder = builder

    def __enter__(self):
        _STACK.builders.append(self.builder)
        return self.builder

    def __exit__(self, *exc):
        _STACK.builders.pop()


def current_builder(what: str = "this operation") -> Builder:
    """The innermost recording builder, or a TraceError saying that no trace is running."""
    if not _STACK.builders:
        raise TraceError(f"{what} needs a traced Tensor, but no trace is running",
                         where=user_source(), hint="call it inside a function passed to tp.trace(fn, *args)")
    return _STACK.builders[-1]
