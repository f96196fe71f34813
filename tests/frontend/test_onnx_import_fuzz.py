"""The seeded mutation fuzzer of ONNX import (tests/onnx_fuzz.py): every mutated
model imports as a well-formed Graph or fails with a TapeirError, within a memory budget
and without hanging or crashing. 1,500 cases run by default (a few seconds); the
long mode (`pytest -m fuzz_long`) runs 100,000 more across other seeds."""
from __future__ import annotations

import os
import signal

import numpy as np
import onnx
import pytest

import tapeir as tp
import onnx_fuzz as fuzz


def test_every_seed_model_imports():
    for data in fuzz.seeds():
        g = tp.from_onnx(onnx.ModelProto.FromString(data))
        tp.verify(g)


def test_mutated_models_import_or_fail_with_a_tapeir_error():
    findings = fuzz.run_cases(seed=0, count=1500)
    assert not findings, "\n".join(findings[:20])


@pytest.mark.fuzz_long
@pytest.mark.parametrize("seed", range(1, 11))
def test_mutated_models_long(seed):
    findings = fuzz.run_cases(seed=seed, count=10_000)
    assert not findings, "\n".join(findings[:20])


def test_cases_are_reproducible():
    (a, muts_a), (b, muts_b) = fuzz.case(5, 17), fuzz.case(5, 17)
    assert muts_a == muts_b and a == b


# ---- the harness finds what it must (it is not vacuous) ----------------------------------------

def _exploding(kind):
    def from_onnx(m, *a, **k):
        if kind == "key":
            raise KeyError("z")
        if kind == "memory":
            return np.empty(fuzz.MEMORY_BUDGET + (1 << 30), np.uint8)  # past the child's address-space cap
        os.kill(os.getpid(), signal.SIGKILL)  # a crash in C++ code (no faulthandler dump: SIGKILL)
    return from_onnx


@pytest.mark.parametrize("kind,match", [("key", "KeyError: 'z'"), ("memory", "MemoryError"),
                                        ("crash", "the process died")])
def test_the_harness_reports_other_exceptions_memory_and_crashes(monkeypatch, kind, match):
    monkeypatch.setattr(tp, "from_onnx", _exploding(kind))  # the forked child inherits the patch
    findings = fuzz.run_cases(seed=0, count=3)
    assert findings and all(match in f for f in findings[:1]), findings
    assert findings[0].startswith("case 0 (")
