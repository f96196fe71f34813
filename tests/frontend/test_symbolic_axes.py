"""Slices, pads and concatenation along a symbolic axis (issue 11): dims are polynomials in
the symbols, so x[:, 1:] of [B, T] is [B, T-1] and concatenating [B, T] with [B, 1] gives
[B, T+1]. Bounds on a symbolic axis are not clamped as numpy's are: the backends check them
when T is bound, naming the node and the user's line.

References: numpy slicing written here (forward), float64 finite differences (gradients),
onnxruntime on the exported model and on hand-written ONNX models (import)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper

import tapeir as tp
from support import assert_close, marked_line, rng

BACKENDS = ["numpy", "onnxruntime"]


def shifted_diff(x):
    return x[:, 1:] - x[:, :-1]  # @diff


def wrap_around(x):
    """[x, x[:, :2]] along T, a pad of 1 before on T, a window from 2 to T-1: every new form."""
    y = tp.concatenate([x, x[:, :2]], axis=1)          # [B, T+2]
    y = tp.pad(y, ((0, 0), (1, 0)))                     # [B, T+3]
    return (tp.tanh(y[:, 2:-1]) * y[:, 3:]).sum()       # [B, T] each


def test_types_are_sums_and_differences():
    g = tp.trace(shifted_diff, tp.Spec(("B", "T")))
    assert str(g.outputs[0].type) == "f32[B,T-1]"
    g = tp.trace(lambda x, y: tp.concatenate([x, y, x], axis=1), tp.Spec(("B", "T")), tp.Spec(("B", 1)))
    assert str(g.outputs[0].type) == "f32[B,2*T+1]"
    g = tp.trace(lambda x: tp.pad(x, ((0, 0), (2, 1)))[:, -3:], tp.Spec(("B", "T")))
    assert [str(n.outputs[0].type) for n in g.nodes] == ["f32[B,T+3]", "f32[B,3]"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t", [1, 2, 7])
def test_forward_matches_numpy_at_every_length(backend, t):
    x = rng("diff", t).standard_normal((3, t)).astype(np.float32)
    f = tp.compile(tp.trace(shifted_diff, tp.Spec(("B", "T"))), backend=backend)
    assert_close(f(x), x[:, 1:] - x[:, :-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_matches_finite_differences(backend):
    g = tp.trace(wrap_around, tp.Spec(("B", "T"), "float64"))
    f = tp.compile(tp.value_and_grad(g), backend=backend)
    for t in (2, 5):
        x = rng("wrap", t).standard_normal((2, t))
        value, grad = f(x)

        def ref(x):  # the same function in plain numpy
            y = np.pad(np.concatenate([x, x[:, :2]], axis=1), ((0, 0), (1, 0)))
            return float((np.tanh(y[:, 2:-1]) * y[:, 3:]).sum())
        assert_close(value, ref(x))
        fd = np.zeros_like(x)
        for i in np.ndindex(*x.shape):
            e = np.zeros_like(x)
            e[i] = 1e-6
            fd[i] = (ref(x + e) - ref(x - e)) / 2e-6
        assert_close(grad, fd, ulps=2 ** 26, why="float64 central differences (h = 1e-6)")


def test_exported_model_runs_in_plain_onnxruntime_at_two_lengths():
    g = tp.value_and_grad(tp.trace(wrap_around, tp.Spec(("B", "T"))))
    model = tp.to_onnx(g)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", "T"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for t in (3, 6):
        x = rng("plain", t).standard_normal((2, t)).astype(np.float32)
        got = sess.run(None, {"x": x})
        want = tp.run(g, x)
        assert_close(got[0], want[0], ulps=1024, why="onnxruntime's tanh")
        assert_close(got[1], want[1], ulps=1024, why="onnxruntime's tanh")


@pytest.mark.parametrize("fn", [wrap_around, lambda x: x[:, :2].sum()], ids=["cotangent", "constant"])
def test_gradients_with_symbolic_pads_import_back(fn):
    """The gradient of x[:, :2] pads by T-2, which the export computes from x's shape: the
    importer reads the pads back as dims, also when the padded data is a known constant
    (the cotangent of a sum), which it must not fold as shape arithmetic."""
    g = tp.value_and_grad(tp.trace(fn, tp.Spec(("B", "T"))))
    rt = tp.from_onnx(tp.to_onnx(g))
    assert any(n.op == "pad" and "T-2" in n.attrs["pads"] for n in rt.nodes), rt
    for t in (2, 5):
        x = rng("import", t).standard_normal((3, t)).astype(np.float32)
        for got, want in zip(tp.run(rt, x), tp.run(g, x)):
            assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_derivative_through_a_symbolic_slice(backend):
    """The gradient of x[-1:] on an axis B pads by B-1; differentiating that pad again
    slices from B-1 to B-1 + 1 (a Hessian-vector product)."""
    g = tp.trace(lambda x: (tp.sin(x[-1:]) * x[-1:]).sum(), tp.Spec(("B",), "float64"))
    gg = tp.grad(g)
    hvp = tp.grad(tp.trace(lambda x, v: (tp.call(gg, x) * v).sum(), tp.Spec(("B",), "float64"),
                           tp.Spec(("B",), "float64")))
    for b in (1, 4):
        x, v = rng("hvp", b).standard_normal(b), rng("hvp v", b).standard_normal(b)
        want = np.zeros(b)  # d2/dx2 of x sin x at the last element, times v there
        want[-1] = (2 * np.cos(x[-1]) - x[-1] * np.sin(x[-1])) * v[-1]
        assert_close(tp.run(hvp, x, v, backend=backend), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_derivative_through_a_static_concatenation_of_symbolic_parts(backend):
    """[x, x[-1:2]] of x [B] has 3 elements; its gradient slices the cotangent from B, and the
    gradient of that slice (in a Hessian-vector product) pads back to 3 by widths that are
    dims (3 - B - (3-B) after: int minus str was a TypeError)."""
    w = np.array([0.5, -1.0, 2.0])
    g = tp.trace(lambda x: (tp.sin(tp.concatenate([x, x[-1:2]])) * w).sum(), tp.Spec(("B",), "float64"))
    gg = tp.grad(g)
    hvp = tp.grad(tp.trace(lambda x, v: (tp.call(gg, x) * v).sum(), tp.Spec(("B",), "float64"),
                           tp.Spec(("B",), "float64")))
    for b in (2, 3):  # x[-1:2] needs 2 <= B <= 3
        x, v = rng("hvp concat", b).standard_normal(b), rng("hvp concat v", b).standard_normal(b)
        z = np.concatenate([x, x[b - 1:2]])
        d2 = -np.sin(z) * w  # d2/dz2 of sum(sin(z) w); z[j] is x[j] for j < B, x[B-1+j-B] after
        src = np.concatenate([np.arange(b), np.arange(b - 1, 2)])
        want = np.zeros(b)
        np.add.at(want, src, d2 * v[src])
        assert_close(tp.run(hvp, x, v, backend=backend), want)


def test_text_form_round_trips_sum_dims():
    g = tp.value_and_grad(tp.trace(wrap_around, tp.Spec(("B", "T"))))
    text = str(g)
    assert "f32[B,T+3]" in text and '"T+2"' in text
    assert tp.parse(text) == g
    written = text.replace("f32[B,T+3]", "f32[B, 3 + T]")  # any order and spacing reads back canonical
    assert tp.parse(written) == g


@pytest.mark.parametrize("backend", BACKENDS)
def test_too_short_an_axis_is_a_run_error_naming_the_line(backend):
    f = tp.compile(tp.trace(shifted_diff, tp.Spec(("B", "T"))), backend=backend)
    with pytest.raises(tp.TapeirError, match=r"T-1 is -1 when T=0") as e:
        f(np.zeros((2, 0), np.float32))
    assert marked_line(__file__, "diff") in str(e.value)
    g = tp.trace(lambda x: x[2:5], tp.Spec(("T",)))  # a fixed window needs T >= 5
    with pytest.raises(tp.TapeirError, match=r"T-5 is -1 when T=4"):
        tp.run(g, np.zeros(4, np.float32), backend=backend)
    assert tp.run(g, np.arange(5, dtype=np.float32), backend=backend).tolist() == [2.0, 3.0, 4.0]


def test_strided_slice_of_a_symbolic_axis_is_a_clear_error():
    def f(x):
        return x[:, ::2]  # @strided
    with pytest.raises(tp.TapeirError, match=r"axis 1 \(T\) of f32\[B,T\] with '::2'.*step 1") as e:
        tp.trace(f, tp.Spec(("B", "T")))
    assert e.value.where == marked_line(__file__, "strided")


def test_a_slice_past_a_known_end_is_refused_at_trace_time():
    with pytest.raises(tp.TapeirError, match=r"negative size or runs past the end"):
        tp.trace(lambda x: tp.concatenate([x, x[:, :3]], axis=1)[:, 2:1], tp.Spec(("B", "T")))


def test_input_dims_that_are_sums_bind_their_symbol():
    g = tp.trace(lambda a, b: a[1:] * b, tp.Spec(("T+1",)), tp.Spec(("T",)))
    for backend in BACKENDS:
        got = tp.run(g, np.arange(4, dtype=np.float32), np.ones(3, np.float32), backend=backend)
        assert got.tolist() == [1.0, 2.0, 3.0]
        with pytest.raises(tp.TapeirError, match=r"input a axis 0 is 4, but T\+1 = 3"):
            tp.run(g, np.arange(4, dtype=np.float32), np.ones(2, np.float32), backend=backend)


def test_dims_compute_like_sizes_in_traced_code():
    def f(x):
        t = x.shape[1]
        return tp.reshape(tp.concatenate([x, x], axis=1), (x.shape[0], 2 * t))[:, t - 1:t + 1]
    g = tp.trace(f, tp.Spec(("B", "T")))
    assert str(g.outputs[0].type) == "f32[B,2]"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert tp.run(g, x).tolist() == [[2.0, 0.0], [5.0, 3.0]]


def _slice_model(starts, ends, dims=("B", "T")):
    return helper.make_model(helper.make_graph(
        [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="shift")], "m",
        [helper.make_tensor_value_info("x", T.FLOAT, list(dims))], [helper.make_empty_tensor_value_info("y")],
        [helper.make_tensor("s", T.INT64, [1], [starts]), helper.make_tensor("e", T.INT64, [1], [ends]),
         helper.make_tensor("a", T.INT64, [1], [1])]), opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("starts,ends,size", [(1, 2**62, "T-1"), (0, -1, "T-1"), (-3, 2**62, 3), (2, -2, "T-4")])
def test_imported_slices_of_a_symbolic_axis_match_onnxruntime(starts, ends, size):
    m = _slice_model(starts, ends)
    g = tp.from_onnx(m)
    assert str(g.outputs[0].type) == f"f32[B,{size}]"
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for t in (4, 9):
        x = rng("import", t).standard_normal((2, t)).astype(np.float32)
        assert_close(tp.run(g, x), sess.run(None, {"x": x})[0], exact=True)


def test_imported_shape_arithmetic_adds_and_subtracts_dims():
    """Shape -> Gather(T) -> Add 1 -> Range over T+1 -> a position table that matches x padded by one."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["t"], axis=0),
        helper.make_node("Add", ["t", "one"], ["t1"]),
        helper.make_node("Range", ["zero", "t1", "one"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posf"], to=T.FLOAT),
        helper.make_node("Pad", ["x", "pads"], ["xp"]),
        helper.make_node("Add", ["xp", "posf"], ["y"]),
    ]
    inits = [helper.make_tensor("one", T.INT64, [], [1]), helper.make_tensor("zero", T.INT64, [], [0]),
             helper.make_tensor("pads", T.INT64, [4], [0, 1, 0, 0])]
    m = helper.make_model(helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", T.FLOAT, ["B", "T"])],
                                            [helper.make_empty_tensor_value_info("y")], inits),
                          opset_imports=[helper.make_opsetid("", 18)])
    g = tp.from_onnx(m)
    assert str(g.outputs[0].type) == "f32[B,T+1]"
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for t in (2, 5):
        x = rng("range", t).standard_normal((3, t)).astype(np.float32)
        for backend in BACKENDS:
            assert_close(tp.run(g, x, backend=backend), sess.run(None, {"x": x})[0], exact=True)


def test_inputs_of_sum_size_import_as_that_sum():
    """An input of size T+1 exports as dim_param "T+1" and imports as T+1 (not a new symbol
    T_1, which made x[:, 1:] of it [B, T_1-1], unequal to T); names joined by a dash
    ("seq-len") stay one symbol."""
    g = tp.trace(lambda x, y: x[:, 1:] * y, tp.Spec(("B", "T+1")), tp.Spec(("B", "T")))
    rt = tp.from_onnx(tp.to_onnx(g))
    assert [str(v.type) for v in rt.inputs] == ["f32[B,T+1]", "f32[B,T]"]
    x, y = rng("sum input").standard_normal((2, 4)).astype(np.float32), np.ones((2, 3), np.float32)
    assert_close(tp.run(rt, x, y), x[:, 1:], exact=True)
    m = _slice_model(1, 2**62, dims=("B", "seq-len"))
    assert str(tp.from_onnx(m).outputs[0].type) == "f32[B,seq_len-1]"


def test_exported_slice_of_a_product_axis_imports_back():
    """x[:, :-2] of an axis 2*B exports its end as 2*B-2 (shape arithmetic): the importer
    slices by that dim; it looked for a tensor with a dim 2*B-2, or B, and found none."""
    g = tp.trace(lambda x: x[:, :-2] * 2.0, tp.Spec((3, "2*B")))
    rt = tp.from_onnx(tp.to_onnx(g))
    assert str(rt.outputs[0].type) == "f32[3,2*B-2]"
    x = rng("2B").standard_normal((3, 6)).astype(np.float32)
    for backend in BACKENDS:
        assert_close(tp.run(rt, x, backend=backend), x[:, :-2] * 2, exact=True)


def test_exported_gradient_slicing_a_constant_by_dims_imports_back():
    """The gradient of concatenate slices the cotangent back by dims; where the cotangent is a
    constant (the weights of a sum), the importer sliced a numpy array by the dim "-B+2"."""
    w = np.arange(4.0, dtype=np.float32)
    g = tp.value_and_grad(tp.trace(lambda x: (tp.concatenate([x[-1:1], x, np.ones(2, np.float32)]) * w).sum(),
                                   tp.Spec(("B",))))
    rt = tp.from_onnx(tp.to_onnx(g))
    for b in (1, 2):  # x[-1:1] has 2-B elements
        x = rng("const cotangent", b).standard_normal(b).astype(np.float32)
        for got, want in zip(tp.run(rt, x), tp.run(g, x)):
            assert_close(got, want)
