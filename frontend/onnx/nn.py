"""ONNX import rules for Gemm, convolution, pooling, normalization and losses (MatMul is
derived from matmul's twin).

Rules that tapeir's 2-D ops cannot take as they are get rewritten into them:
  1. 1-D Conv/ConvTranspose/pooling: unsqueeze a unit height, run the 2-D op, squeeze.
  2. Asymmetric or auto_pad (SAME_UPPER/SAME_LOWER) padding: an explicit `pad` (zeros
     for Conv and AveragePool, -inf for MaxPool), then the op with padding 0.
  3. MaxPool ceil_mode=1: extra end padding with -inf, so the last partial window counts.
  4. AveragePool with padding: divide the zero-padded window sums by a constant map of
     how many cells each window counts (count_include_pad, ceil_mode).
  5. ConvTranspose pads/output_padding/output_shape: the transposed conv with padding 0,
     then crop or zero-pad the result to the requested window.
  6. BatchNormalization (inference): x * a + c with a = scale / sqrt(var + eps) and
     c = B - mean * a, folded to constants when the stats are constants.
  7. Losses with class weights: one-hot masks (index.one_hot).
Window sizes and counts come from ir/windows.py, as the IR's own type rules.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functions as F
from ...ir.windows import conv_out, conv_transpose_out, extent, window_counts
from .index import one_hot
from .node import OnnxNode, check_constant, is_static, rank_of, reshape, shape_of


def _gemm(n, a, b, c=None):
    if n.attr("transA", 0):
        a = F.transpose(a)
    if n.attr("transB", 0):
        b = F.transpose(b)
    y = F.matmul(a, b)
    alpha, beta = n.attr("alpha", 1.0), n.attr("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is None or beta == 0.0:
        return y
    return y + (c if beta == 1.0 else c * beta)


# ---- windows: conv and pooling ---------------------------------------------------------

class _Window:
    """A Conv/pool node's window attributes, as 2-D pairs (1-D nodes get a unit height)."""

    def __init__(self, n: OnnxNode, x, kernel):
        self.nd = rank_of(x) - 2
        if self.nd not in (1, 2):
            raise n.error(f"{self.nd}-D {n.op} on {x.type}",
                          hint="tapeir's IR has 1-D (as 2-D) and 2-D convolution and pooling only")
        lead = [1] if self.nd == 1 else []
        self.kernel = lead + list(kernel)
        self.stride = lead + list(n.attr("strides") or [1] * self.nd)
        self.dilation = lead + list(n.attr("dilations") or [1] * self.nd)
        pads = list(n.attr("pads") or [0] * 2 * self.nd)
        self.begin = [0] * (2 - self.nd) + pads[:self.nd]
        self.end = [0] * (2 - self.nd) + pads[self.nd:]
        self.auto = n.attr("auto_pad", "NOTSET")
        self.size = list(shape_of(x)[-2:]) if self.nd == 2 else [1, shape_of(x)[-1]]
        if not all(isinstance(s, int) for s in self.size):
            raise n.error(f"spatial dims of {x.type} must be static")
        self.n = n

    def extent(self, i):
        return extent(self.kernel[i], self.dilation[i])

    def resolve_auto_pad(self):
        if self.auto == "VALID":
            self.begin, self.end = [0, 0], [0, 0]
        elif self.auto in ("SAME_UPPER", "SAME_LOWER"):
            for i in range(2):
                out = -(-self.size[i] // self.stride[i])
                total = max((out - 1) * self.stride[i] + self.extent(i) - self.size[i], 0)
                small, big = total // 2, total - total // 2
                self.begin[i], self.end[i] = (small, big) if self.auto == "SAME_UPPER" else (big, small)
        elif self.auto != "NOTSET":
            raise self.n.error(f"auto_pad={self.auto!r}")

    def to2d(self, x):
        return x if self.nd == 2 else F.expand_dims(x, 2)

    def from2d(self, y):
        return y if self.nd == 2 else F.squeeze(y, 2)

    def symmetric(self):
        return self.begin == self.end

    def explicit_pad(self, x, value):
        return F.pad(x, [(0, 0), (0, 0)] + list(zip(self.begin, self.end)), value)


def _conv(n, x, w, b=None):
    win = _Window(n, x, shape_of(w)[2:])
    win.resolve_auto_pad()
    x2, w2 = win.to2d(x), win.to2d(w)
    padding = win.begin
    if not win.symmetric():
        x2, padding = win.explicit_pad(x2, 0.0), (0, 0)
    y = F.conv2d(x2, w2, b, win.stride, padding, win.dilation, n.attr("group", 1))
    return win.from2d(y)


def _conv_transpose(n, x, w, b=None):
    win = _Window(n, x, shape_of(w)[2:])
    lead = [0] * (2 - win.nd)
    out_pad = lead + list(n.attr("output_padding") or [0] * win.nd)
    out_shape = n.attr("output_shape")
    if out_shape is not None or win.auto in ("SAME_UPPER", "SAME_LOWER"):
        want = [1] * (2 - win.nd) + list(out_shape[-win.nd:]) if out_shape is not None else \
            [s * st for s, st in zip(win.size, win.stride)]
        for i in range(2):
            total = conv_transpose_out(win.size[i], win.kernel[i], win.stride[i], 0, win.dilation[i],
                                       out_pad[i]) - want[i]
            half = total // 2
            win.begin[i], win.end[i] = (half, total - half) if win.auto == "SAME_UPPER" else (total - half, half)
    elif win.auto == "VALID":
        win.begin, win.end = [0, 0], [0, 0]
    x2, w2 = win.to2d(x), win.to2d(w)
    grp = n.attr("group", 1)
    direct = win.symmetric() and min(win.begin) >= 0 and all(
        0 <= out_pad[i] < max(win.stride[i], win.dilation[i]) for i in range(2))
    if direct:
        y = F.conv_transpose2d(x2, w2, win.stride, win.begin, out_pad, grp, win.dilation)
    else:  # rule 5: the full result, then crop or zero-pad to [begin, full + output_padding - end)
        y = F.conv_transpose2d(x2, w2, win.stride, 0, 0, grp, win.dilation)
        full = shape_of(y)[2:]
        lo = list(win.begin)
        hi = [full[i] + out_pad[i] - win.end[i] for i in range(2)]
        grow = [(max(-lo[i], 0), max(hi[i] - full[i], 0)) for i in range(2)]
        if any(a or b_ for a, b_ in grow):
            y = F.pad(y, [(0, 0), (0, 0)] + grow)
        y = y[:, :, lo[0] + grow[0][0]:hi[0] + grow[0][0], lo[1] + grow[1][0]:hi[1] + grow[1][0]]
    if b is not None:
        y = y + reshape(b, (shape_of(b)[0], 1, 1))
    return win.from2d(y)


def _pool_window(n, x):
    win = _Window(n, x, n.attr("kernel_shape"))
    win.resolve_auto_pad()
    real_end = list(win.end)
    if n.attr("ceil_mode", 0):  # rule 3: pad the end so ceil((...)/stride) windows fit
        for i in range(2):
            padded = win.size[i] + win.begin[i] + win.end[i]
            out = conv_out(win.size[i], win.kernel[i], win.stride[i], win.begin[i] + win.end[i], win.dilation[i],
                           ceil=True)
            if (out - 1) * win.stride[i] >= win.size[i] + win.begin[i]:
                out -= 1  # the last window would start in the padding
            win.end[i] += max((out - 1) * win.stride[i] + win.extent(i) - padded, 0)
    return win, real_end


def _direct(win):
    return win.symmetric() and all(2 * p <= k for p, k in zip(win.begin, win.kernel))


def _max_pool(n, x):
    if n.wants_output(1):
        raise n.error("the Indices output of MaxPool", hint="tapeir's max_pool2d has no argmax output")
    win, _ = _pool_window(n, x)
    x2, padding = win.to2d(x), win.begin
    if not _direct(win):
        x2, padding = win.explicit_pad(x2, -np.inf), (0, 0)
    y = F.max_pool2d(x2, win.kernel, win.stride, padding, win.dilation)
    return win.from2d(y)


def _avg_pool(n, x):
    win, real_end = _pool_window(n, x)
    include = bool(n.attr("count_include_pad", 0))
    x2 = win.to2d(x)
    attrs = {"kernel": win.kernel, "stride": win.stride, "dilation": win.dilation}
    if real_end == win.end and _direct(win):
        return win.from2d(F.apply_op("avg_pool2d", [x2], {**attrs, "padding": win.begin, "count_include_pad": include}))
    # rule 4: windowed means of the zero-padded input, rescaled by the cells each window counts
    y = F.apply_op("avg_pool2d", [win.explicit_pad(x2, 0.0)], {**attrs, "padding": (0, 0)})
    if include:  # the padding counts, but not the end padding ceil_mode added
        grid = [s + b + e for s, b, e in zip(win.size, win.begin, real_end)]
        counts = _window_counts(grid, win.kernel, win.stride, (0, 0), win.dilation,
                                [e - r for e, r in zip(win.end, real_end)])
    else:
        counts = _window_counts(win.size, win.kernel, win.stride, win.begin, win.dilation, win.end)
    scale = math.prod(win.kernel) / counts
    if not np.all(scale == 1):
        y = y * scale.astype(y.dtype)
    return win.from2d(y)


def _window_counts(size, kernel, stride, begin, dilation, end):
    """window_counts, within the import's constant bound (its sizes come from the model's
    dims and attributes: a kernel of 10**9 must not allocate 10**9 taps)."""
    outs = [max(conv_out(*a), 0) for a in zip(size, kernel, stride, [b + e for b, e in zip(begin, end)], dilation)]
    for o, k in zip(outs, kernel):
        check_constant((o, k), np.int64, "AveragePool's window taps")
    check_constant(outs, np.float64, "AveragePool's map of window counts")
    return window_counts(size, kernel, stride, begin, dilation, end)


def _global_pool(fn):
    return lambda n, x: fn(x, tuple(range(2, rank_of(x))), True)


# ---- normalization ---------------------------------------------------------------------

def _per_channel(v, rank):
    return reshape(v, (shape_of(v)[0],) + (1,) * (rank - 2))


def _batch_norm(n, x, scale, b, mean, var):
    eps, r = n.attr("epsilon", 1e-5), rank_of(x)
    if n.attr("training_mode", 0):
        return _batch_norm_training(n, x, scale, b, mean, var, eps)
    if any(n.wants[1:]):
        raise n.error("the running-statistics outputs of BatchNormalization in inference mode (opset < 14)",
                      hint="export the model in eval mode")
    if all(is_static(v) for v in (scale, b, mean, var)):  # rule 6, folded
        a = (scale / np.sqrt(var + np.asarray(eps, var.dtype))).astype(var.dtype)
        return x * _per_channel(a, r) + _per_channel((b - mean * a).astype(b.dtype), r)
    a = scale / F.sqrt(var + eps)
    return (x - _per_channel(mean, r)) * _per_channel(a, r) + _per_channel(b, r)


def _batch_norm_training(n, x, scale, b, mean, var, eps):
    """Batch statistics (population variance), and the momentum-updated running ones."""
    r, m = rank_of(x), n.attr("momentum", 0.9)
    axes = (0,) + tuple(range(2, r))
    mu = F.mean(x, axes, keepdims=True)
    d = x - mu
    v = F.mean(d * d, axes, keepdims=True)
    y = d / F.sqrt(v + eps) * _per_channel(scale, r) + _per_channel(b, r)
    flat = (shape_of(x)[1],)
    return y, mean * m + reshape(mu, flat) * (1 - m), var * m + reshape(v, flat) * (1 - m)


def _stashed(n, x, fn):
    """Compute in float32 when stash_type=1 (the default) asks for it, cast back after."""
    if n.attr("stash_type", 1) == 1 and x.dtype != np.float32:
        outs = fn(F.astype(x, "f32"), lambda p: None if p is None else F.astype(p, "f32"))
        return (F.astype(outs[0], x.dtype),) + tuple(outs[1:])
    return fn(x, lambda p: p)


def _norm_param(p, shape):
    return p if p is None or shape_of(p) == tuple(shape) else F.broadcast_to(p, shape)


def _layer_norm(n, x, scale, b=None):
    axis = n.axis(n.attr("axis", -1), rank_of(x))
    eps = n.attr("epsilon", 1e-5)
    ns = shape_of(x)[axis:]
    axes = tuple(range(axis, rank_of(x)))

    def compute(x, cast):
        y = F.layer_norm(x, ns, _norm_param(cast(scale), ns), _norm_param(cast(b), ns), eps)
        if not any(n.wants[1:]):
            return (y,)
        mu = F.mean(x, axes, keepdims=True)
        d = x - mu
        return y, mu, F.reciprocal(F.sqrt(F.mean(d * d, axes, keepdims=True) + eps))
    return _stashed(n, x, compute)


def _rms_norm(n, x, scale):
    axis = n.axis(n.attr("axis", -1), rank_of(x))
    axes = tuple(range(axis, rank_of(x)))

    def compute(x, cast):
        return (x / F.sqrt(F.mean(x * x, axes, keepdims=True) + n.attr("epsilon", 1e-5)) * cast(scale),)
    return _stashed(n, x, compute)[0]


def _instance_norm(n, x, scale, b):
    axes, r = tuple(range(2, rank_of(x))), rank_of(x)
    d = x - F.mean(x, axes, keepdims=True)
    y = d / F.sqrt(F.mean(d * d, axes, keepdims=True) + n.attr("epsilon", 1e-5))
    return y * _per_channel(scale, r) + _per_channel(b, r)


# ---- losses ----------------------------------------------------------------------------

def _weighted_nll(n, logp, labels, weight, reduction, ignore):
    """rule 7: -sum(w[y] * logp[y]) over one-hot masks; mean divides by sum(w[y])."""
    c = shape_of(logp)[1]
    hot = one_hot(labels, c, logp.dtype, 1)
    if ignore is not None:
        hot = hot * F.expand_dims(F.astype(F.not_equal(labels, ignore), logp.dtype), 1)
    hot = hot * _per_channel(weight, rank_of(logp))
    loss = F.negative(F.sum(hot * logp, 1))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return F.sum(loss)
    return F.sum(loss) / F.sum(hot)


def _nll(n, logp, labels, weight, ignore):
    reduction = n.attr("reduction", "mean")
    if weight is not None:
        return _weighted_nll(n, logp, labels, weight, reduction, ignore)
    return F.nll_loss(logp, labels, reduction, -100 if ignore is None else ignore)


def _sce(n, scores, labels, weight=None):
    ignore = n.attr("ignore_index")
    if weight is None and not n.wants_output(1):
        return F.cross_entropy(scores, labels, n.attr("reduction", "mean"), -100 if ignore is None else ignore)
    logp = F.log_softmax(scores, 1)
    return _nll(n, logp, labels, weight, ignore), logp


NN = {
    "Gemm": _gemm,
    "Conv": _conv, "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool, "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_pool(F.mean), "GlobalMaxPool": _global_pool(F.max),
    "BatchNormalization": _batch_norm, "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm, "RMSNormalization": _rms_norm,
    "SoftmaxCrossEntropyLoss": _sce,
    "NegativeLogLikelihoodLoss": lambda n, x, y, w=None: _nll(n, x, y, w, n.attr("ignore_index")),
}
