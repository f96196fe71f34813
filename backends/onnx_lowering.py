"""EXPORT: how each IR op lowers to ai.onnx operators (and tapeir local functions).

A rule is `rule(low, node, ins, outs)`: `low` is the export state (backends/onnx_export.py
`Lowering`), `ins` the ONNX names of the node's operands, `outs` the names its results
must get. Most ops are their ONNX twin, declared with the op in the registry (`onnx=`):
their row is derived, the twin on the same inputs with the same attributes. The
hand-written rules below override it, in order:

  1. relu of integers is Max(x, 0) (onnxruntime has no integer Relu kernel), and so is
     relu of float64 (onnxruntime's Relu -> Clip fusion fails on float64); where of
     bool tensors is Or(And(c, a), And(Not(c), b)) (nor a bool Where kernel); not_equal
     is Not(Equal); clip takes its bounds as inputs of x's dtype (an integer x
     clipped to [0.5, 2.5] is clipped to [1, 2], as the numpy backend does; a float x
     without a bound gets -inf/+inf, since a missing bound is the lowest/highest finite
     value, which clamps infinities).
  2. Reductions and squeeze/unsqueeze over no axes are Identity (ONNX reads empty axes as
     "all axes"), and so is the transpose of a 0-d tensor (onnx cannot write an empty
     `perm` attribute: it cannot tell its type). Reductions take axes as an input or an
     attribute as the opset wants (ir.registry.onnx_axes_are_input).
  3. softplus and logsumexp call local functions (backends/onnx_functions.py); gelu is
     Gelu from opset 20 and a local function below.
  4. layer_norm is LayerNormalization from opset 17, where a missing weight is ones of the
     normalized shape made at run time (ConstantOfShape of the Shape's tail) and a float64
     input sets stash_type=DOUBLE (the default, float32, would ask importers to compute
     its statistics in float32, as tp.from_onnx does); below 17 it
     is the numpy backend's formula (ReduceMean, Sub, Mul, Sqrt, Div, Mul, Add), in float32
     for float16 (as LayerNormalization's default stash_type=1) between two Casts.
  5. slice: a negative-step stop of -1 ("before index 0") is INT64_MIN, which ONNX clamps
     to -1 after adding the dim size.
  6. reshape and broadcast_to build their shape tensor at run time when it holds a symbolic
     dim; a reshape to a shape with a 0, or with a symbolic dim (0 when B is 0), sets
     allowzero (ONNX reads 0 as "copy the dim") and spells out its -1.
  7. conv2d and conv_transpose2d (backends/onnx_conv.py): Conv / ConvTranspose, or one
     MatMul on the backward pass's shapes where onnxruntime's kernels are slow; an
     output_padding of at least the stride (allowed when dilation is larger) becomes a
     smaller end padding, plus zero rows when the padding runs out.
  8. matmul of a matrix (or batch) and a vector is MatMul with the vector as a [K, 1]
     matrix, then Squeeze: onnxruntime 1.32 computes Transpose -> MatMul with a 1-D
     right operand wrongly after its graph optimizations (x.T @ v).
  9. cross_entropy and nll_loss are SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss,
     whose reductions and ignore_index mean what the IR's do (mean over non-ignored
     labels); a 1-D input [C] with a scalar label is lifted to [1, C] and back. A
     cross_entropy whose input may be empty at run time (a symbolic or zero dim) is
     LogSoftmax then NegativeLogLikelihoodLoss: onnxruntime's SoftmaxCrossEntropyLoss
     fails on an empty input (its Reshape to [N, C, -1]); NLL gives what the numpy backend
     gives (mean nan, sum 0, none empty), and the pair is the IR's own definition.
 10. an int32 sum is Cast to int64, ReduceSum, Cast back: onnxruntime's ReduceSum saturates
     where numpy's wraps (an int64 sum past 2**63 still saturates there: a listed difference).
 11. iota, slice_to and pad_to read their run-time size with Shape: Range(0, n, 1),
     Slice to Gather(Shape(ref)), pad_to calls a local function (Pad by Shape(ref) - Shape(x) on its axes).
 12. fused nodes call a local function holding their body (backends/onnx_fused.py), or,
     with to_onnx(fused="inline"), write the body's nodes, each through its own rule.
 13. a float32 sum over leading axes (a bias gradient; the rest static) is a MatMul of
     ones [1, M] and x as [M, rest]: 5x faster than onnxruntime's ReduceSum there.
"""
from __future__ import annotations

import hashlib

import numpy as np
from onnx import helper, numpy_helper

from ..ir.dtypes import INTS, to_numpy
from ..ir.registry import OPS, onnx_axes_are_input
from ..ir.types import dim_product
from .onnx_conv import conv, conv_transpose, window

INT64_MIN = -(2 ** 63)


def elem_type(dtype: str) -> int:
    """The ONNX TensorProto element type of an IR dtype."""
    return helper.np_dtype_to_tensor_dtype(to_numpy(dtype))


def _twin(op_type):
    """The derived row: the op's twin on the same inputs, attributes under the same names."""
    def rule(low, n, ins, outs):
        low.op(op_type, *ins, out=outs[0], **n.attrs)
    return rule


def _transpose(low, n, ins, outs):
    if not n.attrs["perm"]:  # 0-d: helper.make_attribute cannot type an empty list
        low.op("Identity", ins[0], out=outs[0])
    else:
        low.op("Transpose", ins[0], out=outs[0], perm=list(n.attrs["perm"]))


def _relu(low, n, ins, outs):
    dtype = n.inputs[0].type.dtype
    # onnxruntime has no integer Relu kernel; and its Relu -> Clip fusion fails to load a
    # float64 model ("Unexpected data type for Clip 'min' input of 11"): Max(x, 0) for both
    if dtype in INTS or dtype == "f64":
        low.op("Max", ins[0], low.scalar(0, dtype), out=outs[0])
    else:
        low.op("Relu", ins[0], out=outs[0])


def _matmul(low, n, ins, outs):
    if n.inputs[1].type.rank == 1 and n.inputs[0].type.rank >= 2:
        # a matrix times a vector is MatMul(A, Unsqueeze(v)) then Squeeze: onnxruntime (1.32)
        # fuses Transpose -> MatMul(., v) with a 1-D v into a FusedMatMul that computes the
        # wrong product at graph_optimization_level "extended"/"all" (x.T @ v was wrong)
        y = low.op("MatMul", ins[0], low.op("Unsqueeze", ins[1], low.ints([1])))
        low.op("Squeeze", y, low.ints([-1]), out=outs[0])
    else:
        low.op("MatMul", *ins, out=outs[0])


def _where(low, n, ins, outs):
    if n.outputs[0].type.dtype == "bool":  # onnxruntime has no bool Where kernel: (c and a) or (not c and b)
        c, a, b = ins
        low.op("Or", low.op("And", c, a), low.op("And", low.op("Not", c), b), out=outs[0])
    else:
        low.op("Where", *ins, out=outs[0])


def _not_equal(low, n, ins, outs):
    low.op("Not", low.op("Equal", *ins), out=outs[0])


def _clip(low, n, ins, outs):
    lo, hi = n.attrs["min"], n.attrs["max"]
    dtype = n.inputs[0].type.dtype
    if lo is None and hi is None:
        low.op("Identity", ins[0], out=outs[0])
        return
    if dtype in INTS:
        lo = None if lo is None else int(np.ceil(lo))
        hi = None if hi is None else int(np.floor(hi))
    else:  # a missing float bound is the dtype's lowest/highest finite value: -inf became -3.4e38
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
    bounds = ["" if lo is None else low.scalar(lo, dtype)]
    if hi is not None:
        bounds.append(low.scalar(hi, dtype))
    low.op("Clip", ins[0], *bounds, out=outs[0])


def _cast(low, n, ins, outs):
    low.op("Cast", ins[0], out=outs[0], to=elem_type(n.attrs["to"]))


def _gelu(low, n, ins, outs):
    approx = n.attrs["approximate"]
    if low.opset >= 20:
        low.op("Gelu", ins[0], out=outs[0], approximate=approx)
    else:
        low.call("gelu" if approx == "none" else "gelu_tanh", ins[0], out=outs[0])


def reduce(low, op_type, x, out, axes, keepdims):
    """`op_type` over `axes` (non-empty) with axes as input or attribute, as the opset wants."""
    keep = int(bool(keepdims))
    if onnx_axes_are_input(op_type, low.opset):
        return low.op(op_type, x, low.ints(axes), out=out, keepdims=keep)
    return low.op(op_type, x, out=out, axes=list(axes), keepdims=keep)


def _reduce(low, n, ins, outs):
    if not n.attrs["axes"]:
        low.op("Identity", ins[0], out=outs[0])
    elif n.op == "sum" and n.inputs[0].type.dtype == "i32":
        # onnxruntime's ReduceSum saturates on overflow, numpy wraps: sum in int64 and cast
        # back (Cast wraps), which is numpy's int32 sum modulo 2**32 (rule 10)
        wide = low.op("Cast", ins[0], to=elem_type("i64"))
        total = reduce(low, "ReduceSum", wide, None, n.attrs["axes"], n.attrs["keepdims"])
        low.op("Cast", total, out=outs[0], to=elem_type("i32"))
    elif n.op == "sum" and _leading_sum(n):
        _sum_as_matmul(low, n, ins, outs)
    else:
        reduce(low, OPS[n.op].onnx, ins[0], outs[0], n.attrs["axes"], n.attrs["keepdims"])


def _leading_sum(n) -> bool:
    """A float32 sum over leading axes (a bias gradient: [B, T, D] -> [D]) of static rest."""
    x, axes = n.inputs[0].type, sorted(n.attrs["axes"])
    k = len(axes)
    return (x.dtype == "f32" and axes == list(range(k)) and k < x.rank
            and all(isinstance(d, int) and d > 0 for d in x.shape[k:]) and dim_product(x.shape[:k]) != 1)


def _sum_as_matmul(low, n, ins, outs):
    """Rule 13: ones[1, M] @ x as [M, rest]. onnxruntime's ReduceSum over leading axes walks
    the tensor with a stride (67 us for [8, 32, 256]); the GEMV reads it in order (13 us).
    M may be symbolic (B*T): the ones are made at run time either way."""
    x, k = n.inputs[0].type, len(n.attrs["axes"])
    rest = int(np.prod(x.shape[k:]))
    one = numpy_helper.from_array(np.ones((1,), np.float32))
    ones = low.op("ConstantOfShape", low.shape_tensor([1, dim_product(x.shape[:k])]), value=one)
    y = low.op("MatMul", ones, low.op("Reshape", ins[0], low.ints([-1, rest])))
    low.op("Reshape", y, low.ints(list(n.outputs[0].type.shape)), out=outs[0])


def _logsumexp(low, n, ins, outs):
    if not n.attrs["axes"]:  # over no axes: m + log(exp(x - m)) is x
        low.op("Identity", ins[0], out=outs[0])
    else:
        low.call("logsumexp", ins[0], out=outs[0], axes=list(n.attrs["axes"]),
                 keepdims=int(n.attrs["keepdims"]))


def _layer_norm(low, n, ins, outs):
    x, axis = n.inputs[0], n.attrs["axis"]
    if low.opset < 17:
        _layer_norm_decomposed(low, n, ins, outs)
        return
    scale = ins[1] if len(ins) > 1 else None
    if scale is None:  # ONNX wants a Scale: ones of the normalized shape
        one = numpy_helper.from_array(np.ones((1,), to_numpy(x.type.dtype)))
        scale = low.op("ConstantOfShape", low.op("Shape", ins[0], start=axis), value=one)
    # stash_type (the statistics' precision) defaults to float32; a float64 graph computes them in float64
    stash = {"stash_type": helper.TensorProto.DOUBLE} if x.type.dtype == "f64" else {}
    low.op("LayerNormalization", ins[0], scale, *ins[2:], out=outs[0], axis=axis, epsilon=n.attrs["epsilon"],
           **stash)


def _layer_norm_decomposed(low, n, ins, outs):
    """Below opset 17 (no LayerNormalization): the numpy backend's formula, op for op, in
    float32 for float16 (as LayerNormalization's stash_type=1; d*d overflows f16 at 256)."""
    x = n.inputs[0]
    dtype = "f32" if x.type.dtype == "f16" else x.type.dtype
    if dtype != x.type.dtype:
        ins = [low.op("Cast", name, to=elem_type(dtype)) for name in ins]
    axes = list(range(n.attrs["axis"], x.type.rank))
    d = low.op("Sub", ins[0], reduce(low, "ReduceMean", ins[0], None, axes, True))
    var = reduce(low, "ReduceMean", low.op("Mul", d, d), None, axes, True)
    std = low.op("Sqrt", low.op("Add", var, low.scalar(n.attrs["epsilon"], dtype)))
    last = None if dtype != x.type.dtype else outs[0]  # the last op writes the output, unless a Cast follows
    y = low.op("Div", d, std, out=None if len(ins) > 1 else last)
    for k, (op_type, operand) in enumerate(zip(("Mul", "Add"), ins[1:]), 2):
        y = low.op(op_type, y, operand, out=last if k == len(ins) else None)
    if last is None:
        low.op("Cast", y, out=outs[0], to=elem_type(x.type.dtype))


def _max_pool(low, n, ins, outs):
    low.op("MaxPool", ins[0], out=outs[0], **window(n.attrs, n.attrs["kernel"]))


def _avg_pool(low, n, ins, outs):
    a = n.attrs
    if a["dilation"] != (1, 1):
        low.require(19, "avg_pool2d with dilation (AveragePool dilations)")
    low.op("AveragePool", ins[0], out=outs[0], count_include_pad=int(a["count_include_pad"]),
           **window(a, a["kernel"], dilations=a["dilation"] != (1, 1)))


def _reshape(low, n, ins, outs):
    shape = list(n.attrs["shape"])
    extra = {}
    # ONNX reads 0 as "copy this dim" unless allowzero, which forbids -1: a static 0, or a
    # symbolic dim (B may be 0 at run time), gives the result's dims with allowzero
    if 0 in shape or any(isinstance(d, str) for d in shape):
        shape = list(n.outputs[0].type.shape)
        extra["allowzero"] = 1
    low.op("Reshape", ins[0], low.shape_tensor(shape), out=outs[0], **extra)


def _broadcast_to(low, n, ins, outs):
    low.op("Expand", ins[0], low.shape_tensor(n.attrs["shape"]), out=outs[0])


def _slice(low, n, ins, outs):
    a = n.attrs
    if not a["axes"]:
        low.op("Identity", ins[0], out=outs[0])
        return
    # symbolic bounds (a slice of a symbolic axis) are computed from the inputs' shapes
    stops = [INT64_MIN if (isinstance(stop, int) and stop < 0 and step < 0) else stop
             for stop, step in zip(a["stops"], a["steps"])]
    low.op("Slice", ins[0], low.shape_tensor(a["starts"]), low.shape_tensor(stops), low.ints(a["axes"]),
           low.ints(a["steps"]), out=outs[0])


def _pad(low, n, ins, outs):
    pads = n.attrs["pads"]
    if not any(pads):
        low.op("Identity", ins[0], out=outs[0])
        return
    value = low.scalar(n.attrs["value"], n.inputs[0].type.dtype)
    low.op("Pad", ins[0], low.shape_tensor(pads), value, out=outs[0], mode="constant")


def _iota(low, n, ins, outs):
    axis = n.attrs["axis"]
    size = low.op("Squeeze", low.op("Shape", ins[0], start=axis, end=axis + 1), low.ints([0]))
    low.op("Range", low.scalar(0, "i64"), size, low.scalar(1, "i64"), out=outs[0])


def _slice_to(low, n, ins, outs):
    a = n.attrs
    ends = low.op("Gather", low.op("Shape", ins[1]), low.ints(a["ref_axes"]))
    low.op("Slice", ins[0], low.ints([0] * len(a["axes"])), ends, low.ints(a["axes"]), out=outs[0])


def _pad_to(low, n, ins, outs):
    axes = n.attrs["axes"]
    keep = [1 if i in axes else 0 for i in range(n.inputs[0].type.rank)]
    low.call("pad_to", ins[0], ins[1], out=outs[0], axes=list(axes), keep=keep)


def _squeeze_axes(low, n, ins, outs):  # squeeze, unsqueeze: axes as an input
    if not n.attrs["axes"]:
        low.op("Identity", ins[0], out=outs[0])
    else:
        low.op(OPS[n.op].onnx, ins[0], low.ints(n.attrs["axes"]), out=outs[0])


def _class_loss(low, n, ins, outs):
    a, op_type = n.attrs, OPS[n.op].onnx
    if n.inputs[0].type.rank > 1:
        x = ins[0]
        if n.op == "cross_entropy" and not all(isinstance(d, int) and d > 0 for d in n.inputs[0].type.shape):
            x, op_type = low.op("LogSoftmax", x, axis=1), OPS["nll_loss"].onnx  # rule 9: may be empty
        low.op(op_type, x, ins[1], out=outs[0], **a)
        return
    zero = low.ints([0])  # [C] and a scalar label: a batch of one
    x, y = low.op("Unsqueeze", ins[0], zero), low.op("Unsqueeze", ins[1], zero)
    if a["reduction"] != "none":
        low.op(op_type, x, y, out=outs[0], **a)
    else:
        low.op("Squeeze", low.op(op_type, x, y, **a), zero, out=outs[0])


def _fused_inline(low, n, ins, outs):
    """A fused node's body, inlined: each body node through its own rule."""
    body = n.attrs["body"]
    names = {id(a): x for a, x in zip(body.inputs, ins)}
    # a large constant is named by a hash of its bytes (shared by equal bodies), not by its values
    names.update((id(c), low.const(c.data, None if c.data.size <= 64 else
                                   f"%const.{hashlib.sha1(c.data.tobytes()).hexdigest()[:16]}.{c.type}"))
                 for c in body.constants)
    results: dict = {}
    for v, name in zip(body.outputs, outs):
        results.setdefault(id(v), name)
    stem = low.tmp()
    for j, m in enumerate(body.nodes):
        low.begin(m, f"{stem}.{j}")
        res = [results.get(id(o)) or f"{stem}.{j}" for o in m.outputs]
        EXPORT[m.op](low, m, [names[id(v)] for v in m.inputs], res)
        names.update((id(o), r) for o, r in zip(m.outputs, res))
    low.begin(n, stem)
    for v, name in zip(body.outputs, outs):  # a value the body returns twice: copied
        if names[id(v)] != name:
            low.op("Identity", names[id(v)], out=name)


def _fused(low, n, ins, outs):
    if low.fused == "inline":
        _fused_inline(low, n, ins, outs)
    else:  # one call of a local function holding the body (backends/onnx_fused.py)
        low.fused_call(n, ins, outs)


EXPORT = {
    **{op: _twin(d.onnx) for op, d in OPS.items() if d.onnx},  # derived rows; the rest override them
    "relu": _relu,
    "softplus": lambda low, n, ins, outs: low.call("softplus", ins[0], out=outs[0]),
    "gelu": _gelu, "clip": _clip, "cast": _cast, "not_equal": _not_equal, "where": _where,
    "sum": _reduce, "mean": _reduce, "max": _reduce, "min": _reduce, "logsumexp": _logsumexp,
    "layer_norm": _layer_norm, "matmul": _matmul, "conv2d": conv, "conv_transpose2d": conv_transpose,
    "max_pool2d": _max_pool, "avg_pool2d": _avg_pool,
    "reshape": _reshape, "transpose": _transpose, "broadcast_to": _broadcast_to, "slice": _slice, "pad": _pad,
    "squeeze": _squeeze_axes, "unsqueeze": _squeeze_axes,
    "iota": _iota, "slice_to": _slice_to, "pad_to": _pad_to,
    "cross_entropy": _class_loss, "nll_loss": _class_loss,
    "fused": _fused,
}

# the op families beyond ir/ops.py with rules beyond their twins (ir/ops_nn.py's need none)
from .onnx_lowering_index import EXPORT_INDEX  # noqa: E402  (cumsum, trilu, scatter_add)
from .onnx_lowering_random import EXPORT_RANDOM  # noqa: E402  (random_uniform)

EXPORT.update(**EXPORT_INDEX, **EXPORT_RANDOM)
