"""Architectures tapeir did not write (tests/real_models.py, plain torch): exported by
torch.onnx.export, imported with params="inputs", forward and gradients against torch
autograd in the numpy backend, the onnxruntime backend and, after tp.to_onnx, a plain
onnxruntime.InferenceSession.

Exporters: the TorchScript one (dynamo=False) with constant folding on for every model and
off for a few; the dynamo one (with and without its optimizer) is behind the `slow_export`
marker (3-30 s per model here; it also needs onnxscript): `pytest -m slow_export`.

Tolerance: support.CHAIN (2**10 float32 ulps of |expected| + max|expected|): a whole network
forward + backward in float32 against torch's own float32 kernels, other summation orders.

Exporter facts these tests pin down (each is a test below):
  - the TorchScript exporter bakes the sequence length of nn.MultiheadAttention into its
    Reshape targets, so a TransformerEncoder exported with a dynamic sequence is wrong for
    any other length; tapeir refuses it with a TapeirError naming the Reshape (exported with
    a static sequence and a dynamic batch, it imports and matches);
  - the dynamo exporter writes a train-mode BatchNorm as an inference one (torch 2.13's
    optimizer folds it into the conv with the running statistics; earlier versions wrote
    BatchNormalization without training_mode=1): test_dynamo_train_mode_batchnorm;
  - with its optimizer, the dynamo exporter folds eval-mode BatchNorm into the conv weights
    and keeps their names, so those initializers are not torch's parameters: the gradient
    tests compare an initializer only when it holds its parameter's values.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import tapeir as tp  # noqa: E402
from support import CHAIN, assert_close  # noqa: E402

import real_models as R  # noqa: E402

WHY = "a whole network forward + backward in float32 against torch's float32 kernels"


def export(model, xs, dyn, mode, opset=17):
    """torch.onnx.export in one of four modes: ts_fold, ts_nofold (TorchScript exporter,
    constant folding on/off), dyn_opt, dyn_raw (dynamo exporter, optimizer on/off)."""
    names = [f"x{i}" for i in range(len(xs))]
    args = tuple(torch.from_numpy(x) for x in xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode.startswith("ts"):
            f = io.BytesIO()
            torch.onnx.export(model, args, f, dynamo=False, opset_version=opset, input_names=names,
                              output_names=["y"], dynamic_axes=dict(zip(names, dyn)),
                              do_constant_folding=(mode == "ts_fold"))
            return onnx.load_from_string(f.getvalue())
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
        import logging
        logging.disable(logging.WARNING)
        try:
            shapes = tuple({a: torch.export.Dim.AUTO for a in d} for d in dyn)
            return torch.onnx.export(model, args, dynamo=True, dynamic_shapes=shapes, optimize=(mode == "dyn_opt"),
                                     verbose=False).model_proto
        finally:
            logging.disable(logging.NOTSET)


_FAST = [(name, "ts_fold") for name in R.NAMES] + [(name, "ts_nofold") for name in ("gpt", "bn_cnn")]
FAST = [pytest.param(c, id="-".join(c)) for c in _FAST]
SLOW = [pytest.param((name, mode), marks=pytest.mark.slow_export, id=f"{name}-{mode}")
        for mode in ("dyn_opt", "dyn_raw") for name in R.NAMES]
SLOW += [pytest.param((name, "ts_nofold"), marks=pytest.mark.slow_export, id=f"{name}-ts_nofold")
         for name in R.NAMES if (name, "ts_nofold") not in _FAST]
_CACHE: dict = {}


@pytest.fixture(scope="module", params=FAST + SLOW)
def imported(request):
    return _load(*request.param)


def _load(name, mode):
    key = (name, mode)
    if key not in _CACHE:
        model, xs, dyn = R.make(name)
        if name == "encoder" and mode.startswith("ts"):  # see the module docstring: batch dynamic only
            dyn = [R.BATCH]
        proto = export(model, xs, dyn, mode)
        g = tp.from_onnx(proto, params="inputs")
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        _CACHE[key] = (name, mode, model, xs, dyn, proto, g, [inits[n] for n in g.arg_names[len(xs):]])
    return _CACHE[key]


def test_symbolic_dims_survive(imported):
    name, mode, model, xs, dyn, proto, g, params = imported
    tp.verify(g)
    for x, v, d in zip(xs, g.inputs, dyn):
        for axis in d:
            assert isinstance(v.type.shape[axis], str), (v.type, axis)


def test_forward_matches_torch_at_two_batch_sizes(imported):
    name, mode, model, xs, dyn, proto, g, params = imported
    for batch in (xs, [x[:2] for x in xs]):
        want = model(*[torch.from_numpy(x) for x in batch]).detach().numpy()
        assert_close(tp.run(g, *batch, *params), want, ulps=CHAIN, why=WHY)


SEQ = [pytest.param(c, id="-".join(c)) for c in _FAST if c[0] in ("gpt", "gpt_last")]
SEQ += [pytest.param((name, mode), marks=pytest.mark.slow_export, id=f"{name}-{mode}")
        for mode in ("dyn_opt", "dyn_raw") for name in ("gpt", "gpt_last", "encoder")]


@pytest.mark.parametrize("case", SEQ)
def test_forward_matches_torch_at_other_sequence_lengths(case):
    """Models exported with a symbolic sequence (positions by Range over T, a causal-mask
    buffer sliced to T): a shorter and a longer sequence than the traced one."""
    name, mode, model, xs, dyn, proto, g, params = _load(*case)
    assert 1 in dyn[0]
    for steps in (3, xs[0].shape[1] + 4):  # the sequence axis cut, or repeated to a longer one
        batch = [np.take(xs[0], np.arange(steps) % xs[0].shape[1], axis=1)] + [np.minimum(x, steps) for x in xs[1:]]
        want = model(*[torch.from_numpy(x) for x in batch]).detach().numpy()
        for backend in ("numpy", "onnxruntime"):
            assert_close(tp.run(g, *batch, *params, backend=backend), want, ulps=CHAIN, why=WHY, msg=backend)


def _loss_and_grads(imported):
    """The value and gradients of sum(model(x) * w) (w fixed random) with respect to every
    float input (x where it is float, then the float initializers)."""
    name, mode, model, xs, dyn, proto, g, params = imported
    probe = model(*[torch.from_numpy(x) for x in xs]).detach().numpy()
    w = np.random.default_rng(1).standard_normal(probe.shape).astype(np.float32)
    nx = len(xs)
    wrt = tuple(i for i, v in enumerate(g.inputs) if v.type.dtype == "f32")
    lg = tp.trace(lambda *a: tp.sum(tp.call(g, *a[:-1]) * a[-1]), *xs, *params, w,
                  arg_names=[*g.arg_names, "w"])
    vg = tp.value_and_grad(lg, wrt=wrt)
    args = [*xs, *params, w]
    return vg, args, wrt, nx, w


def _torch_grads(imported, w, wrt, nx):
    name, mode, model, xs, dyn, proto, g, params = imported
    tx = [torch.from_numpy(x.copy()).requires_grad_(x.dtype == np.float32) for x in xs]
    model.zero_grad()
    loss = (model(*tx) * torch.from_numpy(w)).sum()
    loss.backward()
    named = dict(model.named_parameters())
    want = {}
    for i in wrt:
        if i < nx:
            want[i] = tx[i].grad.numpy()
        else:
            # the dynamo exporter may prefix names; folded/re-laid initializers (onnx::...) have none
            p = named.get(g.arg_names[i])
            if p is None:
                p = named.get(g.arg_names[i].removeprefix("p_").replace("_", "."))
            # the same parameter only if it holds the same values: the dynamo exporter's optimizer
            # folds BatchNorm into the conv before it and keeps the weight's name (module docstring)
            if (p is not None and p.grad is not None and tuple(p.shape) == params[i - nx].shape
                    and np.array_equal(p.detach().numpy(), params[i - nx])):
                want[i] = p.grad.numpy()
    return loss.item(), want


def _check_grads(imported, value, grads, backend):
    name, mode, model, xs, dyn, proto, g, params = imported
    vg, args, wrt, nx, w = _loss_and_grads(imported)
    want_value, want = _torch_grads(imported, w, wrt, nx)
    assert_close(value, want_value, ulps=CHAIN, why=WHY, msg=backend)
    by_index = dict(zip(wrt, grads))
    for i, gw in want.items():
        assert_close(by_index[i], gw, ulps=CHAIN, why=WHY, msg=f"{backend} d/d{g.arg_names[i]}")
    assert len(want) >= 2, f"only {len(want)} gradients map to torch parameters"


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_gradients_match_torch(imported, backend):
    vg, args, wrt, nx, w = _loss_and_grads(imported)
    value, grads = tp.run(vg, *args, backend=backend)
    _check_grads(imported, value, grads, backend)


def test_gradients_in_plain_onnxruntime(imported):
    import onnxruntime as ort

    vg, args, wrt, nx, w = _loss_and_grads(imported)
    model = tp.to_onnx(vg)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: a for i, a in zip(model.graph.input, args)})
    _check_grads(imported, outs[0], outs[1:], "plain onnxruntime")


# ---- what the exporters get wrong, and what tapeir says about it ------------------------

def test_torchscript_encoder_with_dynamic_sequence_is_refused():
    """The TorchScript exporter writes the traced sequence length (5) into the attention's
    Reshape targets: the model is wrong for other lengths, and tapeir says where."""
    model, xs, dyn = R.make("encoder")
    with pytest.raises(tp.TapeirError, match="Reshape.*cannot reshape"):
        tp.from_onnx(export(model, xs, dyn, "ts_fold"), params="inputs")


def test_lstm_with_symbolic_sequence_is_a_clear_error():
    model, xs, _ = R.make("lstm")
    with pytest.raises(tp.TapeirError, match="sequence length .* is symbolic") as e:
        tp.from_onnx(export(model, xs, [R.BATCH_SEQ], "ts_fold"))
    assert "fixed sequence length" in e.value.hint


@pytest.mark.slow_export
def test_dynamo_train_mode_batchnorm():
    """The dynamo exporter writes a train-mode BatchNorm as an inference one: torch 2.13's
    optimizer folds it into the conv before it, with the running statistics (earlier ones
    wrote BatchNormalization without training_mode=1). tapeir imports what the file says,
    so the model computes torch's eval-mode output, not the train-mode one."""
    model, xs, dyn = R.make("bn_cnn")
    model.train()
    proto = export(model, xs, dyn, "dyn_opt")
    assert not any(n.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i == 1
                                                               for a in n.attribute) for n in proto.graph.node)
    got = tp.run(tp.from_onnx(proto), *xs)
    with torch.no_grad():
        model.eval()
        eval_out = model(*[torch.from_numpy(x) for x in xs]).numpy()
        model.train()  # last: a train-mode call updates the running statistics
        train_out = model(*[torch.from_numpy(x) for x in xs]).numpy()
    assert_close(got, eval_out, ulps=CHAIN, why=WHY)
    assert not np.allclose(got, train_out, rtol=1e-2)


@pytest.mark.slow_export
def test_dynamo_optimizer_folds_batchnorm_into_conv_weights_under_their_names():
    """With its optimizer, the dynamo exporter folds each eval-mode BatchNorm into the conv
    before it and keeps the conv weight's name: the initializer `stem.0.weight` is the folded
    weight, so a gradient with respect to it is not torch's gradient of the parameter of that
    name (the gradient tests compare only initializers that hold the parameter's values)."""
    model, xs, dyn = R.make("resnet")
    proto = export(model, xs, dyn, "dyn_opt")
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    w = model.stem[0].weight.detach().numpy()
    assert inits["stem.0.weight"].shape == w.shape and not np.allclose(inits["stem.0.weight"], w)
