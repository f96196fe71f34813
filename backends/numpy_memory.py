"""Memory planning for the numpy backend.

Large intermediates of ufunc nodes (elementwise ops, matmul) are written with `out=`
into buffers that are allocated once per (thread, binding of the symbolic dims) and
reused: across calls, and across values whose lifetimes do not overlap. numpy would
otherwise allocate every result afresh; above glibc's mmap threshold a fresh array is
new pages the kernel must fault in, which cost a training step ~20% (bench_train_step).

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


def may_view(op: str) -> bool:
    from ..ir.registry import OPS, Category

    return OPS[op].category is Category.SHAPE or op == "clip"


def plan_buffers(nodes, outputs, kernels, types) -> list:
    """One preallocated array (or None: allocate as usual) per node.

    kernels[i] is node i's bound kernel (None when it is bound per call); types[i] is the
    (shape, numpy dtype) of its first output under the current binding.
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
    free: dict = defaultdict(list)
    dies_after: dict = defaultdict(list)
    bufs: list = [None] * n
    for i in range(n):
        if pooled[i]:
            shape, dt = types[i]
            key = (tuple(shape), dt)
            bufs[i] = free[key].pop() if free[key] else np.empty(shape, dt)
            dies_after[end[i]].append(i)
        for r in dies_after.pop(i, ()):
            free[(tuple(types[r][0]), types[r][1])].append(bufs[r])
    return bufs
