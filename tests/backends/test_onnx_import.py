"""tp.from_onnx: the forms exporters emit, checked against onnxruntime (an implementation
that shares nothing with ours), plus symbolic dims, params="inputs", source lines and
the errors for models or attributes tapeir cannot express."""
from __future__ import annotations

import re

import numpy as np
import pytest

import onnx  # noqa: E402  (a runtime dependency: never skipped)
import onnxruntime as ort  # noqa: E402  (a runtime dependency: never skipped)

from onnx import TensorProto as T, helper, numpy_helper  # noqa: E402

import tapeir as tp  # noqa: E402
from support import assert_close  # noqa: E402
from tapeir.frontend.onnx import IMPORT  # noqa: E402

F32, I64 = np.float32, np.int64
RNG = np.random.default_rng(0)


def rand(*shape, dtype=F32):
    return RNG.standard_normal(shape).astype(dtype)


def model(nodes, inputs, outputs, inits=None, opset=18, name="m"):
    """inputs: {name: array or (elem_type, shape)}; outputs: names; inits: {name: array}."""
    vis = []
    for k, v in inputs.items():
        if isinstance(v, np.ndarray):
            vis.append(helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
        else:
            vis.append(helper.make_tensor_value_info(k, *v))
    g = helper.make_graph(nodes, name, vis, [helper.make_empty_tensor_value_info(o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(a), k) for k, a in (inits or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def run_ort(m, *args):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), args)})


def check(m, *args, params="constants", ulps=None, why=None):
    """Import m, verify and round-trip its IR, and compare its outputs with onnxruntime's."""
    g = tp.from_onnx(m, params=params)
    tp.verify(g)
    assert tp.parse(str(g)) == g
    extra = [numpy_helper.to_array(t) for t in m.graph.initializer if t.data_type in (T.FLOAT, T.DOUBLE)] \
        if params == "inputs" else []
    got = tp.run(g, *args, *extra)
    got = list(got) if isinstance(got, tuple) else [got]
    want = run_ort(m, *args)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
        assert_close(a, b, ulps=ulps, why=why)
    return g


def node(op, ins, outs=("y",), **attrs):
    return helper.make_node(op, list(ins), list(outs), name=f"{op.lower()}_node", **attrs)


REQUIRED = """Add Sub Mul Div Pow Neg Abs Exp Log Sqrt Reciprocal Tanh Sigmoid Softplus Relu LeakyRelu Elu
Gelu Erf Sin Cos Max Min Where Clip Cast Equal Less LessOrEqual Greater GreaterOrEqual Not ReduceSum ReduceMean
ReduceMax ReduceMin ReduceLogSumExp Softmax LogSoftmax LayerNormalization MatMul Conv ConvTranspose MaxPool
AveragePool Reshape Transpose Expand Concat Slice Squeeze Unsqueeze Pad SoftmaxCrossEntropyLoss
NegativeLogLikelihoodLoss Gemm Flatten Identity Constant Dropout BatchNormalization Shape Gather""".split()


def test_import_table_covers_the_op_types_our_ir_maps_to():
    assert not set(REQUIRED) - set(IMPORT), sorted(set(REQUIRED) - set(IMPORT))
    twins = {d.onnx for d in tp.OPS.values() if d.onnx}
    assert twins <= set(IMPORT), f"IR ops whose ONNX twin does not import: {sorted(twins - set(IMPORT))}"


# ---- forms exporters emit, against onnxruntime ----------------------------------------------

@pytest.mark.parametrize("attrs,c", [
    ({}, True), ({"transA": 1}, True), ({"transB": 1, "alpha": 0.5, "beta": 2.0}, True),
    ({"transA": 1, "transB": 1}, False), ({"beta": 0.0}, True)])
def test_gemm(attrs, c):
    a = rand(4, 3) if not attrs.get("transA") else rand(3, 4)
    b = rand(3, 5) if not attrs.get("transB") else rand(5, 3)
    ins = ["a", "b"] + (["c"] * c)
    check(model([node("Gemm", ins, **attrs)], {"a": a, "b": b}, ["y"], {"c": rand(5)} if c else None), a, b)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, 3])
def test_flatten(axis):
    x = rand(2, 3, 4)
    check(model([node("Flatten", ["x"], axis=axis)], {"x": x}, ["y"]), x)


def test_identity_and_inference_dropout_with_mask():
    x = rand(3, 4)
    m = model([node("Identity", ["x"], ["i"]), node("Dropout", ["i", "r"], ["y", "mask"])],
              {"x": x}, ["y", "mask"], {"r": np.array(0.3, F32)})
    g = check(m, x)
    assert not g.nodes  # both are the identity


@pytest.mark.parametrize("key,value", [
    ("value_float", 2.5), ("value_floats", [1.0, 2.0, 3.0]), ("value_int", 3), ("value_ints", [1, 2, 3]),
    ("value", numpy_helper.from_array(np.arange(3, dtype=F32))),
    ("sparse_value", helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0, 6.0], F32), "v"),
                                               numpy_helper.from_array(np.array([0, 2], I64), "i"), [3]))])
def test_constant_attribute_forms(key, value):
    x = np.ones(3, F32) if "float" in key or key in ("value", "sparse_value") else np.ones(3, I64)
    m = model([helper.make_node("Constant", [], ["c"], **{key: value}), node("Add", ["x", "c"])], {"x": x}, ["y"])
    check(m, x)


@pytest.mark.parametrize("shape,allowzero", [([0, -1], 0), ([2, 0, -1], 0), ([-1], 0), ([3, 0, 2], 1)])
def test_reshape_with_constant_shape(shape, allowzero):
    x = rand(3, 0, 2) if allowzero else rand(2, 3, 4)
    m = model([node("Reshape", ["x", "s"], allowzero=allowzero)], {"x": x}, ["y"], {"s": np.array(shape, I64)}, opset=14)
    check(m, x)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_axes_as_attribute_or_input(opset):
    x = rand(3, 1, 4)
    if opset < 13:
        nodes = [node("Squeeze", ["x"], ["s"], axes=[1]), node("Unsqueeze", ["s"], ["y"], axes=[0, -1])]
        inits = None
    else:
        nodes = [node("Squeeze", ["x", "a1"], ["s"]), node("Unsqueeze", ["s", "a2"], ["y"])]
        inits = {"a1": np.array([1], I64), "a2": np.array([0, -1], I64)}
    check(model(nodes, {"x": x}, ["y"], inits, opset=opset), x)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceLogSumExp",
                                "ReduceL2", "ReduceSumSquare"])
@pytest.mark.parametrize("opset", [11, 18])
def test_reduce_axes_as_attribute_or_input(op, opset):
    x = rand(2, 3, 4)
    if opset < 13:
        m = model([node(op, ["x"], axes=[0, -1], keepdims=0)], {"x": x}, ["y"], opset=opset)
    else:
        m = model([node(op, ["x", "a"], keepdims=0)], {"x": x}, ["y"], {"a": np.array([0, -1], I64)}, opset=opset)
    check(m, x)


def test_reduce_without_axes_and_noop():
    x = rand(2, 3)
    check(model([node("ReduceSum", ["x"])], {"x": x}, ["y"], opset=18), x)
    check(model([node("ReduceSum", ["x", "a"], noop_with_empty_axes=1)], {"x": x}, ["y"],
                {"a": np.zeros(0, I64)}, opset=18), x)


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 0), (13, 1), (13, -1)])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_old_2d_coercion_and_new_axis(op, opset, axis):
    x = rand(2, 3, 4)
    check(model([node(op, ["x"], axis=axis)], {"x": x}, ["y"], opset=opset), x)


@pytest.mark.parametrize("params", ["constants", "inputs"])
def test_batch_norm_inference(params):
    x = rand(2, 3, 4, 4)
    inits = {"s": rand(3), "b": rand(3), "m": rand(3), "v": np.abs(rand(3)) + 0.5}
    m = model([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], {"x": x}, ["y"], inits, opset=15)
    g = check(m, x, params=params)
    assert {n.op for n in g.nodes} == ({"mul", "add"} if params == "constants" else {"add", "sqrt", "div", "reshape", "sub", "mul"})


CONV_CASES = [
    dict(pads=[1, 0, 2, 1]), dict(auto_pad="SAME_UPPER", strides=[2, 2]), dict(auto_pad="SAME_LOWER"),
    dict(auto_pad="VALID", dilations=[2, 1]), dict(group=2, pads=[1, 1, 1, 1], strides=[2, 1]),
]


@pytest.mark.parametrize("attrs", CONV_CASES)
def test_conv_padding_forms(attrs):
    x, w, b = rand(2, 4, 7, 6), rand(6, 4 // attrs.get("group", 1), 3, 2), rand(6)
    check(model([node("Conv", ["x", "w", "b"], **attrs)], {"x": x}, ["y"], {"w": w, "b": b}), x)


def test_conv_1d():
    x, w = rand(2, 3, 9), rand(4, 3, 3)
    check(model([node("Conv", ["x", "w"], pads=[2, 1], strides=[2])], {"x": x}, ["y"], {"w": w}), x)


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2]), dict(strides=[2, 2], pads=[1, 0, 0, 1]), dict(strides=[2, 2], output_padding=[1, 1]),
    dict(strides=[2, 2], output_shape=[9, 10]), dict(strides=[2, 1], auto_pad="SAME_UPPER"),
    dict(group=2, pads=[1, 1, 1, 1], dilations=[2, 1])])
def test_conv_transpose_forms(attrs):
    x, w, b = rand(1, 4, 4, 5), rand(4, 3, 3, 3), rand(3 * attrs.get("group", 1))
    if attrs.get("group"):
        w = rand(4, 3, 3, 3)
    check(model([node("ConvTranspose", ["x", "w", "b"], **attrs)], {"x": x}, ["y"], {"w": w, "b": b}), x)


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_transpose_of_constants_with_groups(group):
    # found by tests/test_fuzz_programs.py: the input gradient of a grouped conv2d of a
    # constant cotangent is a ConvTranspose of constants, which folded in onnx.reference;
    # that evaluator reshapes a grouped W wrongly and failed (or would give wrong values)
    c, w, x = rand(1, 4, 3, 3), rand(4, 6 // group if group != 4 else 1, 2, 2), rand(1, 1, 1, 1)
    m = model([node("ConvTranspose", ["c", "w"], ["t"], group=group), node("Add", ["t", "x"])], {"x": x}, ["y"],
              {"c": c, "w": w})
    check(m, x)


POOL_CASES = [
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(kernel_shape=[3, 2], pads=[1, 0, 2, 1]), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 2], dilations=[2, 2]), dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2]),
]


@pytest.mark.parametrize("attrs", POOL_CASES)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "AveragePool+include"])
def test_pool_forms(op, attrs):
    if op == "AveragePool+include":
        op, attrs = "AveragePool", {**attrs, "count_include_pad": 1}
    x = rand(2, 3, 7, 8)
    check(model([node(op, ["x"], **attrs)], {"x": x}, ["y"], opset=19), x)


def test_pool_1d_and_global_pools():
    x = rand(2, 3, 9)
    check(model([node("MaxPool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 1])], {"x": x}, ["y"]), x)
    x = rand(2, 3, 5, 4)
    check(model([node("GlobalAveragePool", ["x"], ["a"]), node("GlobalMaxPool", ["x"], ["b"]),
                 node("Add", ["a", "b"])], {"x": x}, ["y"]), x)


def test_clip_with_computed_bounds_and_attribute_bounds():
    x, lo = rand(3, 4), np.array(-0.5, F32)
    check(model([node("Clip", ["x", "lo"])], {"x": x, "lo": lo}, ["y"]), x, lo)
    check(model([node("Clip", ["x"], min=-0.2, max=0.3)], {"x": x}, ["y"], opset=6), x)
    check(model([node("Clip", ["x", "", "hi"])], {"x": x}, ["y"], {"hi": np.array(0.1, F32)}), x)


@pytest.mark.parametrize("axis", [0, 1])
def test_gather_with_computed_indices_is_an_embedding_lookup(axis):
    w, ids = rand(5, 4), np.array([[0, 4, -1], [2, 2, 1]], I64)
    m = model([node("Gather", ["w", "ids"], axis=axis)], {"ids": ids}, ["y"], {"w": w})
    check(m, ids if axis == 0 else ids % 4)


def test_embedding_gradient_is_a_scatter_add():
    w, ids = rand(5, 4), np.array([[0, 4, -1], [2, 2, 1]], I64)
    g = tp.from_onnx(model([node("Gather", ["w", "ids"])], {"ids": ids}, ["y"], {"w": w}), params="inputs")
    gl = tp.trace(lambda i, w: tp.call(g, i, w).sum(), ids, w, arg_names=["ids", "w"])
    counts = np.zeros_like(w)
    np.add.at(counts, ids.reshape(-1) % 5, 1.0)
    assert_close(tp.run(tp.grad(gl, wrt=1), ids, w), counts)


@pytest.mark.parametrize("idx", [np.array(2, I64), np.array([3, 0, 3], I64), np.array([[0, 1], [2, 3]], I64),
                                 np.array([-1, -2], I64)])
def test_gather_with_constant_indices(idx):
    x = rand(4, 5)
    check(model([node("Gather", ["x", "i"], axis=1)], {"x": x}, ["y"], {"i": idx}), x)


@pytest.mark.parametrize("mode,pads", [("constant", [1, 0, 2, 3]), ("reflect", [2, 1, 1, 2]), ("edge", [1, 2, 3, 0]),
                                       ("wrap", [1, 2, 2, 1]), ("constant", [-1, 1, 0, -2])])
def test_pad_modes_and_negative_pads(mode, pads):
    x = rand(4, 5)
    check(model([node("Pad", ["x", "p", "v"], mode=mode)], {"x": x}, ["y"],
                {"p": np.array(pads, I64), "v": np.array(1.5, F32)}), x)


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize("width", [(0, 1), (1, 0), (0, 2), (2, 0), (2, 2), (1, 2), (0, 3), (3, 1), (5, 9)])
def test_pad_border_modes_every_width(mode, width):
    """Every pad width up to size-1 (reflect's limit) on the last axis of a [2, 4], and wider
    ones for edge and wrap (which repeats the axis), against onnxruntime. Only the padded
    sides get slice nodes: none dead, and a side's slice is made once."""
    x = rand(2, 4)
    b, e = width
    if mode == "reflect" and max(b, e) >= 4:
        return
    g = check(model([node("Pad", ["x", "p"], mode=mode)], {"x": x}, ["y"], {"p": np.array([0, b, 0, e], I64)}), x)
    assert g.outputs[0].type.shape == (2, 4 + b + e)
    used = {id(v) for n in g.nodes for v in n.inputs} | {id(v) for v in g.outputs}
    assert all(id(o) in used for n in g.nodes for o in n.outputs), str(g)  # no dead slice
    slices = [n for n in g.nodes if n.op == "slice"]
    assert len(slices) <= (bool(b % 4) + bool(e % 4) if mode == "wrap" else bool(b) + bool(e)), str(g)
    assert len(g.nodes) == len(slices) + 1  # the slices and one concatenate


def test_pad_reflect_to_index_zero():
    """The review's repro: pads [0,0,0,2] reflect [[0,1,2]] to [[0,1,2,1,0]]; the slice stop of
    -1 (before index 0) once read as "the last element" and dropped the padding."""
    x = np.arange(3, dtype=F32)[None]
    m = model([node("Pad", ["x", "p"], mode="reflect")], {"x": x}, ["y"], {"p": np.array([0, 0, 0, 2], I64)})
    g = check(m, x)
    assert str(g.outputs[0].type) == "f32[1,5]"
    assert tp.run(g, x).tolist() == [[0, 1, 2, 1, 0]]
    check(model([node("Pad", ["x", "p"], mode="reflect")], {"x": x}, ["y"], {"p": np.array([0, 2, 0, 2], I64)}), x)


def test_split_forms():
    x = rand(7, 4)
    check(model([node("Split", ["x", "s"], ["a", "b", "c"])], {"x": x}, ["a", "b", "c"],
                {"s": np.array([2, 4, 1], I64)}, opset=13), x)
    check(model([node("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3)], {"x": x}, ["a", "b", "c"]), x)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, -3], [100, -1], [0, 1], [1, 1]), ([-1], [-100], [1], [-2]), ([5, 0], [1, 2], [0, 1], [-1, 1])])
def test_slice_clamps_like_onnx(starts, ends, axes, steps):
    x = rand(6, 5)
    inits = {"s": np.array(starts, I64), "e": np.array(ends, I64), "a": np.array(axes, I64), "t": np.array(steps, I64)}
    check(model([node("Slice", ["x", "s", "e", "a", "t"])], {"x": x}, ["y"], inits), x)


def test_expand_is_bidirectional():
    x = rand(3, 1)
    check(model([node("Expand", ["x", "s"])], {"x": x}, ["y"], {"s": np.array([2, 1, 4], I64)}), x)


def test_n_ary_max_min_sum_mean_and_logic():
    a, b, c = rand(3, 1), rand(1, 4), rand(4)
    for op in ("Max", "Min", "Sum", "Mean"):
        check(model([node(op, ["a", "b", "c"])], {"a": a, "b": b, "c": c}, ["y"]), a, b, c)
    p, q = a > 0, b > 0
    m = model([node("Not", ["p"], ["np"]), node("And", ["np", "q"], ["t"]), node("Or", ["t", "p"], ["u"]),
               node("Xor", ["u", "q"])], {"p": p, "q": q}, ["y"])
    check(m, p, q)


def test_where_cast_and_comparisons():
    x, y = rand(3, 4), rand(3, 4)
    nodes = [node("Less", ["x", "y"], ["lt"]), node("Where", ["lt", "x", "y"], ["w"]),
             node("Cast", ["lt"], ["c"], to=T.INT64), node("GreaterOrEqual", ["x", "y"], ["ge"]),
             node("Equal", ["lt", "ge"], ["eq"])]
    check(model(nodes, {"x": x, "y": y}, ["w", "c", "eq"]), x, y)


@pytest.mark.parametrize("weights,ignore,reduction", [(False, None, "mean"), (True, 1, "mean"),
                                                       (True, None, "sum"), (False, 2, "none")])
def test_classification_losses(weights, ignore, reduction):
    x, labels, w = rand(5, 4, 3), np.array([[0, 1, 3], [1, 2, 2], [3, 0, 1], [1, 1, 0], [2, 3, 3]], I64), np.abs(rand(4))
    attrs = {"reduction": reduction, **({"ignore_index": ignore} if ignore is not None else {})}
    ins = ["x", "t"] + (["w"] if weights else [])
    inits = {"w": w} if weights else None
    check(model([node("SoftmaxCrossEntropyLoss", ins, ["y", "logp"], **attrs)], {"x": x, "t": labels}, ["y", "logp"],
                inits), x, labels)
    check(model([node("NegativeLogLikelihoodLoss", ins, **attrs)], {"x": x, "t": labels}, ["y"], inits), x, labels)


def test_layer_norm_extra_outputs_and_broadcast_scale():
    x = rand(2, 3, 4)
    m = model([node("LayerNormalization", ["x", "s", "b"], ["y", "mu", "inv"], axis=1, epsilon=1e-3)],
              {"x": x}, ["y", "mu", "inv"], {"s": rand(1, 4), "b": rand(3, 4)}, opset=17)
    check(m, x)


def test_index_rules():
    x = rand(4, 5)
    check(model([node("ArgMax", ["x"], axis=1, keepdims=0, select_last_index=1)], {"x": np.round(x)}, ["y"]), np.round(x))
    check(model([node("ArgMin", ["x"], axis=0)], {"x": x}, ["y"]), x)
    check(model([node("CumSum", ["x", "a"], exclusive=1, reverse=1)], {"x": x}, ["y"], {"a": np.array(0, I64)}), x)
    check(model([node("Trilu", ["x", "k"], upper=0)], {"x": x}, ["y"], {"k": np.array(1, I64)}), x)
    ids = np.array([0, 3, -1], I64)
    check(model([node("OneHot", ["i", "d", "v"], axis=0)], {"i": ids}, ["y"],
                {"d": np.array(4, I64), "v": np.array([0.0, 2.0], F32)}), ids)


def test_float64_and_int_arithmetic():
    a, b = np.array([7, -7, 9], I64), np.array([2, 2, -4], I64)
    check(model([node("Div", ["a", "b"])], {"a": a, "b": b}, ["y"]), a, b)
    x = rand(3, 2, dtype=np.float64)
    check(model([node("Pow", ["x", "e"])], {"x": np.abs(x)}, ["y"], {"e": np.array(3, I64)}), np.abs(x))


# ---- symbolic dims and torch's flatten pattern -----------------------------------------------

def test_dim_params_become_symbols_and_unnamed_dims_get_generated_ones():
    x = helper.make_tensor_value_info("x", T.FLOAT, ["batch size", None, 3])
    y = helper.make_tensor_value_info("y", T.FLOAT, ["batch size", None, 3])
    m = helper.make_model(helper.make_graph([node("Relu", ["x"])], "g", [x], [y]))
    g = tp.from_onnx(m)
    b, n, three = g.inputs[0].type.shape
    assert b == "batch_size" and isinstance(n, str) and re.fullmatch(r"[A-Za-z_]\w*", n) and three == 3
    for shape in [(2, 5, 3), (7, 1, 3)]:
        assert tp.run(g, np.ones(shape, F32)).shape == shape


def test_shape_gather_unsqueeze_concat_reshape_keeps_the_symbolic_batch():
    x = helper.make_tensor_value_info("x", T.FLOAT, ["N", 2, 3])
    y = helper.make_tensor_value_info("y", T.FLOAT, ["N", 6])
    nodes = [node("Shape", ["x"], ["s"]), helper.make_node("Constant", [], ["zero"], value_int=0),
             node("Gather", ["s", "zero"], ["n"]), node("Unsqueeze", ["n", "ax"], ["n1"]),
             node("Concat", ["n1", "minus1"], ["shape"], axis=0), node("Reshape", ["x", "shape"])]
    inits = [numpy_helper.from_array(np.array([0], I64), "ax"), numpy_helper.from_array(np.array([-1], I64), "minus1")]
    m = helper.make_model(helper.make_graph(nodes, "flat", [x], [y], inits))
    g = tp.from_onnx(m)
    assert [n.op for n in g.nodes] == ["reshape"] and g.nodes[0].attrs["shape"] == ("N", -1)
    for n in (1, 4):
        xs = rand(n, 2, 3)
        np.testing.assert_array_equal(tp.run(g, xs), xs.reshape(n, 6))


# ---- params, names, sources ----------------------------------------------------------------

def _mlp():
    nodes = [node("MatMul", ["x", "w1"], ["h"]), node("Add", ["h", "b1"], ["z"]), node("Relu", ["z"], ["r"]),
             node("Reshape", ["r", "shape"], ["y"])]
    return model(nodes, {"x": (T.FLOAT, ["B", 3])}, ["y"],
                 {"w1": rand(3, 4), "shape": np.array([-1, 2, 2], I64), "b1": rand(4)}, name="tiny mlp")


def test_params_inputs_appends_float_initializers_in_model_order():
    m = _mlp()
    g = tp.from_onnx(m, params="inputs")
    assert g.arg_names == ["x", "w1", "b1"] and [v.name for v in g.inputs] == ["x", "w1", "b1"]
    assert g.name == "tiny_mlp"
    x = rand(5, 3)
    want = run_ort(m, x)[0]
    assert_close(tp.run(g, x, *[numpy_helper.to_array(m.graph.initializer[i]) for i in (0, 2)]), want)
    gc = tp.from_onnx(m)
    assert gc.arg_names == ["x"] and len(gc.constants) >= 2
    assert_close(tp.run(gc, x), want)


def test_sources_name_the_onnx_node_and_the_file(tmp_path):
    m = _mlp()
    m.graph.node[2].name = ""
    path = tmp_path / "tiny.onnx"
    onnx.save(m, str(path))
    g = tp.from_onnx(str(path))
    assert [n.source for n in g.nodes] == ["tiny.onnx:matmul_node", "tiny.onnx:add_node", "tiny.onnx:Relu#2",
                                           "tiny.onnx:reshape_node"]
    assert "# tiny.onnx:Relu#2" in str(g)
    assert tp.from_onnx(path).arg_names == ["x"]  # os.PathLike works too


def test_bad_params_and_bad_argument():
    with pytest.raises(tp.TapeirError, match="params='constants' or params='inputs'"):
        tp.from_onnx(_mlp(), params="weights")
    with pytest.raises(tp.TapeirError, match="ModelProto or a path"):
        tp.from_onnx(42)


# ---- errors --------------------------------------------------------------------------------

def test_unsupported_model_fails_once_listing_every_op_type_with_counts_and_names():
    x = rand(4)
    nodes = [node("Relu", ["x"], ["a"]), helper.make_node("TopK", ["a", "k"], ["v1", "i1"], name="top1"),
             helper.make_node("TopK", ["v1", "k"], ["v2", "i2"], name="top2"),
             helper.make_node("NonZero", ["v2"], ["nz"]), helper.make_node("Foo", ["nz"], ["y"], domain="my.ops")]
    m = model(nodes, {"x": x}, ["y"], {"k": np.array([2], I64)})
    with pytest.raises(tp.TapeirError) as e:
        tp.from_onnx(m)
    msg = str(e.value)
    assert "3 unsupported ONNX op types" in msg
    assert "TopK (2 nodes: top1, top2)" in msg and "NonZero (1 node: NonZero#3)" in msg and "my.ops.Foo (1 node" in msg


@pytest.mark.parametrize("nodes,inputs,inits,match", [
    ([node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])], {"x": rand(1, 1, 4, 4)}, None, "Indices output"),
    ([node("Conv", ["x", "w"])], {"x": rand(1, 1, 3, 3, 3)}, {"w": rand(1, 1, 2, 2, 2)}, "3-D Conv"),
    ([node("Reshape", ["x", "s"])], {"x": rand(2, 3), "s": np.array([3, 2], I64)}, None,
     "shape must be integers known at import time"),
    ([node("Pad", ["x", "p"], mode="mirror")], {"x": rand(2, 3)}, {"p": np.array([1, 1, 1, 1], I64)}, "mode='mirror'"),
    # training mode is a constant (then Dropout gets a key input), not a run-time input
    ([node("Dropout", ["x", "r", "t"])], {"x": rand(2, 3), "t": np.array(True)}, {"r": np.array(0.5, F32)},
     "training_mode must be a scalar known at import time"),
    ([node("Div", ["x", "x"])], {"x": np.array([1], np.uint8)}, None, "UINT8"),
])
def test_unexpressible_forms_fail_naming_the_node(nodes, inputs, inits, match):
    with pytest.raises(tp.TapeirError, match=re.escape(match)) as e:
        tp.from_onnx(model(nodes, inputs, ["y"], inits))
    if "node" in str(e.value):
        assert f"model.onnx:{nodes[0].name}" in str(e.value)


@pytest.mark.parametrize("content", [b"not an onnx model at all", b"", bytes(range(256)) * 4, "truncated"])
def test_corrupt_file_is_not_an_onnx_model(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    if content == "truncated":  # half of a real model
        content = model([node("Relu", ["x"])], {"x": rand(2, 3)}, ["y"]).SerializeToString()[:40]
    path.write_bytes(content)
    with pytest.raises(tp.TapeirError) as info:
        tp.from_onnx(str(path))
    msg = str(info.value)
    assert "corrupt.onnx" in msg and "is not an ONNX model" in msg
    assert "DecodeError" not in msg and info.value.__cause__ is None


def test_missing_file_is_a_clean_error(tmp_path):
    for path in (tmp_path / "missing.onnx", tmp_path):  # a path, and a directory
        with pytest.raises(tp.TapeirError, match=r"cannot read .*(No such file|Is a directory)") as info:
            tp.from_onnx(path)
        assert str(path) in str(info.value) and info.value.__cause__ is None


def test_missing_external_data_is_a_clean_error(tmp_path):
    w = np.ones((64, 64), F32)
    m = model([node("MatMul", ["x", "w"])], {"x": rand(2, 64)}, ["y"], {"w": w})
    onnx.save_model(m, tmp_path / "big.onnx", save_as_external_data=True, location="big.data", size_threshold=0)
    (tmp_path / "big.data").unlink()
    with pytest.raises(tp.TapeirError, match="cannot read"):
        tp.from_onnx(tmp_path / "big.onnx")


def test_every_tapeir_local_function_imports_back():
    """The exporter's local functions (onnx_functions.NAMES) all come back as IR ops."""
    from tapeir.backends import onnx_functions, onnx_lowering  # noqa: F401  (registers the op families' functions)
    from tapeir.frontend.onnx import TAPEIR_FUNCTIONS

    assert set(TAPEIR_FUNCTIONS) == set(onnx_functions.NAMES)
