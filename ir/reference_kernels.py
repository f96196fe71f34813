"""numpy kernels for the ops that are more than one numpy call.

Numerics follow DESIGN's contracts: sigmoid, softplus, logsumexp, softmax and
log_softmax never exponentiate a large positive number, so |x| up to 1e4 in f32 gives
finite results.
"""
from __future__ import annotations

import math

import numpy as np

from .erf import erf, gelu_exact  # noqa: F401  (erf: the REFERENCE kernel of op erf)
from .reference_conv import avg_pool2d, conv2d, conv_transpose2d, max_pool2d, windows  # noqa: F401  (kernels)


def sigmoid_into(x, e, t, out):
    """The stable sigmoid with one transcendental, in place: e = exp(-|x|), r = 1/(1+e), then
    r where x >= 0 and e*r where x < 0 (exp never overflows; both tails keep full relative
    precision). The branch is a factor, max(e, x >= 0) (1 for x >= 0 as e <= 1, e for x < 0):
    a masked ufunc or np.where costs 5-10x a plain ufunc. `e`, `t` are scratch of x's dtype
    and shape; `out` may not be x. The unfused kernel and the fused blocked kernels
    (backends/numpy_fused.py) run this same sequence of ufuncs, so they agree bitwise."""
    one = out.dtype.type(1)
    np.abs(x, out=e)
    np.negative(e, out=e)
    np.exp(e, out=e)
    np.add(e, one, out=out)
    np.divide(one, out, out=out)  # np.reciprocal is the same division, but not vectorised
    np.greater_equal(x, x.dtype.type(0), out=t)  # 1.0 or 0.0 (NaN: 0, and max(NaN, 0) is NaN)
    np.maximum(e, t, out=t)
    np.multiply(out, t, out=out)
    return out


def softplus_into(x, e, u, out):
    """max(x, 0) + log1p(exp(-|x|)) in place (`e`, `u`: scratch of x's dtype and shape; `out`
    may not be x). numpy's log1p is not vectorised (3 ns/element, 6x its log), so log1p(e) is
    log(u) + (e - (u - 1)) / u with u = 1 + e: u - 1 and e - (u - 1) are exact (Fast2Sum), so
    the correction restores what rounding 1 + e lost; at u == 1 it returns e exactly, which
    keeps exp(x)'s relative precision for x << 0."""
    one = x.dtype.type(1)
    np.abs(x, out=e)
    np.negative(e, out=e)
    np.exp(e, out=e)
    np.add(e, one, out=u)
    np.subtract(u, one, out=out)
    np.subtract(e, out, out=e)
    np.divide(e, u, out=e)
    np.log(u, out=out)
    np.add(out, e, out=e)  # log1p(exp(-|x|))
    np.maximum(x, x.dtype.type(0), out=out)
    np.add(out, e, out=out)
    return out


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def where_into(c, a, b, m, out):
    """np.where(c, a, b) into `out` as bit operations on unsigned views: m = all ones where c,
    then out = b ^ ((a ^ b) & m) (a & m when b is +0). It selects exactly the bits np.where
    selects (NaN payloads and -0.0 included) at ~10x the speed: np.where and masked copies
    branch per element on a random mask. a, b: arrays of out's dtype (broadcastable); m:
    scratch of the unsigned int of out's itemsize, out's shape; out may not alias a or b."""
    u = _UINT[out.dtype.itemsize]
    np.multiply(c, u(np.iinfo(u).max), out=m)
    ou, bu = out.view(u), b.view(u)
    if b.ndim == 0 and not bu:
        np.bitwise_and(a.view(u), m, out=ou)
    else:
        np.bitwise_xor(a.view(u), bu, out=ou)
        np.bitwise_and(ou, m, out=ou)
        np.bitwise_xor(ou, bu, out=ou)
    return out


def where(c, a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or c.dtype != np.bool_ or a.dtype.itemsize not in _UINT:
        return np.where(c, a, b)
    shape = np.broadcast_shapes(c.shape, a.shape, b.shape)
    out = np.empty(shape, a.dtype)
    if out.size < 4096:  # np.where's per-call cost is lower; the bits are the same
        np.copyto(out, np.where(c, a, b))
        return out
    return where_into(c, a, b, np.empty(shape, _UINT[a.dtype.itemsize]), out)


def sigmoid(x):
    x = np.asarray(x)
    return sigmoid_into(x, np.empty_like(x), np.empty_like(x), np.empty_like(x))


def softplus(x):
    x = np.asarray(x)
    return softplus_into(x, np.empty_like(x), np.empty_like(x), np.empty_like(x))


def gelu(x, approximate):
    if approximate == "tanh":
        c = np.asarray(math.sqrt(2 / math.pi), x.dtype)
        return (0.5 * x * (1 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x * x * x)))).astype(x.dtype, copy=False)
    return gelu_exact(x)


def elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def leaky_relu(x, alpha):
    return np.where(x >= 0, x, x * np.asarray(alpha, x.dtype))


def _max_shift(x, axes):
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)  # an empty slice (B = 0) is -inf
    return np.where(np.isfinite(m), m, 0)  # all -inf (or empty) rows: shift by 0, not -inf (no nan)


def logsumexp(x, axes, keepdims):
    m = _max_shift(x, axes)
    with np.errstate(divide="ignore"):  # an all -inf or empty slice: log(0) = -inf, as torch.logsumexp
        out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return (out if keepdims else np.squeeze(out, axis=axes)).astype(x.dtype, copy=False)


def _shifted(x, axes):
    """x - max over axes (the max of an all -inf or empty slice taken as 0), a fresh array."""
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    if not np.isfinite(m).all():
        m = np.where(np.isfinite(m), m, 0)
    return np.subtract(x, m)


def softmax(x, axis):
    e = _shifted(x, axis)
    np.exp(e, out=e)
    return np.divide(e, np.sum(e, axis=axis, keepdims=True), out=e)


def log_softmax(x, axis):
    s = _shifted(x, axis)
    with np.errstate(divide="ignore"):  # an empty slice (B = 0): log(0) for no element at all
        return np.subtract(s, np.log(np.sum(np.exp(s), axis=axis, keepdims=True)), out=s)


def matmul(a, b, out=None):
    """np.matmul; a C-ordered stack of matrices times one matrix is a single product of the
    stack's rows (BLAS once on [B*M, K] @ [K, N], not B times on [M, K]). Takes `out=` (the
    numpy backend's buffers, backends/numpy_memory.py)."""
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous and (out is None or out.flags.c_contiguous):
        n = b.shape[1]
        rows = math.prod(a.shape[:-1])
        r = np.matmul(a.reshape(rows, a.shape[-1]), b, out=None if out is None else out.reshape(rows, n))
        return r.reshape(a.shape[:-1] + (n,)) if out is None else out
    return np.matmul(a, b, out=out)


matmul.takes_out = True


def mean(x, axis, keepdims):
    """np.mean for float32/float64: the same sum and the same division (by the count as an
    intp, so in float64, cast back), without np.mean's Python-level argument handling
    (~5 us a call: a transformer's backward pass has dozens of small means)."""
    if x.dtype.kind != "f" or x.dtype.itemsize < 4:
        return np.mean(x, axis=axis, keepdims=keepdims)
    axes = tuple(range(x.ndim)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    count = np.intp(math.prod(x.shape[a] for a in axes))
    s = np.add.reduce(x, axis=axis, keepdims=keepdims)
    if not isinstance(s, np.ndarray) or not count:  # a scalar or an empty mean: numpy's own path
        return np.mean(x, axis=axis, keepdims=keepdims)
    return np.true_divide(s, count, out=s, casting="unsafe")


def _into(ufunc, y, z):
    """ufunc(y, z), written over y (a fresh array) when the result has y's shape and dtype."""
    if np.broadcast_shapes(y.shape, z.shape) == y.shape and np.result_type(y, z) == y.dtype:
        return ufunc(y, z, out=y)
    return ufunc(y, z)


def layer_norm(x, weight=None, bias=None, *, axis, epsilon):
    """Statistics in float32 for float16 x (ONNX LayerNormalization's default stash_type=1):
    in f16, d*d overflows once |x - mean| >= 256 and the result collapses to zeros."""
    dtype = x.dtype
    if dtype == np.float16:
        x, weight, bias = (None if t is None else t.astype(np.float32) for t in (x, weight, bias))
    axes = tuple(range(axis, x.ndim))
    mu = mean(x, axes, True)
    y = np.subtract(x, mu)  # the same operations as the textbook form, in place (fewer allocations)
    sq = np.multiply(y, y)
    var = mean(sq, axes, True)
    np.divide(y, np.sqrt(var + np.asarray(epsilon, x.dtype)), out=y)
    if weight is not None:
        y = _into(np.multiply, y, weight)
    if bias is not None:
        y = _into(np.add, y, bias)
    return y.astype(dtype, copy=False)


def pad(x, *, pads, value):
    """Constant padding: one buffer, its borders filled and x copied in (np.pad's generic
    machinery costs ~100 us a call on the small arrays autodiff pads)."""
    r = x.ndim
    before, after = pads[:r], pads[r:]
    if not any(pads):
        return x
    out = np.empty(tuple(d + b + a for d, b, a in zip(x.shape, before, after)), x.dtype)
    fill = x.dtype.type(value)
    inner = tuple(slice(b, b + d) for b, d in zip(before, x.shape))
    for i in range(r):  # the border slabs of axis i (axes before i cut to x's extent: no element twice)
        lead = inner[:i]
        if before[i]:
            out[lead + (slice(0, before[i]),)] = fill
        if after[i]:
            out[lead + (slice(before[i] + x.shape[i], None),)] = fill
    out[inner] = x
    return out


def _class_axis_last(x, labels):
    """[N,C,d..] -> [N*d.., C] and labels -> [N*d..]; [C] -> [1,C]."""
    if x.ndim == 1:
        return x[None, :], np.reshape(labels, (1,))
    c = x.shape[1]
    return np.moveaxis(x, 1, -1).reshape(-1, c), labels.reshape(-1)


def check_labels(labels, classes, ignore_index):
    """ValueError for the first label outside [0, classes) that is not ignore_index (the
    onnxruntime backend runs it too: ONNX's loss ops would wrap a negative label)."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise ValueError(f"label {int(labels[bad].flat[0])} is out of range for {classes} classes "
                         f"(labels must be in [0, {classes - 1}] or ignore_index={ignore_index})")


def nll_loss(logp, labels, *, reduction, ignore_index):
    shape = labels.shape
    lp, lab = _class_axis_last(logp, labels)
    check_labels(lab, lp.shape[1], ignore_index)
    keep = lab != ignore_index
    safe = np.where(keep, lab, 0)
    picked = -np.take_along_axis(lp, safe[:, None], axis=1)[:, 0]
    picked = np.where(keep, picked, 0).astype(logp.dtype, copy=False)
    if reduction == "none":
        return picked.reshape(shape)
    if reduction == "sum":
        return np.sum(picked, dtype=logp.dtype)
    with np.errstate(invalid="ignore"):  # every label ignored: 0/0 is nan, as in torch, not a warning
        return (np.sum(picked, dtype=logp.dtype) / logp.dtype.type(keep.sum())).astype(logp.dtype)


def cross_entropy(x, labels, *, reduction, ignore_index):
    axis = 0 if x.ndim == 1 else 1
    return nll_loss(log_softmax(x, axis), labels, reduction=reduction, ignore_index=ignore_index)
