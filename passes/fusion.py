"""Fusion: groups of elementwise ops as one `fused` node whose body is a nested graph.

The fused op and what its body may hold are declared in ir/ops.py (`fused_rule`).

`fuse(g)` walks the nodes once, in topological order, and puts each elementwise node into
the group of one of its operands' producers or starts a new group. The boundary rules,
each with its reason:
  1. only ELEMENTWISE ops join (unary, binary with broadcasting, where, cast, clip,
     comparisons): their result at one position reads only that position of each operand,
     so a body runs block by block with no full-size temporary. Reductions, contractions,
     shape ops, windows, normalizations, losses and fused nodes end a group: they read
     across positions (or move them) and run as kernels of their own.
  2. a node joins a group only when it produces the group's one shape (the domain, the
     contract of ir/ops.py): a smaller result (a bias gradient before its reduction, a
     scalar) would need its own loop. Smaller operands broadcast into the body as inputs.
  3. a value used outside its group (by a node of another group or none, or as a graph
     output) becomes an output of the fused node: a forward value the backward pass
     reuses is computed once and kept.
  4. a group holds at most `max_nodes` nodes (MAX_NODES): a body's scratch (one block per
     live value) must stay small enough for a core's L2, and errors name a short body.
  5. a group of a single node stays the plain node: fusing it saves no pass over memory.
  6. a constant of at most SMALL_CONST (16) elements goes inside the body (it prints inline
     there and broadcasts per block); a larger one stays outside as an operand, so weights
     are stored once, in the outer graph.
  7. no cycles (a group must not both feed and consume a node outside it). Group ids grow
     in the order groups start; reach(v) is the largest id of a group that value v depends
     on (-1: none), so a group's own values reach exactly its id. A group is movable while
     no node outside it has read its values. A node n of domain D:
       a. joins group T = the largest reach among its operands that are not values of
          movable groups of domain D, when every such operand reaching T is T's own value;
       b. else joins the newest movable operand group of domain D, when that is newer
          than T; else starts a new group (the newest id);
     and the movable operand groups of domain D merge into n's group (size permitting),
     each only when it depends on no group at or after n's group (base < id). Why this is
     safe: an operand left outside n's group reaches below the group's id, so it does not
     depend on the group (n adds no path group -> outside -> group); a merged group was
     read by nothing outside it (no path leaves it) and depends on nothing at or after its
     new group (no path comes into it from there). Each group stays convex, so contracting
     every group to one node leaves the graph acyclic. A final check in the emission below
     asserts it. Nodes are then emitted in their order, each fused node where its last
     member was; a node reading a fused node's output before that waits for it (a
     topological sort that keeps the original order where it can).
  8. a group whose operands are all small constants stays plain nodes: a fused node
     needs an operand, and constant folding (simplify) is what such a group wants.
`fuse` is deterministic (same graph, same text) and linear in graph size: each node is
visited a constant number of times, each value looked up in dicts, groups merged with a
union-find (path halving). Body nodes keep their
source lines; the fused node takes its first member's. Body inputs are named after the
outer value when it is a graph input, else x0, x1, ...; bodies are named fused_0, fused_1, ...

`unfuse(g)` is the inverse: every fused node's body inlined back into the graph, with
fresh values (a body may be shared by several nodes) and symbols renamed to the node's
own dims. Autodiff differentiates a fused graph through it, so a graph that went through
tp.optimize is never one a user cannot differentiate.
"""
from __future__ import annotations

from ..ir.builder import Builder, paused_gc
from ..ir.graph import Graph, Node, Value, require_graph
from ..ir.pytree import LEAF, TreeDef
from ..ir.registry import OPS, Category
from ..ir.types import TensorType, solve, substitute

MAX_NODES = 64     # rule 4
SMALL_CONST = 16   # rule 6: elements


def fuse(g: Graph, max_nodes: int = MAX_NODES) -> Graph:
    """g with its connected elementwise ops grouped into `fused` nodes (rules above).

    >>> import tapeir as tp
    >>> g = tp.trace(lambda x, w: tp.tanh(x @ w) * 2.0 + 1.0, tp.Spec(("B", 3)), tp.Spec((3, 4)))
    >>> f = fuse(g)
    >>> [n.op for n in g.nodes], [n.op for n in f.nodes]
    (['matmul', 'tanh', 'mul', 'add'], ['matmul', 'fused'])
    >>> body = f.nodes[1].attrs["body"]
    >>> body.name, [v.name for v in body.inputs], [n.op for n in body.nodes], len(body.constants)
    ('fused_0', ['x0'], ['tanh', 'mul', 'add'], 2)
    >>> tp.parse(str(f)) == f
    True
    """
    g = require_graph(g, "tp.fuse")
    if max_nodes < 2:
        return g
    with paused_gc():  # a graph holds no cycles: the collector would only rescan it (ir/builder.py)
        return _fuse(g, max_nodes)


def _fuse(g: Graph, max_nodes: int) -> Graph:
    E = Category.ELEMENTWISE
    nodes = g.nodes
    reach: dict[int, int] = {}        # id(value) -> largest group id it depends on (absent: -1)
    made_by: dict[int, int] = {}      # id(value) -> group id of the node producing it
    parent: list[int] = []            # group id -> the group it merged into (itself: none)
    size: list[int] = []              # root group id -> its node count
    domains: list = []                # root group id -> its shape
    base: list[int] = []              # root group id -> largest reach of its operands from outside it
    read_outside: list[bool] = []     # group id -> a node outside it has read one of its values
    group_of = [-1] * len(nodes)

    def find(k):
        while parent[k] != k:
            parent[k] = k = parent[parent[k]]
        return k

    def reach_of(v):
        r = reach.get(id(v), -1)
        return find(r) if r >= 0 else -1

    def new_group(domain):
        parent.append(len(parent))
        size.append(0)
        domains.append(domain)
        base.append(-1)
        read_outside.append(False)
        return parent[-1]

    for i, n in enumerate(nodes):
        out = n.outputs[0].type.shape if len(n.outputs) == 1 else None
        fusible = out is not None and OPS[n.op].category is E
        top = -1                      # largest reach of the operands that must stay where they are
        movable: list[int] = []       # operand groups of n's domain nothing outside has read (rule 7b)
        for v in n.inputs:
            j = made_by.get(id(v))
            j = find(j) if j is not None else -1
            if fusible and j >= 0 and not read_outside[j] and domains[j] == out:
                if j not in movable:
                    movable.append(j)
            else:
                top = max(top, reach_of(v))
        k = -1
        if fusible:
            if top >= 0 and domains[top] == out and size[top] < max_nodes and all(
                    id(v) in made_by and find(made_by[id(v)]) == top for v in n.inputs if reach_of(v) == top):
                k = top               # rule 7a: every fixed operand reaching `top` is its own value
            elif movable and max(movable) > top and size[max(movable)] < max_nodes:
                k = max(movable)      # rule 7b: the newest movable group; the rest merge into it
            else:
                k = new_group(out)
            for j in movable:         # rule 7b: merge what fits; what does not is an operand
                if j != k and base[j] < k and size[j] + size[k] < max_nodes:
                    parent[j] = k
                    size[k] += size[j]
                    base[k] = max(base[k], base[j])
            if any(reach_of(v) >= k and (id(v) not in made_by or find(made_by[id(v)]) != k) for v in n.inputs):
                k = new_group(out)    # rare: a movable group too big to merge reaches k; start afresh
            for v in n.inputs:
                j = made_by.get(id(v))
                if j is None or find(j) != k:
                    base[k] = max(base[k], reach_of(v))
            size[k] += 1
            group_of[i] = k
            o = n.outputs[0]
            reach[id(o)] = made_by[id(o)] = k
        else:
            top = max((reach_of(v) for v in n.inputs), default=-1)
            if top >= 0:
                reach.update((id(o), top) for o in n.outputs)
        for v in n.inputs:
            j = made_by.get(id(v))
            if j is not None and find(j) != k:
                read_outside[find(j)] = True
    groups: dict[int, list] = {}      # root -> node positions, in order (one pass: linear)
    for i, k in enumerate(group_of):
        if k >= 0:
            group_of[i] = k = find(k)
            groups.setdefault(k, []).append(i)
    if all(len(m) < 2 for m in groups.values()):
        return g
    return _rebuild(g, groups, group_of)


def _rebuild(g: Graph, groups: dict, group_of: list) -> Graph:
    nodes = g.nodes
    for m in groups.values():
        if len(m) < 2:  # rule 5
            group_of[m[0]] = -1
    made_by = {id(nodes[i].outputs[0]): k for i, k in enumerate(group_of) if k >= 0}
    escapes: set[int] = {id(v) for v in g.outputs if id(v) in made_by}  # rule 3
    for i, n in enumerate(nodes):
        k = group_of[i]
        for v in n.inputs:
            p = made_by.get(id(v))
            if p is not None and p != k:
                escapes.add(id(v))
    graph_inputs = {id(v): v.name for v in g.inputs}
    taken = set(graph_inputs.values())
    fused: dict[int, Node] = {}       # group id -> its fused node
    for k, m in groups.items():
        if len(m) < 2:
            continue
        outs = [nodes[i].outputs[0] for i in m if id(nodes[i].outputs[0]) in escapes]
        if not outs:  # dead code: nothing reads the group; dce's business, not ours
            for i in m:
                group_of[i] = -1
            continue
        node = _fused_node(f"fused_{len(fused)}", [nodes[i] for i in m], outs, graph_inputs, taken)
        if node is None:  # rule 8: it reads only small constants
            for i in m:
                group_of[i] = -1
            continue
        fused[k] = node
    # emit (rule 7): each node at its place, each fused node at its last member's place; an
    # item reading an item not yet emitted waits until that one is
    N = len(nodes)
    item_of_value: dict[int, int] = {}
    for i, n in enumerate(nodes):
        k = group_of[i]
        item = N + k if k in fused else i
        for o in n.outputs:
            item_of_value[id(o)] = item
    last = {m[-1]: k for k, m in groups.items() if k in fused}
    emitted: set[int] = set()
    pending: dict[int, int] = {}      # item -> how many items it still waits for
    waiters: dict[int, list] = {}     # item -> the items waiting for it
    out_nodes: list[Node] = []
    for i, n in enumerate(nodes):
        if group_of[i] in fused:
            if i not in last:
                continue
            item, node = N + last[i], fused[last[i]]
        else:
            item, node = i, n
        deps = sorted({item_of_value[id(v)] for v in node.inputs if id(v) in item_of_value} - emitted)
        if deps:
            pending[item] = len(deps)
            for d in deps:
                waiters.setdefault(d, []).append(item)
            continue
        stack = [item]
        while stack:
            t = stack.pop()
            out_nodes.append(nodes[t] if t < N else fused[t - N])
            emitted.add(t)
            for w in reversed(waiters.pop(t, ())):
                pending[w] -= 1
                if pending[w] == 0:
                    stack.append(w)
    # rule 7 proves this; an assertion keeps a broken proof from becoming a wrong graph
    assert len(out_nodes) == len(emitted) == N - sum(len(groups[k]) - 1 for k in fused), "fuse: cycle"
    used = {id(v) for n in out_nodes for v in n.inputs} | {id(v) for v in g.outputs}
    return g.replace(nodes=out_nodes, constants=[c for c in g.constants if id(c) in used])


def _fused_node(name: str, members: list, outs: list, graph_inputs: dict, taken: set) -> Node | None:
    """One fused node computing `members` (in order) and returning `outs`, its body built
    with the IR builder; None when the group reads no operand (rule 8)."""
    b = Builder()
    env: dict[int, Value] = {}
    operands: list[Value] = []
    params: list[Value] = []
    count = 0
    for m in members:
        args = []
        for v in m.inputs:
            w = env.get(id(v))
            if w is None:
                if v.data is not None and v.data.size <= SMALL_CONST:  # rule 6
                    w = b.const(v.data)
                else:
                    label = graph_inputs.get(id(v))
                    if label is None:  # generated names skip every graph input's name
                        while f"x{count}" in taken:
                            count += 1
                        label = f"x{count}"
                        count += 1
                    w = b.input(v.type, label)
                    operands.append(v)
                    params.append(w)
                env[id(v)] = w
            args.append(w)
        with b.at(m.source):
            r, = b.emit(m.op, args, m.attrs)
        env[id(m.outputs[0])] = r
    if not operands:
        return None
    tree = LEAF if len(outs) == 1 else TreeDef("tuple", tuple(LEAF for _ in outs))
    body = b.build(name, params, [env[id(v)] for v in outs], out_tree=tree)
    node = Node("fused", operands, {"body": body}, outs, members[0].source)
    types = OPS["fused"].infer([v.type for v in operands], node.attrs)
    assert types == [v.type for v in outs], f"fuse: {name} would change types {[v.type for v in outs]} -> {types}"
    return node


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
