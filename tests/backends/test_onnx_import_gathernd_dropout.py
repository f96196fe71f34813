"""Issue 11's remaining import coverage: GatherND (computed indices, symbolic dims),
Dropout in training mode (a key input), BatchNormalization in training mode.

References: onnxruntime running the original model, numpy (np.add.at) for gradients.
"""
from __future__ import annotations

import numpy as np
import pytest

import onnx  # noqa: E402  (a runtime dependency: never skipped)
import onnxruntime as ort  # noqa: E402

from onnx import TensorProto as T, helper  # noqa: E402

import tapeir as tp  # noqa: E402
from support import assert_close, rng  # noqa: E402

F32, I64 = np.float32, np.int64


def model(nodes, inputs, outputs, opset=18):
    vis = [helper.make_tensor_value_info(k, *v) for k, v in inputs.items()]
    g = helper.make_graph(nodes, "m", vis, [helper.make_empty_tensor_value_info(o) for o in outputs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def run_ort(m, *args):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), args)})


def gather_nd_ref(data, idx, b):
    """ONNX GatherND by loops (independent of the importer's flat-index arithmetic)."""
    out = [data[tuple(j) + tuple(idx[tuple(j)][..., k] for k in range(idx.shape[-1]))]
           for j in np.ndindex(*idx.shape[:b])] if b else [data[tuple(np.moveaxis(idx, -1, 0))]]
    return np.stack(out).reshape(idx.shape[:-1] + data.shape[b + idx.shape[-1]:]) if b else out[0]


# data f32[B,T,V] with symbolic B and T; indices as the model computes them
ND_CASES = {
    # GPT-2's pick: rows (b, t) given as pairs, batch_dims 0
    "pairs": (0, [helper.make_node("GatherND", ["x", "i"], ["y"])], ("i", T.INT64, ["K", 2])),
    # the last real token per row: lengths - 1, batch_dims 1
    "last_token": (1, [helper.make_node("Sub", ["n", "one"], ["m"]),
                       helper.make_node("Unsqueeze", ["m", "ax"], ["i"]),
                       helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)], ("n", T.INT64, ["B"])),
}


def _nd_model(case):
    b, nodes, idx_info = ND_CASES[case]
    consts = [helper.make_node("Constant", [], ["one"], value=helper.make_tensor("c", T.INT64, [], [1])),
              helper.make_node("Constant", [], ["ax"], value=helper.make_tensor("a", T.INT64, [1], [1]))]
    return b, model(consts + nodes, {"x": (T.FLOAT, ["B", "T", 5]), idx_info[0]: idx_info[1:]}, ["y"])


def _nd_inputs(case, B, T_):
    gen = rng("gathernd", case, B, T_)
    x = gen.standard_normal((B, T_, 5)).astype(F32)
    if case == "pairs":  # repeats (gradients accumulate) and negative indices
        i = np.stack([gen.integers(-B, B, 7), gen.integers(-T_, T_, 7)], axis=-1).astype(I64)
        return x, i, i % np.array([B, T_])
    n = gen.integers(1, T_ + 1, B).astype(I64)
    return x, n, (n - 1)[:, None]


@pytest.mark.parametrize("case", sorted(ND_CASES))
def test_gather_nd_with_computed_indices_over_symbolic_dims(case):
    b, m = _nd_model(case)
    g = tp.from_onnx(m)
    tp.verify(g)
    assert "take(" in str(g) and tp.parse(str(g)) == g
    for B, T_ in ((3, 4), (2, 7)):  # one graph, two run-time sizes
        x, i, pos = _nd_inputs(case, B, T_)
        want = gather_nd_ref(x, pos, b)
        assert_close(tp.run(g, x, i), want)
        assert_close(run_ort(m, x, i)[0], want)
        assert_close(tp.run(g, x, i, backend="onnxruntime"), want)


@pytest.mark.parametrize("case", sorted(ND_CASES))
def test_gather_nd_differentiates_as_a_scatter_add(case):
    b, m = _nd_model(case)
    g = tp.from_onnx(m)
    idx = g.inputs[1].type
    loss = tp.trace(lambda x, i, w: (tp.call(g, x, i) * w).sum(),
                    tp.Spec(("B", "T", 5)), tp.Spec(idx.shape, "int64"), tp.Spec((5,)), arg_names=["x", "i", "w"])
    dg = tp.grad(loss, wrt=0)
    for B, T_ in ((3, 4), (2, 7)):
        x, i, pos = _nd_inputs(case, B, T_)
        w = np.arange(1, 6, dtype=F32)
        want = np.zeros_like(x)
        rows = (np.arange(B), pos[:, 0]) if b else tuple(pos.T)
        np.add.at(want, rows, w)
        assert_close(tp.run(dg, x, i, w), want)
        assert_close(tp.run(dg, x, i, w, backend="onnxruntime"), want)


def test_gather_nd_bad_index_width_is_a_clear_error():
    m = model([helper.make_node("GatherND", ["x", "i"], ["y"], name="pick")],
              {"x": (T.FLOAT, [2, 3]), "i": (T.INT64, [4, 3])}, ["y"])
    with pytest.raises(tp.TapeirError, match=r"GatherND.*indices \[4, 3\]") as e:
        tp.from_onnx(m)
    assert "pick" in str(e.value) and e.value.hint


# ---- Dropout in training mode: a key input per node ------------------------------------

def _dropout_model(ratio=0.3, mask=True, opset=18, training="const"):
    outs = ["y", "m"] if mask else ["y"]
    if opset < 7:
        nodes = [helper.make_node("Dropout", ["x"], outs, name="drop", is_test=0, ratio=ratio)]
        return model(nodes, {"x": (T.FLOAT, ["B", 400])}, outs, opset=opset)
    c = [helper.make_node("Constant", [], ["r"], value=helper.make_tensor("r", T.FLOAT, [], [ratio]))]
    if training == "const":
        c.append(helper.make_node("Constant", [], ["t"], value=helper.make_tensor("t", T.BOOL, [], [True])))
    inputs = {"x": (T.FLOAT, ["B", 400])}
    if training == "input":
        inputs["t"] = (T.BOOL, [])
    return model(c + [helper.make_node("Dropout", ["x", "r", "t"], outs, name="drop")], inputs, outs, opset=opset)


@pytest.mark.parametrize("opset", [6, 18])
def test_training_dropout_gets_a_key_input_and_draws_by_statistics(opset):
    p = 0.3
    g = tp.from_onnx(_dropout_model(p, opset=opset))
    assert g.arg_names == ["x", "dropout_key.drop"] and g.inputs[1].type.dtype == "i64"
    exported = tp.to_onnx(g)
    sess = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for B in (50, 7):
        x = rng("dropout", B).uniform(1, 2, (B, 400)).astype(F32)
        y, m = tp.run(g, x, np.int64(11))
        n = x.size
        # zeros ~ Binomial(n, p): within 5 standard deviations
        assert abs((~m).sum() - n * p) < 5 * np.sqrt(n * p * (1 - p)) + 1
        assert_close(y, np.where(m, x * np.float32(1 / (1 - p)), 0))
        # the same key draws the same mask in numpy, the onnxruntime backend and plain onnxruntime
        for other in (tp.run(g, x, np.int64(11), backend="onnxruntime"), sess.run(None, {"x": x, "dropout_key.drop": np.array(11, I64)})):
            assert (other[1] == m).all() and (other[0] == y).all()
        # a new key, a new mask
        assert (tp.run(g, x, np.int64(12))[1] != m).any()


def test_training_dropout_gradient_is_its_mask():
    p = 0.25
    g = tp.from_onnx(_dropout_model(p, mask=False))
    loss = tp.trace(lambda x, k, w: (tp.call(g, x, k) * w).sum(), tp.Spec(("B", 400)), tp.Spec((), "int64"),
                    tp.Spec((400,)), arg_names=["x", "key", "w"])
    mask_of = tp.from_onnx(_dropout_model(p))
    x, w = rng("dropout grad").standard_normal((3, 400)).astype(F32), np.linspace(-1, 1, 400, dtype=F32)
    for backend in ("numpy", "onnxruntime"):
        got = tp.run(tp.grad(loss, wrt=0), x, np.int64(4), w, backend=backend)
        mask = tp.run(mask_of, x, np.int64(4))[1]  # the mask, read back and fed to the reference
        assert_close(got, np.where(mask, w * np.float32(1 / (1 - p)), 0))


def test_dropout_training_mode_as_a_graph_input_is_a_clear_error():
    with pytest.raises(tp.TapeirError, match="training_mode") as e:
        tp.from_onnx(_dropout_model(training="input"))
    assert "drop" in str(e.value)


def test_torch_train_mode_dropout_mlp_matches_torch_given_the_same_masks():
    """DropoutMLP exported in training mode: tapeir's masks (drawn from the key inputs)
    patched into torch's nn.Dropout layers, then forward and gradients against autograd."""
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    import io
    import warnings
    import real_models as R
    model, xs, dyn = R.make("dropout_mlp")
    model.train()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(xs[0]),), f, dynamo=False, input_names=["x0"],
                          dynamic_axes={"x0": {0: "batch"}}, training=torch.onnx.TrainingMode.TRAINING,
                          do_constant_folding=False)
    proto = onnx.load_from_string(f.getvalue())
    g = tp.from_onnx(proto, params="inputs")
    keys = [k for k in g.arg_names if k.startswith("dropout_key.")]
    assert len(keys) == 2
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    names = [k for k in g.arg_names[1:] if k not in keys]
    key_vals = [np.int64(3), np.int64(9)]
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]

    def patched(layer, key):  # torch's dropout with tapeir's mask for this key
        def hook(mod, inp, out):
            u = tp.run(tp.trace(lambda k: tp.random_uniform(k, inp[0].shape), tp.Spec((), "int64")), key)
            return inp[0] * torch.from_numpy(u >= np.float32(layer.p)) / (1 - layer.p)
        return layer.register_forward_hook(hook)
    handles = [patched(d, k) for d, k in zip(drops, key_vals)]
    try:
        x = torch.from_numpy(xs[0])
        w = rng("dropout mlp").standard_normal((4, 5)).astype(F32)
        model.zero_grad()
        loss = (model(x) * torch.from_numpy(w)).sum()
        loss.backward()
    finally:
        for h_ in handles:
            h_.remove()
    lg = tp.trace(lambda *a: (tp.call(g, *a[:-1]) * a[-1]).sum(), xs[0], *[params[n] for n in names], *key_vals, w,
                  arg_names=[*g.arg_names, "w"])
    vg = tp.value_and_grad(lg, wrt=tuple(range(1, 1 + len(names))))
    value, grads = tp.run(vg, xs[0], *[params[n] for n in names], *key_vals, w)
    assert_close(value, loss.item(), ulps=64, why="a 3-layer float32 MLP against torch's kernels")
    for n, gr in zip(names, grads):
        assert_close(gr, dict(model.named_parameters())[n].grad.numpy(), ulps=64,
                     why="a 3-layer float32 MLP against torch's kernels", msg=n)


# ---- BatchNormalization in training mode -------------------------------------------------

def test_torch_train_mode_batchnorm_cnn_matches_torch_forward_and_gradients():
    """The TorchScript exporter with TrainingMode.TRAINING writes BatchNormalization with
    training_mode=1 (the dynamo exporter does not: tests/backends/test_real_models.py):
    batch statistics, differentiated through, as torch's autograd. The running-statistics
    outputs follow ONNX (population variance), not torch's unbiased update; the model does
    not return them. ONNX's own training_mode cases pin those (conformance sweep)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    import io
    import warnings
    import real_models as R
    model, xs, dyn = R.make("bn_cnn")
    model.train()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(xs[0]),), f, dynamo=False, input_names=["x0"], opset_version=17,
                          dynamic_axes={"x0": {0: "batch"}}, training=torch.onnx.TrainingMode.TRAINING,
                          do_constant_folding=False)
    proto = onnx.load_from_string(f.getvalue())
    assert all(any(a.name == "training_mode" and a.i == 1 for a in n.attribute)
               for n in proto.graph.node if n.op_type == "BatchNormalization")
    g = tp.from_onnx(proto, params="inputs")
    named = dict(model.named_parameters())
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    params = [inits[n] for n in g.arg_names[1:]]
    why = "a small CNN with batch statistics in float32 against torch's kernels"
    for x in (xs[0], xs[0][:2]):
        w = rng("bn train", len(x)).standard_normal((len(x), 5)).astype(F32)
        model.zero_grad()
        loss = (model(torch.from_numpy(x)) * torch.from_numpy(w)).sum()
        loss.backward()
        wrt = tuple(i for i, n in enumerate(g.arg_names) if n in named)
        lg = tp.trace(lambda *a: (tp.call(g, *a[:-1]) * a[-1]).sum(), x, *params, w, arg_names=[*g.arg_names, "w"])
        value, grads = tp.run(tp.value_and_grad(lg, wrt=wrt), x, *params, w)
        assert_close(value, loss.item(), ulps=2**10, scale=float(np.abs(w).sum()), why=why)
        # a conv bias before a training-mode BatchNorm has gradient 0 (the batch mean cancels
        # it): rounding noise there is measured against the largest gradient of the network
        big = max(float(np.abs(p.grad.numpy()).max()) for p in named.values())
        for i, gr in zip(wrt, grads):
            assert_close(gr, named[g.arg_names[i]].grad.numpy(), ulps=2**10, scale=big, why=why, msg=g.arg_names[i])
