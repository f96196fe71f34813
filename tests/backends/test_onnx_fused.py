"""Fused nodes in ONNX: local functions (the default) or inlined bodies, import back, onnxruntime.

Fused graphs are built by hand (a fused node over a traced body, or `_fuse_runs` below,
which groups consecutive elementwise nodes of one shape), so these tests do not depend on
the fusion pass. Every export passes onnx's full check, runs in onnxruntime and agrees with
the numpy backend (which runs fused bodies with the reference kernels).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import tapeir as tp
from support import ONNXRUNTIME, assert_tree_close, leaves, randn, rng
from tapeir.ir import TensorType
from tapeir.ir.builder import Builder
from tapeir.ir.graph import Node
from tapeir.ir.pytree import LEAF, TreeDef
from tapeir.ir.registry import OPS, Category

import onnxruntime as ort  # a runtime dependency: never skipped
MODES = ("function", "inline")
WHY = "onnxruntime's vectorized exp/tanh/log against numpy's"


def _t(dtype, *shape):
    return TensorType(dtype, tuple(shape))


def _fused(name, operand_types, body_fn, body_specs, n_out):
    """A graph of one fused node over inputs of `operand_types`, its body traced from body_fn."""
    body = tp.trace(body_fn, *body_specs)
    b = Builder()
    xs = [b.input(t, f"x{k}") for k, t in enumerate(operand_types)]
    outs = b.emit("fused", xs, {"body": body})
    assert len(outs) == n_out
    tree = LEAF if n_out == 1 else TreeDef("tuple", tuple(LEAF for _ in outs))
    return b.build(name, xs, outs, out_tree=tree)


def _fuse_runs(g):
    """g with each run of >= 2 consecutive elementwise nodes producing one shape as one fused
    node (a run of consecutive nodes is always a valid group: nothing outside it lies between
    its nodes). Operands from outside the run, constants included, become body inputs."""
    runs, run = [], []
    for n in g.nodes:
        shape_ok = run and n.outputs[0].type.shape == run[0].outputs[0].type.shape
        if OPS[n.op].category is Category.ELEMENTWISE and (not run or shape_ok):
            run.append(n)
            continue
        runs.append(run)
        run = [n] if OPS[n.op].category is Category.ELEMENTWISE else []
        if not run:
            runs.append([n])
    runs.append(run)
    used_later: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            used_later[id(v)] = i
    for v in g.outputs:
        used_later[id(v)] = len(g.nodes)
    nodes, position = [], {id(n): i for i, n in enumerate(g.nodes)}
    for run in filter(None, runs):
        if len(run) < 2 or OPS[run[0].op].category is not Category.ELEMENTWISE:
            nodes += run
            continue
        made = {id(o) for n in run for o in n.outputs}
        operands = list({id(v): v for n in run for v in n.inputs if id(v) not in made}.values())
        last = position[id(run[-1])]
        results = [o for n in run for o in n.outputs if used_later.get(id(o), -1) > last]
        b = Builder()
        env = {id(v): b.input(v.type, f"x{k}") for k, v in enumerate(operands)}
        for n in run:
            env.update(zip(map(id, n.outputs), b.emit(n.op, [env[id(v)] for v in n.inputs], n.attrs)))
        body = b.build(f"group{len(nodes)}", [env[id(v)] for v in operands], [env[id(o)] for o in results],
                       out_tree=TreeDef("tuple", tuple(LEAF for _ in results)))
        nodes.append(Node("fused", operands, {"body": body}, results, run[0].source))
    fused = g.replace(nodes=nodes)
    tp.verify(fused)
    return fused


def _check(g, args, *, opset=None, ulps=ONNXRUNTIME):
    """Both exports pass the full check, run in onnxruntime, agree with numpy; returns the models."""
    want, flat = leaves(tp.run(g, *args)), leaves(list(args))
    models = {}
    for mode in MODES:
        m = tp.to_onnx(g, opset, fused=mode)
        onnx.checker.check_model(m, full_check=True)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {v.name: a for v, a in zip(g.inputs, flat)})
        assert_tree_close(got, want, ulps=ulps, why=WHY)
        models[mode] = m
    ops = {mode: [n.op_type for n in m.graph.node] for mode, m in models.items()}
    calls = [o for o in ops["function"] if o.startswith("fused_")]
    assert len(calls) == sum(n.op == "fused" for n in g.nodes)
    assert not any(o.startswith("fused_") for o in ops["inline"])
    return models


def test_several_outputs_broadcasting_and_symbolic_dims():
    g = _fused("f", [_t("f32", "B", 3), _t("f32", 3)],
               lambda a, b: (tp.tanh(a + b), tp.exp(a + b) * 2.0, tp.softplus(a) - b),
               [tp.Spec(("N", 3)), tp.Spec((3,))], 3)
    for batch in (1, 5):
        models = _check(g, [randn((batch, 3), "float32", "fx", batch), randn((3,), "float32", "fw")])
    m = models["function"]
    fn = {f.name: f for f in m.functions}
    assert sorted(fn) == ["fused_0", "softplus"]  # softplus, called inside the body, defined once
    assert list(fn["fused_0"].input) == ["a", "b"] and len(fn["fused_0"].output) == 3
    assert {(o.domain, o.version) for o in fn["fused_0"].opset_import} == {("", 20), ("tapeir", 1)}
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "B"
    assert "graph lambda(a: f32[N,3], b: f32[3])" in fn["fused_0"].doc_string  # the body's text form
    # the body's constant 2.0 is a Constant node inside the function, not an initializer
    assert [n.op_type for n in fn["fused_0"].node].count("Constant") == 1 and not m.graph.initializer


def test_bool_int_cast_where_clip_bodies():
    def body(a, k):
        pos = a > 0.0
        flip = tp.where(pos, a, -a)                    # float where
        both = tp.where(pos, a < 1.0, a > -1.0)        # bool where (Or/And in ONNX)
        ints = a.astype("int64") + k
        return pos, flip, both, tp.relu(ints - 1), tp.clip(a, -1.0, 2.0), tp.clip(k, 0.5, 2.5), ints != k
    g = _fused("g", [_t("f32", "B", 4), _t("i64", "B", 4)], body, [tp.Spec(("N", 4)), tp.Spec(("N", 4), "int64")], 7)
    gen = rng("fused-int")
    args = [(gen.standard_normal((3, 4)) * 2).astype(np.float32), gen.integers(-3, 4, (3, 4))]
    _check(g, args)
    _check(g, args, opset=15)  # the oldest opset export supports: same bodies, older operators


def test_gelu_below_opset_20_and_float64():
    # below opset 20 gelu is a local function too: a function calling a function
    g = _fused("h", [_t("f32", "B")], lambda a: (tp.gelu(a, approximate="tanh") * 3.0, tp.sigmoid(a)),
               [tp.Spec(("N",))], 2)
    models = _check(g, [randn((6,), "float32", "gelu")], opset=18)
    assert sorted(f.name for f in models["function"].functions) == ["fused_0", "gelu_tanh"]
    # float64 bodies: their constants are float64 Constant nodes
    g = _fused("d", [_t("f64", "B"), _t("f64")], lambda a, s: (tp.softplus(a * s) - 0.1, tp.sigmoid(a)),
               [tp.Spec(("N",), "float64"), tp.Spec((), "float64")], 2)
    _check(g, [randn((6,), "float64", "f64"), np.float64(1.5)])


def test_equal_bodies_share_one_function_and_bytes_are_stable():
    body = tp.trace(lambda a: tp.tanh(a) * 0.5 + a, tp.Spec(("N",)))
    other = tp.trace(lambda a: tp.tanh(a) * 0.25 + a, tp.Spec(("N",)))  # another constant: another body
    b = Builder()
    x = b.input(_t("f32", "B"), "x")
    y, = b.emit("fused", [x], {"body": body})
    z, = b.emit("fused", [y], {"body": body})
    w, = b.emit("fused", [z], {"body": other})
    g = b.build("chain", [x], [w])
    models = _check(g, [randn((7,), "float32", "chain")])
    m = models["function"]
    assert [n.op_type for n in m.graph.node] == ["fused_0", "fused_0", "fused_1"]
    assert [f.name for f in m.functions] == ["fused_0", "fused_1"]
    for mode in MODES:
        assert tp.to_onnx(g, fused=mode).SerializeToString() == models[mode].SerializeToString()


def test_large_body_constant_is_an_input_stored_once():
    table = np.linspace(-1, 1, 100, dtype=np.float32)
    body = tp.trace(lambda a: a * table + 1.0, tp.Spec(("N", 100)))
    b = Builder()
    x = b.input(_t("f32", "B", 100), "x")
    y, = b.emit("fused", [x], {"body": body})
    z, = b.emit("fused", [y], {"body": body})
    g = b.build("big", [x], [z])
    models = _check(g, [randn((2, 100), "float32", "big")])
    m = models["function"]
    assert [t.name for t in m.graph.initializer] == ["%fused_0.c0"]  # 100 floats, once
    # inlined, the two bodies share one initializer too, named by a hash of its bytes (not its 100 values)
    assert [len(t.name) < 64 for t in models["inline"].graph.initializer if t.dims] == [True]
    fn, = m.functions
    assert list(fn.input) == ["a", "%c0"] and [n.op_type for n in fn.node].count("Constant") == 1  # the 1.0


def test_a_body_returning_one_value_twice():
    bb = Builder()
    a = bb.input(_t("f32", "N"), "a")
    e, = bb.emit("exp", [a])
    body = bb.build("dup", [a], [e, e], out_tree=TreeDef("tuple", (LEAF, LEAF)))
    b = Builder()
    x = b.input(_t("f32", "B"), "x")
    outs = b.emit("fused", [x], {"body": body})
    _check(b.build("f", [x], outs, out_tree=TreeDef("tuple", (LEAF, LEAF))), [randn((3,), "float32", "dup")])


def test_value_and_grad_graph_with_fused_nodes():
    def loss(p, x):
        h = tp.tanh(x * p["w"] + p["b"])
        return (tp.softplus(h * tp.sigmoid(h)) * 0.5 + h * h).mean()
    p = {"w": randn((4,), "float32", "vg-w"), "b": randn((4,), "float32", "vg-b")}
    x = randn((3, 4), "float32", "vg-x")
    vg = tp.value_and_grad(tp.trace(loss, p, tp.Spec(("B", 4))))
    g = _fuse_runs(vg)
    assert sum(n.op == "fused" for n in g.nodes) >= 2
    _check(g, [p, x])
    assert_tree_close(tp.run(g, p, x), tp.run(vg, p, x))  # the hand fusion kept the meaning


@pytest.mark.parametrize("mode", MODES)
def test_import_back(mode, tmp_path):
    g = _fused("f", [_t("f32", "B", 3), _t("f32", 3)],
               lambda a, b: (tp.softplus(a * b), tp.where(a > b, a, b)), [tp.Spec(("N", 3)), tp.Spec((3,))], 2)
    tp.save_onnx(g, tmp_path / "f.onnx", fused=mode)  # save_onnx passes fused= through
    back = tp.from_onnx(tmp_path / "f.onnx")
    assert ("fused_0" in [f.name for f in onnx.load(tmp_path / "f.onnx").functions]) == (mode == "function")
    ops = [n.op for n in back.nodes]
    assert "fused" not in ops and "softplus" in ops  # bodies come back inlined, softplus as its op
    args = [randn((4, 3), "float32", "back-x"), randn((3,), "float32", "back-w")]
    assert_tree_close(tp.run(back, *args), tp.run(g, *args))


def test_onnxruntime_backend_runs_both_forms():
    g = _fused("f", [_t("f32", "B", 3)], lambda a: (tp.exp(-a * a), tp.tanh(a) + 1.0), [tp.Spec(("N", 3))], 2)
    x = randn((5, 3), "float32", "ort")
    want = tp.run(g, x)
    for mode in (None, *MODES):
        f = tp.compile(g, backend="onnxruntime", **({} if mode is None else {"fused": mode}))
        assert_tree_close(f(x), want, ulps=ONNXRUNTIME, why=WHY)


def test_bad_fused_option():
    g = tp.trace(lambda x: x + 1.0, tp.Spec((2,)))
    with pytest.raises(tp.TapeirError, match=r"fused='boxes' is not one of \['function', 'inline'\]"):
        tp.to_onnx(g, fused="boxes")


def test_onnxruntime_runs_the_same_graph_for_both_forms(tmp_path):
    """onnxruntime inlines local functions when it loads a model, so the function form costs
    nothing at run time: the graphs it optimizes and runs are the same node for node (why
    the backend may default to functions; bench/bench_onnx_fused.py times it)."""
    g = _fused("chain", [_t("f32", 8, 16)], lambda x: tp.softplus(tp.tanh(x) * tp.sigmoid(x) + tp.exp(-x * x)) * 0.5 + x,
               [tp.Spec(("N", "M"))], 1)
    seen = {}
    for mode in MODES:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{mode}.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(tp.to_onnx(g, fused=mode).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        seen[mode] = [(n.domain, n.op_type, list(n.input), list(n.output))
                      for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert [op for _, op, _, _ in seen["function"]] == [op for _, op, _, _ in seen["inline"]]
    assert not any(d == "tapeir" for d, *_ in seen["function"])  # every call was inlined
