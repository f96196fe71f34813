"""The op registry: every IR op is declared once here, with its arity, attribute
schema, category, type rule and ONNX twin. Every other concern (VJP, IMPL, EXPORT,
IMPORT) is a table keyed by the op name, kept in the module that uses it.

The ONNX twin (`onnx=`) is the ai.onnx operator of the same meaning. Export and import
both derive their trivial rows from it (backends/onnx_lowering.py, frontend/onnx/): the
twin with the op's inputs and its attributes under the same names and defaults. Where a
twin needs more (other attribute names, opset cases, dtypes onnxruntime lacks), a
hand-written rule overrides the trivial row on that side.

`ir/ops.py` fills the registry; this module holds the machinery. `OPS` (also `tp.OPS`)
maps each op name to its OpDef.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from .dtypes import dtype_of
from .errors import TapeirError, TypeRuleError
from .types import TensorType, check_dim, from_poly, poly


class Category(Enum):
    ELEMENTWISE = "elementwise"   # output[i] depends on input[i] only (after broadcasting)
    REDUCE = "reduce"             # folds axes away
    SHAPE = "shape"               # moves/copies elements, no arithmetic
    CONTRACT = "contract"         # matmul, conv
    WINDOW = "window"             # pooling
    NORMALIZE = "normalize"       # softmax family, layer_norm
    LOSS = "loss"
    FUSED = "fused"               # a group of elementwise ops run as one (its body is a nested graph)
    RANDOM = "random"             # counter-based random numbers: a pure function of a key input


_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """One attribute in an op's schema: its kind, default and allowed values.

    kinds: int, float, bool, str, dtype, ints (tuple of ints), shape (tuple of dims,
    -1 allowed), dims (tuple of signed ints and symbolic dims: offsets such as a slice's
    stop "T-1" on a symbolic axis), float? (a float or None), graph (a nested Graph: a
    fused node's body).
    """

    kind: str
    default: Any = _REQUIRED
    choices: tuple | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def normalize(self, op: str, name: str, value):
        try:
            return self._normalize(op, name, value)
        except (TypeError, ValueError, OverflowError):
            raise TypeRuleError(f"{op}: attribute {name}={value!r} is not a valid {self.kind}") from None

    def _normalize(self, op: str, name: str, value):
        def bad(expected):
            return TypeRuleError(f"{op}: attribute {name}={value!r} is not {expected}")

        k = self.kind
        if k == "int":
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise bad("an int")
            value = int(value)
        elif k == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
                raise bad("a float")
            value = float(value)
        elif k == "float?":
            if value is not None:
                if isinstance(value, bool) or not hasattr(value, "__float__"):
                    raise bad("a float or None")
                value = float(value)
        elif k == "bool":
            if not isinstance(value, bool):
                raise bad("a bool")
        elif k == "str":
            if not isinstance(value, str):
                raise bad("a string")
        elif k == "dtype":
            value = dtype_of(value)
        elif k == "ints":
            if not isinstance(value, (tuple, list)) or any(
                isinstance(v, bool) or not hasattr(v, "__index__") for v in value
            ):
                raise bad("a list of ints")
            value = tuple(int(v) for v in value)
        elif k == "graph":
            from .graph import Graph

            if not isinstance(value, Graph):
                raise bad("a Graph")
        elif k == "dims":
            if not isinstance(value, (tuple, list)):
                raise bad("a list of ints and symbolic dims")
            try:
                value = tuple(from_poly(poly(v)) if isinstance(v, str) else _signed(v) for v in value)
            except TapeirError as e:
                raise bad(f"a list of ints and symbolic dims ({e.problem})") from None
        elif k == "shape":
            if not isinstance(value, (tuple, list)):
                raise bad("a shape (list of ints and symbols)")
            value = tuple(-1 if (not isinstance(v, str) and v == -1) else check_dim(v) for v in value)
        else:  # pragma: no cover - schema typo
            raise AssertionError(f"unknown attribute kind {k}")
        if self.choices is not None and value not in self.choices:
            raise TypeRuleError(
                f"{op}: attribute {name}={value!r} is not one of {list(self.choices)}"
            )
        return value


def _signed(v) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(v)
    v = int(v)
    if not -2 ** 63 <= v < 2 ** 63:
        raise OverflowError(v)
    return v


TypeRule = Callable[[str, list, dict], list]


@dataclass(frozen=True)
class OpDef:
    """One IR op: its arity, category, attribute schema and type rule.

    >>> import tapeir as tp
    >>> mm = tp.OPS["matmul"]
    >>> mm.category, mm.arity, mm.differentiable, mm.onnx
    (<Category.CONTRACT: 'contract'>, (2, 2), True, 'MatMul')
    >>> mm.infer([tp.TensorType("f32", ("B", 3)), tp.TensorType("f32", (3, 2))], {})
    [f32[B,2]]
    >>> tp.OPS["softmax"].normalize_attrs({"axis": 1}), sorted(tp.OPS["conv2d"].attrs)
    ({'axis': 1}, ['dilation', 'groups', 'padding', 'stride'])
    """

    name: str
    arity: tuple[int, int | None]          # (min, max); max None = variadic
    category: Category
    type_rule: TypeRule                    # (op name, input types, attrs) -> output types
    attrs: dict[str, Attr] = field(default_factory=dict)
    differentiable: bool = True            # False: outputs carry no gradient (comparisons)
    doc: str = ""
    onnx: str | None = None                # the ai.onnx twin (op type), if there is one

    @functools.cached_property
    def shape_attrs(self) -> tuple[str, ...]:
        """Attributes holding shapes: their symbolic dims are substituted or bound per call."""
        return tuple(k for k, a in self.attrs.items() if a.kind in ("shape", "dims"))

    def check_arity(self, n: int) -> None:
        lo, hi = self.arity
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            raise TypeRuleError(f"{self.name} takes {want} inputs, got {n}")

    def normalize_attrs(self, attrs: dict) -> dict:
        """attrs checked against the schema, with defaults filled in (raises TypeRuleError)."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise TypeRuleError(
                f"{self.name}: unknown attribute(s) {sorted(unknown)}",
                hint=f"{self.name} takes {sorted(self.attrs) or 'no attributes'}",
            )
        out = {}
        for name, spec in self.attrs.items():
            if name in attrs:
                out[name] = spec.normalize(self.name, name, attrs[name])
            elif spec.required:
                raise TypeRuleError(f"{self.name}: missing attribute {name!r}")
            else:
                out[name] = spec.default
        return out

    def infer(self, in_types: list[TensorType], attrs: dict) -> list[TensorType]:
        """Check arity and attributes and return the output types (raises TypeRuleError)."""
        self.check_arity(len(in_types))
        return self.type_rule(self.name, in_types, attrs)


OPS: dict[str, OpDef] = {}


def register(name, arity, category, type_rule, attrs=None, differentiable=True, doc="", onnx=None):
    if name in OPS:
        raise AssertionError(f"op {name} registered twice")
    if onnx is not None and any(d.onnx == onnx for d in OPS.values()):
        raise AssertionError(f"ONNX op {onnx} is the twin of two ops")  # import maps it back to one
    if isinstance(arity, int):
        arity = (arity, arity)
    OPS[name] = OpDef(name, arity, category, type_rule, dict(attrs or {}), differentiable, doc, onnx)
    return OPS[name]


ONNX_DOMAIN = "tapeir"  # the ONNX domain of tapeir's local functions: export writes it, import reads it


# ONNX's Reduce* ops take their axes as an input from opset 18 (ReduceSum from 13), as an
# attribute before. Export (lowering, local functions) and import both ask this.
def onnx_axes_are_input(op_type: str, opset: int) -> bool:
    """
    >>> onnx_axes_are_input("ReduceMean", 17), onnx_axes_are_input("ReduceMean", 18), onnx_axes_are_input("ReduceSum", 13)
    (False, True, True)
    """
    return opset >= (13 if op_type == "ReduceSum" else 18)


def get_op(name: str) -> OpDef:
    """OPS[name], or a TypeRuleError naming the unknown op.

    >>> get_op("exp").category
    <Category.ELEMENTWISE: 'elementwise'>
    """
    try:
        return OPS[name]
    except KeyError:
        raise TypeRuleError(f"unknown op {name!r}", hint="see tapeir.ir.OPS for the op set") from None


def ops_in(category: Category) -> frozenset[str]:
    """The names of the ops in one category.

    >>> sorted(ops_in(Category.WINDOW))
    ['avg_pool2d', 'max_pool2d']
    """
    return frozenset(n for n, d in OPS.items() if d.category is category)
