"""Higher-order derivatives: the backward pass is a graph, so `tp.call(tp.grad(g), ...)`
inside a traced function can be differentiated again.

* Hessian-vector products Hv = grad(<grad f(x), v>) for every case of the gradient table
  (tests/passes/test_grad_ops.py) and for MLP-like compositions, checked against central
  differences of the first gradient: (grad f(x + eps v) - grad f(x - eps v)) / 2 eps.
* Hessians are symmetric; a gradient penalty (|d f/d x|^2 differentiated with respect to
  the weights) matches finite differences and PyTorch's double backward; third and fourth
  derivatives of scalar functions match their closed forms.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

import tapeir as tp
from support import FINITE_DIFFERENCES, assert_close, marked_line, seed
from tapeir.ir import flatten, unflatten


def _load_table():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_grad_ops.py")
    spec = importlib.util.spec_from_file_location("_tapeir_grad_table", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


TABLE = _load_table()


def _is_leaf(x):
    return isinstance(x, (np.ndarray, tp.Tensor))


def _leaves(tree):
    return flatten(tree, _is_leaf)[0]


def _tree_map(f, *trees):
    leaves, td = flatten(trees[0], _is_leaf)
    others = [_leaves(t) for t in trees[1:]]
    return unflatten(td, [f(*xs) for xs in zip(leaves, *others)])


def _dot(a, b):
    """<a, b> over two pytrees of traced tensors."""
    total = None
    for x, y in zip(_leaves(a), _leaves(b)):
        t = (x * y).sum()
        total = t if total is None else total + t
    return total


def hvp_graph(g, wrt):
    """A graph (args..., v) -> H v, where H is the Hessian of g's output in argument(s) `wrt`."""
    gg = tp.grad(g, wrt=wrt)

    def hv(*args):
        *xs, v = args
        return _dot(tp.call(gg, *xs), v)

    return gg, hv


def check_hvp(g, args, wrt, seed=0, eps=1e-5, ulps=FINITE_DIFFERENCES, why="central differences of the gradient"):
    """Hv from tp.grad(tp.call(tp.grad(g))) against central differences of tp.grad(g)."""
    gg, hv = hvp_graph(g, wrt)
    rng = np.random.default_rng(seed)
    wrt_t = (wrt,) if isinstance(wrt, int) else tuple(wrt)
    vs = [_tree_map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), args[i]) for i in wrt_t]
    v = vs[0] if isinstance(wrt, int) else tuple(vs)
    h = tp.trace(hv, *args, v)
    hg = tp.grad(h, wrt=wrt)
    tp.verify(hg)
    got = tp.run(hg, *args, v)

    first = tp.compile(gg)

    def shifted(t):
        xs = list(args)
        for i, vi in zip(wrt_t, vs):
            xs[i] = _tree_map(lambda a, d: a + t * d, args[i], vi)
        return _leaves(first(*xs))

    fd = [(p - m) / (2 * eps) for p, m in zip(shifted(eps), shifted(-eps))]
    got_leaves = _leaves(got)
    assert len(got_leaves) == len(fd)
    scale = max(1e-3, max(float(np.abs(x).max()) for x in fd if x.size))
    for a, b in zip(got_leaves, fd):
        assert a.shape == b.shape and np.all(np.isfinite(a))
        assert_close(a, b, scale=scale, ulps=ulps, why=why)
    return got


# ---- Hv for every case of the gradient table ----------------------------------------------

# astype rounds through float32: finite differences of its gradient need a large step
# (the gradient is linear in x, so central differences are still exact)
_HVP_EPS = {"astype": 1e-2}
_HVP_ULPS = {"astype": 100 * FINITE_DIFFERENCES}


@pytest.mark.parametrize("c", TABLE.CASES, ids=TABLE.IDS)
def test_hvp_table(c):
    args = TABLE._args(c)
    g, _ = TABLE._loss_graph(c, args)
    check_hvp(g, args, TABLE._float_idx(c), seed=seed(c.id, "hvp"),
              eps=_HVP_EPS.get(c.id, 1e-5), ulps=_HVP_ULPS.get(c.id, FINITE_DIFFERENCES),
              why="central differences of the gradient" + (" with a large step" if c.id in _HVP_EPS else ""))


# ---- compositions --------------------------------------------------------------------------

rng = np.random.default_rng(42)


def mlp(p, x, y):
    h = tp.tanh(x @ p["w1"] + p["b1"])
    h = tp.softplus(h @ p["w2"]) * tp.sigmoid(h @ p["w3"])
    logits = tp.layer_norm(h, 5, p["ln_w"], p["ln_b"])
    return tp.cross_entropy(logits, y) + (tp.log(tp.exp(logits * 0.1).sum(axis=-1))).mean()


MLP_ARGS = ({"w1": rng.standard_normal((4, 6)) * 0.7, "b1": rng.standard_normal(6) * 0.1,
             "w2": rng.standard_normal((6, 5)) * 0.5, "w3": rng.standard_normal((6, 5)) * 0.5,
             "ln_w": 1 + 0.1 * rng.standard_normal(5), "ln_b": 0.1 * rng.standard_normal(5)},
            rng.standard_normal((7, 4)), rng.integers(0, 5, 7))


def attention(p, x):
    q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
    a = tp.softmax(q @ k.T * 0.5, axis=-1)
    out = tp.layer_norm(a @ v + x, 4)
    return tp.mse_loss(tp.gelu(out), x) + tp.log_softmax(out, axis=0).mean()


ATT_ARGS = ({"q": rng.standard_normal((4, 4)) * 0.5, "k": rng.standard_normal((4, 4)) * 0.5,
             "v": rng.standard_normal((4, 4)) * 0.5}, rng.standard_normal((3, 4)))


def convnet(p, x, y):
    h = tp.tanh(tp.conv2d(x, p["c1"], p["b1"], stride=1, padding=1))
    h = tp.max_pool2d(h, 2)
    h = tp.conv2d(h, p["c2"], groups=1, stride=2)
    h = tp.avg_pool2d(tp.sigmoid(h), 1).reshape(2, -1)
    return tp.cross_entropy(h @ p["fc"], y)


CONV_ARGS = ({"c1": rng.standard_normal((3, 2, 3, 3)) * 0.5, "b1": rng.standard_normal(3) * 0.1,
              "c2": rng.standard_normal((2, 3, 2, 2)) * 0.5, "fc": rng.standard_normal((2, 3))},
             rng.standard_normal((2, 2, 6, 6)), np.array([0, 2]))


@pytest.mark.parametrize("name,fn,args,wrt", [
    ("mlp-params", mlp, MLP_ARGS, 0),
    ("mlp-input", mlp, MLP_ARGS, 1),
    ("mlp-both", mlp, MLP_ARGS, (0, 1)),
    ("attention", attention, ATT_ARGS, (0, 1)),
    ("convnet", convnet, CONV_ARGS, (0, 1)),
])
def test_hvp_compositions(name, fn, args, wrt):
    check_hvp(tp.trace(fn, *args), list(args), wrt, seed=7)


def test_hessian_is_symmetric():
    """Build the full Hessian of a small tanh/softmax/matmul function column by column from Hv."""
    def f(x, w):
        return (tp.softmax(tp.tanh(x @ w) * 2.0) * np.arange(3.0)).sum() + tp.logsumexp(x * x)

    x, w = rng.standard_normal((2, 2)), rng.standard_normal((2, 3))
    _, hv = hvp_graph(tp.trace(f, x, w), 0)
    hg = tp.compile(tp.grad(tp.trace(hv, x, w, x), wrt=0))
    basis = np.eye(4).reshape(4, 2, 2)
    hess = np.stack([hg(x, w, e).reshape(-1) for e in basis])
    assert_close(hess, hess.T)
    assert np.abs(hess).max() > 0.1  # not trivially zero


# ---- a gradient penalty ------------------------------------------------------------------------


def critic(p, x):
    h = tp.softplus(x @ p["w1"] + p["b1"])
    return (tp.tanh(h @ p["w2"]) * p["s"]).sum()


GP_P = {"w1": rng.standard_normal((3, 5)) * 0.8, "b1": rng.standard_normal(5) * 0.3,
        "w2": rng.standard_normal((5, 2)) * 0.8, "s": rng.standard_normal(2)}
GP_X = rng.standard_normal((4, 3))


def _penalty_graph():
    dfdx = tp.grad(tp.trace(critic, GP_P, GP_X), wrt=1)

    def penalty(p, x):
        gx = tp.call(dfdx, p, x)
        norms = tp.sqrt((gx * gx).sum(axis=1) + 1e-12)
        return ((norms - 1.0) ** 2.0).mean()  # WGAN-GP

    return tp.trace(penalty, GP_P, GP_X)


def test_gradient_penalty_matches_finite_differences():
    pg = _penalty_graph()
    vg = tp.value_and_grad(pg, wrt=0)
    tp.verify(vg)
    assert tp.parse(str(vg)) == vg
    value, grads = tp.run(vg, GP_P, GP_X)
    f = tp.compile(pg)
    r = np.random.default_rng(3)
    for _ in range(2):
        v = {k: r.standard_normal(a.shape) for k, a in GP_P.items()}
        dd = sum(float((grads[k] * v[k]).sum()) for k in v)
        eps = 1e-6
        fd = (float(f({k: GP_P[k] + eps * v[k] for k in v}, GP_X))
              - float(f({k: GP_P[k] - eps * v[k] for k in v}, GP_X))) / (2 * eps)
        assert_close(dd, fd, scale=1e-3, ulps=FINITE_DIFFERENCES, why="central differences")
    # every parameter gets a gradient (the penalty depends on all of them)
    assert all(np.abs(g).max() > 0 for g in grads.values())


def test_gradient_penalty_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    pg = _penalty_graph()
    value, grads = tp.run(tp.value_and_grad(pg, wrt=0), GP_P, GP_X)
    tparams = {k: torch.tensor(a, requires_grad=True) for k, a in GP_P.items()}
    x = torch.tensor(GP_X, requires_grad=True)
    h = torch.nn.functional.softplus(x @ tparams["w1"] + tparams["b1"])
    out = (torch.tanh(h @ tparams["w2"]) * tparams["s"]).sum()
    (gx,) = torch.autograd.grad(out, x, create_graph=True)
    pen = ((torch.sqrt((gx * gx).sum(1) + 1e-12) - 1.0) ** 2).mean()
    pen.backward()
    assert_close(float(value), float(pen.detach()))
    for k, a in grads.items():
        assert_close(a, tparams[k].grad.numpy(), msg=k)


# ---- third and fourth derivatives -----------------------------------------------------------------


def _nth_derivative_graphs(fn, x, n):
    """Graphs of d^k/dx^k sum(fn(x)), k = 1..n (elementwise fn: the derivatives are elementwise)."""
    g = tp.trace(lambda x: fn(x).sum(), x)
    out = []
    for _ in range(n):
        d = tp.grad(g)
        tp.verify(d)
        out.append(d)
        g = tp.trace(lambda x, d=d: tp.call(d, x).sum(), x)
    return out


@pytest.mark.parametrize("name,fn,derivs", [
    ("sin", tp.sin, [np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x), np.sin]),
    ("pow4", lambda x: x ** 4.0, [lambda x: 4 * x ** 3, lambda x: 12 * x ** 2, lambda x: 24 * x, lambda x: 24 + 0 * x]),
    ("tanh", tp.tanh, [lambda x: 1 - np.tanh(x) ** 2, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2),
                       lambda x: -2 * (1 - np.tanh(x) ** 2) * (1 - 3 * np.tanh(x) ** 2)]),
    ("exp-neg", lambda x: tp.exp(-x), [lambda x: -np.exp(-x), lambda x: np.exp(-x), lambda x: -np.exp(-x)]),
    ("log", tp.log, [lambda x: 1 / x, lambda x: -1 / x ** 2, lambda x: 2 / x ** 3]),
    ("sigmoid", tp.sigmoid, [lambda x: _s(x) * (1 - _s(x)), lambda x: _s(x) * (1 - _s(x)) * (1 - 2 * _s(x)),
                             lambda x: _s(x) * (1 - _s(x)) * (1 - 6 * _s(x) * (1 - _s(x)))]),
])
def test_higher_derivatives_closed_form(name, fn, derivs):
    x = np.array([0.3, 1.1, 2.5, 0.05]) if name == "log" else np.array([-1.7, -0.2, 0.0, 0.4, 2.0])
    for k, (d, want) in enumerate(zip(_nth_derivative_graphs(fn, x, len(derivs)), derivs), 1):
        assert_close(tp.run(d, x), want(x), msg=f"{name}: order {k}")


def _s(x):
    return 1 / (1 + np.exp(-x))


def test_third_derivative_of_sin_in_float32():
    x = np.linspace(-3, 3, 7).astype(np.float32)
    d3 = _nth_derivative_graphs(tp.sin, x, 3)[2]
    got = tp.run(d3, x)
    assert got.dtype == np.float32
    assert_close(got, -np.cos(x.astype(np.float64)))


def test_grad_of_value_and_grad_through_call():
    """tp.call of a (value, grads) graph: differentiate value + |grad|^2 (a gradient-norm regularizer)."""
    x = np.array([0.2, -0.7, 1.3])
    vg = tp.value_and_grad(tp.trace(lambda x: (tp.sin(x) * x).sum(), x))

    def reg(x):
        value, gx = tp.call(vg, x)
        return value + (gx * gx).sum()

    got = tp.run(tp.grad(tp.trace(reg, x)), x)
    d1 = np.sin(x) + x * np.cos(x)
    d2 = 2 * np.cos(x) - x * np.sin(x)
    assert_close(got, d1 + 2 * d1 * d2)


def test_second_order_nodes_keep_user_source_lines():
    def f(x):
        return tp.tanh(x * 2.0).sum()  # @f-line

    x = np.array([0.1, 0.2])
    d1 = tp.grad(tp.trace(f, x))

    def g(x):
        return tp.call(d1, x).sum()  # @g-line

    d2 = tp.grad(tp.trace(g, x))
    lines = {m: marked_line(__file__, m) for m in ("f-line", "g-line")}
    sources = {n.source for n in d2.nodes}
    # the inlined first derivative keeps f's line; the final sum's backward is on g's line
    assert lines["f-line"] in sources and sources <= {lines["f-line"], lines["g-line"]}


def test_grad_of_grad_through_a_flatten_with_product_dims():
    """The inner graph's '4*B' dims must follow the outer trace's sizes (3 or 'N')."""
    g = tp.trace(lambda x: (x.reshape(-1) ** 2.0).sum(), tp.Spec(("B", 4)))
    for spec in (np.ones((3, 4), np.float32), tp.Spec(("N", 4))):
        h = tp.trace(lambda x: (tp.call(tp.grad(g), x) ** 2.0).sum(), spec)
        tp.verify(h)
        x = np.arange(8, dtype=np.float32).reshape(2, 4) if isinstance(spec, tp.Spec) else \
            np.arange(12, dtype=np.float32).reshape(3, 4)
        assert_close(tp.run(tp.grad(h), x), 8.0 * x)  # d/dx sum((2x)^2) = 8x
