"""Fused nodes in onnxruntime: exported as local functions vs inlined (vs the unfused graph).

    python bench/bench_onnx_fused.py            # 5 rounds x 5 repeats
    python bench/bench_onnx_fused.py --quick    # 2 rounds x 3 repeats

The issue's chain `softplus(tanh(x)*sigmoid(x) + exp(-x*x))*0.5 + x` on f32[4096, 4096],
one fused node holding the whole chain, run by `tp.compile(g, backend="onnxruntime",
fused=...)`:
  - function: the node is one call of `tapeir.fused_0` (to_onnx's default);
  - inline:   the body's nodes are written into the graph;
  - unfused:  the same chain traced plainly (no fused node), for reference.
onnxruntime inlines local functions when it loads a model, so function and inline should
run the same kernels; this checks it (the optimized graphs onnxruntime runs are compared
node for node) and measures it, and the backend's default (`FUSED_DEFAULT` in
backends/onnxruntime_backend.py) follows the result. Each contender runs in its own
process (bench/harness.py). Target: function / inline <= 1.05 (the function form costs
nothing at run time), which justifies exporting functions by default.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile

import numpy as np

import harness
import tapeir as tp
from tapeir.ir import TensorType
from tapeir.ir.builder import Builder

N = 4096


def chain(x):
    return tp.softplus(tp.tanh(x) * tp.sigmoid(x) + tp.exp(-x * x)) * 0.5 + x


def fused_graph(rows=N):
    body = tp.trace(chain, tp.Spec(("N", "M")))
    b = Builder()
    x = b.input(TensorType("f32", (rows, N)), "x")
    y, = b.emit("fused", [x], {"body": body})
    return b.build("chain", [x], [y])


def data():
    return np.random.default_rng(0).standard_normal((N, N)).astype(np.float32)


def optimized_ops(mode, rows=64):
    """The node sequence onnxruntime runs for the `mode` export, after inlining and optimizing."""
    import onnx
    import onnxruntime as ort

    from tapeir.backends.onnx_export import to_onnx

    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(d, "opt.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(to_onnx(fused_graph(rows), fused=mode).SerializeToString(), opts,
                             providers=["CPUExecutionProvider"])
        return [(n.domain, n.op_type) for n in onnx.load(opts.optimized_model_filepath).graph.node]


def _setup(graph, **options):
    def setup():
        f, x = tp.compile(graph(), backend="onnxruntime", **options), data()
        return lambda: f(x)
    return setup


CONTENDERS = {
    "function": _setup(fused_graph, fused="function"),
    "inline": _setup(fused_graph, fused="inline"),
    "unfused": _setup(lambda: tp.trace(chain, tp.Spec((N, N)))),
}


def main():
    child = harness.child_args()
    if child:
        return harness.run_child(CONTENDERS, child[0])
    args = harness.parent_args(__doc__)
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime not installed: nothing to compare; target skipped")
        return 0
    rounds, repeats = (2, 3) if args.quick else (5, 5)
    print(f"tapeir {tp.__version__}, onnxruntime {onnxruntime.__version__}; chain on f32[{N},{N}]; "
          f"each contender in its own process, {rounds} rounds x {repeats} repeats")
    print(harness.load_note() + "\n")
    x = data()[:64]  # correctness, untimed: both exports agree with the unfused graph
    want = tp.compile(tp.trace(chain, tp.Spec((64, N))), backend="onnxruntime")(x)
    for mode in ("function", "inline"):
        np.testing.assert_allclose(tp.compile(fused_graph(64), backend="onnxruntime", fused=mode)(x), want,
                                   rtol=1e-6, atol=1e-6)
    same = optimized_ops("function") == optimized_ops("inline")
    print(f"onnxruntime's optimized graphs of the two forms: {'the same' if same else 'DIFFERENT'} node sequence\n")
    t = harness.isolated(__file__, {k: (repeats, 1) for k in CONTENDERS}, rounds)
    best = {k: min(v) for k, v in t.items()}
    med = {k: statistics.median(v) for k, v in t.items()}
    print("| form | best ms | median ms | / inline (best) | / inline (median) |")
    print("|---|---:|---:|---:|---:|")
    for k in CONTENDERS:
        print(f"| {k} | {best[k] * 1e3:.1f} | {med[k] * 1e3:.1f} | {best[k] / best['inline']:.3f} "
              f"| {med[k] / med['inline']:.3f} |")
    ratio = best["function"] / best["inline"]
    print(f"\nfunction / inline = {ratio:.3f} (target <= 1.05): {harness.verdict(ratio, 1.05)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
