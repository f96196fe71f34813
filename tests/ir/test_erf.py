"""ir/erf.py: Cody's erf/erfc against math.erf/math.erfc (C's libm, which
shares nothing with ours) on a dense grid, tails and tiny arguments included; special
values; and exact gelu in float16/float32 against a float64 math.erfc reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tapeir as tp
from support import assert_close, eps
from tapeir.ir.erf import BLOCK, erf, erfc



def _grid():
    return np.concatenate([
        np.linspace(-30, 30, 600_001),                        # step 1e-4, both tails
        np.geomspace(5e-324, 1e-3, 20_001), -np.geomspace(5e-324, 1e-3, 2_001),  # tiny, subnormal
        np.linspace(0.46, 0.48, 20_001), -np.linspace(3.99, 4.01, 20_001),      # interval edges
        np.linspace(26, 27.5, 20_001),                        # erfc underflows to subnormals, then 0
    ])


@pytest.mark.parametrize("fn,ref", [(erf, math.erf), (erfc, math.erfc)], ids=["erf", "erfc"])
def test_matches_libm_to_1e15(fn, ref):
    x = _grid()
    got = fn(x)
    want = np.array([ref(v) for v in x])
    assert got.dtype == np.float64
    # 1.5e-15 relative per element (7 ulps); subnormal results to 1e-322 (a few subnormal steps)
    assert_close(got, want, ulps=7, scale=1e-322 / (7 * eps(np.float64)), why="libm to 1.5e-15 relative")


def test_special_values():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e308, -1e308, 5e-324])
    e, c = erf(x), erfc(x)
    np.testing.assert_array_equal(e, [1, -1, np.nan, 0, -0.0, 1, -1, 5e-324])
    np.testing.assert_array_equal(c, [0, 2, np.nan, 1, 1, 0, 2, 1])
    assert np.signbit(e[4]) and not np.signbit(e[3])  # erf(-0.0) is -0.0, as math.erf
    assert erf(np.array(0.5)).shape == () and erfc(np.zeros((0, 3))).shape == (0, 3)
    x = np.linspace(-5, 5, 7 * (BLOCK + 3)).reshape(7, -1)[:, ::2]  # several blocks, a strided view
    np.testing.assert_array_equal(erf(x), erf(np.ascontiguousarray(x)))


@pytest.mark.parametrize("dtype,ulp", [(np.float32, 2.0 ** -23), (np.float16, 2.0 ** -10)])
def test_low_precision_is_float64_rounded(dtype, ulp):
    x = np.linspace(-6, 6, 20_001).astype(dtype)
    for fn, ref in ((erf, math.erf), (erfc, math.erfc)):
        got = fn(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, fn(x.astype(np.float64)).astype(dtype))
        want = np.array([ref(float(v)) for v in x])
        assert_close(got, want, dtype=dtype, ulps=ulp / eps(dtype), scale=np.finfo(dtype).smallest_subnormal / ulp,
                     why="float64 rounded to dtype: within an ulp", msg=fn.__name__)


@pytest.mark.parametrize("dtype,ulp", [(np.float32, 2.0 ** -23), (np.float16, 2.0 ** -10), (np.float64, 2e-15)])
def test_exact_gelu_is_accurate_for_negative_x(dtype, ulp):
    """gelu(x) = 0.5 x erfc(-x/sqrt 2): no 1 + erf cancellation (f16 gelu(-3) was 7% off)."""
    x = np.linspace(-12, 4, 16_001).astype(dtype)
    got = tp.run(tp.trace(lambda x: tp.gelu(x), x), x)
    want = np.array([0.5 * float(v) * math.erfc(-float(v) / math.sqrt(2)) for v in x])
    assert got.dtype == dtype
    assert_close(got, want, dtype=dtype, ulps=ulp / eps(dtype), scale=np.finfo(dtype).smallest_subnormal / ulp,
                 why="within an ulp (f64: 9) per element, subnormals to a step")
    x3 = np.array([-3.0], np.float16)
    assert tp.run(tp.trace(lambda x: tp.gelu(x), x3), x3)[0] == np.float16(-3 * 0.5 * math.erfc(3 / math.sqrt(2)))
