"""Reverse-mode autodiff as a pass: Graph -> Graph whose outputs include the gradients.

The driver starts a new IR builder from the forward nodes (shared: graphs are values),
then walks them in reverse, calling each op's VJP rule (passes/vjp_rules.py) on the
output cotangent. Rules record
IR, so the backward pass is an ordinary graph: printable, verifiable, differentiable
again. Rules:
  1. only nodes on a path from a `wrt` input to the output are differentiated;
  2. fan-out accumulates cotangents with `add`;
  3. a missing rule for a differentiable op is an error naming the op and source line, and
     so is an error a rule raises (the forward node's source line, not the tp.grad call);
  4. backward nodes carry the source line of the forward node they differentiate (none if
     it has none: the result never depends on where the pass was called from);
  5. a fused node is differentiated through its body: the graph is unfused first
     (passes/fusion.py), so the backward pass sees the ops the body holds;
  6. the result is cleaned up by the simplify pipeline (passes/simplify.py, through the pass
     manager): forward values it does not need are removed, the `x * 1` the seed cotangent
     leaves behind are dropped, small constant subexpressions fold and repeated
     subexpressions merge.
"""
from __future__ import annotations

import numpy as np

from ..frontend.tensor import Tensor
from ..frontend.tracer import recording
from ..ir.builder import Builder, paused_gc
from ..ir.dtypes import FLOATS, to_numpy
from ..ir.errors import TapeirError
from ..ir.graph import Graph, Value, require_graph
from ..ir.pytree import LEAF, TreeDef
from ..ir.registry import OPS
from ..ir.verifier import verify
from .fusion import unfuse
from .manager import verify_by_default
from .simplify import SIMPLIFY as CLEANUP
from .vjp_rules import VJP

# ops differentiated by rewriting them away before the backward walk (rule 5), not by a VJP rule
DIFFERENTIATED_BY_INLINING = frozenset({"fused"})


def _wrt_list(g: Graph, wrt) -> tuple[list[int], bool]:
    def is_index(w):
        return isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_))

    single = is_index(wrt)
    if not single and not (isinstance(wrt, (tuple, list)) and wrt and all(is_index(w) for w in wrt)):
        raise TapeirError(f"wrt={wrt!r}: expected an argument index or a tuple of them",
                          hint=f"{g.name} takes {', '.join(f'{i}: {n}' for i, n in enumerate(g.arg_names))}")
    idx = [int(wrt)] if single else [int(w) for w in wrt]
    for i in idx:
        if not 0 <= i < len(g.arg_names):
            raise TapeirError(f"wrt={wrt!r}: argument {i} does not exist; {g.name} takes "
                              f"{len(g.arg_names)} ({', '.join(g.arg_names)})")
        for k in g.input_range(i):
            v = g.inputs[k]
            if v.type.dtype not in FLOATS:
                raise TapeirError(
                    f"cannot differentiate with respect to {v.name}: it is {v.type}, not floating point",
                    hint="integer inputs (labels, indices) have no gradient; choose another wrt, "
                         "or move the integer leaves into an argument you do not differentiate")
    if len(set(idx)) != len(idx):
        raise TapeirError(f"wrt={wrt!r} names an argument twice")
    return idx, single


def _check_scalar_output(g: Graph, what: str):
    if len(g.outputs) != 1 or g.out_tree != LEAF:
        got = f"{len(g.outputs)} values" if len(g.outputs) != 1 else f"a {g.out_tree.kind} of one value"
        raise TapeirError(f"{what} needs a graph with one output, {g.name} returns {got}",
                          hint="return a single scalar loss (not wrapped in a tuple, list or dict)")
    t = g.outputs[0].type
    if t.shape != () or t.dtype not in FLOATS:
        raise TapeirError(f"{what} needs a scalar floating-point output, {g.name} returns {t}",
                          hint="reduce the output to a scalar first, e.g. .sum() or .mean()")


def _backward(b: Builder, g: Graph, env: dict, wrt_values: list[Value]) -> list[Tensor]:
    """Append the backward nodes of g (adopted by b; env: its re-emitted values) and return the grads."""
    active = {id(v) for v in wrt_values}
    for n in g.nodes:
        if not active.isdisjoint(map(id, n.inputs)) and OPS[n.op].differentiable:
            active.update(id(o) for o in n.outputs if o.type.dtype in FLOATS)
    out = g.outputs[0]
    ct: dict[int, Tensor] = {}
    if id(out) in active:
        ct[id(out)] = Tensor(b.const(np.ones((), to_numpy(out.type.dtype))), b)
    for n in reversed(g.nodes):
        if id(n.outputs[0]) not in ct or active.isdisjoint(map(id, n.inputs)):
            continue
        rule = VJP.get(n.op)
        if rule is None:
            raise TapeirError(f"no VJP rule for op {n.op!r}: cannot differentiate through it",
                              where=n.source, hint="add a rule to passes/vjp_rules.py, or stop the "
                              "gradient before this op")
        xs = [Tensor(env.get(id(v), v), b) for v in n.inputs]
        y = Tensor(env.get(id(n.outputs[0]), n.outputs[0]), b)
        g_out = ct[id(n.outputs[0])]
        with b.at(n.source):  # rule 4
            try:
                if rule.selective:
                    cts = rule(g_out, xs, y, n.attrs, [id(v) in active for v in n.inputs])
                else:
                    cts = rule(g_out, xs, y, n.attrs)
            except TapeirError as e:  # the rule's complaint is about the forward node: point there
                problem = e.problem if e.problem.startswith(n.op) else f"differentiating {n.op}: {e.problem}"
                raise type(e)(problem, where=n.source or e.where, hint=e.hint) from None
            if len(cts) != len(n.inputs):
                raise AssertionError(f"VJP rule for {n.op} returned {len(cts)} cotangents for {len(n.inputs)} inputs")
            for v, c in zip(n.inputs, cts):
                if c is None or id(v) not in active:
                    continue
                if c.value.type is not v.type and c.value.type != v.type:
                    raise AssertionError(f"VJP rule for {n.op} ({n.source}) gave a {c.value.type} cotangent "
                                         f"for a {v.type} input")
                prev = ct.get(id(v))
                ct[id(v)] = c if prev is None else prev + c  # rule 2
    grads = []
    for v in wrt_values:
        c = ct.get(id(v))
        if c is None:  # the output does not depend on v: zeros, pointing at no forward node
            zero = b.const(np.zeros((), to_numpy(v.type.dtype)))
            c = Tensor(zero if v.type.shape == () else b.emit("broadcast_to", [zero], {"shape": v.type.shape})[0], b)
        grads.append(c)
    return grads


def _differentiate(g: Graph, wrt, keep_value: bool, what: str) -> Graph:
    require_graph(g, f"tp.{what}")
    g = unfuse(g)  # rule 5
    _check_scalar_output(g, what)
    idx, single = _wrt_list(g, wrt)
    b = Builder()
    with paused_gc(), recording(b), b.at(None):  # a pass never records where it was called from
        env = b.adopt(g)  # the forward nodes, shared with g: the backward pass comes after them
        wrt_values = [g.inputs[k] for i in idx for k in g.input_range(i)]
        grads = _backward(b, g, env, wrt_values)
    # the grads mirror the wrt inputs' trees: built from their TreeDefs (a tree as deep as
    # the inputs allow stays valid, with no second flatten to refuse it)
    grad_tree = g.input_tree(idx[0]) if single else TreeDef("tuple", tuple(g.input_tree(i) for i in idx))
    value = env.get(id(g.outputs[0]), g.outputs[0])
    leaves = ([value] if keep_value else []) + [t.value for t in grads]
    out_tree = TreeDef("tuple", (LEAF, grad_tree)) if keep_value else grad_tree
    suffix = "value_and_grad" if keep_value else "grad"
    # outputs are named for what they are: `value`, and `grad.<input name>` per gradient
    names = (["value"] if keep_value else []) + ["grad." + v.name for v in wrt_values]
    raw = b.build(f"{g.name}_{suffix}", g.inputs, leaves, arg_names=g.arg_names, in_tree=g.in_tree,
                  out_tree=out_tree, output_names=names)
    if verify_by_default():  # in tests: the raw gradient graph too, before dce could hide a bad node
        verify(raw)
    with paused_gc():
        return CLEANUP(raw)  # rule 6


def value_and_grad(g: Graph, wrt=0) -> Graph:
    """A graph returning (value, grads) for g's scalar output; grads are as in `grad`.

    One pass gives both, sharing the forward computation (the usual training step).
    Its outputs are named `value` and `grad.<input name>`.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda w, x: ((x @ w) ** 2.0).sum(), np.ones(2, np.float32), np.ones((3, 2), np.float32))
    >>> value, grad = tp.run(tp.value_and_grad(g), np.ones(2, np.float32), np.ones((3, 2), np.float32))
    >>> float(value), grad.tolist()
    (12.0, [12.0, 12.0])
    """
    return _differentiate(g, wrt, True, "value_and_grad")


def grad(g: Graph, wrt=0) -> Graph:
    """A graph returning only the gradients of g's scalar output with respect to argument(s) `wrt`.

    g must return one float scalar. wrt is an argument index (default 0) or a tuple of
    them; the gradient mirrors that argument's pytree (a tuple of trees for a tuple) and
    has its dtypes. The new graph takes the same arguments as g; tp.call inlines it into
    another trace, so gradients of gradients are tp.grad of that trace.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda x: (x * x).sum(), np.ones(3, np.float32))
    >>> tp.run(tp.grad(g), np.arange(3, dtype=np.float32)).tolist()
    [0.0, 2.0, 4.0]
    >>> g = tp.trace(lambda p, x: (p["w"] * x).sum(), {"w": tp.Spec((2,))}, tp.Spec((2,)))
    >>> gp, gx = tp.run(tp.grad(g, wrt=(0, 1)), {"w": np.ones(2, np.float32)}, np.array([3.0, 4.0], np.float32))
    >>> gp["w"].tolist(), gx.tolist()
    ([3.0, 4.0], [1.0, 1.0])
    """
    return _differentiate(g, wrt, False, "grad")
