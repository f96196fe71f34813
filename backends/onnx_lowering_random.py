"""EXPORT rule of ir/ops_random.py's random_uniform (merged into
backends/onnx_lowering.EXPORT).

random_uniform calls the local function `tapeir.random_uniform(key, shape)`:
ir/reference_random.py's hash, op for op in int64 (Range over the element count,
Add/Mul/Mod with every product below 2**62, Div by 128), then Cast to float32 and Mul
by 2**-24: exact steps, so onnxruntime draws the numbers the numpy backend draws, bit
for bit. The function imports back as the op (frontend/onnx/table.py).
"""
from __future__ import annotations

from onnx import helper

from ..ir.reference_random import KEY_MULT, P, RANDOM_ROUNDS
from . import onnx_functions
from ..ir.dtypes import to_numpy


def elem_type(dtype: str) -> int:  # as onnx_lowering's (which imports this module)
    return helper.np_dtype_to_tensor_dtype(to_numpy(dtype))


def _random_uniform(low, n, ins, outs):
    f64 = n.attrs["dtype"] == "f64"
    u = low.call("random_uniform", ins[0], low.shape_tensor(n.attrs["shape"]), out=None if f64 else outs[0])
    if f64:  # exact: the numbers are multiples of 2**-24 below 1
        low.op("Cast", u, out=outs[0], to=elem_type("f64"))


def _random_uniform_body(opset):
    """U (float32, of shape SHAPE) from int64 KEY: ir/reference_random.py's hash, step for step."""
    nodes = []

    def op(op_type, *ins, **attrs):
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op_type, list(ins), [out], **attrs))
        return out

    def c(v):
        return op("Constant", value_int=int(v))

    def mod(x):
        return op("Mod", x, c(P))

    count = op("ReduceProd", "SHAPE", keepdims=0)
    x = op("Reshape", op("Range", c(0), count, c(1)), "SHAPE")
    k = mod("KEY")
    x = mod(op("Add", x, mod(op("Mul", k, c(KEY_MULT)))))
    for km, ko, m in RANDOM_ROUNDS:
        x = mod(op("Add", x, mod(op("Add", op("Mul", k, c(km)), c(ko)))))
        x2 = mod(op("Mul", x, x))
        x = mod(op("Mul", mod(op("Mul", x2, x2)), x))
        x = mod(op("Mul", x, c(m)))
    bits = op("Cast", op("Div", x, c(128)), to=helper.TensorProto.FLOAT)
    nodes.append(helper.make_node("Mul", [bits, op("Constant", value_float=2.0 ** -24)], ["U"]))
    return ["KEY", "SHAPE"], ["U"], [], nodes


# registered from here (not written into onnx_functions.py) so the family's export stays in one module
onnx_functions.register("random_uniform", _random_uniform_body,
                        "uniform float32 in [0, 1) of shape SHAPE from int64 KEY: a counter-based integer hash "
                        "(identical to tapeir's numpy backend)")


EXPORT_RANDOM = {"random_uniform": _random_uniform}
