"""The `tp.*` tensor functions. Each records IR through the current tracer.

Signatures follow numpy (elementwise, reductions, shapes) and torch.nn.functional
(activations, convolution, pooling, losses). Python and numpy scalars are weakly typed
(they take the tensor operand's dtype); numpy arrays are constants of their own dtype,
and tapeir never promotes between tensor dtypes: mixing f32 and f64 is an error.
"""
from __future__ import annotations

import builtins

import numpy as np

from ..ir.dtypes import FLOATS, INTS, dtype_of, to_numpy
from ..ir.errors import TraceError
from .tensor import Tensor
from .tracer import Tracer, current_tracer, user_source

_SCALARS = (bool, int, float, np.generic)


# ---- lifting operands to IR values -------------------------------------------------

def _tracer_of(args) -> Tracer:
    tr = None
    for a in args:
        if isinstance(a, Tensor):
            if tr is None:
                tr = a.tracer
            elif a.tracer is not tr:
                raise TraceError("operands come from different traces", where=user_source(),
                                 hint="a Tensor belongs to the tp.trace call that created it")
    return tr or current_tracer()


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
    if npdt.kind in "iu" and not isinstance(x, (bool, np.bool_)):
        info = np.iinfo(npdt)
        if not info.min <= int(x) <= info.max:
            raise TraceError(f"{op}: scalar {x!r} does not fit in {dt} (range {info.min}..{info.max})",
                             where=user_source(), hint="cast the tensor to a wider dtype with .astype(...)")
    with np.errstate(over="ignore"):
        arr = np.array(x, dtype=npdt)
    if npdt.kind == "f" and np.isfinite(float(x)) and not np.isfinite(arr):
        raise TraceError(f"{op}: scalar {x!r} overflows {dt} (largest {float(np.finfo(npdt).max):g})",
                         where=user_source(), hint="compute in a wider dtype (.astype('float32')) or rescale")
    return arr


def _lift(tr: Tracer, x, like: str | None, op: str):
    if isinstance(x, Tensor):
        if x.tracer is not tr:
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


def _apply(op: str, operands, attrs=None, typed=None) -> Tensor:
    """Emit `op` on operands; scalars take the dtype of the first tensor among `typed`."""
    tr = _tracer_of(operands)
    typed = operands if typed is None else typed
    like = next((a.value.type.dtype for a in typed if isinstance(a, Tensor)), None)
    if like is None:
        like = next((dtype_of(a.dtype) for a in typed if isinstance(a, np.ndarray)), None)
    vals = [_lift(tr, a, like, op) for a in operands]
    return Tensor(tr.emit(op, vals, attrs)[0], tr)


def _t(x, op) -> Tensor:
    """Make x a Tensor (arrays and scalars become constants)."""
    if isinstance(x, Tensor):
        return x
    tr = current_tracer(op)
    return Tensor(_lift(tr, x, None, op), tr)


# ---- elementwise -------------------------------------------------------------------

def _unary(op):
    def f(x):
        return _apply(op, [x])
    f.__name__ = op
    f.__doc__ = f"Elementwise {op}(x) (IR op `{op}`)."
    return f


exp, log, reciprocal, sqrt, tanh, sigmoid, softplus, sin, cos, erf = map(
    _unary, ["exp", "log", "reciprocal", "sqrt", "tanh", "sigmoid", "softplus", "sin", "cos", "erf"])
abs, relu, negative = _unary("abs"), _unary("relu"), _unary("neg")


def leaky_relu(x, negative_slope: float = 0.01):
    """max(x, 0) + negative_slope * min(x, 0), as torch.nn.functional.leaky_relu."""
    return _apply("leaky_relu", [x], {"alpha": negative_slope})


def elu(x, alpha: float = 1.0):
    return _apply("elu", [x], {"alpha": alpha})


def gelu(x, approximate: str = "none"):
    """x * Phi(x) (exact, with erf) or its tanh approximation (approximate="tanh")."""
    return _apply("gelu", [x], {"approximate": approximate})


def silu(x):
    """x * sigmoid(x) (a composite: no op of its own)."""
    x = _t(x, "silu")
    return x * sigmoid(x)


def safe_log(x, eps: float = 1e-6):
    """log(x + eps), the PyTorch idiom; finite at x = 0.

    TorchLean's spec is log(softplus(x) + eps), which is also defined for x < 0; tapeir
    follows the PyTorch form the seed names, so x must be >= 0 (or > -eps).
    """
    return log(_t(x, "safe_log") + eps)


def _binary(op):
    def f(a, b):
        return _apply(op, [a, b])
    f.__name__ = op
    f.__doc__ = f"Elementwise {op}(a, b) with numpy broadcasting (IR op `{op}`)."
    return f


add, subtract, multiply, divide, power, maximum, minimum = map(
    _binary, ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
sub, mul, div = subtract, multiply, divide
equal, not_equal, less, less_equal, greater, greater_equal = map(
    _binary, ["equal", "not_equal", "less", "less_equal", "greater", "greater_equal"])


def where(condition, x, y):
    """x where condition is true, else y (broadcasting all three)."""
    return _apply("where", [condition, x, y], typed=[x, y])


def clip(a, a_min=None, a_max=None):
    """Clamp to [a_min, a_max] (either may be None), as numpy.clip."""
    return _apply("clip", [a], {"min": a_min, "max": a_max})


def astype(x, dtype):
    x = _t(x, "astype")
    dt = dtype_of(dtype)
    return x if dt == x.value.type.dtype else _apply("cast", [x], {"to": dt})


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


def _reduce(op):
    def f(x, axis=None, keepdims=False):
        x = _t(x, op)
        return _apply(op, [x], {"axes": _axes(x, axis, op), "keepdims": keepdims})
    f.__name__ = op
    f.__doc__ = f"{op} over `axis` (int, tuple or None for all), as numpy.{op}."
    return f


sum, mean, max, min, logsumexp = map(_reduce, ["sum", "mean", "max", "min", "logsumexp"])


def _axis(x: Tensor, axis: int, op) -> int:
    """One axis: a tuple here is an error, not its first element."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TraceError(f"{op}: axis must be a single int, got {axis!r}", where=user_source(),
                         hint=f"{op} works along one axis; reshape first to merge axes")
    return _axes(x, axis, op)[0]


def softmax(x, axis: int = -1):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    x = _t(x, "softmax")
    return _apply("softmax", [x], {"axis": _axis(x, axis, "softmax")})


def log_softmax(x, axis: int = -1):
    """x - max - log(sum(exp(x - max))) along `axis` (never log(softmax))."""
    x = _t(x, "log_softmax")
    return _apply("log_softmax", [x], {"axis": _axis(x, axis, "log_softmax")})


# ---- contractions and shapes -------------------------------------------------------

def matmul(a, b):
    """numpy.matmul: 1-D operands, batch dims broadcast."""
    return _apply("matmul", [a, b])


def reshape(x, shape):
    x = _t(x, "reshape")
    shape = (shape,) if isinstance(shape, (int, str, np.integer)) else tuple(shape)
    return _apply("reshape", [x], {"shape": shape})


def transpose(x, axes=None):
    """numpy.transpose: permute the axes (reverse them when axes is None)."""
    x = _t(x, "transpose")
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    else:
        perm = _axes(x, axes, "transpose", sort=False)
        if len(perm) != x.ndim:
            raise TraceError(f"transpose: axes {tuple(axes)} must name each of the {x.ndim} axes of {x.type} once",
                             where=user_source(), hint="pass a permutation such as (1, 0)")
    return _apply("transpose", [x], {"perm": perm})


def broadcast_to(x, shape):
    """numpy.broadcast_to: repeat size-1 (and missing leading) axes up to `shape`."""
    x = _t(x, "broadcast_to")
    return _apply("broadcast_to", [x], {"shape": tuple(shape)})


def concatenate(xs, axis: int = 0):
    """numpy.concatenate: join tensors along an existing axis."""
    xs = list(xs)
    if not xs:
        raise TraceError("concatenate: needs at least one tensor", where=user_source())
    first = _t(xs[0], "concatenate")
    return _apply("concatenate", xs, {"axis": _axis(first, axis, "concatenate")})


def squeeze(x, axis=None):
    """numpy.squeeze: drop the given size-1 axes (all size-1 axes when axis is None)."""
    x = _t(x, "squeeze")
    axes = tuple(i for i, d in enumerate(x.shape) if d == 1) if axis is None else _axes(x, axis, "squeeze")
    return _apply("squeeze", [x], {"axes": axes})


def expand_dims(x, axis):
    """numpy.expand_dims: insert size-1 axes at `axis` (positions in the result)."""
    x = _t(x, "expand_dims")
    n_new = 1 if isinstance(axis, (int, np.integer)) else len(tuple(axis))
    return _apply("unsqueeze", [x], {"axes": _axes(x, axis, "expand_dims", rank=x.ndim + n_new)})


def getitem(x: Tensor, index) -> Tensor:
    """Basic indexing: ints, slices, Ellipsis and None (numpy semantics)."""
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
            if i.start is not None or i.stop is not None or i.step not in (None, 1):
                if not isinstance(n, int):
                    raise TraceError(f"cannot slice symbolic axis {axis} ({n}) of {x.type} with {i}",
                                     where=user_source(), hint="only a full slice ':' keeps a symbolic axis")
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
        y = _apply("slice", [y], {"axes": axes, "starts": starts, "stops": stops, "steps": steps})
    if drop:
        y = _apply("squeeze", [y], {"axes": drop})
    if new_axes:
        y = _apply("unsqueeze", [y], {"axes": new_axes})
    return y


# ---- normalization, convolution, pooling -------------------------------------------

def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """torch.nn.functional.layer_norm: normalize over the trailing `normalized_shape` dims."""
    x = _t(x, "layer_norm")
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(ns):]) != ns or len(ns) > x.ndim or not ns:
        raise TraceError(f"layer_norm: normalized_shape {list(ns)} does not match the trailing dims of {x.type}",
                         where=user_source(), hint="normalized_shape is x.shape[-k:] for some k >= 1")
    if bias is not None and weight is None:
        raise TraceError("layer_norm: bias without weight is not supported", where=user_source(),
                         hint="pass weight=np.ones(normalized_shape, dtype)")
    operands = [x] + [t for t in (weight, bias) if t is not None]
    return _apply("layer_norm", operands, {"axis": x.ndim - len(ns), "epsilon": eps})


def _pair(v, name, op):
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise TraceError(f"{op}: {name} must be an int or a pair, got {v}", where=user_source())
    return v


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """torch.nn.functional.conv2d (NCHW input, OIHW weight). padding: int, pair, 'valid' or 'same'."""
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
    return _apply("conv2d", operands, {"stride": _pair(stride, "stride", "conv2d"),
                                       "padding": _pair(padding, "padding", "conv2d"),
                                       "dilation": dil, "groups": groups})


def conv_transpose2d(input, weight, stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1):
    """torch.nn.functional.conv_transpose2d without bias: the adjoint of conv2d in its input."""
    return _apply("conv_transpose2d", [input, weight], {
        "stride": _pair(stride, "stride", "conv_transpose2d"), "padding": _pair(padding, "padding", "conv_transpose2d"),
        "output_padding": _pair(output_padding, "output_padding", "conv_transpose2d"),
        "groups": groups, "dilation": _pair(dilation, "dilation", "conv_transpose2d")})


def pad(x, pad_width, constant_values: float = 0.0):
    """numpy.pad in constant mode: pad_width is ((before, after), ...) per axis, or one pair for all."""
    x = _t(x, "pad")
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    return _apply("pad", [x], {"pads": tuple(pw[:, 0]) + tuple(pw[:, 1]), "value": constant_values})


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
    """torch.nn.functional.max_pool2d (stride defaults to kernel_size)."""
    if ceil_mode:
        raise TraceError("max_pool2d: ceil_mode=True is not supported", where=user_source(),
                         hint="pad the input instead")
    k = _pair(kernel_size, "kernel_size", "max_pool2d")
    return _apply("max_pool2d", [input], {"kernel": k, "stride": k if stride is None else _pair(stride, "stride", "max_pool2d"),
                                          "padding": _pair(padding, "padding", "max_pool2d"),
                                          "dilation": _pair(dilation, "dilation", "max_pool2d")})


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
    """torch.nn.functional.avg_pool2d (stride defaults to kernel_size)."""
    if ceil_mode:
        raise TraceError("avg_pool2d: ceil_mode=True is not supported", where=user_source(),
                         hint="pad the input instead")
    k = _pair(kernel_size, "kernel_size", "avg_pool2d")
    return _apply("avg_pool2d", [input], {"kernel": k, "stride": k if stride is None else _pair(stride, "stride", "avg_pool2d"),
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
    """mean((input - target)**2); gradients flow to both (dtarget = -dinput)."""
    a, b = _t(input, "mse_loss"), _t(target, "mse_loss")
    _same_shape(a, b, "mse_loss")
    d = a - b
    return _reduce_loss(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction: str = "mean"):
    a, b = _t(input, "l1_loss"), _t(target, "l1_loss")
    _same_shape(a, b, "l1_loss")
    return _reduce_loss(abs(a - b), reduction, "l1_loss")


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean"):
    """softplus(x) - x*y per element: stable for any logit (no log(sigmoid))."""
    x, y = _t(input, "binary_cross_entropy_with_logits"), _t(target, "binary_cross_entropy_with_logits")
    _same_shape(x, y, "binary_cross_entropy_with_logits")
    return _reduce_loss(softplus(x) - x * y, reduction, "binary_cross_entropy_with_logits")


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100):
    """Softmax cross-entropy of logits [N,C] (or [N,C,d..], or [C]) with integer labels."""
    return _apply("cross_entropy", [input, target], {"reduction": reduction, "ignore_index": ignore_index})


def nll_loss(input, target, reduction: str = "mean", ignore_index: int = -100):
    """Negative log-likelihood of log-probabilities [N,C] with integer labels."""
    return _apply("nll_loss", [input, target], {"reduction": reduction, "ignore_index": ignore_index})
