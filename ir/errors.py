"""Errors users see. Each says what is wrong, where (op, types, source line) and a hint."""
from __future__ import annotations


class TapeirError(Exception):
    """Base of every error tapeir raises on purpose.

    The message is built from parts so every error reads the same way:
    what is wrong, then `  at: <where>`, then `  hint: <how to fix it>`. The parts are
    also attributes: `problem`, `where` and `hint`.

    >>> import numpy as np, tapeir as tp
    >>> try:
    ...     tp.trace(lambda x: x + np.ones(4, np.float32), tp.Spec((3,)))
    ... except tp.TapeirError as e:
    ...     print(e)  # doctest: +ELLIPSIS
    add: shapes do not broadcast (f32[3], f32[4]): axis -1 has sizes 3 vs 4
      at: <doctest ...>:2
      hint: sizes must match or be 1; reshape or broadcast_to first
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.problem = message
        self.where = where
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.problem
        if self.where:
            text += f"\n  at: {self.where}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class TypeRuleError(TapeirError):
    """An op's type rule rejected its operands (shapes, dtypes or attributes).

    Tracing reports it as a TraceError at the user's line; calling a type rule directly
    raises it as is.

    >>> import tapeir as tp
    >>> a, b = tp.TensorType("f32", (2, 3)), tp.TensorType("f32", (4, 5))
    >>> tp.OPS["matmul"].infer([a, b], {})
    Traceback (most recent call last):
        ...
    tapeir.ir.errors.TypeRuleError: matmul: contracting dims differ (f32[2,3], f32[4,5]): 3 vs 4
      hint: a @ b needs a.shape[-1] == b.shape[-2]; transpose one side?
    """


class TraceError(TapeirError):
    """Tracing a user function failed; `where` is the user's source line.

    >>> import tapeir as tp
    >>> tp.trace(lambda x: x if x > 0 else -x, tp.Spec((3,)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    tapeir.ir.errors.TraceError: bool() of a traced tensor bool[3]: its value is unknown while tracing
      at: ...
      hint: Python control flow cannot depend on tensor values; use tp.where(cond, a, b) to select
    """


class VerifyError(TapeirError):
    """A graph breaks an IR invariant; the message shows the node in context.

    >>> import tapeir as tp
    >>> tp.parse("graph f(x: f32[3]) { %0: f32[4] = exp(x)  return %0 }")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    tapeir.ir.errors.VerifyError: verification failed at node 0: recorded output types f32[4] but the type rule gives f32[3]
      at: node 0 (exp)
    ...
    """


class ParseError(TapeirError):
    """The text form could not be parsed; the message carries line and column.

    >>> import tapeir as tp
    >>> tp.parse("graph f(x: f32[3]) { %0: f32[3] = exp(y)  return %0 }")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    tapeir.ir.errors.ParseError: line 1, col 39: y is not defined here ...
    """


class RunError(TapeirError):
    """Running a graph failed (bad inputs, or an op failed at run time).

    >>> import numpy as np, tapeir as tp
    >>> tp.run(tp.trace(tp.exp, tp.Spec((3,))), np.ones(4, np.float32))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    tapeir.ir.errors.RunError: input x has shape (4,), the graph expects [3]...
    """
