"""The `tp.*` functions issue 11 added: index picking, scans, masks, einsum, statistics,
randomness and batch normalization (re-exported by frontend/functions.py's `__all__`).

Some are IR ops of their own (argmax, take, scatter_add, cumsum, trilu, einsum,
batch_norm in inference, random_uniform: ir/ops_extra.py); the rest are composites of
existing ops, where the composite is the better IR (each docstring says why).

Randomness is counter-based: `random_uniform(key, shape)` is a pure function of an int64
key and each element's index (ir/reference_extra.py holds the hash), so a training step
that draws dropout masks is still one pure graph: pass a new key each step. The numpy
backend and onnxruntime (the exported model: standard int64 Add/Mul/Mod ops) draw
bit-identical uniforms; random_normal and dropout's scaling go through float math of
each runtime (log, cos, sqrt), so they agree to float rounding.
"""
from __future__ import annotations

import builtins
import math
import string

import numpy as np

from ..ir.dtypes import dtype_of
from ..ir.errors import TraceError
from ..ir.types import dim_product
from .functions import _axes, _axis, _t, apply_op, concatenate, expand_dims, lift, builder_of, reshape, sqrt
from .functions import cos, log, mean, sum as _sum, where
from .tensor import Tensor
from .tracer import user_source

__all__ = ["argmax", "argmin", "batch_norm", "cumsum", "dropout", "einsum", "embedding", "flatten",
           "random_normal", "random_uniform", "scatter_add", "split", "stack", "std", "take", "tril",
           "triu", "var"]


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


def canonical_equation(equation: str, ranks) -> str:
    """An einsum equation with its ellipses spelled as letters, no spaces and an explicit
    output (numpy's implicit rule: the letters used once, in alphabetical order).

    >>> canonical_equation("...ij, ...jk", [3, 3]), canonical_equation("ii", [2])
    ('Aij,Ajk->Aik', 'ii->')
    """
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(ranks):
        raise TraceError(f"einsum: equation {equation!r} names {len(subs)} operands, got {len(ranks)}",
                         where=user_source())
    used = set(ch for ch in eq if ch.isalpha())
    spare = [ch for ch in string.ascii_uppercase + string.ascii_lowercase if ch not in used]
    n_ell = builtins.max([r - len(s.replace("...", "")) for s, r in zip(subs, ranks) if "..." in s], default=0)
    if n_ell < 0 or n_ell > len(spare):
        raise TraceError(f"einsum: equation {equation!r} does not fit operands of ranks {list(ranks)}",
                         where=user_source())
    ell = "".join(spare[:n_ell])
    fixed = []
    for s, r in zip(subs, ranks):
        if "..." in s:
            k = r - len(s.replace("...", ""))
            s = s.replace("...", ell[n_ell - k:] if k > 0 else "")
        if not s.isalpha() and s != "" or len(s) != r:
            raise TraceError(f"einsum: subscripts {s!r} do not fit an operand of rank {r} ({equation!r})",
                             where=user_source(), hint="one letter per axis; '...' stands for the leading axes")
        fixed.append(s)
    if arrow:
        out = out.replace("...", ell)
    else:
        counts = {ch: "".join(fixed).count(ch) for ch in "".join(fixed)}
        out = ell + "".join(sorted(ch for ch, c in counts.items() if c == 1 and ch not in ell))
    return ",".join(fixed) + "->" + out


def einsum(equation: str, *operands):
    """Sums of products over an index equation, as numpy.einsum / torch.einsum ('ij,jk->ik';
    '...' for leading axes; without '->', the letters used once, sorted). A letter names one
    size in every operand: size-1 axes do not broadcast against it.

    IR op `einsum` with the equation canonical (ellipses as letters, explicit output), ONNX
    Einsum: onnxruntime's kernel, and a readable dump; a lowering to transpose/reshape/matmul
    would print as a dozen nodes. Its gradient is an einsum per operand (an index repeated
    within one operand, a diagonal, has no gradient rule).

    >>> import numpy as np, tapeir as tp
    >>> a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    >>> g = tp.trace(lambda a, b: tp.einsum("ij,jk->ik", a, b), a, b)
    >>> print(str(g).splitlines()[1].split("#")[0].strip())
    %0: f32[2,4] = einsum(a, b) {equation="ij,jk->ik"}
    """
    if not isinstance(equation, str):
        raise TraceError("einsum: the first argument is the equation string", where=user_source(),
                         hint="tp.einsum('ij,jk->ik', a, b)")
    if not operands:
        raise TraceError("einsum: needs at least one operand", where=user_source())
    ranks = [o.ndim if isinstance(o, Tensor) else np.ndim(o) for o in operands]
    return apply_op("einsum", list(operands), {"equation": canonical_equation(equation, ranks)})


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


def _count(x, axes):
    n = dim_product([x.shape[a] for a in axes])
    if isinstance(n, int):
        return n
    ones = apply_op("broadcast_to", [np.array(1, x.dtype)], {"shape": tuple(x.shape)})
    return _sum(ones, axis=axes, keepdims=True)


def var(x, axis=None, correction: int = 1, keepdims: bool = False, *, ddof: int | None = None):
    """Variance over `axis` with Bessel's `correction` (default 1, the unbiased estimate, as
    torch.var; numpy's ddof is the same number, and `ddof=` is accepted). Divides by
    n - correction: a static n <= correction is a TraceError (torch gives nan/inf). A composite
    (mean, subtract, square, sum, divide): two passes, no cancellation of E[x^2] - E[x]^2.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    >>> [round(float(tp.run(tp.trace(lambda x: tp.var(x, correction=c), x), x)), 4) for c in (1, 0)]
    [1.6667, 1.25]
    """
    x = _t(x, "var")
    c = correction if ddof is None else ddof
    axes = _axes(x, axis, "var")
    d = x - mean(x, axis=axes, keepdims=True)
    s = _sum(d * d, axis=axes, keepdims=keepdims)
    n = _count(x, axes)
    if isinstance(n, int):
        if n <= c:
            raise TraceError(f"var: {n} element(s) per result with correction={c} divides by {n - c}",
                             where=user_source(), hint="use correction=0 (the biased variance) or more elements")
        return s * (1.0 / (n - c))
    if not keepdims:
        n = reshape(n, s.shape)
    return s / (n - float(c))


def std(x, axis=None, correction: int = 1, keepdims: bool = False, *, ddof: int | None = None):
    """sqrt(var(x, axis, correction)), as torch.std (correction 1 by default; ddof accepted).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 3.0], [2.0, 2.0]], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.std(x, axis=1, correction=0), x), x).tolist()
    [1.0, 0.0]
    """
    return sqrt(var(x, axis, correction, keepdims, ddof=ddof))


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


def _channels(v, x):
    return reshape(v, (x.shape[1],) + (1,) * (x.ndim - 2))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    """Batch normalization over axis 1 of [N, C, ...], as torch.nn.functional.batch_norm.

    training=False: normalizes with the running statistics; IR op `batch_norm` (ONNX
    BatchNormalization). training=True: normalizes with the batch's mean and biased
    variance and returns (y, new_running_mean, new_running_var): the state torch updates
    in place is returned (running = (1 - momentum) * running + momentum * batch, the
    batch variance unbiased, as torch; unlike torch's in-place update they carry a gradient,
    which a loss does not normally use). A composite in training mode (mean, var, ...):
    autodiff differentiates through the batch statistics, and onnxruntime has no
    BatchNormalization training_mode kernel outside its training builds.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0], [3.0]], np.float32)
    >>> m, v = np.zeros(1, np.float32), np.ones(1, np.float32)
    >>> y, m2, v2 = tp.run(tp.trace(lambda x, m, v: tp.batch_norm(x, m, v, training=True), x, m, v), x, m, v)
    >>> [a.astype(float).round(3).tolist() for a in (y, m2, v2)]
    [[[-1.0], [1.0]], [0.2], [1.1]]
    """
    x = _t(input, "batch_norm")
    if x.ndim < 2:
        raise TraceError(f"batch_norm: input must be [N, C, ...], got {x.type}", where=user_source())
    c = x.shape[1]
    dt = x.dtype
    w = np.ones((c,), dt) if weight is None else weight
    b = np.zeros((c,), dt) if bias is None else bias
    if not training:
        if running_mean is None or running_var is None:
            raise TraceError("batch_norm: inference mode needs running_mean and running_var", where=user_source(),
                             hint="pass training=True to normalize with the batch statistics")
        return apply_op("batch_norm", [x, w, b, running_mean, running_var], {"epsilon": float(eps)})
    axes = (0,) + tuple(range(2, x.ndim))
    mu = mean(x, axis=axes, keepdims=True)
    d = x - mu
    v = mean(d * d, axis=axes, keepdims=True)
    y = d / sqrt(v + eps) * _channels(w, x) + _channels(b, x)
    if running_mean is None and running_var is None:
        return y
    n = _count(x, axes)
    unbiased = v * (n / (n - 1.0)) if isinstance(n, int) else v * n / (n - 1.0)
    new_mean = running_mean * (1.0 - momentum) + reshape(mu, (c,)) * momentum
    new_var = running_var * (1.0 - momentum) + reshape(unbiased, (c,)) * momentum
    return y, new_mean, new_var
