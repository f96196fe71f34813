"""numpy kernels of convolution and pooling (NCHW), re-exported by ir/reference_kernels.py.

Speed (bench/bench_models.py's ResNet spends most of its time here): every convolution is
one copy into a contiguous column buffer (im2col) and one BLAS product, laid out so that
neither needs a transpose afterwards:

  - conv2d, kernel smaller than the output (a forward conv): columns [N, C*kh*kw, OH*OW]
    (copied in runs along OW), one product per image [O, C*kh*kw] @ columns -> [N, O, OH*OW],
    which is NCHW already;
  - conv2d, kernel larger than the output (the weight gradient, which autodiff writes as a
    conv2d of the input with the output gradient as kernel): columns [N*OH*OW, C*kh*kw]
    (copied in runs along kw) and a single product with the kernel;
  - conv_transpose2d at stride 1 is the conv2d of g with the flipped, transposed kernel
    (padding d*(k-1)-p, output_padding added at the end); at other strides, or when it has
    fewer output channels than input ones, it is col2im: one product per image gives every
    tap's contribution, each tap added back at its stride;
  - pooling is a loop over the kh*kw taps with one ufunc over strided views each (a reduce
    over the two tiny window axes of a windowed view costs ~40x more).

Padding is one copy into a buffer whose borders are filled, never np.pad (~20 us of
Python per call). The results are those of the direct definition up to float rounding:
the products sum the same terms in a BLAS order.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .windows import conv_out, conv_transpose_out, window_counts


def padded(x, pads, fill=0):
    """NCHW x with pads (top, bottom, left, right) of `fill`: x itself when there are none."""
    pt, pb, pl, pr = pads
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    xp = np.empty((n, c, h + pt + pb, w + pl + pr), x.dtype)
    fill = x.dtype.type(fill)
    xp[:, :, :pt] = fill
    xp[:, :, pt + h:] = fill
    xp[:, :, pt:pt + h, :pl] = fill
    xp[:, :, pt:pt + h, pl + w:] = fill
    xp[:, :, pt:pt + h, pl:pl + w] = x
    return xp


def _taps(xp, kernel, out_hw, stride, dilation):
    """The [N, C, kh, kw, OH, OW] view of padded xp: [..., i, j, r, s] = xp[..., i*dh + r*sh, j*dw + s*sw]."""
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, xp.shape[:2] + tuple(kernel) + tuple(out_hw),
                      (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]), writeable=False)


def windows(x, kernel, stride, padding, dilation, fill):
    """The pooling/convolution windows of NCHW `x` padded with `fill`, as a strided view
    [N, C, OH, OW, kh, kw] (no copy beyond the padding)."""
    (ph, pw), (kh, kw) = padding, kernel
    oh = conv_out(x.shape[2], kh, stride[0], 2 * ph, dilation[0])
    ow = conv_out(x.shape[3], kw, stride[1], 2 * pw, dilation[1])
    xp = padded(x, (ph, ph, pw, pw), fill)
    return _taps(xp, kernel, (oh, ow), stride, dilation).transpose(0, 1, 4, 5, 2, 3)


def _conv(x, w, pads, stride, dilation):
    """groups=1 conv2d of x [N,C,H,W] with w [O,C,kh,kw], pads (top, bottom, left, right)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh = conv_out(h, kh, stride[0], pads[0] + pads[1], dilation[0])
    ow = conv_out(wd, kw, stride[1], pads[2] + pads[3], dilation[1])
    taps = _taps(padded(x, pads), (kh, kw), (oh, ow), stride, dilation)
    k = c * kh * kw
    if kh * kw <= oh * ow:
        cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
        cols[...] = taps
        return np.matmul(w.reshape(o, k), cols.reshape(n, k, oh * ow)).reshape(n, o, oh, ow)
    cols = np.empty((n, oh, ow, c, kh, kw), x.dtype)
    cols[...] = taps.transpose(0, 4, 5, 1, 2, 3)
    y = np.matmul(cols.reshape(n * oh * ow, k), w.reshape(o, k).T)
    return np.ascontiguousarray(y.reshape(n, oh * ow, o).transpose(0, 2, 1)).reshape(n, o, oh, ow)


def conv2d(x, w, b=None, *, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    ph, pw = padding
    if groups == 1:
        y = _conv(x, w, (ph, ph, pw, pw), stride, dilation)
    else:
        win = windows(x, (kh, kw), stride, padding, dilation, 0)  # N, C, OH, OW, kh, kw
        oh, ow = win.shape[2:4]
        win = win.reshape(n, groups, cg, oh, ow, kh, kw)
        wg = w.reshape(groups, o // groups, cg, kh, kw)
        y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, oh, ow)
    y = np.ascontiguousarray(y, dtype=x.dtype)
    if b is not None:
        y += b.reshape(1, o, 1, 1)
    return y


def conv_transpose2d(g, w, *, stride, padding, dilation, groups, output_padding):
    """The adjoint of conv2d in its input (see the module docstring for the two ways)."""
    n, o, oh, ow = g.shape
    _, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw), (oph, opw) = stride, padding, dilation, output_padding
    qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    if groups == 1 and (sh, sw) == (1, 1) and qh >= 0 and qw >= 0 and o <= 2 * cg:
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        return np.ascontiguousarray(_conv(g, flipped, (qh, qh + oph, qw, qw + opw), (1, 1), dilation), dtype=g.dtype)
    h = conv_transpose_out(oh, kh, sh, ph, dh, oph)
    wd = conv_transpose_out(ow, kw, sw, pw, dw, opw)
    og = o // groups
    wg = w.reshape(groups, og, cg * kh * kw).transpose(0, 2, 1)           # [G, cg*kh*kw, og]
    cols = np.matmul(wg, g.reshape(n, groups, og, oh * ow))              # [N, G, cg*kh*kw, OH*OW]
    cols = cols.reshape(n, groups * cg, kh, kw, oh, ow)
    out = np.zeros((n, groups * cg, h + 2 * ph, wd + 2 * pw), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            out[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return np.ascontiguousarray(out[:, :, ph:ph + h, pw:pw + wd])


def _pool(x, kernel, stride, padding, dilation, fill, ufunc):
    """ufunc folded over the kh*kw taps: [N, C, OH, OW] (a fresh array)."""
    (ph, pw), (kh, kw) = padding, kernel
    oh = conv_out(x.shape[2], kh, stride[0], 2 * ph, dilation[0])
    ow = conv_out(x.shape[3], kw, stride[1], 2 * pw, dilation[1])
    taps = _taps(padded(x, (ph, ph, pw, pw), fill), kernel, (oh, ow), stride, dilation)
    out = np.array(taps[:, :, 0, 0])
    for i in range(kh):
        for j in range(kw):
            if i or j:
                ufunc(out, taps[:, :, i, j], out=out)
    return out


def max_pool2d(x, *, kernel, stride, padding, dilation):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    return _pool(x, kernel, stride, padding, dilation, fill, np.maximum)


def avg_pool2d(x, *, kernel, stride, padding, dilation, count_include_pad):
    total = _pool(x, kernel, stride, padding, dilation, 0, np.add)
    if count_include_pad or padding == (0, 0):
        return (total / np.asarray(kernel[0] * kernel[1], x.dtype)).astype(x.dtype, copy=False)
    count = window_counts(x.shape[2:], kernel, stride, padding, dilation).astype(x.dtype)
    return (total / count).astype(x.dtype, copy=False)
