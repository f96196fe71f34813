"""Concatenation and partial slices along a symbolic axis: tapeir's dims are products of
symbols and integers (B, 4*T, B*T), never sums (T+1, T-1), so these are clear errors that
name the user's line, the sizes and the ways around (issue 11 decided this; see README)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T, helper

import tapeir as tp
from support import marked_line


def test_concatenate_along_a_symbolic_axis_names_the_sum_and_the_way_around():
    def f(x, last):
        return tp.concatenate([x, last], axis=1)  # @concat
    with pytest.raises(tp.TapeirError, match=r"symbolic axis 1 \(f32\[B,T,4\], f32\[B,1,4\]\).*T \+ 1") as e:
        tp.trace(f, tp.Spec(("B", "T", 4)), tp.Spec(("B", 1, 4)))
    assert e.value.where == marked_line(__file__, "concat")
    assert "fixed size" in e.value.hint


@pytest.mark.parametrize("index,text", [((slice(None), slice(1, None)), "'1:'"),
                                        ((slice(None), slice(None, -1)), "':-1'")])
def test_partial_slice_of_a_symbolic_axis_names_the_difference_and_the_way_around(index, text):
    def f(x):
        return x[index]  # @slice
    with pytest.raises(tp.TapeirError, match=f"symbolic axis 1 \\(T\\) of f32\\[B,T,4\\] with {text}.*T-1") as e:
        tp.trace(f, tp.Spec(("B", "T", 4)))
    assert e.value.where == marked_line(__file__, "slice")
    assert "tokens[:, 1:]" in e.value.hint


def test_the_way_around_works_pieces_as_inputs_of_symbolic_size():
    """What the hint says: slice outside, pass inputs and targets, both [B, T]."""
    g = tp.trace(lambda x, y: ((x - y) ** 2).mean(), tp.Spec(("B", "T")), tp.Spec(("B", "T")))
    tokens = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert float(tp.run(g, tokens[:, :-1], tokens[:, 1:])) == 1.0


def test_imported_slice_of_a_symbolic_axis_from_1_is_a_clear_error():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="shift")], "m",
        [helper.make_tensor_value_info("x", T.FLOAT, ["B", "T"])], [helper.make_empty_tensor_value_info("y")],
        [helper.make_tensor("s", T.INT64, [1], [1]), helper.make_tensor("e", T.INT64, [1], [2**62]),
         helper.make_tensor("a", T.INT64, [1], [1])]), opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(tp.TapeirError, match=r"shift.*symbolic axis 1 \(T\) with 1:.*T-1") as e:
        tp.from_onnx(m)
    assert "x[:T]" in e.value.hint
