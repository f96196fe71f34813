"""Fused nodes in the numpy backend (backends/numpy_fused.py): blocked, in-place, threaded.

The reference is the same body run unfused (the plain kernels, full-size temporaries):
the fused kernel makes the same ufunc calls in the same order, so results agree bitwise,
on one thread or several, for every block size. Small arrays are forced through the
blocked, threaded path by shrinking the module's block and threshold constants
(`tiny_blocks`), so odd sizes exercise partial blocks and uneven thread shares.
The stable sigmoid/softplus kernels are checked against float64 references in both tails.
"""
from __future__ import annotations

import math
import threading
import tracemalloc

import numpy as np
import pytest

import tapeir as tp
from support import assert_close, rng
from tapeir.backends import numpy_fused
from tapeir.ir import TensorType
from tapeir.ir.builder import Builder
from tapeir.ir.errors import RunError, TapeirError

F16, F32, F64, I64 = np.float16, np.float32, np.float64, np.int64


def fused_graph(fn, *specs, body=None):
    """A graph of one fused node whose body is fn traced at specs (tp.fuse is not needed)."""
    body = body or tp.trace(fn, *specs)
    b = Builder()
    xs = [b.input(TensorType(v.type.dtype, v.type.shape), v.name) for v in body.inputs]
    outs = b.emit("fused", xs, {"body": body})
    return b.build("f", xs, outs, out_tree=body.out_tree)


def bitwise_equal(a, e, what=""):
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape and a.dtype == e.dtype, f"{what}: {a.shape}:{a.dtype} vs {e.shape}:{e.dtype}"
    if a.size == 0:
        return
    k = a.dtype.itemsize
    same = a.reshape(-1).view(np.uint8).reshape(a.size, k) == e.reshape(-1).view(np.uint8).reshape(e.size, k)
    bad = ~same.all(axis=1)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {a.size} elements differ in their bits, first at flat "
                           f"index {int(np.argmax(bad))}: {a.reshape(-1)[np.argmax(bad)]!r} vs "
                           f"{e.reshape(-1)[np.argmax(bad)]!r}")


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 8 elements, threads from 16 elements: small arrays take the blocked, threaded path."""
    monkeypatch.setattr(numpy_fused, "BLOCK_BYTES", 8 * 12)
    monkeypatch.setattr(numpy_fused, "THREADED_BLOCK_BYTES", 8 * 12)
    monkeypatch.setattr(numpy_fused, "MIN_BLOCK", 8)
    monkeypatch.setattr(numpy_fused, "SMALL_ELEMS", 0)
    monkeypatch.setattr(numpy_fused, "THREAD_ELEMS", 16)


def chain(x):
    return tp.softplus(tp.tanh(x) * tp.sigmoid(x) + tp.exp(-x * x)) * 0.5 + x


def agree(fn, specs, args, threads=(1, 2, 3)):
    """Fused (each thread count) vs the same body unfused, bitwise; returns the unfused outputs."""
    with np.errstate(all="ignore"):  # inf * 0 and the like, alike in both (the workers see this errstate too)
        want = tp.compile(tp.trace(fn, *specs))(*args)
    g = fused_graph(fn, *specs)
    for t in threads:
        with np.errstate(all="ignore"):
            got = tp.compile(g, threads=t)(*args)
        for k, (a, e) in enumerate(zip(tp_leaves(got), tp_leaves(want))):
            bitwise_equal(a, e, f"threads={t}, output {k}")
    return want


def tp_leaves(x):
    return list(x) if isinstance(x, (tuple, list)) else [x]


def special(shape, dtype, *key):
    """Normal draws with infinities, NaN, signed zeros and huge values mixed in."""
    x = rng(*key).standard_normal(shape) * 4
    flat = x.reshape(-1)
    extra = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e4, -1e4, 88.0, -88.0, 1e-30]
    flat[: min(len(extra), flat.size)] = extra[: flat.size]
    with np.errstate(over="ignore"):
        return x.astype(dtype)


# ---- agreement with the unfused graph ----------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 7, 8, 63, 1000, 4097])
def test_chain_bitwise_equal_to_unfused_at_odd_sizes(tiny_blocks, n):
    agree(chain, [tp.Spec(("N",))], [special((n,), F32, "chain", n)])


def test_chain_at_default_block_sizes_and_threads():
    # the real constants: a domain big enough for several blocks and threads, rows not a multiple of them
    x = special((301, 1111), F32, "big")
    agree(chain, [tp.Spec(("N", "M"))], [x], threads=(1, 2, 4))


def test_symbolic_dims_one_compile_many_sizes(tiny_blocks):
    g = fused_graph(chain, tp.Spec(("B", 3)))
    f1, f3 = tp.compile(g, threads=1), tp.compile(g, threads=3)
    ref = tp.compile(tp.trace(chain, tp.Spec(("B", 3))))
    for b in [5, 0, 1, 40, 5]:  # back to 5: the cached layout is reused
        x = special((b, 3), F32, "sym", b)
        bitwise_equal(f1(x), ref(x), f"B={b}")
        bitwise_equal(f3(x), ref(x), f"B={b}, 3 threads")


def bias_fn(x, w, b):
    return tp.tanh(x * w + b) - x * b


@pytest.mark.parametrize("shape", [(50, 7), (3, 41), (2, 3, 17), (1, 1)])
def test_broadcasting_operands(tiny_blocks, shape):
    # w broadcasts along the rows, b along the columns: blocks slice each operand only where it is not broadcast
    x = special(shape, F32, "bx", *shape)
    w = rng("bw", *shape).standard_normal(shape[-1:]).astype(F32)
    b = rng("bb", *shape).standard_normal(shape[:-1] + (1,)).astype(F32)
    agree(bias_fn, [tp.Spec(x.shape), tp.Spec(w.shape), tp.Spec(b.shape)], [x, w, b])


def test_non_contiguous_and_leading_axis_blocks(tiny_blocks):
    # a transposed operand is not flat-blockable; a long last axis makes blocks split axis 1 with axis 0 looped
    x = special((40, 3), F32, "nc").T
    y = special((3, 40), F32, "nc2")
    agree(lambda a, c: tp.exp(a) * c + a, [tp.Spec((3, 40)), tp.Spec((3, 40))], [x, y])


def test_constants_that_broadcast(tiny_blocks):
    col = np.arange(6, dtype=F32).reshape(6, 1)
    agree(lambda x: x * col + np.float32(1.5), [tp.Spec((6, 9))], [special((6, 9), F32, "const")])


def composites(x):
    return (tp.leaky_relu(x, 0.1) + tp.elu(x) + tp.gelu(x) + tp.gelu(x, approximate="tanh")
            + tp.relu(x) + tp.clip(x, -1.0, 2.0) + tp.where(x > 0.5, x, -x) + tp.sigmoid(x) + tp.softplus(x)
            + tp.sqrt(tp.abs(x)) + tp.sin(x) * tp.cos(x) + tp.maximum(x, tp.minimum(x, 0.25)))


@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_every_composite_in_place_or_per_block(tiny_blocks, dtype):
    x = (rng("comp", dtype).standard_normal(301) * 3).astype(dtype)
    agree(composites, [tp.Spec((301,), np.dtype(dtype).name)], [x])


def test_erf_and_pow_bodies(tiny_blocks):
    x = rng("erf").uniform(0.1, 3, 77).astype(F32)
    from tapeir.frontend import functions as F
    erf = getattr(tp, "erf", None) or getattr(F, "erf", None)
    fn = (lambda a: erf(a) + a ** 1.5) if erf else (lambda a: a ** 1.5 + a)
    agree(fn, [tp.Spec((77,))], [x])


def test_integer_bodies(tiny_blocks):
    def ints(a, b):
        return tp.maximum(a * b - a, -b) + tp.clip(a, -3.5, 4.5) + tp.abs(-a)
    a = rng("ia").integers(-9, 9, 55).astype(I64)
    b = rng("ib").integers(-9, 9, 55).astype(I64)
    agree(ints, [tp.Spec((55,), "int64"), tp.Spec((55,), "int64")], [a, b])


def test_bool_cast_and_comparison_bodies_several_outputs(tiny_blocks):
    def body(x, y):
        m = (x > y) & (x < 2.0) if hasattr(tp.Tensor, "__and__") else x > y
        z = tp.where(m, x, y)
        return m, z.astype("int32"), z, x <= 0.0
    x, y = special((45,), F32, "bx"), special((45,), F32, "by")
    with np.errstate(invalid="ignore"):  # nan/inf to int32 is undefined (numpy warns)
        agree(body, [tp.Spec((45,)), tp.Spec((45,))], [x, y])


def test_several_outputs_and_a_repeated_output(tiny_blocks):
    def body(x):
        t = tp.tanh(x)
        return t, t * 2.0, t
    x = special((99,), F64, "multi")
    got = agree(body, [tp.Spec((99,), "float64")], [x])
    assert len(got) == 3


# ---- threads, memory, plan -------------------------------------------------------------

def test_concurrent_calls_from_threads_are_independent(tiny_blocks):
    f = tp.compile(fused_graph(chain, tp.Spec(("N",))), threads=2)
    xs = [special((300 + i,), F32, "conc", i) for i in range(4)]
    want = [f(x) for x in xs]
    got = [None] * 4

    def work(i):
        for _ in range(20):
            got[i] = f(xs[i])
    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w in zip(got, want):
        bitwise_equal(g, w, "concurrent call")


def test_no_full_size_temporary():
    # after a warm-up (scratch allocated once per layout), a call allocates its result and block-sized scratch only
    n = 1 << 20
    x = special((n,), F32, "mem")
    f = tp.compile(fused_graph(chain, tp.Spec(("N",))), threads=2)
    f(x)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        y = f(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - y.nbytes < y.nbytes // 8, f"peak {peak} bytes over the {y.nbytes}-byte result"


def test_fused_intermediate_writes_into_a_planned_buffer():
    # a single-output fused node feeding a matmul: the memory plan hands it a buffer (out=); same result
    def fn(x, w):
        return tp.matmul(x, w)
    body = tp.trace(chain, tp.Spec(("N", 64)))
    b = Builder()
    x = b.input(TensorType("f32", ("N", 64)), "x")
    w = b.input(TensorType("f32", (64, 8)), "w")
    h, = b.emit("fused", [x], {"body": body})
    y, = b.emit("matmul", [h, w], {})
    g = b.build("g", [x, w], [y])
    xs = rng("plan").standard_normal((300, 64)).astype(F32)
    ws = rng("w").standard_normal((64, 8)).astype(F32)
    ref = tp.compile(tp.trace(lambda a, c: tp.matmul(chain(a), c), tp.Spec(("N", 64)), tp.Spec((64, 8))))
    f = tp.compile(g, threads=2)
    for _ in range(2):  # the second call reuses the buffer
        bitwise_equal(f(xs, ws), ref(xs, ws), "fused -> matmul")


# ---- errors ------------------------------------------------------------------------------

def test_a_failing_body_step_names_the_body_node_and_its_line(tiny_blocks):
    def body(x):
        return tp.log(x) * 2.0  # FAILING-LINE
    f = tp.compile(fused_graph(body, tp.Spec(("N",))), threads=3)
    x = np.ones(100, F32)
    x[-1] = -1.0  # in the last block: a worker thread's, which must see the caller's errstate
    with np.errstate(invalid="raise"):
        with pytest.raises(RunError) as e:
            f(x)
    msg = str(e.value)
    assert "log failed at node 0 of the body of fused node 0" in msg, msg
    assert "test_numpy_fused.py" in msg and "(100,)" in msg, msg


def test_bad_threads_option():
    g = fused_graph(chain, tp.Spec((4,)))
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(TapeirError, match="threads"):
            tp.compile(g, threads=bad)
    with pytest.raises(TapeirError, match="its options are buffer_cache_bytes, threads"):
        tp.compile(g, thread=2)


def test_default_threads_from_env(monkeypatch):
    monkeypatch.setenv("TAPEIR_THREADS", "3")
    assert numpy_fused.default_threads() == 3
    monkeypatch.delenv("TAPEIR_THREADS")
    assert numpy_fused.default_threads() >= 1


# ---- the stable sigmoid / softplus, both tails --------------------------------------------

def _sigmoid64(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _softplus64(v):
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


@pytest.mark.parametrize("dtype", [F16, F32, F64])
@pytest.mark.parametrize("name", ["sigmoid", "softplus"])
def test_stable_kernels_keep_relative_precision_in_both_tails(dtype, name):
    top = {F16: 6e4, F32: 1e4, F64: 1e4}[dtype]
    mags = np.logspace(-8, math.log10(top), 600)
    x = np.concatenate([-mags[::-1], [0.0], mags]).astype(dtype)
    ref64 = np.array([(_sigmoid64 if name == "sigmoid" else _softplus64)(float(v)) for v in x])
    fn = getattr(tp, name)
    for g in (tp.trace(fn, tp.Spec(x.shape, np.dtype(dtype).name)), fused_graph(fn, tp.Spec(x.shape, np.dtype(dtype).name))):
        got = tp.run(g, x)  # RuntimeWarnings are errors in this suite: no overflow anywhere
        assert np.isfinite(got).all()
        # relative in both tails: the absolute floor is the smallest normal (subnormal results round coarsely)
        assert_close(got, ref64, dtype=dtype, scale=np.finfo(dtype).tiny, msg=f"{name} {np.dtype(dtype).name}")


def test_scalar_domain():
    agree(lambda x, y: tp.sigmoid(x) * y + 1.0, [tp.Spec(()), tp.Spec(())], [np.float32(-3.5), np.float32(2.0)])
