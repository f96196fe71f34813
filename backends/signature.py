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

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import RunError, TapeirError
from ..ir.pytree import flatten, unflatten
from ..ir.types import factors, resolve_dim


def _is_leaf(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, int, float, bool))


class Signature:
    """A graph's inputs (names, dtypes, shapes) and its argument and output pytrees."""

    def __init__(self, graph):
        self.graph = graph
        self.specs = [(v.name, v.type.dtype, to_numpy(v.type.dtype), v.type.shape) for v in graph.inputs]

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
                    coef, syms = factors(d)
                    if len(syms) == 1 and coef == 1:
                        if bindings.setdefault(syms[0], n) != n:
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
        return arrays, bindings


def _solve_products(deferred, bindings) -> None:
    """Bind a symbol that only products give: an input axis of size 2*B binds B = n / 2
    (and B*T binds T once B is known), as the ONNX export does (onnx_export `_symbol`)."""
    progress = True
    while progress:
        progress = False
        for name, axis, d, n in deferred:
            coef, syms = factors(d)
            unknown = sorted(set(s for s in syms if s not in bindings))
            if len(unknown) != 1 or syms.count(unknown[0]) != 1:
                continue
            known = coef
            for s in syms:
                if s != unknown[0]:
                    known *= bindings[s]
            if not known:
                continue
            if n % known:
                raise RunError(f"input {name} axis {axis} is {n}, which is not {d} for any {unknown[0]} "
                               f"(not a multiple of {known})")
            bindings[unknown[0]] = n // known
            progress = True


def check_options(backend: str, options: dict, valid: tuple) -> None:
    """Refuse compile options a backend does not know, naming them and the ones it does."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TapeirError(f"the {backend} backend has no option{'s' * (len(unknown) > 1)} "
                          + ", ".join(map(repr, unknown)),
                          hint=f"its options are {', '.join(valid)}" if valid else "it takes no options")
