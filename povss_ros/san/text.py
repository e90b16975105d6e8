"""CLIP text tower, SAN's prompt templates, and the per-word embedding cache.

The module is called `ov_classifier` inside SAN, so its parameter names match the official
checkpoint (`ov_classifier.token_embedding.weight`, `...bg_embed`, `...logit_scale`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .clip import ResidualAttentionBlock

# SAN's "vild" template set, exactly (some lack the final period on purpose).
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

_TOKENIZER = None


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """CLIP's BPE tokenizer from open_clip (its vocabulary ships inside the wheel)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZER = SimpleTokenizer(context_length=context_length)
    return _TOKENIZER(list(texts), context_length=context_length)


class TextTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class OpenVocabClassifier(nn.Module):
    """Turns vocabulary words into normalized class rows; owns SAN's learned void row."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        embed_dim: int,
        context_length: int = 77,
        vocab_size: int = 49408,
        templates: Sequence[str] = VILD_TEMPLATES,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.templates = tuple(templates)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.transformer = TextTransformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(0.0))
        self.bg_embed = nn.Parameter(torch.zeros(1, embed_dim))
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=True)
        self._cache: dict[str, torch.Tensor] = {}

    def clear_cache(self) -> None:
        """Call after the weights change: cached rows belong to the old weights."""
        self._cache.clear()

    def cached_rows(self) -> dict[str, torch.Tensor]:
        """The words encoded so far and their rows (what a disk cache stores)."""
        return dict(self._cache)

    def add_cached_rows(self, rows: Mapping[str, torch.Tensor]) -> None:
        """Prime the cache with rows these same weights produced earlier (a disk cache)."""
        for word, row in rows.items():
            self._cache[word] = row.to(torch.float32)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalized text embeddings of token id rows [B, 77] -> [B, D].

        The attention is causal and the output is read at the end-of-text token, so padding
        after the longest sequence in the batch cannot change the result: it is cut off.
        """
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        tokens = tokens[:, :length]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.transformer(x, self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        return F.normalize(x, dim=-1)

    @torch.no_grad()
    def embed_words(self, words: Sequence[str], batch_size: int = 512) -> torch.Tensor:
        """Template-ensembled embedding per word [V, D], cached per word."""
        missing = [w for w in dict.fromkeys(words) if w not in self._cache]
        if missing:
            device = self.text_projection.device
            prompts = [t.format(w) for w in missing for t in self.templates]
            tokens = tokenize(prompts, self.context_length).to(device)
            embeds = torch.cat(
                [self.encode_text(chunk) for chunk in tokens.split(batch_size)]
            ).float()
            embeds = embeds.view(len(missing), len(self.templates), -1).mean(dim=1)
            for word, row in zip(missing, F.normalize(embeds, dim=-1)):
                self._cache[word] = row
        if not words:
            return self.bg_embed.new_zeros(0, self.bg_embed.shape[-1])
        device = self.bg_embed.device
        return torch.stack([self._cache[w].to(device) for w in words])

    def class_rows(self, text_rows: torch.Tensor) -> torch.Tensor:
        """[V, D] text rows -> normalized classifier [V+1, D] with the void row last."""
        rows = torch.cat([text_rows.to(self.bg_embed.dtype), self.bg_embed], dim=0)
        return F.normalize(rows, dim=-1)
