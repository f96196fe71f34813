"""The numpy backend's memory plan (backends/numpy_memory.py) never changes a result."""
import threading

import numpy as np
import pytest

import tapeir as tp
from support import leaves
from tapeir.backends import numpy_backend, numpy_memory


def _chain(x, w):
    a = tp.tanh(x @ w)                      # pooled
    v = a.T.reshape(-1)[::2]                # views of a pooled buffer...
    b = tp.exp(a * 0.5) + 1.0               # ...while later pooled nodes want buffers
    c = (v * 2.0).sum() + (b[:, 1:] * a[:, :-1]).sum()
    return c, a.T                           # an output that views a pooled buffer


def _mlp(p, x, y):
    h = tp.tanh(x @ p["w1"] + p["b1"])
    return tp.cross_entropy(h @ p["w2"] + p["b2"], y)


def _graphs():
    rng = np.random.default_rng(0)
    p = {"w1": rng.standard_normal((6, 5)).astype(np.float32), "b1": np.zeros(5, np.float32),
         "w2": rng.standard_normal((5, 3)).astype(np.float32), "b2": np.zeros(3, np.float32)}
    chain = tp.trace(_chain, tp.Spec((5, 4)), tp.Spec((4, 6)))
    yield "chain", chain, lambda b: (rng.standard_normal((5, 4)).astype(np.float32),
                                     rng.standard_normal((4, 6)).astype(np.float32))
    yield "chain-grad", tp.value_and_grad(tp.trace(lambda x, w: _chain(x, w)[0], tp.Spec((5, 4)),
                                                   tp.Spec((4, 6))), wrt=(0, 1)), \
        lambda b: (rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32))
    mlp = tp.value_and_grad(tp.trace(_mlp, p, tp.Spec(("B", 6)), tp.Spec(("B",), "int64")))
    yield "mlp-grad", mlp, lambda b: (p, rng.standard_normal((b, 6)).astype(np.float32), rng.integers(0, 3, b))


@pytest.mark.parametrize("name,g,make", list(_graphs()), ids=[n for n, _, _ in _graphs()])
def test_planned_buffers_give_the_same_results(monkeypatch, name, g, make):
    inputs = [make(b) for b in (3, 7, 3)]
    monkeypatch.setattr(numpy_memory, "MIN_BYTES", 1 << 60)  # nothing pooled: the reference
    want = [leaves(tp.compile(g)(*a)) for a in inputs]
    monkeypatch.setattr(numpy_memory, "MIN_BYTES", 0)        # everything poolable is pooled
    planned, plan_buffers = [], numpy_backend.plan_buffers
    monkeypatch.setattr(numpy_backend, "plan_buffers", lambda *a: planned.append(plan_buffers(*a)) or planned[-1])
    f = tp.compile(g)
    got = [leaves(f(*a)) for a in inputs]                   # later calls reuse the buffers
    assert any(b is not None for bufs in planned for b in bufs), "the plan pooled nothing"
    for gs, ws in zip(got, want):                            # earlier results not overwritten
        for a, b in zip(gs, ws):
            np.testing.assert_array_equal(a, b)


def test_threads_have_their_own_buffers(monkeypatch):
    monkeypatch.setattr(numpy_memory, "MIN_BYTES", 0)
    _, g, make = next(_graphs())
    f = tp.compile(g)
    inputs = [make(5) for _ in range(4)]
    want = [leaves(f(*a)) for a in inputs]
    got = [None] * 4

    def work(k):
        for _ in range(50):
            got[k] = leaves(f(*inputs[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for gs, ws in zip(got, want):
        for a, b in zip(gs, ws):
            np.testing.assert_array_equal(a, b)


def test_outputs_are_freed_when_the_caller_drops_them():
    """No reference cycle may hold a call's outputs until the cyclic GC runs."""
    import gc
    import weakref

    _, g, make = list(_graphs())[2]
    f = tp.compile(g)
    args = make(4)
    gc.disable()
    try:
        value, grads = f(*args)
        refs = [weakref.ref(a) for a in [value, *grads.values()]]
        del value, grads
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


def test_outputs_never_alias_the_callers_inputs():
    a = np.ones((2, 3), np.float32)
    g = tp.trace(lambda x: (x, x.reshape(-1), x.T[:, 1:], x * 2.0), a)
    for out in tp.run(g, a):
        assert not np.shares_memory(out, a)
        out[...] = 7.0  # writable, and writing leaves the caller's array alone
    assert (a == 1.0).all()
