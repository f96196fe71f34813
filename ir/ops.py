"""The op set. Each op is declared once: arity, attributes, category, type rule.

Ops follow ONNX operators of the same meaning (snake_case names) so export is 1:1; an
op's twin is declared with it (`onnx=`).
Attributes are stored canonical: axes non-negative and sorted, defaults filled in, so
two graphs that mean the same thing print the same.
"""
from __future__ import annotations

from .dtypes import FLOATS, INTS
from .errors import TypeRuleError
from .registry import OPS, Attr, Category, register
from .types import TensorType, dim_divide, dim_product, dim_sub, dim_sum, solve, substitute
from .windows import conv_out, conv_transpose_out

E, R, S = Category.ELEMENTWISE, Category.REDUCE, Category.SHAPE
NUMERIC = FLOATS | INTS


def _fmt(types) -> str:
    return ", ".join(map(str, types))


def _need_dtype(op, t: TensorType, allowed, what="input"):
    if t.dtype not in allowed:
        kind = "floating-point" if allowed == FLOATS else "numeric" if allowed == NUMERIC else "/".join(sorted(allowed))
        raise TypeRuleError(
            f"{op}: {what} has dtype {t.dtype}, expected {kind}",
            hint="cast with .astype('float32')" if allowed == FLOATS else None,
        )


def _same_dtype(op, types):
    if len({t.dtype for t in types}) > 1:
        raise TypeRuleError(
            f"{op}: dtypes differ ({_fmt(types)})",
            hint="tapeir does not promote tensor dtypes; cast one side with .astype(...)",
        )


def broadcast_shapes(op, *types) -> tuple:
    """numpy broadcasting over int and symbolic dims (a symbol matches itself or 1)."""
    rank = max(t.rank for t in types)
    out = []
    for i in range(-rank, 0):
        dims = {t.shape[i] for t in types if t.rank >= -i} - {1}
        if len(dims) > 1:
            raise TypeRuleError(
                f"{op}: shapes do not broadcast ({_fmt(types)}): axis {i} has sizes "
                + " vs ".join(str(t.shape[i]) if t.rank >= -i else "-" for t in types),
                hint="sizes must match or be 1; reshape or broadcast_to first",
            )
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _check_axes(op, axes, rank, name="axes"):
    if any(a < 0 or a >= rank for a in axes):
        raise TypeRuleError(f"{op}: {name} {list(axes)} out of range for rank {rank}",
                            hint="axes are in [0, rank); the frontend normalizes negative axes")
    if list(axes) != sorted(set(axes)):
        raise TypeRuleError(f"{op}: {name} {list(axes)} must be sorted and unique",
                            hint="list each axis once, in increasing order")


# ---- type rules -------------------------------------------------------------------

def unary(allowed):
    def rule(op, ts, attrs):
        _need_dtype(op, ts[0], allowed)
        return [ts[0]]
    return rule


def binary(allowed, out_dtype=None):
    def rule(op, ts, attrs):
        a, b = ts
        if a.dtype == b.dtype and a.dtype in allowed and out_dtype is None:
            # the common cases, without building a new type: equal shapes, or a scalar operand
            if a.shape == b.shape or b.shape == ():
                return [a]
            if a.shape == ():
                return [b]
        for t in ts:
            _need_dtype(op, t, allowed)
        _same_dtype(op, ts)
        return [TensorType(out_dtype or a.dtype, broadcast_shapes(op, *ts))]
    return rule


def where_rule(op, ts, attrs):
    c, a, b = ts
    if c.dtype != "bool":
        raise TypeRuleError(f"where: condition has dtype {c.dtype}, expected bool",
                            hint="build it with a comparison, e.g. x > 0")
    _same_dtype("where", [a, b])
    return [TensorType(a.dtype, broadcast_shapes("where", c, a, b))]


def cast_rule(op, ts, attrs):
    return [ts[0].with_dtype(attrs["to"])]


def clip_rule(op, ts, attrs):
    _need_dtype("clip", ts[0], NUMERIC)
    lo, hi = attrs["min"], attrs["max"]
    if lo is not None and hi is not None and lo > hi:
        raise TypeRuleError(f"clip: min={lo} is greater than max={hi}",
                            hint="pass a_min <= a_max")
    return [ts[0]]


def reduce_rule(allowed):
    def rule(op, ts, attrs):
        t = ts[0]
        _need_dtype(op, t, allowed)
        axes = attrs["axes"]
        _check_axes(op, axes, t.rank)
        shape = [1 if i in axes else d for i, d in enumerate(t.shape)] if attrs["keepdims"] else [
            d for i, d in enumerate(t.shape) if i not in axes]
        return [t.with_shape(shape)]
    return rule


def axis_rule(op, ts, attrs):
    t = ts[0]
    _need_dtype(op, t, FLOATS)
    if not 0 <= attrs["axis"] < t.rank:
        raise TypeRuleError(f"{op}: axis {attrs['axis']} out of range for {t}",
                            hint="the axis must name an existing axis of the input")
    return [t]


def matmul_rule(op, ts, attrs):
    a, b = ts
    _same_dtype("matmul", ts)
    _need_dtype("matmul", a, NUMERIC)
    if a.rank == 0 or b.rank == 0:
        raise TypeRuleError(f"matmul: operands must have rank >= 1, got {_fmt(ts)}",
                            hint="use * for scaling by a scalar")
    ash = (1,) + a.shape if a.rank == 1 else a.shape
    bsh = b.shape + (1,) if b.rank == 1 else b.shape
    if ash[-1] != bsh[-2]:
        raise TypeRuleError(
            f"matmul: contracting dims differ ({_fmt(ts)}): {ash[-1]} vs {bsh[-2]}",
            hint="a @ b needs a.shape[-1] == b.shape[-2]; transpose one side?")
    batch = broadcast_shapes("matmul", TensorType(a.dtype, ash[:-2]), TensorType(b.dtype, bsh[:-2]))
    shape = batch + ((ash[-2],) if a.rank > 1 else ()) + ((bsh[-1],) if b.rank > 1 else ())
    return [TensorType(a.dtype, shape)]


def reshape_rule(op, ts, attrs):
    t, shape = ts[0], list(attrs["shape"])
    if shape.count(-1) > 1:
        raise TypeRuleError(f"reshape: more than one -1 in shape {shape}",
                            hint="use -1 for at most one inferred dim")
    total = dim_product(t.shape)
    if -1 in shape:
        i = shape.index(-1)
        known = dim_product(d for d in shape if d != -1)
        inferred = dim_divide(total, known)
        if inferred is None:
            raise TypeRuleError(f"reshape: cannot reshape {t} to {shape}: {total} is not a multiple of {known}",
                                hint="the element count must stay the same; the known dims must divide it")
        shape[i] = inferred
    if dim_product(shape) != total:
        raise TypeRuleError(f"reshape: cannot reshape {t} ({total} elements) to {shape} ({dim_product(shape)} elements)",
                            hint="the element count must stay the same; use -1 for one inferred dim")
    return [t.with_shape(shape)]


def transpose_rule(op, ts, attrs):
    t, perm = ts[0], attrs["perm"]
    if sorted(perm) != list(range(t.rank)):
        raise TypeRuleError(f"transpose: perm {list(perm)} is not a permutation of the {t.rank} axes of {t}",
                            hint=f"give each of the axes 0..{t.rank - 1} exactly once")
    return [t.with_shape([t.shape[p] for p in perm])]


def broadcast_to_rule(op, ts, attrs):
    t, shape = ts[0], attrs["shape"]
    if -1 in shape or len(shape) < t.rank:
        raise TypeRuleError(f"broadcast_to: cannot broadcast {t} to {list(shape)}",
                            hint="the target needs at least the input's rank and no -1")
    for i in range(1, t.rank + 1):
        if t.shape[-i] not in (1, shape[-i]):
            raise TypeRuleError(f"broadcast_to: cannot broadcast {t} to {list(shape)}: axis {-i} is {t.shape[-i]} vs {shape[-i]}",
                                hint="only size-1 axes (and missing leading axes) broadcast")
    return [t.with_shape(shape)]


def concatenate_rule(op, ts, attrs):
    axis = attrs["axis"]
    _same_dtype("concatenate", ts)
    first = ts[0]
    if not 0 <= axis < first.rank:
        raise TypeRuleError(f"concatenate: axis {axis} out of range for {first}",
                            hint="the axis must name an existing axis of the inputs")
    for t in ts[1:]:
        if t.rank != first.rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise TypeRuleError(f"concatenate: shapes differ off axis {axis} ({_fmt(ts)})",
                                hint=f"all operands need the same rank and sizes except on axis {axis}")
    size = dim_sum(t.shape[axis] for t in ts)  # T + 1 on a symbolic axis is the dim "T+1"
    return [first.with_shape(first.shape[:axis] + (size,) + first.shape[axis + 1:])]


def slice_rule(op, ts, attrs):
    """x[start:stop:step] on each of `axes`. On a static axis the bounds are ints, normalized
    by the frontend (0 <= start <= n, -1 <= stop <= n). On a symbolic axis (or with a
    symbolic bound: a static buffer cut to a sequence length T) the step is 1 and the bounds
    are dims with start <= stop <= n, which the backends check when the sizes are bound (the
    result's size stop - start must not be negative)."""
    t = ts[0]
    axes, starts, stops, steps = attrs["axes"], attrs["starts"], attrs["stops"], attrs["steps"]
    if not len(axes) == len(starts) == len(stops) == len(steps):
        raise TypeRuleError("slice: axes, starts, stops and steps must have the same length",
                            hint="give one start, stop and step per sliced axis")
    _check_axes("slice", axes, t.rank)
    shape = list(t.shape)
    for a, start, stop, step in zip(axes, starts, stops, steps):
        n = shape[a]
        if isinstance(n, int) and isinstance(start, int) and isinstance(stop, int):
            if step == 0 or not (0 <= start <= n and -1 <= stop <= n):
                raise TypeRuleError(f"slice: bounds {start}:{stop}:{step} invalid for axis {a} of size {n}",
                                    hint="starts and stops are clamped to the axis size; step must not be 0")
            shape[a] = len(range(start, stop, step))
            continue
        size, past = dim_sub(stop, start), dim_sub(n, stop)
        if step != 1 or any(isinstance(d, int) and d < 0 for d in (start, size, past)):
            raise TypeRuleError(f"slice: bounds {start}:{stop}:{step} invalid for axis {a} of {t}",
                                hint="on a symbolic axis, or with a symbolic bound, the step is 1 and "
                                     "0 <= start <= stop <= the axis size")
        shape[a] = size
    return [t.with_shape(shape)]


def squeeze_rule(op, ts, attrs):
    t, axes = ts[0], attrs["axes"]
    _check_axes("squeeze", axes, t.rank)
    if any(t.shape[a] != 1 for a in axes):
        raise TypeRuleError(f"squeeze: axes {list(axes)} of {t} are not all size 1",
                            hint="only size-1 axes can be squeezed; use reshape to merge axes")
    return [t.with_shape([d for i, d in enumerate(t.shape) if i not in axes])]


def unsqueeze_rule(op, ts, attrs):
    t, axes = ts[0], attrs["axes"]
    rank = t.rank + len(axes)
    _check_axes("unsqueeze", axes, rank)
    it = iter(t.shape)
    return [t.with_shape([1 if i in axes else next(it) for i in range(rank)])]


def _spatial_out(op, t, k, stride, padding, dilation):
    out = []
    for i in range(2):
        n = t.shape[2 + i]
        if not isinstance(n, int):
            raise TypeRuleError(f"{op}: spatial dims must be static, got {t}",
                                hint="convolution and pooling need fixed spatial sizes; only the batch dim may be symbolic")
        size = conv_out(n, k[i], stride[i], 2 * padding[i], dilation[i])
        if size <= 0:
            raise TypeRuleError(f"{op}: window {k} (dilation {dilation}) larger than padded input {t}",
                                hint="use a smaller kernel or dilation, or pad the input")
        out.append(size)
    return out


def _check_pairs(op, attrs, names):
    for n in names:
        v = attrs[n]
        if len(v) != 2 or any(x < (0 if n == "padding" else 1) for x in v):
            raise TypeRuleError(f"{op}: {n}={list(v)} must be two {'non-negative' if n == 'padding' else 'positive'} ints",
                                hint="pass an int or a pair of ints")


def conv2d_rule(op, ts, attrs):
    x, w = ts[0], ts[1]
    _same_dtype("conv2d", ts)
    _need_dtype("conv2d", x, FLOATS)
    if x.rank != 4 or w.rank != 4:
        raise TypeRuleError(f"conv2d: expected input [N,C,H,W] and weight [O,C/groups,kH,kW], got {_fmt(ts)}",
                            hint="use NCHW inputs and OIHW weights (add a batch axis with expand_dims)")
    _check_pairs("conv2d", attrs, ("stride", "padding", "dilation"))
    g = attrs["groups"]
    if g < 1 or x.shape[1] != dim_product([w.shape[1], g]) or not isinstance(w.shape[0], int) or w.shape[0] % g:
        raise TypeRuleError(f"conv2d: channels do not match groups={g} ({_fmt(ts)})",
                            hint="input channels must equal weight.shape[1] * groups, and groups must divide out channels")
    if len(ts) == 3 and ts[2].shape != (w.shape[0],):
        raise TypeRuleError(f"conv2d: bias must be [{w.shape[0]}], got {ts[2]}",
                            hint="the bias has one entry per output channel")
    h, wd = _spatial_out("conv2d", x, w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"])
    return [x.with_shape((x.shape[0], w.shape[0], h, wd))]


def conv_transpose2d_rule(op, ts, attrs):
    g, w = ts
    _same_dtype(op, ts)
    _need_dtype(op, g, FLOATS)
    if g.rank != 4 or w.rank != 4:
        raise TypeRuleError(f"{op}: expected input [N,O,h,w] and weight [O,C/groups,kH,kW], got {_fmt(ts)}",
                            hint="use NCHW inputs and weights shaped like conv2d's [O, C/groups, kH, kW]")
    _check_pairs(op, attrs, ("stride", "padding", "dilation"))
    grp = attrs["groups"]
    if g.shape[1] != w.shape[0] or not isinstance(w.shape[1], int):
        raise TypeRuleError(f"{op}: input channels {g.shape[1]} must equal weight.shape[0] ({_fmt(ts)})",
                            hint="the input's channels are conv2d's output channels, weight.shape[0]")
    out = []
    for i in range(2):
        n, op_ = g.shape[2 + i], attrs["output_padding"][i]
        if not isinstance(n, int):
            raise TypeRuleError(f"{op}: spatial dims must be static, got {g}",
                                hint="convolution and pooling need fixed spatial sizes; only the batch dim may be symbolic")
        if not 0 <= op_ < max(attrs["stride"][i], attrs["dilation"][i]):
            raise TypeRuleError(f"{op}: output_padding {list(attrs['output_padding'])} must be below stride or dilation",
                                hint="output_padding adds at most stride-1 (or dilation-1) rows/columns")
        out.append(conv_transpose_out(n, w.shape[2 + i], attrs["stride"][i], attrs["padding"][i],
                                      attrs["dilation"][i], op_))
    if min(out) <= 0:
        raise TypeRuleError(f"{op}: output would be empty ({out})",
                            hint="check stride, padding and kernel size")
    return [g.with_shape((g.shape[0], w.shape[1] * grp, out[0], out[1]))]


def iota_rule(op, ts, attrs):
    t = ts[0]
    _check_axes(op, (attrs["axis"],), t.rank, "axis")
    return [TensorType("i64", (t.shape[attrs["axis"]],))]


def _sized_like(op, t, ref, axes, ref_axes, shrink: bool):
    """t's type with axes[i] resized to ref's dim ref_axes[i] (run-time sizes: slice_to, pad_to)."""
    if len(axes) != len(ref_axes) or len(set(axes)) != len(axes):
        raise TypeRuleError(f"{op}: axes {list(axes)} and ref_axes {list(ref_axes)} must pair up, without repeats")
    _check_axes(op, axes, t.rank)
    if any(not 0 <= r < ref.rank for r in ref_axes):  # may repeat: mask[:T, :T] reads T twice
        raise TypeRuleError(f"{op}: ref_axes {list(ref_axes)} out of range for {ref}")
    shape = list(t.shape)
    for a, r in zip(axes, ref_axes):
        want = ref.shape[r]
        if isinstance(want, int) and isinstance(shape[a], int) and (want > shape[a] if shrink else want < shape[a]):
            raise TypeRuleError(f"{op}: axis {a} of {t} cannot be {'sliced' if shrink else 'padded'} to size {want} "
                                f"(axis {r} of {ref})")
        shape[a] = want
    return [t.with_shape(tuple(shape))]


def slice_to_rule(op, ts, attrs):
    return _sized_like(op, ts[0], ts[1], attrs["axes"], attrs["ref_axes"], True)


def pad_to_rule(op, ts, attrs):
    if ts[0].rank != ts[1].rank:
        raise TypeRuleError(f"{op}: ranks differ ({_fmt(ts)})")
    return _sized_like(op, ts[0], ts[1], attrs["axes"], attrs["axes"], False)


def pad_rule(op, ts, attrs):
    t, pads = ts[0], attrs["pads"]
    if len(pads) != 2 * t.rank or any(isinstance(d, int) and d < 0 for d in pads):
        raise TypeRuleError(f"{op}: pads {list(pads)} must be {2 * t.rank} non-negative sizes for {t} "
                            "(all befores, then all afters)",
                            hint="numpy-style pads: all the befores, then all the afters")
    return [t.with_shape([dim_sum((d, pads[i], pads[t.rank + i])) for i, d in enumerate(t.shape)])]


def pool_rule(op, ts, attrs):
    x = ts[0]
    _need_dtype(op, x, FLOATS)
    if x.rank != 4:
        raise TypeRuleError(f"{op}: expected input [N,C,H,W], got {x}",
                            hint="use NCHW inputs (add a batch axis with expand_dims)")
    _check_pairs(op, attrs, ("kernel", "stride", "padding", "dilation"))
    k, p = attrs["kernel"], attrs["padding"]
    if any(2 * p[i] > k[i] for i in range(2)):
        raise TypeRuleError(f"{op}: padding {list(p)} must be at most half the kernel {list(k)}",
                            hint="torch's rule: padding <= kernel_size / 2")
    h, w = _spatial_out(op, x, k, attrs["stride"], p, attrs["dilation"])
    return [x.with_shape(x.shape[:2] + (h, w))]


def layer_norm_rule(op, ts, attrs):
    x, axis = ts[0], attrs["axis"]
    _need_dtype("layer_norm", x, FLOATS)
    _same_dtype("layer_norm", ts)
    if not 0 <= axis < x.rank:
        raise TypeRuleError(f"layer_norm: axis {axis} out of range for {x}",
                            hint="normalized_shape must be trailing dims of the input")
    for t, what in zip(ts[1:], ("weight", "bias")):
        if t.shape != x.shape[axis:]:
            raise TypeRuleError(f"layer_norm: {what} shape {t} must equal normalized shape {list(x.shape[axis:])}",
                                hint="weight and bias have the normalized shape, e.g. [C] for layer_norm(x, (C,))")
    return [x]


def class_loss_rule(op, ts, attrs):
    x, labels = ts
    _need_dtype(op, x, FLOATS, "input")
    _need_dtype(op, labels, INTS, "labels")
    want = x.shape[:1] + x.shape[2:] if x.rank >= 2 else ()
    if x.rank == 0 or labels.shape != want:
        raise TypeRuleError(
            f"{op}: labels {labels} do not fit input {x}",
            hint="input is [N,C] (or [N,C,d...] or [C]); labels are integer classes [N] (or [N,d...] or [])")
    shape = () if attrs["reduction"] != "none" else want
    return [TensorType(x.dtype, shape)]


# ---- declarations -----------------------------------------------------------------
# onnx=: the ai.onnx twin (see ir/registry.py); ops without one export as composites or
# ONNX local functions.

for _n, _t in [("exp", "Exp"), ("log", "Log"), ("reciprocal", "Reciprocal"), ("sqrt", "Sqrt"), ("tanh", "Tanh"),
               ("sigmoid", "Sigmoid"), ("softplus", "Softplus"), ("sin", "Sin"), ("cos", "Cos"), ("erf", "Erf")]:
    register(_n, 1, E, unary(FLOATS), onnx=_t)
for _n, _t in [("neg", "Neg"), ("abs", "Abs"), ("relu", "Relu")]:
    register(_n, 1, E, unary(NUMERIC), onnx=_t)
register("leaky_relu", 1, E, unary(FLOATS), {"alpha": Attr("float", 0.01)}, onnx="LeakyRelu")
register("elu", 1, E, unary(FLOATS), {"alpha": Attr("float", 1.0)}, onnx="Elu")
register("gelu", 1, E, unary(FLOATS), {"approximate": Attr("str", "none", ("none", "tanh"))}, onnx="Gelu")
register("clip", 1, E, clip_rule, {"min": Attr("float?", None), "max": Attr("float?", None)}, onnx="Clip")
register("cast", 1, E, cast_rule, {"to": Attr("dtype")}, onnx="Cast")

for _n, _t in [("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("maximum", "Max"), ("minimum", "Min")]:
    register(_n, 2, E, binary(NUMERIC), onnx=_t)
for _n, _t in [("div", "Div"), ("pow", "Pow")]:
    register(_n, 2, E, binary(FLOATS), onnx=_t)
register("equal", 2, E, binary(NUMERIC | {"bool"}, "bool"), differentiable=False, onnx="Equal")
register("not_equal", 2, E, binary(NUMERIC | {"bool"}, "bool"), differentiable=False)
for _n, _t in [("less", "Less"), ("less_equal", "LessOrEqual"), ("greater", "Greater"),
               ("greater_equal", "GreaterOrEqual")]:
    register(_n, 2, E, binary(NUMERIC, "bool"), differentiable=False, onnx=_t)
register("where", 3, E, where_rule, onnx="Where")

_REDUCE_ATTRS = {"axes": Attr("ints"), "keepdims": Attr("bool", False)}
for _n, _allowed, _t in [("sum", NUMERIC, "ReduceSum"), ("mean", FLOATS, "ReduceMean"), ("max", NUMERIC, "ReduceMax"),
                         ("min", NUMERIC, "ReduceMin"), ("logsumexp", FLOATS, "ReduceLogSumExp")]:
    register(_n, 1, R, reduce_rule(_allowed), _REDUCE_ATTRS, onnx=_t)

register("softmax", 1, Category.NORMALIZE, axis_rule, {"axis": Attr("int")}, onnx="Softmax")
register("log_softmax", 1, Category.NORMALIZE, axis_rule, {"axis": Attr("int")}, onnx="LogSoftmax")
register("layer_norm", (1, 3), Category.NORMALIZE, layer_norm_rule,
         {"axis": Attr("int"), "epsilon": Attr("float", 1e-5)}, onnx="LayerNormalization")

register("matmul", 2, Category.CONTRACT, matmul_rule, onnx="MatMul")
register("conv2d", (2, 3), Category.CONTRACT, conv2d_rule,
         {"stride": Attr("ints", (1, 1)), "padding": Attr("ints", (0, 0)),
          "dilation": Attr("ints", (1, 1)), "groups": Attr("int", 1)}, onnx="Conv")
register("conv_transpose2d", 2, Category.CONTRACT, conv_transpose2d_rule,
         {"stride": Attr("ints", (1, 1)), "padding": Attr("ints", (0, 0)), "dilation": Attr("ints", (1, 1)),
          "groups": Attr("int", 1), "output_padding": Attr("ints", (0, 0))},
         doc="the adjoint of conv2d with respect to its input (ONNX ConvTranspose)", onnx="ConvTranspose")
_POOL = {"kernel": Attr("ints"), "stride": Attr("ints"), "padding": Attr("ints", (0, 0)),
         "dilation": Attr("ints", (1, 1))}
register("max_pool2d", 1, Category.WINDOW, pool_rule, _POOL, onnx="MaxPool")
register("avg_pool2d", 1, Category.WINDOW, pool_rule,
         {**_POOL, "count_include_pad": Attr("bool", True)}, onnx="AveragePool")

register("reshape", 1, S, reshape_rule, {"shape": Attr("shape")}, onnx="Reshape")
register("transpose", 1, S, transpose_rule, {"perm": Attr("ints")}, onnx="Transpose")
register("broadcast_to", 1, S, broadcast_to_rule, {"shape": Attr("shape")}, onnx="Expand")
register("concatenate", (1, None), S, concatenate_rule, {"axis": Attr("int")}, onnx="Concat")
register("slice", 1, S, slice_rule, {"axes": Attr("ints"), "starts": Attr("dims"),
                                     "stops": Attr("dims"), "steps": Attr("ints")}, onnx="Slice")
register("pad", 1, S, pad_rule, {"pads": Attr("dims"), "value": Attr("float", 0.0)}, onnx="Pad")
# run-time sizes: a symbolic dim is only known when the graph runs, so these ops read it
# from the shape of an operand (`ref`, never differentiated): arange over a dim (positions
# over a symbolic sequence), a leading slice to a dim (a causal-mask buffer cut to the
# sequence) and its adjoint, zero padding at the end up to a dim
register("iota", 1, S, iota_rule, {"axis": Attr("int")}, differentiable=False,
         doc="0, 1, ..., n-1 (i64) where n is axis `axis` of the operand, read at run time")
register("slice_to", 2, S, slice_to_rule, {"axes": Attr("ints"), "ref_axes": Attr("ints")},
         doc="x[:m] on each of `axes`, m the size of `ref`'s matching axis of `ref_axes`, read at run time")
register("pad_to", 2, S, pad_to_rule, {"axes": Attr("ints")},
         doc="x zero-padded at the end of `axes` to the sizes of `ref` on those axes (slice_to's adjoint)")
register("squeeze", 1, S, squeeze_rule, {"axes": Attr("ints")}, onnx="Squeeze")
register("unsqueeze", 1, S, unsqueeze_rule, {"axes": Attr("ints")}, onnx="Unsqueeze")

_LOSS = {"reduction": Attr("str", "mean", ("mean", "sum", "none")), "ignore_index": Attr("int", -100)}
register("cross_entropy", 2, Category.LOSS, class_loss_rule, _LOSS, onnx="SoftmaxCrossEntropyLoss")
register("nll_loss", 2, Category.LOSS, class_loss_rule, _LOSS, onnx="NegativeLogLikelihoodLoss")


def fused_rule(op, ts, attrs):
    """A fused node is its body applied to its operands: the body's inputs match the operand
    types up to a renaming of symbols (a body is a function; tp.call may inline it where B is
    3), and the outputs are the body's, with the symbols renamed the same way.

    What a body may hold (the contract the kernels and exporters rely on):
      - ELEMENTWISE nodes only (no nested fused node);
      - every body node produces the group's one shape (the domain); inputs and constants
        broadcast to it (none is bigger, even an unused one);
      - every body output is produced by a body node (not an input or a constant).
    """
    body = attrs["body"]
    if len(ts) != len(body.inputs):
        raise TypeRuleError(f"fused: {len(ts)} operands for a body of {len(body.inputs)} inputs")
    domain = None
    for m in body.nodes:
        if OPS[m.op].category is not E:
            raise TypeRuleError(f"fused: its body holds {m.op}, which is not elementwise",
                                hint="a fused body holds elementwise ops only (passes/fusion.py)")
        for o in m.outputs:
            domain = o.type.shape if domain is None else domain
            if o.type.shape != domain:
                raise TypeRuleError(f"fused: body values have shapes {list(domain)} and {list(o.type.shape)}; "
                                    "every body node must produce the group's one shape",
                                    hint="keep smaller-shaped ops outside the group; their results become inputs")
    for a in list(body.inputs) + list(body.constants):  # what the blocked kernels slice: never bigger
        if domain is not None and (a.type.rank > len(domain) or any(
                d != 1 and d != e for d, e in zip(a.type.shape[::-1], domain[::-1]))):
            raise TypeRuleError(f"fused: body input {a.name or 'constant'} is {a.type}, which does not broadcast "
                                f"to the group's shape {list(domain)}",
                                hint="a body input is the group's shape or broadcasts to it")
    made = {id(o) for m in body.nodes for o in m.outputs}
    if not body.outputs or any(id(v) not in made for v in body.outputs):
        raise TypeRuleError("fused: every body output must be produced by a body node",
                            hint="a value that passes through unchanged is used from outside the group directly")
    subst: dict = {}
    for _ in range(2):  # a product ("4*B") may need another input to bind B first
        for a, t in zip(body.inputs, ts):
            if a.type.rank == t.rank:
                for d_old, d_new in zip(a.type.shape, t.shape):
                    if isinstance(d_old, str):
                        solve(d_old, d_new, subst)
    for k, (a, t) in enumerate(zip(body.inputs, ts)):
        want = tuple(substitute(d, subst) if isinstance(d, str) else d for d in a.type.shape)
        if a.type.dtype != t.dtype or want != t.shape:
            raise TypeRuleError(f"fused: operand {k} is {t}, its body input {a.name} is {a.type}",
                                hint="a symbolic dim must have the same size in every operand that has it")
    return [TensorType(v.type.dtype, tuple(substitute(d, subst) if isinstance(d, str) else d
                                            for d in v.type.shape)) for v in body.outputs]


register("fused", (1, None), Category.FUSED, fused_rule, {"body": Attr("graph")},
         doc="a group of elementwise ops run as one kernel; attrs['body'] is the group as a graph")
