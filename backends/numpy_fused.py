"""Fused nodes in the numpy backend: the body as in-place ufuncs over cache-sized blocks, on threads.

`FusedKernel(body, threads)` is the kernel of one fused node (the numpy backend's IMPL
override for op "fused"). Its rules:

  1. compiling turns the body into a program over registers: the operands (the node's
     inputs, then the body's constants), scratch, and the outputs. A body node is one step
     `fn(*ins, out=reg)`: an op whose reference kernel is a numpy ufunc runs that ufunc;
     sigmoid, softplus, relu, leaky_relu, where, cast and clip run an in-place form that
     makes the same ufunc calls as the reference kernel (ir/reference_kernels.py), so the
     bits agree; any other op (erf, gelu, elu) calls its reference kernel on the block and
     copies the block result in (block-sized temporaries, never full-size ones).
  2. scratch registers are reused after a value's last use (per dtype); a plain ufunc may
     write over an input that dies at that step. A body output is written straight into
     its slice of the result: no copy at the end.
  3. the domain (the body's one shape) is cut into blocks of about BLOCK_BYTES of the
     program's registers (L2 is 1 MiB per core here), so each block's values stay in cache
     from one step to the next. When every operand is the full domain, C-contiguous, or a
     single element, the blocks are ranges of the flat index; otherwise ranges of the
     first axis whose trailing dims fit a block (with the leading indices looped), and each
     operand is sliced on the axes where it is not broadcast.
  4. blocks are spread over `threads` (the caller's thread and threads-1 pool workers
     take the next block from a shared counter): ufuncs release the GIL. Scratch is per calling
     thread and per worker: flat arrays that grow to the largest block seen, which each
     operand layout (the last 8 are kept) views. Its size is bounded by the block size, not
     by the number of batch sizes a function sees (at most THREADED_BLOCK_BYTES per worker,
     SMALL_ELEMS elements per register on the small path), and it goes when its thread
     ends; a compiled function stays thread-safe, as NumpyFunction's per-thread plans are.
  5. domains under SMALL_ELEMS elements run the program once on the whole arrays, on the
     caller's thread (no slicing, no pool); threads are used from THREAD_ELEMS elements.
  6. a failing step raises BodyError naming the body node (its op and source line); the
     run loop turns it into a RunError.
"""
from __future__ import annotations

import contextvars
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..ir import reference_kernels as K
from ..ir.dtypes import to_numpy
from ..ir.reference import REFERENCE

# Measured with bench/bench_fusion.py --sweep on the chain (f32, 2 cores, 1 MiB L2 each): see
# the README's fusion section. 512 KiB of registers per block (32K f32 elements for a chain with
# four live values) kept one thread within 3% of the best block size and gave two threads their
# best scaling; 128 KiB blocks cost one thread nothing but two threads lost to GIL traffic.
BLOCK_BYTES = 1 << 19
# With several threads each ufunc call takes and drops the GIL: small blocks make the threads queue for
# it (measured by the issue here: 2 threads on 32K-element blocks scale 1.2x, on 256K-element 1.6-1.75x),
# so threaded runs trade L2 reuse for fewer calls: blocks of 4 MiB of registers (they stay in L3).
THREADED_BLOCK_BYTES = 1 << 22
MIN_BLOCK = 1 << 13  # elements: below this, per-call overhead of a ufunc dominates its work
SMALL_ELEMS = 1 << 15  # one block, no slicing: the whole domain fits in L2 anyway
THREAD_ELEMS = 1 << 17  # measured crossover: below ~128K elements a second thread does not pay back the handoff


def default_threads() -> int:
    """TAPEIR_THREADS if set, else the cores this process may run on (numpy's own view of the machine).

    >>> default_threads() >= 1
    True
    """
    env = os.environ.get("TAPEIR_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        p = _POOLS.get(workers)
        if p is None:
            p = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="tapeir-fused")
        return p


class BodyError(Exception):
    """A fused body's step failed: which body node (index, Node) and the operands' shapes."""

    def __init__(self, index, node, cause, shapes):
        super().__init__(f"{node.op} (body node {index}): {cause}")
        self.index, self.node, self.cause, self.shapes = index, node, cause, shapes


# ---- rule 1: in-place forms of the composite ops ---------------------------------------

def _copy_result(kernel):
    def run(*xs, out):
        np.copyto(out, kernel(*xs), casting="unsafe")  # a block-sized temporary, never a full-size one
    return run


def _where(c, a, b, out):
    np.copyto(out, b)
    np.copyto(out, a, where=c)  # selects exactly what np.where selects


def _in_place(op, attrs, in_types):
    """(fn, temp dtypes) for a composite op: fn(*ins, *temps, out=) writes op's result into out."""
    dt = to_numpy(in_types[0].dtype) if in_types else None
    if op == "sigmoid":
        return (lambda x, e, t, out: K.sigmoid_into(x, e, t, out)), (dt, dt)
    if op == "softplus":
        return (lambda x, e, u, out: K.softplus_into(x, e, u, out)), (dt, dt)
    if op == "relu":
        zero = dt.type(0)
        return (lambda x, out: np.maximum(x, zero, out=out)), ()
    if op == "leaky_relu":
        alpha, zero = np.asarray(attrs["alpha"], dt), dt.type(0)

        def leaky(x, m, out):
            np.multiply(x, alpha, out=out)
            np.greater_equal(x, zero, out=m)
            np.copyto(out, x, where=m)
        return leaky, (np.dtype(bool),)
    if op == "where":
        dt = to_numpy(in_types[1].dtype)
        if dt == to_numpy(in_types[2].dtype) and dt.itemsize in K._UINT:
            return K.where_into, (K._UINT[dt.itemsize],)
        return _where, ()
    if op == "cast":
        return (lambda x, out: np.copyto(out, x, casting="unsafe")), ()
    if op == "clip":
        lo, hi = attrs["min"], attrs["max"]
        if lo is None and hi is None:
            return (lambda x, out: np.copyto(out, x)), ()
        whole = dt.kind in "iu"  # as the reference kernel: an int tensor clips to [ceil(lo), floor(hi)]
        lo = None if lo is None else dt.type(math.ceil(lo) if whole else lo)
        hi = None if hi is None else dt.type(math.floor(hi) if whole else hi)
        return (lambda x, out: np.clip(x, lo, hi, out=out)), ()
    return _copy_result(REFERENCE[op](attrs)), ()


# ---- rule 1 and 2: the program --------------------------------------------------------

class _Program:
    """The body as steps (fn, input registers, output register) over one register file:
    [operands..., constants..., scratch..., outputs...]."""

    def __init__(self, body):
        self.body = body
        self.n_in = len(body.inputs)
        self.consts = [np.asarray(c.data) for c in body.constants]
        reg = {id(v): i for i, v in enumerate(list(body.inputs) + list(body.constants))}
        n_fixed = len(reg)
        last = {}
        for j, m in enumerate(body.nodes):
            for v in m.inputs:
                last[id(v)] = j
        outs = {}
        for k, v in enumerate(body.outputs):
            outs.setdefault(id(v), k)
        self.dups = [(k, outs[id(v)]) for k, v in enumerate(body.outputs) if outs[id(v)] != k]
        scratch: list[np.dtype] = []
        free: dict[np.dtype, list[int]] = {}

        def take(dt):
            lst = free.get(dt)
            if lst:
                return lst.pop()
            scratch.append(dt)
            return n_fixed + len(scratch) - 1

        def give(r, dt):
            if r >= n_fixed:  # scratch only (outputs are encoded negative until the end)
                free.setdefault(dt, []).append(r)

        self.steps = []
        self.out_dtypes = [to_numpy(v.type.dtype) for v in body.outputs]
        self.dtypes_in = [to_numpy(v.type.dtype) for v in list(body.inputs) + list(body.constants)]
        dtype_of = {id(v): to_numpy(v.type.dtype) for v in list(body.inputs) + list(body.constants)}
        for j, m in enumerate(body.nodes):
            o = m.outputs[0]
            odt = to_numpy(o.type.dtype)
            dtype_of[id(o)] = odt
            ins = [reg[id(v)] for v in m.inputs]
            uniq = {id(v): v for v in m.inputs}.values()
            dying = [(reg[id(v)], dtype_of[id(v)]) for v in uniq if last.get(id(v)) == j and id(v) not in outs]
            kernel = REFERENCE[m.op](m.attrs)
            if isinstance(kernel, np.ufunc):
                temps = []
                for r, dt in dying:  # rule 2: a ufunc may overwrite a dying same-shaped input
                    give(r, dt)
                out = -1 - outs[id(o)] if id(o) in outs else take(odt)
                fn = kernel
            else:
                fn, temp_dts = _in_place(m.op, m.attrs, [v.type for v in m.inputs])
                out = -1 - outs[id(o)] if id(o) in outs else take(odt)
                temps = [take(np.dtype(t)) for t in temp_dts]
                for r, dt in zip(temps, temp_dts):
                    give(r, np.dtype(dt))
                for r, dt in dying:
                    give(r, dt)
            reg[id(o)] = out
            self.steps.append([fn, tuple(ins + temps), out])
        self.scratch = scratch
        n_scratch = len(scratch)
        # output k lives at register n_fixed + n_scratch + k
        for step in self.steps:
            step[1] = tuple(n_fixed + n_scratch + (-1 - r) if r < 0 else r for r in step[1])
            if step[2] < 0:
                step[2] = n_fixed + n_scratch + (-1 - step[2])
        self.steps = [tuple(s) for s in self.steps]
        # rule 3: bytes of registers one domain element costs (operands read, scratch, outputs)
        self.bytes_per_elem = max(1, sum(d.itemsize for d in scratch) + sum(d.itemsize for d in self.out_dtypes)
                                  + sum(np.dtype(d).itemsize for d in self.dtypes_in[:self.n_in]))

    def run(self, regs):
        """Run every step on one block's register file (rule 6: a failure names its body node)."""
        j = 0
        try:
            for j, (fn, ins, o) in enumerate(self.steps):
                if len(ins) == 1:
                    fn(regs[ins[0]], out=regs[o])
                elif len(ins) == 2:
                    fn(regs[ins[0]], regs[ins[1]], out=regs[o])
                else:
                    fn(*[regs[i] for i in ins], out=regs[o])
        except Exception as e:
            _, ins, _ = self.steps[j]
            m = self.body.nodes[j]
            raise BodyError(j, m, e, [np.shape(regs[i]) for i in ins[:len(m.inputs)]]) from e


# ---- rules 3 to 5: layouts, blocks, threads -------------------------------------------

class _Layout:
    """How one set of operand shapes is cut into blocks, and the scratch each worker uses."""

    def __init__(self, prog, shapes, flat, threads):
        self.domain = np.broadcast_shapes(*shapes) if shapes else ()
        size = math.prod(self.domain)
        self.size = size
        self.flat = flat
        if size <= SMALL_ELEMS:
            self.blocks = None  # rule 5: one pass over the whole arrays
            self.scratch_shape, self.nthreads = self.domain, 1
            return
        threaded = threads > 1 and size >= THREAD_ELEMS
        block = max(MIN_BLOCK, (THREADED_BLOCK_BYTES if threaded else BLOCK_BYTES) // prog.bytes_per_elem)
        dom = (size,) if flat else self.domain
        # the first axis k whose trailing dims fit a block; blocks are ranges of axis k
        k = 0
        while math.prod(dom[k + 1:]) > block:
            k += 1
        inner = math.prod(dom[k + 1:])
        rows = max(1, block // inner)
        outer = list(np.ndindex(*dom[:k])) if k else [()]
        per_outer = -(-dom[k] // rows)
        nthreads = min(threads, len(outer) * per_outer) if threaded else 1
        if nthreads > 1 and len(outer) == 1:  # balance: a multiple of nthreads blocks of equal size
            per_outer = -(-per_outer // nthreads) * nthreads
            rows = -(-dom[k] // per_outer)
        self.k, self.rows = k, rows
        self.blocks = [(idx, s, min(s + rows, dom[k])) for idx in outer for s in range(0, dom[k], rows)]
        self.nthreads = nthreads
        self.scratch_shape = (rows, *dom[k + 1:])

    def index(self, shape, idx, s, e):
        """Operand of (aligned) shape `shape`: its index for block (idx, s, e) (rule 3: slice where not broadcast)."""
        lead = tuple(i if d != 1 else 0 for i, d in zip(idx, shape))
        return lead + ((slice(s, e) if shape[self.k] != 1 else slice(None)),)


class FusedKernel:
    """The numpy kernel of a fused node: call it with the node's operands (and `out=` a
    preallocated result, or `outs=` one array or None per output); returns the outputs.

    >>> import numpy as np, tapeir as tp
    >>> body = tp.trace(lambda a, b: tp.sigmoid(a) * b + 1.0, tp.Spec(("N", 3)), tp.Spec((3,)))
    >>> k = FusedKernel(body, threads=2)
    >>> x = np.zeros((100_000, 3), np.float32)
    >>> k(x, np.ones(3, np.float32))[:2].tolist()
    [[1.5, 1.5, 1.5], [1.5, 1.5, 1.5]]
    """

    def __init__(self, body, threads: int):
        self.prog = _Program(body)
        self.threads = threads
        self.takes_out = len(body.outputs) == 1  # the memory plan may hand it a buffer (numpy_memory)
        self.takes_outs = len(body.outputs) > 1  # ... or one per output (outs=, None where it has none)
        self._local = threading.local()

    def _layout(self, arrays) -> _Layout:
        """This thread's layout for these operands (rule 4); built on the first call with their shapes."""
        key = tuple((a.shape, a.flags.c_contiguous) for a in arrays)
        cache = getattr(self._local, "layouts", None)
        if cache is None:
            cache = self._local.layouts = {}
        lay = cache.get(key)
        if lay is None:
            shapes = [a.shape for a in arrays]
            dom = np.broadcast_shapes(*shapes)
            flat = all(a.size == 1 or (a.shape == dom and a.flags.c_contiguous) for a in arrays)
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            lay = _Layout(self.prog, shapes, flat, self.threads)
            lay.scratch = self._scratch(lay, cache)
            cache[key] = lay
        return lay

    def _scratch(self, lay, layouts) -> list:
        """Views shaped for `lay` of this thread's flat scratch (rule 4), per worker; when the
        flat arrays must grow, the layouts viewing the old ones are dropped with them."""
        n = math.prod(lay.scratch_shape)
        flat = getattr(self._local, "scratch", None)
        if flat is None or len(flat) < lay.nthreads or (flat and flat[0] and flat[0][0].size < n):
            size = max(n, flat[0][0].size if flat and flat[0] else 0)
            flat = self._local.scratch = [[np.empty(size, dt) for dt in self.prog.scratch]
                                          for _ in range(max(lay.nthreads, len(flat or ())))]
            layouts.clear()
        return [[b[:n].reshape(lay.scratch_shape) for b in regs] for regs in flat[:lay.nthreads]]

    def __call__(self, *xs, out=None, outs=None):
        prog = self.prog
        arrays = [np.asarray(x) for x in xs] + prog.consts
        lay = self._layout(arrays)
        given = (out,) if out is not None else outs or ()
        outs = [given[k] if k < len(given) and given[k] is not None else np.empty(lay.domain, dt)
                for k, dt in enumerate(prog.out_dtypes)]
        if lay.blocks is None:
            prog.run(arrays + lay.scratch[0] + outs)
        else:
            self._blocked(lay, arrays, outs)
        for k, src in prog.dups:
            np.copyto(outs[k], outs[src])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _blocked(self, lay, arrays, outs):
        if lay.flat:
            arrays = [a.reshape(()) if a.size == 1 else a.reshape(-1) for a in arrays]
            outs = [o.reshape(-1) for o in outs]
        else:
            r = len(lay.domain)
            arrays = [a.reshape((1,) * (r - a.ndim) + a.shape) for a in arrays]
        n = lay.nthreads
        blocks = lay.blocks
        if n == 1:
            self._run_blocks(lay, arrays, outs, blocks, iter(range(len(blocks))), lay.scratch[0])
            return
        # blocks are handed out one at a time from a shared counter (next() on it is atomic under the
        # GIL): a thread that loses its core to another process does fewer blocks instead of holding
        # up the call, as a fixed share per thread would
        ticket = itertools.count()
        pool = _pool(n - 1)
        futures = [pool.submit(contextvars.copy_context().run,  # the caller's np.errstate holds in the workers
                               self._run_blocks, lay, arrays, outs, blocks, ticket, lay.scratch[t])
                   for t in range(1, n)]
        err = None
        try:
            self._run_blocks(lay, arrays, outs, blocks, ticket, lay.scratch[0])
        except Exception as e:
            err = e
        for f in futures:  # wait for every worker before returning (they write into outs and scratch)
            try:
                f.result()
            except Exception as e:
                err = err or e
        if err is not None:
            raise err

    def _run_blocks(self, lay, arrays, outs, blocks, ticket, scratch):
        """Run the blocks whose numbers `ticket` yields, with this worker's scratch."""
        run = self.prog.run
        full = lay.rows
        part = None
        flat = lay.flat
        nblocks = len(blocks)
        for i in ticket:
            if i >= nblocks:
                return
            idx, s, e = blocks[i]
            if flat:
                ops = [a if a.ndim == 0 else a[s:e] for a in arrays]
                os_ = [o[s:e] for o in outs]
            else:
                ops = [a[lay.index(a.shape, idx, s, e)] for a in arrays]
                os_ = [o[idx + (slice(s, e),)] for o in outs]
            if e - s == full:
                sc = scratch
            else:
                part = part or [b[:e - s] for b in scratch]
                sc = part
            run(ops + sc + os_)
