"""What from_onnx checks before it walks a model's nodes, so that a malformed or hostile
model fails with a TapeirError naming the node or value, never later and never with a
bare Python error:

  1. inline_budget: the nodes the model has once its model-local functions are inlined,
     counted before inlining (a function calling the previous one twice, 40 deep, would
     inline to 2**40 nodes); over max_nodes, or a function that calls itself, is refused.
  2. check_names: graph inputs, initializers and node outputs are written once each (no
     node overwrites an input, initializer or another node's output); graph outputs are
     named, distinct, and produced by something.
  3. initializer: its data matches its dims and dtype.
  4. check_arity: a node's input and output counts fit its ONNX schema.
  5. DimSymbols: ONNX dim_params become IR symbols, injectively (distinct names stay
     distinct symbols: "a b" and "a_b" must not both become a_b).
"""
from __future__ import annotations

import functools
import re

import numpy as np
import onnx
from onnx import defs, numpy_helper

from ..tensor import Tensor
from ...ir.errors import TapeirError
from ...ir.types import check_dim, max_coefficient
from .node import check_constant, limits, sparse_to_dense


def node_where(label: str, proto, i: int) -> str:
    """How errors and IR sources name an ONNX node: `model.onnx:<name or Op#index>`."""
    return f"{label}:{proto.name or f'{proto.op_type}#{i}'}".replace("\n", " ")


# ---- 1. the inlining budget -------------------------------------------------------------

def _subgraphs(node):
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def inline_budget(model, keep: set, label: str) -> int:
    """The ONNX nodes of `model` once every model-local function not in `keep` is inlined
    (nodes inside If/Loop bodies count too); a TapeirError over limits().max_nodes."""
    budget = limits().max_nodes
    funcs = {(f.domain, f.name, f.overload): f for f in model.functions}
    sizes: dict = {}
    active: list = []  # the call chain being counted, to name a recursion

    def count(nodes) -> int:
        total = 0
        for node in nodes:
            key = (node.domain, node.op_type, node.overload)
            total += size(key) if key in funcs and key not in keep else 1
            for sub in _subgraphs(node):
                total += count(sub.node)
        return total

    def size(key) -> int:
        if key not in sizes:
            if key in active:
                chain = " -> ".join(k[1] for k in active[active.index(key):] + [key])
                raise TapeirError(f"{label}: model-local function {key[1]!r} calls itself ({chain}), so it "
                                  "cannot be inlined", hint="ONNX functions may not be recursive")
            active.append(key)
            sizes[key] = count(funcs[key].node)
            active.pop()
            if sizes[key] > budget:
                raise TapeirError(f"{label}: model-local function {key[1]!r} inlines to {sizes[key]:,} ONNX nodes "
                                  f"(with the functions it calls), over the import's max_nodes={budget:,}",
                                  hint="if the model is trusted, pass a larger max_nodes to tp.from_onnx")
        return sizes[key]

    total = count(model.graph.node)
    if total > budget:
        raise TapeirError(f"{label}: the graph has {total:,} ONNX nodes once its model-local functions are "
                          f"inlined, over the import's max_nodes={budget:,}",
                          hint="if the model is trusted, pass a larger max_nodes to tp.from_onnx")
    return total


# ---- 2. names -----------------------------------------------------------------------------

def check_strings(msg, label: str, path: str = "model") -> None:
    """Every string field of the model is text: protobuf hands invalid UTF-8 in a string
    field (a name, an op type, a dim_param) to Python as bytes, which no rule expects."""
    for fd, value in msg.ListFields():
        if fd.name == "doc_string":
            continue  # never read
        many = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if fd.type == fd.TYPE_MESSAGE:
            for k, item in enumerate(value if many else [value]):
                check_strings(item, label, f"{path}.{fd.name}" + (f"[{k}]" if many else ""))
        elif fd.type == fd.TYPE_STRING:
            for item in value if many else [value]:
                if isinstance(item, bytes):
                    raise TapeirError(f"{label}: {path}.{fd.name} is not valid UTF-8: {item[:40]!r}",
                                      hint="ONNX names and strings are UTF-8 text; is the file corrupt?")


def check_names(g, label: str) -> None:
    written: dict[str, str] = {}  # name -> what wrote it ("graph input", "node 'm.onnx:Relu#0'", ...)
    for what, names in (("graph input", [v.name for v in g.input]),
                        ("initializer", [t.name for t in g.initializer]),
                        ("sparse initializer", [s.values.name for s in g.sparse_initializer])):
        for name in names:
            if not name:
                raise TapeirError(f"{label}: a {what} has an empty name")
            if name in written and not (what == "initializer" and written[name] == "graph input"):
                # (old models list each initializer among the graph inputs too: allowed)
                raise TapeirError(f"{label}: {what} {name!r} is already written by the {written[name]}",
                                  hint="every ONNX value is written once (SSA)")
            written[name] = what
    for i, node in enumerate(g.node):
        here = node_where(label, node, i)
        for name in node.output:
            if not name:
                continue  # an optional output the model does not read
            if name in written:
                raise TapeirError(f"ONNX {node.op_type} node {here!r} writes {name!r}, already written by the "
                                  f"{written[name]}", where=here, hint="every ONNX value is written once (SSA)")
            written[name] = f"node {here!r}"
    seen = set()
    for k, o in enumerate(g.output):
        if not o.name:
            raise TapeirError(f"{label}: graph output #{k} has an empty name", hint="every graph output needs a name")
        if o.name in seen:
            raise TapeirError(f"{label}: graph output {o.name!r} is listed twice",
                              hint="ONNX graph outputs have distinct names")
        seen.add(o.name)
        if o.name not in written:
            raise TapeirError(f"{label}: graph output {o.name!r} is produced by no node, input or initializer")


# ---- 3. initializers -------------------------------------------------------------------

def _dims(dims, what: str) -> None:
    if any(d < 0 for d in dims):
        raise TapeirError(f"{what} has a negative dim in {list(dims)}")


def initializer(t, label: str) -> np.ndarray:
    """An initializer's array, or a TapeirError naming it when its data does not fit."""
    what = f"{label}: initializer {t.name!r}"
    _dims(t.dims, what)
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # data of the wrong size (ValueError), an unknown data_type, ...
        raise TapeirError(f"{what} (dims {list(t.dims)}, data_type {t.data_type}) cannot be read: "
                          f"{type(e).__name__}: {e}", hint="its data must hold exactly prod(dims) values") from None


def sparse_initializer(s, label: str) -> np.ndarray:
    what = f"{label}: sparse initializer {s.values.name!r}"
    try:
        return sparse_to_dense(s)
    except TapeirError as e:
        raise TapeirError(f"{what}: {e.problem}", hint=e.hint) from None
    except Exception as e:  # indices out of range, values and indices of different lengths
        raise TapeirError(f"{what} (dims {list(s.dims)}) cannot be read: {type(e).__name__}: {e}") from None


# ---- 4. arity and attribute types ----------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _schema(op: str, opset: int, domain: str):
    try:
        return defs.get_schema(op, opset, domain)
    except Exception:  # noqa: BLE001 - SchemaError: no such op in that domain
        return None


def check_arity(n, n_inputs: int) -> None:
    """Inputs, outputs and attribute types of ONNX node `n` against its op's schema at the
    model's opset (an `axis` given as a string must not reach a rule as one)."""
    schema = _schema(n.op, n.opset, n.proto.domain)
    if schema is None:  # no schema (tapeir's local functions): the rule checks
        return
    outs = len(n.proto.output)
    for what, k, lo, hi in (("inputs", n_inputs, schema.min_input, schema.max_input),
                            ("outputs", outs, schema.min_output, schema.max_output)):
        if not lo <= k <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 2**31 - 1 else f"at least {lo}"
            raise n.error(f"has {k} {what}; {n.op} (opset {schema.since_version}) takes {want}")
    given = {a.name for a in n.proto.attribute}
    for name, declared in schema.attributes.items():
        if declared.required and name not in given:
            raise n.error(f"lacks attribute {name!r}, which {n.op} (opset {schema.since_version}) requires")
    for a in n.proto.attribute:
        declared = schema.attributes.get(a.name)
        if declared is not None and a.type != int(declared.type):
            kinds = onnx.AttributeProto.AttributeType
            raise n.error(f"attribute {a.name!r} is {kinds.Name(a.type) if a.type in kinds.values() else a.type}; "
                          f"{n.op} (opset {schema.since_version}) takes {kinds.Name(int(declared.type))}")


# ---- 5. dim names -> symbols --------------------------------------------------------------

_DIM = re.compile(r"[A-Za-z_]\w*(\*(\d+|[A-Za-z_]\w*))*|\d+(\*[A-Za-z_]\w*)+", re.ASCII)
_WORD = re.compile(r"[A-Za-z_]\w*", re.ASCII)


def _is_ir_sum(name: str) -> bool:
    """A dim_param that is a sum in tapeir's canonical form with an int or a product in it
    ("T+1", "B*T-B", as tapeir exports an input of that size). Names joined by a dash
    ("seq-len", "a-b") stay one symbol each (seq_len), as do non-canonical spellings."""
    if "+" not in name and "-" not in name:
        return False
    try:
        return check_dim(name) == name and bool(re.search(r"\*|(^|[+-])\d+($|[+-])", name))
    except TapeirError:
        return False


class DimSymbols:
    """ONNX dim_params -> IR dims. A name that already is an IR dim ("B", "3*B", "T+1", as
    tapeir exports) stays itself; any other is sanitized to an identifier and, should that
    clash with a symbol already in use, numbered (`a_b_2`), so that distinct names always
    map to distinct symbols. Unnamed dynamic dims get `<input>_<axis>`, numbered alike."""

    def __init__(self, graph_inputs):
        self._map: dict[str, str] = {}
        self._used: set[str] = set()
        names = [d.dim_param for vi in graph_inputs for d in vi.type.tensor_type.shape.dim if d.dim_param]
        for name in names:  # names that are IR dims already take their own symbols first
            if _DIM.fullmatch(name) or _is_ir_sum(name):
                self._map[name] = name
                self._used.update(_WORD.findall(name))

    def __call__(self, key, name: str | None = None) -> str:
        """The symbol of dim_param `key`, or of an unnamed dim keyed (input, axis) and named `name`."""
        if key not in self._map:
            s = re.sub(r"\W", "_", key if name is None else name, flags=re.ASCII)
            s = "_" + s if s[:1].isdigit() or not s else s
            sym, k = s, 1
            while sym in self._used:
                k += 1
                sym = f"{s}_{k}"
            self._used.add(sym)
            self._map[key] = sym
        return self._map[key]


def check_dim_value(d: int, what: str) -> None:
    if d < 0:
        raise TapeirError(f"{what} has a negative dim {d}", hint="ONNX dim_value is a size, >= 0")


def check_big_dims(n, outs) -> None:
    """No IR dim may reach 2**63 (ONNX stores dims as int64): name the node that made one."""
    for v in outs:
        if isinstance(v, Tensor) and any(max_coefficient(d) >= 2**63 for d in v.type.shape):
            raise n.error(f"makes a tensor of type {v.type}, with a dim of 2**63 or more",
                          hint="ONNX dims are int64")


__all__ = ["inline_budget", "check_names", "initializer", "sparse_initializer", "check_arity", "DimSymbols",
           "check_dim_value", "check_big_dims", "node_where", "check_constant"]
