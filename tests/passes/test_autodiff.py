"""The autodiff pass as an API: value_and_grad / grad on pytrees, which nodes it
differentiates and keeps, its errors, the VJP table's coverage, and the graphs it builds
(verifiable, printable, parseable, pointing at the user's source lines)."""
from __future__ import annotations


import numpy as np
import pytest

import tapeir as tp
from support import FINITE_DIFFERENCES, assert_close, assert_tree_close, marked_line, traced_path

FD_WHY = "central differences (h = 1e-6) as the reference"
from tapeir.ir import OPS
from tapeir.passes import VJP

HERE = traced_path(__file__)  # how the tracer names this file


def _line(marker: str) -> str:
    return marked_line(__file__, marker)


def _ops(g) -> list[str]:
    return [n.op for n in g.nodes]


def _check_graph(g):
    """Every graph the pass builds verifies and survives the text round trip."""
    tp.verify(g)
    assert tp.parse(str(g)) == g


rng = np.random.default_rng(0)
PARAMS = {"w": rng.standard_normal((3, 2)), "b": [rng.standard_normal(2), rng.standard_normal(2)],
          "scale": (rng.standard_normal(()),)}
X = rng.standard_normal((4, 3))


def model(params, x):
    h = tp.tanh(x @ params["w"] + params["b"][0])  # @model-hidden
    return ((h * params["b"][1]).sum() * params["scale"][0]) ** 2.0  # @model-loss


def model_np(params, x):
    h = np.tanh(x @ params["w"] + params["b"][0])
    return float(((h * params["b"][1]).sum() * params["scale"][0]) ** 2.0)


def _fd_tree(f, tree, eps=1e-6):
    """Central-difference gradient of f at a pytree of float64 arrays (dict/list/tuple), per element."""
    if isinstance(tree, dict):
        return {k: _fd_tree(lambda t, k=k: f({**tree, k: t}), v, eps) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        out = [_fd_tree(lambda t, i=i: f(type(tree)(t if j == i else u for j, u in enumerate(tree))), v, eps)
               for i, v in enumerate(tree)]
        return type(tree)(out)
    g = np.zeros_like(tree)
    for idx in np.ndindex(tree.shape):
        d = np.zeros_like(tree)
        d[idx] = eps
        g[idx] = (f(tree + d) - f(tree - d)) / (2 * eps)
    return g


# ---- pytrees and wrt --------------------------------------------------------------------


def test_grads_mirror_the_argument_pytree():
    g = tp.trace(model, PARAMS, X)
    vg = tp.value_and_grad(g)
    _check_graph(vg)
    value, grads = tp.run(vg, PARAMS, X)
    assert_close(float(value), model_np(PARAMS, X))
    # same nesting: a dict (keys b, scale, w) of a list, a tuple and an array
    assert isinstance(grads, dict) and set(grads) == {"w", "b", "scale"}
    assert isinstance(grads["b"], list) and len(grads["b"]) == 2
    assert isinstance(grads["scale"], tuple) and len(grads["scale"]) == 1
    assert_tree_close(grads, _fd_tree(lambda p: model_np(p, X), PARAMS), ulps=FINITE_DIFFERENCES, why=FD_WHY)
    # tp.grad returns the same tree without the value
    assert_tree_close(tp.run(tp.grad(g), PARAMS, X), grads, exact=True)


def test_wrt_int_and_tuple():
    g = tp.trace(model, PARAMS, X)
    gx = tp.run(tp.grad(g, wrt=1), PARAMS, X)
    assert isinstance(gx, np.ndarray) and gx.shape == X.shape
    assert_close(gx, _fd_tree(lambda x: model_np(PARAMS, x), X), ulps=FINITE_DIFFERENCES, why=FD_WHY)
    both = tp.run(tp.grad(g, wrt=(0, 1)), PARAMS, X)
    assert isinstance(both, tuple) and len(both) == 2
    assert_tree_close(both[0], tp.run(tp.grad(g, wrt=0), PARAMS, X), exact=True)
    np.testing.assert_array_equal(both[1], gx)
    # the order of the tuple follows wrt
    rev = tp.run(tp.grad(g, wrt=(1, 0)), PARAMS, X)
    np.testing.assert_array_equal(rev[0], gx)
    # a 1-tuple gives a 1-tuple of trees; value_and_grad puts the value first
    one = tp.run(tp.grad(g, wrt=(1,)), PARAMS, X)
    assert isinstance(one, tuple) and len(one) == 1
    value, (g0, g1) = tp.run(tp.value_and_grad(g, wrt=(0, 1)), PARAMS, X)
    assert_close(float(value), model_np(PARAMS, X))
    np.testing.assert_array_equal(g1, gx)
    # numpy integers are ints too
    np.testing.assert_array_equal(tp.run(tp.grad(g, wrt=np.int64(1)), PARAMS, X), gx)


def test_default_wrt_is_argument_zero():
    g = tp.trace(lambda a, b: (a * b * b).sum(), np.ones(3), np.ones(3))
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    np.testing.assert_array_equal(tp.run(tp.grad(g), a, b), b * b)


def test_fan_out_accumulates():
    x = np.array([1.0, -2.0, 3.0])
    g = tp.trace(lambda x: (x * x + x).sum(), x)
    np.testing.assert_array_equal(tp.run(tp.grad(g), x), 2 * x + 1)
    # a value used by several consumers at once, at different depths
    g = tp.trace(lambda x: (tp.exp(x) * x + tp.sin(x) * tp.exp(x)).sum(), x)
    expect = np.exp(x) * x + np.exp(x) + np.cos(x) * np.exp(x) + np.sin(x) * np.exp(x)
    assert_close(tp.run(tp.grad(g), x), expect)
    # the accumulation is an `add` node carrying the source line of the consumer
    bwd = tp.grad(tp.trace(lambda x: (x * x + x).sum(), x))
    assert "add" in _ops(bwd)


def test_input_the_output_does_not_depend_on_gets_zeros():
    a, b = np.ones((2, 3)), np.full((4,), 7.0)
    g = tp.trace(lambda a, b: (a * 3.0).sum(), a, b)
    ga, gb = tp.run(tp.grad(g, wrt=(0, 1)), a, b)
    np.testing.assert_array_equal(ga, np.full((2, 3), 3.0))
    assert gb.shape == (4,) and gb.dtype == np.float64 and not gb.any()
    # scalar and float32 inputs, and a whole pytree of them
    g = tp.trace(lambda a, p: (a * 2.0).sum(), np.ones(2, np.float32),
                 {"s": np.ones((), np.float32), "m": [np.ones((2, 2), np.float32)]})
    gp = tp.run(tp.grad(g, wrt=1), np.ones(2, np.float32),
                {"s": np.ones((), np.float32), "m": [np.ones((2, 2), np.float32)]})
    assert gp["s"].shape == () and gp["s"].dtype == np.float32 and gp["s"] == 0
    assert gp["m"][0].shape == (2, 2) and not gp["m"][0].any()
    # a constant output: every gradient is zero, the value is the constant
    vg = tp.value_and_grad(tp.trace(lambda x: np.array(3.0), np.ones(2)))
    _check_graph(vg)
    value, gx = tp.run(vg, np.ones(2))
    assert float(value) == 3.0 and gx.shape == (2,) and not gx.any()


def test_only_reachable_only_needed_through_non_differentiable_ops():
    x = np.array([-1.0, 2.0])
    # a path through a comparison (bool) or an integer cast carries no gradient
    g = tp.trace(lambda x: (x > 0).astype("float64").sum() + x.astype("int64").astype("float64").sum(), x)
    assert not tp.run(tp.grad(g), x).any()
    # integer and bool inputs of a node are not differentiated (cross_entropy's labels, where's condition)
    g = tp.trace(lambda x, y: tp.cross_entropy(tp.where(x[:, 0:1] > 0, x, -x), y), np.ones((2, 3)),
                 np.zeros(2, np.int64))
    _check_graph(tp.grad(g))


def test_identity_and_shared_cotangents():
    # the output is the input itself
    vg = tp.value_and_grad(tp.trace(lambda x: x, np.array(2.0)))
    _check_graph(vg)
    assert tp.run(vg, np.array(5.0)) == (5.0, 1.0)
    # both gradients are the same value (the seed): the graph still round-trips and runs
    gg = tp.grad(tp.trace(lambda x, y: x + y, np.array(1.0), np.array(1.0)), wrt=(0, 1))
    _check_graph(gg)
    assert tp.run(gg, np.array(2.0), np.array(3.0)) == (1.0, 1.0)


# ---- which nodes are differentiated and kept ------------------------------------------------


def test_only_nodes_between_wrt_and_output_are_differentiated(monkeypatch):
    def branches(x, y):
        unused = tp.cos(x)  # @unused-branch
        other = tp.sin(y).sum()  # @other-branch
        return tp.exp(x).sum() + other  # @main-branch

    x, y = np.array([0.5, 1.0]), np.array([0.25, 2.0, 3.0])
    g = tp.trace(branches, x, y)
    # a rule that is never needed must never run: sin depends only on y, cos does not reach the output
    def boom(*a):
        raise AssertionError("differentiated a node off the wrt -> output path")
    monkeypatch.setitem(VJP, "sin", boom)
    monkeypatch.setitem(VJP, "cos", boom)
    vg = tp.value_and_grad(g, wrt=0)
    _check_graph(vg)
    value, gx = tp.run(vg, x, y)
    assert_close(float(value), np.exp(x).sum() + np.sin(y).sum())
    assert_close(gx, np.exp(x))
    # the other branch contributes its forward nodes (the value needs them) and nothing else
    by_line = {}
    for n in vg.nodes:
        by_line.setdefault(n.source, []).append(n.op)
    assert by_line[_line("other-branch")] == ["sin", "sum"]
    assert _line("unused-branch") not in by_line
    # grad alone needs neither the other branch nor the unused one
    gg = tp.grad(g, wrt=0)
    assert {n.source for n in gg.nodes} == {_line("main-branch")}


def test_dce_keeps_only_forward_values_the_backward_needs():
    x = np.array([0.0, 1.0, 2.0])
    # d sum(exp(x)) = exp(x): the exp stays (its rule reads the output), the sum goes
    gg = tp.grad(tp.trace(lambda x: tp.exp(x).sum(), x))
    _check_graph(gg)
    assert _ops(gg).count("exp") == 1 and "sum" not in _ops(gg)
    assert_close(tp.run(gg, x), np.exp(x))
    # value_and_grad keeps the sum: the value needs it
    vg = tp.value_and_grad(tp.trace(lambda x: tp.exp(x).sum(), x))
    assert _ops(vg).count("sum") == 1 and _ops(vg).count("exp") == 1
    # a linear function's gradient needs no forward value at all
    gg = tp.grad(tp.trace(lambda x: (x * 2.0 + 1.0).sum(), x))
    assert not {"add"} & set(_ops(gg))
    np.testing.assert_array_equal(tp.run(gg, x), [2.0, 2.0, 2.0])
    # and no unused constants survive
    used = {id(v) for n in gg.nodes for v in n.inputs} | {id(v) for v in gg.outputs}
    assert all(id(c) in used for c in gg.constants)


def test_the_forward_graph_is_not_mutated():
    g = tp.trace(model, PARAMS, X)
    before = str(g)
    n_nodes = len(g.nodes)
    tp.value_and_grad(g)
    tp.grad(g, wrt=(0, 1))
    assert str(g) == before and len(g.nodes) == n_nodes
    assert_close(float(tp.run(g, PARAMS, X)), model_np(PARAMS, X))


# ---- errors -------------------------------------------------------------------------------


def test_wrt_an_integer_input_raises_with_hint():
    g = tp.trace(lambda x, y: tp.cross_entropy(x, y), np.ones((2, 3)), np.zeros(2, np.int64))
    with pytest.raises(tp.TapeirError) as info:
        tp.grad(g, wrt=1)
    msg = str(info.value)
    assert "y" in msg and "i64[2]" in msg and info.value.hint and "hint:" in msg
    with pytest.raises(tp.TapeirError):
        tp.value_and_grad(g, wrt=(0, 1))
    # an integer leaf inside a float pytree is named by its path
    g = tp.trace(lambda p: (p["w"] * p["n"].astype("float64")).sum(),
                 {"w": np.ones(2), "n": np.ones(2, np.int64)})
    with pytest.raises(tp.TapeirError) as info:
        tp.grad(g)
    assert "p.n" in str(info.value) and info.value.hint


@pytest.mark.parametrize("fn,arg,needle", [
    (lambda x: x * 2.0, np.ones(3), "f64[3]"),
    (lambda x: (x.sum(), x.sum()), np.ones(3), "2 values"),
    (lambda x: {"loss": x.sum()}, np.ones(3), "a dict of one value"),
    (lambda x: (x.sum(),), np.ones(3), "a tuple of one value"),
    (lambda x: x.sum(), np.ones(3, np.int64), "i64[]"),
    (lambda x: x.sum() > 0, np.ones(3), "bool[]"),
])
def test_non_scalar_output_raises(fn, arg, needle):
    g = tp.trace(fn, arg)
    for f in (tp.grad, tp.value_and_grad):
        with pytest.raises(tp.TapeirError) as info:
            f(g)
        assert needle in str(info.value) and info.value.hint


@pytest.mark.parametrize("wrt,needle", [(1, "does not exist"), ((0, 2), "does not exist"), ((0, 0), "twice"),
                                        (-1, "does not exist")])
def test_bad_wrt_raises(wrt, needle):
    g = tp.trace(lambda a, b: (a * b).sum(), np.ones(2), np.ones(2)) if wrt != 1 else \
        tp.trace(lambda a: a.sum(), np.ones(2))
    with pytest.raises(tp.TapeirError, match=needle):
        tp.grad(g, wrt=wrt)


def test_missing_vjp_rule_names_op_and_source_line(monkeypatch):
    monkeypatch.delitem(VJP, "tanh")
    g = tp.trace(lambda x: tp.tanh(x * 2.0).sum(), np.ones(3))  # @missing-rule
    for f in (tp.grad, tp.value_and_grad):
        with pytest.raises(tp.TapeirError) as info:
            f(g)
        msg = str(info.value)
        assert "'tanh'" in msg and _line("missing-rule") in msg and info.value.hint, msg
    # a graph that does not need the rule is fine
    g = tp.trace(lambda x, y: tp.tanh(y).sum() + x.sum(), np.ones(3), np.ones(2))
    np.testing.assert_array_equal(tp.run(tp.grad(g, wrt=0), np.ones(3), np.ones(2)), np.ones(3))


# ---- the VJP table ------------------------------------------------------------------------


def test_every_differentiable_op_has_a_vjp_rule():
    from tapeir.passes.autodiff import DIFFERENTIATED_BY_INLINING

    missing = sorted(name for name, op in OPS.items()
                     if op.differentiable and name not in VJP and name not in DIFFERENTIATED_BY_INLINING)
    assert not missing, f"differentiable ops without a VJP rule: {missing}"


def test_every_vjp_key_is_a_registered_differentiable_op():
    unknown = sorted(set(VJP) - set(OPS))
    assert not unknown, f"VJP rules for unregistered ops: {unknown}"
    stale = sorted(k for k in VJP if not OPS[k].differentiable)
    assert not stale, f"VJP rules for ops marked non-differentiable: {stale}"


def test_non_differentiable_ops_exist_and_are_marked():
    # the comparisons carry no gradient: the coverage test above would be vacuous without them
    assert {"equal", "less", "greater"} <= {n for n, op in OPS.items() if not op.differentiable}
    assert len(VJP) > 40


# ---- the graphs it builds -----------------------------------------------------------------


def test_result_verifies_and_round_trips():
    g = tp.trace(model, PARAMS, X)
    for built in (tp.value_and_grad(g), tp.grad(g), tp.grad(g, wrt=(0, 1)), tp.value_and_grad(g, wrt=1)):
        _check_graph(built)
        assert tp.parse(str(built)) == built
    # and run the same after the round trip
    vg = tp.value_and_grad(g)
    assert_tree_close(tp.run(tp.parse(str(vg)), PARAMS, X), tp.run(vg, PARAMS, X), exact=True)


def test_the_pass_does_not_depend_on_where_it_is_called():
    """Graph -> Graph is a function: two calls from different lines give equal graphs."""
    g = tp.trace(lambda a, b: (tp.tanh(a) * 2.0).sum(), np.ones(3), np.ones((2, 2)))  # b unused: zero grads
    first = tp.value_and_grad(g, wrt=(0, 1))
    second = tp.value_and_grad(g, wrt=(0, 1))
    assert first == second
    assert tp.grad(g, wrt=1) == tp.grad(g, wrt=1)
    # the zeros for b come from no forward node: no source line (small ones fold to a constant)
    zeros = [n for n in first.nodes if n.op == "broadcast_to" and n.outputs[0] is first.outputs[2]]
    assert (len(zeros) == 1 and zeros[0].source is None) or (
        first.outputs[2].is_constant and not first.outputs[2].data.any())


def test_a_graph_without_source_lines_gets_none():
    """A parsed (or imported) graph has no source lines; its gradient graph must not invent them."""
    g = tp.parse("""graph f(x: f64[3]) {
  %0: f64[3] = tanh(x)
  %1: f64[] = sum(%0) {axes=[0], keepdims=false}
  return %1
}
""")
    assert {n.source for n in g.nodes} == {None}
    vg = tp.value_and_grad(g)
    _check_graph(vg)
    assert {n.source for n in vg.nodes} == {None}
    assert vg == tp.value_and_grad(g)
    x = np.array([0.1, -0.5, 2.0])
    value, gx = tp.run(vg, x)
    assert_close(gx, 1 - np.tanh(x) ** 2)


def test_names_and_inputs():
    g = tp.trace(model, PARAMS, X)
    vg = tp.value_and_grad(g)
    assert vg.name == "model_value_and_grad" and tp.grad(g).name == "model_grad"
    assert [v.name for v in vg.inputs] == [v.name for v in g.inputs]
    assert [str(v.type) for v in vg.inputs] == [str(v.type) for v in g.inputs]
    assert vg.arg_names == ["params", "x"]


def test_backward_nodes_carry_the_forward_source_line():
    g = tp.trace(model, PARAMS, X)
    vg = tp.value_and_grad(g)
    hidden, loss = _line("model-hidden"), _line("model-loss")
    assert {n.source for n in g.nodes} == {hidden, loss}
    # every node of the backward pass points at one of the user's two lines
    assert {n.source for n in vg.nodes} == {hidden, loss}
    # the tanh rule (1 - y*y) and the matmul rule (transpose, matmul) sit on the hidden line
    on_hidden = [n.op for n in vg.nodes if n.source == hidden]
    assert on_hidden.count("tanh") == 1 and "transpose" in on_hidden and on_hidden.count("matmul") >= 2
    # the pow rule sits on the loss line
    assert "pow" in [n.op for n in vg.nodes if n.source == loss][1:]
    # and the printed form shows it
    assert f"# {hidden}" in str(vg)


def test_float32_graph_stays_float32():
    p32 = {"w": PARAMS["w"].astype(np.float32), "b": [b.astype(np.float32) for b in PARAMS["b"]],
           "scale": (PARAMS["scale"][0].astype(np.float32),)}
    g = tp.trace(model, p32, X.astype(np.float32))
    vg = tp.value_and_grad(g, wrt=(0, 1))
    _check_graph(vg)
    assert all(o.type.dtype == "f32" for o in vg.outputs)
    value, (gp, gx) = tp.run(vg, p32, X.astype(np.float32))
    _, (gp64, gx64) = tp.run(tp.value_and_grad(tp.trace(model, PARAMS, X), wrt=(0, 1)), PARAMS, X)
    assert_close(gx, gx64, dtype="float32")
    assert_close(gp["w"], gp64["w"], dtype="float32")


def test_symbolic_batch_dims():
    """A graph traced with a symbolic batch differentiates once and runs at any batch size."""
    def loss(w, x, y):
        h = tp.layer_norm(tp.tanh(x @ w), 4)
        return tp.cross_entropy(h, y) + tp.mean(h * h) + tp.max(h, axis=0).sum() + tp.logsumexp(h, axis=0).sum()

    w = rng.standard_normal((3, 4))
    g = tp.trace(loss, w, tp.Spec(("B", 3), "float64"), tp.Spec(("B",), "int64"))
    gg = tp.grad(g, wrt=(0, 1))
    _check_graph(gg)
    for b in (1, 5):
        x, y = rng.standard_normal((b, 3)), rng.integers(0, 4, b)
        got = tp.run(gg, w, x, y)
        want = tp.run(tp.grad(tp.trace(loss, w, x, y), wrt=(0, 1)), w, x, y)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])
