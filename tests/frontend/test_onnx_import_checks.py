"""tp.from_onnx checks what it imports (issue 8, items 11, 12, 13): distinct dim names stay
distinct symbols; a model that writes a name twice, overwrites an input or lists an
output twice is refused naming the node; malformed nodes, initializers and attributes
are TapeirErrors naming the node or value, never KeyError/TypeError/ValueError/
UnicodeDecodeError; every imported graph passes the IR verifier."""
from __future__ import annotations

import re

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto as T, helper, numpy_helper

import tapeir as tp
from support import assert_close


def vi(name, shape=(2,), elem=T.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=()):
    outs = [o if isinstance(o, onnx.ValueInfoProto) else vi(o, None) for o in outputs]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outs, list(inits)),
                             opset_imports=[helper.make_opsetid("", 18)])


def relu(x, y, name=""):
    return helper.make_node("Relu", [x], [y], name=name)


def raw_tensor(name, dims, data: bytes, elem=T.FLOAT):
    return onnx.TensorProto(name=name, data_type=elem, dims=dims, raw_data=data)


# ---- item 11: dim names ------------------------------------------------------------------

def test_distinct_dim_names_stay_distinct_symbols():
    m = model([relu("x", "y1"), relu("z", "y2")], [vi("x", ["a b"]), vi("z", ["a_b"])], ["y1", "y2"])
    g = tp.from_onnx(m)
    (sx,), (sz,) = (v.type.shape for v in g.inputs)
    assert sz == "a_b" and sx != sz and re.fullmatch(r"[A-Za-z_]\w*", sx)
    x, z = np.array([-1, 2, 3], np.float32), np.array([-4], np.float32)  # sizes 3 and 1, as onnxruntime allows
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(tp.run(g, x, z), s.run(None, {"x": x, "z": z})):
        assert_close(got, want)


def test_a_dim_name_never_merges_with_another_or_with_a_generated_one():
    names = ["a b", "a_b", "a-b", "a_b_2", "x_0", "B", "3*B", "é"]
    m = model([relu("x", "y")], [vi("x", [None] + names)], ["y"])
    shape = tp.from_onnx(m).inputs[0].type.shape
    assert shape[7] == "3*B" and shape[6] == "B" and shape[2] == "a_b" and shape[4] == "a_b_2" and shape[5] == "x_0"
    symbols = [d for d in shape if d != "3*B"]
    assert len(set(symbols)) == len(symbols), shape  # the unnamed dim 0 ("x_0") too
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d) for d in symbols), shape


def test_the_same_dim_name_is_the_same_symbol_across_inputs():
    m = model([helper.make_node("Add", ["x", "z"], ["y"])], [vi("x", ["a b", 2]), vi("z", ["a b", 2])], ["y"])
    g = tp.from_onnx(m)
    assert g.inputs[0].type.shape == g.inputs[1].type.shape == g.outputs[0].type.shape


# ---- item 12: names written once -------------------------------------------------------------

@pytest.mark.parametrize("nodes,inputs,outputs,inits,match", [
    ([relu("x", "y")], [vi("x")], ["y", "y"], [], "graph output 'y' is listed twice"),
    ([relu("x", "y", "first"), helper.make_node("Neg", ["x"], ["y"], name="second")], [vi("x")], ["y"], [],
     "ONNX Neg node 'model.onnx:second' writes 'y', already written by the node 'model.onnx:first'"),
    ([relu("x", "x", "inplace")], [vi("x")], ["x"], [],
     "ONNX Relu node 'model.onnx:inplace' writes 'x', already written by the graph input"),
    ([relu("x", "w", "clobber"), helper.make_node("Add", ["x", "w"], ["y"])], [vi("x")], ["y"],
     [numpy_helper.from_array(np.ones(2, np.float32), "w")],
     "ONNX Relu node 'model.onnx:clobber' writes 'w', already written by the initializer"),
    ([relu("x", "y")], [vi("x"), vi("x")], ["y"], [], "graph input 'x' is already written by the graph input"),
    ([relu("x", "y")], [vi("x")], ["y"], [numpy_helper.from_array(np.ones(2, np.float32), "w")] * 2,
     "initializer 'w' is already written by the initializer"),
])
def test_a_name_written_twice_is_refused_naming_the_node(nodes, inputs, outputs, inits, match):
    with pytest.raises(tp.TapeirError, match=re.escape(match)):
        tp.from_onnx(model(nodes, inputs, outputs, inits))


def test_old_models_that_list_initializers_as_inputs_still_import():
    w = np.array([1, -2], np.float32)
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x"), vi("w")], ["y"],
              [numpy_helper.from_array(w, "w")])
    g = tp.from_onnx(m)
    assert g.arg_names == ["x"]
    assert_close(tp.run(g, np.ones(2, np.float32)), np.ones(2, np.float32) + w)


def test_every_imported_graph_passes_the_verifier(monkeypatch):
    """from_onnx runs the verifier: a graph the importer got wrong fails at import, naming the model."""
    from tapeir.frontend.onnx import driver

    def broken(g):
        raise tp.TapeirError("duplicate output names ['y']")
    monkeypatch.setattr(driver, "verify", broken)
    with pytest.raises(tp.TapeirError, match="model.onnx: the imported graph fails the IR verifier: duplicate"):
        tp.from_onnx(model([relu("x", "y")], [vi("x")], ["y"]))


# ---- item 13: malformed models are TapeirErrors -----------------------------------------------

def _utf8_pad():
    n = helper.make_node("Pad", ["x", "p"], ["y"], name="pad")
    n.attribute.extend([helper.make_attribute("mode", b"\xff\xfe")])
    return model([n], [vi("x")], ["y"], [numpy_helper.from_array(np.array([1, 1], np.int64), "p")])


@pytest.mark.parametrize("m,match", [
    (model([relu("x", "y")], [vi("x")], ["z"]), "graph output 'z' is produced by no node, input or initializer"),
    (model([relu("x", "y")], [vi("x")], [""]), "graph output #0 has an empty name"),
    (model([helper.make_node("Transpose", ["x", "x"], ["y"], name="t")], [vi("x")], ["y"]),
     "ONNX Transpose node 'model.onnx:t': has 2 inputs; Transpose (opset 13) takes 1"),
    (model([helper.make_node("Concat", [], ["y"], name="c", axis=0)], [vi("x")], ["y"]),
     "ONNX Concat node 'model.onnx:c': has 0 inputs; Concat (opset 13) takes at least 1"),
    (model([helper.make_node("Relu", ["x"], ["y", "z"], name="r")], [vi("x")], ["y"]),
     "ONNX Relu node 'model.onnx:r': has 2 outputs; Relu (opset 14) takes 1"),
    (model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x")], ["y"], [raw_tensor("w", [3], b"\0" * 8)]),
     "initializer 'w' (dims [3], data_type 1) cannot be read"),
    (model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x")], ["y"], [raw_tensor("w", [2**62, 4], b"")]),
     "initializer 'w' (dims [4611686018427387904, 4], data_type 1) cannot be read"),
    (model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x")], ["y"], [raw_tensor("w", [-2], b"")]),
     "initializer 'w' has a negative dim in [-2]"),
    (_utf8_pad(), "ONNX Pad node 'model.onnx:pad': string attribute 'mode' is not valid UTF-8"),
    (model([helper.make_node("Constant", [], ["y"], name="k", value=raw_tensor("v", [4], b"\0"))], [], ["y"]),
     "ONNX Constant node 'model.onnx:k': attribute 'value' cannot be decoded"),
    (model([relu("x", "y")], [vi("x", [-3])], ["y"]), "input 'x' has a negative dim -3"),
    (model([relu("x", "y")], [vi("x", ["99999999999999999999*B"])], ["y"]),
     "input 'x': dim '99999999999999999999*B' has a factor of 2**63 or more"),
    (model([helper.make_node("softplus", ["x", "x"], ["y"], name="sp", domain="tapeir")], [vi("x")], ["y"]),
     "ONNX softplus node 'model.onnx:sp': has 2 inputs; tapeir's softplus takes 1"),
    (model([helper.make_node("Flatten", ["x"], ["y"], name="f", axis=0)], [vi("x", [2**62, 4])], ["y"]),
     "ONNX Flatten node 'model.onnx:f': dim 18446744073709551616 is larger than 2**63 - 1"),
])
def test_malformed_models_are_tapeir_errors_naming_the_node_or_value(m, match):
    with pytest.raises(tp.TapeirError, match=re.escape(match)):
        tp.from_onnx(m)


def _bad_attribute_type():
    n = helper.make_node("Softmax", ["x"], ["y"], name="s")
    n.attribute.extend([helper.make_attribute("axis", "last")])
    return model([n], [vi("x")], ["y"])


@pytest.mark.parametrize("m,match", [
    (_bad_attribute_type(), "ONNX Softmax node 'model.onnx:s': attribute 'axis' is STRING; Softmax (opset 13) takes INT"),
    (model([helper.make_node("Cast", ["x"], ["y"], name="c")], [vi("x")], ["y"]),
     "ONNX Cast node 'model.onnx:c': lacks attribute 'to', which Cast (opset 13) requires"),
    (model([relu("x", "y")], [vi("x", elem=99)], ["y"]), "input 'x' has ONNX type #99 (no ONNX type has that number)"),
])
def test_attributes_and_types_are_checked_against_the_schema(m, match):
    with pytest.raises(tp.TapeirError, match=re.escape(match)):
        tp.from_onnx(m)


def test_invalid_utf8_in_a_name_is_a_tapeir_error(tmp_path):
    """protobuf hands a string field with invalid UTF-8 to Python as bytes."""
    data = model([relu("x", "y", name="NODENAME")], [vi("x")], ["y"]).SerializeToString()
    path = tmp_path / "bad.onnx"
    path.write_bytes(data.replace(b"NODENAME", b"NODE\xff\xfeME"))
    with pytest.raises(tp.TapeirError, match=r"bad.onnx: model.graph.node\[0\].name is not valid UTF-8"):
        tp.from_onnx(path)


def test_a_sparse_initializer_with_an_index_out_of_range_is_a_tapeir_error():
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.0], np.float32), "w"),
                                   numpy_helper.from_array(np.array([7], np.int64), "wi"), [2])
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x")], ["y"])
    m.graph.sparse_initializer.append(sp)
    with pytest.raises(tp.TapeirError, match="sparse initializer 'w' .*cannot be read: IndexError"):
        tp.from_onnx(m)
