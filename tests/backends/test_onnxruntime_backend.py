"""Where the onnxruntime backend and the numpy backend differ on edge inputs, pinned.

Each difference is listed under "Known differences" in backends/onnxruntime_backend.py;
if onnxruntime changes behaviour, a test here fails and that list needs updating.
"""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from support import assert_close

F32, I64 = np.float32, np.int64


def _both(fn, *args):
    g = tp.trace(fn, *args)
    return tp.run(g, *args), tp.run(g, *args, backend="onnxruntime")


def test_max_over_nan():
    got_np, got_ort = _both(lambda x: tp.max(x), np.array([1, np.nan, 3], F32))
    assert np.isnan(got_np) and got_ort == 3.0  # onnxruntime skips a NaN that is not first
    got_np, got_ort = _both(lambda x: tp.max(x), np.array([np.nan, 1, 3], F32))
    assert np.isnan(got_np) and np.isnan(got_ort)


def test_softmax_with_inf():
    x = np.array([[1, np.inf, 3], [1, 2, 3]], F32)
    with np.errstate(invalid="ignore"):
        got_np, got_ort = _both(lambda x: tp.softmax(x), x)
        lsm_np, lsm_ort = _both(lambda x: tp.log_softmax(x), x)
    np.testing.assert_array_equal(got_np[0], [0, np.nan, 0])
    assert np.isnan(got_ort[0]).all()
    np.testing.assert_array_equal(lsm_np[0], [-np.inf, np.nan, -np.inf])
    assert np.isnan(lsm_ort[0]).all()
    assert_close(got_np[1], got_ort[1])  # finite rows agree
    assert_close(lsm_np[1], lsm_ort[1])


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("label", [-2, 3])
def test_out_of_range_labels_raise_on_both(op, label):
    """onnxruntime alone would wrap label -2 to class 1 and fail opaquely on 3; the backend
    checks labels that are graph inputs, so both raise the same RunError."""
    fn = getattr(tp, op)
    g = tp.trace(lambda x, y: fn(x, y), tp.Spec(("B", "C")), tp.Spec(("B",), "int64"))
    x, y = np.zeros((2, 3), F32), np.array([0, label], I64)
    messages = []
    for backend in ("numpy", "onnxruntime"):
        with pytest.raises(tp.RunError) as info:
            tp.run(g, x, y, backend=backend)
        messages.append(info.value.problem)
    assert messages[0] == messages[1]
    assert f"label {label} is out of range for 3 classes" in messages[1] and op in messages[1]
    # ignore_index and in-range labels still run, with the same results
    y = np.array([0, -100], I64)
    assert_close(tp.run(g, x, y), tp.run(g, x, y, backend="onnxruntime"))


def test_computed_labels_are_not_checked():
    """Labels computed inside the graph reach onnxruntime unchecked: it wraps -2 to class 1
    (the documented gap); the numpy backend raises."""
    g = tp.trace(lambda x, y: tp.nll_loss(x, y - 3), tp.Spec((2, 3)), tp.Spec((2,), "int64"))
    x = np.log(np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], F32))
    y = np.array([3, 1], I64)  # labels 0 and -2
    with pytest.raises(tp.RunError, match="label -2"):
        tp.run(g, x, y)
    got = tp.run(g, x, y, backend="onnxruntime")
    assert_close(got, -(x[0, 0] + x[1, 1]) / 2)  # -2 read as class 1


def test_reductions_over_an_empty_axis():
    # found by running tests/test_fuzz_programs.py programs at B = 0
    x = np.zeros((0, 2), F32)
    g = tp.trace(lambda x: (x.sum(axis=0), tp.logsumexp(x, axis=0), tp.softmax(x, axis=0), x.mean(axis=0)),
                 tp.Spec(("B", 2)))
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"), np.errstate(invalid="ignore"):
        got_np = tp.run(g, x)
    got_ort = tp.run(g, x, backend="onnxruntime")
    for a, b in zip(got_np[:3], got_ort[:3]):  # these agree: 0, -inf, empty
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got_np[1], [-np.inf, -np.inf])
    assert np.isnan(got_np[3]).all() and (got_ort[3] == 0).all()  # mean: 0/0 in numpy, 0 in onnxruntime
    g = tp.trace(lambda x: x.max(axis=0), tp.Spec(("B", 2)))
    with pytest.raises(tp.RunError, match="zero-size array"):
        tp.run(g, x)
    np.testing.assert_array_equal(tp.run(g, x, backend="onnxruntime"), [-np.inf, -np.inf])


def test_max_pool_over_minus_inf():
    # found by tests/test_fuzz_programs.py: onnxruntime pads max_pool2d with float32's lowest
    # finite value, not -inf, so a padded window of -inf values is -3.4e38 there
    x = np.full((1, 1, 3, 3), -np.inf, F32)
    got_np, got_ort = _both(lambda x: tp.max_pool2d(x, 3, stride=1, padding=1), x)
    assert (got_np == -np.inf).all()
    assert got_ort[0, 0, 0, 0] == np.finfo(F32).min
