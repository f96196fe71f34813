"""save/load: a graph file is its text form (UTF-8), so loading never executes code.

The text form is exact: constants are inline or base64 little-endian bytes. Saves are
atomic (`atomic_write`): the new file is written beside the target, flushed to disk and
renamed over it, so a full disk or a crash mid-write leaves the previous file as it was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

from .errors import ParseError
from .graph import require_graph
from .parser import parse
from .printer import print_graph

MAGIC = "# tapeir graph v1\n"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """`with atomic_write(path) as tmp:` write the file at `tmp`; on success it is fsynced and
    renamed to `path` (atomic on POSIX and Windows), on failure removed and `path` untouched.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "f.txt")
    >>> with atomic_write(p) as tmp:
    ...     _ = open(tmp, "w").write("new")
    >>> open(p).read(), sorted(os.listdir(os.path.dirname(p)))
    ('new', ['f.txt'])
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk (POSIX; no-op elsewhere)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save(g, path: str | os.PathLike) -> None:
    """Write `g` to `path`; `load(path) == g`.

    >>> import numpy as np, tapeir as tp, tempfile, os
    >>> g = tp.trace(lambda x: x * 2.0, np.ones(2, np.float32))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tp.save(g, os.path.join(d, "g.tapeir"))
    ...     print(tp.load(os.path.join(d, "g.tapeir")) == g)
    True
    """
    text = MAGIC + print_graph(require_graph(g, "tp.save"))
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
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
