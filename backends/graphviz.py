"""Pictures of graphs: DOT text (Graphviz) written here; SVG/PNG/PDF by Graphviz's `dot`.

We write DOT ourselves (no layout engine of our own) and hand it to the `dot` program when
one is installed; without it a picture format is a clear error and `.dot` still works.

Roles. The IR has no per-node role marker, so each node's role is read off the graph's
outputs (`node_roles`):

  1. Outputs. A *gradient* output is named `grad` or `grad.<input>` (tp.value_and_grad,
     tp.grad). An *update* output is a new parameter or optimizer-state leaf of a training
     step `(params, opt_state, lr, *batch) -> (loss, new_params, new_opt_state)`: recognised
     by structure (three results; the second mirrors argument 0's tree and input types, the
     third argument 1's; `lr` a scalar) or, for a step imported back from ONNX (flat
     names), by a name whose first segment is `new_params` or `new_opt_state`. Every other
     output (the loss, `value`, a plain function's results) is a *value* output.
  2. Optimizer inputs are the leaves of `opt_state` and `lr` (arguments 1 and 2 of a step
     recognised by structure; by name, inputs whose first segment is `opt_state` or `lr`).
  3. A node is **forward** if a value output needs it (transitively), and also when no
     output needs it. A graph without gradient or update outputs is all forward.
  4. Else it is **backward** if a gradient output needs it.
  5. Else only update outputs need it. It is **optimizer** if (a) it depends on an
     optimizer input (the update arithmetic: `p - lr*d`, Adam's moments, bias correction),
     or (b) it is elementwise (or a fused node, or a reduction to one element: a global
     norm) and every node that uses it is optimizer, an update output counting as
     optimizer -- that is the gradient-only arithmetic in front of the update (Adam's
     `(1-b1)*g`, `g*g`, weight decay `g + wd*p`, clipping's scale), traced back from the
     update until the first op that is not elementwise (the matmul or sum that ends a
     gradient). Everything else there is **backward**.
  Limits: a gradient that itself ends in an elementwise chain (a parameter used only
  elementwise, e.g. an L2 term in the loss) draws that tail as optimizer; in a tp.grad
  graph (no value output) the forward computations the gradients reuse draw as
  backward. The rule is one function, `node_roles`, so it is tested and changed in one
  place.

Fused nodes (op "fused", attrs["body"] a Graph whose inputs match node.inputs and outputs
node.outputs) draw as a dashed cluster holding the body's own nodes in the fused node's
role colour, labelled with its op list. Constants do not get boxes: a node lists its
constant inputs in its label (a scalar by value, else by type), which keeps shared
scalars from pulling the layout together. Edges carry the value's type; a node's source
line (`file:line`) is its label's last line and, with attributes and output types, its
tooltip. Every label line is capped (`MAX_LABEL` characters). Building the text is one
pass over nodes and edges; Graphviz's own layout time is its own.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..ir.errors import TapeirError
from ..ir.graph import Graph
from ..ir.printer import fmt_attr, fmt_const
from ..ir.registry import OPS, Category
from ..ir.serialize import atomic_write

ROLES = ("forward", "backward", "optimizer")
# fill colour and box style per role: told apart by colour and by outline (colour-blind safe)
STYLE = {
    "forward": ("#cfe2ff", "filled"),
    "backward": ("#ffd8a8", "filled,rounded"),
    "optimizer": ("#c3e6cb", "filled,diagonals"),
}
INPUT_FILL, OUTPUT_FILL, FUSED_FILL = "#f1f3f5", "#fff3bf", "#f8f0fc"
MAX_LABEL = 48          # characters per label line
MAX_TOOLTIP = 600       # characters per tooltip
MAX_CONST_LINES = 3     # constant inputs listed in a node's label
EDGE_LABEL_LIMIT = 300  # above this many drawn nodes, types go to edge tooltips only
PICTURE_FORMATS = ("svg", "png", "pdf")
TEXT_FORMATS = ("dot", "gv")

_UPDATE_NAMES = ("new_params", "new_opt_state")
_OPTIMIZER_INPUT_NAMES = ("opt_state", "lr")


# ---------------------------------------------------------------- roles

def output_roles(g: Graph) -> list[str]:
    """The role of each output of `g`: "value", "grad" or "update" (module docstring, rule 1).

    >>> import tapeir as tp
    >>> g = tp.value_and_grad(tp.trace(lambda w, x: ((x @ w) ** 2.0).sum(), tp.Spec((3,)), tp.Spec((2, 3))))
    >>> g.output_names, output_roles(g)
    (['value', 'grad.w'], ['value', 'grad'])
    """
    roles = ["value"] * len(g.outputs)
    for k, name in enumerate(g.output_names):
        first = name.split(".", 1)[0]
        if first == "grad":
            roles[k] = "grad"
        elif first in _UPDATE_NAMES:
            roles[k] = "update"
    if _is_training_step(g):
        for k in range(1, len(g.outputs)):
            if roles[k] == "value":
                roles[k] = "update"
    return roles


def _is_training_step(g: Graph) -> bool:
    """(params, opt_state, lr, *batch) -> (scalar loss, params-like, opt_state-like)."""
    out, args = g.out_tree, g.in_tree.children
    if len(args) < 3 or out.kind != "tuple" or len(out.children) != 3 or out.children[0].kind != "leaf":
        return False
    if out.children[1] != args[0] or out.children[2] != args[1] or args[2].kind != "leaf":
        return False
    if g.inputs[g.input_range(2).start].type.shape != () or g.outputs[0].type.shape != ():
        return False
    # the new params and state have the types of the old ones
    old = [v.type for i in (0, 1) for v in g.inputs[g.input_range(i).start:g.input_range(i).stop]]
    return [v.type for v in g.outputs[1:]] == old


def _optimizer_inputs(g: Graph) -> set[int]:
    """ids of the optimizer inputs (rule 2)."""
    if _is_training_step(g):
        return {id(g.inputs[k]) for i in (1, 2) for k in g.input_range(i)}
    return {id(v) for v in g.inputs if (v.name or "").split(".", 1)[0] in _OPTIMIZER_INPUT_NAMES}


def _elementwise_like(node) -> bool:
    if node.op == "fused":
        return True
    d = OPS.get(node.op)
    if d is None:
        return False
    if d.category is Category.ELEMENTWISE:
        return True
    return d.category is Category.REDUCE and all(s == 1 for s in node.outputs[0].type.shape)


_VALUE, _GRAD, _UPDATE = 1, 2, 4


def node_roles(g: Graph) -> list[str]:
    """The role of each node of `g` ("forward", "backward" or "optimizer"), in `g.nodes` order.

    The rule is the module docstring's; it reads only which outputs need a node, so it
    works on any graph: without gradient or update outputs every node is forward.

    >>> import tapeir as tp
    >>> g = tp.trace(lambda w, x: ((x @ w) ** 2.0).sum(), tp.Spec((3,)), tp.Spec((2, 3)))
    >>> node_roles(g)
    ['forward', 'forward', 'forward']
    >>> vg = tp.value_and_grad(g)
    >>> [(n.op, r) for n, r in zip(vg.nodes, node_roles(vg))][:3]
    [('matmul', 'forward'), ('pow', 'forward'), ('sum', 'forward')]
    >>> sorted(set(node_roles(vg)))
    ['backward', 'forward']
    """
    bit = {"value": _VALUE, "grad": _GRAD, "update": _UPDATE}
    need: dict[int, int] = {}  # id(Value) -> which kinds of outputs need it
    for v, r in zip(g.outputs, output_roles(g)):
        need[id(v)] = need.get(id(v), 0) | bit[r]
    masks = [0] * len(g.nodes)
    users: list[list[int]] = [[] for _ in g.nodes]   # indices of the nodes using node j
    producer = {id(o): j for j, n in enumerate(g.nodes) for o in n.outputs}
    for j in range(len(g.nodes) - 1, -1, -1):
        n = g.nodes[j]
        m = 0
        for o in n.outputs:
            m |= need.get(id(o), 0)
        masks[j] = m
        for v in n.inputs:
            need[id(v)] = need.get(id(v), 0) | m
            p = producer.get(id(v))
            if p is not None:
                users[p].append(j)
    # rule 5a: depends on an optimizer input
    tainted = _optimizer_inputs(g)
    from_opt = [False] * len(g.nodes)
    for j, n in enumerate(g.nodes):
        if any(id(v) in tainted for v in n.inputs):
            from_opt[j] = True
            tainted.update(id(o) for o in n.outputs)
    roles = ["forward"] * len(g.nodes)
    for j in range(len(g.nodes) - 1, -1, -1):
        m = masks[j]
        if m == 0 or m & _VALUE:
            continue
        if m & _GRAD:
            roles[j] = "backward"
        elif from_opt[j] or (_elementwise_like(g.nodes[j])
                             and all(roles[u] == "optimizer" for u in users[j] if masks[u])):
            roles[j] = "optimizer"   # rule 5a / 5b (users come later, so they are decided)
        else:
            roles[j] = "backward"
    return roles


# ---------------------------------------------------------------- DOT text

def quote(text: str) -> str:
    r"""`text` as a DOT double-quoted string whose label shows exactly `text`.

    A backslash doubles (DOT labels read \n, \N, \l... as escapes), a quote gets a
    backslash, a newline becomes a label line break (\n); other control characters and
    lone surrogates show as the text \xNN / \uNNNN; other unicode passes through (the
    file is UTF-8).

    >>> print(quote('say "hi" C:\\new'))
    "say \"hi\" C:\\new"
    >>> print(quote("two\nlines, ünï"))
    "two\nlines, ünï"
    """
    out = []
    for ch in text:
        c = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\\\x{c:02x}")
        elif 0xD800 <= c <= 0xDFFF:
            out.append(f"\\\\u{c:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _cap(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _cap_left(text: str, limit: int = MAX_LABEL) -> str:
    """Keep the end (a source line's `file.py:14`), drop the start of a long path."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _attrs(**kw) -> str:
    return ", ".join(f"{k}={quote(v) if isinstance(v, str) else v}" for k, v in kw.items())


class _Writer:
    def __init__(self, g: Graph, edge_labels: bool | None):
        self.g = g
        self.lines: list[str] = []
        self.edges: list[str] = []
        self.count = 0
        self.edge_labels = edge_labels

    def emit_graph(self):
        g = self.g
        env: dict[int, tuple] = {}  # id(Value) -> ("id", dot id, port label) or ("const", Value)
        for c in g.constants:
            env[id(c)] = ("const", c)
        for k, v in enumerate(g.inputs):
            env[id(v)] = ("id", f"i{k}", "")
            label = f"{_cap(v.name or f'input {k}')}\n{_cap(str(v.type))}"
            self.lines.append(f"  i{k} [{_attrs(label=label, shape='ellipse', style='filled', fillcolor=INPUT_FILL, tooltip=_cap(f'input {v.name}: {v.type}', MAX_TOOLTIP))}];")
        self.emit_nodes(g.nodes, node_roles(g), env, "n", "  ")
        for k, (v, name, role) in enumerate(zip(g.outputs, g.output_names, output_roles(g))):
            label = f"{_cap(name)}\n{_cap(str(v.type))}"
            self.lines.append(f"  o{k} [{_attrs(label=label, shape='house', style='filled', fillcolor=OUTPUT_FILL, tooltip=_cap(f'output {name} ({role}): {v.type}', MAX_TOOLTIP))}];")
            src = env.get(id(v))
            if src is None:
                raise TapeirError(f"output {name} of graph {g.name} has no producer",
                                  hint="verify the graph first (tp.verify)")
            if src[0] == "const":
                self.lines.append(f"  oc{k} [{_attrs(label=self.const_text(src[1]), shape='plaintext')}];")
                src = ("id", f"oc{k}", "")
            self.edge(src, f"o{k}", v)

    def emit_nodes(self, nodes, roles, env, prefix, indent):
        for j, (n, role) in enumerate(zip(nodes, roles)):
            nid = f"{prefix}{j}"
            body = n.attrs.get("body") if n.op == "fused" else None
            if isinstance(body, Graph):
                self.emit_fused(n, body, role, env, nid, indent)
                continue
            self.count += 1
            consts = []
            for v in n.inputs:
                src = env.get(id(v))
                if src is None:
                    raise TapeirError(f"{n.op}: an input has no producer", where=n.source,
                                      hint="verify the graph first (tp.verify)")
                if src[0] == "const":
                    consts.append(self.const_text(src[1]))
                else:
                    self.edge(src, nid, v)
            fill, style = STYLE[role]
            label = [_cap(n.op)]
            attrs = ", ".join(f"{k}={fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
            if attrs:
                label.append(_cap(_one_line(attrs)))
            label += consts[:MAX_CONST_LINES] + (["…"] if len(consts) > MAX_CONST_LINES else [])
            if n.source:
                label.append(_cap_left(_one_line(n.source)))
            tip = f"{n.op} ({role})" + (f"\nat {n.source}" if n.source else "") + \
                (f"\n{attrs}" if attrs else "") + "\n-> " + ", ".join(str(o.type) for o in n.outputs)
            self.lines.append(f"{indent}{nid} [{_attrs(label=chr(10).join(label), shape='box', style=style, fillcolor=fill, tooltip=_cap(tip, MAX_TOOLTIP))}];")
            many = len(n.outputs) > 1
            for k, o in enumerate(n.outputs):
                env[id(o)] = ("id", nid, f"#{k} " if many else "")

    def emit_fused(self, n, body: Graph, role, env, nid, indent):
        if len(body.inputs) != len(n.inputs) or len(body.outputs) != len(n.outputs):
            raise TapeirError(
                f"fused node with {len(n.inputs)} inputs and {len(n.outputs)} outputs has a body with "
                f"{len(body.inputs)} inputs and {len(body.outputs)} outputs", where=n.source,
                hint="a fused node's body inputs and outputs correspond one to one to the node's")
        inner = {id(c): ("const", c) for c in body.constants}
        for bv, v in zip(body.inputs, n.inputs):
            if id(v) not in env:
                raise TapeirError("fused: an input has no producer", where=n.source,
                                  hint="verify the graph first (tp.verify)")
            inner[id(bv)] = env[id(v)]
        ops = "·".join(b.op for b in body.nodes)
        label = "fused: " + _cap(ops, 2 * MAX_LABEL) + (f"\n{_cap_left(_one_line(n.source))}" if n.source else "")
        tip = f"fused ({role}): {ops}" + (f"\nat {n.source}" if n.source else "")
        self.lines.append(f"{indent}subgraph cluster_{nid} {{")
        self.lines.append(f"{indent}  graph [{_attrs(label=label, style='dashed,rounded,filled', fillcolor=FUSED_FILL, penwidth=2, tooltip=_cap(tip, MAX_TOOLTIP))}];")
        self.emit_nodes(body.nodes, [role] * len(body.nodes), inner, nid + "_", indent + "  ")
        self.lines.append(f"{indent}}}")
        for bo, o in zip(body.outputs, n.outputs):
            if id(bo) not in inner:
                raise TapeirError("fused: a body output has no producer in the body", where=n.source)
            env[id(o)] = inner[id(bo)]

    def const_text(self, c) -> str:
        if c.data is not None and c.data.size == 1:
            return _cap(f"const {fmt_const(c.data)}")
        return _cap(f"const {c.type}")

    def edge(self, src, dst, v):
        text = _cap(src[2] + str(v.type), 40)
        self.edges.append((src[1], dst, text))

    def text(self) -> str:
        show = self.edge_labels if self.edge_labels is not None else self.count <= EDGE_LABEL_LIMIT
        edges = [f"  {a} -> {b} [{_attrs(label=t, tooltip=t) if show else _attrs(tooltip=t)}];"
                 for a, b, t in self.edges]
        head = [f"digraph {quote(self.g.name)} {{",
                f"  graph [{_attrs(label=_cap(self.g.name), labelloc='t', fontname='Helvetica', charset='UTF-8', rankdir='TB')}];",
                "  node [fontname=\"Helvetica\", fontsize=10];",
                "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#495057\", fontcolor=\"#495057\"];"]
        return "\n".join(head + _legend() + self.lines + edges + ["}"]) + "\n"


def _legend() -> list[str]:
    lines = ["  subgraph cluster_legend {",
             f"    graph [{_attrs(label='legend', style='rounded', color='#adb5bd')}];"]
    for role in ROLES:
        fill, style = STYLE[role]
        lines.append(f"    legend_{role} [{_attrs(label=role, shape='box', style=style, fillcolor=fill)}];")
    lines.append(f"    legend_input [{_attrs(label='input', shape='ellipse', style='filled', fillcolor=INPUT_FILL)}];")
    lines.append(f"    legend_output [{_attrs(label='output', shape='house', style='filled', fillcolor=OUTPUT_FILL)}];")
    lines.append("    subgraph cluster_legend_fused {")
    lines.append(f"      graph [{_attrs(label='fused (body inside)', style='dashed,rounded,filled', fillcolor=FUSED_FILL, penwidth=2, color='black')}];")
    lines.append(f"      legend_fused [{_attrs(label='op', shape='box', style='filled', fillcolor=STYLE['forward'][0])}];")
    lines.append("    }")
    # invisible edges stack the legend vertically instead of one wide row
    lines.append("    legend_forward -> legend_backward -> legend_optimizer -> legend_input -> legend_output "
                 "-> legend_fused [style=invis];")
    lines.append("  }")
    return lines


def to_dot(g: Graph, *, edge_labels: bool | None = None) -> str:
    """`g` as Graphviz DOT text: nodes coloured by role (`node_roles`), a legend, fused
    nodes as clusters, types on edges, source lines in labels and tooltips.

    `edge_labels=None` shows types on edges up to `EDGE_LABEL_LIMIT` nodes (then in edge
    tooltips only, to keep big pictures legible).

    >>> import tapeir as tp
    >>> g = tp.trace(lambda x: tp.exp(x) + 1.0, tp.Spec(("B",)))
    >>> text = to_dot(g)
    >>> text.startswith('digraph "lambda" {'), 'label="f32[B]"' in text
    (True, True)
    """
    w = _Writer(g, edge_labels)
    w.emit_graph()
    return w.text()


# ---------------------------------------------------------------- files

def find_dot() -> str | None:
    """The path of Graphviz's `dot` program, or None when it is not on PATH."""
    return shutil.which("dot")


def write(g: Graph, path, *, edge_labels: bool | None = None) -> str:
    """Draw `g` into `path`; the extension picks the format: .dot/.gv (DOT text, always
    available) or .svg/.png/.pdf (rendered by Graphviz's `dot`, which must be installed).
    The file appears whole or not at all. Returns the format written.

    >>> import os, tempfile, tapeir as tp
    >>> path = os.path.join(tempfile.mkdtemp(), "g.dot")
    >>> write(tp.trace(lambda x: tp.exp(x), tp.Spec((2,))), path)
    'dot'
    >>> open(path).read().startswith("digraph")
    True
    """
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in TEXT_FORMATS + PICTURE_FORMATS:
        raise TapeirError(f"cannot tell the picture format of {path!r} from its extension",
                          hint="name the output .svg, .png or .pdf (needs Graphviz) or .dot (DOT text)")
    text = to_dot(g, edge_labels=edge_labels)
    if fmt in TEXT_FORMATS:
        with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        return fmt
    exe = find_dot()
    if exe is None:
        raise TapeirError(f"writing {path} needs Graphviz's `dot` program, which is not on PATH",
                          hint=f"install Graphviz (apt install graphviz, brew install graphviz or conda install "
                               f"graphviz), or write DOT text with -o {os.path.splitext(path)[0]}.dot and render "
                               f"it anywhere with `dot -T{fmt}`")
    with atomic_write(path) as tmp:
        r = subprocess.run([exe, f"-T{fmt}", "-o", tmp], input=text.encode("utf-8"), capture_output=True)
        if r.returncode != 0:
            msg = r.stderr.decode("utf-8", "replace").strip()
            raise TapeirError(f"Graphviz `dot -T{fmt}` failed (exit {r.returncode}) drawing graph {g.name}: "
                              + _cap(_one_line(msg), 400),
                              hint=f"write the DOT text with -o {os.path.splitext(path)[0]}.dot to inspect it")
    return fmt
