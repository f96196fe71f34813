"""Simplification passes: each rule fires, results never change, the verifier passes after each."""
import numpy as np
import pytest

import tapeir as tp
from support import assert_close
from tapeir.passes import cse, dce, drop_identities, fold_constants, simplify


def _run_same(g, h, *args):
    for a, b in zip(np.atleast_1d(tp.run(g, *args)), np.atleast_1d(tp.run(h, *args))):
        assert_close(a, b)


def test_each_rule_fires_and_keeps_results():
    def f(x):
        a = tp.exp(x) + tp.exp(x)                      # cse: one exp
        b = a * (np.float32(3.0) - 2.0)                # fold 3 - 2 = 1, then drop the * 1
        c = x - np.zeros(3, np.float32) * 5.0          # fold zeros*5, then drop the - 0
        unused = tp.tanh(x)                            # noqa: F841  dce
        return b + c

    g = tp.trace(f, tp.Spec((3,)))
    x = np.linspace(-1, 1, 3, dtype=np.float32)
    for p in (cse, fold_constants, drop_identities, dce, simplify):
        h = p(g)
        tp.verify(h)
        _run_same(g, h, x)
    assert [n.op for n in cse(g).nodes].count("exp") == 1
    assert len(fold_constants(g).nodes) < len(g.nodes)
    assert [n.op for n in simplify(g).nodes] == ["exp", "add", "add"]
    assert "tanh" not in [n.op for n in dce(g).nodes]


def test_identities_keep_signed_zeros():
    # -0.0 + 0.0 is +0.0 and -0.0 - -0.0 is +0.0: those stay; x + -0.0 and x - 0.0 are x
    neg = np.array([-0.0, 1.0, -2.0], np.float32)
    for fn, kept in [(lambda x: x + 0.0, True), (lambda x: 0.0 + x, True), (lambda x: x - (-0.0), True),
                     (lambda x: x + (-0.0), False), (lambda x: x - 0.0, False), (lambda x: x * 1.0, False)]:
        g = tp.trace(fn, tp.Spec((3,)))
        h = simplify(g)
        assert (len(h.nodes) == 1) == kept, str(h)
        assert_close(tp.run(h, neg), tp.run(g, neg), exact=True)
        assert np.signbit(tp.run(h, neg)).tolist() == np.signbit(fn(neg)).tolist()
    i = tp.trace(lambda x: x + np.int32(0), tp.Spec((3,), "int32"))
    assert simplify(i).nodes == []  # integers have one zero


def test_passes_never_mutate_their_input():
    g = tp.trace(lambda x: tp.exp(x) * 1.0 + tp.exp(x), tp.Spec((3,)))
    before = str(g)
    simplify(g)
    assert str(g) == before


def test_fold_leaves_large_and_failing_subexpressions_alone():
    big = np.ones(1000, np.float32)
    g = tp.trace(lambda x: x + tp.exp(big), tp.Spec((1000,)))
    assert [n.op for n in simplify(g).nodes] == ["exp", "add"]  # 1000 elements: not folded
    labels = np.array([7])  # out of range for 3 classes: must fail at run time, with its source
    g = tp.trace(lambda x: x + tp.cross_entropy(np.zeros((1, 3), np.float32), labels), tp.Spec(()))
    h = simplify(g)
    assert "cross_entropy" in [n.op for n in h.nodes]
    with pytest.raises(tp.RunError, match="out of range"):
        tp.run(h, np.float32(0))


def test_gradient_graphs_come_out_simplified():
    g = tp.trace(lambda x: (x ** 0.0).sum() + (x ** 2.0).sum() + (x ** 3.0).sum(), tp.Spec((2,)))
    gg = tp.grad(g)
    assert [n.op for n in gg.nodes] == ["pow", "mul", "mul", "add"]
    assert_close(tp.run(gg, np.array([0.0, 2.0], np.float32)), [0.0, 16.0])


# ---- rule 5: neg/transpose/reshape chains ------------------------------------------------

def test_double_negation_keeps_signed_zeros_and_nan():
    g = tp.trace(lambda x: -(-(-(-x))) + 0.0 * x, tp.Spec((4,)))
    s = simplify(g)
    tp.verify(s)
    assert [n.op for n in s.nodes] == ["mul", "add"]  # one walk: four negations cancel in pairs
    x = np.array([-0.0, 0.0, np.nan, -3.5], np.float32)
    assert_close(tp.run(s, x, optimize=False), tp.run(g, x, optimize=False), exact=True)
    odd = simplify(tp.trace(lambda x: -(-(-x)), tp.Spec((4,))))
    assert [n.op for n in odd.nodes] == ["neg"]
    assert np.signbit(tp.run(odd, x, optimize=False)[:2]).tolist() == [False, True]


def test_transpose_of_transpose_composes():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    g = tp.trace(lambda x: tp.transpose(tp.transpose(x, (1, 2, 0)), (1, 2, 0)), tp.Spec((2, 3, 4)))
    s = simplify(g)
    assert [(n.op, n.attrs.get("perm")) for n in s.nodes] == [("transpose", (2, 0, 1))]
    assert_close(tp.run(s, x), np.transpose(np.transpose(x, (1, 2, 0)), (1, 2, 0)), exact=True)
    ident = simplify(tp.trace(lambda x: x.T.T * 2.0, tp.Spec((2, 3))))
    assert [n.op for n in ident.nodes] == ["mul"] and ident.nodes[0].inputs[0] is ident.inputs[0]


def test_reshape_of_reshape_and_identity_reshape():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = tp.trace(lambda x: x.reshape((6,)).reshape((3, 2)), tp.Spec((2, 3)))
    s = simplify(g)
    assert [(n.op, n.inputs[0] is s.inputs[0]) for n in s.nodes] == [("reshape", True)]
    assert_close(tp.run(s, x), x.reshape(3, 2), exact=True)
    back = simplify(tp.trace(lambda x: x.reshape((6,)).reshape((3, 2)).reshape((2, 3)) + 1.0, tp.Spec((2, 3))))
    assert [n.op for n in back.nodes] == ["add"]
    sym = simplify(tp.trace(lambda x: x.reshape((-1,)).reshape((-1, 3)), tp.Spec(("B", 3))))
    assert not sym.nodes and sym.outputs[0] is sym.inputs[0]
    # an inner reshape something else reads stays for it
    both = simplify(tp.trace(lambda x: (x.reshape((6,)) * 2.0, x.reshape((6,)).reshape((3, 2))), tp.Spec((2, 3))))
    assert [n.op for n in both.nodes] == ["reshape", "mul", "reshape"]
    assert both.nodes[2].inputs[0] is both.inputs[0]
