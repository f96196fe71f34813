"""Fused elementwise chain: tapeir's blocked, threaded numpy kernel vs numpy by hand and compiled peers.

The chain `softplus(tanh(x)*sigmoid(x) + exp(-x*x))*0.5 + x` on f32[4096, 4096], in one run:
naive numpy, numpy with `out=` temporaries, numpy cache-blocked by hand (one thread),
torch.compile, jax.jit, onnxruntime (each where installed; a peer that fails to build is
reported and skipped), tapeir unfused, tapeir fused on one thread and on its default
threads. Each contender runs in its own child process (bench/harness.py says why); the
outputs are checked against a float64 reference in the parent first. Also: the peak extra
memory of one call (tracemalloc, numpy-based contenders; the result itself not counted),
value_and_grad of the chain's sum vs torch.compile of the same gradient, and the MLP
training step of bench_train_step.py optimized vs not (when tp.optimize exists).

The fused graph is `tp.optimize(trace)` when tp.optimize exists; before it does, one fused
node whose body is the traced chain, built by hand (the chain is all elementwise).

    python bench/bench_fusion.py [--quick] [--sweep]

`--sweep` instead times the fused kernel in this process over block sizes and thread
counts, and the small-size crossover (what backends/numpy_fused.py's constants rest on).

Targets: tapeir one thread <= 1.1 x hand-blocked numpy; tapeir default threads <= 0.6 x
torch.compile and faster than every peer; peak extra memory <= 1/4 of the unfused graph's;
value_and_grad no target (reported); MLP step optimized / not <= 1.0 (no slower).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's tapeir

import numpy as np  # noqa: E402

import harness  # noqa: E402
import tapeir as tp  # noqa: E402

N = 4096
BLOCK = 1 << 15  # the hand-blocked contender's block (elements): what a careful user picks for 1 MiB of L2


def chain(x):
    return tp.softplus(tp.tanh(x) * tp.sigmoid(x) + tp.exp(-x * x)) * 0.5 + x


def make_x(n=N):
    return (np.random.default_rng(0).standard_normal((n, n)) * 3).astype(np.float32)


def reference64(x):
    x = x.astype(np.float64)
    sig = np.exp(-np.logaddexp(0, -x))
    z = np.tanh(x) * sig + np.exp(-x * x)
    return np.logaddexp(0, z) * 0.5 + x


# ---- numpy by hand ----------------------------------------------------------------------

def naive(x):
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    z = np.tanh(x) * np.where(x >= 0, r, e * r) + np.exp(-x * x)
    return (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) * np.float32(0.5) + x


def make_out_temps(x):
    a, b, c = (np.empty_like(x) for _ in range(3))
    m = np.empty(x.shape, bool)

    def run(x):
        out = np.empty_like(x)
        np.abs(x, out=a); np.negative(a, out=a); np.exp(a, out=a)  # noqa: E702
        np.add(a, 1, out=b); np.divide(1, b, out=b)  # noqa: E702
        np.multiply(a, b, out=a); np.greater_equal(x, 0, out=m); np.copyto(a, b, where=m)  # noqa: E702
        np.tanh(x, out=b); np.multiply(b, a, out=b)  # noqa: E702
        np.multiply(x, x, out=a); np.negative(a, out=a); np.exp(a, out=a); np.add(b, a, out=b)  # noqa: E702
        np.abs(b, out=a); np.negative(a, out=a); np.exp(a, out=a); np.log1p(a, out=a)  # noqa: E702
        np.maximum(b, 0, out=c); np.add(c, a, out=c)  # noqa: E702
        np.multiply(c, np.float32(0.5), out=c); np.add(c, x, out=out)  # noqa: E702
        return out
    return run


def _block_chain(x, out, e, t, u, z):
    """The chain on one block with tapeir's ufunc sequence (so the ratio is overhead, not math)."""
    one, zero = np.float32(1), np.float32(0)
    np.abs(x, out=e); np.negative(e, out=e); np.exp(e, out=e)  # noqa: E702
    np.add(e, one, out=u); np.divide(one, u, out=u)  # noqa: E702
    np.greater_equal(x, zero, out=t); np.maximum(e, t, out=t); np.multiply(u, t, out=u)  # noqa: E702  sigmoid
    np.tanh(x, out=z); np.multiply(z, u, out=z)  # noqa: E702
    np.multiply(x, x, out=e); np.negative(e, out=e); np.exp(e, out=e); np.add(z, e, out=z)  # noqa: E702
    np.abs(z, out=e); np.negative(e, out=e); np.exp(e, out=e)  # noqa: E702
    np.add(e, one, out=u); np.subtract(u, one, out=t); np.subtract(e, t, out=e)  # noqa: E702
    np.divide(e, u, out=e); np.log(u, out=t); np.add(t, e, out=e)  # noqa: E702  log1p
    np.maximum(z, zero, out=t); np.add(t, e, out=t)  # noqa: E702
    np.multiply(t, np.float32(0.5), out=t); np.add(t, x, out=out)  # noqa: E702


def make_blocked(x):
    e, t, u, z = (np.empty(BLOCK, np.float32) for _ in range(4))

    def run(x):
        out = np.empty_like(x)
        xf, of = x.reshape(-1), out.reshape(-1)
        for s in range(0, xf.size, BLOCK):
            k = min(BLOCK, xf.size - s)
            _block_chain(xf[s:s + k], of[s:s + k], e[:k], t[:k], u[:k], z[:k])
        return out
    return run


# ---- tapeir -------------------------------------------------------------------------------

def fused_chain_graph(shape=("N", "M")):
    g = tp.trace(chain, tp.Spec(shape))
    if hasattr(tp, "optimize"):
        return tp.optimize(g)
    from tapeir.ir.builder import Builder  # until tp.fuse lands: the whole chain as one fused node

    b = Builder()
    x = b.input(g.inputs[0].type, "x")
    outs = b.emit("fused", [x], {"body": g})
    return b.build("chain", [x], outs)


def compile_unfused(g):
    try:
        return tp.compile(g, optimize=False)  # once compile optimizes by default
    except TypeError:
        return tp.compile(g)
    except tp.TapeirError:
        return tp.compile(g)


def setup_tapeir_unfused():
    x = make_x()
    f = compile_unfused(tp.trace(chain, tp.Spec(("N", "M"))))
    return lambda: f(x)


def setup_tapeir_1():
    x = make_x()
    f = tp.compile(fused_chain_graph(), threads=1)
    return lambda: f(x)


def setup_tapeir():
    x = make_x()
    f = tp.compile(fused_chain_graph())
    return lambda: f(x)


def setup_naive():
    x = make_x()
    return lambda: naive(x)


def setup_out():
    x = make_x()
    f = make_out_temps(x)
    return lambda: f(x)


def setup_blocked():
    x = make_x()
    f = make_blocked(x)
    return lambda: f(x)


def torch_chain(t):
    import torch

    return torch.nn.functional.softplus(torch.tanh(t) * torch.sigmoid(t) + torch.exp(-t * t)) * 0.5 + t


def setup_torch_compile():
    import torch

    f = torch.compile(torch_chain)
    t = torch.from_numpy(make_x())
    with torch.no_grad():
        f(t)
    return lambda: f(t)


def setup_jax():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: jax.nn.softplus(jnp.tanh(x) * jax.nn.sigmoid(x) + jnp.exp(-x * x)) * 0.5 + x)
    x = jax.device_put(make_x())
    f(x).block_until_ready()
    return lambda: f(x).block_until_ready()


def setup_onnxruntime():
    f = tp.compile(tp.trace(chain, tp.Spec(("N", "M"))), backend="onnxruntime")
    x = make_x()
    return lambda: f(x)


def vg_graph():
    g = tp.value_and_grad(tp.trace(lambda x: chain(x).sum(), tp.Spec(("N", "M"))))
    return tp.optimize(g) if hasattr(tp, "optimize") else g


def setup_vg_tapeir():
    x = make_x()
    f = tp.compile(vg_graph())
    return lambda: f(x)


def setup_vg_torch():
    import torch

    f = torch.compile(lambda t: torch_chain(t).sum())
    t = torch.from_numpy(make_x())

    def step():
        a = t.detach().requires_grad_(True)
        v = f(a)
        v.backward()
        return v.item(), a.grad
    step()
    return step


def _mlp():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_train_step as B

    p, x, y = B.make_params()
    return B, tp.value_and_grad(tp.trace(B.mlp_loss, p, x, y)), (p, x, y)


def setup_mlp_plain():
    B, g, args = _mlp()
    f = compile_unfused(g)
    return lambda: f(*args)


def setup_mlp_optimized():
    B, g, args = _mlp()
    f = tp.compile(tp.optimize(g))
    return lambda: f(*args)


CONTENDERS = {
    "naive": setup_naive, "out": setup_out, "blocked": setup_blocked, "torch.compile": setup_torch_compile,
    "jax.jit": setup_jax, "onnxruntime": setup_onnxruntime, "tapeir unfused": setup_tapeir_unfused,
    "tapeir 1 thread": setup_tapeir_1, "tapeir": setup_tapeir,
    "vg tapeir": setup_vg_tapeir, "vg torch.compile": setup_vg_torch,
    "mlp plain": setup_mlp_plain, "mlp optimized": setup_mlp_optimized,
}
LABELS = {"naive": "numpy, naive", "out": "numpy, out= temporaries", "blocked": "numpy, blocked by hand (1 thread)",
          "tapeir": f"tapeir fused ({tp.backends.numpy_fused.default_threads()} threads)"}


def available(name) -> str | None:
    """None when the contender can run here, else why not."""
    mods = {"torch.compile": "torch", "vg torch.compile": "torch", "jax.jit": "jax", "onnxruntime": "onnxruntime"}
    if name in mods:
        try:
            __import__(mods[name])
        except ImportError:
            return f"{mods[name]} not installed"
    if name.startswith("mlp") and not hasattr(tp, "optimize"):
        return "tp.optimize not on this branch yet"
    if name in ("torch.compile", "vg torch.compile"):
        import subprocess

        probe = subprocess.run([sys.executable, __file__, "--only", name, "--json", "--repeats", "1"],
                               capture_output=True, text=True)
        if probe.returncode:
            return "torch.compile failed here: " + (probe.stderr.strip().splitlines() or ["?"])[-1][:120]
    return None


def extra_peak(fn) -> int:
    """Peak bytes one first call allocates beyond its result (scratch and plan buffers included)."""
    tracemalloc.start()
    try:
        r = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - np.asarray(r).nbytes


def check() -> dict:
    """Outputs against float64 (parent, untimed); fused vs unfused bitwise; peak extra memory."""
    x = make_x(1024)
    want = reference64(x)
    outs = {"naive": naive(x), "out": make_out_temps(x)(x), "blocked": make_blocked(x)(x)}
    unf = compile_unfused(tp.trace(chain, tp.Spec(("N", "M"))))
    for k, f in (("tapeir unfused", unf), ("tapeir 1 thread", tp.compile(fused_chain_graph(), threads=1)),
                 ("tapeir", tp.compile(fused_chain_graph()))):
        outs[k] = f(x)
    assert np.array_equal(outs["tapeir"], outs["tapeir unfused"]), "fused differs from unfused"
    for k, y in outs.items():
        err = float(np.max(np.abs(y - want) / (np.abs(want) + 1)))
        assert err < 1e-5, f"{k}: max relative error {err:.3g} vs float64"
    xb = make_x()
    return {"tapeir unfused": extra_peak(lambda: compile_unfused(tp.trace(chain, tp.Spec(("N", "M"))))(xb)),
            "tapeir": extra_peak(lambda: tp.compile(fused_chain_graph())(xb)),
            "naive": extra_peak(lambda: naive(xb)), "blocked": extra_peak(lambda: make_blocked(xb)(xb))}


def sweep():
    """Block size x threads on the chain at 4096^2, and the size where threads start to pay."""
    from tapeir.backends import numpy_fused as F

    g = fused_chain_graph()
    x = make_x()

    def best(f, arg, n=5):
        f(arg)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f(arg)
            ts.append(time.perf_counter() - t0)
        return min(ts)
    per_elem = F.FusedKernel(g.nodes[0].attrs["body"], 1).prog.bytes_per_elem
    print(f"{harness.load_note()}\nregisters: {per_elem} bytes per element\n")
    print("| block (elements) | block bytes | 1 thread ms | 2 threads ms | scaling |\n|---:|---:|---:|---:|---:|")
    for elems in (1 << 13, 1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 19):
        F.BLOCK_BYTES = F.THREADED_BLOCK_BYTES = elems * per_elem
        t1, t2 = best(tp.compile(g, threads=1), x), best(tp.compile(g, threads=2), x)
        print(f"| {elems} | {elems * per_elem >> 10} KiB | {t1 * 1e3:.1f} | {t2 * 1e3:.1f} | {t1 / t2:.2f} |")
    F.BLOCK_BYTES, F.THREADED_BLOCK_BYTES = 1 << 19, 1 << 22
    print("\n| elements | unfused µs | fused 1 thread µs | fused 2 threads µs |\n|---:|---:|---:|---:|")
    unf = compile_unfused(tp.trace(chain, tp.Spec(("N",))))
    g1 = fused_chain_graph(("N",))
    old = F.THREAD_ELEMS
    for p in range(10, 22):
        v = x.reshape(-1)[: 1 << p].copy()
        F.THREAD_ELEMS = 0
        t2 = best(tp.compile(g1, threads=2), v, 20)
        F.THREAD_ELEMS = old
        print(f"| {1 << p} | {best(unf, v, 20) * 1e6:.0f} | {best(tp.compile(g1, threads=1), v, 20) * 1e6:.0f} "
              f"| {t2 * 1e6:.0f} |")


def main(argv=None):
    child = harness.child_args(argv)
    if child:
        return harness.run_child(CONTENDERS, child[0])
    if "--sweep" in sys.argv[1:]:
        sweep()
        return 0
    args = harness.parent_args(__doc__, [a for a in (sys.argv[1:] if argv is None else argv) if a != "--sweep"])
    rounds, repeats = (1, 3) if args.quick else (3, 5)
    load = harness.load_note()
    mem = check()
    skipped = {k: why for k in CONTENDERS if (why := available(k))}
    names = [k for k in CONTENDERS if k not in skipped]
    times = harness.isolated(__file__, {k: (repeats, 1) for k in names}, rounds)
    best = {k: min(v) for k, v in times.items()}
    print(f"chain softplus(tanh(x)*sigmoid(x) + exp(-x*x))*0.5 + x on f32[{N},{N}]; each contender in its own "
          f"process, {rounds} rounds x {repeats} calls\n{load}\n")
    print("| contender | ms (best) | ms (median) | tapeir / this | peak extra memory |\n|---|---:|---:|---:|---:|")
    fwd = [k for k in names if not k.startswith(("vg", "mlp"))]
    for k in fwd:
        m = f"{mem[k] / 2**20:.1f} MiB" if k in mem else "-"
        print(f"| {LABELS.get(k, k)} | {best[k] * 1e3:.1f} | {statistics.median(times[k]) * 1e3:.1f} "
              f"| {best['tapeir'] / best[k]:.2f} | {m} |")
    print()
    r1 = best["tapeir 1 thread"] / best["blocked"]
    print(f"- tapeir 1 thread / hand-blocked numpy = {r1:.2f} (target ≤ 1.1) -> {harness.verdict(r1, 1.1)}")
    if "torch.compile" in best:
        r = best["tapeir"] / best["torch.compile"]
        print(f"- tapeir / torch.compile = {r:.2f} (target ≤ 0.6) -> {harness.verdict(r, 0.6)}")
    peers = [k for k in fwd if not k.startswith("tapeir")]
    fastest = min(peers, key=best.get)
    r = best["tapeir"] / best[fastest]
    print(f"- tapeir / fastest peer ({fastest}) = {r:.2f} (target < 1) -> {harness.verdict(r, 0.999)}")
    rm = mem["tapeir"] / mem["tapeir unfused"]
    print(f"- peak extra memory fused / unfused = {rm:.3f} (target ≤ 0.25) -> {harness.verdict(rm, 0.25)}")
    if "vg torch.compile" in best:
        print(f"- value_and_grad: tapeir {best['vg tapeir'] * 1e3:.1f} ms, torch.compile "
              f"{best['vg torch.compile'] * 1e3:.1f} ms: ratio {best['vg tapeir'] / best['vg torch.compile']:.2f} "
              f"(no target){'' if hasattr(tp, 'optimize') else '; tapeir graph unfused (no tp.optimize yet)'}")
    if "mlp optimized" in best:
        r = best["mlp optimized"] / best["mlp plain"]
        print(f"- MLP step optimized / not = {r:.2f} (target ≤ 1.0) -> {harness.verdict(r, 1.0)}")
    for k, why in skipped.items():
        print(f"- skipped {k}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
