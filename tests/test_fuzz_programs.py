"""Differential fuzzing of whole programs.

Per-op tests check each op alone; this file generates random programs (3-12 ops from a
vocabulary of tp functions, Tensor operators, numpy interop (np.exp(t), ndarray + t,
numpy scalars), integer and boolean detours, constant subexpressions and tp.call of
sub-programs) over 1-3 float32 or float64 inputs whose shapes broadcast (size-1 dims, 0-d
tensors, symbolic dims "B", "T", "2*B" and "T+1" traced with tp.Spec and run at two
bindings), ending in a scalar: a weighted sum of every value nothing else uses. Slices
(x[:, 1:], x[:, :-1], x[:, :2]), pads and concatenations along symbolic axes make dims
that are sums (T-1, T+3, 2*T, B*T-B), valid (>= 0) at both bindings; tapeir's type of every
value must be the generator's shape (its own dim model: `_poly`). Per program:

  a. the numpy backend against an independent evaluation written directly in numpy
     (each row's `np` form: numpy calls, never tapeir's kernels), every intermediate
     value, in float64 and float32; results are the caller's own arrays (no input memory,
     writable, inputs untouched); with every ufunc result in the memory plan's reused
     buffers (numpy_memory.MIN_BYTES = 0) the values are the same and a later call does
     not overwrite them (forward and value_and_grad graphs); simplify(g) runs like g;
  b. the onnxruntime backend against the numpy backend, every value and value_and_grad,
     skipping the float64 kernels onnxruntime lacks (README); programs where float32
     rounding may flip a truncation or comparison (within 1e-5 of its edge) skip the
     float32 comparisons;
  c. tp.value_and_grad in float64 (w.r.t. all, one or some arguments) against central
     differences along a random direction (skipped within 1e-3 of a kink: relu, abs,
     max/min ties, clip bounds, where conditions, integer truncation) and against torch
     autograd (when torch imports: same tie conventions, except max_pool2d's);
  d. IR -> ONNX -> IR (tp.from_onnx(tp.to_onnx(g))) runs like g, for g and for its
     value_and_grad graph, and value_and_grad of the imported g gives g's gradients;
     tp.parse(str(g)) == g for g, simplify(g) and the gradient graphs;
  e. for every third program, a Hessian-vector product (tp.grad of a trace that
     tp.call's tp.grad(g)) against central differences of the first gradient (when
     smooth), in onnxruntime and after IR -> ONNX -> IR;
  f. programs with "B" also run at B = 0 (`_check_empty`); where a size would be negative
     there (B-1), both backends must raise a RunError naming the binding instead;
  g. fusion: tp.compile optimizes by default, so a-e run fused graphs; besides, tp.fuse of
     the value_and_grad graph gives the unfused results bit for bit on the numpy backend;
     every third program also checks it in onnxruntime (within its rounding) and the
     every-value graph on numpy (tests/fusion_check.py);
  callgrad ops (tanh of tp.call(tp.grad(sub-program))) make every first-order check a
  second-order one; their reference gradient is torch's.

The ops are a table (tests/fuzz_ops.py): one row per op kind with its generator and its
tapeir, numpy and torch forms; an exemption (a check that does not hold for programs
using the op) is a named `Exempt` on its row, with its reason. Comparisons follow
support.assert_close in the program's dtype, scaled by the largest magnitude so far, with
the named widenings below (PROGRAM, REWRITE, FD, onnxruntime's); onnxruntime may also
be off by 10 times the numpy backend's own error against float64 (`_ort_close`: where
numpy's rounding is large, an ill-conditioned computation, onnxruntime's may be too).

Each program exports at an opset drawn from 15..the highest (the lowerings differ).

Input ranges keep every op in its domain: generation tracks an interval for each value
and applies log/sqrt/reciprocal/division/pow only where the operand is bounded away from
0 (or from negative values), exp only where it cannot overflow, and nothing that could
leave [-1e3, 1e3].

Choices come from one seed per program (hypothesis draws the seed and the dtype; its
own draws lean on their smallest values, which made most programs alike). The default
run is deterministic (derandomize=True, no example database): 250 programs, ~20-35 s.
TAPEIR_FUZZ_EXAMPLES=2000 runs more; TAPEIR_FUZZ_MAX_OPS=25 makes them longer; pytest's
--hypothesis-seed=123 draws other programs (derandomize would ignore it: it is off then).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field

import hypothesis.core
import numpy as np
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import fuzz_ops
import tapeir as tp
from fusion_check import check_fused_agrees
from fuzz_ops import (KINDS, ORT_F32_CONDITIONED, ORT_F64_FLOAT32_ATTR, ORT_SPLIT_TIES, ROWS, TORCH_THIRD_DERIVATIVE,
                      TORCH_TIE_RULE, torch, torch_np)
from support import ONNXRUNTIME, assert_close, leaves
from tapeir.backends import numpy_memory
from tapeir.passes import simplify

N_EXAMPLES = int(os.environ.get("TAPEIR_FUZZ_EXAMPLES", "250"))
MAX_OPS = int(os.environ.get("TAPEIR_FUZZ_MAX_OPS", "12"))
BOUND = 1e3          # |every intermediate value| stays below this
FD_MARGIN = 1e-3     # skip finite differences when a kink is this close

# --hypothesis-seed (set by hypothesis' pytest plugin before this module is collected)
FORCED_SEED = getattr(hypothesis.core, "global_force_seed", None)
SETTINGS = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=FORCED_SEED is None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# ---- dims ----------------------------------------------------------------------------
# A dim is an int or a polynomial in the symbols "B" and "T" with integer coefficients,
# written as a canonical string: "B", "3*B", "B*T" (reshapes), "T-1", "T+2", "2*T" (slices,
# pads, concatenations), "B*T-B". Terms go by degree (highest first), then by name, the
# constant last. A binding maps each symbol to a size ({"B": 2, "T": 3}). This model is the
# test's own (it shares no code with tapeir's ir/types.py on purpose).

def _poly(d):
    """A dim as {monomial (a sorted tuple of symbols, repeated for powers): coefficient}."""
    if isinstance(d, int):
        return {(): d} if d else {}
    out = {}
    for sign, term in re.findall(r"([+-]?)([^+-]+)", d):
        c, syms = 1, []
        for part in term.split("*"):
            if part.isdigit():
                c *= int(part)
            else:
                syms.append(part)
        m = tuple(sorted(syms))
        out[m] = out.get(m, 0) + (-c if sign == "-" else c)
    return {m: c for m, c in out.items() if c}


def _from_poly(p):
    """The canonical dim of a polynomial: an int when it has no symbols."""
    p = {m: c for m, c in p.items() if c}
    if not any(p):
        return p.get((), 0)
    text = ""
    for m in sorted(p, key=lambda m: (-len(m), m)):
        c = p[m]
        body = "*".join(m)
        term = (body if abs(c) == 1 else f"{abs(c)}*{body}") if m else str(abs(c))
        text += ("-" if c < 0 else "+" if text else "") + term
    return text


def _canon(d):
    """Any spelling of a dim (tapeir's types too) in the model's canonical form."""
    return _from_poly(_poly(d))


def _dval(d, b):
    return sum(c * math.prod(b[x] for x in m) for m, c in _poly(d).items())


def _prod(dims):
    p = {(): 1}
    for d in dims:
        q = {}
        for m1, c1 in p.items():
            for m2, c2 in _poly(d).items():
                m = tuple(sorted(m1 + m2))
                q[m] = q.get(m, 0) + c1 * c2
        p = q
    return _from_poly(p)


def _sum(dims, signs=None):
    """The sum of dims (each times its sign in `signs`, +1 by default)."""
    p = {}
    for k, d in enumerate(dims):
        for m, c in _poly(d).items():
            p[m] = p.get(m, 0) + c * (signs[k] if signs else 1)
    return _from_poly(p)


def _syms(d):
    return sorted({x for m in _poly(d) for x in m})


def _rename(d, names):
    """d with each symbol renamed (names: {"B": "N", ...})."""
    if isinstance(d, int):
        return d
    return _from_poly({tuple(sorted(names.get(x, x) for x in m)): c for m, c in _poly(d).items()})


def _is_sum(d):
    """A dim of two or more terms (T-1, B*T+B), not a product (B, 2*B, B*T)."""
    return len(_poly(d)) > 1


def _shape_val(shape, b):
    return tuple(_dval(d, b) for d in shape)


def _static(shape):
    """The shape with every symbolic dim replaced by 1 (constants broadcast against it)."""
    return tuple(d if isinstance(d, int) else 1 for d in shape)


def _bcast(a, b):
    """numpy broadcasting of two shapes (a symbol matches itself or 1), or None."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        else:
            return None
    return tuple(reversed(out))


# ---- programs -----------------------------------------------------------------------

@dataclass
class Val:
    shape: tuple
    lo: float
    hi: float


@dataclass
class Op:
    kind: str
    args: tuple
    p: dict = field(default_factory=dict)


@dataclass
class Program:
    dtype: str
    inputs: list            # Val per input
    ops: list               # Op per value after the inputs
    vals: list              # Val per value (inputs first)
    sizes: list             # the two bindings of the symbols it runs at (when an input has one)
    seed: int
    sinks: list = field(default_factory=list)   # (value index, weight array) summed into the result
    out: int = -1           # sub-programs (tp.call) return this value

    @property
    def symbolic(self):
        return any(isinstance(d, str) for v in self.inputs for d in v.shape)

    def __repr__(self):
        lines = [f"Program(dtype={self.dtype}, sizes {self.sizes}, seed={self.seed})"]
        for i, v in enumerate(self.inputs):
            lines.append(f"  v{i}: input {v.shape} in [{v.lo:.3g}, {v.hi:.3g}]")
        n = len(self.inputs)
        for j, op in enumerate(self.ops):
            p = {k: (f"array{np.shape(x)}" if isinstance(x, np.ndarray) else
                     ("<sub-program>" if isinstance(x, Program) else x)) for k, x in op.p.items()}
            v = self.vals[n + j]
            lines.append(f"  v{n + j}: {v.shape} = {op.kind}({', '.join(f'v{a}' for a in op.args)}) {p}")
            sub = op.p.get("sub")
            if sub is not None:
                lines.extend("      " + s for s in repr(sub).splitlines())
        if self.sinks:
            lines.append("  result = " + " + ".join(f"sum(v{i} * w{np.shape(w)})" for i, w in self.sinks))
        return "\n".join(lines)


# Tolerances (support.assert_close, in the dtype the program ran in), named by reason:
PROGRAM = 2 ** 13  # ulps: a dozen ops, each computed another way by the reference; log, reciprocal,
                   # pow, layer_norm and cancellations amplify rounding
WHY_PROGRAM = "a program of ops the reference computes its own way"
REWRITE = 2 ** 9   # ulps: the same program after a rewrite (simplify folds; ONNX import rebuilds lowerings)
FD = 2 ** 36       # ulps (float64): central differences, h = 1e-6, ~1e-5 of the summed |terms|
FD_HVP = 2 ** 39   # ulps (float64): Richardson-extrapolated central differences of the gradient, h = 1e-4


# ---- the generator ------------------------------------------------------------------------------

class Gen:
    """Draws one program, op by op, keeping shapes and value intervals; the op table's rows
    (fuzz_ops.ROWS) draw each op's attributes with the helpers here."""

    poly, prod, dsum, syms = staticmethod(_poly), staticmethod(_prod), staticmethod(_sum), staticmethod(_syms)
    bcast, static, is_sum = staticmethod(_bcast), staticmethod(_static), staticmethod(_is_sum)

    def __init__(self, dtype, sizes, seed, n_inputs, n_ops, sub_input=None, depth=0, no_pool=False):
        self.dtype, self.sizes, self.depth, self.no_pool = dtype, sizes, depth, no_pool
        self.subs = []  # sub-programs of call ops, which a later call may reuse
        self.rng = np.random.default_rng(seed)
        inputs = [sub_input] if sub_input is not None else self._inputs(n_inputs)
        self.prog = Program(dtype, inputs, [], list(inputs), sizes, seed)
        self.uses = [0] * len(inputs)
        for _ in range(n_ops):
            self.step()

    # -- choices: from the program's seed (hypothesis draws the seed; its own draws lean on
    # their smallest values, which made most programs start with the same op) --
    def i(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def coin(self):
        return bool(self.rng.integers(2))

    def choice(self, xs):
        xs = list(xs)
        return xs[self.i(0, len(xs) - 1)]

    def const(self, shape, lo=-1.0, hi=1.0):
        return self.rng.uniform(lo, hi, size=shape).astype(np.float64)

    def dval(self, d, b):
        return _dval(d, b)

    def _inputs(self, n):
        syms = [] if self.coin() else ["B"] if self.coin() else ["B", "T"]
        rank = self.i(0, 4)
        base = []
        for _ in range(rank):
            base.append(self.choice([1, 2, 3, 4] + syms * 2 + (["2*B"] if syms and self.i(0, 3) == 0 else [])
                                    + (["T+1"] if "T" in syms and self.i(0, 5) == 0 else [])))  # binds T = n - 1
        if syms and not any(isinstance(d, str) for d in base) and rank:
            base[self.i(0, rank - 1)] = syms[0]
        while _numel_max(base, self.sizes) > 64:
            big = max((d for d in base if isinstance(d, int)), default=1)
            base[base.index(big) if big > 1 else [isinstance(d, str) for d in base].index(True)] = 1
        ins = []
        for k in range(n):
            if k == 0:
                shape = tuple(base)
            else:  # broadcasts with the first: drop leading dims, set some to 1, maybe add a leading dim
                shape = [d if self.coin() else 1 for d in base[self.i(0, len(base)):]]
                if len(shape) < 4 and self.i(0, 4) == 0:
                    shape = [self.choice([1, 2, 3])] + shape
                shape = tuple(shape)
            ins.append(Val(shape, 0.5, 2.0) if self.coin() else Val(shape, -2.0, 2.0))
        return ins

    def add(self, kind, args, out_shape, lo, hi, **p):
        if not (np.isfinite(lo) and np.isfinite(hi)) or max(abs(lo), abs(hi)) > BOUND:
            return None
        # every size (T-1, and a slice's start and room past its stop: p["need"]) must be
        # >= 0 at both bindings the program runs at
        if not self.valid(tuple(out_shape) + tuple(p.get("need", ()))):
            return None
        if _numel_max(out_shape, self.sizes) > 256:
            return None
        self.prog.ops.append(Op(kind, tuple(args), p))
        self.prog.vals.append(Val(tuple(out_shape), float(lo), float(hi)))
        for a in args:
            self.uses[a] += 1
        self.uses.append(0)
        return True

    def valid(self, dims):
        """Whether every dim is a size (>= 0) at both bindings."""
        return all(_dval(d, b) >= 0 for d in dims for b in self.sizes)

    def pick(self):
        """An operand: mostly recent values (chains), sometimes any."""
        n = len(self.prog.vals)
        k = n - 1 if self.coin() else self.i(0, n - 1)
        if not self.prog.vals[k].shape and self.coin():  # 0-d values are common: less so
            k = self.i(0, n - 1)
        return k

    def partner(self, shape):
        """Another value whose shape broadcasts with `shape`, or None."""
        ok = [k for k, v in enumerate(self.prog.vals) if _bcast(v.shape, shape) is not None]
        return self.choice(ok) if ok and self.i(0, 3) else None

    def const_like(self, shape):
        """A constant shape that broadcasts with `shape` (symbolic dims become 1, some dims 1)."""
        s = _static(shape)
        return tuple(d if self.coin() else 1 for d in s[self.i(0, len(s)):])

    def nchw(self, v):
        s = v.shape
        return len(s) == 4 and all(isinstance(d, int) for d in s[1:]) and s[1] > 0

    def count(self, shape, axes):
        """(min, max) number of elements a reduction over `axes` folds."""
        n = [_dval(_prod([shape[a] for a in axes]), b) for b in self.sizes]
        return min(n), max(n)

    def step(self):
        for _ in range(6):
            r = ROWS[self.choice(KINDS)]
            if r.top_level and self.depth > 0:
                continue
            nchw = [k for k, v in enumerate(self.prog.vals) if self.nchw(v)]
            for _ in range(3):  # picky ops try other operands
                vi = self.choice(nchw) if r.nchw and nchw else self.pick()
                if r.gen(self, vi, self.prog.vals[vi]):
                    return
        v = self.prog.vals[-1]
        self.add("tanh", [len(self.prog.vals) - 1], v.shape, -1, 1, form="tp")

    def axes(self, v):
        """An axis argument (None, an int, maybe negative, or a tuple) and the axes it means."""
        r = len(v.shape)
        kind = self.choice(["none"] + (["int", "tuple"] if r else []))
        if kind == "none":
            return None, tuple(range(r))
        if kind == "int":
            a = self.i(0, r - 1)
            return (a - r if self.coin() else a), (a,)
        axes = tuple(sorted(set(self.i(0, r - 1) for _ in range(self.i(0, r)))))
        return axes, axes

    def reduce(self, kind, vi, v, iv_fn, forms):
        axis, axes = self.axes(v)
        keep = self.coin()
        nmin, nmax = self.count(v.shape, axes)
        if nmin == 0:
            return None
        shape = fuzz_ops._reduced(v.shape, axes, keep)
        return self.add(kind, [vi], shape, *iv_fn(v.lo, v.hi, nmin, nmax), axis=axis, keepdims=keep,
                        form=self.choice(forms))

    def other(self, v):
        """A binary op's second operand: a partner value, a constant array or a Python scalar: (args, p, Val)."""
        k = self.partner(v.shape)
        if k is not None:
            return [k], {}, self.prog.vals[k]
        if self.coin():
            return [], {"c": self.const(self.const_like(v.shape), 0.5, 1.5) * self.choice([1, -1]),
                        "side": self.choice(["l", "r"])}, None
        return [], {"s": self.choice([0.5, 2.0, -1.0]), "side": self.choice(["l", "r"])}, None

    def binop(self, kind, vi, v, iv_fn, need_b=None, need_a=None, forms=("op", "tp", "np")):
        args, p, w = self.other(v)
        if w is not None:
            shape, b = _bcast(v.shape, w.shape), (w.lo, w.hi)
        elif "c" in p:
            shape, b = _bcast(v.shape, p["c"].shape), (float(p["c"].min()), float(p["c"].max()))
        else:
            shape, b = v.shape, (p["s"], p["s"])
        a = (v.lo, v.hi)
        if p.get("side") == "l":
            a, b = b, a
        if (need_b and not need_b(*b)) or (need_a and not need_a(*a)):
            return None
        if kind == "pow" and "s" in p:
            forms = ("op", "tp")  # np.power(2.0, t) would make a f64 constant base for a f32 tensor
        return self.add(kind, [vi] + args, shape, *iv_fn(a, b), form=self.choice(forms), **p)

    @staticmethod
    def matmul_shape(a, b):
        if not a or not b:
            return None
        ash = (1,) + a if len(a) == 1 else a
        bsh = b + (1,) if len(b) == 1 else b
        if ash[-1] != bsh[-2]:
            return None
        batch = _bcast(ash[:-2], bsh[:-2])
        if batch is None:
            return None
        return batch + ((ash[-2],) if len(a) > 1 else ()) + ((bsh[-1],) if len(b) > 1 else ())

    def sub(self, v, no_pool=False):
        sub = Gen(self.dtype, self.sizes, int(self.rng.integers(1 << 30)), 1, self.i(1, 4),
                  sub_input=Val(v.shape, v.lo, v.hi), depth=self.depth + 1, no_pool=no_pool).prog
        sub.out = len(sub.vals) - 1
        return sub


def _numel_max(shape, sizes):
    return max(int(np.prod(_shape_val(shape, b))) for b in sizes)


def make_program(dtype, seed, min_ops=3, max_ops=MAX_OPS):
    """The program of one seed (every choice is the seed's: see Gen.i)."""
    rng = np.random.default_rng([seed, 1])
    bs = rng.choice([1, 2, 3, 4], size=2, replace=False)
    ts = rng.choice([1, 2, 3], size=2)
    sizes = [{"B": int(bs[0]), "T": int(ts[0])}, {"B": int(bs[1]), "T": int(ts[1])}]
    gen = Gen(dtype, sizes, seed, int(rng.integers(1, 4)), int(rng.integers(min_ops, max_ops + 1)))
    prog = gen.prog
    prog.sinks = [(k, rng.uniform(-1, 1, size=_static(prog.vals[k].shape))) for k, u in enumerate(gen.uses) if u == 0]
    return prog


@st.composite
def programs(draw):
    return make_program(draw(st.sampled_from(["float32", "float64"])), draw(st.integers(0, 2 ** 63 - 1)))


# ---- the three evaluators: each op by its row's form --------------------------------------------

RENAMED = {"B": "N", "T": "M"}


class TPNS:
    """Tracing with tapeir; `renamed`: symbols as a sub-program may call them (N, M)."""

    def __init__(self, dtype, renamed=False):
        self.dtype, self.renamed = dtype, renamed
        self.np_dtype = np.dtype(dtype)

    def c(self, a):
        return np.asarray(a, self.np_dtype)

    def rename(self, d):
        """A dim with the symbols a sub-program traces with (N for B, M for T when renamed)."""
        if not self.renamed or not isinstance(d, str):
            return d
        return _rename(d, RENAMED)


class NPNS:
    """The reference: numpy, directly; records the distance to the nearest kink."""

    def __init__(self, dtype, b):
        self.dtype, self.b = np.dtype(dtype), b
        self.kink = math.inf
        self.disc = math.inf  # relative distance of a discrete decision (truncation, comparison) to its edge
        self.undefined = False
        self.pool_tie = False

    def c(self, a):
        return np.asarray(a, self.dtype)

    def shape(self, dims):
        return tuple(_dval(d, self.b) for d in dims)

    def near(self, d):
        if np.size(d):
            self.kink = min(self.kink, float(np.min(np.abs(d))))

    def decide(self, d, z):
        """A discrete decision at distance d from its edge, for values z: float32 may decide otherwise."""
        self.near(d)
        if np.size(d):
            self.disc = min(self.disc, float(np.min(np.abs(d) / (1 + np.abs(z)))))


class TorchNS:
    def __init__(self, b):
        self.b = b

    def c(self, a):
        return torch.as_tensor(np.asarray(a, np.float64))

    def shape(self, dims):
        return tuple(_dval(d, self.b) for d in dims)


def eval_tp(prog, ns, xs, cache):
    vals = list(xs)
    for op in prog.ops:
        vals.append(ROWS[op.kind].tp(op, ns, [vals[k] for k in op.args], cache))
    return vals


def eval_np(prog, ns, xs):
    vals = list(xs)
    for op in prog.ops:
        a = [vals[k] for k in op.args]
        if any(np.isnan(x).any() for x in a if x.dtype.kind == "f"):
            ns.undefined = True  # nan met where-based rules (relu'(nan), max ties): conventions differ
        vals.append(np.asarray(ROWS[op.kind].np(op, ns, a), ns.dtype))
    return vals


def eval_torch(prog, ns, xs):
    vals = list(xs)
    for op in prog.ops:
        vals.append(ROWS[op.kind].torch(op, ns, [vals[k] for k in op.args]))
    return vals


fuzz_ops.EVAL.update(tp=eval_tp, np=eval_np, torch=eval_torch, tpns=TPNS, torchns=TorchNS)


def _result(prog, vals, ns):
    """The scalar: sum over sinks of sum(v * w), in any of the three evaluators."""
    total = None
    for k, w in prog.sinks:
        t = (vals[k] * ns.c(w)).sum()
        total = t if total is None else total + t
    return total


# ---- exemptions and conditions ---------------------------------------------------------------------

def exempt(prog, e):
    """Whether exemption `e` (fuzz_ops.Exempt) holds for prog: some op's row, or a sub-program's, names it."""
    return any(e in ROWS[op.kind].exempt or ("sub" in op.p and exempt(op.p["sub"], e)) for op in prog.ops)


def flips(ns, dtype):
    """Rounding may flip a truncation or comparison that sits this close to its edge (an
    integer power of 0.5 truncated to an integer: 8.0 or 7.999999999999998)."""
    return ns.disc < (1e-5 if dtype == "float32" else 1e-12)


def exact_tie(ns):
    """An exact tie (max of a broadcast value): gradients split it, and a runtime whose kernels
    round identical inputs differently (see ORT_SPLIT_TIES) breaks it."""
    return ns.kink < 1e-12


def near_tie(ns):
    """A kink closer than 1e-9 but not exact: torch and tapeir may land on either side."""
    return 0 < ns.kink < 1e-9


def _ort_ulps(prog, dtype):
    if dtype == "float64" and exempt(prog, ORT_F64_FLOAT32_ATTR):
        return 2 ** 33, ORT_F64_FLOAT32_ATTR.why
    if dtype == "float32" and exempt(prog, ORT_F32_CONDITIONED):
        return 8 * ONNXRUNTIME, ORT_F32_CONDITIONED.why
    return ONNXRUNTIME, "onnxruntime's kernels"


def _ort_close(prog, got, want, truth, dtype, scale, msg):
    """onnxruntime vs the numpy backend. Where the numpy backend's own error against the float64
    truth is large (an ill-conditioned computation), onnxruntime's may be 10 times as large:
    that error counts into the magnitude the tolerance scales with."""
    ulps, why = _ort_ulps(prog, dtype)
    extra = 10 * np.abs(np.asarray(want, np.float64) - np.asarray(truth, np.float64)) / (ulps * np.finfo(dtype).eps)
    assert_close(got, want, dtype=dtype, ulps=ulps, scale=scale + extra, why=why, msg=msg)


# ---- running and comparing ---------------------------------------------------------------------

def _specs(prog, dtype):
    return [tp.Spec(v.shape, dtype) for v in prog.inputs]


def trace_program(prog, dtype, every_value=False):
    ns, cache = TPNS(dtype), {}

    def fn(*xs):
        vals = eval_tp(prog, ns, list(xs), cache)
        out = _result(prog, vals, ns)
        return tuple(vals[len(prog.inputs):]) + (out,) if every_value else out

    return tp.trace(fn, *_specs(prog, dtype), arg_names=[f"x{i}" for i in range(len(prog.inputs))], name="prog")


def make_inputs(prog, b, dtype, salt=0):
    rng = np.random.default_rng([prog.seed, b["B"], b["T"], salt])
    return [rng.uniform(v.lo, v.hi, size=_shape_val(v.shape, b)).astype(dtype) for v in prog.inputs]


def reference(prog, xs, b):
    ns = NPNS("float64", b)
    with np.errstate(over="ignore", under="ignore"):
        vals = eval_np(prog, ns, [np.asarray(x, np.float64) for x in xs])
        out = _result(prog, vals, ns)
    return vals[len(prog.inputs):] + [np.asarray(out)], ns


def _scale(arrays):
    return max([1.0] + [float(np.max(np.abs(a), initial=0.0)) for a in arrays])


def _sizes(prog):
    return prog.sizes if prog.symbolic else prog.sizes[:1]


ORT_F64_GAPS = ("Conv", "ConvTranspose", "AveragePool", "Erf", "Elu", "LeakyRelu")


def _all_ops(prog):
    """The program's ops and those of its sub-programs (tp.call, callgrad)."""
    for op in prog.ops:
        yield op
        sub = op.p.get("sub")
        if isinstance(sub, Program):
            yield from _all_ops(sub)


def _opset(prog):
    """The ONNX opset a program exports at: the lowerings differ (axes as attributes below
    18, layer_norm decomposed below 17, gelu a local function below 20), at least the
    opset every op in it exports at (fuzz_ops.Row.min_opset)."""
    from tapeir.backends.onnx_export import DEFAULT_OPSET, MIN_OPSET, max_opset

    low = max([MIN_OPSET] + [ROWS[op.kind].min_opset for op in _all_ops(prog)])
    return max(low, int(np.random.default_rng([prog.seed, 4]).choice(
        [MIN_OPSET, 16, 17, 18, 19, DEFAULT_OPSET, DEFAULT_OPSET, max_opset()])))


def _ort(g, opset=None):
    """g compiled for onnxruntime; None for a float64 graph using a kernel onnxruntime lacks
    in float64 (README: Conv, ConvTranspose, AveragePool, Erf, Elu, LeakyRelu)."""
    try:
        return tp.compile(g, backend="onnxruntime", intra_op_num_threads=1, opset=opset)
    except tp.TapeirError as e:
        if "NOT_IMPLEMENTED" in str(e) and any(f"implementation for {op}(" in str(e) for op in ORT_F64_GAPS):
            return None
        raise


def _wrt(prog):
    """Which arguments to differentiate: all (a tuple), one (an int) or some (a tuple)."""
    n = len(prog.inputs)
    rng = np.random.default_rng([prog.seed, 3])
    kind = rng.integers(3)
    if kind == 0 or n == 1:
        return tuple(range(n)) if kind != 1 else 0, list(range(n)) if kind != 1 else [0]
    if kind == 1:
        k = int(rng.integers(n))
        return k, [k]
    ks = sorted(rng.choice(n, size=int(rng.integers(1, n)), replace=False).tolist())
    return tuple(ks), ks


def check_program(prog, hessian=False):
    n_in = len(prog.inputs)
    wrt, widx = _wrt(prog)
    opset = _opset(prog)

    # ---- a, b: every value, numpy backend vs reference; onnxruntime vs numpy backend ----
    for dtype in ("float64", "float32"):
        gm = trace_program(prog, dtype, every_value=True)
        for j, o in enumerate(gm.outputs[:-1]):  # tapeir's types are the model's shapes
            want = prog.vals[n_in + j].shape
            assert tuple(map(_canon, o.type.shape)) == tuple(map(_canon, want)), \
                f"value {n_in + j}: tapeir's type {o.type}, the model's shape {want}"
        f_np, f_pool = tp.compile(gm), tp.compile(gm)
        f_ort = _ort(gm, opset)
        for b in _sizes(prog):
            xs = make_inputs(prog, b, dtype)
            saved = [x.copy() for x in xs]
            ref, rns = reference(prog, xs, b)
            got = leaves(f_np(*xs))
            for x, x0 in zip(xs, saved):
                assert_close(x, x0, exact=True, msg="the numpy backend changed an input")
            for j, g_ in enumerate(got):  # results are the caller's own arrays
                assert g_.flags.writeable, f"value {n_in + j} is read-only"
                assert not any(np.shares_memory(g_, x) for x in xs), f"value {n_in + j} shares an input's memory"
            scale = 1.0
            for j, (g_, r_) in enumerate(zip(got, ref)):
                scale = max(scale, float(np.max(np.abs(r_), initial=0.0)))
                assert g_.dtype == np.dtype(dtype), f"value {j}: dtype {g_.dtype}"
                if not flips(rns, dtype):
                    assert_close(g_, r_, dtype=dtype, scale=scale, ulps=PROGRAM, why=WHY_PROGRAM,
                                 msg=f"{dtype} numpy backend vs reference, value {n_in + j} (sizes {b})")
            _check_pooled(prog, f_pool, xs, got, b, dtype)
            if f_ort is not None and not flips(rns, dtype) and not (exact_tie(rns) and exempt(prog, ORT_SPLIT_TIES)):
                scale = 1.0
                for j, (o_, g_, r_) in enumerate(zip(leaves(f_ort(*xs)), got, ref)):
                    scale = max(scale, float(np.max(np.abs(g_), initial=0.0)))
                    _ort_close(prog, o_, g_, r_, dtype, scale, f"{dtype} onnxruntime vs numpy, value {n_in + j} "
                               f"(sizes {b})")

    # ---- the scalar program, both dtypes: grads, round trips ----
    g32, g64 = trace_program(prog, "float32"), trace_program(prog, "float64")
    vg32, vg64 = tp.value_and_grad(g32, wrt=wrt), tp.value_and_grad(g64, wrt=wrt)
    s64 = simplify(g64)
    for g in (g32, g64, vg32, vg64, s64):
        assert tp.parse(str(g)) == g, f"parse(str(g)) != g for\n{g}"
    rt32, rt64 = tp.from_onnx(tp.to_onnx(g32, opset)), tp.from_onnx(tp.to_onnx(g64, opset))
    vrt32 = tp.from_onnx(tp.to_onnx(vg32, opset))
    vg_of_rt64 = tp.value_and_grad(rt64, wrt=wrt)
    assert tp.parse(str(rt64)) == rt64
    f_vg32_ort = tp.compile(vg32, backend="onnxruntime", intra_op_num_threads=1, opset=opset)
    f_vg32, f_vg64, f_vg64_pool = tp.compile(vg32), tp.compile(vg64), tp.compile(vg64)
    rewrite = dict(ulps=REWRITE, why="a rewritten graph (folded constants, rebuilt lowerings)")
    for b in _sizes(prog):
        xs32, xs64 = make_inputs(prog, b, "float32"), make_inputs(prog, b, "float64")
        (ref32, ns32), (ref64, ns64) = reference(prog, xs32, b), reference(prog, xs64, b)
        s32, s64_ = _scale(ref32), _scale(ref64)
        # scalar graphs (a different memory plan than the every-value graph)
        v32, v64 = tp.run(g32, *xs32), tp.run(g64, *xs64)
        if not flips(ns64, "float64"):
            assert_close(v64, ref64[-1], scale=s64_, ulps=PROGRAM, why=WHY_PROGRAM, msg=f"f64 scalar (sizes {b})")
        if not flips(ns32, "float32"):
            assert_close(v32, ref32[-1], dtype="float32", scale=s32, ulps=PROGRAM, why=WHY_PROGRAM,
                         msg=f"f32 scalar vs reference (sizes {b})")
            _ort_close(prog, tp.run(g32, *xs32, backend="onnxruntime"), v32, ref32[-1], "float32", s32,
                       f"f32 scalar onnxruntime vs numpy (sizes {b})")
        assert_close(tp.run(s64, *xs64), v64, scale=s64_, **rewrite, msg=f"simplify(g) vs g (sizes {b})")
        # d: IR -> ONNX -> IR
        assert_close(tp.run(rt32, *xs32), v32, scale=s32, **rewrite, msg=f"f32 from_onnx(to_onnx(g)) (sizes {b})")
        assert_close(tp.run(rt64, *xs64), v64, scale=s64_, **rewrite, msg=f"f64 from_onnx(to_onnx(g)) (sizes {b})")
        # c: gradients
        val64, grads64 = f_vg64(*xs64)
        grads64 = leaves(grads64)
        assert_close(val64, v64, scale=s64_, **rewrite, msg=f"value_and_grad value (sizes {b})")
        assert len(grads64) == len(widx)
        for k, gx in zip(widx, grads64):
            assert gx.shape == xs64[k].shape and gx.dtype == xs64[k].dtype
            assert np.all(np.isfinite(gx)), f"non-finite gradient (sizes {b}): {gx}"
        gscale = _scale(grads64)
        # value_and_grad of the imported graph
        for j, (a_, b_) in enumerate(zip(leaves(tp.run(vg_of_rt64, *xs64)[1]), grads64)):
            assert_close(a_, b_, scale=gscale, **rewrite, msg=f"value_and_grad(from_onnx(to_onnx(g))) grad {j} "
                         f"(sizes {b})")
        # f32 gradients: onnxruntime vs numpy backend; the imported value_and_grad graph
        vg32_np = leaves(f_vg32(*xs32))
        vg32_truth = leaves(f_vg64(*[x.astype(np.float64) for x in xs32]))
        g32scale = _scale(vg32_np)
        if not flips(ns32, "float32") and not exact_tie(ns32):  # gradients split exact ties: see exact_tie
            for j, (o_, n_, t_) in enumerate(zip(leaves(f_vg32_ort(*xs32)), vg32_np, vg32_truth)):
                _ort_close(prog, o_, n_, t_, "float32", g32scale,
                           f"f32 value_and_grad output {j}: onnxruntime vs numpy (sizes {b})")
        for j, (r_, n_) in enumerate(zip(leaves(tp.run(vrt32, *xs32)), vg32_np)):
            assert_close(r_, n_, scale=g32scale, **rewrite,
                         msg=f"f32 from_onnx(to_onnx(value_and_grad)) output {j} (sizes {b})")
        # the memory plan of the gradient graph, every ufunc result in a reused buffer
        _check_pooled(prog, f_vg64_pool, xs64, leaves((val64, grads64)), b, "float64")
        smooth = ns64.kink > FD_MARGIN
        if smooth:
            _check_fd(prog, g64, xs64, grads64, widx, b)
        if torch is not None and not ns64.pool_tie and not near_tie(ns64):
            _check_torch(prog, xs64, val64, grads64, widx, b, gscale)
        if hessian:
            _check_hvp(prog, g64, xs64, wrt, widx, b, smooth)
        # g: fused vs unfused
        check_fused_agrees(vg64, xs64, backends=("numpy", "onnxruntime") if hessian else ("numpy",))
        if hessian:
            check_fused_agrees(trace_program(prog, "float32", every_value=True), xs32, backends=("numpy",))
    if any(isinstance(d, str) and "B" in d for v in prog.inputs for d in v.shape):
        _check_empty(prog)


def _live(prog):
    """The indices of the values the program's result depends on: all at the top level
    (every unused value is a sink), those reaching `out` in a sub-program."""
    if prog.out < 0:
        return set(range(len(prog.vals)))
    live, n = {prog.out}, len(prog.inputs)
    for j in reversed(range(len(prog.ops))):
        if n + j in live:
            live.update(prog.ops[j].args)
    return live


def _negative(prog, b, surely):
    """Whether a size goes negative at binding b (B - 1 at B = 0): a value's dim or a slice's
    start or room past its stop (p["need"]), here or in a sub-program. `surely`: only where
    tapeir cannot drop it: the program's values and what a call's result depends on, not a
    callgrad's sub-program (its gradient graph keeps what the gradient needs, simplified)."""
    n, live = len(prog.inputs), _live(prog) if surely else range(len(prog.vals))
    for k in live:
        if any(_dval(d, b) < 0 for d in prog.vals[k].shape):
            return True
        if k >= n:
            op = prog.ops[k - n]
            if any(_dval(d, b) < 0 for d in op.p.get("need", ())):
                return True
            if "sub" in op.p and not (surely and op.kind == "callgrad") and _negative(op.p["sub"], b, surely):
                return True
    return False


def _check_negative(prog, b, must):
    """A program a size of which is negative at b: in both backends and dtypes, the
    every-value graph raises a RunError that names the binding (checked before running).
    Not where only a dropped part has the size (`must` False: dead code of a sub-program, a
    callgrad's), nor for the value_and_grad graph, which tp.grad simplifies (a callgrad that
    is 0 drops its slice): there a RunError (the size, or a max of nothing) or a result."""
    for dtype in ("float64", "float32"):
        xs = make_inputs(prog, b, dtype)
        graphs = ((trace_program(prog, dtype, every_value=True), must),
                  (tp.value_and_grad(trace_program(prog, dtype), wrt=_wrt(prog)[0]), False))
        for g, sure in graphs:
            for f in (tp.compile(g), _ort(g, _opset(prog))):
                if f is None:  # a float64 kernel onnxruntime lacks
                    continue
                try:
                    f(*xs)
                except tp.RunError as e:
                    assert not sure or "B=0" in str(e), f"the RunError does not name the binding: {e}"
                    continue
                assert not sure, f"{dtype}: no RunError where a size is negative at {b} in\n{g}"


def _check_empty(prog):
    """f. A symbolic dim of size 0 (B = 0): the numpy backend against the reference (or a
    RunError where the reference raises: max of nothing), onnxruntime against numpy where
    numpy's result has no nan (the documented differences: mean of nothing is nan in numpy,
    0 in onnxruntime; max/min of nothing raise in numpy). Where a size goes negative at
    B = 0 (x[1:] of B), a RunError instead (`_check_negative`)."""
    b = {"B": 0, "T": prog.sizes[0]["T"]}
    if _negative(prog, b, surely=False):
        _check_negative(prog, b, must=_negative(prog, b, surely=True))
        return
    truth = vg64 = None
    for dtype in ("float64", "float32"):
        xs = make_inputs(prog, b, dtype)
        gm = trace_program(prog, dtype, every_value=True)
        vg = tp.value_and_grad(trace_program(prog, dtype), wrt=_wrt(prog)[0])
        vg64 = vg if dtype == "float64" else vg64
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice"
            try:
                ref, rns = reference(prog, xs, b)
            except ValueError:  # a reduction of nothing with no identity: a RunError, unless
                try:                # that reduction is dead code tapeir dropped (tp.grad simplifies)
                    tp.run(gm, *xs)
                except tp.RunError:
                    pass
                continue
            got, grads = leaves(tp.run(gm, *xs)), leaves(tp.run(vg, *xs))
            if dtype == "float32":  # float64 at the float32 inputs (the values' reference is that already)
                truth = (ref, leaves(tp.run(vg64, *[x.astype(np.float64) for x in xs])))
        if rns.undefined:  # -inf (a logsumexp of nothing) cast to an integer, or a nan met an op
            continue
        for j, (g_, r_) in enumerate(zip(got, ref)):
            assert_close(g_, r_, dtype=dtype, ulps=PROGRAM, why=WHY_PROGRAM, msg=f"B = 0: value {len(xs) + j}")
        # documented differences: mean of nothing is nan in numpy; -inf in a max_pool2d window
        if dtype == "float32" and all(np.isfinite(a).all() for a in got + grads) and not exact_tie(rns):
            for name, g, want, true in (("value", gm, got, truth[0]), ("value_and_grad", vg, grads, truth[1])):
                for j, (o_, g_, t_) in enumerate(zip(leaves(tp.run(g, *xs, backend="onnxruntime")), want, true)):
                    _ort_close(prog, o_, g_, t_, "float32", _scale(want),
                               f"B = 0: onnxruntime vs numpy, {name} output {j}")


def _check_pooled(prog, f, xs, want, b, dtype):
    """The memory plan with every ufunc result in a reused buffer (MIN_BYTES = 0; the
    default keeps these small arrays out of it): the same values, and a second call (other
    inputs) does not overwrite the first call's results."""
    saved = numpy_memory.MIN_BYTES
    numpy_memory.MIN_BYTES = 0
    try:
        first = leaves(f(*xs))
        snapshot = [a.copy() for a in first]
        leaves(f(*make_inputs(prog, b, dtype, salt=1)))
        again = leaves(f(*xs))
    finally:
        numpy_memory.MIN_BYTES = saved
    # not bit-identical: a ufunc on a transposed view returns a transposed array unless it
    # writes into a (C-ordered) buffer, and a later sum adds in memory order
    for j, (a, a0, a2, w) in enumerate(zip(first, snapshot, again, want)):
        what = f"pooled buffers vs plain numpy backend, value {len(xs) + j} (sizes {b})"
        assert_close(a, w, msg=what)
        assert_close(a, a0, exact=True, msg=f"a later call overwrote value {len(prog.inputs) + j}")
        assert_close(a2, w, msg=what + ", third call")


def _check_fd(prog, g64, xs, grads, widx, b, eps=1e-6):
    """<grad, d> against central differences along a random direction d; the tolerance scales
    with the summed |terms| of <grad, d> and with the value (its rounding over 2 eps)."""
    rng = np.random.default_rng(prog.seed + 99)
    ds = [rng.standard_normal(xs[k].shape) for k in widx]
    f = tp.compile(g64)

    def moved(sign):
        ys = list(xs)
        for k, d in zip(widx, ds):
            ys[k] = xs[k] + sign * eps * d
        return ys
    plus, minus = float(f(*moved(1))), float(f(*moved(-1)))
    fd = (plus - minus) / (2 * eps)
    an = sum(float(np.sum(gx * d)) for gx, d in zip(grads, ds))
    mag = sum(float(np.sum(np.abs(gx * d))) for gx, d in zip(grads, ds))
    assert_close(an, fd, scale=mag + 0.01 * max(1.0, abs(plus)), ulps=FD, why="central differences",
                 msg=f"<grad, d> vs central differences (sizes {b})")


def _check_torch(prog, xs, val, grads, widx, b, gscale):
    ns = TorchNS(b)
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=k in widx) for k, x in enumerate(xs)]
    out = _result(prog, eval_torch(prog, ns, ts), ns)
    ws = [ts[k] for k in widx]
    gs = torch.autograd.grad(out, ws, allow_unused=True) if out.requires_grad else [None] * len(ws)
    assert_close(val, out.detach().numpy(), ulps=PROGRAM, why=WHY_PROGRAM, msg=f"value vs torch (sizes {b})")
    for j, (gx, tg) in enumerate(zip(grads, gs)):
        assert_close(gx, torch_np(tg, xs[widx[j]].shape), scale=gscale, ulps=PROGRAM, why=WHY_PROGRAM,
                     msg=f"gradient {j} vs torch autograd (sizes {b})")


def _kink(prog, xs, b):
    """The reference at these inputs (its distance to the nearest kink)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reference(prog, xs, b)[1]


def _check_hvp(prog, g64, xs, wrt, widx, b, smooth, eps=1e-4):
    """Hv = grad <grad g, v> (tp.grad of a trace that tp.call's tp.grad(g)): against central
    differences of the gradient when smooth; in onnxruntime and after IR -> ONNX -> IR always."""
    n = len(xs)
    gg = tp.grad(g64, wrt=wrt)

    def hv(*args):
        gs = tp.call(gg, *args[:n])
        gs = gs if isinstance(wrt, tuple) else (gs,)
        total = None
        for gi, vi in zip(gs, args[n:]):
            t = (gi * vi).sum()
            total = t if total is None else total + t
        return total

    specs = _specs(prog, "float64")
    hg = tp.grad(tp.trace(hv, *specs, *[specs[k] for k in widx]), wrt=wrt)
    assert tp.parse(str(hg)) == hg
    rng = np.random.default_rng(prog.seed + 7)
    vs = [rng.standard_normal(xs[k].shape) for k in widx]
    got = leaves(tp.run(hg, *xs, *vs))
    scale = _scale(got)
    kns = _kink(prog, xs, b)
    f_ort = _ort(hg, _opset(prog))
    if f_ort is not None and not exact_tie(kns):
        for j, (o_, g_) in enumerate(zip(leaves(f_ort(*xs, *vs)), got)):
            ulps, why = _ort_ulps(prog, "float64")
            assert_close(o_, g_, scale=scale, ulps=ulps, why=why,
                         msg=f"Hessian-vector product {j}: onnxruntime vs numpy (sizes {b})")
    for j, (r_, g_) in enumerate(zip(leaves(tp.run(tp.from_onnx(tp.to_onnx(hg, _opset(prog))), *xs, *vs)), got)):
        assert_close(r_, g_, scale=scale, ulps=REWRITE, why="rebuilt lowerings",
                     msg=f"Hessian-vector product {j}: from_onnx(to_onnx(hg)) (sizes {b})")
    if torch is not None and not exempt(prog, TORCH_TIE_RULE) and not exempt(prog, TORCH_THIRD_DERIVATIVE):
        ns = TorchNS(b)
        ts = [torch.tensor(x, dtype=torch.float64, requires_grad=k in widx) for k, x in enumerate(xs)]
        out = _result(prog, eval_torch(prog, ns, ts), ns)
        ws = [ts[k] for k in widx]
        if out.requires_grad and not near_tie(kns):
            gs = torch.autograd.grad(out, ws, create_graph=True, allow_unused=True)
            dot = sum((gi * torch.as_tensor(vi)).sum() for gi, vi in zip(gs, vs) if gi is not None)
            hs = torch.autograd.grad(dot, ws, allow_unused=True) if torch.is_tensor(dot) and dot.requires_grad \
                else [None] * len(ws)
            for j, (hx, th) in enumerate(zip(got, hs)):
                assert_close(hx, torch_np(th, hx.shape), scale=scale, ulps=PROGRAM, why=WHY_PROGRAM,
                             msg=f"Hessian-vector product {j} vs torch (sizes {b})")
    if not smooth:
        return
    f = tp.compile(gg)

    def central(h):
        """(grad(x + h v) - grad(x - h v)) / 2h."""
        ys, zs = list(xs), list(xs)
        for k, v in zip(widx, vs):
            ys[k], zs[k] = xs[k] + h * v, xs[k] - h * v
        return [(a_ - b_) / (2 * h) for a_, b_ in zip(leaves(f(*ys)), leaves(f(*zs)))]
    # Richardson extrapolation: the O(h^2) error of central differences cancels
    fd = [(4 * q - p_) / 3 for p_, q in zip(central(eps), central(eps / 2))]
    for j, (hx, want) in enumerate(zip(got, fd)):
        assert_close(hx, want, scale=_scale(fd), ulps=FD_HVP, why="central differences of the gradient",
                     msg=f"Hessian-vector product {j} vs central differences of the gradient (sizes {b})")


@SETTINGS
@given(programs(), st.integers(0, 2))
def test_fuzz_programs(prog, k):
    note(repr(prog))
    check_program(prog, hessian=(k == 0))


def test_op_table_is_complete():
    """Every row has all four forms and is drawn; every named exemption is some row's."""
    for r in ROWS.values():
        assert all(callable(f) for f in (r.gen, r.tp, r.np, r.torch)), r.name
    assert set(KINDS) == {n for n, r in ROWS.items() if torch is not None or not r.needs_torch}
    declared = {v for v in vars(fuzz_ops).values() if isinstance(v, fuzz_ops.Exempt)}
    assert declared == {e for r in ROWS.values() for e in r.exempt}
