"""tp.trace and tp.call: run a Python function on Tensors that record IR, or inline a graph.

Closed-over numpy arrays and Python scalars become graph constants; inputs are named
after the function's parameters and their pytree paths (`params.w1`).
"""
from __future__ import annotations

import inspect
import os
import re

import numpy as np

from ..ir.builder import paused_gc
from ..ir.dtypes import dtype_of
from ..ir.errors import TapeirError, TraceError
from ..ir.graph import Graph
from ..ir.pytree import TreeDef, flatten, unflatten
from ..ir.pytree import leaf_names as leaf_names_of
from ..ir.types import TensorType, symbols_of
from .functions import lift, builder_of
from .tensor import Tensor
from .tracer import Spec, Tracer, recording, user_source


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
    if arg_names is None:
        arg_names = _arg_names(fn, len(args))
    elif len(arg_names) != len(args):
        raise TraceError(f"trace: {len(arg_names)} arg_names for {len(args)} arguments")
    arg_names = list(arg_names)
    trees, typed = [], []
    for aname, arg in zip(arg_names, args):
        leaves, td = flatten(arg, _is_arg_leaf, what=f"argument {aname!r}")
        trees.append(td)
        typed.append([_leaf_type(x, f"argument {aname!r}") for x in leaves])
    leaf_names = [n for a, td in zip(arg_names, trees) for n in leaf_names_of(a, td)]
    if len(set(leaf_names)) != len(leaf_names):
        dup = sorted({n for n in leaf_names if leaf_names.count(n) > 1})
        raise TraceError(f"trace: two inputs would both be named {', '.join(dup)}",
                         where=user_source(), hint="dict keys containing '.' can collide with nested "
                         "keys; rename one of them")
    tracer = Tracer(symbols=frozenset(s for types in typed for t in types for d in t.shape
                                      if isinstance(d, str) for s in symbols_of(d)))
    names = iter(leaf_names)
    wrapped = [(td, [tracer.input(t, next(names)) for t in types]) for td, types in zip(trees, typed)]
    inputs = [v for _, vals in wrapped for v in vals]
    with paused_gc(), recording(tracer):
        outputs, out_tree = _record(fn, tracer, wrapped)
    gname = name or re.sub(r"\W", "_", getattr(fn, "__name__", "f")).strip("_") or "f"
    if output_names is not None and len(output_names) != len(outputs):
        raise TraceError(f"trace: {len(output_names)} output_names for {len(outputs)} results")
    return tracer.build(gname, inputs, outputs, arg_names=arg_names, in_tree=TreeDef("tuple", tuple(trees)),
                        out_tree=out_tree, output_names=output_names)


def _record(fn, tracer: Tracer, wrapped) -> tuple[list, TreeDef]:
    """Call fn on Tensors of the inputs; return the result's leaves as Values, and its tree."""
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
            if x.builder is not tracer:
                raise TraceError("the traced function returned a Tensor from another trace",
                                 hint="return values computed from this function's arguments")
            outputs.append(x.value)
        else:
            outputs.append(tracer.const(np.asarray(x)))
    return outputs, out_tree


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
    tr = builder_of(leaves)
    vals = []
    for x, v in zip(leaves, graph.inputs):
        val = lift(tr, x, v.type.dtype, "call")
        t = val.type
        if t.dtype != v.type.dtype or t.rank != v.type.rank or any(
                isinstance(a, int) and a != b for a, b in zip(v.type.shape, t.shape)):
            raise TraceError(f"tp.call: input {v.name} of {graph.name} is {v.type}, got {t}", where=user_source(),
                             hint="pass arrays of the dtype and shape the graph was traced with")
        vals.append(val)
    try:
        outs = tr.inline(graph, vals)
    except TapeirError as e:  # name the user's tp.call line too, not only the inlined graph's
        here = user_source()
        where = here if e.where in (None, here) else f"{e.where} (in {graph.name}), inlined at {here}"
        raise TraceError(f"tp.call({graph.name}): {e.problem}", where=where, hint=e.hint) from None
    return unflatten(graph.out_tree, [Tensor(o, tr) for o in outs])
