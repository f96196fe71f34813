"""Bad compile options are TapeirErrors naming the option (issue 8, item 13), never a raw
ValueError from int() or onnxruntime's printed fallback to another provider."""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp


def _g():
    return tp.trace(lambda x: x * 2.0, tp.Spec((2,)))


@pytest.mark.parametrize("kw, match", [
    (dict(intra_op_num_threads="x"), "intra_op_num_threads='x' is not a thread count"),
    (dict(intra_op_num_threads=-1), "intra_op_num_threads=-1"),
    (dict(intra_op_num_threads=2.5), "intra_op_num_threads=2.5"),
    (dict(intra_op_num_threads=True), "intra_op_num_threads=True"),
    (dict(graph_optimization_level=["all"]), "graph_optimization_level"),
    (dict(providers="CPUExecutionProvider"), "not a list of provider names"),
    (dict(providers=["NoSuchExecutionProvider"]), "'NoSuchExecutionProvider' is not available"),
    (dict(providers=[1]), "provider 1 is not available"),
])
def test_bad_onnxruntime_options_are_tapeir_errors(kw, match):
    with pytest.raises(tp.TapeirError, match=match):
        tp.compile(_g(), backend="onnxruntime", **kw)


@pytest.mark.parametrize("kw", [dict(intra_op_num_threads=1), dict(intra_op_num_threads=np.int64(0)),
                                dict(providers=["CPUExecutionProvider"]),
                                dict(providers=[("CPUExecutionProvider", {})])])
def test_good_onnxruntime_options_run(kw):
    f = tp.compile(_g(), backend="onnxruntime", **kw)
    np.testing.assert_array_equal(f(np.ones(2, np.float32)), [2.0, 2.0])
