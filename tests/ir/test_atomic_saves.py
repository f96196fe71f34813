"""Saves are atomic and idempotent: a failed save leaves the previous file as it was (no
truncated file, no temporary left behind), and the same graph saves to the same bytes."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import tapeir as tp

W = np.random.default_rng(0).standard_normal((64, 200)).astype(np.float32)


def _graph(scale):
    return tp.trace(lambda x: (x @ W) * scale, tp.Spec(("B", 64)))


def _disk_full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("save", [
    lambda g, p: tp.save(g, p),
    lambda g, p: tp.save_onnx(g, p),
    lambda g, p: tp.save_onnx(g, p, external_data=True),
], ids=["save", "save_onnx", "save_onnx_external"])
def test_a_failed_save_keeps_the_previous_files(save, tmp_path, monkeypatch):
    path = str(tmp_path / "model.bin")
    save(_graph(2.0), path)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(_graph(3.0), path)
    monkeypatch.undo()
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before  # nothing else left behind


@pytest.mark.parametrize("external", [False, True])
def test_saving_again_writes_the_same_bytes(external, tmp_path):
    path = str(tmp_path / "m.onnx")
    g = _graph(2.0)
    snapshots = []
    for _ in range(3):
        tp.save_onnx(g, path, external_data=external)
        snapshots.append({f: (tmp_path / f).read_bytes() for f in sorted(os.listdir(tmp_path))})
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert sorted(snapshots[0]) == (["m.onnx", "m.onnx.data"] if external else ["m.onnx"])
    x = np.ones((2, 64), np.float32)
    np.testing.assert_array_equal(tp.run(tp.from_onnx(path), x), tp.run(g, x))
    tp.save(g, str(tmp_path / "g.tapeir"))
    first = (tmp_path / "g.tapeir").read_bytes()
    tp.save(g, str(tmp_path / "g.tapeir"))
    assert (tmp_path / "g.tapeir").read_bytes() == first and tp.load(str(tmp_path / "g.tapeir")) == g


def test_saved_files_get_the_permissions_a_plain_write_gives(tmp_path):
    """mkstemp makes 0600 files; a saved graph is as readable as any file the user writes."""
    import stat

    g = tp.trace(lambda x: x + 1.0, tp.Spec((2,)))
    mask = os.umask(0o022)
    try:
        tp.save(g, tmp_path / "a.tpir")
        tp.save_onnx(g, tmp_path / "a.onnx")
        assert stat.S_IMODE(os.stat(tmp_path / "a.tpir").st_mode) == 0o644
        assert stat.S_IMODE(os.stat(tmp_path / "a.onnx").st_mode) == 0o644
        os.chmod(tmp_path / "a.tpir", 0o600)  # an existing file keeps the mode its owner chose
        tp.save(g, tmp_path / "a.tpir")
        assert stat.S_IMODE(os.stat(tmp_path / "a.tpir").st_mode) == 0o600
    finally:
        os.umask(mask)
