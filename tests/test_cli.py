"""The `tapeir` command line: help, `dump`, and clean errors (exit 1, one message, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import tapeir as tp
from support import assert_close, checkout_env
from tapeir.cli import main


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = checkout_env(PYTHONWARNINGS="error::RuntimeWarning")
    return subprocess.run([sys.executable, "-m", "tapeir.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def _graph():
    def loss(params, x):
        return tp.mean((x @ params["w"] - 1.0) ** 2.0)

    return tp.trace(loss, {"w": np.arange(20, dtype=np.float32).reshape(4, 5)}, tp.Spec(("B", 4)))


def test_help_lists_the_commands():
    r = _cli("--help")
    assert r.returncode == 0, r.stderr
    assert "usage: tapeir" in r.stdout
    for command in ("dump", "export", "ops", "demo"):
        assert command in r.stdout
    assert "print the text form of a saved graph" in r.stdout


def test_main_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "dump" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "dump" in capsys.readouterr().out


def test_dump_prints_the_text_form(tmp_path):
    g = _graph()
    path = tmp_path / "loss.tapeir"
    tp.save(g, path)
    r = _cli("dump", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == str(g)
    assert tp.parse(r.stdout) == g


def test_dump_in_process(tmp_path, capsys):
    g = _graph()
    path = tmp_path / "loss.tapeir"
    tp.save(g, path)
    assert main(["dump", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == str(g) and out.startswith("graph loss(params: {w: f32[4,5]}, x: f32[B,4]) {\n")


def _clean_error(r: subprocess.CompletedProcess, *needles):
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("tapeir: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_dump_missing_file_is_a_clean_error(tmp_path):
    missing = tmp_path / "nope.tapeir"
    _clean_error(_cli("dump", missing), "No such file or directory", "nope.tapeir")


def test_dump_directory_is_a_clean_error(tmp_path):
    _clean_error(_cli("dump", tmp_path), str(tmp_path))


def test_dump_python_file_is_a_parse_error_not_execution(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.tapeir"
    # only tokens our lexer knows, so the parser itself must refuse it
    evil.write_text(f"import os\nopen({json.dumps(str(marker))}, \"w\")\n")
    _clean_error(_cli("dump", evil), "line 1, col 1: expected 'graph', found 'import'")
    assert not marker.exists()


def test_dump_binary_file_is_a_clean_error(tmp_path):
    junk = tmp_path / "junk.tapeir"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    _clean_error(_cli("dump", junk), "not UTF-8")


def test_main_returns_1_on_errors(tmp_path, capsys):
    assert main(["dump", str(tmp_path / "missing.tapeir")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tapeir: error: ") and "missing.tapeir" in err


def test_export_then_dump_onnx(tmp_path, capsys):
    import onnx

    g = tp.value_and_grad(tp.trace(lambda x, w: tp.tanh(x @ w).sum(), tp.Spec(("B", 3)),
                                   np.ones((3, 2), np.float32)), wrt=1)
    saved, model = tmp_path / "step.tapeir", tmp_path / "step.onnx"
    tp.save(g, saved)
    assert main(["export", str(saved), str(model), "--opset", "18"]) == 0
    onnx.checker.check_model(onnx.load(str(model)), full_check=True)
    assert [o.name for o in onnx.load(str(model)).graph.output] == ["value", "grad.w"]
    capsys.readouterr()
    assert main(["dump", str(model)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("graph ") and "matmul(x, w)" in text and "# step.onnx:" in text
    back = tp.parse(text)
    x, w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), np.ones((3, 2), np.float32)
    for a, b in zip(tp.run(back, x, w), tp.run(g, x, w)):
        assert_close(a, b)


def test_export_of_a_missing_file_is_a_clean_error(tmp_path):
    r = _cli("export", str(tmp_path / "nope.tapeir"), str(tmp_path / "out.onnx"))
    _clean_error(r, "nope.tapeir")
