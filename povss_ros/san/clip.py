"""CLIP transformer blocks, SAN's visual feature extractor and its recognition head.

Parameter names mirror OpenAI CLIP (and so the official checkpoint): `ln_1`, `attn.in_proj_*`,
`attn.out_proj`, `mlp.c_fc`, `mlp.c_proj`. The blocks are batch-first and use PyTorch's fused
scaled-dot-product attention; an additive float mask of shape [B, heads, L, L] carries SAN's
attention bias, which open_clip's newer blocks do not accept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# SAN masks attention with a large negative number, not -inf: rows stay finite everywhere.
MASK_VALUE = -100.0


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with nn.MultiheadAttention's parameter layout (packed in_proj)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if attn_mask is not None:
            attn_mask = attn_mask.to(qkv.dtype)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class CLIPMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm CLIP block (LayerNorm eps 1e-5, QuickGELU)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = CLIPMLP(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


def resize_grid_embedding(
    grid_embed: torch.Tensor, src: tuple[int, int], dst: tuple[int, int], mode: str = "bicubic"
) -> torch.Tensor:
    """Resize a [L, C] row-major grid of position embeddings to another grid size."""
    if src == dst:
        return grid_embed
    c = grid_embed.shape[-1]
    grid = grid_embed.reshape(1, src[0], src[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode=mode, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(dst[0] * dst[1], c)


class CLIPVisualExtractor(nn.Module):
    """CLIP's image tower up to the split point; returns every intermediate token sequence.

    Output index 0 is the sequence after `ln_pre`, index i the sequence after block i-1 (so
    ViT-B/16 returns 0..9). Each sequence is [B, 1 + h*w, C] with the class token first.
    """

    def __init__(self, width: int, layers: int, heads: int, patch: int, grid: int) -> None:
        super().__init__()
        self.patch = patch
        self.grid = (grid, grid)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(
        self, x: torch.Tensor, keep: set[int]
    ) -> tuple[dict[int, torch.Tensor], tuple[int, int]]:
        x = self.conv1(x)
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = self.positional_embedding.to(x.dtype)
        pos = torch.cat([pos[:1], resize_grid_embedding(pos[1:], self.grid, hw)])
        x = self.ln_pre(x + pos)
        features = {0: x} if 0 in keep else {}
        for i, block in enumerate(self.resblocks, start=1):
            x = block(x)
            if i in keep:
                features[i] = x
        return features, hw


def tokens_to_map(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[B, 1 + h*w, C] (class token first) -> [B, C, h, w] patch map."""
    b, _, c = tokens.shape
    return tokens[:, 1:].transpose(1, 2).reshape(b, c, hw[0], hw[1])


class CLIPRecHead(nn.Module):
    """The last CLIP blocks, re-used to pool one CLIP embedding per mask proposal.

    N copies of the class token ("SOS" tokens) are prepended; the side adapter's attention
    bias steers each one to its mask's region. Patch tokens never see the SOS tokens, so
    they come out exactly as plain CLIP would compute them: that is the dense feature map
    used for visual embedding injection, at no extra cost.
    """

    def __init__(self, width: int, layers: int, heads: int, embed_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width, eps=1e-5)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))

    def build_attn_mask(self, attn_bias: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """[B, heads, N, hs, ws] side-grid bias -> additive mask [B, heads, N+1+L, N+1+L]."""
        b, heads, n = attn_bias.shape[:3]
        if heads != self.heads:
            raise ValueError(f"attention bias has {heads} heads, the rec head {self.heads}")
        pooled = F.adaptive_max_pool2d(attn_bias.flatten(1, 2), output_size=hw)
        pooled = pooled.reshape(b, heads, n, hw[0] * hw[1])
        length = n + 1 + pooled.shape[-1]
        base = attn_bias.new_zeros(length, length)
        base[:, :n] = MASK_VALUE
        idx = torch.arange(n, device=attn_bias.device)
        base[idx, idx] = 0.0
        base[:n, n] = MASK_VALUE
        mask = base.expand(b, heads, length, length).clone()
        mask[:, :, :n, n + 1 :] = pooled
        return mask

    def forward(
        self, tokens: torch.Tensor, hw: tuple[int, int], attn_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mask embeddings [B, N, D], dense features [B, D, h, w]), unnormalized."""
        n = attn_bias.shape[2]
        sos = tokens[:, :1].expand(-1, n, -1)
        x = torch.cat([sos, tokens], dim=1)
        mask = self.build_attn_mask(attn_bias, hw)
        for block in self.resblocks:
            x = block(x, mask)
        x = self.ln_post(x)
        proj = self.proj.to(x.dtype)
        queries = x[:, :n] @ proj
        dense = x[:, n + 1 :] @ proj
        dense = dense.transpose(1, 2).reshape(x.shape[0], -1, hw[0], hw[1])
        return queries, dense
