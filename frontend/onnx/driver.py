"""ONNX import: `from_onnx(model) -> Graph`, walking the nodes through one IMPORT table
keyed by op type (table.py).

The importer *traces*: it walks the ONNX nodes in order inside `trace`, and each node's
rule calls tp.* functions, so the IR it records is what a user writing the same model
would get (same ops, same type checks, same error messages), and every node's source is
`model.onnx:<node name>`.

Rules:
  1. Values known at import time (Constant, initializers kept as constants, shapes of
     static tensors) fold: a node whose inputs are all known runs in onnx's reference
     evaluator instead of becoming IR. Except where that evaluator is wrong, missing or
     imprecise (_NO_FOLD: grouped ConvTranspose with several channels per group,
     LayerNormalization with a stash_type other than float32, float64 Erf/Gelu/Elu/
     LeakyRelu; onnx 1.23), whose rule records IR on the constants.
  2. Shape arithmetic on symbolic dims (Shape -> Gather -> Unsqueeze -> Concat ->
     Reshape, as torch emits for flatten) runs on vectors of dims (SYMBOLIC), so a
     Reshape to [B, -1] gets its target at import time.
  3. ONNX dim_params become symbolic dims (sanitized to identifiers); unnamed dynamic
     dims get generated symbols (`<input>_<axis>`).
  4. params="inputs": floating-point initializers become graph inputs after the model's
     own, in model order, names kept; integer ones (shapes, axes, indices) stay constants
     because rules need them at import time and they carry no gradient.
  5. A model with ops outside IMPORT fails once, listing every unsupported op type with
     its node count and names.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from ..tensor import Tensor
from ..tracer import Spec, current_builder
from ..tracing import trace
from ...ir.errors import TapeirError
from ...ir.graph import Graph
from ...ir.registry import ONNX_DOMAIN
from .node import ONNX_DTYPES, OnnxNode, is_static, is_symbolic, sparse_to_dense
from .shape import SYMBOLIC
from .table import IMPORT, TAPEIR_FUNCTIONS

_DOMAINS = ("", "ai.onnx")


def _table(domain: str) -> dict:
    return IMPORT if domain in _DOMAINS else TAPEIR_FUNCTIONS if domain == ONNX_DOMAIN else {}


def from_onnx(model_or_path, params: str = "constants") -> Graph:
    """Import an ONNX model (a ModelProto or a path) as a Graph.

    The graph takes one array per ONNX input, in order; with params="inputs" the
    floating-point initializers follow, in model order, under their ONNX names.

    >>> import numpy as np, tapeir as tp
    >>> from onnx import helper, TensorProto as T
    >>> x = helper.make_tensor_value_info("x", T.FLOAT, ["N", 2])
    >>> y = helper.make_tensor_value_info("y", T.FLOAT, ["N", 2])
    >>> m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    >>> g = tp.from_onnx(m)
    >>> [str(v.type) for v in g.inputs], tp.run(g, np.array([[-1, 2]], np.float32)).tolist()
    (['f32[N,2]'], [[0.0, 2.0]])
    """
    if params not in ("constants", "inputs"):
        raise TapeirError(f"from_onnx: params={params!r}", hint="use params='constants' or params='inputs'")
    if isinstance(model_or_path, (str, os.PathLike)):
        label = os.path.basename(os.fspath(model_or_path))
        model = _load(os.fspath(model_or_path))
    elif isinstance(model_or_path, onnx.ModelProto):
        model, label = model_or_path, "model.onnx"
    else:
        raise TapeirError(f"from_onnx expects an onnx.ModelProto or a path, got {type(model_or_path).__name__}")
    # tapeir's own functions (softplus, ...) import as their ops; other model-local functions,
    # fused bodies (tapeir.fused_K) among them, are inlined (tp.fuse can group them again)
    ours = {(f.domain, f.name) for f in model.functions if f.domain == ONNX_DOMAIN and f.name in TAPEIR_FUNCTIONS}
    foreign = [(f.domain, f.name) for f in model.functions if (f.domain, f.name) not in ours]
    if foreign:
        keep = sorted(ours)
        model = onnx.inliner.inline_selected_functions(model, keep, exclude=True)
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in _DOMAINS), 1)
    _check_supported(g, label)

    known = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    known.update((s.values.name, sparse_to_dense(s)) for s in g.sparse_initializer)
    symbols: dict[str, str] = {}
    names, specs = [], []
    for vi in g.input:
        if vi.name not in known:  # old models list initializers among the inputs too
            names.append(vi.name)
            specs.append(_spec(vi, symbols, label))
    if params == "inputs":
        for name, arr in list(known.items()):
            if arr.dtype.kind == "f":
                names.append(name)
                specs.append(Spec(arr.shape, _np_dtype(arr, name, label)))
                del known[name]

    def interpret(*xs):
        return _interpret(g, dict(zip(names, xs)), known, opset, label)
    gname = re.sub(r"\W", "_", g.name).strip("_") or "onnx_model"
    return trace(interpret, *specs, arg_names=names, name=gname, output_names=[o.name for o in g.output])


def _load(path: str) -> onnx.ModelProto:
    """onnx.load, with tapeir errors for a file that is missing or is no ONNX model."""
    try:
        model = onnx.load(path)
    except OSError as e:  # missing, a directory, unreadable
        raise TapeirError(f"from_onnx: cannot read {path!r}: {e.strerror or e}",
                          hint="pass the path of a .onnx file, or an onnx.ModelProto") from None
    except onnx.checker.ValidationError as e:  # external data that is missing or outside the model's folder
        raise TapeirError(f"from_onnx: cannot read the external data of {path!r}: {e}",
                          hint="keep the model's data files next to it, as saved") from None
    except DecodeError:
        model = None
    if model is None or not model.HasField("graph"):  # an empty file parses as an empty ModelProto
        raise TapeirError(f"from_onnx: {path!r} is not an ONNX model (it does not parse as an onnx.ModelProto "
                          "with a graph)", hint="is the file truncated, or another format (e.g. a PyTorch .pt)?")
    return model


def _check_supported(g, label):
    missing = defaultdict(list)
    for i, n in enumerate(g.node):
        if n.op_type not in _table(n.domain):
            op = n.op_type if n.domain in _DOMAINS else f"{n.domain}.{n.op_type}"
            missing[op].append(n.name or f"{n.op_type}#{i}")
    if missing:
        parts = [f"{op} ({len(ns)} node{'s' * (len(ns) > 1)}: {', '.join(ns[:5])}{', ...' * (len(ns) > 5)})"
                 for op, ns in sorted(missing.items())]
        raise TapeirError(f"cannot import {label}: {len(missing)} unsupported ONNX op type"
                          f"{'s' * (len(missing) > 1)}: " + "; ".join(parts),
                          hint=f"tapeir imports {len(IMPORT)} op types (tapeir.frontend.onnx.IMPORT)")


def _sym(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_]\w*(\*(\d+|[A-Za-z_]\w*))*|\d+(\*[A-Za-z_]\w*)+", name):
        return name  # already a tapeir dim ("B", "3*B"), e.g. from tapeir's own export
    s = re.sub(r"\W", "_", name)
    return "_" + s if s[:1].isdigit() or not s else s


def _spec(vi, symbols, label) -> Spec:
    where = f"{label}: input {vi.name!r}"
    if not vi.type.HasField("tensor_type"):
        raise TapeirError(f"{where} is not a tensor (sequences, maps and optionals have no tapeir type)")
    tt = vi.type.tensor_type
    if tt.elem_type not in ONNX_DTYPES:
        raise TapeirError(f"{where} has ONNX type {onnx.TensorProto.DataType.Name(tt.elem_type)}, which tapeir "
                          "has no dtype for", hint="tapeir supports float16/32/64, int32/64 and bool")
    if not tt.HasField("shape"):
        raise TapeirError(f"{where} has no shape, so its rank is unknown",
                          hint="give the input a shape (dim_param names work for dynamic sizes)")
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        else:
            key = d.dim_param or f"{vi.name}_{axis}"
            dims.append(symbols.setdefault(key, _sym(key)))
    return Spec(dims, ONNX_DTYPES[tt.elem_type])


def _np_dtype(arr, name, label):
    try:
        return Spec((), arr.dtype).dtype
    except TapeirError:
        raise TapeirError(f"{label}: initializer {name!r} has dtype {arr.dtype}, which tapeir has no dtype for") from None


def _interpret(g, env, known, opset, label):
    env = {**known, **env}
    builder = current_builder()
    for i, proto in enumerate(g.node):
        where = f"{label}:{proto.name or f'{proto.op_type}#{i}'}".replace("\n", " ")
        n = OnnxNode(proto, opset, where)
        ins = []
        for name in proto.input:
            if name and name not in env:
                raise n.error(f"input {name!r} is not produced by any earlier node, input or initializer",
                              hint="ONNX graphs must list nodes in topological order")
            ins.append(env[name] if name else None)
        while ins and ins[-1] is None:
            ins.pop()
        with builder.at(where):  # IR recorded for this ONNX node points at it
            outs = _run(n, ins)
        outs = outs if isinstance(outs, tuple) else (outs,)
        for name, v in zip(proto.output, outs):
            if name:
                env[name] = np.asarray(v) if isinstance(v, (np.generic, int, float, bool)) else v
    outs = []
    for o in g.output:
        v = env[o.name]
        if is_symbolic(v):
            raise TapeirError(f"{label}: output {o.name!r} is a shape with symbolic dims {v.tolist()}",
                              hint="a graph output must be a tensor; give the input static dims")
        outs.append(v)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _run(n: OnnxNode, ins):
    try:
        if n.proto.domain == ONNX_DOMAIN:
            return TAPEIR_FUNCTIONS[n.op](n, *ins)
        given = [v for v in ins if v is not None]
        # Expand of known data to a symbolic shape is a real tensor (e.g. zeros [B, 2]), not dims
        data_is_dims = not (n.op == "Expand" and not is_symbolic(ins[0]) and is_symbolic(ins[1]))
        if n.op != "Constant" and given and all(is_static(v) for v in given) and data_is_dims \
                and not _NO_FOLD.get(n.op, lambda n, ins: False)(n, ins):
            if any(is_symbolic(v) for v in given):
                if n.op not in SYMBOLIC:
                    raise n.error("computes on symbolic dims " + ", ".join(str(v.tolist()) for v in given if is_symbolic(v)),
                                  hint="tapeir folds shape arithmetic of Shape/Gather/Concat/Unsqueeze/Slice/"
                                       "Reshape/Mul/Div; export with static shapes otherwise")
                outs = SYMBOLIC[n.op](n, *ins)
                return tuple(_dims_array(v) for v in (outs if isinstance(outs, tuple) else (outs,)))
            return _fold(n, ins)
        return IMPORT[n.op](n, *ins)
    except TapeirError as e:
        if e.problem.startswith("ONNX "):
            raise
        raise type(e)(f"ONNX {n.op} node {n.where!r}: {e.problem}", where=n.where, hint=e.hint) from None
    except Exception as e:  # a numpy or onnx error: still name the node
        raise TapeirError(f"ONNX {n.op} node {n.where!r}: {type(e).__name__}: {e}", where=n.where) from e


# nodes onnx.reference computes wrongly (or not at all): their rules record IR on the
# constants instead. ConvTranspose with group > 1 reshapes W as if it had C/group input
# channels per group in its first axis and fails ("cannot reshape array of size 4 into
# shape (1,2,4)"); LayerNormalization implements only stash_type=1 (tapeir's float64
# export writes 11); in float64, Erf and Gelu are accurate to ~3e-8 only, and Elu and
# LeakyRelu use their float32 alpha (0.3 as 0.30000001), where tapeir's kernels are exact.
_NO_FOLD = {"ConvTranspose": lambda n, ins: n.attr("group", 1) > 1,
            "LayerNormalization": lambda n, ins: n.attr("stash_type", 1) != 1,
            **{op: (lambda n, ins: ins[0].dtype == np.float64) for op in ("Erf", "Gelu", "Elu", "LeakyRelu")}}


def _dims_array(v):
    """A vector of dims: int64 when every dim is known, else an object array."""
    if isinstance(v, Tensor):
        return v
    v = np.asarray(v, dtype=object)
    return v.astype(np.int64) if all(isinstance(d, (int, np.integer)) for d in v.reshape(-1)) else v


def _fold(n: OnnxNode, ins):
    """Rule 1: run one node on known inputs in onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    p = n.proto
    feeds, in_names = {}, []
    for i, v in enumerate(ins):
        name = f"i{i}" if v is not None else ""
        in_names.append(name)
        if v is not None:
            feeds[name] = v
    out_names = [f"o{i}" if o else "" for i, o in enumerate(p.output)]
    node = helper.make_node(p.op_type, in_names, out_names, domain=p.domain)
    node.attribute.extend(p.attribute)
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), None) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(k, 0, None) for k in out_names if k]
    model = helper.make_model(helper.make_graph([node], "fold", vis, outs),
                              opset_imports=[helper.make_opsetid("", n.opset)])
    with np.errstate(all="ignore"):
        res = iter(ReferenceEvaluator(model).run(None, feeds))
    return tuple(np.asarray(next(res)) if k else None for k in out_names)

