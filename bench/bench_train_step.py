"""Training step (forward + backward) of an MLP 784-512-512-10, tanh, batch 256, f32.

tapeir's numpy backend running the value_and_grad graph, vs the same step written by
hand in numpy (forward plus hand-derived backward), vs PyTorch eager (if installed),
timed in one run. Prints a markdown table with ratios and the peak memory of one step.

    python bench/bench_train_step.py [--quick]
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import tapeir as tp

SIZES = (784, 512, 512, 10)
BATCH = 256


def mlp_loss(p, x, y):
    h = tp.tanh(x @ p["w1"] + p["b1"])
    h = tp.tanh(h @ p["w2"] + p["b2"])
    return tp.cross_entropy(h @ p["w3"] + p["b3"], y)


def hand_step(p, x, y):
    a1 = x @ p["w1"] + p["b1"]
    h1 = np.tanh(a1)
    a2 = h1 @ p["w2"] + p["b2"]
    h2 = np.tanh(a2)
    z = h2 @ p["w3"] + p["b3"]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
    d3 = e / s
    d3[np.arange(n), y] -= 1
    d3 /= n
    d2 = (d3 @ p["w3"].T) * (1 - h2 * h2)
    d1 = (d2 @ p["w2"].T) * (1 - h1 * h1)
    return loss, {"w3": h2.T @ d3, "b3": d3.sum(0), "w2": h1.T @ d2, "b2": d2.sum(0),
                  "w1": x.T @ d1, "b1": d1.sum(0)}


def make_torch_step(p):
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tp_ = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}

    def step(x, y):
        for v in tp_.values():
            v.grad = None
        h = torch.tanh(x @ tp_["w1"] + tp_["b1"])
        h = torch.tanh(h @ tp_["w2"] + tp_["b2"])
        loss = torch.nn.functional.cross_entropy(h @ tp_["w3"] + tp_["b3"], y)
        loss.backward()
        return loss.item(), {k: v.grad for k, v in tp_.items()}
    return step


def best_of_interleaved(fns, repeats, inner):
    """Best time per call of each fn; repeats alternate between fns so load spikes hit all alike.

    The order rotates every repeat: PyTorch's OpenMP threads spin for a while after
    each call and slow whatever runs right after them, so no fn may always follow it.
    """
    for fn in fns:
        fn()  # warm up
    best = [float("inf")] * len(fns)
    for r in range(repeats):
        for k in [(r + j) % len(fns) for j in range(len(fns))]:
            fn = fns[k]
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t) / inner)
    return best


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    repeats, inner = (3, 3) if args.quick else (9, 10)
    rng = np.random.default_rng(0)
    p = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), 1):
        p[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        p[f"b{i}"] = np.zeros(b, np.float32)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)

    step = tp.compile(tp.value_and_grad(tp.trace(mlp_loss, p, x, y)))
    loss_t, g_t = step(p, x, y)
    loss_h, g_h = hand_step(p, x, y)
    err = max(float(np.abs(g_t[k] - g_h[k]).max()) for k in p)
    assert err < 1e-4 and abs(float(loss_t) - loss_h) < 1e-4, f"tapeir and hand numpy disagree ({err})"

    runs = [("tapeir numpy backend", lambda: step(p, x, y), True), ("hand-written numpy", lambda: hand_step(p, x, y), True)]
    try:
        import torch

        ts = make_torch_step(p)
        tx, ty = torch.tensor(x), torch.tensor(y)
        runs.append(("PyTorch eager", lambda: ts(tx, ty), False))
    except ImportError:
        print("torch not installed: PyTorch eager column skipped")
    times = best_of_interleaved([fn for _, fn, _ in runs], repeats, inner)
    rows = [(name, t, peak_bytes(fn) if traced else None) for (name, fn, traced), t in zip(runs, times)]
    base = rows[0][1]
    print(f"MLP {'-'.join(map(str, SIZES))}, tanh, batch {BATCH}, f32, forward + backward (best of {repeats}x{inner})\n")
    print("| implementation | ms / step | tapeir / this | peak memory (tracemalloc) |")
    print("|---|---|---|---|")
    for name, t, mem in rows:
        print(f"| {name} | {t * 1e3:.2f} | {base / t:.2f} | {'-' if mem is None else f'{mem / 2**20:.1f} MiB'} |")


if __name__ == "__main__":
    main()
