"""The verifier rejects malformed graphs, naming the node (index, op, source line)."""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from tapeir.ir import Graph, Node, TensorType, TreeDef, Value, constant
from tapeir.ir.pytree import LEAF, leaf_names

F3 = TensorType("f32", (3,))


def _graph(inputs, nodes, outputs, constants=(), in_tree=None, arg_names=None):
    in_tree = in_tree or TreeDef("tuple", (LEAF,) * len(inputs))
    arg_names = arg_names or [f"x{i}" for i in range(len(in_tree.children))]
    names = [n for a, td in zip(arg_names, in_tree.children) for n in leaf_names(a, td)]
    for v, n in zip(inputs, names):  # inputs arrive named (Graph never renames what it is given)
        if v.name is None:
            v.name = n
    return Graph("g", arg_names, in_tree, inputs, nodes, TreeDef("tuple", (LEAF,) * len(outputs)), outputs,
                 list(constants))


def _reject(g, *needles) -> str:
    with pytest.raises(tp.VerifyError) as info:
        tp.verify(g)
    msg = str(info.value)
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _chain():
    """x0 -> exp -> tanh, with source lines; returns (x, [a, b], nodes)."""
    x, a, b = Value(F3), Value(F3), Value(F3)
    return x, [a, b], [Node("exp", [x], {}, [a], "model.py:3"), Node("tanh", [a], {}, [b], "model.py:4")]


def test_well_formed_graph_passes():
    x, (a, b), nodes = _chain()
    assert tp.verify(_graph([x], nodes, [b])) is None


def test_use_before_definition():
    x, (a, b), nodes = _chain()
    msg = _reject(_graph([x], nodes[::-1], [b]),
                  "verification failed at node 0: operand 0 is a value defined later",
                  "node 0 (tanh, model.py:4)", "topological order")
    # the excerpt marks the failing node's line
    assert "  >   %0: f32[3] = tanh(%?)  # model.py:4" in msg


def test_type_mismatch_between_recorded_type_and_type_rule():
    x, (a, b), nodes = _chain()
    nodes[1] = Node("tanh", [a], {}, [Value(TensorType("f64", (3,)))], "model.py:4")
    _reject(_graph([x], nodes, nodes[1].outputs),
            "verification failed at node 1: recorded output types f64[3] but the type rule gives f32[3]",
            "node 1 (tanh, model.py:4)")


def test_type_rule_error_names_the_node():
    x, i = Value(F3), Value(TensorType("i64", (3,)))
    out = Value(F3)
    _reject(_graph([x, i], [Node("add", [x, i], {}, [out], "model.py:9")], [out]),
            "verification failed at node 0: add: dtypes differ (f32[3], i64[3])", "node 0 (add, model.py:9)")


def test_dangling_operand_from_another_graph():
    x, (a, b), nodes = _chain()
    other_x, (other_a, _), _ = _chain()  # values of another graph
    out = Value(F3)
    nodes.append(Node("add", [b, other_a], {}, [out], "model.py:5"))
    _reject(_graph([x], nodes, [out]), "verification failed at node 2: operand 1 is a value that no node, "
            "input or constant of this graph defines (dangling)", "node 2 (add, model.py:5)", "remapped")


def test_wrong_arity():
    x, out = Value(F3), Value(F3)
    _reject(_graph([x], [Node("exp", [x, x], {}, [out], "model.py:1")], [out]),
            "verification failed at node 0: exp takes 1 inputs, got 2", "node 0 (exp, model.py:1)")
    out = Value(F3)
    _reject(_graph([x], [Node("where", [x], {}, [out])], [out]),
            "verification failed at node 0: where takes 3 inputs, got 1", "node 0 (where)")


def test_unknown_attribute():
    x, out = Value(F3), Value(F3)
    _reject(_graph([x], [Node("exp", [x], {"alpha": 1.0}, [out], "model.py:2")], [out]),
            "verification failed at node 0: exp: unknown attribute(s) ['alpha']", "node 0 (exp, model.py:2)",
            "hint: exp takes no attributes")


def test_unknown_attribute_that_does_not_print():
    x, out = Value(F3), Value(F3)
    msg = _reject(_graph([x], [Node("exp", [x], {"foo": object()}, [out], "model.py:2")], [out]),
                  "verification failed at node 0: exp: unknown attribute(s) ['foo']", "node 0 (exp, model.py:2)")
    assert "  > " not in msg  # no excerpt, but still the node


def test_missing_and_non_canonical_attributes():
    x, out = Value(F3), Value(F3)
    _reject(_graph([x], [Node("softmax", [x], {}, [out], "model.py:2")], [out]),
            "verification failed at node 0: softmax: missing attribute 'axis'", "node 0 (softmax, model.py:2)")
    out = Value(F3)
    _reject(_graph([x], [Node("leaky_relu", [x], {}, [out])], [out]),
            "verification failed at node 0: attributes {} are not canonical", "'alpha': 0.01")


def test_unknown_op():
    x, out = Value(F3), Value(F3)
    _reject(_graph([x], [Node("frobnicate", [x], {}, [out], "model.py:7")], [out]),
            "verification failed at node 0: unknown op 'frobnicate'", "node 0 (frobnicate, model.py:7)")


def test_node_without_source_names_index_and_op():
    x, out = Value(F3), Value(TensorType("f16", (3,)))
    msg = _reject(_graph([x], [Node("exp", [x], {}, [out])], [out]), "at node 0", "node 0 (exp)\n")
    assert "model.py" not in msg


def test_duplicate_input_names():
    x, y = Value(F3), Value(F3)
    tree = TreeDef("tuple", (TreeDef("dict", (LEAF,), ("a.b",)), TreeDef("dict", (LEAF,), ("b",))))
    _reject(_graph([x, y], [], [x], in_tree=tree, arg_names=["p", "p.a"]),
            "verification failed: duplicate input names ['p.a.b']")


def test_dict_keys_that_collide_after_flattening_are_caught():
    # {"a.b": x, "a": {"b": y}} flattens to two inputs both named p.a.b
    x, y = Value(F3), Value(F3)
    tree = TreeDef("tuple", (TreeDef("dict", (TreeDef("dict", (LEAF,), ("b",)), LEAF), ("a", "a.b")),))
    _reject(_graph([x, y], [], [x], in_tree=tree, arg_names=["p"]), "duplicate input names ['p.a.b']")


def test_output_not_defined():
    x, (a, b), nodes = _chain()
    _reject(_graph([x], nodes[:1], [b]), "verification failed: graph output 0 is not defined in the graph")


def test_value_defined_twice():
    x, (a, b), nodes = _chain()
    nodes.append(Node("tanh", [a], {}, [b], "model.py:5"))
    _reject(_graph([x], nodes, [b]), "verification failed at node 2: an output is defined twice",
            "node 2 (tanh, model.py:5)")


def test_trees_must_match_counts_and_have_sorted_keys():
    x, y = Value(F3), Value(F3)
    _reject(_graph([x, y], [], [x], in_tree=TreeDef("tuple", (LEAF,))), "input tree does not match the inputs")
    g = _graph([x], [], [x])
    g.out_tree = TreeDef("tuple", (LEAF, LEAF))
    _reject(g, "output tree does not match the outputs")
    unsorted = TreeDef("tuple", (TreeDef("dict", (LEAF, LEAF), ("b", "a")),))
    _reject(_graph([x, y], [], [x], in_tree=unsorted), "input tree: dict keys ['b', 'a'] must be sorted and unique")
    g = _graph([x, y], [], [x, y])
    g.out_tree = TreeDef("dict", (LEAF, LEAF), ("k", "k"))
    _reject(g, "output tree: dict keys ['k', 'k'] must be sorted and unique")


def test_bad_constants():
    c = constant(np.ones(3, np.float32))
    c.type = TensorType("f32", (4,))
    _reject(_graph([], [], [c], constants=[c]), "constant %c0 does not hold an array of its type f32[4]")
    c = constant(np.ones(3, np.float32))
    _reject(_graph([], [], [c], constants=[c, c]), "constant %c1 is defined twice")
    x = Value(F3, data=np.ones(3, np.float32))
    _reject(_graph([x], [], [x]), "input x0 carries constant data")


def test_error_shows_ir_around_the_node():
    x, out = Value(F3), None
    nodes, prev = [], x
    for i in range(20):
        out = Value(F3)
        nodes.append(Node("exp", [prev], {}, [out], f"model.py:{i}"))
        prev = out
    nodes[10] = Node("exp", [nodes[9].outputs[0]], {}, [Value(TensorType("f64", (3,)))], "model.py:10")
    nodes[11].inputs = (nodes[10].outputs[0],)
    msg = _reject(_graph([x], nodes, [out]), "verification failed at node 10", "node 10 (exp, model.py:10)")
    shown = [line for line in msg.splitlines() if line.startswith(("    ", "  > "))]
    assert len(shown) == 11 and shown[5].startswith("  >   %10: f64[3] = exp(%9)")


def test_verifier_accepts_traced_graphs():
    def f(params, x):
        h = tp.relu(x @ params["w"] + params["b"])
        return {"mean": h.mean(), "probs": tp.softmax(h), "t": (h.T,)}

    g = tp.trace(f, {"w": tp.Spec((4, 3)), "b": tp.Spec((3,))}, tp.Spec(("B", 4)))
    tp.verify(g)
    tp.verify(tp.parse(str(g)))
