"""Fusion: groups of elementwise ops as one `fused` node whose body is a nested graph.

The fused op and what its body may hold are declared in ir/ops.py (`fused_rule`).

`unfuse(g)` is the inverse: every fused node's body inlined back into the graph, with
fresh values (a body may be shared by several nodes) and symbols renamed to the node's
own dims. Autodiff differentiates a fused graph through it, so a graph that went through
tp.optimize is never one a user cannot differentiate.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node, Value
from ..ir.types import TensorType, solve, substitute


def unfuse(g: Graph) -> Graph:
    """g with each fused node replaced by its body's nodes (g itself when it has none).

    >>> import numpy as np, tapeir as tp
    >>> from tapeir.ir import TensorType
    >>> from tapeir.ir.builder import Builder
    >>> body = tp.trace(lambda a: tp.exp(a) * 2.0, tp.Spec(("N",)))
    >>> b = Builder()
    >>> x = b.input(TensorType("f32", ("B",)), "x")
    >>> y, = b.emit("fused", [x], {"body": body})
    >>> g = b.build("f", [x], [y])
    >>> [n.op for n in g.nodes], [n.op for n in unfuse(g).nodes], unfuse(g).outputs[0].type
    (['fused'], ['exp', 'mul'], f32[B])
    >>> tp.run(unfuse(g), np.zeros(2, np.float32)).tolist() == tp.run(g, np.zeros(2, np.float32)).tolist()
    True
    """
    if not any(n.op == "fused" for n in g.nodes):
        return g
    alias: dict[int, Value] = {}
    nodes: list[Node] = []
    constants = list(g.constants)
    for n in g.nodes:
        ins = [alias.get(id(v), v) for v in n.inputs]
        if n.op != "fused":
            same = all(a is b for a, b in zip(ins, n.inputs))
            nodes.append(n if same else Node(n.op, ins, n.attrs, n.outputs, n.source))
            continue
        body = n.attrs["body"]
        subst: dict = {}
        for _ in range(2):
            for a, v in zip(body.inputs, ins):
                for d_old, d_new in zip(a.type.shape, v.type.shape):
                    if isinstance(d_old, str):
                        solve(d_old, d_new, subst)
        env: dict[int, Value] = {id(a): v for a, v in zip(body.inputs, ins)}
        for c in body.constants:
            env[id(c)] = fresh = Value(c.type, data=c.data)  # data is read-only: shared safely
            constants.append(fresh)
        for m in body.nodes:
            outs = [Value(TensorType(o.type.dtype, tuple(substitute(d, subst) if isinstance(d, str) else d
                                                         for d in o.type.shape))) for o in m.outputs]
            nodes.append(Node(m.op, [env[id(v)] for v in m.inputs], m.attrs, outs, m.source))
            env.update((id(o), p) for o, p in zip(m.outputs, outs))
        alias.update((id(o), env[id(v)]) for o, v in zip(n.outputs, body.outputs))
    return g.replace(nodes=nodes, constants=constants, outputs=[alias.get(id(v), v) for v in g.outputs])
