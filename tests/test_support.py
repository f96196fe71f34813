"""The test-support module's own contract: the tolerance policy and the seeding."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

import support
from support import assert_close


def test_docstring_examples():
    assert doctest.testmod(support).failed == 0


def test_cancellation_is_judged_against_the_tensor_scale():
    # conv_transpose2d-stride on a fresh machine: 4.5e-5 relative on an element made by
    # cancellation, in a tensor whose other elements are ~25
    want = np.array([25.0, -24.0, 0.0123], np.float32)
    got = want * np.array([1, 1, 1 + 4.5e-5], np.float32)
    assert_close(got, want)
    with pytest.raises(AssertionError, match="differ beyond"):
        assert_close(np.array([25.0, 1.0], np.float32), np.array([25.0, 1.01], np.float32))


def test_precision_follows_the_dtype():
    assert_close(np.float32(1 + 2e-6), np.float64(1.0), dtype="float32")
    with pytest.raises(AssertionError):
        assert_close(np.float64(1 + 2e-6), np.float64(1.0))
    with pytest.raises(AssertionError, match="dtype float64, expected float32"):
        assert_close(np.float64(1.0), 1.0, dtype="float32")


def test_nan_inf_shape_and_exact():
    assert_close(np.array([np.nan, np.inf, -np.inf, 1.0]), np.array([np.nan, np.inf, -np.inf, 1.0]))
    with pytest.raises(AssertionError, match="nan positions"):
        assert_close(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    with pytest.raises(AssertionError, match="infinities"):
        assert_close(np.array([np.inf]), np.array([-np.inf]))
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(AssertionError, match="integer/bool"):
        assert_close(np.array([True, False]), np.array([True, True]))
    with pytest.raises(AssertionError, match="values differ"):
        assert_close(np.float64(1.0), np.float64(1.0 + 2 ** -52), exact=True)


def test_a_wider_tolerance_says_why():
    with pytest.raises(TypeError, match="why="):
        assert_close(1.0, 1.0, ulps=1000)
    assert_close(1.0 + 1e-12, 1.0, ulps=2 ** 14, why="a reason")
