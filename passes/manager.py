"""The pass manager: runs Graph -> Graph passes in order.

Rules:
  1. a pass is a function Graph -> Graph (its `__name__` names it) that never mutates its
     input; the manager checks that it returned a Graph;
  2. with `verify=True` the verifier runs after every pass; the default is the
     TAPEIR_VERIFY_PASSES environment variable ("1": on), which the test suite sets, so
     every pass in every test is verified;
  3. `dump` (a callable taking the pass name and the graph, e.g. `print_after`) sees the IR
     after each pass;
  4. a pass that fails (crashes, emits an ill-typed node, or leaves a graph the verifier
     rejects) raises PassError naming the pass and the passes that ran before it; any other
     TapeirError it raises is about the user's graph and passes through unchanged.

>>> import tapeir as tp
>>> from tapeir.passes.simplify import cse, dce
>>> pm = PassManager([cse, dce], verify=True)
>>> g = pm(tp.trace(lambda x: tp.exp(x) + tp.exp(x), tp.Spec((3,))))
>>> pm.names, [n.op for n in g.nodes]
(['cse', 'dce'], ['exp', 'add'])
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from ..ir.errors import TapeirError, TypeRuleError, VerifyError
from ..ir.graph import Graph
from ..ir.verifier import verify as verify_graph

Pass = Callable[[Graph], Graph]


class PassError(TapeirError):
    """A pass crashed or broke an IR invariant: a bug in that pass, not in the user's program."""


def verify_by_default() -> bool:
    """Whether pass managers verify after every pass unless told (TAPEIR_VERIFY_PASSES=1)."""
    return os.environ.get("TAPEIR_VERIFY_PASSES", "") not in ("", "0")


def print_after(name: str, g: Graph, file=None) -> None:
    """A `dump` callback: print the IR after pass `name` (to stderr by default)."""
    print(f"# after {name}\n{g}", file=file or sys.stderr, end="")


class PassManager:
    """Runs `passes` in order (see the module docstring); call it on a Graph."""

    def __init__(self, passes: Sequence[Pass], *, verify: bool | None = None,
                 dump: Callable[[str, Graph], None] | None = None):
        self.passes = list(passes)
        self.verify = verify
        self.dump = dump

    @property
    def names(self) -> list[str]:
        return [getattr(p, "__name__", repr(p)) for p in self.passes]

    def __call__(self, g: Graph) -> Graph:
        check = verify_by_default() if self.verify is None else self.verify
        for k, (name, p) in enumerate(zip(self.names, self.passes)):
            before = f" after {', '.join(self.names[:k])}" if k else " (the first pass)"
            hint = "a bug in that pass; print the IR after each pass with PassManager(..., dump=print_after)"
            try:
                out = p(g)
            except (TypeRuleError, VerifyError) as e:  # the pass built an ill-typed node: its bug
                raise PassError(f"pass {name!r}{before} failed on graph {g.name}: {e.problem}", where=e.where,
                                hint=hint) from e
            except TapeirError:
                raise  # rule 4: the user's error (no VJP rule, a bad graph), already explained
            except Exception as e:
                raise PassError(f"pass {name!r}{before} failed on graph {g.name}: {type(e).__name__}: {e}",
                                hint=hint) from e
            if not isinstance(out, Graph):
                raise PassError(f"pass {name!r}{before} returned a {type(out).__name__}, not a Graph", hint=hint)
            if check:
                try:
                    verify_graph(out)
                except VerifyError as e:
                    raise PassError(f"pass {name!r}{before} left an ill-formed graph: {e.problem}",
                                    where=e.where, hint=hint) from e
            if self.dump is not None:
                self.dump(name, out)
            g = out
        return g
