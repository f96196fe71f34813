"""tapeir: trace Python tensor code into a typed, printable IR and run it.

>>> import numpy as np, tapeir as tp
>>> g = tp.trace(lambda x: tp.softmax(x * 2.0), np.zeros((2, 3), np.float32))
>>> tp.run(g, np.zeros((2, 3), np.float32)).astype(float).round(3).tolist()
[[0.333, 0.333, 0.333], [0.333, 0.333, 0.333]]
"""
from __future__ import annotations

import os as _os

# This folder holds the face only; the layers (ir/, frontend/, passes/, backends/) sit beside
# it in a checkout and install into it (pyproject's package-dir). Imported straight from a
# checkout (its root first on sys.path, as `python -m pytest` there does), find them beside it.
if not _os.path.isdir(_os.path.join(__path__[0], "ir")):
    __path__.append(_os.path.dirname(_os.path.abspath(__path__[0])))

from .backends.numpy_backend import compile_numpy as _compile_numpy
from .frontend import functions as _functions
from .frontend.functions import *  # noqa: F401,F403  (the tp.* functions: their __all__)
from .frontend import functions_index as _functions_index, functions_nn as _functions_nn
from .frontend import functions_random as _functions_random, functions_shape as _functions_shape
from .frontend.functions_index import *  # noqa: F401,F403  (argmax, take, embedding, cumsum, triu, ...)
from .frontend.functions_nn import *  # noqa: F401,F403  (einsum, var, std, batch_norm)
from .frontend.functions_random import *  # noqa: F401,F403  (random_uniform, random_normal, dropout)
from .frontend.functions_shape import *  # noqa: F401,F403  (stack, flatten, split)
from .frontend.tensor import Tensor
from .frontend.tracer import Spec
from .frontend.tracing import call, trace
from .passes import fuse, grad, optimize, value_and_grad
from .passes import optim
from .passes.bind import bind
from .passes.optim import init_state, training_step
from .train import fit
from .ir import (
    OPS, Graph, ParseError, RunError, TapeirError, TensorType, TraceError, TypeRuleError, VerifyError,
    __version__, load, parse, save, verify,
)
from .ir.graph import require_graph

_optimize = optimize  # compile's keyword of that name shadows the function there

__all__ = [
    *_functions.__all__, *_functions_index.__all__, *_functions_nn.__all__,
    *_functions_random.__all__, *_functions_shape.__all__, "Tensor", "Spec", "call", "trace", "grad", "value_and_grad", "fuse", "optimize", "OPS", "Graph",
    "ParseError", "RunError", "TapeirError", "TensorType", "TraceError", "TypeRuleError", "VerifyError",
    "load", "parse", "save", "verify", "to_onnx", "save_onnx", "compile", "from_onnx", "run", "BACKENDS",
    "__version__", "optim", "init_state", "training_step", "bind", "fit",
]

BACKENDS = ("numpy", "onnxruntime")


def to_onnx(g: Graph, opset: int | None = None, *, ir_version: int | None = None,
            output_names: list[str] | None = None, fused: str = "function"):
    """`g` as an onnx.ModelProto of plain ai.onnx ops (+ "tapeir" local functions).

    Opset 15 up to what onnxruntime supports (default 20); the model passes
    onnx.checker.check_model(full_check=True) and is byte-identical on every run.
    fused="function" (default) exports each fused node as a call of a local function
    `tapeir.fused_K`, one per distinct body (one box per group in Netron);
    fused="inline" writes the bodies' nodes into the graph instead.
    See backends/onnx_export.py and backends/onnx_fused.py for names and lowerings.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.value_and_grad(tp.trace(lambda w, x: ((x @ w) ** 2.0).sum(), tp.Spec((3,)), tp.Spec(("B", 3))))
    >>> m = tp.to_onnx(g)
    >>> [i.name for i in m.graph.input], [o.name for o in m.graph.output]
    (['w', 'x'], ['value', 'grad.w'])
    """
    from .backends.onnx_export import to_onnx as _to_onnx

    return _to_onnx(require_graph(g, "tp.to_onnx"), opset, ir_version=ir_version, output_names=output_names,
                    fused=fused)


def save_onnx(g: Graph, path, opset: int | None = None, *, external_data: bool | None = None, **kw) -> None:
    """Export `g` with `to_onnx` and write it to `path` (external data above 2 GB, or when asked).

    Keyword options of `to_onnx` (ir_version, output_names, fused) pass through.

    >>> import numpy as np, tapeir as tp, tempfile, os, onnx
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tp.save_onnx(tp.trace(lambda x: tp.relu(x), tp.Spec(("N",))), os.path.join(d, "g.onnx"))
    ...     onnx.load(os.path.join(d, "g.onnx")).graph.node[0].op_type
    'Relu'
    """
    from .backends.onnx_export import save_onnx as _save_onnx

    _save_onnx(require_graph(g, "tp.save_onnx"), path, opset, external_data=external_data, **kw)


def compile(g: Graph, backend: str = "numpy", *, optimize: bool = True, **options):
    """A callable that runs `g` on the same pytrees the traced function took.

    The graph is verified first, then optimized (tp.optimize: simplify, then fuse
    elementwise chains) unless optimize=False. backend="onnxruntime" exports it and creates one
    InferenceSession; it takes keyword options providers, intra_op_num_threads,
    graph_optimization_level ("disable", "basic", "extended", "all"), opset and fused
    ("function", the default, or "inline": how fused nodes are exported; onnxruntime runs
    the same graph for both).
    backend="numpy" takes buffer_cache_bytes: how many bytes of reusable intermediate
    buffers the function keeps between calls, all threads together (default 256 MiB).

    >>> import numpy as np, tapeir as tp
    >>> f = tp.compile(tp.trace(lambda x: x + 1.0, tp.Spec(("N",))))
    >>> f(np.arange(3, dtype=np.float32)).tolist()
    [1.0, 2.0, 3.0]
    """
    verify(require_graph(g, "tp.compile"))
    if backend not in BACKENDS:
        raise TapeirError(f"unknown backend {backend!r}", hint=f"available backends: {', '.join(BACKENDS)}")
    if optimize:
        g = _optimize(g)
    if backend == "numpy":
        return _compile_numpy(g, **options)
    if backend == "onnxruntime":
        from .backends.onnxruntime_backend import compile_onnxruntime

        return compile_onnxruntime(g, **options)
    raise TapeirError(f"unknown backend {backend!r}", hint=f"available backends: {', '.join(BACKENDS)}")


def from_onnx(model_or_path, params: str = "constants", *, max_nodes=None, max_constant_bytes=None) -> Graph:
    """Import an ONNX model (a ModelProto or a path) as a Graph.

    The graph takes one array per ONNX input; with params="inputs" the floating-point
    initializers become inputs too (after the model's own, in model order, names kept),
    so they can be differentiated; integer initializers (shapes, indices) stay constants.
    Bounds against hostile files: `max_nodes` (default 200,000 ONNX nodes once
    model-local functions are inlined) and `max_constant_bytes` (default 16 MiB per
    constant computed at import; larger results stay IR nodes); None means the default,
    math.inf no bound. See frontend/onnx/.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.from_onnx(tp.to_onnx(tp.trace(lambda x: tp.tanh(x) * 2.0, tp.Spec(("N",)))))
    >>> [n.op for n in g.nodes], tp.run(g, np.zeros(2, np.float32)).tolist()
    (['tanh', 'mul'], [0.0, 0.0])
    """
    from .frontend.onnx import from_onnx as _from_onnx

    return _from_onnx(model_or_path, params, max_nodes=max_nodes, max_constant_bytes=max_constant_bytes)


def run(g: Graph, *args, backend: str = "numpy", **options):
    """Compile and call once: `tp.run(g, x)` is `tp.compile(g, backend)(x)`.

    >>> import numpy as np, tapeir as tp
    >>> tp.run(tp.trace(lambda x: x * x, tp.Spec((2,))), np.array([3, 4], np.float32)).tolist()
    [9.0, 16.0]
    """
    return compile(g, backend, **options)(*args)
