"""ONNX import rules for the recurrent layers LSTM and GRU (every direction, either layout,
optional bias, initial states and peepholes; torch writes one node per layer).

IR form: UNROLLED over a static sequence length. tapeir's IR has no loop construct, so a
layer over T steps becomes, per direction, one matmul of the whole input by W^T (all
steps at once), then T steps of `h @ R^T` plus the gate arithmetic (slices, sigmoid,
tanh, products). Cost: O(T) IR nodes per layer and direction (about 20 for LSTM, 18 for
GRU per step), so import time, graph size and the backward graph grow linearly with T;
the arithmetic is the same as a loop's. A symbolic sequence length cannot unroll and is
a TapeirError with a hint (export with a fixed sequence length; the batch may stay
symbolic).

Not imported (a TapeirError names the attribute): activations other than the defaults
(Sigmoid, Tanh, Tanh), `clip`, LSTM `input_forget=1`, and `sequence_lens` that is not the
full length T for every batch entry (torch's packed sequences).
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..tensor import Tensor
from .node import shape_of

_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _check(n, x, seq_lens, gates):
    op = n.op
    acts = n.attr("activations")
    dirs = 2 if n.attr("direction", "forward") == "bidirectional" else 1
    if n.attr("direction", "forward") not in ("forward", "reverse", "bidirectional"):
        raise n.error(f"direction={n.attr('direction')!r}")
    if acts is not None and [a.lower() for a in acts] != [a.lower() for a in _DEFAULT_ACTS[op] * dirs]:
        raise n.error(f"activations={acts}", hint=f"tapeir imports {op} with the default activations only")
    if n.attr("clip") is not None:
        raise n.error(f"clip={n.attr('clip')}", hint=f"tapeir imports {op} without cell clipping")
    if n.attr("input_forget", 0):
        raise n.error("input_forget=1 (coupled input and forget gates)")
    layout = n.attr("layout", 0)
    steps = shape_of(x)[1 if layout else 0]
    if not isinstance(steps, int):
        raise n.error(f"the sequence length of {x.type} is symbolic ({steps}): a recurrent layer imports unrolled "
                      "over a static number of steps",
                      hint="export with a fixed sequence length (dynamic_axes on the batch only)")
    if steps == 0:
        raise n.error(f"an empty sequence: {x.type}")
    if seq_lens is not None:
        if isinstance(seq_lens, Tensor) or not (np.asarray(seq_lens) == steps).all():
            raise n.error("sequence_lens other than the full length (packed sequences)",
                          hint="pad the sequences to one length and drop sequence_lens")
    return dirs, layout, steps


def _dir(v, d):
    """Direction d of a [D, ...] weight or state (a slice node, or numpy indexing)."""
    return None if v is None else v[d]


def _steps_input(x, layout):
    """X as [T, B, I]."""
    return F.transpose(x, (1, 0, 2)) if layout else x


def _outputs(n, ys, finals, layout):
    """Per-direction lists of h_t -> Y [T, D, B, H] (layout 1: [B, T, D, H]) and the final
    states [D, B, H] (layout 1: [B, D, H])."""
    y = F.concatenate([F.expand_dims(F.concatenate([F.expand_dims(h, 0) for h in hs], 0), 1) for hs in ys], 1)
    if layout:
        y = F.transpose(y, (2, 0, 1, 3))
    outs = [y]
    for states in finals:
        s = F.concatenate([F.expand_dims(h, 0) for h in states], 0)
        outs.append(F.transpose(s, (1, 0, 2)) if layout else s)
    return tuple(outs)


def _input_proj(x, w, b, gates, hidden):
    """X [T,B,I] @ W^T + Wb + Rb, all steps at once: [T, B, gates*H]; the biases as one vector
    (GRU keeps Rb of its candidate gate apart, see _gru)."""
    xw = F.matmul(x, F.transpose(w, (1, 0)))
    if b is None:
        return xw
    return xw + (b[:gates * hidden] + b[gates * hidden:])


def _lstm(n, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    dirs, layout, steps = _check(n, x, seq_lens, 4)
    hidden = shape_of(r)[-1]
    xs = _steps_input(x, layout)
    if h0 is not None and layout:
        h0, c0 = (None if s is None else F.transpose(s, (1, 0, 2)) for s in (h0, c0))
    ys, hs, cs = [], [], []
    for d in range(dirs):
        reverse = n.attr("direction", "forward") == "reverse" or d == 1
        xw = _input_proj(xs, _dir(w, d), _dir(b, d), 4, hidden)
        rt = F.transpose(_dir(r, d), (1, 0))
        pd = _dir(p, d)
        h, c = _dir(h0, d), _dir(c0, d)
        out = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            g = xw[t]
            if h is not None:
                g = g + F.matmul(h, rt)
            gi, go, gf, gc = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
            if pd is not None and c is not None:
                gi, gf = gi + pd[:hidden] * c, gf + pd[2 * hidden:] * c
            i, f, cc = F.sigmoid(gi), F.sigmoid(gf), F.tanh(gc)
            c = i * cc if c is None else f * c + i * cc
            if pd is not None:
                go = go + pd[hidden:2 * hidden] * c
            h = F.sigmoid(go) * F.tanh(c)
            out[t] = h
        ys.append(out)
        hs.append(h)
        cs.append(c)
    return _outputs(n, ys, (hs, cs), layout)


def _gru(n, x, w, r, b=None, seq_lens=None, h0=None):
    dirs, layout, steps = _check(n, x, seq_lens, 3)
    hidden = shape_of(r)[-1]
    before = bool(n.attr("linear_before_reset", 0))
    xs = _steps_input(x, layout)
    if h0 is not None and layout:
        h0 = F.transpose(h0, (1, 0, 2))
    ys, hs = [], []
    for d in range(dirs):
        reverse = n.attr("direction", "forward") == "reverse" or d == 1
        bd = _dir(b, d)
        # z and r take Wb + Rb; the candidate takes Wbh outside and Rbh inside the reset
        xw = F.matmul(xs, F.transpose(_dir(w, d), (1, 0)))
        if bd is not None:
            xw = xw + F.concatenate([bd[:2 * hidden] + bd[3 * hidden:5 * hidden], bd[2 * hidden:3 * hidden]], 0)
        rbh = None if bd is None else bd[5 * hidden:]
        rd = _dir(r, d)
        r_zr, r_h = F.transpose(rd[:2 * hidden], (1, 0)), F.transpose(rd[2 * hidden:], (1, 0))
        h = _dir(h0, d)
        out = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            g = xw[t]
            gzr = g[:, :2 * hidden] if h is None else g[:, :2 * hidden] + F.matmul(h, r_zr)
            z, rs = F.sigmoid(gzr[:, :hidden]), F.sigmoid(gzr[:, hidden:])
            gh = g[:, 2 * hidden:]
            if h is None:  # a zero state: its recurrent term is the bias alone (reset or not)
                rec = None if rbh is None else rs * rbh if before else rbh
            elif before:
                hr = F.matmul(h, r_h)
                rec = rs * (hr if rbh is None else hr + rbh)
            else:
                hr = F.matmul(rs * h, r_h)
                rec = hr if rbh is None else hr + rbh
            hh = F.tanh(gh if rec is None else gh + rec)
            h = (1.0 - z) * hh if h is None else (1.0 - z) * hh + z * h
            out[t] = h
        ys.append(out)
        hs.append(h)
    return _outputs(n, ys, (hs,), layout)


RECURRENT = {"LSTM": _lstm, "GRU": _gru}
