"""`tapeir demo`: trace an MLP loss, print its IR and its backward IR, train it on digits."""
from __future__ import annotations

import os

import numpy as np

from . import Spec, compile, cross_entropy, parse, tanh, trace, value_and_grad, verify

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.npz")


def mlp_loss(params, x, y):
    h = tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return cross_entropy(logits, y)


def main(epochs: int = 30) -> int:
    rng = np.random.default_rng(0)
    params = {
        "w1": (rng.standard_normal((64, 64)) / 8).astype(np.float32), "b1": np.zeros(64, np.float32),
        "w2": (rng.standard_normal((64, 10)) / 8).astype(np.float32), "b2": np.zeros(10, np.float32),
    }
    g = trace(mlp_loss, params, Spec(("B", 64)), Spec(("B",), "int64"))
    print("# the traced loss\n" + str(g))
    vg = value_and_grad(g)
    verify(vg)
    assert parse(str(vg)) == vg, "text form did not round-trip"
    print(f"# its value_and_grad graph: {len(vg.nodes)} nodes (print it with print(tp.value_and_grad(g)))\n")
    if not os.path.exists(DATA):
        print(f"digits data not found at {DATA}; skipping training")
        return 0
    d = np.load(DATA)
    x = d["images"].reshape(-1, 64).astype(np.float32) / 16.0
    y = d["labels"].astype(np.int64)
    order = rng.permutation(len(x))
    test, train = order[:len(x) // 5], order[len(x) // 5:]
    step = compile(vg)
    for epoch in range(epochs):
        for k in range(0, len(train), 64):
            idx = train[k:k + 64]
            loss, grads = step(params, x[idx], y[idx])
            for name in params:
                params[name] = params[name] - np.float32(0.2) * grads[name]
        rng.shuffle(train)
    h = np.tanh(x[test] @ params["w1"] + params["b1"])
    acc = float(((h @ params["w2"] + params["b2"]).argmax(1) == y[test]).mean())
    print(f"trained {epochs} epochs of SGD on {len(train)} digits with the numpy backend: "
          f"test accuracy {acc:.3f}")
    return 0
