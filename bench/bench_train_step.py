"""Training step (forward + backward) of an MLP 784-512-512-10, tanh, batch 256, f32.

tapeir's numpy backend running the value_and_grad graph, vs the same step written by
hand in numpy (forward plus hand-derived backward), vs PyTorch eager (if installed).
Each implementation is timed in its own child process (bench/harness.py says why), in
rotating rounds; the gradients are checked equal in the parent first. Prints a markdown
table with ratios and the peak memory of one step.

    python bench/bench_train_step.py [--quick] [--interference]

`--interference` also times the steps back to back in one process, alone, right after a
block of another implementation, and after that block plus harness.IDLE_GAP_S: the
artifact that running each implementation in its own process avoids.

Targets: tapeir / hand numpy <= 1.10; tapeir / PyTorch eager <= 0.9.
"""
from __future__ import annotations

import statistics
import sys
import tracemalloc

import numpy as np

import harness
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


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def make_params():
    rng = np.random.default_rng(0)
    p = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), 1):
        p[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        p[f"b{i}"] = np.zeros(b, np.float32)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    return p, x, y


def setup_tapeir():
    p, x, y = make_params()
    step = tp.compile(tp.value_and_grad(tp.trace(mlp_loss, p, x, y)))
    return lambda: step(p, x, y)


def setup_hand():
    p, x, y = make_params()
    return lambda: hand_step(p, x, y)


def setup_torch():
    import torch

    p, x, y = make_params()
    ts, tx, ty = make_torch_step(p), torch.tensor(x), torch.tensor(y)
    return lambda: ts(tx, ty)


CONTENDERS = {"tapeir": setup_tapeir, "hand": setup_hand, "torch": setup_torch}
LABELS = {"tapeir": "tapeir numpy backend", "hand": "hand-written numpy", "torch": "PyTorch eager"}
TARGETS = {"hand": 1.10, "torch": 0.9}  # tapeir / this


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def check(with_torch: bool):
    """tapeir's loss and gradients equal hand numpy's (and PyTorch's, if installed)."""
    p, x, y = make_params()
    loss_t, g_t = tp.compile(tp.value_and_grad(tp.trace(mlp_loss, p, x, y)))(p, x, y)
    loss_h, g_h = hand_step(p, x, y)
    err = max(float(np.abs(g_t[k] - g_h[k]).max()) for k in p)
    assert err < 1e-4 and abs(float(loss_t) - loss_h) < 1e-4, f"tapeir and hand numpy disagree ({err})"
    if with_torch:
        import torch

        loss_p, g_p = make_torch_step(p)(torch.tensor(x), torch.tensor(y))
        err = max(float(np.abs(g_t[k] - g_p[k].numpy()).max()) for k in p)
        assert err < 1e-4 and abs(float(loss_t) - loss_p) < 1e-4, f"tapeir and PyTorch disagree ({err})"


def main(argv=None):
    child = harness.child_args(argv)
    if child:
        return harness.run_child(CONTENDERS, child[0])
    args = harness.parent_args(__doc__, argv)
    rounds, repeats, inner = (2, 3, 3) if args.quick else (6, 5, 10)
    load = harness.load_note()  # before our own children add to it
    with_torch = has_torch()
    if not with_torch:
        print("torch not installed: PyTorch eager column skipped")
    check(with_torch)
    p, x, y = make_params()
    step = tp.compile(tp.value_and_grad(tp.trace(mlp_loss, p, x, y)))
    step(p, x, y)  # the first call builds the run plan; the peak is of a steady-state step
    mem = {"tapeir": peak_bytes(lambda: step(p, x, y)), "hand": peak_bytes(lambda: hand_step(p, x, y))}

    names = ["tapeir", "hand"] + (["torch"] if with_torch else [])
    times = harness.isolated(__file__, {k: (repeats, inner) for k in names}, rounds)
    base = min(times["tapeir"])
    print(f"MLP {'-'.join(map(str, SIZES))}, tanh, batch {BATCH}, f32, forward + backward; each implementation "
          f"in its own process, {rounds} rounds x {repeats} repeats x {inner} steps")
    print(load + "\n")
    print("| implementation | ms / step (best) | ms / step (median) | tapeir / this (best) | target "
          "| peak memory (tracemalloc) |")
    print("|---|---:|---:|---:|---|---|")
    for k in names:
        t = min(times[k])
        target = f"≤ {TARGETS[k]}" if k in TARGETS else ""
        m = f"{mem[k] / 2**20:.1f} MiB" if k in mem else "-"
        med = statistics.median(times[k])
        print(f"| {LABELS[k]} | {t * 1e3:.2f} | {med * 1e3:.2f} | {base / t:.2f} | {target} | {m} |")
    print()
    for k in names[1:]:
        ratio = base / min(times[k])
        print(f"- tapeir / {LABELS[k]} = {ratio:.2f} (target ≤ {TARGETS[k]}) -> {harness.verdict(ratio, TARGETS[k])}")
    if not with_torch:
        print(f"- tapeir / PyTorch eager (target ≤ {TARGETS['torch']}): skipped, torch not installed")
    if args.interference and with_torch:
        print()
        harness.interference({LABELS[k]: CONTENDERS[k]() for k in names},
                             [(LABELS[a], LABELS[b]) for a, b in
                              (("torch", "hand"), ("torch", "tapeir"), ("tapeir", "torch"), ("hand", "torch"))], inner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
