"""The concept store's folders: one per concept, written so a crash never leaves a mix, read so
that one damaged folder never stops the others (`ConceptStore`). What each file must hold is
`schema`'s; which concept a typed name or id means, and the class ids, are `registry`'s.

Layout: ``<root>/<concept_id>/{concept.safetensors, meta.json, shots/000_image.png,
shots/000_mask.png, ..., negatives/000_image.png, negatives/000_mask.png, ...}`` (the shots
and the look-alikes marked "not this one" are kept so a concept can be corrected, or taught
again, e.g. for a new model). ``meta.json`` records the sha256 of ``concept.safetensors``,
so silent corruption is caught too. Names and ids: `names` (saving another name onto an id,
a hash collision, is refused). ``<root>/.forgotten.json`` remembers the concepts forgotten
here or by other nodes (`forgotten`).

Reading (`scan`, `load_all`) only reads, and checks each folder on its own: a real folder (no
symbolic link) named like an id; ``meta.json`` and the tensors regular files (no links, FIFOs
or folders) within a size limit; every meta.json field of its type; the folder the id its name
derives (a copied or renamed folder is reported, the original kept). A folder that fails is
one problem line in `load_all`'s list and is skipped, never deleted or changed.

Crash safety (single writer per store): a save builds the complete new folder under
``.tmp-<id>-<pid>-<token>`` in the root, fsyncs every file and folder, renames the live folder
aside to ``.old-<id>-...``, renames the new one into place, fsyncs the root, then deletes the
aside copy. At any instant one of {live folder, aside copy} is complete; an exception rolls
back. When a live folder is missing or damaged and a complete ``.old`` copy exists (a crash
between the two renames) reading uses the newest such copy, the last committed version.
Leftovers are tidied by the next `save`/`delete` of that id (or by `cleanup`), only when the
live folder is complete: ``.old`` copies are then removed (or renamed back when the live
folder is missing); ``.tmp`` folders of dead processes are removed only when a complete live
copy exists, never promoted. A save never replaces a damaged folder or a non-folder: it
refuses and names it. Concepts taught for another model are skipped, never deleted. A store
that cannot be written (missing parent, read-only, not a folder) is still read; `unwritable`
says why, and `save`/`delete` refuse with that message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from safetensors.torch import save as save_tensors

from ...io import encode_png, fsync_dir, read_mask, read_rgb, write_durable
from ...vocabulary import PERSONAL_ID_BASE, UNLABELED
from ..concept import Concept
from ..names import ID_RE, canonical_name, concept_id, display_name
from . import registry, schema, shared
from .forgotten import FORGOTTEN_FILE, read_forgotten, write_forgotten
from .schema import ConceptError

log = logging.getLogger(__name__)

TENSORS = "concept.safetensors"
META = "meta.json"
SHOTS = "shots"  # the images and masks a concept was taught from
NEGATIVES = "negatives"  # the look-alikes marked "not this one", images and masks
LEGACY_CLASS_IDS = ".class_ids.json"  # the registry file of stores written before meta ids
NOT_WRITABLE = "the concept store {root} is not writable (parameter concept_store): {why}"


class StoreNotWritable(OSError):
    """The store's folder cannot be written; the message names it and the parameter."""


@dataclass
class StoreView:
    """What one read of the store found (`ConceptStore.scan`)."""

    metas: dict[str, dict] = field(default_factory=dict)  # concept id -> checked meta.json
    folders: dict[str, Path] = field(default_factory=dict)  # live folder or recovered copy
    class_ids: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# Module-level so tests can interrupt a save at any step.
def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def real_dir(path: Path) -> bool:
    """A folder itself, not a link to one (and no error if it is gone)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


class ConceptStore:
    """A folder of concepts; see the module docstring for the on-disk rules."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.unwritable()  # creates the folder when it can

    def unwritable(self) -> str:
        """Why the store cannot be written now (names `concept_store`), or "" when it can."""
        why = ""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            why = "it is not a folder"
        except OSError as exc:
            why = f"cannot create it ({exc.strerror or exc}: {exc.filename})"
        if not why and not self.root.is_dir():
            why = "it is not a folder"
        elif not why and not os.access(self.root, os.W_OK | os.X_OK):
            why = "no permission to write in it (read-only folder or file system)"
        return NOT_WRITABLE.format(root=self.root, why=why) if why else ""

    def path(self, cid: str) -> Path:
        """The live folder of an id; refuses anything that is not a valid id."""
        if not isinstance(cid, str) or not ID_RE.fullmatch(cid):
            raise ValueError(f"{cid!r} is not a concept id")
        return self.root / cid

    # ---------------------------------------------------------------- writing

    def save(
        self,
        concept: Concept,
        report: object,
        shots: Sequence[object],
        fingerprint: str,
        variant: str = "",
        negatives: Sequence[object] = (),
    ) -> Path:
        """Write (or atomically replace) one concept with its shots and its look-alikes
        (`negatives`, each a shot or an (image, mask) pair); returns its folder. Its name is
        stored normalised (`names.display_name`, also set on `concept`); its class id is the
        one it already has, else the lowest free one (`class_ids`)."""
        why = self.unwritable()
        if why:
            raise StoreNotWritable(why)
        concept.name = display_name(concept.name)
        key = canonical_name(concept.name)
        cid = concept_id(concept.name)
        live = self.path(cid)
        self._tidy(cid)
        self._check_target(live, key)
        class_id = self._class_id_for(cid)
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = self.root / f".tmp-{cid}-{token}"
        aside = self.root / f".old-{cid}-{token}"
        tensor_bytes = save_tensors(concept.tensors())
        fit = getattr(report, "fit_iou", None)
        losses = list(getattr(report, "losses", []))
        meta = {
            "format_version": schema.FORMAT_VERSION,
            "name": concept.name,
            "canonical_name": key,
            "concept_id": cid,
            "class_id": class_id,
            "base_class": concept.base_class,
            "concept": concept.metadata(),
            "switches": {
                k: getattr(concept, k) for k in ("use_prompt", "use_negative", "use_visual")
            },
            "teach_config": dict(getattr(report, "config", {})),
            "shots": len(shots),
            "negatives": len(negatives),
            "fit_iou": None if fit is None or fit != fit else float(fit),
            "loss_first_last": [losses[0], losses[-1]] if losses else None,
            "train_seconds": getattr(report, "seconds", None),
            "created_at": datetime.now(timezone.utc).isoformat(),
            "model_fingerprint": fingerprint,
            "san_variant": variant,
            "tensors_sha256": hashlib.sha256(tensor_bytes).hexdigest(),
        }
        self._commit(live, tmp, aside, tensor_bytes, meta, {SHOTS: shots, NEGATIVES: negatives})
        return live

    def adopt(self, meta: dict, tensors: bytes,
              examples: dict[str, Sequence[object]] | None = None) -> tuple[Path, str]:
        """Write (or atomically replace) a concept another node taught, as it was sent: its
        meta.json fields (name, created_at, fingerprint) are kept, the counts of shots and
        look-alikes become those that came with it. Its class id never displaces a stored
        concept's (`registry.adopted_class_id`): returns (folder, note), the note saying when
        the class id differs from the sender's ("" otherwise). `meta` and `tensors` must have
        passed `shared.unpack` (the checks of a load); the commit is `save`'s."""
        why = self.unwritable()
        if why:
            raise StoreNotWritable(why)
        cid = meta["concept_id"]
        live = self.path(cid)
        self._tidy(cid)
        self._check_target(live, canonical_name(meta["name"], strict=False))
        class_id, note = registry.adopted_class_id(cid, meta.get("class_id"), self.class_ids())
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        carried = {SHOTS: list((examples or {}).get(SHOTS, [])),
                   NEGATIVES: list((examples or {}).get(NEGATIVES, []))}
        meta = {**meta, "class_id": class_id, "shots": len(carried[SHOTS]),
                "negatives": len(carried[NEGATIVES])}
        self._commit(live, self.root / f".tmp-{cid}-{token}", self.root / f".old-{cid}-{token}",
                     tensors, meta, carried)
        return live, note

    def _commit(
        self,
        live: Path,
        tmp: Path,
        aside: Path,
        tensors: bytes,
        meta: dict,
        examples: dict[str, Sequence[object]],
    ) -> None:
        moved = placed = False
        try:
            tmp.mkdir()
            write_durable(tmp / TENSORS, tensors)
            write_durable(tmp / META, json.dumps(meta, indent=2, ensure_ascii=False).encode())
            for folder, shots in examples.items():
                (tmp / folder).mkdir()
                for i, shot in enumerate(shots):
                    image, mask = schema.shot_arrays(shot)
                    write_durable(tmp / folder / f"{i:03d}_image.png", encode_png(image))
                    write_durable(tmp / folder / f"{i:03d}_mask.png", encode_png(mask))
                fsync_dir(tmp / folder)
            fsync_dir(tmp)
            if os.path.lexists(live):
                _replace(live, aside)
                moved = True
            _replace(tmp, live)
            placed = True
            fsync_dir(self.root)
        except BaseException:  # roll back: the caller is told the save failed
            if placed:
                _replace(live, tmp)
            if moved and not os.path.lexists(live):
                _replace(aside, live)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(aside, ignore_errors=True)

    def _check_target(self, live: Path, key: str) -> None:
        """Refuse to replace anything but a complete concept of the same name."""
        if not os.path.lexists(live):
            return
        if not real_dir(live):
            raise ValueError(f"{live} is not a concept folder; move it away to save {key!r}")
        try:
            meta = self._checked(live, live.name)
        except ConceptError as exc:
            raise ValueError(f"{live} holds a damaged concept ({exc}); it is kept: move or "
                             f"delete that folder to save {key!r}") from None
        if canonical_name(meta["name"], strict=False) != key:
            raise ValueError(f"id {live.name} already holds concept {meta['name']!r}; "
                             f"rename {key!r}")

    def delete(self, name_or_id: str) -> bool:
        """Remove the concept `resolve` finds (`delete_id`); False when none matches."""
        cid, _ = self.resolve(name_or_id)
        return cid is not None and self.delete_id(cid)

    def delete_id(self, cid: str) -> bool:
        """Remove the concept with exactly this id (live folder and ``.old`` copies); False
        when there is none. Raises StoreNotWritable when the store cannot be written."""
        why = self.unwritable()
        if why:
            raise StoreNotWritable(why)
        live = self.path(cid)
        olds = list(self.root.glob(f".old-{cid}-*"))
        for leftover in olds:
            shutil.rmtree(leftover, ignore_errors=True)
        if not real_dir(live):
            return bool(olds)
        trash = self.root / f".del-{cid}-{secrets.token_hex(4)}"
        _replace(live, trash)
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def forgotten(self, problems: list[str] | None = None) -> dict[str, tuple[datetime, str]]:
        """Concept id -> (when, by which node) of every concept this store remembers as
        forgotten (`forgotten`); a damaged record is a line in `problems`, never an error."""
        return read_forgotten(self.root, [] if problems is None else problems)

    def remember_forgotten(self, cid: str, stamp: datetime, by: str) -> None:
        """Record that `cid` was forgotten at `stamp` by node `by`, unless the record holds a
        forget of it that wins (`shared.newer`). A record that cannot be trusted whole is
        first moved aside (``.forgotten.json.damaged-<token>``, kept for a person to read),
        its sound entries carried over. Raises StoreNotWritable when the store cannot be
        written."""
        why = self.unwritable()
        if why:
            raise StoreNotWritable(why)
        problems: list[str] = []
        record = self.forgotten(problems)
        if cid in record and not shared.newer(stamp, by, *record[cid]):
            return
        if problems:
            aside = self.root / f"{FORGOTTEN_FILE}.damaged-{secrets.token_hex(4)}"
            _replace(self.root / FORGOTTEN_FILE, aside)
            log.warning("%s; moved aside to %s", "; ".join(problems), aside.name)
        record[cid] = (stamp, by)
        write_forgotten(self.root, record)

    def cleanup(self) -> None:
        """Tidy every id's leftovers by the rules in the module docstring."""
        ids = {p.name.split("-")[1] for p in self.root.glob(".*-*-*") if real_dir(p)}
        for cid in sorted(i for i in ids if ID_RE.fullmatch(i)):
            self._tidy(cid)

    def _tidy(self, cid: str) -> None:
        for trash in self.root.glob(f".del-{cid}-*"):
            shutil.rmtree(trash, ignore_errors=True)
        live = self.root / cid
        olds = [p for p in self.root.glob(f".old-{cid}-*") if real_dir(p)]
        olds.sort(key=mtime)
        if not os.path.lexists(live):
            for old in reversed(olds):
                if self._complete(old, cid):
                    _replace(old, live)
                    fsync_dir(self.root)
                    olds.remove(old)
                    break
        if not self._complete(live, cid):
            return
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob(f".tmp-{cid}-*"):
            pid = tmp.name[len(f".tmp-{cid}-") :].split("-")[0]
            if not pid.isdigit() or not pid_alive(int(pid)) or int(pid) == os.getpid():
                shutil.rmtree(tmp, ignore_errors=True)

    def _checked(self, folder: Path, cid: str, tensors: bool = True) -> dict:
        """The checked meta.json of a folder (and its tensors' checksum), or ConceptError."""
        data = schema.read_bounded(folder / META, schema.MAX_META_BYTES)
        meta = schema.check_meta(schema.parse_meta(data, META), cid)
        if tensors:
            data = schema.read_bounded(folder / TENSORS, schema.MAX_TENSOR_BYTES)
            if hashlib.sha256(data).hexdigest() != meta["tensors_sha256"]:
                raise ConceptError(f"{TENSORS} is corrupt (checksum)")
        return meta

    def _complete(self, folder: Path, cid: str) -> bool:
        try:
            return real_dir(folder) and bool(self._checked(folder, cid))
        except ConceptError:
            return False

    # ---------------------------------------------------------------- reading

    def scan(self) -> StoreView:
        """Check every folder on its own (module docstring): the concepts whose meta.json is
        sound, the folder each is read from, their class ids, and one line per problem."""
        view = StoreView()
        try:
            entries = sorted(os.listdir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return view  # `unwritable` reports it
        except OSError as exc:
            view.problems.append(f"cannot list the concept store {self.root} ({exc.strerror})")
            return view
        for entry in entries:
            if entry.startswith("."):
                continue
            try:
                if not ID_RE.fullmatch(entry):
                    raise ConceptError("not a concept folder name")
                mode = os.lstat(self.root / entry).st_mode
                if stat.S_ISLNK(mode):
                    raise ConceptError("a symbolic link; concepts must be real folders in the "
                                       "store (links are not followed)")
                if not stat.S_ISDIR(mode):
                    raise ConceptError("not a concept folder (not a folder)")
                view.metas[entry] = self._checked(self.root / entry, entry, tensors=False)
                view.folders[entry] = self.root / entry
            except Exception as exc:  # noqa: BLE001 - no folder may stop the others
                view.problems.append(f"{entry}: {exc}; skipped")
        self._recover(entries, view)
        legacy = registry.legacy_class_ids(self.root / LEGACY_CLASS_IDS, view.problems)
        view.class_ids = registry.assign_class_ids(view.metas, legacy, view.problems)
        return view

    def _recover(self, entries: list[str], view: StoreView) -> None:
        """Ids with no sound live folder: the newest complete ``.old`` copy, if any."""
        olds: dict[str, list[Path]] = {}
        for entry in entries:
            cid = entry.split("-")[1] if entry.startswith(".old-") else ""
            if ID_RE.fullmatch(cid) and cid not in view.metas and real_dir(self.root / entry):
                olds.setdefault(cid, []).append(self.root / entry)
        for cid, copies in sorted(olds.items()):
            for old in sorted(copies, key=lambda p: (mtime(p), p.name), reverse=True):
                if self._complete(old, cid):
                    view.metas[cid] = self._checked(old, cid, False)
                    view.folders[cid] = old
                    log.warning("concept %s: read from an interrupted overwrite (%s)", cid, old)
                    break

    def list(self) -> list[dict]:
        """The sound concepts' metadata, sorted by id (what `load_all` tries to load)."""
        metas = self.scan().metas
        return [metas[k] for k in sorted(metas)]

    def class_ids(self, metas: list[dict] | None = None) -> dict[str, int]:
        """Concept id -> label-map class id of every sound concept (rules: `registry`);
        `metas`: what `list()` returned, when the caller has just read it."""
        if metas is None:
            return self.scan().class_ids
        problems: list[str] = []
        legacy = registry.legacy_class_ids(self.root / LEGACY_CLASS_IDS, problems)
        by_id = {m.get("concept_id"): m for m in metas if isinstance(m, dict)}
        by_id = {k: m for k, m in by_id.items() if isinstance(k, str)}
        return registry.assign_class_ids(by_id, legacy, problems)

    def _class_id_for(self, cid: str) -> int:
        ids = self.class_ids()
        free = (i for i in range(PERSONAL_ID_BASE, UNLABELED) if i not in ids.values())
        return ids[cid] if cid in ids else next(free)

    def resolve(self, name_or_id: str, view: StoreView | None = None) -> tuple[str | None, str]:
        """(concept id, note) of what a caller typed (rules: `registry.resolve`)."""
        return registry.resolve((view or self.scan()).metas, name_or_id)

    def load_all(
        self, fingerprint: str, n_queries: int, dim: int
    ) -> tuple[list[Concept], list[str]]:
        """Every usable concept (sorted by id) and one message per skipped folder or
        rebuilt class id; reads only, and no folder can stop the others."""
        view = self.scan()
        found = []
        for cid in sorted(view.metas):
            folder = view.folders[cid]
            try:
                data = schema.read_bounded(folder / TENSORS, schema.MAX_TENSOR_BYTES)
                found.append(
                    schema.load_concept(data, view.metas[cid], folder, fingerprint, n_queries, dim)
                )
            except Exception as exc:  # noqa: BLE001 - no folder may stop the others
                view.problems.append(f"{cid}: {exc}; skipped")
        return found, view.problems

    def load_shots(self, name_or_id: str, kind: str = SHOTS
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The stored shots (RGB uint8 images, bool masks) of the concept `resolve` finds, to
        teach it again; `kind` NEGATIVES: its look-alikes instead. A shot whose files are not
        regular files within the limit is left out (with a warning)."""
        view = self.scan()
        cid, _ = self.resolve(name_or_id, view)
        folder = view.folders[cid] / kind if cid else None
        images, masks = [], []
        if folder is None or not real_dir(folder):
            return images, masks
        for path in sorted(folder.glob("*_image.png")):
            mask_path = path.with_name(path.name.replace("_image", "_mask"))
            try:
                for p in (path, mask_path):
                    st = os.lstat(p)
                    if not stat.S_ISREG(st.st_mode) or st.st_size > schema.MAX_SHOT_BYTES:
                        raise ConceptError(f"{p.name} is not a regular file within the limit")
            except (ConceptError, OSError) as exc:
                log.warning("concept %s: shot %s left out (%s)", cid, path.name, exc)
                continue
            images.append(read_rgb(path))
            masks.append(read_mask(mask_path, 127))
        return images, masks
