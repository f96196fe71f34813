"""The pass manager (passes/manager.py): order, verification after each pass, dumps, and
errors that name the failing pass and the passes before it."""
from __future__ import annotations

import io

import numpy as np
import pytest

import tapeir as tp
from tapeir.ir import Node, Value
from tapeir.passes import PassError, PassManager, canonicalize, cse, dce, print_after, simplify


def _g():
    return tp.trace(lambda x: (tp.exp(x) * 1.0 + tp.exp(x), tp.tanh(x))[0], tp.Spec((3,)))


def test_passes_run_in_order_and_dump_after_each():
    seen = []
    out = PassManager([cse, dce], verify=True, dump=lambda name, g: seen.append((name, len(g.nodes))))(_g())
    assert seen == [("cse", 3), ("dce", 3)]
    assert [n.op for n in out.nodes] == ["exp", "mul", "add"]
    buf = io.StringIO()
    PassManager([dce], dump=lambda n, g: print_after(n, g, file=buf))(_g())
    assert buf.getvalue().startswith("# after dce\ngraph ")


def _breaks_ssa(g):
    """A buggy pass: its node reads a value no node defines."""
    dangling = Value(g.inputs[0].type)
    out = Value(g.inputs[0].type)
    return g.replace(nodes=g.nodes + [Node("exp", [dangling], {}, [out])], outputs=[out])


def _crashes(g):
    raise KeyError("oops")


def test_a_pass_that_breaks_the_ir_is_named_with_the_passes_before_it():
    with pytest.raises(PassError) as info:
        PassManager([cse, dce, _breaks_ssa], verify=True)(_g())
    msg = str(info.value)
    assert "pass '_breaks_ssa' after cse, dce left an ill-formed graph" in msg and "dangling" in msg
    with pytest.raises(PassError, match=r"pass '_crashes' \(the first pass\) failed on graph .*KeyError"):
        PassManager([_crashes])(_g())
    with pytest.raises(PassError, match="returned a str"):
        PassManager([lambda g: "not a graph"])(_g())


def test_verification_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("TAPEIR_VERIFY_PASSES", "0")
    PassManager([_breaks_ssa])(_g())  # not verified: the broken graph goes through
    monkeypatch.setenv("TAPEIR_VERIFY_PASSES", "1")
    with pytest.raises(PassError):
        PassManager([_breaks_ssa])(_g())


def test_the_test_suite_verifies_every_pass():
    import os

    assert os.environ.get("TAPEIR_VERIFY_PASSES") == "1", "tests/conftest.py sets it"


def test_user_errors_pass_through_unchanged():
    g = tp.trace(lambda x: x.sum(), tp.Spec((3,)))

    def needs_scalar(h):
        return tp.grad(h.replace(outputs=h.inputs))  # a TapeirError about the user's graph

    with pytest.raises(tp.TapeirError, match="scalar") as info:
        PassManager([needs_scalar])(g)
    assert not isinstance(info.value, PassError)


def test_canonicalize_reaches_the_fixed_point_in_one_walk():
    def f(x):
        a = tp.exp(x) + tp.exp(x)             # cse
        b = a * (np.float32(3.0) - 2.0)       # fold then identity
        c = (x * 1.0 - 0.0) * tp.exp(x)       # identities, then cse with the first exp
        d = tp.exp(x) * 1.0 + tp.exp(x)       # same as a after identities + cse
        return b + c + d

    g = tp.trace(f, tp.Spec((3,)))
    once = canonicalize(g)
    assert str(canonicalize(once)) == str(once)
    assert [n.op for n in simplify(g).nodes] == ["exp", "add", "mul", "add", "add"]
    x = np.linspace(-1, 1, 3, dtype=np.float32)
    np.testing.assert_array_equal(tp.run(simplify(g), x), tp.run(g, x))


def test_a_pass_that_emits_an_ill_typed_node_is_named():
    from tapeir.ir.builder import Builder

    def emits_badly(g):
        b = Builder()
        b.emit("add", [g.inputs[0], b.const(np.ones(2, np.float32))])
        return g

    with pytest.raises(PassError, match=r"pass 'emits_badly' after dce failed on graph .*do not broadcast"):
        PassManager([dce, emits_badly])(tp.trace(lambda x: x.sum(), tp.Spec((3,))))


def test_an_error_inside_a_vjp_rule_points_at_the_forward_node():
    g = tp.trace(lambda z, y: tp.cross_entropy(z, y), tp.Spec(("B", "C")), tp.Spec(("B",), "int64"))
    line = g.nodes[0].source
    with pytest.raises(tp.TapeirError, match="static class count") as info:
        tp.grad(g)
    assert info.value.where == line
