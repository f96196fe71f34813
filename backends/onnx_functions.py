"""ONNX local functions for the IR ops that have no ai.onnx operator of the same meaning.

Each one is a FunctionProto in the "tapeir" domain, so a viewer such as Netron draws a
call as one box (`tapeir.softplus`) that opens into its body, and onnxruntime inlines
it. Bodies are type-generic (constants go through CastLike) and take attributes by
reference (`@axes`), so one function serves every call of its op.

  softplus(X)               max(X,0) + log1p(exp(-|X|)); ONNX Softplus is log(exp(X)+1),
                            which overflows to inf for X > 88 in f32. log1p(u) is
                            Goldberg's log(1+u)*u/((1+u)-1), exact to an ulp, u when 1+u == 1.
  logsumexp(X; axes, keepdims)
                            m + log(sum(exp(X - m))) with m = max over axes, replaced by 0
                            where it is not finite (an all -inf slice gives -inf, not nan).
  pad_to(X, Ref; axes, keep) X zero-padded at the end to Ref's sizes on `axes` (keep: 0/1 per
                            dim), read with Shape at run time; ai.onnx's Pad takes the pads as a
                            computed tensor, which tp.from_onnx cannot read back as this op.
  gelu(X), gelu_tanh(X)     for opsets below 20, which lack Gelu: the erf and the tanh forms.
"""
from __future__ import annotations

from onnx import AttributeProto, TensorProto, helper

from ..ir.registry import ONNX_DOMAIN as DOMAIN, onnx_axes_are_input

DOMAIN_VERSION = 1


def _const(name, value):
    # a double, cast to X's dtype by CastLike: a float attribute would round sqrt(2) and
    # 0.044715 to float32 first, 5e-9 off in a float64 model
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.DOUBLE, [], [value]))


def _like(name, value, x="X"):
    """Nodes making `name`, a scalar `value` of X's dtype."""
    return [_const(name + "_f", value), helper.make_node("CastLike", [name + "_f", x], [name])]


def _ref(node, attr, attr_type, ref):
    a = AttributeProto()
    a.name, a.type, a.ref_attr_name = attr, attr_type, ref
    node.attribute.append(a)
    return node


def _softplus(opset):
    n = helper.make_node
    return ["X"], ["Y"], [], [
        *_like("one", 1.0),
        n("Relu", ["X"], ["pos"]),
        n("Abs", ["X"], ["ax"]),
        n("Neg", ["ax"], ["nax"]),
        n("Exp", ["nax"], ["u"]),               # in (0, 1]: never overflows
        n("Add", ["u", "one"], ["w"]),          # 1 + u
        n("Equal", ["w", "one"], ["tiny"]),     # u below half an ulp of 1: log1p(u) = u
        n("Sub", ["w", "one"], ["wm1"]),        # exact (Sterbenz)
        n("Where", ["tiny", "one", "wm1"], ["den"]),
        n("Log", ["w"], ["lw"]),
        n("Mul", ["u", "lw"], ["ulw"]),
        n("Div", ["ulw", "den"], ["ratio"]),
        n("Where", ["tiny", "u", "ratio"], ["l1p"]),
        n("Add", ["pos", "l1p"], ["Y"]),
    ]


def _reduce(op, x, axes, out, keepdims, opset):
    """A reduction over the function's @axes (an input or an attribute, as the opset wants)."""
    if onnx_axes_are_input(op, opset):
        node = helper.make_node(op, [x, axes], [out])
    else:
        node = _ref(helper.make_node(op, [x], [out]), "axes", AttributeProto.INTS, "axes")
    if isinstance(keepdims, str):
        return _ref(node, "keepdims", AttributeProto.INT, keepdims)
    node.attribute.append(helper.make_attribute("keepdims", keepdims))
    return node


def _logsumexp(opset):
    n = helper.make_node
    return ["X"], ["Y"], ["axes", "keepdims"], [
        *_like("zero", 0.0),
        _ref(n("Constant", [], ["axes_t"]), "value_ints", AttributeProto.INTS, "axes"),
        _reduce("ReduceMax", "X", "axes_t", "m", 1, opset),
        n("Sub", ["m", "m"], ["mm"]),           # 0 where m is finite, nan where it is not
        n("Equal", ["mm", "zero"], ["finite"]),
        n("Where", ["finite", "m", "zero"], ["shift"]),
        n("Sub", ["X", "shift"], ["xs"]),
        n("Exp", ["xs"], ["e"]),
        _reduce("ReduceSum", "e", "axes_t", "s", 1, opset),
        n("Log", ["s"], ["ls"]),
        n("Add", ["ls", "shift"], ["lk"]),
        # summing over the (now size-1) reduced axes drops them when keepdims=0
        _reduce("ReduceSum", "lk", "axes_t", "Y", "keepdims", opset),
    ]


def _gelu(opset):
    n = helper.make_node
    return ["X"], ["Y"], [], [
        *_like("half", 0.5), *_like("one", 1.0), *_like("sqrt2", 2 ** 0.5),
        n("Div", ["X", "sqrt2"], ["xs"]),
        n("Erf", ["xs"], ["e"]),
        n("Add", ["one", "e"], ["ope"]),
        n("Mul", ["half", "X"], ["hx"]),
        n("Mul", ["hx", "ope"], ["Y"]),
    ]


def _gelu_tanh(opset):
    n = helper.make_node
    return ["X"], ["Y"], [], [
        *_like("half", 0.5), *_like("one", 1.0), *_like("c", (2 / 3.141592653589793) ** 0.5),
        *_like("k", 0.044715),
        n("Mul", ["k", "X"], ["kx"]),
        n("Mul", ["kx", "X"], ["kx2"]),
        n("Mul", ["kx2", "X"], ["kx3"]),
        n("Add", ["X", "kx3"], ["inner"]),
        n("Mul", ["c", "inner"], ["arg"]),
        n("Tanh", ["arg"], ["t"]),
        n("Add", ["one", "t"], ["opt"]),
        n("Mul", ["half", "X"], ["hx"]),
        n("Mul", ["hx", "opt"], ["Y"]),
    ]


def _pad_to(opset):
    """X zero-padded at the end to Ref's sizes where @keep is 1 (the IR's pad_to; @axes names
    the same axes, for the importer)."""
    n = helper.make_node
    return ["X", "Ref"], ["Y"], ["axes", "keep"], [
        *_like("zero", 0.0),
        _ref(n("Constant", [], ["keep_t"]), "value_ints", AttributeProto.INTS, "keep"),
        n("Shape", ["X"], ["sx"]),
        n("Shape", ["Ref"], ["sr"]),
        n("Sub", ["sr", "sx"], ["grow"]),
        n("Mul", ["grow", "keep_t"], ["after"]),
        n("Sub", ["keep_t", "keep_t"], ["before"]),
        n("Concat", ["before", "after"], ["pads"], axis=0),
        n("Pad", ["X", "pads", "zero"], ["Y"], mode="constant"),
    ]


_BODIES = {"softplus": _softplus, "logsumexp": _logsumexp, "gelu": _gelu, "gelu_tanh": _gelu_tanh, "pad_to": _pad_to}
_DOCS = {
    "softplus": "stable softplus: max(x,0) + log1p(exp(-|x|))",
    "logsumexp": "stable log(sum(exp(x))) over axes: m + log(sum(exp(x - m)))",
    "gelu": "x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (ai.onnx Gelu needs opset 20)",
    "pad_to": "x zero-padded at the end to ref's sizes on the axes where keep is 1",
    "gelu_tanh": "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (ai.onnx Gelu needs opset 20)",
}
NAMES = tuple(_BODIES)  # complete once backends/onnx_lowering.py (which imports the op families) is loaded


def register(name: str, body, doc: str) -> None:
    """Add an op family's local function (backends/onnx_lowering_index.py, _random.py): its body
    builder `opset -> (inputs, outputs, attribute names, nodes)` and its doc string."""
    global NAMES
    _BODIES[name], _DOCS[name] = body, doc
    NAMES = tuple(_BODIES)


def make_function(name: str, opset: int):
    """The FunctionProto of local function `name`, its body written for `opset`."""
    inputs, outputs, attrs, nodes = _BODIES[name](opset)
    return helper.make_function(DOMAIN, name, inputs, outputs, nodes,
                                [helper.make_opsetid("", opset)], attributes=attrs, doc_string=_DOCS[name])
