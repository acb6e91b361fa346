"""The PyTorch eager reference ViT of the benchmark: the same shapes as vitlib's (patch
embedding as a linear map of flattened patches, learned position embedding, pre-LN blocks with
scaled_dot_product_attention and GELU MLP, final LayerNorm, GAP, linear head)."""
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width, heads, mlp_dim):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

    def forward(self, x):
        n, length, width = x.shape
        q, k, v = (self.qkv(self.norm1(x)).view(n, length, 3, self.heads, -1)
                   .permute(2, 0, 3, 1, 4))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, width)
        x = x + self.out(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class TorchViT(nn.Module):
    def __init__(self, width, depth, heads, mlp_dim, patch, image, channels, classes):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(patch * patch * channels, width)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) / width ** 0.5)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, classes)

    def features(self, images):
        n, c, h, w = images.shape
        p = self.patch
        patches = (images.unfold(2, p, p).unfold(3, p, p)  # n c gh gw p p
                   .permute(0, 2, 3, 4, 5, 1).reshape(n, (h // p) * (w // p), p * p * c))
        x = self.embed(patches) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=1)

    def forward(self, images):
        return self.head(self.features(images))
