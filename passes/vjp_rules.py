"""VJP rules: one per differentiable op, written in the tensor vocabulary users write.

A rule takes (g, x, y, attrs): the cotangent of the node's output, its inputs and its
output as traced Tensors, and its attributes; it returns one cotangent per input (None
where an input has no gradient: integer labels, conditions, shapes). Rules run with
autodiff's IR builder recording (frontend's `recording`), so what they compute is
recorded as IR: the backward pass is a graph.

Conventions (DESIGN numerical contracts): relu'(0) = 0; max/min ties split evenly
(elementwise 0.5/0.5; reductions and max_pool2d share among all tied elements);
sqrt'(0) = inf as numpy; clip passes the gradient at its bounds (as torch.clamp).
"""
from __future__ import annotations

import math

import numpy as np

from ..frontend import functions as F
from ..ir.dtypes import FLOATS
from ..ir.errors import TraceError
from ..ir.types import dim_product, dim_sub, dim_sum
from ..ir.windows import conv_out, conv_transpose_out, window_counts

VJP: dict = {}


def rule(*ops, selective=False):
    """Register fn as the VJP rule of ops. A selective rule takes a fifth argument, `need`
    (one bool per input: does the driver want its cotangent?), and builds only those, so a
    constant operand (x * 2.0) costs no backward nodes."""
    def deco(fn):
        fn.selective = selective
        for op in ops:
            VJP[op] = fn
        return fn
    return deco


# ---- helpers -----------------------------------------------------------------------

def unbroadcast(g, shape):
    """Sum g over the axes numpy broadcasting added, so it has `shape` again."""
    if g.value.type.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = F.sum(g, axis=tuple(range(lead)))
    ones = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return F.sum(g, axis=ones, keepdims=True) if ones else g


def expand_reduced(g, x, axes, keepdims):
    """Re-insert reduced axes (if dropped) and broadcast g to x's shape."""
    if not keepdims and axes:
        g = F.expand_dims(g, axes)
    return F.broadcast_to(g, x.shape)


def count(x, axes):
    """How many elements a reduction over `axes` folds: a Python int, or a tensor when symbolic."""
    n = dim_product([x.shape[a] for a in axes])
    if isinstance(n, int):
        return n
    ones = F.broadcast_to(np.array(1, x.dtype), x.shape)
    return F.sum(ones, axis=axes, keepdims=True)


def swap_last(t):
    perm = list(range(t.ndim))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return F.transpose(t, perm)


def slice_axis(t, axis, start, stop, step=1):
    idx = [slice(None)] * t.ndim
    idx[axis] = slice(start, stop, step)
    return t[tuple(idx)]


def scatter_slice(g, shape, axis, start, stop, step):
    """The adjoint of x[start:stop:step] along `axis` of a tensor of `shape`: zeros elsewhere."""
    n, m = shape[axis], g.shape[axis]
    if m == 0:
        return F.broadcast_to(np.array(0, g.dtype), shape)
    if step < 0:  # the same elements in increasing order
        g = slice_axis(g, axis, None, None, -1)
        start, step = start + (m - 1) * step, -step
    if step > 1:  # interleave step-1 zeros after each element, then trim the tail
        g = F.expand_dims(g, axis + 1)
        pads = [0] * (2 * g.ndim)
        pads[g.ndim + axis + 1] = step - 1
        g = F.pad(g, list(zip(pads[:g.ndim], pads[g.ndim:])))
        new_shape = list(g.shape[:axis]) + [m * step] + list(g.shape[axis + 2:])
        g = F.reshape(g, new_shape)
        g = slice_axis(g, axis, 0, (m - 1) * step + 1)
    length = g.shape[axis]
    width = [(0, 0)] * g.ndim
    width[axis] = (start, dim_sub(dim_sub(n, start), length))  # dims: a static n, a start "B" (concatenate's)
    return F.pad(g, width)


def conv_weight_grad(x, gy, w_shape, stride, padding, dilation, groups):
    """d<gy, conv2d(x, w)>/dw as a conv2d of x (channels as batch) with gy (batch as channels)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w_shape
    if groups == 1:  # a plain transpose: the ONNX export cancels it against its own (backends/onnx_conv.py)
        xt = F.transpose(x, (1, 0, 2, 3))
    else:
        xt = F.reshape(x, (n, groups, c // groups if isinstance(c, int) else cg, h, wd))
        xt = F.reshape(F.transpose(xt, (2, 1, 0, 3, 4)), (cg, -1, h, wd))
    wt = F.transpose(gy, (1, 0, 2, 3))
    # with stride > 1 the conv over the symmetrically padded input runs past the kernel (a
    # 1x1 stride-2 conv's gradient came out 2x2, then was cut to 1x1): pad the far end less,
    # or cut the input there, so it computes exactly kH x kW taps and nothing is thrown away
    over = [conv_out((h, wd)[i], gy.shape[2 + i], dilation[i], 2 * padding[i], stride[i]) - (kh, kw)[i]
            for i in range(2)]
    if any(over):
        ends = [padding[i] - over[i] * dilation[i] for i in range(2)]
        xt = F.pad(xt, ((0, 0), (0, 0), (padding[0], max(ends[0], 0)), (padding[1], max(ends[1], 0))))
        if min(ends) < 0:
            xt = xt[:, :, :xt.shape[2] + min(ends[0], 0), :xt.shape[3] + min(ends[1], 0)]
        padding = (0, 0)
    r = F.conv2d(xt, wt, stride=dilation, padding=padding, dilation=stride, groups=groups)
    return F.transpose(r, (1, 0, 2, 3))


def _out_padding(in_hw, g_hw, k_hw, stride, padding, dilation):
    """The output_padding that makes conv_transpose2d of g give back in_hw."""
    return tuple(in_hw[i] - conv_transpose_out(g_hw[i], k_hw[i], stride[i], padding[i], dilation[i])
                 for i in range(2))


def _is_float(t) -> bool:
    return t.value.type.dtype in FLOATS


# ---- elementwise -------------------------------------------------------------------

@rule("neg")
def _neg(g, x, y, a): return [-g]
@rule("exp")
def _exp(g, x, y, a): return [g * y]
@rule("log")
def _log(g, x, y, a): return [g / x[0]]
@rule("reciprocal")
def _recip(g, x, y, a): return [-(g * y * y)]
@rule("sqrt")
def _sqrt(g, x, y, a): return [g / (y * 2.0)]
@rule("tanh")
def _tanh(g, x, y, a): return [g * (1.0 - y * y)]
@rule("sigmoid")
def _sigmoid(g, x, y, a): return [g * y * (1.0 - y)]
@rule("softplus")
def _softplus(g, x, y, a): return [g * F.sigmoid(x[0])]
@rule("sin")
def _sin(g, x, y, a): return [g * F.cos(x[0])]
@rule("cos")
def _cos(g, x, y, a): return [-(g * F.sin(x[0]))]
@rule("erf")
def _erf(g, x, y, a): return [g * (F.exp(-(x[0] * x[0])) * (2.0 / math.sqrt(math.pi)))]


@rule("abs")
def _abs(g, x, y, a):
    return [F.where(x[0] > 0, g, F.where(x[0] < 0, -g, 0.0))]


@rule("relu")
def _relu(g, x, y, a):
    # the mask from the output (y > 0 exactly where x > 0, nan included), as torch's
    # threshold_backward: the backward then leaves the input unread, so onnxruntime fuses
    # the conv before a relu with it
    return [F.where(y > 0, g, 0.0)]


@rule("leaky_relu")
def _leaky(g, x, y, a):
    return [F.where(x[0] > 0, g, g * a["alpha"])]


@rule("elu")
def _elu(g, x, y, a):
    return [F.where(x[0] > 0, g, g * (y + a["alpha"]))]


@rule("gelu")
def _gelu(g, x, y, a):
    x = x[0]
    if a["approximate"] == "tanh":
        c = math.sqrt(2 / math.pi)
        t = F.tanh((x + x * x * x * 0.044715) * c)
        d = (t + 1.0) * 0.5 + x * 0.5 * (1.0 - t * t) * ((x * x * (3 * 0.044715) + 1.0) * c)
        return [g * d]
    cdf = (F.erf(x * (1 / math.sqrt(2))) + 1.0) * 0.5
    pdf = F.exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))
    return [g * (cdf + x * pdf)]


@rule("clip")
def _clip(g, x, y, a):
    x = x[0]
    if a["min"] is not None:
        g = F.where(x < a["min"], 0.0, g)
    if a["max"] is not None:
        g = F.where(x > a["max"], 0.0, g)
    return [g]


@rule("cast")
def _cast(g, x, y, a):
    return [F.astype(g, x[0].dtype) if _is_float(x[0]) and _is_float(y) else None]


def _to(g, x):
    """unbroadcast(g, x.shape), without building x.shape when the types already agree."""
    return g if g.value.type.shape == x.value.type.shape else unbroadcast(g, x.shape)


@rule("add", selective=True)
def _add(g, x, y, a, need):
    return [_to(g, x[0]) if need[0] else None, _to(g, x[1]) if need[1] else None]


@rule("sub", selective=True)
def _sub(g, x, y, a, need):
    return [_to(g, x[0]) if need[0] else None, _to(-g, x[1]) if need[1] else None]


@rule("mul", selective=True)
def _mul(g, x, y, a, need):
    return [_to(g * x[1], x[0]) if need[0] else None, _to(g * x[0], x[1]) if need[1] else None]


@rule("div", selective=True)
def _div(g, x, y, a, need):
    gb = g / x[1]
    return [_to(gb, x[0]) if need[0] else None, _to(-(gb * y), x[1]) if need[1] else None]


@rule("pow")
def _pow(g, x, y, a):
    base, e = x
    c = e.value.data  # a constant exponent (x ** 2.0) folds: no pow(x, 2 - 1) at run time
    if c is not None and np.all(c == 0):
        gx = None  # x ** 0 is constant
    elif c is not None and c.size == 1 and c.reshape(-1)[0] in (1, 2):
        gx = g if c.reshape(-1)[0] == 1 else g * base * np.asarray(2, c.dtype).reshape(c.shape)
    elif c is not None and np.all(c != 0):
        gx = g * F.power(base, c - 1) * c
    else:  # where e == 0 the derivative is 0, not 0 * base**-1 (nan at base 0)
        gx = g * e * F.power(base, F.where(F.equal(e, 0.0), 1.0, e - 1.0))
    # d/de = y * log(base), taken as 0 where base <= 0 (log undefined; torch does the same at 0)
    ge = F.where(base > 0, g * y * F.log(F.where(base > 0, base, 1.0)), 0.0)
    return [None if gx is None else unbroadcast(gx, base.shape), unbroadcast(ge, e.shape)]


def _minmax(g, x, wins):
    a, b = x
    ga = F.where(wins, g, F.where(F.equal(a, b), g * 0.5, 0.0))
    return [unbroadcast(ga, a.shape), unbroadcast(g - ga, b.shape)]


@rule("maximum")
def _maximum(g, x, y, a): return _minmax(g, x, x[0] > x[1])
@rule("minimum")
def _minimum(g, x, y, a): return _minmax(g, x, x[0] < x[1])


@rule("where")
def _where(g, x, y, a):
    c, p, q = x
    return [None, unbroadcast(F.where(c, g, 0.0), p.shape), unbroadcast(F.where(c, 0.0, g), q.shape)]


# ---- reductions and normalizations -------------------------------------------------

@rule("sum")
def _sum(g, x, y, a): return [expand_reduced(g, x[0], a["axes"], a["keepdims"])]


@rule("mean")
def _mean(g, x, y, a):
    n = count(x[0], a["axes"])
    if isinstance(n, int):
        return [expand_reduced(g * (1.0 / max(n, 1)), x[0], a["axes"], a["keepdims"])]
    return [expand_reduced(g, x[0], a["axes"], a["keepdims"]) / n]


@rule("max", "min")
def _reduce_extreme(g, x, y, a):
    x, axes = x[0], a["axes"]
    ye = y if a["keepdims"] or not axes else F.expand_dims(y, axes)
    hit = F.equal(x, ye)
    ties = F.sum(F.where(hit, 1.0, 0.0).astype(x.dtype), axis=axes, keepdims=True)
    ge = g if a["keepdims"] or not axes else F.expand_dims(g, axes)
    return [F.where(hit, ge / ties, 0.0)]


@rule("logsumexp")
def _logsumexp(g, x, y, a):
    x, axes = x[0], a["axes"]
    ye = y if a["keepdims"] or not axes else F.expand_dims(y, axes)
    return [expand_reduced(g, x, axes, a["keepdims"]) * F.exp(x - ye)]


@rule("softmax")
def _softmax(g, x, y, a):
    return [y * (g - F.sum(g * y, axis=a["axis"], keepdims=True))]


@rule("log_softmax")
def _log_softmax(g, x, y, a):
    return [g - F.exp(y) * F.sum(g, axis=a["axis"], keepdims=True)]


@rule("layer_norm")
def _layer_norm(g, x, y, a):
    dtype = x[0].dtype
    if dtype == np.float16:  # statistics in f32 as the forward (d*d overflows f16 at |d| >= 256)
        g, x = F.astype(g, "f32"), [F.astype(t, "f32") for t in x]
    xs = x[0]
    axes = tuple(range(a["axis"], xs.ndim))
    mu = F.mean(xs, axis=axes, keepdims=True)
    d = xs - mu
    rstd = F.reciprocal(F.sqrt(F.mean(d * d, axis=axes, keepdims=True) + a["epsilon"]))
    xhat = d * rstd
    gh = g * x[1] if len(x) > 1 else g
    gx = rstd * (gh - F.mean(gh, axis=axes, keepdims=True) - xhat * F.mean(gh * xhat, axis=axes, keepdims=True))
    batch = tuple(range(a["axis"]))
    out = [gx]
    if len(x) > 1:
        out.append(F.sum(g * xhat, axis=batch) if batch else g * xhat)
    if len(x) > 2:
        out.append(F.sum(g, axis=batch) if batch else g)
    return [F.astype(t, dtype) for t in out]


# ---- contractions, windows ---------------------------------------------------------

@rule("matmul")
def _matmul(g, x, y, a):
    p, q = x
    if p.ndim == 1 and q.ndim == 1:
        return [g * q, g * p]
    p2 = p if p.ndim > 1 else F.expand_dims(p, 0)
    q2 = q if q.ndim > 1 else F.expand_dims(q, 1)
    g2 = g if q.ndim > 1 else F.expand_dims(g, -1)
    g2 = g2 if p.ndim > 1 else F.expand_dims(g2, g2.ndim - 1)
    gp = unbroadcast(F.matmul(g2, swap_last(q2)), p2.shape)
    if q.ndim == 2 and p.ndim > 2:
        # activations [..., M, K] times a weight [K, N] (every Linear on a sequence): one
        # [K, ...*M] @ [...*M, N] GEMM, not a batched matmul to [..., K, N] and a sum over
        # the batch axes (PyTorch's form too; 3x faster in onnxruntime on a GPT's layers)
        k, n = p.shape[-1], g.shape[-1]
        gq = F.matmul(swap_last(F.reshape(p, (-1, k))), F.reshape(g, (-1, n)))
    else:
        gq = unbroadcast(F.matmul(swap_last(p2), g2), q2.shape)
    return [gp if p.ndim > 1 else F.squeeze(gp, 0), gq if q.ndim > 1 else F.squeeze(gq, 1)]


@rule("conv2d")
def _conv2d(g, x, y, a):
    xs, w = x[0], x[1]
    s, p, d, grp = a["stride"], a["padding"], a["dilation"], a["groups"]
    op = _out_padding(xs.shape[2:], g.shape[2:], w.shape[2:], s, p, d)
    gx = F.conv_transpose2d(g, w, stride=s, padding=p, output_padding=op, groups=grp, dilation=d)
    gw = conv_weight_grad(xs, g, w.shape, s, p, d, grp)
    out = [gx, gw]
    if len(x) > 2:
        out.append(F.sum(g, axis=(0, 2, 3)))
    return out


@rule("conv_transpose2d")
def _conv_transpose2d(g, x, y, a):
    gin, w = x
    s, p, d, grp = a["stride"], a["padding"], a["dilation"], a["groups"]
    ggin = F.conv2d(g, w, stride=s, padding=p, dilation=d, groups=grp)
    if ggin.shape[2:] != gin.shape[2:]:
        # output_padding >= stride (allowed when dilation > stride) makes the conv2d of g longer
        # than gin: the trailing rows/columns correspond to no position of gin, so drop them
        ggin = ggin[:, :, :gin.shape[2], :gin.shape[3]]
    return [ggin, conv_weight_grad(g, gin, w.shape, s, p, d, grp)]


def _taps(a):
    kh, kw = a["kernel"]
    return [(i, j) for i in range(kh) for j in range(kw)]


def _scatter_taps(contribs, xs, a):
    """Sum each tap's [N,C,oh,ow] contribution back onto the input grid with one transposed conv."""
    n, c, h, w = xs.shape
    kh, kw = a["kernel"]
    taps = len(contribs)
    stacked = F.concatenate([F.expand_dims(t, 2) for t in contribs], axis=2)
    stacked = F.reshape(stacked, (n, c * taps, contribs[0].shape[2], contribs[0].shape[3]))
    kernel = np.zeros((c * taps, 1, kh, kw), dtype=xs.dtype)
    for t, (i, j) in enumerate(_taps(a)):
        kernel[t::taps, 0, i, j] = 1
    op = _out_padding((h, w), contribs[0].shape[2:], (kh, kw), a["stride"], a["padding"], a["dilation"])
    return F.conv_transpose2d(stacked, kernel, stride=a["stride"], padding=a["padding"], output_padding=op,
                              groups=c, dilation=a["dilation"])


@rule("max_pool2d")
def _max_pool2d(g, x, y, a):
    xs = x[0]
    (ph, pw), (sh, sw), (dh, dw) = a["padding"], a["stride"], a["dilation"]
    xp = F.pad(xs, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-math.inf) if ph or pw else xs
    oh, ow = y.shape[2], y.shape[3]
    hits = [F.equal(xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw], y)
            for i, j in _taps(a)]
    ties = hits[0].astype(xs.dtype)
    for h in hits[1:]:
        ties = ties + h.astype(xs.dtype)
    share = g / ties
    return [_scatter_taps([F.where(h, share, 0.0) for h in hits], xs, a)]


@rule("avg_pool2d")
def _avg_pool2d(g, x, y, a):
    xs = x[0]
    kh, kw = a["kernel"]
    if a["count_include_pad"] or a["padding"] == (0, 0):
        share = g * (1.0 / (kh * kw))
    else:  # divide by how many real (unpadded) elements each window saw: static, so a constant
        counts = window_counts(xs.shape[2:], a["kernel"], a["stride"], a["padding"], a["dilation"])
        share = g / counts[None, None].astype(xs.dtype)
    return [_scatter_taps([share] * (kh * kw), xs, a)]


# ---- shapes ------------------------------------------------------------------------

@rule("reshape")
def _reshape(g, x, y, a): return [F.reshape(g, x[0].shape)]


@rule("transpose")
def _transpose(g, x, y, a):
    return [F.transpose(g, tuple(int(i) for i in np.argsort(a["perm"])))]


@rule("broadcast_to")
def _broadcast_to(g, x, y, a): return [unbroadcast(g, x[0].shape)]


@rule("concatenate")
def _concatenate(g, x, y, a):
    out, start = [], 0
    for t in x:
        n = t.shape[a["axis"]]
        out.append(slice_axis(g, a["axis"], start, start + n))
        start += n
    return out


@rule("slice")
def _slice(g, x, y, a):
    shape = list(x[0].shape)
    # undo the axes one at a time, last first, so each scatter sees the shape it expects
    for axis, start, stop, step in reversed(list(zip(a["axes"], a["starts"], a["stops"], a["steps"]))):
        shape_before = list(g.shape)
        shape_before[axis] = shape[axis]
        g = scatter_slice(g, shape_before, axis, start, stop, step)
    return [g]


@rule("pad")
def _pad(g, x, y, a):
    r, pads = x[0].ndim, a["pads"]
    # a width may be a dim ("B-1": pad is the gradient of x[-1:]), so the stop is a dim sum
    idx = tuple(slice(pads[i], dim_sum([pads[i], x[0].shape[i]])) if pads[i] or pads[r + i] else slice(None)
                for i in range(r))
    return [g[idx]]


@rule("slice_to")
def _slice_to(g, x, y, a):
    return [F.apply_op("pad_to", [g, x[0]], {"axes": a["axes"]}), None]


@rule("pad_to")
def _pad_to(g, x, y, a):
    return [F.apply_op("slice_to", [g, x[0]], {"axes": a["axes"], "ref_axes": a["axes"]}), None]


@rule("squeeze")
def _squeeze(g, x, y, a): return [F.expand_dims(g, a["axes"])]
@rule("unsqueeze")
def _unsqueeze(g, x, y, a): return [F.squeeze(g, a["axes"])]


# ---- losses ------------------------------------------------------------------------

def _onehot_and_scale(g, logits, labels, a, op):
    """one-hot labels on the class axis, and the per-element weight of the loss."""
    axis = 0 if logits.ndim == 1 else 1
    c = logits.shape[axis]
    if not isinstance(c, int):
        raise TraceError(f"{op}: the gradient needs a static class count, got {logits.type}")
    classes = np.arange(c, dtype=labels.dtype).reshape((c,) + (1,) * (logits.ndim - axis - 1))
    lab = F.expand_dims(labels, axis)
    onehot = F.equal(lab, classes).astype(logits.dtype)
    valid = F.not_equal(labels, a["ignore_index"]).astype(logits.dtype)
    if a["reduction"] == "none":
        w = g * valid
    else:
        w = valid * g
        if a["reduction"] == "mean":
            # every label ignored (a padding-only batch): the loss is 0/0 = nan, as torch's, but
            # the gradient is zero, as torch's (no term counts), so one such batch leaves
            # parameters finite
            w = w / F.maximum(F.sum(valid), 1.0)
    return onehot, F.expand_dims(w, axis)


@rule("cross_entropy")
def _cross_entropy(g, x, y, a):
    logits, labels = x
    onehot, w = _onehot_and_scale(g, logits, labels, a, "cross_entropy")
    p = F.softmax(logits, axis=0 if logits.ndim == 1 else 1)
    return [(p - onehot) * w, None]


@rule("nll_loss")
def _nll_loss(g, x, y, a):
    logp, labels = x
    onehot, w = _onehot_and_scale(g, logp, labels, a, "nll_loss")
    return [-(onehot * w), None]


# the op families beyond ir/ops.py (ir/ops_index.py, ops_nn.py; ops_random.py has no gradient)
from .vjp_rules_index import VJP_INDEX  # noqa: E402  (take, scatter_add, cumsum, trilu)
from .vjp_rules_nn import VJP_NN  # noqa: E402  (einsum, batch_norm)

VJP.update(**VJP_INDEX, **VJP_NN)
