"""What a compiled graph accepts, shared by every backend (and the options compile takes).

`Signature(graph)` turns the traced function's pytrees into the graph's flat input
arrays and back, and checks them first: the pytree structure, the number of arrays,
dtypes, ranks and static dims, and that every symbolic dim binds one size. A backend
only runs the checked arrays (`run_flat`), so the numpy and onnxruntime backends reject
the same inputs with the same errors.

>>> import numpy as np, tapeir as tp
>>> sig = Signature(tp.trace(lambda x, y: x + y, tp.Spec(("N",)), tp.Spec(("N",))))
>>> arrays, dims = sig.bind(sig.flatten((np.zeros(3, np.float32), np.ones(3, np.float32))))
>>> dims
{'N': 3}
"""
from __future__ import annotations

import re

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import RunError, TapeirError
from ..ir.pytree import flatten, unflatten
from ..ir.types import dim_sub, linear_in_one, poly, resolve_dim, solve, substitute, symbols_of


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _is_leaf(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, int, float, bool))


class Signature:
    """A graph's inputs (names, dtypes, shapes) and its argument and output pytrees."""

    def __init__(self, graph):
        self.graph = graph
        self.specs = [(v.name, v.type.dtype, to_numpy(v.type.dtype), v.type.shape) for v in graph.inputs]
        self.constraints = size_constraints(graph)

    def subset(self, positions) -> "Signature":
        """The checks of some inputs only (a training loop checks its batch per step, its
        parameters once), with the size constraints those inputs' symbols decide."""
        sub = Signature.__new__(Signature)
        sub.graph, sub.specs = self.graph, [self.specs[k] for k in positions]
        bound = {s for _, _, _, shape in sub.specs for d in shape for s in symbols_of(d)}
        sub.constraints = [(d, what) for d, what in self.constraints if set(symbols_of(d)) <= bound]
        return sub

    def flatten(self, args) -> list:
        """The leaves of the call's arguments, in graph input order; checks their structure."""
        g = self.graph
        if len(args) != len(g.arg_names):
            raise RunError(f"{g.name} takes {len(g.arg_names)} arguments ({', '.join(g.arg_names)}), got {len(args)}")
        leaves = []
        for name, td, a in zip(g.arg_names, g.in_tree.children, args):
            try:
                lv, got = flatten(a, _is_leaf, what=f"argument {name!r}")
            except TapeirError as e:  # a leaf that is not an array: a run-time input error
                raise RunError(e.problem, hint=e.hint) from None
            if got != td:
                raise RunError(f"argument {name!r} has a different structure than at trace time",
                               hint="pass the same nesting of dicts/lists/tuples (same keys) that was traced")
            leaves.extend(lv)
        return leaves

    def unflatten(self, outputs: list):
        """The graph's flat outputs as the traced function's output pytree."""
        return unflatten(self.graph.out_tree, outputs)

    def bind(self, leaves) -> tuple[list, dict]:
        """Check the flat input arrays; returns them as ndarrays and the symbolic dims' sizes."""
        if len(leaves) != len(self.specs):
            raise RunError(f"{self.graph.name} takes {len(self.specs)} input arrays, got {len(leaves)}")
        arrays, bindings = [], {}
        deferred = []
        for x, (name, dt, npdt, shape) in zip(leaves, self.specs):
            if not isinstance(x, np.ndarray):
                x = np.asarray(x)
            if x.dtype != npdt:
                raise RunError(f"input {name} has dtype {x.dtype}, the graph expects {dt}",
                               hint=f"pass {name}.astype(np.{npdt.name})")
            if x.ndim != len(shape):
                raise RunError(f"input {name} has shape {x.shape}, the graph expects rank {len(shape)} "
                               f"[{','.join(map(str, shape))}]")
            for axis, (d, n) in enumerate(zip(shape, x.shape)):
                if isinstance(d, int):
                    if d != n:
                        raise RunError(f"input {name} has shape {x.shape}, the graph expects "
                                       f"[{','.join(map(str, shape))}] (axis {axis}: {n} vs {d})")
                else:
                    if _SYMBOL.match(d):
                        if bindings.setdefault(d, n) != n:
                            raise RunError(f"input {name} axis {axis} binds {d}={n}, but an earlier input "
                                           f"bound {d}={bindings[d]}", hint="all uses of a symbolic dim must agree")
                    else:
                        deferred.append((name, axis, d, n))
            arrays.append(x)
        _solve_products(deferred, bindings)
        for name, axis, d, n in deferred:
            try:
                want = resolve_dim(d, bindings)
            except KeyError:
                raise RunError(f"input {name} axis {axis} has size {d}, whose symbols no input binds alone") from None
            if want != n:
                raise RunError(f"input {name} axis {axis} is {n}, but {d} = {want}")
        if self.constraints:
            check_sizes(self.constraints, bindings)
        return arrays, bindings


def _solve_products(deferred, bindings) -> None:
    """Bind a symbol that only products and sums give: an input axis of size 2*B binds
    B = n / 2, T+1 binds T = n - 1, and B*T binds T once B is known, as the ONNX export does
    (onnx_export `_symbol`)."""
    progress = True
    while progress:
        progress = False
        for name, axis, d, n in deferred:
            unknown = [s for s in symbols_of(d) if s not in bindings]
            if len(unknown) != 1:
                continue
            solve(d, n, bindings)
            if unknown[0] not in bindings:
                why = ""
                lin = linear_in_one(substitute(d, bindings))
                if lin is not None:
                    a, c = lin[1], lin[2]
                    why = (f" (less than {c})" if n < c else
                           f" (not a multiple of {a})" if not c else f" ({n} - {c} is not a multiple of {a})")
                raise RunError(f"input {name} axis {axis} is {n}, which is not {d} for any size {unknown[0]}{why}")
            progress = True


def size_constraints(graph) -> list:
    """(dim, what) pairs: sizes that must not be negative once the symbols are bound. Dims
    with a minus (T-1, after x[:, 1:]), a slice's room past its stop (n - stop) and symbolic
    pads; the type rules cannot check them, so the backends do per call (numpy would clamp a
    slice, onnxruntime too, and the result would not have its type's size)."""
    out: dict = {}

    def need(d, what):
        if isinstance(d, str) and any(c < 0 for c in poly(d).values()) and d not in out:
            out[d] = what
    for v in graph.inputs:
        for d in v.type.shape:
            need(d, f"input {v.name}")
    for n in graph.nodes:
        where = f"{n.op} (at {n.source})" if n.source else n.op
        for o in n.outputs:
            for d in o.type.shape:
                need(d, f"the result of {where}")
        if n.op == "slice":
            shape = n.inputs[0].type.shape
            for a, start, stop in zip(n.attrs["axes"], n.attrs["starts"], n.attrs["stops"]):
                if isinstance(start, str) or isinstance(stop, str) or isinstance(shape[a], str):
                    need(dim_sub(shape[a], stop), f"{where}: the axis size {shape[a]} less the slice's stop {stop}")
                    need(start, f"{where}: the slice's start")
        elif n.op == "pad":
            for d in n.attrs["pads"]:
                need(d, f"{where}: a pad width")
    return list(out.items())


def check_sizes(constraints, bindings) -> None:
    for d, what in constraints:
        size = resolve_dim(d, bindings)
        if size < 0:
            bound = ", ".join(f"{s}={bindings[s]}" for s in symbols_of(d))
            raise RunError(f"{what}: the size {d} is {size} when {bound}",
                           hint="a slice of a symbolic axis needs the axis to be long enough "
                                "(x[:, 1:] needs T >= 1); pass longer inputs")


def check_options(backend: str, options: dict, valid: tuple) -> None:
    """Refuse compile options a backend does not know, naming them and the ones it does."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TapeirError(f"the {backend} backend has no option{'s' * (len(unknown) > 1)} "
                          + ", ".join(map(repr, unknown)),
                          hint=f"its options are {', '.join(valid)}" if valid else "it takes no options")
