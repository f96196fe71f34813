"""Window arithmetic of convolution and pooling, defined once: read by the type rules
(ir/ops.py), the numpy kernels, the VJP rules and the ONNX importer. Per spatial axis,
k taps, stride s, dilation d:

  extent(k, d)              cells one window spans
  conv_out(n, k, s, pad, d) windows in n cells padded by `pad` in all; ceil=True counts a
                            last partial window
  conv_transpose_out(n, k, s, p, d, output_padding)
                            the length a transposed conv makes of n cells, p cropped at each
                            end: the input length of the conv it undoes
  window_counts(...)        per 2-D window, how many real (not padding) cells it covers
"""
from __future__ import annotations

import numpy as np


def extent(k: int, d: int) -> int:
    return (k - 1) * d + 1


def conv_out(n: int, k: int, s: int, pad: int, d: int, ceil: bool = False) -> int:
    """
    >>> conv_out(7, 3, 2, 2, 1), conv_out(5, 2, 2, 0, 1), conv_out(5, 2, 2, 0, 1, ceil=True)
    (4, 2, 3)
    """
    span = n + pad - extent(k, d)
    return (-(-span // s) if ceil else span // s) + 1


def conv_transpose_out(n: int, k: int, s: int, p: int, d: int, output_padding: int = 0) -> int:
    """
    >>> conv_transpose_out(4, 3, 2, 2, 1), conv_out(5, 3, 2, 2 * 2, 1)
    (5, 4)
    """
    return (n - 1) * s - 2 * p + extent(k, d) + output_padding


def window_counts(size, kernel, stride, padding, dilation, end_padding=None) -> np.ndarray:
    """[OH, OW] int64 counts for an H x W grid padded by `padding` before and `end_padding`
    (default `padding`) after; axes are independent, so it is an outer product.

    >>> window_counts((3, 3), (3, 3), (1, 1), (1, 1), (1, 1)).tolist()
    [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    """
    end = padding if end_padding is None else end_padding
    per_axis = []
    for n, k, s, p, e, d in zip(size, kernel, stride, padding, end, dilation):
        starts = np.arange(max(conv_out(n, k, s, p + e, d), 0)) * s - p
        cells = starts[:, None] + np.arange(k) * d      # the cell each tap reads
        per_axis.append(((cells >= 0) & (cells < n)).sum(axis=1))
    return np.outer(*per_axis)
