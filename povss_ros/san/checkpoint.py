"""Loading SAN weights: strict, safe, and with errors that say what to do.

Checkpoints are untrusted files. `.pth` files are read with `torch.load(weights_only=True)`,
which refuses pickled code; `.safetensors` files cannot carry code at all. Nothing here
ever touches the network: a missing file is an error that names where the official
weights come from.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .config import PRESETS, SANConfig
from .model import SAN, build_san

OFFICIAL_SOURCE = (
    "the official SAN checkpoints (san_vit_b_16.pth, san_vit_large_14.pth) are published by "
    "SAN's authors on their Hugging Face page (Mendel192/san); download one once and pass its path"
)


class CheckpointError(RuntimeError):
    """A weights file is missing, unreadable, unsafe or does not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from a .pth/.pt (official layout, optionally under "model") or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path} ({OFFICIAL_SOURCE})")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} was refused: it contains pickled objects other than tensors, which could "
            f"run code when loaded ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name the preset whose CLIP patch embedding matches, to explain variant mix-ups."""
    conv = state.get("clip_visual_extractor.conv1.weight")
    if conv is None:
        return None
    for name, cfg in PRESETS.items():
        if tuple(conv.shape) == (cfg.clip_width, 3, cfg.clip_patch, cfg.clip_patch):
            return name
    return None


def check_compatible(
    model: SAN, state: dict[str, torch.Tensor], source: str, limit: int = 5
) -> None:
    """Raise a CheckpointError listing the first mismatching keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"{source} does not fit SAN variant {model.cfg.name!r}"]
    guess = guess_variant(state)
    if guess and guess != model.cfg.name:
        parts.append(f"it looks like a {guess!r} checkpoint: set the model variant to match")
    if missing:
        parts.append(f"{len(missing)} missing keys, first: {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:limit]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, first: {shapes[:limit]}")
    raise CheckpointError("; ".join(parts))


def load_state(model: SAN, state: dict[str, torch.Tensor], source: str) -> SAN:
    """Strictly load tensors into `model` (every key and shape must match)."""
    check_compatible(model, state, source)
    model.load_state_dict(state, strict=True)
    model.ov_classifier.clear_cache()
    return model


def load_weights(model: SAN, path: str | os.PathLike) -> SAN:
    """Strictly load a checkpoint file into `model`."""
    return load_state(model, read_state_dict(path), str(path))


def load_san(cfg: SANConfig, path: str | os.PathLike) -> SAN:
    """Build the variant and load its weights, never leaving a half-loaded model behind."""
    return load_weights(build_san(cfg, seed=None), path).eval()


def fingerprint(model: SAN) -> str:
    """A short hash of every tensor in the model: ties stored concepts to the weights."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]
