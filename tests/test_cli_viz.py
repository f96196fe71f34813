"""`tapeir viz FILE -o OUT` as a user runs it (a subprocess): DOT text from a saved graph and
from an ONNX model, SVG where Graphviz is installed, and clean errors (exit 1, one message,
no traceback, no file left behind) for a missing `dot`, an unknown format, a missing input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tapeir as tp
from support import checkout_env


def _cli(*args, path=None) -> subprocess.CompletedProcess:
    env = checkout_env(PYTHONWARNINGS="error::RuntimeWarning")
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "tapeir.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def _saved_grad_graph(tmp_path):
    def loss(params, x):
        return tp.mean((x @ params["w"] - 1.0) ** 2.0)

    g = tp.value_and_grad(tp.trace(loss, {"w": np.ones((4, 5), np.float32)}, tp.Spec(("B", 4))))
    path = tmp_path / "loss.tapeir"
    tp.save(g, path)
    return g, path


def _clean_error(r, *needles):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("tapeir: error: ") and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_viz_writes_dot_text_of_a_saved_graph(tmp_path):
    g, path = _saved_grad_graph(tmp_path)
    out = tmp_path / "loss.dot"
    r = _cli("viz", path, "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"wrote {out} (dot; {len(g.nodes)} nodes: 4 forward, {len(g.nodes) - 4} backward)\n"
    text = out.read_text(encoding="utf-8")
    assert text.startswith('digraph "loss_value_and_grad" {') and text.endswith("}\n")
    assert 'label="grad.params.w\\nf32[4,5]"' in text and 'fillcolor="#ffd8a8"' in text


def test_viz_of_an_onnx_model(tmp_path):
    g, _ = _saved_grad_graph(tmp_path)
    model = tmp_path / "loss.onnx"
    tp.save_onnx(g, model)
    out = tmp_path / "model.dot"
    r = _cli("viz", model, "--output", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text(encoding="utf-8")
    assert "loss.onnx:grad.params.w/MatMul" in text  # imported nodes keep the ONNX node names as sources


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (the SVG path needs it)")
def test_viz_svg(tmp_path):
    _, path = _saved_grad_graph(tmp_path)
    out = tmp_path / "loss.svg"
    r = _cli("viz", path, "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out} (svg; ")
    assert out.read_text(encoding="utf-8").lstrip().startswith("<?xml") and "</svg>" in out.read_text()


def test_viz_svg_without_graphviz_is_a_clean_error(tmp_path):
    _, path = _saved_grad_graph(tmp_path)
    empty = tmp_path / "no-bin"
    empty.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = _cli("viz", path, "-o", out_dir / "loss.svg", path=str(empty))
    _clean_error(r, "needs Graphviz's `dot` program, which is not on PATH", "install Graphviz",
                 str(out_dir / "loss.dot"))
    assert os.listdir(out_dir) == []


def test_viz_unknown_format_and_missing_input_are_clean_errors(tmp_path):
    _, path = _saved_grad_graph(tmp_path)
    _clean_error(_cli("viz", path, "-o", tmp_path / "loss.bmp"), "cannot tell the picture format", ".svg")
    _clean_error(_cli("viz", tmp_path / "nope.tapeir", "-o", tmp_path / "x.dot"), "No such file", "nope.tapeir")
    assert sorted(os.listdir(tmp_path)) == ["loss.tapeir"]


def test_viz_needs_an_output(tmp_path):
    _, path = _saved_grad_graph(tmp_path)
    r = _cli("viz", path)
    assert r.returncode == 2 and "-o/--output" in r.stderr
