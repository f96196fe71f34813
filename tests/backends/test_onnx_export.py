"""ONNX export and the onnxruntime backend, checked against the numpy backend.

One data table (`CASES`) lists ops x shapes x attributes; together the cases use every
op of the registry (`test_cases_cover_every_op`). For each case:

* `test_forward`: the traced graph, exported with `tp.to_onnx`, passes
  `onnx.checker.check_model(full_check=True)` and gives the numpy backend's outputs in
  onnxruntime, at two sizes of the symbolic batch dim `B` where the case has one;
* `test_value_and_grad`: the same for `tp.value_and_grad` of L = sum(f(args) * W), W a
  random weighting passed as an extra input, with respect to every float argument.

Comparisons follow support.assert_close's policy; a case that needs more says how many
ulps and why. The rest pins the export's contract: byte-identical output, readable names,
opset refusals, extreme logits, low-opset lowerings and the backend's options.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

import tapeir as tp
from support import CONDITIONED, ONNXRUNTIME, assert_close, checkout_env, draw, labels, leaves, rng
from tapeir.backends.onnx_export import DEFAULT_OPSET, MIN_OPSET, max_opset
from tapeir.backends.onnx_lowering import EXPORT
from tapeir.ir import OPS
from tapeir.ir.types import resolve_dim

import onnxruntime as ort  # noqa: E402  (a runtime dependency: never skipped)


# ---- argument specs ------------------------------------------------------------------

@dataclass(frozen=True)
class A:
    """A float argument; `B` in the shape is the symbolic batch dim."""

    shape: tuple
    kind: str = "n"       # n: normal; pos: (0.5, 2); away: |x| in (0.3, 1.5); distinct: no ties
    dtype: str = "float32"


@dataclass(frozen=True)
class L:
    """Integer class labels in [0, classes); every third one set to `ignore` if given."""

    shape: tuple
    classes: int
    ignore: int | None = None


@dataclass(frozen=True)
class Z:
    """Small integers in [-3, 3]."""

    shape: tuple
    dtype: str = "int64"


def _spec(s):
    if isinstance(s, L):
        return tp.Spec(s.shape, "int64")
    return tp.Spec(s.shape, s.dtype)


def _draw(s, gen, batch):
    shape = tuple(resolve_dim(d, {"B": batch}) for d in s.shape)
    if isinstance(s, L):
        return labels(shape, s.classes, gen, s.ignore)
    if isinstance(s, Z):
        return gen.integers(-3, 4, size=shape).astype(s.dtype)
    return draw(s.kind, shape, gen, s.dtype)


@dataclass
class Case:
    id: str
    fn: object
    args: tuple
    ulps: int | None = None   # wider than support's default, for the reason `why`
    why: str | None = None
    grad: bool = True     # False: no value_and_grad check (non-float output or no float input)


CASES: list[Case] = []


def _op(name, operands, attrs):
    from tapeir.frontend.functions import apply_op  # ops the importer records (no tp.* function)
    return apply_op(name, operands, attrs)


def case(id, fn, args, **kw):
    CASES.append(Case(id, fn, tuple(args), **kw))


B = ("B", 4)
# elementwise, unary
for _name in ["exp", "tanh", "sigmoid", "softplus", "sin", "cos", "erf"]:
    case(_name, lambda x, f=getattr(tp, _name): f(x * 2.0), [A(B)])
case("log", tp.log, [A(B, "pos")])
case("sqrt", tp.sqrt, [A(("B", 1, 3), "pos")])
case("reciprocal", tp.reciprocal, [A(B, "away")])
case("neg", lambda x: -x, [A(B)])
case("abs", tp.abs, [A(B, "away")])
case("relu", tp.relu, [A(B, "away")])
case("neg-abs-relu-int", lambda x: tp.relu(tp.abs(-x) - 1), [Z(B)], grad=False)
case("leaky_relu", lambda x: tp.leaky_relu(x, 0.2), [A(B, "away")])
case("elu", lambda x: tp.elu(x, alpha=0.5), [A(B, "away")])
case("gelu", lambda x: tp.gelu(x * 2.0), [A(B)])
# onnxruntime's Tanh is a rational approximation (absolute error ~3e-7); the backward of the
# tanh form multiplies (1 + tanh) and (1 - tanh^2), which cancel near x = -2, by |x| up to ~6
case("gelu-tanh", lambda x: tp.gelu(x * 2.0, approximate="tanh"), [A(B)], ulps=ONNXRUNTIME,
     why="onnxruntime's rational Tanh, cancelling in the tanh form's backward")
case("silu", tp.silu, [A(B)])
case("clip", lambda x: tp.clip(x, -0.5, 0.8), [A(B, "away")])
case("clip-min", lambda x: tp.clip(x, 0.25), [A(B)])
case("clip-max", lambda x: tp.clip(x, None, -0.25), [A(B)])
case("clip-int", lambda x: tp.clip(x, -1.5, 2.5), [Z(B)], grad=False)
case("cast-f64", lambda x: x.astype("float64") * 3.0, [A(B)])
case("cast-int-bool", lambda x: (x * 3.0).astype("int64").astype("float32") + (x > 0).astype("float32"), [A(B)])
# elementwise, binary, with broadcasting
case("add-bcast", lambda a, b: a + b, [A(("B", 1, 4)), A((3, 4))])
case("sub-bcast", lambda a, b: a - b, [A((4,)), A(("B", 1))])
case("mul-0d", lambda a, b: a * b, [A(()), A(B)])
case("div-bcast", lambda a, b: a / b, [A(("B", 4)), A((4,), "away")])
case("pow", lambda a, b: a ** b, [A(B, "pos"), A((4,))])
case("pow-const", lambda a: a ** 3.0 + 2.0 ** a, [A(B, "away")])
case("maximum", tp.maximum, [A(("B", 1)), A((4,))])
case("minimum", tp.minimum, [A(B), A((1, 4))])
case("add-mul-int", lambda a, b: a * b + b - a, [Z(B), Z((4,))], grad=False)
case("compare", lambda a, b: tp.concatenate([(a == b), (a != b), (a < b), (a <= b), (a > b), (a >= b)], axis=1),
     [Z(("B", 3)), Z((3,))], grad=False)
case("compare-float", lambda a, b: tp.where((a > b) == (a <= 0.0), a, b), [A(B), A((4,))])
case("equal-bool", lambda a, b: tp.equal(a > 0, b > 0) != (a < b), [A(B), A(B)], grad=False)
case("where", lambda c, a, b: tp.where(c > 0, a, b), [A(B), A(B), A((4,))])
case("where-scalar", lambda c, a: tp.where(c > 0, a * 2.0, 0.5), [A(B), A(B)])
# reductions
R = ("B", 3, 4)
case("sum", lambda x: x.sum(axis=1), [A(R)])
case("sum-all", lambda x: x.sum(), [A(R)])
case("sum-keep", lambda x: tp.sum(x, axis=(0, 2), keepdims=True), [A(R)])
case("sum-0d", lambda x: x.sum() * 2.0, [A(())])
case("sum-int", lambda x: x.sum(axis=0), [Z(R)], grad=False)
case("mean", lambda x: tp.mean(x, axis=(0, 2)), [A(R)])
case("mean-keep", lambda x: tp.mean(x, axis=-1, keepdims=True), [A(R)])
case("max", lambda x: x.max(axis=1), [A(R, "distinct")])
case("max-keep", lambda x: tp.max(x, axis=(0, 2), keepdims=True), [A(R, "distinct")])
case("min", lambda x: x.min(axis=0), [A(R, "distinct")])
case("max-min-int", lambda x: x.max(axis=1, keepdims=True) - x.min(axis=(0, 2), keepdims=True), [Z(R)], grad=False)
case("logsumexp", lambda x: tp.logsumexp(x * 3.0, axis=-1), [A(R)])
case("logsumexp-keep", lambda x: tp.logsumexp(x, axis=(0, 2), keepdims=True), [A(R)])
case("logsumexp-all", lambda x: tp.logsumexp(x), [A(R)])
# normalizations
case("softmax", lambda x: tp.softmax(x * 2.0), [A(("B", 5))])
case("softmax-axis0", lambda x: tp.softmax(x, axis=0), [A(R)])
case("log_softmax", lambda x: tp.log_softmax(x * 2.0), [A(("B", 5))])
case("log_softmax-axis1", lambda x: tp.log_softmax(x, axis=1), [A(R)])
# LayerNormalization normalizes with var = E[x^2] - E[x]^2 in onnxruntime (numpy: E[(x - mu)^2]);
# on N(0, 1) data the two agree to a few f32 ulps of the output, but the cancellation costs
# more in the backward pass, which divides by the standard deviation again
LN_WHY = "onnxruntime's LayerNormalization: var = E[x^2] - E[x]^2, then the backward divides by the std"
case("layer_norm", lambda x: tp.layer_norm(x, (5,)), [A(("B", 3, 5))], ulps=CONDITIONED, why=LN_WHY)
case("layer_norm-wb", lambda x, w, b: tp.layer_norm(x, (3, 5), w, b), [A(("B", 3, 5)), A((3, 5)), A((3, 5))],
     ulps=CONDITIONED, why=LN_WHY)
case("layer_norm-w", lambda x, w: tp.layer_norm(x, 4, w, eps=1e-3), [A(B), A((4,))], ulps=CONDITIONED, why=LN_WHY)
# contractions
case("matmul", lambda a, b: a @ b, [A(B), A((4, 3))])
case("matmul-1d-2d", tp.matmul, [A((4,)), A((4, 3))])
case("matmul-2d-1d", tp.matmul, [A(("B", 4)), A((4,))])
case("matmul-batch-bcast", lambda a, b: a @ b, [A(("B", 1, 3, 4)), A((5, 4, 2))])
case("matmul-T", lambda a, b: a @ b.T, [A(("B", 4)), A((2, 4))])
case("conv2d", tp.conv2d, [A(("B", 3, 5, 5)), A((4, 3, 3, 3))])
case("conv2d-bias-stride-pad", lambda x, w, b: tp.conv2d(x, w, b, stride=(2, 3), padding=(0, 2)),
     [A(("B", 2, 7, 6)), A((2, 2, 2, 3)), A((2,))])
case("conv2d-dilation", lambda x, w: tp.conv2d(x, w, dilation=2, padding=1), [A(("B", 2, 7, 7)), A((2, 2, 3, 3))])
case("conv2d-groups", lambda x, w, b: tp.conv2d(x, w, b, groups=2, padding=1),
     [A(("B", 4, 5, 5)), A((6, 2, 3, 3)), A((6,))])
case("conv_transpose2d", tp.conv_transpose2d, [A(("B", 3, 4, 4)), A((3, 2, 3, 3))])
case("conv_transpose2d-stride", lambda g, w: tp.conv_transpose2d(g, w, stride=2, padding=1, output_padding=1),
     [A(("B", 2, 3, 4)), A((2, 3, 3, 3))])
case("conv_transpose2d-groups", lambda g, w: tp.conv_transpose2d(g, w, groups=2, dilation=2),
     [A(("B", 4, 3, 3)), A((4, 3, 2, 2))])
case("conv_transpose2d-outpad-dilation", lambda g, w: tp.conv_transpose2d(g, w, dilation=3, output_padding=2),
     [A(("B", 2, 3, 3)), A((2, 1, 2, 2))])
case("conv_transpose2d-outpad-pad", lambda g, w: tp.conv_transpose2d(g, w, padding=(1, 0), dilation=3,
                                                                      output_padding=(2, 1)),
     [A((1, 2, 3, 3)), A((2, 1, 2, 2))])
# windows (distinct values: no ties inside a window)
case("max_pool2d", lambda x: tp.max_pool2d(x, 2), [A(("B", 2, 4, 6), "distinct")])
case("max_pool2d-pad", lambda x: tp.max_pool2d(x, 3, stride=2, padding=1), [A(("B", 1, 7, 6), "distinct")])
case("max_pool2d-dilation", lambda x: tp.max_pool2d(x, (2, 3), stride=(1, 2), dilation=2),
     [A(("B", 2, 6, 8), "distinct")])
case("avg_pool2d", lambda x: tp.avg_pool2d(x, 2), [A(("B", 2, 4, 6))])
case("avg_pool2d-pad-include", lambda x: tp.avg_pool2d(x, 3, stride=2, padding=1), [A(("B", 2, 5, 6))])
case("avg_pool2d-pad-exclude", lambda x: tp.avg_pool2d(x, (2, 3), stride=1, padding=1, count_include_pad=False),
     [A(("B", 1, 4, 5))])
# shapes
case("reshape", lambda x: tp.exp(x).reshape(4, -1), [A((2, 3, 2))])
case("reshape-symbolic", lambda x: x.reshape("B", 12) * 2.0, [A(("B", 3, 4))])
case("reshape-neg1", lambda x: x.reshape(-1, 4), [A(("B", 3, 4))])
case("reshape-product", lambda x: x.reshape("3*B", 4), [A(("B", 3, 4))])
case("reshape-zero", lambda x: x.reshape(0, 6), [A((2, 0, 3))], grad=False)
case("transpose", lambda x: tp.transpose(x, (2, 0, 1)), [A(R)])
case("broadcast_to", lambda x: tp.broadcast_to(x, ("B", 3, 4)), [A(("B", 3, 1))])
case("broadcast_to-static", lambda x: tp.broadcast_to(x, (2, 3, 4)), [A((3, 1))])
case("concatenate", lambda a, b, c: tp.concatenate([a, b, c], axis=1), [A(("B", 1, 3)), A(("B", 4, 3)), A(("B", 2, 3))])
case("index-int", lambda x: x[:, 1], [A(("B", 3, 4))])
case("slice-step", lambda x: x[:, ::2], [A(("B", 5))])
case("slice-range", lambda x: x[-3:-1, 1:], [A((4, 5))])
case("slice-reverse", lambda x: x[::-1], [A((5, 2))])
case("slice-neg-step2", lambda x: x[5:0:-2, ::-3], [A((7, 7))])
case("slice-neg-to-start", lambda x: x[:, 3::-1], [A(("B", 6))])
case("pad", lambda x: tp.pad(x, ((0, 0), (2, 1)), constant_values=-1.5), [A(("B", 3))])
case("pad-int", lambda x: tp.pad(x, ((1, 2), (0, 3)), constant_values=2), [Z((2, 3))], grad=False)
case("squeeze", lambda x: tp.squeeze(x, axis=(1, 3)), [A(("B", 1, 4, 1))])
# run-time sizes (ONNX import of Range/Slice over a symbolic dim): positions over B, a [6, 3]
# table cut to B rows and padded back (B <= 6 when it runs)
case("iota", lambda x: x * tp.expand_dims(tp.astype(_op("iota", [x], {"axis": 0}), "float32"), 1), [A(("B", 3))])
case("slice_to-pad_to", lambda x, p: _op("pad_to", [x + _op("slice_to", [p, x], {"axes": (0,), "ref_axes": (0,)}), p],
                                         {"axes": (0,)}) * p, [A(("B", 3)), A((6, 3))])
case("expand_dims", lambda x: tp.expand_dims(x, (0, 2)), [A(("B", 4))])
# losses
for _red in ("mean", "sum", "none"):
    case(f"cross_entropy-{_red}", lambda x, y, r=_red: tp.cross_entropy(x * 2.0, y, reduction=r),
         [A(("B", 5)), L(("B",), 5)])
    case(f"cross_entropy-ignore-{_red}", lambda x, y, r=_red: tp.cross_entropy(x, y, reduction=r),
         [A(("B", 3)), L(("B",), 3, ignore=-100)])
    case(f"cross_entropy-NCd-{_red}", lambda x, y, r=_red: tp.cross_entropy(x, y, reduction=r, ignore_index=1),
         [A(("B", 3, 4)), L(("B", 4), 3)])
    case(f"nll_loss-{_red}", lambda x, y, r=_red: tp.nll_loss(tp.log_softmax(x), y, reduction=r),
         [A(("B", 5)), L(("B",), 5)])
    case(f"cross_entropy-1d-{_red}", lambda x, y, r=_red: tp.cross_entropy(x, y, reduction=r), [A((5,)), L((), 5)])
    case(f"nll_loss-1d-{_red}", lambda x, y, r=_red: tp.nll_loss(x, y, reduction=r, ignore_index=2),
         [A((5,)), L((), 5)])
case("mse-l1-bce", lambda a, b: tp.mse_loss(a, b) + tp.l1_loss(a, b, reduction="sum")
     + tp.binary_cross_entropy_with_logits(a * 3.0, tp.sigmoid(b)), [A(B, "away"), A(B)])
case("mlp", lambda w1, b1, w2, x, y: tp.cross_entropy(tp.tanh(x @ w1 + b1) @ w2, y),
     [A((4, 6)), A((6,)), A((6, 3)), A(("B", 4)), L(("B",), 3)])

# issue 11's ops
_IDX = np.array([[2, 0, 2], [-1, 1, 0]])
case("argmax-argmin", lambda x: (tp.argmax(x, 1), tp.argmin(x, 0, keepdims=True)), [A(("B", 4), "distinct")],
     grad=False)
case("argmax-int", lambda x: tp.argmax(x), [Z(B)], grad=False)
case("take-embedding", lambda w, ids: tp.take(w, ids) * 2.0, [A((4, 3)), L(("B", 2), 4)])
case("take-axis1-const", lambda w: tp.take(w, _IDX, axis=1), [A(("B", 3, 2))])
case("scatter_add-axis1", lambda d, u: tp.scatter_add(d, _IDX, u, axis=1), [A(("B", 3, 2)), A(("B", 2, 3, 2))])
case("cumsum", lambda x: tp.cumsum(x, 1) + tp.cumsum(x, 0, exclusive=True, reverse=True), [A(B)])
case("cumsum-int", lambda x: tp.cumsum(x, 0, reverse=True), [Z(B)], grad=False)
case("triu-tril", lambda x: tp.triu(x, 1) + tp.tril(x, -2), [A(("B", 3, 5))])
case("tril-symbolic-causal", lambda x: tp.tril(x), [A(("B", "B"))])
case("einsum", lambda a, b: tp.einsum("bij,jk->bki", a, b), [A(("B", 2, 3)), A((3, 4))])
case("var-std-stack-split", lambda x: tp.stack([tp.var(x, 1), tp.std(x, 1, correction=0), tp.split(x, 2, 1)[1][:, 0]]),
     [A(("B", 4))])
case("var-symbolic", lambda x: tp.var(x, 0), [A(("B", 4))])
case("batch_norm", lambda x, w, b, m, v: tp.batch_norm(x, m, v, w, b), [A(("B", 3, 2)), A((3,)), A((3,)), A((3,)),
                                                                        A((3,), "pos")])
def _bn_train(x, w, b, m, v):  # one output: y, with the new running statistics folded in
    y, m2, v2 = tp.batch_norm(x, m, v, w, b, training=True)
    return y * tp.reshape(m2, (3, 1, 1)) + tp.reshape(v2, (3, 1, 1))


case("batch_norm-train", _bn_train,
     [A(("B", 3, 2, 2)), A((3,)), A((3,)), A((3,)), A((3,), "pos")])
case("random_uniform", lambda x, k: (tp.random_uniform(k, x.shape), tp.random_normal(k, (3, 2), "float64")),
     [A(("B", 4)), Z(())], grad=False)
case("dropout", lambda x, k: tp.dropout(x, 0.25, k), [A(("B", 40)), Z(())])

# the frontend's avg_pool2d has no dilation argument (torch's has none); the IR op has one
AVG_POOL_DILATED = """graph avg_pool_dilated(x: f32[B,1,6,7]) {
  %0: f32[B,1,3,5] = avg_pool2d(x) {count_include_pad=false, dilation=[2, 2], kernel=[2, 3],
                                     padding=[1, 1], stride=[2, 1]}
  return %0
}
"""


def _call_parsed(text):
    g = tp.parse(text)
    return lambda *xs: tp.call(g, *xs)


case("avg_pool2d-dilation", _call_parsed(AVG_POOL_DILATED), [A(("B", 1, 6, 7))])

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "duplicate case ids"


# ---- the harness ----------------------------------------------------------------------

def _batches(c: Case):
    symbolic = any("B" in s.shape for s in c.args)
    return (2, 5) if symbolic else (3,)


def _args(c: Case, batch):
    gen = rng(c.id, batch)
    return [_draw(s, gen, batch) for s in c.args]


def _float_idx(c: Case):
    return tuple(i for i, s in enumerate(c.args) if isinstance(s, A))


def _check_same(c: Case, got, want, what):
    got_l, want_l = (list(x) if isinstance(x, (tuple, list)) else [x] for x in (got, want))
    flat_g, flat_w = [], []
    for gv, wv in zip(got_l, want_l):
        if isinstance(wv, dict):
            assert isinstance(gv, dict) and sorted(gv) == sorted(wv)
            flat_g += [gv[k] for k in sorted(wv)]
            flat_w += [wv[k] for k in sorted(wv)]
        elif isinstance(wv, (tuple, list)):
            flat_g += list(gv)
            flat_w += list(wv)
        else:
            flat_g.append(gv)
            flat_w.append(wv)
    assert len(flat_g) == len(flat_w)
    for i, (gv, wv) in enumerate(zip(flat_g, flat_w)):
        assert isinstance(gv, np.ndarray), (what, i, type(gv))
        assert gv.dtype == wv.dtype and gv.shape == wv.shape, (what, i, gv.dtype, gv.shape, wv.dtype, wv.shape)
        assert_close(gv, wv, ulps=c.ulps, why=c.why, msg=f"{c.id} {what} output {i}")


def _export_and_check(g, **kw):
    model = tp.to_onnx(g, **kw)
    onnx.checker.check_model(model, full_check=True)
    for node in model.graph.node:
        assert node.domain in ("", "tapeir"), node
    return model


def _compare(c: Case, g, arg_fn, what):
    _export_and_check(g)
    f_np, f_ort = tp.compile(g), tp.compile(g, backend="onnxruntime")
    for batch in _batches(c):
        args = arg_fn(batch)
        _check_same(c, f_ort(*args), f_np(*args), f"{what} B={batch}")


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_forward(c: Case):
    g = tp.trace(c.fn, *[_spec(s) for s in c.args])
    _compare(c, g, lambda b: _args(c, b), "forward")


GRAD_CASES = [c for c in CASES if c.grad]


def _loss_graph(c: Case):
    """L(args, w) = sum(f(args) * w), w an input of f's output type (symbolic dims included)."""
    out = tp.trace(c.fn, *[_spec(s) for s in c.args]).outputs[0].type

    def loss(*xs):
        return (c.fn(*xs[:-1]) * xs[-1]).sum()

    w_spec = A(out.shape, dtype=str(np.dtype({"f32": np.float32, "f64": np.float64}[out.dtype])))
    return tp.trace(loss, *[_spec(s) for s in c.args], _spec(w_spec)), w_spec


def _value_and_grad_case(c: Case):
    """The value_and_grad graph of c's weighted loss, and its argument maker (per batch size)."""
    g, w_spec = _loss_graph(c)

    def args(batch):
        return _args(c, batch) + [_draw(w_spec, rng(c.id, "w", batch), batch)]

    return tp.value_and_grad(g, wrt=_float_idx(c)), args


@pytest.mark.parametrize("c", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_value_and_grad(c: Case):
    _compare(c, *_value_and_grad_case(c), "value_and_grad")


def test_export_table_covers_every_op():
    assert set(EXPORT) == set(OPS), f"missing {sorted(set(OPS) - set(EXPORT))}, extra {sorted(set(EXPORT) - set(OPS))}"


def test_cases_cover_every_op():
    fwd, grad = set(), set()
    for c in CASES:
        ops = {n.op for n in tp.trace(c.fn, *[_spec(s) for s in c.args]).nodes}
        fwd |= ops
        if c.grad:
            grad |= ops
    # a trace never makes a fused node: tests/ir/test_fused.py exports those
    untraceable = {name for name, d in OPS.items() if d.category.value == "fused"}
    assert set(OPS) - fwd == untraceable, "ops no forward case exercises"
    differentiable = {name for name, d in OPS.items() if d.differentiable} - untraceable
    assert differentiable - grad == set(), "differentiable ops no value_and_grad case exercises"


# ---- contract of the export -------------------------------------------------------------

def _mlp_loss(params, x, y):
    h = tp.tanh(x @ params["w1"] + params["b1"])
    return tp.cross_entropy(tp.softplus(h) @ params["w2"] + params["b2"], y)


MLP_SPECS = ({"w1": tp.Spec((6, 5)), "b1": tp.Spec((5,)), "w2": tp.Spec((5, 3)), "b2": tp.Spec((3,))},
             tp.Spec(("B", 6)), tp.Spec(("B",), "int64"))


def _mlp_vg():
    return tp.value_and_grad(tp.trace(_mlp_loss, *MLP_SPECS))


def test_names_are_readable():
    model = _export_and_check(_mlp_vg())
    assert [i.name for i in model.graph.input] == [
        "params.b1", "params.b2", "params.w1", "params.w2", "x", "y"]
    assert [o.name for o in model.graph.output] == [
        "value", "grad.params.b1", "grad.params.b2", "grad.params.w1", "grad.params.w2"]
    dims = model.graph.input[4].type.tensor_type.shape.dim
    assert dims[0].dim_param == "B" and dims[1].dim_value == 6
    g = tp.trace(_mlp_loss, *MLP_SPECS)
    assert [o.name for o in tp.to_onnx(tp.grad(g)).graph.output] == [
        "grad.params.b1", "grad.params.b2", "grad.params.w1", "grad.params.w2"]
    assert [o.name for o in tp.to_onnx(tp.value_and_grad(g, wrt=(0, 1))).graph.output] == [
        "value", "grad.params.b1", "grad.params.b2", "grad.params.w1", "grad.params.w2", "grad.x"]
    assert [o.name for o in tp.to_onnx(g).graph.output] == ["output"]
    two = tp.trace(lambda x: (x * 2.0, {"a": x, "b": [x + 1.0]}), tp.Spec((3,)))
    m = _export_and_check(two)
    assert [o.name for o in m.graph.output] == ["output.0", "output.1.a", "output.1.b.0"]
    assert [n.op_type for n in m.graph.node].count("Identity") == 1  # x itself returned as output.1.a
    m = tp.to_onnx(g, output_names=["loss"])
    assert m.graph.output[0].name == "loss"
    with pytest.raises(tp.TapeirError, match="output_names"):
        tp.to_onnx(g, output_names=["a", "b"])
    with pytest.raises(tp.TapeirError, match="two producers"):
        tp.to_onnx(g, output_names=["%0"])


def test_text_form_and_source_lines_are_kept():
    g = tp.trace(_mlp_loss, *MLP_SPECS)
    model = tp.to_onnx(g)
    assert model.doc_string == str(g)
    assert model.producer_name == "tapeir"
    here = "tests/backends/test_onnx_export.py:"
    by_name = {n.output[0]: n for n in model.graph.node}
    assert by_name["%0"].op_type == "MatMul" and by_name["%0"].doc_string.endswith(
        f"{here}{_mlp_loss.__code__.co_firstlineno + 1}")
    assert by_name["output"].doc_string.endswith(f"{here}{_mlp_loss.__code__.co_firstlineno + 2}")


_DETERMINISM_SCRIPT = """
import hashlib, sys
sys.path[:0] = [{testdir!r}, {supportdir!r}]
import test_onnx_export as t, tapeir as tp
print(hashlib.sha256(tp.to_onnx(t._mlp_vg()).SerializeToString()).hexdigest())
"""


def test_export_is_byte_identical():
    first = tp.to_onnx(_mlp_vg()).SerializeToString()
    assert tp.to_onnx(_mlp_vg()).SerializeToString() == first
    g = tp.trace(_mlp_loss, *MLP_SPECS)
    assert tp.to_onnx(g).SerializeToString() == tp.to_onnx(g).SerializeToString()
    import os
    testdir = os.path.dirname(os.path.abspath(__file__))
    script = _DETERMINISM_SCRIPT.format(testdir=testdir, supportdir=os.path.dirname(testdir))
    out = subprocess.run([sys.executable, "-c", script],
                         capture_output=True, text=True, check=True, cwd=os.getcwd(),
                         env=checkout_env())
    assert out.stdout.strip() == hashlib.sha256(first).hexdigest()


def test_save_onnx(tmp_path):
    vg = _mlp_vg()
    path = tmp_path / "mlp.onnx"
    tp.save_onnx(vg, path)
    assert path.read_bytes() == tp.to_onnx(vg).SerializeToString()
    # external data: initializers of 1 KB and more go to a side file
    w = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    g = tp.trace(lambda x: tp.softmax(x @ w.T), tp.Spec(("B", 6)))
    ext = tmp_path / "ext.onnx"
    tp.save_onnx(g, ext, external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size == w.nbytes
    onnx.checker.check_model(str(ext), full_check=True)
    sess = ort.InferenceSession(str(ext), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    assert_close(sess.run(None, {"x": x})[0], tp.run(g, x))


def test_opset_refusals():
    g = tp.trace(_mlp_loss, *MLP_SPECS)
    with pytest.raises(tp.TapeirError, match="opset 7 is too old.*minimum is 15"):
        tp.to_onnx(g, opset=7)
    top = max_opset()
    with pytest.raises(tp.TapeirError, match=f"opset {top + 1} is newer.*at most {top}"):
        tp.to_onnx(g, opset=top + 1)
    with pytest.raises(tp.TapeirError, match="not an int"):
        tp.to_onnx(g, opset="18")
    with pytest.raises(tp.TapeirError, match="IR version 7 cannot express"):
        tp.to_onnx(g, ir_version=7)
    pool = tp.trace(_call_parsed(AVG_POOL_DILATED), tp.Spec((2, 1, 6, 7)))
    with pytest.raises(tp.TapeirError, match=r"avg_pool2d\(f32\[2,1,6,7\]\) to ONNX opset 18.*needs opset 19") as e:
        tp.to_onnx(pool, opset=18)
    assert "test_onnx_export.py" in str(e.value)  # the user's source line
    assert tp.to_onnx(g).opset_import[0].version == min(DEFAULT_OPSET, top)
    assert top >= DEFAULT_OPSET


LOW_OPSET_CASES = [c for c in CASES if c.id.split("-")[0] in
                   ("gelu", "softplus", "logsumexp", "mean", "max", "min", "sum", "squeeze", "layer_norm",
                    "cross_entropy", "mlp", "reshape", "slice", "pad", "clip")]


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, 18, "top"])
def test_other_opsets(opset):
    """Lowerings that depend on the opset (reduction axes, Gelu, LayerNormalization) at each end."""
    opset = max_opset() if opset == "top" else opset
    for c in LOW_OPSET_CASES:
        g = tp.trace(c.fn, *[_spec(s) for s in c.args])
        model = _export_and_check(g, opset=opset)
        assert model.opset_import[0].version == opset
        f_np, f_ort = tp.compile(g), tp.compile(g, backend="onnxruntime", opset=opset)
        for batch in _batches(c):
            args = _args(c, batch)
            _check_same(c, f_ort(*args), f_np(*args), f"opset {opset} B={batch}")


def test_gelu_below_opset_20_is_a_local_function():
    g = tp.trace(lambda x: tp.gelu(x) + tp.gelu(x, approximate="tanh"), tp.Spec((3,)))
    m = tp.to_onnx(g, opset=19)
    assert sorted(f.name for f in m.functions) == ["gelu", "gelu_tanh"]
    assert "Gelu" in [n.op_type for n in tp.to_onnx(g, opset=20).graph.node]


def test_no_ops_outside_ai_onnx():
    m = tp.to_onnx(_mlp_vg())
    assert {o.domain for o in m.opset_import} == {"", "tapeir"}
    assert [f.name for f in m.functions] == ["softplus"]
    for f in m.functions:
        assert {n.domain for n in f.node} == {""}


# ---- numerics --------------------------------------------------------------------------

EXTREME = np.array([[-1e4, 0.0, 1e4, 3.0], [1e4, 1e4, -1e4, -1e4], [-30.0, -90.0, 90.0, 30.0]], np.float32)


@pytest.mark.parametrize("name,fn", [
    ("softplus", tp.softplus), ("sigmoid", tp.sigmoid), ("softmax", tp.softmax), ("log_softmax", tp.log_softmax),
    ("logsumexp", lambda x: tp.logsumexp(x, axis=1)), ("tanh", tp.tanh),
    ("cross_entropy", lambda x: tp.cross_entropy(x, np.array([0, 3, 1]))),
    ("bce", lambda x: tp.binary_cross_entropy_with_logits(x, tp.sigmoid(x * 0.0))),
])
def test_extreme_logits_stay_finite(name, fn):
    g = tp.trace(lambda x: (fn(x) * 0.5).sum(), tp.Spec((3, 4)))
    vg = tp.value_and_grad(g)
    got = tp.run(vg, EXTREME, backend="onnxruntime")
    want = tp.run(vg, EXTREME)
    for gv, wv in zip(got, want):
        assert np.all(np.isfinite(gv)), (name, gv)
        # absolute tolerance: onnxruntime's Sigmoid flushes below ~1e-8 (numpy: exact tails)
        assert_close(gv, wv, msg=name)


def test_softplus_tail_is_accurate():
    """log1p form: softplus(-20) is 2.06e-9 to the ulp, not log(1 + 2e-9) = 0."""
    x = np.array([-100.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 1e4], np.float32)
    f = tp.compile(tp.trace(tp.softplus, tp.Spec((7,))), backend="onnxruntime")
    assert_close(f(x), tp.run(tp.trace(tp.softplus, tp.Spec((7,))), x), ulps=2, scale=0,
                 why="per element, the tail included: the log1p form is accurate to an ulp or two")


# ---- the backend -----------------------------------------------------------------------

def test_backend_options_and_input_checks():
    vg = _mlp_vg()
    f = tp.compile(vg, backend="onnxruntime", providers=["CPUExecutionProvider"], intra_op_num_threads=1,
                   graph_optimization_level="basic")
    session = f.session
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in MLP_SPECS[0].items()}
    for n in (3, 8):
        x, y = rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)
        value, grads = f(params, x, y)
        want_v, want_g = tp.run(vg, params, x, y)
        assert isinstance(grads, dict) and sorted(grads) == ["b1", "b2", "w1", "w2"]
        assert_close(value, want_v)
    assert f.session is session  # created once
    with pytest.raises(tp.RunError, match="dtype"):
        f(params, x.astype(np.float64), y)
    with pytest.raises(tp.RunError, match="binds B"):
        f(params, x, y[:2])
    with pytest.raises(tp.RunError, match="structure"):
        f({"w1": params["w1"]}, x, y)
    with pytest.raises(tp.TapeirError, match="graph_optimization_level"):
        tp.compile(vg, backend="onnxruntime", graph_optimization_level="max")
    assert_close(tp.run(vg, params, x, y, backend="onnxruntime")[0], want_v)
    assert "onnxruntime" in tp.BACKENDS


def test_unknown_backend_options_are_named():
    g = tp.trace(lambda x: x + 1.0, tp.Spec((2,)))
    with pytest.raises(tp.TapeirError) as info:
        tp.compile(g, backend="onnxruntime", foo=1)
    msg = str(info.value)
    assert "'foo'" in msg
    for option in ("providers", "intra_op_num_threads", "graph_optimization_level", "opset"):
        assert option in msg
    with pytest.raises(tp.TapeirError, match="foo"):
        tp.run(g, np.zeros(2, np.float32), backend="onnxruntime", foo=1)
    with pytest.raises(tp.TapeirError, match="foo"):
        tp.compile(g, backend="numpy", foo=1)
    from tapeir.backends.numpy_backend import compile_numpy

    with pytest.raises(tp.TapeirError, match="no option 'foo'") as info:
        compile_numpy(g, foo=1)
    assert "its options are buffer_cache_bytes, threads" in str(info.value)


def test_backends_package_exports():
    """tapeir.backends names every backend entry point; the onnx ones load on first use, so
    `import tapeir` imports neither onnx nor onnxruntime."""
    import tapeir.backends as B
    from tapeir.backends import numpy_backend, onnx_export, onnx_lowering, onnxruntime_backend

    assert B.compile_numpy is numpy_backend.compile_numpy and B.IMPL is numpy_backend.IMPL
    assert B.compile_onnxruntime is onnxruntime_backend.compile_onnxruntime
    assert B.to_onnx is onnx_export.to_onnx and B.save_onnx is onnx_export.save_onnx
    assert B.EXPORT is onnx_lowering.EXPORT
    assert set(B.__all__) <= set(dir(B))
    with pytest.raises(AttributeError):
        B.no_such_name
    code = "import sys, tapeir, tapeir.backends; print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=checkout_env()).stdout
    assert out.strip() == "[]"


# ---- IR -> ONNX -> IR round trips (both run in the numpy backend) --------------------

def _roundtrip(c: Case, g, arg_fn, what):
    h = tp.from_onnx(_export_and_check(g))
    tp.verify(h)
    assert tp.parse(str(h)) == h
    f, fh = tp.compile(g), tp.compile(h)
    for batch in _batches(c):
        args = arg_fn(batch)
        want = leaves(f(*args))
        got = fh(*leaves(tuple(args)))
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(want), (what, len(got), len(want))
        for i, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == b.dtype and a.shape == b.shape, (c.id, what, i, a.dtype, a.shape, b.dtype, b.shape)
            assert_close(a, b, ulps=c.ulps, why=c.why, msg=f"{c.id} {what} round trip {i}")


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_forward_roundtrip(c: Case):
    g = tp.trace(c.fn, *[_spec(s) for s in c.args])
    _roundtrip(c, g, lambda b: _args(c, b), "forward")


@pytest.mark.parametrize("c", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_value_and_grad_roundtrip(c: Case):
    _roundtrip(c, *_value_and_grad_case(c), "value_and_grad")


def test_roundtrip_keeps_tapeir_functions_as_ops():
    g = tp.trace(lambda x: tp.logsumexp(tp.softplus(x), axis=1) + tp.gelu(x, approximate="tanh").sum(axis=1),
                 tp.Spec(("B", 3)))
    h = tp.from_onnx(tp.to_onnx(g, opset=18))
    assert [n.op for n in h.nodes] == [n.op for n in g.nodes]


def test_transpose_of_a_0d_tensor_exports():
    # found by tests/test_fuzz_programs.py: onnx.helper cannot type the empty `perm` list
    g = tp.trace(lambda x: tp.transpose(x) * 2.0 + x.T, tp.Spec(()))
    x = np.array(3.0, np.float32)
    assert float(tp.run(g, x, backend="onnxruntime")) == 9.0
    assert float(tp.run(tp.from_onnx(tp.to_onnx(g)), x)) == 9.0


def test_float64_roundtrip_keeps_float_attributes_exact():
    # found by tests/test_fuzz_programs.py: ONNX float attributes are float32, so alpha=0.2
    # read back as 0.20000000298 and a float64 graph changed its results in the 9th digit;
    # and a float64 layer_norm exported with the default stash_type (float32), so from_onnx
    # computed its statistics in float32 (7 digits)
    g = tp.trace(lambda x: tp.leaky_relu(x, 0.2) + tp.elu(x, 0.3) + tp.layer_norm(x, 3, eps=1e-3),
                 tp.Spec(("B", 3), "float64"))
    h = tp.from_onnx(tp.to_onnx(g))
    assert "cast" not in [n.op for n in h.nodes]
    assert [n.attrs for n in h.nodes if n.op in ("leaky_relu", "elu", "layer_norm")] == \
        [{"alpha": 0.2}, {"alpha": 0.3}, {"axis": 1, "epsilon": 1e-3}]
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(tp.run(h, x), tp.run(g, x))
    # a layer_norm of constants folds at import in onnx.reference, which has no stash_type=DOUBLE
    c = np.array([1.0, 2.0, 4.0])
    g = tp.trace(lambda x: x + tp.layer_norm(c, 3), tp.Spec((3,), "float64"))
    np.testing.assert_array_equal(tp.run(tp.from_onnx(tp.to_onnx(g)), np.zeros(3)), tp.run(g, np.zeros(3)))


def test_symbolic_dim_products_share_their_prefixes():
    # found by tests/test_fuzz_programs.py: B*B*B built "%dim(B*B)" without recording it,
    # so a reshape that also needed B*B made a second producer of that name
    def f(x):
        return (tp.reshape(x, ("B*B*B", 2)).sum() + tp.reshape(x, ("B", "2*B*B")).sum() * 2.0
                + tp.reshape(x, ("B*B", "2*B")).sum() * 3.0)

    g = tp.trace(f, tp.Spec(("B", "B", "B", 2)))
    m = _export_and_check(g)
    made = [n.output[0] for n in m.graph.node if n.output[0].startswith("%dim")]
    assert sorted(made) == sorted(set(made))
    x = np.random.default_rng(0).standard_normal((3, 3, 3, 2)).astype(np.float32)
    assert_close(tp.run(g, x, backend="onnxruntime"), tp.run(g, x))


def test_where_of_bool_tensors_runs_in_onnxruntime():
    # found by tests/test_fuzz_programs.py: onnxruntime has no bool kernel for Where, so
    # the export of tp.where(c, x > 0, x < 1) did not load
    g = tp.trace(lambda x, y: tp.where(x > 0.5, x > y, y < 0.0).astype("float32"), tp.Spec(("B", 3)), tp.Spec((3,)))
    m = _export_and_check(g)
    assert "Where" not in [n.op_type for n in m.graph.node]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    np.testing.assert_array_equal(tp.run(g, x, y, backend="onnxruntime"), tp.run(g, x, y))
    np.testing.assert_array_equal(tp.run(tp.from_onnx(m), x, y), tp.run(g, x, y))


@pytest.mark.parametrize("perm", [(1, 0), None])
def test_transposed_matrix_times_vector_in_onnxruntime(perm):
    # found by tests/test_fuzz_programs.py: onnxruntime 1.32 fuses Transpose -> MatMul with a
    # 1-D right operand into a FusedMatMul that gives a wrong product ("extended"/"all"
    # graph optimizations, the backend's default), so x.T @ v was wrong there
    def f(x, v, c):
        xt = tp.transpose(x, perm)
        return xt @ v, tp.transpose(c, (0, 2, 1)) @ v
    g = tp.trace(f, tp.Spec(("B", 4)), tp.Spec(("B",)), tp.Spec((3, "B", 2)))
    rng = np.random.default_rng(0)
    x, v, c = rng.standard_normal((2, 4)), rng.standard_normal(2), rng.standard_normal((3, 2, 2))
    x, v, c = (a.astype(np.float32) for a in (x, v, c))
    want = tp.run(g, x, v, c)
    for level in ("basic", "all"):
        got = tp.run(g, x, v, c, backend="onnxruntime", graph_optimization_level=level)
        for a, b in zip(got, want):
            assert_close(a, b, msg=level)


def test_float64_relu_then_clip_loads_in_onnxruntime():
    # found by tests/test_fuzz_programs.py: onnxruntime's Relu -> Clip fusion cannot read a
    # float64 'min' and failed the session ("Unexpected data type for Clip 'min' input of 11")
    g = tp.trace(lambda x: tp.clip(tp.relu(x), 0.25, 1.0), tp.Spec(("B",), "float64"))
    x = np.array([-1.0, 0.5, 2.0, np.nan])
    np.testing.assert_array_equal(tp.run(g, x, backend="onnxruntime"), tp.run(g, x))
    # it is Max(x, 0), which imports back as relu (gradient 0 at 0, not maximum's 1/2)
    g = tp.trace(lambda x: tp.relu(x - x).sum() + tp.relu(x).sum(), tp.Spec(("B",), "float64"))
    h = tp.from_onnx(tp.to_onnx(g))
    assert [n.op for n in h.nodes].count("relu") == 2
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(tp.run(tp.grad(h), x), tp.run(tp.grad(g), x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_with_one_bound_keeps_infinities(dtype):
    # found by tests/test_fuzz_programs.py (a logsumexp of nothing, -inf, clipped above):
    # ONNX reads a missing Clip bound as the lowest/highest finite value, so onnxruntime
    # turned -inf into -3.4e38; float bounds are now explicit infinities
    g = tp.trace(lambda x: (tp.clip(x, None, 0.75), tp.clip(x, 0.0, None)), tp.Spec((4,), dtype))
    x = np.array([-np.inf, np.inf, np.nan, 0.3], dtype)
    for a, b in zip(tp.run(g, x, backend="onnxruntime"), tp.run(g, x)):
        np.testing.assert_array_equal(a, b)
    h = tp.from_onnx(tp.to_onnx(g))
    assert [n.attrs for n in h.nodes] == [n.attrs for n in g.nodes]  # an infinite bound reads back as none


def test_float64_constant_subexpressions_import_exactly():
    # found by tests/test_fuzz_programs.py (a gradient that is a constant): the importer folds
    # nodes of constants in onnx.reference, whose float64 Erf and Gelu are accurate to ~3e-8
    # and whose Elu and LeakyRelu use the float32 alpha; those now stay IR (exact kernels)
    c = np.random.default_rng(0).uniform(0.3, 1.7, (2, 3))
    parts = [lambda: tp.erf(c), lambda: tp.gelu(c), lambda: tp.gelu(c, "tanh"), lambda: tp.elu(c - 1, 0.3),
             lambda: tp.leaky_relu(c - 1, 0.2)]
    for part in parts:
        g = tp.trace(lambda x: x + part().sum(), tp.Spec((), "float64"))
        x = np.float64(0.5)
        assert float(tp.run(tp.from_onnx(tp.to_onnx(g)), x)) == float(tp.run(g, x))


def test_local_function_constants_are_doubles_cast_to_the_input_dtype():
    """gelu_tanh's 0.044715 and sqrt(2/pi) as float attributes were rounded to float32 before
    CastLike: a float64 model was 2e-7 off. They are double tensors now."""
    import onnx

    x = np.linspace(-3, 3, 7)
    m = tp.to_onnx(tp.trace(lambda x: tp.gelu(x, approximate="tanh"), x), opset=18)
    consts = [a.t for f in m.functions for node in f.node if node.op_type == "Constant" for a in node.attribute]
    assert consts and all(t.data_type == onnx.TensorProto.DOUBLE for t in consts)
