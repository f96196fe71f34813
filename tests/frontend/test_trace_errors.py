"""Trace-time errors: a tp.TraceError whose message names the op, the operand shapes, the
user's own file:line (this file, the line of the offending call) and a hint.

Each case is a function whose offending line carries the marker comment `# <-`; the
test finds that line with `inspect`, so the expected line number never goes stale.
"""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import tapeir as tp

F32, F64 = np.float32, np.float64


def _a(*shape, dtype=F32):
    return np.zeros(shape, dtype)


def _marked_line(fn) -> int:
    lines, first = inspect.getsourcelines(fn)
    hits = [first + i for i, text in enumerate(lines) if "# <-" in text]
    assert len(hits) == 1, f"{fn.__name__} needs exactly one '# <-' marker"
    return hits[0]


def raises_trace_error(fn, *args) -> tp.TraceError:
    with pytest.raises(tp.TraceError) as info:
        tp.trace(fn, *args)
    return info.value


# ---- the offending programs ------------------------------------------------------------

def add_mismatch(x, y):
    h = x * 2.0
    return h + y  # <-


def matmul_mismatch(a, b):
    return a @ b  # <-


def matmul_fn_mismatch(a, b):
    return tp.matmul(a, b)  # <-


def reshape_bad_size(x):
    return x.reshape(5)  # <-


def reshape_bad_infer(x):
    return tp.reshape(x, (5, -1))  # <-


def dtype_mix(x, y):
    return x + y  # <-


def dtype_mix_const(x):
    return tp.maximum(x, np.ones(3, F64))  # <-


def bool_of_tensor(x):
    if x.sum() > 0:  # <-
        return x
    return -x


def float_of_tensor(x):
    return x * float(x[0])  # <-


def index_out_of_range(x):
    return x[5]  # <-


def index_negative_out_of_range(x):
    return x[:, -5]  # <-


def index_too_many(x):
    return x[0, 0, 0]  # <-


def concat_mismatch(x, y):
    return tp.concatenate([x, y], axis=0)  # <-


def where_broadcast(x, y):
    return tp.where(x > 0, x, y)  # <-


def conv_channels(x, w):
    return tp.conv2d(x, w)  # <-


def ce_labels(x, y):
    return tp.cross_entropy(x, y)  # <-


def mse_shapes(x, y):
    return tp.mse_loss(x, y)  # <-


def symbolic_mismatch(x, y):
    return x - y  # <-


def transpose_bad(x):
    return x.transpose(0, 0)  # <-


def broadcast_to_bad(x):
    return tp.broadcast_to(x, (4, 2))  # <-


def squeeze_bad(x):
    return tp.squeeze(x, 1)  # <-


def sum_axis_bad(x):
    return x.sum(axis=2)  # <-


def int_needs_float(x):
    return tp.exp(x)  # <-


def layer_norm_bad(x):
    return tp.layer_norm(x, (3,))  # <-


def _helper_that_fails(x):
    return x @ x  # <-


def via_user_helper(x):
    return _helper_that_fails(x) + 1.0


CASES = [
    # fn, args, strings the message must contain (the op and both shapes)
    (add_mismatch, [_a(3, 4), _a(5)], ["add", "f32[3,4]", "f32[5]"]),
    (matmul_mismatch, [_a(3, 4), _a(5, 6)], ["matmul", "f32[3,4]", "f32[5,6]", "4 vs 5"]),
    (matmul_fn_mismatch, [_a(3), _a(4)], ["matmul", "f32[3]", "f32[4]"]),
    (reshape_bad_size, [_a(3, 4)], ["reshape", "f32[3,4]", "[5]"]),
    (reshape_bad_infer, [_a(3, 4)], ["reshape", "f32[3,4]", "[5, -1]"]),
    (dtype_mix, [_a(3), _a(3, dtype=F64)], ["add", "f32[3]", "f64[3]"]),
    (dtype_mix_const, [_a(3)], ["maximum", "f32[3]", "f64[3]"]),
    (bool_of_tensor, [_a(3)], ["bool()", "bool[]"]),
    (float_of_tensor, [_a(3)], ["float()", "f32[]"]),
    (index_out_of_range, [_a(3, 4)], ["getitem", "f32[3,4]", "index 5", "size 3"]),
    (index_negative_out_of_range, [_a(3, 4)], ["getitem", "f32[3,4]", "index -5", "size 4"]),
    (index_too_many, [_a(3, 4)], ["getitem", "f32[3,4]", "3"]),
    (concat_mismatch, [_a(2, 3), _a(2, 4)], ["concatenate", "f32[2,3]", "f32[2,4]"]),
    (where_broadcast, [_a(3, 4), _a(3)], ["where", "f32[3,4]", "f32[3]"]),
    (conv_channels, [_a(1, 3, 5, 5), _a(2, 4, 3, 3)], ["conv2d", "f32[1,3,5,5]", "f32[2,4,3,3]"]),
    (ce_labels, [_a(4, 5), np.zeros(3, np.int64)], ["cross_entropy", "f32[4,5]", "i64[3]"]),
    (mse_shapes, [_a(4, 5), _a(5, 4)], ["mse_loss", "f32[4,5]", "f32[5,4]"]),
    (symbolic_mismatch, [tp.Spec(("B", 3)), tp.Spec(("C", 3))], ["sub", "f32[B,3]", "f32[C,3]"]),
    (transpose_bad, [_a(3, 4)], ["transpose", "f32[3,4]", "[0, 0]"]),
    (broadcast_to_bad, [_a(3)], ["broadcast_to", "f32[3]", "[4, 2]"]),
    (squeeze_bad, [_a(3, 4)], ["squeeze", "f32[3,4]", "[1]"]),
    (sum_axis_bad, [_a(3, 4)], ["sum", "f32[3,4]", "axis 2"]),
    (int_needs_float, [np.zeros(3, np.int64)], ["exp", "i64"]),
    (layer_norm_bad, [_a(3, 4)], ["layer_norm", "f32[3,4]", "[3]"]),
    (via_user_helper, [_a(3, 4)], ["matmul", "f32[3,4]"]),
]


@pytest.mark.parametrize("fn,args,needles", CASES, ids=[c[0].__name__ for c in CASES])
def test_trace_error_names_op_shapes_line_and_hint(fn, args, needles):
    target = _helper_that_fails if fn is via_user_helper else fn
    line = _marked_line(target)
    err = raises_trace_error(fn, *args)
    msg = str(err)
    for needle in needles:
        assert needle in msg, f"{needle!r} missing from:\n{msg}"
    # the user's source line, relative to the cwd when inside it: ".../test_trace_errors.py:<line>"
    assert err.where is not None and re.search(rf"(^|/)test_trace_errors\.py:{line}$", err.where), err.where
    assert f"at: {err.where}" in msg
    assert err.hint, f"no hint in:\n{msg}"
    assert f"hint: {err.hint}" in msg
    # the message leads with the problem, not with an internal file
    assert "reference_kernels" not in msg and "functions.py" not in msg


def test_trace_error_is_a_tapeir_error():
    err = raises_trace_error(add_mismatch, _a(3, 4), _a(5))
    assert isinstance(err, tp.TapeirError)
    assert err.problem.startswith("add:")


def test_broadcast_error_names_the_axis():
    msg = str(raises_trace_error(add_mismatch, _a(3, 4), _a(5)))
    assert "axis -1" in msg and "4 vs 5" in msg


def test_error_inside_composite_points_at_the_user_line():
    """binary_cross_entropy_with_logits is built from several ops inside tapeir; the error
    must still name the user's call, not a line of frontend/functions.py."""
    def f(x, y):
        return tp.binary_cross_entropy_with_logits(x, y)  # <-
    err = raises_trace_error(f, _a(3), _a(3, dtype=F64))
    assert err.where.endswith(f"test_trace_errors.py:{_marked_line(f)}")


def test_no_trace_running():
    with pytest.raises(tp.TraceError) as info:
        tp.softmax(np.zeros(3, F32))
    assert "no trace is running" in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize("bad", [
    lambda x: x["a"], lambda x: x[[0, 1]], lambda x: x[..., ...], lambda x: x[True],
])
def test_unsupported_indexing_is_a_trace_error(bad):
    with pytest.raises(tp.TraceError):
        tp.trace(bad, _a(3, 4))


@pytest.mark.parametrize("fn,needle", [
    (lambda x: x + "a", "str"),
    (lambda x: x.astype("int64") + 1.5, "float scalar"),
    (lambda x: tp.clip(x, 1.0, 0.0), "min=1.0"),
    (lambda x: tp.softmax(x, axis=2), "axis 2"),
    (lambda x: tp.gelu(x, approximate="fast"), "approximate"),
    (lambda x: tp.max_pool2d(x, 2, ceil_mode=True), "ceil_mode"),
    (lambda x: tp.mse_loss(x, x, reduction="avg"), "reduction"),
    (lambda x: tp.cross_entropy(x, np.zeros(3, np.int64), reduction="avg"), "reduction"),
])
def test_other_trace_errors(fn, needle):
    with pytest.raises(tp.TraceError) as info:
        tp.trace(fn, _a(3, 4) if "pool" not in repr(fn.__code__.co_names) else _a(1, 1, 4, 4))
    assert needle in str(info.value)


def test_symbolic_dims_multiply_and_unknown_symbols_are_rejected():
    def double(x):
        return tp.broadcast_to(np.zeros((1, 2), np.float32), (x.shape[0] * 2, 2)).sum() + x.sum()

    g = tp.trace(double, tp.Spec(("B", 2)))
    assert g.nodes[0].outputs[0].type.shape == ("2*B", 2)
    assert float(tp.run(g, np.ones((3, 2), np.float32))) == 6.0
    with pytest.raises(tp.TraceError, match=r"symbolic dim 'C' is not a dim of any input") as e:
        tp.trace(lambda x: tp.broadcast_to(np.zeros((1, 2), np.float32), ("C", 2)).sum(), tp.Spec(("B", 2)))
    assert "hint:" in str(e.value) and "test_trace_errors.py:" in str(e.value)
    with pytest.raises(tp.TraceError, match=r"cannot reshape f32\[B,2\] to \['B\+1', -1\]: 2\*B is not a multiple of B\+1"):
        tp.trace(lambda x: x.reshape(x.shape[0] + 1, -1), tp.Spec(("B", 2)))
    with pytest.raises(tp.TapeirError, match="cannot divide the symbolic dim 'B' with '/'"):
        tp.trace(lambda x: x.reshape(x.shape[0] / 2, -1), tp.Spec(("B", 2)))
