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
  1. only nodes whose kernel is a numpy ufunc (or a single-output fused kernel, which
     takes `out=` too) write into buffers, and only outputs of at least MIN_BYTES (small
     arrays come cheaply from malloc's free lists);
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
    """One preallocated array (or None: allocate as usual) per node; None instead of the
    list when the buffers would take more than max_bytes (then nothing is allocated).

    kernels[i] is node i's bound kernel (None when it is bound per call); types[i] is the
    (shape, numpy dtype) of its first output under the current binding. A failed
    allocation is a RunError naming the node and the bytes.
    """
    n = len(nodes)
    pooled = [False] * n
    roots: dict[int, frozenset] = {}  # value id -> nodes whose buffer this value may view
    empty: frozenset = frozenset()
    for i, node in enumerate(nodes):
        shape, dt = types[i]
        if ((isinstance(kernels[i], np.ufunc) or getattr(kernels[i], "takes_out", False)) and len(node.outputs) == 1
                and int(np.prod(shape, dtype=np.int64)) * dt.itemsize >= MIN_BYTES):
            pooled[i] = True
            roots[id(node.outputs[0])] = frozenset((i,))
        elif may_view(node.op):
            r = empty.union(*(roots.get(id(v), empty) for v in node.inputs))
            for o in node.outputs:
                roots[id(o)] = r
    for v in outputs:  # rule 4
        for r in roots.get(id(v), empty):
            pooled[r] = False
    end = {i: i for i in range(n) if pooled[i]}
    for j, node in enumerate(nodes):
        for v in node.inputs:
            for r in roots.get(id(v), empty):
                if pooled[r]:
                    end[r] = max(end[r], j)
    # first assign buffer numbers (so the total is known before anything is allocated)
    free: dict = defaultdict(list)
    dies_after: dict = defaultdict(list)
    which: list = [None] * n
    first: list[int] = []  # buffer k is first written by node first[k]
    for i in range(n):
        if pooled[i]:
            key = (tuple(types[i][0]), types[i][1])
            if free[key]:
                which[i] = free[key].pop()
            else:
                which[i] = len(first)
                first.append(i)
            dies_after[end[i]].append(i)
        for r in dies_after.pop(i, ()):
            free[(tuple(types[r][0]), types[r][1])].append(which[r])
    sizes = [int(np.prod(types[i][0], dtype=np.int64)) * types[i][1].itemsize for i in first]
    if max_bytes is not None and sum(sizes) > max_bytes:
        return None
    made = []
    for i, size in zip(first, sizes):
        try:
            made.append(np.empty(types[i][0], types[i][1]))
        except MemoryError:
            from ..ir.errors import RunError

            raise RunError(f"cannot allocate {size:,} bytes for the output "
                           f"{types[i][1].name}{list(types[i][0])} of node {i} ({nodes[i].op})",
                           where=nodes[i].source,
                           hint="the inputs' symbolic dims make this intermediate too large for memory; "
                                "use a smaller batch") from None
    return [None if k is None else made[k] for k in which]


def plan_nbytes(bufs) -> int:
    """Bytes held by the distinct buffers of a plan."""
    return sum(b.nbytes for b in {id(b): b for b in bufs if b is not None}.values())
