"""Fused nodes as ONNX local functions: one FunctionProto per distinct body.

`to_onnx(g, fused="function")` (the default) exports each fused node as one call of a
local function in the "tapeir" domain (`tapeir.fused_0`, `tapeir.fused_1`, ...), so a viewer
such as Netron draws each group as one box that opens into its body; `fused="inline"`
writes the body's nodes into the graph instead (backends/onnx_lowering.py `_fused_inline`).
Both run the same ai.onnx nodes: onnxruntime inlines functions when it loads a model.

The body of a function is the fused body lowered node by node through EXPORT, as the graph
around it is, with these differences:
  * names follow the body's text form: the function's inputs are the body's input names,
    its values `%0`, `%1`, ... and its outputs the body values they are;
  * constants are Constant nodes (a function has no initializers): the body's own
    (`%c0`, ...) and the scalars rules add (named by content, as in the graph);
    a body constant of more than INLINE_LIMIT elements is a function input instead, fed
    by one initializer `%fused_K.cI`, so weights are stored once, not in the function;
  * a body that calls another local function (softplus, gelu below opset 20) imports the
    "tapeir" domain in the function's opset imports, as the model does.
Bodies that lower to the same function (node for node, source lines aside) share one
FunctionProto: a graph repeating one group holds one definition. Names are numbered by
first use, so the same graph exports to the same bytes every time. The function's
doc_string is the body's text form.
"""
from __future__ import annotations

import hashlib

import numpy as np
from onnx import helper

from ..ir.errors import TapeirError
from ..ir.printer import fmt_name, print_graph
from .onnx_functions import DOMAIN, DOMAIN_VERSION
from .onnx_lowering import EXPORT

MODES = ("function", "inline")
INLINE_LIMIT = 64  # elements: a body constant up to this size is a Constant node in the function


def check_mode(fused) -> str:
    if fused not in MODES:
        raise TapeirError(f"fused={fused!r} is not one of {list(MODES)}",
                          hint="fused='function' exports each fused node as a call of an ONNX local function; "
                               "fused='inline' writes its body's nodes into the graph")
    return fused


def _formals(body) -> list[str]:
    """The function's input names: the body's input names, when they are usable ONNX names."""
    names = [v.name for v in body.inputs]
    if all(n and not n.startswith("%") for n in names) and len(set(names)) == len(names):
        return names
    return [f"x{k}" for k in range(len(names))]


def _lower_body(parent, body):
    """(lowering, input names, output names, large constants) of `body` as function nodes."""
    low = parent.body_lowering(body)
    formals = _formals(body)
    names = {id(a): x for a, x in zip(body.inputs, formals)}
    large = []  # (formal name, array): constants passed in from an initializer
    for i, c in enumerate(body.constants):
        if c.data.size > INLINE_LIMIT:
            names[id(c)] = f"%c{i}"
            large.append((f"%c{i}", c.data))
    counter = 0
    for m in body.nodes:
        ins = []
        for v in m.inputs:
            if id(v) not in names:  # a small constant, made where it is first used
                k = next(i for i, c in enumerate(body.constants) if c is v)
                names[id(v)] = low.const(v.data, f"%c{k}")
            ins.append(names[id(v)])
        low.begin(m, f"%{counter}")
        res = []
        for o in m.outputs:
            res.append(f"%{counter}")
            names[id(o)] = res[-1]
            counter += 1
        EXPORT[m.op](low, m, ins, res)
    low.begin(None, "%out")
    outs = []
    for k, v in enumerate(body.outputs):
        name = names[id(v)]
        if name in outs:  # one value returned twice: a function's outputs need distinct names
            name = low.op("Identity", name, out=f"%out.{k}")
        outs.append(name)
    return low, formals + [f for f, _ in large], outs, large


def export_call(parent, node, ins, outs):
    """Emit `node` (a fused node) as a call of its body's local function, defined once."""
    body = node.attrs["body"]
    low, formals, results, large = _lower_body(parent, body)
    parent.functions |= low.functions
    opsets = [helper.make_opsetid("", parent.opset)]
    if low.functions:  # the body calls softplus & co.
        opsets.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    proto = helper.make_function(DOMAIN, "fused", formals, results, low.nodes, opsets)
    # the key: the function as it would be written, source lines (doc_strings) aside, and
    # the bytes of the constants it takes as inputs
    for n in proto.node:
        n.doc_string = ""
    key = (proto.SerializeToString(),
           tuple(hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() + str(a.dtype) + str(a.shape)
                 for _, a in large))
    fn = parent.fused_functions.get(key)
    if fn is None:
        name = f"fused_{len(parent.fused_functions)}"
        fn = helper.make_function(DOMAIN, name, formals, results, low.nodes, opsets,
                                  doc_string=f"fused body of {fmt_name(body.name)} (one call per group):\n"
                                             + print_graph(body))
        parent.fused_functions[key] = fn
    extra = [parent.const(a, f"%{fn.name}.{formal[1:]}") for formal, a in large]
    parent.nodes.append(helper.make_node(fn.name, list(ins) + extra, list(outs), name=f"{outs[0]}/{fn.name}",
                                         doc_string=node.source or "", domain=DOMAIN))
