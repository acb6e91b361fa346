"""The PyTorch eager reference ViT of the benchmark: the same shapes as vitlib's (patch
embedding as a linear map of flattened patches, learned position embedding, pre-LN blocks with
scaled_dot_product_attention and GELU MLP, final LayerNorm, GAP, linear head).

``scoped=True`` marks the parts of the model with ``torch.profiler.record_function`` scopes (the
names of ``forward_profile.PARTS``), for the forward-pass profile; off, it costs nothing."""
import contextlib

import torch
from torch import nn
from torch.nn import functional as F


def _scopes(scoped: bool):
    return torch.profiler.record_function if scoped else (lambda name: contextlib.nullcontext())


class Block(nn.Module):
    def __init__(self, width, heads, mlp_dim, scoped=False):
        super().__init__()
        self.heads, self.scope = heads, _scopes(scoped)
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

    def forward(self, x):
        n, length, width = x.shape
        with self.scope("LayerNorm"):
            h = self.norm1(x)
        with self.scope("attention projections"):
            h = self.qkv(h)
        with self.scope("attention scores"):
            q, k, v = h.view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, width)
        with self.scope("attention projections"):
            x = x + self.out(y)
        with self.scope("LayerNorm"):
            h = self.norm2(x)
        with self.scope("MLP"):
            return x + self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


class TorchViT(nn.Module):
    def __init__(self, width, depth, heads, mlp_dim, patch, image, channels, classes,
                 scoped=False):
        super().__init__()
        self.patch, self.scope = patch, _scopes(scoped)
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(patch * patch * channels, width)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) / width ** 0.5)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim, scoped) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, classes)

    def features(self, images):
        n, c, h, w = images.shape
        p = self.patch
        with self.scope("patch embedding"):
            patches = (images.unfold(2, p, p).unfold(3, p, p)  # n c gh gw p p
                       .permute(0, 2, 3, 4, 5, 1).reshape(n, (h // p) * (w // p), p * p * c))
            x = self.embed(patches)
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        with self.scope("LayerNorm"):
            x = self.norm(x)
        return x.mean(dim=1)

    def forward(self, images):
        return self.head(self.features(images))
