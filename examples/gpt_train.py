"""A small GPT trained in stock onnxruntime, tracking PyTorch step for step.

A character-level GPT-style decoder (2 layers, width 64, 4 heads, vocabulary 96, context 32)
written in plain torch, exported by `torch.onnx.export` (TorchScript exporter, symbolic
batch, context fixed), turned into training artifacts by `tapeir train-artifacts` (the same Python
function the CLI calls), then trained with Adam in a plain `onnxruntime.InferenceSession`:
only onnxruntime and numpy in the loop, as the artifacts' README.txt shows. PyTorch trains
the same initial weights on the same batches with `torch.optim.Adam` (same hyperparameters);
both loss curves are printed with the largest relative gap.

    python examples/gpt_train.py [--steps 100] [--batch 16] [--lr 3e-3] [-o DIR]

Why the context is fixed: the TorchScript exporter writes the positions (`Range` over the
sequence length) and the causal-mask `Slice` from the input's shape; with a fixed context
they are constants and the importer folds them. A dynamic sequence axis needs the importer
to compute with symbolic sizes at run time (issue 11's symbolic Range/Slice item); a
dynamic batch imports (the artifacts take any batch size).

Why the loss sees [B*T, V] logits: the model's own output is [B, T, V] (what a GPT returns),
and `tapeir train-artifacts --loss cross_entropy` takes logits [..., C] with integer labels
[...], the mean over every position, as `F.cross_entropy(logits.reshape(-1, C), y.reshape(-1))`.

The text is generated (a seeded toy grammar below), so nothing is downloaded or shipped.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import warnings

import numpy as np

VOCAB = 96  # printable ASCII 32..126 and newline
CONTEXT = 32
WIDTH = 64
HEADS = 4
LAYERS = 2


def make_text(n_chars: int = 20000, seed: int = 0) -> str:
    """A seeded toy-grammar text: structure a small model can learn within 100 steps."""
    rng = np.random.default_rng(seed)
    subj = ["the cat", "a dog", "my friend", "the old man", "she", "he", "the bird", "our teacher"]
    verb = ["sees", "likes", "finds", "paints", "follows", "calls", "hears", "draws"]
    obj = ["the moon", "a red ball", "the river", "two apples", "the garden", "a small house", "the sea"]
    tail = [".", "!", " today.", " again.", " at night.", " in the rain."]
    parts = []
    while sum(map(len, parts)) < n_chars:
        s = f"{subj[rng.integers(len(subj))]} {verb[rng.integers(len(verb))]} {obj[rng.integers(len(obj))]}"
        s = s[0].upper() + s[1:] + tail[rng.integers(len(tail))]
        parts.append(s + ("\n" if rng.random() < 0.2 else " "))
    return "".join(parts)[:n_chars]


def encode(text: str) -> np.ndarray:
    """Characters to ids 0..95 (newline is 95)."""
    b = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64)
    return np.where(b == 10, VOCAB - 1, b - 32)


def batches(ids: np.ndarray, n: int, batch: int, seed: int = 1):
    """n seeded (x, y) batches of [batch, CONTEXT] windows; y is x shifted by one character."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        starts = rng.integers(0, len(ids) - CONTEXT - 1, batch)
        idx = starts[:, None] + np.arange(CONTEXT)
        yield ids[idx], ids[idx + 1]


def gpt_module(seed: int = 0):
    """The torch model: causal self-attention by hand, learned positions, pre-LayerNorm, GELU MLP."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
            self.fc, self.out = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
            self.register_buffer("mask", torch.tril(torch.ones(CONTEXT, CONTEXT, dtype=torch.bool)))

        def attend(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(x).split(WIDTH, dim=2)
            q, k, v = (z.reshape(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // HEADS))
            att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(dim=-1)
            return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))

        def forward(self, x):
            x = x + self.attend(self.ln1(x))
            return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, WIDTH)
            self.pos = nn.Parameter(torch.zeros(CONTEXT, WIDTH))
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.ln = nn.LayerNorm(WIDTH)
            self.head = nn.Linear(WIDTH, VOCAB, bias=False)  # untied: every weight has one gradient path

        def forward(self, idx):
            x = self.tok(idx) + self.pos[: idx.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x))

    torch.manual_seed(seed)
    model = GPT()
    with torch.no_grad():
        model.pos.normal_(0.0, 0.02)
    return model


def export(model, path: str, batch: int) -> None:
    """torch.onnx.export, TorchScript exporter, input [batch, seq] (both symbolic, seq <= CONTEXT).

    Export for training keeps one initializer per parameter, under the parameter's name. In the
    default eval mode the exporter merges initializers with equal values (every LayerNorm
    weight starts as ones, so all of them would become one tied parameter) and constant
    folding stores Linear weights transposed as `onnx::MatMul_*` and folds `pos[:T]` into a
    new tensor: the artifacts would train a different model from the torch one.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(batch, CONTEXT, dtype=torch.long),), path, dynamo=False,
                          input_names=["idx"], output_names=["logits"], dynamic_axes={"idx": {0: "batch", 1: "seq"}},
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)


def train_onnxruntime(art: str, data, lr: float) -> list[float]:
    """The artifacts' README.txt loop: onnxruntime and numpy only."""
    import onnxruntime as ort

    step = ort.InferenceSession(os.path.join(art, "training_step.onnx"))
    state = dict(np.load(os.path.join(art, "checkpoint.npz")))
    out_names = [o.name for o in step.get_outputs()]
    losses = []
    for x, y in data:
        loss, *new = step.run(None, {**state, "lr": np.array(lr), "idx": x, "target": y})
        state = {n[len("new_"):]: v for n, v in zip(out_names[1:], new)}
        losses.append(float(loss))
    return losses


def train_torch(model, data, lr: float) -> list[float]:
    """The reference: the same weights, batches and Adam hyperparameters in PyTorch eager."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for x, y in data:
        opt.zero_grad()
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.from_numpy(y).reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def run(steps: int = 100, batch: int = 16, lr: float = 3e-3, out_dir: str | None = None, verbose: bool = True):
    """Export, build artifacts, train both ways; returns (onnxruntime losses, torch losses, max rel gap)."""
    from tapeir.artifacts import write

    work = out_dir or tempfile.mkdtemp(prefix="tapeir-gpt-")
    os.makedirs(work, exist_ok=True)
    model = gpt_module()
    onnx_path = os.path.join(work, "gpt.onnx")
    export(model, onnx_path, batch)
    art = os.path.join(work, "artifacts")
    write(onnx_path, art, "cross_entropy", "adam", lr=lr)
    data = list(batches(encode(make_text()), steps, batch))
    ort_losses = train_onnxruntime(art, data, lr)
    torch_losses = train_torch(model, data, lr)
    gap = max(abs(a - b) / abs(b) for a, b in zip(ort_losses, torch_losses))
    if verbose:
        print(f"artifacts in {art}")
        print(" step   onnxruntime       pytorch   rel. gap")
        for k, (a, b) in enumerate(zip(ort_losses, torch_losses)):
            print(f"{k:5d}  {a:12.6f}  {b:12.6f}   {abs(a - b) / abs(b):.1e}")
        print(f"max relative gap over {steps} steps: {gap:.2e} (target <= 1e-3)")
    return ort_losses, torch_losses, gap


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("-o", "--out", help="directory for gpt.onnx and artifacts/ (default: a new temporary one)")
    a = ap.parse_args(argv)
    _, _, gap = run(a.steps, a.batch, a.lr, a.out)
    return 0 if gap <= 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
