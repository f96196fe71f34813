"""tp.fit (tapeir/train.py), tp.bind (passes/bind.py) and `tapeir demo` run as a user runs it."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import tapeir as tp
from support import assert_close, assert_tree_close, checkout_env


def regression():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    g = tp.trace(lambda p, x, y: ((x @ p["w"] + p["b"] - y) ** 2.0).mean(),
                 {"w": np.zeros(3, np.float32), "b": np.zeros((), np.float32)}, tp.Spec(("B", 3)), tp.Spec(("B",)))
    return g, {"w": np.zeros(3, np.float32), "b": np.zeros((), np.float32)}, x, y


@pytest.mark.parametrize("opt", [tp.optim.SGD(momentum=0.5), tp.optim.Adam(lr=0.05)], ids=["sgd", "adam"])
def test_fit_on_both_backends_matches_calling_the_step_by_hand(opt):
    g, p0, x, y = regression()
    step = tp.training_step(g, optimizer=opt)
    seen = []
    results = {}

    def evaluate(p):
        seen.append(p)
        return {"mse": float(((x @ p["w"] + p["b"] - y) ** 2).mean())}
    for backend in ("numpy", "onnxruntime"):
        results[backend] = tp.fit(step, p0, tp.init_state(opt, p0), (x, y), lr=lambda k: 0.05 / (1 + k / 50),
                                  epochs=3, batch_size=32, seed=3, backend=backend, progress=False,
                                  evaluate=evaluate)
    # by hand, numpy backend, the same shuffles
    f = tp.compile(step)
    rng = np.random.default_rng(3)
    p, s, k, losses = p0, tp.init_state(opt, p0), 0, []
    for _ in range(3):
        order = rng.permutation(len(x))
        for j in range(0, len(x), 32):
            idx = order[j:j + 32]
            loss, p, s = f(p, s, 0.05 / (1 + k / 50), x[idx], y[idx])
            losses.append(float(loss))
            k += 1
    for backend, r in results.items():
        assert len(r.losses) == 12 and [h["steps"] for h in r.history] == [4, 4, 4]
        assert_close(np.array(r.losses, np.float32), np.array(losses, np.float32), dtype="float32", msg=backend)
        assert_tree_close(r.params, p, dtype="float32", msg=backend)
        assert int(r.opt_state["step"]) == 12
        assert r.history[-1]["mse"] < r.history[0]["mse"]
    assert len(seen) == 6  # evaluate ran once per epoch per backend, on params it may keep
    assert p0["w"].tolist() == [0.0, 0.0, 0.0], "fit must not write into the caller's arrays"


def test_fit_progress_prints_plain_lines_when_not_a_terminal(capsys):
    g, p0, x, y = regression()
    opt = tp.optim.SGD()
    tp.fit(tp.training_step(g, optimizer=opt), p0, tp.init_state(opt, p0), (x, y), lr=0.1, epochs=2,
           batch_size=50, evaluate=lambda p: {"val": 1.5})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "\r" not in "".join(lines)
    assert re.match(r"epoch 1/2  step 2  loss [0-9.]+  [0-9]+ steps/s  ETA [0-9.]+s  val 1.5000$", lines[0]), lines


def test_fit_batches_as_a_list_and_errors():
    g, p0, x, y = regression()
    opt = tp.optim.SGD()
    step = tp.training_step(g, optimizer=opt)
    r = tp.fit(step, p0, tp.init_state(opt, p0), [(x[:50], y[:50]), (x[50:], y[50:])], lr=0.1, progress=False)
    assert len(r.losses) == 2
    with pytest.raises(tp.TapeirError, match="not a training step"):
        tp.fit(g, p0, None, (x, y), lr=0.1, batch_size=10)
    with pytest.raises(tp.TapeirError, match="needs batch_size"):
        tp.fit(step, p0, tp.init_state(opt, p0), (x, y), lr=0.1)
    for backend in ("numpy", "onnxruntime"):
        with pytest.raises(tp.RunError, match="input x has shape"):
            tp.fit(step, p0, tp.init_state(opt, p0), [(x[:, :2], y)], lr=0.1, backend=backend, progress=False)


def test_fit_checks_labels_on_onnxruntime_too():
    rng = np.random.default_rng(0)
    p0 = {"w": rng.standard_normal((4, 3)).astype(np.float32)}
    g = tp.trace(lambda p, x, y: tp.cross_entropy(x @ p["w"], y), p0, tp.Spec(("B", 4)), tp.Spec(("B",), "int64"))
    opt = tp.optim.SGD()
    bad = [(np.ones((2, 4), np.float32), np.array([0, 3]))]
    with pytest.raises(tp.RunError, match="cross_entropy"):
        tp.fit(tp.training_step(g, optimizer=opt), p0, tp.init_state(opt, p0), bad, lr=0.1, backend="onnxruntime",
               progress=False)


def test_bind_bakes_weights_named_after_parameters():
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((4, 8)).astype(np.float32), "b1": rng.standard_normal(8).astype(np.float32)}

    def predict(params, x):
        return tp.tanh(x @ params["w1"] + params["b1"])
    g = tp.trace(predict, params, tp.Spec(("B", 4)))
    inf = tp.bind(g, 0, params)
    tp.verify(inf)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    assert_close(tp.run(inf, x), tp.run(g, params, x))
    model = tp.to_onnx(inf)
    assert sorted(t.name for t in model.graph.initializer) == ["params.b1", "params.w1"]
    assert [i.name for i in model.graph.input] == ["x"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"x": x})[0], tp.run(g, params, x), ulps=1024, why="onnxruntime's tanh")
    with pytest.raises(tp.TapeirError, match=r"params.w1 is f32\[4,8\], got an array of float64\[4, 8\]"):
        tp.bind(g, 0, {"w1": np.zeros((4, 8)), "b1": params["b1"]})
    with pytest.raises(tp.TapeirError, match="different pytree structure"):
        tp.bind(g, 0, {"w1": params["w1"]})
    with pytest.raises(tp.TapeirError, match="argnum=2 is not an argument"):
        tp.bind(g, 2, params)


def test_demo_as_a_user_runs_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tapeir.cli", "demo", "-o", "out"], capture_output=True, text=True,
                       cwd=tmp_path, env=checkout_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    accs = [float(a) for a in re.findall(r"(?:numpy|onnxruntime): test accuracy ([0-9.]+)", out)]
    assert len(accs) == 2 and min(accs) >= 0.95, out
    m = re.search(r"predicts the same class for (\d+)/(\d+) test digits", out)
    assert m and m.group(1) == m.group(2), out
    assert "graph mlp_loss(" in out and "epoch 15/15" in out
    files = set(os.listdir(tmp_path / "out"))
    assert {"forward.tapeir", "backward.tapeir", "optimized_step.tapeir", "training_step.onnx", "model.onnx"} <= files
    for name in ("forward.tapeir", "backward.tapeir", "optimized_step.tapeir"):
        tp.verify(tp.load(tmp_path / "out" / name))
    r2 = subprocess.run([sys.executable, "-m", "tapeir.cli", "demo", "--epochs", "1"], capture_output=True, text=True,
                        cwd=tmp_path, env=checkout_env(), timeout=300)
    assert r2.returncode == 0 and (tmp_path / "tapeir-demo").is_dir() and str(tmp_path / "tapeir-demo") in r2.stdout
