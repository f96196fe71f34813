"""Train the digits MLP with its training step exported to ONNX and run in onnxruntime.

    python examples/mlp_onnxruntime.py        # ~97% test accuracy; writes mlp_step.onnx

The same traced loss as examples/mlp_numpy.py; `tp.value_and_grad` gives the training
step as a graph, `tp.save_onnx` writes it as a standard ONNX model (inputs params.w1,
..., x, y; outputs value, grad.params.w1, ...), and plain onnxruntime runs it each step.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort

import tapeir as tp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp_numpy import init_params, load_digits, mlp_loss  # noqa: E402


def train(epochs=30, batch=64, lr=0.2, seed=0, path="mlp_step.onnx", verbose=True):
    (xtr, ytr), (xte, yte) = load_digits(seed)
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    g = tp.trace(mlp_loss, params, tp.Spec(("B", 64)), tp.Spec(("B",), "int64"))
    tp.save_onnx(tp.value_and_grad(g), path)

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # stock onnxruntime
    grad_names = [o.name for o in session.get_outputs()][1:]                   # grad.params.b1, ...
    for epoch in range(epochs):
        order = rng.permutation(len(xtr))
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            feeds = {f"params.{n}": v for n, v in params.items()} | {"x": xtr[idx], "y": ytr[idx]}
            loss, *grads = session.run(None, feeds)
            for name, gr in zip(grad_names, grads):
                key = name.removeprefix("grad.params.")
                params[key] = params[key] - np.float32(lr) * gr
        if verbose and (epoch % 10 == 9):
            print(f"epoch {epoch + 1:3d}  last batch loss {float(loss):.4f}")
    h = np.tanh(xte @ params["w1"] + params["b1"])
    acc = float(((h @ params["w2"] + params["b2"]).argmax(1) == yte).mean())
    return params, acc


if __name__ == "__main__":
    _, accuracy = train()
    print(f"final test accuracy: {accuracy:.3f} (training step run by onnxruntime from mlp_step.onnx)")
