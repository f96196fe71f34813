"""BLAS threads during a numpy-backend call whose matrix products are all small.

OpenBLAS (the BLAS numpy's wheels bundle) splits a product over all its threads once it
exceeds ~262K multiply-adds. A model's graph is many products just above that (a conv's
[16,144]x[144,256] per image, a transformer's [256,64]x[64,256]), and for those waking and
joining the other threads costs more than the second core gives back: on the 2-core bench
machine (256x64)@(64x256) takes 87 us on one thread and 173-194 us on two, and 1-2 ms
whenever another process holds a core (a thread waits for its descheduled peer).
bench_models.py's ResNet and GPT steps ran 1.3-1.5x faster on one BLAS thread when quiet,
5-10x under load.

Rules:
  1. a plan (numpy_backend.py: one binding of the symbolic dims) is small when every
     matmul / conv2d / conv_transpose2d node does at most SMALL_MACS multiply-adds;
  2. a call of a small plan runs with BLAS on one thread: set when the first such call in
     the process enters, restored to the previous count when the last one returns (calls
     may overlap on several threads; BLAS products the caller's other threads make in that
     window run on one thread too). Plans with a larger product leave BLAS alone;
  3. only OpenBLAS is handled, found by its get/set_num_threads symbols (plain, 64-bit
     suffixed or scipy-openblas prefixed) in the libraries the process has loaded; with any
     other BLAS, or TAPEIR_BLAS_THREADS=keep in the environment, a call changes nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading

SMALL_MACS = 1 << 23  # 8.4M multiply-adds (a 200^3 product): ~0.2 ms on one core

_PREFIXES = ("openblas", "scipy_openblas")
_SUFFIXES = ("", "64_", "_64")


def _find():
    """(get, set) of the loaded OpenBLAS, or None."""
    if os.environ.get("TAPEIR_BLAS_THREADS") == "keep":
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:  # not Linux: leave BLAS alone
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            continue
        for p in _PREFIXES:
            for s in _SUFFIXES:
                get, put = getattr(lib, f"{p}_get_num_threads{s}", None), getattr(lib, f"{p}_set_num_threads{s}", None)
                if get is not None and put is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    put.restype, put.argtypes = None, [ctypes.c_int]
                    return get, put
    return None


_api = None
_searched = False
_lock = threading.Lock()
_active = 0
_saved = 0


def _openblas():
    global _api, _searched
    if not _searched:
        import numpy  # noqa: F401  (its BLAS must be loaded before we look for it)
        _api, _searched = _find(), True
    return _api


def product_macs(node, resolve) -> int:
    """Multiply-adds of a matmul / conv2d / conv_transpose2d node, 0 for any other op;
    resolve(shape) gives a shape's ints under the plan's binding."""
    op = node.op
    if op == "matmul":
        return math.prod(resolve(node.outputs[0].type.shape)) * resolve(node.inputs[0].type.shape)[-1]
    if op in ("conv2d", "conv_transpose2d"):  # each output (conv) / input (transpose) element: C/groups*kh*kw taps
        w = resolve(node.inputs[1].type.shape)  # [O, C/groups, kh, kw] (conv_transpose2d: [C, O/groups, kh, kw])
        x = node.outputs[0] if op == "conv2d" else node.inputs[0]
        return math.prod(resolve(x.type.shape)) * w[1] * w[2] * w[3]
    return 0


@contextlib.contextmanager
def single_thread():
    """Rule 2: BLAS on one thread for the duration (nested and concurrent uses share one setting)."""
    global _active, _saved
    api = _openblas()
    if api is None:
        yield
        return
    get, put = api
    with _lock:
        if _active == 0:
            _saved = get()
            if _saved != 1:
                put(1)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved != 1:
                put(_saved)
