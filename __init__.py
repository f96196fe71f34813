"""tapeir: trace Python tensor code into a typed, printable IR and run it.

>>> import numpy as np, tapeir as tp
>>> g = tp.trace(lambda x: tp.softmax(x * 2.0), np.zeros((2, 3), np.float32))
>>> tp.run(g, np.zeros((2, 3), np.float32)).astype(float).round(3).tolist()
[[0.333, 0.333, 0.333], [0.333, 0.333, 0.333]]
"""
from __future__ import annotations

from .backends.numpy_backend import compile_numpy as _compile_numpy
from .frontend.functions import (
    abs, add, astype, avg_pool2d, binary_cross_entropy_with_logits, broadcast_to, clip, concatenate,
    conv2d, conv_transpose2d, cos, erf, cross_entropy, div, divide, elu, equal, exp, expand_dims, gelu, greater, greater_equal,
    l1_loss, layer_norm, leaky_relu, less, less_equal, log, log_softmax, logsumexp, matmul, max,
    max_pool2d, maximum, mean, min, minimum, mse_loss, mul, multiply, negative, nll_loss, not_equal, pad,
    power, reciprocal, relu, reshape, safe_log, sigmoid, silu, sin, softmax, softplus, sqrt, squeeze,
    sub, subtract, sum, tanh, transpose, where,
)
from .frontend.tensor import Tensor
from .frontend.tracer import Spec, call, trace
from .passes import grad, value_and_grad
from .ir import (
    OPS, Graph, ParseError, RunError, TapeirError, TensorType, TraceError, TypeRuleError, VerifyError,
    load, parse, save, verify,
)

__version__ = "0.1.0"

BACKENDS = ("numpy", "onnxruntime")


def to_onnx(g: Graph, opset: int | None = None, **kw):
    """`g` as an onnx.ModelProto of plain ai.onnx ops (see backends/onnx_export.py)."""
    from .backends.onnx_export import to_onnx as _to_onnx

    return _to_onnx(g, opset, **kw)


def save_onnx(g: Graph, path, opset: int | None = None, **kw) -> None:
    """Export `g` with `to_onnx` and write it to `path` (external data above 2 GB)."""
    from .backends.onnx_export import save_onnx as _save_onnx

    _save_onnx(g, path, opset, **kw)


def compile(g: Graph, backend: str = "numpy", **options):
    """A callable that runs `g` on the same pytrees the traced function took.

    >>> import numpy as np, tapeir as tp
    >>> f = tp.compile(tp.trace(lambda x: x + 1.0, tp.Spec(("N",))))
    >>> f(np.arange(3, dtype=np.float32)).tolist()
    [1.0, 2.0, 3.0]

    backend="onnxruntime" takes keyword options: providers, intra_op_num_threads,
    graph_optimization_level ("disable", "basic", "extended", "all") and opset.
    """
    if backend == "numpy":
        if options:
            raise TapeirError(f"the numpy backend takes no options, got {sorted(options)}")
        return _compile_numpy(g)
    if backend == "onnxruntime":
        from .backends.onnxruntime_backend import compile_onnxruntime

        return compile_onnxruntime(g, **options)
    raise TapeirError(f"unknown backend {backend!r}", hint=f"available backends: {', '.join(BACKENDS)}")


def from_onnx(model_or_path, params: str = "constants") -> Graph:
    """Import an ONNX model as a Graph (backends/onnx_import.py; onnx loads on first use)."""
    from .backends.onnx_import import from_onnx as _from_onnx
    return _from_onnx(model_or_path, params)


def run(g: Graph, *args, backend: str = "numpy", **options):
    """Compile and call once: `tp.run(g, x)` is `tp.compile(g, backend)(x)`."""
    return compile(g, backend, **options)(*args)
