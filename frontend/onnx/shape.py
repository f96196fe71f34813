"""ONNX import rules for shape ops (Reshape, Slice, Pad, ...) and known values (Constant, Shape).

Rules follow elementwise.py: `rule(node, *inputs)`, recording IR through tp.* functions.
SYMBOLIC holds the shape arithmetic exporters emit (Shape -> Gather -> Unsqueeze ->
Concat -> Reshape), evaluated at import time on vectors of dims, some symbolic.
"""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from .. import functions as F
from .. import functions_random as FR
from ...ir.types import dim_divide, dim_product, dim_sub, dim_sum, poly, symbols_of
from ..tensor import Tensor
from .node import INT_MAX, check_constant, constant_fits, dim_source, is_static, is_symbolic, limits, prod, rank_of, \
    reshape, shape_of

# ---- shape ops ----------------------------------------------------------------------

def _reshape(n, x, shape):
    dims = n.dims(shape, "shape")
    if not n.attr("allowzero", 0):
        dims = [shape_of(x)[i] if d == 0 else d for i, d in enumerate(dims)]
    return reshape(x, dims)


def _expand(n, x, shape):
    want, have = n.dims(shape, "shape"), list(shape_of(x))
    r = max(len(want), len(have))
    want, have = [1] * (r - len(want)) + want, [1] * (r - len(have)) + have
    out = []
    for a, b in zip(have, want):
        if a == 1 or a == b:
            out.append(b)
        elif b == 1:
            out.append(a)
        else:
            raise n.error(f"cannot expand {x.type} to {want}")
    return x if tuple(out) == shape_of(x) else F.broadcast_to(x, out)


def _squeeze(n, x, axes=None):
    axes = n.attr("axes") if axes is None else n.ints(axes, "axes")
    if axes is None:
        axes = [i for i, d in enumerate(shape_of(x)) if d == 1]
    return F.squeeze(x, n.axes(axes, rank_of(x))) if axes else x


def _unsqueeze(n, x, axes=None):
    axes = n.attr("axes") if axes is None else n.ints(axes, "axes")
    return F.expand_dims(x, n.axes(axes, rank_of(x) + len(axes)))


def _flatten(n, x):
    shape = shape_of(x)
    axis = n.attr("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis  # in [-r, r]
    return reshape(x, (prod(shape[:axis]), prod(shape[axis:])))


def _slice_index(n, shape, starts, ends, axes, steps):
    """ONNX Slice bounds -> a tuple of Python slices (same clamping rules as Python's)."""
    axes = list(range(len(starts))) if axes is None else [n.axis(a, len(shape)) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * len(shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise n.error("a slice step is 0")
        size = shape[a]
        if not isinstance(size, int):
            index[a] = _symbolic_bounds(n, a, size, s, e, st)
            continue
        s, e, st = slice(max(min(s, INT_MAX), -INT_MAX), max(min(e, INT_MAX), -INT_MAX), st).indices(size)
        index[a] = slice(s, None if e < 0 else e, st)
    return tuple(index)


def _symbolic_bounds(n, a, size, s, e, st) -> slice:
    """ONNX Slice bounds on a symbolic axis as a slice of dims (x[1:] of T is T-1 long). They
    cannot be clamped at import time: the backends check them when T is bound."""
    if st != 1:
        raise n.error(f"slicing symbolic axis {a} ({size}) with step {st}",
                      hint="a slice of a symbolic axis takes step 1; export with static shapes otherwise")

    def bound(b):
        if isinstance(b, str):
            return b
        if b >= 2**31 - 1:  # torch's "to the end" (INT64_MAX)
            return size
        if b <= -2**31:  # "from the start" (INT64_MIN)
            return 0
        return b if b >= 0 else dim_sum([size, b])
    return slice(bound(s), bound(e))


def _run_time_dim(n, d, what):
    """(tensor, axis) to read symbolic dim `d` from at run time."""
    src = dim_source(d)
    if src is None and isinstance(d, str) and all(dim_source(s) is not None for s in symbols_of(d)):
        # T+1, 2*T: no tensor has it, but its symbols are known, so a broadcast scalar has it
        return F.broadcast_to(np.zeros((), np.bool_), (d,)), 0
    if src is None:
        raise n.error(f"{what} is the symbolic size {d}, which no tensor of the model has as a dim",
                      hint="tapeir computes with a symbolic size at run time only when it is a dim of some "
                           "tensor (e.g. the sequence length of an input)")
    return src


def run_time_dims(n, v):
    """Dims that are partly symbolic (an object array from Shape) as an i64 tensor computed
    when the graph runs, for a node that mixes them with tensors (torch's row pick
    h.flatten(0, 1)[arange(B) * T + n - 1]): each symbol is the length of an iota over a
    tensor that has it as a dim, a product of symbols the product of those lengths."""
    sizes: dict = {}

    def size(s):
        if s not in sizes:
            ref, axis = _run_time_dim(n, s, f"the symbolic size {s}")
            sizes[s] = F.sum(F.astype(F.greater_equal(F.apply_op("iota", [ref], {"axis": axis}), 0), "i64"))
        return sizes[s]

    def one(d):  # a sum of products of symbols (T+1, B*T), each symbol's size read once per node
        total = None
        for syms, coef in (poly(d).items() if isinstance(d, str) else [((), int(d))]):
            term = None
            for s in syms:
                term = size(s) if term is None else term * size(s)
            term = np.int64(coef) if term is None else term if coef == 1 else term * coef
            total = term if total is None else total + term
        return np.int64(0) if total is None else total
    items = [one(d) for d in v.reshape(-1)]
    if v.ndim == 0:
        return items[0]
    parts = [F.reshape(x, (1,)) if isinstance(x, Tensor) else np.array([x], np.int64) for x in items]
    return F.reshape(F.concatenate(parts, 0), v.shape)


def _slice_symbolic(n, x, starts, ends, axes, steps):
    """Slice with symbolic ends (a buffer cut to the sequence length: mask[:, :, :T, :T]):
    the static bounds as a slice, each x[:T] as slice_to reading T from a tensor that has it."""
    starts, ends = n.dims(starts, "starts"), n.dims(ends, "ends")
    axes = list(range(len(starts))) if axes is None else [n.axis(a, rank_of(x)) for a in n.ints(axes, "axes")]
    steps = [1] * len(starts) if steps is None else n.ints(steps, "steps")
    static, dynamic = ([], [], [], []), {}
    general = [slice(None)] * rank_of(x)
    for a, s, e, st in zip(axes, starts, ends, steps):
        if isinstance(s, str) or (isinstance(e, str) and (s != 0 or st != 1 or isinstance(shape_of(x)[a], str))):
            # x[T-3:T], x[1:T], x[:2*B-2] of 2*B: dims as bounds, no tensor needs to have them
            general[a] = _symbolic_bounds(n, a, shape_of(x)[a], s, e, st)
        elif isinstance(e, str):
            if shape_of(x)[a] != e:  # x[:T] of an axis that is T already is the whole axis
                ref, ref_axis = _run_time_dim(n, e, f"the end of axis {a}")
                dynamic.setdefault(id(ref), (ref, [], []))
                dynamic[id(ref)][1].append(a)
                dynamic[id(ref)][2].append(ref_axis)
        else:
            for part, v in zip(static, (a, s, e, st)):
                part.append(v)
    y = x
    if static[0]:
        y = y[_slice_index(n, shape_of(y), static[1], static[2], static[0], static[3])]
    for ref, a, ra in dynamic.values():
        y = F.apply_op("slice_to", [y, ref], {"axes": a, "ref_axes": ra})
    if any(i != slice(None) for i in general):  # known data (a constant cotangent) is a constant here
        y = F.getitem(F._t(y, "slice"), tuple(general))
    return y


def _slice(n, x, starts=None, ends=None, axes=None, steps=None):
    if n.opset >= 10 and (is_symbolic(starts) or is_symbolic(ends)):
        return _slice_symbolic(n, x, starts, ends, axes, steps)
    if n.opset < 10:
        starts, ends, axes, steps = n.attr("starts"), n.attr("ends"), n.attr("axes"), None
    else:
        starts, ends = n.ints(starts, "starts"), n.ints(ends, "ends")
        axes, steps = n.ints(axes, "axes"), n.ints(steps, "steps")
    return x[_slice_index(n, shape_of(x), starts, ends, axes, steps)]


def _split(n, x, split=None):
    axis = n.axis(n.attr("axis", 0), rank_of(x))
    size = shape_of(x)[axis]
    if not isinstance(size, int):
        raise n.error(f"splitting symbolic axis {axis} of {x.type}")
    sizes = n.attr("split") if split is None else n.ints(split, "split")
    if sizes is None:
        parts = n.attr("num_outputs", len(n.wants))
        if parts != len(n.wants):
            raise n.error(f"num_outputs={parts} but the node has {len(n.wants)} outputs")
        chunk = -(-size // parts)
        sizes = [min(chunk, size - i * chunk) for i in range(parts)]
    if sum(sizes) != size:
        raise n.error(f"split sizes {sizes} do not add up to axis {axis} of size {size}")
    bounds = np.cumsum([0] + list(sizes))
    return tuple(x[(slice(None),) * axis + (slice(int(a), int(b)),)] for a, b in zip(bounds[:-1], bounds[1:]))


# ---- sequences (the dynamo exporter without its optimizer writes split/unbind so) ---------
# An ONNX sequence imports as a Python list of values: it lives at import time only (a
# graph input or output cannot be one), and each element is an ordinary tensor.

class _Seq(list):
    """A sequence value (a list, so the driver passes it from rule to rule untouched)."""


def _split_to_sequence(n, x, split=None):
    axis = n.axis(n.attr("axis", 0), rank_of(x))
    size = shape_of(x)[axis]
    if not isinstance(size, int):
        raise n.error(f"splitting symbolic axis {axis} of {list(shape_of(x))}")
    if split is None:
        parts = [x[(slice(None),) * axis + (slice(i, i + 1),)] for i in range(size)]
        return _Seq(parts if n.attr("keepdims", 1) else [F.squeeze(p, (axis,)) for p in parts])
    sizes = n.ints(split, "split")
    if split.ndim == 0:
        sizes = [min(sizes[0], size - i) for i in range(0, size, sizes[0])]
    if sum(sizes) != size:
        raise n.error(f"split sizes {sizes} do not add up to axis {axis} of size {size}")
    bounds = np.cumsum([0] + list(sizes))
    return _Seq(x[(slice(None),) * axis + (slice(int(a), int(b)),)] for a, b in zip(bounds[:-1], bounds[1:]))


def _seq(n, s):
    if not isinstance(s, _Seq):
        raise n.error("expects a sequence input")
    return s


def _sequence_at(n, s, position):
    s, k = _seq(n, s), int(n.scalar(position, "position"))
    if not -len(s) <= k < len(s):
        raise n.error(f"position {k} is out of range for a sequence of {len(s)}")
    return s[k]


def _concat_from_sequence(n, s):
    s, axis = _seq(n, s), n.attr("axis")
    if n.attr("new_axis", 0):
        axis = n.axis(axis, rank_of(s[0]) + 1)
        return F.concatenate([F.expand_dims(v, axis) for v in s], axis)
    return F.concatenate(list(s), n.axis(axis, rank_of(s[0])))


SEQUENCE = {
    "SplitToSequence": _split_to_sequence, "SequenceAt": _sequence_at,
    "SequenceConstruct": lambda n, *xs: _Seq(xs), "ConcatFromSequence": _concat_from_sequence,
    "SequenceLength": lambda n, s: np.array(len(_seq(n, s)), np.int64),
}


def _pad_sides(mode, size, b, e):
    """The pieces of an axis of `size` that Pad puts before and after it (b and e wide), as
    slices; a side of 0 gets none, so the import leaves no dead slice nodes."""
    if mode == "edge":
        return [slice(0, 1)] * b, [slice(size - 1, size)] * e
    if mode == "wrap":  # the part that wraps, and whole copies when a pad exceeds the axis
        whole = slice(None)
        return ([slice(size - b % size, size)] if b % size else []) + [whole] * (b // size), \
            [whole] * (e // size) + ([slice(0, e % size)] if e % size else [])
    # reflect: x[b], ..., x[1] before; x[size-2], ..., x[size-1-e] after. For e == size-1 the
    # stop is "before index 0", which Python spells None (a stop of -1 is the last element)
    return [slice(b, 0, -1)] * bool(b), [slice(size - 2, size - 2 - e if e < size - 1 else None, -1)] * bool(e)


def _pad(n, x, pads=None, value=None, axes=None):
    r = rank_of(x)
    if n.opset < 11:
        pads, value = n.attr("pads"), n.attr("value", 0.0)
    else:
        # symbolic widths (T-2: the gradient of x[:2] on an axis T) are dims of known shape arithmetic
        pads, value = n.dims(pads, "pads"), n.scalar(value, "constant_value")
    axes = list(range(r)) if axes is None else [n.axis(a, r) for a in n.ints(axes, "axes")]
    before, after = [0] * r, [0] * r
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[len(axes) + i]
    mode = n.attr("mode", "constant")
    if any(isinstance(p, str) for p in before + after):
        if mode != "constant":
            raise n.error(f"{mode} padding by symbolic widths {list(zip(before, after))}",
                          hint="tapeir pads by symbolic widths with a constant only")
        return F.pad(x, list(zip(before, after)), 0.0 if value is None else value)  # tapeir checks them >= 0
    y = x
    if any(p < 0 for p in before + after):  # negative pads crop
        y = y[tuple(slice(max(-b, 0), e if e < 0 else None) for b, e in zip(before, after))]
        before, after = [max(p, 0) for p in before], [max(p, 0) for p in after]
    if not any(before + after):
        return y
    if mode == "constant":
        return F.pad(y, list(zip(before, after)), 0.0 if value is None else value)
    pieces = sum(b + e if mode == "edge" else (b + e) // max(size, 1) + 2
                 for b, e, size in zip(before, after, shape_of(y)) if isinstance(size, int))
    if pieces > limits().max_nodes:  # edge and wrap copy slices: pads of 10**12 must not make 10**12 of them
        raise n.error(f"{mode} padding of {list(zip(before, after))} would concatenate {pieces:,} slices or more, "
                      f"over the import's max_nodes={limits().max_nodes:,}")
    if mode not in ("reflect", "edge", "wrap"):
        raise n.error(f"mode={mode!r}", hint="ONNX Pad modes are constant, reflect, edge and wrap")
    for a in range(r):
        b, e = before[a], after[a]
        if not (b or e):
            continue
        size = shape_of(y)[a]
        if not isinstance(size, int) or (mode == "reflect" and max(b, e) >= size):
            raise n.error(f"{mode} padding of {b}+{e} on axis {a} of {y.type}")
        pre = (slice(None),) * a
        head, tail = _pad_sides(mode, size, b, e)
        pieces = {}  # one slice node per distinct slice (edge repeats one piece b times)
        for s in head + tail:
            key = (s.start, s.stop, s.step)  # slices are hashable only from Python 3.12
            if key not in pieces:
                pieces[key] = y if key == (None, None, None) else y[pre + (s,)]
        parts = [pieces[s.start, s.stop, s.step] for s in head] + [y] + [pieces[s.start, s.stop, s.step] for s in tail]
        y = F.concatenate(parts, axis=a)
    return y


def _dropout(n, x, ratio=None, training=None, key=None):
    train = n.attr("is_test", 1) == 0 if n.opset < 7 else (training is not None and bool(n.scalar(training, "training_mode")))
    p = float(n.attr("ratio", 0.5) if n.opset < 12 else 0.5 if ratio is None else n.scalar(ratio, "ratio"))
    if train and p:
        if key is None:  # training_mode known only now (computed from constants): no key input was made
            raise n.error("Dropout in training mode whose training_mode is computed, not a constant",
                          hint="tapeir gives each training-mode Dropout a key input when training_mode is an "
                               "initializer or a Constant; export with it constant")
        if not 0 < p <= 1:
            raise n.error(f"ratio {p} is not a probability")
        if p == 1:
            y, keep = FR.dropout(x, p, key), F.broadcast_to(np.array(False), shape_of(x))
        else:  # tp.dropout's composite, spelled out to share its mask with the mask output
            dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
            keep = F.greater_equal(FR.random_uniform(key, shape_of(x), dt), p)
            y = F.where(keep, x * (1.0 / (1.0 - p)), 0.0)
        return (y, keep) if n.wants_output(1) else y
    if not n.wants_output(1):
        return x
    shape = shape_of(x)
    if all(isinstance(d, int) for d in shape) and constant_fits(shape, bool):
        return x, np.ones(shape, dtype=bool)
    return x, F.broadcast_to(np.array(True), shape)


def training_dropouts(g, opset: int, known: dict) -> dict:
    """{node index: key input name} of the Dropout nodes that run in training mode with a
    ratio > 0, read before the import traces (their keys are graph inputs). training_mode
    and ratio are read from initializers and Constant nodes; anything else is left to the
    node's rule (which then names the problem)."""
    drops = [(i, nd) for i, nd in enumerate(g.node) if nd.op_type == "Dropout" and nd.domain in ("", "ai.onnx")]
    wanted = {name for _, nd in drops for name in nd.input[1:3] if name}
    consts = {k: v for k, v in known.items() if k in wanted}
    for nd in g.node:
        if nd.op_type == "Constant" and nd.output and nd.output[0] in wanted:
            a = next((a for a in nd.attribute if a.name == "value"), None)
            try:
                consts[nd.output[0]] = numpy_helper.to_array(a.t)
            except Exception:  # noqa: BLE001 - a malformed constant: its own node reports it
                pass

    def scalar(nd, k, default):
        v = consts.get(nd.input[k]) if len(nd.input) > k and nd.input[k] else np.array(default)
        return None if v is None or v.size != 1 else v.reshape(-1)[0]
    keys = {}
    for i, nd in drops:
        attrs = {a.name: a for a in nd.attribute}
        if opset < 7:
            train, ratio = "is_test" in attrs and attrs["is_test"].i == 0, attrs["ratio"].f if "ratio" in attrs else 0.5
        elif opset < 12:
            train, ratio = False, 0.0  # opsets 7-11: Dropout is inference only
        else:
            t, r = scalar(nd, 2, False), scalar(nd, 1, 0.5)
            train, ratio = t is not None and bool(t), 0.5 if r is None else float(r)  # unknown ratio: assume > 0
        if train and ratio:
            keys[i] = f"dropout_key.{nd.name or f'Dropout#{i}'}"
    return keys


def _shape(n, x):
    shape = shape_of(x)
    s, e = n.attr("start", 0), n.attr("end", len(shape))
    dims = shape[slice(s, e)]
    if all(isinstance(d, int) for d in dims):
        return np.array(dims, dtype=np.int64)
    return np.array(dims, dtype=object)


def _size(n, x):
    size = prod(shape_of(x))
    return np.array(size, dtype=np.int64 if isinstance(size, int) else object)


def _constant(n):
    for k in ("value", "sparse_value"):
        if k in n.attrs:
            return np.asarray(n.attrs[k])
    for k, dt in (("value_float", np.float32), ("value_floats", np.float32),
                  ("value_int", np.int64), ("value_ints", np.int64)):
        if k in n.attrs:
            return np.array(n.attrs[k], dtype=dt)
    raise n.error(f"attribute(s) {sorted(n.attrs)}: string constants have no tapeir dtype")


def _constant_of_shape(n, shape):
    value = n.attr("value", np.zeros(1, np.float32)).reshape(())
    dims = n.dims(shape, "shape")
    if any(isinstance(d, int) and d < 0 for d in dims):
        raise n.error(f"negative dim in shape {dims}")
    if all(isinstance(d, int) for d in dims) and constant_fits(dims, value.dtype):
        return np.full(dims, value, dtype=value.dtype)
    return F.broadcast_to(value, dims)  # symbolic, or too large to be a constant: a node


SHAPE = {
    "Reshape": _reshape, "Transpose": lambda n, x: F.transpose(x, n.attr("perm")),
    "Expand": _expand, "Concat": lambda n, *xs: F.concatenate(xs, n.attr("axis")),
    "Slice": _slice, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Flatten": _flatten,
    "Split": _split, "Pad": _pad, "Identity": lambda n, x: x,
    "Dropout": _dropout, "Shape": _shape, "Size": _size, "Constant": _constant,
    "ConstantOfShape": _constant_of_shape, **SEQUENCE,
}


# ---- shape arithmetic on symbolic dims ------------------------------------------------

def _obj(v):
    return v.astype(object) if is_static(v) else v


def _dimwise(fn, what):
    def rule(n, a, b):
        def one(x, y):
            r = fn(x, y)
            if r is None:
                raise n.error(f"cannot compute {x} {what} {y} on symbolic dims")
            return r
        # 0-d operands (Shape -> Squeeze gives a scalar dim) make frompyfunc return a bare
        # dim, not an array: wrap it back
        return np.asarray(np.frompyfunc(one, 2, 1)(_obj(a), _obj(b)), dtype=object)
    return rule


SYMBOLIC = {
    "Identity": lambda n, x: x,
    # the shape of a vector of dims is static (torch's expand(-1) takes Shape of its target)
    "Shape": lambda n, x: np.array(x.shape[slice(n.attr("start", 0), n.attr("end", x.ndim))], dtype=np.int64),
    "Cast": lambda n, x: _cast_dims(n, x),
    "CastLike": lambda n, x, like: _castlike_dims(n, x, like),
    "Gather": lambda n, x, i: np.take(x, np.asarray(n.ints(i, "indices")).reshape(i.shape), axis=n.attr("axis", 0)),
    "Concat": lambda n, *xs: np.concatenate([_obj(x) for x in xs], axis=n.attr("axis")),
    "Unsqueeze": lambda n, x, axes=None: np.reshape(x, shape_of(_unsqueeze_shape(n, x, axes))),
    "Squeeze": lambda n, x, axes=None: np.squeeze(x, axis=_squeeze_axes(n, x, axes)),
    "Slice": lambda n, x, *rest: x[_slice_index(n, x.shape, *_slice_args(n, rest))] if is_symbolic(x)
    else _slice(n, x, *rest),  # known data (a mask buffer) cut to symbolic ends: IR
    "Range": lambda n, *bounds: _range_dims(n, *bounds),
    "Reshape": lambda n, x, shape: np.reshape(x, n.ints(shape, "shape")),
    "Mul": _dimwise(lambda x, y: dim_product([x, y]), "*"),
    "Div": _dimwise(dim_divide, "/"),
    "Add": _dimwise(lambda x, y: dim_sum([x, y]), "+"),
    "Sub": _dimwise(dim_sub, "-"),
    "Mod": _dimwise(lambda x, y: x % y if isinstance(x, int) and isinstance(y, int) and y else None, "%"),
    "Equal": lambda n, a, b: _dimwise(_dim_equal, "==")(n, a, b).astype(bool),
    "Where": lambda n, c, a, b: np.where(_known_bool(n, c), _obj(a), _obj(b)),
    "Expand": lambda n, x, shape: _expand_dims(n, x, n.ints(shape, "shape")),
    "ConstantOfShape": _constant_of_shape,
}


def _known_bool(n, c):
    if c.dtype.kind not in "biu":  # the driver stores Equal's known answers as int64 0/1
        raise n.error(f"a condition on symbolic dims that is unknown at import time: {c.tolist()}")
    return c.astype(bool)


def _dim_equal(x, y):
    """Dims equal when the same; a symbol (a size, >= 0) is never a negative int (torch's
    expand(-1) tests its target for -1); other symbol-int pairs are unknown (None)."""
    if x == y:
        return True
    if isinstance(x, str) and isinstance(y, str):
        return None
    num = x if isinstance(x, int) else y
    return False if isinstance(x, int) and isinstance(y, int) or num < 0 else None


def _range_dims(n, start, limit, delta):
    """Range(0, T, 1) over a symbolic dim T (positions over the sequence): iota, reading T
    from a tensor that has it at run time."""
    s, d = (n.scalar(v, w) if not is_symbolic(v) else None for v, w in ((start, "start"), (delta, "delta")))
    t = limit.reshape(-1)[0] if is_symbolic(limit) and limit.size == 1 else None
    if s != 0 or d != 1 or not isinstance(t, str):
        raise n.error(f"Range({start.tolist()}, {limit.tolist()}, {delta.tolist()}) on symbolic dims",
                      hint="tapeir computes Range(0, T, 1) over a symbolic dim T at run time; other bounds "
                           "need static shapes")
    ref, axis = _run_time_dim(n, t, "the Range's limit")
    y = F.apply_op("iota", [ref], {"axis": axis})
    return y if start.dtype == np.int64 else F.astype(y, "i32" if start.dtype == np.int32 else "f32"
                                                      if start.dtype == np.float32 else "f64")


def _expand_dims(n, x, shape):
    out = np.broadcast_shapes(x.shape, tuple(shape))
    check_constant(out, object, "Expand of a shape vector")
    return np.broadcast_to(x, out).copy()


def _cast_dims(n, x):
    if n.attr("to") not in (6, 7):
        raise n.error("casting symbolic dims to a non-integer type")
    return x


def _castlike_dims(n, x, like):
    if not is_symbolic(x):  # known data cast like dims: an integer array
        return x.astype(np.int64 if like.dtype == object else like.dtype)
    if like.dtype.kind not in "iuO":
        raise n.error("casting symbolic dims to a non-integer type")
    return x


def _squeeze_axes(n, x, axes):
    axes = n.attr("axes") if axes is None else n.ints(axes, "axes")
    return None if axes is None else n.axes(axes, x.ndim)


def _unsqueeze_shape(n, x, axes):
    axes = n.attr("axes") if axes is None else n.ints(axes, "axes")
    return np.expand_dims(np.empty(x.shape, np.int8), n.axes(axes, x.ndim + len(axes)))


def _slice_args(n, rest):
    if n.opset < 10:
        return n.attr("starts"), n.attr("ends"), n.attr("axes"), None
    rest = list(rest) + [None] * (4 - len(rest))
    return [n.ints(v, k) for v, k in zip(rest, ("starts", "ends", "axes", "steps"))]
