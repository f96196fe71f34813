"""Tensor: the traced value users compute with. Every operator records an IR node."""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.types import Dim
from ..ir.errors import TraceError
from ..ir.builder import Builder
from .tracer import user_source


class Tensor:
    """A symbolic tensor inside `tp.trace`. Shapes and dtypes are known; values are not.

    The operators follow numpy: + - * / ** @, unary - and abs(), comparisons (bool
    tensors) and basic indexing `x[1:, None, ..., 0]`. Each records an IR node. numpy
    functions with a tp twin work too (np.exp(x), np.sum(x, axis=0), ndarray + x).
    A Tensor has no value while tracing: bool(x), float(x) and `if x > 0:` are errors
    (select with tp.where instead).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (x * 2.0 + 1.0).sum(axis=0), np.ones((3, 4), np.float32))
    >>> [v.type for v in g.outputs]
    [f32[4]]
    """

    __slots__ = ("value", "builder")
    _F = None  # the tp.* functions module: frontend/functions.py sets it when it loads
    __array_priority__ = 1000

    # numpy functions called on Tensors (np.exp(t), ndarray + t, np.sum(t)) record the
    # matching tp op; anything else is a TraceError naming the tp function to use.
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = _UFUNCS.get(ufunc.__name__)
        if method != "__call__" or name is None or kwargs:
            what = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            raise TraceError(f"{what} cannot run on a traced Tensor{' with ' + str(sorted(kwargs)) if kwargs else ''}",
                             where=user_source(), hint="use the tp.* function of the same name (tp.exp, tp.sum, ...)")
        return getattr(self._F, name)(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        fn = getattr(self._F, _FUNCTIONS.get(func.__name__, ""), None)
        if fn is None:
            raise TraceError(f"numpy.{func.__name__} cannot run on a traced Tensor", where=user_source(),
                             hint="use the tp.* functions (tp.sum, tp.reshape, tp.concatenate, tp.where, ...)")
        try:
            return fn(*args, **kwargs)
        except TypeError as e:
            raise TraceError(f"numpy.{func.__name__} on a traced Tensor: {e}", where=user_source(),
                             hint=f"tp.{_FUNCTIONS[func.__name__]} supports the numpy arguments listed in its "
                                  "docstring") from None

    def __init__(self, value, builder: Builder):
        self.value = value
        self.builder = builder

    # ---- metadata ----
    @property
    def type(self):
        """The IR type (a TensorType): dtype short name and shape, as the IR prints it.

        >>> import tapeir as tp
        >>> _ = tp.trace(lambda x: print(x.type) or x, tp.Spec(("B", 3), "float64"))
        f64[B,3]
        """
        return self.value.type

    @property
    def shape(self) -> tuple:
        """Ints, and `Dim`s for symbolic dims (strs that multiply: x.shape[0] * 2 is '2*B').

        >>> import tapeir as tp
        >>> _ = tp.trace(lambda x: print(x.shape, x.shape[0] * 2) or x, tp.Spec(("B", 3)))
        ('B', 3) 2*B
        """
        return tuple(Dim(d) if isinstance(d, str) else d for d in self.value.type.shape)

    @property
    def dtype(self) -> np.dtype:
        """The element type as a numpy dtype, as ndarray.dtype.

        >>> import tapeir as tp
        >>> _ = tp.trace(lambda x: print(repr(x.dtype)) or x, tp.Spec((3,), "int64"))
        dtype('int64')
        """
        return to_numpy(self.value.type.dtype)

    @property
    def ndim(self) -> int:
        """The number of axes, as ndarray.ndim.

        >>> import tapeir as tp
        >>> _ = tp.trace(lambda x: print(x.ndim) or x, tp.Spec(("B", 3)))
        2
        """
        return self.value.type.rank

    def __repr__(self) -> str:
        return f"Tensor({self.value.type})"

    def __len__(self) -> int:
        if not self.shape:
            raise TraceError("len() of a 0-d tensor", where=user_source())
        if not isinstance(self.shape[0], int):
            raise TraceError(f"len() of a tensor with symbolic first dim {self.shape[0]!r}",
                             where=user_source(), hint="use x.shape[0] (a symbol) or reduce instead")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def _no_concrete(self, what):
        raise TraceError(
            f"{what} of a traced tensor {self.type}: its value is unknown while tracing",
            where=user_source(),
            hint="Python control flow cannot depend on tensor values; use tp.where(cond, a, b) to select",
        )

    def __bool__(self):
        self._no_concrete("bool()")

    def __float__(self):
        self._no_concrete("float()")

    def __int__(self):
        self._no_concrete("int()")

    def __index__(self):
        self._no_concrete("using as an index")

    def __complex__(self):
        self._no_concrete("complex()")

    def item(self, *args):
        """No value while tracing: a TraceError, as float(x) (use the Tensor itself).

        >>> import tapeir as tp
        >>> tp.trace(lambda x: x * x.item(), tp.Spec(()))
        Traceback (most recent call last):
        ...
        tapeir.ir.errors.TraceError: x.item() of a traced tensor f32[]: its value is unknown while tracing
        ...
        """
        self._no_concrete("x.item()")

    def tolist(self):
        """No value while tracing: a TraceError, as float(x) (the graph's result, once run,
        is an ndarray with .tolist()).

        >>> import numpy as np, tapeir as tp
        >>> tp.run(tp.trace(lambda x: x * 2.0, tp.Spec((2,))), np.ones(2, np.float32)).tolist()
        [2.0, 2.0]
        """
        self._no_concrete("x.tolist()")

    def __array__(self, dtype=None, copy=None):
        # np.asarray(t), np.array([t, u]): without this numpy makes an object array and the
        # failure surfaces later as "unsupported dtype O"
        raise TraceError(
            f"numpy.asarray of a traced tensor {self.type}: its value is unknown while tracing",
            where=user_source(),
            hint="keep computing with the Tensor (numpy functions such as np.exp(t) record tp ops); "
                 "join tensors with tp.concatenate (after tp.expand_dims), not np.array")

    __hash__ = object.__hash__

    # ---- operators: the tp.* functions (frontend/functions.py) ----
    def __add__(self, o): return self._F.add(self, o)
    def __radd__(self, o): return self._F.add(o, self)
    def __sub__(self, o): return self._F.sub(self, o)
    def __rsub__(self, o): return self._F.sub(o, self)
    def __mul__(self, o): return self._F.mul(self, o)
    def __rmul__(self, o): return self._F.mul(o, self)
    def __truediv__(self, o): return self._F.div(self, o)
    def __rtruediv__(self, o): return self._F.div(o, self)
    def __pow__(self, o): return self._F.power(self, o)
    def __rpow__(self, o): return self._F.power(o, self)
    def __matmul__(self, o): return self._F.matmul(self, o)
    def __rmatmul__(self, o): return self._F.matmul(o, self)
    def __neg__(self): return self._F.negative(self)
    def __pos__(self): return self
    def __abs__(self): return self._F.abs(self)
    def __eq__(self, o): return self._F.equal(self, o)  # noqa: E704
    def __ne__(self, o): return self._F.not_equal(self, o)
    def __lt__(self, o): return self._F.less(self, o)
    def __le__(self, o): return self._F.less_equal(self, o)
    def __gt__(self, o): return self._F.greater(self, o)
    def __ge__(self, o): return self._F.greater_equal(self, o)
    def __getitem__(self, index): return self._F.getitem(self, index)

    # ---- methods ----
    @property
    def T(self) -> "Tensor":
        """The axes reversed, as ndarray.T (tp.transpose(x)).

        >>> import tapeir as tp
        >>> tp.trace(lambda x: x.T, tp.Spec(("B", 3))).outputs[0].type
        f32[3,B]
        """
        return self._F.transpose(self)

    def reshape(self, *shape) -> "Tensor":
        """tp.reshape(x, shape), as ndarray.reshape: a tuple or separate dims, one may be -1.

        >>> import numpy as np, tapeir as tp
        >>> x = np.arange(6, dtype=np.float32)
        >>> tp.run(tp.trace(lambda x: x.reshape(3, 2), x), x).tolist()
        [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
        """
        return self._F.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def transpose(self, *axes) -> "Tensor":
        """tp.transpose(x, axes), as ndarray.transpose: a tuple or separate axes; none reverses them.

        >>> import tapeir as tp
        >>> tp.trace(lambda x: x.transpose(1, 2, 0), tp.Spec(("B", 3, 4))).outputs[0].type
        f32[3,4,B]
        """
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return self._F.transpose(self, axes or None)

    def astype(self, dtype) -> "Tensor":
        """tp.astype(x, dtype), as ndarray.astype: x in another dtype ("float64", np.int32, "f16").

        >>> import tapeir as tp
        >>> tp.trace(lambda x: x.astype("float64"), tp.Spec((3,))).outputs[0].type
        f64[3]
        """
        return self._F.astype(self, dtype)

    def sum(self, axis=None, keepdims=False) -> "Tensor":
        """tp.sum(x, axis, keepdims), as ndarray.sum: over every axis by default.

        >>> import numpy as np, tapeir as tp
        >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        >>> [r.tolist() for r in tp.run(tp.trace(lambda x: (x.sum(), x.sum(axis=0)), x), x)]
        [10.0, [4.0, 6.0]]
        """
        return self._F.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False) -> "Tensor":
        """tp.mean(x, axis, keepdims), as ndarray.mean: over every axis by default.

        >>> import numpy as np, tapeir as tp
        >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        >>> tp.run(tp.trace(lambda x: x.mean(axis=1, keepdims=True), x), x).tolist()
        [[1.5], [3.5]]
        """
        return self._F.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False) -> "Tensor":
        """tp.max(x, axis, keepdims), as ndarray.max: over every axis by default.

        >>> import numpy as np, tapeir as tp
        >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        >>> tp.run(tp.trace(lambda x: x.max(axis=0), x), x).tolist()
        [3.0, 4.0]
        """
        return self._F.max(self, axis, keepdims)

    def min(self, axis=None, keepdims=False) -> "Tensor":
        """tp.min(x, axis, keepdims), as ndarray.min: over every axis by default.

        >>> import numpy as np, tapeir as tp
        >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        >>> tp.run(tp.trace(lambda x: x.min(axis=-1), x), x).tolist()
        [1.0, 3.0]
        """
        return self._F.min(self, axis, keepdims)



_UFUNCS = {
    "add": "add", "subtract": "subtract", "multiply": "multiply", "divide": "divide", "true_divide": "divide",
    "power": "power", "negative": "negative", "exp": "exp", "log": "log", "sqrt": "sqrt", "absolute": "abs",
    "tanh": "tanh", "sin": "sin", "cos": "cos", "reciprocal": "reciprocal", "maximum": "maximum",
    "minimum": "minimum", "matmul": "matmul", "equal": "equal", "not_equal": "not_equal", "less": "less",
    "less_equal": "less_equal", "greater": "greater", "greater_equal": "greater_equal",
}
_FUNCTIONS = {
    "sum": "sum", "mean": "mean", "max": "max", "amax": "max", "min": "min", "amin": "min",
    "reshape": "reshape", "transpose": "transpose", "concatenate": "concatenate", "where": "where",
    "clip": "clip", "squeeze": "squeeze", "expand_dims": "expand_dims", "broadcast_to": "broadcast_to",
    "matmul": "matmul", "pad": "pad",
}
