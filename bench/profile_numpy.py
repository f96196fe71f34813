"""Where the numpy backend spends a call, per op and per node: a profiler, not a benchmark.

Compiles bench_models.py's forward+backward graph of the ResNet or the GPT, warms it (the
plan gets its buffers on the second call), then wraps each step of the compiled plan with a
timer and reports, per op and for the slowest nodes, the least CPU time (time.thread_time:
another process holding a core inflates it far less than wall time) over the runs. It runs
on the calling thread only (TAPEIR_THREADS=1 is set before tapeir loads) and reads private
parts of NumpyFunction (its plans' steps), so it may need updating when those change.

    python bench/profile_numpy.py resnet|gpt [--runs N] [--top K]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

os.environ.setdefault("TAPEIR_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models  # noqa: E402  (through harness: this checkout first on sys.path)

import tapeir as tp  # noqa: E402


def _timed(best, i, fn):
    def step(*a, **k):
        t0 = time.thread_time()
        r = fn(*a, **k)
        best[i] = min(best[i], time.thread_time() - t0)
        return r
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=("resnet", "gpt"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    _, _, _, vg, inputs, _, _ = bench_models._imported(args.model)
    f = tp.compile(vg, backend="numpy")
    f(*inputs)
    f(*inputs)  # the binding recurred: its plan now has buffers
    plan = next(iter(f._plans.values()))
    calls = []
    for _ in range(args.runs):
        t0 = time.thread_time()
        f(*inputs)
        calls.append(time.thread_time() - t0)
    best = [float("inf")] * len(plan.steps)
    plan.steps = [(_timed(best, i, s[0]),) + s[1:] for i, s in enumerate(plan.steps)]
    for _ in range(args.runs):
        f(*inputs)
    nodes = f.graph.nodes
    per_op = collections.defaultdict(lambda: [0.0, 0])
    for n, t in zip(nodes, best):
        per_op[n.op][0] += t
        per_op[n.op][1] += 1
    print(f"{args.model}: {len(nodes)} nodes; a call: {min(calls) * 1e3:.2f} ms CPU (best of {args.runs}); "
          f"the kernels' best times add up to {sum(best) * 1e3:.2f} ms")
    for op, (t, k) in sorted(per_op.items(), key=lambda kv: -kv[1][0]):
        print(f"  {op:18s} {t * 1e3:7.2f} ms  x{k}")
    print("slowest nodes:")
    for i in sorted(range(len(nodes)), key=lambda i: -best[i])[:args.top]:
        n = nodes[i]
        ins = ", ".join(f"{v.type.dtype}{list(v.type.shape)}" for v in n.inputs)
        attrs = {k: v for k, v in n.attrs.items() if k != "body"}
        print(f"  {best[i] * 1e3:6.3f} ms  node {i} {n.op}({ins}) {attrs or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
