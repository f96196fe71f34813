"""The `tp.*` functions that address elements by position: index picking (argmax, argmin),
gathering and scattering (take, embedding, scatter_add), running sums (cumsum) and
triangle masks (triu, tril).

Each is an IR op of its own (ir/ops_index.py) except embedding, which is `take`.
tapeir/__init__.py exports this module's `__all__` beside frontend/functions.py's.
"""
from __future__ import annotations

import numpy as np

from ..ir.errors import TraceError
from .functions import _axis, _t, apply_op, lift, builder_of, reshape
from .tensor import Tensor
from .tracer import user_source

__all__ = ["argmax", "argmin", "cumsum", "embedding", "scatter_add", "take", "tril", "triu"]


def _arg(op, summary, result):
    def f(x, axis=None, keepdims=False):
        x = _t(x, op)
        if axis is None:  # over the flattened tensor, as numpy and torch
            x, axis = reshape(x, (-1,)), 0
        return apply_op(op, [x], {"axis": _axis(x, axis, op), "keepdims": bool(keepdims)})
    f.__name__ = op
    f.__doc__ = f"""{summary}

    The first index on ties (numpy's and torch's rule); axis=None looks at the flattened
    tensor. The result is int64 and has no gradient (IR op `{op}`, ONNX {op.capitalize()[:3]}{op[3:].capitalize()}).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 5.0, 5.0], [7.0, 0.0, 2.0]], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.{op}(x, axis=1), x), x).tolist()
    {result}
    """
    return f


argmax = _arg("argmax", "The index of the largest element along `axis`, as numpy.argmax.", "[1, 0]")
argmin = _arg("argmin", "The index of the smallest element along `axis`, as numpy.argmin.", "[0, 1]")


def _indices(idx, tr, op):
    if isinstance(idx, (list, tuple, int, np.integer)):
        idx = np.asarray(idx, np.int64)
    if isinstance(idx, np.ndarray) and idx.dtype.kind not in "iu":
        raise TraceError(f"{op}: indices have dtype {idx.dtype}, expected integers", where=user_source())
    return lift(tr, idx, None, op)


def take(a, indices, axis: int = 0):
    """The entries of `a` at integer `indices` along `axis` (default 0), as numpy.take; the
    result has shape a.shape[:axis] + indices.shape + a.shape[axis+1:]. Negative indices
    count from the end; out-of-range ones are an error when the graph runs.

    IR op `take` (ONNX Gather). Its gradient with respect to `a` is `scatter_add` of the
    cotangent at the same indices, which exports as ScatterND(reduction="add") (opset 16+):
    O(indices) work and memory, where a one-hot matmul would cost indices x table rows.

    >>> import numpy as np, tapeir as tp
    >>> table = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], np.float32)
    >>> ids = np.array([[2, 0]], np.int64)
    >>> tp.run(tp.trace(tp.take, table, ids), table, ids).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    """
    a = _t(a, "take")
    tr = builder_of([a, indices])
    return Tensor(tr.emit("take", [a.value, _indices(indices, tr, "take")], {"axis": _axis(a, axis, "take")})[0], tr)


def embedding(input, weight):
    """Rows of `weight` [num_embeddings, dim] at integer ids `input`, as
    torch.nn.functional.embedding: `take(weight, input, axis=0)`.

    >>> import numpy as np, tapeir as tp
    >>> w = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> ids = np.array([1, 1], np.int64)
    >>> tp.run(tp.trace(tp.embedding, ids, w), ids, w).tolist()
    [[2.0, 3.0], [2.0, 3.0]]
    """
    return take(weight, input, axis=0)


def scatter_add(a, indices, updates, axis: int = 0):
    """`a` with `updates` added at integer `indices` along `axis`; repeated indices
    accumulate (numpy.add.at on a copy; torch's index_add). updates has shape
    a.shape[:axis] + indices.shape + a.shape[axis+1:]. The adjoint of `take`.

    >>> import numpy as np, tapeir as tp
    >>> a, u = np.zeros(3, np.float32), np.ones(3, np.float32)
    >>> ids = np.array([0, 2, 0], np.int64)
    >>> tp.run(tp.trace(tp.scatter_add, a, ids, u), a, ids, u).tolist()
    [2.0, 0.0, 1.0]
    """
    a = _t(a, "scatter_add")
    tr = builder_of([a, indices, updates])
    vals = [a.value, _indices(indices, tr, "scatter_add"), lift(tr, updates, a.value.type.dtype, "scatter_add")]
    return Tensor(tr.emit("scatter_add", vals, {"axis": _axis(a, axis, "scatter_add")})[0], tr)


def cumsum(x, axis=None, exclusive: bool = False, reverse: bool = False):
    """Running sums along `axis`, as numpy.cumsum (axis=None: the flattened tensor).
    exclusive leaves each element out of its own sum; reverse sums from the end (ONNX
    CumSum's attributes). IR op `cumsum`; its gradient is the reversed cumsum.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([1.0, 2.0, 3.0], np.float32)
    >>> tp.run(tp.trace(lambda x: (tp.cumsum(x), tp.cumsum(x, 0, exclusive=True, reverse=True)), x), x)
    (array([1., 3., 6.], dtype=float32), array([5., 3., 0.], dtype=float32))
    """
    x = _t(x, "cumsum")
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return apply_op("cumsum", [x], {"axis": _axis(x, axis, "cumsum"), "exclusive": bool(exclusive),
                                    "reverse": bool(reverse)})


def _trilu(upper):
    name = "triu" if upper else "tril"

    def f(x, k: int = 0):
        x = _t(x, name)
        if x.ndim < 2:
            raise TraceError(f"{name}: needs a matrix (or a batch of them), got {x.type}", where=user_source())
        return apply_op("trilu", [x], {"upper": upper, "k": int(k)})
    f.__name__ = name
    part, result = ("upper", "[[1.0, 2.0], [0.0, 4.0]]") if upper else ("lower", "[[1.0, 0.0], [3.0, 4.0]]")
    f.__doc__ = f"""The {part} triangle of the last two axes from diagonal `k` (zeros elsewhere), as
    numpy.{name}: a causal mask is tp.{name} of ones. IR op `trilu` (ONNX Trilu); the sizes may be
    symbolic (a sequence length).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    >>> tp.run(tp.trace(tp.{name}, x), x).tolist()
    {result}
    """
    return f


triu, tril = _trilu(True), _trilu(False)
