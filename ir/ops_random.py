"""Counter-based random numbers: random_uniform, a pure function of an int64 key and each
element's index (its hash: ir/reference_random.py; its ONNX form:
backends/onnx_lowering_random.py).

Declared like ir/ops.py's; ir/__init__.py imports this module after ir/ops.py. The
composites random_normal and dropout are in frontend/functions_random.py.
"""
from __future__ import annotations

from .errors import TypeRuleError
from .registry import Attr, Category, register
from .types import TensorType, dim_product

# random_uniform's hash works on int64 values below this prime (2**31 - 1), so every product
# of two stays below 2**62: exact in numpy and in onnxruntime, hence identical streams
RANDOM_PRIME = 2 ** 31 - 1


def random_uniform_rule(op, ts, attrs):
    key = ts[0]
    if key.dtype != "i64" or key.rank != 0:
        raise TypeRuleError(f"{op}: key must be an i64 scalar, got {key}",
                            hint="pass the seed as an int64 0-d input (or a Python int)")
    if attrs["dtype"] not in ("f32", "f64"):
        raise TypeRuleError(f"{op}: dtype {attrs['dtype']} is not f32 or f64",
                            hint="draw in float32 and cast")
    shape = attrs["shape"]
    if -1 in shape:
        raise TypeRuleError(f"{op}: shape {list(shape)} has a -1", hint="give every dim")
    n = dim_product(shape)
    if isinstance(n, int) and n >= RANDOM_PRIME:
        raise TypeRuleError(f"{op}: {n} elements; the counter-based stream has at most 2**31 - 2",
                            hint="draw in smaller pieces with different keys")
    return [TensorType(attrs["dtype"], shape)]


register("random_uniform", 1, Category.RANDOM, random_uniform_rule,
         {"shape": Attr("shape"), "dtype": Attr("dtype", "f32")}, differentiable=False,
         doc="uniform numbers in [0, 1) on a 2**-24 grid, a pure function of (key, element index)")
