"""The ops real models need beyond the seed set (issue 11): index picking, scans, masks,
contractions by equation, batch normalization and counter-based random numbers.

Declared like ir/ops.py's (one registration each, the ONNX twin with it); ir/__init__.py
imports this module after ir/ops.py, so the registry is whole once `ir` is imported. Composites that need
no op of their own (stack, flatten, var/std, split, dropout, random_normal, training-mode
batch norm) live in frontend/functions_extra.py.
"""
from __future__ import annotations

from .dtypes import FLOATS, INTS
from .errors import TypeRuleError
from .ops import NUMERIC, _check_axes, _fmt, _need_dtype, _same_dtype
from .registry import Attr, Category, register
from .types import TensorType, dim_product

R, S, C = Category.REDUCE, Category.SHAPE, Category.CONTRACT

# random_uniform's hash works on int64 values below this prime (2**31 - 1), so every product
# of two stays below 2**62: exact in numpy and in onnxruntime, hence identical streams
RANDOM_PRIME = 2 ** 31 - 1


def _axis_in(op, t, axis, what="axis"):
    if not 0 <= axis < t.rank:
        raise TypeRuleError(f"{op}: {what} {axis} out of range for {t}",
                            hint="the frontend normalizes negative axes; the axis must name an existing axis")


def arg_rule(op, ts, attrs):
    t = ts[0]
    _need_dtype(op, t, NUMERIC)
    _axis_in(op, t, attrs["axis"])
    a = attrs["axis"]
    shape = [1 if i == a else d for i, d in enumerate(t.shape)] if attrs["keepdims"] else [
        d for i, d in enumerate(t.shape) if i != a]
    return [TensorType("i64", shape)]


def take_rule(op, ts, attrs):
    t, idx = ts
    _need_dtype(op, idx, INTS, "indices")
    a = attrs["axis"]
    _axis_in(op, t, a)
    return [t.with_shape(t.shape[:a] + idx.shape + t.shape[a + 1:])]


def scatter_add_rule(op, ts, attrs):
    data, idx, upd = ts
    _need_dtype(op, data, NUMERIC, "data")
    _need_dtype(op, idx, INTS, "indices")
    _same_dtype(op, [data, upd])
    a = attrs["axis"]
    _axis_in(op, data, a)
    want = data.shape[:a] + idx.shape + data.shape[a + 1:]
    if upd.shape != want:
        raise TypeRuleError(f"{op}: updates {upd} do not fit data {data} and indices {idx} on axis {a}",
                            hint=f"updates must be data.shape[:axis] + indices.shape + data.shape[axis+1:] = {list(want)}")
    return [data]


def cumsum_rule(op, ts, attrs):
    _need_dtype(op, ts[0], NUMERIC)
    _axis_in(op, ts[0], attrs["axis"])
    return [ts[0]]


def trilu_rule(op, ts, attrs):
    if ts[0].rank < 2:
        raise TypeRuleError(f"{op}: needs a matrix (or a batch of them), got {ts[0]}",
                            hint="triu/tril mask the last two axes")
    return [ts[0]]


def parse_equation(eq: str):
    """'ab,bc->ac' -> (['ab', 'bc'], 'ac'); the canonical form only (explicit output, letters)."""
    if "->" not in eq or "." in eq or " " in eq:
        raise TypeRuleError(f"einsum: equation {eq!r} is not canonical (letters, commas and an explicit '->')",
                            hint="tp.einsum canonicalizes equations; write 'ij,jk->ik'")
    lhs, out = eq.split("->")
    subs = lhs.split(",")
    if not all(s.isalpha() or s == "" for s in subs + [out]):
        raise TypeRuleError(f"einsum: equation {eq!r} has characters other than letters",
                            hint="subscripts are ASCII letters")
    return subs, out


def einsum_rule(op, ts, attrs):
    subs, out = parse_equation(attrs["equation"])
    if len(subs) != len(ts):
        raise TypeRuleError(f"einsum: equation {attrs['equation']!r} names {len(subs)} operands, got {len(ts)}")
    _same_dtype(op, ts)
    _need_dtype(op, ts[0], NUMERIC)
    sizes: dict = {}
    for k, (s, t) in enumerate(zip(subs, ts)):
        if len(s) != t.rank:
            raise TypeRuleError(f"einsum: operand {k} is {t} but its subscripts {s!r} name {len(s)} axes",
                                hint="one letter per axis")
        for ch, d in zip(s, t.shape):
            if sizes.setdefault(ch, d) != d:
                raise TypeRuleError(f"einsum: index {ch!r} has sizes {sizes[ch]} and {d} ({_fmt(ts)})",
                                    hint="a letter names one size in every operand (size-1 axes do not broadcast)")
    if len(set(out)) != len(out) or any(ch not in sizes for ch in out):
        raise TypeRuleError(f"einsum: output subscripts {out!r} must be distinct letters of the inputs")
    return [TensorType(ts[0].dtype, tuple(sizes[ch] for ch in out))]


def batch_norm_rule(op, ts, attrs):
    x = ts[0]
    _need_dtype(op, x, FLOATS)
    _same_dtype(op, ts)
    if x.rank < 2:
        raise TypeRuleError(f"{op}: input must be [N, C, ...], got {x}", hint="add a batch axis")
    for t, what in zip(ts[1:], ("scale", "bias", "mean", "var")):
        if t.shape != (x.shape[1],):
            raise TypeRuleError(f"{op}: {what} {t} must be [{x.shape[1]}] (one entry per channel of {x})",
                                hint="batch norm parameters and statistics are per channel (axis 1)")
    return [x]


def random_uniform_rule(op, ts, attrs):
    key = ts[0]
    if key.dtype != "i64" or key.rank != 0:
        raise TypeRuleError(f"{op}: key must be an i64 scalar, got {key}",
                            hint="pass the seed as an int64 0-d input (or a Python int)")
    if attrs["dtype"] not in ("f32", "f64"):
        raise TypeRuleError(f"{op}: dtype {attrs['dtype']} is not f32 or f64",
                            hint="draw in float32 and cast")
    shape = attrs["shape"]
    if -1 in shape:
        raise TypeRuleError(f"{op}: shape {list(shape)} has a -1", hint="give every dim")
    n = dim_product(shape)
    if isinstance(n, int) and n >= RANDOM_PRIME:
        raise TypeRuleError(f"{op}: {n} elements; the counter-based stream has at most 2**31 - 2",
                            hint="draw in smaller pieces with different keys")
    return [TensorType(attrs["dtype"], shape)]


register("argmax", 1, R, arg_rule, {"axis": Attr("int"), "keepdims": Attr("bool", True),
                                    "select_last_index": Attr("bool", False)},
         differentiable=False, onnx="ArgMax", doc="the index of the largest element along axis (first on ties)")
register("argmin", 1, R, arg_rule, {"axis": Attr("int"), "keepdims": Attr("bool", True),
                                    "select_last_index": Attr("bool", False)},
         differentiable=False, onnx="ArgMin", doc="the index of the smallest element along axis (first on ties)")
register("take", 2, S, take_rule, {"axis": Attr("int", 0)}, onnx="Gather",
         doc="table[..., indices, ...] along axis (an embedding lookup); negative indices count from the end")
register("scatter_add", 3, S, scatter_add_rule, {"axis": Attr("int", 0)},
         doc="data with updates added at indices along axis (repeats accumulate): the adjoint of take")
register("cumsum", 1, Category.REDUCE, cumsum_rule,
         {"axis": Attr("int"), "exclusive": Attr("bool", False), "reverse": Attr("bool", False)}, onnx="CumSum")
register("trilu", 1, S, trilu_rule, {"upper": Attr("bool", True), "k": Attr("int", 0)}, onnx="Trilu",
         doc="the upper (triu) or lower (tril) triangle of the last two axes from diagonal k; zeros elsewhere")
register("einsum", (1, None), C, einsum_rule, {"equation": Attr("str")}, onnx="Einsum",
         doc="a sum of products over an index equation in canonical form ('ij,jk->ik')")
register("batch_norm", 5, Category.NORMALIZE, batch_norm_rule, {"epsilon": Attr("float", 1e-5)},
         onnx="BatchNormalization",
         doc="inference-mode batch normalization: (x - mean) / sqrt(var + epsilon) * scale + bias per channel")
register("random_uniform", 1, Category.RANDOM, random_uniform_rule,
         {"shape": Attr("shape"), "dtype": Attr("dtype", "f32")}, differentiable=False,
         doc="uniform numbers in [0, 1) on a 2**-24 grid, a pure function of (key, element index)")
