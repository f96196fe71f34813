"""The README stays true: its op table is what `tapeir ops` prints, its commands exist."""
import os
import re

from tapeir.cli import op_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_op_table_is_current():
    assert op_table() in _readme(), "README's op table is stale: paste the output of `tapeir ops`"


def test_every_op_has_forward_and_gradient_or_says_why():
    for line in op_table().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "yes", f"{cells[0]} has no numpy kernel"
        assert cells[3] in ("yes", "no gradient", "through its body"), f"{cells[0]} is differentiable but has no VJP rule"


def test_readme_names_the_two_commands():
    text = _readme()
    assert re.search(r'pip install -e "\.\[test\]" && tapeir demo', text)
    assert re.search(r"^pytest", text, re.M)


def test_training_example_runs(tmp_path, monkeypatch, capsys):
    section = _readme().split("## Training", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)
    assert env["result"].history[-1]["acc"] >= 0.9, env["result"].history
    assert sorted(t.name for t in __import__("onnx").load("model.onnx").graph.initializer) == \
        ["params.b1", "params.b2", "params.w1", "params.w2"]
