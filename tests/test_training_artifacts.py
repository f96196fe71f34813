"""`tapeir train-artifacts` as a user runs it (subprocess): a torch.onnx.export model in,
training_step.onnx / eval.onnx / checkpoint.npz / README.txt out; the README's loop runs
with onnxruntime and numpy only and trains; the step matches torch.optim on the same model;
bad input is one clear error and leaves no directory behind."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import tapeir as tp
from support import assert_close, checkout_env


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tapeir.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=checkout_env(PYTHONWARNINGS="error::RuntimeWarning"), timeout=120)


def _torch_mlp(path, dynamo=False):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    if dynamo:
        pytest.importorskip("onnxscript", reason="the torch.export-based exporter needs onnxscript")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    kw = dict(dynamic_shapes=({0: torch.export.Dim("batch")},)) if dynamo else dict(dynamic_axes={"x": {0: "batch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(7, 12),), str(path), dynamo=dynamo, input_names=["x"],
                          output_names=["logits"], **kw)
    return model


def _loop(readme: str) -> str:
    m = re.search(r"```python\n(.*?)```", readme, re.S)
    assert m, "README.txt has no python block"
    return m.group(1)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_cli_writes_artifacts_whose_readme_loop_trains(tmp_path, dynamo):
    _torch_mlp(tmp_path / "mlp.onnx", dynamo)
    r = _cli("train-artifacts", "mlp.onnx", "--loss", "cross_entropy", "--optimizer", "adam", "--lr", "0.01",
             "-o", "art", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    art = tmp_path / "art"
    assert sorted(os.listdir(art)) == ["README.txt", "checkpoint.npz", "eval.onnx", "training_step.onnx"]
    for name in ("training_step.onnx", "eval.onnx"):
        m = onnx.load(str(art / name))
        onnx.checker.check_model(m, full_check=True)
        assert {n.domain for n in m.graph.node} <= {""}, f"{name} uses non-standard ops"
    text = (art / "README.txt").read_text()
    step = ort.InferenceSession(str(art / "training_step.onnx"))
    for v in step.get_inputs() + step.get_outputs():  # the README names every input and output
        assert f" {v.name}: " in text, v.name
    for artifact in ("training_model", "eval_model", "optimizer_model", "checkpoint"):
        assert artifact in text
    loop = _loop(text)
    assert len(loop.strip().splitlines()) <= 15
    assert set(re.findall(r"^import (.*)$", loop, re.M)) == {"numpy as np, onnxruntime as ort"}
    (art / "loop.py").write_text(loop)
    run = subprocess.run([sys.executable, "loop.py"], capture_output=True, text=True, cwd=art, timeout=120)
    assert run.returncode == 0, run.stderr
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", run.stdout)]
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0], run.stdout
    trained = np.load(art / "trained.npz")
    assert int(trained["opt_state.step"]) == 50


def test_artifact_step_matches_torch_adam(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional test oracle; .ci/run installs it")
    model = _torch_mlp(tmp_path / "mlp.onnx")
    from tapeir.artifacts import write

    write(str(tmp_path / "mlp.onnx"), str(tmp_path / "art"), "cross_entropy", "adam")
    step = ort.InferenceSession(str(tmp_path / "art" / "training_step.onnx"))
    names = [o.name for o in step.get_outputs()]
    state = dict(np.load(tmp_path / "art" / "checkpoint.npz"))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 12)).astype(np.float32), rng.integers(0, 5, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=False)
    for _ in range(10):
        out = step.run(None, {**state, "lr": np.array(1e-2), "x": x, "target": y})
        state = {n[len("new_"):]: v for n, v in zip(names[1:], out[1:])}
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        assert_close(out[0], np.float32(loss.item()), dtype="float32")
    for name, p in model.named_parameters():
        assert_close(state[f"params.{name}"], p.detach().numpy(), dtype="float32", msg=name)


def test_mse_artifacts_from_a_tapeir_model(tmp_path):
    w = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    tp.save_onnx(tp.trace(lambda x: tp.tanh(x @ w), tp.Spec(("N", 3))), tmp_path / "reg.onnx")
    r = _cli("train-artifacts", "reg.onnx", "--loss", "mse", "--optimizer", "sgd", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    step = ort.InferenceSession(str(tmp_path / "out" / "training_step.onnx"))
    assert [(i.name, i.type) for i in step.get_inputs()][-2:] == [("x", "tensor(float)"), ("target", "tensor(float)")]
    # tapeir itself runs the same step with a wrong-shaped batch: a RunError naming the input
    g = tp.from_onnx(str(tmp_path / "out" / "training_step.onnx"))
    state = dict(np.load(tmp_path / "out" / "checkpoint.npz"))
    feeds = [state[v.name] for v in g.inputs[:2]]
    with pytest.raises(tp.RunError, match="input x has shape"):
        tp.run(g, *feeds, np.array(0.1), np.ones((4, 5), np.float32), np.ones((4, 2), np.float32))


def _no_leftovers(folder, before):
    assert sorted(os.listdir(folder)) == before, "a partial output was left behind"


def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path):
    w = np.ones((3, 2), np.float32)
    tp.save_onnx(tp.trace(lambda x: x @ w, tp.Spec(("N", 3))), tmp_path / "ok.onnx")
    tp.save_onnx(tp.trace(lambda x: tp.relu(x), tp.Spec(("N", 3))), tmp_path / "noparams.onnx")
    tp.save_onnx(tp.trace(lambda x: (x @ w).sum(axis=1), tp.Spec(("N", 3))), tmp_path / "vector.onnx")
    before = sorted(os.listdir(tmp_path))
    cases = [
        (["ok.onnx", "--loss", "hinge"], "unknown loss 'hinge'"),
        (["ok.onnx", "--loss", "mse", "--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
        (["noparams.onnx", "--loss", "mse"], "has no float parameters"),
        (["vector.onnx", "--loss", "cross_entropy"], r"cross_entropy needs logits of shape \[N, C\]"),
        (["missing.onnx", "--loss", "mse"], "cannot read missing.onnx"),
    ]
    for args, message in cases:
        r = _cli("train-artifacts", *args, "-o", "out", cwd=tmp_path)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert re.search(message, r.stderr) and "Traceback" not in r.stderr, r.stderr
        _no_leftovers(tmp_path, before)
    (tmp_path / "taken").mkdir()
    r = _cli("train-artifacts", "ok.onnx", "--loss", "mse", "-o", "taken", cwd=tmp_path)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert os.listdir(tmp_path / "taken") == []


def test_a_failure_while_writing_removes_the_temporary_directory(tmp_path, monkeypatch):
    w = np.ones((3, 2), np.float32)
    tp.save_onnx(tp.trace(lambda x: x @ w, tp.Spec(("N", 3))), tmp_path / "ok.onnx")
    import tapeir.artifacts as A

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(A.np, "savez", boom)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError, match="disk full"):
        A.write(str(tmp_path / "ok.onnx"), str(tmp_path / "out"), "mse", "adam")
    _no_leftovers(tmp_path, before)
