"""Concept names and the folder ids derived from them, normalised in one place.

A name's identity (`canonical_name`) is NFKC + casefold + stripped, inner whitespace runs
collapsed to one space: "My  Mug", " my mug", "MY MUG" and the NFD spelling of "café" are one
concept. NFKC is kept (not plain NFC) because ids have always been derived from it and it
already includes NFC: every name valid before keeps its id.

New names (`canonical_name`, `display_name`: what teaching accepts) must also be visible text:
no control (Cc), invisible format (Cf: zero-width joiner/space, bidi overrides, soft hyphen)
or surrogate (Cs) characters, not empty, at most `MAX_NAME_CHARS` after normalisation. Each
refusal says which character, so two names that look alike are either one concept or refused.
`concept_id` also accepts a stored name with format characters (allowed before), so such a
concept keeps its id and can still be listed and forgotten; it cannot be taught again.

Ids are ASCII ``[a-z0-9_]``, start with a letter, <= 48 chars, with an 8-hex sha256 suffix of
the canonical name whenever the id alone could not represent the name exactly.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME_CHARS = 256
MAX_ID_CHARS = 48
ID_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_EXACT_RE = re.compile(r"[a-z][a-z0-9]*( [a-z0-9]+)*")
_REFUSED = {"Cc": "a control character", "Cs": "a lone surrogate"}
_REFUSED_NEW = {**_REFUSED, "Cf": "an invisible format character"}


def _refuse(name: str, text: str, refused: dict[str, str]) -> None:
    for ch in text:
        what = refused.get(unicodedata.category(ch))
        if what:
            label = f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".strip()
            raise ValueError(f"concept name {name!r} contains {what} ({label}): "
                             "use visible text only")


def canonical_name(name: str, strict: bool = True) -> str:
    """The identity of a concept name (module docstring). `strict` (new names) also refuses
    format characters; ``strict=False`` is for names already stored."""
    if not isinstance(name, str):
        raise TypeError(f"a concept name must be a string, got {type(name).__name__}")
    refused = _REFUSED_NEW if strict else _REFUSED
    if strict:
        _refuse(name, name, refused)
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    _refuse(name, key, refused)
    key = " ".join(key.split())
    if not key:
        raise ValueError("a concept name must not be empty")
    if len(key) > MAX_NAME_CHARS:
        raise ValueError(f"concept name longer than {MAX_NAME_CHARS} characters")
    return key


def display_name(name: str) -> str:
    """How a new name is shown and stored: NFC, stripped, inner whitespace runs collapsed,
    case kept; refused like `canonical_name`."""
    canonical_name(name)
    return unicodedata.normalize("NFC", " ".join(name.split()))


def concept_id(name: str) -> str:
    """Safe folder name for a concept name (see the module docstring for the rules)."""
    key = canonical_name(name, strict=False)
    if _EXACT_RE.fullmatch(key) and len(key) <= MAX_ID_CHARS:
        return key.replace(" ", "_")
    ascii_ = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_).strip("_") or "concept"
    if not base[0].isalpha():
        base = "c_" + base
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return f"{base[: MAX_ID_CHARS - 9].rstrip('_')}_{digest}"
