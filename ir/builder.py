"""The IR builder: the one way to emit new nodes. The tracer, the importer and autodiff use
it; passes that only rewire nodes they already have (simplify) rebuild with `g.replace`.

A Builder collects the nodes and constants of one graph under construction:
  1. `emit(op, inputs, attrs)` checks arity and attributes against the registry, applies
     the op's type rule and appends one Node; a rejected node is a TypeRuleError that
     names the op and the current source line;
  2. `const(array)` makes a constant Value, shared by every use of the same small array
     (by value) or the same large array object (by identity);
  3. `inline(graph, inputs)` re-emits another graph's nodes on new operands (types are
     re-inferred, so a graph traced with a symbolic dim inlines at a concrete size);
     `adopt(graph)` starts from a graph's own nodes and Values as they are (graphs are
     values, so sharing them is safe): what a pass that extends a graph needs;
  4. every node records a source line: the one set by `with b.at(source):` (None means no
     source), else `default_source()`, which subclasses override (the tracer returns the
     user's `file:line`; a plain Builder has none);
  5. `build(...)` returns the Graph; unnamed graph outputs this builder created are named
     after their output names. A Value another graph holds is never renamed, and Nodes and
     Values may be shared between graphs (a pass's result shares what it left unchanged):
     nothing changes them once a graph holds them.

>>> import numpy as np
>>> from tapeir.ir import TensorType
>>> b = Builder()
>>> x = b.input(TensorType("f32", ("B",)), "x")
>>> with b.at("model.py:3"):
...     y, = b.emit("mul", [x, b.const(np.float32(2))])
>>> print(b.build("double", [x], [y]), end="")
graph double(x: f32[B]) {
  %c0: f32[] = const 2.0
  %0: f32[B] = mul(x, %c0)  # model.py:3
  return %0
}
"""
from __future__ import annotations

import gc

import numpy as np

from .errors import TapeirError, TypeRuleError
from .graph import Graph, Node, Value, constant
from .pytree import LEAF, TreeDef
from .registry import OPS
from .types import TensorType, solve, substitute, symbols_of

_UNSET = object()  # no `at(...)` context: the source comes from default_source()


class _At:
    """The context manager `Builder.at` returns (a class: cheaper than contextlib per use)."""

    __slots__ = ("builder", "source", "saved")

    def __init__(self, builder, source):
        self.builder, self.source = builder, source

    def __enter__(self):
        self.saved = self.builder._at
        self.builder._at = self.source

    def __exit__(self, *exc):
        self.builder._at = self.saved


class paused_gc:
    """`with paused_gc():` the cyclic garbage collector is off (then back as it was).

    A graph holds no reference cycles, so while one is built the collector only rescans it,
    over and over: with it on, tracing or differentiating 100k ops costs ~30% more per op
    than 10k (bench/bench_trace.py).
    """

    __slots__ = ("was_enabled",)

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()


class Builder:
    """Builds one Graph node by node (see the module docstring for the rules)."""

    def __init__(self, symbols: frozenset | None = None):
        self.nodes: list[Node] = []
        self.constants: list[Value] = []
        self.symbols = symbols           # symbolic dims the inputs bind; None: not checked
        self._const_cache: dict = {}
        self._types: dict = {}           # interned types: fewer objects for the GC to rescan
        self._at = _UNSET
        self._own: set[int] = set()      # ids of the Values emit() made (build names only those)

    # ---- source lines ----
    def at(self, source: str | None) -> _At:
        """`with b.at(source):` nodes emitted inside record `source` (None: no source)."""
        return _At(self, source)

    def default_source(self) -> str | None:
        """The source of nodes emitted outside any `at` context: none for a plain Builder."""
        return None

    def source(self) -> str | None:
        """The source line the next node records."""
        return self.default_source() if self._at is _UNSET else self._at

    # ---- values ----
    def input(self, type: TensorType, name: str) -> Value:
        """A new graph input (inputs are named: argument name plus pytree path)."""
        return Value(self._types.setdefault(type, type), name)

    def const(self, array, keep=None) -> Value:
        """A constant for `array`, shared by every use of the same array or scalar.

        A constant is the array's value at the time of use, as eager code sees it. Large
        arrays (more than 64 elements) dedupe by the identity of `keep` (default: the array
        itself, kept alive so its id stays unique) and are reused only while their bytes
        are unchanged (one comparison per use: an array mutated between two uses becomes a
        second constant); small ones dedupe by value.
        """
        array = np.asarray(array)
        if keep is None and array.size > 64:
            keep = array
        key = (id(keep),) if keep is not None else (array.dtype.str, array.shape, array.tobytes())
        hit = self._const_cache.get(key)
        if hit is not None and (keep is None or _unchanged(hit[0].data, array)):
            return hit[0]
        v = constant(array)
        self._const_cache[key] = (v, keep)
        self.constants.append(v)
        return v

    # ---- nodes ----
    def emit(self, op: str, inputs: list[Value], attrs: dict | None = None) -> list[Value]:
        """Append `op(inputs) {attrs}` and return its output Values (TypeRuleError if ill-typed)."""
        opdef = OPS.get(op)
        source = self.default_source() if self._at is _UNSET else self._at
        if opdef is None:
            raise TypeRuleError(f"unknown op {op!r}", where=source, hint="see tapeir.ir.OPS for the op set")
        try:
            attrs = opdef.normalize_attrs(attrs or {})
            out_types = opdef.infer([v.type for v in inputs], attrs)
        except TapeirError as e:
            raise TypeRuleError(e.problem, where=source, hint=e.hint) from None
        if self.symbols is not None and opdef.shape_attrs:
            self._check_symbols(op, opdef.shape_attrs, out_types, attrs, source)
        types = self._types
        outs = [Value(types.setdefault(t, t)) for t in out_types]
        self.nodes.append(Node(op, inputs, attrs, outs, source))
        self._own.update(map(id, outs))
        return outs

    def _check_symbols(self, op, shape_attrs, out_types, attrs, source):
        # only ops with shape attributes can introduce a symbol their operands lack
        used = {s for t in out_types for d in t.shape if isinstance(d, str) for s in symbols_of(d)}
        for k in shape_attrs:
            used.update(s for d in attrs[k] if isinstance(d, str) for s in symbols_of(d))
        free = sorted(used - self.symbols)
        if free:
            raise TypeRuleError(
                f"{op}: symbolic dim {', '.join(map(repr, free))} is not a dim of any input "
                f"(inputs have {', '.join(map(repr, sorted(self.symbols))) or 'no symbolic dims'})",
                where=source, hint="symbolic dims come from inputs such as tp.Spec(('B', 64)); build shapes "
                                   "from x.shape (x.shape[0] * 2 is '2*B') or use -1 in reshape")

    def inline(self, graph: Graph, inputs: list[Value], env: dict | None = None) -> list[Value]:
        """Emit graph's nodes here, reading `inputs` for its inputs; return its outputs.

        Types are re-inferred (symbolic dims are substituted by the dims `inputs` have) and
        nodes keep their source lines; a node without one takes the current source. `env`,
        if given, receives id(old value) -> new value.
        """
        env = {} if env is None else env
        subst: dict = {}  # graph's symbols -> the dims they have here ("B" -> 3, or "B" -> "N")
        for _ in range(2):  # a product ("4*B") may need another input to bind B first
            for a, b in zip(graph.inputs, inputs):
                for d_old, d_new in zip(a.type.shape, b.type.shape):
                    if isinstance(d_old, str):
                        solve(d_old, d_new, subst)
        for a, b in zip(graph.inputs, inputs):  # one symbol, one size: B cannot be 3 here and 4 there
            want = tuple(substitute(d, subst) if isinstance(d, str) else d for d in a.type.shape)
            if want != b.type.shape:
                raise TypeRuleError(
                    f"input {a.name} of {graph.name} is {a.type}, which makes it "
                    f"{a.type.with_shape(want)} here, but it gets {b.type}",
                    where=self.source(), hint="a symbolic dim must have the same size in every input that has it")
        env.update((id(a), b) for a, b in zip(graph.inputs, inputs))
        for c in graph.constants:
            env[id(c)] = self.const(c.data)
        fallback, saved = self.source(), self._at
        try:
            for n in graph.nodes:
                attrs = n.attrs
                if subst:
                    for k in OPS[n.op].shape_attrs:
                        attrs = {**attrs, k: tuple(substitute(d, subst) if isinstance(d, str) else d
                                                   for d in attrs[k])}
                self._at = n.source if n.source is not None else fallback
                outs = self.emit(n.op, [env[id(v)] for v in n.inputs], attrs)
                env.update((id(o), p) for o, p in zip(n.outputs, outs))
        finally:
            self._at = saved
        return [env[id(v)] for v in graph.outputs]

    def adopt(self, graph: Graph) -> dict:
        """Continue from graph: its nodes and constants are shared, not copied (graphs are
        values), except nodes producing one of its outputs and nodes downstream of them,
        which are re-emitted so the new graph can name its outputs without renaming Values
        that `graph` holds. Returns id(old value) -> new value for the re-emitted ones.
        """
        for c in graph.constants:
            self.constants.append(c)
            if c.data.size <= 64:
                self._const_cache.setdefault((c.data.dtype.str, c.data.shape, c.data.tobytes()), (c, None))
        env: dict = {}
        outputs = {id(v) for v in graph.outputs}
        saved = self._at
        try:
            for n in graph.nodes:
                if env and not env.keys().isdisjoint(map(id, n.inputs)) or not outputs.isdisjoint(map(id, n.outputs)):
                    self._at = n.source
                    outs = self.emit(n.op, [env.get(id(v), v) for v in n.inputs], n.attrs)
                    env.update((id(o), p) for o, p in zip(n.outputs, outs))
                else:
                    self.nodes.append(n)
        finally:
            self._at = saved
        return env

    # ---- the result ----
    def build(self, name: str, inputs: list[Value], outputs: list[Value], *, arg_names: list[str] | None = None,
              in_tree: TreeDef | None = None, out_tree: TreeDef = LEAF,
              output_names: list[str] | None = None) -> Graph:
        """The Graph of the nodes emitted so far.

        Default: one argument per input (named after the inputs) and one leaf per output.
        Unnamed node outputs among `outputs` take their output name.
        """
        if in_tree is None:
            in_tree = TreeDef("tuple", tuple(LEAF for _ in inputs))
            arg_names = [v.name for v in inputs] if arg_names is None else arg_names
        g = Graph(name, arg_names, in_tree, inputs, self.nodes, out_tree, outputs, self.constants, output_names)
        for v, n in zip(outputs, g.output_names):
            if v.name is None and id(v) in self._own:
                v.name = n
        return g


def _unchanged(snapshot: np.ndarray, array: np.ndarray) -> bool:
    """Whether `array` still holds the bytes of `snapshot` (a constant's C-ordered copy of it).

    Compared as 64-bit words where the size allows (about the cost of one copy; nan and -0.0
    compare as bits, so a sign flip counts as a change)."""
    if array.shape != snapshot.shape:
        return False
    if array.dtype != snapshot.dtype or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=snapshot.dtype)
    word = np.uint64 if snapshot.nbytes % 8 == 0 else np.uint8
    return bool(np.array_equal(snapshot.reshape(-1).view(word), array.reshape(-1).view(word)))
