"""Pytrees: nested dicts, lists and tuples of leaves, flattened in a fixed order.

Dict keys are visited sorted (as JAX does), so `{"w": .., "b": ..}` flattens b first.
A leaf's *path* names it: `params.w1`, `layers.0.b`. Trees nest at most MAX_DEPTH
containers deep: everything that walks them (flattening, `==`, printing, parsing) recurses,
so a deeper tree is a TapeirError where it is made, not a RecursionError later.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import TapeirError

MAX_DEPTH = 100  # containers in a user's tree; real parameter trees nest a handful deep
_MAX_TREEDEF_DEPTH = MAX_DEPTH + 8  # room for tapeir's own wrapping: the argument tuple, (value, grads)
_DEPTH_HINT = f"pytrees nest at most {MAX_DEPTH} dicts, lists and tuples deep; flatten the structure"


@dataclass(frozen=True)
class TreeDef:
    """The shape of a pytree: kind is leaf, tuple, list or dict; keys only for dicts.

    >>> _, td = flatten({"w": 1, "b": [2, 3]}, lambda x: isinstance(x, int))
    >>> td.num_leaves, td.paths(), leaf_names("params", td)
    (3, [('b', 0), ('b', 1), ('w',)], ['params.b.0', 'params.b.1', 'params.w'])
    """

    kind: str
    children: tuple["TreeDef", ...] = ()
    keys: tuple[str, ...] = ()
    depth: int = field(default=0, init=False, compare=False, repr=False)  # containers from here down

    def __post_init__(self):
        if self.children:
            d = 1 + max(c.depth for c in self.children)
        else:
            d = 0 if self.kind == "leaf" else 1
        if d > _MAX_TREEDEF_DEPTH:
            raise TapeirError(f"a pytree nested {d} levels deep", hint=_DEPTH_HINT)
        object.__setattr__(self, "depth", d)

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
    return leaves, _flatten(tree, (), leaves, is_leaf, what)


# Module-level recursion on purpose: a recursive closure is a reference cycle (function ->
# cell -> function) that keeps the leaves it captured alive until the cyclic GC runs, so
# every step's output arrays would linger and churn the allocator (~900 page faults per
# training step in bench_train_step).
def _flatten(x, path, leaves, is_leaf, what) -> TreeDef:
    if len(path) >= MAX_DEPTH and isinstance(x, (dict, list, tuple)) and not is_leaf(x):
        raise TapeirError(f"{what} is nested more than {MAX_DEPTH} levels deep "
                          f"(at {_fmt_path(path[:3])[1:]}...)", hint=_DEPTH_HINT)
    if isinstance(x, dict):
        keys = list(x)
        if not all(isinstance(k, str) for k in keys):
            raise TapeirError(f"{what}{_fmt_path(path)}: dict keys must be strings, got {keys!r}")
        keys.sort()
        return TreeDef("dict", tuple(_flatten(x[k], path + (k,), leaves, is_leaf, what) for k in keys),
                       tuple(keys))
    if isinstance(x, (list, tuple)) and not is_leaf(x):
        kind = "list" if isinstance(x, list) else "tuple"
        return TreeDef(kind, tuple(_flatten(v, path + (i,), leaves, is_leaf, what) for i, v in enumerate(x)))
    if not is_leaf(x):
        raise TapeirError(
            f"{what}{_fmt_path(path)} is a {type(x).__name__}, not an array",
            hint="pass numpy arrays or tp.Spec(shape, dtype) leaves inside dicts, lists and tuples",
        )
    leaves.append(x)
    return LEAF


def unflatten(treedef: TreeDef, leaves):
    """Rebuild the pytree `treedef` describes from its leaves (the inverse of flatten).

    >>> _, td = flatten((1, [2]), lambda x: isinstance(x, int))
    >>> unflatten(td, ["a", "b"])
    ('a', ['b'])
    """
    return _unflatten(treedef, iter(leaves))


def _unflatten(td: TreeDef, it):
    if td.kind == "leaf":
        return next(it)
    kids = [_unflatten(c, it) for c in td.children]
    if td.kind == "dict":
        return dict(zip(td.keys, kids))
    return kids if td.kind == "list" else tuple(kids)


def _fmt_path(path) -> str:
    return "".join(f".{p}" for p in path)


def leaf_names(prefix: str, treedef: TreeDef) -> list[str]:
    """`prefix` plus each leaf's dotted path, in flattening order (see TreeDef)."""
    return [prefix + _fmt_path(p) for p in treedef.paths()]


def default_output_names(out_tree: TreeDef) -> list[str]:
    """A graph's output names unless it says otherwise: `output` for a single result, else
    `output.<path>` per leaf of the output tree.

    >>> default_output_names(LEAF), default_output_names(TreeDef("tuple", (LEAF, LEAF)))
    (['output'], ['output.0', 'output.1'])
    """
    return leaf_names("output", out_tree)
