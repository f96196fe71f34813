"""One Adam training step of the small GPT (examples/gpt_train.py): plain onnxruntime vs PyTorch eager.

The GPT (2 layers, width 64, 4 heads, vocabulary 96, context 32, batch 16) is exported by
torch.onnx.export and turned into training artifacts by `tapeir train-artifacts` (the
example's own functions). Contenders, each in its own child process (bench/harness.py says why):

  ort    a bare onnxruntime.InferenceSession running training_step.onnx: forward, loss,
         backward and the Adam update in one call, params and state fed back as numpy arrays
         (the artifacts' README.txt loop);
  torch  PyTorch eager: forward, cross_entropy, backward, torch.optim.Adam.step (its default,
         foreach implementation);
  numpy  tapeir's numpy backend running the same training_step.onnx (tp.from_onnx, then
         tp.compile): for reference, no target.

    python bench/bench_gpt.py [--quick] [--threads N]

Target (issue 11): plain onnxruntime <= 1.0x PyTorch eager per step. The parent first
checks that the two agree (the losses of 3 steps to 1e-5 relative), untimed. Also prints
the import time per ONNX node of the exported GPT (issue 11's import-time row).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import gpt_train as G  # noqa: E402

BATCH = 16
LR = 3e-3
STEPS = 10  # steps per timed call
LABELS = {"ort": "plain onnxruntime, training_step.onnx", "torch": "PyTorch eager + torch.optim.Adam",
          "numpy": "tapeir numpy backend, same step graph"}


def _art() -> str:
    return os.environ["BENCH_GPT_ART"]


def _batches():
    return list(G.batches(G.encode(G.make_text()), STEPS, BATCH))


def _threads() -> int | None:
    n = os.environ.get("BENCH_THREADS")
    return int(n) if n else None


def setup_ort():
    import onnxruntime as ort

    so = ort.SessionOptions()
    if _threads():
        so.intra_op_num_threads = _threads()
    sess = ort.InferenceSession(os.path.join(_art(), "training_step.onnx"), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    box = [dict(np.load(os.path.join(_art(), "checkpoint.npz")))]
    data, lr = _batches(), np.array(LR)

    def run():
        for x, y in data:
            out = sess.run(None, {**box[0], "lr": lr, "idx": x, "target": y})
            box[0] = {n[len("new_"):]: v for n, v in zip(names[1:], out[1:])}
    return run


def setup_torch():
    import torch

    if _threads():
        torch.set_num_threads(_threads())
    model = G.gpt_module()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    data = [(torch.from_numpy(x), torch.from_numpy(y).reshape(-1)) for x, y in _batches()]

    def run():
        for x, y in data:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x).reshape(-1, G.VOCAB), y).backward()
            opt.step()
    return run


def setup_numpy():
    import tapeir as tp

    g = tp.from_onnx(os.path.join(_art(), "training_step.onnx"))
    step = tp.compile(g, backend="numpy")  # its BLAS threads: OPENBLAS_NUM_THREADS (set by --threads)
    ckpt = dict(np.load(os.path.join(_art(), "checkpoint.npz")))
    n_state = sum(1 for v in g.inputs if v.name.startswith(("params.", "opt_state.")))
    box = [[ckpt[v.name] for v in g.inputs[:n_state]]]
    data = _batches()

    def run():
        for x, y in data:
            out = step(*box[0], np.array(LR), x, y)
            box[0] = list(out[1:])
    return run


def import_time(path: str) -> tuple[float, int]:
    """Best of 3 tp.from_onnx(path, params="inputs") (what train-artifacts runs first) and the model's node count."""
    import onnx

    import tapeir as tp

    model = onnx.load(path)
    best = min(harness.repeat_timed(lambda: tp.from_onnx(model, params="inputs"), 3, 1))
    return best, len(model.graph.node)


CONTENDERS = {"ort": setup_ort, "torch": setup_torch, "numpy": setup_numpy}


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None):
    child = harness.child_args(argv)
    if child:
        return harness.run_child(CONTENDERS, child[0])
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--threads" in argv:  # one pool size for every contender: children inherit these
        k = argv.index("--threads")
        n = argv[k + 1]
        del argv[k:k + 2]
        os.environ.update(BENCH_THREADS=n, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n)
        print(f"every contender runs {n} thread(s) (numpy's BLAS, PyTorch, onnxruntime)")
    args = harness.parent_args(__doc__, argv)
    load = harness.load_note()
    if not has_torch():  # the model is written in torch and exported by it: nothing to time without it
        print("torch not installed: the GPT cannot be exported; bench_gpt skipped")
        return 0
    from tapeir.artifacts import write

    rounds, repeats = (2, 2) if args.quick else (5, 3)
    work = tempfile.mkdtemp(prefix="tapeir-bench-gpt-")
    G.export(G.gpt_module(), os.path.join(work, "gpt.onnx"), BATCH)
    t0 = time.perf_counter()
    write(os.path.join(work, "gpt.onnx"), os.path.join(work, "art"), "cross_entropy", "adam", lr=LR)
    t_art = time.perf_counter() - t0
    t_import, n_nodes = import_time(os.path.join(work, "gpt.onnx"))
    os.environ["BENCH_GPT_ART"] = os.path.join(work, "art")
    data = _batches()[:3]
    a, b = G.train_onnxruntime(os.environ["BENCH_GPT_ART"], data, LR), G.train_torch(G.gpt_module(), data, LR)
    gap = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    assert gap < 1e-5, f"onnxruntime and PyTorch losses disagree: {a} vs {b}"

    plan = {"ort": (repeats, 1), "torch": (repeats, 1), "numpy": (repeats, 1, 2)}
    times = harness.isolated(__file__, plan, rounds)
    best = {k: min(t) / STEPS for k, t in times.items()}
    print(f"GPT 2 layers x width 64, 4 heads, vocab {G.VOCAB}, context {G.CONTEXT}, batch {BATCH}: one Adam "
          f"training step (forward + loss + backward + update); {STEPS} steps per call, each contender in its own "
          f"process, {rounds} rounds x {repeats} repeats (numpy: at most 2 rounds)")
    print(load + "\n")
    print("| implementation | ms / step (best) | ms / step (median) | this / PyTorch eager (best) |")
    print("|---|---:|---:|---:|")
    for k in ("ort", "torch", "numpy"):
        med = statistics.median(times[k]) / STEPS
        print(f"| {LABELS[k]} | {best[k] * 1e3:.2f} | {med * 1e3:.2f} | {best[k] / best['torch']:.2f} |")
    ratio = best["ort"] / best["torch"]
    print(f"\n- {LABELS['ort']} / {LABELS['torch']} = {ratio:.2f} (target ≤ 1.0) -> {harness.verdict(ratio, 1.0)}")
    print(f"- (the losses of 3 steps agree to {gap:.1e} relative)")
    print(f"- import of the exported GPT ({n_nodes} ONNX nodes): tp.from_onnx {t_import * 1e3:.0f} ms, "
          f"{t_import / n_nodes * 1e6:.0f} us per node (best of 3); `tapeir train-artifacts` as a whole "
          f"(import, trace, autodiff, Adam, two exports, checkpoint) {t_art:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
