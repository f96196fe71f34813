"""Loading graphs: `tp.load` vs `tp.save` per op, base64 decoding speed, peak memory of a load.

    python bench/bench_load.py            # N = 1k, 10k, 100k ops; a 16 MiB constant
    python bench/bench_load.py --quick    # N = 1k, 10k; fewer repeats

Rows:

- per op: `tp.save(g, path)` and `tp.load(path)` of the chain of N elementwise ops that
  bench_trace.py traces (six-op cycle on f32[4]), repeats interleaved, best of repeats, in
  us/op; also `str(g)` and `tp.parse(text)` alone (no file, no fsync), as a diagnostic.
  Targets: load / save <= 3 at every N; load linear: us/op at 100k within 10% of us/op
  at 1k and at 10k (both sides pause the garbage collector, so what is left is the work);
- base64: `tp.load` of a graph holding one f32 constant of 16 MiB (22 MB of base64), in
  MB of base64 per second, the whole load included (read, decode, verify).
  Target: >= 100 MB/s;
- memory: the peak tracemalloc sees during that load (numpy's buffers included), divided by
  the file's size. Target: <= 3 (the text, then the array decoded straight from it).

The peer is tapeir's own save: no other tool reads this format. Timing is pure Python and
numpy on small arrays (no thread pool spins), so everything runs in one process.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

# measure the checkout this script lies in, not whichever tapeir is installed
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_ROOT, "tapeir", "__init__.py")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import harness  # noqa: E402
import tapeir as tp  # noqa: E402

TARGET_RATIO = 3.0
TARGET_LINEAR = 1.10
TARGET_MBS = 100.0
TARGET_PEAK = 3.0
PERIOD = 6


def chain_graph(n: int):
    """bench_trace.py's chain: n elementwise steps on x, cycling through six ops."""
    def chain(x, y):
        for i in range(n):
            k = i % PERIOD
            if k == 0:
                x = x * 1.0001
            elif k == 1:
                x = x + 0.5
            elif k == 2:
                x = tp.tanh(x)
            elif k == 3:
                x = x * y
            elif k == 4:
                x = x - 0.25
            else:
                x = tp.exp(x)
        return x

    return tp.trace(chain, tp.Spec((4,)), tp.Spec((4,)))


def best_of(fns: dict, repeats: int) -> dict:
    """Seconds per call of each fn: repeats interleaved, best (min) of each."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def per_op_rows(sizes, repeats, folder):
    rows = {}
    for n in sizes:
        g = chain_graph(n)
        path = os.path.join(folder, f"chain{n}.tapeir")
        tp.save(g, path)
        text = str(g)
        assert tp.load(path) == g and tp.parse(text) == g  # correctness first, untimed
        r = max(5, repeats * 10_000 // max(n, 10_000))
        t = best_of({"save": lambda: tp.save(g, path), "load": lambda: tp.load(path),
                     "print": lambda: str(g), "parse": lambda: tp.parse(text)}, r)
        rows[n] = {k: v / n * 1e6 for k, v in t.items()}
        del g
        gc.collect()
    return rows


def big_constant(folder, repeats):
    w = np.random.default_rng(0).standard_normal(4 * 2 ** 20).astype(np.float32)  # 16 MiB
    g = tp.trace(lambda x: x * w, tp.Spec((w.size,)))
    path = os.path.join(folder, "big.tapeir")
    tp.save(g, path)
    size = os.path.getsize(path)
    back = tp.load(path)
    assert back == g and back.constants[0].data.tobytes() == w.tobytes()
    del back
    seconds = best_of({"load": lambda: tp.load(path)}, repeats)["load"]
    b64 = (w.nbytes + 2) // 3 * 4
    gc.collect()
    tracemalloc.start()
    tp.load(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size, b64, seconds, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 1k, 10k only; fewer repeats")
    ns = ap.parse_args(argv)
    sizes = (1000, 10_000) if ns.quick else (1000, 10_000, 100_000)
    repeats = 3 if ns.quick else 7
    print(f"# bench_load: tp.save / tp.load per op, base64 decoding, peak memory ({harness.load_note()})\n")
    gc.freeze()  # the imports' objects: no pass should pay for rescanning them
    with tempfile.TemporaryDirectory() as folder:
        rows = per_op_rows(sizes, repeats, folder)
        size, b64, seconds, peak = big_constant(folder, repeats)

    print("| N ops | save us/op | load us/op | load / save | print us/op | parse us/op | target | met |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    worst = 0.0
    for n, r in rows.items():
        ratio = r["load"] / r["save"]
        worst = max(worst, ratio)
        print(f"| {n} | {r['save']:.2f} | {r['load']:.2f} | {ratio:.2f} | {r['print']:.2f} | {r['parse']:.2f} | "
              f"<= {TARGET_RATIO:g} | {harness.verdict(ratio, TARGET_RATIO)} |")
    big = max(rows)
    lin = max(rows[big]["load"] / rows[n]["load"] for n in rows if n != big)
    mbs = b64 / seconds / 1e6
    print()
    print("| measure | value | target | met |")
    print("|---|---:|---|---|")
    print(f"| load / save, worst N | {worst:.2f} | <= {TARGET_RATIO:g} | {harness.verdict(worst, TARGET_RATIO)} |")
    print(f"| load linearity: us/op at {big} / at smaller N (worst) | {lin:.2f} | <= {TARGET_LINEAR:g} | "
          f"{harness.verdict(lin, TARGET_LINEAR)} |")
    print(f"| tp.load of a 16 MiB f32 constant ({size / 1e6:.1f} MB file): MB/s of base64 | {mbs:.0f} "
          f"({seconds * 1e3:.0f} ms) | >= {TARGET_MBS:g} | {'PASS' if mbs >= TARGET_MBS else 'MISS'} |")
    print(f"| peak memory of that load / file size | {peak / size:.2f} ({peak / 2 ** 20:.1f} MiB) | "
          f"<= {TARGET_PEAK:g} | {harness.verdict(peak / size, TARGET_PEAK)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
