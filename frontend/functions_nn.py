"""The `tp.*` functions for contractions by equation (einsum), statistics (var, std) and
batch normalization.

einsum and inference-mode batch_norm are IR ops of their own (ir/ops_nn.py); var, std
and training-mode batch_norm are composites of existing ops, where the composite is the
better IR (each docstring says why). tapeir/__init__.py exports this module's `__all__`.
"""
from __future__ import annotations

import builtins
import string

import numpy as np

from ..ir.errors import TraceError
from ..ir.types import dim_product
from .functions import _axes, _t, apply_op, reshape, sqrt
from .functions import mean, sum as _sum
from .tensor import Tensor
from .tracer import user_source

__all__ = ["batch_norm", "einsum", "std", "var"]


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
