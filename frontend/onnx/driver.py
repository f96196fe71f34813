"""ONNX import: `from_onnx(model) -> Graph`, walking the nodes through one IMPORT table
keyed by op type (table.py).

The importer *traces*: it walks the ONNX nodes in order inside `trace`, and each node's
rule calls tp.* functions, so the IR it records is what a user writing the same model
would get (same ops, same type checks, same error messages), and every node's source is
`model.onnx:<node name>`.

Rules:
  0. Before any node runs, the model is checked (validate.py): its size once model-local
     functions are inlined (max_nodes), names written once, outputs produced, initializer
     data matching its dims; each node's arity against its ONNX schema. After, the IR
     verifier runs on the graph. Any failure is a TapeirError naming the node or value.
  1. Values known at import time (Constant, initializers kept as constants, shapes of
     static tensors) fold: a node whose inputs are all known runs in onnx's reference
     evaluator instead of becoming IR (fold.py), unless its result would be over
     max_constant_bytes, or where that evaluator is wrong, missing or imprecise
     (fold.NO_FOLD); then its rule records IR on the constants.
  2. Shape arithmetic on symbolic dims (Shape -> Gather -> Unsqueeze -> Concat ->
     Reshape, as torch emits for flatten) runs on vectors of dims (SYMBOLIC), so a
     Reshape to [B, -1] gets its target at import time.
  3. ONNX dim_params become symbolic dims (sanitized to identifiers, distinct names kept
     distinct: validate.DimSymbols); unnamed dynamic dims get generated symbols
     (`<input>_<axis>`).
  4. params="inputs": floating-point initializers become graph inputs after the model's
     own, in model order, names kept; integer ones (shapes, axes, indices) stay constants
     because rules need them at import time and they carry no gradient.
  5. Dropout in training mode (ratio > 0, training_mode known true; opset < 7: is_test=0)
     gets its own int64 scalar key input, `dropout_key.<node name>` (nodes without a name:
     `Dropout#<index>`), after every other input: its mask is tapeir's
     random_uniform(key, x.shape) >= ratio (frontend/functions_random.dropout), so a
     training step stays one pure graph and a new key per step draws a new mask. numpy and
     onnxruntime (after tp.to_onnx) draw the same mask bit for bit; it is not the mask the
     original Dropout node would draw in onnxruntime (its own RNG, seeded by `seed`).
  6. A model with ops outside IMPORT (and FOLD_ONLY, imported when their inputs are known)
     fails once, listing every unsupported op type with
     its node count and names.
"""
from __future__ import annotations

import inspect
import os
import re
from collections import defaultdict

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError

from ..tensor import Tensor
from ..tracer import Spec, current_builder
from ..tracing import trace
from ...ir.errors import TapeirError
from ...ir.graph import Graph
from ...ir.registry import ONNX_DOMAIN
from ...ir.types import max_coefficient
from ...ir.verifier import verify
from .fold import can_fold, fold
from .node import MAX_CONSTANT_BYTES, MAX_NODES, ONNX_DTYPES, Limits, OnnxNode, dim_sources, elem_name, \
    is_static, is_symbolic, limits_in_force, note_dims
from .shape import SYMBOLIC, run_time_dims, training_dropouts
from .table import FOLD_ONLY, IMPORT, STATIC_OPERANDS, TAPEIR_FUNCTIONS
from .validate import DimSymbols, check_arity, check_big_dims, check_dim_value, check_names, check_strings, \
    initializer, inline_budget, node_where, sparse_initializer

_DOMAINS = ("", "ai.onnx")


def _table(domain: str) -> dict:
    return IMPORT if domain in _DOMAINS else TAPEIR_FUNCTIONS if domain == ONNX_DOMAIN else {}


def from_onnx(model_or_path, params: str = "constants", *, max_nodes=None, max_constant_bytes=None) -> Graph:
    """Import an ONNX model (a ModelProto or a path) as a Graph.

    The graph takes one array per ONNX input, in order; with params="inputs" the
    floating-point initializers follow, in model order, under their ONNX names.

    The import is bounded, so that a small hostile file cannot cost unbounded time or
    memory: `max_nodes` (default MAX_NODES, 200,000) caps the ONNX nodes once
    model-local functions are inlined, `max_constant_bytes` (default MAX_CONSTANT_BYTES,
    16 MiB) caps each constant computed at import time (larger results stay IR nodes,
    or fail with a TapeirError where the IR cannot express them). Pass larger values
    (or math.inf) for trusted models.

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
    bounds = Limits(_bound(max_nodes, MAX_NODES, "max_nodes"),
                    _bound(max_constant_bytes, MAX_CONSTANT_BYTES, "max_constant_bytes"))
    if isinstance(model_or_path, (str, os.PathLike)):
        label = os.path.basename(os.fspath(model_or_path))
        model = _load(os.fspath(model_or_path))
    elif isinstance(model_or_path, onnx.ModelProto):
        model, label = model_or_path, "model.onnx"
    else:
        raise TapeirError(f"from_onnx expects an onnx.ModelProto or a path, got {type(model_or_path).__name__}")
    with limits_in_force(bounds), dim_sources():
        graph = _import(model, params, label)
    try:
        verify(graph)
    except TapeirError as e:  # an importer bug rather than a bad model: say which model
        raise type(e)(f"{label}: the imported graph fails the IR verifier: {e.problem}", hint=e.hint) from None
    return graph


def _bound(v, default, name):
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise TapeirError(f"from_onnx: {name}={v!r}", hint=f"{name} is a number >= 0 (math.inf for no bound)")
    return v


def _import(model, params, label) -> Graph:
    check_strings(model, label)
    # tapeir's own functions (softplus, ...) import as their ops; other model-local functions,
    # fused bodies (tapeir.fused_K) among them, are inlined (tp.fuse can group them again)
    keep = {(f.domain, f.name, f.overload) for f in model.functions
            if f.domain == ONNX_DOMAIN and f.name in TAPEIR_FUNCTIONS}
    inline_budget(model, keep, label)
    if any((f.domain, f.name, f.overload) not in keep for f in model.functions):
        try:
            model = onnx.inliner.inline_selected_functions(model, [k[:2] for k in keep], exclude=True)
        except Exception as e:  # noqa: BLE001 - onnx's C++ inliner on a malformed function
            raise TapeirError(f"{label}: cannot inline the model-local functions: {type(e).__name__}: {e}") from None
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in _DOMAINS), 1)
    check_names(g, label)
    _check_supported(g, label)

    known = {t.name: initializer(t, label) for t in g.initializer}
    known.update((s.values.name, sparse_initializer(s, label)) for s in g.sparse_initializer)
    graph_inputs = [vi for vi in g.input if vi.name not in known]  # old models list initializers among the inputs too
    symbols = DimSymbols(graph_inputs)
    names = [vi.name for vi in graph_inputs]
    specs = [_spec(vi, symbols, label) for vi in graph_inputs]
    if params == "inputs":
        for name, arr in list(known.items()):
            if arr.dtype.kind == "f":
                names.append(name)
                specs.append(Spec(arr.shape, _np_dtype(arr, name, label)))
                del known[name]

    keys = training_dropouts(g, opset, known)
    names += list(keys.values())
    specs += [Spec((), "int64") for _ in keys]

    def interpret(*xs):
        return _interpret(g, dict(zip(names, xs)), known, opset, label, keys)
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
        if n.op_type not in _table(n.domain) and not (n.domain in _DOMAINS and n.op_type in FOLD_ONLY):
            op = n.op_type if n.domain in _DOMAINS else f"{n.domain}.{n.op_type}"
            missing[op].append(n.name or f"{n.op_type}#{i}")
    if missing:
        parts = [f"{op} ({len(ns)} node{'s' * (len(ns) > 1)}: {', '.join(ns[:5])}{', ...' * (len(ns) > 5)})"
                 for op, ns in sorted(missing.items())]
        raise TapeirError(f"cannot import {label}: {len(missing)} unsupported ONNX op type"
                          f"{'s' * (len(missing) > 1)}: " + "; ".join(parts),
                          hint=f"tapeir imports {len(IMPORT)} op types (tapeir.frontend.onnx.IMPORT)")


def _spec(vi, symbols: DimSymbols, label) -> Spec:
    where = f"{label}: input {vi.name!r}"
    if not vi.type.HasField("tensor_type"):
        raise TapeirError(f"{where} is not a tensor (sequences, maps and optionals have no tapeir type)")
    tt = vi.type.tensor_type
    if tt.elem_type not in ONNX_DTYPES:
        raise TapeirError(f"{where} has ONNX type {elem_name(tt.elem_type)}, which tapeir "
                          "has no dtype for", hint="tapeir supports float16/32/64, int32/64 and bool")
    if not tt.HasField("shape"):
        raise TapeirError(f"{where} has no shape, so its rank is unknown",
                          hint="give the input a shape (dim_param names work for dynamic sizes)")
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            check_dim_value(d.dim_value, where)
            dims.append(d.dim_value)
        else:
            dims.append(symbols(d.dim_param) if d.dim_param else symbols((vi.name, axis), f"{vi.name}_{axis}"))
            if max_coefficient(dims[-1]) >= 2**63:
                raise TapeirError(f"{where}: dim {d.dim_param!r} has a factor of 2**63 or more",
                                  hint="ONNX dims are int64")
    return Spec(dims, ONNX_DTYPES[tt.elem_type])


def _np_dtype(arr, name, label):
    try:
        return Spec((), arr.dtype).dtype
    except TapeirError:
        raise TapeirError(f"{label}: initializer {name!r} has dtype {arr.dtype}, which tapeir has no dtype for") from None


def _interpret(g, env, known, opset, label, keys=None):
    env = {**known, **env}
    for v in env.values():
        note_dims(v)
    builder = current_builder()
    for i, proto in enumerate(g.node):
        where = node_where(label, proto, i)
        n = OnnxNode(proto, opset, where)
        check_arity(n, len(proto.input))
        ins = []
        for name in proto.input:
            if name and name not in env:
                raise n.error(f"input {name!r} is not produced by any earlier node, input or initializer",
                              hint="ONNX graphs must list nodes in topological order")
            ins.append(env[name] if name else None)
        while ins and ins[-1] is None:
            ins.pop()
        if keys and i in keys:  # a training-mode Dropout: its key input goes last
            ins = ins + [None] * (3 - len(ins)) + [env[keys[i]]]
        with builder.at(where):  # IR recorded for this ONNX node points at it
            outs = _run(n, ins)
        outs = outs if isinstance(outs, tuple) else (outs,)
        check_big_dims(n, outs)
        for name, v in zip(proto.output, outs):
            if name:
                env[name] = np.asarray(v) if isinstance(v, (np.generic, int, float, bool)) else v
                note_dims(v)
    outs = []
    for o in g.output:
        if o.name not in env:  # check_names saw a writer: a node whose rule made fewer outputs
            raise TapeirError(f"{label}: graph output {o.name!r} is not computed by the node that names it")
        v = env[o.name]
        if isinstance(v, list):
            raise TapeirError(f"{label}: output {o.name!r} is a sequence of {len(v)} tensors",
                              hint="a graph output must be a tensor (sequences live inside the import only)")
        if is_symbolic(v):
            raise TapeirError(f"{label}: output {o.name!r} is a shape with symbolic dims {v.tolist()}",
                              hint="a graph output must be a tensor; give the input static dims")
        outs.append(v)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _run(n: OnnxNode, ins):
    try:
        if n.proto.domain == ONNX_DOMAIN:  # no ONNX schema to check the arity against: the rule's own
            rule = TAPEIR_FUNCTIONS[n.op]
            try:
                inspect.signature(rule).bind(n, *ins)
            except TypeError:
                raise n.error(f"has {len(ins)} inputs; tapeir's {n.op} takes "
                              f"{len(inspect.signature(rule).parameters) - 1}") from None
            return rule(n, *ins)
        given = [v for v in ins if v is not None]
        # Expand of known data to a symbolic shape, or Pad of it by symbolic widths (the gradient
        # of x[:2] on an axis T pads by T-2), is a real tensor (e.g. zeros [B, 2]), not dims
        data_is_dims = not (n.op in ("Expand", "Pad") and not is_symbolic(ins[0]) and is_symbolic(ins[1]))
        if n.op != "Constant" and given and all(is_static(v) for v in given) and data_is_dims:
            if any(is_symbolic(v) for v in given):
                if n.op not in SYMBOLIC:
                    raise n.error("computes on symbolic dims " + ", ".join(str(v.tolist()) for v in given if is_symbolic(v)),
                                  hint="tapeir folds shape arithmetic of Shape/Gather/Concat/Unsqueeze/Slice/"
                                       "Reshape/Mul/Div; export with static shapes otherwise")
                outs = SYMBOLIC[n.op](n, *ins)
                return tuple(_dims_array(v) for v in (outs if isinstance(outs, tuple) else (outs,)))
            if can_fold(n, ins):
                return fold(n, ins)
        if any(is_symbolic(v) for v in given) and any(isinstance(v, Tensor) for v in given):
            # sizes mixed with tensors (arange(B) * T): the sizes become run-time values, except
            # operands that must be known at import time (a Reshape target keeps its dims)
            static = STATIC_OPERANDS.get(n.op, ())
            ins = [run_time_dims(n, v) if is_symbolic(v) and i not in static else v for i, v in enumerate(ins)]
        return (IMPORT.get(n.op) or FOLD_ONLY[n.op])(n, *ins)
    except TapeirError as e:
        if e.problem.startswith("ONNX "):
            raise
        raise type(e)(f"ONNX {n.op} node {n.where!r}: {e.problem}", where=n.where, hint=e.hint) from None
    except Exception as e:  # a numpy or onnx error: still name the node
        raise TapeirError(f"ONNX {n.op} node {n.where!r}: {type(e).__name__}: {e}", where=n.where) from e


def _dims_array(v):
    """A vector of dims: int64 when every dim is known, else an object array."""
    if isinstance(v, Tensor):
        return v
    v = np.asarray(v, dtype=object)
    return v.astype(np.int64) if all(isinstance(d, (int, np.integer)) for d in v.reshape(-1)) else v
