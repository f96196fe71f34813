"""ONNX export and onnxruntime: tapeir's exports vs PyTorch's, side by side.

    python bench/bench_onnx.py            # 5 rounds x 10 repeats (torch's export: 2 rounds x 1)
    python bench/bench_onnx.py --quick    # 2 rounds x 3 repeats
    python bench/bench_onnx.py --interference  # also: the same contenders back to back in one process

Three comparisons; every contender is timed in its own child process, the rounds
rotating through them (bench/harness.py says why: onnxruntime's and PyTorch's thread
pools spin after each call and slow whatever runs next in the same process):

1. inference: an MLP 784-512-512-10 (tanh), batch 256, f32. tapeir traces it with the
   weights closed over (so they export as initializers) and a symbolic batch dim (torch's
   export gets the same dynamic axis), and runs it through
   `tp.compile(g, backend="onnxruntime")`, input checks included; PyTorch's twin
   (nn.Linear/nn.Tanh with the same weights) is exported by `torch.onnx.export`
   (legacy TorchScript exporter, `dynamo=False`) and run in an onnxruntime session with the
   same options. Target: tapeir / torch <= 1.0.
2. training step: forward + backward of the cross-entropy loss of that MLP with respect
   to all weights and biases: tapeir's `tp.value_and_grad` graph run as one ONNX graph in
   onnxruntime, vs PyTorch eager (`loss.backward()`). Target: tapeir / torch <= 0.9.
3. export time: a chain of 10k elementwise ops (scalar mul, scalar add, tanh, mul by a
   second input, scalar sub, exp, repeated) on f32[4]: `tp.to_onnx` of the traced graph vs
   `torch.onnx.export` of a torch module doing the same ops (which includes its own
   tracing; tapeir's trace + export is shown too). Target: tapeir / torch <= 0.1 (10x faster).

Both runtimes use the same number of threads (torch's default, which onnxruntime is set
to as well). Results are checked against each other in the parent before timing. Ratios
use the best of all repeats; the median ratio is shown too.
"""
from __future__ import annotations

import io
import os
import statistics
import sys
import warnings

import numpy as np

import harness
import tapeir as tp

SIZES = (784, 512, 512, 10)
BATCH = 256
CHAIN = 10_000
THREADS = int(os.environ.get("TAPEIR_BENCH_THREADS", "0")) or None  # the parent sets it for its children
PERIOD = 6
C_MUL, C_ADD, C_SUB = 1.0001, 0.5, 0.25


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    p = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), 1):
        p[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        p[f"b{i}"] = (rng.standard_normal(b) * 0.1).astype(np.float32)
    return p


def mlp(p, x):
    h = tp.tanh(x @ p["w1"] + p["b1"])
    h = tp.tanh(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]


def mlp_loss(p, x, y):
    return tp.cross_entropy(mlp(p, x), y)


def torch_mlp(p):
    import torch

    layers = []
    for i in range(1, 4):
        lin = torch.nn.Linear(*p[f"w{i}"].shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(p[f"w{i}"].T.copy()))
            lin.bias.copy_(torch.from_numpy(p[f"b{i}"]))
        layers += [lin, torch.nn.Tanh()] if i < 3 else [lin]
    return torch.nn.Sequential(*layers)


def session(model_bytes, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def torch_export(module, args, **kw) -> bytes:
    import torch

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, f, dynamo=False, **kw)
    return f.getvalue()


def row(name, t_ours, t_peer, target, unit="ms", scale=1e3):
    """A table row; the target is met when tapeir / peer (best of repeats) <= target."""
    best = min(t_ours) / min(t_peer)
    med = statistics.median(t_ours) / statistics.median(t_peer)
    return (f"| {name} | {min(t_ours) * scale:.3f} {unit} | {min(t_peer) * scale:.3f} {unit} | {best:.3f} "
            f"| {med:.3f} | ≤ {target} | {harness.verdict(best, target)} |"), best <= target


def mlp_input(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    return x, rng.integers(0, SIZES[-1], BATCH).astype(np.int64)


def infer_tapeir():
    p, (x, _) = make_params(), mlp_input(1)
    g = tp.trace(lambda x: mlp(p, x), tp.Spec(("B", SIZES[0])))  # a dynamic batch, as torch's export
    ours = tp.compile(g, backend="onnxruntime", intra_op_num_threads=THREADS)
    return lambda: ours(x)


def infer_torch():
    import torch

    p, (x, _) = make_params(), mlp_input(1)
    peer = session(torch_export(torch_mlp(p), (torch.from_numpy(x),), input_names=["x"], output_names=["logits"],
                                dynamic_axes={"x": {0: "B"}}), THREADS)
    return lambda: peer.run(None, {"x": x})


def train_tapeir():
    p, (x, y) = make_params(), mlp_input(2)
    ours = tp.compile(tp.value_and_grad(tp.trace(mlp_loss, p, x, y)), backend="onnxruntime",
                      intra_op_num_threads=THREADS)
    return lambda: ours(p, x, y)


def train_torch():
    import torch

    p, (x, y) = make_params(), mlp_input(2)
    tp_ = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        for v in tp_.values():
            v.grad = None
        h = torch.tanh(tx @ tp_["w1"] + tp_["b1"])
        h = torch.tanh(h @ tp_["w2"] + tp_["b2"])
        loss = torch.nn.functional.cross_entropy(h @ tp_["w3"] + tp_["b3"], ty)
        loss.backward()
        return loss.detach(), {k: v.grad for k, v in tp_.items()}
    return torch_step


def chain_inputs():
    return np.linspace(-1, 1, 4, dtype=np.float32), np.full(4, 0.5, np.float32)


def export_tapeir():
    g = tp.trace(chain_fn, *chain_inputs())
    return lambda: tp.to_onnx(g)


def export_trace_tapeir():
    x, y = chain_inputs()
    return lambda: tp.to_onnx(tp.trace(chain_fn, x, y))


def export_torch():
    import torch

    module, targs = torch_chain(), tuple(torch.from_numpy(a) for a in chain_inputs())
    return lambda: torch_export(module, targs)


CONTENDERS = {"infer-tapeir": infer_tapeir, "infer-torch": infer_torch, "train-tapeir": train_tapeir,
              "train-torch": train_torch, "export-tapeir": export_tapeir, "export-trace-tapeir": export_trace_tapeir,
              "export-torch": export_torch}


def check():
    """The contenders compute the same things (run once, in the parent, untimed)."""
    np.testing.assert_allclose(infer_tapeir()(), infer_torch()()[0], rtol=1e-4, atol=1e-5)
    (value, grads), (t_value, t_grads) = train_tapeir()(), train_torch()()
    np.testing.assert_allclose(value, t_value.numpy(), rtol=1e-5)
    for k in grads:
        np.testing.assert_allclose(grads[k], t_grads[k].numpy(), rtol=1e-3, atol=1e-6)
    x, y = chain_inputs()
    g = tp.trace(chain_fn, x, y)
    assert len(g.nodes) == CHAIN
    a = session(tp.to_onnx(g).SerializeToString(), 1).run(None, {"x": x, "y": y})[0]
    peer = session(export_torch()(), 1)
    b = peer.run(None, dict(zip([i.name for i in peer.get_inputs()], (x, y))))[0]
    np.testing.assert_allclose(a, b, rtol=1e-5)


def chain_fn(x, y):
    ops = [lambda x: x * C_MUL, lambda x: x + C_ADD, tp.tanh, lambda x: x * y, lambda x: x - C_SUB, tp.exp]
    for i in range(CHAIN):
        x = ops[i % PERIOD](x)
    return x


def torch_chain():
    import torch

    class Chain(torch.nn.Module):
        def forward(self, x, y):
            ops = [lambda x: x * C_MUL, lambda x: x + C_ADD, torch.tanh, lambda x: x * y,
                   lambda x: x - C_SUB, torch.exp]
            for i in range(CHAIN):
                x = ops[i % PERIOD](x)
            return x

    return Chain()


def main():
    child = harness.child_args()
    if child:
        return harness.run_child(CONTENDERS, child[0])
    args = harness.parent_args(__doc__)
    try:
        import onnxruntime
        import torch
    except ImportError as e:
        print(f"{e.name or e} not installed: every row here needs onnxruntime and PyTorch; all 3 targets skipped")
        return 0
    rounds, repeats = (2, 3) if args.quick else (5, 10)
    load = harness.load_note()  # before our own children add to it
    threads = torch.get_num_threads()
    os.environ["TAPEIR_BENCH_THREADS"] = str(threads)
    global THREADS
    THREADS = threads
    print(f"tapeir {tp.__version__}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
          f"{threads} threads; each contender in its own process, {rounds} rounds x {repeats} repeats")
    print(load + "\n")
    check()
    # torch's export takes ~5 s a call: 2 rounds of one call each (after a warm-up call)
    plan = {"infer-tapeir": (repeats, 20), "infer-torch": (repeats, 20), "train-tapeir": (repeats, 5),
            "train-torch": (repeats, 5), "export-tapeir": (repeats, 1),
            "export-trace-tapeir": (max(2, repeats // 4), 1, 3), "export-torch": (1, 1, 2)}
    t = harness.isolated(__file__, plan, rounds)
    rows = [row("inference MLP 784-512-512-10, batch 256 (onnxruntime)", t["infer-tapeir"], t["infer-torch"], 1.0),
            row("train step fwd+bwd (tapeir in onnxruntime vs torch eager)", t["train-tapeir"], t["train-torch"], 0.9),
            row("export 10k-op chain: tp.to_onnx vs torch.onnx.export", t["export-tapeir"], t["export-torch"], 0.1,
                unit="s", scale=1),
            row("export 10k-op chain: tp.trace + tp.to_onnx vs torch.onnx.export", t["export-trace-tapeir"],
                t["export-torch"], 0.1, unit="s", scale=1)]
    print("| benchmark | tapeir (best) | peer (best) | ratio (best) | ratio (median) | target | verdict |")
    print("|---|---|---|---|---|---|---|")
    for text, _ in rows:
        print(text)
    targets = rows[:3]  # the trace + export row is for information
    print(f"\n{sum(m for _, m in targets)}/{len(targets)} targets met")
    if args.interference:
        print()
        names = ("infer-tapeir", "infer-torch", "train-tapeir", "train-torch")
        harness.interference({k: CONTENDERS[k]() for k in names},
                             [("train-torch", "train-tapeir"), ("train-tapeir", "train-torch"),
                              ("infer-tapeir", "train-torch"), ("infer-torch", "infer-tapeir")], 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
