"""Export rule 13 (backends/onnx_lowering.py): a float32 sum over leading axes is a MatMul
of ones and the tensor as [M, rest]; checked against numpy in float64, with the same
non-finite results as ReduceSum, and left as ReduceSum where the rule does not apply."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort  # noqa: F401  (a runtime dependency: never skipped)
import pytest

import tapeir as tp
from support import assert_close, rng


def _ort(g):
    return tp.compile(g, backend="onnxruntime", intra_op_num_threads=1)


def _op_types(f):
    return [n.op_type for n in f.model.graph.node]


@pytest.mark.parametrize("shape,axes,keepdims", [
    ((8, 32, 24), (0, 1), False),       # a bias gradient over batch and time
    ((6, 5), (0,), True),
    ((2, 3, 4, 5), (0, 1, 2), False),
    ((3, 1, 4), (1, 0), True),          # axes in any order
])
def test_sum_over_leading_axes_is_a_matmul(shape, axes, keepdims):
    x = rng().standard_normal(shape).astype(np.float32)
    f = _ort(tp.trace(lambda x: tp.sum(x, axis=axes, keepdims=keepdims), x))
    assert "MatMul" in _op_types(f) and "ReduceSum" not in _op_types(f)
    assert_close(f(x), np.sum(x.astype(np.float64), axis=axes, keepdims=keepdims), dtype="float32")


@pytest.mark.parametrize("batch", [3, 1, 0])
def test_sum_over_a_symbolic_batch(batch):
    g = tp.trace(lambda x: tp.sum(x, axis=(0, 1)), tp.Spec(("B", 4, 5)))
    f = _ort(g)
    assert "MatMul" in _op_types(f)
    x = rng().standard_normal((batch, 4, 5)).astype(np.float32)
    assert_close(f(x), np.sum(x.astype(np.float64), axis=(0, 1)), dtype="float32")


def test_sum_as_matmul_keeps_nonfinite_results():
    x = np.ones((4, 3), np.float32)
    x[1, 0], x[2, 1], x[3, 1], x[0, 2] = np.inf, np.inf, -np.inf, np.nan
    f = _ort(tp.trace(lambda x: tp.sum(x, axis=0), x))
    assert "MatMul" in _op_types(f)
    assert_close(f(x), np.array([np.inf, np.nan, np.nan], np.float32))


@pytest.mark.parametrize("shape,axes,dtype", [
    ((4, 5), (1,), "float32"),          # not leading
    ((4, 5, 6), (0, 2), "float32"),
    ((4, 5), (0, 1), "float32"),        # every axis: a plain ReduceSum
    ((4, 5), (0,), "float64"),
])
def test_other_sums_stay_reducesum(shape, axes, dtype):
    x = rng().standard_normal(shape).astype(dtype)
    f = _ort(tp.trace(lambda x: tp.sum(x, axis=axes), x))
    assert "ReduceSum" in _op_types(f)
    assert_close(f(x), np.sum(x.astype(np.float64), axis=axes), dtype=dtype)
