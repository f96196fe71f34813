"""Optimizers as IR update rules, and the one-graph training step.

`training_step(loss_graph, wrt, optimizer)` traces one graph

    (params, opt_state, lr, *batch) -> (loss, new_params, new_opt_state)

from the loss graph's `value_and_grad` (inlined with tp.call) followed by the optimizer's
update, recorded with the same tensor vocabulary users write, so the update is ordinary IR:
printable, exportable to plain ONNX (stock onnxruntime runs it), fusable.

Rules, each following PyTorch 2.13's single-tensor path (torch/optim/{sgd,adam}.py):
  1. `lr` is an input (f64 scalar, as PyTorch's Python-float lr): a schedule never retraces.
  2. the state holds `step` as i64 (exact for any number of steps); the bias corrections
     `1 - beta**step`, `lr / bc1` and `sqrt(bc2)` are computed in f64 and cast to the
     parameter's dtype once, which is what PyTorch does (Python floats from `step.item()`),
     so f32 training matches it; f32 powers would lose ~1e-5 relative to cancellation.
  3. scalars derived from hyper-parameters (`1 - beta1`, `1 - dampening`) are Python
     floats rounded to the parameter's dtype, as PyTorch's scalar arguments are.
  4. optimizer nodes record the user's `tp.training_step` line plus `(Adam update)` (or
     `(clip_grad_norm)`), so a dump tells forward, backward and optimizer nodes apart.
  5. clipping by global norm is `clip_grad_norm_`: coef = min(max_norm / (norm + 1e-6), 1).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..frontend import functions as F
from ..frontend.tensor import Tensor
from ..frontend.tracer import Spec, user_source
from ..frontend.tracing import call, trace
from ..ir.dtypes import FLOATS, to_numpy
from ..ir.errors import TapeirError
from ..ir.graph import Graph, require_graph
from ..ir.pytree import flatten, leaf_names, unflatten
from .autodiff import value_and_grad
from .simplify import simplify

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "init_state", "training_step"]


def _number(name: str, value, lo: float = 0.0, hi: float | None = None, open_hi: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise TapeirError(f"{name}={value!r} is not a finite number")
    v = float(value)
    if v < lo or (hi is not None and (v >= hi if open_hi else v > hi)):
        upper = "" if hi is None else f" {'<' if open_hi else '<='} {hi}"
        raise TapeirError(f"{name}={value!r} is out of range: expected {lo} <= {name}{upper}")
    return v


class Optimizer:
    """Base of the optimizers: hyper-parameters, a state layout and an IR update rule."""

    #: the state entries shaped like the parameters (each mirrors the params pytree)
    slots: tuple[str, ...] = ()

    def init_state(self, params) -> dict:
        """The initial state: `step` = 0 (i64) and zeros shaped like the params per slot."""
        leaves, td = flatten(params, lambda x: hasattr(x, "shape") and hasattr(x, "dtype"), what="params")
        state = {"step": np.zeros((), np.int64)}
        for s in self.slots:
            state[s] = unflatten(td, [np.zeros(np.shape(p), np.dtype(p.dtype)) for p in leaves])
        return state

    def state_spec(self, param_specs) -> dict:
        leaves, td = flatten(param_specs, lambda x: isinstance(x, Spec), what="params")
        spec = {"step": Spec((), "int64")}
        for s in self.slots:
            spec[s] = unflatten(td, [Spec(p.shape, p.dtype) for p in leaves])
        return spec

    def update(self, params: list, grads: list, state: dict, lr) -> tuple[list, dict]:
        """New params (flat list of Tensors) and state, recorded as IR. `state` has flat lists per slot."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _Scalars:
    """f64 scalar Tensors cast to each parameter dtype once (rule 2)."""

    def __init__(self):
        self.cache: dict = {}

    def get(self, key, x: Tensor, dtype: str) -> Tensor:
        hit = self.cache.get((key, dtype))
        if hit is None:
            hit = self.cache[(key, dtype)] = F.astype(x, dtype)
        return hit


def _const(value: float, dtype: str):
    return np.asarray(value, to_numpy(dtype))


class SGD(Optimizer):
    """Stochastic gradient descent as torch.optim.SGD (momentum, dampening, Nesterov, weight decay).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda w, x: ((x @ w) ** 2.0).mean(), np.ones(2, np.float32), tp.Spec(("B", 2)))
    >>> opt = tp.optim.SGD(lr=0.1, momentum=0.9)
    >>> step = tp.compile(tp.training_step(g, optimizer=opt))
    >>> w, state = np.ones(2, np.float32), tp.init_state(opt, np.ones(2, np.float32))
    >>> loss, w, state = step(w, state, opt.lr, np.array([[1.0, 0.0]], np.float32))
    >>> float(loss), w.tolist(), int(state["step"])
    (1.0, [0.800000011920929, 1.0], 1)
    """

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        self.lr = _number("lr", lr)
        self.momentum = _number("momentum", momentum)
        self.dampening = _number("dampening", dampening, -np.inf)
        self.weight_decay = _number("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise TapeirError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0",
                              hint="as torch.optim.SGD; e.g. SGD(lr, momentum=0.9, nesterov=True)")
        self.slots = ("momentum_buffer",) if self.momentum else ()

    def update(self, params, grads, state, lr):
        sc = _Scalars()
        neg_lr = -lr
        first = None
        if self.momentum and self.dampening:  # PyTorch's first step copies the gradient into the buffer
            first = state["step"] == 0
        new_p, bufs = [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            dt = p.value.type.dtype
            if self.weight_decay:
                g = g + p * self.weight_decay
            if self.momentum:
                buf = state["momentum_buffer"][i] * self.momentum
                if first is not None:
                    buf = buf + g * F.where(first, _const(1.0, dt), _const(1.0 - self.dampening, dt))
                else:
                    buf = buf + g  # buffer starts at 0, so the first step gives buf = g as PyTorch's clone
                bufs.append(buf)
                g = g + buf * self.momentum if self.nesterov else buf
            new_p.append(p + sc.get("neg_lr", neg_lr, dt) * g)
        new_state = {"step": state["step"] + 1}
        if self.momentum:
            new_state["momentum_buffer"] = bufs
        return new_p, new_state


class Adam(Optimizer):
    """Adam as torch.optim.Adam (defaults lr=1e-3, betas=(0.9, 0.999), eps=1e-8, L2 weight_decay=0).

    `decoupled=True` is AdamW's decay (use `AdamW`). amsgrad and maximize are not supported.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda w: (w * w).sum(), np.ones(2, np.float32))
    >>> opt = tp.optim.Adam(lr=0.1)
    >>> w, state = np.ones(2, np.float32), tp.init_state(opt, np.ones(2, np.float32))
    >>> loss, w, state = tp.run(tp.training_step(g, optimizer=opt), w, state, 0.1)
    >>> w.astype(float).round(4).tolist(), sorted(state)
    ([0.9, 0.9], ['exp_avg', 'exp_avg_sq', 'step'])
    """

    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr = _number("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TapeirError(f"betas={betas!r}: expected a pair (beta1, beta2)")
        self.betas = (_number("betas[0]", betas[0], 0.0, 1.0, True), _number("betas[1]", betas[1], 0.0, 1.0, True))
        self.eps = _number("eps", eps)
        self.weight_decay = _number("weight_decay", weight_decay)

    def update(self, params, grads, state, lr):
        b1, b2 = self.betas
        step = state["step"] + 1
        t = F.astype(step, "f64")
        step_size = lr / (1.0 - b1 ** t)          # rule 2: f64, as PyTorch's Python floats
        bc2_sqrt = F.sqrt(1.0 - b2 ** t)
        neg_step = -step_size
        decay = 1.0 - lr * self.weight_decay if self.decoupled and self.weight_decay else None
        sc = _Scalars()
        new_p, ms, vs = [], [], []
        for p, g, m, v in zip(params, grads, state["exp_avg"], state["exp_avg_sq"]):
            dt = p.value.type.dtype
            if self.weight_decay:
                if decay is not None:
                    p = p * sc.get("decay", decay, dt)
                else:
                    g = g + p * self.weight_decay
            m = m + (g - m) * (1.0 - b1)                     # exp_avg.lerp_(grad, 1 - beta1)
            v = v * b2 + (1.0 - b2) * g * g                  # exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
            denom = F.sqrt(v) / sc.get("bc2_sqrt", bc2_sqrt, dt) + self.eps
            new_p.append(p + sc.get("neg_step", neg_step, dt) * m / denom)   # addcdiv_(m, denom, -step_size)
            ms.append(m)
            vs.append(v)
        return new_p, {"step": step, "exp_avg": ms, "exp_avg_sq": vs}


class AdamW(Adam):
    """AdamW as torch.optim.AdamW: Adam with decoupled weight decay `p *= 1 - lr * weight_decay`
    (default weight_decay=1e-2).

    >>> import numpy as np, tapeir as tp
    >>> tp.optim.AdamW().weight_decay, tp.optim.AdamW().betas
    (0.01, (0.9, 0.999))
    """

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(lr, betas, eps, weight_decay)


def init_state(optimizer: Optimizer, params) -> dict:
    """The optimizer state for `params` (a pytree of arrays): `step` and per-parameter slots.

    >>> import numpy as np, tapeir as tp
    >>> s = tp.init_state(tp.optim.Adam(), {"w": np.ones((2, 3), np.float32)})
    >>> int(s["step"]), s["exp_avg"]["w"].shape, s["exp_avg_sq"]["w"].dtype
    (0, (2, 3), dtype('float32'))
    """
    if not isinstance(optimizer, Optimizer):
        raise TapeirError(f"init_state expects an optimizer (tp.optim.SGD/Adam/AdamW), got {type(optimizer).__name__}")
    return optimizer.init_state(params)


def _clip(grads: list, max_norm: float) -> list:
    dt = grads[0].value.type.dtype
    sq = None
    for g in grads:
        s = F.astype((g * g).sum(), dt)
        sq = s if sq is None else sq + s
    coef = F.minimum(max_norm / (F.sqrt(sq) + 1e-6), 1.0)
    return [g * F.astype(coef, g.value.type.dtype) for g in grads]


def training_step(loss_graph: Graph, wrt: int = 0, optimizer: Optimizer | None = None,
                  clip_grad_norm: float | None = None) -> Graph:
    """One graph `(params, opt_state, lr, *batch) -> (loss, new_params, new_opt_state)`.

    `params` is argument `wrt` of `loss_graph` (its gradient is taken); `batch` are the
    other arguments in order; `lr` is an f64 scalar input (pass a Python float). Outputs
    are named `loss`, `new_<input name>` (`new_params.w1`, `new_opt_state.step`).
    `clip_grad_norm`: clip the gradients to this global 2-norm first (torch's clip_grad_norm_).

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda p, x: ((x @ p["w"]) ** 2.0).mean(), {"w": np.ones(3, np.float32)}, tp.Spec(("B", 3)))
    >>> step = tp.training_step(g, optimizer=tp.optim.Adam())
    >>> step.arg_names, step.output_names[:3]
    (['p', 'opt_state', 'lr', 'x'], ['loss', 'new_p.w', 'new_opt_state.exp_avg.w'])
    """
    require_graph(loss_graph, "tp.training_step")
    if not isinstance(optimizer, Optimizer):
        raise TapeirError(f"tp.training_step needs optimizer=tp.optim.SGD/Adam/AdamW(...), got {optimizer!r}")
    if isinstance(wrt, bool) or not isinstance(wrt, (int, np.integer)):
        raise TapeirError(f"tp.training_step: wrt={wrt!r} must be one argument index (the parameters)",
                          hint="put every trained array into one pytree argument, e.g. a dict params")
    if clip_grad_norm is not None:
        clip_grad_norm = _number("clip_grad_norm", clip_grad_norm)
    vg = value_and_grad(loss_graph, int(wrt))  # checks wrt, the scalar output and float params
    wrt = int(wrt)
    specs = [unflatten(loss_graph.input_tree(i), [Spec(loss_graph.inputs[k].type.shape, loss_graph.inputs[k].type.dtype)
                                                  for k in loss_graph.input_range(i)])
             for i in range(len(loss_graph.arg_names))]
    param_spec = specs[wrt]
    state_spec = optimizer.state_spec(param_spec)
    batch = [s for i, s in enumerate(specs) if i != wrt]
    pname = loss_graph.arg_names[wrt]
    arg_names = [pname, "opt_state", "lr"] + [n for i, n in enumerate(loss_graph.arg_names) if i != wrt]
    where = user_source()
    label = f"{where} " if where else ""

    def step(params, opt_state, lr, *batch_args):
        args = list(batch_args)
        args.insert(wrt, params)
        loss, grads = call(vg, *args)
        p_leaves, p_tree = flatten(params, lambda x: isinstance(x, Tensor))
        g_leaves, _ = flatten(grads, lambda x: isinstance(x, Tensor))
        b = loss.builder
        if clip_grad_norm is not None:
            with b.at(f"{label}(clip_grad_norm)"):
                g_leaves = _clip(g_leaves, clip_grad_norm)
        flat_state = {"step": opt_state["step"]}
        for s in optimizer.slots:
            flat_state[s] = flatten(opt_state[s], lambda x: isinstance(x, Tensor))[0]
        with b.at(f"{label}({type(optimizer).__name__} update)"):
            new_p, new_s = optimizer.update(p_leaves, g_leaves, flat_state, lr)
        new_state = {k: v if k == "step" else unflatten(p_tree, v) for k, v in new_s.items()}
        return loss, unflatten(p_tree, new_p), new_state

    p_names = leaf_names(pname, flatten(param_spec, lambda x: isinstance(x, Spec))[1])
    s_names = leaf_names("opt_state", flatten(state_spec, lambda x: isinstance(x, Spec))[1])
    out_names = ["loss"] + ["new_" + n for n in p_names + s_names]
    g = trace(step, param_spec, state_spec, Spec((), "float64"), *batch, name=f"{loss_graph.name}_step",
              arg_names=arg_names, output_names=out_names)
    return simplify(g)
