"""The IR builder (ir/builder.py): type rules on emit, constants, inlining, source lines,
and graphs as values (construction never changes the Values it is given)."""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from tapeir.ir import Graph, TensorType, TreeDef
from tapeir.ir.builder import Builder
from tapeir.ir.pytree import LEAF

F32B = TensorType("f32", ("B", 3))


def test_emit_applies_the_type_rule_and_records_the_context_source():
    b = Builder()
    x = b.input(F32B, "x")
    with b.at("model.py:7"):
        (y,) = b.emit("sum", [x], {"axes": (1,)})
    (z,) = b.emit("exp", [y])  # outside any context: a plain Builder records no source
    assert y.type == TensorType("f32", ("B",)) and z.type == y.type
    assert [n.source for n in b.nodes] == ["model.py:7", None]
    assert b.nodes[0].attrs == {"axes": (1,), "keepdims": False}  # defaults filled in
    g = b.build("f", [x], [z])
    tp.verify(g)
    assert tp.parse(str(g)) == g


def test_emit_errors_name_the_op_the_types_and_the_source():
    b = Builder()
    x, w = b.input(F32B, "x"), b.input(TensorType("f32", (4, 2)), "w")
    with b.at("model.py:9"), pytest.raises(tp.TypeRuleError) as info:
        b.emit("matmul", [x, w])
    msg = str(info.value)
    assert "matmul" in msg and "f32[B,3]" in msg and "f32[4,2]" in msg and "model.py:9" in msg
    with pytest.raises(tp.TypeRuleError, match="unknown op 'expp'"):
        b.emit("expp", [x])
    with pytest.raises(tp.TypeRuleError, match="unknown attribute"):
        b.emit("exp", [x], {"axis": 0})
    assert b.nodes == []  # a rejected node is not recorded


def test_at_none_means_no_source_and_contexts_nest():
    class WithDefault(Builder):
        def default_source(self):
            return "caller.py:1"

    b = WithDefault()
    x = b.input(F32B, "x")
    b.emit("exp", [x])
    with b.at(None):
        b.emit("exp", [x])
        with b.at("inner.py:2"):
            b.emit("exp", [x])
        b.emit("exp", [x])
    b.emit("exp", [x])
    assert [n.source for n in b.nodes] == ["caller.py:1", None, "inner.py:2", None, "caller.py:1"]


def test_constants_are_shared_by_value_when_small_and_by_identity_when_large():
    b = Builder()
    assert b.const(np.float32(2)) is b.const(np.array(2, np.float32))
    assert b.const(np.float32(2)) is not b.const(np.float64(2))
    big = np.ones(100, np.float32)
    assert b.const(big) is b.const(big) and b.const(big) is not b.const(big.copy())
    assert len(b.constants) == 4
    assert not b.constants[0].data.flags.writeable  # a private read-only copy


def test_inline_substitutes_symbols_and_keeps_sources():
    g = tp.trace(lambda x: (tp.exp(x) * 2.0).reshape(x.shape[0] * 3), tp.Spec(("B", 3)))
    b = Builder()
    x = b.input(TensorType("f32", (5, 3)), "x")
    with b.at("call.py:4"):
        (out,) = b.inline(g, [x])
    assert out.type == TensorType("f32", (15,))
    assert b.nodes[-1].attrs["shape"] == (15,)
    assert [n.source for n in b.nodes] == [n.source for n in g.nodes]  # traced lines kept
    h = b.build("inlined", [x], [out])
    a = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(tp.run(h, a), tp.run(g, a))
    # a node without a source takes the current one
    parsed = tp.parse(_strip_sources(g))
    b2 = Builder()
    x2 = b2.input(TensorType("f32", (5, 3)), "x")
    with b2.at("call.py:4"):
        b2.inline(parsed, [x2])
    assert {n.source for n in b2.nodes} == {"call.py:4"}


def _strip_sources(g) -> str:
    return "\n".join(line.split("  #")[0] for line in str(g).splitlines()) + "\n"


def test_build_names_its_own_outputs_only():
    b = Builder()
    x = b.input(F32B, "x")
    (y,) = b.emit("exp", [x])
    c = b.const(np.float32(1))
    g = b.build("f", [x], [y, x, c], out_tree=TreeDef("tuple", (LEAF, LEAF, LEAF)))
    assert g.output_names == ["output.0", "output.1", "output.2"]
    assert (y.name, x.name, c.name) == ("output.0", "x", None)


def test_graph_construction_never_changes_the_values_it_is_given():
    g = tp.trace(lambda x: tp.exp(x), tp.Spec((3,)))
    before = [(v.name, v.type) for v in g.inputs + g.outputs]
    h = Graph("other", ["renamed"], g.in_tree, g.inputs, g.nodes, g.out_tree, g.outputs, g.constants, ["r"])
    assert [(v.name, v.type) for v in g.inputs + g.outputs] == before
    # the names the inputs carry must be the ones the argument names give: the verifier says so
    with pytest.raises(tp.VerifyError, match="input 0 is named 'x'.*'renamed'"):
        tp.verify(h)


def test_replace_rebuilds_and_leaves_the_original_alone():
    g = tp.trace(lambda x: tp.exp(x) + 1.0, tp.Spec((3,)))
    text = str(g)
    h = g.replace(nodes=g.nodes[:1], outputs=[g.nodes[0].outputs[0]], name="just_exp")
    assert str(g) == text and [n.op for n in h.nodes] == ["exp"] and h.name == "just_exp"
    tp.verify(h)
    with pytest.raises(TypeError, match="unknown field"):
        g.replace(nodez=[])


def test_inlining_binds_each_symbol_to_one_size():
    inner = tp.trace(lambda x, y: (x[:, None] * y).sum(), tp.Spec(("B",)), tp.Spec(("B",)))
    with pytest.raises(tp.TraceError, match=r"tp.call\(lambda\): input y of lambda is f32\[B\].*f32\[3\] here.*f32\[4\]"):
        tp.trace(lambda x, y: tp.call(inner, x, y), tp.Spec((3,)), tp.Spec((4,)))
    b = Builder()
    x, y = b.input(TensorType("f32", (3,)), "x"), b.input(TensorType("f32", (4,)), "y")
    with pytest.raises(tp.TypeRuleError, match="same size"):
        b.inline(inner, [x, y])
