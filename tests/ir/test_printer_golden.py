"""Golden strings pinning the text form.

Source comments are `file:line` of the traced code, relative to the cwd when the file is
inside it. The expected lines are found from markers in this file (`# @name`), so the
goldens survive edits above them while still pinning every character of the format.
"""
from __future__ import annotations


import numpy as np
import pytest

import tapeir as tp
from support import marked_line, traced_path
from tapeir.ir import Graph, Node, TensorType, TreeDef, Value, constant
from tapeir.ir.pytree import LEAF


def _src_file() -> str:
    return traced_path(__file__)


def _line(marker: str) -> str:
    """`file:line` of the line of this file that carries `# @marker`."""
    return marked_line(__file__, marker)


def _golden(template: str, **markers) -> str:
    return template.format(**{k: _line(v) for k, v in markers.items()})


def mlp_loss(params, x, y):
    h = tp.tanh(x @ params["w1"] + params["b1"])  # @hidden
    logits = h @ params["w2"] + params["b2"]  # @logits
    return tp.cross_entropy(logits, y)  # @loss


def test_mlp_loss_golden():
    params = {"w1": tp.Spec((4, 3)), "b1": tp.Spec((3,)), "w2": tp.Spec((3, 2)), "b2": tp.Spec((2,))}
    g = tp.trace(mlp_loss, params, tp.Spec(("B", 4)), tp.Spec(("B",), "int64"))
    want = _golden(
        "graph mlp_loss(params: {{b1: f32[3], b2: f32[2], w1: f32[4,3], w2: f32[3,2]}}, x: f32[B,4], y: i64[B]) {{\n"
        "  %0: f32[B,3] = matmul(x, params.w1)                                     # {h}\n"
        "  %1: f32[B,3] = add(%0, params.b1)                                       # {h}\n"
        "  %2: f32[B,3] = tanh(%1)                                                 # {h}\n"
        "  %3: f32[B,2] = matmul(%2, params.w2)                                    # {o}\n"
        "  %4: f32[B,2] = add(%3, params.b2)                                       # {o}\n"
        "  %5: f32[] = cross_entropy(%4, y) {{ignore_index=-100, reduction=\"mean\"}}  # {l}\n"
        "  return %5\n"
        "}}\n",
        h="hidden", o="logits", l="loss")
    assert str(g) == want
    assert [v.name for v in g.inputs] == ["params.b1", "params.b2", "params.w1", "params.w2", "x", "y"]
    assert tp.parse(want) == g
    tp.verify(g)


BIG = np.arange(20, dtype=np.float32).reshape(4, 5)  # 20 elements: printed as base64
SMALL = np.array([[1.5, -0.0], [np.inf, -np.inf]], np.float32)  # 4 elements: printed inline


def consts_and_trees(x):
    a = x * 2.0 + BIG  # @a
    b = tp.softmax(a, axis=0)  # @b
    c = tp.reshape(x, (-1,))[:4].reshape((2, 2)) - SMALL  # @c
    return {"out": (a, [b, c]), "needs quotes": (x,), "z": [tp.sum(a, axis=(0, 1), keepdims=True)]}  # @ret


def test_constants_attributes_and_output_tree_golden():
    g = tp.trace(consts_and_trees, np.zeros((4, 5), np.float32))
    want = _golden(
        "graph consts_and_trees(x: f32[4,5]) {{\n"
        "  %c0: f32[] = const 2.0\n"
        '  %c1: f32[4,5] = const base64 "AAAAAAAAgD8AAABAAABAQAAAgEAAAKBAAADAQAAA4EAAAABBAAAQQQAAIEEAADBBAABAQQAAUEEA'
        'AGBBAABwQQAAgEEAAIhBAACQQQAAmEE="\n'
        "  %c2: f32[2,2] = const [1.5, -0.0, inf, -inf]\n"
        "  %0: f32[4,5] = mul(x, %c0)                                           # {a}\n"
        "  %1: f32[4,5] = add(%0, %c1)                                          # {a}\n"
        "  %2: f32[4,5] = softmax(%1) {{axis=0}}                                  # {b}\n"
        "  %3: f32[20] = reshape(x) {{shape=[-1]}}                                # {c}\n"
        "  %4: f32[4] = slice(%3) {{axes=[0], starts=[0], steps=[1], stops=[4]}}  # {c}\n"
        "  %5: f32[2,2] = reshape(%4) {{shape=[2, 2]}}                            # {c}\n"
        "  %6: f32[2,2] = sub(%5, %c2)                                          # {c}\n"
        "  %7: f32[1,1] = sum(%1) {{axes=[0, 1], keepdims=true}}                  # {r}\n"
        '  return {{"needs quotes": (x,), out: (%1, [%2, %6]), z: [%7]}}\n'
        "}}\n",
        a="a", b="b", c="c", r="ret")
    assert str(g) == want
    assert tp.parse(want) == g
    tp.verify(g)


def test_one_tuple_list_and_nested_input_trees_golden():
    def f(xs, cfg):
        return (xs[0] + cfg["lr"],)  # @one

    g = tp.trace(f, [np.ones(3, np.float32), np.ones((), np.int64)],
                 {"lr": tp.Spec((3,)), "2nd key": (tp.Spec(("4*B",), "bool"),)})
    want = _golden(
        'graph f(xs: [f32[3], i64[]], cfg: {{"2nd key": (bool[4*B],), lr: f32[3]}}) {{\n'
        "  %0: f32[3] = add(xs.0, cfg.lr)  # {one}\n"
        "  return (%0,)\n"
        "}}\n",
        one="one")
    assert str(g) == want
    back = tp.parse(want)
    assert back == g
    assert back.out_tree == TreeDef("tuple", (LEAF,))
    assert [v.name for v in back.inputs] == ["xs.0", "xs.1", "cfg.2nd key.0", "cfg.lr"]


def test_built_graph_golden_with_quoted_names():
    # A graph built directly: quoted names and keywords (`return.graph` needs no quotes,
    # `"graph"` does), constants of several dtypes, a NaN, and no source on one node;
    # only lines with a source count for the comment column.
    x = Value(TensorType("f64", ("B", 2)), "return.x")
    m = Value(TensorType("bool", ("B", 2)), "return.graph")
    c0 = constant(np.array([1, -2, 3], np.int32))
    c1 = constant(np.array(np.nan, np.float16))  # NaN: always base64 so the payload survives
    c2 = constant(np.array([True, False]))
    c3 = constant(np.array(-(2 ** 63), np.int64))
    y = Value(TensorType("f64", ("B", 2)))
    z = Value(TensorType("f64", ("B", 2)))
    nodes = [Node("where", [m, x, x], {}, [y]),
             Node("leaky_relu", [y], {"alpha": 0.5}, [z], source="model with spaces.py:7")]
    in_tree = TreeDef("tuple", (TreeDef("dict", (LEAF, LEAF), ("graph", "x")),))
    out_tree = TreeDef("dict", (LEAF, TreeDef("list", (LEAF, LEAF, LEAF))), ("inf", "rest"))
    g = Graph("my graph", ["return"], in_tree, [m, x], nodes, out_tree, [z, c0, c1, c2], [c0, c1, c2, c3])
    assert str(g) == (
        'graph "my graph"("return": {"graph": bool[B,2], x: f64[B,2]}) {\n'
        "  %c0: i32[3] = const [1, -2, 3]\n"
        '  %c1: f16[] = const base64 "AH4="\n'
        "  %c2: bool[2] = const [true, false]\n"
        "  %c3: i64[] = const -9223372036854775808\n"
        "  %0: f64[B,2] = where(return.graph, return.x, return.x)\n"
        "  %1: f64[B,2] = leaky_relu(%0) {alpha=0.5}  # model with spaces.py:7\n"
        '  return {"inf": %1, rest: [%c0, %c1, %c2]}\n'
        "}\n")
    back = tp.parse(str(g))
    assert back == g and str(back) == str(g)
    assert np.isnan(back.constants[1].data) and back.constants[1].data.tobytes() == c1.data.tobytes()
    tp.verify(g)


@pytest.mark.parametrize("value, text", [
    (np.float32(0.1), "0.1"), (np.float64(0.1), "0.1"), (np.float16(0.1), "0.1"),
    (np.float32(1e20), "1e+20"), (np.float64(-0.0), "-0.0"), (np.float32(3.0), "3.0"),
    (np.float64(np.inf), "inf"), (np.float32(-np.inf), "-inf"), (np.int64(-7), "-7"),
    (np.bool_(True), "true"), (np.float64(5e-324), "5e-324"),
])
def test_inline_scalar_spelling(value, text):
    g = Graph("k", [], TreeDef("tuple", ()), [], [], LEAF, [c := constant(np.array(value))], [c])
    assert str(g).splitlines()[1].split(" = const ")[1] == text
    assert tp.parse(str(g)) == g


def test_inline_limit_is_16_elements():
    def const_line(n):
        c = constant(np.arange(n, dtype=np.int64))
        return str(Graph("k", [], TreeDef("tuple", ()), [], [], LEAF, [c], [c])).splitlines()[1]

    assert const_line(16) == "  %c0: i64[16] = const [" + ", ".join(map(str, range(16))) + "]"
    assert const_line(17).startswith('  %c0: i64[17] = const base64 "AAAAAAAAAAABAAAAAAAAAAIA')
    assert const_line(0) == "  %c0: i64[0] = const []"
