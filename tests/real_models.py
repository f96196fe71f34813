"""Small versions of common architectures, written in plain torch (no torchvision or
transformers), for the import tests (tests/backends/test_real_models.py) and the benchmark
(bench/bench_models.py).

Each `make_<name>()` returns (module in eval mode, example inputs as numpy arrays, the
dynamic axes of each input {input name: {axis: dim name}}). Widths are tiny so the whole
test file stays fast; bench_models builds the wider ones the issue names.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _randomize_bn(model):
    """Non-trivial running statistics, so eval-mode BatchNorm is not the identity; and
    LayerNorm weights off their 1/0 init: the TorchScript exporter merges equal initializers
    (every LayerNorm's ones) into one, whose gradient is then the sum over all its uses; and
    every parameter jittered, since nn.TransformerEncoder starts its layers as copies of one."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    return model


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """ResNet-18's shape: stem conv + max pool, stages of two basic blocks, global average pool, fc."""

    def __init__(self, widths=(8, 16), blocks=1, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and b == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class MobileNetV3(nn.Module):
    """MobileNetV3-small's pieces: hardswish stem, inverted residual with a depthwise conv and
    squeeze-excite, hardsigmoid gate, classifier."""

    def __init__(self, c=8, expand=16, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.Hardswish())
        self.block = nn.Sequential(
            nn.Conv2d(c, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.Hardswish(),
            nn.Conv2d(expand, expand, 3, 1, 1, groups=expand, bias=False), nn.BatchNorm2d(expand), nn.Hardswish(),
            SqueezeExcite(expand),
            nn.Conv2d(expand, c, 1, bias=False), nn.BatchNorm2d(c))
        self.head = nn.Sequential(nn.Linear(c, 16), nn.Hardswish(), nn.Linear(16, classes))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Encoder(nn.Module):
    def __init__(self, d=16, heads=2, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, 4)

    def forward(self, x):
        return self.out(self.enc(x))


class ViT(nn.Module):
    """Patch embedding conv, class token, learned positions, pre-norm encoder, head on the class token."""

    def __init__(self, d=16, patch=4, image=8, heads=2, layers=1, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, d) * 0.1)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.enc(x))[:, 0])


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads, context):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(context, context)).view(1, 1, context, context))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class GPTBlock(nn.Module):
    def __init__(self, d, heads, context):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, context)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A GPT-2-style decoder: token and position embeddings (positions via arange over the
    sequence), a causal-mask buffer sliced to the sequence, pre-norm blocks, tied-free lm head."""

    def __init__(self, vocab=50, d=16, heads=2, layers=1, context=16):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*[GPTBlock(d, heads, context) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        T = idx.shape[1]
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        return self.head(self.ln(self.blocks(x)))


class GPTLast(GPT):
    """The GPT's logits at the last real token of each row (lengths given): h[arange(B), n - 1],
    which the dynamo exporter writes as GatherND over the symbolic batch and sequence."""

    def forward(self, idx, lengths):
        h = super().forward(idx)
        return h[torch.arange(h.shape[0]), lengths - 1]


class Recurrent(nn.Module):
    def __init__(self, cell, n_in=6, hidden=8, layers=2, bidirectional=True, classes=4):
        super().__init__()
        self.rnn = cell(n_in, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc, self.bn3 = nn.Linear(6 * 4 * 4, 8), nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.out(F.relu(self.bn3(self.fc(x.flatten(1)))))


class DropoutMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 16), nn.Tanh(),
                                 nn.Dropout(0.2), nn.Linear(16, 5))

    def forward(self, x):
        return self.net(x)


def _images(batch=3, size=16):
    return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def _seq(batch=3, steps=5, width=16):
    return np.random.default_rng(0).standard_normal((batch, steps, width)).astype(np.float32)


BATCH = {0: "batch"}
BATCH_SEQ = {0: "batch", 1: "seq"}


def make(name: str):
    """(eval-mode module, numpy inputs, dynamic axes per input) for one architecture."""
    torch.manual_seed(0)
    if name == "resnet":
        return _randomize_bn(ResNet()).eval(), [_images()], [BATCH]
    if name == "mobilenet":
        return _randomize_bn(MobileNetV3()).eval(), [_images()], [BATCH]
    if name == "encoder":
        return _randomize_bn(Encoder()).eval(), [_seq()], [BATCH_SEQ]
    if name == "vit":
        return _randomize_bn(ViT()).eval(), [_images(size=8)], [BATCH]
    if name == "gpt":
        tokens = np.random.default_rng(0).integers(0, 50, (3, 7)).astype(np.int64)
        return _randomize_bn(GPT()).eval(), [tokens], [BATCH_SEQ]
    if name == "gpt_last":
        gen = np.random.default_rng(0)
        tokens, lengths = gen.integers(0, 50, (3, 7)).astype(np.int64), np.array([7, 2, 5], np.int64)
        return _randomize_bn(GPTLast()).eval(), [tokens, lengths], [BATCH_SEQ, BATCH]
    if name in ("lstm", "gru"):
        return _randomize_bn(Recurrent(nn.LSTM if name == "lstm" else nn.GRU)).eval(), [_seq(width=6)], [BATCH]
    if name == "bn_cnn":
        return _randomize_bn(BNNet()).eval(), [_images(size=8)], [BATCH]
    if name == "dropout_mlp":
        return _randomize_bn(DropoutMLP()).eval(), [np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)], [BATCH]
    raise KeyError(name)


NAMES = ["resnet", "mobilenet", "encoder", "vit", "gpt", "gpt_last", "lstm", "gru", "bn_cnn", "dropout_mlp"]
