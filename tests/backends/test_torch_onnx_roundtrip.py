"""PyTorch -> ONNX -> tapeir: models exported by torch.onnx.export import with
params="inputs", run forward like torch, and, with a loss attached in tapeir, give the
gradients PyTorch autograd gives.

Uses the legacy TorchScript exporter (dynamo=False): the torch.export-based one needs
onnxscript, which the test environment does not have.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
import onnx  # noqa: E402  (a runtime dependency: never skipped)

import tapeir as tp  # noqa: E402
from support import assert_close  # noqa: E402

nn = torch.nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 32), nn.Linear(32, 16), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    """Conv, BatchNorm (eval), GELU, LayerNorm, MaxPool, flatten, Linear."""

    def __init__(self, flatten_with_view: bool):
        super().__init__()
        self.view = flatten_with_view
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.ln = nn.LayerNorm([6, 8, 8])
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.pool(self.ln(nn.functional.gelu(self.bn(self.conv(x)))))
        # x.view(x.size(0), -1) exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        x = x.view(x.size(0), -1) if self.view else torch.flatten(x, 1)
        return self.fc(x)


def _export(model, x, opset, fold=True) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), f, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}},
                          do_constant_folding=fold)
    return onnx.load_from_string(f.getvalue())


def _make(kind):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind == "mlp":
        return MLP(), rng.standard_normal((7, 12)).astype(np.float32)
    model = CNN(flatten_with_view=(kind == "cnn_view"))
    with torch.no_grad():  # non-trivial running stats, so BatchNorm is not the identity
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    return model, rng.standard_normal((4, 3, 8, 8)).astype(np.float32)


# (model, opset, constant folding). Folding off keeps BatchNormalization in the graph
# (with it on, torch fuses it into the conv); opset 20 exports GELU as one Gelu node.
CONFIGS = [("mlp", 17, True), ("cnn_view", 17, False), ("cnn_flatten", 20, False), ("cnn_view", 17, True)]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"{c[0]}-opset{c[1]}-fold{int(c[2])}")
def exported(request):
    kind, opset, fold = request.param
    model, x = _make(kind)
    model.eval()
    proto = _export(model, x, opset, fold)
    return model, x, proto, tp.from_onnx(proto, params="inputs")


def _params(model, g):
    """The torch parameters behind the graph's initializer inputs, by ONNX name."""
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    return {name: named.get(name) for name in g.arg_names[1:]}


def _initializers(proto):
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_imports_with_batch_symbolic_and_params_as_inputs(exported):
    model, x, proto, g = exported
    tp.verify(g)
    assert g.arg_names[0] == "x" and g.inputs[0].type.shape[0] == "batch"
    floats = [t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert g.arg_names[1:] == floats  # model order, names kept
    assert all(n.source.startswith("model.onnx:") for n in g.nodes)
    assert tp.parse(str(g)) == g


def test_expected_ops_survive(exported):
    model, x, proto, g = exported
    ops = {n.op_type for n in proto.graph.node}
    if isinstance(model, CNN):
        assert {"Conv", "MaxPool", "LayerNormalization"} <= ops
        if "BatchNormalization" in ops:
            assert any(n.op == "sqrt" for n in g.nodes)  # lowered with the running stats as inputs
        if model.view:
            assert {"Shape", "Gather", "Concat", "Reshape"} <= ops
        assert ("Gelu" in ops) == (proto.opset_import[0].version >= 20)


def test_forward_matches_torch(exported):
    model, x, proto, g = exported
    inits = _initializers(proto)
    for batch in (x, x[:2]):  # the batch dim is symbolic: any size runs
        want = model(torch.from_numpy(batch)).detach().numpy()
        got = tp.run(g, batch, *[inits[n] for n in g.arg_names[1:]])
        assert_close(got, want)


def test_gradients_match_torch_autograd(exported):
    model, x, proto, g = exported
    inits = _initializers(proto)
    names = g.arg_names[1:]
    labels = np.arange(x.shape[0], dtype=np.int64) % 5

    def loss(*args):
        return tp.cross_entropy(tp.call(g, *args[:-1]), args[-1])

    gl = tp.trace(loss, x, *[inits[n] for n in names], labels, arg_names=["x", *names, "y"])
    vg = tp.value_and_grad(gl, wrt=tuple(range(1, len(names) + 1)))
    tp.verify(vg)
    value, grads = tp.run(vg, x, *[inits[n] for n in names], labels)

    model.zero_grad()
    want = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels))
    want.backward()
    assert_close(value, want.item())
    params = _params(model, g)
    checked = 0
    for name, grad in zip(names, grads):
        p = params[name]
        if p is None or not p.requires_grad:  # folded constants (onnx::...) and running stats
            continue
        assert_close(grad, p.grad.numpy(), msg=name)
        checked += 1
    assert checked >= 4


def test_imported_training_graph_runs_in_onnxruntime(exported):
    """torch model -> ONNX -> tapeir -> forward + backward IR -> plain ONNX -> onnxruntime."""
    if "onnxruntime" not in tp.BACKENDS:
        pytest.skip("no onnxruntime backend")
    model, x, proto, g = exported
    inits = _initializers(proto)
    names = g.arg_names[1:]
    labels = np.arange(x.shape[0], dtype=np.int64) % 5
    gl = tp.trace(lambda *a: tp.cross_entropy(tp.call(g, *a[:-1]), a[-1]),
                  x, *[inits[n] for n in names], labels, arg_names=["x", *names, "y"])
    vg = tp.value_and_grad(gl, wrt=tuple(range(1, len(names) + 1)))
    args = (x, *[inits[n] for n in names], labels)
    (v1, g1), (v2, g2) = tp.run(vg, *args), tp.run(vg, *args, backend="onnxruntime")
    assert_close(v2, v1)
    for a, b, name in zip(g2, g1, names):
        assert_close(a, b, msg=name)
