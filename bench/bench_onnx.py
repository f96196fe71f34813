"""ONNX export and onnxruntime: tapeir's exports vs PyTorch's, side by side.

    python bench/bench_onnx.py            # 31 interleaved repeats (3 for torch's export)
    python bench/bench_onnx.py --quick    # 7 repeats (1 for torch's export)

Three comparisons, each timed in one process with the repeats interleaved:

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
to as well). Results are checked against each other before timing. Ratios use the best
of the repeats; the median ratio is shown too.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings

import numpy as np

import tapeir as tp

SIZES = (784, 512, 512, 10)
BATCH = 256
CHAIN = 10_000
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


def interleave(fns: dict, repeats: int, inner: int) -> dict:
    """Seconds per call of each fn: one list entry per repeat, the fns taking turns."""
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm up
        fn()
    order = list(fns.items())
    for r in range(repeats):
        for k, fn in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[k].append((time.perf_counter() - t) / inner)
    return times


def row(name, t_ours, t_peer, target, unit="ms", scale=1e3):
    """A table row; the target is met when tapeir / peer (best of repeats) <= target."""
    best = min(t_ours) / min(t_peer)
    med = statistics.median(t_ours) / statistics.median(t_peer)
    met = best <= target
    return (f"| {name} | {min(t_ours) * scale:.3f} {unit} | {min(t_peer) * scale:.3f} {unit} | {best:.3f} "
            f"| {med:.3f} | <= {target} | {'yes' if met else 'NO'} |"), met


def bench_inference(p, threads, repeats):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    g = tp.trace(lambda x: mlp(p, x), tp.Spec(("B", SIZES[0])))  # a dynamic batch, as torch's export
    ours = tp.compile(g, backend="onnxruntime", intra_op_num_threads=threads)
    import torch

    peer = session(torch_export(torch_mlp(p), (torch.from_numpy(x),), input_names=["x"], output_names=["logits"],
                                dynamic_axes={"x": {0: "B"}}), threads)
    np.testing.assert_allclose(ours(x), peer.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    t = interleave({"tapeir": lambda: ours(x), "torch": lambda: peer.run(None, {"x": x})}, repeats, 20)
    return row("inference MLP 784-512-512-10, batch 256 (onnxruntime)", t["tapeir"], t["torch"], 1.0)


def bench_train_step(p, threads, repeats):
    import torch

    rng = np.random.default_rng(2)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.int64)
    vg = tp.value_and_grad(tp.trace(mlp_loss, p, x, y))
    ours = tp.compile(vg, backend="onnxruntime", intra_op_num_threads=threads)
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

    value, grads = ours(p, x, y)
    t_value, t_grads = torch_step()
    np.testing.assert_allclose(value, t_value.numpy(), rtol=1e-5)
    for k in p:
        np.testing.assert_allclose(grads[k], t_grads[k].numpy(), rtol=1e-3, atol=1e-6)
    t = interleave({"tapeir": lambda: ours(p, x, y), "torch": torch_step}, repeats, 5)
    return row("train step fwd+bwd (tapeir in onnxruntime vs torch eager)", t["tapeir"], t["torch"], 0.9)


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


def bench_export(torch_repeats, repeats):
    import torch

    x = np.linspace(-1, 1, 4, dtype=np.float32)
    y = np.full(4, 0.5, np.float32)
    g = tp.trace(chain_fn, x, y)
    assert len(g.nodes) == CHAIN
    ours = tp.to_onnx(g)
    module, targs = torch_chain(), (torch.from_numpy(x), torch.from_numpy(y))
    peer = torch_export(module, targs)
    a = session(ours.SerializeToString(), 1).run(None, {"x": x, "y": y})[0]
    b = session(peer, 1).run(None, dict(zip([i.name for i in session(peer, 1).get_inputs()], (x, y))))[0]
    np.testing.assert_allclose(a, b, rtol=1e-5)
    t_ours = interleave({"to_onnx": lambda: tp.to_onnx(g)}, repeats, 1)["to_onnx"]
    t_trace = interleave({"trace": lambda: tp.to_onnx(tp.trace(chain_fn, x, y))}, max(3, repeats // 4), 1)["trace"]
    t_peer = interleave({"torch": lambda: torch_export(module, targs)}, torch_repeats, 1)["torch"]
    r1 = row("export 10k-op chain: tp.to_onnx vs torch.onnx.export", t_ours, t_peer, 0.1, unit="s", scale=1)
    r2 = row("export 10k-op chain: tp.trace + tp.to_onnx vs torch.onnx.export", t_trace, t_peer, 0.1,
             unit="s", scale=1)
    return r1, r2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    import onnxruntime
    import torch

    repeats = 7 if args.quick else 31
    threads = torch.get_num_threads()
    p = make_params()
    print(f"tapeir {tp.__version__}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
          f"{threads} threads, {repeats} repeats\n")
    rows = [bench_inference(p, threads, repeats), bench_train_step(p, threads, repeats),
            *bench_export(1 if args.quick else 3, repeats)]
    print("| benchmark | tapeir (best) | peer (best) | ratio (best) | ratio (median) | target | met |")
    print("|---|---|---|---|---|---|---|")
    for text, _ in rows:
        print(text)
    targets = rows[:3]  # the trace + export row is for information
    print(f"\n{sum(m for _, m in targets)}/{len(targets)} targets met")


if __name__ == "__main__":
    main()
