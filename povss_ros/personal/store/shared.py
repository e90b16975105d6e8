"""One concept as it travels between nodes (`pack`), and the checks a received one must pass
before anything is stored (`unpack`): the same checks a stored concept passes at load, plus
the envelope's.

The envelope is one safetensors file (a JSON header, then raw bytes; no pickle, readable by any
safetensors tool). Its ``__metadata__`` (strings only) holds:

- ``format`` = ``povss-shared-concept``, ``version`` = ``1``;
- ``event``: ``taught`` (a concept learnt or corrected) or ``forgotten``;
- ``sender``: the publishing node's id (a node ignores its own messages);
- ``concept_id``: the concept's id (the folder name in every store);
- ``fingerprint``: the weights' fingerprint the concept was taught for;
- ``stamp``: the concept's ``created_at`` (taught) or the time of the forget (forgotten), ISO
  8601 with a time zone.

Its tensors are 1-D uint8 arrays holding files' bytes: for ``taught``, ``meta.json`` and
``concept.safetensors`` exactly as the sender's store holds them, and optionally its shots and
look-alikes as PNG pairs (``shots/000_image.png``, ``shots/000_mask.png``, ``negatives/...``);
for ``forgotten``, none. The whole envelope is bounded (`MAX_SHARED_BYTES`), its header too,
and every offset is checked before a byte is read.

Which of two versions of one concept a node keeps (`newer`): the later ``created_at`` (or
forget time), ties broken by the larger node id, so every node decides the same way.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save as save_arrays

from ...io import encode_png
from ..concept import Concept
from ..names import ID_RE
from . import schema
from .registry import valid_class_id
from .schema import ConceptError

FORMAT, VERSION = "povss-shared-concept", "1"
TAUGHT, FORGOTTEN = "taught", "forgotten"
META_KEY, TENSORS_KEY = "meta.json", "concept.safetensors"
MAX_SHARED_SHOTS = 32  # image/mask pairs per kind (shots, look-alikes) a message may carry
MAX_SHOT_SIDE = 4096  # pixels: a shot's declared size is checked before it is decoded
MAX_HEADER_BYTES = 1 << 20
MAX_SHARED_BYTES = (schema.MAX_META_BYTES + schema.MAX_TENSOR_BYTES + schema.MAX_SHOT_BYTES
                    + MAX_HEADER_BYTES)
MAX_TEXT = 256  # characters of a sender id, fingerprint or stamp
KINDS = ("shots", "negatives")
_ENVELOPE = ("format", "version", "event", "sender", "concept_id", "fingerprint", "stamp")


@dataclass
class SharedConcept:
    """A checked message: a forget (no meta) or a concept ready to commit."""

    event: str
    sender: str
    concept_id: str
    fingerprint: str
    stamp: datetime
    meta: dict | None = None
    tensors: bytes = b""
    concept: Concept | None = None
    examples: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


def pack(event: str, sender: str, concept_id: str, fingerprint: str, stamp: str,
         files: dict[str, bytes] | None = None,
         examples: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = None) -> bytes:
    """The envelope of one event (module docstring); `files`: meta.json and the tensors'
    bytes (taught), `examples`: shots and look-alikes as (RGB image, mask) pairs to carry."""
    arrays = {k: np.frombuffer(v, np.uint8) for k, v in (files or {}).items()}
    for kind, pairs in (examples or {}).items():
        for i, (image, mask) in enumerate(pairs[:MAX_SHARED_SHOTS]):
            img, msk = schema.shot_arrays((image, mask))
            arrays[f"{kind}/{i:03d}_image.png"] = np.frombuffer(encode_png(img), np.uint8)
            arrays[f"{kind}/{i:03d}_mask.png"] = np.frombuffer(encode_png(msk), np.uint8)
    meta = {"format": FORMAT, "version": VERSION, "event": event, "sender": sender,
            "concept_id": concept_id, "fingerprint": fingerprint, "stamp": stamp}
    return save_arrays(arrays, metadata=meta)


def parse_stamp(text: object) -> datetime:
    """An ISO 8601 time with a time zone, or ConceptError."""
    try:
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise ValueError("not a string")
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ConceptError(f"time {str(text)[:40]!r} is not ISO 8601") from None
    if stamp.tzinfo is None:
        raise ConceptError(f"time {text!r} has no time zone")
    return stamp


def _files(data: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """(metadata, name -> bytes) of a safetensors envelope whose every entry is a 1-D uint8
    array laid out in the data section; ConceptError otherwise."""
    if len(data) > MAX_SHARED_BYTES:
        raise ConceptError(f"message of {len(data)} bytes, over the limit of {MAX_SHARED_BYTES}")
    if len(data) < 8:
        raise ConceptError("message too short for a header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise ConceptError(f"header of {size} bytes does not fit the message")
    header = schema.parse_meta(data[8 : 8 + size], "the message header")
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ConceptError("the message header has no __metadata__ object")
    meta = header.pop("__metadata__")
    body = memoryview(data)[8 + size :]
    files = {}
    for name, entry in header.items():
        try:
            start, end = entry["data_offsets"]
            ok = (entry["dtype"] == "U8" and type(start) is int and type(end) is int
                  and 0 <= start <= end <= len(body) and entry["shape"] == [end - start])
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ConceptError(f"entry {str(name)[:60]!r} is not a byte array within the message")
        files[name] = bytes(body[start:end])
    return meta, files


def _shot(data: bytes, name: str, mode: str) -> np.ndarray:
    """A PNG's pixels, its declared size checked before it decodes."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            if max(image.size) > MAX_SHOT_SIDE:
                raise ConceptError(f"{name} is {image.size}, over {MAX_SHOT_SIDE} px a side")
            return np.asarray(image.convert(mode))
    except ConceptError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure is refused
        raise ConceptError(f"{name} is not a PNG ({exc})") from None


def _examples(files: dict[str, bytes]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for kind in KINDS:
        pairs, i = [], 0
        while f"{kind}/{i:03d}_image.png" in files:
            if i >= MAX_SHARED_SHOTS:
                raise ConceptError(f"more than {MAX_SHARED_SHOTS} {kind}")
            image = _shot(files.pop(f"{kind}/{i:03d}_image.png"), f"{kind} {i} image", "RGB")
            key = f"{kind}/{i:03d}_mask.png"
            if key not in files:
                raise ConceptError(f"{kind} {i} has no mask")
            mask = _shot(files.pop(key), f"{kind} {i} mask", "L") > 127
            if mask.shape != image.shape[:2]:
                raise ConceptError(f"{kind} {i}: mask and image sizes differ")
            pairs.append((image, mask))
            i += 1
        out[kind] = pairs
    return out


def unpack(data: bytes, fingerprint: str, n_queries: int, dim: int) -> SharedConcept:
    """A received envelope, checked as a stored concept is at load (`schema.check_meta`,
    `schema.load_concept`: size, fields, checksum, shapes, finite float32) and only for these
    weights (`fingerprint`); ConceptError saying what is wrong otherwise."""
    meta, files = _files(data)
    for key in _ENVELOPE:
        if not isinstance(meta.get(key), str) or len(meta[key]) > MAX_TEXT:
            raise ConceptError(f"the message's {key!r} is missing or not a short string")
    if (meta["format"], meta["version"]) != (FORMAT, VERSION):
        raise ConceptError(f"unknown format {meta['format'][:40]!r} version "
                           f"{meta['version'][:8]!r}")
    cid, event = meta["concept_id"], meta["event"]
    if not ID_RE.fullmatch(cid):
        raise ConceptError(f"{cid[:60]!r} is not a concept id")
    if meta["fingerprint"] != fingerprint:
        raise ConceptError(f"concept {cid} was taught for other weights (fingerprint "
                           f"{meta['fingerprint'][:20]}, this node's {fingerprint})")
    out = SharedConcept(event, meta["sender"], cid, fingerprint, parse_stamp(meta["stamp"]))
    if event == FORGOTTEN:
        if files:
            raise ConceptError("a forget carries no files")
        return out
    if event != TAUGHT:
        raise ConceptError(f"unknown event {event[:20]!r}")
    if len(files.get(META_KEY, b"")) > schema.MAX_META_BYTES:
        raise ConceptError(f"{META_KEY} over the limit of {schema.MAX_META_BYTES} bytes")
    if len(files.get(TENSORS_KEY, b"")) > schema.MAX_TENSOR_BYTES:
        raise ConceptError(f"{TENSORS_KEY} over the limit of {schema.MAX_TENSOR_BYTES} bytes")
    if META_KEY not in files or TENSORS_KEY not in files:
        raise ConceptError(f"a taught concept needs {META_KEY} and {TENSORS_KEY}")
    stored = schema.check_meta(schema.parse_meta(files.pop(META_KEY), META_KEY), cid)
    if "class_id" in stored and not valid_class_id(stored["class_id"]):
        raise ConceptError(f"class id {str(stored['class_id'])[:20]!r} is not valid")
    if parse_stamp(stored.get("created_at")) != out.stamp:
        raise ConceptError("the message's stamp is not the concept's created_at")
    out.tensors = files.pop(TENSORS_KEY)
    out.concept = schema.load_concept(out.tensors, stored, Path(f"<shared {cid}>"), fingerprint,
                                      n_queries, dim)
    out.examples = _examples(files)
    if files:
        raise ConceptError(f"unexpected entries {sorted(files)[:3]}")
    out.meta = {**stored, "shared_from": out.sender}
    return out


def newer(stamp: datetime, sender: str, than_stamp: datetime, than_sender: str) -> bool:
    """Whether an event (`stamp`, `sender`) wins over another: the later time, ties by the
    larger node id (module docstring)."""
    return (stamp, sender) > (than_stamp, than_sender)

