"""The dtypes tapeir's IR knows, and their numpy twins.

A dtype prints by its short name (`f32`); `dtype_of` accepts the short name, a numpy
dtype or anything `np.dtype` understands ("float32", np.float32).
"""
from __future__ import annotations

import numpy as np

from .errors import TapeirError

# short name -> numpy dtype; order is the printing/documentation order
_NUMPY = {
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
_SHORT = {v: k for k, v in _NUMPY.items()}

DTYPES = tuple(_NUMPY)
FLOATS = frozenset({"f16", "f32", "f64"})
INTS = frozenset({"i32", "i64"})


def dtype_of(x) -> str:
    """Normalize a dtype spelling to tapeir's short name.

    >>> dtype_of("float32"), dtype_of(np.int64), dtype_of("f64")
    ('f32', 'i64', 'f64')
    """
    if isinstance(x, str) and x in _NUMPY:
        return x
    nd = None
    if x is not None:  # np.dtype(None) is float64: never a user's intent
        try:
            nd = np.dtype(x)
        except TypeError:
            nd = None
        if nd is not None and not nd.isnative:
            nd = nd.newbyteorder("=")  # big-endian arrays are the same dtype to us
    if nd not in _SHORT:
        raise TapeirError(
            f"unsupported dtype {x!r}",
            hint=f"tapeir supports {', '.join(DTYPES)} (numpy: "
            + ", ".join(str(d) for d in _NUMPY.values()) + ")",
        )
    return _SHORT[nd]


def to_numpy(dtype: str) -> np.dtype:
    return _NUMPY[dtype]

