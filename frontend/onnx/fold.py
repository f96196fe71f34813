"""Rule 1 of the importer: a node whose inputs are all known at import time runs in
onnx's reference evaluator instead of becoming IR, within a bound.

Bounded: before it runs, the node's output shapes are inferred (onnx shape inference on
the one node, its small inputs given as data, so ConstantOfShape, Expand, Tile, Range,
Pad, ... know their output sizes). Outputs over max_constant_bytes (a 134-byte
ConstantOfShape([100000000]) would be 400 MB), or of a size inference cannot tell, are
not folded: the node's IMPORT rule records IR on the constants instead ("larger stays a
node"), and a rule that cannot (Range) says so.

Not folded either, where onnx's evaluator is wrong, missing or imprecise (NO_FOLD).
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper, shape_inference

from .node import OnnxNode, limits

_DATA_ELEMENTS = 4096  # inputs up to this size go to shape inference as data (shapes, axes, pads, scalars)


# nodes onnx.reference computes wrongly (or not at all): their rules record IR on the
# constants instead. ConvTranspose with group > 1 reshapes W as if it had C/group input
# channels per group in its first axis and fails ("cannot reshape array of size 4 into
# shape (1,2,4)"); LayerNormalization implements only stash_type=1 (tapeir's float64
# export writes 11); in float64, Erf and Gelu are accurate to ~3e-8 only, and Elu and
# LeakyRelu use their float32 alpha (0.3 as 0.30000001), where tapeir's kernels are exact.
NO_FOLD = {"ConvTranspose": lambda n, ins: n.attr("group", 1) > 1,
           "LayerNormalization": lambda n, ins: n.attr("stash_type", 1) != 1,
           **{op: (lambda n, ins: ins[0].dtype == np.float64) for op in ("Erf", "Gelu", "Elu", "LeakyRelu")}}


def _one_node_model(n: OnnxNode, ins, data: bool):
    """Node `n` alone in a model whose inputs are i0, i1, ... (`data`: small ones as initializers)."""
    p = n.proto
    in_names = [f"i{i}" if v is not None else "" for i, v in enumerate(ins)]
    out_names = [f"o{i}" if o else "" for i, o in enumerate(p.output)]
    node = helper.make_node(p.op_type, in_names, out_names, domain=p.domain)
    node.attribute.extend(p.attribute)
    vis, inits = [], []
    for name, v in zip(in_names, ins):
        if v is not None:
            vis.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                     v.shape if data else None))
            if data and v.size <= _DATA_ELEMENTS:
                inits.append(numpy_helper.from_array(v, name))
    outs = [helper.make_empty_tensor_value_info(k) for k in out_names if k]
    model = helper.make_model(helper.make_graph([node], "fold", vis, outs, inits),
                              opset_imports=[helper.make_opsetid("", n.opset)])
    return model, out_names


def _range_bytes(ins):
    start, limit, delta = (np.asarray(v).reshape(-1)[0].item() if v is not None and v.size == 1 else None
                           for v in (list(ins) + [None] * 3)[:3])
    if None in (start, limit, delta) or delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
        return None  # the evaluator's own error
    return max(math.ceil((limit - start) / delta), 0) * ins[0].dtype.itemsize


# ops whose one output has no more elements than their first input, or than their inputs
# broadcast together: sized without shape inference (in their widest input dtype; Cast at 8 bytes)
_NO_LARGER = set("""Abs Acos Acosh Asin Asinh Atan Atanh Cast Ceil Celu Cos Cosh Elu Erf Exp Floor Gelu HardSigmoid
HardSwish Identity IsInf IsNaN LeakyRelu Log LogSoftmax Mish Neg Not Reciprocal Relu Reshape Round Selu Shrink Sigmoid
Sign Sin Sinh Softmax Softplus Softsign Sqrt Squeeze Tan Tanh ThresholdedRelu Transpose Unsqueeze Flatten""".split())
_BROADCAST = set("""Add And BitShift Div Equal Greater GreaterOrEqual Less LessOrEqual Max Mean Min Mod Mul Or Pow PRelu
Sub Sum Where Xor""".split())


def _cheap_bytes(n: OnnxNode, ins) -> int | None:
    given = [v for v in ins if v is not None]
    if len(n.proto.output) != 1 or not given:
        return None
    width = 8 if n.op == "Cast" else max(v.dtype.itemsize for v in given)
    if n.op in _NO_LARGER:
        return int(given[0].size) * width
    if n.op in _BROADCAST:
        try:
            return math.prod(np.broadcast_shapes(*(v.shape for v in given))) * width
        except ValueError:  # shapes that do not broadcast: the evaluator's error
            return None
    return None


def output_bytes(n: OnnxNode, ins) -> int | None:
    """The bytes node `n` would fold to, or None when shape inference cannot tell."""
    if n.op == "Range":
        return _range_bytes(ins)
    cheap = _cheap_bytes(n, ins)
    if cheap is not None:
        return cheap
    model, _ = _one_node_model(n, ins, data=True)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference refuses the node: size unknown
        return None
    total = 0
    for vi in model.graph.output:
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
            return None
        try:
            size = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        except Exception:  # noqa: BLE001 - an element type numpy lacks: count 8 bytes
            size = 8
        total += math.prod(d.dim_value for d in tt.shape.dim) * size
    return total


def can_fold(n: OnnxNode, ins) -> bool:
    if NO_FOLD.get(n.op, lambda n, ins: False)(n, ins):
        return False
    size = output_bytes(n, ins)
    return size is not None and size <= limits().max_constant_bytes


def fold(n: OnnxNode, ins):
    """Run one node on known inputs in onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    model, out_names = _one_node_model(n, ins, data=False)
    feeds = {f"i{i}": v for i, v in enumerate(ins) if v is not None}
    with np.errstate(all="ignore"):
        res = iter(ReferenceEvaluator(model).run(None, feeds))
    return tuple(np.asarray(next(res)) if k else None for k in out_names)
