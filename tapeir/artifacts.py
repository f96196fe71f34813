"""`tapeir train-artifacts`: a forward ONNX model in, standard-ONNX training artifacts out.

From a model `torch.onnx.export` (or anything else) wrote, with its float initializers as
the parameters, it writes into one new directory:
  training_step.onnx  (params, opt_state, lr, inputs, target) -> (loss, new_params, new_opt_state):
                      forward, loss, backward and the optimizer update in one graph;
  eval.onnx           (params, inputs) -> the model's outputs: inference with trained params;
  checkpoint.npz      initial params and optimizer state, keyed by training_step's input names.
                      npz because numpy alone reads it (the loop needs no onnx package) and
                      `dict(np.load(...))` is the feed dict as it is;
  README.txt          every input and output, how this maps onto onnxruntime-training's
                      generate_artifacts, and a 15-line loop using only onnxruntime and numpy.
Everything is written into a temporary directory beside the target, which is renamed into
place at the end: a bad input (unknown loss, a loss that does not fit the model's output,
a model with no float parameters) leaves nothing behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from .ir import TapeirError
from .ir.dtypes import FLOATS, to_numpy

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("adam", "adamw", "sgd")
EXAMPLE_BATCH = 8  # the size a symbolic dim gets in the README's example batch


def _optimizer(name: str, lr: float | None):
    from . import optim

    if name not in OPTIMIZERS:
        raise TapeirError(f"unknown optimizer {name!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}[name]
    return cls() if lr is None else cls(lr=lr)


_NORMS = ("LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization")


def export_notes(model) -> list[str]:
    """Signs that an exporter rewrote the parameters for inference, so training the artifacts
    would not train the model as written (torch.onnx.export in its default eval mode):
    exporter-made initializer names (constant folding stored transformed copies, such as
    transposed Linear weights), and initializers merged because their values were equal
    (every LayerNorm weight starts as ones): Identity nodes of an initializer, or one
    initializer feeding several normalization layers.

    >>> import numpy as np, tapeir as tp
    >>> export_notes(tp.to_onnx(tp.trace(lambda x: x @ np.ones((3, 2), np.float32), tp.Spec(("B", 3)))))
    []
    """
    floats = {t.name for t in model.graph.initializer if t.data_type in (1, 10, 11, 16)}
    notes = []
    made = sorted(n for n in floats if n.startswith("onnx::"))
    if made:
        notes.append(f"{len(made)} parameter(s) have exporter-made names ({', '.join(made[:3])}"
                     f"{', ...' if len(made) > 3 else ''}): constant folding stored transformed copies of weights")
    # merged initializers: the TorchScript exporter keeps one and re-creates the others as
    # Identity nodes of it; another writer may feed the one initializer to every layer
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in floats}
    uses: dict = {}
    for node in model.graph.node:
        if node.op_type in _NORMS:
            for name in node.input[1:3]:
                if name in floats:
                    uses[name] = uses.get(name, 0) + 1
    merged = sorted(f"{a} = {b}" for a, b in alias.items()) + sorted(n for n, k in uses.items() if k > 1)
    if merged:
        notes.append(f"{len(merged)} parameter(s) are shared ({', '.join(merged[:3])}{', ...' if len(merged) > 3 else ''}"
                     "): they train as one tied parameter; an exporter merges equal-valued initializers in eval mode")
    if notes:
        notes.append("if the model was exported by torch.onnx.export, export it for training: "
                     "training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False")
    return notes


def build(model_path: str, loss: str, optimizer: str, lr: float | None = None, clip_grad_norm: float | None = None):
    """(training step graph, eval graph, checkpoint dict, optimizer, facts for the README)."""
    import onnx
    from onnx import numpy_helper

    from . import Spec, bind, call, cross_entropy, from_onnx, mse_loss, trace, training_step  # noqa: F401

    if loss not in LOSSES:
        raise TapeirError(f"unknown loss {loss!r}", hint=f"choose one of {', '.join(LOSSES)}")
    opt = _optimizer(optimizer, lr)
    try:
        model = onnx.load(model_path)
    except Exception as e:
        raise TapeirError(f"cannot read {model_path} as an ONNX model: {e}") from None
    inits = {t.name: t for t in model.graph.initializer}
    g = from_onnx(model, params="inputs")
    param_vals = [v for v in g.inputs if v.name in inits and v.type.dtype in FLOATS]
    if not param_vals:
        raise TapeirError(f"{os.path.basename(model_path)} has no float parameters (initializers) to train",
                          hint="export the model with its weights as initializers (torch.onnx.export does, with "
                               "export_params=True, the default)")
    model_inputs = [v for v in g.inputs if v not in param_vals]
    if not model_inputs:
        raise TapeirError(f"{os.path.basename(model_path)} takes no input besides its parameters")
    out = g.outputs[0]
    out_name = g.output_names[0]
    if loss == "cross_entropy":
        # [..., C] logits (a language model's [B, T, V]) with labels [...]: the mean over every
        # position, classes on the last axis as a user's model writes them (not torch's [N, C, d...])
        if out.type.rank < 2 or out.type.dtype not in FLOATS:
            raise TapeirError(f"--loss cross_entropy needs logits of shape [N, C] (or [..., C]); the model's output "
                              f"{out_name!r} is {out.type}", hint="use --loss mse for a regression output, or export "
                                                                   "a model whose (first) output is [batch, classes] "
                                                                   "logits")
        target = Spec(out.type.shape[:-1], "int64")
    else:
        target = Spec(out.type.shape, out.type.dtype)
    names = [v.name for v in param_vals]
    params = {n: np.array(numpy_helper.to_array(inits[n]), dtype=to_numpy(v.type.dtype))
              for n, v in zip(names, param_vals)}
    in_names = [v.name for v in model_inputs]
    pos = {id(v): k for k, v in enumerate(g.inputs)}

    def forward(p, *xs):
        args = [None] * len(g.inputs)
        for v, x in zip(model_inputs, xs):
            args[pos[id(v)]] = x
        for n, v in zip(names, param_vals):
            args[pos[id(v)]] = p[n]
        return call(g, *args)

    def loss_fn(p, *xs_and_target):
        *xs, t = xs_and_target
        outs = forward(p, *xs)
        y = outs[0] if isinstance(outs, (tuple, list)) else outs
        if loss == "mse":
            return mse_loss(y, t)
        if y.type.rank > 2:  # classes last: flatten the positions, so the mean runs over all of them
            y, t = y.reshape((-1, y.shape[-1])), t.reshape((-1,))
        return cross_entropy(y, t)

    in_specs = [Spec(v.type.shape, v.type.dtype) for v in model_inputs]
    p_specs = {n: Spec(v.type.shape, v.type.dtype) for n, v in zip(names, param_vals)}
    if "target" in in_names or "lr" in in_names:
        raise TapeirError(f"the model has an input named 'target' or 'lr' ({', '.join(in_names)}), which the "
                          "training step's own inputs use", hint="rename the model's inputs when exporting it")
    loss_graph = trace(loss_fn, p_specs, *in_specs, target, name="loss", arg_names=["params", *in_names, "target"])
    step = training_step(loss_graph, 0, opt, clip_grad_norm=clip_grad_norm)
    eval_graph = trace(forward, p_specs, *in_specs, name="eval", arg_names=["params", *in_names],
                       output_names=list(g.output_names))
    state = opt.init_state(params)
    ckpt = {f"params.{n}": a for n, a in params.items()}
    ckpt["opt_state.step"] = state["step"]
    for slot in opt.slots:
        ckpt.update({f"opt_state.{slot}.{n}": a for n, a in state[slot].items()})
    facts = {"inputs": model_inputs, "output": out, "output_name": out_name, "target": target.type,
             "n_params": len(names), "notes": export_notes(model)}
    return step, eval_graph, ckpt, opt, facts


def _example_shape(shape) -> list[int]:
    return [d if isinstance(d, int) else EXAMPLE_BATCH for d in shape]


def _io_table(g) -> str:
    import onnx.helper  # noqa: F401

    lines = []
    for v in g.inputs:
        lines.append(f"  in   {v.name}: {v.type}")
    for n, v in zip(g.output_names, g.outputs):
        lines.append(f"  out  {n}: {v.type}")
    return "\n".join(lines)


def readme(step, eval_graph, opt, facts, loss: str, source: str) -> str:
    """README.txt: inputs and outputs, the generate_artifacts mapping, and the loop."""
    ins = facts["inputs"]
    feeds = []
    for v in ins:
        shape = _example_shape(v.type.shape)
        npdt = to_numpy(v.type.dtype).name
        feeds.append(f'{v.name!r}: np.random.default_rng(0).standard_normal({shape}).astype(np.{npdt})')
    if loss == "cross_entropy":
        classes = facts["output"].type.shape[-1]
        classes = classes if isinstance(classes, int) else EXAMPLE_BATCH
        tgt = (f"np.random.default_rng(1).integers(0, {classes}, {_example_shape(facts['target'].shape)})")
    else:
        tgt = (f"np.random.default_rng(1).standard_normal({_example_shape(facts['target'].shape)})"
               f".astype(np.{to_numpy(facts['target'].dtype).name})")
    batch = ", ".join(feeds + [f"'target': {tgt}"])
    first_in = ins[0].name
    loop = f"""import numpy as np, onnxruntime as ort
step = ort.InferenceSession("training_step.onnx")
evaluate = ort.InferenceSession("eval.onnx")
state = dict(np.load("checkpoint.npz"))   # params.* and opt_state.*: the step's input names
out_names = [o.name for o in step.get_outputs()]   # loss, new_params.*, new_opt_state.*
batch = {{{batch}}}   # your data here
lr = {opt.lr!r}
for i in range(50):
    loss, *new = step.run(None, {{**state, "lr": np.array(lr), **batch}})
    state = {{n[len("new_"):]: v for n, v in zip(out_names[1:], new)}}
    if i % 10 == 0:
        print(f"step {{i}}: loss {{float(loss):.4f}}")
params = {{k: v for k, v in state.items() if k.startswith("params.")}}
prediction = evaluate.run(None, {{**params, {first_in!r}: batch[{first_in!r}]}})[0]
np.savez("trained.npz", **state)   # resume later: state = dict(np.load("trained.npz"))
"""
    notes = "".join(f"NOTE: {n}\n" for n in facts.get("notes", ()))
    return f"""Training artifacts for {source} (written by tapeir train-artifacts)
loss: {loss} on the model's output {facts['output_name']!r}; optimizer: {opt!r}
{notes}All files are standard ONNX (ai.onnx ops only) or numpy; stock onnxruntime runs them, no
onnxruntime-training needed.

training_step.onnx  one step: forward, loss, backward and the optimizer update.
{_io_table(step)}
  lr is a float64 scalar input (change it every step for a schedule); new_X is the next value of X.

eval.onnx  inference with the parameters as inputs.
{_io_table(eval_graph)}

checkpoint.npz  the initial value of every params.* and opt_state.* input, keyed by input name.

How this maps onto onnxruntime-training's generate_artifacts (deprecated; it emits
com.microsoft ops and needs the onnxruntime-training package):
  training_model  -> training_step.onnx (forward + loss + gradients, and here also the update)
  eval_model      -> eval.onnx (forward only; compute the loss from its output in numpy)
  optimizer_model -> the opt_state.* inputs and the update nodes inside training_step.onnx
  checkpoint      -> checkpoint.npz (parameters and optimizer state; save new_* outputs to resume)

A training loop with only onnxruntime and numpy (run it in this directory):

```python
{loop}```
"""


def write(model_path: str, out_dir: str, loss: str, optimizer: str, lr: float | None = None,
          clip_grad_norm: float | None = None, opset: int | None = None) -> list[str]:
    """Build everything, then write it into `out_dir` (which must not exist yet) atomically.

    >>> import os, tempfile, numpy as np, tapeir as tp
    >>> d = tempfile.mkdtemp(dir=".")
    >>> fwd = tp.trace(lambda x: x @ np.ones((3, 2), np.float32), tp.Spec(("B", 3)))
    >>> tp.save_onnx(fwd, os.path.join(d, "m.onnx"))
    >>> write(os.path.join(d, "m.onnx"), os.path.join(d, "art"), "mse", "sgd")
    ['README.txt', 'checkpoint.npz', 'eval.onnx', 'training_step.onnx']
    """
    from . import save_onnx

    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise TapeirError(f"{out_dir} already exists", hint="name a new directory; tapeir never writes into "
                                                            "an existing one (no stale files mixed in)")
    step, eval_graph, ckpt, opt, facts = build(model_path, loss, optimizer, lr, clip_grad_norm)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.tmp-")
    try:
        save_onnx(step, os.path.join(tmp, "training_step.onnx"), opset)
        save_onnx(eval_graph, os.path.join(tmp, "eval.onnx"), opset)
        np.savez(os.path.join(tmp, "checkpoint.npz"), **ckpt)
        with open(os.path.join(tmp, "README.txt"), "w", encoding="utf-8") as f:
            f.write(readme(step, eval_graph, opt, facts, loss, os.path.basename(model_path)))
        os.chmod(tmp, 0o755)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(os.listdir(out_dir))
