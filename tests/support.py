"""Test support: seeding, random draws, pytree leaves, marked source lines and the one
numeric comparison every test uses, `assert_close`.

Tolerance policy (`assert_close`)
---------------------------------
Two results of the same math, computed in `dtype` (float16/32/64), agree when for every
element

    |actual - expected| <= rtol * (|expected| + scale),     rtol = ulps * eps(dtype)

* `eps(dtype)` is the machine epsilon of the precision the computation ran in (the
  actual's float dtype unless `dtype=` says otherwise, e.g. float32 inputs compared with a
  float64 reference). `ulps` defaults to `ULPS` (64): room for a few dozen roundings
  (another summation order, another libm, a fused kernel).
* `scale` is the magnitude of the terms that produced the values: by default the largest
  |expected| in the tensor, and at least 1 (tests draw O(1) inputs). An element made by
  cancellation (a sum of terms ~25 that comes out ~0.01) carries the rounding error of
  its terms, not of itself; a per-element rtol alone fails there. A caller that knows
  the terms' magnitude (intermediate values of a program) passes `scale=`, which replaces
  the default; `scale=0` is a pure per-element relative check (accurate tails). A scale
  may be an array (per element), e.g. plus an element's known error in a reference.
* Wider tolerances are named: `ulps=` (or `rtol=`, for a tolerance fixed by an outside
  contract such as ONNX's node tests) needs `why=`, a phrase saying what makes the
  computation less accurate. Reasons used in several files are constants below
  (`ONNXRUNTIME`, `CONDITIONED`, ...), each with its justification.
* nan must sit at the same positions in both, and infinities must be equal (same sign,
  same positions). Shapes must be equal (0-d and Python scalars are shape ()). When
  `dtype=` is given, a float actual must have exactly that dtype.
* Integer and bool results compare exactly (as does `exact=True` for floats: bit-for-bit
  equal values, nan equal to nan).

>>> import numpy as np
>>> got = np.array([25.0, 0.0100004], np.float32)     # 0.01 from cancellation, 4e-5 off relative
>>> assert_close(got, np.array([25.0, 0.01]), dtype="float32")
>>> assert_close(np.array([1.0, np.nan]), np.array([1.0, np.nan]))
>>> assert_close(np.array([1, 2]), np.array([1, 3]))
Traceback (most recent call last):
...
AssertionError: integer/bool values differ at 1 of 2 positions: first at index (1,): 2 vs 3
>>> assert_close(np.float32(1.001), 1.0, ulps=2 ** 14, why="float32 finite differences")
"""
from __future__ import annotations

import os
import zlib

import numpy as np

# ---- the tolerance policy -----------------------------------------------------------------

ULPS = 64  # default: a few dozen roundings apart (summation order, libm, fused kernels)

# Named reasons to widen (ulps), shared by several files:
ONNXRUNTIME = 1024      # onnxruntime's kernels: vectorized exp/tanh/erf approximations (a few ulps
                        # each), other reduction orders and fused Gemm/Conv accumulation
CONDITIONED = 2 ** 13   # an ill-conditioned op amplifies input rounding: layer_norm of a nearly
                        # constant row divides by sqrt(var + eps); log/reciprocal near their poles
TORCH = 2 ** 12         # torch's own algorithms (its conv/pool/logsumexp kernels), float64
CHAIN = 2 ** 10         # a whole forward + backward pass (dozens of ops) in the lower precision,
                        # against the same math in float64: rounding compounds op by op
FINITE_DIFFERENCES = 2 ** 32  # float64 central differences (h ~ 1e-5): truncation ~h^2 and rounding
                              # ~eps/h: 2^32 ulps is ~1e-6 of (|expected| + scale)


def eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def _asarray(x):
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().numpy()
    return np.asarray(x)


def assert_close(actual, expected, *, dtype=None, ulps=None, rtol=None, scale=None, why=None,
                 exact=False, msg=""):
    """Assert `actual` matches `expected` under the policy in this module's docstring."""
    if (ulps is not None or rtol is not None) and not why:
        raise TypeError("assert_close: a wider tolerance (ulps=/rtol=) needs why= (what makes it less accurate)")
    a, e = _asarray(actual), _asarray(expected)
    where = f"{msg}: " if msg else ""
    assert a.shape == e.shape, f"{where}shape {a.shape}, expected {e.shape}"
    if dtype is not None and a.dtype.kind == "f":
        assert a.dtype == np.dtype(dtype), f"{where}dtype {a.dtype}, expected {np.dtype(dtype)}"
    if a.dtype.kind in "biu" or (e.dtype.kind in "biu" and a.dtype.kind not in "fc") or exact:
        if a.dtype.kind in "biu" and e.dtype.kind == "f":
            assert np.array_equal(a, e), f"{where}integer/bool result {a} differs from {e}"
            return
        same = (a == e) | ((a != a) & (e != e)) if a.dtype.kind in "fc" else (a == e)
        bad = ~np.asarray(same)
        if bad.any():
            idx = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
            kind = "values" if exact and a.dtype.kind in "fc" else "integer/bool values"
            raise AssertionError(f"{where}{kind} differ at {int(bad.sum())} of {bad.size} positions: first at index "
                                 f"{tuple(int(i) for i in idx)}: {a[idx].item()!r} vs {e[idx].item()!r}")
        return
    if dtype is None:
        dtype = a.dtype if a.dtype.kind == "f" else np.float64
    tol_r = rtol if rtol is not None else (ulps if ulps is not None else ULPS) * eps(dtype)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    if (nan_a != nan_e).any():
        i = np.unravel_index(int(np.argmax(nan_a != nan_e)), a.shape) if a.ndim else ()
        raise AssertionError(f"{where}nan positions differ: first at {tuple(int(k) for k in i)}: "
                             f"{a64[i].item()!r} vs {e64[i].item()!r}")
    inf_a, inf_e = np.isinf(a64), np.isinf(e64)
    if (inf_a | inf_e).any():
        bad_inf = (inf_a | inf_e) & (a64 != e64)
        if bad_inf.any():
            i = np.unravel_index(int(np.argmax(bad_inf)), a.shape) if a.ndim else ()
            raise AssertionError(f"{where}infinities differ: first at {tuple(int(k) for k in i)}: "
                                 f"{a64[i].item()!r} vs {e64[i].item()!r}")
    finite = np.isfinite(e64) & np.isfinite(a64)
    mag = float(np.max(np.abs(e64[finite]), initial=0.0))
    s = max(1.0, mag) if scale is None else np.asarray(scale, np.float64)
    err = np.abs(np.subtract(a64, e64, out=np.zeros_like(a64), where=finite))
    tol = tol_r * (np.abs(np.where(finite, e64, 0.0)) + s)
    tol = np.broadcast_to(tol, err.shape)
    bad = ~(err <= tol)
    if bad.any():
        flat = int(np.argmax(np.where(bad, err - tol, -np.inf)))
        i = np.unravel_index(flat, a.shape) if a.ndim else ()
        raise AssertionError(
            f"{where}{int(bad.sum())} of {bad.size} elements differ beyond {tol_r:.3g} * (|expected| + scale)"
            f" [{np.dtype(dtype).name}{', ' + why if why else ''}]; worst at {tuple(int(k) for k in i)}: "
            f"got {a64[i].item()!r}, expected {e64[i].item()!r} (|err| {err[i]:.3g}, tol {tol[i]:.3g})")


def assert_tree_close(actual, expected, **kw):
    """assert_close over two pytrees (dict/list/tuple) of the same structure."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), (sorted(actual), sorted(expected))
        for k in sorted(expected):
            assert_tree_close(actual[k], expected[k], **{**kw, "msg": f"{kw.get('msg', '')}[{k!r}]"})
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), (type(actual), len(expected))
        for j, (u, v) in enumerate(zip(actual, expected)):
            assert_tree_close(u, v, **{**kw, "msg": f"{kw.get('msg', '')}[{j}]"})
    else:
        assert_close(actual, expected, **kw)


def leaves(tree) -> list:
    """The arrays of a pytree in order (dict keys sorted, as tapeir flattens them)."""
    if isinstance(tree, (tuple, list)):
        return [y for x in tree for y in leaves(x)]
    if isinstance(tree, dict):
        return [y for k in sorted(tree) for y in leaves(tree[k])]
    return [np.asarray(tree)]


# ---- seeding and random draws ------------------------------------------------------------------

def seed(*key) -> int:
    """A stable seed for `key` (unlike hash() of strings): an int alone is itself, else crc32."""
    if len(key) == 1 and isinstance(key[0], (int, np.integer)):
        return int(key[0])
    return zlib.crc32("/".join(map(str, key)).encode())


def rng(*key) -> np.random.Generator:
    """A numpy Generator for `key`: a test's name and case id, or an int seed.

    >>> float(rng("test_x", 3).standard_normal()) == float(rng("test_x", 3).standard_normal())
    True
    """
    return np.random.default_rng(seed(*key))


def draw(kind: str, shape, gen: np.random.Generator, dtype="float32") -> np.ndarray:
    """A random float array of a named kind, the domains the tests need:
    n: standard normal; pos: (0.5, 2); away: |x| in (0.3, 1.5), either sign (away from 0);
    distinct: no two elements within 0.15 (no max/min ties); prob: (0.05, 0.95);
    small: (0, 0.3) (safe_log near 0)."""
    shape = tuple(shape)
    if kind == "n":
        x = gen.standard_normal(shape)
    elif kind == "pos":
        x = gen.uniform(0.5, 2.0, shape)
    elif kind == "away":
        x = gen.uniform(0.3, 1.5, shape) * gen.choice([-1.0, 1.0], shape)
    elif kind == "distinct":
        n = int(np.prod(shape))
        x = ((gen.permutation(n) - n / 2) * 0.25 + gen.uniform(-0.05, 0.05, n)).reshape(shape)
    elif kind == "prob":
        x = gen.uniform(0.05, 0.95, shape)
    elif kind == "small":
        x = gen.uniform(0.0, 0.3, shape)
    else:
        raise ValueError(f"unknown draw kind {kind!r}")
    return np.asarray(x, dtype=dtype)


def labels(shape, classes: int, gen: np.random.Generator, ignore=None) -> np.ndarray:
    """Integer class labels in [0, classes); every third one set to `ignore` if given."""
    lab = gen.integers(0, classes, size=tuple(shape)).astype(np.int64)
    if ignore is not None:
        lab.reshape(-1)[::3] = ignore
    return lab


def randn(shape, dtype, *key, scale=1.0):
    """Standard normal floats (small integers in [-9, 9] for an integer dtype), seeded by key."""
    r = rng(tuple(shape), np.dtype(dtype).str, *key)
    if np.dtype(dtype).kind in "iu":
        return r.integers(-9, 10, size=shape).astype(dtype)
    return (r.standard_normal(shape) * scale).astype(dtype)


def uniform(shape, dtype, lo, hi, *key):
    return rng(tuple(shape), np.dtype(dtype).str, lo, hi, *key).uniform(lo, hi, size=shape).astype(dtype)


# ---- source lines ------------------------------------------------------------------------------

def traced_path(file: str) -> str:
    """How the tracer names `file` in source comments: relative to the cwd when inside it."""
    rel = os.path.relpath(file)
    return (file if rel.startswith("..") else rel).replace(os.sep, "/")


def marked_line(file: str, marker: str) -> str:
    """`file:line` (as the tracer names it) of the one line of `file` ending in `# @marker`."""
    with open(file, encoding="utf-8") as f:
        hits = [i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# @{marker}")]
    assert len(hits) == 1, f"{marker}: {len(hits)} lines carry the marker"
    return f"{traced_path(file)}:{hits[0]}"


# ---- subprocesses ---------------------------------------------------------------------------

def checkout_env(**extra) -> dict:
    """os.environ for a subprocess that must import this checkout's tapeir (the one the tests
    import), not whatever `pip install -e` points at: its root first on PYTHONPATH."""
    import tapeir

    root = os.path.dirname(os.path.dirname(os.path.abspath(tapeir.__file__)))
    path = os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PYTHONPATH=path, **extra)
