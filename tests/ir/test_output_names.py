"""Output names: defaults from the output tree, autodiff's value/grad names, ONNX names kept."""
import numpy as np
import pytest

import tapeir as tp


def _loss(params, x):
    return ((x @ params["w"]) ** 2.0).sum()


SPECS = ({"w": tp.Spec((3, 2))}, tp.Spec(("B", 3)))


def test_default_names_follow_the_output_tree():
    g = tp.trace(lambda x: (x, {"a": x * 2.0, "b": [x + 1.0]}), tp.Spec((2,)))
    assert g.output_names == ["output.0", "output.1.a", "output.1.b.0"]
    assert " as " not in str(g)  # default names do not print
    assert tp.trace(lambda x: x * 2.0, tp.Spec((2,))).output_names == ["output"]


def test_autodiff_names_value_and_grad_by_input():
    g = tp.trace(_loss, *SPECS)
    assert tp.value_and_grad(g).output_names == ["value", "grad.params.w"]
    assert tp.grad(g, wrt=(0, 1)).output_names == ["grad.params.w", "grad.x"]
    vg = tp.value_and_grad(g, wrt=1)
    assert "return (%" in str(vg) and " as value, " in str(vg) and " as grad.x)" in str(vg)
    back = tp.parse(str(vg))
    assert back == vg and back.output_names == vg.output_names
    assert [v.name for v in vg.outputs] == ["value", "grad.x"]


def test_names_reach_onnx_and_come_back():
    vg = tp.value_and_grad(tp.trace(_loss, *SPECS))
    model = tp.to_onnx(vg)
    assert [o.name for o in model.graph.output] == ["value", "grad.params.w"]
    assert tp.from_onnx(model).output_names == ["value", "grad.params.w"]


def test_save_load_keeps_names(tmp_path):
    vg = tp.value_and_grad(tp.trace(_loss, *SPECS))
    tp.save(vg, tmp_path / "vg.tapeir")
    assert tp.load(tmp_path / "vg.tapeir").output_names == ["value", "grad.params.w"]


@pytest.mark.parametrize("names,problem", [(["a", "a"], "duplicate output names"), (["a"], "one non-empty")])
def test_verifier_rejects_bad_output_names(names, problem):
    g = tp.trace(lambda x: (x * 2.0, x + 1.0), tp.Spec((2,)))
    g.output_names = names
    with pytest.raises(tp.VerifyError, match=problem):
        tp.verify(g)


def test_quoted_output_names_round_trip():
    g = tp.trace(lambda x: (x * 2.0, x + 1.0), tp.Spec((2,)), output_names=["y::0", "as"])
    text = str(g)
    assert '%0 as "y::0"' in text and '%1 as "as"' in text
    assert tp.parse(text) == g
    np.testing.assert_array_equal(tp.run(g, np.ones(2, np.float32))[0], [2.0, 2.0])
