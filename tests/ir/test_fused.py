"""The fused op in the IR: its contract, its text form, and every layer that meets it
(verifier, builder/tp.call, constant folding, CSE, autodiff, both backends).

Fused nodes are built by hand here, from traced bodies, so these tests do not depend on
the fusion pass (passes/fusion.py), whose own tests check the groups it forms.
"""
from __future__ import annotations

import numpy as np
import pytest
from support import ONNXRUNTIME, assert_close, assert_tree_close, randn

import tapeir as tp
from tapeir.ir import TensorType, TypeRuleError, VerifyError
from tapeir.ir.builder import Builder
from tapeir.passes.fusion import unfuse
from tapeir.passes.simplify import simplify


def _body():
    """tanh(a + b) and exp(a + b) * 2 over the body's own symbol N."""
    return tp.trace(lambda a, b: (tp.tanh(a + b), tp.exp(a + b) * 2.0), tp.Spec(("N", 3)), tp.Spec((3,)),
                    name="fused_0")


def _fused_graph(body=None):
    """loss(x, w) = sum(tanh(x*x + w) + 2 exp(x*x + w)), the two branches as one fused node."""
    b = Builder()
    x, w = b.input(TensorType("f32", ("B", 3)), "x"), b.input(TensorType("f32", (3,)), "w")
    with b.at("model.py:1"):
        h, = b.emit("mul", [x, x])
    with b.at("model.py:2"):
        y1, y2 = b.emit("fused", [h, w], {"body": body or _body()})
    with b.at("model.py:3"):
        s, = b.emit("add", [y1, y2])
        loss, = b.emit("sum", [s], {"axes": (0, 1)})
    return b.build("f", [x, w], [loss])


def _reference(x, w):
    z = x.astype(np.float64) ** 2 + w
    return np.sum(np.tanh(z) + 2 * np.exp(z))


def _args(batch=4):
    return randn((batch, 3), "float32", "fused-x"), randn((3,), "float32", "fused-w")


def test_text_form_nests_the_body_and_round_trips(tmp_path):
    g = _fused_graph()
    text = str(g)
    assert "%1: f32[B,3], %2: f32[B,3] = fused(%0, w)" in text
    assert "\n    graph fused_0(a: f32[N,3], b: f32[3]) {\n" in text  # under its node, indented
    assert tp.parse(text) == g
    tp.save(g, tmp_path / "g.tpir")
    assert tp.load(tmp_path / "g.tpir") == g


def test_a_body_is_its_own_scope():
    text = str(_fused_graph()).replace("add(a, b)", "add(a, x)", 1)  # x is the outer graph's input
    with pytest.raises(tp.ParseError, match="x is not defined here"):
        tp.parse(text)


def test_a_body_that_is_missing_is_a_parse_error():
    lines = str(_fused_graph()).splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip().startswith("graph fused_0"))
    end = next(i for i in range(start, len(lines)) if lines[i] == "    }")
    with pytest.raises(tp.ParseError, match="nested 'graph"):
        tp.parse("\n".join(lines[:start] + lines[end + 1:]))


def test_bodies_compare_structurally():
    assert _fused_graph() == _fused_graph()
    other = tp.trace(lambda a, b: (tp.tanh(a - b), tp.exp(a + b) * 2.0), tp.Spec(("N", 3)), tp.Spec((3,)),
                     name="fused_0")
    assert _fused_graph() != _fused_graph(other)


@pytest.mark.parametrize("fn, problem", [
    (lambda a, b: ((a + b).sum(axis=1),), "sum, which is not elementwise"),
    (lambda a, b: (tp.tanh(a + b), tp.exp(b)), "every body node must produce the group's one shape"),
    (lambda a, b: (a,), "every body output must be produced by a body node"),
    (lambda a, b: (tp.exp(b),), "body input a is f32\\[N,3\\], which does not broadcast to the group's shape \\[3\\]"),
])
def test_the_body_contract_is_checked(fn, problem):
    body = tp.trace(fn, tp.Spec(("N", 3)), tp.Spec((3,)))
    b = Builder()
    x, w = b.input(TensorType("f32", ("B", 3)), "x"), b.input(TensorType("f32", (3,)), "w")
    with pytest.raises(TypeRuleError, match=problem):
        b.emit("fused", [x, w], {"body": body})


def test_operands_must_fit_the_body():
    b = Builder()
    x, v = b.input(TensorType("f32", ("B", 3)), "x"), b.input(TensorType("f32", (4,)), "v")
    with pytest.raises(TypeRuleError, match="operand 1 is f32\\[4\\], its body input b is f32\\[3\\]"):
        b.emit("fused", [x, v], {"body": _body()})
    with pytest.raises(TypeRuleError, match="fused: 1 operands for a body of 2 inputs"):
        b.emit("fused", [x], {"body": _body()})


def test_the_verifier_checks_the_body():
    g = _fused_graph()
    n = g.nodes[1]
    bad_body = n.attrs["body"].replace(output_names=["same", "same"])
    nodes = list(g.nodes)
    nodes[1] = tp.ir.Node("fused", n.inputs, {"body": bad_body}, n.outputs, n.source)
    with pytest.raises(VerifyError, match="its body graph: .*duplicate output names"):
        tp.verify(g.replace(nodes=nodes))


@pytest.mark.parametrize("batch", [0, 1, 5])
def test_runs_on_both_backends(batch):
    g, (x, w) = _fused_graph(), _args(batch)
    want = _reference(x, w)
    assert_close(tp.run(g, x, w), want, dtype="float32")
    assert_close(tp.run(g, x, w, backend="onnxruntime"), want, dtype="float32", ulps=ONNXRUNTIME,
                 why="onnxruntime's exp/tanh")


def test_unfuse_gives_the_same_results_and_the_body_ops():
    g, (x, w) = _fused_graph(), _args()
    flat = unfuse(g)
    tp.verify(flat)
    assert [n.op for n in flat.nodes] == ["mul", "add", "tanh", "add", "exp", "mul", "add", "sum"]
    assert_close(tp.run(flat, x, w), tp.run(g, x, w), exact=True)


def test_gradients_go_through_the_body():
    g, (x, w) = _fused_graph(), _args()
    value, (gx, gw) = tp.run(tp.value_and_grad(g, wrt=(0, 1)), x, w)
    z = x.astype(np.float64) ** 2 + w
    dz = (1 - np.tanh(z) ** 2) + 2 * np.exp(z)
    assert_close(value, _reference(x, w), dtype="float32")
    assert_close(gx, dz * 2 * x, dtype="float32")
    assert_close(gw, dz.sum(axis=0), dtype="float32")


def test_call_inlines_a_fused_graph_at_concrete_sizes():
    g, (x, w) = _fused_graph(), _args(2)
    outer = tp.trace(lambda x, w: tp.call(g, x, w) * 3.0, x, w)  # B is 2 here; the body keeps its N
    assert outer.nodes[1].op == "fused" and outer.nodes[1].outputs[0].type == TensorType("f32", (2, 3))
    assert_close(tp.run(outer, x, w), 3 * _reference(x, w), dtype="float32")
    assert tp.parse(str(outer)) == outer


def test_constant_folding_and_cse_see_fused_nodes():
    b = Builder()
    c = b.const(np.arange(3, dtype=np.float32))
    body = tp.trace(lambda a: tp.exp(a) * 2.0, tp.Spec((3,)))
    x = b.input(TensorType("f32", (3,)), "x")
    y1, = b.emit("fused", [c], {"body": body})
    y2, = b.emit("fused", [c], {"body": body.replace()})  # another, equal body
    y3, = b.emit("fused", [x], {"body": body})
    s, = b.emit("add", [y1, y2])
    out, = b.emit("add", [s, y3])
    g = b.build("f", [x], [out])
    simple = simplify(g)
    assert [n.op for n in simple.nodes] == ["fused", "add"]  # the two constant ones folded into one constant
    xv = np.ones(3, np.float32)
    assert_close(tp.run(simple, xv), tp.run(g, xv), exact=True)
    assert_tree_close(tp.run(simple, xv), 4 * np.exp(np.arange(3.0)) + 2 * np.e, dtype="float32")
