"""Issue 11's remaining import coverage: GatherND (computed indices, symbolic dims),
Dropout in training mode (a key input), BatchNormalization in training mode.

References: onnxruntime running the original model, numpy (np.add.at) for gradients.
"""
from __future__ import annotations

import numpy as np
import pytest

import onnx  # noqa: E402  (a runtime dependency: never skipped)
import onnxruntime as ort  # noqa: E402

from onnx import TensorProto as T, helper  # noqa: E402

import tapeir as tp  # noqa: E402
from support import assert_close, rng  # noqa: E402

F32, I64 = np.float32, np.int64


def model(nodes, inputs, outputs, opset=18):
    vis = [helper.make_tensor_value_info(k, *v) for k, v in inputs.items()]
    g = helper.make_graph(nodes, "m", vis, [helper.make_empty_tensor_value_info(o) for o in outputs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def run_ort(m, *args):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), args)})


def gather_nd_ref(data, idx, b):
    """ONNX GatherND by loops (independent of the importer's flat-index arithmetic)."""
    out = [data[tuple(j) + tuple(idx[tuple(j)][..., k] for k in range(idx.shape[-1]))]
           for j in np.ndindex(*idx.shape[:b])] if b else [data[tuple(np.moveaxis(idx, -1, 0))]]
    return np.stack(out).reshape(idx.shape[:-1] + data.shape[b + idx.shape[-1]:]) if b else out[0]


# data f32[B,T,V] with symbolic B and T; indices as the model computes them
ND_CASES = {
    # GPT-2's pick: rows (b, t) given as pairs, batch_dims 0
    "pairs": (0, [helper.make_node("GatherND", ["x", "i"], ["y"])], ("i", T.INT64, ["K", 2])),
    # the last real token per row: lengths - 1, batch_dims 1
    "last_token": (1, [helper.make_node("Sub", ["n", "one"], ["m"]),
                       helper.make_node("Unsqueeze", ["m", "ax"], ["i"]),
                       helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)], ("n", T.INT64, ["B"])),
}


def _nd_model(case):
    b, nodes, idx_info = ND_CASES[case]
    consts = [helper.make_node("Constant", [], ["one"], value=helper.make_tensor("c", T.INT64, [], [1])),
              helper.make_node("Constant", [], ["ax"], value=helper.make_tensor("a", T.INT64, [1], [1]))]
    return b, model(consts + nodes, {"x": (T.FLOAT, ["B", "T", 5]), idx_info[0]: idx_info[1:]}, ["y"])


def _nd_inputs(case, B, T_):
    gen = rng("gathernd", case, B, T_)
    x = gen.standard_normal((B, T_, 5)).astype(F32)
    if case == "pairs":  # repeats (gradients accumulate) and negative indices
        i = np.stack([gen.integers(-B, B, 7), gen.integers(-T_, T_, 7)], axis=-1).astype(I64)
        return x, i, i % np.array([B, T_])
    n = gen.integers(1, T_ + 1, B).astype(I64)
    return x, n, (n - 1)[:, None]


@pytest.mark.parametrize("case", sorted(ND_CASES))
def test_gather_nd_with_computed_indices_over_symbolic_dims(case):
    b, m = _nd_model(case)
    g = tp.from_onnx(m)
    tp.verify(g)
    assert "take(" in str(g) and tp.parse(str(g)) == g
    for B, T_ in ((3, 4), (2, 7)):  # one graph, two run-time sizes
        x, i, pos = _nd_inputs(case, B, T_)
        want = gather_nd_ref(x, pos, b)
        assert_close(tp.run(g, x, i), want)
        assert_close(run_ort(m, x, i)[0], want)
        assert_close(tp.run(g, x, i, backend="onnxruntime"), want)


@pytest.mark.parametrize("case", sorted(ND_CASES))
def test_gather_nd_differentiates_as_a_scatter_add(case):
    b, m = _nd_model(case)
    g = tp.from_onnx(m)
    idx = g.inputs[1].type
    loss = tp.trace(lambda x, i, w: (tp.call(g, x, i) * w).sum(),
                    tp.Spec(("B", "T", 5)), tp.Spec(idx.shape, "int64"), tp.Spec((5,)), arg_names=["x", "i", "w"])
    dg = tp.grad(loss, wrt=0)
    for B, T_ in ((3, 4), (2, 7)):
        x, i, pos = _nd_inputs(case, B, T_)
        w = np.arange(1, 6, dtype=F32)
        want = np.zeros_like(x)
        rows = (np.arange(B), pos[:, 0]) if b else tuple(pos.T)
        np.add.at(want, rows, w)
        assert_close(tp.run(dg, x, i, w), want)
        assert_close(tp.run(dg, x, i, w, backend="onnxruntime"), want)


def test_gather_nd_bad_index_width_is_a_clear_error():
    m = model([helper.make_node("GatherND", ["x", "i"], ["y"], name="pick")],
              {"x": (T.FLOAT, [2, 3]), "i": (T.INT64, [4, 3])}, ["y"])
    with pytest.raises(tp.TapeirError, match=r"GatherND.*indices \[4, 3\]") as e:
        tp.from_onnx(m)
    assert "pick" in str(e.value) and e.value.hint
