"""The numpy backend: IMPL coverage, run-time input checks, run-time op errors, symbolic
dims bound per call, and the slot plan that frees intermediates after their last use.

The input checks live in backends/signature.py, shared with the onnxruntime backend, so
they run on both backends here."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tapeir as tp
from support import assert_close
from tapeir.backends.numpy_backend import IMPL, NumpyFunction
from tapeir.backends.onnxruntime_backend import OnnxRuntimeFunction
from tapeir.backends.signature import Signature

F32, F64, I64 = np.float32, np.float64, np.int64


def test_impl_covers_every_op():
    assert set(tp.OPS) <= set(IMPL), f"ops without a numpy kernel: {sorted(set(tp.OPS) - set(IMPL))}"
    assert set(IMPL) <= set(tp.OPS), f"kernels for unknown ops: {sorted(set(IMPL) - set(tp.OPS))}"


# ---- run-time input checks ------------------------------------------------------------------

def _add(x, y):
    return x + y


BACKENDS = ["numpy", "onnxruntime"]


@pytest.fixture(scope="module", params=BACKENDS)
def f_sym(request):
    return tp.compile(tp.trace(_add, tp.Spec(("B", 3)), tp.Spec(("B", 3))), backend=request.param)


def test_backends_share_one_signature():
    """onnxruntime's function is no NumpyFunction (whose state it once skipped); both take
    their arguments through a Signature."""
    g = tp.trace(_add, tp.Spec(("B", 3)), tp.Spec(("B", 3)))
    f_np, f_ort = tp.compile(g), tp.compile(g, backend="onnxruntime")
    assert not isinstance(f_ort, NumpyFunction) and isinstance(f_ort, OnnxRuntimeFunction)
    assert isinstance(f_np.signature, Signature) and isinstance(f_ort.signature, Signature)
    x = np.ones((2, 3), F32)
    np.testing.assert_array_equal(f_np(x, x), f_ort(x, x))


def _run_error(f, *args) -> str:
    with pytest.raises(tp.RunError) as info:
        f(*args)
    return str(info.value)


def test_wrong_dtype(f_sym):
    msg = _run_error(f_sym, np.ones((2, 3), F64), np.ones((2, 3), F32))
    assert "input x" in msg and "float64" in msg and "f32" in msg
    assert "hint: pass x.astype(np.float32)" in msg


def test_wrong_rank(f_sym):
    msg = _run_error(f_sym, np.ones((2, 3, 1), F32), np.ones((2, 3), F32))
    assert "input x" in msg and "(2, 3, 1)" in msg and "rank 2" in msg and "[B,3]" in msg


def test_wrong_static_dim(f_sym):
    msg = _run_error(f_sym, np.ones((2, 3), F32), np.ones((2, 4), F32))
    assert "input y" in msg and "(2, 4)" in msg and "[B,3]" in msg and "axis 1: 4 vs 3" in msg


def test_inconsistent_symbolic_binding(f_sym):
    msg = _run_error(f_sym, np.ones((2, 3), F32), np.ones((5, 3), F32))
    assert "B=5" in msg and "B=2" in msg and "input y" in msg
    assert "hint:" in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_inconsistent_product_dim(backend):
    f = tp.compile(tp.trace(lambda x, y: (x.reshape(-1), y), tp.Spec(("B", 2)), tp.Spec(("2*B",))), backend=backend)
    out = f(np.ones((3, 2), F32), np.ones(6, F32))
    assert [o.shape for o in out] == [(6,), (6,)]
    msg = _run_error(f, np.ones((3, 2), F32), np.ones(7, F32))
    assert "input y" in msg and "7" in msg and "2*B = 6" in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_symbol_bound_only_by_a_product_dim(backend):
    # found by tests/test_fuzz_programs.py: tp.Spec(("2*B",)) traced, but no call could run
    # ("whose symbols no input binds alone"), though the ONNX export derives B = size / 2
    f = tp.compile(tp.trace(lambda x, y: (x.reshape("B", 2) * 1.0, y.sum()), tp.Spec(("2*B",)),
                            tp.Spec(("B*T",))), backend=backend)
    a, s = f(np.arange(6, dtype=F32), np.ones(12, F32))
    assert a.shape == (3, 2) and float(s) == 12.0
    msg = _run_error(f, np.ones(5, F32), np.ones(10, F32))
    assert "input x" in msg and "5" in msg and "2*B" in msg and "multiple of 2" in msg
    msg = _run_error(f, np.ones(4, F32), np.ones(7, F32))  # B = 2, so T = 7 / 2
    assert "input y" in msg and "B*T" in msg


def test_wrong_number_of_arguments(f_sym):
    msg = _run_error(f_sym, np.ones((2, 3), F32))
    assert "takes 2 arguments (x, y), got 1" in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_scalars_are_accepted_for_matching_dtypes(backend):
    f = tp.compile(tp.trace(lambda x: x * 2.0, np.float64(1.0)), backend=backend)
    assert f(3.0) == 6.0 and f(np.float64(3.0)) == 6.0
    msg = _run_error(tp.compile(tp.trace(lambda x: x * 2.0, np.float32(1.0)), backend=backend), 3.0)
    assert "float64" in msg and "f32" in msg


@pytest.fixture(scope="module", params=BACKENDS)
def f_tree(request):
    def model(params, x):
        return {"y": x @ params["w"] + params["b"], "n": params["layers"][0] * 1.0}
    params = {"w": np.ones((3, 2), F32), "b": np.zeros(2, F32), "layers": [np.ones(2, F32)]}
    return tp.compile(tp.trace(model, params, tp.Spec(("B", 3))), backend=request.param)


def test_pytree_roundtrip(f_tree):
    params = {"w": np.ones((3, 2), F32), "b": np.full(2, 0.5, F32), "layers": [np.arange(2, dtype=F32)]}
    out = f_tree(params, np.ones((4, 3), F32))
    assert set(out) == {"y", "n"}
    np.testing.assert_array_equal(out["y"], np.full((4, 2), 3.5, F32))
    np.testing.assert_array_equal(out["n"], [0.0, 1.0])


@pytest.mark.parametrize("bad", [
    {"w": np.ones((3, 2), F32), "b": np.zeros(2, F32)},                                        # missing key
    {"w": np.ones((3, 2), F32), "b": np.zeros(2, F32), "layers": [np.ones(2, F32)], "z": np.ones(1, F32)},  # extra
    {"w": np.ones((3, 2), F32), "b": np.zeros(2, F32), "layers": (np.ones(2, F32),)},         # tuple for list
    {"w": np.ones((3, 2), F32), "b": np.zeros(2, F32), "layers": np.ones(2, F32)},            # leaf for list
    [np.ones((3, 2), F32), np.zeros(2, F32), [np.ones(2, F32)]],                                # list for dict
])
def test_wrong_pytree_structure(f_tree, bad):
    msg = _run_error(f_tree, bad, np.ones((4, 3), F32))
    assert "argument 'params'" in msg and "structure" in msg and "hint:" in msg


@pytest.mark.parametrize("leaf", ["abc", None, object()])
def test_non_array_leaf(f_tree, leaf):
    bad = {"w": leaf, "b": np.zeros(2, F32), "layers": [np.ones(2, F32)]}
    msg = _run_error(f_tree, bad, np.ones((4, 3), F32))
    assert "params" in msg and "w" in msg and "not an array" in msg


# ---- run-time op errors name the op and the user's source line --------------------------------

def _ce(x, y):
    return tp.cross_entropy(x, y)  # <- the source line the RunError names


def _ce_line():
    import inspect
    lines, first = inspect.getsourcelines(_ce)
    return first + next(i for i, t in enumerate(lines) if "# <-" in t)


@pytest.mark.parametrize("labels,bad", [([0, 3], 3), ([-1, 0], -1), ([0, 17], 17)])
def test_cross_entropy_label_out_of_range(labels, bad):
    f = tp.compile(tp.trace(_ce, tp.Spec(("B", 3)), tp.Spec(("B",), "int64")))
    with pytest.raises(tp.RunError) as info:
        f(np.zeros((2, 3), F32), np.array(labels, I64))
    msg = str(info.value)
    assert msg.startswith("cross_entropy failed")
    assert f"label {bad} is out of range for 3 classes" in msg
    assert re.search(rf"test_numpy_backend\.py:{_ce_line()}\b", msg), msg
    assert isinstance(info.value.__cause__, ValueError)


def test_nll_loss_label_out_of_range_and_ignore_index_is_fine():
    f = tp.compile(tp.trace(lambda x, y: tp.nll_loss(x, y, ignore_index=-1), np.zeros((2, 3), F32),
                            np.zeros(2, I64)))
    assert_close(f(np.full((2, 3), -1.0, F32), np.array([-1, 2])), 1.0)
    with pytest.raises(tp.RunError, match=r"nll_loss failed.*label 3 is out of range"):
        f(np.zeros((2, 3), F32), np.array([3, 0]))


# ---- symbolic dims accept any size ------------------------------------------------------------

def test_symbolic_dims_accept_any_size():
    def model(x, w, labels):
        h = tp.tanh(x @ w)
        return tp.cross_entropy(h.reshape(-1, 4), labels), tp.softmax(h, axis=0).sum(axis=0)
    f = tp.compile(tp.trace(model, tp.Spec(("B", 3)), np.ones((3, 4), F32), tp.Spec(("B",), "int64")))
    w = np.linspace(-1, 1, 12).reshape(3, 4).astype(F32)
    for b in (1, 2, 7, 64):
        x = np.linspace(-2, 2, 3 * b).reshape(b, 3).astype(F32)
        labels = np.arange(b) % 4
        loss, colsum = f(x, w, labels)
        h = np.tanh(x.astype(F64) @ w)
        lse = np.log(np.exp(h).sum(1))
        assert_close(loss, np.mean(lse - h[np.arange(b), labels]))
        assert_close(colsum, np.ones(4))
        assert loss.dtype == F32 and colsum.dtype == F32


def test_symbolic_dim_of_size_zero():
    f = tp.compile(tp.trace(lambda x: (tp.exp(x) * 2.0).sum(axis=1), tp.Spec(("B", 3))))
    out = f(np.zeros((0, 3), F32))
    assert out.shape == (0,) and out.dtype == F32


@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_with_a_symbolic_dim_of_size_zero(backend):
    # found by tests/test_fuzz_programs.py: at B = 0 numpy cannot infer the -1 of
    # reshape(x, ("B", -1)), and ONNX Reshape read the run-time 0 of a symbolic dim as
    # "copy the input's dim" (wrong shapes, or a failed run)
    g = tp.trace(lambda x: (tp.reshape(x, ("T", "B")) * 2.0, tp.reshape(x, ("B", -1)), tp.reshape(x, (-1, "T"))),
                 tp.Spec(("B", 1, 1, "T")))
    f = tp.compile(g, backend=backend)
    for b in (0, 3):
        out = f(np.ones((b, 1, 1, 2), F32))
        assert [o.shape for o in out] == [(2, b), (b, 2), (b, 2)]


# ---- the slot plan: intermediates are freed after their last use --------------------------------

def test_long_chain_reuses_slots():
    def chain(x):
        for _ in range(100):
            x = tp.tanh(x) + 1.0
        return x
    g = tp.trace(chain, np.zeros(3, F32))
    assert len(g.nodes) == 200
    f = NumpyFunction(g)
    # one input, one shared constant, and two slots that alternate for the intermediates
    assert f._nslots <= 4, f._nslots
    want = np.zeros(3)
    for _ in range(100):
        want = np.tanh(want) + 1.0
    assert_close(f(np.zeros(3, F32)), want)


def test_live_values_are_not_overwritten_by_reuse():
    """A value used again at the end of a long chain keeps its slot while the chain reuses others."""
    def f(x):
        a = tp.exp(x)
        h = a
        for _ in range(30):
            h = tp.sin(h)
        return h * a + a, a
    g = tp.trace(f, np.zeros(4, F64))
    fn = NumpyFunction(g)
    assert fn._nslots <= 6, fn._nslots
    x = np.linspace(-1, 1, 4)
    a = np.exp(x)
    h = a
    for _ in range(30):
        h = np.sin(h)
    out, a_out = fn(x)
    assert_close(out, h * a + a)
    assert_close(a_out, a)


def test_outputs_inputs_constants_and_dead_nodes():
    c = np.arange(3, dtype=F32)

    def f(x):
        tp.exp(x)  # dead: never used
        return x, x + c, c, x + c
    fn = tp.compile(tp.trace(f, np.zeros(3, F32)))
    for _ in range(2):  # a compiled function runs any number of times with fresh inputs
        x = np.random.default_rng(0).standard_normal(3).astype(F32)
        out = fn(x)
        np.testing.assert_array_equal(out[0], x)
        np.testing.assert_array_equal(out[1], x + c)
        np.testing.assert_array_equal(out[2], c)
        np.testing.assert_array_equal(out[3], x + c)
    assert isinstance(out, tuple) and len(out) == 4


def test_inputs_are_not_modified():
    def f(x, w, b):
        return tp.relu(tp.conv2d(x, w, b, padding=1)).sum()
    x, w, b = np.ones((1, 2, 4, 4), F32), np.ones((3, 2, 3, 3), F32), np.ones(3, F32)
    copies = [a.copy() for a in (x, w, b)]
    tp.run(tp.trace(f, x, w, b), x, w, b)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_results_are_numpy_arrays_with_graph_dtypes():
    g = tp.trace(lambda x, n: (x.sum(), n.max(), x > 0, tp.mean(x)), np.zeros(3, F32), np.zeros(3, np.int32))
    outs = tp.run(g, np.ones(3, F32), np.arange(3, dtype=np.int32))
    assert [type(o) for o in outs] == [np.ndarray] * 4
    assert [o.dtype for o in outs] == [F32, np.int32, np.bool_, F32]
    assert [o.shape for o in outs] == [(), (), (3,), ()]


def test_unknown_backend():
    with pytest.raises(tp.TapeirError, match="unknown backend"):
        tp.compile(tp.trace(lambda x: x, np.zeros(1, F32)), backend="jax")


def test_logsumexp_and_softmax_over_an_empty_axis():
    # found by running tests/test_fuzz_programs.py programs at B = 0: the max shift of
    # logsumexp/softmax/log_softmax reduced an empty axis ("zero-size array to reduction
    # operation maximum"); logsumexp of nothing is -inf (as torch), softmax of nothing is empty
    g = tp.trace(lambda x: (tp.logsumexp(x, axis=0), tp.softmax(x, axis=0), tp.log_softmax(x, axis=0),
                            tp.logsumexp(x, axis=1)), tp.Spec(("B", 2)))
    lse, sm, lsm, rows = tp.run(g, np.zeros((0, 2), F32))
    np.testing.assert_array_equal(lse, [-np.inf, -np.inf])
    assert sm.shape == lsm.shape == (0, 2) and rows.shape == (0,)
    vg = tp.value_and_grad(tp.trace(lambda x: tp.logsumexp(x, axis=1).sum() + tp.log_softmax(x, axis=0).sum(),
                                    tp.Spec(("B", 2))))
    value, grad = tp.run(vg, np.zeros((0, 2), F32))
    assert float(value) == 0.0 and grad.shape == (0, 2)
