"""save/load: a graph file is the text form, parsed by our parser; loading never executes code."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import tapeir as tp
from tapeir.ir.serialize import MAGIC


def _graph():
    big = np.linspace(-1, 1, 30).astype(np.float64).reshape(5, 6)
    big[0, 0] = np.nan
    small = np.array([-0.0, np.inf], np.float16)

    def f(p, x):
        return {"a": x @ p["w"] + big, "b": (tp.exp(p["h"]) * small,)}

    return tp.trace(f, {"w": tp.Spec((4, 6), "float64"), "h": tp.Spec(("B", 2), "float16")},
                    tp.Spec(("B", 5, 4), "float64"))


def test_save_load_round_trip_is_exact(tmp_path):
    g = _graph()
    path = tmp_path / "g.tapeir"
    tp.save(g, path)
    text = path.read_text(encoding="utf-8")
    assert text == MAGIC + str(g)
    back = tp.load(path)
    assert back == g and str(back) == str(g)
    for a, b in zip(g.constants, back.constants):
        assert a.data.tobytes() == b.data.tobytes() and a.data.dtype == b.data.dtype
    assert not back.constants[0].data.flags.writeable
    tp.verify(back)


def test_load_accepts_str_paths_and_text_without_the_header(tmp_path):
    g = _graph()
    path = tmp_path / "plain.txt"
    path.write_text(str(g), encoding="utf-8")
    assert tp.load(str(path)) == g


def test_load_accepts_windows_line_endings(tmp_path):
    g = _graph()
    path = tmp_path / "crlf.tapeir"
    path.write_bytes((MAGIC + str(g)).replace("\n", "\r\n").encode("utf-8"))
    assert tp.load(path) == g


@pytest.mark.parametrize("payload", [
    "import os\nos.system('touch {marker}')\n",
    "__import__('pathlib').Path('{marker}').touch()",
    MAGIC + "import pathlib; pathlib.Path('{marker}').touch()\n",
    "graph f() {{\n  %c0: f32[] = const __import__('pathlib').Path('{marker}').touch()\n  return %c0\n}}\n",
    "graph f() {{\n  %c0: f32[] = const base64 \"{pickled}\"\n  return %c0\n}}\n",
])
def test_loading_never_executes_code(payload, tmp_path):
    marker = tmp_path / "executed"

    class Touch:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import base64
    pickled = base64.b64encode(pickle.dumps(Touch())).decode("ascii")
    path = tmp_path / "evil.tapeir"
    path.write_text(payload.format(marker=marker, pickled=pickled), encoding="utf-8")
    with pytest.raises(tp.ParseError):
        tp.load(path)
    assert not marker.exists()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        tp.load(tmp_path / "missing.tapeir")
    junk = tmp_path / "junk.tapeir"
    junk.write_bytes(b"\xff\xfe\x00graph")
    with pytest.raises(tp.ParseError, match="not UTF-8"):
        tp.load(junk)
    truncated = tmp_path / "truncated.tapeir"
    tp.save(_graph(), truncated)
    truncated.write_text(truncated.read_text()[:-20])
    with pytest.raises(tp.ParseError, match=r"line \d+, col \d+"):
        tp.load(truncated)
