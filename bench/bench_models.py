"""Forward + backward of real models exported by torch.onnx.export (TorchScript exporter),
imported with tp.from_onnx(params="inputs"): tapeir's numpy backend, tapeir's onnxruntime
backend and the tp.to_onnx model in a plain onnxruntime.InferenceSession, each against
PyTorch eager (loss.backward()) on the same weights and batch. Plus import time per node.

Models (tests/real_models.py): a ResNet-18-style network (4 stages of 2 basic blocks,
widths 16-128, 32x32 images, batch 8) and a GPT-style decoder (2 layers, width 64, 4 heads,
vocabulary 100, context 32, batch 8). Targets: onnxruntime <= 1.0x torch eager, numpy
backend <= 2x.

    python bench/bench_models.py [--quick]
"""
from __future__ import annotations

import io
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import harness  # noqa: E402  (puts this checkout first on sys.path)

import tapeir as tp  # noqa: E402


def _model(name):
    import torch
    import real_models as R

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "resnet":
        m = R._randomize_bn(R.ResNet(widths=(16, 32, 64, 128), blocks=2)).eval()
        return m, rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    m = R._randomize_bn(R.GPT(vocab=100, d=64, heads=4, layers=2, context=32)).eval()
    return m, rng.integers(0, 100, (8, 32)).astype(np.int64)


def _imported(name):
    import torch
    from onnx import load_from_string, numpy_helper

    model, x = _model(name)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), f, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    proto = load_from_string(f.getvalue())
    dt = float("inf")
    for _ in range(3):  # best of 3: the first call also imports (and may compile) the importer's modules
        t0 = time.perf_counter()
        g = tp.from_onnx(proto, params="inputs")
        dt = min(dt, time.perf_counter() - t0)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    params = [inits[n] for n in g.arg_names[1:]]
    w = np.random.default_rng(1).standard_normal(model(torch.from_numpy(x)).shape).astype(np.float32)
    lg = tp.trace(lambda *a: tp.sum(tp.call(g, *a[:-1]) * a[-1]), x, *params, w, arg_names=[*g.arg_names, "w"])
    wrt = tuple(i for i, v in enumerate(g.inputs) if v.type.dtype == "f32")
    return model, x, w, tp.value_and_grad(lg, wrt=wrt), [x, *params, w], dt, len(proto.graph.node)


def _tapeir(name, backend):
    def setup():
        _, _, _, vg, args, _, _ = _imported(name)
        f = tp.compile(vg, backend=backend)
        return lambda: f(*args)
    return setup


def _plain_ort(name):
    def setup():
        import onnxruntime as ort

        _, _, _, vg, args, _, _ = _imported(name)
        m = tp.to_onnx(vg)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(m.graph.input, args)}
        return lambda: sess.run(None, feeds)
    return setup


def _torch(name):
    def setup():
        import torch

        model, x, w, _, _, _, _ = _imported(name)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)

        def step():
            model.zero_grad()
            (model(tx) * tw).sum().backward()
        return step
    return setup


CONTENDERS = {f"{m}-{k}": fn(m) if k in ("ort", "torch") else fn(m, k)
              for m in ("resnet", "gpt")
              for k, fn in (("numpy", _tapeir), ("onnxruntime", _tapeir), ("ort", lambda m: _plain_ort(m)),
                            ("torch", _torch))}


def main():
    child = harness.child_args()
    if child:
        return harness.run_child(CONTENDERS, child[0])
    args = harness.parent_args(__doc__)
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        print(f"{e.name or e} not installed: every row here needs onnxruntime and PyTorch; all targets skipped")
        return 0
    rounds, repeats = (2, 3) if args.quick else (3, 5)
    print(harness.load_note() + "\n")
    for m in ("resnet", "gpt"):
        *_, dt, nodes = _imported(m)
        print(f"import {m}: {nodes} ONNX nodes in {dt * 1e3:.0f} ms = {dt / nodes * 1e6:.0f} us/node")
    plan = {k: (repeats, 2) for k in CONTENDERS}
    t = harness.isolated(__file__, plan, rounds)
    print("\n| model | contender | best ms | vs torch eager (best) | target | verdict |")
    print("|---|---|---|---|---|---|")
    met = total = 0
    for m in ("resnet", "gpt"):
        ref = min(t[f"{m}-torch"])
        for k, target in (("numpy", 2.0), ("onnxruntime", 1.0), ("ort", 1.0)):
            best = min(t[f"{m}-{k}"])
            ok = best / ref <= target
            met, total = met + ok, total + 1
            print(f"| {m} | {k} | {best * 1e3:.2f} | {best / ref:.2f}x | <= {target} | {harness.verdict(best / ref, target)} |")
        print(f"| {m} | torch eager | {ref * 1e3:.2f} | 1.00x | | |")
    print(f"\n{met}/{total} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
