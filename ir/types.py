"""TensorType: a dtype and a shape whose dims are ints or symbolic.

A symbolic dim is a polynomial in symbol names with integer coefficients, written in one
canonical form: a name (`"B"`), a product (`"4*B"`, `"B*T"`: what reshaping a symbolic shape
produces), or a sum of such terms (`"T+1"`, `"T-1"`, `"2*T"`, `"B*T+B"`: what slicing,
padding and concatenating along a symbolic axis produce). Terms are ordered by degree,
then by name, with the constant last. Symbols are bound to sizes when a graph runs; a dim
must then be >= 0 (`T-1` needs T >= 1: checked where the graph runs). Two dims are equal
only when they are the same int or the same polynomial, so `T+T` and `2*T` are one dim,
while `T` and `S` are two even if they happen to be bound to the same size.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

from .dtypes import dtype_of
from .errors import TapeirError

DimT = Union[int, str]  # an int size, or a symbolic dim such as "B", "4*B" or "T+1"
Poly = dict  # monomial (sorted tuple of symbols, repeats for powers) -> nonzero int coefficient

_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[0-9]+\Z")  # ASCII only: str.isdigit() also accepts "²" and "٣"
_TERMS = re.compile(r"\s*([+-]?)\s*([^+-]+)")  # a sum's terms with their signs


MAX_DIM = 2 ** 63 - 1  # dims are int64 in ONNX and intp in numpy
_MAX_DIM_HINT = "dims are int64 sizes (as in ONNX and numpy): at most 9223372036854775807"
_DIM_HINT = "a symbolic dim is a name like 'B', a product like '4*B' or a sum like 'T+1' or 'T-1'"


def check_dim(d) -> DimT:
    """Validate one dim: a non-negative int or a polynomial in symbols, made canonical.

    >>> check_dim("1+T"), check_dim("T+T"), check_dim("B*4"), check_dim("T-T+3")
    ('T+1', '2*T', '4*B', 3)
    """
    if isinstance(d, bool):
        raise TapeirError(f"dim {d!r} is a bool", hint="dims are ints or symbol names like 'B'")
    if isinstance(d, int) or (hasattr(d, "__index__") and not isinstance(d, str)):
        d = int(d)
        if d < 0:
            raise TapeirError(f"negative dim {d}", hint="dims are sizes, >= 0")
        if d > MAX_DIM:
            raise TapeirError(f"dim {d} is larger than 2**63 - 1", hint=_MAX_DIM_HINT)
        return d
    if isinstance(d, str):
        p = poly(d)
        if any(abs(c) > MAX_DIM for c in p.values()):
            raise TapeirError(f"dim {d!r} has a coefficient larger than 2**63 - 1", hint=_MAX_DIM_HINT)
        out = from_poly(p)
        if isinstance(out, int) and out < 0:
            raise TapeirError(f"dim {d!r} is the negative size {out}", hint="dims are sizes, >= 0")
        return out
    raise TapeirError(f"dim {d!r} is neither an int nor a symbol name",
                      hint="use ints for known sizes and names like 'B' for symbolic ones")


_POLY_CACHE: dict = {}


def poly(d: DimT) -> Poly:
    """A dim as {monomial: coefficient}: `"B*T+2*B-1"` -> {("B","T"): 1, ("B",): 2, (): -1}.
    The result is shared: do not modify it."""
    if isinstance(d, int):
        return {(): d} if d else {}
    hit = _POLY_CACHE.get(d)
    if hit is not None:
        return hit
    out: dict = {}
    pos = 0
    text = d.strip()
    if not text:
        raise TapeirError(f"bad symbolic dim {d!r}", hint=_DIM_HINT)
    for m in _TERMS.finditer(text):
        first = m.start() == 0  # only the first term may go without a sign, and it takes no '+'
        if m.start() != pos or (m.group(1) == "+" if first else not m.group(1)):
            raise TapeirError(f"bad symbolic dim {d!r}", hint=_DIM_HINT)
        pos = m.end()
        coef, syms = _term(m.group(2), d)
        if m.group(1) == "-":
            coef = -coef
        if coef:
            out[syms] = out.get(syms, 0) + coef
            if not out[syms]:
                del out[syms]
    if pos != len(text):
        raise TapeirError(f"bad symbolic dim {d!r}", hint=_DIM_HINT)
    if len(_POLY_CACHE) < 65536:
        _POLY_CACHE[d] = out
    return out


def _term(text: str, d: str) -> tuple[int, tuple[str, ...]]:
    coef, syms = 1, []
    for part in text.split("*"):
        part = part.strip()
        if _INT.match(part):
            coef *= int(part)
        elif _SYMBOL.match(part):
            syms.append(part)
        else:
            raise TapeirError(f"bad symbolic dim {d!r}", hint=_DIM_HINT)
    return coef, tuple(sorted(syms))


def _mono_text(coef: int, syms: tuple[str, ...]) -> str:
    body = "*".join(syms)
    return body if coef == 1 else f"{coef}*{body}"


def from_poly(p: Poly) -> DimT:
    """The canonical dim of a polynomial: an int when it has no symbols."""
    terms = {m: c for m, c in p.items() if c}
    if not terms.keys() - {()}:
        return terms.get((), 0)
    text = ""
    for m in sorted((m for m in terms if m), key=lambda m: (-len(m), m)):
        c = terms[m]
        sign = "-" if c < 0 else ("+" if text else "")
        text += sign + _mono_text(abs(c), m)
    c = terms.get((), 0)
    if c:
        text += f"{'-' if c < 0 else '+'}{abs(c)}"
    return text


def is_monomial(d: DimT) -> bool:
    """True for an int or a product of symbols and an int (no sum)."""
    return isinstance(d, int) or len(poly(d)) <= 1


def factors(d: DimT) -> tuple[int, tuple[str, ...]]:
    """`"4*B*T"` -> (4, ("B", "T")); `12` -> (12, ()). Products only (see is_monomial)."""
    if isinstance(d, int):
        return d, ()
    p = poly(d)
    if len(p) > 1:
        raise TapeirError(f"dim {d!r} is a sum, not a product", hint="use poly() for sums")
    if not p:
        return 0, ()
    (syms, coef), = p.items()
    return coef, syms


def from_factors(coef: int, syms: tuple[str, ...]) -> DimT:
    return from_poly({tuple(sorted(syms)): coef})


def _mul(p: Poly, q: Poly) -> Poly:
    out: dict = {}
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            m = tuple(sorted(m1 + m2))
            out[m] = out.get(m, 0) + c1 * c2
    return out


def _add(p: Poly, q: Poly, sign: int = 1) -> Poly:
    out = dict(p)
    for m, c in q.items():
        out[m] = out.get(m, 0) + sign * c
    return out


def dim_product(dims) -> DimT:
    """The product of dims: `dim_product(["B", 4, "T+1"])` is `"4*B*T+4*B"`."""
    p: Poly = {(): 1}
    for d in dims:
        p = _mul(p, poly(d))
    return from_poly(p)


def dim_sum(dims) -> DimT:
    """The sum of dims: `dim_sum(["T", 1, "T"])` is `"2*T+1"`."""
    p: Poly = {}
    for d in dims:
        p = _add(p, poly(d))
    return from_poly(p)


def dim_sub(a: DimT, b: DimT) -> DimT:
    """a - b, which may be a negative int (a caller checks when it is a size)."""
    return from_poly(_add(poly(a), poly(b), -1))


def dim_divide(num: DimT, den: DimT) -> DimT | None:
    """num / den as a dim, or None when it is not a whole dim (a polynomial quotient with
    integer coefficients and no remainder)."""
    n, q = poly(num), poly(den)
    if not q:
        return None
    if not n:
        return 0
    # exact multivariate division: take the leading term (graded order, which a product
    # respects) of what is left, divide it by den's, subtract; any remainder means None
    names = sorted({x for m in list(n) + list(q) for x in m})

    def key(m):
        return (len(m), tuple(m.count(x) for x in names))
    dm = max(q, key=key)
    dc = q[dm]
    rest, out = {m: c for m, c in n.items() if c}, {}
    while rest:
        lm = max(rest, key=key)
        left = list(lm)
        for x in dm:
            if x not in left:
                return None
            left.remove(x)
        if rest[lm] % dc:
            return None
        t = {tuple(left): rest[lm] // dc}
        out = _add(out, t)
        rest = {m: c for m, c in _add(rest, _mul(t, q), -1).items() if c}
    return from_poly(out)


def substitute(d: DimT, subst: dict) -> DimT:
    """d with each symbol replaced by its value in subst (an int or another dim)."""
    if isinstance(d, int):
        return d
    p = poly(d)
    if not any(s in subst for m in p for s in m):
        return d
    out: Poly = {}
    for m, c in p.items():
        term: Poly = {(): c}
        for s in m:
            term = _mul(term, poly(subst[s]) if s in subst else {(s,): 1})
        out = _add(out, term)
    return from_poly(out)


def solve(d_old: DimT, d_new: DimT, subst: dict) -> None:
    """Extend subst so that substitute(d_old, subst) == d_new, where one unknown symbol
    allows: d_old must be A*u + C in its one unknown u (A, C free of u)."""
    p = poly(d_old)
    unknown = {s for m in p for s in m if s not in subst}
    if len(unknown) != 1:
        return
    u, = unknown
    a_part, c_part = {}, {}
    for m, c in p.items():
        k = m.count(u)
        if k > 1:
            return
        if k:
            rest = list(m)
            rest.remove(u)
            a_part[tuple(rest)] = c
        else:
            c_part[m] = c
    a = substitute(from_poly(a_part), subst)
    rest = dim_sub(d_new, substitute(from_poly(c_part), subst))
    value = dim_divide(rest, a)
    if value is not None and value != u and not (isinstance(value, int) and value < 0):
        subst[u] = value


def linear_in_one(d: DimT):
    """(symbol, a, c) when d is a*symbol + c with ints a > 0 and c, else None: an input axis
    of such a size tells the symbol's value at run time, (size - c) / a."""
    p = poly(d)
    syms = [m for m in p if m]
    if len(syms) != 1 or len(syms[0]) != 1 or p[syms[0]] <= 0:
        return None
    return syms[0][0], p[syms[0]], p.get((), 0)


class Dim(str):
    """A symbolic dim as `Tensor.shape` gives it: a str ("B") that computes like a size.

    >>> d = Dim("B")
    >>> d * 2, 3 * d * d, d * Dim("T"), d + 1, d - 1 + d, (d + 1) * 2
    ('2*B', '3*B*B', 'B*T', 'B+1', '2*B-1', '2*B+2')
    """

    def _dim(self, other):
        if isinstance(other, bool) or not isinstance(other, (int, str)):
            return None
        return other

    def __mul__(self, other):
        o = self._dim(other)
        return NotImplemented if o is None else _as_dim(dim_product([str(self), o]))

    __rmul__ = __mul__

    def __add__(self, other):
        o = self._dim(other)
        return NotImplemented if o is None else _as_dim(dim_sum([str(self), o]))

    __radd__ = __add__

    def __sub__(self, other):
        o = self._dim(other)
        return NotImplemented if o is None else _as_dim(dim_sub(str(self), o))

    def __rsub__(self, other):
        o = self._dim(other)
        return NotImplemented if o is None else _as_dim(dim_sub(o, str(self)))

    def __neg__(self):
        return _as_dim(dim_sub(0, str(self)))

    def __floordiv__(self, other):
        q = dim_divide(str(self), other) if isinstance(other, (int, str)) else None
        if q is None:
            raise TapeirError(f"symbolic dim {self} is not divisible by {other}",
                              hint="divide a product such as '4*B' by one of its factors")
        return _as_dim(q)

    def __truediv__(self, other):
        raise TapeirError(f"cannot divide the symbolic dim {self!r} with '/'",
                          hint="use // for a whole quotient ('4*B' // 4 is 'B')")

    def __repr__(self) -> str:
        return str.__repr__(str(self))


def _as_dim(d):
    return Dim(d) if isinstance(d, str) else d


def resolve_dim(d: DimT, bindings: dict[str, int]) -> int:
    """The size of a dim once its symbols are bound (KeyError for an unbound one)."""
    if isinstance(d, int):
        return d
    return sum(c * math.prod(bindings[s] for s in m) for m, c in poly(d).items())


def max_coefficient(d: DimT) -> int:
    """The largest |integer| in a dim (its size when static): what must fit in int64."""
    return abs(d) if isinstance(d, int) else max((abs(c) for c in poly(d).values()), default=0)


def symbols_of(d: DimT) -> tuple[str, ...]:
    if isinstance(d, int):
        return ()
    return tuple(sorted({s for m in poly(d) for s in m}))


@dataclass(frozen=True)
class TensorType:
    """The type of a value: dtype short name and shape.

    >>> t = TensorType("f32", ("B", 64))
    >>> str(t), t.rank
    ('f32[B,64]', 2)
    """

    dtype: str
    shape: tuple[DimT, ...]

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_of(self.dtype))
        object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype) -> "TensorType":
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    __repr__ = __str__
