"""What the perception engine is started with: one dataclass, one default per setting.

ROS parameters and CLI flags are not written anywhere else: the node declares one parameter
per user-facing field (`options.option`) of `EngineSettings` (same name), of `TeachConfig`
(``teach_<name>``) and of `ObjectConfig` (``objects_<name>``), with the field's help as its
description; `povss` builds its flags the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .objects import ObjectConfig
from .options import CONFIGURE, option, validate
from .personal.teach import TeachConfig
from .san.compiled import COMPILE_MODES


@dataclass
class EngineSettings:
    """Start-up settings of `PerceptionEngine` (and of the node, which adds only transport)."""

    weights: str = option(
        "", "SAN weights: the official san_vit_b_16.pth (SAN's authors publish it on Hugging "
        "Face, Mendel192/san) or a .safetensors written by this project. Required",
        read=CONFIGURE)
    variant: str = option(
        "", "SAN variant of a .pth file; empty = from the file",
        choices=("", "vit_b16", "vit_l14_336", "tiny"), read=CONFIGURE)
    device: str = option(
        "auto", "where SAN runs: auto = CUDA when present, else the CPU",
        choices=("auto", "cpu", "cuda", "cuda:*"), read=CONFIGURE)
    precision: str = option(
        "auto", "arithmetic of SAN's forward (autocast); auto = the fastest the device has "
        "natively: bf16 on a GPU from compute capability 8.0 (else fp16) or on a CPU with "
        "avx512_bf16/amx_bf16, else fp32; fp16 needs CUDA; diagnostics show the one chosen",
        choices=("auto", "fp32", "fp16", "bf16"), read=CONFIGURE)
    vocabulary: list[str] = option(
        ["auto"], "open-vocabulary words; [auto] = the words the weights declare (the official "
        "checkpoints: COCO-Stuff's 171), [coco_stuff] = COCO-Stuff's")
    text_cache_dir: str = option(
        "auto", "folder keeping the vocabulary's text embeddings between runs; auto = "
        "$XDG_CACHE_HOME/povss_ros (else ~/.cache/povss_ros), empty = none", read=CONFIGURE)
    concept_store: str = option(
        "~/.povss/concepts", "folder of the personal concepts, one sub-folder per concept",
        read=CONFIGURE)
    compile: str = option(
        "off", "torch.compile SAN's frozen forward at configure (warm-up at the model's 4:3 "
        "input size; another frame size compiles again): default, reduce-overhead (with CUDA "
        "graphs on a GPU) or max-autotune; off = eager", choices=COMPILE_MODES, read=CONFIGURE)
    input_min_size: int = option(
        0, "shortest image side fed to SAN, in pixels; 0 = the model's own (640 for ViT-B/16)",
        low=0, high=2048)
    resize: str = option(
        "exact", "how frames are resized to SAN's input size: exact = SAN's official resize (PIL "
        "bilinear on uint8, on the CPU), fast = torch bilinear on the model's device (within "
        "one grey level)", choices=("exact", "fast"))
    capture_buffer_size: int = option(
        30, "recent camera frames kept for teaching without explicit images", low=1, high=300)
    capture_buffer_mib: int = option(
        256, "memory bound of those frames, in MiB: the oldest go first (the newest frame is "
        "always kept, even alone above it)", low=1, high=65536)
    capture_encodings_mib: int = option(
        64, "memory kept for SAN's features of segmented frames (about 2 MiB a 640x480 frame at "
        "ViT-B/16, on the model's device), so a teach from captured frames skips their forward; "
        "0 = keep none", low=0, high=65536)
    teach_default_frames: int = option(
        5, "captured frames a teach uses when its request's num_frames is 0", low=1, high=300)
    allow_random_weights: bool = option(
        False, "run with seeded RANDOM weights when weights is empty (plumbing tests only)",
        read=CONFIGURE)
    teach: TeachConfig = field(default_factory=TeachConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)

    def __post_init__(self) -> None:
        """A value outside its field's limits is a ValueError naming the field (the nested
        TeachConfig and ObjectConfig check themselves when they are made)."""
        validate(self)
