"""Export a Graph to ONNX: plain ai.onnx operators plus a few local functions.

Every IR op lowers through one table, `EXPORT` (backends/onnx_lowering.py), to standard
ai.onnx operators; the ops with no operator of the same meaning (softplus, logsumexp,
gelu below opset 20) become calls of ONNX local functions in the "tapeir" domain
(backends/onnx_functions.py). No com.microsoft or training ops: stock onnxruntime, or any
runtime of the chosen opset, runs forward and backward graphs alike.

Opsets: 15 (CastLike, which type-generic function bodies need) up to the highest both the
installed onnx and onnxruntime support. The default is 20, the lowest opset in which every
IR op with an ai.onnx twin exports natively (Gelu needs 20, AveragePool dilations 19,
LayerNormalization 17). A lower opset lowers gelu through a local function and layer_norm
through its formula, and refuses what it cannot express (avg_pool2d with dilation below
19), naming the op, its source line and the opset it needs. The IR version is the lowest
onnx allows for the opset (at least 8, for local functions); `ir_version=` may raise it.

Names, chosen so the model reads next to the graph's text form (kept in
`model.doc_string`, where a large constant prints as `const initializer "%cK"`: the
weights are stored once, in the initializer):
  * graph inputs keep their IR names (`params.w1`, `x`); symbolic dims become dim_param;
  * constants are initializers `%c0`, `%c1`, ...; node results are `%0`, `%1`, ... as in
    the text form; the extra nodes one IR node lowers to are named `%5.0`, `%5.1`, ...
    after its result, and every ONNX node carries its IR node's source line as doc_string;
  * graph outputs keep the graph's `output_names`: by default their path in the output
    pytree (`output`, or `output.0`, `output.1.w1`, ...); `tp.value_and_grad` names its
    results `value` and `grad.<input name>` (`grad.params.w1`), `tp.grad` the latter;
    an imported model keeps its own names. `output_names=` overrides them.
The same graph exports to the same bytes every time (no timestamps, names depend only on
the graph). A reshape or broadcast_to whose target shape holds a symbolic dim builds it at
run time from the Shape of a graph input that carries the symbol.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ir import __version__
from ..ir.dtypes import to_numpy
from ..ir.errors import TapeirError
from ..ir.printer import print_graph
from ..ir.serialize import atomic_write, replace_durably
from ..ir.types import factors, from_factors, from_poly, linear_in_one, poly
from . import onnx_functions, onnx_fused
from .onnx_lowering import EXPORT, elem_type

__all__ = ["EXPORT", "to_onnx", "save_onnx", "max_opset", "output_names"]

MIN_OPSET = 15
DEFAULT_OPSET = 20
MIN_IR_VERSION = 8          # local functions (model.functions) arrived in IR version 8
EXTERNAL_DATA_LIMIT = 2 ** 31 - 2 ** 26   # protobuf's 2 GiB limit, less room for the graph
TENSOR_LIMIT = 2 ** 31 - 2 ** 20          # one TensorProto, with room for its name and dims


def _probe(opset: int) -> bool:
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    ops = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=ops, ir_version=helper.find_min_ir_version_for(ops))
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime says "opset N is not supported" only through its exceptions
        return False
    return True


@functools.lru_cache(maxsize=None)
def max_opset() -> int:
    """The highest opset both the installed onnx and onnxruntime (if installed) support."""
    top = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return top
    lo, hi = MIN_OPSET, top  # binary search for the last opset onnxruntime loads
    if _probe(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _probe(mid) else (lo, mid)
    return lo


def check_opset(opset) -> int:
    if opset is None:
        return min(DEFAULT_OPSET, max_opset())
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TapeirError(f"opset={opset!r} is not an int", hint=f"pick an opset in {MIN_OPSET}..{max_opset()}")
    opset, top = int(opset), max_opset()
    if opset < MIN_OPSET:
        raise TapeirError(f"opset {opset} is too old for tapeir's export (the minimum is {MIN_OPSET})",
                          hint=f"opset {MIN_OPSET} brings CastLike, which tapeir's local functions need; "
                               f"pick an opset in {MIN_OPSET}..{top}")
    if opset > top:
        raise TapeirError(f"opset {opset} is newer than the installed onnx/onnxruntime support (at most {top})",
                          hint=f"pick an opset in {MIN_OPSET}..{top} (onnx {onnx.__version__} knows "
                               f"{onnx.defs.onnx_opset_version()}), or upgrade onnxruntime")
    return opset


def _check_ir_version(ir_version, opset: int) -> int:
    need = max(MIN_IR_VERSION, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    if ir_version is None:
        return need
    if isinstance(ir_version, bool) or not isinstance(ir_version, (int, np.integer)):
        raise TapeirError(f"ir_version={ir_version!r} is not an int")
    if ir_version < need:
        raise TapeirError(f"IR version {ir_version} cannot express this model: opset {opset} and local "
                          f"functions need IR version {need} or newer", hint=f"use ir_version >= {need}, or None")
    if ir_version > onnx.IR_VERSION:
        raise TapeirError(f"IR version {ir_version} is newer than onnx {onnx.__version__} knows ({onnx.IR_VERSION})")
    return int(ir_version)


class Lowering:
    """The state of one export; EXPORT rules call its methods to emit ONNX nodes."""

    def __init__(self, graph, opset: int, fused: str = "function"):
        self.graph = graph
        self.opset = opset
        self.fused = fused                  # "function" or "inline": how fused nodes export
        self.fused_functions: dict = {}     # a body function's key -> its FunctionProto (onnx_fused)
        self.nodes: list = []
        self.initializers: list = []
        self._init_names: set[str] = set()
        self.functions: set[str] = set()
        self._shapes: dict[str, str] = {}   # input name -> its Shape
        self._dims: dict = {}               # dim -> 1-D int64 [1] tensor of its size
        self._symbols = self._symbol_sources(graph)
        self._held = {}  # symbolic dim -> (input name, axis) of the first input that has it
        for v in graph.inputs:
            for axis, d in enumerate(v.type.shape):
                if isinstance(d, str):
                    self._held.setdefault(d, (v.name, axis))
        self.node = None        # the IR node being lowered
        self._stem = ""
        self._temps = 0

    # ---- called by the driver ----
    def begin(self, node, stem: str):
        self.node, self._stem, self._temps = node, stem, 0

    def body_lowering(self, body) -> "FunctionLowering":
        """The lowering of a fused body as a local function's nodes (backends/onnx_fused.py)."""
        return FunctionLowering(body, self.opset, self)

    def fused_call(self, node, ins, outs):
        """Export fused `node` as a call of a local function holding its body."""
        onnx_fused.export_call(self, node, ins, outs)

    # ---- called by rules ----
    def fail(self, problem: str, hint: str | None = None):
        n = self.node
        types = ", ".join(str(v.type) for v in n.inputs)
        raise TapeirError(f"cannot export {n.op}({types}) to ONNX opset {self.opset}: {problem}",
                          where=n.source or "<no source>", hint=hint)

    def require(self, opset: int, why: str):
        if self.opset < opset:
            self.fail(f"{why} needs opset {opset} or newer", hint=f"export with opset >= {opset}")

    def tmp(self) -> str:
        name = f"{self._stem}.{self._temps}"
        self._temps += 1
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, domain: str = "", **attrs) -> str:
        """Emit one node with a single output (a fresh temp unless `out`); returns the output name."""
        out = out or self.tmp()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{out}/{op_type}",
                                           doc_string=(self.node.source or "") if self.node else "",
                                           domain=domain, **attrs))
        return out

    def call(self, function: str, *inputs: str, out: str | None = None, **attrs) -> str:
        """Call local function `function` (added to the model once)."""
        self.functions.add(function)
        return self.op(function, *inputs, out=out, domain=onnx_functions.DOMAIN, **attrs)

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        """An initializer; helpers' small constants are named, and shared, by content."""
        array = np.asarray(array)
        if name is None:
            values = ",".join(str(x) for x in array.reshape(-1))
            shape = "" if array.ndim == 1 else "(scalar)" if array.ndim == 0 else str(list(array.shape))
            name = f"%{array.dtype.name}{shape}[{values}]"
        if name not in self._init_names:
            if array.nbytes > TENSOR_LIMIT:  # protobuf cannot hold one tensor this big
                raise TapeirError(f"constant {name} ({array.dtype}{list(array.shape)}, {array.nbytes / 2**30:.2f} GiB) "
                                  "is larger than one ONNX tensor can be (protobuf's 2 GB limit)",
                                  hint="split it into several constants (e.g. by rows, then concatenate), "
                                       "or pass it as an input; a model may hold more than 2 GB in all")
            self._init_names.add(name)
            self.initializers.append(numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64).reshape(-1))

    def scalar(self, value, dtype: str) -> str:
        return self.const(np.asarray(value).astype(to_numpy(dtype)))

    def shape_tensor(self, dims) -> str:
        """A 1-D int64 tensor of `dims` (ints, -1 and symbolic dims, sized at run time)."""
        if all(isinstance(d, int) for d in dims):
            return self.ints(dims)
        parts, run = [], []
        for d in dims:
            if isinstance(d, int):
                run.append(d)
                continue
            if run:
                parts.append(self.ints(run))
                run = []
            parts.append(self.dim(d))
        if run:
            parts.append(self.ints(run))
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0)

    def dim(self, d) -> str:
        """A 1-D int64 [1] tensor holding the run-time size of symbolic dim `d` (`%dim(B)`):
        a product is built from its prefix (reused when another dim made it), a sum from its
        terms (T+1: Add; T-1: Sub)."""
        hit = self._dims.get(d)
        if hit is not None:
            return hit
        terms = poly(d)
        held = self._held.get(d)
        if held is not None and (len(terms) > 1 or factors(d)[0] != 1):  # an input holds it: read it there
            out = self._global(f"%dim({d})", lambda o: helper.make_node(
                "Gather", [self._shape_of(held[0]), self.ints([held[1]])], [o], axis=0))
        elif len(terms) > 1:
            # positive terms first, so no Sub starts from nothing; each partial sum is a dim of its
            # own (%dim(B*T+B) for B*T+B+1), made once
            ordered = sorted(terms.items(), key=lambda kv: (kv[1] < 0, -len(kv[0]), kv[0]))
            (m, c), rest = ordered[0], ordered[1:]
            acc = {m: c}
            out = self.dim(from_poly(acc)) if m else self.ints([c])
            for m, c in rest:
                part = self.dim(from_poly({m: abs(c)})) if m else self.ints([abs(c)])
                acc[m] = c
                name = from_poly(acc)
                hit = self._dims.get(name)
                if hit is None:
                    hit = self._dims[name] = self._global(f"%dim({name})", lambda o, a=out, b=part, c=c:
                                                          helper.make_node("Add" if c > 0 else "Sub", [a, b], [o]))
                out = hit
        else:
            coef, syms = factors(d)
            if len(syms) == 1 and coef == 1:
                out = self._symbol(syms[0])
            elif coef == 1:  # B*T: (all symbols but the last) * the last, each through dim() so
                # a prefix another dim already made ("%dim(B*B)" for B*B*B) is reused, not made twice
                out = self._global(f"%dim({d})", lambda o, a=self.dim(from_factors(1, syms[:-1])),
                                   b=self.dim(syms[-1]): helper.make_node("Mul", [a, b], [o]))
            else:
                out = self._global(f"%dim({d})", lambda o, a=self.dim(from_factors(1, syms)):
                                   helper.make_node("Mul", [a, self.ints([coef])], [o]))
        self._dims[d] = out
        return out

    def _symbol(self, sym: str) -> str:
        if sym not in self._symbols:
            self.fail(f"symbolic dim {sym!r} appears in no graph input's shape, so its size is unknown "
                      f"at run time", hint="trace with an input whose shape carries the symbol")
        name, axis, coef, const = self._symbols[sym]
        shape = self._shape_of(name)
        plain = coef == 1 and const == 0
        picked = f"%dim({sym})" if plain else f"%dim({name}[{axis}])"
        out = self._global(picked, lambda o: helper.make_node("Gather", [shape, self.ints([axis])], [o], axis=0))
        if const:  # the input holds coef*sym + const
            out = self._global(f"%dim({name}[{axis}]-{const})" if coef != 1 else f"%dim({sym})",
                               lambda o, a=out: helper.make_node("Sub", [a, self.ints([const])], [o]))
        if coef != 1:
            out = self._global(f"%dim({sym})", lambda o, a=out: helper.make_node("Div", [a, self.ints([coef])], [o]))
        return out

    def _global(self, out: str, make) -> str:
        """A node computing a graph-wide helper value (no IR node's source line)."""
        node = make(out)
        node.name = f"{out}/{node.op_type}"
        self.nodes.append(node)
        return out

    def _shape_of(self, name: str) -> str:
        shape = self._shapes.get(name)
        if shape is None:
            shape = self._shapes[name] = self._global(f"%shape({name})",
                                                      lambda o: helper.make_node("Shape", [name], [o]))
        return shape

    @staticmethod
    def _symbol_sources(graph) -> dict:
        """symbol -> (input name, axis, a, c) for the first input dim a*symbol + c that tells
        the symbol's size, preferring a dim that is the symbol alone (a=1, c=0)."""
        out: dict = {}
        for v in graph.inputs:
            for axis, d in enumerate(v.type.shape):
                lin = linear_in_one(d)
                if lin is not None:
                    sym, a, c = lin
                    if sym not in out or ((a, c) == (1, 0) and out[sym][2:] != (1, 0)):
                        out[sym] = (v.name, axis, a, c)
        return out


class FunctionLowering(Lowering):
    """A Lowering whose nodes become a local function's body: functions have no
    initializers, so constants are Constant nodes (shared by content), and no graph inputs
    to read symbolic sizes from (fused bodies are elementwise and never ask for them)."""

    def __init__(self, body, opset: int, parent: Lowering):
        super().__init__(body, opset, parent.fused)
        self.parent = parent
        self._constants: dict = {}  # (dtype, shape, bytes) -> the Constant's output name

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        hit = self._constants.get(key)
        if hit is not None:
            return hit
        if name is None:
            values = ",".join(str(x) for x in array.reshape(-1))
            shape = "" if array.ndim == 1 else "(scalar)" if array.ndim == 0 else str(list(array.shape))
            name = f"%{array.dtype.name}{shape}[{values}]"
        self._constants[key] = name
        tensor = numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name)
        self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}/Constant", value=tensor))
        return name

    def dim(self, d) -> str:
        self.fail(f"a local function cannot read the run-time size of symbolic dim {d!r}",
                  hint="export with fused='inline'")


# ---- output names -------------------------------------------------------------------

def output_names(g) -> list[str]:
    """The ONNX names of g's outputs: the graph's own `output_names`."""
    return list(g.output_names)


# ---- the driver ---------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _type_proto(t) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(elem_type(t.dtype), list(t.shape))


def _value_info(name: str, t) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto(name=name)
    vi.type.CopyFrom(_type_proto(t))
    return vi


def to_onnx(g, opset: int | None = None, *, ir_version: int | None = None,
            output_names: list[str] | None = None, fused: str = "function") -> onnx.ModelProto:
    """Export `g` as an ONNX model of plain ai.onnx operators (plus tapeir local functions).

    fused="function" exports each fused node as a call of a local function holding its
    body, one per distinct body; fused="inline" writes the bodies' nodes into the graph
    (backends/onnx_fused.py).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: tp.softplus(x) * 2.0, tp.Spec(("B", 3)))
    >>> m = tp.to_onnx(g)
    >>> [n.op_type for n in m.graph.node], m.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    (['softplus', 'Mul'], 'B')
    """
    opset = check_opset(opset)
    ir_version = _check_ir_version(ir_version, opset)
    onnx_fused.check_mode(fused)
    missing = sorted({n.op for n in g.nodes} - set(EXPORT))
    if missing:
        raise TapeirError(f"no ONNX export rule for op(s) {missing}",
                          hint="add a rule to EXPORT in backends/onnx_lowering.py")
    outs = _resolve_output_names(g, output_names)
    low = Lowering(g, opset, fused)
    names: dict[int, str] = {id(v): v.name for v in g.inputs}
    used_consts = {id(v) for n in g.nodes for v in n.inputs} | {id(v) for v in g.outputs}
    for i, c in enumerate(g.constants):
        names[id(c)] = c.name or f"%c{i}"  # tp.bind names its constants after the inputs they were
        if id(c) in used_consts:
            low.const(c.data, names[id(c)])
    # a graph output produced by a node is that node's result; others (inputs, constants,
    # repeats) are copied with Identity
    direct: dict[int, str] = {}
    for v, name in zip(g.outputs, outs):
        if id(v) not in names and id(v) not in direct:
            direct[id(v)] = name
    value_info = []
    counter = 0
    for n in g.nodes:
        low.begin(n, f"%{counter}")
        results = []
        for o in n.outputs:
            results.append(direct.get(id(o), f"%{counter}"))
            if id(o) not in direct:
                value_info.append(_value_info(results[-1], o.type))
            names[id(o)] = results[-1]
            counter += 1
        EXPORT[n.op](low, n, [names[id(v)] for v in n.inputs], results)
    low.begin(None, "%out")
    for v, name in zip(g.outputs, outs):
        if names[id(v)] != name:
            low.op("Identity", names[id(v)], out=name)
    inputs = [_value_info(v.name, v.type) for v in g.inputs]
    outputs = [_value_info(name, v.type) for v, name in zip(g.outputs, outs)]
    _check_names(g, low)
    graph = helper.make_graph(low.nodes, g.name, inputs, outputs, low.initializers, value_info=value_info)
    opsets = [helper.make_opsetid("", opset)]
    functions = [onnx_functions.make_function(f, opset) for f in sorted(low.functions)]
    functions += low.fused_functions.values()  # fused_0, fused_1, ... in order of first use
    if functions:
        opsets.append(helper.make_opsetid(onnx_functions.DOMAIN, onnx_functions.DOMAIN_VERSION))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version, functions=functions,
                              producer_name="tapeir", producer_version=__version__,
                              doc_string=print_graph(g, constants_by_name=True))
    return model


def _resolve_output_names(g, given) -> list[str]:
    if given is not None:
        given = list(given)
        if len(given) != len(g.outputs) or not all(isinstance(s, str) and s for s in given):
            raise TapeirError(f"output_names needs {len(g.outputs)} non-empty strings, got {given!r}")
        if len(set(given)) != len(given):
            raise TapeirError(f"output_names {given!r} repeats a name")
        return given
    names, taken = [], {v.name for v in g.inputs}
    for name in output_names(g):
        base, k = name, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def _check_names(g, low):
    """Every ONNX value has one producer: an input, an initializer or one node output."""
    seen: set[str] = set()
    dup: set[str] = set()
    names = [v.name for v in g.inputs] + [t.name for t in low.initializers]
    names += [o for node in low.nodes for o in node.output]
    for name in names:
        (dup if name in seen else seen).add(name)
    if dup:
        raise TapeirError(f"ONNX value name(s) {sorted(dup)} would have two producers",
                          hint="rename the argument, dict key or output_names entry "
                               "(names starting with '%' are the export's own)")


def save_onnx(g, path, opset: int | None = None, *, external_data: bool | None = None, **kw) -> None:
    """Export `g` (see `to_onnx`) and write it to `path`.

    Initializers go to a side file `<path>.data` when `external_data` is True, or when it
    is None and they exceed protobuf's 2 GB limit. Each file is written beside the target and
    renamed over it (a failed save leaves the previous files as they were), and the same
    graph saves to the same bytes.

    >>> import os, tempfile, numpy as np, tapeir as tp
    >>> path = os.path.join(tempfile.mkdtemp(), "f.onnx")
    >>> tp.save_onnx(tp.trace(lambda x: x * 2.0, tp.Spec((3,))), path)
    >>> os.path.getsize(path) > 0
    True
    """
    model = to_onnx(g, opset, **kw)
    if external_data is None:
        external_data = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_LIMIT
    path = os.fspath(path)
    if not external_data:
        with atomic_write(path) as tmp:
            onnx.save_model(model, tmp)
        return
    # onnx appends to an existing data file: write both files fresh in a scratch folder beside
    # the target (same bytes for the same graph), then rename each into place (same file
    # system: no copy), the data before the model that points into it
    name = os.path.basename(path)
    scratch = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{name}.")
    try:
        onnx.save_model(model, os.path.join(scratch, name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=name + ".data", size_threshold=1024)
        for part in (name + ".data", name):
            replace_durably(os.path.join(scratch, part), os.path.join(os.path.dirname(path), part))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
