"""Asking a traced Tensor for its value is a TraceError at the user's line (issue 8, item 13),
whichever way it is asked: float(x) as before, x.item(), x.tolist(), np.asarray(x)."""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from support import marked_line

ASKS = {
    "item": lambda x: x * x.item(),  # @item
    "tolist": lambda x: x.tolist(),  # @tolist
    "asarray": lambda x: np.asarray(x) * 2.0,  # @asarray
    "array-of-tensors": lambda x: np.array([x, x]),  # @array-of-tensors
    "complex": lambda x: complex(x),  # @complex
    "float": lambda x: float(x),  # @float
}


@pytest.mark.parametrize("name", list(ASKS))
def test_asking_for_a_value_is_a_trace_error_at_the_users_line(name):
    with pytest.raises(tp.TraceError, match="value is unknown while tracing") as info:
        tp.trace(ASKS[name], tp.Spec(()))
    assert info.value.where == marked_line(__file__, name)


def test_asarray_hints_at_the_tensor_vocabulary():
    with pytest.raises(tp.TraceError) as info:
        tp.trace(lambda x: np.asarray(x), tp.Spec((3,)))
    assert "numpy.asarray" in info.value.problem and "tp.concatenate" in info.value.hint
