"""Interpreter overhead: tapeir's numpy backend vs the same numpy calls in a plain Python loop.

    python bench/bench_interpreter.py            # 10k nodes, 51 interleaved repeats
    python bench/bench_interpreter.py --quick    # 10k nodes, 9 repeats
    python bench/bench_interpreter.py --profile  # also cProfile tapeir's calls

The graph is a chain of N elementwise ops on f32[4] tensors, cycling through six ops
(scalar mul, scalar add, tanh, tensor*tensor with the second input, scalar sub, exp), so
nearly all the time is per-node dispatch rather than arithmetic. It runs three ways on
the same inputs, repeats interleaved:

- tapeir: `tp.compile(g)(x, y)`, the numpy interpreter;
- loop:   `for fn, b in steps: x = fn(x) if b is None else fn(x, b)`, a prepared list of
          the same numpy functions with the same 0-d f32 constants (the baseline the
          target is measured against);
- straight-line: the same calls written out as one generated Python function, no loop
          at all (the floor; for reference).

The three results are checked bitwise equal, so all three make the same numpy calls.
Target: tapeir / loop <= 1.5 (best of repeats; the median ratio is shown too).

All three run in one process, interleaved: on f32[4] tensors numpy never enters BLAS,
so no contender leaves a spinning thread pool behind to slow the next (unlike
bench_train_step.py and bench_onnx.py, which time each contender in its own process).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time

import numpy as np

import harness
import tapeir as tp

PERIOD = 6
TARGET = 1.5
C_MUL, C_ADD, C_SUB = 1.0001, 0.5, 0.25


def make_chain(n: int):
    """The traced function: n elementwise steps on x, cycling through six ops."""
    def chain(x, y):
        for i in range(n):
            k = i % PERIOD
            if k == 0:
                x = x * C_MUL
            elif k == 1:
                x = x + C_ADD
            elif k == 2:
                x = tp.tanh(x)
            elif k == 3:
                x = x * y
            elif k == 4:
                x = x - C_SUB
            else:
                x = tp.exp(x)
        return x
    return chain


def numpy_steps(n: int, y):
    """The same ops as (numpy function, second operand or None): scalars are 0-d f32 arrays, as in tapeir."""
    f32 = np.float32
    cycle = [(np.multiply, np.array(C_MUL, f32)), (np.add, np.array(C_ADD, f32)), (np.tanh, None),
             (np.multiply, y), (np.subtract, np.array(C_SUB, f32)), (np.exp, None)]
    return [cycle[i % PERIOD] for i in range(n)]


def make_loop(steps):
    def loop(x):
        for fn, b in steps:
            x = fn(x) if b is None else fn(x, b)
        return x
    return loop


def make_straight_line(n: int, y):
    """One generated function with the n calls written out (no dispatch at all)."""
    names = ["x = mul(x, c_mul)", "x = add(x, c_add)", "x = tanh(x)", "x = mul(x, y)", "x = sub(x, c_sub)",
             "x = exp(x)"]
    body = "\n".join("    " + names[i % PERIOD] for i in range(n))
    src = f"def straight(x, y):\n{body}\n    return x\n"
    f32 = np.float32
    env = dict(mul=np.multiply, add=np.add, sub=np.subtract, tanh=np.tanh, exp=np.exp,
               c_mul=np.array(C_MUL, f32), c_add=np.array(C_ADD, f32), c_sub=np.array(C_SUB, f32))
    exec(compile(src, "<straight-line>", "exec"), env)
    return env["straight"]


def best_and_median(ts):
    return min(ts), statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--nodes", type=int, default=10000, help="graph size (default 10000)")
    ap.add_argument("--repeats", type=int, help="interleaved repeats (default 51; quick 9)")
    ap.add_argument("--profile", action="store_true", help="cProfile a few tapeir calls")
    args = ap.parse_args(argv)
    n = args.nodes
    reps = args.repeats or (9 if args.quick else 51)

    x = np.linspace(-1.0, 1.0, 4).astype(np.float32)
    y = np.linspace(0.1, 0.9, 4).astype(np.float32)

    t0 = time.perf_counter()
    g = tp.trace(make_chain(n), x, y)
    t_trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = tp.compile(g)
    t_compile = time.perf_counter() - t0
    assert len(g.nodes) == n, (len(g.nodes), n)

    loop = make_loop(numpy_steps(n, y))
    straight = make_straight_line(n, y)
    want = loop(x)
    for name, got in (("tapeir", f(x, y)), ("straight-line", straight(x, y))):
        if not (got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)):
            raise SystemExit(f"{name} disagrees with the loop: {got!r} vs {want!r}")

    # a tiny graph shows the fixed cost of one call (argument checks, pytree flatten/unflatten)
    f1 = tp.compile(tp.trace(lambda x, y: x * y, x, y))

    runs = {"tapeir": lambda: f(x, y), "loop": lambda: loop(x), "straight-line": lambda: straight(x, y),
            "tapeir, 1-node graph": lambda: f1(x, y)}
    for fn in runs.values():  # warm up
        fn()
    times = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)

    best = {k: best_and_median(v) for k, v in times.items()}
    base_b, base_m = best["loop"]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, tapeir {tp.__version__}; "
          f"{n:,} nodes on f32{list(x.shape)}, {reps} interleaved repeats")
    print(harness.load_note())
    print()
    print("### Interpreter overhead")
    print()
    print("| runner | best ms | median ms | best µs/node | ratio to loop (best) | ratio to loop (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in ("tapeir", "loop", "straight-line"):
        b, m = best[k]
        print(f"| {k} | {b * 1e3:.3f} | {m * 1e3:.3f} | {b / n * 1e6:.3f} | {b / base_b:.2f} | {m / base_m:.2f} |")
    b1, m1 = best["tapeir, 1-node graph"]
    print()
    print(f"| other | value |\n|---|---:|\n"
          f"| tapeir overhead over the loop, per node | {(best['tapeir'][0] - base_b) / n * 1e9:.0f} ns |\n"
          f"| tapeir fixed cost of one call (1-node graph, best) | {b1 * 1e6:.1f} µs |\n"
          f"| tp.trace of the {n:,}-node graph (one cold run) | {t_trace * 1e3:.1f} ms |\n"
          f"| tp.compile of the {n:,}-node graph (one cold run) | {t_compile * 1e3:.1f} ms |")
    ratio = best["tapeir"][0] / base_b
    print()
    print(f"- tapeir / loop = {ratio:.2f} (best), {best['tapeir'][1] / base_m:.2f} (median); target ≤ {TARGET} -> "
          + ("PASS" if ratio <= TARGET else "MISS"))

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            f(x, y)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
        print(f"\n### cProfile of 5 tapeir calls ({n:,} nodes each), sorted by own time\n")
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
