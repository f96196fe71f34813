"""Tracing: run a Python function on Tensors that record IR nodes.

Every node records the user's `file:line`: the first stack frame outside tapeir's own
folders. Closed-over numpy arrays and Python scalars become graph constants.
"""
from __future__ import annotations

import gc
import inspect
import os
import re
import sys
import threading

import numpy as np

from ..ir.dtypes import dtype_of
from ..ir.errors import TapeirError, TraceError
from ..ir.graph import Graph, Node, Value, constant
from ..ir.pytree import TreeDef, flatten, unflatten
from ..ir.pytree import leaf_names as leaf_names_of
from ..ir.registry import OPS
from ..ir.types import TensorType, solve, substitute, symbols_of

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


class Tracer:
    """The recording state of one `trace` call."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.constants: list[Value] = []
        self._const_cache: dict = {}
        self.source_override: str | None = None  # set by passes: nodes they emit keep this source
        self.symbols: frozenset | None = None    # the symbolic dims the inputs bind (None: unchecked)
        # interned types: fewer live objects for the cyclic GC to rescan in big graphs
        self._types: dict = {}

    def emit(self, op: str, inputs: list[Value], attrs: dict | None = None) -> list[Value]:
        opdef = OPS[op]
        source = self.source_override or user_source()
        try:
            attrs = opdef.normalize_attrs(attrs or {})
            out_types = opdef.infer([v.type for v in inputs], attrs)
        except TapeirError as e:
            raise TraceError(e.problem, where=source, hint=e.hint) from None
        if self.symbols is not None:
            self._check_symbols(op, out_types, attrs, source)
        types = self._types
        outs = [Value(types.setdefault(t, t)) for t in out_types]  # one TensorType object per type
        self.nodes.append(Node(op, inputs, attrs, outs, source))
        return outs

    def _check_symbols(self, op, out_types, attrs, source):
        shape_attrs = OPS[op].shape_attrs
        if not shape_attrs:  # types can only carry symbols the operands had: nothing new
            return
        used = {s for t in out_types for d in t.shape if isinstance(d, str) for s in symbols_of(d)}
        for k in shape_attrs:
            used.update(s for d in attrs[k] if isinstance(d, str) for s in symbols_of(d))
        free = sorted(used - self.symbols)
        if free:
            raise TraceError(
                f"{op}: symbolic dim {', '.join(map(repr, free))} is not a dim of any input "
                f"(inputs have {', '.join(map(repr, sorted(self.symbols))) or 'no symbolic dims'})",
                where=source, hint="symbolic dims come from inputs such as tp.Spec(('B', 64)); build shapes "
                                   "from x.shape (x.shape[0] * 2 is '2*B') or use -1 in reshape")

    def inline(self, graph: Graph, inputs: list[Value], env: dict | None = None) -> list[Value]:
        """Record graph's nodes here, reading `inputs` for its inputs; return its outputs.

        Types are re-inferred (a graph traced with a symbolic dim inlines at a concrete
        size) and nodes keep their source lines, so a graph built from another still
        points at the lines the user wrote. `env`, if given, receives old id -> new value.
        """
        env = {} if env is None else env
        subst: dict = {}  # graph's symbols -> the dims they have here ("B" -> 3, or "B" -> "N")
        for _ in range(2):  # a product ("4*B") may need another input to bind B first
            for a, b in zip(graph.inputs, inputs):
                for d_old, d_new in zip(a.type.shape, b.type.shape):
                    if isinstance(d_old, str):
                        solve(d_old, d_new, subst)
        env.update((id(a), b) for a, b in zip(graph.inputs, inputs))
        for c in graph.constants:
            env[id(c)] = self.const(c.data)
        saved = self.source_override
        try:
            for n in graph.nodes:
                attrs = n.attrs
                if subst:
                    for k in OPS[n.op].shape_attrs:
                        attrs = {**attrs, k: tuple(substitute(d, subst) if isinstance(d, str) else d
                                                   for d in attrs[k])}
                self.source_override = n.source or saved
                outs = self.emit(n.op, [env[id(v)] for v in n.inputs], attrs)
                env.update((id(o), p) for o, p in zip(n.outputs, outs))
        finally:
            self.source_override = saved
        return [env[id(v)] for v in graph.outputs]

    def const(self, array, keep=None) -> Value:
        """A constant for `array`, shared by every use of the same array or scalar."""
        if keep is None and array.size > 64:
            keep = array  # large arrays dedupe by identity, not by hashing their bytes
        key = (id(keep), ) if keep is not None else (array.dtype.str, array.shape, array.tobytes())
        hit = self._const_cache.get(key)
        if hit is not None:
            return hit[0]
        v = constant(array)
        self._const_cache[key] = (v, keep)  # keep the user's array alive so its id stays unique
        self.constants.append(v)
        return v


class _TraceStack(threading.local):
    """The traces running in this thread, innermost last (traces in two threads don't mix)."""

    def __init__(self):
        self.tracers: list[Tracer] = []


_STACK = _TraceStack()


def push_tracer(tracer: Tracer) -> None:
    _STACK.tracers.append(tracer)


def pop_tracer() -> None:
    _STACK.tracers.pop()


def current_tracer(what: str = "this operation") -> Tracer:
    if not _STACK.tracers:
        raise TraceError(f"{what} needs a traced Tensor, but no trace is running",
                         where=user_source(), hint="call it inside a function passed to tp.trace(fn, *args)")
    return _STACK.tracers[-1]


def _is_arg_leaf(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, Spec))


def _leaf_type(x, where: str) -> TensorType:
    if isinstance(x, Spec):
        return x.type
    try:
        dt = dtype_of(x.dtype)
    except TapeirError as e:
        raise TraceError(f"{where} has unsupported dtype {x.dtype}", hint=e.hint) from None
    return TensorType(dt, np.shape(x))


def _def_site(fn) -> str | None:
    code = getattr(fn, "__code__", None)
    return f"{os.path.relpath(code.co_filename) if os.path.isabs(code.co_filename) else code.co_filename}:" \
           f"{code.co_firstlineno} (the traced function)" if code else None


def _arg_names(fn, n: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    names: list[str] = []
    for i in range(n):
        if i < len(positional):
            name = positional[i]
        else:
            name = f"{star or 'arg'}{i - len(positional) if star else i}"
        while name in names or name in positional[i + 1:]:
            name += "_"  # def f(args0, *args): the second is args0_
        names.append(name)
    return names


def trace(fn, *args, name: str | None = None, arg_names: list[str] | None = None,
          output_names: list[str] | None = None) -> Graph:
    """Record `fn(*args)` as a Graph. Args are pytrees of numpy arrays or `Spec`s.

    fn is called once, on Tensors in place of the array leaves; it returns a Tensor, an
    array or a pytree of them. Inputs are named after fn's parameters (or `arg_names`)
    and their pytree paths (`params.w1`); outputs `output` / `output.<path>` (or
    `output_names`, one per result leaf). The graph is named `name` (default: fn's name).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x, w: tp.tanh(x @ w), tp.Spec(("B", 3)), np.ones((3, 2), np.float32))
    >>> print(g)  # doctest: +ELLIPSIS
    graph lambda(x: f32[B,3], w: f32[3,2]) {
      %0: f32[B,2] = matmul(x, w)  # ...
      %1: f32[B,2] = tanh(%0)      # ...
      return %1
    }
    <BLANKLINE>
    """
    from .tensor import Tensor

    if arg_names is None:
        arg_names = _arg_names(fn, len(args))
    elif len(arg_names) != len(args):
        raise TraceError(f"trace: {len(arg_names)} arg_names for {len(args)} arguments")
    arg_names = list(arg_names)
    trees, inputs, wrapped = [], [], []
    for aname, arg in zip(arg_names, args):
        leaves, td = flatten(arg, _is_arg_leaf, what=f"argument {aname!r}")
        trees.append(td)
        vals = [Value(_leaf_type(x, f"argument {aname!r}")) for x in leaves]
        inputs.extend(vals)
        wrapped.append((td, vals))
    leaf_names = [n for a, td in zip(arg_names, trees) for n in leaf_names_of(a, td)]
    if len(set(leaf_names)) != len(leaf_names):
        dup = sorted({n for n in leaf_names if leaf_names.count(n) > 1})
        raise TraceError(f"trace: two inputs would both be named {', '.join(dup)}",
                         where=user_source(), hint="dict keys containing '.' can collide with nested "
                         "keys; rename one of them")
    tracer = Tracer()
    tracer.symbols = frozenset(s for v in inputs for d in v.type.shape if isinstance(d, str)
                               for s in symbols_of(d))
    push_tracer(tracer)
    # The graph holds no reference cycles, so the cyclic GC only rescans it, over and
    # over: with it on, tracing 100k ops costs ~30% more per op than 10k (bench_trace.py).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        call_args = [unflatten(td, [Tensor(v, tracer) for v in vals]) for td, vals in wrapped]
        result = fn(*call_args)
        try:
            out_leaves, out_tree = flatten(result, lambda x: isinstance(x, (Tensor, np.ndarray, np.generic)),
                                           what="the traced function's result")
        except TapeirError as e:
            raise TraceError(e.problem, where=_def_site(fn),
                             hint="return Tensors (or numpy arrays) in dicts, lists and tuples; "
                                  "wrap a Python number with np.float32(...)") from None
        outputs = []
        for x in out_leaves:
            if isinstance(x, Tensor):
                if x.tracer is not tracer:
                    raise TraceError("the traced function returned a Tensor from another trace",
                                     hint="return values computed from this function's arguments")
                outputs.append(x.value)
            else:
                outputs.append(tracer.const(np.asarray(x)))
    finally:
        pop_tracer()
        if gc_was_enabled:
            gc.enable()
    gname = name or re.sub(r"\W", "_", getattr(fn, "__name__", "f")).strip("_") or "f"
    if output_names is not None and len(output_names) != len(outputs):
        raise TraceError(f"trace: {len(output_names)} output_names for {len(outputs)} results")
    return Graph(gname, arg_names, TreeDef("tuple", tuple(trees)), inputs, tracer.nodes, out_tree,
                 outputs, tracer.constants, output_names)


def call(graph: Graph, *args):
    """Inside a traced function, inline `graph` on `args` (pytrees like the ones it was traced on).

    Graphs compose this way: `tp.call(tp.grad(g), x)` records g's backward pass into the
    current trace, so it can be differentiated again.

    >>> import numpy as np, tapeir as tp
    >>> sq = tp.trace(lambda x: (x * x).sum(), np.ones(3, np.float32))
    >>> g2 = tp.trace(lambda x: tp.call(tp.grad(sq), x).sum(), np.ones(3, np.float32))
    >>> tp.run(tp.grad(g2), np.arange(3, dtype=np.float32)).tolist()
    [2.0, 2.0, 2.0]
    """
    from .tensor import Tensor
    from .functions import _lift, _tracer_of

    if not isinstance(graph, Graph):
        raise TraceError(f"tp.call expects a Graph, got {type(graph).__name__}", where=user_source())
    if len(args) != len(graph.arg_names):
        raise TraceError(f"tp.call: {graph.name} takes {len(graph.arg_names)} arguments "
                         f"({', '.join(graph.arg_names)}), got {len(args)}", where=user_source())
    leaves = []
    for name, td, a in zip(graph.arg_names, graph.in_tree.children, args):
        lv, got = flatten(a, lambda x: isinstance(x, (Tensor, np.ndarray, np.generic, int, float)),
                          what=f"argument {name!r}")
        if got != td:
            raise TraceError(f"tp.call: argument {name!r} has a different pytree structure than {graph.name} "
                             "was traced with", where=user_source())
        leaves.extend(lv)
    tr = _tracer_of(leaves)
    vals = []
    for x, v in zip(leaves, graph.inputs):
        val = _lift(tr, x, v.type.dtype, "call")
        t = val.type
        if t.dtype != v.type.dtype or t.rank != v.type.rank or any(
                isinstance(a, int) and a != b for a, b in zip(v.type.shape, t.shape)):
            raise TraceError(f"tp.call: input {v.name} of {graph.name} is {v.type}, got {t}", where=user_source(),
                             hint="pass arrays of the dtype and shape the graph was traced with")
        vals.append(val)
    outs = tr.inline(graph, vals)
    return unflatten(graph.out_tree, [Tensor(o, tr) for o in outs])
