"""Forward values of every op against independent float64 references.

Each case traces a small function, runs it on the numpy backend and compares with a
reference written here in plain numpy / `math` (nothing shared with the kernels in
ir/reference_kernels.py). References run in float64 on the very same inputs (f32
inputs are upcast), so f32 results are held to f32 round-off of the exact answer.

The tables cover shapes (scalars/0-d, size-1 dims, broadcasting, symbolic dims traced
from `tp.Spec(("B", ...))` and run at several sizes), dtypes (f32, f64, ints where the
op takes them) and extreme inputs (|x| up to 1e4 in f32 must stay finite).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import tapeir as tp
from support import CONDITIONED, TORCH, assert_close, randn, rng, uniform

F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64
FLOATS = (F32, F64)
INTS = (I32, I64)
# Tolerances: support.assert_close's policy in the case's dtype; a wider one is (ulps, scale, why)
DEFAULT = (None, None, None)
SUM = (256, None, "reductions, matmul, conv: round-off grows with the sum length")
TAILS = (128, 0, "extreme inputs: every element relative, the tails included")
LAYER_NORM = (CONDITIONED, None, "layer_norm divides rounding by the row's std")
TORCH_KERNELS = (TORCH, None, "torch's own kernels")


@dataclass
class Case:
    id: str
    fn: Callable                      # the traced function (tp.* calls)
    args: list                        # numpy arrays it runs on
    ref: Callable                     # the same math in float64 numpy/math, on upcast args
    tol: tuple = DEFAULT              # (ulps, scale, why) for assert_close
    out_dtype: object = None          # default: dtype of the first argument
    specs: list | None = None         # trace with these (symbolic dims), run on `runs`
    runs: list = field(default_factory=list)  # extra argument lists for the same compiled graph

    def __str__(self):
        return self.id


def _up(a):
    a = np.asarray(a)
    return a.astype(F64) if a.dtype.kind == "f" else a


def _tol(case, dtype):
    return case.tol


def check(got, want, dtype, tol=DEFAULT):
    """got (tapeir's result) has `dtype`, want's shape, and want's values within tol."""
    ulps, scale, why = tol
    assert_close(got, want, dtype=dtype, ulps=ulps, scale=scale, why=why)


def run_case(case: Case):
    g = tp.trace(case.fn, *(case.specs or case.args))
    f = tp.compile(g)
    for args in [case.args] + case.runs:
        out = f(*args)
        want = case.ref(*[_up(a) for a in args])
        outs, wants = (out, want) if isinstance(want, tuple) else ((out,), (want,))
        assert len(outs) == len(wants)
        for o, w in zip(outs, wants):
            dt = case.out_dtype or np.asarray(args[0]).dtype
            check(o, w, dt, _tol(case, dt))
    return g



def vmath(f):
    """Apply a scalar `math` function elementwise in float64 (keeps 0-d shapes)."""
    vf = np.vectorize(f, otypes=[F64])
    return lambda x: np.asarray(vf(x), F64)


# ---- scalar references (math module, float64) ------------------------------------------

def _sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def _softplus(v):  # log(1 + e^v) without overflow: v + log(1 + e^-v) for v > 0
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


def _gelu(v):
    return 0.5 * v * math.erfc(-v / math.sqrt(2.0))  # erfc keeps the negative tail accurate


def _gelu_tanh(v):
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))


def _lse(x, axes):
    """logsumexp over `axes` via np.logaddexp.reduce (exact in float64, any magnitude)."""
    x = np.asarray(x, F64)
    axes = tuple(range(x.ndim)) if axes is None else (axes,) if isinstance(axes, int) else tuple(axes)
    axes = tuple(a % max(x.ndim, 1) for a in axes)
    if x.ndim == 0:
        return x
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + list(axes)).reshape([x.shape[a] for a in rest] + [-1])
    return np.logaddexp.reduce(moved, axis=-1)


def _keep(r, x, axes, keepdims):
    if not keepdims:
        return r
    axes = range(x.ndim) if axes is None else (axes,) if isinstance(axes, int) else axes
    shape = list(x.shape)
    for a in axes:
        shape[a % x.ndim] = 1
    return np.reshape(r, shape)


UNARY = {
    # name: (tapeir fn, reference, input generator(shape, dtype), takes ints)
    "exp": (tp.exp, vmath(math.exp), lambda s, d: randn(s, d, "exp", scale=3), False),
    "log": (tp.log, vmath(math.log), lambda s, d: uniform(s, d, 1e-3, 100, "log"), False),
    "reciprocal": (tp.reciprocal, vmath(lambda v: 1.0 / v),
                   lambda s, d: uniform(s, d, 0.1, 10, "rec") * np.where(randn(s, I32, "sgn") > 0, 1, -1).astype(d), False),
    "sqrt": (tp.sqrt, vmath(math.sqrt), lambda s, d: uniform(s, d, 0, 100, "sqrt"), False),
    "abs": (tp.abs, lambda x: np.where(x < 0, -x, x), lambda s, d: randn(s, d, "abs"), True),
    "negative": (tp.negative, lambda x: 0 - x, lambda s, d: randn(s, d, "neg"), True),
    "tanh": (tp.tanh, vmath(math.tanh), lambda s, d: randn(s, d, "tanh", scale=3), False),
    "sigmoid": (tp.sigmoid, vmath(_sigmoid), lambda s, d: randn(s, d, "sig", scale=5), False),
    "softplus": (tp.softplus, vmath(_softplus), lambda s, d: randn(s, d, "sp", scale=5), False),
    "relu": (tp.relu, lambda x: x * (x > 0), lambda s, d: randn(s, d, "relu"), True),
    "leaky_relu": (tp.leaky_relu, lambda x: np.where(x >= 0, x, 0.01 * x), lambda s, d: randn(s, d, "lr"), False),
    "leaky_relu_0.2": (lambda x: tp.leaky_relu(x, 0.2), lambda x: np.where(x >= 0, x, 0.2 * x),
                       lambda s, d: randn(s, d, "lr2"), False),
    "elu": (tp.elu, vmath(lambda v: v if v > 0 else math.expm1(v)), lambda s, d: randn(s, d, "elu", scale=3), False),
    "elu_0.5": (lambda x: tp.elu(x, alpha=0.5), vmath(lambda v: v if v > 0 else 0.5 * math.expm1(v)),
                lambda s, d: randn(s, d, "elu2", scale=3), False),
    "gelu": (tp.gelu, vmath(_gelu), lambda s, d: randn(s, d, "gelu", scale=3), False),
    "gelu_tanh": (lambda x: tp.gelu(x, approximate="tanh"), vmath(_gelu_tanh),
                  lambda s, d: randn(s, d, "gelut", scale=3), False),
    "silu": (tp.silu, vmath(lambda v: v * _sigmoid(v)), lambda s, d: randn(s, d, "silu", scale=3), False),
    "safe_log": (tp.safe_log, vmath(lambda v: math.log(v + 1e-6)), lambda s, d: uniform(s, d, 0, 10, "sl"), False),
    "safe_log_eps": (lambda x: tp.safe_log(x, eps=1e-2), vmath(lambda v: math.log(v + 1e-2)),
                     lambda s, d: uniform(s, d, 0, 10, "sl2"), False),
    "sin": (tp.sin, vmath(math.sin), lambda s, d: randn(s, d, "sin", scale=3), False),
    "cos": (tp.cos, vmath(math.cos), lambda s, d: randn(s, d, "cos", scale=3), False),
}
UNARY_SHAPES = [(), (1,), (5,), (2, 1, 3), (3, 4)]


def unary_cases():
    for (name, (fn, ref, gen, ints)), shape in itertools.product(UNARY.items(), UNARY_SHAPES):
        for dt in FLOATS + (INTS if ints else ()):
            x = gen(shape, dt)
            if name == "safe_log" and x.size:
                x.flat[0] = 0  # log(0 + eps) is finite
            yield Case(f"{name}-{np.dtype(dt).name}-{shape}", fn, [x], ref)


# extreme inputs: must be finite in f32 and match the float64 value (to relative precision
# in the tails, where a naive formula underflows or overflows)
EXTREME = np.array([-1e4, -1e3, -88.0, -30.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 5.0, 30.0, 88.0, 1e3, 1e4])
TIGHT = TAILS


GELU_TAIL = (128, 0.1, "gelu's negative tail: accurate to ~1e-6 absolute, not relative")


def extreme_cases():
    for name, tol in [("sigmoid", TIGHT), ("softplus", TIGHT), ("tanh", TIGHT), ("relu", TIGHT),
                      ("leaky_relu", TIGHT), ("elu", TIGHT), ("silu", TIGHT), ("abs", TIGHT), ("negative", TIGHT),
                      ("gelu", GELU_TAIL), ("gelu_tanh", GELU_TAIL)]:
        fn, ref, _, _ = UNARY[name]
        for dt in FLOATS:
            yield Case(f"extreme-{name}-{np.dtype(dt).name}", fn, [EXTREME.astype(dt)], ref, tol=tol)
    x = np.array([0.0, 1e-30, 1e-3, 1.0, 1e4], F32)
    # (x + eps rounds in f32, so near x = 1 the result is only good to ~1e-7 absolute)
    yield Case("extreme-safe_log-float32", tp.safe_log, [x], vmath(lambda v: math.log(v + 1e-6)),
               tol=(128, 0.01, "x + eps rounds in float32: ~1e-7 absolute near x = 1"))
    yield Case("extreme-exp-float32", tp.exp, [np.array([-1e4, -100.0, -80.0, 0.0, 80.0], F32)],
               vmath(lambda v: math.exp(v) if v > -700 else 0.0),
               tol=(128, 1e-40, "relative per element; a subnormal result to a step (1.4e-45)"))


# ---- binary elementwise ----------------------------------------------------------------

BINARY = {
    # name: (tapeir fn, reference, takes ints, input generator)
    "add": (tp.add, lambda a, b: a + b, True, None),
    "subtract": (tp.subtract, lambda a, b: a - b, True, None),
    "multiply": (tp.multiply, lambda a, b: a * b, True, None),
    "divide": (tp.divide, lambda a, b: a / b, False, "nonzero"),
    "power": (tp.power, lambda a, b: np.exp(b * np.log(a)), False, "positive"),
    "maximum": (tp.maximum, lambda a, b: np.where(a > b, a, b), True, None),
    "minimum": (tp.minimum, lambda a, b: np.where(a < b, a, b), True, None),
}
COMPARE = {
    "equal": (tp.equal, lambda a, b: a == b), "not_equal": (tp.not_equal, lambda a, b: a != b),
    "less": (tp.less, lambda a, b: a < b), "less_equal": (tp.less_equal, lambda a, b: a <= b),
    "greater": (tp.greater, lambda a, b: a > b), "greater_equal": (tp.greater_equal, lambda a, b: a >= b),
}
BINARY_SHAPES = [((), ()), ((3,), ()), ((), (3,)), ((3, 4), (4,)), ((3, 1), (1, 4)),
                 ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((2, 3), (2, 3))]


def _pair(sa, sb, dt, key, kind=None):
    a, b = randn(sa, dt, key, "a"), randn(sb, dt, key, "b")
    if kind == "nonzero":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(dt)
    if kind == "positive":
        a = uniform(sa, dt, 0.5, 2.0, key)
    if a.size and b.size and kind is None:  # plant ties for maximum/minimum/comparisons
        a.flat[0] = b.flat[0]
    return a, b


def binary_cases():
    for (name, (fn, ref, ints, kind)), (sa, sb) in itertools.product(BINARY.items(), BINARY_SHAPES):
        for dt in FLOATS + (INTS if ints else ()):
            a, b = _pair(sa, sb, dt, name, kind)
            yield Case(f"{name}-{np.dtype(dt).name}-{sa}-{sb}", fn, [a, b], ref)
    for (name, (fn, ref)), (sa, sb) in itertools.product(COMPARE.items(), BINARY_SHAPES[::2]):
        for dt in (F32, F64, I32, I64):
            a, b = _pair(sa, sb, dt, name)
            yield Case(f"{name}-{np.dtype(dt).name}-{sa}-{sb}", fn, [a, b], ref, out_dtype=np.bool_)


def where_clip_cases():
    for sc, sa, sb in [((), (), ()), ((3,), (3,), (3,)), ((3, 1), (4,), ()), ((2, 3, 4), (3, 4), (1, 4))]:
        for dt in (F32, F64, I64):
            c, a, b = randn(sc, F64, "c") > 0, randn(sa, dt, "wa"), randn(sb, dt, "wb")
            yield Case(f"where-{np.dtype(dt).name}-{sc}-{sa}-{sb}", lambda a, b, c: tp.where(c, a, b), [a, b, c],
                       lambda a, b, c: (a * c + b * (1 - c)).astype(a.dtype))
    x = randn((5, 4), F32, "where-cmp")
    yield Case("where-from-comparison", lambda x: tp.where(x > 0, x, 0.5 * x), [x],
               lambda x: x * (x > 0) + 0.5 * x * (x <= 0))
    yield Case("where-scalar-branches", lambda x: tp.where(x < 0, -1.0, 1.0), [x], lambda x: 1.0 - 2.0 * (x < 0))
    for lo, hi in [(-0.5, 0.5), (None, 0.2), (-0.1, None), (None, None), (0.3, 0.3)]:
        for dt in FLOATS:
            x = randn((3, 4), dt, "clip")
            yield Case(f"clip-{np.dtype(dt).name}-{lo}-{hi}", lambda x, lo=lo, hi=hi: tp.clip(x, lo, hi), [x],
                       lambda x, lo=lo, hi=hi: np.minimum(np.maximum(x, -np.inf if lo is None else lo),
                                                          np.inf if hi is None else hi))
    # int tensors: a float bound means the nearest int inside it (clip to [0.5, 2.5] is [1, 2])
    for lo, hi, rlo, rhi in [(-1, 3, -1, 3), (0.5, 2.5, 1, 2), (-2.5, None, -2, 99), (None, -0.5, -99, -1)]:
        for dt in INTS:
            x = np.arange(-5, 6, dtype=dt)
            yield Case(f"clip-{np.dtype(dt).name}-{lo}-{hi}", lambda x, lo=lo, hi=hi: tp.clip(x, lo, hi), [x],
                       lambda x, rlo=rlo, rhi=rhi: np.minimum(np.maximum(x, rlo), rhi).astype(x.dtype))


# ---- reductions and the softmax family -----------------------------------------------------

REDUCE = {
    "sum": (tp.sum, lambda x, ax: np.add.reduce(x, axis=ax), True),
    "mean": (tp.mean, lambda x, ax: np.add.reduce(x, axis=ax) / (x.size / max(np.add.reduce(x, axis=ax).size, 1)
                                                                 if x.size else 1), False),
    "max": (tp.max, lambda x, ax: np.maximum.reduce(x, axis=ax), True),
    "min": (tp.min, lambda x, ax: np.minimum.reduce(x, axis=ax), True),
    "logsumexp": (tp.logsumexp, lambda x, ax: _lse(x, ax), False),
}
REDUCE_AXES = {(): [None], (5,): [None, 0, -1], (2, 3, 4): [None, 0, -1, 1, (0, 2), (-1, 0), (0, 1, 2)],
               (1, 3): [None, 0, 1]}


def _axis_tuple(x, ax):
    if ax is None:
        return tuple(range(x.ndim))
    return tuple(a % x.ndim for a in ((ax,) if isinstance(ax, int) else ax))


def reduce_cases():
    for name, (fn, ref, ints) in REDUCE.items():
        for shape, axes in REDUCE_AXES.items():
            for ax, keep, dt in itertools.product(axes, (False, True), FLOATS + (INTS if ints else ())):
                x = randn(shape, dt, name, scale=3)

                def r(x, ref=ref, ax=ax, keep=keep):
                    out = ref(x, _axis_tuple(x, ax)) if x.ndim else x
                    return _keep(np.asarray(out), x, ax, keep)
                yield Case(f"{name}-{np.dtype(dt).name}-{shape}-axis{ax}-keep{keep}",
                           lambda x, fn=fn, ax=ax, keep=keep: fn(x, axis=ax, keepdims=keep), [x], r,
                           tol=SUM)


def _softmax_ref(x, axis):
    return np.exp(x - _keep(_lse(x, axis), x, axis, True))


def softmax_cases():
    for shape, axes in [((5,), [-1, 0]), ((1, 1), [-1, 0]), ((2, 3, 4), [-1, 0, 1]), ((3, 1), [-1, 0])]:
        for ax, dt in itertools.product(axes, FLOATS):
            x = randn(shape, dt, "sm", scale=3)
            yield Case(f"softmax-{np.dtype(dt).name}-{shape}-axis{ax}", lambda x, ax=ax: tp.softmax(x, axis=ax), [x],
                       lambda x, ax=ax: _softmax_ref(x, ax))
            yield Case(f"log_softmax-{np.dtype(dt).name}-{shape}-axis{ax}",
                       lambda x, ax=ax: tp.log_softmax(x, axis=ax), [x],
                       lambda x, ax=ax: x - _keep(_lse(x, ax), x, ax, True))
    x = randn((4, 6), F32, "sm-default")
    yield Case("softmax-default-axis", tp.softmax, [x], lambda x: _softmax_ref(x, -1))
    yield Case("log_softmax-default-axis", tp.log_softmax, [x], lambda x: x - _lse(x, -1)[:, None])
    # extreme logits: rows mixing +-1e4, rows all equal to +-1e4
    big = np.array([[1e4, -1e4, 0.0, 5e3], [1e4, 1e4, 1e4, 1e4], [-1e4, -1e4, -1e4, -1e4],
                    [3.0, -1e4, 2.0, 1.0]], F32)
    yield Case("extreme-softmax", tp.softmax, [big], lambda x: _softmax_ref(x, -1), tol=TAILS)
    yield Case("extreme-softmax-axis0", lambda x: tp.softmax(x, 0), [big], lambda x: _softmax_ref(x, 0),
               tol=TAILS)
    yield Case("extreme-log_softmax", tp.log_softmax, [big], lambda x: x - _lse(x, -1)[:, None])
    yield Case("extreme-logsumexp", lambda x: tp.logsumexp(x, axis=1), [big], lambda x: _lse(x, 1))
    yield Case("extreme-logsumexp-all", tp.logsumexp, [big], lambda x: _lse(x, None))
    yield Case("extreme-logsumexp-keepdims", lambda x: tp.logsumexp(x, axis=0, keepdims=True), [big],
               lambda x: _lse(x, 0)[None])


def _layer_norm_ref(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    n = math.prod(x.shape[x.ndim - k:])
    mu = np.add.reduce(x, axis=axes, keepdims=True) / n
    var = np.add.reduce((x - mu) ** 2, axis=axes, keepdims=True) / n
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def layer_norm_cases():
    for shape, k in [((4, 5), 1), ((2, 3, 4), 2), ((2, 3, 4), 1), ((7,), 1), ((3, 1), 1)]:
        ns = shape[len(shape) - k:]
        for dt, affine, eps in itertools.product(FLOATS, ("none", "w", "wb"), (1e-5, 1e-2)):
            x = randn(shape, dt, "ln", scale=3) + dt(1)
            w, b = randn(ns, dt, "lnw"), randn(ns, dt, "lnb")
            args = [x] + ([w] if affine != "none" else []) + ([b] if affine == "wb" else [])
            yield Case(f"layer_norm-{np.dtype(dt).name}-{shape}-{k}-{affine}-eps{eps}",
                       lambda x, *wb, ns=ns, eps=eps: tp.layer_norm(x, ns, *wb, eps=eps), args,
                       lambda x, *wb, k=k, eps=eps: _layer_norm_ref(x, k, *wb, eps=eps), tol=LAYER_NORM)
    x = (randn((3, 8), F32, "ln-big") * 1e3 + 1e4).astype(F32)
    yield Case("extreme-layer_norm", lambda x: tp.layer_norm(x, 8), [x], lambda x: _layer_norm_ref(x, 1),
               tol=(8 * CONDITIONED, None, "layer_norm of rows 1e4 +- 1e3: x - mean cancels"))


# ---- contractions, convolution, pooling ------------------------------------------------------

def _matmul_ref(a, b):
    """matmul by broadcasting multiply-and-sum (1-D operands promoted, then squeezed)."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
                 ((2, 3), (4, 3, 2)), ((5, 1, 2, 3), (4, 3, 2)), ((3,), (2, 3, 4)), ((2, 2, 3), (3,)),
                 ((1, 1), (1, 1)), ((4, 1), (1, 4))]


def matmul_cases():
    for (sa, sb), dt in itertools.product(MATMUL_SHAPES, FLOATS + INTS):
        a, b = randn(sa, dt, "mm-a"), randn(sb, dt, "mm-b")
        yield Case(f"matmul-{np.dtype(dt).name}-{sa}-{sb}", tp.matmul, [a, b], _matmul_ref, tol=SUM)


def _conv_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Naive convolution: loop over output pixels and kernel taps, one group at a time."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for i, j, ki, kj in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        r, s = i * sh - ph + ki * dh, j * sw - pw + kj * dw
        if not (0 <= r < h and 0 <= s < wd):
            continue  # a zero from padding
        for grp in range(groups):
            xs = x[:, grp * cg:(grp + 1) * cg, r, s]                   # [N, cg]
            ws = w[grp * og:(grp + 1) * og, :, ki, kj]                 # [og, cg]
            out[:, grp * og:(grp + 1) * og, i, j] += xs @ ws.T
    if b is not None:
        out += b[None, :, None, None]
    return out


CONV = [  # (x shape, w shape, stride, padding, dilation, groups, bias)
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0, 1, 1, False),
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 1, 1, 1, True),
    ((1, 4, 8, 6), (6, 2, 3, 2), (2, 1), (1, 0), 1, 2, True),
    ((2, 4, 9, 9), (4, 1, 3, 3), 2, 2, 2, 4, False),           # depthwise, dilated, strided
    ((1, 2, 5, 5), (3, 2, 1, 1), 1, 0, 1, 1, True),             # 1x1
    ((1, 3, 6, 6), (2, 3, 3, 3), 1, "same", 1, 1, False),
    ((1, 2, 9, 9), (4, 2, 3, 3), 1, "same", (2, 1), 1, True),
    ((1, 6, 10, 7), (3, 2, 4, 3), (3, 2), (2, 1), (1, 2), 3, True),
    ((1, 1, 3, 3), (1, 1, 3, 3), 1, "valid", 1, 1, False),       # a single output pixel
]


def _pair2(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_cases():
    for i, (xs, ws, st, pd, dl, gr, bias) in enumerate(CONV):
        for dt in FLOATS:
            x, w = randn(xs, dt, "cx", i), randn(ws, dt, "cw", i)
            args = [x, w] + ([randn((ws[0],), dt, "cb", i)] if bias else [])
            if pd == "same":
                pref = tuple(_pair2(dl)[k] * (ws[2 + k] - 1) // 2 for k in range(2))
            else:
                pref = (0, 0) if pd == "valid" else _pair2(pd)
            yield Case(f"conv2d-{np.dtype(dt).name}-{i}", lambda x, w, *b, st=st, pd=pd, dl=dl, gr=gr: tp.conv2d(
                x, w, *b, stride=st, padding=pd, dilation=dl, groups=gr), args,
                lambda x, w, *b, st=st, pref=pref, dl=dl, gr=gr: _conv_ref(
                    x, w, *b, stride=_pair2(st), padding=pref, dilation=_pair2(dl), groups=gr), tol=SUM)


def _pool_ref(x, kernel, stride, padding, dilation=(1, 1), mode="max", count_include_pad=True):
    """Naive pooling: gather each window's in-bounds taps; padding never wins a max."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        taps = [(i * sh - ph + a * dh, j * sw - pw + b * dw) for a in range(kh) for b in range(kw)]
        inside = [x[:, :, r, s] for r, s in taps if 0 <= r < h and 0 <= s < w]
        if mode == "max":
            out[:, :, i, j] = np.maximum.reduce(inside)
        else:
            out[:, :, i, j] = np.add.reduce(inside) / (kh * kw if count_include_pad else len(inside))
    return out


MAXPOOL = [(2, None, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), ((2, 3), (1, 2), (1, 1), 1), (2, 1, 0, 2),
           (3, 2, 1, 2), ((1, 2), None, (0, 1), 1), (5, 1, 2, 1)]
AVGPOOL = [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), ((3, 1), (2, 1), (1, 0)), (5, 3, 2)]


def pool_cases():
    for i, (k, s, p, d) in enumerate(MAXPOOL):
        for dt in FLOATS:
            x = randn((2, 3, 7, 8), dt, "mp", i) - dt(2)  # mostly negative: a zero pad must not win
            yield Case(f"max_pool2d-{np.dtype(dt).name}-{i}",
                       lambda x, k=k, s=s, p=p, d=d: tp.max_pool2d(x, k, s, padding=p, dilation=d), [x],
                       lambda x, k=k, s=s, p=p, d=d: _pool_ref(x, _pair2(k), _pair2(s if s is not None else k),
                                                               _pair2(p), _pair2(d)))
    for (i, (k, s, p)), cip in itertools.product(enumerate(AVGPOOL), (True, False)):
        for dt in FLOATS:
            x = randn((2, 3, 7, 8), dt, "ap", i) + dt(1)
            yield Case(f"avg_pool2d-{np.dtype(dt).name}-{i}-cip{cip}",
                       lambda x, k=k, s=s, p=p, cip=cip: tp.avg_pool2d(x, k, s, padding=p, count_include_pad=cip),
                       [x], lambda x, k=k, s=s, p=p, cip=cip: _pool_ref(
                           x, _pair2(k), _pair2(s if s is not None else k), _pair2(p), mode="avg",
                           count_include_pad=cip), tol=SUM)


# ---- shape ops, indexing ---------------------------------------------------------------------

def shape_cases():
    for dt in (F32, F64, I64):
        x = randn((2, 3, 4), dt, "shape")
        for shp in [(6, 4), (-1,), (4, -1, 2), (2, 3, 4), (1, 24, 1), (-1, 1)]:
            yield Case(f"reshape-{np.dtype(dt).name}-{shp}", lambda x, shp=shp: tp.reshape(x, shp), [x],
                       lambda x, shp=shp: x.reshape(shp))
        for perm in [None, (1, 0, 2), (2, 0, 1), (-1, 0, 1), (0, 1, 2)]:
            yield Case(f"transpose-{np.dtype(dt).name}-{perm}", lambda x, p=perm: tp.transpose(x, p), [x],
                       lambda x, p=perm: np.transpose(x, p))
        yield Case(f"concatenate-{np.dtype(dt).name}-axis0", lambda a, b: tp.concatenate([a, b]),
                   [x, randn((1, 3, 4), dt, "cat")], lambda a, b: np.concatenate([a, b]))
        yield Case(f"concatenate-{np.dtype(dt).name}-axis-1",
                   lambda a, b, c: tp.concatenate((a, b, c), axis=-1),
                   [x, randn((2, 3, 1), dt, "cat1"), randn((2, 3, 2), dt, "cat2")],
                   lambda a, b, c: np.concatenate([a, b, c], axis=2))
    for src, dst in [((), (1, 1)), ((1,), ()), ((5,), (5, 1)), ((1, 1, 1), (1,)), ((0, 3), (3, 0)), ((0, 3), (-1, 6))]:
        x = randn(src, F32, "rs0")
        yield Case(f"reshape-{src}-{dst}", lambda x, dst=dst: tp.reshape(x, dst), [x], lambda x, dst=dst: x.reshape(dst))
    for src, dst in [((3,), (2, 3)), ((1, 3), (4, 3)), ((), (2, 2)), ((2, 1, 1), (3, 2, 4, 5)), ((1,), (1,))]:
        x = randn(src, F32, "bt")
        yield Case(f"broadcast_to-{src}-{dst}", lambda x, dst=dst: tp.broadcast_to(x, dst), [x],
                   lambda x, dst=dst: x + np.zeros(dst))
    x = randn((1, 3, 1), F32, "sq")
    for ax, want in [(0, (3, 1)), (-1, (1, 3)), ((0, 2), (3,)), (None, (3,))]:
        yield Case(f"squeeze-{ax}", lambda x, ax=ax: tp.squeeze(x, ax), [x], lambda x, want=want: x.reshape(want))
    yield Case("squeeze-default", tp.squeeze, [x], lambda x: x.reshape(3))
    for src, ax, want in [((3,), 0, (1, 3)), ((3,), -1, (3, 1)), ((2, 3), (0, 2), (1, 2, 1, 3)),
                          ((2, 3), 1, (2, 1, 3)), ((), 0, (1,)), ((2, 3), (-1, 0), (1, 2, 3, 1))]:
        x = randn(src, F64, "ed")
        yield Case(f"expand_dims-{src}-{ax}", lambda x, ax=ax: tp.expand_dims(x, ax), [x],
                   lambda x, want=want: x.reshape(want))
    yield Case("concatenate-single", lambda a: tp.concatenate([a], axis=1), [randn((2, 3), F32, "c1")],
               lambda a: a * 1)


INDICES = [1, -1, (0, 2), (-3, -4, -5), slice(1, 3), slice(None, None, 2), slice(None, None, -1), slice(4, 0, -2),
           (Ellipsis, 1), (None, Ellipsis), (1, None, slice(None), -2), slice(-10, 10), slice(-9, None, -1),
           (0, 0, 0), Ellipsis, (slice(None), slice(1, None, 2), slice(None, 1, -1)), (None, 1, None),
           (Ellipsis, None), (2, Ellipsis, slice(3, None)), slice(2, 1), np.int64(1), (np.int32(-1), 2)]


def index_cases():
    for i, idx in enumerate(INDICES):
        for dt in (F32, I64):
            x = np.arange(60).reshape(3, 4, 5).astype(dt)
            yield Case(f"getitem-{np.dtype(dt).name}-{i}-{idx!r}", lambda x, idx=idx: x[idx], [x],
                       lambda x, idx=idx: np.array(x[idx]))


# ---- Tensor operators and methods ------------------------------------------------------------

def tensor_cases():
    a, b = randn((3, 4), F32, "ta"), randn((4,), F32, "tb")
    m = randn((4, 2), F32, "tm")
    pos = uniform((3, 4), F32, 0.5, 2, "tpos")
    ints = randn((3, 4), I64, "ti")
    consts = randn((3, 4), F32, "tconst")
    ops = [
        ("add", lambda a, b: a + b, lambda a, b: a + b, [a, b]),
        ("sub", lambda a, b: a - b, lambda a, b: a - b, [a, b]),
        ("mul", lambda a, b: a * b, lambda a, b: a * b, [a, b]),
        ("truediv", lambda a, b: a / b, lambda a, b: a / b, [a, pos[0]]),
        ("pow", lambda a, b: a ** b, lambda a, b: np.exp(b * np.log(a)), [pos, b]),
        ("matmul", lambda a, m: a @ m, _matmul_ref, [a, m]),
        ("neg", lambda a: -a, lambda a: 0 - a, [a]),
        ("pos", lambda a: +a, lambda a: a, [a]),
        ("abs", lambda a: abs(a), lambda a: np.where(a < 0, -a, a), [a]),
        ("radd-scalar", lambda a: 2.0 + a, lambda a: a + 2, [a]),
        ("rsub-scalar", lambda a: 2 - a, lambda a: 2 - a, [a]),
        ("rmul-scalar", lambda a: 3 * a, lambda a: a * 3, [a]),
        ("rdiv-scalar", lambda a: 1 / a, lambda a: 1 / a, [pos]),
        ("pow-scalar", lambda a: a ** 2, lambda a: a * a, [a]),
        ("pow-half", lambda a: a ** 0.5, vmath(math.sqrt), [pos]),
        ("rpow-scalar", lambda a: 2.0 ** a, lambda a: np.exp(a * math.log(2.0)), [a]),
        ("numpy-scalar", lambda a: a * np.float64(2.5) + np.int64(1), lambda a: a * 2.5 + 1, [a]),
        ("radd-array", lambda a: consts + a, lambda a: a + _up(consts), [a]),
        ("rmatmul-array", lambda a: consts.T @ a, lambda a: _matmul_ref(_up(consts).T, a), [a]),
        ("int-ops", lambda x: (x + 1) * 2 - x, lambda x: (x + 1) * 2 - x, [ints]),
        ("int-matmul", lambda x: x @ x.T, lambda x: _matmul_ref(x, x.T), [ints]),
        ("T", lambda a: a.T, lambda a: a.transpose(), [a]),
        ("T-3d", lambda a: a.T, lambda a: a.transpose(2, 1, 0), [randn((2, 3, 4), F32, "t3")]),
        ("reshape-args", lambda a: a.reshape(2, -1), lambda a: a.reshape(2, 6), [a]),
        ("reshape-tuple", lambda a: a.reshape((4, 3)), lambda a: a.reshape(4, 3), [a]),
        ("transpose-none", lambda a: a.transpose(), lambda a: a.transpose(), [a]),
        ("transpose-args", lambda a: a.transpose(1, 0), lambda a: a.transpose(), [a]),
        ("transpose-tuple", lambda a: a.transpose((0, 1)), lambda a: a, [a]),
        ("sum", lambda a: a.sum(), lambda a: np.add.reduce(a, axis=None), [a]),
        ("sum-axis-keep", lambda a: a.sum(axis=0, keepdims=True), lambda a: np.add.reduce(a, 0)[None], [a]),
        ("mean-axis", lambda a: a.mean(axis=-1), lambda a: np.add.reduce(a, 1) / 4, [a]),
        ("mean-keep", lambda a: a.mean(1, True), lambda a: np.add.reduce(a, 1)[:, None] / 4, [a]),
        ("max", lambda a: a.max(), lambda a: np.maximum.reduce(a, axis=None), [a]),
        ("max-axis-keep", lambda a: a.max(axis=0, keepdims=True), lambda a: np.maximum.reduce(a, 0)[None], [a]),
        ("min-axis", lambda a: a.min(axis=1), lambda a: np.minimum.reduce(a, 1), [a]),
        ("int-sum", lambda x: x.sum(axis=1), lambda x: np.add.reduce(x, 1), [ints]),
    ]
    for name, fn, ref, args in ops:
        yield Case(f"tensor-{name}", fn, args, ref, tol=SUM)
    cmps = [("eq", lambda a, b: a == b, lambda a, b: a == b), ("ne", lambda a, b: a != b, lambda a, b: a != b),
            ("lt", lambda a, b: a < b, lambda a, b: a < b), ("le", lambda a, b: a <= b, lambda a, b: a <= b),
            ("gt", lambda a, b: a > b, lambda a, b: a > b), ("ge", lambda a, b: a >= b, lambda a, b: a >= b),
            ("gt-scalar", lambda a, b: a > 0, lambda a, b: a > 0), ("rlt-scalar", lambda a, b: 0.5 < a,
                                                                   lambda a, b: a > 0.5)]
    bt = b.copy()
    bt[0] = a[0, 0]  # a tie
    for name, fn, ref in cmps:
        yield Case(f"tensor-{name}", fn, [a, bt], ref, out_dtype=np.bool_)
    yield Case("tensor-bool-eq", lambda a: (a > 0) == (a < 1), [a], lambda a: (a > 0) == (a < 1), out_dtype=np.bool_)
    casts = [("f32->f64", F32, "float64", F64), ("f32->i32", F32, np.int32, I32), ("f64->f32", F64, F32, F32),
             ("i64->f32", I64, "f32", F32), ("i32->i64", I32, np.int64, I64), ("f32->f32", F32, F32, F32)]
    for name, src, dst, npdst in casts:
        x = (randn((3, 4), src, "cast", scale=4) + (0.25 if np.dtype(src).kind == "f" else 0)).astype(src)
        yield Case(f"astype-{name}", lambda x, dst=dst: x.astype(dst), [x],
                   lambda x, d=npdst: np.trunc(x).astype(d) if np.dtype(d).kind == "i" else x, out_dtype=npdst)
    yield Case("astype-bool->f32", lambda x: (x > 0).astype("float32"), [a], lambda x: (x > 0) * 1.0, out_dtype=F32)


def test_tensor_metadata():
    seen = {}

    def f(x, n):
        seen.update(shape=x.shape, dtype=x.dtype, ndim=x.ndim, nshape=n.shape, ndtype=n.dtype,
                    tshape=x.T.shape, rshape=x.reshape(-1).shape, sshape=x.sum(axis=1, keepdims=True).shape)
        return x.sum(axis=1) + n.astype("float32")

    g = tp.trace(f, tp.Spec(("B", 3)), np.zeros(3, I64).reshape(3)[:1].reshape(()))
    assert seen == dict(shape=("B", 3), dtype=np.dtype(F32), ndim=2, nshape=(), ndtype=np.dtype(I64),
                        tshape=(3, "B"), rshape=("3*B",), sshape=("B", 1))
    out = tp.run(g, np.ones((4, 3), F32), np.array(2, I64))
    check(out, np.full(4, 5.0), F32)


# ---- losses ---------------------------------------------------------------------------------

def _reduce(v, reduction):
    return {"mean": lambda: np.add.reduce(v, axis=None) / v.size, "sum": lambda: np.add.reduce(v, axis=None),
            "none": lambda: v}[reduction]()


def _class_loss_ref(x, labels, reduction, ignore_index, logits):
    """Per position p: lse(x[:, p]) - x[label, p] (cross-entropy) or -x[label, p] (nll)."""
    xc = x[None, :] if x.ndim == 1 else np.moveaxis(x, 1, -1)      # [..., C]
    flat, lab = xc.reshape(-1, xc.shape[-1]), labels.reshape(-1)
    losses, count = np.zeros(len(lab)), 0
    for p, y in enumerate(lab):
        if y == ignore_index:
            continue
        count += 1
        losses[p] = (np.logaddexp.reduce(flat[p]) if logits else 0.0) - flat[p, y]
    if reduction == "none":
        return losses.reshape(labels.shape)
    total = math.fsum(losses)
    return total if reduction == "sum" else total / count


def loss_cases():
    for shape, dt, red in itertools.product([(), (5,), (3, 4)], FLOATS, ("mean", "sum", "none")):
        a, b = randn(shape, dt, "la", scale=2), randn(shape, dt, "lb", scale=2)
        t = uniform(shape, dt, 0, 1, "lt")
        yield Case(f"mse_loss-{np.dtype(dt).name}-{shape}-{red}", lambda a, b, r=red: tp.mse_loss(a, b, reduction=r),
                   [a, b], lambda a, b, r=red: _reduce((a - b) ** 2, r), tol=SUM)
        yield Case(f"l1_loss-{np.dtype(dt).name}-{shape}-{red}", lambda a, b, r=red: tp.l1_loss(a, b, reduction=r),
                   [a, b], lambda a, b, r=red: _reduce(np.where(a > b, a - b, b - a), r), tol=SUM)
        yield Case(f"bce_logits-{np.dtype(dt).name}-{shape}-{red}",
                   lambda a, t, r=red: tp.binary_cross_entropy_with_logits(a, t, reduction=r), [a, t],
                   lambda a, t, r=red: _reduce((1 - t) * a + np.logaddexp(0, -a), r), tol=SUM)
    x = np.array([-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4, 1e4, -1e4], F32)
    y = np.array([0.0, 0.3, 1.0, 0.5, 0.0, 1.0, 1.0, 0.0, 1.0], F32)
    for red in ("mean", "sum", "none"):
        yield Case(f"extreme-bce_logits-{red}", lambda a, t, r=red: tp.binary_cross_entropy_with_logits(a, t, reduction=r),
                   [x, y], lambda a, t, r=red: _reduce((1 - t) * a + np.logaddexp(0, -a), r))
        yield Case(f"extreme-mse_loss-{red}", lambda a, t, r=red: tp.mse_loss(a, t, reduction=r), [x, -x],
                   lambda a, t, r=red: _reduce((a - t) ** 2, r))
        yield Case(f"extreme-l1_loss-{red}", lambda a, t, r=red: tp.l1_loss(a, t, reduction=r), [x, y],
                   lambda a, t, r=red: _reduce(np.abs(a - t), r))

    table = [((4, 5), None), ((2, 5, 3), None), ((2, 3, 2, 2), None), ((5,), None), ((6, 4), -100), ((6, 4), 2),
             ((2, 4, 3), 1), ((1, 3), None)]
    for (i, (shape, ign)), red, ldt in itertools.product(enumerate(table), ("mean", "sum", "none"), INTS):
        c = shape[0] if len(shape) == 1 else shape[1]
        lshape = () if len(shape) == 1 else shape[:1] + shape[2:]
        labels = rng(shape, "lab", i).integers(0, c, size=lshape).astype(ldt)
        kw = {} if ign is None else {"ignore_index": ign}
        ignore = -100 if ign is None else ign
        if ign == -100:
            labels.flat[::3] = -100
        elif ign is not None:
            labels.flat[0] = ign
        for dt in FLOATS:
            x = randn(shape, dt, "ce", i, scale=3)
            logp = (x - _keep(_lse(_up(x), 0 if x.ndim == 1 else 1), x, 0 if x.ndim == 1 else 1, True)).astype(dt)
            sfx = f"{np.dtype(dt).name}-{np.dtype(ldt).name}-{shape}-ign{ign}-{red}"
            yield Case(f"cross_entropy-{sfx}", lambda x, y, r=red, kw=kw: tp.cross_entropy(x, y, reduction=r, **kw),
                       [x, labels], lambda x, y, r=red, ig=ignore: _class_loss_ref(x, y, r, ig, True), tol=SUM)
            yield Case(f"nll_loss-{sfx}", lambda x, y, r=red, kw=kw: tp.nll_loss(x, y, reduction=r, **kw),
                       [logp, labels], lambda x, y, r=red, ig=ignore: _class_loss_ref(x, y, r, ig, False),
                       tol=SUM)
    big = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [1e4, 1e4, -1e4], [0.0, 0.0, 0.0]], F32)
    lab = np.array([1, 0, 0, 2])
    for red in ("mean", "sum", "none"):
        yield Case(f"extreme-cross_entropy-{red}", lambda x, y, r=red: tp.cross_entropy(x, y, reduction=r),
                   [big, lab], lambda x, y, r=red: _class_loss_ref(x, y, r, -100, True))
        yield Case(f"extreme-nll_loss-{red}", lambda x, y, r=red: tp.nll_loss(tp.log_softmax(x), y, reduction=r),
                   [big, lab], lambda x, y, r=red: _class_loss_ref(x, y, r, -100, True))
    # every label ignored: the mean is 0/0 = nan (as torch), with no RuntimeWarning
    yield Case("cross_entropy-all-ignored", tp.cross_entropy, [big, np.full(4, -100)], lambda x, y: np.array(np.nan))


# ---- symbolic dims: trace once with tp.Spec(("B", ...)), run at several sizes -----------------

def symbolic_cases():
    def sizes(make):
        return [make(b) for b in (1, 2, 5)]

    w = randn((3, 2), F32, "sym-w")
    v3 = randn((3,), F32, "sym-v")
    S = tp.Spec
    table = [
        ("tanh", tp.tanh, [S(("B", 3))], lambda b: [randn((b, 3), F32, "s1")], vmath(math.tanh)),
        ("add-broadcast", lambda x: x + v3, [S(("B", 3))], lambda b: [randn((b, 3), F32, "s2")], lambda x: x + _up(v3)),
        ("add-two-symbolic", lambda x, y: x * y, [S(("B", 3)), S(("B", 1))],
         lambda b: [randn((b, 3), F32, "s3"), randn((b, 1), F32, "s3b")], lambda x, y: x * y),
        ("sum-axis0", lambda x: x.sum(axis=0), [S(("B", 3))], lambda b: [randn((b, 3), F32, "s4")],
         lambda x: np.add.reduce(x, 0)),
        ("mean-all", tp.mean, [S(("B", 3))], lambda b: [randn((b, 3), F32, "s5")],
         lambda x: np.add.reduce(x, None) / x.size),
        ("softmax", tp.softmax, [S(("B", 3))], lambda b: [randn((b, 3), F32, "s6")], lambda x: _softmax_ref(x, -1)),
        ("log_softmax-axis0", lambda x: tp.log_softmax(x, 0), [S(("B", 3))], lambda b: [randn((b, 3), F32, "s7")],
         lambda x: x - _lse(x, 0)[None]),
        ("matmul", lambda x: x @ w, [S(("B", 3))], lambda b: [randn((b, 3), F32, "s8")], lambda x: _matmul_ref(x, _up(w))),
        ("batch-matmul", lambda x, y: x @ y, [S(("B", "T", 3)), S(("B", 3, "T"))],
         lambda b: [randn((b, 4, 3), F32, "s9"), randn((b, 3, 4), F32, "s9b")], _matmul_ref),
        ("reshape-1", lambda x: x.reshape(-1), [S(("B", 3))], lambda b: [randn((b, 3), F32, "s10")],
         lambda x: x.reshape(-1)),
        ("reshape-symbolic", lambda x: x.reshape(x.shape[0], 3, 1), [S(("B", 3))],
         lambda b: [randn((b, 3), F32, "s11")], lambda x: x[:, :, None]),
        ("reshape-product", lambda x: x.reshape("3*B", 1), [S(("B", 3))], lambda b: [randn((b, 3), F32, "s12")],
         lambda x: x.reshape(-1, 1)),
        ("reshape-infer", lambda x: x.reshape(-1, 2), [S(("B", 4))], lambda b: [randn((b, 4), F32, "s13")],
         lambda x: x.reshape(-1, 2)),
        ("broadcast_to", lambda x: tp.broadcast_to(v3, x.shape) * x, [S(("B", 3))],
         lambda b: [randn((b, 3), F32, "s14")], lambda x: x * _up(v3)),
        ("transpose", lambda x: x.T, [S(("B", 3))], lambda b: [randn((b, 3), F32, "s15")], lambda x: x.T),
        ("concatenate", lambda x, y: tp.concatenate([x, y], axis=1), [S(("B", 3)), S(("B", 2))],
         lambda b: [randn((b, 3), F32, "s16"), randn((b, 2), F32, "s16b")], lambda x, y: np.concatenate([x, y], 1)),
        ("expand_squeeze", lambda x: tp.squeeze(tp.expand_dims(x, 1), 1), [S(("B", 3))],
         lambda b: [randn((b, 3), F32, "s17")], lambda x: x),
        ("getitem", lambda x: x[:, ::-1][..., 1], [S(("B", 3))], lambda b: [randn((b, 3), F32, "s18")],
         lambda x: x[:, 1]),
        ("layer_norm", lambda x: tp.layer_norm(x, 3), [S(("B", 3))], lambda b: [randn((b, 3), F32, "s19")],
         lambda x: _layer_norm_ref(x, 1)),
        ("cross_entropy", tp.cross_entropy, [S(("B", 3)), S(("B",), "int64")],
         lambda b: [randn((b, 3), F32, "s20"), np.arange(b) % 3], lambda x, y: _class_loss_ref(x, y, "mean", -100, True)),
        ("mse_loss", tp.mse_loss, [S(("B", 3)), S(("B", 3))],
         lambda b: [randn((b, 3), F32, "s21"), randn((b, 3), F32, "s21b")], lambda a, b: _reduce((a - b) ** 2, "mean")),
        ("conv2d", lambda x, k: tp.conv2d(x, k, padding=1), [S(("B", 2, 5, 5)), S((3, 2, 3, 3))],
         lambda b: [randn((b, 2, 5, 5), F32, "s22"), randn((3, 2, 3, 3), F32, "s22w")],
         lambda x, k: _conv_ref(x, k, padding=(1, 1))),
        ("max_pool2d", lambda x: tp.max_pool2d(x, 2), [S(("B", 2, 4, 4))], lambda b: [randn((b, 2, 4, 4), F32, "s23")],
         lambda x: _pool_ref(x, (2, 2), (2, 2), (0, 0))),
        ("where-int", lambda x, n: tp.where(n > 0, x, -x), [S(("B", 3)), S(("B", 3), "int32")],
         lambda b: [randn((b, 3), F32, "s24"), randn((b, 3), I32, "s24b")], lambda x, n: np.where(n > 0, x, -x)),
    ]
    for name, fn, specs, make, ref in table:
        runs = sizes(make)
        yield Case(f"symbolic-{name}", fn, runs[0], ref, specs=specs, runs=runs[1:], tol=SUM)


ALL_CASES = [c for gen in (unary_cases, extreme_cases, binary_cases, where_clip_cases, reduce_cases, softmax_cases,
                           layer_norm_cases, matmul_cases, conv_cases, pool_cases, shape_cases, index_cases,
                           tensor_cases, loss_cases, symbolic_cases) for c in gen()]


def test_case_ids_unique():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", ALL_CASES, ids=str)
def test_forward(case):
    run_case(case)


# Every op of the seed op set is exercised above (ops added later get their own tests).
SEED_OPS = {
    "exp", "log", "reciprocal", "sqrt", "tanh", "sigmoid", "softplus", "sin", "cos", "neg", "abs", "relu",
    "leaky_relu", "elu", "gelu", "clip", "cast", "add", "sub", "mul", "maximum", "minimum", "div", "pow",
    "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "where", "sum", "mean", "max", "min",
    "logsumexp", "softmax", "log_softmax", "layer_norm", "matmul", "conv2d", "max_pool2d", "avg_pool2d",
    "reshape", "transpose", "broadcast_to", "concatenate", "slice", "squeeze", "unsqueeze", "cross_entropy",
    "nll_loss",
}


def test_every_seed_op_is_covered():
    assert SEED_OPS <= set(tp.OPS), sorted(SEED_OPS - set(tp.OPS))
    used = set()
    for case in ALL_CASES:
        used |= {n.op for n in tp.trace(case.fn, *(case.specs or case.args)).nodes}
    assert SEED_OPS <= used, f"ops without a forward test: {sorted(SEED_OPS - used)}"


def test_gelu_modes_differ():
    """The two gelu modes are different functions (a test that mixed them up would pass otherwise)."""
    x = np.linspace(-4, 4, 33)
    g = tp.trace(lambda x: (tp.gelu(x), tp.gelu(x, approximate="tanh")), x)
    exact, approx = tp.run(g, x)
    assert 1e-5 < np.max(np.abs(exact - approx)) < 1e-2
    check(exact, vmath(_gelu)(x), F64)
    check(exact, vmath(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))(x), F64)  # the textbook form
    check(approx, vmath(_gelu_tanh)(x), F64)


# ---- torch, where installed: an extra, independent reference --------------------------------

def _torch():
    return pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")


@pytest.mark.parametrize("i", range(len(CONV)))
def test_conv2d_matches_torch(i):
    torch = _torch()
    xs, ws, st, pd, dl, gr, bias = CONV[i]
    x, w = randn(xs, F64, "tcx", i), randn(ws, F64, "tcw", i)
    b = randn((ws[0],), F64, "tcb", i) if bias else None
    got = tp.run(tp.trace(lambda x, w: tp.conv2d(x, w, b, stride=st, padding=pd, dilation=dl, groups=gr), x, w), x, w)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                      None if b is None else torch.from_numpy(b),
                                      stride=st, padding=pd, dilation=dl, groups=gr).numpy()
    check(got, want, F64, TORCH_KERNELS)


@pytest.mark.parametrize("i", range(len(MAXPOOL) + 2 * len(AVGPOOL)))
def test_pools_match_torch(i):
    torch = _torch()
    F = torch.nn.functional
    x = randn((2, 3, 7, 8), F64, "tp", i)
    if i < len(MAXPOOL):
        k, s, p, d = MAXPOOL[i]
        fn, tfn = (lambda x: tp.max_pool2d(x, k, s, padding=p, dilation=d),
                   lambda t: F.max_pool2d(t, k, s, padding=p, dilation=d))
    else:
        (k, s, p), cip = AVGPOOL[(i - len(MAXPOOL)) // 2], bool((i - len(MAXPOOL)) % 2)
        fn, tfn = (lambda x: tp.avg_pool2d(x, k, s, padding=p, count_include_pad=cip),
                   lambda t: F.avg_pool2d(t, k, s, padding=p, count_include_pad=cip))
    check(tp.run(tp.trace(fn, x), x), tfn(torch.from_numpy(x)).numpy(), F64, TORCH_KERNELS)


LOSS_TORCH = ["cross_entropy", "cross_entropy_nd", "cross_entropy_ignore", "nll_loss", "mse_loss", "l1_loss",
              "bce_logits", "layer_norm", "gelu", "gelu_tanh", "log_softmax"]


@pytest.mark.parametrize("name", LOSS_TORCH)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_losses_and_activations_match_torch(name, reduction, dt):
    torch = _torch()
    F = torch.nn.functional
    T = torch.from_numpy
    x = randn((6, 4), dt, "tl", name, scale=3)
    x[0, :2] = [1e4, -1e4]  # extreme logits too
    y = randn((6, 4), dt, "tl2", name)
    lab = rng("tlab", name).integers(0, 4, size=6)
    x3, lab3 = randn((2, 4, 3), dt, "tl3", scale=3), rng("tlab3").integers(0, 4, size=(2, 3))
    lab_ign = lab.copy()
    lab_ign[::2] = 1
    w, b = randn((4,), dt, "tlw"), randn((4,), dt, "tlb")
    cases = {
        "cross_entropy": (lambda x: tp.cross_entropy(x, lab, reduction=reduction),
                          lambda t: F.cross_entropy(t, T(lab), reduction=reduction), x),
        "cross_entropy_nd": (lambda x: tp.cross_entropy(x, lab3, reduction=reduction),
                             lambda t: F.cross_entropy(t, T(lab3), reduction=reduction), x3),
        "cross_entropy_ignore": (lambda x: tp.cross_entropy(x, lab_ign, reduction=reduction, ignore_index=1),
                                 lambda t: F.cross_entropy(t, T(lab_ign), reduction=reduction, ignore_index=1), x),
        "nll_loss": (lambda x: tp.nll_loss(tp.log_softmax(x), lab, reduction=reduction),
                     lambda t: F.nll_loss(F.log_softmax(t, -1), T(lab), reduction=reduction), x),
        "mse_loss": (lambda x: tp.mse_loss(x, y, reduction=reduction),
                     lambda t: F.mse_loss(t, T(y), reduction=reduction), x),
        "l1_loss": (lambda x: tp.l1_loss(x, y, reduction=reduction),
                    lambda t: F.l1_loss(t, T(y), reduction=reduction), x),
        "bce_logits": (lambda x: tp.binary_cross_entropy_with_logits(x, np.abs(y) % 1, reduction=reduction),
                       lambda t: F.binary_cross_entropy_with_logits(t, T(np.abs(y) % 1), reduction=reduction), x),
        "layer_norm": (lambda x: tp.layer_norm(x, 4, w, b) if reduction == "mean" else tp.layer_norm(x, (6, 4)),
                       lambda t: F.layer_norm(t, (4,), T(w), T(b)) if reduction == "mean" else F.layer_norm(t, (6, 4)),
                       randn((6, 4), dt, "tln")),
        "gelu": (tp.gelu, F.gelu, x),
        "gelu_tanh": (lambda x: tp.gelu(x, "tanh"), lambda t: F.gelu(t, approximate="tanh"), x),
        "log_softmax": (lambda x: tp.log_softmax(x, 0), lambda t: F.log_softmax(t, 0), x),
    }
    fn, tfn, arg = cases[name]
    got = tp.run(tp.trace(fn, arg), arg)
    want = tfn(T(arg)).numpy()
    check(got, want, dt, TORCH_KERNELS)
