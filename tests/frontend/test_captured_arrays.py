"""Closed-over numpy arrays are constants holding their value at the time of use (issue 8,
item 9): what eager numpy code computes, for every size. Large arrays used many times
unchanged stay one constant (bench/bench_trace.py --weights times that check)."""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp


@pytest.mark.parametrize("n", [1, 64, 65, 4096])
@pytest.mark.parametrize("mutate", ["assign", "inplace-op", "one-element", "sign-of-zero"])
def test_an_array_mutated_between_uses_is_seen_as_eager_code_sees_it(n, mutate):
    start = 0.0 if mutate == "sign-of-zero" else 1.0
    w = np.full(n, start, np.float32)

    def f(x):
        a = x * w
        if mutate == "assign":
            w[:] = 2.0
        elif mutate == "inplace-op":
            np.multiply(w, 3.0, out=w)
        elif mutate == "one-element":
            w[-1] = 5.0
        else:
            w[:] = -0.0  # equal to 0.0 as a float, not as bits: 1 / w turns from +inf to -inf
        b = x * w
        return a, b, x / w

    x = np.linspace(1, 2, n).astype(np.float32)
    with np.errstate(divide="ignore"):  # x / 0 is inf, on purpose
        want = f(x)        # eager numpy: the ground truth, mutations and all
        w[:] = start
        g = tp.trace(f, tp.Spec((n,)))
        w[:] = 9.0         # the graph holds values, not the array: later changes do not matter
        got = tp.run(g, x)
    for a, e in zip(got, want):
        np.testing.assert_array_equal(a, e)


def test_an_unchanged_array_is_one_constant_however_often_used():
    w = np.arange(1000, dtype=np.float32)
    g = tp.trace(lambda x: ((x * w + w) * w - tp.exp(w)).sum(), tp.Spec((1000,)))
    assert [c.type.shape for c in g.constants if c.type.rank] == [(1000,)]


def test_a_non_contiguous_view_sees_its_base_change():
    base = np.zeros((10, 10), np.float32)
    t = base.T  # 100 elements, not C-contiguous

    def f(x):
        a = x + t
        base[0, 3] = 7.0
        return a, x + t

    got = tp.run(tp.trace(f, tp.Spec((10, 10))), np.zeros((10, 10), np.float32))
    assert got[0][3, 0] == 0.0 and got[1][3, 0] == 7.0
