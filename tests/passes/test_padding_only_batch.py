"""Class losses on batches with nothing to count (issue 8, items 8 and 14).

A padding-only batch (every label == ignore_index) with mean reduction is 0/0: the loss
is nan, as torch's, and the gradient is zero, as torch's, so one such batch leaves the
parameters finite. An empty batch (B = 0) gives the same values on both backends: mean
nan, sum 0, none empty, gradients empty. References: PyTorch where installed, and a
numpy formula written here (softmax minus one-hot, scaled by valid / count).
"""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from support import assert_close, rng

BACKENDS = ["numpy", "onnxruntime"]


def _loss(op, reduction, ignore_index=-100):
    if op == "cross_entropy":
        return lambda x, y: tp.cross_entropy(x, y, reduction=reduction, ignore_index=ignore_index).sum()
    return lambda x, y: tp.nll_loss(tp.log_softmax(x, axis=1), y, reduction=reduction,
                                    ignore_index=ignore_index).sum()


def _reference(x, y, reduction, ignore_index):
    """float64 numpy: the loss and d loss / d x, written from the definition."""
    x = x.astype(np.float64)
    c = x.shape[1]
    xl = np.moveaxis(x, 1, -1).reshape(-1, c)
    yl = y.reshape(-1)
    m = xl.max(axis=1, keepdims=True)
    logp = xl - m - np.log(np.exp(xl - m).sum(axis=1, keepdims=True))
    valid = yl != ignore_index
    onehot = (np.arange(c) == np.where(valid, yl, 0)[:, None]) & valid[:, None]
    per = -(logp * onehot).sum(axis=1)
    count = valid.sum()
    if reduction == "mean":
        value = per.sum() / count if count else np.nan
        scale = valid / max(count, 1)
    else:
        value, scale = per.sum(), valid.astype(np.float64)
    grad = (np.exp(logp) - onehot) * scale[:, None]
    grad = np.moveaxis(grad.reshape(x.shape[:1] + x.shape[2:] + (c,)), -1, 1)
    return value, grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)], ids=["NC", "NCd"])
def test_every_label_ignored(backend, op, reduction, shape):
    x = rng("pad", shape).standard_normal(shape).astype(np.float32)
    y = np.full(shape[:1] + shape[2:], 7, np.int64)
    spec = (tp.Spec(("B",) + shape[1:]), tp.Spec(("B",) + shape[2:], "int64"))
    g = tp.value_and_grad(tp.trace(_loss(op, reduction, ignore_index=7), *spec))
    value, grad = tp.compile(g, backend=backend)(x, y)
    want_value, want_grad = _reference(x, y, reduction, 7)
    assert_close(value, np.float32(want_value))  # nan for mean (0/0, as torch), else 0
    assert_close(grad, want_grad.astype(np.float32), exact=True)  # zeros
    assert not grad.any()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_padding_only_batch_matches_torch(reduction):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    x = rng("pad-torch").standard_normal((5, 4))
    y = np.full(5, -100, np.int64)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(y), reduction=reduction).sum()
    lt.backward()
    g = tp.value_and_grad(tp.trace(_loss("cross_entropy", reduction), tp.Spec(("B", 4), "float64"),
                                   tp.Spec(("B",), "int64")))
    for backend in BACKENDS:
        value, grad = tp.compile(g, backend=backend)(x, y)
        assert_close(value, lt.detach().numpy())
        assert_close(grad, xt.grad.numpy(), exact=True)


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_some_labels_ignored_still_average_over_the_rest(op):
    x = rng("pad-some").standard_normal((6, 3)).astype(np.float32)
    y = np.array([0, -100, 2, -100, 1, 1])
    g = tp.value_and_grad(tp.trace(_loss(op, "mean"), tp.Spec(("B", 3)), tp.Spec(("B",), "int64")))
    want_value, want_grad = _reference(x, y, "mean", -100)
    for backend in BACKENDS:
        value, grad = tp.compile(g, backend=backend)(x, y)
        assert_close(value, want_value, dtype="float32")
        assert_close(grad, want_grad, dtype="float32")


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction,want", [("mean", np.nan), ("sum", 0.0)])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 2), (2, 3, 0)], ids=["N0", "N0d", "d0"])
def test_an_empty_batch_agrees_on_both_backends(op, reduction, want, shape):
    """onnxruntime's SoftmaxCrossEntropyLoss fails on an empty input (its Reshape to
    [N, C, -1]); the export lowers a possibly-empty cross_entropy through NLL instead."""
    spec = (tp.Spec(("B", 3, "D")[:len(shape)]), tp.Spec(("B", "D")[:len(shape) - 1], "int64"))
    g = tp.value_and_grad(tp.trace(_loss(op, reduction), *spec))
    x, y = np.zeros(shape, np.float32), np.zeros(shape[:1] + shape[2:], np.int64)
    for backend in BACKENDS:
        with np.errstate(invalid="ignore"):
            value, grad = tp.compile(g, backend=backend)(x, y)
        assert_close(value, np.float32(want))
        assert grad.shape == shape
    none = tp.trace(lambda x, y: tp.cross_entropy(x, y, reduction="none"), *spec)
    for backend in BACKENDS:
        assert tp.compile(none, backend=backend)(x, y).shape == y.shape


@pytest.mark.parametrize("shape", [(4,), (3, 5)])
def test_int32_sums_wrap_on_both_backends(shape):
    """numpy's int32 sum wraps modulo 2**32; onnxruntime's ReduceSum would saturate, so the
    export sums in int64 and casts back."""
    x = rng("i32").integers(2 ** 30, 2 ** 31 - 1, shape).astype(np.int32)
    g = tp.trace(lambda x: (x.sum(), x.sum(axis=-1, keepdims=True)), tp.Spec(shape, "int32"))
    wrap = lambda s: ((s + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)  # noqa: E731  (two's complement)
    want = [wrap(np.int64(x).sum()), wrap(np.int64(x).sum(axis=-1, keepdims=True))]
    for backend in BACKENDS:
        got = tp.run(g, x, backend=backend)
        for a, b in zip(got, want):
            assert a.dtype == np.int32
            np.testing.assert_array_equal(a, b)


def test_int64_sum_overflow_is_a_listed_difference():
    """numpy wraps, onnxruntime saturates (README: known differences); pinned so a change shows."""
    x = np.full(4, 2 ** 62 + 7, np.int64)
    g = tp.trace(lambda x: x.sum(), tp.Spec((4,), "int64"))
    assert int(tp.run(g, x)) == 28
    assert int(tp.run(g, x, backend="onnxruntime")) == 2 ** 63 - 1
