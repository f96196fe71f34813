"""The numpy backend: interpret a Graph through one IMPL table.

IMPL is the reference semantics of ir/reference.py (REFERENCE): each op maps to a
factory `attrs -> kernel`, so attributes are bound once at compile time and the run loop
only calls kernels. Values live in slots that are reused after their last use (so
intermediates are freed as soon as they are dead). A kernel's exception is re-raised as
RunError naming the node, its source line and its operands' shapes (an out-of-range
class label, say).
"""
from __future__ import annotations

import threading

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import RunError, TapeirError
from ..ir.reference import REFERENCE as IMPL
from ..ir.types import resolve_dim
from .numpy_memory import may_view, plan_buffers
from .signature import Signature, check_options

_SHAPE_ATTRS = ("shape",)  # attributes whose symbolic dims are bound per call


def _has_symbols(attrs) -> bool:
    return any(isinstance(d, str) for k in _SHAPE_ATTRS if k in attrs for d in attrs[k])


def _owned(x) -> np.ndarray:
    """Outputs are writable arrays: constants and broadcast views are copied, not shared
    (and so are views of the caller's inputs: see _copy_out)."""
    x = np.asarray(x)
    return x if x.flags.writeable else x.copy()


class NumpyFunction:
    """A Graph compiled for the numpy interpreter. Call it with the traced function's pytrees."""

    def __init__(self, graph):
        for n in graph.nodes:
            if n.op not in IMPL:
                raise TapeirError(f"the numpy backend has no kernel for op {n.op!r}",
                                  where=n.source, hint="add it to REFERENCE in ir/reference.py")
        self.graph = graph
        self.signature = Signature(graph)
        self._plan()

    def _plan(self):
        g = self.graph
        last_use: dict[int, int] = {}
        for i, n in enumerate(g.nodes):
            for v in n.inputs:
                last_use[id(v)] = i
        for v in g.outputs:
            last_use[id(v)] = len(g.nodes)
        slot: dict[int, int] = {}
        free: list[int] = []
        nslots = 0

        def alloc():
            nonlocal nslots
            if free:
                return free.pop()
            nslots += 1
            return nslots - 1

        for v in list(g.inputs) + list(g.constants):
            slot[id(v)] = alloc()
        self._n_fixed = len(g.inputs) + len(g.constants)
        plan = []
        self._attrs = []  # per node: the attributes its kernel is built from
        for i, n in enumerate(g.nodes):
            ins = tuple(slot[id(v)] for v in n.inputs)
            dying = {slot[id(v)] for v in n.inputs
                     if last_use.get(id(v)) == i and slot[id(v)] >= self._n_fixed}
            free.extend(sorted(dying, reverse=True))
            outs = tuple(alloc() for _ in n.outputs)
            for o, s in zip(n.outputs, outs):
                slot[id(o)] = s
                if id(o) not in last_use:  # never used: free at once
                    free.append(s)
            attrs = n.attrs
            if n.op == "reshape" and -1 in attrs["shape"] and _has_symbols(attrs):
                # numpy cannot infer a -1 beside a dim that is 0 at run time (B = 0): use the result's dims
                attrs = {**attrs, "shape": n.outputs[0].type.shape}
            self._attrs.append(attrs)
            dynamic = _has_symbols(attrs)
            fn = None if dynamic else IMPL[n.op](attrs)
            plan.append((fn, ins, outs[0] if len(outs) == 1 else outs, i, dynamic))
        self._plan_steps = plan
        self._kernels = [step[0] for step in plan]
        self._local = threading.local()  # per-thread buffers: compiled functions are thread-safe
        self._simple = all(not dyn and type(out) is int and 1 <= len(ins) <= 2 for _, ins, out, _, dyn in plan)
        self._fast = [(fn, ins[0], ins[1] if len(ins) == 2 else -1, out) for fn, ins, out, _, _ in plan] \
            if self._simple else []
        self._nslots = nslots
        self._out_slots = [slot[id(v)] for v in g.outputs]
        self._consts = [c.data for c in g.constants]
        # outputs that may be (views of) the caller's inputs are copied: results are the caller's own
        views = {id(v) for v in g.inputs}
        for n in g.nodes:
            if may_view(n.op) and any(id(v) in views for v in n.inputs):
                views.update(id(o) for o in n.outputs)
        self._copy_out = [id(v) in views for v in g.outputs]

    def _buffers(self, bindings) -> tuple[list, bool]:
        """The memory plan (backends/numpy_memory.py) for this thread and these dim sizes,
        and whether it uses any buffer."""
        cache = getattr(self._local, "plans", None)
        if cache is None:
            cache = self._local.plans = {}
        key = tuple(sorted(bindings.items()))
        bufs = cache.get(key)
        if bufs is None:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            types = []
            for n in self.graph.nodes:
                t = n.outputs[0].type
                shape = tuple(d if isinstance(d, int) else resolve_dim(d, bindings) for d in t.shape)
                types.append((shape, to_numpy(t.dtype)))
            planned = plan_buffers(self.graph.nodes, self.graph.outputs, self._kernels, types)
            bufs = cache[key] = (planned, any(b is not None for b in planned))
        return bufs

    def run_flat(self, leaves) -> list:
        arrays, bindings = self.signature.bind(leaves)
        env = [None] * self._nslots
        env[:self._n_fixed] = arrays + self._consts
        steps = self._plan_steps
        bufs, any_buf = self._buffers(bindings)
        i = 0
        try:
            if self._simple and not any_buf:  # the common case, kept tight
                for i, (fn, a, b, out) in enumerate(self._fast):
                    env[out] = fn(env[a]) if b < 0 else fn(env[a], env[b])
            elif self._simple:  # unary/binary kernels, one output, some writing into buffers
                for i, ((fn, a, b, out), buf) in enumerate(zip(self._fast, bufs)):
                    if buf is None:
                        env[out] = fn(env[a]) if b < 0 else fn(env[a], env[b])
                    else:
                        env[out] = fn(env[a], out=buf) if b < 0 else fn(env[a], env[b], out=buf)
            else:
                for i, (fn, ins, out, _, dynamic) in enumerate(steps):
                    if dynamic:
                        fn = self._specialize(self.graph.nodes[i].op, self._attrs[i], bindings)
                    buf = bufs[i]
                    r = fn(*[env[s] for s in ins]) if buf is None else fn(*[env[s] for s in ins], out=buf)
                    if type(out) is int:
                        env[out] = r
                    else:
                        for s, x in zip(out, r):
                            env[s] = x
        except Exception as e:
            n = self.graph.nodes[i]
            shapes = ", ".join(f"{np.shape(env[s])}:{getattr(env[s], 'dtype', '?')}" for s in steps[i][1])
            raise RunError(f"{n.op} failed at node {i} of {self.graph.name}: {e}",
                           where=f"{n.source or '<no source>'} (operands {shapes})") from e
        return [np.array(env[s]) if copy else _owned(env[s]) for s, copy in zip(self._out_slots, self._copy_out)]

    @staticmethod
    def _specialize(op, attrs, bindings):
        attrs = dict(attrs)
        for k in _SHAPE_ATTRS:
            if k in attrs:
                attrs[k] = tuple(d if isinstance(d, int) else resolve_dim(d, bindings) for d in attrs[k])
        return IMPL[op](attrs)

    def __call__(self, *args):
        return self.signature.unflatten(self.run_flat(self.signature.flatten(args)))


def compile_numpy(graph, **options) -> NumpyFunction:
    check_options("numpy", options, ())
    return NumpyFunction(graph)
