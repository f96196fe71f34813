"""Tracing cost: tapeir's `tp.trace` vs `jax.make_jaxpr` on the same chain of elementwise ops.

    python bench/bench_trace.py            # N = 1k, 10k, 100k
    python bench/bench_trace.py --quick    # N = 1k, 10k, fewer repeats
    python bench/bench_trace.py --profile  # also cProfile one tapeir trace of the largest N

Both tools trace the same Python function: a loop of N steps cycling through six
elementwise ops (scalar mul, scalar add, tanh, tensor*tensor, scalar sub, exp) on an
f32[4] input. Each repeat builds a fresh closure, so neither tool can reuse a cached trace.
Repeats of the two tools are interleaved, and the best (min) of the repeats is reported:
on a noisy machine only the ratios within one run are meaningful.

Tracing is pure Python on both sides (make_jaxpr compiles and runs nothing), so no
thread pool spins and both tools stay in one process, interleaved. jax is a
benchmark-only peer, never a tapeir dependency: without it the script still prints
tapeir's numbers. Before timing, `gc.freeze()` moves the objects both imports created
out of the collector's view, so neither tool pays for scanning the other's modules; the
objects a trace creates are collected as usual (tapeir's "gc share" column is the part
of its time spent in the collector during the trace, and the "gc off" column is a
diagnostic run with the collector disabled).

A second table times the passes on the same chain with a `.sum()` appended (autodiff
needs a scalar): `tp.trace` alone and `tp.value_and_grad(g)` on the traced graph,
repeats interleaved, and, as the peer, `jax.make_jaxpr(jax.value_and_grad(f))` (trace
and differentiation in one call, so it compares with tapeir's trace + value_and_grad).
Its last column is a diagnostic: a bare loop that only reads each node's operands, last
node first, in ns/node. It grows with N by itself (cache misses on a graph built long
before), which bounds how flat any pass over an existing graph can be.

A third table (`--weights`, also run by default) times captured weights: a function that
uses one closed-over f32 array (1M elements, 4 MB) K times, unchanged. Since a constant is
the array's value at each use (issue 8, item 9), every use after the first compares the
array's bytes with the constant's snapshot; the table shows tracing with that check, with
it stubbed out (identity only, the old behaviour), and numpy running the same function
eagerly. Target: the check costs at most one eager use of the array per use.

Targets: tapeir <= 0.5 x jax's us/op; us/op at 100k within 10% of us/op at 1k and 10k;
(trace + value_and_grad) / trace <= 4 at every N; value_and_grad's us/op at 100k within
10% of its us/op at 1k and 10k.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # make_jaxpr needs no accelerator; skip the probe

import harness  # noqa: E402
import tapeir as tp  # noqa: E402

try:
    import jax  # noqa: E402
    import jax.numpy as jnp  # noqa: E402
except ImportError:
    jax = jnp = None

PERIOD = 6
TARGET_RATIO = 0.5
TARGET_LINEAR = 1.10
TARGET_PASSES = 4.0


def make_chain(n: int, tanh, exp):
    """The traced function: n elementwise steps on x, cycling through six ops."""
    def chain(x, y):
        for i in range(n):
            k = i % PERIOD
            if k == 0:
                x = x * 1.0001
            elif k == 1:
                x = x + 0.5
            elif k == 2:
                x = tanh(x)
            elif k == 3:
                x = x * y
            elif k == 4:
                x = x - 0.25
            else:
                x = exp(x)
        return x
    return chain


def trace_tapeir(n, x, y):
    g = tp.trace(make_chain(n, tp.tanh, tp.exp), x, y)
    return len(g.nodes)


def trace_jax(n, x, y):
    jx = jax.make_jaxpr(make_chain(n, jnp.tanh, jnp.exp))(x, y)
    return len(jx.jaxpr.eqns)


def make_loss(n: int, tanh, exp, total):
    chain = make_chain(n, tanh, exp)
    return lambda x, y: total(chain(x, y))


def trace_loss_tapeir(n, x, y):
    return tp.trace(make_loss(n, tp.tanh, tp.exp, lambda v: v.sum()), x, y)


def vg_jax(n, x, y):
    return jax.make_jaxpr(jax.value_and_grad(make_loss(n, jnp.tanh, jnp.exp, jnp.sum)))(x, y)


class GcClock:
    """Time spent inside the garbage collector (via gc.callbacks)."""

    def __init__(self):
        self.total = 0.0
        self._t0 = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._t0


def timed(fn, *args, gc_off=False, clock=None):
    """(seconds, result, seconds spent in gc) for one call; garbage from earlier calls is collected first."""
    gc.collect()
    if gc_off:
        gc.disable()
    if clock is not None:
        clock.total = 0.0
    try:
        t0 = time.perf_counter()
        r = fn(*args)
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    return dt, r, (clock.total if clock is not None else 0.0)


def reverse_walk(g):
    """A diagnostic floor for any pass: only read each node's operands, last node first
    (what autodiff's walk does before any work). Its ns/node grows with N on its own:
    the graph was built long before and no longer fits the caches."""
    seen = set()
    for node in reversed(g.nodes):
        seen.update(map(id, node.inputs))
    return len(seen)


def bench_passes(sizes, trace_rows, args, x, y):
    """Table 2: tp.trace alone vs tp.value_and_grad on its graph (and jax's make_jaxpr of value_and_grad)."""
    rows = []
    jax_per_op = None
    for n, tr in zip(sizes, trace_rows):
        reps = tr["reps"] if args.quick else max(tr["reps"], 5)  # tapeir's side is cheap; jax's is capped below
        run_jax = jax is not None and (jax_per_op is None or jax_per_op * n <= args.jax_budget)
        jax_reps = reps if n < 100000 else min(reps, 2)
        t_tr, t_vg, t_jx, t_walk = [], [], [], []
        for r in range(reps):
            dt, g, _ = timed(trace_loss_tapeir, n, x, y)
            t_tr.append(dt)
            dt, _, _ = timed(tp.value_and_grad, g)
            t_vg.append(dt)
            dt, _, _ = timed(reverse_walk, g)
            t_walk.append(dt)
            del g
            if run_jax and r < jax_reps:
                dt, _, _ = timed(vg_jax, n, x, y)
                t_jx.append(dt)
        row = dict(n=n, tr=min(t_tr) / n * 1e6, vg=min(t_vg) / n * 1e6, jx=min(t_jx) / n * 1e6 if t_jx else None,
                   walk=min(t_walk) / n * 1e9,
                   jax_skipped=jax is not None and not run_jax)
        if row["jx"] is not None:
            jax_per_op = row["jx"] * 1e-6
        rows.append(row)

    print()
    print("### Passes: tp.trace alone vs tp.value_and_grad (µs per op of the chain, best of repeats)")
    print()
    print(f"| N ops | trace µs/op | value_and_grad µs/op | (trace + vg) / trace (target ≤ {TARGET_PASSES:.0f}) "
          "| jax make_jaxpr(value_and_grad) µs/op | tapeir trace + vg / jax | bare reverse walk ns/node |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        both = r["tr"] + r["vg"]
        jx = fmt(r["jx"]) if r["jx"] else ("skipped (budget)" if r["jax_skipped"] else "n/a")
        print(f"| {r['n']:,} | {r['tr']:.2f} | {r['vg']:.2f} | {both / r['tr']:.2f} | {jx} "
              f"| {fmt(both / r['jx'] if r['jx'] else None)} | {r['walk']:.0f} |")
    worst = max((r["tr"] + r["vg"]) / r["tr"] for r in rows)
    verdicts = [f"passes: worst (trace + value_and_grad) / trace = {worst:.2f} (target ≤ {TARGET_PASSES:.0f}) -> "
                + ("PASS" if worst <= TARGET_PASSES else "MISS")]
    if len(rows) > 1:
        big = rows[-1]
        lins = [big["vg"] / r["vg"] for r in rows[:-1]]
        shown = ", ".join(f"{lin:.2f} vs {r['n']:,}" for lin, r in zip(lins, rows[:-1]))
        verdicts.append(f"value_and_grad linearity: µs/op at {big['n']:,} ÷ smaller N = {shown} "
                        f"(target ≤ {TARGET_LINEAR:.2f}) -> " + ("PASS" if max(lins) <= TARGET_LINEAR else "MISS"))
    return verdicts


def bench_weights(repeats=5, size=1 << 20, uses=(1, 10, 50)):
    """Captured-weight table (see the module docstring); returns the verdict line."""
    from tapeir.ir import builder

    w = np.linspace(-1, 1, size).astype(np.float32)
    x = np.ones(size, np.float32)

    def fn(k):
        def f(x):
            for _ in range(k):
                x = x * w
            return x
        return f

    print()
    print(f"### Captured weights: one f32[{size:,}] array used K times, unchanged (best of {repeats})")
    print()
    print("| K | trace ms | trace ms, identity only | check µs / reuse | numpy eager µs / use | check ÷ eager |")
    print("|---:|---:|---:|---:|---:|---:|")
    real = builder._unchanged
    worst = 0.0
    for k in uses:
        f = fn(k)
        t_chk, t_id, t_np = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tp.trace(f, tp.Spec((size,)))
            t_chk.append(time.perf_counter() - t0)
            builder._unchanged = lambda snapshot, array: True
            try:
                t0 = time.perf_counter()
                tp.trace(f, tp.Spec((size,)))
                t_id.append(time.perf_counter() - t0)
            finally:
                builder._unchanged = real
            t0 = time.perf_counter()
            f(x)
            t_np.append(time.perf_counter() - t0)
        per_reuse = (min(t_chk) - min(t_id)) / (k - 1) * 1e6 if k > 1 else None
        eager = min(t_np) / k * 1e6
        ratio = per_reuse / eager if per_reuse is not None else None
        if ratio is not None:
            worst = max(worst, ratio)
        print(f"| {k} | {min(t_chk) * 1e3:.2f} | {min(t_id) * 1e3:.2f} | {fmt(per_reuse, 1)} | {eager:.1f} "
              f"| {fmt(ratio)} |")
    return (f"captured weights: the unchanged-bytes check costs at most {worst:.2f} x an eager use per reuse "
            f"(target ≤ 1.00) -> " + ("PASS" if worst <= 1.0 else "MISS"))


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 1k, 10k with fewer repeats")
    ap.add_argument("--sizes", type=int, nargs="+", help="chain lengths (default 1000 10000 100000)")
    ap.add_argument("--repeats", type=int, help="repeats per size (default: 7/5/3 by size; quick 3/2)")
    ap.add_argument("--jax-budget", type=float, default=60.0,
                    help="skip a jax size whose extrapolated time for one trace exceeds this many seconds")
    ap.add_argument("--profile", action="store_true", help="cProfile one tapeir trace of the largest N")
    ap.add_argument("--weights", action="store_true", help="only the captured-weights table")
    args = ap.parse_args(argv)
    if args.weights:
        print(bench_weights(repeats=3 if args.quick else 5))
        return 0

    sizes = args.sizes or ([1000, 10000] if args.quick else [1000, 10000, 100000])
    x = np.ones((4,), np.float32)
    y = np.linspace(0.1, 0.9, 4).astype(np.float32)

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, tapeir {tp.__version__}, "
          + (f"jax {jax.__version__} (make_jaxpr, CPU)" if jax else "jax not found (pip install jax to compare)"))
    print(harness.load_note())

    # warm up both (imports, first-call caches), then keep import-time objects out of the gc's scans
    trace_tapeir(2 * PERIOD, x, y)
    if jax:
        trace_jax(2 * PERIOD, x, y)
    gc.collect()
    gc.freeze()
    clock = GcClock()
    gc.callbacks.append(clock)

    rows = []
    jax_per_op = None
    for n in sizes:
        reps = args.repeats or ((3 if n <= 1000 else 2) if args.quick else (7 if n <= 1000 else 5 if n <= 10000 else 3))
        run_jax = jax is not None and (jax_per_op is None or jax_per_op * n <= args.jax_budget)
        jax_reps = reps if n < 100000 else min(reps, 2)
        t_tp, t_off, t_jx, gc_share = [], [], [], []
        count_tp = count_jx = None
        for r in range(reps):
            dt, count_tp, in_gc = timed(trace_tapeir, n, x, y, clock=clock)
            t_tp.append(dt)
            gc_share.append(in_gc / dt)
            dt, _, _ = timed(trace_tapeir, n, x, y, gc_off=True)
            t_off.append(dt)
            if run_jax and r < jax_reps:
                dt, count_jx, _ = timed(trace_jax, n, x, y)
                t_jx.append(dt)
        best_tp = min(t_tp) / n * 1e6
        best_jx = min(t_jx) / n * 1e6 if t_jx else None
        if best_jx is not None:
            jax_per_op = best_jx * 1e-6
        if count_tp != n or (count_jx is not None and count_jx != n):
            print(f"warning: N={n}: tapeir recorded {count_tp} nodes, jax {count_jx} equations")
        rows.append(dict(n=n, tp=best_tp, tp_med=statistics.median(t_tp) / n * 1e6, off=min(t_off) / n * 1e6,
                         jx=best_jx, gc=gc_share[t_tp.index(min(t_tp))], nodes=count_tp, eqns=count_jx,
                         reps=reps, jax_skipped=jax is not None and not run_jax))
    gc.callbacks.remove(clock)

    print()
    print("### Tracing cost (µs per op, best of repeats)")
    print()
    print("| N ops | tapeir µs/op | tapeir median | jax µs/op | tapeir / jax (target ≤ 0.50) "
          "| tapeir gc share | tapeir µs/op, gc off | nodes / eqns | repeats |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["tp"] / r["jx"] if r["jx"] else None
        jx = fmt(r["jx"]) if r["jx"] else ("skipped (budget)" if r["jax_skipped"] else "n/a")
        print(f"| {r['n']:,} | {r['tp']:.2f} | {r['tp_med']:.2f} | {jx} | {fmt(ratio)} | {r['gc']:.0%} "
              f"| {r['off']:.2f} | {r['nodes']} / {r['eqns'] if r['eqns'] is not None else '—'} | {r['reps']} |")

    verdicts = []
    ratios = [r["tp"] / r["jx"] for r in rows if r["jx"]]
    if ratios:
        worst = max(ratios)
        verdicts.append(f"speed vs jax: worst tapeir/jax = {worst:.2f} (target ≤ {TARGET_RATIO}) -> "
                        + ("PASS" if worst <= TARGET_RATIO else "MISS"))
    else:
        verdicts.append("speed vs jax: jax not found, ratio not measured")

    big = rows[-1]
    if len(rows) > 1:
        print()
        print(f"### Linearity (µs/op at N={big['n']:,} ÷ µs/op at smaller N; target ≤ {TARGET_LINEAR:.2f})")
        print()
        print("| vs N | tapeir | tapeir, gc off | jax |")
        print("|---:|---:|---:|---:|")
        worst_lin = 0.0
        for r in rows[:-1]:
            lin = big["tp"] / r["tp"]
            worst_lin = max(worst_lin, lin)
            jl = big["jx"] / r["jx"] if big["jx"] and r["jx"] else None
            print(f"| {r['n']:,} | {lin:.2f} | {big['off'] / r['off']:.2f} | {fmt(jl)} |")
        verdicts.append(f"linearity: worst tapeir ratio = {worst_lin:.2f} (target ≤ {TARGET_LINEAR:.2f}) -> "
                        + ("PASS" if worst_lin <= TARGET_LINEAR else "MISS"))

    verdicts += bench_passes(sizes, rows, args, x, y)
    verdicts.append(bench_weights(repeats=3 if args.quick else 5))
    print()
    for v in verdicts:
        print("- " + v)

    if args.profile:
        n = big["n"]
        gc.collect()
        gc.disable()  # gc pauses would be billed to whichever function allocates; the table shows gc apart
        prof = cProfile.Profile()
        prof.enable()
        trace_tapeir(n, x, y)
        prof.disable()
        gc.enable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
        print(f"\n### cProfile of one tapeir trace, N={n:,}, gc disabled (sorted by own time)\n")
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
