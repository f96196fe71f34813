"""Gradients of every differentiable op, checked three ways.

One data table (`CASES`) lists ops x shapes x attributes. For every case:

* `test_fd`: the float64 gradient from `tp.grad` is checked against central finite
  differences in a random direction, the way JAX's `check_grads` does: with
  L(x) = sum(f(x) * W) for a random weighting W (so every output element counts),
  <grad L, v> must equal (L(x + eps v) - L(x - eps v)) / 2 eps to ~1e-6 relative.
* `test_f32_matches_f64`: the same function traced at float32 gives the float64
  gradients to ~1e-4 relative.
* `test_torch`: the float64 gradients equal PyTorch's (skipped only when torch is not
  installed; the FD checks above do not need it).

Inputs are drawn away from kinks (relu/abs at 0, max ties, clip bounds); the
conventions at the kinks are pinned separately (`test_tie_*`), and extreme inputs
(|logits| up to 1e4 in float32) must give finite gradients (`test_extreme_*`).
`test_table_covers_every_differentiable_op` makes sure the table keeps up with the
op registry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import tapeir as tp
from support import CHAIN, CONDITIONED, FINITE_DIFFERENCES, TORCH, assert_close, draw, labels, rng
from tapeir.ir import OPS

# ---- argument specs ----------------------------------------------------------------


@dataclass(frozen=True)
class A:
    """A float argument: shape and how to draw it."""

    shape: tuple
    kind: str = "n"  # n: normal; pos: (0.5, 2); away: |x| in (0.3, 1.5); distinct: no near-ties;
    #                  prob: (0.05, 0.95); small: (0, 0.3) (safe_log near 0)


@dataclass(frozen=True)
class L:
    """Integer class labels in [0, classes), optionally with some set to `ignore`."""

    shape: tuple
    classes: int
    ignore: int | None = None


def _draw(spec, gen, dtype):
    if isinstance(spec, L):
        return labels(spec.shape, spec.classes, gen, spec.ignore)
    return draw(spec.kind, spec.shape, gen, dtype)


# ---- the table ----------------------------------------------------------------------


@dataclass
class Case:
    id: str
    fn: object            # traced function of the args (tp ops)
    args: tuple           # A / L specs
    torch: object = None  # the same function written with torch (every case has one)
    eps: float = 1e-6
    fd_ulps: int = FINITE_DIFFERENCES   # test_fd's tolerance; a case that changes eps says why
    fd_why: str = "central differences"


def _tf():
    import torch
    import torch.nn.functional as TF
    return torch, TF


# torch helpers, resolved lazily so this module imports without torch
def T(name):
    """torch.NAME, or torch.nn.functional.NAME for "F.NAME" (looked up when called)."""
    def f(*a, **k):
        torch, TF = _tf()
        fn = getattr(TF, name[2:]) if name.startswith("F.") else getattr(torch, name)
        return fn(*a, **k)
    return f


def _torch_pad(x, width, value=0.0):
    torch, TF = _tf()
    flat = []
    for before, after in reversed(width):
        flat += [before, after]
    return TF.pad(x, flat, value=value)


CASES: list[Case] = []


def _padded_head(x):
    """pad_to(exp(slice_to(x, x[:, :2])), x): the run-time-size ops the ONNX importer records."""
    from tapeir.frontend.functions import apply_op
    head = apply_op("slice_to", [x, x[:, :2]], {"axes": (1,), "ref_axes": (1,)})
    return apply_op("pad_to", [tp.exp(head), x], {"axes": (1,)})


def case(id, fn, args, torch=None, **kw):
    CASES.append(Case(id, fn, tuple(args), torch, **kw))


S = (3, 4)
# elementwise, unary
case("exp", tp.exp, [A(S)], T("exp"))
case("exp-scalar", tp.exp, [A(())], T("exp"))
case("log", tp.log, [A(S, "pos")], T("log"))
case("reciprocal", tp.reciprocal, [A(S, "away")], T("reciprocal"))
case("sqrt", tp.sqrt, [A((2, 1, 3), "pos")], T("sqrt"))
case("abs", tp.abs, [A(S, "away")], T("abs"))
case("neg", lambda x: -x, [A(S)], lambda x: -x)
case("tanh", lambda x: tp.tanh(x * 2.0), [A(S)], lambda x: T("tanh")(x * 2.0))
case("sigmoid", lambda x: tp.sigmoid(x * 3.0), [A(S)], lambda x: T("sigmoid")(x * 3.0))
case("softplus", lambda x: tp.softplus(x * 3.0), [A(S)], lambda x: T("F.softplus")(x * 3.0))
case("relu", tp.relu, [A(S, "away")], T("relu"))
case("leaky_relu", tp.leaky_relu, [A(S, "away")], T("F.leaky_relu"))
case("leaky_relu-0.2", lambda x: tp.leaky_relu(x, 0.2), [A(S, "away")], lambda x: T("F.leaky_relu")(x, 0.2))
case("elu", tp.elu, [A(S, "away")], T("F.elu"))
case("elu-alpha", lambda x: tp.elu(x, alpha=0.5), [A(S, "away")], lambda x: T("F.elu")(x, alpha=0.5))
case("gelu", lambda x: tp.gelu(x * 2.0), [A(S)], lambda x: T("F.gelu")(x * 2.0))
case("gelu-tanh", lambda x: tp.gelu(x * 2.0, approximate="tanh"), [A(S)],
     lambda x: T("F.gelu")(x * 2.0, approximate="tanh"))
case("erf", tp.erf, [A(S)], T("erf"))
case("silu", lambda x: tp.silu(x * 2.0), [A(S)], lambda x: T("F.silu")(x * 2.0))
case("safe_log", tp.safe_log, [A(S, "small")], lambda x: T("log")(x + 1e-6))
case("sin", lambda x: tp.sin(x * 2.0), [A(S)], lambda x: T("sin")(x * 2.0))
case("cos", lambda x: tp.cos(x * 2.0), [A(S)], lambda x: T("cos")(x * 2.0))
case("clip", lambda x: tp.clip(x, -0.5, 0.8), [A(S, "away")], lambda x: T("clamp")(x, -0.5, 0.8))
case("clip-min", lambda x: tp.clip(x, 0.25), [A(S)], lambda x: T("clamp")(x, min=0.25))
case("clip-max", lambda x: tp.clip(x, None, -0.25), [A(S)], lambda x: T("clamp")(x, max=-0.25))
# f64 -> f32 -> f64: the f32 rounding limits FD; the function is quadratic in x, so a large
# eps has no truncation error (central differences are exact on quadratics)
case("astype", lambda x: (x.astype("float32") * 3.0).astype(x.dtype) * x, [A(S)],
     lambda x: (x.float() * 3.0).double() * x, eps=1e-2,
     fd_ulps=100 * FINITE_DIFFERENCES, fd_why="central differences with a large step (the f32 round trip)")
# elementwise, binary (numpy broadcasting, size-1 dims, Python scalars)
case("add-bcast", lambda a, b: a + b, [A((3, 1, 4)), A((2, 4))], lambda a, b: a + b)
case("add-size1", lambda a, b: a + b, [A((1, 4)), A((3, 1))], lambda a, b: a + b)
case("add-scalar", lambda a: 2.0 + a + 1.0, [A(S)], lambda a: 2.0 + a + 1.0)
case("sub-bcast", lambda a, b: a - b, [A((4,)), A((3, 1))], lambda a, b: a - b)
case("rsub", lambda a: 1.0 - a, [A(S)], lambda a: 1.0 - a)
case("mul-bcast", lambda a, b: a * b, [A((2, 3, 4)), A((3, 1))], lambda a, b: a * b)
case("mul-0d", lambda a, b: a * b, [A(()), A(S)], lambda a, b: a * b)
case("div", lambda a, b: a / b, [A(S), A(S, "away")], lambda a, b: a / b)
case("div-bcast", lambda a, b: a / b, [A((4,)), A((3, 1), "away")], lambda a, b: a / b)
case("rdiv", lambda a: 2.0 / a, [A(S, "away")], lambda a: 2.0 / a)
case("pow-tensor", lambda a, b: a ** b, [A(S, "pos"), A(S)], lambda a, b: a ** b)
case("pow-bcast", lambda a, b: a ** b, [A((2, 3), "pos"), A((3,))], lambda a, b: a ** b)
case("pow-const", lambda a: a ** 3.0, [A(S, "away")], lambda a: a ** 3.0)
case("pow-sqr-neg-base", lambda a: a ** 2.0, [A(S)], lambda a: a ** 2.0)
case("rpow", lambda a: 2.0 ** a, [A(S)], lambda a: 2.0 ** a)
case("maximum", tp.maximum, [A(S), A(S)], T("maximum"))
case("maximum-bcast", tp.maximum, [A((3, 1)), A((4,))], T("maximum"))
case("minimum", tp.minimum, [A(S), A((1, 4))], T("minimum"))
case("where", lambda c, a, b: tp.where(c > 0, a, b), [A(S), A(S), A((4,))],
     lambda c, a, b: T("where")(c > 0, a, b))
case("where-scalar", lambda c, a: tp.where(c > 0, a * 2.0, 0.5), [A(S), A(S)],
     lambda c, a: T("where")(c > 0, a * 2.0, 0.5))
# reductions
case("sum-all", lambda x: x.sum(), [A((2, 3, 4))], lambda x: x.sum())
case("sum-axis", lambda x: x.sum(axis=1), [A((2, 3, 4))], lambda x: x.sum(1))
case("sum-axes-keep", lambda x: tp.sum(x, axis=(0, 2), keepdims=True), [A((2, 3, 4))],
     lambda x: x.sum((0, 2), keepdim=True))
case("sum-neg-axis", lambda x: x.sum(axis=-1), [A((2, 3, 4))], lambda x: x.sum(-1))
case("sum-size1", lambda x: x.sum(axis=1), [A((3, 1, 2))], lambda x: x.sum(1))
case("mean-all", lambda x: x.mean(), [A((2, 3, 4))], lambda x: x.mean())
case("mean-axes", lambda x: tp.mean(x, axis=(0, 2)), [A((2, 3, 4))], lambda x: x.mean((0, 2)))
case("mean-size1", lambda x: x.mean(axis=(0, 2)), [A((1, 3, 1))], lambda x: x.mean((0, 2)))
case("mean-keep", lambda x: tp.mean(x, axis=-1, keepdims=True), [A((2, 3, 4))],
     lambda x: x.mean(-1, keepdim=True))
case("max-all", lambda x: x.max(), [A((3, 4), "distinct")], lambda x: x.max())
case("max-axis", lambda x: x.max(axis=1), [A((2, 3, 4), "distinct")], lambda x: x.amax(1))
case("max-axes-keep", lambda x: tp.max(x, axis=(0, 2), keepdims=True), [A((2, 3, 4), "distinct")],
     lambda x: x.amax((0, 2), keepdim=True))
case("min-axis", lambda x: x.min(axis=0), [A((3, 4), "distinct")], lambda x: x.amin(0))
case("min-keep", lambda x: tp.min(x, axis=-1, keepdims=True), [A((3, 4), "distinct")],
     lambda x: x.amin(-1, keepdim=True))
case("logsumexp", lambda x: tp.logsumexp(x * 3.0, axis=-1), [A((2, 3, 4))],
     lambda x: T("logsumexp")(x * 3.0, -1))
case("logsumexp-all", lambda x: tp.logsumexp(x), [A((3, 4))], lambda x: T("logsumexp")(x, (0, 1)))
case("logsumexp-keep", lambda x: tp.logsumexp(x, axis=(0, 2), keepdims=True), [A((2, 3, 4))],
     lambda x: T("logsumexp")(x, (0, 2), keepdim=True))
# normalizations
case("softmax", lambda x: tp.softmax(x * 2.0), [A((3, 5))], lambda x: T("softmax")(x * 2.0, -1))
case("softmax-axis0", lambda x: tp.softmax(x, axis=0), [A((2, 3, 4))], lambda x: T("softmax")(x, 0))
case("softmax-1d", tp.softmax, [A((5,))], lambda x: T("softmax")(x, 0))
case("log_softmax", lambda x: tp.log_softmax(x * 2.0), [A((3, 5))], lambda x: T("log_softmax")(x * 2.0, -1))
case("log_softmax-axis1", lambda x: tp.log_softmax(x, axis=1), [A((2, 3, 4))],
     lambda x: T("log_softmax")(x, 1))
case("layer_norm", lambda x: tp.layer_norm(x, (5,)), [A((2, 3, 5))], lambda x: T("F.layer_norm")(x, (5,)))
case("layer_norm-wb", lambda x, w, b: tp.layer_norm(x, (3, 5), w, b), [A((2, 3, 5)), A((3, 5)), A((3, 5))],
     lambda x, w, b: T("F.layer_norm")(x, (3, 5), w, b))
case("layer_norm-w", lambda x, w: tp.layer_norm(x, 4, w), [A((3, 4)), A((4,))],
     lambda x, w: T("F.layer_norm")(x, (4,), w))
case("layer_norm-all", lambda x, w, b: tp.layer_norm(x, (3, 4), w, b, eps=1e-3), [A((3, 4)), A((3, 4)), A((3, 4))],
     lambda x, w, b: T("F.layer_norm")(x, (3, 4), w, b, eps=1e-3))
# contractions
case("matmul-1d-1d", tp.matmul, [A((4,)), A((4,))], T("matmul"))
case("matmul-1d-2d", tp.matmul, [A((4,)), A((4, 3))], T("matmul"))
case("matmul-2d-1d", tp.matmul, [A((3, 4)), A((4,))], T("matmul"))
case("matmul-2d", lambda a, b: a @ b, [A((3, 4)), A((4, 2))], lambda a, b: a @ b)
case("matmul-batch-bcast", lambda a, b: a @ b, [A((2, 1, 3, 4)), A((5, 4, 2))], lambda a, b: a @ b)
case("matmul-1d-3d", tp.matmul, [A((4,)), A((2, 4, 3))], T("matmul"))
case("matmul-3d-1d", tp.matmul, [A((2, 3, 4)), A((4,))], T("matmul"))
case("matmul-T", lambda a, b: a @ b.T, [A((3, 4)), A((2, 4))], lambda a, b: a @ b.T)
# activations [..., M, K] @ a weight [K, N]: the weight's gradient is one flattened GEMM
case("matmul-3d-2d", lambda a, b: a @ b, [A((2, 3, 4)), A((4, 5))], lambda a, b: a @ b)
case("matmul-4d-2d", lambda a, b: a @ b, [A((2, 1, 3, 4)), A((4, 2))], lambda a, b: a @ b)
case("conv2d", tp.conv2d, [A((2, 3, 5, 5)), A((4, 3, 3, 3))], T("F.conv2d"))
case("conv2d-bias", tp.conv2d, [A((1, 2, 4, 5)), A((3, 2, 2, 3)), A((3,))], T("F.conv2d"))
case("conv2d-stride-pad", lambda x, w: tp.conv2d(x, w, stride=2, padding=1),
     [A((2, 2, 6, 5)), A((3, 2, 3, 3))], lambda x, w: T("F.conv2d")(x, w, stride=2, padding=1))
case("conv2d-stride-uneven", lambda x, w, b: tp.conv2d(x, w, b, stride=(2, 3), padding=(0, 2)),
     [A((1, 2, 7, 6)), A((2, 2, 2, 3)), A((2,))],
     lambda x, w, b: T("F.conv2d")(x, w, b, stride=(2, 3), padding=(0, 2)))
case("conv2d-dilation", lambda x, w: tp.conv2d(x, w, dilation=2, padding=1),
     [A((1, 2, 7, 7)), A((2, 2, 3, 3))], lambda x, w: T("F.conv2d")(x, w, dilation=2, padding=1))
case("conv2d-dilation-stride", lambda x, w: tp.conv2d(x, w, stride=2, dilation=(2, 1)),
     [A((1, 1, 8, 7)), A((2, 1, 2, 3))], lambda x, w: T("F.conv2d")(x, w, stride=2, dilation=(2, 1)))
case("conv2d-groups", lambda x, w, b: tp.conv2d(x, w, b, groups=2, padding=1),
     [A((2, 4, 5, 5)), A((6, 2, 3, 3)), A((6,))], lambda x, w, b: T("F.conv2d")(x, w, b, groups=2, padding=1))
case("conv2d-depthwise", lambda x, w: tp.conv2d(x, w, groups=3, stride=2, padding="valid"),
     [A((1, 3, 6, 6)), A((3, 1, 3, 3))], lambda x, w: T("F.conv2d")(x, w, groups=3, stride=2))
case("conv2d-same", lambda x, w: tp.conv2d(x, w, padding="same"),
     [A((1, 2, 5, 5)), A((2, 2, 3, 3))], lambda x, w: T("F.conv2d")(x, w, padding="same"))
case("conv_transpose2d", tp.conv_transpose2d, [A((2, 3, 4, 4)), A((3, 2, 3, 3))], T("F.conv_transpose2d"))
case("conv_transpose2d-stride", lambda g, w: tp.conv_transpose2d(g, w, stride=2, padding=1, output_padding=1),
     [A((1, 2, 3, 4)), A((2, 3, 3, 3))],
     lambda g, w: T("F.conv_transpose2d")(g, w, stride=2, padding=1, output_padding=1))
case("conv_transpose2d-groups", lambda g, w: tp.conv_transpose2d(g, w, groups=2, dilation=2),
     [A((1, 4, 3, 3)), A((4, 3, 2, 2))],
     lambda g, w: T("F.conv_transpose2d")(g, w, groups=2, dilation=2))
case("conv_transpose2d-outpad-dilation", lambda g, w: tp.conv_transpose2d(g, w, stride=1, dilation=3, output_padding=2),
     [A((1, 2, 3, 3)), A((2, 1, 2, 2))],
     lambda g, w: T("F.conv_transpose2d")(g, w, stride=1, dilation=3, output_padding=2))
# windows (distinct values: no ties inside a window)
case("max_pool2d", lambda x: tp.max_pool2d(x, 2), [A((2, 2, 4, 6), "distinct")], lambda x: T("F.max_pool2d")(x, 2))
case("max_pool2d-overlap-pad", lambda x: tp.max_pool2d(x, 3, stride=1, padding=1), [A((1, 2, 5, 4), "distinct")],
     lambda x: T("F.max_pool2d")(x, 3, stride=1, padding=1))
case("max_pool2d-stride2-pad", lambda x: tp.max_pool2d(x, 3, stride=2, padding=1), [A((2, 1, 7, 6), "distinct")],
     lambda x: T("F.max_pool2d")(x, 3, stride=2, padding=1))
case("max_pool2d-dilation", lambda x: tp.max_pool2d(x, (2, 3), stride=(1, 2), dilation=2),
     [A((1, 2, 6, 8), "distinct")], lambda x: T("F.max_pool2d")(x, (2, 3), stride=(1, 2), dilation=2))
case("avg_pool2d", lambda x: tp.avg_pool2d(x, 2), [A((2, 2, 4, 6))], lambda x: T("F.avg_pool2d")(x, 2))
case("avg_pool2d-overlap", lambda x: tp.avg_pool2d(x, (3, 2), stride=1), [A((1, 2, 5, 4))],
     lambda x: T("F.avg_pool2d")(x, (3, 2), stride=1))
case("avg_pool2d-pad-include", lambda x: tp.avg_pool2d(x, 3, stride=2, padding=1), [A((2, 2, 5, 6))],
     lambda x: T("F.avg_pool2d")(x, 3, stride=2, padding=1))
case("avg_pool2d-pad-exclude", lambda x: tp.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
     [A((2, 2, 5, 6))], lambda x: T("F.avg_pool2d")(x, 3, stride=2, padding=1, count_include_pad=False))
case("avg_pool2d-pad-exclude-overlap", lambda x: tp.avg_pool2d(x, (2, 3), stride=1, padding=(1, 1),
                                                               count_include_pad=False),
     [A((1, 1, 4, 5))], lambda x: T("F.avg_pool2d")(x, (2, 3), stride=1, padding=(1, 1), count_include_pad=False))
# shapes
case("reshape", lambda x: tp.exp(x).reshape(4, -1), [A((2, 3, 2))], lambda x: x.exp().reshape(4, -1))
case("transpose", lambda x: tp.transpose(x, (2, 0, 1)), [A((2, 3, 4))], lambda x: x.permute(2, 0, 1))
case("transpose-T", lambda x: x.T, [A((2, 3, 4))], lambda x: x.permute(2, 1, 0))
case("transpose-neg", lambda x: x.transpose(0, -1, 1), [A((2, 3, 4))], lambda x: x.permute(0, 2, 1))
case("broadcast_to", lambda x: tp.broadcast_to(x, (2, 3, 4)), [A((3, 1))], lambda x: x.expand(2, 3, 4))
case("broadcast_to-0d", lambda x: tp.broadcast_to(x, (2, 3)), [A(())], lambda x: x.expand(2, 3))
case("concatenate", lambda a, b, c: tp.concatenate([a, b, c], axis=1), [A((2, 1, 3)), A((2, 4, 3)), A((2, 2, 3))],
     lambda a, b, c: T("cat")([a, b, c], 1))
case("concatenate-same-input", lambda a: tp.concatenate([a, a * 2.0], axis=-1), [A((2, 3))],
     lambda a: T("cat")([a, a * 2.0], -1))
case("index-int", lambda x: x[1], [A((3, 4))], lambda x: x[1])
case("index-neg-int", lambda x: x[:, -1], [A((3, 4))], lambda x: x[:, -1])
case("slice-step", lambda x: x[:, ::2], [A((3, 5))], lambda x: x[:, ::2])
case("slice-range", lambda x: x[-3:-1, 1:], [A((4, 5))], lambda x: x[-3:-1, 1:])
case("slice-step3", lambda x: x[..., 1::3], [A((2, 3, 8))], lambda x: x[..., 1::3])
case("slice-reverse", lambda x: x[::-1], [A((5, 2))], lambda x: T("flip")(x, [0]))
case("slice-neg-step2", lambda x: x[5:0:-2, ::-3], [A((7, 7))], lambda x: T("flip")(x, [0, 1])[1:7:2, ::3])
case("slice-none-ellipsis", lambda x: x[None, 1:, ..., -1], [A((3, 2, 4))], lambda x: x[None, 1:, ..., -1])
case("slice-twice", lambda x: x[1:, ::2][::-1, 1], [A((4, 6))], lambda x: T("flip")(x[1:, ::2], [0])[:, 1])
case("pad", lambda x: tp.pad(x, ((1, 2), (0, 3))), [A((2, 3))], lambda x: _torch_pad(x, ((1, 2), (0, 3))))
case("pad-value", lambda x: tp.exp(tp.pad(x, ((0, 0), (2, 1)), constant_values=-1.5)), [A((2, 3))],
     lambda x: _torch_pad(x, ((0, 0), (2, 1)), -1.5).exp())
case("slice_to-pad_to", lambda x: _padded_head(x) * x, [A((3, 4))],
     lambda x: _tf()[1].pad(x[:, :2].exp(), (0, 2)) * x)
case("squeeze", lambda x: tp.squeeze(x), [A((3, 1, 4, 1))], lambda x: x.squeeze())
case("squeeze-axis", lambda x: tp.squeeze(x, axis=-1), [A((3, 1, 1))], lambda x: x.squeeze(-1))
case("expand_dims", lambda x: tp.expand_dims(x, (0, 2)), [A((3, 4))], lambda x: x.unsqueeze(0).unsqueeze(2))
case("expand_dims-neg", lambda x: tp.expand_dims(x, -1) * x[None, :], [A((3,))], lambda x: x[:, None] * x[None, :])
# losses
for red in ("mean", "sum", "none"):
    case(f"mse_loss-{red}", lambda a, b, r=red: tp.mse_loss(a, b, reduction=r), [A(S), A(S)],
         lambda a, b, r=red: T("F.mse_loss")(a, b, reduction=r))
    case(f"l1_loss-{red}", lambda a, b, r=red: tp.l1_loss(a, b, reduction=r), [A(S), A(S)],
         lambda a, b, r=red: T("F.l1_loss")(a, b, reduction=r))
    case(f"cross_entropy-{red}", lambda x, y, r=red: tp.cross_entropy(x * 2.0, y, reduction=r), [A((4, 5)), L((4,), 5)],
         lambda x, y, r=red: T("F.cross_entropy")(x * 2.0, y, reduction=r))
    case(f"cross_entropy-ignore-{red}", lambda x, y, r=red: tp.cross_entropy(x, y, reduction=r, ignore_index=-100),
         [A((6, 3)), L((6,), 3, ignore=-100)], lambda x, y, r=red: T("F.cross_entropy")(x, y, reduction=r))
    case(f"cross_entropy-NCd-{red}", lambda x, y, r=red: tp.cross_entropy(x, y, reduction=r, ignore_index=1),
         [A((2, 3, 4)), L((2, 4), 3)], lambda x, y, r=red: T("F.cross_entropy")(x, y, reduction=r, ignore_index=1))
    case(f"nll_loss-{red}", lambda x, y, r=red: tp.nll_loss(tp.log_softmax(x), y, reduction=r),
         [A((4, 5)), L((4,), 5)], lambda x, y, r=red: T("F.nll_loss")(T("log_softmax")(x, -1), y, reduction=r))
    case(f"nll_loss-raw-ignore-{red}", lambda x, y, r=red: tp.nll_loss(x, y, reduction=r, ignore_index=0),
         [A((5, 3)), L((5,), 3)], lambda x, y, r=red: T("F.nll_loss")(x, y, reduction=r, ignore_index=0))
    case(f"bce_with_logits-{red}", lambda x, t, r=red: tp.binary_cross_entropy_with_logits(x * 3.0, t, reduction=r),
         [A(S), A(S, "prob")],
         lambda x, t, r=red: T("F.binary_cross_entropy_with_logits")(x * 3.0, t, reduction=r))
case("cross_entropy-1d", lambda x, y: tp.cross_entropy(x, y), [A((5,)), L((), 5)], T("F.cross_entropy"))
case("nll_loss-NCd", lambda x, y: tp.nll_loss(tp.log_softmax(x, axis=1), y), [A((2, 3, 2, 2)), L((2, 2, 2), 3)],
     lambda x, y: T("F.nll_loss")(T("log_softmax")(x, 1), y))
# a composition: an MLP loss (every op above composes)
case("mlp", lambda w1, b1, w2, x, y: tp.cross_entropy(tp.tanh(x @ w1 + b1) @ w2, y),
     [A((4, 6)), A((6,)), A((6, 3)), A((5, 4)), L((5,), 3)],
     lambda w1, b1, w2, x, y: T("F.cross_entropy")(T("tanh")(x @ w1 + b1) @ w2, y))

# issue 11's ops: index picking, scans, masks, einsum, statistics, batch norm
_IDX = np.array([[2, 0, 2], [-1, 1, 0]])  # repeats (the gradient accumulates) and a negative index


def _tt(a):  # a numpy index array as a torch tensor (torch is imported lazily)
    return _tf()[0].as_tensor(a)


case("take-embedding", lambda w: tp.take(w, _IDX), [A((4, 3))], lambda w: w[_tt(_IDX % 4)])
case("take-axis1", lambda w: tp.take(w, _IDX, axis=1), [A((2, 3, 2))], lambda w: w[:, _tt(_IDX % 3)])
case("scatter_add", lambda d, u: tp.scatter_add(d, _IDX % 4, u), [A((4, 2)), A((2, 3, 2))],
     lambda d, u: d.index_add(0, _tt((_IDX % 4).reshape(-1)), u.reshape(-1, 2)))
case("cumsum", lambda x: tp.cumsum(x, 1), [A(S)], lambda x: T("cumsum")(x, 1))
case("cumsum-exclusive-reverse", lambda x: tp.cumsum(x, 0, exclusive=True, reverse=True), [A(S)],
     lambda x: T("flip")(T("cumsum")(T("flip")(x, (0,)), 0), (0,)) - x)
case("triu", lambda x: tp.triu(x, 1), [A((2, 3, 4))], lambda x: T("triu")(x, 1))
case("tril", lambda x: tp.tril(x, -1), [A(S)], lambda x: T("tril")(x, -1))
case("einsum-matmul", lambda a, b: tp.einsum("bij,bjk->bik", a, b), [A((2, 3, 4)), A((2, 4, 5))],
     lambda a, b: T("einsum")("bij,bjk->bik", a, b))
case("einsum-ellipsis-sum", lambda a, b: tp.einsum("...i,j->...j", a, b), [A((2, 3, 4)), A((5,))],
     lambda a, b: T("einsum")("...i,j->...j", a, b))
case("einsum-three", lambda a, b, c: tp.einsum("ij,jk,k", a, b, c), [A((2, 3)), A((3, 4)), A((4,))],
     lambda a, b, c: T("einsum")("ij,jk,k", a, b, c))
case("var", lambda x: tp.var(x, axis=1), [A(S)], lambda x: T("var")(x, 1))
case("std-all-ddof0", lambda x: tp.std(x, correction=0, keepdims=True), [A(S)],
     lambda x: T("std")(x, correction=0, keepdim=True))
case("stack-flatten", lambda a, b: tp.flatten(tp.stack([a, b], axis=1), 1), [A(S), A(S)],
     lambda a, b: T("flatten")(T("stack")([a, b], 1), 1))
case("split", lambda x: tp.split(x, [1, 3], axis=1)[2] * tp.split(x, 2, axis=1)[0], [A(S)],
     lambda x: T("tensor_split")(x, [1, 3], 1)[2] * T("tensor_split")(x, 2, 1)[0])
case("batch_norm", lambda x, w, b, m, v: tp.batch_norm(x, m, v, w, b, eps=1e-3),
     [A((3, 2, 2, 2)), A((2,)), A((2,)), A((2,)), A((2,), "pos")],
     # torch's batch_norm refuses gradients for the running statistics: its formula, written out
     lambda x, w, b, m, v: (x - m.view(2, 1, 1)) / T("sqrt")(v.view(2, 1, 1) + 1e-3) * w.view(2, 1, 1)
     + b.view(2, 1, 1))
case("batch_norm-train", lambda x, w, b: tp.batch_norm(x, None, None, w, b, training=True),
     [A((3, 2, 2)), A((2,)), A((2,))], lambda x, w, b: T("F.batch_norm")(x, None, None, w, b, training=True))
case("dropout-p0", lambda x: tp.dropout(x, 0.0) + tp.dropout(x, 0.5, training=False), [A(S)],
     lambda x: x + x)

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "duplicate case ids"


# ---- the harness ---------------------------------------------------------------------


def _args(c: Case, dtype=np.float64):
    gen = rng(c.id, "args")
    return [_draw(s, gen, dtype) for s in c.args]


def _float_idx(c: Case):
    return tuple(i for i, s in enumerate(c.args) if isinstance(s, A))


def _loss_graph(c: Case, args):
    """Trace L(args) = sum(f(args) * W) for a fixed random W of f's output shape and dtype."""
    out = tp.trace(c.fn, *args).outputs[0].type
    dt = np.float32 if out.dtype == "f32" else np.float64
    w = rng(c.id, "w").standard_normal(out.shape).astype(dt)

    def loss(*xs):
        return (c.fn(*xs) * w).sum()

    return tp.trace(loss, *args), w


def _grads(c: Case, args):
    g, w = _loss_graph(c, args)
    wrt = _float_idx(c)
    gg = tp.grad(g, wrt=wrt)
    tp.verify(gg)
    grads = tp.run(gg, *args)
    assert isinstance(grads, tuple) and len(grads) == len(wrt)
    for i, gr in zip(wrt, grads):
        assert gr.shape == args[i].shape and gr.dtype == args[i].dtype, (c.id, i, gr.shape, gr.dtype)
        assert np.all(np.isfinite(gr)), (c.id, i, gr)
    return g, grads, w


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_fd(c: Case):
    """<grad L, v> against (L(x + eps v) - L(x - eps v)) / 2 eps, in float64, two random directions."""
    args = _args(c)
    g, grads, _ = _grads(c, args)
    f = tp.compile(g)
    wrt = _float_idx(c)
    gen = rng(c.id, "v")
    for _ in range(2):
        vs = [gen.standard_normal(args[i].shape) for i in wrt]
        dd = sum(float(np.sum(gr * v)) for gr, v in zip(grads, vs))

        def shifted(t):
            xs = list(args)
            for i, v in zip(wrt, vs):
                xs[i] = args[i] + t * v
            return float(f(*xs))

        fd = (shifted(c.eps) - shifted(-c.eps)) / (2 * c.eps)
        assert_close(dd, fd, scale=max(abs(fd), 1e-3), ulps=c.fd_ulps, why=c.fd_why, msg=f"{c.id}: <grad, v>")


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_f32_matches_f64(c: Case):
    """The same function traced at float32 gives the float64 gradients to ~1e-4 relative."""
    a64 = _args(c)
    a32 = [a.astype(np.float32) if a.dtype == np.float64 else a for a in a64]
    _, g64, _ = _grads(c, a64)
    _, g32, _ = _grads(c, a32)
    for x32, x64 in zip(g32, g64):
        assert x32.dtype == np.float32
        assert_close(x32, x64, dtype="float32", ulps=CHAIN, why="float32 forward + backward vs float64", msg=c.id)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_torch(c: Case):
    """float64 gradients equal PyTorch's autograd on the same function."""
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    assert c.torch is not None, f"{c.id} has no torch twin"
    args = _args(c)
    _, grads, w = _grads(c, args)
    targs = [torch.tensor(a, requires_grad=a.dtype == np.float64) for a in args]
    out = c.torch(*targs)
    loss = (out * torch.from_numpy(np.asarray(w))).sum()
    loss.backward()
    for i, gr in zip(_float_idx(c), grads):
        ref = targs[i].grad
        ref = torch.zeros_like(targs[i]) if ref is None else ref
        assert_close(gr, ref.numpy(), ulps=TORCH, why="torch's own float64 kernels", msg=f"{c.id}: argument {i}")


def test_table_covers_every_differentiable_op():
    """Every registry op marked differentiable appears in some case's traced graph."""
    seen = set()
    for c in CASES:
        g, _ = _loss_graph(c, _args(c))
        seen.update(n.op for n in g.nodes)
    from tapeir.passes.autodiff import DIFFERENTIATED_BY_INLINING  # tests/ir/test_fused.py covers those

    want = {name for name, op in OPS.items() if op.differentiable} - DIFFERENTIATED_BY_INLINING
    assert want - seen == set(), f"no gradient test for: {sorted(want - seen)}"


# ---- conventions at kinks and ties (DESIGN: numerical contracts) ------------------------


def _grad_at(fn, *args, wrt=0):
    return tp.run(tp.grad(tp.trace(fn, *args), wrt=wrt), *args)


def test_tie_relu_abs_at_zero():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(_grad_at(lambda x: tp.relu(x).sum(), x), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(_grad_at(lambda x: tp.abs(x).sum(), x), [-1.0, 0.0, 1.0])
    # leaky_relu at 0 takes the negative slope, as torch does
    assert_close(_grad_at(lambda x: tp.leaky_relu(x, 0.1).sum(), x), [0.1, 0.1, 1.0])
    # the int-valued kernel: relu of -0.0 is fine too
    np.testing.assert_array_equal(_grad_at(lambda x: tp.relu(x).sum(), np.array([-0.0])), [0.0])


@pytest.mark.parametrize("op", [tp.maximum, tp.minimum])
def test_tie_maximum_minimum_split_half(op):
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 5.0, 0.0])
    ga, gb = _grad_at(lambda a, b: op(a, b).sum(), a, b, wrt=(0, 1))
    wins_a = np.array([0.5, 0.0, 1.0]) if op is tp.maximum else np.array([0.5, 1.0, 0.0])
    np.testing.assert_array_equal(ga, wins_a)
    np.testing.assert_array_equal(gb, 1.0 - wins_a)
    # against itself and against a broadcast scalar: both sides get half of every tie
    np.testing.assert_array_equal(_grad_at(lambda a: op(a, a).sum(), a), [1.0, 1.0, 1.0])
    s = np.array(2.0)
    ga, gs = _grad_at(lambda a, s: op(a, s).sum(), a, s, wrt=(0, 1))
    np.testing.assert_array_equal(ga, [0.0 if op is tp.maximum else 1.0, 0.5, 1.0 if op is tp.maximum else 0.0])
    assert gs == 1.5


@pytest.mark.parametrize("op", ["max", "min"])
def test_tie_reduction_splits_evenly(op):
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 5.0, -1.0]])
    red = tp.max if op == "max" else tp.min
    if op == "min":
        x = -x
    assert_close(_grad_at(lambda x: red(x, axis=1).sum(), x), [[0, 0.5, 0.5, 0], [0.25] * 4, [0, 0, 1, 0]])
    # keepdims, weighted: column 2 ties between rows 1 and 2, which share its weight 3
    assert_close(_grad_at(lambda x: (red(x, axis=0, keepdims=True) * np.arange(1.0, 5.0)).sum(), x),
                 [[0, 0, 0, 0], [1, 2, 1.5, 4], [0, 0, 1.5, 0]])
    # over all of x: the five 5s share the gradient
    expect = np.zeros_like(x)
    expect[1] = expect[2, 2] = 0.2
    assert_close(_grad_at(lambda x: red(x), x), expect)


def test_tie_max_pool2d_shares_among_ties():
    x = np.ones((1, 1, 4, 4))
    # non-overlapping 2x2 windows of equal values: each element gets 1/4
    assert_close(_grad_at(lambda x: tp.max_pool2d(x, 2).sum(), x), np.full(x.shape, 0.25))
    # overlapping 3x3 windows, stride 1: each window gives 1/9 to each element it covers
    cover = np.array([1, 2, 2, 1], float)
    assert_close(_grad_at(lambda x: tp.max_pool2d(x, 3, stride=1).sum(), x), (np.outer(cover, cover) / 9)[None, None])
    # padding never wins (it is -inf), even when every real value is negative
    y = -np.ones((1, 1, 2, 2))
    assert_close(_grad_at(lambda x: tp.max_pool2d(x, 2, stride=2, padding=1).sum(), y), np.ones((1, 1, 2, 2)))


def test_clip_passes_gradient_at_bounds():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(_grad_at(lambda x: tp.clip(x, -1.0, 1.0).sum(), x), [0, 1, 1, 1, 0])


def test_sqrt_at_zero_is_inf():
    with np.errstate(divide="ignore"):
        g = _grad_at(lambda x: tp.sqrt(x).sum(), np.array([0.0, 4.0]))
    assert g[0] == np.inf and g[1] == 0.25


def test_pow_at_zero_and_negative_base():
    """d(a**e)/de = a**e log(a) is taken as 0 where a <= 0 (log undefined there; torch agrees at 0)."""
    a, e = np.array([0.0, 0.0, 2.0, -2.0]), np.array([2.0, 3.0, 2.0, 3.0])
    ga, ge = _grad_at(lambda a, e: (a ** e).sum(), a, e, wrt=(0, 1))
    np.testing.assert_array_equal(ga, [0.0, 0.0, 4.0, 12.0])
    assert_close(ge, [0.0, 0.0, 4.0 * np.log(2.0), 0.0])


# ---- extreme inputs: gradients stay finite in float32 --------------------------------

BIG = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -3.0, 2.0]], np.float32)


def _np_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_sigmoid(x):
    return 0.5 * (1 + np.tanh(np.asarray(x, np.float64) / 2))


W = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 1.5, -0.5, 3.0], [-2.0, 0.5, 1.0, -1.0]], np.float32)
Y = np.array([1, 3, 0], np.int64)


def _extreme_expect(name, x):
    """Reference gradients of sum(f(x) * W) (or of the loss), from stable float64 formulas."""
    x64, w = x.astype(np.float64), W.astype(np.float64)
    p = _np_softmax(x64)
    if name == "softmax":
        return p * (w - (w * p).sum(-1, keepdims=True))
    if name == "log_softmax":
        return w - p * w.sum(-1, keepdims=True)
    if name == "logsumexp":
        return p * w.sum(-1, keepdims=True)
    if name == "cross_entropy":
        return (p - np.eye(4)[Y]) / 3
    if name == "sigmoid":
        s = _np_sigmoid(x64)
        return w * s * (1 - s)
    if name in ("softplus", "bce"):
        s = _np_sigmoid(x64)
        return (s - (np.float64(0.5) if name == "bce" else 0.0)) * (w if name == "softplus" else 1 / x.size)
    if name == "tanh":
        return w * (1 - np.tanh(x64) ** 2)
    raise KeyError(name)


EXTREME = {
    "softmax": lambda x: (tp.softmax(x) * W).sum(),
    "log_softmax": lambda x: (tp.log_softmax(x) * W).sum(),
    "logsumexp": lambda x: (tp.logsumexp(x, axis=-1) * W.sum(-1)).sum(),
    "cross_entropy": lambda x: tp.cross_entropy(x, Y),
    "sigmoid": lambda x: (tp.sigmoid(x) * W).sum(),
    "tanh": lambda x: (tp.tanh(x) * W).sum(),
    "bce": lambda x: tp.binary_cross_entropy_with_logits(x, np.full(x.shape, 0.5, np.float32)),
    "softplus": lambda x: (tp.softplus(x) * W).sum(),
}


@pytest.mark.parametrize("name", sorted(EXTREME))
def test_extreme_inputs_give_finite_gradients_f32(name):
    x = BIG / 100 if name == "softplus" else BIG  # softplus at +-100
    value, grad = tp.run(tp.value_and_grad(tp.trace(EXTREME[name], x)), x)
    assert value.dtype == np.float32 and np.isfinite(value), (name, value)
    assert grad.dtype == np.float32 and np.all(np.isfinite(grad)), (name, grad)
    # logsumexp's rule is exp(x - y), as torch's: y ~ 1e4 carries f32 rounding of ~5e-4
    if name == "logsumexp":
        assert_close(grad, _extreme_expect(name, x), ulps=CONDITIONED, why="exp(x - y) with y ~ 1e4", msg=name)
    else:
        assert_close(grad, _extreme_expect(name, x), msg=name)


# float16 layer_norm: the statistics run in float32 (ONNX LayerNormalization's default
# stash_type=1), else d*d overflows f16 once |x - mean| >= 256 and everything is 0.
def _layer_norm_loss(x, w, b):
    weights = np.linspace(-1, 2, x.shape[-1]).astype(x.dtype)
    return (tp.layer_norm(x, x.shape[-1], w, b) * weights).sum()


@pytest.mark.parametrize("backend,opset", [("numpy", None), ("onnxruntime", 15), ("onnxruntime", 20)])
def test_layer_norm_f16_large_spread(backend, opset):
    opts = {} if opset is None else {"opset": opset}  # opset 15: the decomposed export
    x = np.array([[0, 600]], np.float16)
    g = tp.trace(lambda x: tp.layer_norm(x, 2), x)
    assert tp.run(g, x, backend=backend, **opts).tolist() == [[-1, 1]]
    if opset == 15:  # onnxruntime's CPU provider computes f16 Mul in f32 anyway; onnx's evaluator does not
        from onnx.reference import ReferenceEvaluator

        assert ReferenceEvaluator(tp.to_onnx(g, opset=15)).run(None, {"x": x})[0].tolist() == [[-1, 1]]

    rng = np.random.default_rng(0)
    x64 = rng.normal(1000, 600, (3, 8))  # |x - mean| up to ~1500 (d*d ~ 2e6 > f16 max 65504)
    w64, b64 = rng.normal(1, 0.5, 8), rng.normal(0, 1, 8)
    args16 = [a.astype(np.float16) for a in (x64, w64, b64)]
    args64 = [a.astype(np.float64) for a in args16]  # the same values, so only rounding differs
    vg = tp.value_and_grad(tp.trace(_layer_norm_loss, *args16), wrt=(0, 1, 2))
    value, grads = tp.run(vg, *args16, backend=backend, **opts)
    # float64 reference: test_fd pins layer_norm's float64 gradients to finite differences
    ref_value, ref_grads = tp.run(tp.value_and_grad(tp.trace(_layer_norm_loss, *args64), wrt=(0, 1, 2)), *args64)
    assert value.dtype == np.float16
    f16 = "float16 storage (float32 statistics) against float64"
    assert_close(value, ref_value, dtype="float16", ulps=10, why=f16)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == np.float16 and np.all(np.isfinite(got))
        assert np.abs(want).max() > 0
        assert_close(got, want, dtype="float16", ulps=10, why=f16)
