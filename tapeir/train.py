"""`tp.fit`: run a training step graph over batches, with a progress bar and evaluation per epoch.

The step is the graph `tp.training_step` returns, `(params, opt_state, lr, *batch) ->
(loss, new_params, new_opt_state)`, compiled for either backend. Parameters and state go
from one step's outputs to the next step's inputs as they are: the numpy backend returns
arrays the caller owns (no copy is needed), and on onnxruntime they stay OrtValues bound
with IO binding (`_OrtSteps`), so a step copies only the batch in and the loss out.
Progress: tqdm when it is installed and stdout is a terminal, a line rewritten in place on
a terminal without it, and one plain line per epoch otherwise (logs, CI, pipes).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .backends.numpy_backend import compile_numpy
from .backends.signature import Signature
from .ir import RunError, TapeirError, verify
from .ir.reference_kernels import check_labels
from .ir.types import resolve_dim
from .ir.graph import Graph
from .ir.pytree import flatten, unflatten


@dataclass
class FitResult:
    """What `fit` returns: the trained params and optimizer state, the loss of every step,
    and one dict per epoch (epoch, steps, loss = mean over the epoch, seconds, and what
    `evaluate` returned)."""

    params: object
    opt_state: object
    losses: list = field(default_factory=list)
    history: list = field(default_factory=list)


class _NumpySteps:
    """Calls a compiled step on pytrees; outputs are fresh arrays the caller owns."""

    def __init__(self, fn):
        self.fn, self.sig = fn, fn.signature

    def start(self, params, state):
        self.params, self.state = params, state

    def __call__(self, lr, batch):
        loss, self.params, self.state = self.fn(self.params, self.state, lr, *batch)
        return float(loss)

    def result(self):
        return self.params, self.state


class _OrtSteps:
    """One onnxruntime session driven through IO binding, double-buffered: two sets of
    OrtValues hold params and state, and two bindings read one set and write the other
    (onnxruntime writes into bound outputs in place, so a step must never write the
    buffers it reads). Steps alternate bindings; nothing is copied between steps but the
    batch in and the loss out. Batches get the backend's checks (dtypes, shapes, labels)."""

    def __init__(self, fn):
        g = fn.graph
        self.fn, self.graph, self.session = fn, g, fn.session
        self.n_carry = len(g.input_range(0)) + len(g.input_range(1))  # params, then opt_state
        self.lr_name = g.inputs[self.n_carry].name
        self.in_names = [v.name for v in g.inputs]
        self.out_names = fn._out_names
        self.batch_pos = list(range(self.n_carry + 1, len(g.inputs)))
        self.check = _checker(fn, self.batch_pos)
        first = self.batch_pos[0] if self.batch_pos else 0
        self.labels = [(pos - first, i, n) for pos, i, n in fn._label_checks if pos in self.batch_pos]

    def start(self, params, state):
        import onnxruntime as ort

        leaves = []
        for i, tree in ((0, params), (1, state)):
            lv, td = flatten(tree, lambda x: isinstance(x, (np.ndarray, np.generic)), what=self.graph.arg_names[i])
            if td != self.graph.input_tree(i):
                raise RunError(f"argument {self.graph.arg_names[i]!r} has a different structure than at trace time",
                               hint="pass the same nesting of dicts/lists/tuples (same keys) that was traced")
            leaves += lv
        arrays, _ = _checker(self.fn, range(self.n_carry)).bind(leaves)
        # the caller's arrays are copied once, so training never writes into them
        self.owned = [np.array(a, order="C") for a in arrays]  # an OrtValue from numpy does not keep it alive
        sets = [[ort.OrtValue.ortvalue_from_numpy(a) for a in self.owned],
                [ort.OrtValue.ortvalue_from_shape_and_type(a.shape, a.dtype) for a in arrays]]
        self.sets, self.turn = sets, 0
        self.bindings = []
        for src, dst in ((0, 1), (1, 0)):
            io = self.session.io_binding()
            for name, v in zip(self.in_names, sets[src]):
                io.bind_ortvalue_input(name, v)
            io.bind_output(self.out_names[0], "cpu")
            for name, v in zip(self.out_names[1:], sets[dst]):
                io.bind_ortvalue_output(name, v)
            self.bindings.append(io)

    def __call__(self, lr, batch):
        leaves = flatten(tuple(batch), lambda x: isinstance(x, (np.ndarray, np.generic, int, float)),
                         what="batch")[0]
        if len(leaves) != len(self.batch_pos):
            raise RunError(f"{self.graph.name} takes {len(self.batch_pos)} batch arrays, got {len(leaves)}")
        arrays, bindings = self.check.bind(leaves)
        for pos, i, n in self.labels:  # what the backend checks before a run (out-of-range labels)
            x = n.inputs[0].type
            try:
                check_labels(arrays[pos], resolve_dim(x.shape[1 if x.rank > 1 else 0], bindings),
                             n.attrs["ignore_index"])
            except ValueError as e:
                raise RunError(f"{n.op} failed at node {i} of {self.graph.name}: {e}", where=n.source) from None
        io = self.bindings[self.turn]
        io.bind_cpu_input(self.lr_name, np.asarray(lr, np.float64))
        for k, x in zip(self.batch_pos, arrays):
            io.bind_cpu_input(self.in_names[k], _c(x))
        try:
            self.session.run_with_iobinding(io)
        except Exception as e:
            raise RunError(f"onnxruntime failed running {self.graph.name}: {e}") from e
        self.turn ^= 1  # the set just written is the next step's input
        return float(io.get_outputs()[0].numpy())

    def result(self):
        g = self.graph
        leaves = [np.array(v.numpy()) for v in self.sets[self.turn]]  # .numpy() is a view of the buffer
        n_p = len(g.input_range(0))
        return unflatten(g.input_tree(0), leaves[:n_p]), unflatten(g.input_tree(1), leaves[n_p:])


def _compile(g: Graph, backend: str, options: dict):
    """tp.compile, without importing the face's __init__ (which imports this module)."""
    verify(g)
    if backend == "numpy":
        return compile_numpy(g, **options)
    if backend == "onnxruntime":
        from .backends.onnxruntime_backend import compile_onnxruntime

        return compile_onnxruntime(g, **options)
    raise TapeirError(f"unknown backend {backend!r}", hint="available backends: numpy, onnxruntime")


def _c(a: np.ndarray) -> np.ndarray:
    """a in C order (np.ascontiguousarray would turn a 0-d array into shape (1,))."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _checker(fn, positions) -> Signature:
    """The backend's input checks (dtypes, ranks, static and symbolic dims) for some inputs only."""
    return fn.signature.subset(positions)


class _Progress:
    """Loss, steps/s and ETA: tqdm on a terminal when installed, else an in-place line on a
    terminal, else one line per epoch."""

    def __init__(self, enabled, total, epochs, file=None):
        self.file = file or sys.stdout
        self.enabled, self.total, self.epochs = enabled, total, epochs
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.bar = None
        if enabled and self.tty:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="step", file=self.file, dynamic_ncols=True)
            except ImportError:
                pass
        self.t0 = time.perf_counter()
        self.done = 0
        self.last_draw = 0.0

    def step(self, epoch, loss):
        self.done += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(1)
            if now - self.last_draw > 0.1:
                self.bar.set_postfix(epoch=f"{epoch + 1}/{self.epochs}", loss=f"{loss:.4f}", refresh=False)
                self.last_draw = now
        elif self.tty and now - self.last_draw > 0.1:
            self.file.write("\r" + self._line(epoch, loss, now))
            self.file.flush()
            self.last_draw = now

    def _line(self, epoch, loss, now) -> str:
        rate = self.done / max(now - self.t0, 1e-9)
        eta = "?" if not self.total else f"{max(self.total - self.done, 0) / rate:.1f}s"
        return f"epoch {epoch + 1}/{self.epochs}  step {self.done}  loss {loss:.4f}  {rate:.0f} steps/s  ETA {eta}"

    def epoch_end(self, epoch, loss, metrics):
        if not self.enabled:
            return
        extra = "".join(f"  {k} {v:.4f}" if isinstance(v, float) else f"  {k} {v}" for k, v in metrics.items())
        line = self._line(epoch, loss, time.perf_counter()) + extra
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.file.write(("\r" if self.tty else "") + line + "\n")
            self.file.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _batches(data, batch_size, shuffle, rng):
    """(number of batches or None, a function epoch -> iterable of batch tuples)."""
    if callable(data):
        return None, data
    if isinstance(data, tuple) and data and all(isinstance(a, np.ndarray) for a in data):
        n = len(data[0])
        if any(len(a) != n for a in data):
            raise TapeirError(f"fit: the data arrays have different lengths {[len(a) for a in data]}",
                              hint="pass (x, y) with one row per example in each")
        if not batch_size or batch_size < 1:
            raise TapeirError("fit: data given as arrays needs batch_size=N (N >= 1)")

        def epoch_batches(epoch):
            order = rng.permutation(n) if shuffle else np.arange(n)
            for k in range(0, n, batch_size):
                idx = order[k:k + batch_size]
                yield tuple(a[idx] for a in data)
        return math.ceil(n / batch_size), epoch_batches
    if isinstance(data, (list, tuple)):
        batches = [b if isinstance(b, tuple) else (b,) for b in data]
        return len(batches), lambda epoch: batches
    raise TapeirError(f"fit: data is a {type(data).__name__}", hint="pass a tuple of arrays (x, y) with batch_size, "
                      "a list of batch tuples, or a function epoch -> iterable of batch tuples")


def fit(step, params, opt_state, data, *, lr, epochs: int = 1, batch_size: int | None = None,
        shuffle: bool = True, seed: int = 0, backend: str = "numpy", evaluate=None, progress=None,
        **compile_options) -> FitResult:
    """Train: run `step` (a graph from `tp.training_step`, or it compiled) over `data` for `epochs`.

    data: a tuple of arrays `(x, y)` cut into batches of `batch_size` (shuffled each epoch
    with `seed` unless shuffle=False), a list of batch tuples, or a function `epoch -> iterable
    of batch tuples`. lr: a float or a function `step index -> float` (a schedule; the graph
    takes lr as an input, so nothing retraces). evaluate: a function `params -> dict of
    metrics (or one number)`, called after each epoch on the current params (held-out data).
    progress: None shows it when stdout is a terminal or a log, False hides it.

    >>> import numpy as np, tapeir as tp
    >>> g = tp.trace(lambda w, x, y: ((x @ w - y) ** 2.0).mean(), np.zeros(2, np.float32),
    ...              tp.Spec(("B", 2)), tp.Spec(("B",)))
    >>> x = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    >>> y = x @ np.array([2.0, -1.0], np.float32)
    >>> opt = tp.optim.SGD(lr=0.1)
    >>> r = tp.fit(tp.training_step(g, optimizer=opt), np.zeros(2, np.float32), tp.init_state(opt, np.zeros(2)),
    ...            (x, y), lr=0.1, epochs=20, batch_size=16, progress=False)
    >>> r.params.round(3).tolist(), len(r.losses), r.history[-1]["epoch"]
    ([2.0, -1.0], 80, 20)
    """
    if isinstance(step, Graph):
        fn = _compile(step, backend, compile_options)
    elif hasattr(step, "signature") and hasattr(step, "graph"):
        fn = step
    else:
        raise TapeirError(f"fit expects the graph tp.training_step returns (or it compiled), got {type(step).__name__}")
    g = fn.graph
    if len(g.arg_names) < 3 or g.arg_names[1:3] != ["opt_state", "lr"]:
        raise TapeirError(f"fit: {g.name} is not a training step (its arguments are {', '.join(g.arg_names)})",
                          hint="build it with tp.training_step(loss_graph, optimizer=...)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise TapeirError(f"fit: epochs={epochs!r} is not a count")
    rng = np.random.default_rng(seed)
    per_epoch, batches_of = _batches(data, batch_size, shuffle, rng)
    lr_at = lr if callable(lr) else (lambda k: lr)
    runner = _OrtSteps(fn) if hasattr(fn, "session") else _NumpySteps(fn)
    runner.start(params, opt_state)
    show = progress if progress is not None else True
    bar = _Progress(bool(show), per_epoch * epochs if per_epoch else None, epochs)
    result = FitResult(None, None)
    k = 0
    try:
        for epoch in range(epochs):
            t0, total, n = time.perf_counter(), 0.0, 0
            for batch in batches_of(epoch):
                loss = runner(float(lr_at(k)), batch if isinstance(batch, tuple) else tuple(batch))
                result.losses.append(loss)
                total, n, k = total + loss, n + 1, k + 1
                bar.step(epoch, loss)
            row = {"epoch": epoch + 1, "steps": n, "loss": total / max(n, 1), "seconds": time.perf_counter() - t0}
            if evaluate is not None:
                metrics = evaluate(runner.result()[0])
                row.update(metrics if isinstance(metrics, dict) else {"eval": float(metrics)})
            result.history.append(row)
            bar.epoch_end(epoch, row["loss"], {m: v for m, v in row.items()
                                               if m not in ("epoch", "steps", "loss", "seconds")})
    finally:
        bar.close()
    result.params, result.opt_state = runner.result()
    return result
