"""Concept names and the folder ids derived from them (rules: see `store`'s docstring).

Names are case-insensitive (NFKC + casefold + collapsed whitespace); ids are ASCII
``[a-z0-9_]``, start with a letter, <= 48 chars, with an 8-hex sha256 suffix of the canonical
name whenever the id alone could not represent the name exactly.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME_CHARS = 256
MAX_ID_CHARS = 48
ID_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_EXACT_RE = re.compile(r"[a-z][a-z0-9]*( [a-z0-9]+)*")


def canonical_name(name: str) -> str:
    """The identity of a concept name: NFKC + casefold + collapsed whitespace."""
    if not isinstance(name, str):
        raise TypeError(f"a concept name must be a string, got {type(name).__name__}")
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        raise ValueError(f"concept name {name!r} contains control characters")
    key = " ".join(key.split())
    if not key:
        raise ValueError("a concept name must not be empty")
    if len(key) > MAX_NAME_CHARS:
        raise ValueError(f"concept name longer than {MAX_NAME_CHARS} characters")
    return key


def concept_id(name: str) -> str:
    """Safe folder name for a concept name (see the module docstring for the rules)."""
    key = canonical_name(name)
    if _EXACT_RE.fullmatch(key) and len(key) <= MAX_ID_CHARS:
        return key.replace(" ", "_")
    ascii_ = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_).strip("_") or "concept"
    if not base[0].isalpha():
        base = "c_" + base
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return f"{base[: MAX_ID_CHARS - 9].rstrip('_')}_{digest}"
