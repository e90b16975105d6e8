"""Which stored concept a typed name or id means (`resolve`) and each concept's label-map
class id (`assign_class_ids`), both worked out from the checked meta.json files on every read of
the store (`layout`), so nothing else records them.

Resolving what a caller typed (`resolve`: forget, shots): a name matches the concept whose
normalised name is the same, never a look-alike (the id alone is not enough: its stored name
must match too); otherwise the string matches the concept whose id it is exactly. When a
string is one concept's name and another's id ("my_mug" names the concept with id
``my_mug_0c61fa64`` and is the id of "My Mug"), the name wins and the answer says which id
was left alone; every concept can be addressed by its name.

Class ids: the store owns the registry. Each concept's ``meta.json`` records its label-map
class id (from `PERSONAL_ID_BASE` up), chosen when it is first saved and kept when it is saved
again, so ids are stable across restarts; a forgotten concept's id becomes free. Concepts saved
before ids were recorded take theirs from the old ``.class_ids.json``. The registry is rebuilt
from the sound concepts on every read, never changing a valid recorded id: a recorded id wins
over one from the old file; of two concepts claiming one id the older (``created_at``, then
id order) keeps it; claims from the old file: id order. Losers, invalid recorded ids and
concepts missing from a damaged old file get the lowest free ids, in id order, each with a
problem line; the new id is recorded when that concept is saved again. A concept adopted from
another node (`adopted_class_id`) never takes an id a stored concept holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...vocabulary import PERSONAL_ID_BASE, UNLABELED
from ..names import canonical_name, concept_id
from .schema import MAX_META_BYTES, ConceptError, parse_meta, read_bounded


def valid_class_id(value: object) -> bool:
    return type(value) is int and PERSONAL_ID_BASE <= value < UNLABELED


def assign_class_ids(
    metas: dict[str, dict], legacy: dict[str, int], problems: list[str]
) -> dict[str, int]:
    """Concept id -> class id (rules: module docstring); one problem line per id that had to
    change."""
    claims, pending = [], []
    for cid, meta in sorted(metas.items()):
        if "class_id" in meta and valid_class_id(meta["class_id"]):
            claims.append(((0, meta.get("created_at", ""), cid), meta["class_id"], cid))
            continue
        if "class_id" in meta:
            problems.append(f"concept {cid}: recorded class id {str(meta['class_id'])[:40]!r} is "
                            "not valid; it gets a free one (kept once it is saved again)")
        if cid in legacy:
            claims.append(((1, "", cid), legacy[cid], cid))
        else:
            pending.append(cid)
    out: dict[str, int] = {}
    owner: dict[int, str] = {}
    for _, value, cid in sorted(claims):
        if value in owner:
            problems.append(f"concept {cid}: class id {value} is already {owner[value]}'s (the "
                            "older claim); it gets a free one")
            pending.append(cid)
        else:
            out[cid], owner[value] = value, cid
    free = (i for i in range(PERSONAL_ID_BASE, UNLABELED) if i not in owner)
    for cid in sorted(pending):
        out[cid] = next(free)
    return out


def adopted_class_id(cid: str, sent: object, class_ids: dict[str, int]) -> tuple[int, str]:
    """(class id, note) for concept `cid` arriving from another node with class id `sent`,
    given the store's current `class_ids`: a concept already stored keeps its own; a new one
    takes `sent` when no stored concept holds it, else the lowest free id, with a note saying
    so (""), so that adopting never changes the class id of a concept already stored."""
    if cid in class_ids:
        if sent != class_ids[cid]:
            return class_ids[cid], (f"concept {cid} keeps its class id {class_ids[cid]} here "
                                    f"(the sender's is {sent})")
        return class_ids[cid], ""
    taken = {value: other for other, value in class_ids.items()}
    if isinstance(sent, int) and valid_class_id(sent) and sent not in taken:
        return sent, ""
    free = next(i for i in range(PERSONAL_ID_BASE, UNLABELED) if i not in taken)
    held = f"is {taken[sent]}'s here" if sent in taken else "is not valid"
    return free, (f"concept {cid} gets class id {free} here: the sender's class id {sent} "
                  f"{held} (class ids differ between these nodes for this concept)")


def legacy_class_ids(path: Path, problems: list[str]) -> dict[str, int]:
    """The registry file of stores written before meta ids (`.class_ids.json`), or {}."""
    if not os.path.lexists(path):
        return {}
    try:
        data = parse_meta(read_bounded(path, MAX_META_BYTES), path.name)
        if not isinstance(data, dict):
            raise ConceptError(f"{path.name} holds {type(data).__name__}, not an object")
    except ConceptError as exc:
        problems.append(f"old class-id registry {exc}; ids not recorded in meta.json are rebuilt")
        return {}
    bad = sorted(str(k) for k, v in data.items() if not valid_class_id(v))
    if bad:
        problems.append(f"old class-id registry {path.name}: invalid ids for {', '.join(bad)[:200]}"
                        "; rebuilt")
    return {str(k): v for k, v in data.items() if valid_class_id(v)}


def resolve(metas: dict[str, dict], name_or_id: str) -> tuple[str | None, str]:
    """(concept id, note) of what a caller typed among checked metas (rule: module docstring);
    (None, why) when nothing matches. The note says which other concept a string that is
    both one concept's name and another's id was not taken for ("" otherwise)."""
    by_name = None
    try:
        key, cid = canonical_name(name_or_id, strict=False), concept_id(name_or_id)
    except (TypeError, ValueError):
        key = cid = None
    if cid in metas and canonical_name(metas[cid]["name"], strict=False) == key:
        by_name = cid
    by_id = name_or_id if isinstance(name_or_id, str) and name_or_id in metas else None
    if by_name:
        if by_id in (None, by_name):
            return by_name, ""
        return by_name, (f"; {name_or_id!r} is also the id of concept {metas[by_id]['name']!r}, "
                         "which was left alone (a name is matched before an id: use that "
                         "concept's name)")
    if by_id:
        return by_id, ""
    known = ", ".join(repr(m["name"]) for m in metas.values())
    return None, f"no concept has the name or id {name_or_id!r} (stored: {known or 'none'})"
