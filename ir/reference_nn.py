"""Reference kernels of ir/ops_nn.py's ops, einsum and batch_norm (merged into REFERENCE
by ir/reference.py).
"""
from __future__ import annotations

import numpy as np


def einsum(*xs, equation):
    return np.asarray(np.einsum(equation, *xs, optimize=len(xs) > 2), dtype=xs[0].dtype)


def batch_norm(x, scale, bias, mean, var, *, epsilon):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = scale / np.sqrt(var + np.asarray(epsilon, x.dtype))
    return ((x - mean.reshape(shape)) * a.reshape(shape) + bias.reshape(shape)).astype(x.dtype, copy=False)


def _with(fn, *names):
    return lambda attrs: (lambda *xs: fn(*xs, **{n: attrs[n] for n in names}))


REFERENCE_NN = {
    "einsum": _with(einsum, "equation"),
    "batch_norm": _with(batch_norm, "epsilon"),
}
