"""Simplification passes. Each is Graph -> Graph and never mutates its input.

Rules:
  1. dce: drop nodes none of whose outputs reach a graph output, and unused constants.
  2. drop_identities: `mul(x, 1)`, `mul(1, x)`, `add(x, 0)`, `add(0, x)`, `sub(x, 0)` and
     `div(x, 1)` are x when the result has x's type (a constant operand that would
     broadcast x to a bigger shape is kept). Autodiff seeds make many of these. For floats
     the zero must be the one that keeps a -0.0 operand as it is: `x + -0.0` and `x - +0.0`
     are x, but `-0.0 + +0.0` is +0.0, so `x + 0.0` stays (as in IEEE 754 and LLVM).
  3. fold_constants: a node whose operands are all constants and whose result has at most
     FOLD_LIMIT elements becomes a constant (larger results stay computed, so dumps and
     files do not grow). The reference kernels evaluate it.
  4. cse: two nodes with the same op, operands and attributes are one (the first keeps
     its source line); equal constants are one.
  5. compose (inverse pairs and chains of shape ops; each is exact, so signed zeros and
     NaN payloads pass through unchanged):
     - `neg(neg(x))` is x;
     - `transpose(transpose(x, p), q)` is `transpose(x, [p[i] for i in q])`, and x itself
       when that permutation is the identity;
     - `reshape(reshape(x, s), t)` is `reshape(x, t)`: a reshape reads only x's elements in
       order, never the intermediate shape;
     - a reshape to x's own type is x.
     The outer node keeps its output value and source line (only its operand changes), so
     nothing downstream is rewritten; the inner node dies if nothing else reads it (dce).
  `canonicalize` applies 2-5 in ONE forward walk: nodes come in topological order and each
  rule looks only at a node's operands, which the walk has already rewritten, so one walk
  reaches the fixed point (linear in graph size). `simplify` is the pipeline
  canonicalize, dce, run through the pass manager (passes/manager.py).
"""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.errors import TapeirError
from ..ir.graph import Graph, Node, attr_key, constant
from ..ir.reference import REFERENCE  # folding evaluates exactly what the interpreter runs
from ..ir.registry import OPS
from .manager import PassManager

FOLD_LIMIT = 16
# op -> (the identity element, the operand slots it may sit in, the sign a float zero needs)
_IDENTITY = {"mul": (1, (0, 1), None), "add": (0, (0, 1), True), "sub": (0, (1,), False),
             "div": (1, (1,), None)}


def _fill_of(v):
    """The number every element of constant v equals (ints and floats), else None."""
    d = v.data
    if d is None or not d.size or d.dtype.kind not in "fiu":
        return None
    first = d.flat[0]
    return first if d.size == 1 or bool(np.all(d == first)) else None


def _rewrite(g: Graph, rules, dedupe: bool = False) -> Graph:
    """One forward walk over g. Each rule(node, operands, add_constant, producer) returns
    None (no change), replacement values for the node's outputs (the node goes; the walk
    moves on), or a new Node with the same outputs (it takes the node's place and the later
    rules see it). `producer(v)` is the node of the rewritten graph that computes v (None
    for inputs and constants). With dedupe, equal constants are one."""
    alias: dict[int, object] = {}
    consts: list = []
    canon: dict = {}

    def add_constant(c):
        if dedupe:
            key = (c.type, c.data.tobytes())
            hit = canon.get(key)
            if hit is not None:
                return hit
            canon[key] = c
        consts.append(c)
        return c

    for c in g.constants:
        kept = add_constant(c)
        if kept is not c:
            alias[id(c)] = kept
    nodes = []
    made: dict[int, Node] = {}

    def producer(v):
        return made.get(id(v))

    for n in g.nodes:
        inputs = [alias.get(id(v), v) for v in n.inputs]
        for rule in rules:
            rep = rule(n, inputs, add_constant, producer)
            if isinstance(rep, Node):
                n, inputs = rep, list(rep.inputs)
            elif rep is not None:
                alias.update((id(o), r) for o, r in zip(n.outputs, rep))
                break
        else:
            same = all(a is b for a, b in zip(inputs, n.inputs))
            n = n if same else Node(n.op, inputs, n.attrs, n.outputs, n.source)
            nodes.append(n)
            made.update((id(o), n) for o in n.outputs)
    return g.replace(nodes=nodes, outputs=[alias.get(id(v), v) for v in g.outputs], constants=consts)


def _identity_rule():
    fills: dict = {}  # id(constant) -> _fill_of(it): constants are immutable, decide once

    def rule(n, inputs, add_constant, producer):
        spec = _IDENTITY.get(n.op)
        if spec is not None:
            value, const_slots, negative_zero = spec
            for k in const_slots:
                c = inputs[k]
                if c.data is None:
                    continue
                fill = fills[id(c)] if id(c) in fills else fills.setdefault(id(c), _fill_of(c))
                if fill is None or fill != value or inputs[1 - k].type != n.outputs[0].type:
                    continue
                if negative_zero is None or c.data.dtype.kind != "f" or bool(np.signbit(fill)) == negative_zero:
                    return [inputs[1 - k]]
        return None
    return rule


def _fold_rule(n, inputs, add_constant, producer):
    if len(n.outputs) != 1 or not all(v.data is not None for v in inputs):
        return None
    out = n.outputs[0].type
    if not out.is_static or int(np.prod(out.shape, dtype=np.int64)) > FOLD_LIMIT:
        return None
    try:
        with np.errstate(all="ignore"):
            r = np.asarray(REFERENCE[n.op](n.attrs)(*[v.data for v in inputs]), dtype=to_numpy(out.dtype))
    except Exception:  # e.g. a label out of range: leave it to fail at run time, with its source
        return None
    if r.shape != tuple(out.shape):
        return None
    return [add_constant(constant(r))]


def _compose_rule(n, inputs, add_constant, producer):
    """Rule 5: neg of neg, transpose of transpose, reshape of reshape, identity reshape."""
    op = n.op
    if op not in ("neg", "transpose", "reshape"):
        return None
    x = inputs[0]
    inner = producer(x)
    out = n.outputs[0]
    if op == "reshape" and x.type == out.type:
        return [x]
    if inner is None or inner.op != op:
        return None
    if op == "neg":
        return [inner.inputs[0]]
    if op == "transpose":
        p, q = inner.attrs["perm"], n.attrs["perm"]
        perm = tuple(p[i] for i in q)
        if perm == tuple(range(len(perm))):
            return [inner.inputs[0]]
        return Node("transpose", [inner.inputs[0]], {"perm": perm}, n.outputs, n.source)
    # reshape: the shape attribute may hold -1 or symbols; keep the rewrite only when the
    # type rule gives the same result type from the original operand
    attrs = n.attrs
    try:
        t, = OPS["reshape"].infer([inner.inputs[0].type], attrs)
    except TapeirError:
        return None
    if t != out.type:
        return None
    if inner.inputs[0].type == out.type:
        return [inner.inputs[0]]
    return Node("reshape", [inner.inputs[0]], attrs, n.outputs, n.source)


def _cse_rule():
    seen: dict = {}

    def rule(n, inputs, add_constant, producer):
        key = (n.op, tuple(map(id, inputs)), tuple(sorted((k, attr_key(v)) for k, v in n.attrs.items())))
        hit = seen.get(key)
        if hit is not None:
            return hit
        seen[key] = n.outputs
        return None
    return rule


def drop_identities(g: Graph) -> Graph:
    """Forward x through ops that leave it unchanged (rule 2), then remove what died.

    >>> import tapeir as tp
    >>> g = drop_identities(tp.trace(lambda x: (x * 1.0 - 0.0) / 1.0, tp.Spec((3,))))
    >>> len(g.nodes), g.outputs[0] is g.inputs[0]
    (0, True)
    >>> [n.op for n in drop_identities(tp.trace(lambda x: x + 0.0, tp.Spec((3,)))).nodes]  # -0.0 + 0.0 is 0.0
    ['add']
    """
    return dce(_rewrite(g, [_identity_rule()]))


def fold_constants(g: Graph) -> Graph:
    """Evaluate small all-constant subexpressions now (rule 3), then remove what died.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: x * tp.exp(np.zeros(3, np.float32)), tp.Spec((3,)))
    >>> [n.op for n in g.nodes], [n.op for n in fold_constants(g).nodes]
    (['exp', 'mul'], ['mul'])
    """
    return dce(_rewrite(g, [_fold_rule]))


def cse(g: Graph) -> Graph:
    """Common-subexpression elimination (rule 4), then remove what died.

    >>> import tapeir as tp
    >>> g = tp.trace(lambda x: tp.exp(x) + tp.exp(x), tp.Spec((3,)))
    >>> [n.op for n in g.nodes], [n.op for n in cse(g).nodes]
    (['exp', 'exp', 'add'], ['exp', 'add'])
    """
    return dce(_rewrite(g, [_cse_rule()], dedupe=True))


def canonicalize(g: Graph) -> Graph:
    """Rules 2-5 in one forward walk (dead nodes stay: run dce after it).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (tp.exp(x) * 1.0, tp.tanh(x))[0] + tp.exp(x), tp.Spec((3,)))
    >>> [n.op for n in g.nodes], [n.op for n in canonicalize(g).nodes]
    (['exp', 'mul', 'tanh', 'exp', 'add'], ['exp', 'tanh', 'add'])
    """
    return _rewrite(g, [_identity_rule(), _compose_rule, _fold_rule, _cse_rule()], dedupe=True)


def dce(g: Graph) -> Graph:
    """Dead-code elimination (rule 1): keep the nodes and constants the outputs depend on.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (tp.exp(x), x * 2.0)[1], np.ones(2, np.float32))
    >>> len(g.nodes), len(dce(g).nodes)
    (2, 1)
    """
    live = {id(v) for v in g.outputs}
    kept = []
    for n in reversed(g.nodes):
        for o in n.outputs:
            if id(o) in live:
                kept.append(n)
                live.update(id(v) for v in n.inputs)
                break
    kept.reverse()
    return g.replace(nodes=kept, constants=[c for c in g.constants if id(c) in live])


SIMPLIFY = PassManager([canonicalize, dce])


def simplify(g: Graph) -> Graph:
    """Rules 2-5 in one walk, then dead-code elimination, through the pass manager.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (x * (2.0 - 1.0) + tp.exp(x)) + tp.exp(x), tp.Spec((3,)))
    >>> [n.op for n in simplify(g).nodes]
    ['exp', 'add', 'add']
    """
    return SIMPLIFY(g)
