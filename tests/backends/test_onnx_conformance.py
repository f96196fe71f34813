"""ONNX's own node tests (onnx.backend.test.case.node) through from_onnx + the numpy backend.

Every case whose ops are all in IMPORT is imported and run; its outputs must match the
case's expected outputs (rtol 1e-3 / atol 1e-5, or the case's own looser tolerance).
A case that fails is listed in DEVIATIONS with the reason, and the test demands that
exactly the listed cases fail, so the list stays honest in both directions.

Regenerate docs/onnx_conformance.md with:  python tests/backends/test_onnx_conformance.py
"""
from __future__ import annotations

import collections
import os
import sys
import time
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import tapeir as tp  # noqa: E402
from tapeir.backends.onnx_import import IMPORT, STATIC_OPERANDS  # noqa: E402

RTOL, ATOL = 1e-3, 1e-5

# reasons, shared by many cases
DTYPE = "uses a dtype tapeir has no IR type for (uint8/int8/int16/uint16/uint32/uint64/bfloat16/float8/string)"

DEVIATIONS: dict[str, str] = {
}


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases(None)


def _supported(case) -> bool:
    return not case.model.functions and all(
        n.domain in ("", "ai.onnx") and n.op_type in IMPORT for n in case.model.graph.node)


def _array(x):
    from onnx import numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


def bake_static_inputs(model, inputs):
    """Turn graph inputs that feed STATIC_OPERANDS slots (shapes, axes, pads) into initializers.

    ONNX's node tests pass e.g. Reshape's target shape as a graph input; tapeir needs it
    at import time, as it would be in a model exported with constant folding.
    """
    from onnx import numpy_helper

    static = {n.input[i] for n in model.graph.node for i in STATIC_OPERANDS.get(n.op_type, ()) if i < len(n.input)}
    for n in reversed(model.graph.node):  # and the values they are computed from (a shape needs no value)
        if static & set(n.output) and n.op_type not in ("Shape", "Size"):
            static.update(n.input)
    names = [vi.name for vi in model.graph.input]
    if not static & set(names):
        return model, inputs
    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep_vi, keep_x = [], []
    for vi, x in zip(list(model.graph.input), inputs):
        if vi.name in static:
            model.graph.initializer.append(numpy_helper.from_array(_array(x), vi.name))
        else:
            keep_vi.append(vi)
            keep_x.append(x)
    del model.graph.input[:]
    model.graph.input.extend(keep_vi)
    return model, keep_x


def run_case(case) -> str | None:
    """None when the case passes, else a one-line reason."""
    try:
        rtol, atol = max(RTOL, case.rtol), max(ATOL, case.atol)
        for inputs, expected in case.data_sets:
            model, inputs = bake_static_inputs(case.model, inputs)
            f = tp.compile(tp.from_onnx(model))
            with np.errstate(all="ignore"):
                got = f(*[_array(x) for x in inputs])
            got = list(got) if isinstance(got, tuple) else [got]
            if len(got) != len(expected):
                return f"{len(got)} outputs, expected {len(expected)}"
            for i, (a, b) in enumerate(zip(got, expected)):
                b = _array(b)
                if a.dtype != b.dtype or a.shape != b.shape:
                    return f"output {i} is {a.dtype}{list(a.shape)}, expected {b.dtype}{list(b.shape)}"
                if a.dtype.kind in "fc":
                    ok = np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
                else:
                    ok = np.array_equal(a, b)
                if not ok:
                    err = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.size else 0
                    return f"output {i} differs (max abs error {err:.3g})"
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None


def sweep():
    cases = _cases()
    supported = [c for c in cases if _supported(c)]
    failures = {}
    for c in supported:
        why = run_case(c)
        if why is not None:
            failures[c.name] = why
    return cases, supported, failures


@pytest.fixture(scope="module")
def results():
    return sweep()


def test_exactly_the_listed_deviations_fail(results):
    _, supported, failures = results
    unexpected = {k: v for k, v in failures.items() if k not in DEVIATIONS}
    fixed = sorted(k for k in DEVIATIONS if k not in failures)
    assert not unexpected, "cases failing without a DEVIATIONS entry:\n" + "\n".join(
        f"  {k}: {v}" for k, v in sorted(unexpected.items()))
    assert not fixed, f"cases in DEVIATIONS that pass now (remove them): {fixed}"


def test_deviations_name_supported_cases(results):
    _, supported, _ = results
    names = {c.name for c in supported}
    assert set(DEVIATIONS) <= names, f"DEVIATIONS entries that are not supported cases: {sorted(set(DEVIATIONS) - names)}"


def test_most_supported_cases_pass(results):
    _, supported, failures = results
    assert len(supported) - len(failures) >= 0.8 * len(supported)


def write_report(path: str) -> str:
    t0 = time.time()
    cases, supported, failures = sweep()
    by_reason = collections.defaultdict(list)
    for name in sorted(failures):
        by_reason[DEVIATIONS.get(name, f"UNLISTED: {failures[name]}")].append(name)
    lines = [
        "# ONNX node conformance of `tp.from_onnx`",
        "",
        "Generated by `python tests/backends/test_onnx_conformance.py` "
        f"(onnx {onnx.__version__}, numpy backend); do not edit by hand.",
        "",
        "Each case of `onnx.backend.test.case.node.collect_testcases()` whose ops are all in",
        "`tapeir.backends.onnx_import.IMPORT` is imported with `tp.from_onnx` and run with `tp.run`;",
        f"outputs must match (rtol {RTOL:g}, atol {ATOL:g}, or the case's own looser tolerance, same dtype and shape).",
        "",
        "| | cases |",
        "|---|---|",
        f"| total | {len(cases)} |",
        f"| only supported ops | {len(supported)} |",
        f"| pass | {len(supported) - len(failures)} |",
        f"| deviations | {len(failures)} |",
        "",
        f"IMPORT covers {len(IMPORT)} ONNX op types: {', '.join(sorted(IMPORT))}.",
        "",
        "## Deviations",
        "",
    ]
    for reason, names in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"- **{reason}** ({len(names)}): " + ", ".join(f"`{n}`" for n in names))
    lines.append("")
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path} in {time.time() - t0:.1f}s: {len(cases)} cases, {len(supported)} supported, "
          f"{len(supported) - len(failures)} pass, {len(failures)} deviations "
          f"({sum(k not in DEVIATIONS for k in failures)} unlisted)")
    return text


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    write_report(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "docs", "onnx_conformance.md"))
