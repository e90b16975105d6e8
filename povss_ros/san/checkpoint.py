"""Loading SAN weights: strict, safe, and with errors that say what to do.

Checkpoints are untrusted files. `.pth` files are read with `torch.load(weights_only=True)`,
which refuses pickled code; `.safetensors` files cannot carry code at all. Before any parser
reads a file, `check_weights_file` tells what it is from `os.stat` and its first bytes, so
what lands at the weights path instead of a checkpoint (a failed download's HTML page, a
text file, a directory, a FIFO, an empty or cut-off file) is named as what it is. Nothing here
ever touches the network: a missing file is an error that names where the official
weights come from.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import pickle
import pickletools
import stat
import struct
import unicodedata
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


# How much of a weights file is read to tell what it is before any parser sees it: enough
# for an error page's <html>/<head>/<body> tag after a preamble of comments, a tar header's
# "ustar" at offset 257 and the start of a safetensors JSON header.
SNIFF_BYTES = 4096
# The leading bytes of what torch.load reads: a zip archive (torch.save since 1.6), a pickle
# of protocol 2 or higher (the legacy format; torch.save's default protocol is 2) and, at
# offset 257, a tar archive (torch's oldest format). Anything else is not a PyTorch file.
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"
TAR_MAGIC, TAR_MAGIC_AT = b"ustar", 257
# safetensors: an 8-byte little-endian header length, then that many bytes of JSON; its own
# reader refuses headers above 100 MB, so a larger claimed length is not a safetensors file.
SAFETENSORS_MAX_HEADER = 100_000_000
# A Git LFS pointer (a clone without `git lfs pull`) begins with this line.
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
DOWNLOAD_HINT = "did the download fail? Download the file again"

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _what_text(head: bytes) -> str | None:
    """What a file that begins with `head` is, when it is a document rather than binary
    weights (an error page saved in place of a download, a pointer, a note); None for binary."""
    if b"\x00" in head:  # every checkpoint format has NUL bytes within its first few KiB
        return None
    try:  # a UTF-8 sequence cut by SNIFF_BYTES is still text
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v" for c in text):
        return None
    body = text.lstrip("\ufeff \t\r\n").lower()
    if body.startswith(("<!doctype html", "<html")) or (
            body.startswith("<") and any(t in body for t in ("<html", "<head", "<body"))):
        return f"an HTML page, not a checkpoint: {DOWNLOAD_HINT}"
    if body.startswith("<?xml"):
        return f"an XML document (a server's error answer?), not a checkpoint: {DOWNLOAD_HINT}"
    if head.startswith(LFS_POINTER):
        return ("a Git LFS pointer, not the weights themselves: fetch them (git lfs pull) or "
                "download the file")
    first = text.lstrip("\ufeff \t\r\n").splitlines()[0][:80] if body.strip() else ""
    if body.startswith(("{", "[")):
        return f"a JSON document ({first!r}...), not a checkpoint: {DOWNLOAD_HINT}"
    return f"a text file (it begins {first!r}), not a checkpoint"


def _safetensors_problem(path: Path, head: bytes, size: int) -> str | None:
    """Why a file named .safetensors is not a whole safetensors file, or None: its header
    length and JSON header are read (never more) and the tensors' extent checked against the
    file's size, so a truncated download is named as one."""
    if size < 8:
        return f"is truncated ({size} bytes): too short even for a safetensors header"
    (length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or not 0 < length <= SAFETENSORS_MAX_HEADER:
        return "is not a safetensors file (no safetensors header at its start)"
    if 8 + length > size:
        return (f"is truncated: its header alone claims {8 + length} bytes, the file has "
                f"{size}: {DOWNLOAD_HINT}")
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(length)
    try:
        header = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return f"is not a readable safetensors file: its header is not valid ({exc})"
    if 8 + length + end > size:
        return (f"is truncated: {size} of its {8 + length + end} bytes are there: "
                f"{DOWNLOAD_HINT}")
    return None


def check_weights_file(path: str | os.PathLike) -> Path:
    """Refuse, with what it is, a weights path that is no checkpoint file, before any parser
    reads it: missing, a directory, a FIFO or device (never opened: reading a FIFO would
    block), empty, an HTML error page or other text saved in place of a download, a Git LFS
    pointer, a .pth that is neither zip nor pickle, a truncated .safetensors."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {path} ({OFFICIAL_SOURCE})") from None
    except OSError as exc:  # a symbolic-link loop, a component that is a file, permissions
        raise CheckpointError(f"weights file {path} cannot be reached: {exc.strerror or exc}") \
            from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"weights path {path} is a directory: give the checkpoint file "
                              f"itself ({OFFICIAL_SOURCE})")
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), "not a regular file")
        raise CheckpointError(f"weights path {path} is {kind}, not a checkpoint file: give the "
                              "checkpoint file itself")
    if info.st_size == 0:
        raise CheckpointError(f"weights file {path} is empty (0 bytes): {DOWNLOAD_HINT}")
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        raise CheckpointError(f"weights file {path} cannot be read: {exc.strerror or exc}") \
            from None
    what = _what_text(head)
    if what:
        raise CheckpointError(f"weights file {path} is {what}")
    if path.suffix == ".safetensors":
        problem = _safetensors_problem(path, head, info.st_size)
        if problem:
            raise CheckpointError(f"weights file {path} {problem}")
    elif ZIP_MAGIC.startswith(head):  # cut inside the zip signature itself
        raise CheckpointError(f"weights file {path} is corrupt or truncated: {info.st_size} "
                              f"bytes ({DOWNLOAD_HINT})")
    elif not (head.startswith((ZIP_MAGIC, PICKLE_PROTO))
              or head[TAR_MAGIC_AT:TAR_MAGIC_AT + len(TAR_MAGIC)] == TAR_MAGIC):
        hint = (": it looks like a safetensors file, name it .safetensors"
                if head[8:9] == b"{" else f" (it begins {head[:8].hex(' ')})")
        raise CheckpointError(f"weights file {path} is not a PyTorch checkpoint, neither a zip "
                              f"archive nor a pickle{hint}")
    return path


def _pickle_damaged(path: Path, pickles: int = 5) -> bool:
    """True when the file is a pickle stream (the legacy format: 5 pickles, then raw
    storages) and one of its first `pickles` pickles is cut short or holds no valid opcode: a
    truncated file whose cut-off name the weights-only unpickler reports as an unknown global
    would otherwise read as a hostile one. Opcodes are only listed, never run."""
    try:
        with open(path, "rb") as f:
            if not f.peek(1).startswith(PICKLE_PROTO):
                return False
            for _ in range(pickles):
                if not f.peek(1):
                    return False
                for _op in pickletools.genops(f):
                    pass
    except ValueError:  # "pickle exhausted before seeing STOP", an unknown opcode...
        return True
    except OSError:
        return False
    return False


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from a .pth/.pt (official layout, optionally under "model") or .safetensors,
    after `check_weights_file` has refused whatever is no checkpoint."""
    path = check_weights_file(path)
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
        if _pickle_damaged(path):
            raise CheckpointError(f"{path} is corrupt or truncated: its pickle is cut short or "
                                  f"damaged ({DOWNLOAD_HINT})") from exc
        raise CheckpointError(
            f"{path} was refused: it contains pickled objects other than tensors, which could "
            f"run code when loaded ({str(exc).splitlines()[0]})"
        ) from exc
    # A damaged file makes torch's readers fail in any way (KeyError, IndexError and
    # struct.error seen besides the usual ones): each is "corrupt", never a crash.
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"{path} is corrupt or truncated: {str(exc) or type(exc).__name__}") from exc
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
