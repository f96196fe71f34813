"""TensorType: a dtype and a shape whose dims are ints or symbols.

A symbolic dim is a name (`"B"`) or a product of names and one int (`"4*B"`, `"B*T"`),
which is what reshaping a symbolic shape produces. Symbols are bound to sizes when a
graph runs; two dims are equal only when they are the same int or the same product.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

from .dtypes import dtype_of
from .errors import TapeirError

DimT = Union[int, str]  # an int size, or a symbolic dim such as "B" or "4*B"

_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[0-9]+\Z")  # ASCII only: str.isdigit() also accepts "²" and "٣"


MAX_DIM = 2 ** 63 - 1  # dims are int64 in ONNX and intp in numpy
_MAX_DIM_HINT = "dims are int64 sizes (as in ONNX and numpy): at most 9223372036854775807"


def check_dim(d) -> DimT:
    """Validate one dim: a non-negative int or a product of symbols (and an int)."""
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
        coef, syms = factors(d)
        if coef > MAX_DIM:
            raise TapeirError(f"dim {d!r} has a factor larger than 2**63 - 1", hint=_MAX_DIM_HINT)
        return from_factors(coef, syms)
    raise TapeirError(f"dim {d!r} is neither an int nor a symbol name",
                      hint="use ints for known sizes and names like 'B' for symbolic ones")


def factors(d: DimT) -> tuple[int, tuple[str, ...]]:
    """`"4*B*T"` -> (4, ("B", "T")); `12` -> (12, ())."""
    if isinstance(d, int):
        return d, ()
    coef, syms = 1, []
    for part in d.split("*"):
        part = part.strip()
        if _INT.match(part):
            coef *= int(part)
        elif _SYMBOL.match(part):
            syms.append(part)
        else:
            raise TapeirError(f"bad symbolic dim {d!r}",
                              hint="a symbolic dim is a name like 'B' or a product like '4*B'")
    return coef, tuple(sorted(syms))


def from_factors(coef: int, syms: tuple[str, ...]) -> DimT:
    if not syms or coef == 0:
        return coef
    body = "*".join(sorted(syms))
    return body if coef == 1 else f"{coef}*{body}"


def dim_product(dims) -> DimT:
    coef, syms = 1, []
    for d in dims:
        c, s = factors(d)
        coef *= c
        syms.extend(s)
    return from_factors(coef, tuple(syms))


def dim_divide(num: DimT, den: DimT) -> DimT | None:
    """num / den as a dim, or None when it is not a whole dim."""
    nc, ns = factors(num)
    dc, ds = factors(den)
    rest = list(ns)
    for s in ds:
        if s not in rest:
            return None
        rest.remove(s)
    if dc == 0 or nc % dc:
        return None
    return from_factors(nc // dc, tuple(rest))


def substitute(d: DimT, subst: dict) -> DimT:
    """d with each symbol replaced by its value in subst (an int or another dim)."""
    coef, syms = factors(d)
    if not any(s in subst for s in syms):
        return d
    return dim_product([coef] + [subst.get(s, s) for s in syms])


def solve(d_old: DimT, d_new: DimT, subst: dict) -> None:
    """Extend subst so that substitute(d_old, subst) == d_new, where one unknown symbol allows."""
    coef, syms = factors(d_old)
    unknown = [s for s in syms if s not in subst]
    if len(unknown) != 1:
        return
    known = dim_product([coef] + [subst[s] for s in syms if s in subst])
    value = dim_divide(d_new, known)
    if value is not None and value != unknown[0]:
        subst[unknown[0]] = value


class Dim(str):
    """A symbolic dim as `Tensor.shape` gives it: a str ("B") that multiplies like a size.

    >>> d = Dim("B")
    >>> d * 2, 3 * d * d, d * Dim("T")
    ('2*B', '3*B*B', 'B*T')
    """

    def __mul__(self, other):
        if isinstance(other, (int, str)) and not isinstance(other, bool):
            return _as_dim(dim_product([str(self), other]))
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other):
        q = dim_divide(str(self), other) if isinstance(other, (int, str)) else None
        if q is None:
            raise TapeirError(f"symbolic dim {self} is not divisible by {other}",
                              hint="divide a product such as '4*B' by one of its factors")
        return _as_dim(q)

    def _no_sum(self, other):
        raise TapeirError(f"cannot add or subtract with the symbolic dim {self!r}",
                          hint="symbolic dims can be multiplied and divided by their factors; "
                               "use -1 in reshape for the inferred dim")

    __add__ = __radd__ = __sub__ = __rsub__ = __truediv__ = _no_sum

    def __repr__(self) -> str:
        return str.__repr__(str(self))


def _as_dim(d):
    return Dim(d) if isinstance(d, str) else d


def resolve_dim(d: DimT, bindings: dict[str, int]) -> int:
    """The size of a dim once its symbols are bound."""
    coef, syms = factors(d)
    return coef * math.prod(bindings[s] for s in syms)


def symbols_of(d: DimT) -> tuple[str, ...]:
    return factors(d)[1]


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
