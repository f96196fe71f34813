"""`tapeir demo`: trace a small MLP, print its IR, check it round-trips, run it in numpy."""
from __future__ import annotations

import numpy as np

from . import compile, cross_entropy, parse, tanh, trace, verify, Spec


def mlp_loss(params, x, y):
    h = tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return cross_entropy(logits, y)


def main() -> int:
    rng = np.random.default_rng(0)
    params = {
        "w1": (rng.standard_normal((64, 32)) / 8).astype(np.float32), "b1": np.zeros(32, np.float32),
        "w2": (rng.standard_normal((32, 10)) / 6).astype(np.float32), "b2": np.zeros(10, np.float32),
    }
    g = trace(mlp_loss, params, Spec(("B", 64)), Spec(("B",), "int64"))
    print(g)
    verify(g)
    assert parse(str(g)) == g, "text form did not round-trip"
    f = compile(g)
    for batch in (8, 32):
        x = rng.standard_normal((batch, 64)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        print(f"loss on a batch of {batch}: {float(f(params, x, y)):.4f}")
    return 0
