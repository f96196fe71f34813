"""issue 11's tp.* functions against independent references (numpy written here, torch
where installed), plus what the gradient and export tables cannot show: ties, extreme
values, symbolic sizes, clear errors, and the random numbers' statistics and streams.

Gradients of every op are in tests/passes/test_grad_ops.py (finite differences, torch);
export to onnxruntime in tests/backends/test_onnx_export.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from support import ONNXRUNTIME, assert_close, rng

I64 = tp.Spec((), "int64")


def _run(fn, *args, backend="numpy"):
    return tp.run(tp.trace(fn, *args), *args, backend=backend)


# ---- forward against numpy ----------------------------------------------------------------

def test_argmax_argmin_first_on_ties_and_flattened():
    x = np.array([[1.0, 5.0, 5.0], [-np.inf, -np.inf, 2.0], [3.0, 3.0, 3.0]], np.float32)
    for backend in ("numpy", "onnxruntime"):
        assert _run(lambda x: tp.argmax(x, axis=1), x, backend=backend).tolist() == [1, 2, 0]
        assert _run(lambda x: tp.argmin(x, axis=1), x, backend=backend).tolist() == [0, 0, 0]
        assert _run(lambda x: tp.argmax(x, axis=0, keepdims=True), x, backend=backend).tolist() == [[2, 0, 0]]
        assert int(_run(tp.argmax, x, backend=backend)) == int(np.argmax(x))
    xi = np.array([3, -7, 9, 9], np.int32)
    assert int(_run(tp.argmin, xi)) == 1 and int(_run(tp.argmax, xi)) == 2


def test_take_matches_numpy_and_rejects_out_of_range():
    gen = rng("take")
    table = gen.standard_normal((5, 3, 4)).astype(np.float32)
    ids = np.array([[2, -3], [0, 2]], np.int64)  # in range on every axis; a negative one counts from the end
    for axis in (0, 1, 2):
        want = np.take(table, ids, axis=axis)
        for backend in ("numpy", "onnxruntime"):
            got = tp.run(tp.trace(lambda t, i, a=axis: tp.take(t, i, axis=a), table, ids), table, ids,
                         backend=backend)
            assert_close(got, want, exact=True)
    g = tp.trace(tp.take, table, ids)
    with pytest.raises(tp.RunError, match="index 5 is out of range for an axis of size 5"):
        tp.run(g, table, np.array([[5, 0], [0, 0]]))


def test_embedding_symbolic_batch_and_vocabulary_sized_gradient():
    w = rng("emb").standard_normal((7, 3)).astype(np.float32)
    g = tp.trace(lambda w, ids: tp.embedding(ids, w).sum(), w, tp.Spec(("B", "T"), "int64"))
    ids = np.array([[1, 1, 6], [0, 1, 2]])
    grad = tp.run(tp.grad(g), w, ids)
    want = np.zeros_like(w)
    np.add.at(want, ids.reshape(-1), 1.0)
    assert_close(grad, want, exact=True)
    assert "scatter_add" in str(tp.grad(g))


def test_cumsum_matches_numpy():
    x = rng("cumsum").standard_normal((3, 5)).astype(np.float64)
    assert_close(_run(lambda x: tp.cumsum(x, 1), x), np.cumsum(x, 1))
    assert_close(_run(tp.cumsum, x), np.cumsum(x))
    rev_excl = np.flip(np.cumsum(np.flip(x, 0), 0), 0) - x
    assert_close(_run(lambda x: tp.cumsum(x, 0, exclusive=True, reverse=True), x), rev_excl)
    big = np.array([1e30, 1e30, -1e30], np.float32)  # extreme values stay finite where numpy's do
    assert_close(_run(tp.cumsum, big), np.cumsum(big))


def test_triu_tril_match_numpy_with_symbolic_sizes():
    """A causal mask over a symbolic sequence length: trilu needs no static size."""
    g = tp.trace(lambda x: (tp.tril(x), tp.triu(x, 1)), tp.Spec(("B", "T", "T")))
    x = rng("tri").standard_normal((2, 4, 4)).astype(np.float32)
    for backend in ("numpy", "onnxruntime"):
        lo, up = tp.run(g, x, backend=backend)
        assert_close(lo, np.tril(x), exact=True)
        assert_close(up, np.triu(x, 1), exact=True)


@pytest.mark.parametrize("eq, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("...ij,...jk", [(5, 2, 3), (5, 3, 4)]), ("ii->i", [(3, 3)]),
    ("i,i", [(4,), (4,)]), ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]), ("ij", [(2, 3)]),
    ("a b, b c -> c a", [(2, 3), (3, 4)]),
])
def test_einsum_matches_numpy(eq, shapes):
    gen = rng("einsum", eq)
    xs = [gen.standard_normal(s) for s in shapes]
    got = tp.run(tp.trace(lambda *xs: tp.einsum(eq, *xs), *xs), *xs)
    assert_close(got, np.einsum(eq.replace(" ", ""), *xs))


def test_var_std_stack_flatten_split_match_numpy():
    x = rng("stats").standard_normal((4, 6)) * 10 + 1e3  # a large mean: the two-pass variance keeps it
    for c in (0, 1, 2):
        assert_close(_run(lambda x: tp.var(x, 1, correction=c), x), np.var(x, 1, ddof=c))
        assert_close(_run(lambda x: tp.std(x, ddof=c, keepdims=True), x), np.std(x, ddof=c, keepdims=True))
    with pytest.raises(tp.TraceError, match="divides by 0"):  # torch gives nan; tapeir says why
        tp.trace(lambda x: tp.var(x[:, :1], 1), x)
    assert_close(_run(lambda x: tp.stack([x, x * 2.0], axis=-1), x), np.stack([x, x * 2], -1), exact=True)
    assert_close(_run(lambda x: tp.flatten(x), x), x.reshape(-1), exact=True)
    parts = _run(lambda x: tuple(tp.split(x, [2, -1], axis=1)), x)
    for got, want in zip(parts, np.split(x, [2, -1], axis=1)):
        assert_close(got, want, exact=True)
    g = tp.trace(lambda x: tp.var(x, 0), tp.Spec(("B", 3), "float64"))  # a symbolic count
    assert_close(tp.run(g, x[:, :3]), np.var(x[:, :3], 0, ddof=1))


# ---- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, args, match", [
    (lambda x: tp.einsum("ij,jk->ik", x, x), [np.ones((2, 3), np.float32)], "index 'j' has sizes 3 and 2"),
    (lambda x: tp.einsum("ijk->i", x), [np.ones((2, 3), np.float32)], "do not fit an operand of rank 2"),
    (lambda x: tp.take(x, np.array([0.5])), [np.ones(3, np.float32)], "indices have dtype float64"),
    (lambda x: tp.dropout(x, 1.5, 0), [np.ones(3, np.float32)], "is not a probability"),
    (lambda x: tp.dropout(x, 0.5), [np.ones(3, np.float32)], "training mode needs a key"),
    (lambda x: tp.random_uniform(x, (2,)), [np.ones((), np.float32)], "key must be an int64 scalar"),
    (lambda x: tp.triu(x), [np.ones(3, np.float32)], "needs a matrix"),
    (lambda x: tp.split(x, 4), [np.ones(6, np.float32)], "4 sections do not divide"),
    (lambda x: tp.batch_norm(x, np.zeros(2, np.float32), np.ones(2, np.float32)), [np.ones((2, 3), np.float32)],
     r"mean f32\[2\] must be \[3\]"),
])
def test_bad_input_is_a_clear_trace_error(fn, args, match):
    with pytest.raises(tp.TraceError, match=match) as e:
        tp.trace(fn, *args)
    assert "test_issue11_ops.py" in (e.value.where or "")


def test_einsum_diagonal_has_no_gradient_rule():
    g = tp.trace(lambda x: tp.einsum("ii->i", x).sum(), np.ones((2, 2)))
    with pytest.raises(tp.TapeirError, match="repeated within one operand"):
        tp.grad(g)


# ---- randomness -------------------------------------------------------------------------------

def test_random_uniform_statistics():
    """Mean, variance, a chi-square over 64 bins and lag correlations, for a few keys: each
    within ~4 standard errors of a true uniform's."""
    n = 200_000
    g = tp.trace(lambda k: tp.random_uniform(k, (n,), "float64"), I64)
    for key in (0, 1, -5, 2 ** 40):
        u = tp.run(g, np.int64(key))
        assert u.min() >= 0 and u.max() < 1
        assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
        assert abs(u.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / n)
        hist = np.bincount((u * 64).astype(int), minlength=64)
        chi2 = ((hist - n / 64) ** 2 / (n / 64)).sum()
        assert chi2 < 63 + 4 * np.sqrt(2 * 63), (key, chi2)
        c = u - 0.5
        for lag in (1, 2, 7, 1024):
            r = (c[:-lag] * c[lag:]).mean() * 12
            assert abs(r) < 4 / np.sqrt(n), (key, lag, r)
    a, b = (tp.run(g, np.int64(k)) for k in (3, 4))
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(n)  # neighbouring keys are independent streams


def test_random_streams_are_identical_in_numpy_and_onnxruntime():
    g = tp.trace(lambda x, k: (tp.random_uniform(k, x.shape), tp.dropout(x, 0.3, k), tp.random_normal(k, (50,))),
                 tp.Spec(("B", 33)), I64)
    x = rng("stream").standard_normal((7, 33)).astype(np.float32)
    for key in (0, 12345, -1):
        u_np, d_np, z_np = tp.run(g, x, np.int64(key))
        u_ort, d_ort, z_ort = tp.run(g, x, np.int64(key), backend="onnxruntime")
        assert_close(u_ort, u_np, exact=True)
        assert_close(d_ort, d_np, exact=True)
        assert_close(z_ort, z_np, ulps=ONNXRUNTIME, why="onnxruntime's own log, sqrt and cos")
    assert not np.array_equal(tp.run(g, x, np.int64(1))[0], tp.run(g, x, np.int64(2))[0])
    assert np.array_equal(tp.run(g, x, np.int64(1))[0], tp.run(g, x, np.int64(1))[0])


def test_random_normal_statistics():
    n = 100_000
    z = tp.run(tp.trace(lambda k: tp.random_normal(k, (n,), "float64"), I64), np.int64(9))
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs((np.abs(z) < 1).mean() - 0.682689) < 0.01 and np.abs(z).max() < 5.8


def test_dropout_by_statistics():
    x = np.ones((400, 250), np.float32)
    y = tp.run(tp.trace(lambda x, k: tp.dropout(x, 0.2, k), x, I64), x, np.int64(0))
    kept = y != 0
    assert abs(kept.mean() - 0.8) < 4 * np.sqrt(0.16 / x.size)
    assert_close(y[kept], np.full(kept.sum(), 1 / 0.8, np.float32))
    assert _run(lambda x: tp.dropout(x, 0.5, training=False), x) is not None


def test_dropout_matches_torch_with_the_mask_fed_in():
    """The same mask, fed to torch: forward and gradient equal torch's dropout arithmetic."""
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    p = 0.3
    x = rng("drop").standard_normal((6, 8)).astype(np.float32)
    mask = tp.run(tp.trace(lambda k: tp.random_uniform(k, (6, 8)) >= p, I64), np.int64(5))
    vg = tp.value_and_grad(tp.trace(lambda x, k: (tp.dropout(x, p, k) ** 2.0).sum(), x, I64))
    value, grad = tp.run(vg, x, np.int64(5))
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * torch.tensor(mask) / (1 - p)  # torch's dropout: input * bernoulli mask / (1 - p)
    (yt ** 2).sum().backward()
    assert_close(value, (yt ** 2).sum().detach().numpy())
    assert_close(grad, xt.grad.numpy())


# ---- batch norm ---------------------------------------------------------------------------------

def test_batch_norm_training_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    gen = rng("bn")
    x = gen.standard_normal((5, 3, 4, 4)) * 3 + 1
    w, b = gen.standard_normal(3), gen.standard_normal(3)
    rm, rv = gen.standard_normal(3), gen.random(3) + 0.5

    def step(x, w, b, rm, rv):
        return tp.batch_norm(x, rm, rv, w, b, training=True, momentum=0.2, eps=1e-3)

    spec = tp.Spec(("B", 3, 4, 4), "float64")
    y, m2, v2 = tp.run(tp.trace(step, spec, w, b, rm, rv), x, w, b, rm, rv)
    g = tp.trace(lambda *a: (step(*a)[0] ** 2.0).sum() * 0.1, spec, w, b, rm, rv)
    value, grads = tp.run(tp.value_and_grad(g, wrt=(0, 1, 2)), x, w, b, rm, rv)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=True, momentum=0.2, eps=1e-3)
    lt = (yt ** 2).sum() * 0.1
    lt.backward()
    assert_close(y, yt.detach().numpy())
    assert_close(m2, rmt.numpy())  # torch updated its running statistics in place
    assert_close(v2, rvt.numpy())
    assert_close(value, lt.detach().numpy())
    for got, t in zip(grads, (xt, wt, bt)):
        assert_close(got, t.grad.numpy())


def test_batch_norm_inference_matches_torch_in_both_backends():
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    gen = rng("bn-eval")
    x = gen.standard_normal((2, 3, 5)).astype(np.float32)
    w, b, rm = (gen.standard_normal(3).astype(np.float32) for _ in range(3))
    rv = (gen.random(3) + 0.5).astype(np.float32)
    want = torch.nn.functional.batch_norm(*(torch.tensor(a) for a in (x, rm, rv, w, b))).numpy()
    for backend in ("numpy", "onnxruntime"):
        got = tp.run(tp.trace(lambda x: tp.batch_norm(x, rm, rv, w, b), x), x, backend=backend)
        assert_close(got, want)
