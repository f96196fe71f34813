"""Value, Node, Graph: the typed SSA IR.

A Value has one producer (a node, a graph input or a constant) and compares by
identity. A Graph lists its nodes in topological order; its inputs are the leaves of
the traced function's argument pytrees, named by path (`params.w1`), and its outputs
the leaves of the returned pytree. Graph equality (`==`) is structural: same inputs,
constants (bitwise), nodes, attributes, source lines and outputs.

Graphs are values: constructing one never changes the Values it is given (inputs arrive
named; ir/builder.py creates them), and `g.replace(...)` rebuilds one with changes, so a
pass returns a new graph and leaves its input as it was.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .dtypes import to_numpy
from .printer import print_graph
from .pytree import TreeDef, default_output_names, leaf_names
from .types import TensorType


class Value:
    """A typed SSA value: a graph input, a constant or a node output. `data` is set only for constants."""

    __slots__ = ("type", "name", "data")

    def __init__(self, type: TensorType, name: str | None = None, data: np.ndarray | None = None):
        self.type = type
        self.name = name
        self.data = data

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    def __repr__(self) -> str:
        return f"Value({self.name or hex(id(self))}: {self.type})"


def constant(array) -> Value:
    """A constant Value holding a private, read-only copy of `array`.

    >>> import numpy as np
    >>> c = constant(np.arange(3))
    >>> c.type, c.is_constant, c.data.flags.writeable
    (i64[3], True, False)
    """
    from .dtypes import dtype_of

    dt = dtype_of(np.asarray(array).dtype)
    arr = np.array(array, dtype=to_numpy(dt), copy=True, order="C")
    arr.flags.writeable = False
    return Value(TensorType(dt, arr.shape), data=arr)


class Node:
    """One op application: `outputs = op(inputs) {attrs}`, with the user's source line."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "source")

    def __init__(self, op: str, inputs: Iterable[Value], attrs: dict, outputs: Iterable[Value],
                 source: str | None = None):
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = dict(attrs)
        self.outputs = tuple(outputs)
        self.source = source

    def __repr__(self) -> str:
        return f"Node({self.op}, {len(self.inputs)} in, {len(self.outputs)} out, {self.source})"


class Graph:
    """A traced program.

    `arg_names[i]` names the i-th argument; `in_tree` is the TreeDef of the argument
    tuple, so `inputs` (its leaves) are named `arg_name + path`. `out_tree` is the
    TreeDef of the returned pytree, `outputs` its leaves, and `output_names` their names
    (default: `output` and paths below it, `output.0`, `output.1.w1`; autodiff names its
    results `value` and `grad.<input name>`; an imported ONNX model keeps its own). ONNX
    export uses these names.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: tp.exp(x) + 1.0, tp.Spec(("B",)))
    >>> g
    <Graph lambda: 1 inputs, 2 nodes, 1 outputs>
    >>> [n.op for n in g.nodes], g.input_names(), g.output_names, g.outputs[0].type
    (['exp', 'add'], ['x'], ['output'], f32[B])
    >>> tp.run(g, np.zeros(2, np.float32)).tolist()
    [2.0, 2.0]
    """

    def __init__(self, name: str, arg_names: list[str], in_tree: TreeDef, inputs: list[Value],
                 nodes: list[Node], out_tree: TreeDef, outputs: list[Value],
                 constants: list[Value] | None = None, output_names: list[str] | None = None):
        self.name = name
        self.arg_names = list(arg_names)
        self.in_tree = in_tree
        self.inputs = list(inputs)
        self.nodes = list(nodes)
        self.out_tree = out_tree
        self.outputs = list(outputs)
        self.constants = list(constants or [])
        self.output_names = list(output_names) if output_names is not None else default_output_names(out_tree)

    _FIELDS = ("name", "arg_names", "in_tree", "inputs", "nodes", "out_tree", "outputs", "constants",
               "output_names")

    def replace(self, **changes) -> "Graph":
        """A new Graph with some fields changed (nodes, outputs, constants, name, ...).

        >>> import tapeir as tp
        >>> g = tp.trace(lambda x: tp.exp(x), tp.Spec((2,)))
        >>> g.replace(name="f", nodes=[], outputs=g.inputs)
        <Graph f: 1 inputs, 0 nodes, 1 outputs>
        """
        unknown = set(changes) - set(self._FIELDS)
        if unknown:
            raise TypeError(f"Graph.replace: unknown field(s) {sorted(unknown)}; fields are {self._FIELDS}")
        return Graph(**{k: changes[k] if k in changes else getattr(self, k) for k in self._FIELDS})

    def input_names(self) -> list[str]:
        """The names of `inputs`: argument name plus pytree path (`params.w1`)."""
        return [n for name, td in zip(self.arg_names, self.in_tree.children) for n in leaf_names(name, td)]

    def input_tree(self, i: int) -> TreeDef:
        """The TreeDef of argument i."""
        return self.in_tree.children[i]

    def input_range(self, i: int) -> range:
        """Positions in `inputs` of argument i's leaves."""
        start = sum(c.num_leaves for c in self.in_tree.children[:i])
        return range(start, start + self.in_tree.children[i].num_leaves)

    def __str__(self) -> str:
        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"

    def _key(self):
        ids: dict[int, object] = {}
        for i, v in enumerate(self.inputs):
            ids[id(v)] = ("in", i)
        consts = []
        for i, v in enumerate(self.constants):
            ids[id(v)] = ("const", i)
            consts.append((str(v.type), v.data.tobytes()))
        nodes = []
        for j, n in enumerate(self.nodes):
            for k, o in enumerate(n.outputs):
                ids[id(o)] = ("node", j, k)
            nodes.append((n.op, tuple(ids.get(id(v), "?") for v in n.inputs),
                          tuple(sorted((k, attr_key(v)) for k, v in n.attrs.items())),
                          tuple(str(o.type) for o in n.outputs), n.source))
        return (self.name, tuple(self.arg_names), self.in_tree, tuple(str(v.type) for v in self.inputs),
                tuple(consts), tuple(nodes), self.out_tree, tuple(ids.get(id(v), "?") for v in self.outputs),
                tuple(self.output_names))

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and self._key() == other._key()

    __hash__ = None  # graphs are mutable containers


def require_graph(g, what: str) -> "Graph":
    """g itself, or a TapeirError saying what `what` expected (a Graph, not a function)."""
    if isinstance(g, Graph):
        return g
    from .errors import TapeirError

    got = "a function" if callable(g) else f"a {type(g).__name__}"
    raise TapeirError(f"{what} expects a Graph, got {got}",
                      hint=f"trace first: {what}(tp.trace(fn, *example_args))" if callable(g) else
                      "build graphs with tp.trace, tp.parse, tp.load or tp.from_onnx")


def attr_key(v):
    """A hashable key of an attribute value, equal when the values print the same: NaN equals
    NaN, -0.0 differs from 0.0, and a fused node's body compares structurally."""
    if isinstance(v, float):
        return ("float", repr(v))
    if isinstance(v, (tuple, list)):
        return tuple(attr_key(x) for x in v)
    if isinstance(v, Graph):  # a fused node's body: structurally, like the graph around it
        return ("graph", v._key())
    return v
