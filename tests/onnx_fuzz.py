"""A seeded mutation fuzzer for tp.from_onnx (issue 8): mutate valid models and demand that
every import ends in a Graph (that verifies and prints) or a TapeirError, never another
exception, a crash, a hang or unbounded memory.

Seeds: models tp.to_onnx exports from traced graphs (forward and value_and_grad, with
tapeir's local functions) and models built with onnx.helper in the forms other exporters
emit (torch's Shape->Gather->Concat->Reshape flatten with dim_params, model-local
functions, folding ConstantOfShape/Range/Expand, Pad/Slice/Split, Gather of computed ids).
Mutations, 1 to 3 per case: change a node's op type, drop/duplicate/rename inputs and
outputs, corrupt, delete or retype attributes, change input dims and dtypes, corrupt
initializer dims, dtypes and bytes, swap nodes, duplicate/drop graph outputs, and flip
random bytes of the serialized model (loaded from a file, as `tapeir dump` would).

The cases run in a forked child under an address-space limit (RLIMIT_AS: its size at
the fork plus MEMORY_BUDGET), so an import that tries to allocate gigabytes fails as a
MemoryError and is reported as a finding; a case that runs past CASE_SECONDS or kills
the child is reported with the case that did it. `run_cases(seed, count)` returns the
findings as lines `case <i> (<mutations>): <what happened>`; `case(seed, i)` rebuilds one
case to debug it.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import random
import resource
import signal
import tempfile
import traceback

import numpy as np
import onnx
from onnx import TensorProto as T, helper, numpy_helper

import tapeir as tp

MEMORY_BUDGET = 3 << 30   # bytes of address space a child may add to what it had at the fork
CASE_SECONDS = 20         # a hang detector (a case takes milliseconds), not a timing assertion


# ---- seeds ------------------------------------------------------------------------------------

def _traced_seeds():
    f32 = np.float32
    w1, b1 = np.linspace(-1, 1, 12, dtype=f32).reshape(4, 3), np.zeros(3, f32)

    def mlp(params, x, y):
        h = tp.tanh(x @ params["w"] + params["b"])
        return tp.cross_entropy(h, y)
    p = {"w": w1, "b": b1}
    loss = tp.trace(mlp, p, tp.Spec(("B", 4)), tp.Spec(("B",), "int64"))

    def conv(x, k):
        y = tp.max_pool2d(tp.relu(tp.conv2d(x, k, padding=1)), 2)
        return tp.softplus(tp.layer_norm(y.reshape((y.shape[0], -1)), (8,)))
    cg = tp.trace(conv, tp.Spec((2, 1, 4, 4)), np.ones((2, 1, 3, 3), f32))

    def shapes(x):
        z = tp.concatenate([x[:, :2], x[:, 1:3] * 2.0], axis=1).T
        return tp.log_softmax(tp.where(z > 0, z, tp.exp(z)), axis=0).sum(axis=1)
    sg = tp.trace(shapes, tp.Spec((3, 4)))
    return [tp.to_onnx(g) for g in (loss, tp.value_and_grad(loss), cg, sg)]


def _vi(name, shape, elem=T.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), functions=(), opset=18):
    return helper.make_model(helper.make_graph(nodes, "seed", inputs, outputs, list(inits)),
                             opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("local", 1)],
                             functions=list(functions))


def _ints(name, v):
    return numpy_helper.from_array(np.array(v, np.int64), name)


def _hand_seeds():
    n = helper.make_node
    flatten = _model([n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b"], axis=0),
                      n("Unsqueeze", ["b", "ax"], ["b1"]), n("Concat", ["b1", "m1"], ["shape"], axis=0),
                      n("Reshape", ["x", "shape"], ["r"]), n("MatMul", ["r", "w"], ["h"]), n("Relu", ["h"], ["y"])],
                     [_vi("x", ["batch size", 2, 3])], [_vi("y", ["batch size", 4])],
                     [_ints("zero", 0), _ints("ax", [0]), _ints("m1", [-1]),
                      numpy_helper.from_array(np.ones((6, 4), np.float32), "w")])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)]
    f0 = helper.make_function("local", "f0", ["a"], ["b"], [n("Sigmoid", ["a"], ["t"]), n("Mul", ["a", "t"], ["b"])],
                              opsets)
    f1 = helper.make_function("local", "f1", ["a"], ["b"], [n("f0", ["a"], ["t"], domain="local"),
                                                            n("f0", ["t"], ["b"], domain="local")], opsets)
    functions = _model([n("f1", ["x"], ["h"], domain="local"), n("Softmax", ["h"], ["y"], axis=-1)],
                       [_vi("x", ["N", 5])], [_vi("y", ["N", 5])], functions=[f0, f1])
    folding = _model([n("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([0.5], np.float32))),
                      n("Range", ["r0", "r1", "r2"], ["r"]), n("Cast", ["r"], ["rf"], to=T.FLOAT),
                      n("Expand", ["rf", "s"], ["e"]), n("Add", ["c", "e"], ["ce"]), n("Add", ["x", "ce"], ["y"])],
                     [_vi("x", [3, 4])], [_vi("y", [3, 4])],
                     [_ints("s", [3, 4]), _ints("r0", 0), _ints("r1", 4), _ints("r2", 1)])
    shapes = _model([n("Pad", ["x", "p"], ["a"], mode="reflect"), n("Slice", ["a", "st", "en", "axs", "stp"], ["b"]),
                     n("Split", ["b"], ["c", "d"], axis=1, num_outputs=2), n("Sub", ["c", "d"], ["e"]),
                     n("Trilu", ["e"], ["f"], upper=0), n("CumSum", ["f", "one"], ["y"])],
                    [_vi("x", [4, 4])], [_vi("y", None)],
                    [_ints("p", [1, 1, 1, 1]), _ints("st", [0, 0]), _ints("en", [4, 6]), _ints("axs", [0, 1]),
                     _ints("stp", [1, 1]), _ints("one", 1)])
    embed = _model([n("Gather", ["table", "ids"], ["e"], axis=0), n("ReduceMean", ["e", "ax"], ["m"], keepdims=0),
                    n("Gemm", ["m", "w", "bias"], ["g"], transB=1), n("ArgMax", ["g"], ["y"], axis=1)],
                   [_vi("ids", ["B", 3], T.INT64)], [_vi("y", None, T.INT64)],
                   [numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(5, 4), "table"), _ints("ax", [1]),
                    numpy_helper.from_array(np.ones((2, 4), np.float32), "w"),
                    numpy_helper.from_array(np.zeros(2, np.float32), "bias")])
    return [flatten, functions, folding, shapes, embed]


_SEEDS: list | None = None


def seeds() -> list[bytes]:
    global _SEEDS
    if _SEEDS is None:
        _SEEDS = [m.SerializeToString() for m in _traced_seeds() + _hand_seeds()]
    return _SEEDS


# ---- mutations --------------------------------------------------------------------------------

OP_TYPES = ("Relu Add MatMul Reshape Transpose Concat Slice Gather Softmax Conv MaxPool AveragePool Pad Split "
            "ConstantOfShape Range Expand Cast Where Clip Gemm ReduceSum LayerNormalization Trilu CumSum OneHot "
            "Unsqueeze Squeeze Flatten Shape Constant Dropout BatchNormalization ConvTranspose TopK Loop Foo").split()
_INTS = [0, 1, -1, 2, 3, -7, 2**31, 2**40, -(2**62), 2**63 - 1, 10**9]
_ELEMS = [T.FLOAT, T.DOUBLE, T.INT64, T.INT32, T.BOOL, T.FLOAT16, T.UINT8, T.STRING, T.BFLOAT16, 0, 99]


def _graphs(m):
    """The graph and every function body (all have .node)."""
    return [m.graph] + list(m.functions)


def _names(g):
    names = [v if isinstance(v, str) else v.name for v in g.input]
    names += [t.name for t in getattr(g, "initializer", [])]
    return names + [o for node in g.node for o in node.output] + ["", "nowhere"]


def _pick_node(m, r):
    holders = [g for g in _graphs(m) if len(g.node)]
    if not holders:
        return None, None
    g = r.choice(holders)
    return g, r.choice(list(g.node))


def m_op_type(m, r):
    _, node = _pick_node(m, r)
    if node is not None:
        node.op_type = r.choice(OP_TYPES)


def m_inputs(m, r):
    g, node = _pick_node(m, r)
    if node is None:
        return
    k = r.randrange(4)
    if k == 0 and node.input:
        del node.input[r.randrange(len(node.input))]
    elif k == 1 and node.input:
        node.input.append(r.choice(list(node.input)))
    elif k == 2 and node.input:
        node.input[r.randrange(len(node.input))] = r.choice(_names(g))
    else:
        node.input.append(r.choice(_names(g)))


def m_outputs(m, r):
    g, node = _pick_node(m, r)
    if node is None:
        return
    k = r.randrange(3)
    if k == 0 and node.output:
        node.output[r.randrange(len(node.output))] = r.choice(_names(g))
    elif k == 1:
        node.output.append(r.choice(["extra", ""] + _names(g)))
    elif node.output:
        del node.output[r.randrange(len(node.output))]


def _random_value(r, a):
    kind = r.randrange(6)
    if kind == 0:
        return helper.make_attribute(a.name, r.choice(_INTS))
    if kind == 1:
        return helper.make_attribute(a.name, [r.choice(_INTS) for _ in range(r.randrange(5))] or [0])
    if kind == 2:
        return helper.make_attribute(a.name, r.choice([0.0, -1.5, 1e30, float("nan"), float("inf")]))
    if kind == 3:
        return helper.make_attribute(a.name, bytes(r.randrange(256) for _ in range(r.randrange(1, 6))))
    if kind == 4:
        arr = np.array([r.choice(_INTS) for _ in range(r.randrange(1, 4))], np.int64)
        return helper.make_attribute(a.name, numpy_helper.from_array(arr))
    return helper.make_attribute(a.name, r.choice(["constant", "edge", "SAME_UPPER", "NOTSET", "x\ny"]))


def m_attribute(m, r):
    _, node = _pick_node(m, r)
    if node is None:
        return
    if node.attribute and r.random() < 0.8:
        i = r.randrange(len(node.attribute))
        if r.random() < 0.25:
            del node.attribute[i]
        else:
            new = _random_value(r, node.attribute[i])
            node.attribute[i].CopyFrom(new)
    else:
        name = r.choice(["axis", "axes", "perm", "kernel_shape", "pads", "strides", "to", "value", "mode", "group",
                         "keepdims", "num_outputs", "upper", "alpha"])
        node.attribute.append(_random_value(r, onnx.AttributeProto(name=name)))


def m_input_type(m, r):
    values = list(m.graph.input) + list(m.graph.output)
    if not values:
        return
    v = r.choice(values)
    tt = v.type.tensor_type
    k = r.randrange(4)
    if k == 0:
        tt.elem_type = r.choice(_ELEMS)
    elif k == 1 and tt.HasField("shape") and tt.shape.dim:
        d = r.choice(list(tt.shape.dim))
        if r.random() < 0.5:
            d.dim_value = r.choice([0, 1, 7, -3, 2**40, 2**62])
        else:
            d.dim_param = r.choice(["B", "a b", "a_b", "3*B", "", "é", "0", "B*B"])
    elif k == 2:
        tt.shape.dim.add().dim_value = r.choice([1, 2, 5])
    else:
        tt.ClearField("shape")


def m_initializer(m, r):
    inits = list(m.graph.initializer)
    if not inits:
        return
    t = r.choice(inits)
    k = r.randrange(4)
    if k == 0:
        t.data_type = r.choice(_ELEMS)
    elif k == 1 and t.dims:
        t.dims[r.randrange(len(t.dims))] = r.choice([0, 1, 3, -1, 2**40])
    elif k == 2:
        t.dims.append(r.choice([1, 2]))
    else:
        raw = bytearray(t.raw_data or numpy_helper.to_array(t).tobytes())
        t.ClearField("float_data"), t.ClearField("int64_data"), t.ClearField("int32_data"), t.ClearField("double_data")
        if raw and r.random() < 0.5:
            raw[r.randrange(len(raw))] ^= 1 << r.randrange(8)
        else:
            raw = raw[:r.randrange(len(raw) + 1)]
        t.raw_data = bytes(raw)


def m_structure(m, r):
    g = m.graph
    k = r.randrange(3)
    if k == 0 and len(g.node) > 1:
        i, j = r.sample(range(len(g.node)), 2)
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(g.node[i]), b.CopyFrom(g.node[j])
        g.node[i].CopyFrom(b), g.node[j].CopyFrom(a)
    elif k == 1 and g.output:
        g.output.append(g.output[r.randrange(len(g.output))])
    elif g.output:
        del g.output[r.randrange(len(g.output))]


MUTATIONS = [m_op_type, m_inputs, m_outputs, m_attribute, m_attribute, m_input_type, m_initializer, m_structure]


def case(seed: int, i: int):
    """Case i of a run: (a ModelProto or the bytes of a byte-flipped file, the mutations' names)."""
    r = random.Random(seed * 1_000_003 + i)
    data = r.choice(seeds())
    if r.random() < 0.15:  # random protobuf byte flips
        raw = bytearray(data)
        for _ in range(r.randrange(1, 6)):
            raw[r.randrange(len(raw))] = r.randrange(256)
        return bytes(raw), ["byte_flips"]
    m = onnx.ModelProto.FromString(data)
    done = []
    for _ in range(r.randrange(1, 4)):
        mutate = r.choice(MUTATIONS)
        mutate(m, r)
        done.append(mutate.__name__)
    return m, done


# ---- running ----------------------------------------------------------------------------------

class _Hang(BaseException):  # not an Exception: the importer's handlers must not swallow it
    pass


def _alarm(signum, frame):
    raise _Hang()


def check_one(m, tmpdir: str) -> str | None:
    """None when importing m ends in a well-formed Graph or a TapeirError; else what happened."""
    if isinstance(m, bytes):
        path = os.path.join(tmpdir, "fuzz.onnx")
        with open(path, "wb") as f:
            f.write(m)
        m = path
    try:
        g = tp.from_onnx(m)
        tp.verify(g)
        text = str(g)
        if tp.parse(text) != g:
            return "the imported graph does not round-trip through its text form"
    except tp.TapeirError as e:
        cause = e.__cause__
        if isinstance(cause, (MemoryError, RecursionError)):  # wrapped by the importer: still a finding
            return f"TapeirError wrapping {type(cause).__name__}: {str(e).splitlines()[0][:200]}"
    except _Hang:
        return f"no result after {CASE_SECONDS} s"
    except Exception as e:  # noqa: BLE001 - the finding
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} " \
               f"(at {os.path.basename(tb.filename)}:{tb.lineno})"
    return None


def _child(conn, seed, start, count):
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    limit = size + MEMORY_BUDGET
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as tmpdir:
        for i in range(start, start + count):
            m, muts = case(seed, i)
            conn.send(("start", i, muts))
            signal.alarm(CASE_SECONDS)
            try:
                why = check_one(m, tmpdir)
            finally:
                signal.alarm(0)
            if why:
                conn.send(("finding", i, f"case {i} ({', '.join(muts)}): {why}"))
    conn.send(("done", None, None))
    conn.close()


def run_cases(seed: int, count: int, start: int = 0) -> list[str]:
    """Findings of cases start..start+count-1 of `seed`, run in a forked, memory-capped child."""
    seeds()  # build the seeds once, in the parent: every child shares them
    ctx = multiprocessing.get_context("fork")
    findings: list[str] = []
    while count > 0:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(child, seed, start, count))
        p.start()
        child.close()
        current, done = None, False
        while True:
            if not parent.poll(CASE_SECONDS + 30):
                p.kill()
                findings.append(f"case {current[0]} ({', '.join(current[1])}): the child stopped answering")
                break
            try:
                kind, i, info = parent.recv()
            except EOFError:  # the child died: name the case it was running, go on after it
                p.join()
                findings.append(f"case {current[0]} ({', '.join(current[1])}): the process died "
                                f"(exit code {p.exitcode})" if current else f"the child died at once ({p.exitcode})")
                break
            if kind == "start":
                current = (i, info)
            elif kind == "finding":
                findings.append(info)
            else:
                done = True
                break
        p.join()
        if done or current is None:
            break
        count -= current[0] + 1 - start
        start = current[0] + 1
    return findings


def _print_case(seed: int, i: int) -> None:  # pragma: no cover - a debugging aid
    m, muts = case(seed, i)
    print(muts)
    print(m if not isinstance(m, bytes) else f"{len(m)} bytes")
    buf = io.StringIO()
    print(check_one(m, tempfile.mkdtemp()), file=buf)
    print(buf.getvalue())
