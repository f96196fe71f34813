"""Training step (forward + backward) of an MLP 784-512-512-10, tanh, batch 256, f32.

tapeir's numpy backend running the value_and_grad graph, vs the same step written by
hand in numpy (forward plus hand-derived backward), vs PyTorch eager (if installed).
Each implementation is timed in its own child process (bench/harness.py says why), in
rotating rounds; the gradients are checked equal in the parent first. Prints a markdown
table with ratios and the peak memory of one step.

    python bench/bench_train_step.py [--quick] [--interference] [--adam-only] [--threads N]

`--interference` also times the steps back to back in one process, alone, right after a
block of another implementation, and after that block plus harness.IDLE_GAP_S: the
artifact that running each implementation in its own process avoids.

Targets: tapeir / hand numpy <= 1.10; tapeir / PyTorch eager <= 0.9.

Then the Adam training step as one graph (tp.training_step: forward + backward + Adam update,
params and state fed back each call), issue 10's targets: onnxruntime backend <= 0.8x PyTorch
eager (+ torch.optim.Adam.step); numpy backend <= 1.1x hand-written numpy + a numpy Adam; tp.fit
per step <= 1.05x calling the compiled step directly (and both against a bare
InferenceSession.run, the per-call overhead). `--adam-only` runs just that section.
"""
from __future__ import annotations

import os
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

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS") or max(1, torch.get_num_threads())))
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


TINY = ((64, 64, 64, 10), 64)  # the overhead rows: a step small enough that fixed costs show


def make_params(sizes=SIZES, batch=BATCH):
    rng = np.random.default_rng(0)
    p = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        p[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        p[f"b{i}"] = np.zeros(b, np.float32)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
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


# ---- the Adam training step as one graph (issue 10) ----------------------------------------
# forward + backward + Adam update, params and state fed back each call; lr 1e-3, PyTorch's defaults
ADAM_STEPS = 20  # steps per timed call (a short epoch: tp.fit's setup is part of its cost)


def threads_option() -> dict:
    """--threads N (passed to the children as BENCH_THREADS): every contender's pool gets N threads."""
    n = os.environ.get("BENCH_THREADS")
    return {"intra_op_num_threads": int(n)} if n else {}


def adam_step_graph(p, x, y):
    g = tp.trace(mlp_loss, p, tp.Spec(("B", x.shape[1])), tp.Spec(("B",), "int64"))
    return tp.training_step(g, optimizer=tp.optim.Adam())


def setup_adam_tapeir(backend, *size):
    p, x, y = make_params(*size)
    opts = threads_option() if backend == "onnxruntime" else {}
    step = tp.compile(adam_step_graph(p, x, y), backend=backend, **opts)
    box = [p, tp.init_state(tp.optim.Adam(), p)]

    def run():
        for _ in range(ADAM_STEPS):
            _, box[0], box[1] = step(box[0], box[1], 1e-3, x, y)
    return run


def setup_adam_fit(*size):
    """tp.fit over ADAM_STEPS batches on onnxruntime (IO binding): the helper's cost per step."""
    p, x, y = make_params(*size)
    step = tp.compile(adam_step_graph(p, x, y), backend="onnxruntime", **threads_option())
    batches = [(x, y)] * ADAM_STEPS
    box = [p, tp.init_state(tp.optim.Adam(), p)]

    def run():
        r = tp.fit(step, box[0], box[1], batches, lr=1e-3, progress=False)
        box[0], box[1] = r.params, r.opt_state
    return run


def setup_adam_raw(*size):
    """The same ONNX step through a bare InferenceSession.run (outputs fed back by name)."""
    import onnxruntime as ort

    p, x, y = make_params(*size)
    fn = tp.compile(adam_step_graph(p, x, y), backend="onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads_option():
        so.intra_op_num_threads = threads_option()["intra_op_num_threads"]
    sess = ort.InferenceSession(fn.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    state = {v.name: a for v, a in zip(fn.graph.inputs, fn.signature.flatten(
        (p, tp.init_state(tp.optim.Adam(), p), 0.0, x, y)))}
    box = [{k: v for k, v in state.items() if k.startswith(("p.", "opt_state."))}]
    lr = np.array(1e-3)

    def run():
        for _ in range(ADAM_STEPS):
            out = sess.run(None, {**box[0], "lr": lr, "x": x, "y": y})
            box[0] = {n[4:]: v for n, v in zip(names[1:], out[1:])}
    return run


def hand_adam(p, m, v, g, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam's update, in place, with few temporaries."""
    step = lr / (1 - b1 ** t)
    bc2_sqrt = (1 - b2 ** t) ** 0.5
    for k in p:
        m[k] *= b1
        m[k] += (1 - b1) * g[k]
        tmp = g[k] * g[k]
        tmp *= 1 - b2
        v[k] *= b2
        v[k] += tmp
        np.sqrt(v[k], out=tmp)
        tmp /= bc2_sqrt
        tmp += eps
        np.divide(m[k], tmp, out=tmp)
        tmp *= step
        p[k] -= tmp


def setup_adam_hand():
    p, x, y = make_params()
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    t = [0]

    def run():
        for _ in range(ADAM_STEPS):
            _, g = hand_step(p, x, y)
            t[0] += 1
            hand_adam(p, m, v, g, t[0], 1e-3)
    return run


def setup_adam_torch():
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS") or max(1, torch.get_num_threads())))
    p, x, y = make_params()
    tp_ = {k: torch.tensor(a, requires_grad=True) for k, a in p.items()}
    opt = torch.optim.Adam(tp_.values(), lr=1e-3)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def run():
        for _ in range(ADAM_STEPS):
            opt.zero_grad()
            h = torch.tanh(tx @ tp_["w1"] + tp_["b1"])
            h = torch.tanh(h @ tp_["w2"] + tp_["b2"])
            torch.nn.functional.cross_entropy(h @ tp_["w3"] + tp_["b3"], ty).backward()
            opt.step()
    return run


def check_adam(with_torch: bool):
    """One Adam step: tapeir's numpy and onnxruntime steps, the hand step (and PyTorch) agree.

    Where |grad| is near eps (1e-8), Adam's g / (|g| + eps) turns summation-order noise in g
    into update differences up to ~lr: those elements (a few dozen of 670k here) are held to
    that bound only; the rest agree to 1e-6 (float32 params near 0.05, updates of lr = 1e-3)."""
    p, x, y = make_params()
    graph = adam_step_graph(p, x, y)
    grads = hand_step(p, x, y)[1]
    outs = {}
    for backend in ("numpy", "onnxruntime"):
        outs[backend] = tp.compile(graph, backend=backend)(p, tp.init_state(tp.optim.Adam(), p), 1e-3, x, y)[1]
    q = {k: a.copy() for k, a in p.items()}
    hand_adam(q, {k: np.zeros_like(a) for k, a in p.items()}, {k: np.zeros_like(a) for k, a in p.items()},
              grads, 1, 1e-3)
    outs["hand"] = q
    if with_torch:
        import torch

        tq = {k: torch.tensor(a, requires_grad=True) for k, a in p.items()}
        opt = torch.optim.Adam(tq.values(), lr=1e-3)
        h = torch.tanh(torch.tanh(torch.tensor(x) @ tq["w1"] + tq["b1"]) @ tq["w2"] + tq["b2"])
        torch.nn.functional.cross_entropy(h @ tq["w3"] + tq["b3"], torch.tensor(y)).backward()
        opt.step()
        outs["torch"] = {k: a.detach().numpy() for k, a in tq.items()}
    for name, q in outs.items():
        for k in p:
            d = np.abs(q[k] - outs["numpy"][k])
            clear = np.abs(grads[k]) > 1e-6
            assert d.max() <= 1.5e-3 and d[clear].max(initial=0) < 1e-6, \
                f"Adam step: {name} and tapeir numpy disagree on {k} ({d.max()}, {d[clear].max(initial=0)})"


CONTENDERS = {"tapeir": setup_tapeir, "hand": setup_hand, "torch": setup_torch,
              "adam_numpy": lambda: setup_adam_tapeir("numpy"), "adam_ort": lambda: setup_adam_tapeir("onnxruntime"),
              "adam_fit": setup_adam_fit, "adam_raw": setup_adam_raw, "adam_hand": setup_adam_hand,
              "adam_torch": setup_adam_torch, "tiny_ort": lambda: setup_adam_tapeir("onnxruntime", *TINY),
              "tiny_fit": lambda: setup_adam_fit(*TINY), "tiny_raw": lambda: setup_adam_raw(*TINY)}
LABELS = {"tapeir": "tapeir numpy backend", "hand": "hand-written numpy", "torch": "PyTorch eager",
          "adam_numpy": "tapeir step, numpy backend", "adam_ort": "tapeir step, onnxruntime backend (tp.compile)",
          "adam_fit": "tp.fit on onnxruntime (IO binding)", "adam_raw": "bare InferenceSession.run, same ONNX step",
          "adam_hand": "hand-written numpy + numpy Adam", "adam_torch": "PyTorch eager + torch.optim.Adam",
          "tiny_ort": "tp.compile call, MLP 64-64-64-10 batch 64", "tiny_fit": "tp.fit, MLP 64-64-64-10 batch 64",
          "tiny_raw": "bare InferenceSession.run, MLP 64-64-64-10 batch 64"}
TARGETS = {"hand": 1.10, "torch": 0.9}  # tapeir / this
ADAM_TARGETS = [("adam_ort", "adam_torch", 0.8), ("adam_numpy", "adam_hand", 1.1), ("adam_fit", "adam_ort", 1.05)]


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
    argv = list(sys.argv[1:] if argv is None else argv)
    adam_only = "--adam-only" in argv  # only the Adam section (issue 10's rows)
    if "--threads" in argv:  # one pool size for every contender: children inherit these
        k = argv.index("--threads")
        n = argv[k + 1]
        del argv[k:k + 2]
        os.environ.update(BENCH_THREADS=n, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n)
        print(f"every contender runs {n} thread(s) (numpy's BLAS, PyTorch, onnxruntime)")
    args = harness.parent_args(__doc__, [a for a in argv if a != "--adam-only"])
    args.adam_only = adam_only
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
    if args.adam_only:
        adam_section(args, rounds, with_torch)
        return 0
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
    adam_section(args, rounds, with_torch)
    if args.interference and with_torch:
        print()
        harness.interference({LABELS[k]: CONTENDERS[k]() for k in names},
                             [(LABELS[a], LABELS[b]) for a, b in
                              (("torch", "hand"), ("torch", "tapeir"), ("tapeir", "torch"), ("hand", "torch"))], inner)
    return 0


def adam_section(args, rounds, with_torch):
    check_adam(with_torch)
    repeats, inner = (3, 1) if args.quick else (5, 1)
    names = ["adam_numpy", "adam_hand", "adam_ort", "adam_fit", "adam_raw"] + (["adam_torch"] if with_torch else [])
    times = harness.isolated(__file__, {k: (repeats, inner) for k in names}, rounds)
    best = {k: min(t) / ADAM_STEPS for k, t in times.items()}
    print(f"\n### Adam training step as one graph (forward + backward + update), MLP {'-'.join(map(str, SIZES))}, "
          f"batch {BATCH}; {ADAM_STEPS} steps per call, {rounds} rounds x {repeats} repeats x {inner} calls\n")
    print("| implementation | ms / step (best) | ms / step (median) |")
    print("|---|---:|---:|")
    for k in names:
        print(f"| {LABELS[k]} | {best[k] * 1e3:.3f} | {statistics.median(times[k]) / ADAM_STEPS * 1e3:.3f} |")
    print()
    for a, b, target in ADAM_TARGETS:
        if b not in best:
            print(f"- {LABELS[a]} / {LABELS[b]} (target ≤ {target}): skipped, torch not installed")
            continue
        ratio = best[a] / best[b]
        print(f"- {LABELS[a]} / {LABELS[b]} = {ratio:.3f} (target ≤ {target}) -> {harness.verdict(ratio, target)}")
    over = {k: (best[k] - best["adam_raw"]) * 1e6 for k in ("adam_ort", "adam_fit")}
    print(f"- per-step overhead over a bare InferenceSession.run: tp.compile call {over['adam_ort']:+.0f} us, "
          f"tp.fit {over['adam_fit']:+.0f} us")
    tiny = ["tiny_raw", "tiny_ort", "tiny_fit"]
    times = harness.isolated(__file__, {k: (repeats, 5) for k in tiny}, rounds)
    t = {k: min(v) / ADAM_STEPS for k, v in times.items()}
    print(f"- fixed costs on a small Adam step (MLP {'-'.join(map(str, TINY[0]))}, batch {TINY[1]}), us per step: "
          f"bare InferenceSession.run {t['tiny_raw'] * 1e6:.0f}, tp.compile call {t['tiny_ort'] * 1e6:.0f} "
          f"({(t['tiny_ort'] - t['tiny_raw']) * 1e6:+.0f}), tp.fit {t['tiny_fit'] * 1e6:.0f} "
          f"({(t['tiny_fit'] - t['tiny_raw']) * 1e6:+.0f})")


if __name__ == "__main__":
    sys.exit(main())
