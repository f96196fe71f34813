"""The onnxruntime backend: export a Graph to ONNX once, run it in one InferenceSession.

It takes and returns the same pytrees as the numpy backend, with the same input checks
(dtypes, ranks, static dims, symbolic dims bound consistently), because both take their
arguments through one `Signature` (backends/signature.py); only the execution differs.

onnxruntime's CPU provider has no float64 kernel for Conv, ConvTranspose, AveragePool,
Erf (so exact gelu), Elu and LeakyRelu: the export of such a float64 graph is valid ONNX,
but this backend refuses to load it (in float32 every op runs).
"""
from __future__ import annotations

from ..ir.errors import RunError, TapeirError
from .onnx_export import to_onnx
from .signature import Signature, check_options

OPTIONS = ("providers", "intra_op_num_threads", "graph_optimization_level", "opset")
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeFunction:
    """A Graph exported to ONNX and loaded in an onnxruntime InferenceSession.

    >>> import numpy as np, tapeir as tp
    >>> f = tp.compile(tp.trace(lambda x: tp.softplus(x), tp.Spec(("N",))), backend="onnxruntime")
    >>> f(np.array([0.0, 1e4], np.float32)).astype(float).round(4).tolist()
    [0.6931, 10000.0]
    """

    def __init__(self, graph, *, providers=None, intra_op_num_threads=None, graph_optimization_level="all",
                 opset=None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - onnxruntime is a dependency of this backend only
            raise TapeirError("the onnxruntime backend needs the onnxruntime package",
                              hint="pip install onnxruntime") from None
        if graph_optimization_level not in _LEVELS:
            raise TapeirError(f"graph_optimization_level={graph_optimization_level!r} is not one of "
                              f"{list(_LEVELS)}")
        self.graph = graph
        self.signature = Signature(graph)
        self.model = to_onnx(graph, opset)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[graph_optimization_level])
        if intra_op_num_threads is not None:
            opts.intra_op_num_threads = int(intra_op_num_threads)
        opts.log_severity_level = 3  # onnxruntime's warnings (e.g. unused initializers) are noise here
        try:
            self.session = ort.InferenceSession(self.model.SerializeToString(), opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            raise TapeirError(f"onnxruntime cannot load the ONNX export of {graph.name}: {e}",
                              hint="onnxruntime's CPU provider lacks some float64 kernels (Conv, ConvTranspose, "
                                   "AveragePool, Erf, Elu, LeakyRelu); run those graphs in float32 or on "
                                   "backend='numpy'") from e
        self._in_names = [v.name for v in graph.inputs]
        self._out_names = [o.name for o in self.model.graph.output]

    def run_flat(self, leaves) -> list:
        arrays, _ = self.signature.bind(leaves)
        try:
            return self.session.run(self._out_names, dict(zip(self._in_names, arrays)))
        except Exception as e:
            raise RunError(f"onnxruntime failed running {self.graph.name}: {e}",
                           hint="the numpy backend (backend='numpy') runs the same graph and names the failing node") \
                from e

    def __call__(self, *args):
        return self.signature.unflatten(self.run_flat(self.signature.flatten(args)))


def compile_onnxruntime(graph, **options) -> OnnxRuntimeFunction:
    check_options("onnxruntime", options, OPTIONS)
    return OnnxRuntimeFunction(graph, **options)
