"""The `tp.*` tensor functions. Each records IR through the builder of its Tensor operands.

Signatures follow numpy (elementwise, reductions, shapes) and torch.nn.functional
(activations, convolution, pooling, losses). Python and numpy scalars are weakly typed
(they take the tensor operand's dtype); numpy arrays are constants of their own dtype,
and tapeir never promotes between tensor dtypes: mixing f32 and f64 is an error.
"""
from __future__ import annotations

import builtins

import numpy as np

import sys

from ..ir.builder import Builder
from ..ir.dtypes import FLOATS, INTS, dtype_of, to_numpy
from ..ir.errors import TraceError
from ..ir.types import dim_sub, dim_sum
from .tensor import Tensor
from .tracer import current_builder, user_source

# the tp.* functions (tapeir/__init__.py exports exactly these)
__all__ = [
    "abs", "add", "astype", "avg_pool2d", "binary_cross_entropy_with_logits", "broadcast_to", "clip",
    "concatenate", "conv2d", "conv_transpose2d", "cos", "cross_entropy", "div", "divide", "elu", "equal",
    "erf", "exp", "expand_dims", "gelu", "greater", "greater_equal", "l1_loss", "layer_norm",
    "leaky_relu", "less", "less_equal", "log", "log_softmax", "logsumexp", "matmul", "max",
    "max_pool2d", "maximum", "mean", "min", "minimum", "mse_loss", "mul", "multiply", "negative",
    "nll_loss", "not_equal", "pad", "power", "reciprocal", "relu", "reshape", "safe_log", "sigmoid",
    "silu", "sin", "softmax", "softplus", "sqrt", "squeeze", "sub", "subtract", "sum", "tanh",
    "transpose", "where",
]

_SCALARS = (bool, int, float, np.generic)


# ---- lifting operands to IR values -------------------------------------------------

def builder_of(args) -> Builder:
    tr = None
    for a in args:
        if isinstance(a, Tensor):
            if tr is None:
                tr = a.builder
            elif a.builder is not tr:
                raise TraceError("operands come from different traces", where=user_source(),
                                 hint="a Tensor belongs to the tp.trace call that created it")
    return tr or current_builder()


def _weak_dtype(x, like: str | None, op: str) -> str:
    kind = "bool" if isinstance(x, (bool, np.bool_)) else "int" if isinstance(x, (int, np.integer)) else "float"
    if like is None:
        return {"bool": "bool", "int": "i64", "float": "f32"}[kind]
    ok = {"bool": like == "bool", "int": like in FLOATS | INTS, "float": like in FLOATS}[kind]
    if not ok:
        raise TraceError(f"{op}: cannot combine {kind} scalar {x!r} with a {like} tensor",
                         where=user_source(), hint="cast the tensor with .astype(...) first")
    return like


def _scalar_array(x, dt: str, op: str) -> np.ndarray:
    """A Python/numpy scalar as a 0-d array of dtype dt, refusing values dt cannot hold."""
    npdt = to_numpy(dt)
    if isinstance(x, (bool, np.bool_)):
        return np.array(x, dtype=npdt)
    lo, hi = _RANGE[dt]
    if isinstance(x, np.generic):  # compare as a Python number: np.float32(0.5) <= 1.8e308 casts
        x = x.item()                 # the bound to float32 (a RuntimeWarning: overflow in cast)
    if not lo <= x <= hi:  # NaN compares false and passes: it is a value every float dtype has
        if npdt.kind in "iu" or np.isfinite(float(x)):
            raise TraceError(f"{op}: scalar {x!r} does not fit in {dt} (range {lo}..{hi})",
                             where=user_source(), hint="compute in a wider dtype with .astype(...), or rescale")
    return np.array(x, dtype=npdt)


_RANGE = {**{dt: (int(np.iinfo(to_numpy(dt)).min), int(np.iinfo(to_numpy(dt)).max)) for dt in INTS},
          **{dt: (float(np.finfo(to_numpy(dt)).min), float(np.finfo(to_numpy(dt)).max)) for dt in FLOATS}}
_RANGE["bool"] = (0, 1)


def lift(tr: Builder, x, like: str | None, op: str):
    if isinstance(x, Tensor):
        if x.builder is not tr:
            raise TraceError(f"{op}: operand comes from a different trace", where=user_source())
        return x.value
    if isinstance(x, _SCALARS):
        return tr.const(_scalar_array(x, _weak_dtype(x, like, op), op))
    if isinstance(x, np.ndarray):
        try:
            dtype_of(x.dtype)
        except Exception:
            raise TraceError(f"{op}: numpy array of unsupported dtype {x.dtype}", where=user_source(),
                             hint="cast it with .astype(np.float32) (or another supported dtype)") from None
        return tr.const(x)  # small arrays are keyed by value, so mutating one mid-trace is seen
    raise TraceError(f"{op}: cannot use a {type(x).__name__} as a tensor operand", where=user_source(),
                     hint="operands are traced Tensors, numpy arrays or Python/numpy scalars")


def apply_op(op: str, operands, attrs=None, typed=None) -> Tensor:
    """Emit `op` on operands; scalars take the dtype of the first tensor among `typed`."""
    tr = builder_of(operands)
    typed = operands if typed is None else typed
    like = next((a.value.type.dtype for a in typed if isinstance(a, Tensor)), None)
    if like is None:
        like = next((dtype_of(a.dtype) for a in typed if isinstance(a, np.ndarray)), None)
    vals = [lift(tr, a, like, op) for a in operands]
    return Tensor(tr.emit(op, vals, attrs)[0], tr)


def _t(x, op) -> Tensor:
    """Make x a Tensor (arrays and scalars become constants)."""
    if isinstance(x, Tensor):
        return x
    tr = current_builder(op)
    return Tensor(lift(tr, x, None, op), tr)


# ---- elementwise -------------------------------------------------------------------

def _unary(name: str, summary: str, x: str, result: str, op: str | None = None):
    """tp.<name>: IR op `op` (default: name) on one tensor; its docstring runs it on `x`."""
    op = op or name

    def f(x):
        return apply_op(op, [x])
    f.__name__ = op
    f.__doc__ = f"""{summary}

    >>> import numpy as np, tapeir as tp
    >>> x = np.array({x}, np.float32)
    >>> tp.run(tp.trace(tp.{name}, x), x).astype(float).round(4).tolist()
    {result}
    """
    return f


# Float dtypes only, except abs, relu and negative, which take any numeric dtype.
exp = _unary("exp", "e**x, as numpy.exp.", "[0.0, 1.0, 2.0]", "[1.0, 2.7183, 7.3891]")
log = _unary("log", "Natural logarithm, as numpy.log (-inf at 0, nan below 0).",
             "[1.0, 2.0, 4.0]", "[0.0, 0.6931, 1.3863]")
reciprocal = _unary("reciprocal", "1 / x, as numpy.reciprocal.", "[1.0, 2.0, 4.0]", "[1.0, 0.5, 0.25]")
sqrt = _unary("sqrt", "Square root, as numpy.sqrt.", "[0.0, 1.0, 4.0]", "[0.0, 1.0, 2.0]")
tanh = _unary("tanh", "Hyperbolic tangent, as numpy.tanh.", "[-1.0, 0.0, 1.0]", "[-0.7616, 0.0, 0.7616]")
sigmoid = _unary("sigmoid", "1 / (1 + exp(-x)), as torch.sigmoid; never overflows.",
                 "[-1.0, 0.0, 1.0]", "[0.2689, 0.5, 0.7311]")
softplus = _unary("softplus", "log(1 + exp(x)), computed stably, as torch.nn.functional.softplus (beta=1).",
                  "[-1.0, 0.0, 1.0]", "[0.3133, 0.6931, 1.3133]")
sin = _unary("sin", "Sine (radians), as numpy.sin.", "[0.0, 0.5, 1.0]", "[0.0, 0.4794, 0.8415]")
cos = _unary("cos", "Cosine (radians), as numpy.cos.", "[0.0, 0.5, 1.0]", "[1.0, 0.8776, 0.5403]")
erf = _unary("erf", "The Gauss error function, as math.erf and torch.erf.",
             "[-1.0, 0.0, 1.0]", "[-0.8427, 0.0, 0.8427]")
abs = _unary("abs", "|x|, as numpy.abs (also `abs(x)`); any numeric dtype.",
             "[-2.0, 0.0, 3.0]", "[2.0, 0.0, 3.0]")
relu = _unary("relu", "max(x, 0), as torch.nn.functional.relu; any numeric dtype.",
              "[-1.0, 0.0, 2.0]", "[0.0, 0.0, 2.0]")
negative = _unary("negative", "-x, as numpy.negative (also `-x`); any numeric dtype.",
                  "[-1.0, 2.0, 3.0]", "[1.0, -2.0, -3.0]", op="neg")


def leaky_relu(x, negative_slope: float = 0.01):
    """max(x, 0) + negative_slope * min(x, 0), as torch.nn.functional.leaky_relu.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([-2.0, 0.0, 3.0], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.leaky_relu(x, 0.1), x), x).astype(float).round(4).tolist()
    [-0.2, 0.0, 3.0]
    """
    return apply_op("leaky_relu", [x], {"alpha": negative_slope})


def elu(x, alpha: float = 1.0):
    """x where x > 0, else alpha * (exp(x) - 1), as torch.nn.functional.elu.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([-1.0, 0.0, 2.0], np.float32)
    >>> tp.run(tp.trace(tp.elu, x), x).astype(float).round(4).tolist()
    [-0.6321, 0.0, 2.0]
    """
    return apply_op("elu", [x], {"alpha": alpha})


def gelu(x, approximate: str = "none"):
    """x * Phi(x), Phi the standard normal CDF, as torch.nn.functional.gelu.

    approximate="none" (the default) computes Phi with erf; "tanh" uses the tanh
    approximation 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x**3))).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([-1.0, 0.0, 1.0], np.float32)
    >>> exact, approx = tp.run(tp.trace(lambda x: (tp.gelu(x), tp.gelu(x, "tanh")), x), x)
    >>> exact.astype(float).round(4).tolist(), approx.astype(float).round(4).tolist()
    ([-0.1587, 0.0, 0.8413], [-0.1588, 0.0, 0.8412])
    """
    return apply_op("gelu", [x], {"approximate": approximate})


def silu(x):
    """x * sigmoid(x), as torch.nn.functional.silu (a composite: no op of its own).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([-1.0, 0.0, 1.0], np.float32)
    >>> tp.run(tp.trace(tp.silu, x), x).astype(float).round(4).tolist()
    [-0.2689, 0.0, 0.7311]
    """
    x = _t(x, "silu")
    return x * sigmoid(x)


def safe_log(x, eps: float = 1e-6):
    """log(x + eps), the PyTorch idiom; finite at x = 0.

    Some specifications (TorchLean's) define safe_log as log(softplus(x) + eps), which is
    also finite for x < 0; tapeir follows the PyTorch idiom, so x must be >= 0 (or > -eps).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([0.0, 1.0], np.float32)
    >>> tp.run(tp.trace(tp.safe_log, x), x).astype(float).round(4).tolist()
    [-13.8155, 0.0]
    """
    return log(_t(x, "safe_log") + eps)


def _binary(name: str, summary: str, result: str, op: str | None = None):
    """tp.<name>: IR op `op` (default: name) on two operands; its docstring runs it on a, b."""
    op = op or name

    def f(a, b):
        return apply_op(op, [a, b])
    f.__name__ = op
    f.__doc__ = f"""{summary}

    The operands broadcast as in numpy; a Python scalar takes the other operand's dtype.

    >>> import numpy as np, tapeir as tp
    >>> a, b = np.array([1.0, 2.0, 4.0], np.float32), np.array(2.0, np.float32)
    >>> tp.run(tp.trace(tp.{name}, a, b), a, b).tolist()
    {result}
    """
    return f


add = _binary("add", "a + b, as numpy.add.", "[3.0, 4.0, 6.0]")
subtract = _binary("subtract", "a - b, as numpy.subtract (tp.sub is the same function).", "[-1.0, 0.0, 2.0]",
                   op="sub")
multiply = _binary("multiply", "a * b, as numpy.multiply (tp.mul is the same function).", "[2.0, 4.0, 8.0]",
                   op="mul")
divide = _binary("divide", "a / b for float dtypes, as numpy.divide (tp.div is the same function).",
                 "[0.5, 1.0, 2.0]", op="div")
power = _binary("power", "a ** b for float dtypes, as numpy.power.", "[1.0, 4.0, 16.0]", op="pow")
maximum = _binary("maximum", "The larger of a and b, as numpy.maximum.", "[2.0, 2.0, 4.0]")
minimum = _binary("minimum", "The smaller of a and b, as numpy.minimum.", "[1.0, 2.0, 2.0]")
sub, mul, div = subtract, multiply, divide
# comparisons give bool tensors and carry no gradient
equal = _binary("equal", "a == b as a bool tensor, as numpy.equal.", "[False, True, False]")
not_equal = _binary("not_equal", "a != b as a bool tensor, as numpy.not_equal.", "[True, False, True]")
less = _binary("less", "a < b as a bool tensor, as numpy.less.", "[True, False, False]")
less_equal = _binary("less_equal", "a <= b as a bool tensor, as numpy.less_equal.", "[True, True, False]")
greater = _binary("greater", "a > b as a bool tensor, as numpy.greater.", "[False, False, True]")
greater_equal = _binary("greater_equal", "a >= b as a bool tensor, as numpy.greater_equal.", "[False, True, True]")


def where(condition, x, y):
    """x where condition is true, else y, as numpy.where (all three broadcast).

    A scalar x or y takes the dtype of the other; condition is a bool tensor.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([-1.0, 2.0, -3.0], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.where(x > 0, x, 0.0), x), x).tolist()
    [0.0, 2.0, 0.0]
    """
    return apply_op("where", [condition, x, y], typed=[x, y])


def clip(a, a_min=None, a_max=None):
    """Clamp to [a_min, a_max] (either may be None: no bound), as numpy.clip.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([-1.0, 0.5, 2.0], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.clip(x, 0.0, 1.0), x), x).tolist()
    [0.0, 0.5, 1.0]
    """
    return apply_op("clip", [a], {"min": a_min, "max": a_max})


def astype(x, dtype):
    """x converted to `dtype`, as ndarray.astype (IR op `cast`); x itself if it already has it.

    dtype is anything numpy understands ("int32", np.float64) or a short name ("f16").

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([1.0, 2.0, 3.0], np.float32)
    >>> y = tp.run(tp.trace(lambda x: tp.astype(x, "int32"), x), x)
    >>> y.dtype, y.tolist()
    (dtype('int32'), [1, 2, 3])
    """
    x = _t(x, "astype")
    dt = dtype_of(dtype)
    return x if dt == x.value.type.dtype else apply_op("cast", [x], {"to": dt})


# ---- reductions --------------------------------------------------------------------

def _axes(x: Tensor, axis, op, rank: int | None = None, sort: bool = True) -> tuple:
    """Normalize axis (None, an int or a sequence of ints) against `rank` (x's by default)."""
    r = x.ndim if rank is None else rank
    if axis is None:
        return tuple(range(r))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    try:
        axes = tuple(axes)
    except TypeError:
        raise TraceError(f"{op}: axis={axis!r} is not an int or a sequence of ints", where=user_source()) from None
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TraceError(f"{op}: axis {a!r} is not an int", where=user_source())
        if not -r <= a < r:
            raise TraceError(f"{op}: axis {a} out of range for {x.type}" + (f" (result rank {r})" if rank else ""),
                             where=user_source(),
                             hint=f"axes are in [-{r}, {r - 1}]" if r else "a 0-d tensor has no axes")
        out.append(int(a) % r)
    if len(set(out)) != len(out):
        raise TraceError(f"{op}: repeated axis in {list(axes)} for {x.type}", where=user_source(),
                         hint="name each axis once")
    return tuple(sorted(out)) if sort else tuple(out)


def _reduce(op: str, summary: str, result: str):
    """tp.<op>(x, axis=None, keepdims=False); its docstring reduces a 2x2 example over axis 1."""
    def f(x, axis=None, keepdims=False):
        x = _t(x, op)
        return apply_op(op, [x], {"axes": _axes(x, axis, op), "keepdims": keepdims})
    f.__name__ = op
    f.__doc__ = f"""{summary}

    `axis` is an int, a tuple of ints or None (every axis, the default); with keepdims=True
    the reduced axes stay as size 1.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.{op}(x, axis=1), x), x).astype(float).round(4).tolist()
    {result}
    """
    return f


sum = _reduce("sum", "Sum over `axis`, as numpy.sum.", "[3.0, 7.0]")
mean = _reduce("mean", "Mean over `axis` (float dtypes), as numpy.mean.", "[1.5, 3.5]")
max = _reduce("max", "Maximum over `axis`, as numpy.max.", "[2.0, 4.0]")
min = _reduce("min", "Minimum over `axis`, as numpy.min.", "[1.0, 3.0]")
logsumexp = _reduce("logsumexp", "log(sum(exp(x))) over `axis`, computed stably, as scipy.special.logsumexp "
                    "and torch.logsumexp.", "[2.3133, 4.3133]")


def _axis(x: Tensor, axis: int, op) -> int:
    """One axis: a tuple here is an error, not its first element."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TraceError(f"{op}: axis must be a single int, got {axis!r}", where=user_source(),
                         hint=f"{op} works along one axis; reshape first to merge axes")
    return _axes(x, axis, op)[0]


def softmax(x, axis: int = -1):
    """exp(x - max) / sum(exp(x - max)) along one `axis` (default -1), as
    torch.nn.functional.softmax(x, dim=axis).

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 2.0, 3.0]], np.float32)
    >>> tp.run(tp.trace(tp.softmax, x), x).astype(float).round(4).tolist()
    [[0.09, 0.2447, 0.6652]]
    """
    x = _t(x, "softmax")
    return apply_op("softmax", [x], {"axis": _axis(x, axis, "softmax")})


def log_softmax(x, axis: int = -1):
    """x - max - log(sum(exp(x - max))) along one `axis` (default -1), as
    torch.nn.functional.log_softmax(x, dim=axis); never log(softmax), so never -inf by underflow.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 2.0, 3.0]], np.float32)
    >>> tp.run(tp.trace(tp.log_softmax, x), x).astype(float).round(4).tolist()
    [[-2.4076, -1.4076, -0.4076]]
    """
    x = _t(x, "log_softmax")
    return apply_op("log_softmax", [x], {"axis": _axis(x, axis, "log_softmax")})


# ---- contractions and shapes -------------------------------------------------------

def matmul(a, b):
    """Matrix product, as numpy.matmul (also `a @ b`): a 1-D operand is a vector, batch dims broadcast.

    >>> import numpy as np, tapeir as tp
    >>> a, b = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([1.0, 1.0], np.float32)
    >>> tp.run(tp.trace(tp.matmul, a, b), a, b).tolist()
    [3.0, 7.0]
    """
    return apply_op("matmul", [a, b])


def reshape(x, shape):
    """x with a new shape and the same elements in C order, as numpy.reshape.

    One dim may be -1 (inferred); dims may be symbolic ("B", or x.shape[0] * 2).

    >>> import numpy as np, tapeir as tp
    >>> x = np.arange(6, dtype=np.float32)
    >>> tp.run(tp.trace(lambda x: tp.reshape(x, (2, -1)), x), x).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    >>> tp.trace(lambda x: tp.reshape(x, (-1,)), tp.Spec(("B", 3))).outputs[0].type
    f32[3*B]
    """
    x = _t(x, "reshape")
    shape = (shape,) if isinstance(shape, (int, str, np.integer)) else tuple(shape)
    return apply_op("reshape", [x], {"shape": shape})


def transpose(x, axes=None):
    """Permute the axes (reverse them when axes is None), as numpy.transpose.

    >>> import numpy as np, tapeir as tp
    >>> x = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> tp.run(tp.trace(tp.transpose, x), x).tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    >>> tp.trace(lambda x: tp.transpose(x, (1, 2, 0)), tp.Spec(("B", 3, 4))).outputs[0].type
    f32[3,4,B]
    """
    x = _t(x, "transpose")
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    else:
        perm = _axes(x, axes, "transpose", sort=False)
        if len(perm) != x.ndim:
            raise TraceError(f"transpose: axes {tuple(axes)} must name each of the {x.ndim} axes of {x.type} once",
                             where=user_source(), hint="pass a permutation such as (1, 0)")
    return apply_op("transpose", [x], {"perm": perm})


def broadcast_to(x, shape):
    """Repeat size-1 (and missing leading) axes up to `shape`, as numpy.broadcast_to.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([1.0, 2.0], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.broadcast_to(x, (2, 2)), x), x).tolist()
    [[1.0, 2.0], [1.0, 2.0]]
    """
    x = _t(x, "broadcast_to")
    return apply_op("broadcast_to", [x], {"shape": tuple(shape)})


def concatenate(xs, axis: int = 0):
    """Join a sequence of tensors along an existing `axis` (default 0), as numpy.concatenate.

    >>> import numpy as np, tapeir as tp
    >>> a, b = np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32)
    >>> tp.run(tp.trace(lambda a, b: tp.concatenate([a, b]), a, b), a, b).tolist()
    [1.0, 2.0, 3.0]
    """
    xs = list(xs)
    if not xs:
        raise TraceError("concatenate: needs at least one tensor", where=user_source())
    first = _t(xs[0], "concatenate")
    return apply_op("concatenate", xs, {"axis": _axis(first, axis, "concatenate")})


def squeeze(x, axis=None):
    """Drop the given size-1 axes (every size-1 axis when axis is None), as numpy.squeeze.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (tp.squeeze(x), tp.squeeze(x, axis=0)), tp.Spec((1, 3, 1)))
    >>> [v.type for v in g.outputs]
    [f32[3], f32[3,1]]
    """
    x = _t(x, "squeeze")
    axes = tuple(i for i, d in enumerate(x.shape) if d == 1) if axis is None else _axes(x, axis, "squeeze")
    return apply_op("squeeze", [x], {"axes": axes})


def expand_dims(x, axis):
    """Insert size-1 axes at `axis` (an int or a tuple of positions in the result), as
    numpy.expand_dims (IR op `unsqueeze`).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (tp.expand_dims(x, 0), tp.expand_dims(x, (1, -1))), tp.Spec(("B", 3)))
    >>> [v.type for v in g.outputs]
    [f32[1,B,3], f32[B,1,3,1]]
    """
    x = _t(x, "expand_dims")
    n_new = 1 if isinstance(axis, (int, np.integer)) else len(tuple(axis))
    return apply_op("unsqueeze", [x], {"axes": _axes(x, axis, "expand_dims", rank=x.ndim + n_new)})


def _slice_text(i: slice) -> str:
    """slice(1, None, None) -> '1:' (as the user wrote it)."""
    text = f"{'' if i.start is None else i.start}:{'' if i.stop is None else i.stop}"
    return text if i.step is None else f"{text}:{i.step}"


def _symbolic_slice(x, axis, n, i: slice):
    """(start, stop) dims of a step-1 slice on a symbolic axis, or with a symbolic bound; None
    for the whole axis. A negative int counts from the end (x[:, :-1] of T stops at T-1). The
    bounds are not clamped, as numpy's are: the backends check 0 <= start <= stop <= n when
    the sizes are bound (x[:, 1:] needs T >= 1)."""
    if i.step not in (None, 1):
        raise TraceError(f"cannot slice axis {axis} ({n}) of {x.type} with '{_slice_text(i)}': a slice on a "
                         "symbolic axis, or with a symbolic bound, takes step 1",
                         where=user_source(),
                         hint="slice with step 1, or trace with a fixed size on that axis")

    def bound(b, default):
        if b is None:
            return default
        if isinstance(b, str):
            return str(b)
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise TraceError(f"slice bound {b!r} on axis {axis} of {x.type} is not an int or a dim",
                             where=user_source())
        return int(b) if b >= 0 else dim_sum([n, int(b)])
    start, stop = bound(i.start, 0), bound(i.stop, n)
    if start == 0 and stop == n:
        return None
    if any(isinstance(d, int) and d < 0 for d in (start, dim_sub(stop, start), dim_sub(n, stop))):
        raise TraceError(f"slice '{_slice_text(i)}' of axis {axis} ({n}) of {x.type} has a negative size or "
                         f"runs past the end ({start}:{stop})", where=user_source(),
                         hint="on a symbolic axis the bounds are not clamped: 0 <= start <= stop <= the axis size")
    return start, stop


def getitem(x: Tensor, index) -> Tensor:
    """`x[index]`: basic indexing with ints, slices, ... and None, as numpy's.

    Records slice, squeeze and unsqueeze ops. On a symbolic axis a slice takes step 1 and
    its size is a dim (x[:, 1:] of [B, T] is [B, T-1]); its bounds are checked, not clamped,
    when the graph runs.

    >>> import numpy as np, tapeir as tp
    >>> x = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> tp.run(tp.trace(lambda x: x[::2, -1], x), x).tolist()
    [2.0, 8.0]
    >>> tp.trace(lambda x: x[..., None, 1:], tp.Spec(("B", 3))).outputs[0].type
    f32[B,1,2]
    >>> tp.trace(lambda x: x[:, 1:] - x[:, :-1], tp.Spec(("B", "T"))).outputs[0].type
    f32[B,T-1]
    """
    if not isinstance(index, tuple):
        index = (index,)
    for i in index:
        if not (i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer))) or isinstance(i, bool):
            raise TraceError(f"indexing with {type(i).__name__} is not supported", where=user_source(),
                             hint="tapeir supports basic indexing (ints, slices, ..., None); use where() to select")
    n_real = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if builtins.sum(1 for i in index if i is Ellipsis) > 1:
        raise TraceError("an index can only have a single ellipsis ('...')", where=user_source())
    if n_real > x.ndim:
        raise TraceError(f"getitem: too many indices ({n_real}) for {x.type}", where=user_source(),
                         hint=f"a rank-{x.ndim} tensor takes at most {x.ndim} ints or slices (plus ... and None)")
    expanded = []
    for i in index:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (x.ndim - n_real))
        else:
            expanded.append(i)
    if Ellipsis not in index:
        expanded.extend([slice(None)] * (x.ndim - n_real))
    axes, starts, stops, steps, drop, new_axes = [], [], [], [], [], []
    axis = 0
    out_pos = 0
    for i in expanded:
        if i is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        n = x.shape[axis]
        if isinstance(i, slice):
            if not isinstance(n, int) or isinstance(i.start, str) or isinstance(i.stop, str):
                bounds = _symbolic_slice(x, axis, n, i)
                if bounds is not None:
                    axes.append(axis); starts.append(bounds[0]); stops.append(bounds[1]); steps.append(1)
            elif i.start is not None or i.stop is not None or i.step not in (None, 1):
                s, e, st = i.indices(n)
                if not range(s, e, st):  # empty: indices() may give start -1 (x[-9::-1]), which slice rejects
                    s, e, st = 0, 0, 1
                if (s, e, st) != (0, n, 1):
                    axes.append(axis); starts.append(s); stops.append(e); steps.append(st)
            out_pos += 1
        else:
            if not isinstance(n, int):
                raise TraceError(f"cannot index symbolic axis {axis} ({n}) of {x.type} with an int",
                                 where=user_source())
            k = int(i)
            if not -n <= k < n:
                raise TraceError(f"getitem: index {k} is out of bounds for axis {axis} with size {n} ({x.type})",
                                 where=user_source(), hint=f"indices on axis {axis} are in [-{n}, {n - 1}]")
            k %= n
            axes.append(axis); starts.append(k); stops.append(k + 1); steps.append(1)
            drop.append(axis)
        axis += 1
    y = x
    if axes:
        y = apply_op("slice", [y], {"axes": axes, "starts": starts, "stops": stops, "steps": steps})
    if drop:
        y = apply_op("squeeze", [y], {"axes": drop})
    if new_axes:
        y = apply_op("unsqueeze", [y], {"axes": new_axes})
    return y


# ---- normalization, convolution, pooling -------------------------------------------

def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalize over the trailing `normalized_shape` dims to mean 0 and variance 1, then
    scale by `weight` and shift by `bias` (both optional; bias needs weight), as
    torch.nn.functional.layer_norm. The variance is the biased one; eps is added to it.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([[1.0, 2.0, 3.0]], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.layer_norm(x, 3), x), x).astype(float).round(4).tolist()
    [[-1.2247, 0.0, 1.2247]]
    """
    x = _t(x, "layer_norm")
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(ns):]) != ns or len(ns) > x.ndim or not ns:
        raise TraceError(f"layer_norm: normalized_shape {list(ns)} does not match the trailing dims of {x.type}",
                         where=user_source(), hint="normalized_shape is x.shape[-k:] for some k >= 1")
    if bias is not None and weight is None:
        raise TraceError("layer_norm: bias without weight is not supported", where=user_source(),
                         hint="pass weight=np.ones(normalized_shape, dtype)")
    operands = [x] + [t for t in (weight, bias) if t is not None]
    return apply_op("layer_norm", operands, {"axis": x.ndim - len(ns), "epsilon": eps})


def _pair(v, name, op):
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise TraceError(f"{op}: {name} must be an int or a pair, got {v}", where=user_source())
    return v


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """2-D convolution (cross-correlation), as torch.nn.functional.conv2d.

    input is [N, C, H, W], weight [O, C/groups, kH, kW], bias [O] or None. stride,
    padding and dilation are an int or an (h, w) pair; padding may also be "valid" (0)
    or "same" (stride 1 and an odd effective kernel). Only the batch dim may be symbolic.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x, w: tp.conv2d(x, w, stride=2, padding=1), tp.Spec(("N", 3, 32, 32)),
    ...              tp.Spec((8, 3, 3, 3)))
    >>> g.outputs[0].type
    f32[N,8,16,16]
    """
    w = _t(weight, "conv2d")
    dil = _pair(dilation, "dilation", "conv2d")
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if stride not in (1, (1, 1)):
                raise TraceError("conv2d: padding='same' needs stride 1", where=user_source())
            tot = [dil[i] * (w.shape[2 + i] - 1) for i in range(2)]
            if any(t % 2 for t in tot):
                raise TraceError("conv2d: padding='same' with an even effective kernel needs asymmetric padding",
                                 where=user_source(), hint="pad explicitly or use an odd kernel")
            padding = (tot[0] // 2, tot[1] // 2)
        else:
            raise TraceError(f"conv2d: padding={padding!r}", where=user_source(), hint="use an int, a pair, 'valid' or 'same'")
    operands = [input, w] + ([bias] if bias is not None else [])
    return apply_op("conv2d", operands, {"stride": _pair(stride, "stride", "conv2d"),
                                       "padding": _pair(padding, "padding", "conv2d"),
                                       "dilation": dil, "groups": groups})


def conv_transpose2d(input, weight, stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1):
    """Transposed convolution without bias, as torch.nn.functional.conv_transpose2d:
    the adjoint of conv2d with respect to its input.

    input is [N, O, h, w] and weight [O, C/groups, kH, kW] (conv2d's weight layout read
    the other way); output_padding (below stride or dilation) adds rows and columns at the end.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x, w: tp.conv_transpose2d(x, w, stride=2, padding=1),
    ...              tp.Spec(("N", 8, 16, 16)), tp.Spec((8, 3, 4, 4)))
    >>> g.outputs[0].type
    f32[N,3,32,32]
    """
    return apply_op("conv_transpose2d", [input, weight], {
        "stride": _pair(stride, "stride", "conv_transpose2d"), "padding": _pair(padding, "padding", "conv_transpose2d"),
        "output_padding": _pair(output_padding, "output_padding", "conv_transpose2d"),
        "groups": groups, "dilation": _pair(dilation, "dilation", "conv_transpose2d")})


def pad(x, pad_width, constant_values: float = 0.0):
    """Pad with `constant_values` (default 0.0), as numpy.pad(mode="constant").

    pad_width is ((before, after), ...) per axis, or one (before, after) pair for every axis.

    >>> import numpy as np, tapeir as tp
    >>> x = np.array([1.0, 2.0], np.float32)
    >>> tp.run(tp.trace(lambda x: tp.pad(x, (1, 2), constant_values=9.0), x), x).tolist()
    [9.0, 1.0, 2.0, 9.0, 9.0]
    """
    x = _t(x, "pad")
    symbolic = isinstance(pad_width, str) or any(
        isinstance(w, str) or (isinstance(w, (tuple, list)) and any(isinstance(v, str) for v in w))
        for w in (pad_width if isinstance(pad_width, (tuple, list)) else ()))
    # symbolic widths (a dim such as "T-5") keep their strings: numpy would make them text
    pw = np.broadcast_to(np.asarray(pad_width, dtype=object if symbolic else np.int64), (x.ndim, 2))
    return apply_op("pad", [x], {"pads": tuple(pw[:, 0]) + tuple(pw[:, 1]), "value": constant_values})


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
    """Maximum over kernel_size windows of an [N, C, H, W] input, as torch.nn.functional.max_pool2d.

    stride defaults to kernel_size; padding (at most half the kernel) never wins the max.
    ceil_mode=True is not supported.

    >>> import numpy as np, tapeir as tp
    >>> tp.trace(lambda x: tp.max_pool2d(x, 2), tp.Spec(("N", 3, 32, 32))).outputs[0].type
    f32[N,3,16,16]
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> tp.run(tp.trace(lambda x: tp.max_pool2d(x, 2), x), x).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    if ceil_mode:
        raise TraceError("max_pool2d: ceil_mode=True is not supported", where=user_source(),
                         hint="pad the input instead")
    k = _pair(kernel_size, "kernel_size", "max_pool2d")
    return apply_op("max_pool2d", [input], {"kernel": k, "stride": k if stride is None else _pair(stride, "stride", "max_pool2d"),
                                          "padding": _pair(padding, "padding", "max_pool2d"),
                                          "dilation": _pair(dilation, "dilation", "max_pool2d")})


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
    """Mean over kernel_size windows of an [N, C, H, W] input, as torch.nn.functional.avg_pool2d.

    stride defaults to kernel_size; count_include_pad=True (the default) divides by the
    kernel size even where a window covers padding. ceil_mode=True is not supported.

    >>> import numpy as np, tapeir as tp
    >>> tp.trace(lambda x: tp.avg_pool2d(x, 3, stride=1, padding=1), tp.Spec(("N", 3, 32, 32))).outputs[0].type
    f32[N,3,32,32]
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> tp.run(tp.trace(lambda x: tp.avg_pool2d(x, 2), x), x).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    if ceil_mode:
        raise TraceError("avg_pool2d: ceil_mode=True is not supported", where=user_source(),
                         hint="pad the input instead")
    k = _pair(kernel_size, "kernel_size", "avg_pool2d")
    return apply_op("avg_pool2d", [input], {"kernel": k, "stride": k if stride is None else _pair(stride, "stride", "avg_pool2d"),
                                          "padding": _pair(padding, "padding", "avg_pool2d"),
                                          "count_include_pad": count_include_pad})


# ---- losses ------------------------------------------------------------------------

def _reduce_loss(x: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return mean(x)
    if reduction == "sum":
        return sum(x)
    if reduction == "none":
        return x
    raise TraceError(f"{op}: reduction={reduction!r}", where=user_source(),
                     hint="reduction is 'mean', 'sum' or 'none'")


def _same_shape(a: Tensor, b: Tensor, op: str):
    if a.shape != b.shape:
        raise TraceError(f"{op}: input {a.type} and target {b.type} differ in shape", where=user_source(),
                         hint="losses compare tensors of the same shape; reshape the target")


def mse_loss(input, target, reduction: str = "mean"):
    """Squared error (input - target)**2, averaged (reduction="mean", the default), summed
    ("sum") or per element ("none"), as torch.nn.functional.mse_loss. Gradients flow to
    both operands (dtarget = -dinput); shapes must match.

    >>> import numpy as np, tapeir as tp
    >>> x, y = np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)
    >>> round(float(tp.run(tp.trace(tp.mse_loss, x, y), x, y)), 4)
    1.6667
    """
    a, b = _t(input, "mse_loss"), _t(target, "mse_loss")
    _same_shape(a, b, "mse_loss")
    d = a - b
    return _reduce_loss(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction: str = "mean"):
    """Absolute error |input - target|, reduced as in mse_loss ("mean", "sum" or "none"),
    as torch.nn.functional.l1_loss.

    >>> import numpy as np, tapeir as tp
    >>> x, y = np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)
    >>> float(tp.run(tp.trace(tp.l1_loss, x, y), x, y))
    1.0
    """
    a, b = _t(input, "l1_loss"), _t(target, "l1_loss")
    _same_shape(a, b, "l1_loss")
    return _reduce_loss(abs(a - b), reduction, "l1_loss")


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean"):
    """Binary cross-entropy of logits `input` and probabilities `target` (same shape), as
    torch.nn.functional.binary_cross_entropy_with_logits without weights. Computed as
    softplus(x) - x*y per element, stable for any logit (no log(sigmoid)); reduced as in
    mse_loss ("mean", "sum" or "none").

    >>> import numpy as np, tapeir as tp
    >>> x, y = np.array([2.0, -1.0], np.float32), np.array([1.0, 0.0], np.float32)
    >>> round(float(tp.run(tp.trace(tp.binary_cross_entropy_with_logits, x, y), x, y)), 4)
    0.2201
    """
    x, y = _t(input, "binary_cross_entropy_with_logits"), _t(target, "binary_cross_entropy_with_logits")
    _same_shape(x, y, "binary_cross_entropy_with_logits")
    return _reduce_loss(softplus(x) - x * y, reduction, "binary_cross_entropy_with_logits")


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100):
    """Softmax cross-entropy of logits [N,C] (or [N,C,d..], or [C]) with integer class labels
    [N] (or [N,d..], or []), as torch.nn.functional.cross_entropy without weights or label
    smoothing. Labels equal to ignore_index count neither in the sum nor in the mean;
    reduction is "mean" (the default), "sum" or "none". With nothing to count (every label
    ignored, or an empty batch) the mean is nan (0/0) and its gradient zero, as torch's.

    >>> import numpy as np, tapeir as tp
    >>> x, y = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32), np.array([0, 2], np.int64)
    >>> round(float(tp.run(tp.trace(tp.cross_entropy, x, y), x, y)), 4)
    0.7531
    """
    return apply_op("cross_entropy", [input, target], {"reduction": reduction, "ignore_index": ignore_index})


def nll_loss(input, target, reduction: str = "mean", ignore_index: int = -100):
    """Negative log-likelihood: minus the log-probability `input` [N,C] (or [N,C,d..], or [C])
    picks at each integer label, as torch.nn.functional.nll_loss without weights.
    ignore_index and reduction work as in cross_entropy, which is nll_loss of log_softmax.

    >>> import numpy as np, tapeir as tp
    >>> x, y = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32), np.array([0, 2], np.int64)
    >>> round(float(tp.run(tp.trace(lambda x, y: tp.nll_loss(tp.log_softmax(x), y), x, y), x, y)), 4)
    0.7531
    """
    return apply_op("nll_loss", [input, target], {"reduction": reduction, "ignore_index": ignore_index})


# Tensor's operators and methods (x + y, x.sum(), np.exp(x)) call the functions above; this
# module builds on Tensor and so installs itself there rather than being imported by it.
Tensor._F = sys.modules[__name__]
