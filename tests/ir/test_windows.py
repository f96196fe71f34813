"""ir/windows.py, the one definition of window sizes and counts, against brute force."""
from __future__ import annotations

import itertools

import numpy as np

from tapeir.ir.windows import conv_out, conv_transpose_out, window_counts


def _starts(n, k, s, begin, end, d):
    """Window starts (in padded coordinates) by walking the padded axis."""
    return [i for i in range(0, n + begin + end, s) if i + (k - 1) * d + 1 <= n + begin + end]


def test_conv_out_counts_the_windows_that_fit():
    for n, k, s, b, e, d in itertools.product(range(1, 8), range(1, 4), range(1, 4), range(3), range(3), range(1, 3)):
        span = (k - 1) * d + 1
        if n + b + e < span:
            continue
        assert conv_out(n, k, s, b + e, d) == len(_starts(n, k, s, b, e, d))
        # ceil: the fewest windows that cover every padded cell
        covering = next(m for m in range(1, 99) if (m - 1) * s + span >= n + b + e)
        assert conv_out(n, k, s, b + e, d, ceil=True) == covering


def test_conv_transpose_out_undoes_conv_out():
    for n, k, s, p, d in itertools.product(range(1, 9), range(1, 4), range(1, 4), range(2), range(1, 3)):
        out = conv_out(n, k, s, 2 * p, d)
        if out <= 0:
            continue
        extra = n - conv_transpose_out(out, k, s, p, d)  # the rows the conv's last stride skipped
        assert 0 <= extra < s
        assert conv_transpose_out(out, k, s, p, d, extra) == n


def test_window_counts_with_asymmetric_padding():
    rng = np.random.default_rng(0)
    for _ in range(200):
        size, kernel, stride, dil = (tuple(int(v) for v in rng.integers(lo, hi, 2))
                                     for lo, hi in ((1, 8), (1, 4), (1, 4), (1, 3)))
        begin, end = tuple(int(v) for v in rng.integers(0, 3, 2)), tuple(int(v) for v in rng.integers(0, 3, 2))
        if any(size[i] + begin[i] + end[i] < (kernel[i] - 1) * dil[i] + 1 for i in range(2)):
            continue
        grid = np.pad(np.ones(size), list(zip(begin, end)))
        want = np.array([[sum(grid[r + a * dil[0], c + b * dil[1]] for a in range(kernel[0]) for b in range(kernel[1]))
                          for c in _starts(size[1], kernel[1], stride[1], begin[1], end[1], dil[1])]
                         for r in _starts(size[0], kernel[0], stride[0], begin[0], end[0], dil[0])])
        np.testing.assert_array_equal(window_counts(size, kernel, stride, begin, dil, end), want)
