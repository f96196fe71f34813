"""backends/graphviz.py: node roles, the DOT text (escaping, fused clusters, caps) and the
SVG path. The DOT text is checked with a small independent reader below; where Graphviz's
`dot` is installed, its own SVG rendering is the reference for what a label shows."""
from __future__ import annotations

import inspect
import os
import re
import shutil
import stat
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import tapeir as tp
from tapeir.backends import graphviz as gv
from tapeir.ir.graph import Graph, Node, Value

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (the SVG path needs it)")

# --------------------------------------------------------------- an independent DOT reader

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_STMT = re.compile(r"^\s*(\w+) \[(.*)\];$")
_EDGE = re.compile(r"^\s*(\w+) -> (\w+) \[(.*)\];$")
_ATTR = re.compile(r"(\w+)=(" + _QUOTED + r"|[\w.]+)")


def _unquote(s: str) -> str:
    """What Graphviz shows for a quoted DOT label: \\" is a quote, \\\\ a backslash, \\n a break."""
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), s)


def _attrs(text: str) -> dict:
    return {m.group(1): _unquote(m.group(3)) if m.group(3) is not None else m.group(2)
            for m in _ATTR.finditer(text)}


def read_dot(text: str):
    """(nodes: id -> attrs, edges: [(a, b, attrs)], clusters: {cluster id: [node ids]})."""
    nodes, edges, clusters, stack = {}, [], {}, []
    for line in text.splitlines():
        if m := re.match(r"^\s*subgraph (\w+) \{$", line):
            stack.append(m.group(1))
            clusters[m.group(1)] = []
        elif line.strip() == "}" and stack:
            stack.pop()
        elif m := _EDGE.match(line):
            edges.append((m.group(1), m.group(2), _attrs(m.group(3))))
        elif (m := _STMT.match(line)) and m.group(1) not in ("graph", "node", "edge"):
            nodes[m.group(1)] = _attrs(m.group(2))
            for c in stack:
                clusters[c].append(m.group(1))
    return nodes, edges, clusters


# --------------------------------------------------------------- graphs

def mlp_loss(params, x, y):
    h = tp.tanh(x @ params["w1"] + params["b1"])
    return tp.cross_entropy(h @ params["w2"] + params["b2"], y)


P = {"w1": tp.Spec((8, 16)), "b1": tp.Spec((16,)), "w2": tp.Spec((16, 3)), "b2": tp.Spec((3,))}
BATCH = (tp.Spec(("B", 8)), tp.Spec(("B",), "int64"))


def _loss():
    return tp.trace(mlp_loss, P, *BATCH)


def _adam_step(loss):
    """A hand-written training step (params, opt_state, lr, *batch) -> (loss, params, state),
    with coupled weight decay and global-norm clipping, built without tp.optim."""
    vg = tp.value_and_grad(loss)

    def adam_step(params, opt_state, lr, x, y):
        value, grads = tp.call(vg, params, x, y)
        norm = tp.sqrt(sum(tp.sum(grads[k] * grads[k]) for k in sorted(grads)))
        scale = tp.minimum(1.0 / (norm + 1e-6), 1.0)
        t = opt_state["t"] + 1.0
        new_p, new_m, new_v = {}, {}, {}
        for k in sorted(params):
            g = grads[k] * scale + 0.01 * params[k]
            m = 0.9 * opt_state["m"][k] + (1 - 0.9) * g
            v = 0.999 * opt_state["v"][k] + (1 - 0.999) * g * g
            update = (m / (1.0 - 0.9 ** t)) / (tp.sqrt(v / (1.0 - 0.999 ** t)) + 1e-8)
            new_p[k] = params[k] - lr * update
            new_m[k], new_v[k] = m, v
        return value, new_p, {"m": new_m, "t": t, "v": new_v}

    S = {"m": P, "t": tp.Spec(()), "v": P}
    return tp.trace(adam_step, P, S, tp.Spec(()), *BATCH), adam_step


def _lines_of(fn) -> set[int]:
    lines, start = inspect.getsourcelines(fn)
    return set(range(start, start + len(lines)))


def _line(node) -> int:
    return int(node.source.rsplit(":", 1)[1])


# --------------------------------------------------------------- roles

def test_a_plain_graph_is_all_forward():
    g = _loss()
    assert gv.node_roles(g) == ["forward"] * len(g.nodes)
    assert gv.output_roles(g) == ["value"]


def test_value_and_grad_forward_is_the_loss_and_the_rest_backward():
    g = _loss()
    vg = tp.value_and_grad(g)
    roles = gv.node_roles(vg)
    assert gv.output_roles(vg) == ["value"] + ["grad"] * 4
    assert [n.op for n, r in zip(vg.nodes, roles) if r == "forward"] == [n.op for n in g.nodes]
    assert roles.count("backward") == len(vg.nodes) - len(g.nodes) > 0
    assert "optimizer" not in roles


def test_training_step_roles_follow_the_source_it_came_from():
    step, fn = _adam_step(_loss())
    assert gv.output_roles(step) == ["value"] + ["update"] * (len(step.outputs) - 1)
    roles = gv.node_roles(step)
    loss_lines, step_lines = _lines_of(mlp_loss), _lines_of(fn)
    forward = [n.op for n, r in zip(step.nodes, roles) if r == "forward"]
    assert forward == [n.op for n in _loss().nodes]
    for n, r in zip(step.nodes, roles):
        # backward nodes carry the loss's source lines (autodiff); the update the step's
        assert (_line(n) in step_lines) == (r == "optimizer"), (n, r)
        if r != "optimizer":
            assert _line(n) in loss_lines
    assert {"forward", "backward", "optimizer"} == set(roles)


def test_plain_sgd_step_has_optimizer_nodes():
    vg = tp.value_and_grad(_loss())

    def sgd(params, opt_state, lr, x, y):
        value, grads = tp.call(vg, params, x, y)
        return value, {k: params[k] - lr * grads[k] for k in params}, opt_state

    step = tp.trace(sgd, P, {}, tp.Spec(()), *BATCH)
    roles = gv.node_roles(step)
    assert [n.op for n, r in zip(step.nodes, roles) if r == "optimizer"] == ["mul", "sub"] * 4


def test_a_step_imported_from_onnx_is_recognised_by_its_names(tmp_path):
    step, _ = _adam_step(_loss())
    names = ["loss"] + ["new_params." + n.split(".", 1)[1] for n in step.output_names[1:5]] + \
        ["new_opt_state." + n.split(".", 2)[2] for n in step.output_names[5:]]
    path = tmp_path / "step.onnx"
    tp.save_onnx(step, path, output_names=names)
    imported = tp.from_onnx(path)
    assert len(imported.arg_names) == len(imported.inputs)  # flat: the structure is gone
    assert not gv._is_training_step(imported)
    assert gv.output_roles(imported) == ["value"] + ["update"] * (len(names) - 1)
    assert imported.input_names()[4:6] == ["opt_state.m.b1", "opt_state.m.b2"]
    assert sorted(set(gv.node_roles(imported))) == ["backward", "forward", "optimizer"]
    assert gv.node_roles(imported).count("optimizer") == gv.node_roles(step).count("optimizer")


def test_three_scalars_in_and_out_is_not_a_training_step():
    g = tp.trace(lambda a, b, c: (a * b, a + c, b - c), tp.Spec(()), tp.Spec((2,)), tp.Spec(()))
    assert gv.output_roles(g) == ["value"] * 3
    assert gv.node_roles(g) == ["forward"] * 3


# --------------------------------------------------------------- fused nodes

def _fused_graph():
    """exp(tanh(x * y + 1)) with its first three nodes replaced by one fused node."""
    g = tp.trace(lambda x, y: tp.exp(tp.tanh(x * y + 1.0)), tp.Spec(("B", 4)), tp.Spec((4,)))
    body = tp.trace(lambda a, b: tp.tanh(a * b + 1.0), tp.Spec(("B", 4)), tp.Spec((4,)))
    assert [n.op for n in g.nodes] == ["mul", "add", "tanh", "exp"]
    fused = Node("fused", g.inputs, {"body": body}, g.nodes[2].outputs, source="model.py:7")
    return g.replace(nodes=[fused, g.nodes[3]], constants=[]), body


def test_a_fused_node_draws_as_a_cluster_of_its_body():
    g, body = _fused_graph()
    assert gv.node_roles(g) == ["forward", "forward"]
    nodes, edges, clusters = read_dot(gv.to_dot(g))
    assert clusters["cluster_n0"] == ["n0_0", "n0_1", "n0_2"]
    assert [nodes[f"n0_{j}"]["label"].split("\n")[0] for j in range(3)] == ["mul", "add", "tanh"]
    pairs = {(a, b) for a, b, _ in edges}
    # the body's inputs are the fused node's: x and y feed the body's mul; its tanh feeds exp
    assert {("i0", "n0_0"), ("i1", "n0_0"), ("n0_0", "n0_1"), ("n0_1", "n0_2"), ("n0_2", "n1"), ("n1", "o0")} == pairs
    assert "const 1.0" in nodes["n0_1"]["label"]
    assert re.search(r'subgraph cluster_n0 \{\n\s+graph \[label="fused: mul·add·tanh\\nmodel.py:7"', gv.to_dot(g))


def test_fused_bodies_nest_and_pass_values_through():
    g, body = _fused_graph()
    x = g.inputs[0]
    out = Value(g.nodes[0].outputs[0].type)
    # an outer body whose second output is its first input, passed straight through
    outer_body = body.replace(nodes=[Node("fused", body.inputs, {"body": body}, body.outputs)],
                              outputs=[body.outputs[0], body.inputs[0]], output_names=["t", "a"])
    passthrough = Value(x.type)
    outer = Node("fused", g.inputs, {"body": outer_body}, [out, passthrough])
    add = Node("add", [out, passthrough], {}, [Value(out.type)])
    g2 = g.replace(nodes=[outer, add], outputs=[add.outputs[0]], output_names=["output"])
    nodes, edges, clusters = read_dot(gv.to_dot(g2))
    assert clusters["cluster_n0"] == ["n0_0_0", "n0_0_1", "n0_0_2"]
    assert clusters["cluster_n0_0"] == ["n0_0_0", "n0_0_1", "n0_0_2"]
    assert {("n0_0_2", "n1"), ("i0", "n1")} <= {(a, b) for a, b, _ in edges}


def test_a_fused_node_whose_body_does_not_match_is_a_clear_error():
    g, body = _fused_graph()
    bad = Node("fused", g.inputs[:1], {"body": body}, g.nodes[0].outputs, source="model.py:7")
    with pytest.raises(tp.TapeirError, match=r"1 inputs and 1 outputs has a body with 2 inputs") as e:
        gv.to_dot(g.replace(nodes=[bad, g.nodes[1]]))
    assert e.value.where == "model.py:7"


# --------------------------------------------------------------- text

NASTY = 'a "q" b\\s \\n x\nnew ünï ∂ 🙂 \\'


def _nasty_graph():
    x = Value(tp.TensorType("f32", (2,)), name=NASTY)
    node = Node("exp", [x], {}, [Value(tp.TensorType("f32", (2,)))], source=NASTY[:9] + ":3")
    from tapeir.ir.pytree import LEAF, TreeDef

    return Graph('we"ird\\name', [NASTY], TreeDef("tuple", (LEAF,)), [x], [node], LEAF,
                 node.outputs, output_names=["out\tput"])


def test_labels_escape_quotes_backslashes_newlines_and_keep_unicode():
    text = gv.to_dot(_nasty_graph())
    nodes, edges, _ = read_dot(text)
    assert nodes["i0"]["label"] == NASTY + "\nf32[2]"
    assert nodes["n0"]["label"] == "exp\n" + NASTY[:9] + ":3"
    assert nodes["o0"]["label"] == "out\\x09put\nf32[2]"  # a tab shows as text
    assert text.startswith('digraph "we\\"ird\\\\name" {')
    assert "\t" not in text and text.count("\n") == len(text.splitlines())


@needs_dot
def test_graphviz_itself_shows_the_labels_as_written(tmp_path):
    path = tmp_path / "nasty.svg"
    assert gv.write(_nasty_graph(), path) == "svg"
    svg = ET.parse(path).getroot()
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    lines = NASTY.split("\n")
    for line in lines:
        assert line.strip() in [(t or "").strip() for t in texts], (line, texts)
    assert "out\\x09put" in texts


def test_labels_are_capped_and_big_graphs_drop_edge_labels():
    def chain(x):
        for _ in range(gv.EDGE_LABEL_LIMIT + 1):
            x = tp.exp(x)
        return x

    g = tp.trace(chain, tp.Spec((2,)))
    g.nodes[0].source = "/a/very/long/path/" + "x" * 200 + "/model.py:12"
    text = gv.to_dot(g)
    nodes, edges, _ = read_dot(text)
    assert len(nodes) == len(g.nodes) + 2 + 6  # + input, output, legend
    assert all("label" not in e for _, _, e in edges) and all(e["tooltip"] == "f32[2]" for _, _, e in edges)
    assert all(len(line) <= gv.MAX_LABEL for n in nodes.values() for line in n["label"].split("\n"))
    assert nodes["n0"]["label"].endswith("x/model.py:12")
    small = read_dot(gv.to_dot(_loss()))[1]
    assert all(e["label"] for _, _, e in small)
    assert read_dot(gv.to_dot(g, edge_labels=True))[1][0][2]["label"] == "f32[2]"


def test_the_legend_names_every_role():
    nodes, _, clusters = read_dot(gv.to_dot(_loss()))
    legend = {nodes[n]["label"] for n in clusters["cluster_legend"]}
    assert {"forward", "backward", "optimizer", "input", "output"} <= legend
    styles = {nodes[f"legend_{r}"]["style"] for r in gv.ROLES}
    fills = {nodes[f"legend_{r}"]["fillcolor"] for r in gv.ROLES}
    assert len(styles) == len(fills) == 3  # told apart by outline and by colour


def test_nodes_show_their_role_colour_source_and_constants():
    step, _ = _adam_step(_loss())
    nodes, edges, _ = read_dot(gv.to_dot(step))
    for j, (n, role) in enumerate(zip(step.nodes, gv.node_roles(step))):
        d = nodes[f"n{j}"]
        assert d["fillcolor"] == gv.STYLE[role][0]
        assert d["label"].split("\n")[0] == n.op
        assert d["label"].endswith(os.path.basename(__file__) + f":{_line(n)}") or "…" in d["label"]
        assert f"at {n.source}" in d["tooltip"]
    assert any("const 0.9" in d["label"] for d in nodes.values())
    assert any(e.get("label") == "f32[8,16]" for _, _, e in edges)


# --------------------------------------------------------------- files

def test_write_dot_text(tmp_path):
    path = tmp_path / "g.dot"
    assert gv.write(_loss(), path) == "dot"
    assert path.read_text(encoding="utf-8") == gv.to_dot(_loss())


def test_an_unknown_extension_is_a_clear_error(tmp_path):
    with pytest.raises(tp.TapeirError, match=r"picture format .*g\.jpeg") as e:
        gv.write(_loss(), tmp_path / "g.jpeg")
    assert ".svg" in e.value.hint and ".dot" in e.value.hint
    assert os.listdir(tmp_path) == []


def test_without_dot_a_picture_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gv.find_dot() is None
    with pytest.raises(tp.TapeirError, match="needs Graphviz's `dot` program, which is not on PATH") as e:
        gv.write(_loss(), tmp_path / "g.svg")
    assert "install Graphviz" in e.value.hint and "g.dot" in e.value.hint
    assert os.listdir(tmp_path) == []
    assert gv.write(_loss(), tmp_path / "g.dot") == "dot"  # DOT text needs nothing


def test_a_failing_dot_leaves_no_file_and_says_why(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: <stdin>: syntax error in line 1' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(tp.TapeirError, match=r"`dot -Tsvg` failed \(exit 3\).*syntax error in line 1"):
        gv.write(_loss(), out / "g.svg")
    assert os.listdir(out) == []


@needs_dot
def test_svg_through_graphviz(tmp_path):
    step, _ = _adam_step(_loss())
    path = tmp_path / "step.svg"
    assert gv.write(step, path) == "svg"
    svg = ET.parse(path).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    titles = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")}
    assert {"n0", "i0", "o0", "legend_optimizer"} <= titles
    fills = {p.get("fill") for p in svg.iter("{http://www.w3.org/2000/svg}polygon")}
    assert {gv.STYLE["forward"][0], gv.STYLE["optimizer"][0]} <= fills
    assert np.isfinite(float(svg.get("width").rstrip("pt")))
