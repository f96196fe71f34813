"""The `tp.*` shape composites beyond frontend/functions.py's: stack, flatten, split.

No IR op of their own: each is a few of the shape ops (concatenate, reshape, slice)
that ONNX export, the VJP rules and the fuser already know (each docstring says why).
tapeir/__init__.py exports this module's `__all__`.
"""
from __future__ import annotations

import builtins

import numpy as np

from ..ir.errors import TraceError
from ..ir.types import dim_product
from .functions import _axes, _axis, _t, concatenate, expand_dims, reshape
from .tracer import user_source

__all__ = ["flatten", "split", "stack"]


def stack(xs, axis: int = 0):
    """Join tensors of one shape along a new `axis`, as numpy.stack. A composite
    (expand_dims each, then concatenate): the IR keeps one concatenate node, which ONNX,
    the VJP (slices) and the fuser already know.

    >>> import numpy as np, tapeir as tp
    >>> a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    >>> tp.run(tp.trace(lambda a, b: tp.stack([a, b], axis=1), a, b), a, b).tolist()
    [[1.0, 3.0], [2.0, 4.0]]
    """
    xs = list(xs)
    if not xs:
        raise TraceError("stack: needs at least one tensor", where=user_source())
    first = _t(xs[0], "stack")
    ax = _axes(first, axis, "stack", rank=first.ndim + 1)[0]
    return concatenate([expand_dims(x, ax) for x in xs], axis=ax)


def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """Merge axes start_dim..end_dim into one, as torch.flatten (a reshape; symbolic dims
    multiply, so [B, C, H, W] -> [B, C*H*W] keeps B).

    >>> import tapeir as tp
    >>> tp.trace(lambda x: tp.flatten(x, 1), tp.Spec(("B", 2, 3, 4))).outputs[0].type
    f32[B,24]
    """
    x = _t(x, "flatten")
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = _axes(x, start_dim, "flatten")[0], _axes(x, end_dim, "flatten")[0]
    if s > e:
        raise TraceError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for {x.type}",
                         where=user_source())
    shape = tuple(x.shape)
    return reshape(x, shape[:s] + (dim_product(shape[s:e + 1]),) + shape[e + 1:])


def split(x, indices_or_sections, axis: int = 0):
    """A list of sub-tensors along `axis`, as numpy.split: an int N gives N equal parts (it
    must divide the axis), a list gives the split points. A composite of slices: each part
    is its own value with the slice's gradient, and ONNX Split imports as the same slices.

    >>> import numpy as np, tapeir as tp
    >>> x = np.arange(5, dtype=np.float32)
    >>> [p.tolist() for p in tp.run(tp.trace(lambda x: tuple(tp.split(x, [1, 3])), x), x)]
    [[0.0], [1.0, 2.0], [3.0, 4.0]]
    """
    x = _t(x, "split")
    ax = _axis(x, axis, "split")
    n = x.shape[ax]
    if not isinstance(n, int):
        raise TraceError(f"split: axis {ax} of {x.type} is symbolic", where=user_source(),
                         hint="split a static axis")
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise TraceError(f"split: {k} sections do not divide axis {ax} of size {n} ({x.type})",
                             where=user_source(), hint="give the split points as a list for unequal parts")
        points = [n // k * i for i in range(1, k)]
    else:
        points = [int(p) for p in indices_or_sections]
    bounds = [0] + [builtins.min(builtins.max(p if p >= 0 else p + n, 0), n) for p in points] + [n]
    pre = (slice(None),) * ax
    return [x[pre + (slice(a, builtins.max(a, b)),)] for a, b in zip(bounds[:-1], bounds[1:])]
