"""Limits that make hostile inputs clear errors (issue 8, item 13): dims past int64, and
pytrees nested past MAX_DEPTH (every walk over a tree recurses)."""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from tapeir.ir import pytree
from tapeir.ir.types import MAX_DIM, TensorType


@pytest.mark.parametrize("dim", [2 ** 63, 2 ** 64 + 1, "9223372036854775808*B"])
def test_dims_past_int64_are_refused_where_they_are_made(dim):
    with pytest.raises(tp.TapeirError, match="larger than 2\\*\\*63 - 1"):
        TensorType("f32", (dim,))
    with pytest.raises(tp.TapeirError, match="larger than 2\\*\\*63 - 1"):
        tp.Spec((dim, 2))


def test_the_largest_int64_dim_is_fine_and_exports():
    g = tp.trace(lambda x: (x * 2.0).sum(), tp.Spec((MAX_DIM,)))
    tp.grad(g)
    assert tp.to_onnx(g).graph.input[0].type.tensor_type.shape.dim[0].dim_value == MAX_DIM


def test_a_dim_past_int64_in_text_is_a_parse_error():
    with pytest.raises(tp.ParseError, match="larger than 2\\*\\*63 - 1"):
        tp.parse("graph g(x: f32[9223372036854775808]) {\n  return x\n}")


def test_a_reshape_to_a_dim_past_int64_is_a_trace_error():
    with pytest.raises(tp.TraceError, match="larger than 2\\*\\*63 - 1"):
        tp.trace(lambda x: x.reshape(2 ** 63, 2).sum(), tp.Spec((2 ** 62, 2, 2)))


def _nest(leaf, n):
    for _ in range(n):
        leaf = [leaf]
    return leaf


def _unnest(t):
    while isinstance(t, list):
        t = t[0]
    return t


def test_trees_as_deep_as_the_limit_work_end_to_end():
    n = pytree.MAX_DEPTH
    g = tp.trace(lambda t: _nest(_unnest(t) * 2.0, n), _nest(tp.Spec((2,)), n))
    assert g == tp.parse(str(g))
    out = tp.run(g, _nest(np.ones(2, np.float32), n))
    np.testing.assert_array_equal(_unnest(out), [2.0, 2.0])
    vg = tp.value_and_grad(tp.trace(lambda t: _unnest(t).sum(), _nest(tp.Spec((2,)), n)))
    _, grads = tp.run(vg, _nest(np.ones(2, np.float32), n))
    np.testing.assert_array_equal(_unnest(grads), [1.0, 1.0])


@pytest.mark.parametrize("depth", [pytree.MAX_DEPTH + 1, 330, 5000])
def test_deeper_trees_are_tapeir_errors_naming_the_limit(depth):
    deep = _nest(tp.Spec((2,)), depth)
    with pytest.raises(tp.TapeirError, match=f"nested more than {pytree.MAX_DEPTH} levels"):
        tp.trace(lambda t: _unnest(t) * 2.0, deep)
    with pytest.raises(tp.TraceError, match=f"nested more than {pytree.MAX_DEPTH} levels"):
        tp.trace(lambda x: _nest(x, depth), tp.Spec((2,)))
    g = tp.trace(lambda t: _unnest(t) * 2.0, _nest(tp.Spec((2,)), 3))
    with pytest.raises(tp.RunError, match=f"nested more than {pytree.MAX_DEPTH} levels"):
        tp.run(g, _nest(np.ones(2, np.float32), depth))
    with pytest.raises(tp.TapeirError, match="levels deep"):
        _deep_treedef(depth + 8)  # a TreeDef built directly (the parser, tp.call) has the limit too


def _deep_treedef(depth):
    td = pytree.LEAF
    for _ in range(depth):
        td = pytree.TreeDef("list", (td,))
    return td
