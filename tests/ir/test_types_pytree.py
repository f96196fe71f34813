"""TensorType and symbolic dims; pytree flatten/unflatten and leaf names."""
from __future__ import annotations

import numpy as np
import pytest

from tapeir.ir import TapeirError, TensorType, TreeDef, flatten, unflatten
from tapeir.ir.pytree import LEAF, leaf_names
from tapeir.ir.types import check_dim, dim_divide, dim_product, resolve_dim


def test_tensor_type_normalizes_dtype_and_dims():
    t = TensorType("float32", (np.int64(3), "B", "B*4", "2*3"))
    assert t == TensorType("f32", (3, "B", "4*B", 6))
    assert str(t) == "f32[3,B,4*B,6]" and t.rank == 4 and not t.is_static
    assert TensorType(np.float16, ()).dtype == "f16" and str(TensorType("bool", ())) == "bool[]"


@pytest.mark.parametrize("d, want", [("B", "B"), ("T*B", "B*T"), ("1*B", "B"), ("0*B", 0), (" B * 2 ", "2*B"),
                                     ("B*B", "B*B"), (7, 7)])
def test_symbolic_dims_are_canonical(d, want):
    assert check_dim(d) == want


@pytest.mark.parametrize("d", [-1, True, 2.0, "", "B*", "2B", "a.b", "-3", "B+", "+B", "B+-1", "B-", "T-T-1", None, "²", "٣"])
def test_bad_dims_are_tapeir_errors(d):
    with pytest.raises(TapeirError):
        check_dim(d)


def test_dim_arithmetic():
    assert dim_product(["B", 4, "T", 2]) == "8*B*T"
    assert dim_divide("8*B*T", "2*T") == "4*B"
    assert dim_divide("B", 2) is None and dim_divide(6, "B") is None and dim_divide(6, 4) is None
    assert resolve_dim("4*B*T", {"B": 3, "T": 5}) == 60


def test_flatten_sorts_dict_keys_and_unflatten_inverts():
    tree = {"w": 1, "b": (2, [3, {"z": 4, "a": 5}]), "": 6}
    leaves, td = flatten(tree, lambda x: isinstance(x, int))
    assert leaves == [6, 2, 3, 5, 4, 1]
    assert unflatten(td, leaves) == tree
    assert td.num_leaves == 6
    assert leaf_names("p", td) == ["p.", "p.b.0", "p.b.1.0", "p.b.1.1.a", "p.b.1.1.z", "p.w"]


def test_flatten_keeps_container_kinds_and_empty_containers():
    tree = ([], (), {}, [()], (1,))
    leaves, td = flatten(tree, lambda x: isinstance(x, int))
    assert leaves == [1] and unflatten(td, leaves) == tree
    assert td.children[4] == TreeDef("tuple", (LEAF,))


def test_flatten_errors_name_the_path():
    with pytest.raises(TapeirError, match=r"argument\.a\.0 is a str, not an array"):
        flatten({"a": ["oops"]}, lambda x: isinstance(x, int))
    with pytest.raises(TapeirError, match="dict keys must be strings"):
        flatten({1: 2}, lambda x: isinstance(x, int))
