"""The algebra of symbolic dims (ir/types.py): canonical polynomials in symbols. Checked
against plain integer arithmetic: every operation, evaluated at random sizes, must equal the
same operation on the evaluated operands (an independent reference: Python ints)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

import tapeir as tp
from tapeir.ir.types import (Dim, check_dim, dim_divide, dim_product, dim_sub, dim_sum, linear_in_one,
                             resolve_dim, solve, substitute, symbols_of)

SYMS = ("B", "T", "S")
sizes = st.fixed_dictionaries({s: st.integers(0, 50) for s in SYMS})
atoms = st.one_of(st.integers(0, 9), st.sampled_from(SYMS))


@st.composite
def dims(draw, depth=3):
    """A dim built by the operations shapes use: products, sums, differences."""
    d = draw(atoms)
    for _ in range(draw(st.integers(0, depth))):
        op, other = draw(st.sampled_from("*+-")), draw(atoms)
        d = dim_product([d, other]) if op == "*" else dim_sum([d, other]) if op == "+" else dim_sub(d, other)
    return d


@settings(max_examples=300, deadline=None)
@given(dims(), dims(), sizes)
def test_operations_agree_with_integer_arithmetic(a, b, env):
    ev = lambda d: resolve_dim(d, env)  # noqa: E731
    assert ev(dim_sum([a, b])) == ev(a) + ev(b)
    assert ev(dim_sub(a, b)) == ev(a) - ev(b)
    assert ev(dim_product([a, b])) == ev(a) * ev(b)
    q = dim_divide(dim_product([a, b]), b)
    if b != 0:
        assert q is not None and ev(q) == ev(a)


@settings(max_examples=300, deadline=None)
@given(dims(), sizes)
def test_canonical_text_reads_back_as_itself(d, env):
    if isinstance(d, str):
        assert check_dim(d) == d
        assert tp.parse(f"graph f(x: f32[{d}]) {{\n  return x\n}}").inputs[0].type.shape == (d,)
        assert resolve_dim(check_dim(d.replace("+", " + ")), env) == resolve_dim(d, env)


@settings(max_examples=200, deadline=None)
@given(dims(), sizes, st.sampled_from(SYMS))
def test_solve_recovers_a_linear_symbol(d, env, u):
    """solve(d, size) binds the one unknown symbol exactly when d is linear in it."""
    known = {s: v for s, v in env.items() if s != u}
    if set(symbols_of(d)) - set(known) != {u}:
        return
    subst = dict(known)
    solve(d, resolve_dim(d, env), subst)
    if u in subst:  # when it binds, it binds a value that reproduces the size
        assert resolve_dim(substitute(d, subst), {}) == resolve_dim(d, env)
    lin = linear_in_one(substitute(d, known))
    if lin is not None and lin[1] != 0:
        assert u in subst


def test_canonical_forms():
    assert [check_dim(d) for d in ("1+T", "T+T", "B*4", "T-T+3", "T*B-B+1")] == ["T+1", "2*T", "4*B", 3, "B*T-B+1"]
    assert dim_sum(["T", 1, "T"]) == "2*T+1" and dim_sub("T", "T") == 0 and dim_sub(2, "T") == "-T+2"
    assert dim_divide("2*T+2", "T+1") == 2 and dim_divide("2*T+3", "T+1") is None
    d = Dim("T")
    assert (d + 1, d - 1, 1 - d + d, 2 * (d + 1), (d + d) // 2) == ("T+1", "T-1", 1, "2*T+2", "T")
