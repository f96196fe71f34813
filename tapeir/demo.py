"""`tapeir demo`: train an MLP on the digits end to end, in numpy and in onnxruntime.

1. trace the loss and print its IR; derive the backward pass and the Adam training step as IR;
2. train with `tp.fit` on the numpy backend and again, from the same start, on the
   onnxruntime backend (one ONNX graph per step), with a progress bar and the test
   accuracy after each epoch;
3. bake the trained weights into an inference graph (`tp.bind`), export it to ONNX, run it
   in a plain onnxruntime.InferenceSession and check its predictions against tapeir's;
4. write the IR dumps (forward, backward, optimized step), the step and the model as ONNX
   into the output directory (default: a fresh `tapeir-demo[-N]` folder in the cwd).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import (
    Spec, bind, compile, cross_entropy, fit, init_state, optim, optimize, parse, save, save_onnx, tanh, trace,
    training_step, value_and_grad,
)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.npz")


def predict(params, x):
    h = tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def mlp_loss(params, x, y):
    return cross_entropy(predict(params, x), y)


def fresh_dir(base: str = "tapeir-demo") -> str:
    """`base` in the cwd, or `base-2`, `base-3`, ... : the first that does not exist yet."""
    path, k = os.path.abspath(base), 1
    while os.path.exists(path):
        k += 1
        path = os.path.abspath(f"{base}-{k}")
    return path


def main(epochs: int = 15, out_dir: str | None = None, progress: bool | None = None) -> int:
    t_start = time.perf_counter()
    out_dir = os.path.abspath(out_dir) if out_dir else fresh_dir()
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    params = {
        "w1": (rng.standard_normal((64, 64)) / 8).astype(np.float32), "b1": np.zeros(64, np.float32),
        "w2": (rng.standard_normal((64, 10)) / 8).astype(np.float32), "b2": np.zeros(10, np.float32),
    }
    g = trace(mlp_loss, params, Spec(("B", 64)), Spec(("B",), "int64"))
    print("# the traced loss\n" + str(g))
    vg = value_and_grad(g)
    assert parse(str(vg)) == vg, "text form did not round-trip"
    opt = optim.Adam(lr=1e-2)
    step = training_step(g, optimizer=opt)
    optimized = optimize(step)  # simplify, then fuse the elementwise chains (Adam's update is one group)
    save(g, os.path.join(out_dir, "forward.tapeir"))
    save(vg, os.path.join(out_dir, "backward.tapeir"))
    save(optimized, os.path.join(out_dir, "optimized_step.tapeir"))
    save_onnx(optimized, os.path.join(out_dir, "training_step.onnx"))
    fused = sum(n.op == "fused" for n in optimized.nodes)
    print(f"# backward: {len(vg.nodes)} nodes; Adam training step: {len(step.nodes)} nodes, one graph "
          f"(params, opt_state, lr, x, y) -> (loss, new_params, new_opt_state); optimized: "
          f"{len(optimized.nodes)} nodes, {fused} of them fused\n")

    d = np.load(DATA)
    x = d["images"].reshape(-1, 64).astype(np.float32) / 16.0
    y = d["labels"].astype(np.int64)
    order = rng.permutation(len(x))
    test, train = order[:len(x) // 5], order[len(x) // 5:]
    logits = compile(trace(predict, params, Spec(("B", 64))))

    def accuracy(p):
        return {"test_acc": float((logits(p, x[test]).argmax(1) == y[test]).mean())}

    total = epochs * -(-len(train) // 64)

    def cosine(k):  # lr is an input of the step: a schedule never retraces
        return opt.lr * 0.5 * (1.0 + math.cos(math.pi * k / max(total, 1)))

    results = {}
    for backend in ("numpy", "onnxruntime"):
        print(f"training {epochs} epochs of Adam (lr {opt.lr}, cosine schedule, batch 64) on {len(train)} digits, "
              f"{backend} backend:")
        t0 = time.perf_counter()
        results[backend] = fit(optimized, params, init_state(opt, params), (x[train], y[train]), lr=cosine,
                               epochs=epochs, batch_size=64, seed=1, backend=backend, evaluate=accuracy,
                               progress=progress)
        acc = results[backend].history[-1]["test_acc"] if epochs else accuracy(params)["test_acc"]
        print(f"  {backend}: test accuracy {acc:.3f} in {time.perf_counter() - t0:.1f} s\n")
    trained = results["onnxruntime"].params
    gap = max(float(np.abs(trained[k] - results["numpy"].params[k]).max()) for k in trained)
    print(f"numpy and onnxruntime training agree: largest parameter difference {gap:.1e}")

    model = bind(trace(predict, params, Spec(("B", 64))), 0, trained)
    model_path = os.path.join(out_dir, "model.onnx")
    save_onnx(model, model_path)
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    ort_pred = session.run(None, {"x": x[test]})[0].argmax(1)
    ours = logits(trained, x[test]).argmax(1)
    same = int((ort_pred == ours).sum())
    acc = float((ort_pred == y[test]).mean())
    print(f"exported the trained model (weights baked in by tp.bind) to {model_path}; a plain "
          f"onnxruntime.InferenceSession predicts the same class for {same}/{len(test)} test digits; "
          f"test accuracy {acc:.3f}")
    print(f"wrote forward.tapeir, backward.tapeir, optimized_step.tapeir, training_step.onnx, model.onnx "
          f"to {out_dir} ({time.perf_counter() - t_start:.1f} s in all)")
    return 0 if same == len(test) else 1
