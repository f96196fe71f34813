"""Reference kernel of ir/ops_random.py's random_uniform (merged into REFERENCE by
ir/reference.py).

random_uniform's hash is written here once, in int64 numpy; backends/onnx_lowering_random.py
writes the same integer steps as ONNX ops (RANDOM_ROUNDS and KEY_MULT are shared by both), so the
numpy backend and onnxruntime draw bit-identical numbers for the same key.
"""
from __future__ import annotations

import numpy as np

from .ops_random import RANDOM_PRIME

P = RANDOM_PRIME
# (key multiplier, key offset, round multiplier) per round: odd constants below P, fixed forever
# (changing one changes every stream users have seeded)
RANDOM_ROUNDS = ((1103515245, 12345, 48271), (69069, 1013904223, 16807), (1664525, 22695477, 39373))
KEY_MULT = 214013


def random_bits(key, shape):
    """The int64 hash of (key, flat element index), in [0, P): a bijection of the index for
    each key (x -> x + c, x -> x**5 and x -> m * x are permutations mod the prime P, since
    gcd(5, P - 1) = 1), so no two elements of one draw share a value."""
    n = int(np.prod(shape, dtype=np.int64))
    k = np.int64(key) % P
    x = np.arange(n, dtype=np.int64).reshape(shape)
    x = (x + k * KEY_MULT % P) % P
    for km, ko, m in RANDOM_ROUNDS:
        x = (x + (k * km + ko) % P) % P
        x2 = x * x % P
        x = x2 * x2 % P * x % P
        x = x * m % P
    return x


def random_uniform(key, *, shape, dtype):
    bits = random_bits(key, shape) // 128  # the top 24 of 31 bits: exact in float32
    u = bits.astype(np.float32) * np.float32(2.0 ** -24)
    return u.astype(dtype, copy=False)


def _random(a):
    from .dtypes import to_numpy
    return lambda key: random_uniform(key, shape=tuple(a["shape"]), dtype=to_numpy(a["dtype"]))


REFERENCE_RANDOM = {"random_uniform": _random}
