"""Train an MLP on the UCI digits with tapeir's numpy backend and hand-written SGD.

    python examples/mlp_numpy.py            # ~97% test accuracy in about a second

The loss is traced once; `tp.value_and_grad` turns it into a graph returning the loss
and the gradients of every weight; the numpy backend runs that graph each step.
"""
from __future__ import annotations

import os

import numpy as np

import tapeir as tp

# the UCI digits ship with tapeir as package data (tapeir/data/README.md: source and license)
DATA = os.path.join(os.path.dirname(os.path.abspath(tp.__file__)), "data", "digits.npz")


def mlp_loss(params, x, y):
    h = tp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return tp.cross_entropy(logits, y)


def predict(params, x):
    h = tp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def load_digits(seed=0):
    d = np.load(DATA)
    x = d["images"].reshape(len(d["images"]), -1).astype(np.float32) / 16.0
    y = d["labels"].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 5
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def init_params(rng, sizes=(64, 64, 10)):
    (i, h, o) = sizes
    return {
        "w1": (rng.standard_normal((i, h)) / np.sqrt(i)).astype(np.float32), "b1": np.zeros(h, np.float32),
        "w2": (rng.standard_normal((h, o)) / np.sqrt(h)).astype(np.float32), "b2": np.zeros(o, np.float32),
    }


def train(epochs=30, batch=64, lr=0.2, seed=0, verbose=True):
    (xtr, ytr), (xte, yte) = load_digits(seed)
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    loss_g = tp.trace(mlp_loss, params, tp.Spec(("B", 64)), tp.Spec(("B",), "int64"))
    step = tp.compile(tp.value_and_grad(loss_g, wrt=0))
    logits = tp.compile(tp.trace(predict, params, tp.Spec(("B", 64))))
    for epoch in range(epochs):
        order = rng.permutation(len(xtr))
        total = 0.0
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            loss, grads = step(params, xtr[idx], ytr[idx])
            for name in params:  # plain SGD, by hand
                params[name] = params[name] - np.float32(lr) * grads[name]
            total += float(loss) * len(idx)
        acc = float((logits(params, xte).argmax(axis=1) == yte).mean())
        if verbose and (epoch % 5 == 4 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}  train loss {total / len(xtr):.4f}  test accuracy {acc:.3f}")
    return params, acc


if __name__ == "__main__":
    _, accuracy = train()
    print(f"final test accuracy: {accuracy:.3f}")
