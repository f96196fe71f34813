"""Timing harness shared by the bench scripts: best-of timing, each contender in its own process.

Why processes: numpy's OpenBLAS, PyTorch's OpenMP and onnxruntime's thread pools keep
their worker threads spinning for a while after each call. On a 2-core machine those
spinning threads steal the cores from whatever runs next in the same process, so a
contender timed right after another one is measured with its neighbour's threads still
burning (PyTorch's MLP step: ~6 ms alone, ~13 ms right after a block of numpy steps).
A script that compares such contenders lists them in a dict `{name: setup}` (setup builds
everything and returns the zero-argument callable to time) and calls `isolated(...)`:

    parent:  for each round, for each contender (order rotated every round):
                 python <script> --only <name> --json --repeats R --inner I
    child:   setup(), one warm-up call, R repeats of I calls, prints {"name", "times"} as JSON

Children run one at a time, so no two contenders' pools are ever alive together. Rounds
interleave the contenders in time, so a load spike from another process hits all of them
alike; a row reports the best (min) over all repeats of all rounds, and the median. On a
shared 2-core machine a pool of two threads loses badly whenever another process holds a
core, so the scripts run several short rounds: the best of them comes from a quiet moment.
Correctness checks run in the parent (or one child), never inside a timed loop.

Scripts whose contenders share no thread pool (pure-Python tracing, numpy on f32[4]
tensors, which never enters BLAS) keep timing in one process, interleaved; `IDLE_GAP_S`
is the pause to leave after a switch where a script must mix pool-using contenders in one
process (`--interference` in bench_train_step.py and bench_onnx.py measures why, with
`interference()` below).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# every script measures the checkout it lies in, not whichever tapeir is installed (each
# script imports this module before tapeir; its child processes run the script again)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(ROOT, "tapeir", "__init__.py")) and ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# OpenBLAS parks its workers after 2**28 cycles (~0.1 s at 2-3 GHz, OPENBLAS_THREAD_TIMEOUT=28);
# libgomp and onnxruntime stop spinning well before that. Half a second covers all of them
# with margin on a loaded machine.
IDLE_GAP_S = 0.5


def repeat_timed(fn, repeats: int, inner: int) -> list[float]:
    """Seconds per call of fn, one entry per repeat of `inner` back-to-back calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return times


def child_args(argv=None):
    """Parse the child-mode flags; returns None when the script runs as the parent."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=1)
    ns, rest = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    return (ns, rest) if ns.only else None


def parent_args(doc: str, argv=None):
    """The parent's flags, the same in every isolating script: --quick and --interference."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    ap.add_argument("--interference", action="store_true",
                    help="also time the contenders back to back in one process (the artifact isolation avoids)")
    return ap.parse_args(argv)


def run_child(contenders: dict, ns) -> int:
    """Child mode: time contender `ns.only` and print its times as one JSON line."""
    fn = contenders[ns.only]()
    times = repeat_timed(fn, ns.repeats, ns.inner)
    print(json.dumps({"name": ns.only, "times": times}))
    return 0


def isolated(script: str, plan: dict, rounds: int, extra=(), quiet=False) -> dict:
    """Run each contender of `plan` in its own child process, `rounds` times (rotating the order).

    plan: {name: (repeats, inner)} or {name: (repeats, inner, max_rounds)} for a slow contender.
    Returns {name: [seconds per call, one per repeat of every round]}.
    """
    names = list(plan)
    times = {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            repeats, inner, max_rounds = (*plan[name], rounds)[:3]
            if r >= max_rounds:
                continue
            cmd = [sys.executable, script, "--only", name, "--json", "--repeats", str(repeats),
                   "--inner", str(inner), *extra]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if out.returncode != 0:
                raise SystemExit(f"child {' '.join(cmd[1:])} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            times[name] += result["times"]
            if not quiet:
                print(f"  round {r + 1}/{rounds}: {name}: best {min(result['times']) * 1e3:.3f} ms", file=sys.stderr)
    return times


def load_note() -> str:
    """One line for a script's header: the load other processes put on the machine while it runs."""
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = " (other processes compete for the cores: expect noise, rerun when quieter)" if one > 0.75 * cores else ""
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min) on {cores} cores{busy}"


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def interference(fns: dict, pairs, inner: int, blocks: int = 5):
    """Diagnostic, all in this process: fn timed alone, right after a block of `inner` calls of prev, and after
    that block plus IDLE_GAP_S. pairs: [(fn name, prev name)]. Prints a table of ms per call (best of blocks)."""
    for fn in fns.values():
        fn()

    def after(prev, fn, gap):
        ts = []
        for _ in range(blocks):
            if prev is not None:
                for _ in range(inner):
                    prev()
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            ts.append((time.perf_counter() - t0) / inner)
        return min(ts) * 1e3

    print(f"### Same-process interference (ms per call, best of {blocks} blocks of {inner}; gap = {IDLE_GAP_S} s)\n")
    print("| timed | alone (after a gap) | right after a block of | ms | after that block + gap |")
    print("|---|---:|---|---:|---:|")
    for name, prev in pairs:
        print(f"| {name} | {after(None, fns[name], IDLE_GAP_S):.2f} | {prev} | {after(fns[prev], fns[name], 0):.2f} "
              f"| {after(fns[prev], fns[name], IDLE_GAP_S):.2f} |")
