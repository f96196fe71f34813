"""The numpy backend: interpret a Graph through one IMPL table.

IMPL is the reference semantics (REFERENCE, ir/reference.py): each op maps to a factory
`attrs -> kernel`, so attributes are bound before the run loop, which only calls kernels.

Rules:
  1. compiling lays out slots: every value gets one, reused after the value's last use
     (intermediates are freed as soon as they are dead);
  2. each binding of the symbolic dims gets one plan per thread (the last 8 are kept):
     kernels specialised for it (symbolic shape attributes resolved once), output
     buffers from the memory plan (backends/numpy_memory.py), one step per node;
  3. one loop runs any plan; a kernel's exception becomes a RunError naming the node,
     its source line and its operands' shapes (an out-of-range class label, say);
  4. outputs are the caller's own: read-only ones and views of the inputs are copied;
  5. a fused node runs as a FusedKernel (backends/numpy_fused.py): its body in place over
     cache-sized blocks on `threads` threads (compile option; default: the cores numpy may
     use, or TAPEIR_THREADS). A failure in its body names the body node and its source line.
"""
from __future__ import annotations

import threading
from functools import partial

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import RunError, TapeirError
from ..ir.reference import REFERENCE as IMPL
from ..ir.registry import OPS
from ..ir.types import resolve_dim
from .numpy_fused import BodyError, FusedKernel, default_threads
from .numpy_memory import may_view, plan_buffers
from .signature import Signature, check_options


def _owned(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.flags.writeable else x.copy()  # constants, broadcast views


class NumpyFunction:
    """A Graph compiled for the numpy interpreter. Call it with the traced function's pytrees."""

    def __init__(self, graph, threads: int | None = None):
        self.threads = default_threads() if threads is None else threads
        for n in graph.nodes:
            if n.op not in IMPL:
                raise TapeirError(f"the numpy backend has no kernel for op {n.op!r}",
                                  where=n.source, hint="add it to REFERENCE in ir/reference.py")
        self.graph = graph
        self.signature = Signature(graph)
        self._layout()
        self._local = threading.local()  # per-thread plans (they own buffers): compiled functions are thread-safe

    def _layout(self):
        """Rule 1, and per node: its attributes, symbolic shape attributes and (if it has none) kernel."""
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
        self._io, self._attrs, self._symbolic, self._kernels = [], [], [], []
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
            symbolic = tuple(k for k in OPS[n.op].shape_attrs if any(isinstance(d, str) for d in attrs[k]))
            if n.op == "reshape" and symbolic and -1 in attrs["shape"]:
                # numpy cannot infer a -1 beside a dim that is 0 at run time (B = 0): use the result's dims
                attrs = {**attrs, "shape": n.outputs[0].type.shape}
            self._io.append((ins, outs))
            self._attrs.append(attrs)
            self._symbolic.append(symbolic)
            self._kernels.append(None if symbolic else self._kernel(n.op, attrs))  # None: built per binding
        self._nslots = nslots
        self._consts = [c.data for c in g.constants]
        # outputs that may be (views of) the caller's inputs are copied: results are the caller's own
        views = {id(v) for v in g.inputs}
        for n in g.nodes:
            if may_view(n.op) and any(id(v) in views for v in n.inputs):
                views.update(id(o) for o in n.outputs)
        self._outs = [(slot[id(v)], id(v) in views) for v in g.outputs]

    def _kernel(self, op, attrs):
        if op == "fused":  # rule 5 (it needs no binding: it reads its operands' shapes)
            return FusedKernel(attrs["body"], self.threads)
        return IMPL[op](attrs)

    def _plan(self, bindings) -> list:
        """Rule 2: this thread's plan for these dim sizes."""
        cache = getattr(self._local, "plans", None)
        if cache is None:
            cache = self._local.plans = {}
        key = tuple(sorted(bindings.items()))
        steps = cache.get(key)
        if steps is None:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            steps = cache[key] = self._build_plan(bindings)
        return steps

    def _build_plan(self, bindings) -> list:
        def resolve(shape):
            return tuple(d if isinstance(d, int) else resolve_dim(d, bindings) for d in shape)

        nodes = self.graph.nodes
        kernels = [k if k is not None else self._kernel(n.op, {**a, **{s: resolve(a[s]) for s in sym}})
                   for n, a, sym, k in zip(nodes, self._attrs, self._symbolic, self._kernels)]
        types = [(resolve(n.outputs[0].type.shape), to_numpy(n.outputs[0].type.dtype)) for n in nodes]
        bufs = plan_buffers(nodes, self.graph.outputs, kernels, types)
        return [_step(k, ins, outs, buf) for k, (ins, outs), buf in zip(kernels, self._io, bufs)]

    def run_flat(self, leaves) -> list:
        arrays, bindings = self.signature.bind(leaves)
        steps = self._plan(bindings)
        env = [None] * self._nslots
        env[:self._n_fixed] = arrays + self._consts
        step = None
        try:
            for step in steps:
                fn, a, b, out = step
                if b >= 0:
                    env[out] = fn(env[a], env[b])
                elif a >= 0:
                    env[out] = fn(env[a])
                else:
                    fn(env)
        except Exception as e:
            i = next(k for k, s in enumerate(steps) if s is step)  # steps are distinct tuples: identity finds it
            n = self.graph.nodes[i]
            shapes = ", ".join(f"{np.shape(env[s])}:{getattr(env[s], 'dtype', '?')}" for s in self._io[i][0])
            if isinstance(e, BodyError):  # name the body node that failed, with its own source line
                m = e.node
                raise RunError(f"{m.op} failed at node {e.index} of the body of fused node {i} of "
                               f"{self.graph.name}: {e.cause}",
                               where=f"{m.source or n.source or '<no source>'} "
                                     f"(operands {', '.join(map(str, e.shapes))}; fused operands {shapes})") from e.cause
            raise RunError(f"{n.op} failed at node {i} of {self.graph.name}: {e}",
                           where=f"{n.source or '<no source>'} (operands {shapes})") from e
        return [np.array(env[s]) if copy else _owned(env[s]) for s, copy in self._outs]

    def __call__(self, *args):
        return self.signature.unflatten(self.run_flat(self.signature.flatten(args)))


def _step(kernel, ins, outs, buf) -> tuple:
    """A step (fn, a, b, out) of the run loop: env[out] = fn(env[a], env[b]) when b >= 0,
    env[out] = fn(env[a]) when a >= 0, else fn(env) reads and writes env itself (other
    arities, several outputs). Unary and binary steps are nearly every node: they are
    the ones kept tight."""
    if buf is not None:
        kernel = partial(kernel, out=buf)
    if len(outs) == 1 and 1 <= len(ins) <= 2:
        return kernel, ins[0], ins[-1] if len(ins) == 2 else -1, outs[0]

    def general(env):
        r = kernel(*[env[s] for s in ins])
        for s, x in zip(outs, (r,) if len(outs) == 1 else r):
            env[s] = x
    return general, -1, -1, -1


def compile_numpy(graph, threads: int | None = None, **options) -> NumpyFunction:
    """The numpy backend's compile: `threads` is how many threads a fused node's blocks
    run on (default: TAPEIR_THREADS, else the cores this process may use).

    >>> import numpy as np, tapeir as tp
    >>> compile_numpy(tp.trace(lambda x: x * 2.0, tp.Spec((2,))), threads=1)(np.ones(2, np.float32)).tolist()
    [2.0, 2.0]
    """
    check_options("numpy", options, ("threads",))
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise TapeirError(f"threads={threads!r}: expected a positive int",
                          hint="threads=1 runs fused nodes on the calling thread only; omit it for all cores")
    return NumpyFunction(graph, threads)
