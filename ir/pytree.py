"""Pytrees: nested dicts, lists and tuples of leaves, flattened in a fixed order.

Dict keys are visited sorted (as JAX does), so `{"w": .., "b": ..}` flattens b first.
A leaf's *path* names it: `params.w1`, `layers.0.b`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import TapeirError


@dataclass(frozen=True)
class TreeDef:
    """The shape of a pytree: kind is leaf, tuple, list or dict; keys only for dicts."""

    kind: str
    children: tuple["TreeDef", ...] = ()
    keys: tuple[str, ...] = ()

    @property
    def num_leaves(self) -> int:
        return 1 if self.kind == "leaf" else sum(c.num_leaves for c in self.children)

    def paths(self) -> list[tuple]:
        """One key path per leaf, in flattening order."""
        if self.kind == "leaf":
            return [()]
        labels = self.keys if self.kind == "dict" else range(len(self.children))
        return [(k,) + p for k, c in zip(labels, self.children) for p in c.paths()]


LEAF = TreeDef("leaf")


def flatten(tree, is_leaf: Callable[[Any], bool], what: str = "argument") -> tuple[list, TreeDef]:
    """Split a pytree into its leaves and its TreeDef.

    >>> leaves, td = flatten({"w": 1, "b": (2, 3)}, lambda x: isinstance(x, int))
    >>> leaves, unflatten(td, leaves)
    ([2, 3, 1], {'b': (2, 3), 'w': 1})
    """
    leaves: list = []

    def go(x, path):
        if isinstance(x, dict):
            keys = list(x)
            if not all(isinstance(k, str) for k in keys):
                raise TapeirError(f"{what}{_fmt_path(path)}: dict keys must be strings, got {keys!r}")
            keys.sort()
            return TreeDef("dict", tuple(go(x[k], path + (k,)) for k in keys), tuple(keys))
        if isinstance(x, (list, tuple)) and not is_leaf(x):
            kind = "list" if isinstance(x, list) else "tuple"
            return TreeDef(kind, tuple(go(v, path + (i,)) for i, v in enumerate(x)))
        if not is_leaf(x):
            raise TapeirError(
                f"{what}{_fmt_path(path)} is a {type(x).__name__}, not an array",
                hint="pass numpy arrays or tp.Spec(shape, dtype) leaves inside dicts, lists and tuples",
            )
        leaves.append(x)
        return LEAF

    return leaves, go(tree, ())


def unflatten(treedef: TreeDef, leaves):
    it = iter(leaves)

    def go(td):
        if td.kind == "leaf":
            return next(it)
        kids = [go(c) for c in td.children]
        if td.kind == "dict":
            return dict(zip(td.keys, kids))
        return kids if td.kind == "list" else tuple(kids)

    return go(treedef)


def _fmt_path(path) -> str:
    return "".join(f".{p}" for p in path)


def leaf_names(prefix: str, treedef: TreeDef) -> list[str]:
    return [prefix + _fmt_path(p) for p in treedef.paths()]
