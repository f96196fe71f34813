"""The examples run and do what their docstrings claim."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mlp_numpy_reaches_95_percent():
    mlp = _load("mlp_numpy")
    params, accuracy = mlp.train(verbose=False)
    assert accuracy >= 0.95, accuracy
    assert set(params) == {"w1", "b1", "w2", "b2"}


def test_demo_runs(capsys, tmp_path):
    from tapeir.demo import main

    assert main(epochs=2, out_dir=str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "graph mlp_loss(" in out and "test accuracy" in out
    assert {"forward.tapeir", "backward.tapeir", "optimized_step.tapeir", "model.onnx"} <= set(os.listdir(tmp_path / "out"))


def test_mlp_onnxruntime_trains_from_the_exported_step(tmp_path):
    mlp = _load("mlp_onnxruntime")
    _, accuracy = mlp.train(path=str(tmp_path / "step.onnx"), verbose=False)
    assert accuracy >= 0.95, accuracy
