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


# ---- issue 8, item 3: the buffer cache is bounded by bytes ---------------------------------

def _wide():
    return tp.trace(lambda x: tp.tanh(x * 2.0 + 1.0) * x, tp.Spec(("B", 256)))


@pytest.mark.parametrize("optimize", [False, True])  # unfused nodes' buffers; one fused node's scratch
def test_bindings_seen_once_keep_no_buffers(optimize):
    """A stream of distinct batch sizes (each call's buffers needed once) holds nothing after
    its calls: measured by tracemalloc (numpy reports its allocations there). The first call
    is outside the measure: a fused node's block scratch is made then and is a fixed size per
    thread (backends/numpy_fused.py rule 4), whatever the batch sizes that follow."""
    import tracemalloc

    f = tp.compile(_wide(), optimize=optimize)
    xs = [np.ones((b, 256), np.float32) for b in range(1000, 1010)]  # ~1 MB each
    tracemalloc.start()
    try:
        f(np.ones((999, 256), np.float32))
        before = tracemalloc.get_traced_memory()[0]
        for x in xs:
            f(x)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert f.cached_bytes == 0
    assert held < 200_000, f"{held} bytes still held after ten calls of distinct batch sizes"


def test_a_recurring_binding_is_pooled_within_the_byte_bound():
    f = tp.compile(_wide(), optimize=False)  # unfused: the plan's buffers are what is pooled
    x = np.ones((1000, 256), np.float32)
    want = f(x)
    assert f.cached_bytes == 0                   # first call: nothing outlives it
    np.testing.assert_array_equal(f(x), want)    # second call: pooled
    assert 0 < f.cached_bytes <= numpy_memory.CACHE_BYTES
    np.testing.assert_array_equal(f(x), want)


def test_the_byte_bound_evicts_least_recently_used_plans():
    f = tp.compile(_wide(), optimize=False, buffer_cache_bytes=3 << 20)  # one plan takes ~2 MB here
    xs = {b: np.ones((b, 256), np.float32) for b in (1000, 1001, 1002)}
    for b in (1000, 1000, 1001, 1001, 1002, 1002, 1000):
        f(xs[b])
        assert f.cached_bytes <= 3 << 20
    assert f.cached_bytes > 0
    big = tp.compile(_wide(), optimize=False, buffer_cache_bytes=1 << 20)  # smaller than one plan: runs unpooled
    for _ in range(3):
        np.testing.assert_array_equal(big(xs[1000]), f(xs[1000]))
    assert big.cached_bytes == 0
    none = tp.compile(_wide(), optimize=False, buffer_cache_bytes=0)
    none(xs[1000]), none(xs[1000])
    assert none.cached_bytes == 0


def test_threads_share_one_byte_bound():
    f = tp.compile(_wide(), optimize=False, buffer_cache_bytes=5 << 20)
    x = np.ones((1000, 256), np.float32)
    want = f(x)
    seen, alive = [], []
    # the action runs once all six threads have arrived and before any goes on to end
    done = threading.Barrier(6, action=lambda: alive.append(f.cached_bytes))

    def work():
        for _ in range(5):
            np.testing.assert_array_equal(f(x), want)
            seen.append(f.cached_bytes)
        done.wait()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 30 and max(seen) <= 5 << 20
    assert 0 < alive[0] <= 5 << 20


@pytest.mark.parametrize("bad", [-1, "1GB", 1.5, True])
def test_buffer_cache_bytes_must_be_a_byte_count(bad):
    with pytest.raises(tp.TapeirError, match="buffer_cache_bytes"):
        tp.compile(_wide(), optimize=False, buffer_cache_bytes=bad)


def test_a_failed_buffer_allocation_is_a_run_error_naming_the_node_and_bytes():
    g = _wide()
    huge = (1 << 40, 1 << 10)  # 4 PiB of float32: no machine has it
    types = [(huge, np.dtype(np.float32))] * len(g.nodes)
    kernels = [np.multiply] * len(g.nodes)
    with pytest.raises(tp.RunError, match=r"cannot allocate 4,503,599,627,370,496 bytes .* node 0 \(mul\)"):
        numpy_memory.plan_buffers(g.nodes, [], kernels, types)
    assert numpy_memory.plan_buffers(g.nodes, [], kernels, types, max_bytes=1 << 30) is None


def test_an_intermediate_too_large_for_memory_is_a_run_error():
    g = tp.trace(lambda x: (x.reshape(-1, 1) * x.reshape(1, -1)).sum(), tp.Spec(("B",)))
    with pytest.raises(tp.RunError, match=r"mul failed at node .*allocate"):
        tp.compile(g)(np.ones(1 << 23, np.float32))  # a 256 TiB outer product


# ---- issue 8, item 7: every leaf of a result is its own array ------------------------------

def _twice(x):
    y = tp.tanh(x)
    return {"a": y, "b": y, "c": y.reshape(-1), "d": y.T, "x": x, "k": np.ones(3, np.float32) + 0.0}


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_no_two_result_leaves_share_memory(backend):
    x = np.zeros((3, 1), np.float32) + 0.5
    g = tp.trace(_twice, x)
    out = leaves(tp.compile(g, backend=backend)(x))
    for i, a in enumerate(out):
        assert not np.shares_memory(a, x)
        for b in out[i + 1:]:
            assert not np.shares_memory(a, b)
    out[0][...] = 7.0  # an in-place update of one leaf leaves the others alone
    assert all(float(o.flat[0]) != 7.0 for o in out[1:4])


def test_gradients_merged_by_cse_come_back_as_two_arrays():
    g = tp.value_and_grad(tp.trace(lambda a, b: (a * 3.0).sum() + (b * 3.0).sum(), tp.Spec((4,)), tp.Spec((4,))),
                          wrt=(0, 1))
    assert g.outputs[1] is g.outputs[2]  # both gradients are one constant value
    for backend in ("numpy", "onnxruntime"):
        _, (da, db) = tp.compile(g, backend=backend)(np.ones(4, np.float32), np.ones(4, np.float32))
        assert not np.shares_memory(da, db)
        da += 1.0
        np.testing.assert_array_equal(db, np.full(4, 3.0, np.float32))


def test_a_threads_buffers_go_when_the_thread_ends():
    f = tp.compile(_wide(), optimize=False)  # unfused: the plan's buffers are what is pooled
    x = np.ones((1000, 256), np.float32)
    t = threading.Thread(target=lambda: [f(x) for _ in range(3)])
    t.start()
    t.join()
    del t
    import gc

    gc.collect()  # the thread's locals are released when it ends; collect makes it certain here
    assert f.cached_bytes == 0 and not f._plans


def test_fused_nodes_with_several_outputs_get_a_buffer_per_output(monkeypatch):
    """A GELU's fused node has four outputs (two read by the backward pass): each gets a
    buffer, none is shared with another live value, and results never change."""
    monkeypatch.setattr(numpy_memory, "MIN_BYTES", 0)
    x0 = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    w0 = np.random.default_rng(4).standard_normal((6, 6)).astype(np.float32)
    g = tp.value_and_grad(tp.trace(lambda x, w: (tp.gelu(x @ w) * tp.sigmoid(x @ w)).sum(),
                                   tp.Spec((4, 6)), tp.Spec((6, 6))), wrt=(0, 1))
    fused = [n for n in tp.optimize(g).nodes if n.op == "fused" and len(n.outputs) > 1]
    assert fused, "the pipeline made no fused node with several outputs"
    want = leaves(tp.compile(g, buffer_cache_bytes=0)(x0, w0))
    planned, plan_buffers = [], numpy_backend.plan_buffers
    monkeypatch.setattr(numpy_backend, "plan_buffers", lambda *a: planned.append(plan_buffers(*a)) or planned[-1])
    f = tp.compile(g)
    results = [leaves(f(x0 * k, w0)) for k in (1.0, 2.0, 1.0, 1.0)]
    tuples = [b for bufs in planned for b in bufs if isinstance(b, tuple)]
    assert tuples and all(len({id(a) for a in t if a is not None}) == sum(a is not None for a in t) for t in tuples)
    for got in (results[0], results[2], results[3]):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
