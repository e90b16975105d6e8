"""SAN: preprocess -> frozen forward -> (Z, M, F) -> class logits -> semantic map.

The forward is split where personalization needs to tap it: `encode` produces everything that
does not depend on the class rows (mask embeddings Z, mask proposal logits M, dense CLIP
features F), and `class_logits` scores Z against any set of class rows; `semantic` turns
(logits, masks) into per-class scores or labels at the original image size, as SAN's inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .clip import CLIPRecHead, CLIPVisualExtractor
from .config import SANConfig
from .losses import HungarianMatcher, SetCriterion
from .resize import check_mode, resize_exact, resize_fast, resized_shape
from .side_adapter import SideAdapterNetwork
from .text import OpenVocabClassifier


@dataclass(frozen=True)
class BatchGeometry:
    """Sizes an image went through, needed to undo the preprocessing exactly."""

    original_hw: tuple[tuple[int, int], ...]
    resized_hw: tuple[tuple[int, int], ...]
    padded_hw: tuple[int, int]


@dataclass
class SANFeatures:
    """Everything the frozen model computes from pixels alone (no class rows involved)."""

    mask_embeddings: torch.Tensor  # Z [B, N, D], L2-normalized
    mask_logits: torch.Tensor  # M [B, N, h, w] on the side-adapter grid (1/16)
    dense_features: torch.Tensor  # F [B, D, hc, wc] CLIP patch features, L2-normalized
    geometry: BatchGeometry

    def select(self, index: int) -> SANFeatures:
        """One image of the batch, keeping the batch axis."""
        g = self.geometry
        return SANFeatures(
            self.mask_embeddings[index : index + 1],
            self.mask_logits[index : index + 1],
            self.dense_features[index : index + 1],
            BatchGeometry((g.original_hw[index],), (g.resized_hw[index],), g.padded_hw),
        )


class SAN(nn.Module):
    """The Side Adapter Network with the official checkpoint's module names."""

    def __init__(self, cfg: SANConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.clip_visual_extractor = CLIPVisualExtractor(
            cfg.clip_width, cfg.feature_last_layer, cfg.clip_heads, cfg.clip_patch, cfg.clip_grid
        )
        self.clip_rec_head = CLIPRecHead(
            cfg.clip_width, cfg.clip_layers - cfg.feature_last_layer, cfg.clip_heads, cfg.embed_dim
        )
        self.ov_classifier = OpenVocabClassifier(
            cfg.text_width,
            cfg.text_layers,
            cfg.text_heads,
            cfg.embed_dim,
            cfg.context_length,
            cfg.vocab_size,
        )
        self.side_adapter_network = SideAdapterNetwork(cfg)
        # Training-only state kept so official checkpoints load strictly.
        self.criterion = SetCriterion(cfg.num_train_classes, HungarianMatcher())
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), False)
        self._keep = {src for _, src in cfg.fusion_map} | {cfg.feature_last_layer}
        # How `preprocess` resizes (`resize.RESIZE_MODES`): "fast" unless a caller (the
        # Segmenter, the engine, the evaluation) asks for the official "exact" one.
        self.resize = "fast"

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ---------------------------------------------------------------- preprocessing
    def preprocess(
        self,
        images: list[np.ndarray] | np.ndarray,
        short_side: int | None = None,
        resize: str | None = None,
    ) -> tuple[torch.Tensor, BatchGeometry]:
        """RGB uint8 HxWx3 images -> normalized, resized, zero-padded batch [B, 3, Hp, Wp].

        ``short_side`` overrides the config's ``min_size`` (training at a lower resolution
        first costs less per scene; the weights serve any size). ``resize`` overrides
        `self.resize`: "exact" is SAN's official resize (PIL bilinear on uint8, on the CPU),
        "fast" torch's bilinear rounded to grey levels, on the model's device (`resize`).
        """
        if isinstance(images, np.ndarray):
            images = [images]
        cfg = self.cfg
        mode = check_mode(self.resize if resize is None else resize)
        short = cfg.min_size if short_side is None else short_side
        if short < cfg.size_divisibility:
            raise ValueError(f"short side must be at least {cfg.size_divisibility}, got {short}")
        tensors, originals, resized = [], [], []
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(
                    f"expected an RGB uint8 image of shape HxWx3, got {img.dtype} {img.shape}"
                )
            h, w = img.shape[:2]
            if h < 1 or w < 1:
                raise ValueError("empty image")
            nh, nw = resized_shape(h, w, short, cfg.max_size)
            same = (nh, nw) == (h, w)
            if mode == "exact" and not same:
                img = resize_exact(img, nh, nw)
            x = torch.from_numpy(np.ascontiguousarray(img))
            if self.device.type == "cuda":  # page-locked: an asynchronous upload
                x = x.pin_memory().to(self.device, non_blocking=True)
            else:
                x = x.to(self.device)
            x = x.permute(2, 0, 1)[None].float()
            if mode == "fast" and not same:
                x = resize_fast(x, nh, nw)
            tensors.append((x[0] - self.pixel_mean) / self.pixel_std)
            originals.append((h, w))
            resized.append((nh, nw))
        ph, pw = padded_shape(resized, cfg.size_divisibility)
        batch = tensors[0].new_zeros(len(tensors), 3, ph, pw)
        for i, t in enumerate(tensors):
            batch[i, :, : t.shape[1], : t.shape[2]] = t
        return batch, BatchGeometry(tuple(originals), tuple(resized), (ph, pw))

    # ---------------------------------------------------------------- frozen forward
    def encode(self, pixels: torch.Tensor, geometry: BatchGeometry) -> SANFeatures:
        """The class-agnostic part of SAN: one pass per image, cacheable for teaching."""
        return self.encode_with_aux(pixels, geometry)[0]

    def encode_with_aux(
        self, pixels: torch.Tensor, geometry: BatchGeometry, aux_blocks: Sequence[int] = ()
    ) -> tuple[SANFeatures, list[tuple[torch.Tensor, torch.Tensor]]]:
        """`encode`, plus (Z, M) decoded after each side block in `aux_blocks`: the extra
        outputs SAN's deep supervision trains on (each with its own recognition pass)."""
        clip_in = F.interpolate(
            pixels, scale_factor=self.cfg.clip_scale, mode="bilinear", align_corners=False
        )
        tokens, clip_hw = self.clip_visual_extractor(clip_in, self._keep)
        (mask_logits, attn_bias), aux_decoded = self.side_adapter_network.forward_with_aux(
            pixels, tokens, clip_hw, aux_blocks)
        rec_tokens = tokens[self.cfg.feature_last_layer]
        queries, dense = self.clip_rec_head(rec_tokens, clip_hw, attn_bias)
        aux = []
        for aux_masks, aux_bias in aux_decoded:
            aux_queries, _ = self.clip_rec_head(rec_tokens, clip_hw, aux_bias)
            aux.append((F.normalize(aux_queries.float(), dim=-1), aux_masks.float()))
        features = SANFeatures(
            F.normalize(queries.float(), dim=-1),
            mask_logits.float(),
            F.normalize(dense.float(), dim=1),
            geometry,
        )
        return features, aux

    # ---------------------------------------------------------------- classification
    def text_rows(self, words: list[str]) -> torch.Tensor:
        """Cached template-ensembled text embeddings T_open [V, D] for the vocabulary."""
        return self.ov_classifier.embed_words(words)

    def class_rows(self, text_rows: torch.Tensor) -> torch.Tensor:
        """[V, D] -> normalized [V+1, D] with SAN's learned void row last."""
        return self.ov_classifier.class_rows(text_rows)

    def class_logits(self, mask_embeddings: torch.Tensor, class_rows: torch.Tensor) -> torch.Tensor:
        """S = exp(logit_scale) * Z @ rows^T -> [B, N, V+1]."""
        scale = self.ov_classifier.logit_scale.exp()
        return scale * torch.einsum("bqc,nc->bqn", mask_embeddings, class_rows.to(mask_embeddings))

def padded_shape(resized_hw: Sequence[tuple[int, int]], divisibility: int) -> tuple[int, int]:
    """The batch's padded size: the largest resized side, rounded up to `divisibility`."""
    ph = math.ceil(max(h for h, _ in resized_hw) / divisibility) * divisibility
    pw = math.ceil(max(w for _, w in resized_hw) / divisibility) * divisibility
    return ph, pw


@torch.no_grad()
def init_weights(model: SAN, seed: int = 0) -> SAN:
    """Deterministic CLIP/timm-style random initialization (no pretrained weights offline)."""
    gen = torch.Generator().manual_seed(seed)

    def normal_(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    cfg = model.cfg
    for name, p in model.named_parameters():
        if name.endswith(".bias") or name.startswith("criterion"):
            p.zero_()
        elif (
            "ln" in name.split(".")[-2] or "norm" in name.split(".")[-2] or ".input_proj.0." in name
        ):
            p.fill_(1.0)
        elif p.dim() == 0:
            continue
        else:
            fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
            normal_(p, min(0.02, fan_in**-0.5) if "side_adapter" in name else fan_in**-0.5)
    vis, txt = model.clip_visual_extractor, model.ov_classifier
    normal_(vis.class_embedding, cfg.clip_width**-0.5)
    normal_(vis.positional_embedding, cfg.clip_width**-0.5)
    normal_(model.clip_rec_head.proj, cfg.clip_width**-0.5)
    normal_(txt.token_embedding.weight, 0.02)
    normal_(txt.positional_embedding, 0.01)
    normal_(txt.text_projection, cfg.text_width**-0.5)
    normal_(txt.bg_embed, cfg.embed_dim**-0.5)
    txt.logit_scale.fill_(math.log(100.0))
    sa = model.side_adapter_network
    for p in (sa.query_embed, sa.query_pos_embed, sa.vit_model.pos_embed):
        normal_(p, 0.02)
    sa.mask_decoder.bias_scaling.weight.fill_(1.0)
    txt.clear_cache()
    return model


def build_san(cfg: SANConfig, seed: int | None = 0) -> SAN:
    """A SAN with random weights (seeded), ready for a checkpoint or for training."""
    model = SAN(cfg)
    if seed is not None:
        init_weights(model, seed)
    return model.eval()
