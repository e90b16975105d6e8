"""SAN's side adapter network: a small ViT beside CLIP that proposes masks and attention biases.

Names follow the official checkpoint (`side_adapter_network.vit_model.blocks.0.attn.qkv`,
`fusion_layers.layer_1.input_proj.0`, `mask_decoder.attn_mlp.layers.2`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .clip import resize_grid_embedding, tokens_to_map
from .config import SANConfig


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW map (eps 1e-6, as in SAN)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ViTAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ViTMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """timm's pre-norm ViT block: LayerNorm eps 1e-6, exact GELU, qkv bias."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = ViTAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = ViTMlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SideViT(nn.Module):
    """Holds the side ViT's parameters under the checkpoint's `vit_model.` names."""

    def __init__(self, cfg: SANConfig) -> None:
        super().__init__()
        self.grid = (cfg.side_grid, cfg.side_grid)
        self.patch_embed = PatchEmbed(cfg.side_patch, cfg.side_width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.side_grid**2, cfg.side_width))
        self.blocks = nn.ModuleList(
            ViTBlock(cfg.side_width, cfg.side_heads, cfg.side_mlp_ratio)
            for _ in range(cfg.side_depth)
        )


class AddFusion(nn.Module):
    """Adds projected CLIP features to the side adapter's patch tokens."""

    def __init__(self, clip_width: int, side_width: int) -> None:
        super().__init__()
        self.input_proj = nn.Sequential(
            ChannelLayerNorm(clip_width), nn.Conv2d(clip_width, side_width, 1)
        )

    def forward(
        self, patches: torch.Tensor, clip_map: torch.Tensor, hw: tuple[int, int]
    ) -> torch.Tensor:
        y = F.interpolate(self.input_proj(clip_map), size=hw, mode="bilinear", align_corners=False)
        return patches + y.flatten(2).transpose(1, 2)


class MLP(nn.Module):
    """Linear (or 1x1 conv) layers with ReLU between them, none after the last."""

    def __init__(self, dims: list[int], conv: bool) -> None:
        super().__init__()
        make = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.layers = nn.ModuleList(make(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Queries x pixels -> mask proposal logits; queries x attention maps -> rec-head bias."""

    def __init__(self, cfg: SANConfig) -> None:
        super().__init__()
        c, w, n = cfg.decoder_channels, cfg.side_width, cfg.decoder_mlp_layers
        self.heads = cfg.attn_bias_heads
        hidden = [w] + [c] * (n - 1)
        self.query_mlp = MLP(hidden + [c], conv=False)
        self.pix_mlp = MLP(hidden + [c], conv=True)
        self.attn_mlp = MLP(hidden + [c * self.heads], conv=True)
        self.bias_scaling = nn.Linear(1, 1)

    def forward(
        self, query: torch.Tensor, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.query_mlp(query)
        pix = self.pix_mlp(pixels)
        b, c, h, w = pix.shape
        masks = torch.einsum("bqc,bchw->bqhw", query, pix)
        attn = self.attn_mlp(pixels).reshape(b, self.heads, c, h, w)
        bias = torch.einsum("bqc,bnchw->bnqhw", query, attn)
        bias = bias * self.bias_scaling.weight[0, 0] + self.bias_scaling.bias[0]
        return masks, bias


class SideAdapterNetwork(nn.Module):
    def __init__(self, cfg: SANConfig) -> None:
        super().__init__()
        self.num_queries = cfg.num_queries
        self.query_embed = nn.Parameter(torch.zeros(1, cfg.num_queries, cfg.side_width))
        self.query_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_queries, cfg.side_width))
        self.vit_model = SideViT(cfg)
        self.fusion_map = dict(cfg.fusion_map)
        self.fusion_layers = nn.ModuleDict(
            {
                f"layer_{stage}": AddFusion(cfg.clip_width, cfg.side_width)
                for stage in self.fusion_map
            }
        )
        self.mask_decoder = MaskDecoder(cfg)

    def _fuse(self, stage: int, x: torch.Tensor, clip_maps: dict, hw: tuple[int, int]):
        if stage not in self.fusion_map:
            return x
        q = self.num_queries
        fused = self.fusion_layers[f"layer_{stage}"](
            x[:, q:], clip_maps[self.fusion_map[stage]], hw
        )
        return torch.cat([x[:, :q], fused], dim=1)

    def forward(
        self, image: torch.Tensor, clip_tokens: dict[int, torch.Tensor], clip_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns mask logits [B, N, h, w] and attention bias [B, heads, N, h, w]."""
        return self.forward_with_aux(image, clip_tokens, clip_hw)[0]

    def forward_with_aux(
        self,
        image: torch.Tensor,
        clip_tokens: dict[int, torch.Tensor],
        clip_hw: tuple[int, int],
        aux_blocks: Sequence[int] = (),
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The final (masks, bias) and, for SAN's deep supervision in training, the same
        decoder's (masks, bias) after each of `aux_blocks` (1-based, before the last block)."""
        vit = self.vit_model
        depth = len(vit.blocks)
        if any(not 1 <= i < depth for i in aux_blocks):
            raise ValueError(f"aux_blocks must lie in [1, {depth - 1}], got {tuple(aux_blocks)}")
        x = vit.patch_embed(image)
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        pos = resize_grid_embedding(vit.pos_embed[0], vit.grid, hw)[None]
        pos = torch.cat([self.query_pos_embed, pos.to(x.dtype)], dim=1).expand(b, -1, -1)
        x = torch.cat([self.query_embed.expand(b, -1, -1).to(x.dtype), x], dim=1) + pos
        clip_maps = {
            src: tokens_to_map(clip_tokens[src], clip_hw) for src in self.fusion_map.values()
        }
        x = self._fuse(0, x, clip_maps, hw)
        aux = []
        for i, block in enumerate(vit.blocks, start=1):
            x = self._fuse(i, block(x), clip_maps, hw)
            if i in aux_blocks:
                aux.append(self._decode(x, hw))
            if i < depth:
                x = x + pos
        return self._decode(x, hw), aux

    def _decode(
        self, x: torch.Tensor, hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.num_queries
        pixels = x[:, q:].transpose(1, 2).reshape(x.shape[0], -1, hw[0], hw[1])
        return self.mask_decoder(x[:, :q], pixels)
