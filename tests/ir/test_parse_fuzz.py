"""A seeded mutation fuzzer for the text parser (issue 8): every mutated graph text parses to a
Graph or raises a TapeirError, never another exception, within a time and memory budget.

The corpus is the printed form of traced graphs that between them use every part of the
grammar (argument trees with quoted keys, symbolic dims (sums too: T+1, 2*T-3, B*T-B), inline
and base64 constants,
attributes of every kind, multi-output nodes, sources that need quoting, output names).
Each case applies one to three mutations drawn by a seeded `random.Random`: character
flips, deletions, duplications, token swaps, line moves, splices of two graphs, and a few
hostile inserts (thousands of digits, deep nesting, a long token). Then:

- the outcome is a Graph or a TapeirError (anything else fails, printing the seed);
- a Graph prints to text that parses back to an equal Graph;
- the per-line fast path and the token parser agree: the same Graph or the same message;
- one parse stays under `BUDGET_S` seconds (a hang guard, far above any real parse) and
  under 3x the text's size plus 4 MiB of traced memory.

The default suite runs `CASES` cases (a few seconds); `-m fuzz_long` runs `LONG_CASES`
(TAPEIR_FUZZ_CASES overrides) from other seeds.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import tracemalloc

import numpy as np
import pytest

import tapeir as tp
from tapeir.ir import parser

CASES = 400
LONG_CASES = int(os.environ.get("TAPEIR_FUZZ_CASES", "10000"))
BUDGET_S = 20
MEMORY_SLACK = 4 * 2 ** 20


# ---- the corpus --------------------------------------------------------------------------

def _corpus() -> list[str]:
    w = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    w[0, 0] = np.nan
    kernel = np.ones((3, 2, 2, 2), np.float32)

    def mlp(p, x, y):
        h = tp.tanh(x @ p["w1"] + p["b1"])
        return tp.cross_entropy(h @ p["w2"] + p["b2"], y, reduction="mean")

    def conv(x):
        z = tp.conv2d(x.reshape((-1, 2, 2, 2)), kernel, stride=(1, 1))
        return {"out put": tp.softmax(z.reshape((-1, 3)), axis=1), "graph": (z.sum(axis=(1, 2)),)}

    def mixed(args, s):
        a = tp.where(args["odd key"] > 0.0, args["odd key"] * w, tp.exp(args["b"]))
        return a.max(axis=1, keepdims=True), (s.astype("float64") * 3.0 + 1e-300, tp.leaky_relu(a, 0.25))

    def sums(x, y):  # symbolic dims that are sums: T+1, 2*T-3, B*T-B, B-1, ...
        a = x[:, 1:] * y
        c = tp.concatenate([a, a[:, 3:]], axis=1)
        p = tp.pad(y[1:], ((0, 0), (2, 0)))
        return (c.reshape(-1).sum() + p.sum() + y[:, 1:].reshape(-1).sum() +
                tp.concatenate([x, y], axis=1)[:, :-2].sum())

    ns = {"tp": tp}
    exec(compile("def evil(x):\n    return tp.exp(x) * 2.0\n", 'a\n  %9: f32[] = const 1.0\n"b.py', "exec"), ns)
    graphs = [
        tp.value_and_grad(tp.trace(mlp, {"w1": tp.Spec((8, 4)), "b1": tp.Spec((4,)), "w2": tp.Spec((4, 3)),
                                         "b2": tp.Spec((3,))}, tp.Spec(("B", 8)), tp.Spec(("B",), "int64"))),
        tp.trace(conv, tp.Spec(("N", 8))),
        tp.trace(mixed, {"odd key": tp.Spec((4, 6)), "b": tp.Spec((4, 6))}, tp.Spec(("T", 2), "float16")),
        tp.trace(ns["evil"], tp.Spec((3,))),
        tp.value_and_grad(tp.trace(sums, tp.Spec(("B", "T+1")), tp.Spec(("B", "T")))),
    ]
    graphs.append(tp.optimize(graphs[0]))  # fused nodes: nested bodies, several outputs
    assert any(n.op == "fused" for n in graphs[-1].nodes)
    return [str(g) for g in graphs]


CORPUS = _corpus()
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|%c?[0-9]+|[A-Za-z_][A-Za-z0-9_.]*|-?[0-9][0-9.eE+-]*|\s+|.', re.S)
ALPHABET = list('"\\\n#%{}[](),:=*-.+ 0123456789aefinx_') + ["é", "\x00", "\u2028", "\t", "\r", "'"]


# ---- mutations ---------------------------------------------------------------------------

def _span(r: random.Random, text: str, most: int = 24) -> tuple[int, int]:
    a = r.randrange(len(text) + 1)
    return a, min(len(text), a + r.randint(1, most))


def _flip(r, text, _):
    i = r.randrange(len(text))
    return text[:i] + r.choice(ALPHABET) + text[i + 1:]


def _delete(r, text, _):
    a, b = _span(r, text)
    return text[:a] + text[b:]


def _duplicate(r, text, _):
    a, b = _span(r, text)
    at = r.randrange(len(text) + 1)
    return text[:at] + text[a:b] + text[at:]


def _swap_tokens(r, text, _):
    toks = _TOKENS.findall(text)
    i, j = r.randrange(len(toks)), r.randrange(len(toks))
    toks[i], toks[j] = toks[j], toks[i]
    return "".join(toks)


def _replace_token(r, text, _):
    toks = _TOKENS.findall(text)
    i = r.randrange(len(toks))
    toks[i] = r.choice(toks)
    return "".join(toks)


def _move_line(r, text, _):
    lines = text.split("\n")
    i, j = r.randrange(len(lines)), r.randrange(len(lines))
    line = lines.pop(i)
    lines.insert(j, line if r.random() < 0.7 else line + "\n" + line)
    return "\n".join(lines)


def _splice(r, text, other):
    a = [m.end() for m in re.finditer("\n", text)] or [0]
    b = [m.end() for m in re.finditer("\n", other)] or [0]
    return text[:r.choice(a)] + other[r.choice(b):]


def _hostile(r, text, _):
    at = r.randrange(len(text) + 1)
    insert = r.choice(["9" * 5000, "-" + "1" * 4301, "[" * 3000, "{" * 3000, "(" * 3000, "x" * 100_000,
                       '"' + "\\" * 999 + '"', "1e999", "%" + "7" * 50, "\\u0000", "#" * 10, "\n" * 50])
    return text[:at] + insert + text[at:]


_WORDS = re.compile(r"\b(?:f16|f32|f64|i32|i64|bool|[0-9]+|[a-z]+_?[a-z0-9]*(?=\())\b")


def _retype(r, text, _):
    """A dtype, a number or an op name changed to another of its kind: well-formed text that
    the verifier (or a type rule) has to reject."""
    words = list(_WORDS.finditer(text))
    if not words:
        return text
    m = r.choice(words)
    w = m.group()
    new = r.choice(["f16", "f32", "f64", "i32", "i64", "bool"]) if w in ("f16", "f32", "f64", "i32", "i64", "bool") \
        else str(r.choice([0, 1, 2, 3, 7, 2 ** 31, 2 ** 63])) if w.isdigit() else r.choice(sorted(tp.OPS))
    return text[:m.start()] + new + text[m.end():]


# dims as a hand might write them: sums in any order, signed zeros, the symbol inf (which lexes as
# a number), cancelling terms, and malformed ones
DIMS = ["T+1", "1+T", "T-1", "-1+T", "T-0", "T-00", "-0+T", "2*T-3", "B*T-B", "T*B-B", "-T", "T-T", "B*T-B*T",
        "T-inf", "-inf+T", "inf-1", "T-nan", "T+-1", "T--1", "T-1-1", "T-01", "T*0+1", "T-999999999999999999",
        "T-9999999999999999999", "T+1.", "T-1e5", "T-", "+T", "T+ 1", "T -1"]
_DIMS_IN = re.compile(r"(?<=[\[,])[^\[\],\n]*(?=[\],])")


def _redim(r, text, _):
    """One dim of a type, or of a dims attribute, respelled from DIMS."""
    spots = list(_DIMS_IN.finditer(text))
    if not spots:
        return text
    m = r.choice(spots)
    return text[:m.start()] + r.choice(DIMS) + text[m.end():]


MUTATIONS = [_redim] * 2 + [_retype] * 3 + [_flip] * 4 + [_delete] * 3 + [_duplicate] * 2 + [_swap_tokens] * 2 + [_replace_token] * 2 + \
    [_move_line, _splice, _hostile]


def mutate(seed: int) -> str:
    r = random.Random(seed)
    text = r.choice(CORPUS)
    for _ in range(r.randint(1, 3)):
        if not text:
            break
        text = r.choice(MUTATIONS)(r, text, r.choice(CORPUS))
    return text


# ---- the check ---------------------------------------------------------------------------

@contextlib.contextmanager
def _time_budget(seconds: int):
    """Fail a parse that runs past `seconds` (a hang guard: SIGALRM in the main thread on POSIX;
    nothing elsewhere)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(*_):
        raise TimeoutError(f"a parse ran past its budget of {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _outcome(text: str, fast: bool):
    parser._Parser.FAST = fast
    try:
        return tp.parse(text)
    except tp.TapeirError as e:
        return e
    finally:
        parser._Parser.FAST = True


def check(seed: int) -> str:
    """One case; returns the kind of outcome (for the coverage check)."""
    text = mutate(seed)
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        with _time_budget(BUDGET_S):
            got = _outcome(text, fast=True)
    except Exception as e:  # the failure this fuzzer exists to find
        raise AssertionError(f"seed {seed}: {type(e).__name__}: {e}\n--- text ---\n{text[:3000]}") from e
    _, peak = tracemalloc.get_traced_memory()
    assert peak - base <= 3 * len(text) + MEMORY_SLACK, f"seed {seed}: peak {peak - base} for {len(text)} chars"
    slow = _outcome(text, fast=False)
    if isinstance(got, tp.Graph):
        assert isinstance(slow, tp.Graph) and slow == got, f"seed {seed}: fast and token parsers disagree"
        assert tp.parse(str(got)) == got, f"seed {seed}: the parsed graph does not round-trip"
        return "graph"
    assert type(slow) is type(got) and str(slow) == str(got), \
        f"seed {seed}: fast and token parsers disagree:\n{got}\n---\n{slow}"
    return type(got).__name__


def _run(seeds) -> dict:
    kinds: dict[str, int] = {}
    tracemalloc.start()
    try:
        for seed in seeds:
            k = check(seed)
            kinds[k] = kinds.get(k, 0) + 1
    finally:
        tracemalloc.stop()
    return kinds


def test_the_corpus_parses():
    for text in CORPUS:
        assert str(tp.parse(text)) == text


@pytest.mark.parametrize("dim", DIMS)
def test_both_parsers_read_a_dim_alike(dim):
    """A dim in a node's type (the fast path's line regex, then the token parser where it
    declines) and in an input's type (the token parser): the same outcome either way."""
    for text in (f"graph f(x: f32[T,B]) {{\n  %0: f32[{dim}] = reshape(x) {{shape=[-1]}}\n  return %0\n}}",
                 f"graph f(x: f32[{dim}]) {{\n  return x\n}}"):
        fast, slow = _outcome(text, fast=True), _outcome(text, fast=False)
        assert type(fast) is type(slow) and str(fast) == str(slow), f"{dim!r}:\n{fast}\n---\n{slow}"


def test_signed_zeros_and_the_symbol_inf_in_dims():
    """'T-0' is T (the token parser read T0: str(-0) lost the sign); '-inf+T' is T minus the
    symbol inf (the token parser refused '-inf', the fast path took it)."""
    read = lambda d: tp.parse(f"graph f(x: f32[{d}]) {{\n  return x\n}}").inputs[0].type.shape[0]  # noqa: E731
    assert [read(d) for d in ("T-0", "T-00", "-0+T", "-inf+T", "T-01")] == ["T", "T", "T", "T-inf", "T-1"]


def test_mutated_graphs_parse_or_raise_tapeir_errors():
    kinds = _run(range(CASES))
    # the mutations reach both outcomes and the verifier, not only the first token
    assert kinds.get("graph", 0) >= CASES // 50 and kinds.get("ParseError", 0) >= CASES // 4, kinds
    assert kinds.get("VerifyError", 0) >= 1, kinds


@pytest.mark.fuzz_long
def test_mutated_graphs_long():
    kinds = _run(range(10 ** 6, 10 ** 6 + LONG_CASES))
    assert sum(kinds.values()) == LONG_CASES
