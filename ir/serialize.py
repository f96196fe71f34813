"""save/load: a graph file is its text form (UTF-8), so loading never executes code.

The text form is exact: constants are inline or base64 little-endian bytes.
"""
from __future__ import annotations

import os

from .errors import ParseError
from .graph import require_graph
from .parser import parse
from .printer import print_graph

MAGIC = "# tapeir graph v1\n"


def save(g, path: str | os.PathLike) -> None:
    """Write `g` to `path`; `load(path) == g`.

    >>> import numpy as np, tapeir as tp, tempfile, os
    >>> g = tp.trace(lambda x: x * 2.0, np.ones(2, np.float32))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tp.save(g, os.path.join(d, "g.tapeir"))
    ...     print(tp.load(os.path.join(d, "g.tapeir")) == g)
    True
    """
    text = MAGIC + print_graph(require_graph(g, "tp.save"))  # print first: never truncate the file, then fail
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def load(path: str | os.PathLike):
    """Read a graph written by `save` (verified: a hand-edited file may be ill-typed).

    >>> import numpy as np, tapeir as tp, tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tp.save(tp.trace(tp.exp, tp.Spec(("B",))), os.path.join(d, "g.tapeir"))
    ...     g = tp.load(os.path.join(d, "g.tapeir"))
    >>> [n.op for n in g.nodes], tp.run(g, np.zeros(2, np.float32)).tolist()
    (['exp'], [1.0, 1.0])
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ParseError(f"{os.fspath(path)} is not a tapeir graph: it is not UTF-8 text",
                         hint="graph files are the text written by tp.save") from None
    if text.startswith(MAGIC):
        text = text[len(MAGIC):]
    return parse(text)  # parse verifies
