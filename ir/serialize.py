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
from .parser import parse_at
from .printer import print_graph

MAGIC = "# tapeir graph v1\n"


def replace_durably(src: str, dst: str) -> None:
    """Flush `src` to disk and rename it over `dst` (atomic on POSIX and Windows; both in one
    folder), then flush the folder so the rename itself survives a crash (POSIX)."""
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    try:  # the permissions a plain open(dst, "w") would give: dst's own, else 0o666 less the umask
        mode = os.stat(dst).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask
    with contextlib.suppress(OSError):  # a file system without modes (FAT) keeps its own
        os.chmod(src, mode)
    os.replace(src, dst)
    with contextlib.suppress(OSError):  # opening a folder fails on Windows: nothing to flush there
        dfd = os.open(os.path.dirname(os.path.abspath(dst)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """`with atomic_write(path) as tmp:` write the file at `tmp`, beside `path`; on success it
    replaces `path` (replace_durably), on failure it is removed and `path` is untouched.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "f.txt")
    >>> with atomic_write(p) as tmp:
    ...     _ = open(tmp, "w").write("new")
    >>> open(p).read(), sorted(os.listdir(os.path.dirname(p)))
    ('new', ['f.txt'])
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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

    Memory peaks at about twice the file's size (its text, then each constant decoded from
    it); error messages give the file's line numbers, header line included.

    >>> import numpy as np, tapeir as tp, tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tp.save(tp.trace(tp.exp, tp.Spec(("B",))), os.path.join(d, "g.tapeir"))
    ...     g = tp.load(os.path.join(d, "g.tapeir"))
    >>> [n.op for n in g.nodes], tp.run(g, np.zeros(2, np.float32)).tolist()
    (['exp'], [1.0, 1.0])
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{os.fspath(path)} is not a tapeir graph: it is not UTF-8 text",
                         hint="graph files are the text written by tp.save") from None
    del data  # the bytes go before parsing: the peak is the text plus the constants' arrays
    if "\r" in text:  # universal newlines, as text mode would read them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # skip the header without slicing (a copy of the whole file); error lines count it
    return parse_at(text, len(MAGIC) if text.startswith(MAGIC) else 0)  # parse verifies
