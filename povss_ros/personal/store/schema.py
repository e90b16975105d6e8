"""What a stored concept's files must be before the store trusts them: read with a size bound,
following no link (`read_bounded`); every meta.json field of its type, the folder the id its
name derives (`check_meta`); the tensors' checksum, shapes and dtype (`load_concept`); and the
form its shots are written in (`shot_arrays`).

Each check raises ConceptError saying what is wrong and what to do; the store (`layout`) turns
it into one problem line for that folder and goes on with the others.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors

from ..concept import Concept
from ..names import canonical_name, concept_id

FORMAT_VERSION = 1
MAX_META_BYTES = 1 << 20
MAX_TENSOR_BYTES = 64 << 20
MAX_SHOT_BYTES = 64 << 20
MAX_KERNEL = 31
MAX_LOOK_ALIKES = 1000  # look-alikes one concept may keep ("not this one" marks)
MAX_SURROUNDINGS = 1000  # shots' surroundings one concept may keep (one per shot)
_SHA_RE = re.compile(r"[0-9a-f]{64}")


class ConceptError(ValueError):
    """One stored concept that cannot be used, with what to do about it."""


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "a device or special file"


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. A symbolic link, FIFO, folder,
    device or larger file is refused (ConceptError) without being followed, opened or read."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ConceptError(f"{path.name} is {_kind(mode)}, not a regular file")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConceptError(f"{path.name} is missing") from None
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise ConceptError(f"{path.name} cannot be opened ({why})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConceptError(f"{path.name} is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise ConceptError(f"{path.name} is {info.st_size} bytes, over the limit of {limit}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ConceptError(f"{path.name} grew past the limit of {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise ConceptError(f"{path.name} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)



def parse_meta(data: bytes, name: str) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ConceptError(f"{name} is unreadable (not valid JSON: {str(exc)[:120]})") from None


def _is_int(v: object, low: int = 0) -> bool:
    return type(v) is int and v >= low


def _is_num(v: object) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _opt(check):  # noqa: ANN001, ANN202
    return lambda v: v is None or check(v)


def _bools(v: object) -> bool:
    return isinstance(v, dict) and all(type(x) is bool for x in v.values())


def _losses(v: object) -> bool:
    return isinstance(v, list) and all(type(x) in (int, float) for x in v)


# Field -> (required, check); extra fields are allowed (written by newer versions).
META_FIELDS = {
    "name": (True, lambda v: isinstance(v, str)),
    "concept_id": (True, lambda v: isinstance(v, str)),
    "model_fingerprint": (True, lambda v: isinstance(v, str)),
    "tensors_sha256": (True, lambda v: isinstance(v, str) and _SHA_RE.fullmatch(v)),
    "concept": (True, lambda v: isinstance(v, dict)),
    "canonical_name": (False, lambda v: isinstance(v, str)),
    "base_class": (False, lambda v: isinstance(v, str)),
    "switches": (False, _bools),
    "teach_config": (False, lambda v: isinstance(v, dict)),
    "shots": (False, _is_int),
    "negatives": (False, _is_int),
    "fit_iou": (False, _opt(_is_num)),
    "loss_first_last": (False, _opt(_losses)),
    "train_seconds": (False, _opt(_is_num)),
    "created_at": (False, lambda v: isinstance(v, str)),
    "san_variant": (False, lambda v: isinstance(v, str)),
}
CONCEPT_FIELDS = {
    "name": (True, lambda v: isinstance(v, str)),
    "base_class": (True, lambda v: isinstance(v, str)),
    "n_queries": (True, lambda v: _is_int(v, 1)),
    "dim": (True, lambda v: _is_int(v, 1)),
    "kernel": (True, lambda v: _is_int(v, 1) and v % 2 == 1 and v <= MAX_KERNEL),
    "alpha": (True, _is_num),
    "use_prompt": (True, lambda v: type(v) is bool),
    "use_negative": (True, lambda v: type(v) is bool),
    "use_visual": (True, lambda v: type(v) is bool),
    "even_negative": (False, lambda v: type(v) is bool),
    "unique": (False, lambda v: type(v) is bool),
    "look_alikes": (False, lambda v: _is_int(v) and v <= MAX_LOOK_ALIKES),
    "surroundings": (False, lambda v: _is_int(v) and v <= MAX_SURROUNDINGS),
    "text_init": (False, lambda v: isinstance(v, str)),
}


def _check_fields(obj: dict, fields: dict, where: str) -> None:
    for key, (required, check) in fields.items():
        if key not in obj:
            if required:
                raise ConceptError(f"{where} has no {key!r} field")
        elif not check(obj[key]):
            raise ConceptError(f"{where} field {key!r} has a wrong type or value: "
                               f"{str(obj[key])[:80]!r}")


def check_meta(meta: object, cid: str) -> dict:
    """`meta` when every field has its type and the folder `cid` is the one its name derives;
    ConceptError naming the field otherwise. The class id is checked by
    `registry.assign_class_ids`."""
    if not isinstance(meta, dict):
        raise ConceptError(f"meta.json holds {type(meta).__name__}, not an object")
    if meta.get("format_version") != FORMAT_VERSION or type(meta["format_version"]) is not int:
        raise ConceptError(f"unknown format_version {meta.get('format_version')!r} in meta.json")
    _check_fields(meta, META_FIELDS, "meta.json")
    _check_fields(meta["concept"], CONCEPT_FIELDS, "meta.json 'concept'")
    name = meta["name"]
    try:
        key, derived = canonical_name(name, strict=False), concept_id(name)
    except ValueError as exc:
        raise ConceptError(f"meta.json name is not a valid concept name ({exc})") from None
    if meta["concept"]["name"] != name:
        raise ConceptError(f"meta.json 'concept' names {meta['concept']['name']!r}, not {name!r}")
    if meta.get("canonical_name", key) != key:
        raise ConceptError(f"meta.json canonical_name {meta['canonical_name']!r} is not {key!r}")
    if meta["concept_id"] != cid or derived != cid:
        raise ConceptError(
            f"meta.json belongs to {meta['concept_id']!r} (name {name!r} has id {derived}), not "
            f"to this folder (a copied or renamed folder?)"
        )
    return meta


def load_concept(
    data: bytes, meta: dict, folder: Path, fingerprint: str, n: int, dim: int
) -> Concept:
    """The concept of a checked meta and its tensor file's bytes, or ConceptError."""
    name = meta["name"]
    if meta["model_fingerprint"] != fingerprint:
        raise ConceptError(
            f"concept {name!r} was taught for another model (fingerprint "
            f"{meta['model_fingerprint']}, this model {fingerprint}): correct it (a teach "
            f"with correct: true, nothing more needed) to fit it again for this model from "
            f"its stored shots and look-alikes (kept in {folder})"
        )
    if hashlib.sha256(data).hexdigest() != meta["tensors_sha256"]:
        raise ConceptError(f"concept {name!r}: concept.safetensors is corrupt (checksum)")
    info = meta["concept"]
    k = info["kernel"]
    expected = {"t_per": (1, dim), "t_text": (1, dim), "f_per": (1, dim), "w_z": (1, n),
                "w_m_weight": (1, n, k, k), "w_m_bias": (1,)}
    if info.get("look_alikes", 0):
        expected["look_alikes"] = (info["look_alikes"], dim)
    if info.get("surroundings", 0):
        expected["surroundings"] = (info["surroundings"], dim)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # noqa: BLE001 - any malformed content is a skipped concept
        raise ConceptError(f"concept {name!r}: tensors cannot be read ({exc})") from None
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}
    if shapes != expected or info["n_queries"] != n or info["dim"] != dim:
        raise ConceptError(f"concept {name!r}: tensor shapes {shapes} do not fit this model "
                           f"(N={n}, D={dim}): teach it again")
    if not all(t.dtype == torch.float32 and t.isfinite().all() for t in tensors.values()):
        raise ConceptError(f"concept {name!r}: non-finite or non-float32 tensors")
    return Concept.from_parts(info, tensors)


def shot_arrays(shot: object) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, mask uint8 0/255) from a ShotFeatures or an (image, mask) pair."""
    image, mask = (shot.image, shot.mask) if hasattr(shot, "image") else shot  # type: ignore
    if isinstance(mask, torch.Tensor):
        mask = mask.cpu().numpy()
    mask = np.asarray(mask)
    mask = (mask if mask.dtype == bool else mask > (127 if mask.max() > 1 else 0)).astype(np.uint8)
    return np.ascontiguousarray(image, dtype=np.uint8), mask * 255
