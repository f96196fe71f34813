"""numpy functions on traced Tensors record tp ops, or fail with a TraceError naming tp's."""
import numpy as np
import pytest

import tapeir as tp


def test_numpy_ufuncs_and_functions_record_tp_ops():
    a = np.full((2, 3), 2.0, np.float32)

    def f(x):
        return np.exp(x) + a * x + np.sum(x, axis=0) + np.maximum(x, 0.0) + np.concatenate([x, x], axis=0)[:2]

    g = tp.trace(f, tp.Spec((2, 3)))
    assert [n.op for n in g.nodes] == ["exp", "mul", "add", "sum", "add", "maximum", "add", "concatenate",
                                       "slice", "add"]
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    want = np.exp(x) + a * x + np.sum(x, axis=0) + np.maximum(x, 0.0) + x
    np.testing.assert_allclose(tp.run(g, x), want, rtol=1e-6)


@pytest.mark.parametrize("fn,needle", [
    (lambda x: np.sort(x), "numpy.sort cannot run on a traced Tensor"),
    (lambda x: np.add.reduce(x), "numpy.add.reduce cannot run"),
    (lambda x: np.sum(x, dtype=np.float64), "numpy.sum on a traced Tensor"),
])
def test_unsupported_numpy_calls_are_trace_errors(fn, needle):
    with pytest.raises(tp.TraceError, match=needle) as e:
        tp.trace(fn, tp.Spec((2, 3)))
    assert "hint:" in str(e.value) and "test_numpy_interop.py:" in str(e.value)
