"""EXPORT rules of conv2d and conv_transpose2d: ONNX Conv / ConvTranspose, or one GEMM
where onnxruntime's kernels are slow on the shapes a backward pass makes.

Why the GEMM forms (bench/bench_models.py, ResNet-style forward + backward, onnxruntime
1.32 on one thread): conv2d's weight gradient is a conv2d with batch and channels swapped
(passes/vjp_rules.py `conv_weight_grad`): its kernel is the forward output's spatial size
(16x16) and its output the weight's (3x3). onnxruntime's Conv runs that as one small
im2col GEMM per "batch" entry and took 40% of the step. Written as the taps of the
*output* (one strided Slice of the padded input per output position, at most kH*kW of
them) and one MatMul, it is 1.5-2.5x faster. And conv_transpose2d (conv2d's input
gradient) on a tiny input (the last stage: 2x2, padded 3x3 kernel) repacks the weight for
every image in onnxruntime's ConvTranspose, and most of its taps multiply padding; one
MatMul over the whole batch with the weight gathered into the dense matrix of the map is
4x faster there. Both forms are exact rearrangements of the same sums (only the summation
order differs), taken for float32 with static shapes and groups=1; everything else stays
Conv / ConvTranspose.
"""
from __future__ import annotations

import hashlib

import numpy as np

# conv2d takes the output-taps GEMM when its output has at most this many positions
OUTPUT_TAPS_MAX_POSITIONS = 9
# ... batch last (whole [C*B] rows gathered, one product per output position) when the output,
# transposed at the end, and the weight are small (a weight gradient of the first stages:
# many rows of few channels; its "weight" is the output gradient)
BATCH_LAST_MAX_OUTPUT = 2 ** 14
BATCH_LAST_MAX_WEIGHT = 2 ** 16
# ... else with one Gather of [C]-long rows when there are at most this many rows per output
# position (batch * kernel taps; each costs ~8 ns) and the weight, which these channels-last
# windows need as [O, kH*kW, C] (made once for conv2d and its input gradient), is not huge;
# else with one Slice per output position (~15 us each in onnxruntime, whatever the size)
GATHER_MAX_ROWS = 2048
GATHER_MAX_WEIGHT = 2 ** 18
# conv_transpose2d is one GEMM with a gathered weight [O*H*W, yH*yW*C] when its output has
# no more positions than the kernel has taps (most taps fall in the padding: the last stage
# of a ResNet, 2x2 -> 2x2 with a 3x3 kernel, 4.5x faster than ConvTranspose) and that weight
# stays this small; a 4x4 -> 4x4 one is already 2.5x slower than ConvTranspose
DENSE_MAX_ELEMENTS = 2 ** 19


def pairs(p):
    return [p[0], p[1], p[0], p[1]]


def window(a, kernel, dilations=True):
    """The ONNX attributes of a conv/pool window (pads symmetric)."""
    out = dict(kernel_shape=list(kernel), strides=list(a["stride"]), pads=pairs(a["padding"]))
    return {**out, "dilations": list(a["dilation"])} if dilations else out


def _static(*types) -> bool:
    return all(t.dtype == "f32" and all(isinstance(d, int) and d > 0 for d in t.shape) for t in types)


def conv(low, n, ins, outs):
    a = n.attrs
    x, w, y = n.inputs[0].type, n.inputs[1].type, n.outputs[0].type
    if a["groups"] == 1 and _static(x, w, y) and y.shape[2] * y.shape[3] <= OUTPUT_TAPS_MAX_POSITIONS:
        _conv_output_taps(low, n, ins, outs)
        return
    low.op("Conv", *ins, out=outs[0], group=a["groups"], **window(a, w.shape[2:]))


def _conv_output_taps(low, n, ins, outs):
    """y[b, o, i, j] = sum over c, u, v of xpad[b, c, i*s + u*d, j*s + v*d] * w[o, c, u, v]:
    the input windows of the OH*OW output positions stacked to cols [B*OH*OW, C*kH*kW]
    (or [B*OH*OW, kH*kW*C]), times the weight as [O, C*kH*kW] (or [O, kH*kW*C]) transposed;
    or, batch last, one product per output position (_conv_batch_last)."""
    (b, c, _, _), (o, _, kh, kw), (_, _, oh, ow) = (v.type.shape for v in (n.inputs[0], n.inputs[1], n.outputs[0]))
    if o * b * oh * ow <= BATCH_LAST_MAX_OUTPUT and o * c * kh * kw <= BATCH_LAST_MAX_WEIGHT:
        _conv_batch_last(low, n, ins, outs)
        return
    if b * kh * kw <= GATHER_MAX_ROWS and o * c * kh * kw <= GATHER_MAX_WEIGHT:
        cols = _windows_gathered(low, n, ins[0])
        w2 = low.op("Reshape", taps_last(low, ins[1], n.inputs[1].type.shape), low.ints([o, kh * kw * c]))
    else:
        cols = _windows_sliced(low, n, ins[0])
        w2 = low.op("Reshape", ins[1], low.ints([o, c * kh * kw]))
    # [O, B*OH*OW]: the weight gradient's natural layout, so the Transpose below meets the
    # one conv_weight_grad applies next and onnxruntime cancels the pair
    y = low.op("MatMul", w2, low.op("Transpose", cols, perm=[1, 0]))
    y = low.op("Reshape", y, low.ints([o, b, oh, ow]))
    if len(ins) > 2:
        y = low.op("Add", y, low.op("Reshape", ins[2], low.ints([o, 1, 1, 1])))
    low.op("Transpose", y, out=outs[0], perm=[1, 0, 2, 3])


def _conv_batch_last(low, n, ins, outs):
    """The input as [H*W + 1, C*B] (a zero row last), so that one Gather of whole rows builds
    every window: [OH*OW, kH*kW*C, B]; then one [O, kH*kW*C] product per output position,
    [OH*OW, O, B], turned to [B, O, OH, OW] (small: only taken for a small output). For
    conv2d's weight gradient on a large image: the batch is the forward channels, the rows
    the forward batch and its pixels."""
    (b, c, h, wd), (o, _, kh, kw), (_, _, oh, ow) = (v.type.shape for v in (n.inputs[0], n.inputs[1], n.outputs[0]))
    # [B, C, H, W] -> [H*W, C*B] as [C, B] and a 2-D transpose: onnxruntime cancels the first
    # against conv_weight_grad's transpose of x, and runs 2-D transposes fast (4-D ones
    # moving the batch to the end took 150 us for [16, 8, 16, 16])
    x = low.op("Reshape", low.op("Transpose", ins[0], perm=[1, 0, 2, 3]), low.ints([c * b, h * wd]))
    x = low.op("Pad", low.op("Transpose", x, perm=[1, 0]), low.ints([0, 0, 1, 0]), mode="constant")
    cols = low.op("Gather", x, _named_const(low, "windows", _window_cells(n)), axis=0)    # [OH*OW, kH*kW, C*B]
    cols = low.op("Reshape", cols, low.ints([oh * ow, kh * kw * c, b]))
    # the weight (here the output gradient, transposed) as [O, kH*kW*C] the same way
    w2 = low.op("Reshape", low.op("Transpose", ins[1], perm=[1, 0, 2, 3]), low.ints([c, o * kh * kw]))
    w2 = low.op("Reshape", low.op("Transpose", w2, perm=[1, 0]), low.ints([o, kh * kw * c]))
    y = low.op("MatMul", w2, cols)                                                        # [OH*OW, O, B]
    if len(ins) > 2:
        y = low.op("Add", y, low.op("Reshape", ins[2], low.ints([1, o, 1])))
    low.op("Reshape", low.op("Transpose", y, perm=[2, 1, 0]), low.ints([b, o, oh, ow]), out=outs[0])


def _window_cells(n):
    """[OH*OW, kH*kW]: the flat input cell each kernel tap of each output position reads,
    H*W (one past the last cell: a zero row) where it reads the padding."""
    a = n.attrs
    (_, _, h, wd), (_, _, kh, kw), (_, _, oh, ow) = (v.type.shape for v in (n.inputs[0], n.inputs[1], n.outputs[0]))
    cells = np.full((oh * ow, kh * kw), h * wd, np.int64)
    for out_pos, tap, cell in _taps((oh, ow), (h, wd), (kh, kw), a["stride"], a["padding"], a["dilation"]):
        cells[out_pos, tap] = cell
    return cells


def _taps(small, big, kernel, stride, padding, dilation):
    """(flat position in the small map, flat kernel tap, flat cell of the big map) for every tap
    of every small-map position that lands inside the big map: a conv's output positions
    reading its input, or a conv_transpose's input positions writing its output."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    (kh, kw), (bh, bw) = kernel, big
    for i in range(small[0]):
        for j in range(small[1]):
            for u in range(kh):
                for v in range(kw):
                    r, col = i * sh + u * dh - ph, j * sw + v * dw - pw
                    if 0 <= r < bh and 0 <= col < bw:
                        yield i * small[1] + j, u * kw + v, r * bw + col


def _windows_sliced(low, n, x):
    """cols [B*OH*OW, C*kH*kW]: one strided Slice of the padded input per output position."""
    a = n.attrs
    (b, c, _, _), (_, _, kh, kw), (_, _, oh, ow) = (v.type.shape for v in (n.inputs[0], n.inputs[1], n.outputs[0]))
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    if ph or pw:
        x = low.op("Pad", x, low.ints([0, 0, ph, pw, 0, 0, ph, pw]), mode="constant")
    axes, steps = low.ints([2, 3]), low.ints([dh, dw])
    taps = []
    for i in range(oh):
        for j in range(ow):
            start = [i * sh, j * sw]
            taps.append(low.op("Slice", x, low.ints(start), low.ints([start[0] + dh * (kh - 1) + 1,
                                                                      start[1] + dw * (kw - 1) + 1]), axes, steps))
    # [B, OH*OW*C, kH, kW] is [B, OH*OW, C, kH, kW] in memory: no Unsqueeze per tap
    cols = taps[0] if len(taps) == 1 else low.op("Concat", *taps, axis=1)
    return low.op("Reshape", cols, low.ints([b * oh * ow, c * kh * kw]))


def _windows_gathered(low, n, x):
    """cols [B*OH*OW, kH*kW*C]: one Gather of the input as [B, H*W + 1, C] (channels last,
    then a zero row that every tap in the padding reads) by a constant map of window cells."""
    (b, c, h, wd), (_, _, kh, kw), (_, _, oh, ow) = (v.type.shape for v in (n.inputs[0], n.inputs[1], n.outputs[0]))
    x = low.op("Transpose", low.op("Reshape", x, low.ints([b, c, h * wd])), perm=[0, 2, 1])
    x = low.op("Pad", x, low.ints([0, 0, 0, 0, 1, 0]), mode="constant")
    cols = low.op("Gather", x, _named_const(low, "windows", _window_cells(n)), axis=1)   # [B, OH*OW, kH*kW, C]
    return low.op("Reshape", cols, low.ints([b * oh * ow, kh * kw * c]))


def taps_last(low, w, shape):
    """The weight [O, C, kH, kW] as [O, kH*kW, C]. Written the same way wherever a weight is
    needed so (conv2d's gathered windows, the dense conv_transpose2d of its gradient), so that
    onnxruntime's common-subexpression pass makes it once."""
    o, c, kh, kw = shape
    return low.op("Transpose", low.op("Reshape", w, low.ints([o, c, kh * kw])), perm=[0, 2, 1])


def _named_const(low, what, array):
    """An index map, named by a hash of its bytes (its values would make a long name)."""
    return low.const(array, f"%{what}.{hashlib.sha1(array.tobytes()).hexdigest()[:16]}.{list(array.shape)}")


def conv_transpose(low, n, ins, outs):
    a = n.attrs
    g, w, y = n.inputs[0].type, n.inputs[1].type, n.outputs[0].type
    stride, pad, outpad = a["stride"], a["padding"], a["output_padding"]
    p, q, k = g.shape[2] * g.shape[3], y.shape[2] * y.shape[3], w.shape[2] * w.shape[3]
    if a["groups"] == 1 and _static(g, w, y) and q <= k and w.shape[0] * p * q * w.shape[1] <= DENSE_MAX_ELEMENTS:
        _conv_transpose_dense(low, n, ins, outs)
        return
    w = w.shape
    common = dict(kernel_shape=list(w[2:]), strides=list(stride), dilations=list(a["dilation"]), group=a["groups"])
    if all(op < s for op, s in zip(outpad, stride)):
        low.op("ConvTranspose", *ins, out=outs[0], pads=pairs(pad), output_padding=list(outpad), **common)
        return
    # output_padding only extends the end of the output: crop less there, and pad zeros
    # for what the padding cannot give back
    ends = [p - op for p, op in zip(pad, outpad)]
    extra = [max(0, -e) for e in ends]
    y = low.op("ConvTranspose", *ins, out=None if any(extra) else outs[0],
               pads=list(pad) + [max(0, e) for e in ends], **common)
    if any(extra):
        low.op("Pad", y, low.ints([0, 0, 0, 0, 0, 0] + extra), out=outs[0], mode="constant")


def _conv_transpose_dense(low, n, ins, outs):
    """The whole map as one GEMM: y[n, (q, c)] = sum over (o, p) of g[n, (o, p)] * M[(o, p), (q, c)],
    M[o, p, q, c] = w[o, c, tap(p, q)], the weight tap that carries input position p to output
    position q (a zero where none does): a Gather of the weight as [O, kH*kW + 1, C]."""
    a = n.attrs
    (b, o, h, wd), (_, c, kh, kw), (_, _, yh, yw) = (v.type.shape for v in (n.inputs[0], n.inputs[1], n.outputs[0]))
    K = kh * kw
    T = np.full((h * wd, yh * yw), K, np.int64)  # tap K: the zero row Pad adds below
    for in_pos, tap, cell in _taps((h, wd), (yh, yw), (kh, kw), a["stride"], a["padding"], a["dilation"]):
        T[in_pos, cell] = tap
    wt = low.op("Pad", taps_last(low, ins[1], (o, c, kh, kw)), low.ints([0, 0, 0, 0, 1, 0]), mode="constant")                        # [O, K+1, C]
    big = low.op("Gather", wt, _named_const(low, "taps", T), axis=1)                            # [O, H*W, yH*yW, C]
    big = low.op("Reshape", big, low.ints([o * h * wd, yh * yw * c]))
    y = low.op("MatMul", low.op("Reshape", ins[0], low.ints([b, o * h * wd])), big)
    y = low.op("Transpose", low.op("Reshape", y, low.ints([b, yh * yw, c])), perm=[0, 2, 1])
    low.op("Reshape", y, low.ints([b, c, yh, yw]), out=outs[0])
