"""What the store remembers of forgotten concepts: for each forgotten id, when it was forgotten
and by which node, so that a concept shared before its forget is never adopted again, after a
restart as well (a node that was off while the concept was forgotten may announce it again).

One file, ``<root>/.forgotten.json`` (a dot name: reading concepts skips it): ``{"version": 1,
"forgotten": {"<concept id>": {"stamp": "<ISO 8601 with zone>", "by": "<node id>"}, ...}}``,
at most `MAX_FORGOTTEN` entries (the oldest go first), replaced atomically (written beside it,
fsynced, renamed over it). A damaged file is a problem line and an empty record, never an
error: forgetting then falls back to what the topic itself still carries.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime
from pathlib import Path

from ...io import fsync_dir, write_durable
from ..names import ID_RE
from .schema import MAX_META_BYTES, ConceptError, parse_meta, read_bounded
from .shared import MAX_TEXT, parse_stamp

FORGOTTEN_FILE = ".forgotten.json"
FORMAT_VERSION = 1
MAX_FORGOTTEN = 1024  # ids remembered; a node forgets far fewer concepts than this


def read_forgotten(root: Path, problems: list[str]) -> dict[str, tuple[datetime, str]]:
    """Concept id -> (when it was forgotten, by which node); {} when the file is absent, and
    with one line in `problems` when it cannot be trusted (a bad entry drops that entry)."""
    path = root / FORGOTTEN_FILE
    if not os.path.lexists(path):
        return {}
    try:
        data = parse_meta(read_bounded(path, MAX_META_BYTES), path.name)
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION \
                or not isinstance(data.get("forgotten"), dict):
            raise ConceptError(f"{path.name} is not a version {FORMAT_VERSION} record of "
                               "forgotten concepts")
    except ConceptError as exc:
        problems.append(f"record of forgotten concepts: {exc}; a shared concept forgotten "
                        "before this start may be adopted again")
        return {}
    out: dict[str, tuple[datetime, str]] = {}
    bad = []
    for cid, entry in data["forgotten"].items():
        try:
            if not ID_RE.fullmatch(cid) or not isinstance(entry, dict):
                raise ConceptError("not an id and an entry")
            by = entry.get("by")
            if not isinstance(by, str) or len(by) > MAX_TEXT:
                raise ConceptError("no node id")
            out[cid] = (parse_stamp(entry.get("stamp")), by)
        except ConceptError:
            bad.append(str(cid)[:40])
    if bad:
        problems.append(f"record of forgotten concepts: bad entries for {', '.join(bad)[:200]}; "
                        "dropped")
    return out


def write_forgotten(root: Path, forgotten: dict[str, tuple[datetime, str]]) -> None:
    """Replace the record with `forgotten` (its newest `MAX_FORGOTTEN` entries), atomically."""
    newest = sorted(forgotten.items(), key=lambda kv: kv[1][0], reverse=True)[:MAX_FORGOTTEN]
    body = {"version": FORMAT_VERSION,
            "forgotten": {cid: {"stamp": stamp.isoformat(), "by": by}
                          for cid, (stamp, by) in sorted(newest)}}
    tmp = root / f".forgotten-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        write_durable(tmp, json.dumps(body, indent=1).encode())
        os.replace(tmp, root / FORGOTTEN_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(root)
