"""The numpy backend: interpret a Graph through one IMPL table.

IMPL maps each op to a factory `attrs -> kernel`, so attributes are bound once at
compile time and the run loop only calls kernels. Values live in slots that are reused
after their last use (so intermediates are freed as soon as they are dead).

On edge inputs it follows numpy: NaN propagates through max/min, softmax of a row with
+inf is [0, nan, 0], and out-of-range class labels raise RunError. onnxruntime differs
on the first two (see "Known differences" in backends/onnxruntime_backend.py).
"""
from __future__ import annotations

import math
import threading

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import RunError, TapeirError
from ..ir.types import resolve_dim
from . import numpy_kernels as K
from .numpy_memory import may_view, plan_buffers
from .signature import Signature, check_options


def _fixed(fn):
    return lambda attrs: fn


def _reduce(fn):
    def make(attrs):
        axes, keep = attrs["axes"], attrs["keepdims"]
        return lambda x: np.asarray(fn(x, axis=axes, keepdims=keep), dtype=x.dtype)
    return make


def _clip(attrs):
    lo, hi = attrs["min"], attrs["max"]
    if lo is None and hi is None:
        return lambda x: x
    def bound(v, x, to_int):  # an int tensor clipped to [0.5, 2.5] is clipped to [1, 2], not [0, 2]
        return None if v is None else x.dtype.type(to_int(v) if x.dtype.kind in "iu" else v)
    return lambda x: np.clip(x, bound(lo, x, math.ceil), bound(hi, x, math.floor))


def _slice(attrs):
    def make_index(ndim):
        idx = [slice(None)] * ndim
        for a, s, e, st in zip(attrs["axes"], attrs["starts"], attrs["stops"], attrs["steps"]):
            idx[a] = slice(s, None if e < 0 else e, st)
        return tuple(idx)
    cache = {}

    def run(x):
        idx = cache.get(x.ndim) or cache.setdefault(x.ndim, make_index(x.ndim))
        return x[idx]
    return run


def _with(fn, *names):
    return lambda attrs: (lambda *xs: fn(*xs, **{n: attrs[n] for n in names}))


IMPL = {
    "neg": _fixed(np.negative), "exp": _fixed(np.exp), "log": _fixed(np.log),
    "reciprocal": _fixed(np.reciprocal), "sqrt": _fixed(np.sqrt), "abs": _fixed(np.abs),
    "tanh": _fixed(np.tanh), "sin": _fixed(np.sin), "cos": _fixed(np.cos),
    "sigmoid": _fixed(K.sigmoid), "erf": _fixed(K.erf), "softplus": _fixed(K.softplus),
    "relu": _fixed(lambda x: np.maximum(x, x.dtype.type(0))),
    "leaky_relu": lambda a: (lambda x: K.leaky_relu(x, a["alpha"])),
    "elu": lambda a: (lambda x: K.elu(x, a["alpha"])),
    "gelu": lambda a: (lambda x: K.gelu(x, a["approximate"])),
    "clip": _clip,
    "cast": lambda a: (lambda x, dt=to_numpy(a["to"]): x.astype(dt)),
    "add": _fixed(np.add), "sub": _fixed(np.subtract), "mul": _fixed(np.multiply),
    "div": _fixed(np.divide), "pow": _fixed(np.power),
    "maximum": _fixed(np.maximum), "minimum": _fixed(np.minimum),
    "equal": _fixed(np.equal), "not_equal": _fixed(np.not_equal), "less": _fixed(np.less),
    "less_equal": _fixed(np.less_equal), "greater": _fixed(np.greater),
    "greater_equal": _fixed(np.greater_equal),
    "where": _fixed(np.where),
    "sum": _reduce(np.sum), "mean": _reduce(np.mean), "max": _reduce(np.max), "min": _reduce(np.min),
    "logsumexp": lambda a: (lambda x: K.logsumexp(x, a["axes"], a["keepdims"])),
    "softmax": lambda a: (lambda x: K.softmax(x, a["axis"])),
    "log_softmax": lambda a: (lambda x: K.log_softmax(x, a["axis"])),
    "layer_norm": _with(K.layer_norm, "axis", "epsilon"),
    "matmul": _fixed(np.matmul),
    "conv2d": _with(K.conv2d, "stride", "padding", "dilation", "groups"),
    "conv_transpose2d": _with(K.conv_transpose2d, "stride", "padding", "dilation", "groups", "output_padding"),
    "pad": _with(K.pad, "pads", "value"),
    "max_pool2d": _with(K.max_pool2d, "kernel", "stride", "padding", "dilation"),
    "avg_pool2d": _with(K.avg_pool2d, "kernel", "stride", "padding", "dilation", "count_include_pad"),
    "reshape": lambda a: (lambda x, s=a["shape"]: np.reshape(x, s)),
    "transpose": lambda a: (lambda x, p=a["perm"]: np.transpose(x, p)),
    "broadcast_to": lambda a: (lambda x, s=a["shape"]: np.broadcast_to(x, s)),
    "concatenate": lambda a: (lambda *xs: np.concatenate(xs, axis=a["axis"])),
    "slice": _slice,
    "squeeze": lambda a: (lambda x, ax=a["axes"]: np.squeeze(x, axis=ax)),
    "unsqueeze": lambda a: (lambda x, ax=a["axes"]: np.expand_dims(x, ax)),
    "cross_entropy": _with(K.cross_entropy, "reduction", "ignore_index"),
    "nll_loss": _with(K.nll_loss, "reduction", "ignore_index"),
}

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
                                  where=n.source, hint="add it to IMPL in backends/numpy_backend.py")
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
