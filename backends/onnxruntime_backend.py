"""The onnxruntime backend: export a Graph to ONNX once, run it in one InferenceSession.

It takes and returns the same pytrees as the numpy backend, with the same input checks
(dtypes, ranks, static dims, symbolic dims bound consistently), because both take their
arguments through one `Signature` (backends/signature.py); only the execution differs.

onnxruntime's CPU provider has no float64 kernel for Conv, ConvTranspose, AveragePool,
Erf (so exact gelu), Elu and LeakyRelu: the export of such a float64 graph is valid ONNX,
but this backend refuses to load it (in float32 every op runs).

Known differences from the numpy backend, on edge inputs (tests/backends/
test_onnxruntime_backend.py pins each, so a change in onnxruntime shows up there):
  - max/min over NaN: numpy propagates NaN; onnxruntime's ReduceMax/ReduceMin skip a NaN
    that is not the first element (max([1, nan, 3]) is nan in numpy, 3.0 in onnxruntime;
    max([nan, 1, 3]) is nan in both).
  - softmax/log_softmax over a row holding +inf: numpy gives [0, nan, 0] (softmax) and
    [-inf, nan, -inf] (log_softmax); onnxruntime gives nan for the whole row.
  - cross_entropy/nll_loss with a label outside [0, C) other than ignore_index: numpy
    raises RunError; onnxruntime's loss ops would wrap a negative label around (reading
    class C + label) and fail on one >= C with an opaque GatherElements error. This
    backend checks labels that are graph inputs before each run and raises the numpy
    backend's RunError; labels computed inside the graph are not checked.
  - reductions over an empty axis (a symbolic dim that is 0 at run time): mean is nan in
    numpy (0/0) and 0 in onnxruntime; max/min raise RunError in numpy (numpy's reduction
    has no identity) and give -inf/+inf in onnxruntime. (sum and logsumexp agree: 0 and
    -inf; softmax over an empty axis is empty in both.)
  - max_pool2d of a window whose values are all -inf: -inf in numpy, -3.4e38 (the
    dtype's lowest finite value, onnxruntime's padding) in onnxruntime when the window
    overlaps the padding (or the input is 1x1).
  - an int64 sum past the int64 range: numpy wraps around, onnxruntime's ReduceSum
    saturates at the bound. (int32 sums agree: the export sums them in int64 and casts
    back, which wraps as numpy does; elementwise integer overflow wraps in both.)
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ..ir.errors import RunError, TapeirError
from ..ir.reference_kernels import check_labels
from ..ir.types import resolve_dim
from . import onnx_export
from .onnx_export import to_onnx
from .signature import Signature, check_options

OPTIONS = ("providers", "intra_op_num_threads", "graph_optimization_level", "opset", "fused")
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


# how fused nodes reach onnxruntime (to_onnx's `fused=`). onnxruntime inlines local functions
# when it loads a model: the graph it optimizes and runs is the same node for node for both
# forms (tests/backends/test_onnx_fused.py), and the chain on f32[4096,4096] takes the
# same time either way (bench/bench_onnx_fused.py). So the default is to_onnx's own:
# `f.model` is the model tp.to_onnx(g) writes, one box per fused group.
FUSED_DEFAULT = "function"


class OnnxRuntimeFunction:
    """A Graph exported to ONNX and loaded in an onnxruntime InferenceSession.

    >>> import numpy as np, tapeir as tp
    >>> f = tp.compile(tp.trace(lambda x: tp.softplus(x), tp.Spec(("N",))), backend="onnxruntime")
    >>> f(np.array([0.0, 1e4], np.float32)).astype(float).round(4).tolist()
    [0.6931, 10000.0]
    """

    def __init__(self, graph, *, providers=None, intra_op_num_threads=None, graph_optimization_level="all",
                 opset=None, fused=None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - onnxruntime is a dependency of this backend only
            raise TapeirError("the onnxruntime backend needs the onnxruntime package",
                              hint="pip install onnxruntime") from None
        if not isinstance(graph_optimization_level, str) or graph_optimization_level not in _LEVELS:
            raise TapeirError(f"graph_optimization_level={graph_optimization_level!r} is not one of "
                              f"{list(_LEVELS)}")
        providers = _check_providers(providers, ort.get_available_providers())
        self.graph = graph
        self.signature = Signature(graph)
        self.model = to_onnx(graph, opset, fused=FUSED_DEFAULT if fused is None else fused)
        self._folder = None  # where a model past protobuf's 2 GB limit is saved (_model_source)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[graph_optimization_level])
        if intra_op_num_threads is not None:
            n = intra_op_num_threads
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise TapeirError(f"intra_op_num_threads={n!r} is not a thread count",
                                  hint="pass an int >= 1, or 0 (or None) for onnxruntime's default")
            opts.intra_op_num_threads = int(n)
        opts.log_severity_level = 3  # onnxruntime's warnings (e.g. unused initializers) are noise here
        try:
            self.session = ort.InferenceSession(self._model_source(), opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            raise TapeirError(f"onnxruntime cannot load the ONNX export of {graph.name}: {e}",
                              hint="onnxruntime's CPU provider lacks some float64 kernels (Conv, ConvTranspose, "
                                   "AveragePool, Erf, Elu, LeakyRelu); run those graphs in float32 or on "
                                   "backend='numpy'") from e
        self._in_names = [v.name for v in graph.inputs]
        self._out_names = [o.name for o in self.model.graph.output]
        self._label_checks = _label_inputs(graph)

    def _model_source(self):
        """The serialized model, or, when its weights pass protobuf's 2 GB limit (which
        SerializeToString cannot write), the path of the model saved with external data in
        a folder this function object keeps alive (self.model then points into it)."""
        if sum(t.ByteSize() for t in self.model.graph.initializer) <= onnx_export.EXTERNAL_DATA_LIMIT:
            return self.model.SerializeToString()
        import onnx

        self._folder = tempfile.TemporaryDirectory(prefix="tapeir-ort-")
        path = os.path.join(self._folder.name, "model.onnx")
        onnx.save_model(self.model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
        return path

    def run_flat(self, leaves) -> list:
        arrays, bindings = self.signature.bind(leaves)
        for pos, i, n in self._label_checks:
            x = n.inputs[0].type
            try:
                check_labels(arrays[pos], resolve_dim(x.shape[1 if x.rank > 1 else 0], bindings),
                             n.attrs["ignore_index"])
            except ValueError as e:
                raise RunError(f"{n.op} failed at node {i} of {self.graph.name}: {e}", where=n.source,
                               hint="onnxruntime would wrap a negative label around (and fail on a large one), "
                                    "so this backend checks labels that are graph inputs") from None
        try:
            return self.session.run(self._out_names, dict(zip(self._in_names, arrays)))
        except Exception as e:
            raise RunError(f"onnxruntime failed running {self.graph.name}: {e}",
                           hint="the numpy backend (backend='numpy') runs the same graph and names the failing node") \
                from e

    def __call__(self, *args):
        return self.signature.unflatten(self.run_flat(self.signature.flatten(args)))


def _check_providers(providers, available) -> list | None:
    """A list of provider names (or (name, options) pairs) onnxruntime has here: onnxruntime
    itself would print an error and silently fall back to the CPU provider."""
    if providers is None:
        return None
    if isinstance(providers, (str, bytes)) or not isinstance(providers, (list, tuple)):
        raise TapeirError(f"providers={providers!r} is not a list of provider names",
                          hint=f"for example providers=['CPUExecutionProvider']; available here: {available}")
    for p in providers:
        name = p[0] if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], dict) else p
        if not isinstance(name, str) or name not in available:
            raise TapeirError(f"provider {p!r} is not available in this onnxruntime",
                              hint=f"available here: {available}")
    return list(providers)


def _label_inputs(graph) -> list:
    """(input position, node index, node) for each cross_entropy/nll_loss node whose labels
    are a graph input: those are checked before a run (computed labels are not)."""
    position = {id(v): k for k, v in enumerate(graph.inputs)}
    return [(position[id(n.inputs[1])], i, n) for i, n in enumerate(graph.nodes)
            if n.op in ("cross_entropy", "nll_loss") and id(n.inputs[1]) in position]


def compile_onnxruntime(graph, **options) -> OnnxRuntimeFunction:
    check_options("onnxruntime", options, OPTIONS)
    return OnnxRuntimeFunction(graph, **options)
