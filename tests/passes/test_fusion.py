"""The fusion pass (passes/fusion.py): each boundary rule, node-count deltas on known patterns,
agreement with the unfused graph on both backends, determinism, linear work, and the
pipeline around it (tp.optimize, tp.compile's default, differentiating fused graphs)."""
import sys

import numpy as np
import pytest

import tapeir as tp
from fusion_check import check_fused_agrees, draw_inputs
from support import assert_close, leaves
from tapeir.passes import fuse, optimize, simplify, unfuse
from tapeir.passes.fusion import MAX_NODES

X = tp.Spec(("B", 8))


def _ops(g):
    return [n.op for n in g.nodes]


def _fused(g):
    return [n for n in g.nodes if n.op == "fused"]


def _bodies(g):
    return [[m.op for m in n.attrs["body"].nodes] for n in _fused(g)]


# ---- known patterns: node-count deltas -------------------------------------------------------

def _grad_graph(fn):
    return simplify(tp.grad(tp.trace(lambda x, y: (fn(x) * y).sum(), X, X)))


@pytest.mark.parametrize("fn,body", [
    (tp.tanh, ["tanh", "mul", "mul", "sub", "mul"]),       # g * (1 - y*y), the seed times y first
    (tp.sigmoid, ["sigmoid", "mul", "mul", "sub", "mul"]),  # g * y * (1 - y)
])
def test_activation_backward_is_one_fused_node(fn, body):
    g = _grad_graph(fn)
    f = check_fused_agrees(g)
    # 6 nodes -> 2: the seed's broadcast_to (a shape op, rule 1) and one fused node
    assert (len(g.nodes), len(f.nodes)) == (6, 2)
    assert _ops(f) == ["broadcast_to", "fused"]
    assert sorted(_bodies(f)[0]) == sorted(body)


def _adam(p, g, m, v):
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    return p - 1e-3 * m / (tp.sqrt(v) + 1e-8), m, v


def test_adam_update_is_one_fused_node_with_three_outputs():
    g = tp.trace(_adam, X, X, X, X)
    f = check_fused_agrees(g)
    assert (len(g.nodes), len(f.nodes)) == (12, 1)
    assert len(f.nodes[0].outputs) == 3 and f.outputs == g.outputs  # the outer values are kept
    body = f.nodes[0].attrs["body"]
    assert [v.name for v in body.inputs] == ["m", "g", "v", "p"]   # rule: named after graph inputs
    assert len(body.constants) == 5                                # small constants inside (rule 6)


def _gelu(x):
    return 0.5 * x * (1.0 + tp.tanh(0.7978845608 * (x + 0.044715 * x ** 3.0)))


def test_gelu_composite_forward_and_value_and_grad():
    g = tp.trace(_gelu, X)
    f = check_fused_agrees(g)
    assert (len(g.nodes), len(f.nodes)) == (8, 1)
    vg = simplify(tp.value_and_grad(tp.trace(lambda x: _gelu(x).sum(), X)))
    fv = check_fused_agrees(vg)
    # 23 nodes -> 3: the seed's broadcast_to, one fused node (forward and backward, four
    # outputs: the summed forward value and the gradient), the sum
    assert (len(vg.nodes), len(fv.nodes)) == (23, 3)
    assert sorted(_ops(fv)) == ["broadcast_to", "fused", "sum"]


# ---- boundary rules ---------------------------------------------------------------------------

def test_reductions_contractions_and_shape_ops_end_groups():
    def f(x, w):
        a = tp.exp(x) * 2.0                    # group 1
        s = a.sum(axis=1, keepdims=True)       # a reduction: ends it
        b = tp.tanh(a / s) - 1.0               # group 2 (a / s broadcasts s: an input)
        c = (b @ w) * 3.0                      # a contraction; a single mul stays plain
        return tp.transpose(b, (1, 0)) + 1.0, c
    g = tp.trace(f, X, tp.Spec((8, 4)))
    fz = check_fused_agrees(g)
    assert _ops(fz) == ["fused", "sum", "fused", "matmul", "mul", "transpose", "add"]
    assert _bodies(fz) == [["exp", "mul"], ["div", "tanh", "sub"]]


def test_only_the_domain_shape_joins():
    # the scalar chain (s * 2 + 1) has another shape than x's: it stays outside, an input
    g = tp.trace(lambda x, s: tp.exp(x) * (s * 2.0 + 1.0) + x, X, tp.Spec(()))
    fz = check_fused_agrees(g)
    assert _ops(fz) == ["fused", "fused"] or _ops(fz) == ["mul", "add", "fused"]
    body = next(n.attrs["body"] for n in _fused(fz) if n.outputs[0].type.shape == ("B", 8))
    assert [m.op for m in body.nodes] == ["exp", "mul", "add"]
    assert all(m.outputs[0].type.shape == ("B", 8) for m in body.nodes)


def test_values_used_outside_become_outputs():
    def f(x):
        y = tp.tanh(x)
        z = y * y + 1.0
        return y.sum(), z                       # y read by a reduction, z a graph output
    fz = check_fused_agrees(tp.trace(f, X))
    node = _fused(fz)[0]
    assert len(node.outputs) == 2 and node.attrs["body"].out_tree.kind == "tuple"


def test_size_limit_and_singletons():
    def chain(x):
        for _ in range(10):
            x = tp.tanh(x)
        return x
    g = tp.trace(chain, X)
    assert [len(n.attrs["body"].nodes) for n in _fused(fuse(g, max_nodes=4))] == [4, 4, 2]
    assert _ops(fuse(g)) == ["fused"] and MAX_NODES >= 10
    one = tp.trace(lambda x: tp.exp(x).sum(), X)   # a group of one node stays the plain node
    assert fuse(one) is one


def test_large_constants_stay_outside_small_ones_go_inside():
    big = np.linspace(-1, 1, 17 * 8, dtype=np.float32).reshape(17, 8)
    small = np.arange(8, dtype=np.float32)
    g = tp.trace(lambda x: tp.exp(x * big) + small, tp.Spec((17, 8)))
    fz = check_fused_agrees(g)
    node, = _fused(fz)
    body = node.attrs["body"]
    assert [c.type.shape for c in body.constants] == [(8,)]
    assert [c.type.shape for c in fz.constants] == [(17, 8)] and node.inputs[1] is fz.constants[0]
    assert [v.name for v in body.inputs] == ["x", "x0"]


def test_no_cycle_through_a_reduction():
    # a = exp(x) feeds sum, whose result comes back into b: a and b must not share a group
    def f(x):
        a = tp.exp(x)
        b = a * a.sum()
        return tp.tanh(b) + a
    g = tp.trace(f, X)
    fz = check_fused_agrees(g)
    tp.verify(fz)
    assert _ops(fz).count("sum") == 1
    position = {id(o): k for k, n in enumerate(fz.nodes) for o in n.outputs}
    for k, n in enumerate(fz.nodes):  # topological order: every operand is made earlier
        assert all(position.get(id(v), -1) < k for v in n.inputs)


def test_an_outside_reader_before_the_group_ends_is_moved_after_it():
    # the seed's consumer order in a gradient graph: sum reads the forward value of a group
    # whose last (backward) member comes later; the fused node is emitted first
    vg = simplify(tp.value_and_grad(tp.trace(lambda x: (tp.sigmoid(x) * tp.tanh(x)).sum(), X)))
    fz = check_fused_agrees(vg)
    assert _ops(fz).index("fused") < _ops(fz).index("sum")


def test_where_cast_clip_and_comparisons_fuse():
    def f(x):
        m = x > 1.0
        y = tp.where(m, tp.clip(x, 0.5, 1.2), -x)
        return (m.astype("float32") + y) * 2.0
    fz = check_fused_agrees(tp.trace(f, X))
    assert _ops(fz) == ["fused"]
    assert sorted(_bodies(fz)[0]) == sorted(["greater", "clip", "neg", "where", "cast", "add", "mul"])


def test_sources_and_names():
    g = tp.trace(lambda x, y: tp.exp(x @ y) * 2.0 + x.sum(), tp.Spec((4, 4)), tp.Spec((4, 4)))
    fz = fuse(g)
    node, = _fused(fz)
    body = node.attrs["body"]
    assert body.name == "fused_0" and [v.name for v in body.inputs] == ["x0", "x1"]
    members = [n for n in g.nodes if n.op in ("exp", "mul", "add")]
    assert [m.source for m in body.nodes] == [m.source for m in members]
    assert node.source == members[0].source and node.source is not None
    assert "graph fused_0(x0: f32[4,4], x1: f32[]) {" in str(fz)


# ---- invariants ---------------------------------------------------------------------------

def _mlp_step():
    def loss(p, x):
        h = tp.tanh(x @ p["w1"] + p["b1"])
        y = tp.sigmoid(h @ p["w2"]) * tp.softplus(h @ p["w2"])
        return ((y - 0.5) ** 2.0).mean()
    p = {"w1": tp.Spec((8, 16)), "b1": tp.Spec((16,)), "w2": tp.Spec((16, 4))}
    return tp.value_and_grad(tp.trace(loss, p, X))


def test_deterministic_and_round_trips():
    vg = _mlp_step()
    a, b = fuse(vg), fuse(vg)
    assert str(a) == str(b) and a == b
    assert str(fuse(tp.parse(str(vg)))) == str(a)
    assert tp.parse(str(a)) == a
    tp.verify(a)
    assert unfuse(a) is not a and not _fused(unfuse(a))
    check_fused_agrees(vg, fused=a)


def _chain_graph(blocks):
    """`blocks` repetitions of a matmul, an elementwise chain and a reduction (10 nodes)."""
    def f(x, w):
        acc = x
        for _ in range(blocks):
            h = tp.tanh(acc @ w) * 0.5 + acc
            acc = tp.sigmoid(h) * h - tp.exp(-h) + h.sum(axis=1, keepdims=True)
        return acc
    return tp.trace(f, tp.Spec((4, 4)), tp.Spec((4, 4)))


def _lines_executed(fn, *args):
    """Lines of Python executed by fn(*args): a count of the work done, not a time."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return count


def test_work_is_linear_in_graph_size():
    small, large = _chain_graph(20), _chain_graph(80)
    assert len(large.nodes) == 4 * len(small.nodes)
    a, b = _lines_executed(fuse, small), _lines_executed(fuse, large)
    assert b <= 4.2 * a, f"fuse executed {a} lines for {len(small.nodes)} nodes, {b} for {len(large.nodes)}"


def test_fuse_of_a_fused_graph_keeps_its_fused_nodes():
    f = fuse(_chain_graph(3))
    ff = fuse(f)
    assert len(_fused(ff)) == len(_fused(f))
    check_fused_agrees(f, fused=ff, backends=("numpy",))


# ---- the pipeline and the API around it -------------------------------------------------------

def test_optimize_runs_simplify_then_fuse_and_dumps_each_pass():
    g = tp.trace(lambda x: tp.tanh(-(-x) * 1.0) * 2.0 + tp.transpose(tp.transpose(x, (1, 0)), (1, 0)), X)
    seen = []
    o = optimize(g, dump=lambda name, h: seen.append((name, _ops(h))))
    # canonicalize forwards past -(-x), * 1.0 and the transposes; dce drops what died
    assert seen == [("canonicalize", ["neg", "tanh", "mul", "transpose", "add"]), ("dce", ["tanh", "mul", "add"]),
                    ("fuse", ["fused"])]
    assert o == tp.optimize(g)
    check_fused_agrees(g, fused=o)


def test_compile_optimizes_by_default():
    vg = _mlp_step()
    args = draw_inputs(vg, 1, size=3)
    for backend in ("numpy", "onnxruntime"):
        f, plain = tp.compile(vg, backend), tp.compile(vg, backend, optimize=False)
        assert _fused(f.graph) and not _fused(plain.graph)
        for a, b in zip(leaves(f(*args)), leaves(plain(*args))):
            assert_close(a, b)


def test_grad_value_and_grad_and_call_accept_fused_graphs():
    g = tp.trace(lambda x, w: (tp.tanh(x @ w) * tp.sigmoid(x @ w)).sum(), X, tp.Spec((8, 3)))
    fz = tp.optimize(g)
    assert _fused(fz)
    args = draw_inputs(g, 2)
    want_v, want_g = tp.run(tp.value_and_grad(g, wrt=(0, 1)), *args, optimize=False)
    got_v, got_g = tp.run(tp.value_and_grad(fz, wrt=(0, 1)), *args, optimize=False)
    assert_close(got_v, want_v)
    for a, b in zip(got_g, want_g):
        assert_close(a, b)
    assert_close(tp.run(tp.grad(fz, wrt=1), *args), want_g[1])
    # tp.call inlines the fused graph at concrete sizes inside another trace
    outer = tp.trace(lambda x, w: tp.call(fz, x, w) * 2.0, *args)
    assert any(n.op == "fused" and n.inputs[0].type.shape == (2, 3) for n in outer.nodes)
    assert_close(tp.run(outer, *args), 2.0 * want_v)


def test_cli_dump_passes(tmp_path, capsys):
    from tapeir.cli import main

    path = tmp_path / "g.tapeir"
    tp.save(tp.trace(lambda x: tp.tanh(-(-x)) * 2.0, X), path)
    assert main(["dump", str(path), "--passes"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("# ")]
    assert heads == ["# input", "# after canonicalize", "# after dce", "# after fuse"]
    assert "graph fused_0(x: f32[B,8]) {" in out


def test_a_group_of_constants_only_stays_plain():
    # unsimplified: exp(exp(c) * c) reads only a small constant (rule 8); the matmul ends it
    c = np.array([[1.0, 2.0], [0.5, 0.25]], np.float32)
    g = tp.trace(lambda x: x @ tp.exp(tp.exp(c) * c), tp.Spec((2, 2)))
    fz = check_fused_agrees(g)
    assert _ops(fz) == ["exp", "mul", "exp", "matmul"]


def test_readme_fusion_dump_is_what_optimize_prints(tmp_path, monkeypatch, capsys):
    import os
    import runpy

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Fusion"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = section.split("```\n", 2)[2].split("```", 1)[0]  # the block after the code's
    (tmp_path / "ex.py").write_text("import tapeir as tp\n\n" + code)  # `def step` on line 3, as in the dump
    monkeypatch.chdir(tmp_path)
    runpy.run_path("ex.py")
    assert capsys.readouterr().out == shown + "\n"  # print adds a newline to the text's own


def test_fuse_of_a_function_is_a_clear_error():
    with pytest.raises(tp.TapeirError, match=r"tp.fuse expects a Graph, got a function"):
        tp.fuse(lambda x: x)
    with pytest.raises(tp.TapeirError, match=r"tp.optimize expects a Graph"):
        tp.optimize(3)


def _random_dag(seed, n_ops=30):
    """A random program over f32[4,3] values: elementwise ops (fan-out, diamonds), row sums
    that broadcast back, matmuls and transposes between them: the shapes of graph where a
    careless fusion closes a cycle."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 3)).astype(np.float32)

    def fn(x, y):
        vals = [x, y]
        for _ in range(n_ops):
            a, b = (vals[int(i)] for i in rng.integers(max(0, len(vals) - 8), len(vals), 2))
            kind = int(rng.integers(9))
            if kind == 0:
                v = tp.tanh(a)
            elif kind == 1:
                v = a * b
            elif kind == 2:
                v = a - b * 0.5
            elif kind == 3:
                v = tp.where(a > b, a, -b)
            elif kind == 4:
                v = a + a.sum(axis=1, keepdims=True) * 0.1   # a reduction read back
            elif kind == 5:
                v = tp.tanh(a @ w)                            # a contraction
            elif kind == 6:
                v = a.T.T + b                                 # shape ops
            elif kind == 7:
                v = tp.sigmoid(b) * a.sum() * 0.01          # a scalar from another path
            else:
                v = tp.clip(a + b, -2.0, 2.0)
            vals.append(v)
        return sum(v.sum() for v in vals[2:] if rng.random() < 0.3) + vals[-1].sum()
    return tp.trace(fn, tp.Spec((4, 3)), tp.Spec((4, 3)))


@pytest.mark.parametrize("seed", range(24))
def test_random_dags_fuse_without_cycles(seed):
    g = _random_dag(seed)
    for max_nodes in (3, MAX_NODES):
        f = fuse(g, max_nodes=max_nodes)
        tp.verify(f)  # topological order, one shape per body, every operand defined before use
        assert all(len(n.attrs["body"].nodes) <= max_nodes for n in _fused(f))
        check_fused_agrees(g, fused=f, backends=("numpy",))
    vg = tp.value_and_grad(g, wrt=(0, 1))
    check_fused_agrees(vg, backends=("numpy",) if seed % 4 else ("numpy", "onnxruntime"))
