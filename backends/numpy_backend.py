"""The numpy backend: interpret a Graph through one IMPL table.

IMPL is the reference semantics (REFERENCE, ir/reference.py): each op maps to a factory
`attrs -> kernel`, so attributes are bound before the run loop, which only calls kernels.

Rules:
  1. compiling lays out slots: every value gets one, reused after the value's last use
     (intermediates are freed as soon as they are dead);
  2. each binding of the symbolic dims gets one plan per thread: kernels specialised for
     it (symbolic shape attributes resolved once), one step per node. A binding's first
     call allocates as numpy does; when it recurs, its plan gets output buffers from the
     memory plan (backends/numpy_memory.py). The plans of all threads together keep at
     most `buffer_cache_bytes` of buffers, least recently used evicted first, and at most
     MAX_PLANS plans, so a stream of distinct batch sizes holds nothing after its calls; a
     thread's plans go when the thread ends;
  3. one loop runs any plan; a kernel's exception becomes a RunError naming the node,
     its source line and its operands' shapes (an out-of-range class label, say);
  4. outputs are the caller's own: each leaf is its own array, never a view of an input,
     a constant, a buffer or another leaf (a value returned twice is copied);
  5. a fused node runs as a FusedKernel (backends/numpy_fused.py): its body in place over
     cache-sized blocks on `threads` threads (compile option; default: the cores numpy may
     use, or TAPEIR_THREADS). A failure in its body names the body node and its source line;
  6. a plan whose matrix products are all small runs with BLAS on one thread
     (backends/numpy_blas.py: OpenBLAS's thread handoff costs more than such products take).
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from functools import partial

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import RunError, TapeirError
from ..ir.reference import REFERENCE as IMPL
from ..ir.registry import OPS
from ..ir.types import resolve_dim
from . import numpy_blas, numpy_memory
from .numpy_fused import BodyError, FusedKernel, default_threads
from .numpy_memory import may_view, plan_buffers, plan_nbytes
from .signature import Signature, check_options

_NO_CHANGE = contextlib.nullcontext()
MAX_PLANS = 64  # plans kept per compiled function (all threads); an unpooled one is only its kernels


class _Plan:
    """One binding's steps in one thread; `pooled` once the binding recurred and got buffers."""

    __slots__ = ("kernels", "types", "steps", "nbytes", "pooled", "small_blas")

    def __init__(self, kernels, types, steps, small_blas=False):
        self.kernels, self.types, self.steps = kernels, types, steps
        self.nbytes, self.pooled = 0, False
        self.small_blas = small_blas  # rule 6: run with BLAS on one thread


def _owned(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.flags.writeable else x.copy()  # constants, broadcast views


class NumpyFunction:
    """A Graph compiled for the numpy interpreter. Call it with the traced function's pytrees."""

    def __init__(self, graph, buffer_cache_bytes=None, threads: int | None = None):
        self.threads = default_threads() if threads is None else threads
        for n in graph.nodes:
            if n.op not in IMPL:
                raise TapeirError(f"the numpy backend has no kernel for op {n.op!r}",
                                  where=n.source, hint="add it to REFERENCE in ir/reference.py")
        self.graph = graph
        self.signature = Signature(graph)
        self._layout()
        # plans keyed by (thread, binding): a plan's buffers are written by one thread only, so
        # compiled functions are thread-safe; the lock guards the cache and its byte count
        self._plans: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()  # a token per thread: when the thread ends, its plans go
        self._budget = numpy_memory.CACHE_BYTES if buffer_cache_bytes is None else buffer_cache_bytes
        self.cached_bytes = 0  # bytes of buffers the cache holds now (tests and the README's bound read it)

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
        # Rule 4. roots[v]: the arrays value v may share memory with (itself, or through views,
        # what its view-op inputs may). An output is copied when it may share memory with an
        # input or a constant (the caller's or the graph's), or with an earlier output (one value
        # returned twice, two views of one intermediate); buffers never reach outputs (memory plan).
        fixed = {id(v) for v in list(g.inputs) + list(g.constants)}
        roots: dict[int, frozenset] = {}
        for n in g.nodes:
            if may_view(n.op):
                r = frozenset().union(*(roots.get(id(v), frozenset((id(v),))) for v in n.inputs))
            else:
                r = None
            for o in n.outputs:
                roots[id(o)] = r if r is not None else frozenset((id(o),))
        taken: set = set()
        self._outs = []
        for v in g.outputs:
            r = roots.get(id(v), frozenset((id(v),)))
            self._outs.append((slot[id(v)], bool(r & fixed or r & taken)))
            taken |= r

    def _kernel(self, op, attrs):
        if op == "fused":  # rule 5 (it needs no binding: it reads its operands' shapes)
            return FusedKernel(attrs["body"], self.threads)
        return IMPL[op](attrs)

    def _plan(self, bindings) -> _Plan:
        """Rule 2: this thread's plan for these dim sizes."""
        ident = getattr(self._local, "ident", None)
        if ident is None:
            ident = self._local.ident = threading.get_ident()
            self._local.token = token = _ThreadToken()
            weakref.finalize(token, _forget_thread, weakref.ref(self), ident)
        key = (ident, tuple(sorted(bindings.items())))
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
        if plan is None:  # first call with this binding: no buffers that would outlive it
            plan = self._build_plan(bindings)
            with self._lock:
                self._plans[key] = plan
                while len(self._plans) > MAX_PLANS:
                    self._evict(next(iter(self._plans)))
        elif not plan.pooled:  # the binding recurs: give its plan buffers, if they fit the bound
            plan.pooled = True
            bufs = plan_buffers(self.graph.nodes, self.graph.outputs, plan.kernels, plan.types, self._budget)
            nbytes = plan_nbytes(bufs) if bufs is not None else 0
            if nbytes:
                with self._lock:
                    if key in self._plans:  # not evicted by another thread meanwhile
                        for other in [k for k in self._plans if k != key]:
                            if self.cached_bytes + nbytes <= self._budget:
                                break
                            self._evict(other)
                        plan.steps = [_step(k, ins, outs, buf)
                                      for k, (ins, outs), buf in zip(plan.kernels, self._io, bufs)]
                        plan.nbytes = nbytes
                        self.cached_bytes += nbytes
        return plan

    def _evict(self, key):
        """Drop a plan (the caller holds the lock); a thread running it keeps it until its call ends."""
        self.cached_bytes -= self._plans.pop(key).nbytes

    def _build_plan(self, bindings) -> _Plan:
        def resolve(shape):
            return tuple(d if isinstance(d, int) else resolve_dim(d, bindings) for d in shape)

        nodes = self.graph.nodes
        kernels = [k if k is not None else self._kernel(n.op, {**a, **{s: resolve(a[s]) for s in sym}})
                   for n, a, sym, k in zip(nodes, self._attrs, self._symbolic, self._kernels)]
        types = [(resolve(n.outputs[0].type.shape), to_numpy(n.outputs[0].type.dtype)) for n in nodes]
        small = max((numpy_blas.product_macs(n, resolve) for n in nodes), default=0) <= numpy_blas.SMALL_MACS
        return _Plan(kernels, types, [_step(k, ins, outs, None) for k, (ins, outs) in zip(kernels, self._io)], small)

    def run_flat(self, leaves) -> list:
        arrays, bindings = self.signature.bind(leaves)
        plan = self._plan(bindings)
        steps = plan.steps
        env = [None] * self._nslots
        env[:self._n_fixed] = arrays + self._consts
        step = None
        try:
            with numpy_blas.single_thread() if plan.small_blas else _NO_CHANGE:
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


class _ThreadToken:
    """Held by one thread's threading.local only: it dies with the thread."""


def _forget_thread(function_ref, ident):
    """A thread ended: drop its plans (their buffers) from the function, if it still exists."""
    f = function_ref()
    if f is not None:
        with f._lock:
            for key in [k for k in f._plans if k[0] == ident]:
                f._evict(key)


def _step(kernel, ins, outs, buf) -> tuple:
    """A step (fn, a, b, out) of the run loop: env[out] = fn(env[a], env[b]) when b >= 0,
    env[out] = fn(env[a]) when a >= 0, else fn(env) reads and writes env itself (other
    arities, several outputs). Unary and binary steps are nearly every node: they are
    the ones kept tight."""
    if isinstance(buf, tuple):  # a fused node with several outputs (numpy_memory rule 1)
        kernel = partial(kernel, outs=buf)
    elif buf is not None:
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
    run on (default: TAPEIR_THREADS, else the cores this process may use);
    `buffer_cache_bytes` bounds the buffers kept between calls (rule 2).

    >>> import numpy as np, tapeir as tp
    >>> compile_numpy(tp.trace(lambda x: x * 2.0, tp.Spec((2,))), threads=1)(np.ones(2, np.float32)).tolist()
    [2.0, 2.0]
    """
    check_options("numpy", options, ("buffer_cache_bytes", "threads"))
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise TapeirError(f"threads={threads!r}: expected a positive int",
                          hint="threads=1 runs fused nodes on the calling thread only; omit it for all cores")
    limit = options.get("buffer_cache_bytes")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise TapeirError(f"buffer_cache_bytes={limit!r} is not a byte count",
                          hint="pass an int >= 0 (0 keeps no buffers between calls); the default is "
                               f"{numpy_memory.CACHE_BYTES} (backends/numpy_memory.py CACHE_BYTES)")
    return NumpyFunction(graph, None if limit is None else int(limit), threads)
