"""Memory planning for the numpy backend.

Large intermediates of ufunc nodes (elementwise ops, matmul) are written with `out=`
into buffers that are allocated once per (thread, binding of the symbolic dims) and
reused: across calls, and across values whose lifetimes do not overlap. numpy would
otherwise allocate every result afresh; above glibc's mmap threshold a fresh array is
new pages the kernel must fault in, which cost a training step ~20% (bench_train_step).

Buffers outlive a call, so they are bounded: a compiled function keeps at most
CACHE_BYTES of them (all its threads together; the numpy backend's `buffer_cache_bytes`
option overrides it), and only for bindings that recur (numpy_backend.py, rule 2). A
plan whose buffers alone exceed the bound gets none: its call allocates as numpy does.

Rules:
  1. only nodes whose kernel is a numpy ufunc (or takes `out=` too: a single-output fused
     kernel, matmul) write into buffers, and fused kernels with several outputs (they take
     `outs=`, one buffer or None per output), and only outputs of at least MIN_BYTES (small
     arrays come cheaply from malloc's free lists). A GPT step's fused nodes spent ~35% of
     their time faulting in fresh pages for their outputs before they had buffers;
  2. the output of a shape op or clip may view its inputs (reshape, transpose, slices,
     an identity clip), so it keeps its inputs' buffers alive until its own last use;
     every other kernel returns a fresh array;
  3. a buffer is reused by a later node only after the last use of every value that
     may view it;
  4. a value that reaches a graph output never lives in a buffer: the caller keeps it,
     and the next call would overwrite it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

MIN_BYTES = 1 << 16
CACHE_BYTES = 256 << 20  # per compiled function; documented in the README's "Limits and guarantees"


def may_view(op: str) -> bool:
    from ..ir.registry import OPS, Category

    return OPS[op].category is Category.SHAPE or op == "clip"


def plan_buffers(nodes, outputs, kernels, types, max_bytes=None) -> list | None:
    """Per node, its preallocated output array (or None: allocate as usual); for a node
    whose kernel takes `outs=` (a fused node with several outputs), a tuple with one entry
    per output, or None. None instead of the list when the buffers would take more than
    max_bytes (then nothing is allocated).

    kernels[i] is node i's bound kernel (None when it is bound per call); types[i] is the
    (shape, numpy dtype) of its first output under the current binding (a fused node's
    outputs all have its one shape). A failed allocation is a RunError naming the node and
    the bytes.
    """
    from ..ir.dtypes import to_numpy

    n = len(nodes)
    # a pooled item is (node i, output j); roots: value id -> the items this value may view
    kind: list = [None] * n  # "one" (out=), "many" (outs=) or None
    item_type: dict = {}
    roots: dict[int, frozenset] = {}
    empty: frozenset = frozenset()
    for i, node in enumerate(nodes):
        shape, dt = types[i]
        elems = int(np.prod(shape, dtype=np.int64))
        k = kernels[i]
        if len(node.outputs) == 1 and (isinstance(k, np.ufunc) or getattr(k, "takes_out", False)):
            if elems * dt.itemsize >= MIN_BYTES:
                kind[i] = "one"
                item_type[(i, 0)] = (tuple(shape), dt)
                roots[id(node.outputs[0])] = frozenset(((i, 0),))
        elif len(node.outputs) > 1 and getattr(k, "takes_outs", False):
            for j, o in enumerate(node.outputs):
                odt = to_numpy(o.type.dtype)
                if elems * odt.itemsize >= MIN_BYTES:
                    kind[i] = "many"
                    item_type[(i, j)] = (tuple(shape), odt)
                    roots[id(o)] = frozenset(((i, j),))
        elif may_view(node.op):
            r = empty.union(*(roots.get(id(v), empty) for v in node.inputs))
            for o in node.outputs:
                roots[id(o)] = r
    for v in outputs:  # rule 4
        for r in roots.get(id(v), empty):
            item_type.pop(r, None)
    end = {it: it[0] for it in item_type}
    for j, node in enumerate(nodes):
        for v in node.inputs:
            for r in roots.get(id(v), empty):
                if r in end:
                    end[r] = max(end[r], j)
    # first assign buffer numbers (so the total is known before anything is allocated)
    free: dict = defaultdict(list)
    dies_after: dict = defaultdict(list)
    which: dict = {}
    first: list = []  # buffer k is first written by item first[k]
    by_node: dict = defaultdict(list)
    for it in item_type:
        by_node[it[0]].append(it)
    for i in range(n):
        for it in by_node.get(i, ()):  # all of a node's outputs before any release: distinct buffers
            key = item_type[it]
            if free[key]:
                which[it] = free[key].pop()
            else:
                which[it] = len(first)
                first.append(it)
            dies_after[end[it]].append(it)
        for it in dies_after.pop(i, ()):
            free[item_type[it]].append(which[it])
    sizes = [int(np.prod(item_type[it][0], dtype=np.int64)) * item_type[it][1].itemsize for it in first]
    if max_bytes is not None and sum(sizes) > max_bytes:
        return None
    made = []
    for it, size in zip(first, sizes):
        i = it[0]
        shape, dt = item_type[it]
        try:
            made.append(np.empty(shape, dt))
        except MemoryError:
            from ..ir.errors import RunError

            raise RunError(f"cannot allocate {size:,} bytes for the output "
                           f"{dt.name}{list(shape)} of node {i} ({nodes[i].op})",
                           where=nodes[i].source,
                           hint="the inputs' symbolic dims make this intermediate too large for memory; "
                                "use a smaller batch") from None
    result: list = [None] * n
    for i in range(n):
        if kind[i] == "one" and (i, 0) in which:
            result[i] = made[which[(i, 0)]]
        elif kind[i] == "many":
            outs = tuple(made[which[(i, j)]] if (i, j) in which else None for j in range(len(nodes[i].outputs)))
            result[i] = outs if any(o is not None for o in outs) else None
    return result


def plan_nbytes(bufs) -> int:
    """Bytes held by the distinct buffers of a plan."""
    flat = [b for x in bufs if x is not None for b in (x if isinstance(x, tuple) else (x,)) if b is not None]
    return sum(b.nbytes for b in {id(b): b for b in flat}.values())
