"""Errors users see. Each says what is wrong, where (op, types, source line) and a hint."""
from __future__ import annotations


class TapeirError(Exception):
    """Base of every error tapeir raises on purpose.

    The message is built from parts so every error reads the same way:
    what is wrong, then `  at: <where>`, then `  hint: <how to fix it>`.
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
    """An op's type rule rejected its operands (shapes, dtypes or attributes)."""


class TraceError(TapeirError):
    """Tracing a user function failed; `where` is the user's source line."""


class VerifyError(TapeirError):
    """A graph breaks an IR invariant."""


class ParseError(TapeirError):
    """The text form could not be parsed; the message carries line and column."""


class RunError(TapeirError):
    """Running a graph failed (bad inputs, or an op failed at run time)."""
