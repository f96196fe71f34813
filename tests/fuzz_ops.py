"""The op table of tests/test_fuzz_programs.py: one `Row` per op kind.

A row holds everything the fuzzer knows about one kind of op:

* `gen(g, vi, v)`: draws the op's attributes for operand value `vi` (a `Val`: shape and
  interval) with the program generator `g`, appends it with `g.add(...)` and returns True,
  or returns None when the operand does not suit (the generator tries another);
* `tp(op, ns, a, cache)`: the op in tapeir, in the spelling `op.p["form"]` drew (operator,
  `tp.*`, numpy function on a Tensor, method, ...);
* `np(op, ns, a)`: the reference, written directly in numpy (never tapeir's kernels); it
  records on `ns` how close the inputs sit to a kink (`ns.near`) or to the edge of a
  discrete decision (`ns.decide`), which the checks use to skip what a kink invalidates;
* `torch(op, ns, a)`: the same op in torch float64, the autograd reference;
* `weight`: how many times the generator's draw list holds the kind;
* `exempt`: named exemptions (`Exempt`) of checks that do not hold for programs using it.

Adding an op is adding one row (and, for a new spelling, a form).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

import tapeir as tp

try:  # the optional PyTorch oracle
    import torch
    F = torch.nn.functional
except Exception:  # pragma: no cover - torch is optional
    torch = F = None


# ---- exemptions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Exempt:
    """A check that does not hold for programs using an op, and why."""

    name: str
    why: str


ORT_F64_FLOAT32_ATTR = Exempt(
    "ort_f64_float32_attr", "onnxruntime in float64 is ~1e-8 off where a float attribute is float32 "
    "(layer_norm's epsilon 1e-3 is 1.00000005e-3; leaky_relu's and elu's alpha) and in tanh-gelu (its own rounding)")
ORT_F32_CONDITIONED = Exempt(
    "ort_f32_conditioned", "a nearly constant layer_norm row divides float32 rounding differences by sqrt(eps): "
    "onnxruntime vs numpy needs 8x the tolerance")
ORT_SPLIT_TIES = Exempt(
    "ort_split_ties", "callgrad values are gradients that split exact ties; onnxruntime's float64 tanh and sin give "
    "identical inputs results 1 ulp apart (vector body vs tail), so its ties break")
TORCH_TIE_RULE = Exempt(
    "torch_tie_rule", "torch's max_pool2d gives a tie's gradient to one element (tapeir splits it): no torch "
    "double backward")
TORCH_THIRD_DERIVATIVE = Exempt(
    "torch_third_derivative", "a Hessian-vector product through callgrad is a third derivative, where torch 2.13 "
    "was wrong through layer_norm (tapeir matched central differences and torch's own differences)")


@dataclass(frozen=True)
class Row:
    name: str
    gen: Callable
    tp: Callable
    np: Callable
    torch: Callable
    weight: int = 1
    exempt: tuple = ()
    nchw: bool = False          # prefers 4-d operands with static C, H, W
    top_level: bool = False     # not inside a sub-program (call, callgrad)
    needs_torch: bool = False   # its reference is torch's
    min_opset: int = 0          # the lowest ONNX opset its forward or gradient exports at


ROWS: dict[str, Row] = {}


def row(name, gen, tp_, np_, torch_=None, **kw):
    """One row; `tp_` may be a `twin` (tp and torch forms at once), then torch_ is None."""
    if isinstance(tp_, tuple):
        tp_, torch_ = tp_
    assert name not in ROWS, name
    ROWS[name] = Row(name, gen, tp_, np_, torch_, **kw)


def twin(name, args):
    """The tp and torch forms of an op that is `tp.<name>` and `torch.nn.functional.<name>`
    with the same arguments: `args(op, ns, a)` gives them as (positional, keywords)."""
    def form(lib):
        def call(op, ns, a, cache=None):
            pos, kw = args(op, ns, a)
            return getattr(lib(), name)(*pos, **kw)
        return call
    return form(lambda: tp), form(lambda: F)


# ---- interval arithmetic and shapes ---------------------------------------------------------

def _mono(f, lo, hi):
    a, b = f(lo), f(hi)
    return min(a, b), max(a, b)


def _mul_iv(a, b):
    ps = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(ps), max(ps)


def _clamp(x, lo, hi, ints=False):
    """clip's value at x (monotone, so an interval maps to [clamp(lo), clamp(hi)]); integer
    tensors clip to [ceil(lo), floor(hi)]."""
    if lo is not None:
        x = max(x, math.ceil(lo) if ints else lo)
    if hi is not None:
        x = min(x, math.floor(hi) if ints else hi)
    return x


def _pair(x):
    return x if isinstance(x, tuple) else (x, x)


def _norm_axis(axis, r):
    if axis is None:
        return tuple(range(r))
    if isinstance(axis, int):
        return (axis % r,)
    return tuple(a % r for a in axis)


def _cmp(a, b, cmp):
    return {">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le}[cmp](a, b)


def _reduced(shape, axes, keep):
    return tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep else \
        tuple(d for i, d in enumerate(shape) if i not in axes)


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


def _gap(x, axes):
    """The smallest gap between the largest two (and smallest two) elements over `axes`."""
    if not axes:
        return math.inf
    keep = [a for a in range(x.ndim) if a not in axes]
    n = int(np.prod([x.shape[a] for a in axes]))
    y = np.transpose(x, keep + list(axes)).reshape(tuple(x.shape[a] for a in keep) + (n,))
    if n < 2 or y.size == 0:
        return math.inf
    s = np.sort(y, axis=-1)
    return float(min(np.min(s[..., -1] - s[..., -2]), np.min(s[..., 1] - s[..., 0])))


def _forms(g, forms):
    return g.choice(forms) if len(forms) > 1 else forms[0]


# ---- unary elementwise ----------------------------------------------------------------------
# unary(name, interval, forms, reference, torch): interval maps (lo, hi) to the output's
# (lo, hi), or None where the op's domain excludes the operand; forms are the spellings.

TP_FORMS = {"op": {"neg": operator.neg, "abs": abs}, "np": {"neg": np.negative}, "tp": {"neg": tp.negative}}


def unary(name, iv, forms, ref, tref, near=False, **kw):
    def gen(g, vi, v):
        out = iv(v.lo, v.hi)
        if out is None:
            return None
        return g.add(name, [vi], v.shape, *out, form=_forms(g, forms))

    def tp_(op, ns, a, cache):
        f = op.p["form"]
        return TP_FORMS[f].get(name) or getattr(tp if f == "tp" else np, name)

    def np_(op, ns, a):
        if near:
            ns.near(a[0])
        return ref(a[0], ns)

    row(name, gen, lambda op, ns, a, cache: tp_(op, ns, a, cache)(a[0]), np_, lambda op, ns, a: tref(a[0]), **kw)


def _pos(lo_min):
    return lambda f: (lambda lo, hi: None if lo < lo_min else _mono(f, lo, hi))


unary("neg", lambda lo, hi: (-hi, -lo), ("op", "tp", "np"), lambda x, ns: -x, operator.neg)
for _n in ("tanh", "sin", "cos"):
    unary(_n, (lambda lo, hi: _mono(math.tanh, lo, hi)) if _n == "tanh" else (lambda lo, hi: (-1, 1)), ("tp", "np"),
          lambda x, ns, f=getattr(np, _n): f(x), lambda x, n=_n: getattr(torch, n)(x))
unary("sigmoid", lambda lo, hi: _mono(lambda x: 1 / (1 + math.exp(-x)), lo, hi), ("tp",),
      lambda x, ns: 1 / (1 + np.exp(-x)), lambda x: torch.sigmoid(x))
unary("softplus", lambda lo, hi: _mono(lambda x: max(x, 0) + math.log1p(math.exp(-abs(x))), lo, hi), ("tp",),
      # torch's F.softplus returns x itself past its threshold (x > 20), 1e-10 relative off in
      # float64, past the programs' tolerance; logaddexp(x, 0) is exact there and has its gradient
      lambda x, ns: np.logaddexp(ns.dtype.type(0), x), lambda x: torch.logaddexp(x, torch.zeros_like(x)))
unary("erf", lambda lo, hi: _mono(math.erf, lo, hi), ("tp",), lambda x, ns: _erf_np(x), lambda x: torch.erf(x))
unary("abs", lambda lo, hi: (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi))),
      ("op", "tp", "np"), lambda x, ns: np.abs(x), lambda x: torch.abs(x), near=True)
unary("relu", lambda lo, hi: (max(lo, 0), max(hi, 0)), ("tp",),
      lambda x, ns: np.where((x > 0) | np.isnan(x), x, 0), lambda x: torch.relu(x), near=True)  # nan stays nan
unary("silu", lambda lo, hi: (max(-0.28, min(lo, 0)), max(hi, 0)), ("tp",), lambda x, ns: x / (1 + np.exp(-x)),
      lambda x: F.silu(x))
unary("exp", lambda lo, hi: None if hi > 5 else (math.exp(lo), math.exp(hi)), ("tp", "np"),
      lambda x, ns: np.exp(x), lambda x: torch.exp(x))
unary("log", _pos(0.2)(math.log), ("tp", "np"), lambda x, ns: np.log(x), lambda x: torch.log(x))
unary("sqrt", _pos(0.2)(math.sqrt), ("tp", "np"), lambda x, ns: np.sqrt(x), lambda x: torch.sqrt(x))
unary("safe_log", lambda lo, hi: None if lo < 0.2 else (math.log(lo), math.log(hi + 1e-6)), ("tp",),
      lambda x, ns: np.log(x + ns.dtype.type(1e-6)), lambda x: torch.log(x + 1e-6))
unary("reciprocal", lambda lo, hi: _mono(lambda x: 1 / x, lo, hi) if lo >= 0.2 or hi <= -0.2 else None, ("tp",),
      lambda x, ns: 1 / x, lambda x: torch.reciprocal(x))
row("cast_rt", lambda g, vi, v: g.add("cast_rt", [vi], v.shape, v.lo, v.hi),
    lambda op, ns, a, cache: a[0].astype("float64").astype(ns.dtype), lambda op, ns, a: a[0], lambda op, ns, a: a[0])


def _alpha_gen(name, choices, iv):
    def gen(g, vi, v):
        a = g.choice(choices)
        return g.add(name, [vi], v.shape, *iv(v.lo, v.hi, a), alpha=a)
    return gen


def _leaky_np(op, ns, a):
    ns.near(a[0])
    return np.where(a[0] > 0, a[0], a[0] * ns.dtype.type(op.p["alpha"]))


def _elu_np(op, ns, a):
    x = a[0]
    ns.near(x)
    return np.where(x > 0, x, ns.dtype.type(op.p["alpha"]) * (np.exp(np.minimum(x, 0)) - 1))


def _alpha(op, ns, a):
    return (a[0], op.p["alpha"]), {}


row("leaky_relu", _alpha_gen("leaky_relu", [0.01, 0.2], lambda lo, hi, a: (min(lo, lo * a), max(hi, hi * a))),
    twin("leaky_relu", _alpha), _leaky_np, exempt=(ORT_F64_FLOAT32_ATTR,))
row("elu", _alpha_gen("elu", [1.0, 0.5], lambda lo, hi, a: (max(-a, min(lo, 0)), max(hi, 0))),
    twin("elu", _alpha), _elu_np, exempt=(ORT_F64_FLOAT32_ATTR,))


def _gelu_np(op, ns, a):
    x = a[0]
    if op.p["approximate"] == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf_np(x / ns.dtype.type(math.sqrt(2))))


row("gelu", lambda g, vi, v: g.add("gelu", [vi], v.shape, max(-0.18, min(v.lo, 0)), max(v.hi, 0),
                                   approximate=g.choice(["none", "tanh"])),
    twin("gelu", lambda op, ns, a: ((a[0],), {"approximate": op.p["approximate"]})), _gelu_np,
    exempt=(ORT_F64_FLOAT32_ATTR,))


def _clip_gen(g, vi, v):
    lo, hi = g.choice([None, -0.5, 0.0, 0.25]), g.choice([None, 0.5, 1.0])
    if lo is None and hi is None:
        hi = 0.75
    return g.add("clip", [vi], v.shape, _clamp(v.lo, lo, hi), _clamp(v.hi, lo, hi), a_min=lo, a_max=hi,
                 form=g.choice(["tp", "np"]))


def _clip_np(op, ns, a):
    x, lo, hi = a[0], op.p["a_min"], op.p["a_max"]
    for edge in (lo, hi):
        if edge is not None:
            ns.near(x - edge)
    y = x if lo is None else np.where(x < lo, lo, x)
    return y if hi is None else np.where(y > hi, hi, y)


row("clip", _clip_gen, lambda op, ns, a, cache: (tp.clip if op.p["form"] == "tp" else np.clip)(
    a[0], op.p["a_min"], op.p["a_max"]), _clip_np, lambda op, ns, a: torch.clamp(a[0], op.p["a_min"], op.p["a_max"]))


def _powc_gen(g, vi, v):
    e = g.choice([2.0, 3, 0.5, -1.0, 0.0, 1.0, 2])
    if (e == 0.5 and v.lo < 0.2) or (e == -1.0 and v.lo < 0.2 and v.hi > -0.2):
        return None
    corners = [v.lo ** e, v.hi ** e] + ([0.0] if e in (2.0, 2) and v.lo < 0 < v.hi else [])
    return g.add("powc", [vi], v.shape, min(corners), max(corners), e=e, form=g.choice(["op", "tp", "np"]))


row("powc", _powc_gen, lambda op, ns, a, cache: {"op": operator.pow, "tp": tp.power, "np": np.power}[op.p["form"]](
    a[0], op.p["e"]), lambda op, ns, a: np.power(a[0], ns.dtype.type(op.p["e"])), lambda op, ns, a: a[0] ** op.p["e"])


def _rpowc_gen(g, vi, v):
    base = g.choice([2.0, 0.5, math.e])
    m = math.log(max(base, 1 / base))
    if v.hi * m > 5 or -v.lo * m > 5:
        return None
    return g.add("rpowc", [vi], v.shape, *_mono(lambda x: base ** x, v.lo, v.hi), base=base)


row("rpowc", _rpowc_gen, lambda op, ns, a, cache: op.p["base"] ** a[0],
    lambda op, ns, a: np.power(ns.dtype.type(op.p["base"]), a[0]), lambda op, ns, a: op.p["base"] ** a[0])

SCAL = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        "r-": lambda x, c: c - x, "r/": lambda x, c: c / x, "r+": lambda x, c: c + x, "r*": lambda x, c: c * x}


def _scal_gen(g, vi, v):
    """x op c, c a Python scalar or a numpy one (both weakly typed: they take the tensor's dtype)."""
    op, c = g.choice(list(SCAL)), g.choice([0.5, 2.0, -1.5, 1.0, 0.0, 3])
    if (op == "/" and c == 0) or (op == "r/" and v.lo < 0.2 and v.hi > -0.2):
        return None
    iv = _mono(lambda x: SCAL[op](x, c), v.lo, v.hi) if op != "r/" else _mono(lambda x: c / x, v.lo, v.hi)
    kind = g.choice(["py", "py", "f64", "f32"] + (["i64"] if float(c).is_integer() else []))
    return g.add("scal", [vi], v.shape, *iv, op=op, c=c, ckind=kind)


CKIND = {"py": lambda c: c, "f64": np.float64, "f32": np.float32, "i64": np.int64}
row("scal", _scal_gen, lambda op, ns, a, cache: SCAL[op.p["op"]](a[0], CKIND[op.p["ckind"]](op.p["c"])),
    lambda op, ns, a: SCAL[op.p["op"]](a[0], ns.dtype.type(op.p["c"])),
    lambda op, ns, a: SCAL[op.p["op"]](a[0], op.p["c"]))


# ---- integer and boolean detours --------------------------------------------------------

INT_STEPS = ["abs", "relu", "neg", "addc", "mulc", "clip", "square", "where_pos", "max_self"]


def _intpath_gen(g, vi, v):
    """(x * k) cast to an integer dtype (truncation), integer ops, a reduction, cast back."""
    k = g.choice([1.0, 3.0, 0.5])
    lo, hi = math.trunc(v.lo * k), math.trunc(v.hi * k)
    steps = []
    for _ in range(g.i(1, 3)):
        s = g.choice(INT_STEPS)
        if s in ("addc", "mulc"):
            c = g.choice([2, -1, 3])
            steps.append((s, c))
            lo, hi = (lo + c, hi + c) if s == "addc" else _mono(lambda x: x * c, lo, hi)
        elif s == "clip":
            a, b = g.choice([(0.5, 2.5), (-1.0, 1.0), (-2.5, None), (None, 0.7)])
            steps.append((s, a, b))
            lo, hi = _clamp(lo, a, b, True), _clamp(hi, a, b, True)
        elif s == "where_pos":
            c = g.choice([7, -3])
            steps.append((s, c))
            lo, hi = min(lo, c), max(hi, c)
        else:
            steps.append((s,))
            lo, hi = {"abs": lambda: (0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi))),
                      "relu": lambda: (max(lo, 0), max(hi, 0)), "neg": lambda: (-hi, -lo),
                      "square": lambda: (0, max(lo * lo, hi * hi)), "max_self": lambda: (lo, hi)}[s]()
    axis, axes = g.axes(v)
    red, shape = g.choice(["none", "sum", "max", "min"]), v.shape
    if red != "none":
        keep = g.coin()
        shape = _reduced(v.shape, axes, keep)
        nmin, nmax = g.count(v.shape, axes)
        if nmin == 0 and red != "sum":  # max of nothing (T-1 at T = 1)
            return None
        if red == "sum":
            lo, hi = min(lo * nmin, lo * nmax), max(hi * nmin, hi * nmax)
    else:
        axis, keep = None, False
    return g.add("intpath", [vi], shape, lo, hi, k=k, to=g.choice(["int32", "int64"]), steps=steps, red=red,
                 axis=axis, keepdims=keep)


def _int_step(lib, y, step):
    """One integer op, in tapeir (lib=tp), numpy or torch."""
    name = step[0]
    if name == "relu":
        return tp.relu(y) if lib is tp else lib.maximum(y, lib.zeros_like(y))
    if name == "max_self":
        return lib.maximum(y, y)
    if name == "where_pos":
        return torch.where(y > 0, y, torch.tensor(step[1])) if lib is torch else lib.where(y > 0, y, step[1])
    if name == "clip":
        lo, hi = step[1], step[2]
        if lib is tp:
            return tp.clip(y, lo, hi)
        lo, hi = None if lo is None else math.ceil(lo), None if hi is None else math.floor(hi)
        return np.clip(y, lo, hi) if lib is np else torch.clamp(y, lo, hi)
    return {"abs": abs, "neg": operator.neg, "addc": lambda y: y + step[1], "mulc": lambda y: y * step[1],
            "square": lambda y: y * y}[name](y)


def _intpath_tp(op, ns, a, cache):
    p = op.p
    y = (a[0] * p["k"]).astype(p["to"])
    for step in p["steps"]:
        y = _int_step(tp, y, step)
    if p["red"] != "none":
        y = getattr(tp, p["red"])(y, axis=p["axis"], keepdims=p["keepdims"])
    return y.astype(ns.dtype)


def _intpath_np(op, ns, a):
    p, z = op.p, a[0] * op.p["k"]
    ns.decide(z - np.round(z), z)  # truncation jumps at integers
    ns.undefined |= not np.all(np.isfinite(z))  # inf or nan cast to an integer: undefined
    y = np.trunc(z).astype(p["to"])
    for step in p["steps"]:
        y = _int_step(np, y, step)
    if p["red"] != "none":
        y = getattr(np, p["red"])(y, axis=_norm_axis(p["axis"], y.ndim), keepdims=p["keepdims"])
    return y.astype(ns.dtype)


def _intpath_torch(op, ns, a):
    p = op.p
    y = (a[0] * p["k"]).to(getattr(torch, p["to"]))
    for step in p["steps"]:
        y = _int_step(torch, y, step)
    axes = _norm_axis(p["axis"], y.ndim) if p["red"] != "none" else ()
    if axes:
        y = {"sum": torch.sum, "max": torch.amax, "min": torch.amin}[p["red"]](y, dim=axes, keepdim=p["keepdims"])
    return y.to(torch.float64)


row("intpath", _intpath_gen, _intpath_tp, _intpath_np, _intpath_torch, weight=2)


def _boolpath_gen(g, vi, v):
    """A comparison (or an equality of two comparisons) cast to the float dtype."""
    thr = float(g.rng.uniform(v.lo, v.hi)) if v.hi > v.lo else v.lo + 0.5
    thr2 = float(g.rng.uniform(v.lo, v.hi)) if v.hi > v.lo else v.lo - 0.5
    return g.add("boolpath", [vi], v.shape, 0.0, 1.0, thr=thr, thr2=thr2, cmp=g.choice([">", "<=", ">="]),
                 mode=g.choice(["cast", "eq", "ne", "where"]))


def _bool_path(x, p, where):
    c = _cmp(x, p["thr"], p["cmp"])
    if p["mode"] == "cast":
        return c
    if p["mode"] == "where":
        return where(c, x > p["thr2"], x < p["thr2"])
    c2 = x > p["thr2"]
    return (c == c2) if p["mode"] == "eq" else (c != c2)


def _boolpath_np(op, ns, a):
    ns.decide(a[0] - op.p["thr"], a[0])
    ns.decide(a[0] - op.p["thr2"], a[0])
    return _bool_path(a[0], op.p, np.where).astype(ns.dtype)


row("boolpath", _boolpath_gen, lambda op, ns, a, cache: _bool_path(a[0], op.p, tp.where).astype(ns.dtype),
    _boolpath_np, lambda op, ns, a: _bool_path(a[0], op.p, torch.where).to(torch.float64))


# ---- constants ----------------------------------------------------------------------------

CEXPR = {"exp": (np.exp, tp.exp, lambda c: torch.exp(c)), "tanh": (np.tanh, tp.tanh, lambda c: torch.tanh(c)),
         "neg": (np.negative, tp.negative, lambda c: -c), "square": (lambda c: c * c,) * 3,
         "sum": (np.sum, tp.sum, lambda c: torch.sum(c)),
         "softmax": (lambda c: np.exp(c) / np.exp(c).sum(axis=-1, keepdims=True), tp.softmax,
                     lambda c: torch.softmax(c, dim=-1))}


def _cexpr_gen(g, vi, v):
    """x (+ or *) f(constant): a constant subexpression (simplify folds the small ones)."""
    c = g.const(g.const_like(v.shape) if g.coin() else g.static(v.shape))
    fn = g.choice(list(CEXPR))
    iv = {"exp": (math.exp(-1), math.e), "tanh": (-0.77, 0.77), "neg": (-1, 1), "square": (0, 1),
          "sum": (-c.size, c.size), "softmax": (0, 1)}[fn]
    if fn in ("sum", "softmax") and not c.shape:
        fn, iv = "neg", (-1, 1)
    shape = g.bcast(v.shape, () if fn == "sum" else c.shape)
    if g.coin():
        return g.add("cexpr", [vi], shape, v.lo + iv[0], v.hi + iv[1], c=c, fn=fn, op="+")
    return g.add("cexpr", [vi], shape, *_mul_iv((v.lo, v.hi), iv), c=c, fn=fn, op="*")


def _cexpr(which):
    def ev(op, ns, a, cache=None):
        fc = CEXPR[op.p["fn"]][which](ns.c(op.p["c"]))
        return a[0] + fc if op.p["op"] == "+" else fc * a[0]
    return ev


row("cexpr", _cexpr_gen, _cexpr(1), _cexpr(0), _cexpr(2), weight=2)


# ---- binary (a partner value, a constant array or a Python scalar, on either side) ---------

def _bin_operands(ns, op, a):
    if "c" in op.p:
        y = ns.c(op.p["c"])
    elif "s" in op.p:
        y = op.p["s"]
    else:
        y = a[1]
    return (y, a[0]) if op.p.get("side") == "l" else (a[0], y)


BIN_OP = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow}
BIN_NP = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "maximum": np.maximum,
          "minimum": np.minimum, "pow": np.power}


def binary(name, iv, need_a=None, need_b=None, forms=("op", "tp", "np")):
    def np_(op, ns, a):
        u, w = (np.asarray(t, ns.dtype) for t in _bin_operands(ns, op, a))
        if name in ("maximum", "minimum"):
            ns.near(u - w)
        return BIN_NP[name](u, w)

    def torch_(op, ns, a):
        u, w = _bin_operands(ns, op, a)
        if name in ("maximum", "minimum"):
            u, w = (torch.as_tensor(t, dtype=torch.float64) for t in (u, w))
            return getattr(torch, name)(u, w)
        return BIN_OP[name](u, w)

    tp_fn = BIN_OP.get(name), tp.power if name == "pow" else getattr(tp, name)
    row(name, lambda g, vi, v: g.binop(name, vi, v, iv, need_b, need_a, forms),
        lambda op, ns, a, cache: {"op": tp_fn[0], "tp": tp_fn[1], "np": BIN_NP[name]}[op.p["form"]](
            *_bin_operands(ns, op, a)), np_, torch_, weight=2)


binary("add", lambda a, b: (a[0] + b[0], a[1] + b[1]))
binary("sub", lambda a, b: (a[0] - b[1], a[1] - b[0]))
binary("mul", _mul_iv)
binary("div", lambda a, b: _mul_iv(a, (1 / b[1], 1 / b[0])), need_b=lambda lo, hi: lo >= 0.2 or hi <= -0.2)
binary("maximum", lambda a, b: (max(a[0], b[0]), max(a[1], b[1])), forms=("tp", "np"))
binary("minimum", lambda a, b: (min(a[0], b[0]), min(a[1], b[1])), forms=("tp", "np"))
binary("pow", lambda a, b: (min(x ** y for x in a for y in b), max(x ** y for x in a for y in b)),
       need_a=lambda lo, hi: lo >= 0.2, need_b=lambda lo, hi: max(abs(lo), abs(hi)) <= 3)


def _where_gen(g, vi, v):
    thr = float(g.rng.uniform(v.lo, v.hi)) if v.hi > v.lo else v.lo + 0.5
    cmp = g.choice([">", "<", ">=", "<="])
    args, p, w = g.other(v)
    kx = g.partner(v.shape)
    if kx is None or (w is not None and g.bcast(g.prog.vals[kx].shape, w.shape) is None):
        return None
    x = g.prog.vals[kx]
    if w is not None:
        shape, lo, hi = g.bcast(g.bcast(v.shape, x.shape), w.shape), min(x.lo, w.lo), max(x.hi, w.hi)
    elif "c" in p:
        shape = g.bcast(g.bcast(v.shape, x.shape), p["c"].shape)
        lo, hi = min(x.lo, float(p["c"].min())), max(x.hi, float(p["c"].max()))
    else:
        shape, lo, hi = g.bcast(v.shape, x.shape), min(x.lo, p["s"]), max(x.hi, p["s"])
    if shape is None:
        return None
    return g.add("where", [vi, kx] + args, shape, lo, hi, thr=thr, cmp=cmp, form=g.choice(["op", "tp"]), **p)


def _where(lib, const):
    def ev(op, ns, a, cache=None):
        p = op.p
        if lib is np:
            ns.decide(a[0] - p["thr"], a[0])
        y = ns.c(p["c"]) if "c" in p else const(p["s"]) if "s" in p else a[2]
        u, w = (a[1], y) if p.get("side") != "l" else (y, a[1])
        return lib.where(_cmp(a[0], p["thr"], p["cmp"]), u, w)
    return ev


row("where", _where_gen, _where(tp, lambda s: s), _where(np, lambda s: s),
    lambda op, ns, a: _where(torch, lambda s: torch.tensor(s, dtype=torch.float64))(op, ns, a), weight=2)


# ---- reductions ---------------------------------------------------------------------------

def _lse_np(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf) if axes else x
    m = np.where(np.isfinite(m), m, 0)
    r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return r if keep else np.squeeze(r, axis=axes)


RED_NP = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "logsumexp": _lse_np}


def reduction(name, iv, forms, weight=1):
    def tp_(op, ns, a, cache):
        f, kw = op.p["form"], dict(axis=op.p["axis"], keepdims=op.p["keepdims"])
        return getattr(a[0], name)(**kw) if f == "method" else getattr(np if f == "np" else tp, name)(a[0], **kw)

    def np_(op, ns, a):
        axes = _norm_axis(op.p["axis"], a[0].ndim)
        if name in ("max", "min"):
            ns.near(_gap(a[0], axes))
        if name == "logsumexp":
            return _lse_np(a[0], axes, op.p["keepdims"])
        return RED_NP[name](a[0], axis=axes, keepdims=op.p["keepdims"])

    def torch_(op, ns, a):
        axes = _norm_axis(op.p["axis"], a[0].ndim)
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin,
              "logsumexp": torch.logsumexp}[name]
        return fn(a[0], dim=axes, keepdim=op.p["keepdims"]) if axes else a[0]

    row(name, lambda g, vi, v: g.reduce(name, vi, v, iv, forms), tp_, np_, torch_, weight=weight)


reduction("sum", lambda lo, hi, a, b: (min(lo * a, lo * b), max(hi * a, hi * b)), ("method", "tp", "np"), weight=2)
reduction("mean", lambda lo, hi, a, b: (lo, hi), ("method", "tp", "np"))
reduction("max", lambda lo, hi, a, b: (lo, hi), ("method", "tp", "np"), weight=2)
reduction("min", lambda lo, hi, a, b: (lo, hi), ("method", "tp", "np"))
reduction("logsumexp", lambda lo, hi, a, b: (lo, hi + math.log(b)), ("tp",))


def _softmax_gen(name):
    def gen(g, vi, v):
        if not v.shape:
            return None
        axis = g.i(-len(v.shape), len(v.shape) - 1)
        if min(g.dval(v.shape[axis], b) for b in g.sizes) == 0:  # over nothing (T-1 at T = 1), as reductions
            return None
        if name == "softmax":
            return g.add(name, [vi], v.shape, 0.0, 1.0, axis=axis)
        n = max(g.dval(v.shape[axis], b) for b in g.sizes)
        return g.add(name, [vi], v.shape, v.lo - v.hi - math.log(n) - 1e-9, 0.0, axis=axis)
    return gen


def _softmax_np(op, ns, a):
    e = np.exp(a[0] - np.max(a[0], axis=op.p["axis"], keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=op.p["axis"], keepdims=True)


def _log_softmax_np(op, ns, a):
    s = a[0] - np.max(a[0], axis=op.p["axis"], keepdims=True, initial=-np.inf)
    return s - np.log(np.sum(np.exp(s), axis=op.p["axis"], keepdims=True))


for _n, _ref in (("softmax", _softmax_np), ("log_softmax", _log_softmax_np)):
    row(_n, _softmax_gen(_n), lambda op, ns, a, cache, n=_n: getattr(tp, n)(a[0], axis=op.p["axis"]), _ref,
        lambda op, ns, a, n=_n: getattr(torch, n)(a[0], dim=op.p["axis"]))


def _layer_norm_gen(g, vi, v):
    r = len(v.shape)
    ks = [k for k in range(1, r + 1) if all(isinstance(d, int) for d in v.shape[r - k:])]
    if not ks:
        return None
    k = g.choice(ks)
    ns = tuple(v.shape[r - k:])
    p = {"k": k, "eps": g.choice([1e-5, 1e-3])}
    lo, hi = -math.sqrt(int(np.prod(ns))), math.sqrt(int(np.prod(ns)))
    if g.coin():
        p["weight"] = g.const(ns, 0.5, 1.5)
        lo, hi = lo * 1.5, hi * 1.5
        if g.coin():
            p["bias"] = g.const(ns)
            lo, hi = lo - 1, hi + 1
    return g.add("layer_norm", [vi], v.shape, lo, hi, **p)


def _opt(ns, p, key):
    return ns.c(p[key]) if key in p else None


def _layer_norm_np(op, ns, a):
    x, p = a[0], op.p
    axes = tuple(range(x.ndim - p["k"], x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + ns.dtype.type(p["eps"]))
    y = y * ns.c(p["weight"]) if "weight" in p else y
    return y + ns.c(p["bias"]) if "bias" in p else y


row("layer_norm", _layer_norm_gen,
    twin("layer_norm", lambda op, ns, a: (
        (a[0], tuple(a[0].shape[a[0].ndim - op.p["k"]:]), _opt(ns, op.p, "weight"), _opt(ns, op.p, "bias")),
        {"eps": op.p["eps"]})),
    _layer_norm_np, weight=2, exempt=(ORT_F64_FLOAT32_ATTR, ORT_F32_CONDITIONED))


# ---- contractions and shapes ----------------------------------------------------------------

def _matmul_gen(g, vi, v):
    s = v.shape
    if not s:
        return None
    mag = max(abs(v.lo), abs(v.hi))
    for k in g.rng.permutation(len(g.prog.vals)).tolist():  # a partner value?
        w = g.prog.vals[k]
        out = g.matmul_shape(s, w.shape)
        if out is not None and g.i(0, 2) == 0:
            m = max(g.dval(s[-1], b) for b in g.sizes) * mag * max(abs(w.lo), abs(w.hi))
            return g.add("matmul", [vi, k], out, -m, m, form=g.choice(["op", "tp", "np"]))
    side = g.choice(["r", "l"])
    n = s[-1] if side == "r" else (s[-2] if len(s) >= 2 else s[0])
    if not isinstance(n, int):
        return None
    if side == "r":
        cshape = (n,) if g.coin() else (n, g.i(1, 3))
        out = g.matmul_shape(s, cshape)
    else:
        cshape = (n,) if g.coin() else (g.i(1, 3), n)
        out = g.matmul_shape(cshape, s)
    if out is None:
        return None
    return g.add("matmul", [vi], out, -n * mag, n * mag, c=g.const(cshape), side=side, form=g.choice(["op", "tp"]))


def _matmul_operands(op, ns, a):
    if "c" in op.p:
        return (a[0], ns.c(op.p["c"])) if op.p["side"] == "r" else (ns.c(op.p["c"]), a[0])
    return a[0], a[1]


row("matmul", _matmul_gen,
    lambda op, ns, a, cache: {"op": operator.matmul, "tp": tp.matmul, "np": np.matmul}[op.p["form"]](
        *_matmul_operands(op, ns, a)),
    lambda op, ns, a: np.matmul(*_matmul_operands(op, ns, a)),
    lambda op, ns, a: torch.matmul(*_matmul_operands(op, ns, a)), weight=3)


def _reshape_gen(g, vi, v):
    c, symf = 1, []  # the static count and the symbolic factors: B, T, and sums (T-1) kept whole
    for d in v.shape:
        p = g.poly(d)
        if g.is_sum(d):
            symf.append(d)
        else:
            (m, k), = p.items() if p else (((), 0),)
            c, symf = c * k, symf + list(m)
    facs, rest = [], c  # split the static count into factors, shuffle in the B's
    while rest > 1 and len(facs) < 3:
        f = g.choice([d for d in range(2, rest + 1) if rest % d == 0])
        facs.append(f)
        rest //= f
    if rest > 1:
        facs.append(rest)
    if g.coin():
        facs.insert(g.i(0, len(facs)), 1)
    dims = list(facs)
    for sym in symf:
        if dims and g.coin():
            j = g.i(0, len(dims) - 1)
            dims[j] = g.prod([dims[j], sym])
        else:
            dims.insert(g.i(0, len(dims)), sym)
    if c == 0:
        return None
    target = list(dims)
    if dims and g.coin():
        target[g.i(0, len(dims) - 1)] = -1
    return g.add("reshape", [vi], tuple(dims), v.lo, v.hi, shape=tuple(target), dims=tuple(dims),
                 form=g.choice(["method", "tp", "np", "star"]))


def _reshape_tp(op, ns, a, cache):
    x, s = a[0], tuple(ns.rename(d) for d in op.p["shape"])
    return {"method": lambda: x.reshape(s), "tp": lambda: tp.reshape(x, s), "np": lambda: np.reshape(x, s),
            "star": lambda: x.reshape(*s)}[op.p["form"]]()


row("reshape", _reshape_gen, _reshape_tp, lambda op, ns, a: np.reshape(a[0], ns.shape(op.p["dims"])),
    lambda op, ns, a: torch.reshape(a[0], ns.shape(op.p["dims"])), weight=2)


def _transpose_gen(g, vi, v):
    r = len(v.shape)
    form = g.choice(["T", "tp", "method", "np"])
    if form == "T":
        perm, p = tuple(reversed(range(r))), {"perm": None}
    else:
        perm = tuple(g.rng.permutation(r).tolist())
        p = {"perm": perm if g.coin() else tuple(a - r for a in perm)}
        if form == "method" and g.coin():
            form = "star"
    return g.add("transpose", [vi], tuple(v.shape[a] for a in perm), v.lo, v.hi, form=form, **p)


def _transpose_tp(op, ns, a, cache):
    x, perm = a[0], op.p["perm"]
    return {"T": lambda: x.T, "tp": lambda: tp.transpose(x, perm), "method": lambda: x.transpose(perm),
            "np": lambda: np.transpose(x, perm), "star": lambda: x.transpose(*perm)}[op.p["form"]]()


def _transpose_torch(op, ns, a):
    x = a[0]
    perm = op.p["perm"] if op.p["perm"] is not None else tuple(reversed(range(x.ndim)))
    return x.permute(*perm) if x.ndim else x


row("transpose", _transpose_gen, _transpose_tp, lambda op, ns, a: np.transpose(a[0], op.p["perm"]), _transpose_torch,
    weight=2)


def _expand_dims_gen(g, vi, v):
    r = len(v.shape)
    if g.coin():
        axis = g.i(-(r + 1), r)
        axes = (axis % (r + 1),)
    else:
        axes = tuple(sorted(set(g.i(0, r + 1) for _ in range(g.i(1, 2)))))
        if max(axes) >= r + len(axes):
            return None
        axis = axes
    it = iter(v.shape)
    return g.add("expand_dims", [vi], tuple(1 if k in axes else next(it) for k in range(r + len(axes))), v.lo, v.hi,
                 axis=axis)


def _expand_dims_torch(op, ns, a):
    x, axis = a[0], op.p["axis"]
    for ax in sorted(_norm_axis(axis, x.ndim + (1 if isinstance(axis, int) else len(axis)))):
        x = x.unsqueeze(ax)
    return x


row("expand_dims", _expand_dims_gen, lambda op, ns, a, cache: tp.expand_dims(a[0], op.p["axis"]),
    lambda op, ns, a: np.expand_dims(a[0], op.p["axis"]), _expand_dims_torch)


def _squeeze_gen(g, vi, v):
    ones = [k for k, d in enumerate(v.shape) if d == 1]
    if not ones:
        return None
    if g.coin():
        axis, axes = None, ones
    else:
        axes = sorted(set(g.choice(ones) for _ in range(g.i(1, 2))))
        axis = axes[0] if len(axes) == 1 else tuple(axes)
    return g.add("squeeze", [vi], tuple(d for k, d in enumerate(v.shape) if k not in axes), v.lo, v.hi,
                 axis=axis, axes=tuple(axes), form=g.choice(["tp", "np"]))


def _squeeze_torch(op, ns, a):
    x = a[0]
    for ax in sorted(op.p["axes"], reverse=True):
        x = x.squeeze(ax)
    return x


row("squeeze", _squeeze_gen, lambda op, ns, a, cache: (tp if op.p["form"] == "tp" else np).squeeze(a[0], op.p["axis"]),
    lambda op, ns, a: np.squeeze(a[0], op.p["axes"]), _squeeze_torch)


def _sym_slice(g, n):
    """A step-1 slice of a symbolic axis of size n with int bounds from the start or the end
    (x[1:], x[:-1], x[1:-1], x[:2]), valid at both bindings: (slice, its size, the sizes
    that must not be negative: the start and the room past the stop); None when none fits."""
    for _ in range(3):
        start, stop = g.choice([None, 1, 2, -1, -2]), g.choice([None, 1, 2, 3, -1, -2])
        if start is None and stop is None:
            continue
        # where the bounds land: an int from the start, n + k from the end (not clamped)
        a = 0 if start is None else start if start >= 0 else g.dsum([n, start])
        e = n if stop is None else stop if stop >= 0 else g.dsum([n, stop])
        size, room = g.dsum([e, a], [1, -1]), g.dsum([n, e], [1, -1])
        if size != 0 and g.valid([a, size, room]):  # (static dims are >= 1, as elsewhere)
            return slice(start, stop, g.choice([None, 1])), size, (a, room)
    return None


def _getitem_gen(g, vi, v):
    r = len(v.shape)
    index, shape, need = [], [], []
    n_real = g.i(0, r)
    for k in range(n_real):
        d = v.shape[k]
        if g.i(0, 4) == 0:
            index.append(None)
            shape.append(1)
        sym = _sym_slice(g, d) if not isinstance(d, int) and g.coin() else None
        if sym is not None:
            index.append(sym[0])
            shape.append(sym[1])
            need.extend(sym[2])
            continue
        if not isinstance(d, int) or d == 0:
            index.append(slice(None))
            shape.append(d)
            continue
        what = g.choice(["full", "slice", "int"])
        if what == "int":
            index.append(g.i(-d, d - 1))
        elif what == "full":
            index.append(slice(None))
            shape.append(d)
        else:
            sl = slice(g.choice([None, g.i(-d, d)]), g.choice([None, g.i(-d - 1, d + 1)]),
                       g.choice([None, 1, 2, -1, -2, 3]))
            n = len(range(*sl.indices(d)))
            if n == 0:
                return None
            index.append(sl)
            shape.append(n)
    ell = n_real < r and g.coin()
    if ell:
        index.append(Ellipsis)
        shape.extend(v.shape[n_real:])
    if g.i(0, 4) == 0:  # after an ellipsis: last; without one: before the implicit ':'s
        index.append(None)
        shape.append(1)
    if not ell:
        shape.extend(v.shape[n_real:])
    idx = index[0] if len(index) == 1 and g.coin() else tuple(index)
    return g.add("getitem", [vi], tuple(shape), v.lo, v.hi, index=idx, need=tuple(need))


def _getitem_torch(op, ns, a):
    """torch has no negative steps: one axis at a time, slices as index_select."""
    x = a[0]
    idx = op.p["index"] if isinstance(op.p["index"], tuple) else (op.p["index"],)
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
            y = torch.index_select(y, pos, torch.tensor(list(range(*i.indices(y.shape[pos]))), dtype=torch.long))
            pos += 1
        else:
            y = y.select(pos, i)
    return y


row("getitem", _getitem_gen, lambda op, ns, a, cache: a[0][op.p["index"]], lambda op, ns, a: a[0][op.p["index"]],
    _getitem_torch, weight=2)


def _sym_slice_gen(g, vi, v):
    """x[:, 1:], x[..., :-1, :]: one symbolic axis sliced (getitem draws these too, rarely)."""
    axes = [k for k, d in enumerate(v.shape) if not isinstance(d, int)]
    if not axes:
        return None
    k = g.choice(axes)
    sym = _sym_slice(g, v.shape[k])
    if sym is None:
        return None
    r = len(v.shape)
    index = (slice(None),) * k + (sym[0],) if g.coin() else (Ellipsis, sym[0]) + (slice(None),) * (r - k - 1)
    return g.add("sym_slice", [vi], v.shape[:k] + (sym[1],) + v.shape[k + 1:], v.lo, v.hi, index=index,
                 need=sym[2])


row("sym_slice", _sym_slice_gen, lambda op, ns, a, cache: a[0][op.p["index"]], lambda op, ns, a: a[0][op.p["index"]],
    _getitem_torch, weight=3)


def _broadcast_to_gen(g, vi, v):
    target = [g.choice([2, 3]) if d == 1 and g.coin() else d for d in v.shape]
    if len(target) < 4 and g.coin():
        target.insert(0, g.choice([1, 2, 3]))
    return g.add("broadcast_to", [vi], tuple(target), v.lo, v.hi, shape=tuple(target), form=g.choice(["tp", "np"]))


row("broadcast_to", _broadcast_to_gen,
    lambda op, ns, a, cache: (tp if op.p["form"] == "tp" else np).broadcast_to(
        a[0], tuple(ns.rename(d) for d in op.p["shape"])),
    lambda op, ns, a: np.broadcast_to(a[0], ns.shape(op.p["shape"])),
    lambda op, ns, a: torch.broadcast_to(a[0], ns.shape(op.p["shape"])))


def _concatenate_gen(g, vi, v, symbolic=False):
    """Along any axis, symbolic ones too ([B,T] and [B,T] -> [B,2*T]; [B,T] and [B,2] ->
    [B,T+2]), with values of the same shape off that axis or constants; a constant with a
    symbolic dim off the axis is broadcast to it ([1,2] to [B,2])."""
    r = len(v.shape)
    axes = [k for k in range(r) if not symbolic or not isinstance(v.shape[k], int)]
    if not axes:
        return None
    a = g.choice(axes)
    args, cs, sizes, lo, hi = [vi], [], [v.shape[a]], v.lo, v.hi
    for _ in range(g.i(1, 2)):
        same = [k for k, w in enumerate(g.prog.vals) if len(w.shape) == r
                and all(w.shape[j] == v.shape[j] for j in range(r) if j != a)]
        if same and g.coin():
            k = g.choice(same)
            args.append(k)
            sizes.append(g.prog.vals[k].shape[a])
            lo, hi = min(lo, g.prog.vals[k].lo), max(hi, g.prog.vals[k].hi)
        else:
            shape = list(v.shape)
            shape[a] = g.i(1, 3)
            cs.append((len(args) + len(cs), g.const(g.static(shape)), tuple(shape)))
            sizes.append(shape[a])
            lo, hi = min(lo, -1), max(hi, 1)
    shape = list(v.shape)
    shape[a] = g.dsum(sizes)
    return g.add("concatenate", args, tuple(shape), lo, hi, axis=a - r if g.coin() else a, consts=tuple(cs),
                 form=g.choice(["tp", "np"]))


def _parts(op, ns, a, bcast):
    """The operands in order: values and constants (broadcast where the value's shape has a
    symbolic dim off the axis, by `bcast(array, dims)` in tapeir, numpy or torch)."""
    xs = list(a)
    for pos, cst, dims in op.p["consts"]:
        c = ns.c(cst)
        xs.insert(pos, c if all(isinstance(d, int) for d in dims) else bcast(c, dims))
    return xs


_CONCAT = (lambda op, ns, a, cache: (tp if op.p["form"] == "tp" else np).concatenate(
    _parts(op, ns, a, lambda c, dims: tp.broadcast_to(c, tuple(ns.rename(d) for d in dims))), axis=op.p["axis"]),
    lambda op, ns, a: np.concatenate(_parts(op, ns, a, lambda c, dims: np.broadcast_to(c, ns.shape(dims))),
                                     axis=op.p["axis"]),
    lambda op, ns, a: torch.cat(_parts(op, ns, a, lambda c, dims: torch.broadcast_to(c, ns.shape(dims))),
                                dim=op.p["axis"]))
row("concatenate", _concatenate_gen, *_CONCAT)
row("sym_concat", lambda g, vi, v: _concatenate_gen(g, vi, v, symbolic=True), *_CONCAT, weight=2)


def _pad_gen(g, vi, v):
    if not v.shape:
        return None
    widths = tuple((g.i(0, 2), g.i(0, 1)) for d in v.shape)
    val = g.choice([0.0, 1.5, -0.5])
    return g.add("pad", [vi], tuple(g.dsum([d, w[0], w[1]]) for d, w in zip(v.shape, widths)),
                 min(v.lo, val), max(v.hi, val), widths=widths, value=val, form=g.choice(["tp", "np"]))


def _pad_torch(op, ns, a):
    pads = [w for lo_hi in reversed(op.p["widths"]) for w in lo_hi]
    return F.pad(a[0], pads, value=op.p["value"]) if a[0].ndim else a[0]


row("pad", _pad_gen,
    lambda op, ns, a, cache: (tp if op.p["form"] == "tp" else np).pad(a[0], op.p["widths"],
                                                                       constant_values=op.p["value"]),
    lambda op, ns, a: np.pad(a[0], op.p["widths"], constant_values=op.p["value"]), _pad_torch)


# ---- losses ---------------------------------------------------------------------------------

def _loss_gen(kind, iv):
    def gen(g, vi, v):
        if not all(isinstance(d, int) for d in v.shape):
            return None
        red = g.choice(["mean", "sum", "none"])
        lo, hi = iv(v.lo, v.hi)
        n = max(1, int(np.prod(v.shape)))
        if red == "sum":
            lo, hi = lo * n, hi * n
        t = g.const(v.shape, 0.0, 1.0) if kind == "bce" else g.const(v.shape)
        return g.add(kind, [vi], v.shape if red == "none" else (), lo, hi, target=t, reduction=red)
    return gen


def _pointwise_loss_np(kind):
    def ev(op, ns, a):
        x, t = a[0], ns.c(op.p["target"])
        if kind == "l1":
            ns.near(x - t)
        e = {"mse": lambda: (x - t) ** 2, "l1": lambda: np.abs(x - t),
             "bce": lambda: np.logaddexp(ns.dtype.type(0), x) - x * t}[kind]()
        return {"mean": np.mean, "sum": np.sum, "none": lambda e: e}[op.p["reduction"]](e)
    return ev


for _kind, _fn, _iv in (
        ("mse", "mse_loss", lambda lo, hi: (0.0, (max(abs(lo), abs(hi)) + 1) ** 2)),
        ("l1", "l1_loss", lambda lo, hi: (0.0, max(abs(lo), abs(hi)) + 1)),
        ("bce", "binary_cross_entropy_with_logits", lambda lo, hi: (-1e-6, max(abs(lo), abs(hi)) * 2 + 1))):
    row(_kind, _loss_gen(_kind, _iv), twin(_fn, lambda op, ns, a: (
        (a[0], ns.c(op.p["target"])), {"reduction": op.p["reduction"]})), _pointwise_loss_np(_kind))


def _class_loss_gen(kind):
    def gen(g, vi, v):
        s = v.shape
        if not s or not all(isinstance(d, int) for d in s) or s[1 if len(s) > 1 else 0] == 0:
            return None
        c = s[1] if len(s) > 1 else s[0]
        lshape = s[:1] + s[2:] if len(s) > 1 else ()
        labels = g.rng.integers(0, c, size=lshape).astype(np.int64)
        ign = -100
        if labels.size > 1 and g.coin():
            ign = g.choice([-100, 0, 1])
            labels.reshape(-1)[0] = ign if ign != 0 else labels.reshape(-1)[0]
            if np.all(labels == ign):
                return None
        red = g.choice(["mean", "sum", "none"])
        if kind == "nll":
            span = max(abs(v.lo), abs(v.hi))
            lo, hi = -span, span
        else:
            lo, hi = 0.0, (v.hi - v.lo) + math.log(c) + 1e-9
        if red == "sum":
            lo, hi = lo * max(1, labels.size), hi * max(1, labels.size)
        return g.add(kind, [vi], lshape if red == "none" else (), lo, hi, labels=labels, reduction=red,
                     ignore_index=ign)
    return gen


def _class_loss_np(kind):
    def ev(op, ns, a):
        x, p = a[0], op.p
        axis = 1 if x.ndim > 1 else 0
        lp = x
        if kind == "xent":
            s = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
            lp = s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))
        lab, lpm = p["labels"], np.moveaxis(lp, axis, -1)
        keep = lab != p["ignore_index"]
        picked = np.zeros(lab.shape, ns.dtype)
        for idx in np.ndindex(*lab.shape):
            if keep[idx]:
                picked[idx] = -lpm[idx + (lab[idx],)]
        return {"none": lambda: picked, "sum": lambda: picked.sum(), "mean": lambda: picked.sum() / keep.sum()}[
            p["reduction"]]()
    return ev


for _kind, _fn in (("xent", "cross_entropy"), ("nll", "nll_loss")):
    row(_kind, _class_loss_gen(_kind),
        lambda op, ns, a, cache, f=_fn: getattr(tp, f)(a[0], op.p["labels"], reduction=op.p["reduction"],
                                                       ignore_index=op.p["ignore_index"]),
        _class_loss_np(_kind),
        lambda op, ns, a, f=_fn: getattr(F, f)(a[0].contiguous(), torch.as_tensor(op.p["labels"]),
                                               reduction=op.p["reduction"], ignore_index=op.p["ignore_index"]))


# ---- convolutions and pooling ---------------------------------------------------------------

def _conv2d_gen(g, vi, v):
    if not g.nchw(v):
        return None
    n, c, h, w = v.shape
    groups = g.choice([1, c]) if c > 1 else 1
    o = groups * g.i(1, 2)
    kh, kw = g.i(1, min(3, h + 2)), g.i(1, min(3, w + 2))
    stride, pad, dil = g.choice([1, 2, (1, 2)]), g.choice([0, 1, (1, 0)]), g.choice([1, 1, 2])
    oh = (h + 2 * _pair(pad)[0] - _pair(dil)[0] * (kh - 1) - 1) // _pair(stride)[0] + 1
    ow = (w + 2 * _pair(pad)[1] - _pair(dil)[1] * (kw - 1) - 1) // _pair(stride)[1] + 1
    if oh <= 0 or ow <= 0:
        return None
    p = dict(weight=g.const((o, c // groups, kh, kw)), stride=stride, padding=pad, dilation=dil, groups=groups)
    m = max(abs(v.lo), abs(v.hi)) * (c // groups) * kh * kw
    if g.coin():
        p["bias"] = g.const((o,))
        m += 1
    return g.add("conv2d", [vi], (n, o, oh, ow), -m, m, **p)


def _conv2d_np(op, ns, a):
    p, w = op.p, ns.c(op.p["weight"])
    o, cg, kh, kw = w.shape
    win = _windows(a[0], (kh, kw), _pair(p["stride"]), _pair(p["padding"]), _pair(p["dilation"]), 0)
    out = np.zeros((win.shape[0], o) + win.shape[2:4], ns.dtype)
    og = o // p["groups"]
    for oc in range(o):
        gi = oc // og
        out[:, oc] = np.einsum("nchwij,cij->nhw", win[:, gi * cg:(gi + 1) * cg], w[oc])
    return out + ns.c(p["bias"]).reshape(1, o, 1, 1) if "bias" in p else out


row("conv2d", _conv2d_gen, twin("conv2d", lambda op, ns, a: (
    (a[0], ns.c(op.p["weight"]), _opt(ns, op.p, "bias")), {k: op.p[k] for k in ("stride", "padding", "dilation",
                                                                               "groups")})),
    _conv2d_np, weight=2, nchw=True)


def _conv_transpose2d_gen(g, vi, v):
    if not g.nchw(v):
        return None
    n, c, h, w = v.shape
    groups = g.choice([1, c]) if c > 1 else 1
    kh, kw = g.i(1, 3), g.i(1, 3)
    stride, dil = g.choice([1, 2, (2, 1)]), g.choice([1, 1, 2])
    pad = g.choice([0, 1, (0, 1)])
    opad = tuple(g.i(0, max(_pair(stride)[i], _pair(dil)[i]) - 1) for i in range(2))
    out = [(d - 1) * _pair(stride)[i] - 2 * _pair(pad)[i] + _pair(dil)[i] * (k - 1) + opad[i] + 1
           for i, (d, k) in enumerate(((h, kh), (w, kw)))]
    if min(out) <= 0:
        return None
    co = g.i(1, 2)
    m = max(abs(v.lo), abs(v.hi)) * c * kh * kw
    return g.add("conv_transpose2d", [vi], (n, co * groups, out[0], out[1]), -m, m, weight=g.const((c, co, kh, kw)),
                 stride=stride, padding=pad, output_padding=opad, dilation=dil, groups=groups)


def _conv_transpose2d_np(op, ns, a):
    """The definition: scatter each input pixel times the kernel."""
    p, x, w = op.p, a[0], ns.c(op.p["weight"])
    c, co, kh, kw = w.shape
    g = p["groups"]
    (sh, sw), (ph, pw), (dh, dw) = _pair(p["stride"]), _pair(p["padding"]), _pair(p["dilation"])
    oph, opw = p["output_padding"]
    n, _, h, wd = x.shape
    full = np.zeros((n, co * g, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
    cg = c // g
    for ci in range(c):
        gi = ci // cg
        for i, j, u, v in np.ndindex(h, wd, kh, kw):
            full[:, gi * co:(gi + 1) * co, i * sh + u * dh, j * sw + v * dw] += x[:, ci, i, j][:, None] * w[ci, :, u, v]
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    return full[:, :, ph:ph + oh, pw:pw + ow]


row("conv_transpose2d", _conv_transpose2d_gen, twin("conv_transpose2d", lambda op, ns, a: (
    (a[0], ns.c(op.p["weight"])), {k: op.p[k] for k in ("stride", "padding", "output_padding", "groups", "dilation")})),
    _conv_transpose2d_np)


def _pool_gen(kind):
    def gen(g, vi, v):
        if not g.nchw(v) or (g.no_pool and kind == "max_pool2d"):
            return None
        n, c, h, w = v.shape
        k = g.i(1, min(3, h, w)) if min(h, w) >= 1 else 1
        stride = g.choice([None, 1, 2])
        pad = g.choice([0, 0, 1]) if k >= 2 else 0
        s = stride or k
        oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        if oh <= 0 or ow <= 0:
            return None
        p = dict(k=k, stride=stride, padding=pad)
        if kind == "max_pool2d" and g.coin():
            p["dilation"] = 2
            oh, ow = (h + 2 * pad - 2 * (k - 1) - 1) // s + 1, (w + 2 * pad - 2 * (k - 1) - 1) // s + 1
            if oh <= 0 or ow <= 0:
                return None
        lo, hi = v.lo, v.hi
        if kind == "avg_pool2d":
            p["count_include_pad"] = g.coin()
            lo, hi = min(lo, 0), max(hi, 0)
        return g.add(kind, [vi], (n, c, oh, ow), lo, hi, **p)
    return gen


def _max_pool_np(op, ns, a):
    p = op.p
    kk = (p["k"], p["k"])
    win = _windows(a[0], kk, _pair(p["stride"] or p["k"]), _pair(p["padding"]), _pair(p.get("dilation", 1)), -np.inf)
    flat = win.reshape(win.shape[:4] + (kk[0] * kk[1],))
    if flat.shape[-1] > 1:
        srt = np.sort(flat, axis=-1)
        gap = srt[..., -1] - srt[..., -2]
        ns.near(gap)
        ns.pool_tie |= bool(np.any(gap == 0))
    return flat.max(axis=-1)


def _avg_pool_np(op, ns, a):
    p, x = op.p, a[0]
    kk, s, pad = (p["k"], p["k"]), _pair(p["stride"] or p["k"]), _pair(p["padding"])
    tot = _windows(x, kk, s, pad, (1, 1), 0).sum(axis=(4, 5))
    if p["count_include_pad"]:
        return tot / (kk[0] * kk[1])
    return tot / _windows(np.ones((1, 1) + x.shape[2:], ns.dtype), kk, s, pad, (1, 1), 0).sum(axis=(4, 5))


row("max_pool2d", _pool_gen("max_pool2d"), twin("max_pool2d", lambda op, ns, a: (
    (a[0], op.p["k"], op.p["stride"], op.p["padding"], op.p.get("dilation", 1)), {})),
    _max_pool_np, weight=2, nchw=True, exempt=(TORCH_TIE_RULE,))
row("avg_pool2d", _pool_gen("avg_pool2d"), twin("avg_pool2d", lambda op, ns, a: (
    (a[0], op.p["k"], op.p["stride"], op.p["padding"]), {"count_include_pad": op.p["count_include_pad"]})),
    _avg_pool_np, weight=2, nchw=True)


# ---- sub-programs: tp.call and tp.call(tp.grad(...)) ------------------------------------------
# (their evaluation recurses into the harness's evaluators, which `bind` provides)

EVAL = {}  # "tp", "np", "torch" -> the harness's program evaluators; "tpns", "torchns" -> namespaces


def _call_gen(g, vi, v):
    # an earlier call's sub-program again (inlined twice: CSE) when one fits, else a new one
    again = [sb for sb in g.subs if sb.inputs[0].shape == v.shape and sb.inputs[0].lo <= v.lo
             and v.hi <= sb.inputs[0].hi]
    sub = g.choice(again) if again and g.coin() else g.sub(v)
    g.subs.append(sub)
    o = sub.vals[sub.out]
    return g.add("call", [vi], o.shape, o.lo, o.hi, sub=sub, renamed=_solvable(g, v.shape) and g.coin())


def _solvable(g, shape):
    """Whether tp.call can bind renamed symbols from the call's dims: a dim binds its one
    unbound symbol when it is linear in it (T-1, 2*B, B*T once B is known, not T*T)."""
    bound, dims = set(), [d for d in shape if isinstance(d, str)]
    for _ in dims:
        for d in dims:
            free = set(g.syms(d)) - bound
            if len(free) == 1 and all(m.count(x) <= 1 for m in g.poly(d) for x in free):
                bound |= free
    return all(set(g.syms(d)) <= bound for d in dims)


def _call_tp(op, ns, a, cache):
    """The sub-program, traced with its own symbols (N, M for B, T) when renamed."""
    sub, key = op.p["sub"], (id(op.p["sub"]), ns.dtype)
    if key not in cache:
        sns = EVAL["tpns"](ns.dtype, op.p["renamed"])
        spec = tp.Spec(tuple(sns.rename(d) for d in sub.inputs[0].shape), ns.dtype)
        cache[key] = (tp.trace(lambda z: EVAL["tp"](sub, sns, [z], cache)[sub.out], spec, name="sub"), sub)
    return tp.call(cache[key][0], a[0])


row("call", _call_gen, _call_tp, lambda op, ns, a: EVAL["np"](op.p["sub"], ns, [a[0]])[op.p["sub"].out],
    lambda op, ns, a: EVAL["torch"](op.p["sub"], ns, [a[0]])[op.p["sub"].out], weight=2, top_level=True)


def _callgrad_gen(g, vi, v):
    """tanh(grad <sub(x), w>): tp.call of tp.grad of a sub-program, so every gradient of
    the program is a second derivative of the sub-program (tanh keeps it bounded)."""
    sub = g.sub(v, no_pool=True)  # torch (the reference) splits max_pool2d ties otherwise
    return g.add("callgrad", [vi], v.shape, -1.0, 1.0, sub=sub, w=g.const(g.static(sub.vals[sub.out].shape)))


def _callgrad_tp(op, ns, a, cache):
    sub, key = op.p["sub"], (id(op.p["sub"]), ns.dtype, "grad")
    if key not in cache:
        sg = tp.trace(lambda z: (EVAL["tp"](sub, ns, [z], cache)[sub.out] * ns.c(op.p["w"])).sum(),
                      tp.Spec(sub.inputs[0].shape, ns.dtype), name="sub")
        cache[key] = (tp.grad(sg), sub)
    return tp.tanh(tp.call(cache[key][0], a[0]))


def torch_np(t, shape):
    """A gradient from torch as a float64 array: None, or a ZeroTensor (a zero gradient
    torch does not materialize; .numpy(force=True) on one crashed torch 2.13), is zeros."""
    if t is None or (hasattr(t, "_is_zerotensor") and t._is_zerotensor()):
        return np.zeros(shape)
    return t.detach().numpy()


def _callgrad_np(op, ns, a):
    """The gradient from torch autograd (independent of tapeir); eval_np for the kinks. A
    kink of the sub-program (a max's runner-up) is a jump of its gradient: a discrete
    decision for the callgrad's value, which float32 rounding may take otherwise (erf of
    large values ties at 1.0 in float32, not in float64)."""
    sub, x = op.p["sub"], a[0]
    kink = ns.kink
    ns.kink = math.inf
    EVAL["np"](sub, ns, [x])
    ns.disc, ns.kink = min(ns.disc, ns.kink), min(ns.kink, kink)
    xt = torch.tensor(np.array(x, np.float64, order="C", copy=True), requires_grad=True)  # fresh strides
    out = (EVAL["torch"](sub, EVAL["torchns"](ns.b), [xt])[sub.out] * torch.as_tensor(op.p["w"])).sum()
    g = torch.autograd.grad(out, xt, allow_unused=True)[0] if out.requires_grad else None
    return np.tanh(torch_np(g, x.shape))


def _callgrad_torch(op, ns, a):
    """Differentiable (create_graph): the outer gradient is a second derivative."""
    sub, x = op.p["sub"], a[0]
    xx = x if x.requires_grad else x.detach().requires_grad_()
    out = (EVAL["torch"](sub, ns, [xx])[sub.out] * ns.c(op.p["w"])).sum()
    g = torch.autograd.grad(out, xx, create_graph=True, allow_unused=True)[0] if out.requires_grad else None
    return torch.tanh(torch.zeros_like(x) if g is None else g)


row("callgrad", _callgrad_gen, _callgrad_tp, _callgrad_np, _callgrad_torch, weight=2, top_level=True,
    needs_torch=True, exempt=(ORT_SPLIT_TIES, TORCH_THIRD_DERIVATIVE))


# ---- issue 11's ops: scans, masks, index picking, stacking --------------------------------

def _cumsum_gen(g, vi, v):
    axes = [a for a, d in enumerate(v.shape) if isinstance(d, int) and d > 0]
    if not axes:
        return None
    a = g.choice(axes)
    n = v.shape[a]
    lo, hi = min(v.lo * n, v.lo, 0.0), max(v.hi * n, v.hi, 0.0)
    return g.add("cumsum", [vi], v.shape, lo, hi, axis=a, exclusive=g.coin(), reverse=g.coin())


def _cumsum_np(op, ns, a):
    x, ax = a[0], op.p["axis"]
    x = np.flip(x, ax) if op.p["reverse"] else x
    y = np.cumsum(x, axis=ax) - (x if op.p["exclusive"] else 0)
    return np.flip(y, ax) if op.p["reverse"] else y


def _cumsum_torch(op, ns, a):
    x, ax = a[0], op.p["axis"]
    x = torch.flip(x, (ax,)) if op.p["reverse"] else x
    y = torch.cumsum(x, ax) - (x if op.p["exclusive"] else 0)
    return torch.flip(y, (ax,)) if op.p["reverse"] else y


row("cumsum", _cumsum_gen,
    lambda op, ns, a, cache: tp.cumsum(a[0], op.p["axis"], exclusive=op.p["exclusive"], reverse=op.p["reverse"]),
    _cumsum_np, _cumsum_torch)


def _trilu_gen(g, vi, v):
    if len(v.shape) < 2:
        return None
    return g.add("trilu", [vi], v.shape, min(v.lo, 0.0), max(v.hi, 0.0), upper=g.coin(), k=g.i(-1, 1))


row("trilu", _trilu_gen,
    lambda op, ns, a, cache: (tp.triu if op.p["upper"] else tp.tril)(a[0], op.p["k"]),
    lambda op, ns, a: (np.triu if op.p["upper"] else np.tril)(a[0], op.p["k"]),
    lambda op, ns, a: (torch.triu if op.p["upper"] else torch.tril)(a[0], op.p["k"]))


def _take_gen(g, vi, v):
    axes = [a for a, d in enumerate(v.shape) if isinstance(d, int) and d > 0]
    if not axes:
        return None
    a = g.choice(axes)
    n = v.shape[a]
    idx = tuple(g.i(-n, n - 1) for _ in range(g.i(1, 3)))  # repeats and negative indices
    return g.add("take", [vi], v.shape[:a] + (len(idx),) + v.shape[a + 1:], v.lo, v.hi, axis=a, idx=idx)


row("take", _take_gen,
    lambda op, ns, a, cache: tp.take(a[0], np.array(op.p["idx"]), axis=op.p["axis"]),
    lambda op, ns, a: np.take(a[0], op.p["idx"], axis=op.p["axis"]),
    lambda op, ns, a: torch.index_select(a[0], op.p["axis"], torch.as_tensor(
        [i % a[0].shape[op.p["axis"]] for i in op.p["idx"]])),
    min_opset=16)  # its gradient, scatter_add, is ScatterND with reduction="add" (opset 16)


def _stack_gen(g, vi, v):
    same = [k for k, w in enumerate(g.prog.vals) if w.shape == v.shape]
    k = g.choice(same)
    ax = g.i(0, len(v.shape))
    shape = v.shape[:ax] + (2,) + v.shape[ax:]
    return g.add("stack", [vi, k], shape, min(v.lo, g.prog.vals[k].lo), max(v.hi, g.prog.vals[k].hi), axis=ax)


row("stack", _stack_gen, lambda op, ns, a, cache: tp.stack(a, axis=op.p["axis"]),
    lambda op, ns, a: np.stack(a, axis=op.p["axis"]), lambda op, ns, a: torch.stack(a, dim=op.p["axis"]))


KINDS = tuple(name for name, r in ROWS.items() if torch is not None or not r.needs_torch for _ in range(r.weight))
