"""`check_fused_agrees(g)`: g and tp.fuse(g) give the same results, on both backends.

Used by tests/passes/test_fusion.py, the autodiff tests' hook (tests/passes/conftest.py)
and the program fuzzer. Both graphs run with tp.compile's own optimization off, so the
comparison is of fusion alone. On the numpy backend a fused body runs the same ufuncs in
the same order as the plain nodes, so results are compared bit for bit; onnxruntime runs
the inlined export (or the local functions) within its own rounding.
"""
import numpy as np

import tapeir as tp
from support import ONNXRUNTIME, assert_close, leaves
from tapeir.ir.dtypes import to_numpy
from tapeir.ir.pytree import unflatten
from tapeir.ir.types import resolve_dim, symbols_of


def draw_inputs(g, seed=0, size=2):
    """One pytree per argument of g: floats in [0.5, 1.5] (log, sqrt and pow stay in their
    domain), integers 0 (a valid label), each symbol `size`."""
    gen = np.random.default_rng(seed)
    sizes = {s: size for v in g.inputs for d in v.type.shape if isinstance(d, str) for s in symbols_of(d)}
    xs = []
    for v in g.inputs:
        shape = tuple(resolve_dim(d, sizes) if isinstance(d, str) else d for d in v.type.shape)
        dt = to_numpy(v.type.dtype)
        xs.append(gen.uniform(0.5, 1.5, shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dt))
    return list(unflatten(g.in_tree, xs))


def _run(g, args, backend):
    try:
        return leaves(tp.run(g, *args, backend=backend, optimize=False)), None
    except tp.TapeirError as e:
        return None, type(e)


def check_fused_agrees(g, args=None, backends=("numpy", "onnxruntime"), fused=None):
    """Run g and `fused` (default tp.fuse(g)) on `args` (default draw_inputs(g)); they must
    agree, or raise the same kind of error. Returns the fused graph."""
    f = tp.fuse(g) if fused is None else fused
    assert tp.parse(str(f)) == f
    args = draw_inputs(g, len(g.nodes)) if args is None else args
    for backend in backends:
        want, err = _run(g, args, backend)
        got, ferr = _run(f, args, backend)
        assert err == ferr, f"{backend}: unfused raised {err}, fused {ferr}\n{f}"
        if want is None:
            continue
        assert len(got) == len(want)
        for a, b in zip(got, want):
            if backend == "numpy":
                assert_close(a, b, exact=True, msg=f"fused vs unfused (numpy) of\n{f}")
            else:
                assert_close(a, b, ulps=ONNXRUNTIME, why="onnxruntime's kernels on the fused node's export",
                             msg=f"fused vs unfused (onnxruntime) of\n{f}")
    return f
