"""conv2d / conv_transpose2d export (backends/onnx_conv.py): the GEMM forms taken on the
backward pass's shapes (a conv2d or conv_transpose2d with a small output)
against an independent float64 numpy reference written tap by tap, and against the
numpy backend and the ConvTranspose it replaces; plus conv2d's weight gradient with strides
(passes/vjp_rules.py pads the far end less instead of cropping), in both backends.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort  # noqa: F401  (a runtime dependency: never skipped)
import pytest

import tapeir as tp
import tapeir.backends.onnx_conv as onnx_conv
from support import ONNXRUNTIME, assert_close, rng


def ref_conv2d(x, w, stride, padding, dilation):
    """float64 conv2d, one kernel tap at a time."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for u in range(kh):
        for v in range(kw):
            tap = xp[:, :, u * dh:u * dh + sh * (oh - 1) + 1:sh, v * dw:v * dw + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,oc->nohw", tap, w[:, :, u, v])
    return y


def ref_conv_transpose2d(g, w, stride, padding, output_padding, dilation):
    """float64 conv_transpose2d: each input position's weighted kernel added into the output."""
    g, w = g.astype(np.float64), w.astype(np.float64)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = w.shape[2:]
    h, wd = g.shape[2:]
    full = np.zeros((g.shape[0], w.shape[1], sh * (h - 1) + dh * (kh - 1) + 1 + output_padding[0],
                     sw * (wd - 1) + dw * (kw - 1) + 1 + output_padding[1]))
    for u in range(kh):
        for v in range(kw):
            contrib = np.einsum("nohw,oc->nchw", g, w[:, :, u, v])
            full[:, :, u * dh:u * dh + sh * (h - 1) + 1:sh, v * dw:v * dw + sw * (wd - 1) + 1:sw] += contrib
    return full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]  # the padding is cut off both ends


def _ort(g, **kw):
    return tp.compile(g, backend="onnxruntime", intra_op_num_threads=1, **kw)


def _op_types(f):
    return {n.op_type for n in f.model.graph.node}


# (x shape, w shape, stride, padding, dilation, bias): outputs of at most 3x3 positions
SMALL_OUTPUT = [
    ((2, 3, 2, 2), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), False),      # the last stage of a ResNet: 2x2
    ((2, 5, 4, 4), (6, 5, 3, 3), (2, 2), (1, 1), (1, 1), True),       # stride 2 to 2x2, bias
    ((3, 2, 8, 6), (4, 2, 8, 6), (1, 1), (1, 1), (1, 1), False),      # a weight gradient's shape: 3x3 output
    ((3, 2, 9, 9), (2, 2, 4, 4), (1, 1), (0, 0), (2, 2), True),       # dilated big kernel: 3x3
    ((2, 3, 5, 6), (2, 3, 1, 1), (3, 4), (0, 1), (1, 1), False),      # 1x1 kernel, uneven strides: 2x2
    ((1, 4, 3, 3), (3, 4, 3, 3), (1, 1), (0, 0), (1, 1), True),       # one output position
]


@pytest.mark.parametrize("windows", ["gathered", "batch_last", "sliced"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,bias", SMALL_OUTPUT)
def test_conv2d_with_a_small_output_is_one_matmul(xs, ws, stride, padding, dilation, bias, windows, monkeypatch):
    if windows != "batch_last":  # the first choice on these small shapes
        monkeypatch.setattr(onnx_conv, "BATCH_LAST_MAX_OUTPUT", 0)
    if windows == "sliced":
        monkeypatch.setattr(onnx_conv, "GATHER_MAX_ROWS", 0)
    gen = rng()
    x, w = gen.standard_normal(xs).astype(np.float32), gen.standard_normal(ws).astype(np.float32)
    b = gen.standard_normal(ws[0]).astype(np.float32)
    args = (x, w, b) if bias else (x, w)
    g = tp.trace(lambda *a: tp.conv2d(*a, stride=stride, padding=padding, dilation=dilation), *args)
    f = _ort(g)
    assert "Conv" not in _op_types(f) and "MatMul" in _op_types(f)
    gathers = [nd for nd in f.model.graph.node if nd.op_type == "Gather"]
    assert [a.i for nd in gathers for a in nd.attribute if a.name == "axis"] == \
        {"gathered": [1], "batch_last": [0], "sliced": []}[windows]
    expected = ref_conv2d(x, w, stride, padding, dilation) + (b[None, :, None, None] if bias else 0)
    assert_close(f(*args), expected, dtype="float32")
    assert_close(f(*args), tp.run(g, *args), dtype="float32")
    assert_close(tp.run(tp.from_onnx(f.model), *args), f(*args), dtype="float32")  # it imports back


def test_conv2d_with_a_large_output_stays_conv():
    g = tp.trace(lambda x, w: tp.conv2d(x, w, padding=1), tp.Spec((2, 3, 8, 8)), tp.Spec((4, 3, 3, 3)))
    assert "Conv" in _op_types(_ort(g))


# (g shape, w shape, stride, padding, output_padding, dilation): outputs of no more positions
# than the kernel has taps
SMALL_OUTPUT_T = [
    ((2, 4, 2, 2), (4, 3, 3, 3), (1, 1), (1, 1), (0, 0), (1, 1)),     # a ResNet's last stage: 2x2 -> 2x2
    ((3, 4, 2, 2), (4, 2, 3, 3), (2, 2), (2, 2), (1, 1), (1, 1)),     # stride 2, output_padding
    ((2, 3, 1, 2), (3, 2, 3, 3), (2, 1), (1, 2), (1, 0), (1, 2)),     # uneven, dilated
    ((1, 2, 2, 2), (2, 3, 3, 3), (1, 1), (2, 2), (1, 1), (2, 2)),     # output_padding >= stride (dilation 2)
    ((1, 2, 1, 1), (2, 3, 3, 3), (1, 1), (0, 0), (0, 0), (1, 1)),     # one input position
]


@pytest.mark.parametrize("gs,ws,stride,padding,outpad,dilation", SMALL_OUTPUT_T)
def test_conv_transpose2d_to_a_small_output_is_one_matmul(gs, ws, stride, padding, outpad, dilation, monkeypatch):
    gen = rng()
    x, w = gen.standard_normal(gs).astype(np.float32), gen.standard_normal(ws).astype(np.float32)
    g = tp.trace(lambda x, w: tp.conv_transpose2d(x, w, stride=stride, padding=padding, output_padding=outpad,
                                                  dilation=dilation), x, w)
    f = _ort(g)
    assert "MatMul" in _op_types(f) and "ConvTranspose" not in _op_types(f)
    assert_close(f(x, w), ref_conv_transpose2d(x, w, stride, padding, outpad, dilation), dtype="float32")
    assert_close(f(x, w), tp.run(g, x, w), dtype="float32")
    assert_close(tp.run(tp.from_onnx(f.model), x, w), f(x, w), dtype="float32")  # it imports back
    monkeypatch.setattr(onnx_conv, "DENSE_MAX_ELEMENTS", 0)  # the ConvTranspose it replaces agrees
    f0 = _ort(g)
    assert "ConvTranspose" in _op_types(f0)
    assert_close(f0(x, w), f(x, w), dtype="float32")


def test_reference_conv_transpose2d_is_the_adjoint_of_the_reference_conv2d():
    """<conv2d(x, w), g> == <x, conv_transpose2d(g, w)>: the two references check each other."""
    gen = rng()
    x, w = gen.standard_normal((2, 3, 7, 6)), gen.standard_normal((4, 3, 3, 2))
    y = ref_conv2d(x, w, (2, 1), (1, 0), (1, 2))
    g = gen.standard_normal(y.shape)
    gx = ref_conv_transpose2d(g, w, (2, 1), (1, 0), (0, 0), (1, 2))
    assert_close(np.sum(y * g), np.sum(x * gx[:, :, :7, :6]))


# (x shape, w shape, stride, padding, dilation): convs whose weight gradient ran past the
# kernel before (stride > 1), and some that did not
GRAD = [
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 3, 8, 8), (4, 3, 1, 1), (2, 2), (0, 0), (1, 1)),           # 1x1 stride 2 (a ResNet downsample)
    ((2, 2, 9, 10), (3, 2, 3, 2), (3, 2), (2, 0), (1, 2)),
    ((2, 2, 7, 7), (3, 2, 3, 3), (2, 3), (0, 1), (2, 1)),
    ((2, 3, 6, 6), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation", GRAD)
def test_conv2d_gradients_in_both_backends(xs, ws, stride, padding, dilation):
    gen = rng()
    x, w = gen.standard_normal(xs).astype(np.float32), gen.standard_normal(ws).astype(np.float32)
    y = ref_conv2d(x, w, stride, padding, dilation)
    wt = gen.standard_normal(y.shape).astype(np.float32)
    loss = tp.trace(lambda x, w, wt: tp.sum(tp.conv2d(x, w, stride=stride, padding=padding, dilation=dilation) * wt),
                    x, w, wt)
    vg = tp.value_and_grad(loss, wrt=(0, 1))
    # d/dw: sum over batch and output positions of wt times the input tap; d/dx: the adjoint
    gw = np.zeros(ws)
    for o in range(ws[0]):
        for c in range(ws[1]):
            for u in range(ws[2]):
                for v in range(ws[3]):
                    e = np.zeros(ws)
                    e[o, c, u, v] = 1
                    gw[o, c, u, v] = np.sum(ref_conv2d(x, e, stride, padding, dilation) * wt)
    outpad = [xs[2 + i] - (stride[i] * (y.shape[2 + i] - 1) + dilation[i] * (ws[2 + i] - 1) + 1 - 2 * padding[i])
              for i in range(2)]  # the input rows past the last window get no gradient
    gx = ref_conv_transpose2d(wt, w, stride, padding, outpad, dilation)
    for run in (tp.compile(vg), _ort(vg)):
        value, (dx, dw) = run(x, w, wt)
        assert_close(value, np.sum(y * wt), dtype="float32", ulps=ONNXRUNTIME, why="a sum of products")
        assert_close(dw, gw, dtype="float32", ulps=ONNXRUNTIME, why="another summation order")
        assert_close(dx, gx, dtype="float32", ulps=ONNXRUNTIME, why="another summation order")

