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

import onnx  # noqa: E402  (a runtime dependency: never skipped)

import tapeir as tp  # noqa: E402
from support import assert_close  # noqa: E402
from tapeir.frontend.onnx import IMPORT, STATIC_OPERANDS  # noqa: E402

RTOL, ATOL = 1e-3, 1e-5

# Why a supported case fails. Each reason is a limit of tapeir's IR, not of the importer.
DTYPE = ("an input, Cast target or constant has a dtype tapeir's IR lacks (it has f16/f32/f64, i32/i64, bool; "
         "not int8/uint8/int16/uint16/uint32/uint64/int4/bfloat16/float8/float4/string)")
THREE_D = "3-D convolution or pooling: the IR has 2-D conv/pool ops (1-D runs as 2-D, 3-D does not)"
RANDOM = ("Dropout in training mode with ratio > 0: tapeir draws the mask from a key input (dropout_key.<node>, its "
          "counter-based stream), not from the RNG the expected outputs came from (ratio 0 imports and passes)")
NOT_A_TENSOR = "a sequence or optional graph input or output: the IR has tensor values only (sequences import inside a model)"
ARGMAX_OUTPUT = "MaxPool's Indices output: the IR's max_pool2d has no argmax output"

DEVIATIONS: dict[str, str] = {
    **dict.fromkeys([
        "test_add_int16", "test_add_int8", "test_add_uint16", "test_add_uint32", "test_add_uint64",
        "test_add_uint8", "test_cast_BFLOAT16_to_FLOAT", "test_cast_FLOAT16_to_FLOAT4E2M1",
        "test_cast_FLOAT16_to_FLOAT8E4M3FN", "test_cast_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_cast_FLOAT16_to_FLOAT8E5M2", "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_cast_FLOAT16_to_INT2", "test_cast_FLOAT16_to_INT4", "test_cast_FLOAT16_to_UINT2",
        "test_cast_FLOAT16_to_UINT4", "test_cast_FLOAT4E2M1_to_FLOAT", "test_cast_FLOAT4E2M1_to_FLOAT16",
        "test_cast_FLOAT8E4M3FNUZ_to_FLOAT", "test_cast_FLOAT8E4M3FNUZ_to_FLOAT16",
        "test_cast_FLOAT8E4M3FN_to_FLOAT", "test_cast_FLOAT8E4M3FN_to_FLOAT16",
        "test_cast_FLOAT8E5M2FNUZ_to_FLOAT", "test_cast_FLOAT8E5M2FNUZ_to_FLOAT16",
        "test_cast_FLOAT8E5M2_to_FLOAT", "test_cast_FLOAT8E5M2_to_FLOAT16", "test_cast_FLOAT_to_BFLOAT16",
        "test_cast_FLOAT_to_FLOAT4E2M1", "test_cast_FLOAT_to_FLOAT8E4M3FN",
        "test_cast_FLOAT_to_FLOAT8E4M3FNUZ", "test_cast_FLOAT_to_FLOAT8E5M2",
        "test_cast_FLOAT_to_FLOAT8E5M2FNUZ", "test_cast_FLOAT_to_INT2", "test_cast_FLOAT_to_INT4",
        "test_cast_FLOAT_to_UINT2", "test_cast_FLOAT_to_UINT4", "test_cast_INT2_to_FLOAT",
        "test_cast_INT2_to_FLOAT16", "test_cast_INT2_to_INT8", "test_cast_INT4_to_FLOAT",
        "test_cast_INT4_to_FLOAT16", "test_cast_INT4_to_INT8", "test_cast_UINT2_to_FLOAT",
        "test_cast_UINT2_to_FLOAT16", "test_cast_UINT2_to_UINT8", "test_cast_UINT4_to_FLOAT",
        "test_cast_UINT4_to_FLOAT16", "test_cast_UINT4_to_UINT8", "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0",
        "test_cast_e8m0_FLOAT8E8M0_to_FLOAT", "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16",
        "test_cast_e8m0_FLOAT_to_FLOAT8E8M0", "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ", "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ", "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ", "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ", "test_castlike_BFLOAT16_to_FLOAT",
        "test_castlike_BFLOAT16_to_FLOAT_expanded", "test_castlike_FLOAT16_to_FLOAT4E2M1",
        "test_castlike_FLOAT16_to_FLOAT4E2M1_expanded", "test_castlike_FLOAT16_to_FLOAT8E4M3FN",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ", "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded", "test_castlike_FLOAT16_to_FLOAT8E5M2",
        "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ", "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E5M2_expanded", "test_castlike_FLOAT16_to_INT2",
        "test_castlike_FLOAT16_to_INT2_expanded", "test_castlike_FLOAT16_to_INT4",
        "test_castlike_FLOAT16_to_INT4_expanded", "test_castlike_FLOAT16_to_UINT2",
        "test_castlike_FLOAT16_to_UINT2_expanded", "test_castlike_FLOAT16_to_UINT4",
        "test_castlike_FLOAT16_to_UINT4_expanded", "test_castlike_FLOAT4E2M1_to_FLOAT",
        "test_castlike_FLOAT4E2M1_to_FLOAT16", "test_castlike_FLOAT4E2M1_to_FLOAT16_expanded",
        "test_castlike_FLOAT4E2M1_to_FLOAT_expanded", "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16", "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded", "test_castlike_FLOAT8E4M3FN_to_FLOAT",
        "test_castlike_FLOAT8E4M3FN_to_FLOAT16", "test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded", "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16", "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded", "test_castlike_FLOAT8E5M2_to_FLOAT",
        "test_castlike_FLOAT8E5M2_to_FLOAT16", "test_castlike_FLOAT8E5M2_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E5M2_to_FLOAT_expanded", "test_castlike_FLOAT_to_BFLOAT16",
        "test_castlike_FLOAT_to_BFLOAT16_expanded", "test_castlike_FLOAT_to_FLOAT4E2M1",
        "test_castlike_FLOAT_to_FLOAT4E2M1_expanded", "test_castlike_FLOAT_to_FLOAT8E4M3FN",
        "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ", "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded", "test_castlike_FLOAT_to_FLOAT8E5M2",
        "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ", "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_FLOAT_to_FLOAT8E5M2_expanded", "test_castlike_FLOAT_to_INT2",
        "test_castlike_FLOAT_to_INT2_expanded", "test_castlike_FLOAT_to_INT4",
        "test_castlike_FLOAT_to_INT4_expanded", "test_castlike_FLOAT_to_UINT2",
        "test_castlike_FLOAT_to_UINT2_expanded", "test_castlike_FLOAT_to_UINT4",
        "test_castlike_FLOAT_to_UINT4_expanded", "test_castlike_INT2_to_FLOAT",
        "test_castlike_INT2_to_FLOAT16", "test_castlike_INT2_to_FLOAT16_expanded",
        "test_castlike_INT2_to_FLOAT_expanded", "test_castlike_INT2_to_INT8",
        "test_castlike_INT2_to_INT8_expanded", "test_castlike_INT4_to_FLOAT",
        "test_castlike_INT4_to_FLOAT16", "test_castlike_INT4_to_FLOAT16_expanded",
        "test_castlike_INT4_to_FLOAT_expanded", "test_castlike_INT4_to_INT8",
        "test_castlike_INT4_to_INT8_expanded", "test_castlike_UINT2_to_FLOAT",
        "test_castlike_UINT2_to_FLOAT16", "test_castlike_UINT2_to_FLOAT16_expanded",
        "test_castlike_UINT2_to_FLOAT_expanded", "test_castlike_UINT2_to_UINT8",
        "test_castlike_UINT2_to_UINT8_expanded", "test_castlike_UINT4_to_FLOAT",
        "test_castlike_UINT4_to_FLOAT16", "test_castlike_UINT4_to_FLOAT16_expanded",
        "test_castlike_UINT4_to_FLOAT_expanded", "test_castlike_UINT4_to_UINT8",
        "test_castlike_UINT4_to_UINT8_expanded", "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2", "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded", "test_celu_bfloat16", "test_einsum_batch_matmul_bfloat16",
        "test_einsum_sum_bfloat16", "test_einsum_transpose_bfloat16",
        "test_celu_bfloat16_expanded", "test_clip_default_int8_inbounds",
        "test_clip_default_int8_inbounds_expanded", "test_clip_default_int8_max",
        "test_clip_default_int8_max_expanded", "test_clip_default_int8_min",
        "test_clip_default_int8_min_expanded", "test_div_int16", "test_div_int8", "test_div_uint16",
        "test_div_uint32", "test_div_uint64", "test_div_uint8", "test_equal_int16", "test_equal_int8",
        "test_equal_string", "test_equal_string_broadcast", "test_equal_uint16", "test_equal_uint32",
        "test_equal_uint64", "test_equal_uint8", "test_greater_equal_int16",
        "test_greater_equal_int16_expanded", "test_greater_equal_int8", "test_greater_equal_int8_expanded",
        "test_greater_equal_uint16", "test_greater_equal_uint16_expanded", "test_greater_equal_uint32",
        "test_greater_equal_uint32_expanded", "test_greater_equal_uint64",
        "test_greater_equal_uint64_expanded", "test_greater_equal_uint8",
        "test_greater_equal_uint8_expanded", "test_greater_int16", "test_greater_int8",
        "test_greater_uint16", "test_greater_uint32", "test_greater_uint64", "test_greater_uint8",
        "test_less_equal_int16", "test_less_equal_int16_expanded", "test_less_equal_int8",
        "test_less_equal_int8_expanded", "test_less_equal_uint16", "test_less_equal_uint16_expanded",
        "test_less_equal_uint32", "test_less_equal_uint32_expanded", "test_less_equal_uint64",
        "test_less_equal_uint64_expanded", "test_less_equal_uint8", "test_less_equal_uint8_expanded",
        "test_less_int16", "test_less_int8", "test_less_uint16", "test_less_uint32", "test_less_uint64",
        "test_less_uint8", "test_max_int16", "test_max_int8", "test_max_uint16", "test_max_uint32",
        "test_max_uint64", "test_max_uint8", "test_maxpool_2d_uint8", "test_min_int16", "test_min_int8",
        "test_min_uint16", "test_min_uint32", "test_min_uint64", "test_min_uint8", "test_mul_int16",
        "test_mul_int8", "test_mul_uint16", "test_mul_uint32", "test_mul_uint64", "test_mul_uint8",
        "test_onehot_with_bfloat16_values", "test_pow_types_float32_uint32", "test_pow_types_float32_uint64",
        "test_range_bfloat16_type_positive_delta", "test_sub_int16", "test_sub_int8", "test_sub_uint16",
        "test_sub_uint32", "test_sub_uint64", "test_sub_uint8",
    ], DTYPE),
    **dict.fromkeys([
        "test_averagepool_3d_default",
        "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
        "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
        "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False",
        "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True",
        "test_averagepool_3d_dilations_small", "test_convtranspose_3d", "test_maxpool_3d_default",
        "test_maxpool_3d_dilations", "test_maxpool_3d_dilations_use_ref_impl",
        "test_maxpool_3d_dilations_use_ref_impl_large",
    ], THREE_D),
    **dict.fromkeys([
        "test_training_dropout", "test_training_dropout_default", "test_training_dropout_default_mask",
        "test_training_dropout_mask",
    ], RANDOM),
    **dict.fromkeys([
        "test_identity_opt", "test_identity_sequence", "test_split_to_sequence_1", "test_split_to_sequence_2",
        "test_split_to_sequence_nokeepdims",
    ], NOT_A_TENSOR),
    **dict.fromkeys([
        "test_maxpool_with_argmax_2d_precomputed_pads", "test_maxpool_with_argmax_2d_precomputed_strides",
    ], ARGMAX_OUTPUT),
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
                try:  # ONNX's own tolerance for its cases: |a - b| <= atol + rtol |b|
                    assert_close(a, b, rtol=rtol, scale=atol / rtol, why="the ONNX node test's tolerance")
                except AssertionError as e:
                    return f"output {i} differs ({str(e).splitlines()[0][:200]})"
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


def test_the_check_catches_wrong_outputs(results):
    """A passing case with its expected output nudged must fail: the sweep compares for real."""
    import copy

    _, supported, _ = results
    case = copy.copy(next(c for c in supported if c.name == "test_relu"))
    (inputs, expected), = case.data_sets
    case.data_sets = [(inputs, [expected[0] + np.float32(1e-2)])]
    assert run_case(case) is not None
    case.data_sets = [(inputs, [expected[0].astype(np.float64)])]
    assert "expected float64" in run_case(case)


def write_report(path: str) -> str:
    t0 = time.time()
    cases, supported, failures = sweep()
    folded = []  # passing cases whose every output is known at import time (no IR runs)
    for c in supported:
        if c.name not in failures:
            g = tp.from_onnx(bake_static_inputs(c.model, c.data_sets[0][0])[0])
            if all(v.is_constant for v in g.outputs):
                folded.append(c.name)
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
        "`tapeir.frontend.onnx.IMPORT` is imported with `tp.from_onnx` and run with `tp.run`;",
        f"outputs must match (rtol {RTOL:g}, atol {ATOL:g}, or the case's own looser tolerance, same dtype and shape).",
        "",
        "| | cases |",
        "|---|---|",
        f"| total | {len(cases)} |",
        f"| only supported ops | {len(supported)} |",
        f"| pass | {len(supported) - len(failures)} |",
        f"| of which fold to constants at import | {len(folded)} |",
        f"| deviations (fail, listed with a reason) | {len(failures)} |",
        "",
        "How the sweep feeds a case: operands tapeir needs at import time (`STATIC_OPERANDS` in",
        "`frontend/onnx/table.py`: Reshape/Expand targets, axes, pads, Slice bounds, ...) and the",
        "graph inputs they are computed from are baked into the model as initializers with the data",
        "set's values, as in a model exported with constant folding; all other inputs stay inputs.",
        "Cases whose outputs depend only on such values (Shape, Size, Range, ConstantOfShape, window",
        "functions, reductions over empty axes) fold at import time, through onnx's reference evaluator",
        f"for ordinary ops: {', '.join(f'`{n}`' for n in folded)}.",
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
