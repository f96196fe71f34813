"""The `tp.*` functions that draw random numbers: random_uniform, random_normal, dropout.

Randomness is counter-based: `random_uniform(key, shape)` is a pure function of an int64
key and each element's index (IR op `random_uniform`, ir/ops_random.py; the hash is in
ir/reference_random.py), so a training step that draws dropout masks is still one pure
graph: pass a new key each step. The numpy backend and onnxruntime (the exported model:
standard int64 Add/Mul/Mod ops) draw bit-identical uniforms; random_normal and dropout
are composites whose scaling goes through float math of each runtime (log, cos, sqrt),
so they agree to float rounding. tapeir/__init__.py exports this module's `__all__`.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.dtypes import dtype_of
from ..ir.errors import TraceError
from .functions import _t, builder_of, sqrt
from .functions import cos, log, where
from .tensor import Tensor
from .tracer import user_source

__all__ = ["dropout", "random_normal", "random_uniform"]


def _key(key, tr, op):
    if isinstance(key, Tensor):
        if key.value.type.dtype != "i64" or key.ndim != 0:
            raise TraceError(f"{op}: key must be an int64 scalar, got {key.type}", where=user_source(),
                             hint="pass tp.Spec((), 'int64') (or a Python int) as the key")
        return key.value
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return tr.const(np.array(key, np.int64))
    raise TraceError(f"{op}: key must be an int64 scalar tensor or a Python int, got {type(key).__name__}",
                     where=user_source(), hint="pass a new key each step to draw new numbers")


def _shape_of(shape):
    return (shape,) if isinstance(shape, (int, str, np.integer)) else tuple(shape)


def random_uniform(key, shape, dtype="float32"):
    """Uniform numbers in [0, 1) (multiples of 2**-24), a pure function of the int64 `key`
    and each element's position: the same key gives the same numbers, in the numpy
    backend and in onnxruntime bit for bit (an integer hash of (key, index) that exports
    as standard int64 ops). Dims may be symbolic (x.shape). IR op `random_uniform`.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda k: tp.random_uniform(k, (2, 3)), tp.Spec((), "int64"))
    >>> u = tp.run(g, np.int64(7))
    >>> u.shape, bool((u >= 0).all() and (u < 1).all()), bool((u == tp.run(g, np.int64(7))).all())
    ((2, 3), True, True)
    """
    tr = builder_of([key])
    k = _key(key, tr, "random_uniform")
    return Tensor(tr.emit("random_uniform", [k], {"shape": _shape_of(shape), "dtype": dtype_of(dtype)})[0], tr)


def random_normal(key, shape, dtype="float32"):
    """Standard normal numbers by Box-Muller from random_uniform(key, (2,) + shape):
    sqrt(-2 log(1 - u0)) * cos(2 pi u1), so |z| < 5.8 (u0 is on a 2**-24 grid). A composite:
    numpy and onnxruntime agree to the rounding of their log, sqrt and cos.

    >>> import numpy as np, tapeir as tp
    >>> z = tp.run(tp.trace(lambda k: tp.random_normal(k, (4000,)), tp.Spec((), "int64")), np.int64(1))
    >>> bool(abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1)
    True
    """
    shape = _shape_of(shape)
    u = random_uniform(key, (2,) + shape, dtype)
    r = sqrt(log(1.0 - u[0]) * -2.0)
    return r * cos(u[1] * (2 * math.pi))


def dropout(x, p: float = 0.5, key=None, training: bool = True):
    """Zero each element with probability p and scale the rest by 1/(1-p), as
    torch.nn.functional.dropout; with training=False (or p=0) it is x. The mask is
    random_uniform(key, x.shape) >= p: pass a new int64 `key` each step, so a training
    step stays one pure graph. Two calls with the same key and shape draw the same mask:
    give each dropout layer its own key (key * 8 + layer). A composite (where(mask, x * 1/(1-p), 0)): its gradient is
    the same mask, and it exports as standard ONNX (onnxruntime draws the same mask).

    >>> import numpy as np, tapeir as tp
    >>> x = np.ones(1000, np.float32)
    >>> y = tp.run(tp.trace(lambda x, k: tp.dropout(x, 0.25, k), x, tp.Spec((), "int64")), x, np.int64(3))
    >>> sorted(set(y.tolist())), bool(abs((y == 0).mean() - 0.25) < 0.05)
    ([0.0, 1.3333333730697632], True)
    """
    x = _t(x, "dropout")
    if not 0 <= p <= 1:
        raise TraceError(f"dropout: p={p} is not a probability", where=user_source(), hint="0 <= p <= 1")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    if key is None:
        raise TraceError("dropout: training mode needs a key", where=user_source(),
                         hint="pass key= an int64 scalar input (a new one each step), or training=False")
    keep = random_uniform(key, tuple(x.shape), x.dtype if x.value.type.dtype in ("f32", "f64") else "f32") >= p
    return where(keep, x * (1.0 / (1.0 - p)), 0.0)
