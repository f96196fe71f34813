"""The reference semantics of every op: REFERENCE maps an op to a factory `attrs -> kernel`.

A kernel is a plain numpy function of the operands (ir/reference_kernels.py holds those
that are more than one numpy call). The numpy backend runs this table as its `IMPL`,
and constant folding (passes/simplify.py) evaluates through it, so a folded constant is
exactly what the interpreter would compute. Attributes are bound once, when the factory
is called, so a run loop only calls kernels.

On edge inputs it follows numpy: NaN propagates through max/min, softmax of a row with
+inf is [0, nan, 0], and out-of-range class labels raise ValueError. onnxruntime differs
on the first two (see "Known differences" in backends/onnxruntime_backend.py).

>>> import numpy as np
>>> REFERENCE["softmax"]({"axis": -1})(np.array([0.0, np.log(3.0)])).tolist()
[0.25, 0.75]
"""
from __future__ import annotations

import math

import numpy as np

from . import reference_kernels as K
from .dtypes import to_numpy


def _fixed(fn):
    return lambda attrs: fn


def _reduce(fn):
    # numpy sums in memory order: a transposed view (or an elementwise result laid out like
    # one) would round differently from the same values in C order. Reducing C-ordered data
    # makes the result depend on the values only (a fused group writes C order; the unfused
    # ops keep their operand's layout), at the cost of a copy of a non-contiguous operand.
    def make(attrs):
        axes, keep = attrs["axes"], attrs["keepdims"]
        return lambda x: np.asarray(fn(np.asarray(x, order="C"), axis=axes, keepdims=keep), dtype=x.dtype)
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


def _fused(attrs):
    """Run a fused node's body with these same kernels: exactly the unfused graph's result."""
    body = attrs["body"]
    steps = [(REFERENCE[m.op](m.attrs), [id(v) for v in m.inputs], id(m.outputs[0])) for m in body.nodes]
    ins = [id(v) for v in body.inputs]
    consts = [(id(c), c.data) for c in body.constants]
    outs = [id(v) for v in body.outputs]

    def run(*xs):
        env = dict(zip(ins, xs))
        env.update(consts)
        for kernel, args, out in steps:
            env[out] = kernel(*[env[a] for a in args])
        return env[outs[0]] if len(outs) == 1 else tuple(env[o] for o in outs)
    return run


def _slice_to(attrs):
    def run(x, ref):
        idx = [slice(None)] * x.ndim
        for a, r in zip(attrs["axes"], attrs["ref_axes"]):
            idx[a] = slice(0, ref.shape[r])
        return x[tuple(idx)]
    return run


def _pad_to(attrs):
    def run(x, ref):
        widths = [(0, ref.shape[a] - x.shape[a]) if a in attrs["axes"] else (0, 0) for a in range(x.ndim)]
        if any(w < 0 for _, w in widths):
            raise ValueError(f"pad_to: {x.shape} is larger than {ref.shape} on axes {attrs['axes']}")
        return np.pad(x, widths)
    return run


def _with(fn, *names):
    return lambda attrs: (lambda *xs: fn(*xs, **{n: attrs[n] for n in names}))


REFERENCE = {
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
    "where": _fixed(K.where),
    "sum": _reduce(np.sum), "mean": _reduce(K.mean), "max": _reduce(np.max), "min": _reduce(np.min),
    "logsumexp": lambda a: (lambda x: K.logsumexp(x, a["axes"], a["keepdims"])),
    "softmax": lambda a: (lambda x: K.softmax(x, a["axis"])),
    "log_softmax": lambda a: (lambda x: K.log_softmax(x, a["axis"])),
    "layer_norm": _with(K.layer_norm, "axis", "epsilon"),
    "matmul": _fixed(K.matmul),
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
    "iota": lambda a: (lambda x, axis=a["axis"]: np.arange(x.shape[axis], dtype=np.int64)),
    "slice_to": _slice_to, "pad_to": _pad_to,
    "squeeze": lambda a: (lambda x, ax=a["axes"]: np.squeeze(x, axis=ax)),
    "unsqueeze": lambda a: (lambda x, ax=a["axes"]: np.expand_dims(x, ax)),
    "cross_entropy": _with(K.cross_entropy, "reduction", "ignore_index"),
    "nll_loss": _with(K.nll_loss, "reduction", "ignore_index"),
    "fused": _fused,
}

# the op families beyond ir/ops.py (ir/ops_index.py, ops_nn.py, ops_random.py), one module each
from .reference_index import REFERENCE_INDEX  # noqa: E402
from .reference_nn import REFERENCE_NN  # noqa: E402
from .reference_random import REFERENCE_RANDOM  # noqa: E402

REFERENCE.update(**REFERENCE_INDEX, **REFERENCE_NN, **REFERENCE_RANDOM)
