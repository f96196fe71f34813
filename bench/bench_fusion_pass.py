"""The fusion pass itself: `tp.fuse` in µs per node at 1k, 10k and 100k nodes.

    python bench/bench_fusion_pass.py           # N = 1k, 10k, 100k
    python bench/bench_fusion_pass.py --quick   # N = 1k, 10k, fewer repeats
    python bench/bench_fusion_pass.py --profile # also cProfile one fuse of the largest N

The graph is `value_and_grad` of a chain of blocks, each a matmul, an elementwise chain
(tanh, scalar mul, add, sigmoid, mul, neg, exp, sub) and a row sum, on f32[4,4]: forward
and backward chains, values reused by the backward pass, reductions and contractions
between groups, so every rule of passes/fusion.py is exercised. Each size is traced once;
the repeats time `fuse` alone on it (the pass never mutates its input), interleaved across
sizes, best of the repeats. `tp.optimize` (canonicalize, dce, fuse, without the verifier)
is timed the same way. The last column is a floor: a bare loop that reads every node's
operands once, in ns/node (it grows with N by itself: cache misses on a large graph).

No peer has a separate, timeable fusion pass (XLA fuses inside jax.jit's whole compile),
so this script times tapeir alone. Target: linear, i.e. fuse's µs/node at 100k <= 1.5x
its µs/node at 1k (PASS/MISS).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time

import harness
import tapeir as tp
from tapeir.passes import PassManager, canonicalize, dce, fuse

TARGET = 1.5


def chain_graph(nodes: int):
    """value_and_grad of enough blocks to make about `nodes` nodes."""
    def f(blocks):
        def fn(x, w):
            acc = x
            for _ in range(blocks):
                h = tp.tanh(acc @ w) * 0.5 + acc
                acc = tp.sigmoid(h) * h - tp.exp(-h) + h.sum(axis=1, keepdims=True)
            return acc.sum()
        return tp.value_and_grad(tp.trace(fn, tp.Spec((4, 4)), tp.Spec((4, 4))), wrt=(0, 1))
    per_block = len(f(2).nodes) - len(f(1).nodes)
    return f(max(1, nodes // per_block))


def bare_loop(g):
    seen = 0
    for n in reversed(g.nodes):
        for v in n.inputs:
            seen += v is not None
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    repeats = 3 if args.quick else 5
    print(f"# tp.fuse: µs per node ({harness.load_note()})", file=sys.stderr)
    graphs = {n: chain_graph(n) for n in sizes}
    optimize = PassManager([canonicalize, dce, fuse], verify=False)  # tp.optimize minus the verifier
    gc.collect()
    gc.freeze()  # the traced graphs stay: the collector would rescan them on every pass
    best = {n: {"fuse": float("inf"), "optimize": float("inf"), "floor": float("inf")} for n in sizes}
    info = {}
    for _ in range(repeats):
        for n, g in graphs.items():
            for name, fn in (("fuse", fuse), ("optimize", optimize), ("floor", bare_loop)):
                t0 = time.perf_counter()
                out = fn(g)
                best[n][name] = min(best[n][name], (time.perf_counter() - t0) / len(g.nodes))
                if name == "fuse":
                    info[n] = (len(g.nodes), len(out.nodes), sum(m.op == "fused" for m in out.nodes))
    base = best[sizes[0]]["fuse"]
    print("| nodes | nodes after fuse | fused nodes | fuse µs/node | optimize µs/node | floor ns/node | "
          f"fuse vs {sizes[0] // 1000}k |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for n in sizes:
        total, after, groups = info[n]
        r = best[n]["fuse"] / base
        worst = max(worst, r)
        print(f"| {total} | {after} | {groups} | {best[n]['fuse'] * 1e6:.2f} | {best[n]['optimize'] * 1e6:.2f} | "
              f"{best[n]['floor'] * 1e9:.0f} | {r:.2f}x |")
    print(f"\nlinearity: largest per-node cost {worst:.2f}x the {sizes[0] // 1000}k one, target <= {TARGET}x: "
          f"{harness.verdict(worst, TARGET)}")
    if args.profile:
        g = graphs[sizes[-1]]
        pr = cProfile.Profile()
        pr.enable()
        fuse(g)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
