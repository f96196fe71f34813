"""`bind(g, argnum, values)`: an input pytree of a graph becomes constants (baking weights).

Rules:
  1. argument `argnum` disappears from the graph's signature; every leaf of `values` must
     have the dtype and shape of the input it replaces (a symbolic dim takes the value's size);
  2. each bound constant keeps the input's name (`Value.name`, e.g. `params.w1`), so ONNX
     export names its initializer after the parameter instead of `%cK` (the text form still
     prints `%cK`: names of constants are not part of it);
  3. the other nodes are re-emitted through the builder (types re-inferred, source lines
     kept); nothing is folded, so the weights stay one initializer each.
"""
from __future__ import annotations

import numpy as np

from ..ir.builder import Builder
from ..ir.dtypes import to_numpy
from ..ir.errors import TapeirError
from ..ir.graph import Graph, constant, require_graph
from ..ir.pytree import TreeDef, flatten

__all__ = ["bind"]


def bind(g: Graph, argnum: int, values) -> Graph:
    """`g` with argument `argnum` replaced by the constant pytree `values`.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda p, x: x @ p["w"], {"w": np.zeros((3, 2), np.float32)}, tp.Spec(("B", 3)))
    >>> inf = tp.bind(g, 0, {"w": np.ones((3, 2), np.float32)})
    >>> inf.arg_names, tp.run(inf, np.ones((1, 3), np.float32)).tolist()
    (['x'], [[3.0, 3.0]])
    >>> [t.name for t in tp.to_onnx(inf).graph.initializer]
    ['p.w']
    """
    require_graph(g, "tp.bind")
    if isinstance(argnum, bool) or not isinstance(argnum, (int, np.integer)) or not 0 <= argnum < len(g.arg_names):
        raise TapeirError(f"tp.bind: argnum={argnum!r} is not an argument of {g.name}",
                          hint=f"{g.name} takes {', '.join(f'{i}: {n}' for i, n in enumerate(g.arg_names))}")
    argnum = int(argnum)
    name = g.arg_names[argnum]
    leaves, td = flatten(values, lambda x: isinstance(x, (np.ndarray, np.generic)), what=f"argument {name!r}")
    if td != g.input_tree(argnum):
        raise TapeirError(f"tp.bind: the values for {name!r} have a different pytree structure than {g.name} "
                          "was traced with", hint="pass the same nesting of dicts/lists/tuples (same keys)")
    rng = g.input_range(argnum)
    b = Builder()
    new_inputs = [b.input(v.type, v.name) for k, v in enumerate(g.inputs) if k not in rng]
    feed = iter(new_inputs)
    operands = []
    for k, v in enumerate(g.inputs):
        if k not in rng:
            operands.append(next(feed))
            continue
        x = np.asarray(leaves[k - rng.start])
        want = to_numpy(v.type.dtype)
        shape_ok = x.ndim == v.type.rank and all(isinstance(d, str) or d == n for d, n in zip(v.type.shape, x.shape))
        if x.dtype != want or not shape_ok:
            raise TapeirError(f"tp.bind: {v.name} is {v.type}, got an array of {x.dtype}{list(x.shape)}",
                              hint=f"pass {v.name} as np.{want.name} with the traced shape")
        c = constant(x)
        c.name = v.name  # rule 2
        b.constants.append(c)
        operands.append(c)
    outs = b.inline(g, operands)
    children = tuple(c for i, c in enumerate(g.in_tree.children) if i != argnum)
    arg_names = [n for i, n in enumerate(g.arg_names) if i != argnum]
    return b.build(g.name, new_inputs, outs, arg_names=arg_names, in_tree=TreeDef("tuple", children),
                   out_tree=g.out_tree, output_names=g.output_names)
