"""Contractions by equation (einsum) and inference-mode batch normalization: the layer ops
real models need beyond ir/ops.py's matmul, convolution and layer_norm.

Declared like ir/ops.py's; ir/__init__.py imports this module after ir/ops.py. Their
tp.* functions (and the composites var, std and training-mode batch norm) are in
frontend/functions_nn.py.
"""
from __future__ import annotations

from .dtypes import FLOATS
from .errors import TypeRuleError
from .ops import NUMERIC, _fmt, _need_dtype, _same_dtype
from .registry import Attr, Category, register
from .types import TensorType


def parse_equation(eq: str):
    """'ab,bc->ac' -> (['ab', 'bc'], 'ac'); the canonical form only (explicit output, letters)."""
    if "->" not in eq or "." in eq or " " in eq:
        raise TypeRuleError(f"einsum: equation {eq!r} is not canonical (letters, commas and an explicit '->')",
                            hint="tp.einsum canonicalizes equations; write 'ij,jk->ik'")
    lhs, out = eq.split("->")
    subs = lhs.split(",")
    if not all(s.isalpha() or s == "" for s in subs + [out]):
        raise TypeRuleError(f"einsum: equation {eq!r} has characters other than letters",
                            hint="subscripts are ASCII letters")
    return subs, out


def einsum_rule(op, ts, attrs):
    subs, out = parse_equation(attrs["equation"])
    if len(subs) != len(ts):
        raise TypeRuleError(f"einsum: equation {attrs['equation']!r} names {len(subs)} operands, got {len(ts)}")
    _same_dtype(op, ts)
    _need_dtype(op, ts[0], NUMERIC)
    sizes: dict = {}
    for k, (s, t) in enumerate(zip(subs, ts)):
        if len(s) != t.rank:
            raise TypeRuleError(f"einsum: operand {k} is {t} but its subscripts {s!r} name {len(s)} axes",
                                hint="one letter per axis")
        for ch, d in zip(s, t.shape):
            if sizes.setdefault(ch, d) != d:
                raise TypeRuleError(f"einsum: index {ch!r} has sizes {sizes[ch]} and {d} ({_fmt(ts)})",
                                    hint="a letter names one size in every operand (size-1 axes do not broadcast)")
    if len(set(out)) != len(out) or any(ch not in sizes for ch in out):
        raise TypeRuleError(f"einsum: output subscripts {out!r} must be distinct letters of the inputs")
    return [TensorType(ts[0].dtype, tuple(sizes[ch] for ch in out))]


def batch_norm_rule(op, ts, attrs):
    x = ts[0]
    _need_dtype(op, x, FLOATS)
    _same_dtype(op, ts)
    if x.rank < 2:
        raise TypeRuleError(f"{op}: input must be [N, C, ...], got {x}", hint="add a batch axis")
    for t, what in zip(ts[1:], ("scale", "bias", "mean", "var")):
        if t.shape != (x.shape[1],):
            raise TypeRuleError(f"{op}: {what} {t} must be [{x.shape[1]}] (one entry per channel of {x})",
                                hint="batch norm parameters and statistics are per channel (axis 1)")
    return [x]


register("einsum", (1, None), Category.CONTRACT, einsum_rule, {"equation": Attr("str")}, onnx="Einsum",
         doc="a sum of products over an index equation in canonical form ('ij,jk->ik')")
register("batch_norm", 5, Category.NORMALIZE, batch_norm_rule, {"epsilon": Attr("float", 1e-5)},
         onnx="BatchNormalization",
         doc="inference-mode batch normalization: (x - mean) / sqrt(var + epsilon) * scale + bias per channel")
