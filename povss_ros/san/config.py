"""SAN architecture presets.

One dataclass describes every size the project runs: the two official checkpoints
(ViT-B/16 and ViT-L/14-336) and small configurations of the same code for tests and the
synthetic world. Field names follow the official config keys where one exists so that a
reader can go from SAN's official configuration to the code in one hop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class SANConfig:
    """Every shape and inference constant of one SAN variant."""

    name: str
    # CLIP image tower (shared by the visual extractor and the recognition head).
    clip_patch: int = 16
    clip_width: int = 768
    clip_layers: int = 12
    clip_heads: int = 12
    clip_pretrain_size: int = 224  # positional_embedding grid = pretrain_size / patch
    embed_dim: int = 512  # the joint text-image space (D)
    feature_last_layer: int = 9  # extractor runs blocks [0, 9); the rec head the rest
    clip_scale: float = 0.5  # CLIP sees the padded image scaled by this factor
    # CLIP text tower ("ov_classifier").
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    # Side adapter: a small ViT on the full-resolution image.
    side_width: int = 240
    side_depth: int = 8
    side_heads: int = 6
    side_mlp_ratio: int = 4
    side_patch: int = 16
    side_image_size: int = 640  # grid of side pos_embed = side_image_size / side_patch
    num_queries: int = 100
    # (side stage, CLIP feature index): stage 0 is the input, stage i follows side block i.
    fusion_map: tuple[tuple[int, int], ...] = ((0, 0), (1, 3), (2, 6), (3, 9))
    # Mask decoder.
    decoder_channels: int = 256
    decoder_mlp_layers: int = 3
    # Inference preprocessing.
    min_size: int = 640
    max_size: int = 2560
    size_divisibility: int = 32
    # COCO-Stuff classes the official model was trained on; only sizes a training buffer.
    num_train_classes: int = 171
    pixel_mean: tuple[float, float, float] = field(
        default=(0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
    )
    pixel_std: tuple[float, float, float] = field(
        default=(0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)
    )

    @property
    def attn_bias_heads(self) -> int:
        """The mask decoder predicts one attention bias per rec-head attention head."""
        return self.clip_heads

    @property
    def clip_grid(self) -> int:
        return self.clip_pretrain_size // self.clip_patch

    @property
    def side_grid(self) -> int:
        return self.side_image_size // self.side_patch

    def validate(self) -> None:
        """Reject shapes the code cannot run, before any tensor is allocated."""
        if not 0 < self.feature_last_layer < self.clip_layers:
            raise ValueError("feature_last_layer must split the CLIP blocks in two")
        for stage, src in self.fusion_map:
            if not 0 <= stage <= self.side_depth:
                raise ValueError(f"fusion stage {stage} outside the side adapter")
            if not 0 <= src <= self.feature_last_layer:
                raise ValueError(f"fusion source {src} is not an extractor output")
        if self.clip_width % self.clip_heads or self.side_width % self.side_heads:
            raise ValueError("widths must divide by their head counts")
        if self.text_width % self.text_heads:
            raise ValueError("text width must divide by its head count")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SANConfig:
        data = dict(data)
        for key in ("fusion_map",):
            if key in data:
                data[key] = tuple(tuple(pair) for pair in data[key])
        for key in ("pixel_mean", "pixel_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


VIT_B16 = SANConfig(name="vit_b16")

VIT_L14_336 = SANConfig(
    name="vit_l14_336",
    clip_patch=14,
    clip_width=1024,
    clip_layers=24,
    clip_heads=16,
    clip_pretrain_size=336,
    embed_dim=768,
    feature_last_layer=18,
    clip_scale=0.7,
    text_width=768,
    text_heads=12,
    fusion_map=((0, 0), (1, 6), (2, 12), (3, 18)),
)

# The same code at toy sizes: tests run it in milliseconds.
TINY = replace(
    VIT_B16,
    name="tiny",
    clip_width=64,
    clip_layers=4,
    clip_heads=2,
    embed_dim=32,
    feature_last_layer=3,
    text_width=32,
    text_layers=2,
    text_heads=2,
    side_width=48,
    side_depth=4,
    side_heads=2,
    side_image_size=128,
    num_queries=16,
    fusion_map=((0, 0), (1, 1), (2, 2), (3, 3)),
    decoder_channels=32,
    min_size=128,
    max_size=512,
)

PRESETS: dict[str, SANConfig] = {c.name: c for c in (VIT_B16, VIT_L14_336, TINY)}


def get_config(name: str) -> SANConfig:
    """Look a preset up by name, with the list of valid names in the error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown SAN variant {name!r}; choose one of {sorted(PRESETS)}") from None
