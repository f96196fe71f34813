"""Differential fuzzing of whole programs.

Per-op tests check each op alone; this file generates random programs (3-12 ops from a
vocabulary of tp functions, Tensor operators, numpy interop (np.exp(t), ndarray + t,
numpy scalars), integer and boolean detours, constant subexpressions and tp.call of
sub-programs) over 1-3 float32 or float64 inputs whose shapes broadcast (size-1 dims, 0-d
tensors, symbolic dims "B", "T" and "2*B" traced with tp.Spec and run at two bindings),
ending in a scalar: a weighted sum of every value nothing else uses. Per program:

  a. the numpy backend against an independent evaluation written directly in numpy
     (`eval_np`: numpy calls, never tapeir's kernels), every intermediate value, in
     float64 (rtol 1e-9) and float32 (1e-3); results are the caller's own arrays (no
     input memory, writable, inputs untouched); with every ufunc result in the memory
     plan's reused buffers (numpy_memory.MIN_BYTES = 0) the values are the same and a
     later call does not overwrite them (forward and value_and_grad graphs);
     simplify(g) runs like g;
  b. the onnxruntime backend against the numpy backend, every value and value_and_grad:
     float32 at rtol 1e-4, atol 1e-5 x the largest magnitude so far (1e-4 with
     layer_norm: a nearly constant row divides rounding by sqrt(eps)), plus 10 times the
     numpy backend's own float32 error against float64 (`_close(truth=...)`: where
     numpy's float32 rounding is large, an ill-conditioned computation, onnxruntime's may
     be too); float64 at 1e-9, or 1e-6 for programs with layer_norm or gelu
     (onnxruntime: a float32 epsilon attribute, its own tanh-gelu rounding), skipping the
     float64 kernels onnxruntime lacks (README); programs where float32 rounding may flip
     a truncation or comparison (within 1e-5 of its edge) skip the float32 comparisons;
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
  f. programs with "B" also run at B = 0 (`_check_empty`);
  callgrad ops (tanh of tp.call(tp.grad(sub-program))) make every first-order check a
  second-order one; their reference gradient is torch's.

Each program exports at an opset drawn from 15..the highest (the lowerings differ).

Input ranges keep every op in its domain: generation tracks an interval for each value
and applies log/sqrt/reciprocal/division/pow only where the operand is bounded away from
0 (or from negative values), exp only where it cannot overflow, and nothing that could
leave [-1e3, 1e3].

Choices come from one seed per program (hypothesis draws the seed and the dtype; its
own draws lean on their smallest values, which made most programs alike). The default
run is deterministic (derandomize=True, no example database): 250 programs, ~20 s.
TAPEIR_FUZZ_EXAMPLES=2000 runs more; TAPEIR_FUZZ_MAX_OPS=25 makes them longer.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import tapeir as tp
from tapeir.backends import numpy_memory
from tapeir.passes import simplify

try:  # the optional PyTorch oracle
    import torch
except Exception:  # pragma: no cover - torch is optional
    torch = None

N_EXAMPLES = int(os.environ.get("TAPEIR_FUZZ_EXAMPLES", "250"))
MAX_OPS = int(os.environ.get("TAPEIR_FUZZ_MAX_OPS", "12"))
BOUND = 1e3          # |every intermediate value| stays below this
FD_MARGIN = 1e-3     # skip finite differences when a kink is this close
ORT_RTOL, ORT_ATOL = 1e-4, 1e-5

SETTINGS = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# ---- dims ----------------------------------------------------------------------------
# A dim is an int or a tapeir symbolic dim string over the symbols "B" and "T": "B", "3*B",
# "B*T". A binding maps each symbol to a size ({"B": 2, "T": 3}).

def _fac(d):
    """(coefficient, sorted symbols)."""
    if isinstance(d, int):
        return d, ()
    coef, syms = 1, []
    for part in d.split("*"):
        if part.isdigit():
            coef *= int(part)
        else:
            syms.append(part)
    return coef, tuple(sorted(syms))


def _dim(coef, syms):
    if not syms or coef == 0:
        return coef
    body = "*".join(sorted(syms))
    return body if coef == 1 else f"{coef}*{body}"


def _dval(d, b):
    c, syms = _fac(d)
    return c * int(np.prod([b[x] for x in syms], dtype=np.int64))


def _shape_val(shape, b):
    return tuple(_dval(d, b) for d in shape)


def _static(shape):
    """The shape with every symbolic dim replaced by 1 (constants broadcast against it)."""
    return tuple(d if isinstance(d, int) else 1 for d in shape)


def _prod(dims):
    c, syms = 1, ()
    for d in dims:
        dc, ds = _fac(d)
        c, syms = c * dc, syms + ds
    return _dim(c, syms)


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


UNARY_ANY = ["neg", "tanh", "sigmoid", "softplus", "sin", "cos", "erf", "abs", "relu", "silu", "cast_rt"]
KINDS = (
    UNARY_ANY + ["exp", "log", "sqrt", "reciprocal", "safe_log", "leaky_relu", "elu", "gelu", "clip",
                 "powc", "rpowc", "scal"]
    + ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "where"] * 2
    + ["sum", "mean", "max", "min", "logsumexp", "softmax", "log_softmax", "layer_norm"]
    + ["matmul", "reshape", "transpose", "expand_dims", "squeeze", "getitem", "broadcast_to",
       "concatenate", "pad", "reshape", "transpose", "getitem"]
    + ["mse", "l1", "bce", "xent", "nll", "conv2d", "max_pool2d", "avg_pool2d", "call"]
    + ["matmul", "matmul", "conv2d", "max_pool2d", "avg_pool2d", "call", "sum", "max", "layer_norm"]
    + ["cexpr", "cexpr", "intpath", "intpath", "boolpath", "conv_transpose2d"]
    + (["callgrad", "callgrad"] if torch is not None else [])  # its reference gradient is torch's
)
INT_STEPS = ["abs", "relu", "neg", "addc", "mulc", "clip", "square", "where_pos", "max_self"]


def _clamp(x, lo, hi, ints=False):
    """clip's value at x (monotone, so an interval maps to [clamp(lo), clamp(hi)]); integer
    tensors clip to [ceil(lo), floor(hi)]."""
    if lo is not None:
        x = max(x, math.ceil(lo) if ints else lo)
    if hi is not None:
        x = min(x, math.floor(hi) if ints else hi)
    return x


def _mono(f, lo, hi):
    a, b = f(lo), f(hi)
    return min(a, b), max(a, b)


def _mul_iv(a, b):
    ps = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(ps), max(ps)


def _count(shape, axes, sizes):
    """(min, max) number of elements a reduction over `axes` folds."""
    dims = [shape[a] for a in axes]
    return (min(_dval(_prod(dims), b) for b in sizes), max(_dval(_prod(dims), b) for b in sizes))


def _numel_max(shape, sizes):
    return max(int(np.prod(_shape_val(shape, b))) for b in sizes)


class Gen:
    """Draws one program, op by op, keeping shapes and value intervals."""

    def __init__(self, dtype, sizes, seed, n_inputs, n_ops, sub_input=None, depth=0, no_pool=False):
        self.dtype, self.sizes, self.depth, self.no_pool = dtype, sizes, depth, no_pool
        self.subs = []  # sub-programs of call ops, which a later call may reuse
        self.rng = np.random.default_rng(seed)
        if sub_input is not None:
            inputs = [sub_input]
        else:
            inputs = self._inputs(n_inputs)
        self.prog = Program(dtype, inputs, [], list(inputs), sizes, seed)
        self.uses = [0] * len(inputs)
        for _ in range(n_ops):
            self.step()

    # -- choices: from the program's seed (hypothesis draws the seed, the op count, the
    # dtype and the sizes; its own draws lean on their smallest values, which made most
    # programs start with the same op) --
    def i(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def coin(self):
        return bool(self.rng.integers(2))

    def choice(self, xs):
        xs = list(xs)
        return xs[self.i(0, len(xs) - 1)]

    def const(self, shape, lo=-1.0, hi=1.0):
        return self.rng.uniform(lo, hi, size=shape).astype(np.float64)

    def _inputs(self, n):
        syms = [] if self.coin() else ["B"] if self.coin() else ["B", "T"]
        rank = self.i(0, 4)
        base = []
        for _ in range(rank):
            base.append(self.choice([1, 2, 3, 4] + syms * 2 + (["2*B"] if syms and self.i(0, 3) == 0 else [])))
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
                drop = self.i(0, len(base))
                shape = [d if self.coin() else 1 for d in base[drop:]]
                if len(shape) < 4 and self.i(0, 4) == 0:
                    shape = [self.choice([1, 2, 3])] + shape
                shape = tuple(shape)
            pos = self.coin()
            ins.append(Val(shape, 0.5, 2.0) if pos else Val(shape, -2.0, 2.0))
        return ins

    def add(self, kind, args, out_shape, lo, hi, **p):
        if not (np.isfinite(lo) and np.isfinite(hi)) or max(abs(lo), abs(hi)) > BOUND:
            return None
        if _numel_max(out_shape, self.sizes) > 256:
            return None
        self.prog.ops.append(Op(kind, tuple(args), p))
        self.prog.vals.append(Val(tuple(out_shape), float(lo), float(hi)))
        for a in args:
            self.uses[a] += 1
        self.uses.append(0)
        return True

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
        drop = self.i(0, len(s))
        return tuple(d if self.coin() else 1 for d in s[drop:])

    def step(self):
        for _ in range(6):
            kind = self.choice(KINDS)
            if kind in ("call", "callgrad") and self.depth > 0:
                continue
            nchw = [k for k, v in enumerate(self.prog.vals) if self._nchw(v)]
            for _ in range(3):  # picky ops try other operands
                vi = self.choice(nchw) if kind in ("conv2d", "max_pool2d", "avg_pool2d") and nchw else self.pick()
                if getattr(self, "g_" + kind)(vi, self.prog.vals[vi]):
                    return
        v = self.prog.vals[-1]
        self.add("tanh", [len(self.prog.vals) - 1], v.shape, -1, 1, form="tp")

    # -- unary --
    def _unary(self, kind, vi, v, lo, hi, **p):
        return self.add(kind, [vi], v.shape, lo, hi, **p)

    def g_neg(self, vi, v):
        return self._unary("neg", vi, v, -v.hi, -v.lo, form=self.choice(["op", "tp", "np"]))

    def g_tanh(self, vi, v):
        return self._unary("tanh", vi, v, *_mono(math.tanh, v.lo, v.hi), form=self.choice(["tp", "np"]))

    def g_sigmoid(self, vi, v):
        return self._unary("sigmoid", vi, v, *_mono(lambda x: 1 / (1 + math.exp(-x)), v.lo, v.hi))

    def g_softplus(self, vi, v):
        return self._unary("softplus", vi, v, *_mono(lambda x: max(x, 0) + math.log1p(math.exp(-abs(x))),
                                                     v.lo, v.hi))

    def g_sin(self, vi, v):
        return self._unary("sin", vi, v, -1, 1, form=self.choice(["tp", "np"]))

    def g_cos(self, vi, v):
        return self._unary("cos", vi, v, -1, 1, form=self.choice(["tp", "np"]))

    def g_erf(self, vi, v):
        return self._unary("erf", vi, v, *_mono(math.erf, v.lo, v.hi))

    def g_abs(self, vi, v):
        lo = 0.0 if v.lo <= 0 <= v.hi else min(abs(v.lo), abs(v.hi))
        return self._unary("abs", vi, v, lo, max(abs(v.lo), abs(v.hi)), form=self.choice(["op", "tp", "np"]))

    def g_relu(self, vi, v):
        return self._unary("relu", vi, v, max(v.lo, 0), max(v.hi, 0))

    def g_silu(self, vi, v):
        return self._unary("silu", vi, v, max(-0.28, min(v.lo, 0)), max(v.hi, 0))

    def g_cast_rt(self, vi, v):
        return self._unary("cast_rt", vi, v, v.lo, v.hi)

    def g_intpath(self, vi, v):
        """(x * k) cast to an integer dtype (truncation), integer ops, a reduction, cast back."""
        k = self.choice([1.0, 3.0, 0.5])
        lo, hi = math.trunc(v.lo * k), math.trunc(v.hi * k)
        steps = []
        for _ in range(self.i(1, 3)):
            st_ = self.choice(INT_STEPS)
            if st_ in ("addc", "mulc"):
                c = self.choice([2, -1, 3])
                steps.append((st_, c))
                lo, hi = (lo + c, hi + c) if st_ == "addc" else _mono(lambda x: x * c, lo, hi)
            elif st_ == "clip":
                a, b = self.choice([(0.5, 2.5), (-1.0, 1.0), (-2.5, None), (None, 0.7)])
                steps.append((st_, a, b))
                lo, hi = _clamp(lo, a, b, True), _clamp(hi, a, b, True)
            elif st_ == "where_pos":
                c = self.choice([7, -3])
                steps.append((st_, c))
                lo, hi = min(lo, c), max(hi, c)
            else:
                steps.append((st_,))
                lo, hi = {"abs": lambda: (0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi))),
                          "relu": lambda: (max(lo, 0), max(hi, 0)), "neg": lambda: (-hi, -lo),
                          "square": lambda: (0, max(lo * lo, hi * hi)), "max_self": lambda: (lo, hi)}[st_]()
        axis, axes = self._axes(v)
        red = self.choice(["none", "sum", "max", "min"])
        shape = v.shape
        if red != "none":
            keep = self.coin()
            shape = tuple(1 if i in axes else d for i, d in enumerate(v.shape)) if keep else \
                tuple(d for i, d in enumerate(v.shape) if i not in axes)
            if red == "sum":
                nmin, nmax = _count(v.shape, axes, self.sizes)
                lo, hi = min(lo * nmin, lo * nmax), max(hi * nmin, hi * nmax)
        else:
            axis, keep = None, False
        return self.add("intpath", [vi], shape, lo, hi, k=k, to=self.choice(["int32", "int64"]), steps=steps,
                        red=red, axis=axis, keepdims=keep)

    def g_boolpath(self, vi, v):
        """A comparison (or an equality of two comparisons) cast to the float dtype."""
        thr = float(self.rng.uniform(v.lo, v.hi)) if v.hi > v.lo else v.lo + 0.5
        thr2 = float(self.rng.uniform(v.lo, v.hi)) if v.hi > v.lo else v.lo - 0.5
        return self._unary("boolpath", vi, v, 0.0, 1.0, thr=thr, thr2=thr2, cmp=self.choice([">", "<=", ">="]),
                           mode=self.choice(["cast", "eq", "ne", "where"]))

    def g_exp(self, vi, v):
        if v.hi > 5:
            return None
        return self._unary("exp", vi, v, math.exp(v.lo), math.exp(v.hi), form=self.choice(["tp", "np"]))

    def g_log(self, vi, v):
        if v.lo < 0.2:
            return None
        return self._unary("log", vi, v, math.log(v.lo), math.log(v.hi), form=self.choice(["tp", "np"]))

    def g_safe_log(self, vi, v):
        if v.lo < 0.2:
            return None
        return self._unary("safe_log", vi, v, math.log(v.lo), math.log(v.hi + 1e-6))

    def g_sqrt(self, vi, v):
        if v.lo < 0.2:
            return None
        return self._unary("sqrt", vi, v, math.sqrt(v.lo), math.sqrt(v.hi), form=self.choice(["tp", "np"]))

    def g_reciprocal(self, vi, v):
        if not (v.lo >= 0.2 or v.hi <= -0.2):
            return None
        return self._unary("reciprocal", vi, v, *_mono(lambda x: 1 / x, v.lo, v.hi))

    def g_leaky_relu(self, vi, v):
        a = self.choice([0.01, 0.2])
        return self._unary("leaky_relu", vi, v, min(v.lo, v.lo * a), max(v.hi, v.hi * a), alpha=a)

    def g_elu(self, vi, v):
        a = self.choice([1.0, 0.5])
        return self._unary("elu", vi, v, max(-a, min(v.lo, 0)), max(v.hi, 0), alpha=a)

    def g_gelu(self, vi, v):
        return self._unary("gelu", vi, v, max(-0.18, min(v.lo, 0)), max(v.hi, 0),
                           approximate=self.choice(["none", "tanh"]))

    def g_clip(self, vi, v):
        lo = self.choice([None, -0.5, 0.0, 0.25])
        hi = self.choice([None, 0.5, 1.0])
        if lo is None and hi is None:
            hi = 0.75
        return self._unary("clip", vi, v, _clamp(v.lo, lo, hi), _clamp(v.hi, lo, hi), a_min=lo, a_max=hi,
                           form=self.choice(["tp", "np"]))

    def g_powc(self, vi, v):
        e = self.choice([2.0, 3, 0.5, -1.0, 0.0, 1.0, 2])
        if e == 0.5 and v.lo < 0.2:
            return None
        if e == -1.0 and v.lo < 0.2 and v.hi > -0.2:
            return None
        corners = [v.lo ** e, v.hi ** e]
        if e in (2.0, 2) and v.lo < 0 < v.hi:
            corners.append(0.0)
        return self._unary("powc", vi, v, min(corners), max(corners), e=e,
                           form=self.choice(["op", "tp", "np"]))

    def g_rpowc(self, vi, v):
        base = self.choice([2.0, 0.5, math.e])
        if v.hi * math.log(max(base, 1 / base)) > 5 or -v.lo * math.log(max(base, 1 / base)) > 5:
            return None
        return self._unary("rpowc", vi, v, *_mono(lambda x: base ** x, v.lo, v.hi), base=base)

    def g_scal(self, vi, v):
        op = self.choice(["+", "-", "*", "/", "r-", "r/", "r+", "r*"])
        c = self.choice([0.5, 2.0, -1.5, 1.0, 0.0, 3])
        if op in ("/",) and c == 0:
            return None
        if op == "r/":
            if v.lo < 0.2 and v.hi > -0.2:
                return None
            iv = _mono(lambda x: c / x, v.lo, v.hi)
        elif op in ("+", "r+"):
            iv = (v.lo + c, v.hi + c)
        elif op == "-":
            iv = (v.lo - c, v.hi - c)
        elif op == "r-":
            iv = (c - v.hi, c - v.lo)
        elif op in ("*", "r*"):
            iv = _mono(lambda x: x * c, v.lo, v.hi)
        else:
            iv = _mono(lambda x: x / c, v.lo, v.hi)
        # a Python scalar or a numpy one (both weakly typed: they take the tensor's dtype)
        kind = self.choice(["py", "py", "f64", "f32"] + (["i64"] if float(c).is_integer() else []))
        return self._unary("scal", vi, v, *iv, op=op, c=c, ckind=kind)

    def g_cexpr(self, vi, v):
        """x (+ or *) f(constant): a constant subexpression (simplify folds the small ones)."""
        c = self.const(self.const_like(v.shape) if self.coin() else _static(v.shape))
        fn = self.choice(["exp", "tanh", "neg", "square", "sum", "softmax"])
        iv = {"exp": (math.exp(-1), math.e), "tanh": (-0.77, 0.77), "neg": (-1, 1), "square": (0, 1),
              "sum": (-c.size, c.size), "softmax": (0, 1)}[fn]
        if fn in ("sum", "softmax") and not c.shape:
            fn, iv = "neg", (-1, 1)
        shape = _bcast(v.shape, () if fn == "sum" else c.shape)
        if self.coin():
            return self.add("cexpr", [vi], shape, v.lo + iv[0], v.hi + iv[1], c=c, fn=fn, op="+")
        return self.add("cexpr", [vi], shape, *_mul_iv((v.lo, v.hi), iv), c=c, fn=fn, op="*")

    # -- binary --
    def _other(self, v):
        """A partner value, a constant array or a Python scalar: (args, p)."""
        k = self.partner(v.shape)
        if k is not None:
            return [k], {}, self.prog.vals[k]
        if self.coin():
            shape = self.const_like(v.shape)
            return [], {"c": self.const(shape, 0.5, 1.5) * self.choice([1, -1]),
                        "side": self.choice(["l", "r"])}, None
        return [], {"s": self.choice([0.5, 2.0, -1.0]), "side": self.choice(["l", "r"])}, None

    def _binop(self, kind, vi, v, iv_fn, need_b=None, need_a=None, forms=("op", "tp", "np")):
        args, p, w = self._other(v)
        if w is not None:
            shape = _bcast(v.shape, w.shape)
            b = (w.lo, w.hi)
        elif "c" in p:
            shape = _bcast(v.shape, p["c"].shape)
            b = (float(p["c"].min()), float(p["c"].max()))
        else:
            shape = v.shape
            b = (p["s"], p["s"])
        a = (v.lo, v.hi)
        if p.get("side") == "l":
            a, b = b, a
        if (need_b and not need_b(*b)) or (need_a and not need_a(*a)):
            return None
        lo, hi = iv_fn(a, b)
        if kind == "pow" and "s" in p:
            forms = ("op", "tp")  # np.power(2.0, t) would make a f64 constant base for a f32 tensor
        return self.add(kind, [vi] + args, shape, lo, hi, form=self.choice(forms), **p)

    def g_add(self, vi, v):
        return self._binop("add", vi, v, lambda a, b: (a[0] + b[0], a[1] + b[1]))

    def g_sub(self, vi, v):
        return self._binop("sub", vi, v, lambda a, b: (a[0] - b[1], a[1] - b[0]))

    def g_mul(self, vi, v):
        return self._binop("mul", vi, v, _mul_iv)

    def g_div(self, vi, v):
        away = lambda lo, hi: lo >= 0.2 or hi <= -0.2  # noqa: E731
        return self._binop("div", vi, v, lambda a, b: _mul_iv(a, (1 / b[1], 1 / b[0])), need_b=away)

    def g_maximum(self, vi, v):
        return self._binop("maximum", vi, v, lambda a, b: (max(a[0], b[0]), max(a[1], b[1])),
                           forms=("tp", "np"))

    def g_minimum(self, vi, v):
        return self._binop("minimum", vi, v, lambda a, b: (min(a[0], b[0]), min(a[1], b[1])),
                           forms=("tp", "np"))

    def g_pow(self, vi, v):
        def iv(a, b):
            cs = [x ** y for x in a for y in b]
            return min(cs), max(cs)
        return self._binop("pow", vi, v, iv, need_a=lambda lo, hi: lo >= 0.2,
                           need_b=lambda lo, hi: max(abs(lo), abs(hi)) <= 3)

    def g_where(self, vi, v):
        thr = float(self.rng.uniform(v.lo, v.hi)) if v.hi > v.lo else v.lo + 0.5
        cmp = self.choice([">", "<", ">=", "<="])
        args, p, w = self._other(v)
        kx = self.partner(v.shape)
        if kx is None or (w is not None and _bcast(self.prog.vals[kx].shape, w.shape) is None):
            return None
        x = self.prog.vals[kx]
        if w is not None:
            shape = _bcast(_bcast(v.shape, x.shape), w.shape)
            lo, hi = min(x.lo, w.lo), max(x.hi, w.hi)
        elif "c" in p:
            shape = _bcast(_bcast(v.shape, x.shape), p["c"].shape)
            lo, hi = min(x.lo, float(p["c"].min())), max(x.hi, float(p["c"].max()))
        else:
            shape = _bcast(v.shape, x.shape)
            lo, hi = min(x.lo, p["s"]), max(x.hi, p["s"])
        if shape is None:
            return None
        return self.add("where", [vi, kx] + args, shape, lo, hi, thr=thr, cmp=cmp,
                        form=self.choice(["op", "tp"]), **p)

    # -- reductions --
    def _axes(self, v, allow_none=True):
        r = len(v.shape)
        opts = ["none"] if allow_none else []
        if r:
            opts += ["int", "tuple"]
        kind = self.choice(opts) if opts else "none"
        if kind == "none":
            return None, tuple(range(r))
        if kind == "int":
            a = self.i(0, r - 1)
            return (a - r if self.coin() else a), (a,)
        axes = sorted(set(self.i(0, r - 1) for _ in range(self.i(0, r))))
        return tuple(axes), tuple(axes)

    def _reduce(self, kind, vi, v, iv_fn, forms):
        axis, axes = self._axes(v)
        keep = self.coin()
        shape = tuple(1 if i in axes else d for i, d in enumerate(v.shape)) if keep else \
            tuple(d for i, d in enumerate(v.shape) if i not in axes)
        nmin, nmax = _count(v.shape, axes, self.sizes)
        if nmin == 0:
            return None
        lo, hi = iv_fn(v.lo, v.hi, nmin, nmax)
        return self.add(kind, [vi], shape, lo, hi, axis=axis, keepdims=keep, form=self.choice(forms))

    def g_sum(self, vi, v):
        return self._reduce("sum", vi, v, lambda lo, hi, a, b: (min(lo * a, lo * b), max(hi * a, hi * b)),
                            ("method", "tp", "np"))

    def g_mean(self, vi, v):
        return self._reduce("mean", vi, v, lambda lo, hi, a, b: (lo, hi), ("method", "tp", "np"))

    def g_max(self, vi, v):
        return self._reduce("max", vi, v, lambda lo, hi, a, b: (lo, hi), ("method", "tp", "np"))

    def g_min(self, vi, v):
        return self._reduce("min", vi, v, lambda lo, hi, a, b: (lo, hi), ("method", "tp", "np"))

    def g_logsumexp(self, vi, v):
        return self._reduce("logsumexp", vi, v, lambda lo, hi, a, b: (lo, hi + math.log(b)), ("tp",))

    def g_softmax(self, vi, v):
        if not v.shape:
            return None
        axis = self.i(-len(v.shape), len(v.shape) - 1)
        return self._unary("softmax", vi, v, 0.0, 1.0, axis=axis)

    def g_log_softmax(self, vi, v):
        if not v.shape:
            return None
        axis = self.i(-len(v.shape), len(v.shape) - 1)
        n = max(_dval(v.shape[axis], b) for b in self.sizes)
        return self._unary("log_softmax", vi, v, v.lo - v.hi - math.log(n) - 1e-9, 0.0, axis=axis)

    def g_layer_norm(self, vi, v):
        r = len(v.shape)
        ks = [k for k in range(1, r + 1) if all(isinstance(d, int) for d in v.shape[r - k:])]
        if not ks:
            return None
        k = self.choice(ks)
        ns = tuple(v.shape[r - k:])
        n = int(np.prod(ns))
        p = {"k": k, "eps": self.choice([1e-5, 1e-3])}
        m = math.sqrt(n)
        lo, hi = -m, m
        if self.coin():
            p["weight"] = self.const(ns, 0.5, 1.5)
            lo, hi = lo * 1.5, hi * 1.5
            if self.coin():
                p["bias"] = self.const(ns)
                lo, hi = lo - 1, hi + 1
        return self._unary("layer_norm", vi, v, lo, hi, **p)

    # -- contractions, shapes --
    def g_matmul(self, vi, v):
        s = v.shape
        if not s:
            return None
        mag = max(abs(v.lo), abs(v.hi))
        # a partner value?
        for k in self.rng.permutation(len(self.prog.vals)).tolist():
            w = self.prog.vals[k]
            out = _matmul_shape(s, w.shape)
            if out is not None and self.i(0, 2) == 0:
                n = max(_dval(s[-1], b) for b in self.sizes)
                m = n * mag * max(abs(w.lo), abs(w.hi))
                return self.add("matmul", [vi, k], out, -m, m, form=self.choice(["op", "tp", "np"]))
        side = self.choice(["r", "l"])
        if side == "r":
            if not isinstance(s[-1], int):
                return None
            cshape = (s[-1],) if self.coin() else (s[-1], self.i(1, 3))
            out = _matmul_shape(s, cshape)
            n = s[-1]
        else:
            kdim = s[-2] if len(s) >= 2 else s[0]
            if not isinstance(kdim, int):
                return None
            cshape = (kdim,) if self.coin() else (self.i(1, 3), kdim)
            out = _matmul_shape(cshape, s)
            n = kdim
        if out is None:
            return None
        return self.add("matmul", [vi], out, -n * mag, n * mag, c=self.const(cshape), side=side,
                        form=self.choice(["op", "tp"]))

    def g_reshape(self, vi, v):
        c, symf = _fac(_prod(v.shape))
        # split the static count into factors, shuffle in the B's
        facs = []
        rest = c
        while rest > 1 and len(facs) < 3:
            divs = [d for d in range(2, rest + 1) if rest % d == 0]
            f = self.choice(divs)
            facs.append(f)
            rest //= f
        if rest > 1:
            facs.append(rest)
        if self.coin():
            facs.insert(self.i(0, len(facs)), 1)
        dims = list(facs)
        for sym in symf:
            if dims and self.coin():
                j = self.i(0, len(dims) - 1)
                dims[j] = _prod([dims[j], sym])
            else:
                dims.insert(self.i(0, len(dims)), sym)
        if c == 0:
            return None
        target = list(dims)
        if dims and self.coin():
            target[self.i(0, len(dims) - 1)] = -1
        return self.add("reshape", [vi], tuple(dims), v.lo, v.hi, shape=tuple(target), dims=tuple(dims),
                        form=self.choice(["method", "tp", "np", "star"]))

    def g_transpose(self, vi, v):
        r = len(v.shape)
        form = self.choice(["T", "tp", "method", "np"])
        if form == "T":
            perm = tuple(reversed(range(r)))
            p = {"perm": None}
        else:
            perm = tuple(self.rng.permutation(r).tolist())
            p = {"perm": perm if self.coin() else tuple(a - r for a in perm)}
            if form == "method" and self.coin():
                form = "star"
        return self.add("transpose", [vi], tuple(v.shape[a] for a in perm), v.lo, v.hi, form=form, **p)

    def g_expand_dims(self, vi, v):
        r = len(v.shape)
        if self.coin():
            a = self.i(-(r + 1), r)
            axes = (a % (r + 1),)
            axis = a
        else:
            axes = tuple(sorted(set(self.i(0, r + 1) for _ in range(self.i(1, 2)))))
            if max(axes) >= r + len(axes):
                return None
            axis = axes
        shape, it = [], iter(v.shape)
        for k in range(r + len(axes)):
            shape.append(1 if k in axes else next(it))
        return self.add("expand_dims", [vi], tuple(shape), v.lo, v.hi, axis=axis)

    def g_squeeze(self, vi, v):
        ones = [k for k, d in enumerate(v.shape) if d == 1]
        if not ones:
            return None
        if self.coin():
            axis = None
            axes = ones
        else:
            axes = sorted(set(self.choice(ones) for _ in range(self.i(1, 2))))
            axis = axes[0] if len(axes) == 1 else tuple(axes)
        return self.add("squeeze", [vi], tuple(d for k, d in enumerate(v.shape) if k not in axes), v.lo, v.hi,
                        axis=axis, axes=tuple(axes), form=self.choice(["tp", "np"]))

    def g_getitem(self, vi, v):
        r = len(v.shape)
        index, shape = [], []
        n_real = self.i(0, r)
        for k in range(n_real):
            d = v.shape[k]
            if self.i(0, 4) == 0:
                index.append(None)
                shape.append(1)
            if not isinstance(d, int) or d == 0:
                index.append(slice(None))
                shape.append(d)
                continue
            what = self.choice(["full", "slice", "int"])
            if what == "int":
                j = self.i(-d, d - 1)
                index.append(j)
            elif what == "full":
                index.append(slice(None))
                shape.append(d)
            else:
                start = self.choice([None, self.i(-d, d)])
                stop = self.choice([None, self.i(-d - 1, d + 1)])
                step = self.choice([None, 1, 2, -1, -2, 3])
                sl = slice(start, stop, step)
                n = len(range(*sl.indices(d)))
                if n == 0:
                    return None
                index.append(sl)
                shape.append(n)
        ell = n_real < r and self.coin()
        if ell:
            index.append(Ellipsis)
            shape.extend(v.shape[n_real:])
        if self.i(0, 4) == 0:  # after an ellipsis: last; without one: before the implicit ':'s
            index.append(None)
            shape.append(1)
        if not ell:
            shape.extend(v.shape[n_real:])
        idx = index[0] if len(index) == 1 and self.coin() else tuple(index)
        return self.add("getitem", [vi], tuple(shape), v.lo, v.hi, index=idx)

    def g_broadcast_to(self, vi, v):
        target = [self.choice([2, 3]) if d == 1 and self.coin() else d for d in v.shape]
        if len(target) < 4 and self.coin():
            target.insert(0, self.choice([1, 2, 3]))
        return self.add("broadcast_to", [vi], tuple(target), v.lo, v.hi, shape=tuple(target),
                        form=self.choice(["tp", "np"]))

    def g_concatenate(self, vi, v):
        r = len(v.shape)
        axes = [a for a in range(r) if isinstance(v.shape[a], int)]
        if not axes:
            return None
        a = self.choice(axes)
        args, cs, total = [vi], [], v.shape[a]
        lo, hi = v.lo, v.hi
        for _ in range(self.i(1, 2)):
            same = [k for k, w in enumerate(self.prog.vals) if len(w.shape) == r
                    and all(w.shape[j] == v.shape[j] for j in range(r) if j != a) and isinstance(w.shape[a], int)]
            if same and self.coin():
                k = self.choice(same)
                args.append(k)
                total += self.prog.vals[k].shape[a]
                lo, hi = min(lo, self.prog.vals[k].lo), max(hi, self.prog.vals[k].hi)
            elif all(isinstance(d, int) for d in v.shape):
                shape = list(v.shape)
                shape[a] = self.i(1, 3)
                cs.append((len(args) + len(cs), self.const(tuple(shape))))
                total += shape[a]
                lo, hi = min(lo, -1), max(hi, 1)
        shape = list(v.shape)
        shape[a] = total
        return self.add("concatenate", args, tuple(shape), lo, hi, axis=a - r if self.coin() else a,
                        consts=tuple(cs), form=self.choice(["tp", "np"]))

    def g_pad(self, vi, v):
        if not v.shape:
            return None
        widths = [(0, 0) if not isinstance(d, int) else (self.i(0, 2), self.i(0, 1)) for d in v.shape]
        val = self.choice([0.0, 1.5, -0.5])
        return self.add("pad", [vi], tuple(d if not isinstance(d, int) else d + w[0] + w[1]
                                           for d, w in zip(v.shape, widths)),
                        min(v.lo, val), max(v.hi, val), widths=tuple(widths), value=val,
                        form=self.choice(["tp", "np"]))

    # -- losses --
    def _loss(self, kind, vi, v, lo, hi):
        if not all(isinstance(d, int) for d in v.shape):
            return None
        red = self.choice(["mean", "sum", "none"])
        n = max(1, int(np.prod(v.shape)))
        if red == "sum":
            lo, hi = lo * n, hi * n
        shape = v.shape if red == "none" else ()
        t = self.const(v.shape, 0.0, 1.0) if kind == "bce" else self.const(v.shape)
        return self.add(kind, [vi], shape, lo, hi, target=t, reduction=red)

    def g_mse(self, vi, v):
        m = max(abs(v.lo), abs(v.hi)) + 1
        return self._loss("mse", vi, v, 0.0, m * m)

    def g_l1(self, vi, v):
        return self._loss("l1", vi, v, 0.0, max(abs(v.lo), abs(v.hi)) + 1)

    def g_bce(self, vi, v):
        return self._loss("bce", vi, v, -1e-6, max(abs(v.lo), abs(v.hi)) * 2 + 1)

    def _class_loss(self, kind, vi, v):
        s = v.shape
        if not s or not all(isinstance(d, int) for d in s) or s[1 if len(s) > 1 else 0] == 0:
            return None
        c = s[1] if len(s) > 1 else s[0]
        lshape = s[:1] + s[2:] if len(s) > 1 else ()
        labels = self.rng.integers(0, c, size=lshape).astype(np.int64)
        ign = -100
        if labels.size > 1 and self.coin():
            ign = self.choice([-100, 0, 1])
            labels.reshape(-1)[0] = ign if ign != 0 else labels.reshape(-1)[0]
            if np.all(labels == ign):
                return None
        red = self.choice(["mean", "sum", "none"])
        n = max(1, labels.size)
        span = (v.hi - v.lo) + math.log(c) + 1e-9
        if kind == "nll":
            span = max(abs(v.lo), abs(v.hi))
            lo, hi = -span, span
        else:
            lo, hi = 0.0, span
        if red == "sum":
            lo, hi = lo * n, hi * n
        return self.add(kind, [vi], lshape if red == "none" else (), lo, hi, labels=labels, reduction=red,
                        ignore_index=ign)

    def g_xent(self, vi, v):
        return self._class_loss("xent", vi, v)

    def g_nll(self, vi, v):
        return self._class_loss("nll", vi, v)

    def _nchw(self, v):
        s = v.shape
        return len(s) == 4 and all(isinstance(d, int) for d in s[1:]) and s[1] > 0

    def g_conv2d(self, vi, v):
        if not self._nchw(v):
            return None
        n, c, h, w = v.shape
        groups = self.choice([1, c]) if c > 1 else 1
        o = groups * self.i(1, 2)
        kh, kw = self.i(1, min(3, h + 2)), self.i(1, min(3, w + 2))
        stride, pad, dil = self.choice([1, 2, (1, 2)]), self.choice([0, 1, (1, 0)]), self.choice([1, 1, 2])
        p2 = lambda x: x if isinstance(x, tuple) else (x, x)  # noqa: E731
        oh = (h + 2 * p2(pad)[0] - p2(dil)[0] * (kh - 1) - 1) // p2(stride)[0] + 1
        ow = (w + 2 * p2(pad)[1] - p2(dil)[1] * (kw - 1) - 1) // p2(stride)[1] + 1
        if oh <= 0 or ow <= 0:
            return None
        wt = self.const((o, c // groups, kh, kw))
        p = dict(weight=wt, stride=stride, padding=pad, dilation=dil, groups=groups)
        m = max(abs(v.lo), abs(v.hi)) * (c // groups) * kh * kw
        if self.coin():
            p["bias"] = self.const((o,))
            m += 1
        return self.add("conv2d", [vi], (n, o, oh, ow), -m, m, **p)

    def g_conv_transpose2d(self, vi, v):
        if not self._nchw(v):
            return None
        n, c, h, w = v.shape
        groups = self.choice([1, c]) if c > 1 else 1
        kh, kw = self.i(1, 3), self.i(1, 3)
        stride, dil = self.choice([1, 2, (2, 1)]), self.choice([1, 1, 2])
        pad = self.choice([0, 1, (0, 1)])
        p2 = lambda x: x if isinstance(x, tuple) else (x, x)  # noqa: E731
        opad = tuple(self.i(0, max(p2(stride)[i], p2(dil)[i]) - 1) for i in range(2))
        out = [(d - 1) * p2(stride)[i] - 2 * p2(pad)[i] + p2(dil)[i] * (k - 1) + opad[i] + 1
               for i, (d, k) in enumerate(((h, kh), (w, kw)))]
        if min(out) <= 0:
            return None
        co = self.i(1, 2)
        wt = self.const((c, co, kh, kw))
        m = max(abs(v.lo), abs(v.hi)) * c * kh * kw
        return self.add("conv_transpose2d", [vi], (n, co * groups, out[0], out[1]), -m, m, weight=wt,
                        stride=stride, padding=pad, output_padding=opad, dilation=dil, groups=groups)

    def _pool(self, kind, vi, v):
        if not self._nchw(v) or (self.no_pool and kind == "max_pool2d"):
            return None
        n, c, h, w = v.shape
        k = self.i(1, min(3, h, w)) if min(h, w) >= 1 else 1
        stride = self.choice([None, 1, 2])
        pad = self.choice([0, 0, 1]) if k >= 2 else 0
        s = stride or k
        oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        if oh <= 0 or ow <= 0:
            return None
        p = dict(k=k, stride=stride, padding=pad)
        if kind == "max_pool2d" and self.coin():
            p["dilation"] = 2
            s = stride or k
            oh, ow = (h + 2 * pad - 2 * (k - 1) - 1) // s + 1, (w + 2 * pad - 2 * (k - 1) - 1) // s + 1
            if oh <= 0 or ow <= 0:
                return None
        lo, hi = v.lo, v.hi
        if kind == "avg_pool2d":
            p["count_include_pad"] = self.coin()
            lo, hi = min(lo, 0), max(hi, 0)
        return self.add(kind, [vi], (n, c, oh, ow), lo, hi, **p)

    def g_max_pool2d(self, vi, v):
        return self._pool("max_pool2d", vi, v)

    def g_avg_pool2d(self, vi, v):
        return self._pool("avg_pool2d", vi, v)

    def _sub(self, v, no_pool=False):
        sub = Gen(self.dtype, self.sizes, int(self.rng.integers(1 << 30)), 1, self.i(1, 4),
                  sub_input=Val(v.shape, v.lo, v.hi), depth=self.depth + 1, no_pool=no_pool).prog
        sub.out = len(sub.vals) - 1
        return sub

    def g_call(self, vi, v):
        # an earlier call's sub-program again (inlined twice: CSE) when one fits, else a new one
        again = [sb for sb in self.subs if sb.inputs[0].shape == v.shape and sb.inputs[0].lo <= v.lo
                 and v.hi <= sb.inputs[0].hi]
        sub = self.choice(again) if again and self.coin() else self._sub(v)
        self.subs.append(sub)
        o = sub.vals[sub.out]
        # renamed symbols must be solvable from the call's dims: each stands alone (or times an
        # int) in some input dim (tp.call cannot bind N from a dim N*N or N*M alone)
        alone = {_fac(d)[1][0] for d in v.shape if isinstance(d, str) and len(_fac(d)[1]) == 1}
        solvable = all(set(_fac(d)[1]) <= alone for d in v.shape if isinstance(d, str))
        return self.add("call", [vi], o.shape, o.lo, o.hi, sub=sub, renamed=solvable and self.coin())

    def g_callgrad(self, vi, v):
        """tanh(grad <sub(x), w>): tp.call of tp.grad of a sub-program, so every gradient of
        the program is a second derivative of the sub-program (tanh keeps it bounded)."""
        sub = self._sub(v, no_pool=True)  # torch (the reference) splits max_pool2d ties otherwise
        w = self.const(_static(sub.vals[sub.out].shape))
        return self.add("callgrad", [vi], v.shape, -1.0, 1.0, sub=sub, w=w)


def _matmul_shape(a, b):
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


def make_program(dtype, seed, min_ops=3, max_ops=MAX_OPS):
    """The program of one seed (every choice is the seed's: see Gen.i)."""
    rng = np.random.default_rng([seed, 1])
    bs = rng.choice([1, 2, 3, 4], size=2, replace=False)
    ts = rng.choice([1, 2, 3], size=2)
    sizes = [{"B": int(bs[0]), "T": int(ts[0])}, {"B": int(bs[1]), "T": int(ts[1])}]
    gen = Gen(dtype, sizes, seed, int(rng.integers(1, 4)), int(rng.integers(min_ops, max_ops + 1)))
    prog = gen.prog
    sinks = [k for k, u in enumerate(gen.uses) if u == 0]
    prog.sinks = [(k, rng.uniform(-1, 1, size=_static(prog.vals[k].shape))) for k in sinks]
    return prog


@st.composite
def programs(draw):
    return make_program(draw(st.sampled_from(["float32", "float64"])), draw(st.integers(0, 2 ** 63 - 1)))


# ---- the three evaluators -----------------------------------------------------------

RENAMED = {"B": "N", "T": "M"}


def _rename(d, renamed):
    """A dim with the symbols a sub-program traces with (N for B, M for T when renamed)."""
    if not renamed or not isinstance(d, str):
        return d
    c, syms = _fac(d)
    return _dim(c, tuple(RENAMED[x] for x in syms))


class TPNS:
    """Tracing with tapeir; `renamed`: symbols as a sub-program may call them (N, M)."""

    def __init__(self, dtype, renamed=False):
        self.dtype, self.renamed = dtype, renamed
        self.np_dtype = np.dtype(dtype)

    def c(self, a):
        return np.asarray(a, self.np_dtype)


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


def _bin_operands(ns, op, x, tensors):
    """The two operands of a binary op: the value and a partner, a constant or a scalar."""
    if "c" in op.p:
        y = ns.c(op.p["c"])
    elif "s" in op.p:
        y = op.p["s"]
    else:
        y = tensors[1]
    return (y, x) if op.p.get("side") == "l" else (x, y)


def _cmp(a, b, cmp):
    return {">": lambda: a > b, "<": lambda: a < b, ">=": lambda: a >= b, "<=": lambda: a <= b}[cmp]()


def _norm_axis(axis, r):
    if axis is None:
        return tuple(range(r))
    if isinstance(axis, int):
        return (axis % r,)
    return tuple(a % r for a in axis)


def eval_tp(prog, ns, xs, tp_sub_cache):
    vals = list(xs)
    for op in prog.ops:
        a = [vals[k] for k in op.args]
        vals.append(_tp_op(op, ns, a, tp_sub_cache))
    return vals


def _tp_op(op, ns, a, cache):
    k, p, x = op.kind, op.p, a[0]
    f = p.get("form")
    if k == "neg":
        return -x if f == "op" else tp.negative(x) if f == "tp" else np.negative(x)
    if k in ("tanh", "sin", "cos", "exp", "log", "sqrt"):
        return getattr(np, k)(x) if f == "np" else getattr(tp, k)(x)
    if k in ("sigmoid", "softplus", "erf", "relu", "silu", "reciprocal", "safe_log"):
        return getattr(tp, k)(x)
    if k == "abs":
        return abs(x) if f == "op" else tp.abs(x) if f == "tp" else np.abs(x)
    if k == "cast_rt":
        return x.astype("float64").astype(ns.dtype)
    if k == "intpath":
        y = (x * p["k"]).astype(p["to"])
        for step in p["steps"]:
            y = _int_step(tp, y, step)
        if p["red"] != "none":
            y = getattr(tp, p["red"])(y, axis=p["axis"], keepdims=p["keepdims"])
        return y.astype(ns.dtype)
    if k == "boolpath":
        return _bool_path(x, p, lambda c, a, b: tp.where(c, a, b)).astype(ns.dtype)
    if k == "leaky_relu":
        return tp.leaky_relu(x, p["alpha"])
    if k == "elu":
        return tp.elu(x, p["alpha"])
    if k == "gelu":
        return tp.gelu(x, p["approximate"])
    if k == "clip":
        return tp.clip(x, p["a_min"], p["a_max"]) if f == "tp" else np.clip(x, p["a_min"], p["a_max"])
    if k == "powc":
        return x ** p["e"] if f == "op" else tp.power(x, p["e"]) if f == "tp" else np.power(x, p["e"])
    if k == "rpowc":
        return p["base"] ** x
    if k == "scal":
        c, o = p["c"], p["op"]
        c = {"py": lambda: c, "f64": lambda: np.float64(c), "f32": lambda: np.float32(c),
             "i64": lambda: np.int64(c)}[p.get("ckind", "py")]()
        return {"+": lambda: x + c, "-": lambda: x - c, "*": lambda: x * c, "/": lambda: x / c,
                "r-": lambda: c - x, "r/": lambda: c / x, "r+": lambda: c + x, "r*": lambda: c * x}[o]()
    if k in ("add", "sub", "mul", "div", "maximum", "minimum", "pow"):
        u, w = _bin_operands(ns, op, x, a)
        if f == "op":
            return {"add": lambda: u + w, "sub": lambda: u - w, "mul": lambda: u * w, "div": lambda: u / w,
                    "pow": lambda: u ** w}[k]()
        if f == "np":
            return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                    "maximum": np.maximum, "minimum": np.minimum, "pow": np.power}[k](u, w)
        return getattr(tp, "power" if k == "pow" else k)(u, w)
    if k == "where":
        cond = _cmp(x, p["thr"], p["cmp"])
        y = ns.c(p["c"]) if "c" in p else p["s"] if "s" in p else a[2]
        u, w = (a[1], y) if p.get("side") != "l" else (y, a[1])
        return tp.where(cond, u, w)
    if k in ("sum", "mean", "max", "min", "logsumexp"):
        if f == "method":
            return getattr(x, k)(axis=p["axis"], keepdims=p["keepdims"])
        if f == "np":
            return getattr(np, k)(x, axis=p["axis"], keepdims=p["keepdims"])
        return getattr(tp, k)(x, axis=p["axis"], keepdims=p["keepdims"])
    if k in ("softmax", "log_softmax"):
        return getattr(tp, k)(x, axis=p["axis"])
    if k == "layer_norm":
        w = ns.c(p["weight"]) if "weight" in p else None
        b = ns.c(p["bias"]) if "bias" in p else None
        return tp.layer_norm(x, tuple(x.shape[x.ndim - p["k"]:]), w, b, eps=p["eps"])
    if k == "matmul":
        if "c" in p:
            u, w = (x, ns.c(p["c"])) if p["side"] == "r" else (ns.c(p["c"]), x)
        else:
            u, w = x, a[1]
        return u @ w if f == "op" else tp.matmul(u, w) if f == "tp" else np.matmul(u, w)
    if k == "reshape":
        s = tuple(_rename(d, ns.renamed) for d in p["shape"])
        return {"method": lambda: x.reshape(s), "tp": lambda: tp.reshape(x, s), "np": lambda: np.reshape(x, s),
                "star": lambda: x.reshape(*s)}[f]()
    if k == "transpose":
        if f == "T":
            return x.T
        perm = p["perm"]
        return {"tp": lambda: tp.transpose(x, perm), "method": lambda: x.transpose(perm),
                "np": lambda: np.transpose(x, perm), "star": lambda: x.transpose(*perm)}[f]()
    if k == "expand_dims":
        return tp.expand_dims(x, p["axis"])
    if k == "squeeze":
        return tp.squeeze(x, p["axis"]) if f == "tp" else np.squeeze(x, p["axis"])
    if k == "getitem":
        return x[p["index"]]
    if k == "broadcast_to":
        s = tuple(_rename(d, ns.renamed) for d in p["shape"])
        return tp.broadcast_to(x, s) if f == "tp" else np.broadcast_to(x, s)
    if k == "concatenate":
        xs = list(a)
        for pos, cst in p["consts"]:
            xs.insert(pos, ns.c(cst))
        return tp.concatenate(xs, axis=p["axis"]) if f == "tp" else np.concatenate(xs, axis=p["axis"])
    if k == "pad":
        return tp.pad(x, p["widths"], constant_values=p["value"]) if f == "tp" else \
            np.pad(x, p["widths"], constant_values=p["value"])
    if k == "mse":
        return tp.mse_loss(x, ns.c(p["target"]), reduction=p["reduction"])
    if k == "l1":
        return tp.l1_loss(x, ns.c(p["target"]), reduction=p["reduction"])
    if k == "bce":
        return tp.binary_cross_entropy_with_logits(x, ns.c(p["target"]), reduction=p["reduction"])
    if k == "xent":
        return tp.cross_entropy(x, p["labels"], reduction=p["reduction"], ignore_index=p["ignore_index"])
    if k == "nll":
        return tp.nll_loss(x, p["labels"], reduction=p["reduction"], ignore_index=p["ignore_index"])
    if k == "conv2d":
        b = ns.c(p["bias"]) if "bias" in p else None
        return tp.conv2d(x, ns.c(p["weight"]), b, stride=p["stride"], padding=p["padding"],
                         dilation=p["dilation"], groups=p["groups"])
    if k == "max_pool2d":
        return tp.max_pool2d(x, p["k"], p["stride"], p["padding"], p.get("dilation", 1))
    if k == "conv_transpose2d":
        return tp.conv_transpose2d(x, ns.c(p["weight"]), stride=p["stride"], padding=p["padding"],
                                   output_padding=p["output_padding"], groups=p["groups"], dilation=p["dilation"])
    if k == "avg_pool2d":
        return tp.avg_pool2d(x, p["k"], p["stride"], p["padding"], count_include_pad=p["count_include_pad"])
    if k == "cexpr":
        c = ns.c(p["c"])
        fc = {"exp": tp.exp, "tanh": tp.tanh, "neg": tp.negative, "square": lambda c: c * c, "sum": tp.sum,
              "softmax": tp.softmax}[p["fn"]](c)
        return x + fc if p["op"] == "+" else fc * x
    if k == "callgrad":
        sub, key = p["sub"], (id(p["sub"]), ns.dtype, "grad")
        if key not in cache:
            sg = tp.trace(lambda z: (eval_tp(sub, ns, [z], cache)[sub.out] * ns.c(p["w"])).sum(),
                          tp.Spec(sub.inputs[0].shape, ns.dtype), name="sub")
            cache[key] = (tp.grad(sg), sub)
        return tp.tanh(tp.call(cache[key][0], x))
    if k == "call":  # the sub-program, traced with its own symbols (N, M for B, T) when renamed
        sub = p["sub"]
        key = (id(sub), ns.dtype)
        if key not in cache:
            sns = TPNS(ns.dtype, p["renamed"])
            spec = tp.Spec(tuple(_rename(d, p["renamed"]) for d in sub.inputs[0].shape), ns.dtype)
            cache[key] = (tp.trace(lambda z: eval_tp(sub, sns, [z], cache)[sub.out], spec, name="sub"), sub)
        return tp.call(cache[key][0], x)
    raise AssertionError(k)


def _int_step(lib, y, step):
    """One integer op, in tapeir (lib=tp), numpy or torch."""
    name = step[0]
    if name == "abs":
        return abs(y)
    if name == "relu":
        return lib.maximum(y, lib.zeros_like(y)) if lib is not tp else tp.relu(y)
    if name == "neg":
        return -y
    if name == "addc":
        return y + step[1]
    if name == "mulc":
        return y * step[1]
    if name == "square":
        return y * y
    if name == "max_self":
        return lib.maximum(y, y)
    if name == "where_pos":
        return lib.where(y > 0, y, step[1]) if lib is not torch else torch.where(y > 0, y, torch.tensor(step[1]))
    if name == "clip":
        lo, hi = step[1], step[2]
        if lib is tp:
            return tp.clip(y, lo, hi)
        lo = None if lo is None else math.ceil(lo)
        hi = None if hi is None else math.floor(hi)
        return np.clip(y, lo, hi) if lib is np else torch.clamp(y, lo, hi)
    raise AssertionError(name)


def _bool_path(x, p, where):
    c = _cmp(x, p["thr"], p["cmp"])
    m = p["mode"]
    if m == "cast":
        return c
    if m == "where":
        return where(c, x > p["thr2"], x < p["thr2"])
    c2 = x > p["thr2"]
    return (c == c2) if m == "eq" else (c != c2)


def _erf_np(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype) if np.ndim(x) else \
        np.asarray(math.erf(float(x)), x.dtype)


def _windows(x, k, stride, pad, dil, fill):
    """[N, C, OH, OW, kh, kw] windows by explicit loops (the reference: no stride tricks)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k, stride, pad, dil
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((n, c, oh, ow, kh, kw), x.dtype)
    for i in range(oh):
        for j in range(ow):
            for u in range(kh):
                for v in range(kw):
                    out[:, :, i, j, u, v] = xp[:, :, i * sh + u * dh, j * sw + v * dw]
    return out


def _pair(x):
    return x if isinstance(x, tuple) else (x, x)


def _gap(x, axes):
    """The smallest gap between the largest two (and smallest two) elements over `axes`."""
    if not axes:
        return math.inf
    r = x.ndim
    keep = [a for a in range(r) if a not in axes]
    n = int(np.prod([x.shape[a] for a in axes]))
    y = np.transpose(x, keep + list(axes)).reshape(tuple(x.shape[a] for a in keep) + (n,))
    if n < 2 or y.size == 0:
        return math.inf
    s = np.sort(y, axis=-1)
    return float(min(np.min(s[..., -1] - s[..., -2]), np.min(s[..., 1] - s[..., 0])))


def eval_np(prog, ns, xs):
    vals = list(xs)
    for op in prog.ops:
        a = [vals[k] for k in op.args]
        if any(np.isnan(x).any() for x in a if x.dtype.kind == "f"):
            ns.undefined = True  # nan met where-based rules (relu'(nan), max ties): conventions differ
        vals.append(np.asarray(_np_op(op, ns, a), ns.dtype))
    return vals


def _np_op(op, ns, a):
    k, p, x = op.kind, op.p, a[0]
    one = ns.dtype.type(1)
    if k == "neg":
        return -x
    if k in ("tanh", "sin", "cos", "exp", "log", "sqrt", "abs"):
        if k == "abs":
            ns.near(x)
        return getattr(np, k)(x)
    if k == "sigmoid":
        return one / (one + np.exp(-x))
    if k == "softplus":
        return np.logaddexp(ns.dtype.type(0), x)
    if k == "erf":
        return _erf_np(x)
    if k == "relu":
        ns.near(x)
        return np.where((x > 0) | np.isnan(x), x, 0)  # nan stays nan (as torch.relu)
    if k == "silu":
        return x / (one + np.exp(-x))
    if k == "reciprocal":
        return one / x
    if k == "safe_log":
        return np.log(x + ns.dtype.type(1e-6))
    if k == "cast_rt":
        return x
    if k == "intpath":
        z = x * p["k"]
        ns.decide(z - np.round(z), z)  # truncation jumps at integers
        ns.undefined |= not np.all(np.isfinite(z))  # inf or nan cast to an integer: undefined
        y = np.trunc(z).astype(p["to"])
        for step in p["steps"]:
            y = _int_step(np, y, step)
        if p["red"] != "none":
            axes = _norm_axis(p["axis"], y.ndim)
            y = getattr(np, p["red"])(y, axis=axes, keepdims=p["keepdims"])
        return y.astype(ns.dtype)
    if k == "boolpath":
        ns.decide(x - p["thr"], x)
        ns.decide(x - p["thr2"], x)
        return _bool_path(x, p, np.where).astype(ns.dtype)
    if k == "leaky_relu":
        ns.near(x)
        return np.where(x > 0, x, x * ns.dtype.type(p["alpha"]))
    if k == "elu":
        ns.near(x)
        return np.where(x > 0, x, ns.dtype.type(p["alpha"]) * (np.exp(np.minimum(x, 0)) - one))
    if k == "gelu":
        if p["approximate"] == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + _erf_np(x / ns.dtype.type(math.sqrt(2))))
    if k == "clip":
        lo, hi = p["a_min"], p["a_max"]
        if lo is not None:
            ns.near(x - lo)
        if hi is not None:
            ns.near(x - hi)
        y = x
        if lo is not None:
            y = np.where(y < lo, lo, y)
        if hi is not None:
            y = np.where(y > hi, hi, y)
        return y
    if k == "powc":
        return np.power(x, ns.dtype.type(p["e"]))
    if k == "rpowc":
        return np.power(ns.dtype.type(p["base"]), x)
    if k == "scal":
        c, o = ns.dtype.type(p["c"]), p["op"]
        return {"+": lambda: x + c, "-": lambda: x - c, "*": lambda: x * c, "/": lambda: x / c,
                "r-": lambda: c - x, "r/": lambda: c / x, "r+": lambda: c + x, "r*": lambda: c * x}[o]()
    if k in ("add", "sub", "mul", "div", "maximum", "minimum", "pow"):
        u, w = _bin_operands(ns, op, x, a)
        u, w = np.asarray(u, ns.dtype), np.asarray(w, ns.dtype)
        if k in ("maximum", "minimum"):
            ns.near(u - w)
        return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                "maximum": np.maximum, "minimum": np.minimum, "pow": np.power}[k](u, w)
    if k == "where":
        ns.decide(x - p["thr"], x)
        cond = _cmp(x, p["thr"], p["cmp"])
        y = ns.c(p["c"]) if "c" in p else p["s"] if "s" in p else a[2]
        u, w = (a[1], y) if p.get("side") != "l" else (y, a[1])
        return np.where(cond, u, w)
    if k in ("sum", "mean", "max", "min", "logsumexp"):
        axes = _norm_axis(p["axis"], x.ndim)
        keep = p["keepdims"]
        if k in ("max", "min"):
            ns.near(_gap(x, axes))
        if k == "logsumexp":
            m = np.max(x, axis=axes, keepdims=True, initial=-np.inf) if axes else x
            m = np.where(np.isfinite(m), m, 0)
            r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
            return r if keep else np.squeeze(r, axis=axes)
        fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[k]
        return fn(x, axis=axes, keepdims=keep)
    if k == "softmax":
        e = np.exp(x - np.max(x, axis=p["axis"], keepdims=True, initial=-np.inf))
        return e / np.sum(e, axis=p["axis"], keepdims=True)
    if k == "log_softmax":
        s = x - np.max(x, axis=p["axis"], keepdims=True, initial=-np.inf)
        return s - np.log(np.sum(np.exp(s), axis=p["axis"], keepdims=True))
    if k == "layer_norm":
        axes = tuple(range(x.ndim - p["k"], x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mu) / np.sqrt(var + ns.dtype.type(p["eps"]))
        if "weight" in p:
            y = y * ns.c(p["weight"])
        if "bias" in p:
            y = y + ns.c(p["bias"])
        return y
    if k == "matmul":
        if "c" in p:
            u, w = (x, ns.c(p["c"])) if p["side"] == "r" else (ns.c(p["c"]), x)
        else:
            u, w = x, a[1]
        return np.matmul(u, w)
    if k == "reshape":
        return np.reshape(x, tuple(_dval(d, ns.b) for d in p["dims"]))
    if k == "transpose":
        return np.transpose(x, p["perm"])
    if k == "expand_dims":
        return np.expand_dims(x, p["axis"])
    if k == "squeeze":
        return np.squeeze(x, p["axes"])
    if k == "getitem":
        return x[p["index"]]
    if k == "broadcast_to":
        return np.broadcast_to(x, tuple(_dval(d, ns.b) for d in p["shape"]))
    if k == "concatenate":
        xs = list(a)
        for pos, cst in p["consts"]:
            xs.insert(pos, ns.c(cst))
        return np.concatenate(xs, axis=p["axis"])
    if k == "pad":
        return np.pad(x, p["widths"], constant_values=p["value"])
    if k in ("mse", "l1", "bce"):
        t = ns.c(p["target"])
        if k == "mse":
            e = (x - t) ** 2
        elif k == "l1":
            ns.near(x - t)
            e = np.abs(x - t)
        else:
            e = np.logaddexp(ns.dtype.type(0), x) - x * t
        return {"mean": np.mean, "sum": np.sum, "none": lambda e: e}[p["reduction"]](e)
    if k in ("xent", "nll"):
        axis = 1 if x.ndim > 1 else 0
        if k == "xent":
            s = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
            lp = s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))
        else:
            lp = x
        lab = p["labels"]
        lpm = np.moveaxis(lp, axis, -1)
        keep = lab != p["ignore_index"]
        picked = np.zeros(lab.shape, ns.dtype)
        for idx in np.ndindex(*lab.shape):
            if keep[idx]:
                picked[idx] = -lpm[idx + (lab[idx],)]
        if p["reduction"] == "none":
            return picked
        if p["reduction"] == "sum":
            return picked.sum()
        return picked.sum() / keep.sum()
    if k == "conv2d":
        w = ns.c(p["weight"])
        o, cg, kh, kw = w.shape
        g = p["groups"]
        win = _windows(x, (kh, kw), _pair(p["stride"]), _pair(p["padding"]), _pair(p["dilation"]), 0)
        n, c, oh, ow = win.shape[:4]
        out = np.zeros((n, o, oh, ow), ns.dtype)
        og = o // g
        for oc in range(o):
            gi = oc // og
            out[:, oc] = np.einsum("nchwij,cij->nhw", win[:, gi * cg:(gi + 1) * cg], w[oc])
        if "bias" in p:
            out = out + ns.c(p["bias"]).reshape(1, o, 1, 1)
        return out
    if k in ("max_pool2d", "avg_pool2d"):
        kk = (p["k"], p["k"])
        s = _pair(p["stride"] or p["k"])
        pad = _pair(p["padding"])
        if k == "max_pool2d":
            dl = _pair(p.get("dilation", 1))
            win = _windows(x, kk, s, pad, dl, -np.inf)
            flat = win.reshape(win.shape[:4] + (kk[0] * kk[1],))
            if flat.shape[-1] > 1:
                srt = np.sort(flat, axis=-1)
                gap = srt[..., -1] - srt[..., -2]
                ns.near(gap)
                if np.any(gap == 0):
                    ns.pool_tie = True
            return flat.max(axis=-1)
        win = _windows(x, kk, s, pad, (1, 1), 0)
        tot = win.sum(axis=(4, 5))
        if p["count_include_pad"]:
            return tot / (kk[0] * kk[1])
        cnt = _windows(np.ones((1, 1) + x.shape[2:], ns.dtype), kk, s, pad, (1, 1), 0).sum(axis=(4, 5))
        return tot / cnt
    if k == "cexpr":
        c = ns.c(p["c"])
        fc = {"exp": np.exp, "tanh": np.tanh, "neg": np.negative, "square": lambda c: c * c, "sum": np.sum,
              "softmax": lambda c: np.exp(c) / np.exp(c).sum(axis=-1, keepdims=True)}[p["fn"]](c)
        return x + fc if p["op"] == "+" else fc * x
    if k == "conv_transpose2d":  # the definition: scatter each input pixel times the kernel
        w = ns.c(p["weight"])
        c, co, kh, kw = w.shape
        g = p["groups"]
        (sh, sw), (ph, pw), (dh, dw) = _pair(p["stride"]), _pair(p["padding"]), _pair(p["dilation"])
        oph, opw = p["output_padding"]
        n, _, h, wd = x.shape
        full = np.zeros((n, co * g, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
        cg = c // g
        for ci in range(c):
            gi = ci // cg
            for i in range(h):
                for j in range(wd):
                    for u in range(kh):
                        for v in range(kw):
                            full[:, gi * co:(gi + 1) * co, i * sh + u * dh, j * sw + v * dw] += \
                                x[:, ci, i, j][:, None] * w[ci, :, u, v][None, :]
        oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
        ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
        return full[:, :, ph:ph + oh, pw:pw + ow]
    if k == "call":
        sub = p["sub"]
        return eval_np(sub, ns, [x])[sub.out]
    if k == "callgrad":  # the gradient from torch autograd (independent of tapeir); eval_np for kinks
        sub = p["sub"]
        eval_np(sub, ns, [x])
        xt = torch.tensor(np.array(x, np.float64, order="C", copy=True), requires_grad=True)  # fresh strides
        out = (eval_torch(sub, TorchNS(ns.b), [xt])[sub.out] * torch.as_tensor(p["w"])).sum()
        g = torch.autograd.grad(out, xt, allow_unused=True)[0] if out.requires_grad else None
        return np.tanh(_torch_np(g, x.shape))
    raise AssertionError(k)


def _torch_np(t, shape):
    """A gradient from torch as a float64 array: None, or a ZeroTensor (a zero gradient
    torch does not materialize; .numpy(force=True) on one crashed torch 2.13), is zeros."""
    if t is None or (hasattr(t, "_is_zerotensor") and t._is_zerotensor()):
        return np.zeros(shape)
    return t.detach().numpy()


def eval_torch(prog, ns, xs):
    vals = list(xs)
    for op in prog.ops:
        a = [vals[k] for k in op.args]
        vals.append(_torch_op(op, ns, a))
    return vals


def _torch_op(op, ns, a):
    T, F = torch, torch.nn.functional
    k, p, x = op.kind, op.p, a[0]
    if k == "neg":
        return -x
    if k in ("tanh", "sin", "cos", "exp", "log", "sqrt", "abs", "sigmoid", "erf", "relu", "reciprocal"):
        return getattr(T, k)(x)
    if k == "softplus":
        return F.softplus(x)
    if k == "silu":
        return F.silu(x)
    if k == "safe_log":
        return T.log(x + 1e-6)
    if k == "cast_rt":
        return x
    if k == "intpath":
        y = (x * p["k"]).to(getattr(T, p["to"]))
        for step in p["steps"]:
            y = _int_step(T, y, step)
        if p["red"] != "none":
            axes = _norm_axis(p["axis"], y.ndim)
            if axes:
                y = {"sum": T.sum, "max": T.amax, "min": T.amin}[p["red"]](y, dim=axes, keepdim=p["keepdims"])
        return y.to(T.float64)
    if k == "boolpath":
        return _bool_path(x, p, T.where).to(T.float64)
    if k == "leaky_relu":
        return F.leaky_relu(x, p["alpha"])
    if k == "elu":
        return F.elu(x, p["alpha"])
    if k == "gelu":
        return F.gelu(x, approximate=p["approximate"])
    if k == "clip":
        return T.clamp(x, p["a_min"], p["a_max"])
    if k == "powc":
        return x ** p["e"]
    if k == "rpowc":
        return p["base"] ** x
    if k == "scal":
        c, o = p["c"], p["op"]
        return {"+": lambda: x + c, "-": lambda: x - c, "*": lambda: x * c, "/": lambda: x / c,
                "r-": lambda: c - x, "r/": lambda: c / x, "r+": lambda: c + x, "r*": lambda: c * x}[o]()
    if k in ("add", "sub", "mul", "div", "maximum", "minimum", "pow"):
        u, w = _bin_operands(ns, op, x, a)
        if k in ("maximum", "minimum"):
            u, w = T.as_tensor(u, dtype=T.float64), T.as_tensor(w, dtype=T.float64)
            return getattr(T, k)(u, w)
        return {"add": lambda: u + w, "sub": lambda: u - w, "mul": lambda: u * w, "div": lambda: u / w,
                "pow": lambda: u ** w}[k]()
    if k == "where":
        cond = _cmp(x, p["thr"], p["cmp"])
        y = ns.c(p["c"]) if "c" in p else T.tensor(p["s"], dtype=T.float64) if "s" in p else a[2]
        u, w = (a[1], y) if p.get("side") != "l" else (y, a[1])
        return T.where(cond, u, w)
    if k in ("sum", "mean", "max", "min", "logsumexp"):
        axes = _norm_axis(p["axis"], x.ndim)
        keep = p["keepdims"]
        if not axes:
            return x
        fn = {"sum": T.sum, "mean": T.mean, "max": T.amax, "min": T.amin, "logsumexp": T.logsumexp}[k]
        return fn(x, dim=axes, keepdim=keep)
    if k == "softmax":
        return T.softmax(x, dim=p["axis"])
    if k == "log_softmax":
        return T.log_softmax(x, dim=p["axis"])
    if k == "layer_norm":
        ns_ = tuple(x.shape[x.ndim - p["k"]:])
        w = ns.c(p["weight"]) if "weight" in p else None
        b = ns.c(p["bias"]) if "bias" in p else None
        return F.layer_norm(x, ns_, w, b, eps=p["eps"])
    if k == "matmul":
        if "c" in p:
            u, w = (x, ns.c(p["c"])) if p["side"] == "r" else (ns.c(p["c"]), x)
        else:
            u, w = x, a[1]
        return T.matmul(u, w)
    if k == "reshape":
        return T.reshape(x, tuple(_dval(d, ns.b) for d in p["dims"]))
    if k == "transpose":
        perm = p["perm"] if p["perm"] is not None else tuple(reversed(range(x.ndim)))
        return x.permute(*perm) if x.ndim else x
    if k == "expand_dims":
        axes = _norm_axis(p["axis"], x.ndim + (1 if isinstance(p["axis"], int) else len(p["axis"])))
        for ax in sorted(axes):
            x = x.unsqueeze(ax)
        return x
    if k == "squeeze":
        for ax in sorted(p["axes"], reverse=True):
            x = x.squeeze(ax)
        return x
    if k == "getitem":  # torch has no negative steps: one axis at a time, slices as index_select
        idx = p["index"] if isinstance(p["index"], tuple) else (p["index"],)
        n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
        full = []
        for i in idx:
            full.extend([slice(None)] * (x.ndim - n_real) if i is Ellipsis else [i])
        if Ellipsis not in idx:
            full.extend([slice(None)] * (x.ndim - n_real))
        y, pos = x, 0
        for i in full:
            if i is None:
                y, pos = y.unsqueeze(pos), pos + 1
            elif isinstance(i, slice):
                y = T.index_select(y, pos, T.tensor(list(range(*i.indices(y.shape[pos]))), dtype=T.long))
                pos += 1
            else:
                y = y.select(pos, i)
        return y
    if k == "broadcast_to":
        return T.broadcast_to(x, tuple(_dval(d, ns.b) for d in p["shape"]))
    if k == "concatenate":
        xs = list(a)
        for pos, cst in p["consts"]:
            xs.insert(pos, ns.c(cst))
        return T.cat(xs, dim=p["axis"])
    if k == "pad":
        pads = []
        for lo, hi in reversed(p["widths"]):
            pads += [lo, hi]
        return F.pad(x, pads, value=p["value"]) if x.ndim else x
    if k == "mse":
        return F.mse_loss(x, ns.c(p["target"]), reduction=p["reduction"])
    if k == "l1":
        return F.l1_loss(x, ns.c(p["target"]), reduction=p["reduction"])
    if k == "bce":
        return F.binary_cross_entropy_with_logits(x, ns.c(p["target"]), reduction=p["reduction"])
    if k in ("xent", "nll"):
        lab = T.as_tensor(p["labels"])
        fn = F.cross_entropy if k == "xent" else F.nll_loss
        return fn(x.contiguous(), lab, reduction=p["reduction"], ignore_index=p["ignore_index"])
    if k == "conv2d":
        b = ns.c(p["bias"]) if "bias" in p else None
        return F.conv2d(x, ns.c(p["weight"]), b, stride=p["stride"], padding=p["padding"],
                        dilation=p["dilation"], groups=p["groups"])
    if k == "max_pool2d":
        return F.max_pool2d(x, p["k"], p["stride"], p["padding"], p.get("dilation", 1))
    if k == "conv_transpose2d":
        return F.conv_transpose2d(x, ns.c(p["weight"]), stride=p["stride"], padding=p["padding"],
                                  output_padding=p["output_padding"], groups=p["groups"], dilation=p["dilation"])
    if k == "avg_pool2d":
        return F.avg_pool2d(x, p["k"], p["stride"], p["padding"], count_include_pad=p["count_include_pad"])
    if k == "cexpr":
        c = ns.c(p["c"])
        fc = {"exp": T.exp, "tanh": T.tanh, "neg": T.neg, "square": lambda c: c * c, "sum": T.sum,
              "softmax": lambda c: T.softmax(c, dim=-1)}[p["fn"]](c)
        return x + fc if p["op"] == "+" else fc * x
    if k == "call":
        sub = p["sub"]
        return eval_torch(sub, ns, [x])[sub.out]
    if k == "callgrad":  # differentiable: create_graph, so the outer gradient is a second derivative
        sub = p["sub"]
        xx = x if x.requires_grad else x.detach().requires_grad_()
        out = (eval_torch(sub, ns, [xx])[sub.out] * ns.c(p["w"])).sum()
        g = torch.autograd.grad(out, xx, create_graph=True, allow_unused=True)[0] if out.requires_grad else None
        return torch.tanh(torch.zeros_like(x) if g is None else g)
    raise AssertionError(k)


def _result(prog, vals, ns):
    """The scalar: sum over sinks of sum(v * w), in any of the three evaluators."""
    total = None
    for k, w in prog.sinks:
        t = (vals[k] * ns.c(w)).sum()
        total = t if total is None else total + t
    return total


# ---- running and comparing ----------------------------------------------------------

def _specs(prog, dtype):
    return [tp.Spec(v.shape, dtype) for v in prog.inputs]


def trace_program(prog, dtype, every_value=False):
    ns, cache = TPNS(dtype), {}

    def fn(*xs):
        vals = eval_tp(prog, ns, list(xs), cache)
        out = _result(prog, vals, ns)
        if every_value:
            return tuple(vals[len(prog.inputs):]) + (out,)
        return out

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


def _close(got, want, rtol, atol, what, scale=None, truth=None):
    """|got - want| <= rtol |want| + atol scale (+ 10 |want - truth| when the float64 truth
    is given: where want's own float32 rounding error is large, an ill-conditioned
    computation, got's may be as large, or a few times larger)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    err = np.abs(got - want)
    tol = rtol * np.abs(want) + atol * scale
    if truth is not None:
        tol = tol + 10 * np.abs(want - np.asarray(truth, np.float64))
    bad = ~(err <= tol)
    if bad.any():
        i = np.argmax(np.where(bad, err - tol, -np.inf))
        raise AssertionError(f"{what}: max excess at flat {i}: got {got.reshape(-1)[i]!r} want "
                             f"{want.reshape(-1)[i]!r} (|err| {err.reshape(-1)[i]:.3g}, tol {tol.reshape(-1)[i]:.3g});"
                             f" {int(bad.sum())}/{bad.size} bad")


def _flat(tree):
    if isinstance(tree, (tuple, list)):
        return [y for x in tree for y in _flat(x)]
    if isinstance(tree, dict):
        return [y for k in sorted(tree) for y in _flat(tree[k])]
    return [np.asarray(tree)]


def _sizes(prog):
    return prog.sizes if prog.symbolic else prog.sizes[:1]


ORT_F64_GAPS = ("Conv", "ConvTranspose", "AveragePool", "Erf", "Elu", "LeakyRelu")


def _opset(prog):
    """The ONNX opset a program exports at: the lowerings differ (axes as attributes below
    18, layer_norm decomposed below 17, gelu a local function below 20)."""
    from tapeir.backends.onnx_export import DEFAULT_OPSET, MIN_OPSET, max_opset

    return int(np.random.default_rng([prog.seed, 4]).choice(
        [MIN_OPSET, 16, 17, 18, 19, DEFAULT_OPSET, DEFAULT_OPSET, max_opset()]))


def _ort(g, opset=None):
    """g compiled for onnxruntime; None for a float64 graph using a kernel onnxruntime lacks
    in float64 (README: Conv, ConvTranspose, AveragePool, Erf, Elu, LeakyRelu)."""
    try:
        return tp.compile(g, backend="onnxruntime", intra_op_num_threads=1, opset=opset)
    except tp.TapeirError as e:
        if "NOT_IMPLEMENTED" in str(e) and any(f"implementation for {op}(" in str(e) for op in ORT_F64_GAPS):
            return None
        raise


def _uses(prog, kind):
    return any(op.kind == kind or (op.kind in ("call", "callgrad") and _uses(op.p["sub"], kind))
               for op in prog.ops)


def _ort_atol(prog):
    """float32 onnxruntime vs numpy: 1e-5 x magnitude, 1e-4 with layer_norm (a nearly constant
    row divides rounding differences by sqrt(eps): 1e-7 becomes 3e-5)."""
    return 1e-4 if _uses(prog, "layer_norm") else ORT_ATOL


def _ort_f64_loose(prog):
    """onnxruntime in float64 is off by ~1e-8 (relative) where a float attribute is float32
    (layer_norm's epsilon: 1e-3 is 1.00000005e-3; leaky_relu's and elu's alpha) and for
    tanh-gelu (its own rounding)."""
    return any(_uses(prog, k) for k in ("layer_norm", "gelu", "leaky_relu", "elu"))


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
        f_np, f_pool = tp.compile(gm), tp.compile(gm)
        f_ort = _ort(gm, opset)
        for b in _sizes(prog):
            xs = make_inputs(prog, b, dtype)
            saved = [x.copy() for x in xs]
            ref, rns = reference(prog, xs, b)
            # rounding may flip a truncation or comparison that sits this close to its edge (an
            # integer power of 0.5 truncated to an integer: 8.0 or 7.999999999999998)
            flips = rns.disc < (1e-5 if dtype == "float32" else 1e-12)
            got = _flat(f_np(*xs))
            for x, x0 in zip(xs, saved):
                np.testing.assert_array_equal(x, x0, err_msg="the numpy backend changed an input")
            for j, g_ in enumerate(got):  # results are the caller's own arrays
                assert g_.flags.writeable, f"value {n_in + j} is read-only"
                assert not any(np.shares_memory(g_, x) for x in xs), f"value {n_in + j} shares an input's memory"
            scale = 1.0
            for j, (g_, r_) in enumerate(zip(got, ref)):
                scale = max(scale, float(np.max(np.abs(r_), initial=0.0)))
                assert g_.dtype == np.dtype(dtype), f"value {j}: dtype {g_.dtype}"
                if flips:
                    continue
                if dtype == "float64":
                    _close(g_, r_, 1e-9, 1e-9, f"f64 numpy backend vs reference, value {n_in + j} (sizes {b})", scale)
                else:
                    _close(g_, r_, 1e-3, 1e-3, f"f32 numpy backend vs reference, value {n_in + j} (sizes {b})", scale)
            _check_pooled(prog, f_pool, xs, got, b, dtype)
            # an exact tie (max of a broadcast value) that a gradient splits: onnxruntime's float64
            # tanh and sin give identical inputs results 1 ulp apart (vector body vs tail), so
            # its ties break; callgrad values are gradients
            tied = rns.kink < 1e-12 and _uses(prog, "callgrad")
            if f_ort is not None and not flips and not tied:
                got_o = _flat(f_ort(*xs))
                scale = 1.0
                rtol, atol = (ORT_RTOL, _ort_atol(prog)) if dtype == "float32" else \
                    (1e-6, 1e-7) if _ort_f64_loose(prog) else (1e-9, 1e-10)
                for j, (o_, g_, r_) in enumerate(zip(got_o, got, ref)):
                    scale = max(scale, float(np.max(np.abs(g_), initial=0.0)))
                    _close(o_, g_, rtol, atol, f"{dtype} onnxruntime vs numpy, value {n_in + j} (sizes {b})", scale,
                           truth=r_)

    # ---- the scalar program, both dtypes: grads, round trips ----
    g32 = trace_program(prog, "float32")
    g64 = trace_program(prog, "float64")
    vg32 = tp.value_and_grad(g32, wrt=wrt)
    vg64 = tp.value_and_grad(g64, wrt=wrt)
    s64 = simplify(g64)
    for g in (g32, g64, vg32, vg64, s64):
        assert tp.parse(str(g)) == g, f"parse(str(g)) != g for\n{g}"
    rt32 = tp.from_onnx(tp.to_onnx(g32, opset))
    rt64 = tp.from_onnx(tp.to_onnx(g64, opset))
    vrt32 = tp.from_onnx(tp.to_onnx(vg32, opset))
    vg_of_rt64 = tp.value_and_grad(rt64, wrt=wrt)
    assert tp.parse(str(rt64)) == rt64
    f_vg32_ort = tp.compile(vg32, backend="onnxruntime", intra_op_num_threads=1, opset=opset)
    f_vg32, f_vg64, f_vg64_pool = tp.compile(vg32), tp.compile(vg64), tp.compile(vg64)
    for b in _sizes(prog):
        xs32 = make_inputs(prog, b, "float32")
        xs64 = make_inputs(prog, b, "float64")
        ref32, ns32 = reference(prog, xs32, b)
        ref64, ns64 = reference(prog, xs64, b)
        flips = ns32.disc < 1e-5
        # scalar graphs (a different memory plan than the every-value graph)
        v32 = tp.run(g32, *xs32)
        v64 = tp.run(g64, *xs64)
        if ns64.disc >= 1e-12:
            _close(v64, ref64[-1], 1e-9, 1e-9, f"f64 scalar vs reference (sizes {b})", _scale(ref64))
        if not flips:
            _close(v32, ref32[-1], 1e-3, 1e-3, f"f32 scalar vs reference (sizes {b})", _scale(ref32))
            _close(tp.run(g32, *xs32, backend="onnxruntime"), v32, ORT_RTOL, _ort_atol(prog),
                   f"f32 scalar onnxruntime vs numpy (sizes {b})", _scale(ref32), truth=ref32[-1])
        _close(tp.run(s64, *xs64), v64, 1e-13, 1e-13, f"simplify(g) vs g (sizes {b})", _scale(ref64))
        # d: IR -> ONNX -> IR
        _close(tp.run(rt32, *xs32), v32, 1e-5, 1e-6, f"f32 from_onnx(to_onnx(g)) (sizes {b})", _scale(ref32))
        _close(tp.run(rt64, *xs64), v64, 1e-12, 1e-12, f"f64 from_onnx(to_onnx(g)) (sizes {b})", _scale(ref64))
        # c: gradients
        val64, grads64 = f_vg64(*xs64)
        grads64 = _flat(grads64)
        _close(val64, v64, 1e-12, 1e-12, f"value_and_grad value (sizes {b})", _scale(ref64))
        assert len(grads64) == len(widx)
        for k, gx in zip(widx, grads64):
            x = xs64[k]
            assert gx.shape == x.shape and gx.dtype == x.dtype
            assert np.all(np.isfinite(gx)), f"non-finite gradient (sizes {b}): {gx}"
        gscale = max([1.0] + [float(np.max(np.abs(gx), initial=0)) for gx in grads64])
        # value_and_grad of the imported graph
        val_rt, grads_rt = tp.run(vg_of_rt64, *xs64)
        for j, (a_, b_) in enumerate(zip(_flat(grads_rt), grads64)):
            _close(a_, b_, 1e-9, 1e-9, f"value_and_grad(from_onnx(to_onnx(g))) grad {j} (sizes {b})", gscale)
        # f32 gradients: onnxruntime vs numpy backend; the imported value_and_grad graph
        vg32_np = _flat(f_vg32(*xs32))
        vg32_truth = _flat(f_vg64(*[x.astype(np.float64) for x in xs32]))
        g32scale = max([1.0] + [float(np.max(np.abs(t), initial=0)) for t in vg32_np])
        for j, (o_, n_, t_) in enumerate(zip(_flat(f_vg32_ort(*xs32)), vg32_np, vg32_truth)):
            if flips or ns32.kink < 1e-12:  # see `tied` above: gradients split exact ties
                break
            _close(o_, n_, ORT_RTOL, _ort_atol(prog),
                   f"f32 value_and_grad output {j}: onnxruntime vs numpy (sizes {b})", g32scale, truth=t_)
        for j, (r_, n_) in enumerate(zip(_flat(tp.run(vrt32, *xs32)), vg32_np)):
            _close(r_, n_, 1e-5, 1e-6, f"f32 from_onnx(to_onnx(value_and_grad)) output {j} (sizes {b})", g32scale)
        # the memory plan of the gradient graph, every ufunc result in a reused buffer
        _check_pooled(prog, f_vg64_pool, xs64, _flat((val64, grads64)), b, "float64")
        smooth = ns64.kink > FD_MARGIN
        if smooth:
            _check_fd(prog, g64, xs64, grads64, widx, b)
        if torch is not None and not ns64.pool_tie and not (0 < ns64.kink < 1e-9):
            _check_torch(prog, xs64, val64, grads64, widx, b, gscale)
        if hessian:
            _check_hvp(prog, g64, xs64, wrt, widx, b, smooth)
    if any(isinstance(d, str) and "B" in d for v in prog.inputs for d in v.shape):
        _check_empty(prog)


def _check_empty(prog):
    """f. A symbolic dim of size 0 (B = 0): the numpy backend against the reference (or a
    RunError where the reference raises: max of nothing), onnxruntime against numpy where
    numpy's result has no nan (the documented differences: mean of nothing is nan in numpy,
    0 in onnxruntime; max/min of nothing raise in numpy)."""
    b = {"B": 0, "T": prog.sizes[0]["T"]}
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
            got = _flat(tp.run(gm, *xs))
            grads = _flat(tp.run(vg, *xs))
            if dtype == "float32":  # float64 at the float32 inputs (the values' reference is that already)
                truth = (ref, _flat(tp.run(vg64, *[x.astype(np.float64) for x in xs])))
        if rns.undefined:  # -inf (a logsumexp of nothing) cast to an integer, or a nan met an op
            continue
        for j, (g_, r_) in enumerate(zip(got, ref)):
            assert g_.shape == r_.shape, f"B = 0: value {len(xs) + j} has shape {g_.shape}, not {r_.shape}"
            np.testing.assert_allclose(g_, r_, rtol=1e-3, atol=1e-3, equal_nan=True,
                                       err_msg=f"B = 0: value {len(xs) + j} vs reference")
        # documented differences: mean of nothing is nan in numpy; -inf in a max_pool2d window
        if dtype == "float32" and all(np.isfinite(a).all() for a in got + grads) and rns.kink >= 1e-12:
            for name, g, want, true in (("value", gm, got, truth[0]), ("value_and_grad", vg, grads, truth[1])):
                scale = max([1.0] + [float(np.max(np.abs(t), initial=0)) for t in want])
                for j, (o_, g_, t_) in enumerate(zip(_flat(tp.run(g, *xs, backend="onnxruntime")), want, true)):
                    assert o_.shape == g_.shape, f"B = 0: onnxruntime {name} output {j} has shape {o_.shape}"
                    _close(o_, g_, ORT_RTOL, _ort_atol(prog), f"B = 0: onnxruntime vs numpy, {name} output {j}",
                           scale, truth=t_)


def _check_pooled(prog, f, xs, want, b, dtype):
    """The memory plan with every ufunc result in a reused buffer (MIN_BYTES = 0; the
    default keeps these small arrays out of it): the same values, and a second call (other
    inputs) does not overwrite the first call's results."""
    saved = numpy_memory.MIN_BYTES
    numpy_memory.MIN_BYTES = 0
    try:
        first = _flat(f(*xs))
        snapshot = [a.copy() for a in first]
        _flat(f(*make_inputs(prog, b, dtype, salt=1)))
        again = _flat(f(*xs))
    finally:
        numpy_memory.MIN_BYTES = saved
    # not bit-identical: a ufunc on a transposed view returns a transposed array unless it
    # writes into a (C-ordered) buffer, and a later sum adds in memory order
    tol = 1e-12 if dtype == "float64" else 1e-5
    for j, (a, a0, w) in enumerate(zip(first, snapshot, want)):
        _close(a, w, tol, tol, f"pooled buffers vs plain numpy backend, value {len(xs) + j} (sizes {b})")
        np.testing.assert_array_equal(a, a0, err_msg=f"a later call overwrote value {len(prog.inputs) + j}")
    for j, (a, w) in enumerate(zip(again, want)):
        _close(a, w, tol, tol, f"pooled buffers, third call, value {len(prog.inputs) + j} (sizes {b})")


def _scale(ref):
    return max([1.0] + [float(np.max(np.abs(r), initial=0.0)) for r in ref])


def _check_fd(prog, g64, xs, grads, widx, b, eps=1e-6):
    rng = np.random.default_rng(prog.seed + 99)
    ds = [rng.standard_normal(xs[k].shape) for k in widx]
    f = tp.compile(g64)

    def moved(sign):
        ys = list(xs)
        for k, d in zip(widx, ds):
            ys[k] = xs[k] + sign * eps * d
        return ys
    plus = float(f(*moved(1)))
    minus = float(f(*moved(-1)))
    fd = (plus - minus) / (2 * eps)
    an = sum(float(np.sum(gx * d)) for gx, d in zip(grads, ds))
    mag = sum(float(np.sum(np.abs(gx * d))) for gx, d in zip(grads, ds))
    tol = 1e-5 * (abs(fd) + mag) + 1e-7 * max(1.0, abs(plus))
    assert abs(fd - an) <= tol, f"gradient vs central differences (sizes {b}): <grad, d> = {an!r}, FD = {fd!r}"


def _check_torch(prog, xs, val, grads, widx, b, gscale):
    ns = TorchNS(b)
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=k in widx) for k, x in enumerate(xs)]
    vals = eval_torch(prog, ns, ts)
    out = _result(prog, vals, ns)
    ws = [ts[k] for k in widx]
    gs = torch.autograd.grad(out, ws, allow_unused=True) if out.requires_grad else [None] * len(ws)
    _close(val, out.detach().numpy(), 1e-9, 1e-9, f"value vs torch (sizes {b})", max(1.0, abs(out.item())))
    for j, (gx, tg) in enumerate(zip(grads, gs)):
        want = _torch_np(tg, xs[widx[j]].shape)
        _close(gx, want, 1e-8, 1e-8, f"gradient {j} vs torch autograd (sizes {b})", gscale)


def _kink(prog, xs, b):
    """The reference's distance to the nearest kink at these inputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reference(prog, xs, b)[1].kink


def _check_hvp(prog, g64, xs, wrt, widx, b, smooth, eps=1e-4):
    """Hv = grad <grad g, v> (tp.grad of a trace that tp.call's tp.grad(g)): against central
    differences of the gradient when smooth; in onnxruntime and after IR -> ONNX -> IR always."""
    n = len(xs)
    gg = tp.grad(g64, wrt=wrt)

    def hv(*args):
        x, v = args[:n], args[n:]
        gs = tp.call(gg, *x)
        gs = gs if isinstance(wrt, tuple) else (gs,)
        total = None
        for gi, vi in zip(gs, v):
            t = (gi * vi).sum()
            total = t if total is None else total + t
        return total

    specs = _specs(prog, "float64")
    h = tp.trace(hv, *specs, *[specs[k] for k in widx])
    hg = tp.grad(h, wrt=wrt)
    assert tp.parse(str(hg)) == hg
    rng = np.random.default_rng(prog.seed + 7)
    vs = [rng.standard_normal(xs[k].shape) for k in widx]
    got = _flat(tp.run(hg, *xs, *vs))
    scale = max([1.0] + [float(np.max(np.abs(t), initial=0)) for t in got])
    f_ort = _ort(hg, _opset(prog))
    if f_ort is not None and _kink(prog, xs, b) >= 1e-12:  # exact ties: see `tied` in check_program
        tol = 1e-5 if _ort_f64_loose(prog) else 1e-8
        for j, (o_, g_) in enumerate(zip(_flat(f_ort(*xs, *vs)), got)):
            _close(o_, g_, tol, tol / 10, f"Hessian-vector product {j}: onnxruntime vs numpy (sizes {b})", scale)
    for j, (r_, g_) in enumerate(zip(_flat(tp.run(tp.from_onnx(tp.to_onnx(hg, _opset(prog))), *xs, *vs)), got)):
        _close(r_, g_, 1e-9, 1e-9, f"Hessian-vector product {j}: from_onnx(to_onnx(hg)) (sizes {b})", scale)
    # torch's double backward (not with max_pool2d: its tie rule; nor callgrad: a third
    # derivative, where torch 2.13 was wrong through layer_norm while tapeir matched both
    # central differences and torch's own differences of its gradient)
    if torch is not None and not _uses(prog, "max_pool2d") and not _uses(prog, "callgrad"):
        ns = TorchNS(b)
        ts = [torch.tensor(x, dtype=torch.float64, requires_grad=k in widx) for k, x in enumerate(xs)]
        out = _result(prog, eval_torch(prog, ns, ts), ns)
        ws = [ts[k] for k in widx]
        if out.requires_grad:
            gs = torch.autograd.grad(out, ws, create_graph=True, allow_unused=True)
            dot = sum((gi * torch.as_tensor(vi)).sum() for gi, vi in zip(gs, vs) if gi is not None)
            hs = torch.autograd.grad(dot, ws, allow_unused=True) if torch.is_tensor(dot) and dot.requires_grad \
                else [None] * len(ws)
            for j, (hx, th) in enumerate(zip(got, hs)):
                want = _torch_np(th, hx.shape)
                if not (0 < _kink(prog, xs, b) < 1e-9):
                    _close(hx, want, 1e-7, 1e-8, f"Hessian-vector product {j} vs torch (sizes {b})", scale)
    if not smooth:
        return
    f = tp.compile(gg)

    def central(h):
        """(grad(x + h v) - grad(x - h v)) / 2h."""
        ys, zs = list(xs), list(xs)
        for k, v in zip(widx, vs):
            ys[k], zs[k] = xs[k] + h * v, xs[k] - h * v
        return [(a_ - b_) / (2 * h) for a_, b_ in zip(_flat(f(*ys)), _flat(f(*zs)))]
    # Richardson extrapolation: the O(h^2) error of central differences cancels
    fd = [(4 * q - p_) / 3 for p_, q in zip(central(eps), central(eps / 2))]
    scale = max([1.0] + [float(np.max(np.abs(t), initial=0)) for t in fd])
    for j, (hx, want) in enumerate(zip(got, fd)):
        _close(hx, want, 1e-4, 1e-6, f"Hessian-vector product {j} vs central differences of the gradient "
               f"(sizes {b})", scale)


@SETTINGS
@given(programs(), st.integers(0, 2))
def test_fuzz_programs(prog, k):
    note(repr(prog))
    check_program(prog, hessian=(k == 0))
