"""The op registry is the one place ops are named; every table keyed by op covers it exactly."""
from __future__ import annotations

import re

import pytest

import tapeir as tp
from tapeir.backends.numpy_backend import IMPL
from tapeir.ir import OPS, Attr, Category, OpDef, TypeRuleError, get_op, ops_in


def test_numpy_impl_table_covers_exactly_the_registry():
    assert sorted(set(OPS) - set(IMPL)) == [], "ops without a numpy IMPL entry"
    assert sorted(set(IMPL) - set(OPS)) == [], "IMPL entries for ops the registry does not know"


def test_public_ops_is_the_registry():
    assert tp.OPS is OPS


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_is_well_declared(name):
    op = OPS[name]
    assert isinstance(op, OpDef) and op.name == name
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), "op names are snake_case"
    assert isinstance(op.category, Category)
    assert callable(op.type_rule)
    lo, hi = op.arity
    assert isinstance(lo, int) and lo >= 1 and (hi is None or hi >= lo)
    for attr_name, spec in op.attrs.items():
        assert isinstance(spec, Attr) and re.fullmatch(r"[a-z][a-z0-9_]*", attr_name)
        if not spec.required:
            # a default is already canonical, so filled-in attributes print and verify cleanly
            assert spec.normalize(name, attr_name, spec.default) == spec.default
            if spec.choices is not None:
                assert spec.default in spec.choices


def test_categories_partition_the_ops():
    seen = [n for c in Category for n in ops_in(c)]
    assert sorted(seen) == sorted(OPS)


def test_get_op_unknown_is_a_clear_error():
    with pytest.raises(TypeRuleError, match="unknown op 'nope'"):
        get_op("nope")


def test_normalize_attrs_fills_defaults_and_rejects_unknown_and_missing():
    assert get_op("leaky_relu").normalize_attrs({}) == {"alpha": 0.01}
    assert get_op("leaky_relu").normalize_attrs({"alpha": 1}) == {"alpha": 1.0}
    with pytest.raises(TypeRuleError, match=r"unknown attribute\(s\) \['beta'\]"):
        get_op("leaky_relu").normalize_attrs({"beta": 1.0})
    with pytest.raises(TypeRuleError, match="missing attribute 'axis'"):
        get_op("softmax").normalize_attrs({})
    with pytest.raises(TypeRuleError, match="is not one of"):
        get_op("gelu").normalize_attrs({"approximate": "erf"})


def test_arity_is_checked_by_infer():
    f = tp.TensorType("f32", (2,))
    with pytest.raises(TypeRuleError, match="add takes 2 inputs, got 3"):
        get_op("add").infer([f, f, f], {})
    with pytest.raises(TypeRuleError, match="concatenate takes 1.. inputs, got 0"):
        get_op("concatenate").infer([], {"axis": 0})


def test_onnx_twins_are_declared_once():
    """An op's ONNX twin is a field of its declaration; import maps each twin back to one op."""
    twins = [d.onnx for d in OPS.values() if d.onnx]
    assert len(twins) == len(set(twins))
    assert all(re.fullmatch(r"[A-Z][A-Za-z]*", t) for t in twins), "ONNX op types are CamelCase"
    assert OPS["tanh"].onnx == "Tanh" and OPS["not_equal"].onnx is None
