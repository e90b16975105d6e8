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
for ``forgotten``, none. The whole envelope is bounded (`MAX_SHARED_BYTES`), its header too
(`MAX_HEADER_BYTES`, `MAX_ENTRIES`); every entry's name, offsets and place (no two overlap)
are checked before a byte is copied, and the shots' declared sizes (`MAX_SHOT_SIDE`, in all
`MAX_SHARED_PIXELS`) before any decodes.

Which of two versions of one concept a node keeps (`newer`): the later ``created_at`` (the
time of the teaching node's last save; or the forget's time), ties broken by the larger node
id, so every node decides the same way, provided the nodes' clocks are synchronised (a stamp
more than `MAX_CLOCK_AHEAD` ahead of the receiver's clock is refused).
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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
KINDS = ("shots", "negatives")
MAX_SHARED_SHOTS = 32  # image/mask pairs per kind (shots, look-alikes) a message may carry
MAX_SHOT_SIDE = 4096  # pixels: a shot's declared size is checked before it is decoded
# Pixels one message may decode, images and masks together, summed from the PNG headers
# before any decodes (about 4 bytes a pixel once decoded: at most ~256 MiB).
MAX_SHARED_PIXELS = 64_000_000
MAX_ENTRIES = 2 + len(KINDS) * 2 * MAX_SHARED_SHOTS  # meta, tensors, every image and mask
MAX_HEADER_BYTES = 64 << 10  # MAX_ENTRIES short entries and the metadata fit many times over
# A whole message, shots included: what the topic's history holds per event (docs/ros.md).
# A concept's meta.json and tensors take tens of KiB (a few MiB with a thousand look-alikes); a
# sender leaves out the shots that would not fit (`pack`).
MAX_SHARED_BYTES = 32 << 20
MAX_TEXT = 256  # characters of a sender id, fingerprint or stamp
# A received stamp may be this far ahead of the receiver's clock (clocks synchronised by NTP
# differ by far less); a later one is refused, as it would win over every later version.
MAX_CLOCK_AHEAD = timedelta(hours=1)
_ENVELOPE = ("format", "version", "event", "sender", "concept_id", "fingerprint", "stamp")
_EXAMPLE_RE = re.compile(r"(shots|negatives)/(\d{3})_(image|mask)\.png")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    bytes (taught), `examples`: shots and look-alikes as (RGB image, mask) pairs to carry, in
    order while they fit the bounds a receiver checks (`MAX_SHARED_BYTES`,
    `MAX_SHARED_PIXELS`, `MAX_SHOT_SIDE`): the rest are left out, never the concept."""
    arrays = {k: np.frombuffer(v, np.uint8) for k, v in (files or {}).items()}
    used = sum(len(v) for v in (files or {}).values()) + MAX_HEADER_BYTES
    pixels = 0
    for kind, pairs in (examples or {}).items():
        for i, (image, mask) in enumerate(pairs[:MAX_SHARED_SHOTS]):
            img, msk = schema.shot_arrays((image, mask))
            if max(img.shape[:2]) > MAX_SHOT_SIDE:
                break
            png_img, png_msk = encode_png(img), encode_png(msk)
            more = 2 * img.shape[0] * img.shape[1]
            if used + len(png_img) + len(png_msk) > MAX_SHARED_BYTES or (
                    pixels + more > MAX_SHARED_PIXELS):
                break
            used, pixels = used + len(png_img) + len(png_msk), pixels + more
            arrays[f"{kind}/{i:03d}_image.png"] = np.frombuffer(png_img, np.uint8)
            arrays[f"{kind}/{i:03d}_mask.png"] = np.frombuffer(png_msk, np.uint8)
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


def _allowed(name: object) -> bool:
    """Whether `name` is an entry a message may hold: meta.json, the tensors, or one image or
    mask of a shot or look-alike numbered below `MAX_SHARED_SHOTS`."""
    if name in (META_KEY, TENSORS_KEY):
        return True
    match = _EXAMPLE_RE.fullmatch(name) if isinstance(name, str) else None
    return match is not None and int(match[2]) < MAX_SHARED_SHOTS


def _files(data: bytes) -> tuple[dict[str, str], dict[str, memoryview]]:
    """(metadata, name -> bytes as a view into `data`) of a safetensors envelope whose every
    entry has an allowed name (`_allowed`) and is a 1-D uint8 array laid out in the data
    section, no two overlapping; ConceptError otherwise. The whole header is checked before
    any entry is sliced, and nothing is copied: a hostile header (many entries, or entries
    that all point at the same bytes) is refused without allocating for it."""
    if len(data) > MAX_SHARED_BYTES:
        raise ConceptError(f"message of {len(data)} bytes, over the limit of {MAX_SHARED_BYTES}")
    if len(data) < 8:
        raise ConceptError("message too short for a header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise ConceptError(f"header of {size} bytes does not fit the message (at most "
                           f"{MAX_HEADER_BYTES} bytes)")
    header = schema.parse_meta(bytes(data[8 : 8 + size]), "the message header")
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ConceptError("the message header has no __metadata__ object")
    meta = header.pop("__metadata__")
    if len(header) > MAX_ENTRIES:
        raise ConceptError(f"{len(header)} entries in the message, over the limit of "
                           f"{MAX_ENTRIES}")
    body = memoryview(data)[8 + size :]
    spans = []
    for name, entry in header.items():
        if not _allowed(name):
            raise ConceptError(f"unknown entry {str(name)[:60]!r} (a message holds {META_KEY}, "
                               f"{TENSORS_KEY} and shots|negatives/NNN_image|mask.png, NNN "
                               f"below {MAX_SHARED_SHOTS})")
        try:
            start, end = entry["data_offsets"]
            ok = (entry["dtype"] == "U8" and type(start) is int and type(end) is int
                  and 0 <= start <= end <= len(body) and entry["shape"] == [end - start])
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ConceptError(f"entry {name!r} is not a byte array within the message")
        spans.append((start, end, name))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ConceptError(f"entries {first!r} and {second!r} overlap")
    if sum(end - start for start, end, _ in spans) > len(body):  # implied; kept explicit
        raise ConceptError("the entries add up to more than the message")
    return meta, {name: body[start:end] for start, end, name in spans}


def _declared_size(data: memoryview, name: str) -> tuple[int, int]:
    """(width, height) a PNG's header declares, read without decoding its pixels (as
    `ros.conversions.declared_size` sizes camera images), within `MAX_SHOT_SIDE`."""
    if bytes(data[:8]) != _PNG_MAGIC:
        raise ConceptError(f"{name} is not a PNG")
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            width, height = image.size
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure is refused
        raise ConceptError(f"{name} is not a PNG ({exc})") from None
    if min(width, height) <= 0 or max(width, height) > MAX_SHOT_SIDE:
        raise ConceptError(f"{name} is {width}x{height}, over {MAX_SHOT_SIDE} px a side")
    return width, height


def _shot(data: memoryview, name: str, mode: str) -> np.ndarray:
    """A PNG's pixels (its declared size checked by `_declared_size` before)."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            return np.asarray(image.convert(mode))
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure is refused
        raise ConceptError(f"{name} is not a PNG ({exc})") from None


def _examples(files: dict[str, memoryview]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The shots and look-alikes a message carries, popped from `files`: every PNG's declared
    size is read and their total held to `MAX_SHARED_PIXELS` before any decodes."""
    pixels = 0
    for name, data in files.items():
        if _EXAMPLE_RE.fullmatch(name):
            width, height = _declared_size(data, name)
            pixels += width * height
    if pixels > MAX_SHARED_PIXELS:
        raise ConceptError(f"the shots declare {pixels} pixels, over the limit of "
                           f"{MAX_SHARED_PIXELS} for one message")
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for kind in KINDS:
        pairs, i = [], 0
        while f"{kind}/{i:03d}_image.png" in files:
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


def unpack(data: bytes, fingerprint: str, n_queries: int, dim: int,
           now: datetime | None = None) -> SharedConcept:
    """A received envelope, checked as a stored concept is at load (`schema.check_meta`,
    `schema.load_concept`: size, fields, checksum, shapes, finite float32) and only for these
    weights (`fingerprint`), its stamp no later than `MAX_CLOCK_AHEAD` after `now` (default:
    this machine's clock; a stamp from the future would win over every later version);
    ConceptError saying what is wrong otherwise."""
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
    if out.stamp > (now or datetime.now(timezone.utc)) + MAX_CLOCK_AHEAD:
        raise ConceptError(f"stamped {meta['stamp'][:40]}, more than {MAX_CLOCK_AHEAD} after "
                           "this node's clock: the sender's clock runs ahead (keep the fleet's "
                           "clocks synchronised)")
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
    stored = schema.check_meta(schema.parse_meta(bytes(files.pop(META_KEY)), META_KEY),
                                cid)
    if "class_id" in stored and not valid_class_id(stored["class_id"]):
        raise ConceptError(f"class id {str(stored['class_id'])[:20]!r} is not valid")
    if parse_stamp(stored.get("created_at")) != out.stamp:
        raise ConceptError("the message's stamp is not the concept's created_at")
    out.tensors = bytes(files.pop(TENSORS_KEY))
    out.concept = schema.load_concept(out.tensors, stored, Path(f"<shared {cid}>"), fingerprint,
                                      n_queries, dim)
    out.examples = _examples(files)
    if files:
        raise ConceptError(f"unexpected entries {sorted(files)[:3]} (a shot or look-alike "
                           "out of order)")
    out.meta = {**stored, "shared_from": out.sender}
    return out


def newer(stamp: datetime, sender: str, than_stamp: datetime, than_sender: str) -> bool:
    """Whether an event (`stamp`, `sender`) wins over another: the later time, ties by the
    larger node id (module docstring)."""
    return (stamp, sender) > (than_stamp, than_sender)

