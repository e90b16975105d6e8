"""The project's own weights files: SAN tensors plus what is needed to use them alone.

A `.safetensors` written here carries, in its metadata, the SAN config it was built with and
the class words it was trained on, so `Segmenter.from_weights(path)` needs no other argument
and defaults to the words the model knows (the small synthetic-world model knows 17, not
COCO-Stuff's 171). Official `.pth` checkpoints carry neither: their variant comes from the
caller (or the file's shapes) and their words are COCO-Stuff's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .io import atomic_path
from .san.checkpoint import CheckpointError, check_weights_file
from .san.config import SANConfig, get_config
from .san.model import SAN


def save_weights(
    model: SAN, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> None:
    """Write the model's tensors, config and (if given) class words as safetensors,
    atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"variant": model.cfg.name, "config": json.dumps(model.cfg.to_dict())}
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def _metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata; {} for any other kind of file. The file is checked
    first (`check_weights_file`), so a FIFO is never opened and an HTML page is named."""
    if not str(path).endswith(".safetensors"):
        return {}
    check_weights_file(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable header is a checkpoint error
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def config_for_weights(path: str | os.PathLike, variant: str | None) -> SANConfig:
    """The file's own config (files written by `save_weights`), else the named variant's
    (default vit_b16, the official ViT-B/16 checkpoint). A `variant` other than the one the
    file's config names is a CheckpointError naming both (empty or None: the file's)."""
    meta = _metadata(path)
    if "config" in meta:
        cfg = SANConfig.from_dict(json.loads(meta["config"]))
        if variant and variant != cfg.name:
            raise CheckpointError(
                f"variant {variant!r} was asked for, but {Path(path).name} holds SAN "
                f"{cfg.name!r} (its own config says so): leave variant empty for this file, "
                f"or give weights of variant {variant!r}")
        return cfg
    return get_config(variant or "vit_b16")


def declared_vocabulary(path: str | os.PathLike) -> list[str] | None:
    """The class words stored with the weights, or None when the file declares none."""
    raw = _metadata(Path(path)).get("class_names")
    if raw is None:
        return None
    try:
        words = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"{path}: its class_names metadata is not JSON ({exc})") from None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
        raise CheckpointError(f"{path}: its class_names metadata is not a list of words")
    return words
