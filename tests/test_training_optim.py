"""Optimizers as IR (passes/optim.py): 20 training steps of a small MLP on the same batch, the
numpy backend vs the onnxruntime backend vs torch.optim, for SGD variants, Adam, AdamW and
clipping by global norm; plus the step graph's shape, names and errors.

Tolerance: the suite's default (64 ulps of |expected| + scale, tests/support.py). Both
backends and torch run the same f32 math in other summation orders; after 20 steps the
largest difference measured was 7 ulps (Adam, onnxruntime vs numpy), 5.5 vs torch, so the
default budget holds with room.
"""
from __future__ import annotations

import numpy as np
import pytest

import tapeir as tp
from support import assert_close, assert_tree_close, traced_path

STEPS = 20


def mlp_loss(params, x, y):
    h = tp.tanh(x @ params["w1"] + params["b1"])
    return tp.cross_entropy(h @ params["w2"] + params["b2"], y)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": (rng.standard_normal((8, 16)) / 3).astype(np.float32), "b1": np.zeros(16, np.float32),
              "w2": (rng.standard_normal((16, 4)) / 4).astype(np.float32),
              "b2": rng.standard_normal(4).astype(np.float32)}
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    return params, x, y


def lr_at(base, k):
    return base * 0.95 ** k  # a schedule: lr is an input, so it changes without retracing


def run_tapeir(opt, backend, clip=None, base_lr=0.05):
    params, x, y = make_data()
    g = tp.trace(mlp_loss, params, tp.Spec(("B", 8)), tp.Spec(("B",), "int64"))
    step = tp.compile(tp.training_step(g, optimizer=opt, clip_grad_norm=clip), backend=backend)
    state = tp.init_state(opt, params)
    losses = []
    for k in range(STEPS):
        loss, params, state = step(params, state, lr_at(base_lr, k), x, y)
        losses.append(float(loss))
    return np.array(losses, np.float32), params, state


def run_torch(make_opt, clip=None, base_lr=0.05):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    params, x, y = make_data()
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_opt(torch.optim, [p[k] for k in sorted(p)], base_lr)
    losses = []
    for k in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(base_lr, k)
        opt.zero_grad()
        h = torch.tanh(torch.tensor(x) @ p["w1"] + p["b1"])
        loss = torch.nn.functional.cross_entropy(h @ p["w2"] + p["b2"], torch.tensor(y))
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p[k] for k in sorted(p)], clip)
        opt.step()
        losses.append(loss.item())
    return np.array(losses, np.float32), {k: v.detach().numpy() for k, v in p.items()}


# (id, tapeir optimizer, torch optimizer factory, clip)
CASES = [
    ("sgd", tp.optim.SGD(lr=0.05), lambda o, ps, lr: o.SGD(ps, lr=lr, foreach=False), None),
    ("sgd-momentum-dampening-decay", tp.optim.SGD(momentum=0.9, dampening=0.3, weight_decay=1e-2),
     lambda o, ps, lr: o.SGD(ps, lr=lr, momentum=0.9, dampening=0.3, weight_decay=1e-2, foreach=False), None),
    ("sgd-nesterov", tp.optim.SGD(momentum=0.8, nesterov=True, weight_decay=1e-3),
     lambda o, ps, lr: o.SGD(ps, lr=lr, momentum=0.8, nesterov=True, weight_decay=1e-3, foreach=False), None),
    ("adam", tp.optim.Adam(), lambda o, ps, lr: o.Adam(ps, lr=lr, foreach=False), None),
    ("adam-l2-betas", tp.optim.Adam(betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
     lambda o, ps, lr: o.Adam(ps, lr=lr, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, foreach=False), None),
    ("adamw", tp.optim.AdamW(), lambda o, ps, lr: o.AdamW(ps, lr=lr, foreach=False), None),
    ("adamw-clip", tp.optim.AdamW(weight_decay=0.1),
     lambda o, ps, lr: o.AdamW(ps, lr=lr, weight_decay=0.1, foreach=False), 0.5),
    ("sgd-momentum-clip", tp.optim.SGD(momentum=0.9),
     lambda o, ps, lr: o.SGD(ps, lr=lr, momentum=0.9, foreach=False), 0.1),
]


@pytest.mark.parametrize("name,opt,torch_opt,clip", CASES, ids=[c[0] for c in CASES])
def test_twenty_steps_match_torch_and_both_backends(name, opt, torch_opt, clip):
    loss_np, p_np, s_np = run_tapeir(opt, "numpy", clip)
    loss_ort, p_ort, s_ort = run_tapeir(opt, "onnxruntime", clip)
    assert loss_np[-1] < loss_np[0], "training did not reduce the loss"
    assert int(s_np["step"]) == int(s_ort["step"]) == STEPS
    assert_close(loss_ort, loss_np, dtype="float32")
    assert_tree_close(p_ort, p_np, dtype="float32")
    assert_tree_close(s_ort, s_np)
    loss_t, p_t = run_torch(torch_opt, clip)
    assert_close(loss_np, loss_t, dtype="float32")
    assert_tree_close(p_np, p_t, dtype="float32")


def test_clipping_changes_the_step():
    _, p_clip, _ = run_tapeir(tp.optim.SGD(), "numpy", clip=1e-3)
    _, p_free, _ = run_tapeir(tp.optim.SGD(), "numpy")
    params, _, _ = make_data()
    moved_clip = max(float(np.abs(p_clip[k] - params[k]).max()) for k in params)
    moved_free = max(float(np.abs(p_free[k] - params[k]).max()) for k in params)
    assert moved_clip <= STEPS * 0.05 * 1e-3 * 1.0001 < moved_free


def test_step_graph_names_types_and_text_round_trip():
    params, x, y = make_data()
    g = tp.trace(mlp_loss, params, tp.Spec(("B", 8)), tp.Spec(("B",), "int64"))
    step = tp.training_step(g, optimizer=tp.optim.Adam())
    tp.verify(step)
    assert tp.parse(str(step)) == step
    assert step.arg_names == ["params", "opt_state", "lr", "x", "y"]
    assert step.output_names[0] == "loss" and "new_opt_state.step" in step.output_names
    types = {v.name: str(v.type) for v in step.inputs}
    assert types["lr"] == "f64[]" and types["opt_state.step"] == "i64[]"
    assert types["opt_state.exp_avg.w1"] == "f32[8,16]"
    updates = [n for n in step.nodes if n.source and n.source.endswith("(Adam update)")]
    assert updates and all(n.source.startswith(traced_path(__file__) + ":") for n in updates)
    model = tp.to_onnx(step)
    assert {n.domain for n in model.graph.node} <= {""}, "the step is plain ai.onnx"


def test_state_and_init_state_errors():
    params, x, y = make_data()
    g = tp.trace(mlp_loss, params, tp.Spec(("B", 8)), tp.Spec(("B",), "int64"))
    with pytest.raises(tp.TapeirError, match="optimizer=tp.optim"):
        tp.training_step(g)
    with pytest.raises(tp.TapeirError, match="one argument index"):
        tp.training_step(g, wrt=(0,), optimizer=tp.optim.SGD())
    with pytest.raises(tp.TapeirError, match="not floating point"):
        tp.training_step(g, wrt=2, optimizer=tp.optim.SGD())
    with pytest.raises(tp.TapeirError, match="Nesterov"):
        tp.optim.SGD(nesterov=True)
    with pytest.raises(tp.TapeirError, match="betas"):
        tp.optim.Adam(betas=(0.9, 1.0))
    with pytest.raises(tp.TapeirError, match="init_state expects an optimizer"):
        tp.init_state("adam", params)
    step = tp.compile(tp.training_step(g, optimizer=tp.optim.SGD()))
    state = tp.init_state(tp.optim.SGD(), params)
    with pytest.raises(tp.RunError, match="input x has shape"):
        step(params, state, 0.1, x[:, :5], y)  # a wrong-shaped batch
    with pytest.raises(tp.RunError, match="lr has dtype float32"):
        step(params, state, np.float32(0.1), x, y)


def test_f64_bias_correction_matches_torch_first_steps():
    # after one Adam step every parameter moves by lr (m / sqrt(v) = sign(g)) up to eps: in f32
    # powers, 1 - 0.999 would be 1e-3 * (1 - 1.3e-5) and the step would be off by that much
    w = np.array([0.5, -2.0, 3.0], np.float32)
    g = tp.trace(lambda w: (w * w).sum(), w)
    opt = tp.optim.Adam(lr=0.1)
    _, w1, _ = tp.run(tp.training_step(g, optimizer=opt), w, tp.init_state(opt, w), 0.1)
    assert_close(w1, w - np.float32(0.1) * np.sign(w), dtype="float32", ulps=4, why="one rounding per op: exact")
