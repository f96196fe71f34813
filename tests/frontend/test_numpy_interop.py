"""numpy functions on traced Tensors record tp ops, or fail with a TraceError naming tp's."""
import numpy as np
import pytest

import tapeir as tp
from support import assert_close


def test_numpy_ufuncs_and_functions_record_tp_ops():
    a = np.full((2, 3), 2.0, np.float32)

    def f(x):
        return np.exp(x) + a * x + np.sum(x, axis=0) + np.maximum(x, 0.0) + np.concatenate([x, x], axis=0)[:2]

    g = tp.trace(f, tp.Spec((2, 3)))
    assert [n.op for n in g.nodes] == ["exp", "mul", "add", "sum", "add", "maximum", "add", "concatenate",
                                       "slice", "add"]
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    want = np.exp(x) + a * x + np.sum(x, axis=0) + np.maximum(x, 0.0) + x
    assert_close(tp.run(g, x), want)


@pytest.mark.parametrize("fn,needle", [
    (lambda x: np.sort(x), "numpy.sort cannot run on a traced Tensor"),
    (lambda x: np.add.reduce(x), "numpy.add.reduce cannot run"),
    (lambda x: np.sum(x, dtype=np.float64), "numpy.sum on a traced Tensor"),
])
def test_unsupported_numpy_calls_are_trace_errors(fn, needle):
    with pytest.raises(tp.TraceError, match=needle) as e:
        tp.trace(fn, tp.Spec((2, 3)))
    assert "hint:" in str(e.value) and "test_numpy_interop.py:" in str(e.value)


@pytest.mark.parametrize("dtype, scalar", [("float64", np.float32(0.5)), ("float64", np.float16(2.0)),
                                           ("float32", np.float16(-3.0)), ("float32", np.int8(3))])
def test_narrow_numpy_scalar_with_a_wider_tensor(dtype, scalar):
    # found by tests/test_fuzz_programs.py: the range check compared np.float32(0.5) with
    # float64's bounds in float32, a RuntimeWarning ("overflow encountered in cast"; an
    # error under this suite's warning filter) on every trace of x64 * np.float32(0.5)
    g = tp.trace(lambda x: x * scalar + scalar, tp.Spec((2,), dtype))
    assert g.outputs[0].type == tp.Spec((2,), dtype).type  # weakly typed: the tensor's dtype
    np.testing.assert_array_equal(tp.run(g, np.ones(2, dtype)), np.full(2, float(scalar) * 2, dtype))
