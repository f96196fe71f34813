"""Fused vs unfused agreement on every gradient graph the autodiff tests build.

In tests/passes/test_autodiff.py and test_grad_ops.py, tp.value_and_grad and tp.grad are
wrapped: each graph they return (once per distinct text) is, after the test, checked by
tests/fusion_check.py (g and tp.fuse(g) agree on the numpy backend, bit for bit, and in
onnxruntime). A failure shows as an error at the teardown of the test that built it.
"""
import pytest

import tapeir as tp
from fusion_check import check_fused_agrees

_MODULES = ("test_autodiff", "test_grad_ops")
_SEEN: set = set()


@pytest.fixture(autouse=True)
def _fused_agreement(request, monkeypatch):
    if request.module.__name__.rsplit(".", 1)[-1] not in _MODULES:
        yield
        return
    built = []
    for name in ("grad", "value_and_grad"):
        def wrapper(*a, _original=getattr(tp, name), **kw):
            out = _original(*a, **kw)
            built.append(out)
            return out
        monkeypatch.setattr(tp, name, wrapper)
    yield
    monkeypatch.undo()
    for g in built:
        key = str(g)
        if key not in _SEEN:
            _SEEN.add(key)
            check_fused_agrees(g)
