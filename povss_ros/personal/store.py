"""Concepts on disk: one folder per concept, written so a crash never leaves a mix.

Layout: ``<root>/<concept_id>/{concept.safetensors, meta.json, shots/000_image.png,
shots/000_mask.png, ...}`` (the shots are kept so a concept can be taught again, e.g. for a new
model). ``meta.json`` records the sha256 of ``concept.safetensors``, so silent corruption is
caught too.

Names: NFKC-normalized, case-folded, whitespace-collapsed ("My  Mug" and "my mug" are ONE
concept: a robot that kept two concepts differing only in case would confuse its user).
Control characters and empty names are refused; at most 256 characters. The folder name
(`concept_id`) is ASCII ``[a-z0-9_]``, starts with a letter, <= 48 chars; when the name is not
exactly representable (non-ASCII, punctuation, underscores, a leading digit, too long), an
8-hex sha256 of the canonical name is appended ("我的杯子" -> ``concept_1f0c...``). It can never
be empty, ``.``, ``..`` or contain a separator; saving a different name onto an existing id
(a hash collision) is refused.

Crash safety (single writer per store): a save builds the complete new folder under
``.tmp-<id>-<pid>-<token>`` in the root, fsyncs every file and folder, renames the live folder
aside to ``.old-<id>-...``, renames the new one into place, fsyncs the root, then deletes the
aside copy. At any instant one of {live folder, aside copy} is complete; an exception rolls
back. `load_all` only reads: it skips dot-folders, except that when a live folder is missing
and a complete ``.old`` copy exists (a crash between the two renames) it loads that copy, the
last committed version. Leftovers are tidied by the next `save`/`delete` of that id (or by
`cleanup`), only when the live folder is complete: ``.old`` copies are then removed (or
renamed back when the live folder is missing); ``.tmp`` folders of dead processes are removed
only when a complete live copy exists, never promoted (their save never returned).
Concepts taught for another model (fingerprint) are skipped with a message, never deleted.

Class ids: the store owns the registry. Each concept's ``meta.json`` records its label-map
class id (from `PERSONAL_ID_BASE` up), chosen when it is first saved and kept when it is
saved again (overwrite), so ids are stable across restarts; a forgotten concept's id becomes
free. Concepts saved before ids were recorded take theirs from the old ``.class_ids.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..io import encode_png, fsync_dir, read_mask, read_rgb, write_durable
from ..vocabulary import PERSONAL_ID_BASE, UNLABELED
from .concept import Concept
from .names import ID_RE, canonical_name, concept_id

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS = "concept.safetensors"
META = "meta.json"
LEGACY_CLASS_IDS = ".class_ids.json"  # the registry file of stores written before meta ids


class ConceptError(ValueError):
    """One stored concept that cannot be used, with what to do about it."""


# Module-level so tests can interrupt a save at any step.
def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _shot_arrays(shot: object) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, mask uint8 0/255) from a ShotFeatures or an (image, mask) pair."""
    image, mask = (shot.image, shot.mask) if hasattr(shot, "image") else shot  # type: ignore
    if isinstance(mask, torch.Tensor):
        mask = mask.cpu().numpy()
    mask = np.asarray(mask)
    mask = (mask if mask.dtype == bool else mask > (127 if mask.max() > 1 else 0)).astype(np.uint8)
    return np.ascontiguousarray(image, dtype=np.uint8), mask * 255


def _valid_class_id(value: object) -> bool:
    return type(value) is int and PERSONAL_ID_BASE <= value < UNLABELED


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ConceptStore:
    """A folder of concepts; see the module docstring for the on-disk rules."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, cid: str) -> Path:
        """The live folder of an id; refuses anything that is not a valid id."""
        if not ID_RE.fullmatch(cid):
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
    ) -> Path:
        """Write (or atomically replace) one concept; returns its folder. Its class id is the
        one it already has, else the lowest free one (`class_ids`)."""
        key, cid = canonical_name(concept.name), concept_id(concept.name)
        live = self.path(cid)
        if live.is_dir():
            try:
                other = json.loads((live / META).read_text("utf-8")).get("canonical_name")
            except (OSError, ValueError):
                other = key  # unreadable: a broken copy of this id, replace it
            if other != key:
                raise ValueError(f"id {cid} already holds concept {other!r}; rename {key!r}")
        self._tidy(cid)
        class_id = self._class_id_for(cid)
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp, aside = self.root / f".tmp-{cid}-{token}", self.root / f".old-{cid}-{token}"
        tensor_bytes = save_tensors(concept.tensors())
        fit = getattr(report, "fit_iou", None)
        losses = list(getattr(report, "losses", []))
        meta = {
            "format_version": FORMAT_VERSION,
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
            "fit_iou": None if fit is None or fit != fit else float(fit),
            "loss_first_last": [losses[0], losses[-1]] if losses else None,
            "train_seconds": getattr(report, "seconds", None),
            "created_at": datetime.now(timezone.utc).isoformat(),
            "model_fingerprint": fingerprint,
            "san_variant": variant,
            "tensors_sha256": hashlib.sha256(tensor_bytes).hexdigest(),
        }
        moved = False
        try:
            tmp.mkdir()
            write_durable(tmp / TENSORS, tensor_bytes)
            write_durable(tmp / META, json.dumps(meta, indent=2, ensure_ascii=False).encode())
            (tmp / "shots").mkdir()
            for i, shot in enumerate(shots):
                image, mask = _shot_arrays(shot)
                write_durable(tmp / "shots" / f"{i:03d}_image.png", encode_png(image))
                write_durable(tmp / "shots" / f"{i:03d}_mask.png", encode_png(mask))
            fsync_dir(tmp / "shots")
            fsync_dir(tmp)
            if live.exists():
                _replace(live, aside)
                moved = True
            _replace(tmp, live)
            fsync_dir(self.root)
        except BaseException:
            if moved and not live.exists():
                _replace(aside, live)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return live

    def delete(self, name_or_id: str) -> bool:
        """Remove a concept (an existing id is taken as is, anything else as a name)."""
        exact = ID_RE.fullmatch(name_or_id) and (self.root / name_or_id).is_dir()
        cid = name_or_id if exact else concept_id(name_or_id)
        live = self.path(cid)
        for leftover in self.root.glob(f".old-{cid}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not live.is_dir():
            return False
        trash = self.root / f".del-{cid}-{secrets.token_hex(4)}"
        _replace(live, trash)
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def cleanup(self) -> None:
        """Tidy every id's leftovers by the rules in the module docstring."""
        ids = {p.name.split("-")[1] for p in self.root.glob(".*-*-*") if p.is_dir()}
        for cid in sorted(i for i in ids if ID_RE.fullmatch(i)):
            self._tidy(cid)

    def _tidy(self, cid: str) -> None:
        for trash in self.root.glob(f".del-{cid}-*"):
            shutil.rmtree(trash, ignore_errors=True)
        live = self.root / cid
        olds = sorted(self.root.glob(f".old-{cid}-*"), key=lambda p: p.stat().st_mtime)
        if not live.exists():
            for old in reversed(olds):
                if self._complete(old):
                    _replace(old, live)
                    fsync_dir(self.root)
                    olds.remove(old)
                    break
        if not self._complete(live):
            return
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob(f".tmp-{cid}-*"):
            pid = tmp.name[len(f".tmp-{cid}-") :].split("-")[0]
            if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
                shutil.rmtree(tmp, ignore_errors=True)

    def _complete(self, folder: Path) -> bool:
        try:
            meta = json.loads((folder / META).read_text("utf-8"))
            data = (folder / TENSORS).read_bytes()
        except (OSError, ValueError):
            return False
        return hashlib.sha256(data).hexdigest() == meta.get("tensors_sha256")

    # ---------------------------------------------------------------- reading
    def list(self) -> list[dict]:
        """The readable concepts' metadata, sorted by id: live folders, and the last committed
        copy of an id whose overwrite was interrupted (what `load_all` loads)."""
        out = {}
        for folder in sorted(p for p in self.root.iterdir() if ID_RE.fullmatch(p.name)):
            try:
                out[folder.name] = json.loads((folder / META).read_text("utf-8"))
            except (OSError, ValueError):
                continue
        for old in sorted(self.root.glob(".old-*-*")):
            cid = old.name.split("-")[1]
            if cid not in out and not (self.root / cid).exists() and self._complete(old):
                out[cid] = json.loads((old / META).read_text("utf-8"))
        return [m for _, m in sorted(out.items()) if isinstance(m, dict)]

    def class_ids(self, metas: list[dict] | None = None) -> dict[str, int]:
        """Concept id -> label-map class id of every stored concept (see the module doc);
        `metas`: what `list()` returned, when the caller has just read it.

        A recorded id that is out of range or already taken (a hand-edited meta.json) is
        replaced by the lowest free one, like the id of a concept that records none."""
        legacy = self._legacy_class_ids()
        out: dict[str, int] = {}
        pending = []
        for meta in self.list() if metas is None else metas:
            cid = meta.get("concept_id")
            if not isinstance(cid, str):
                continue
            value = meta.get("class_id", legacy.get(cid))
            if _valid_class_id(value) and value not in out.values():
                out[cid] = value
            else:
                pending.append(cid)
        free = (i for i in range(PERSONAL_ID_BASE, UNLABELED) if i not in out.values())
        for cid in pending:
            out[cid] = next(free)
        return out

    def _class_id_for(self, cid: str) -> int:
        ids = self.class_ids()
        if cid in ids:
            return ids[cid]
        used = set(ids.values())
        return next(i for i in range(PERSONAL_ID_BASE, UNLABELED) if i not in used)

    def _legacy_class_ids(self) -> dict[str, int]:
        try:
            data = json.loads((self.root / LEGACY_CLASS_IDS).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if _valid_class_id(v)}

    def load_all(
        self, fingerprint: str, n_queries: int, dim: int
    ) -> tuple[list[Concept], list[str]]:
        """Every usable concept (sorted by id) and one message per skipped folder."""
        found: dict[str, Concept] = {}
        problems: list[str] = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                if not ID_RE.fullmatch(folder.name):
                    raise ConceptError(f"{folder.name}: not a concept folder name; skipped")
                found[folder.name] = self._load(folder, folder.name, fingerprint, n_queries, dim)
            except ConceptError as exc:
                problems.append(str(exc))
        for old in sorted(self.root.glob(".old-*-*")):
            cid = old.name.split("-")[1]
            if cid in found or (self.root / cid).exists() or not self._complete(old):
                continue
            try:
                found[cid] = self._load(old, cid, fingerprint, n_queries, dim)
                log.warning("concept %s: loaded from an interrupted overwrite (%s)", cid, old)
            except ConceptError as exc:
                problems.append(str(exc))
        return [found[k] for k in sorted(found)], problems

    def _load(self, folder: Path, cid: str, fingerprint: str, n: int, dim: int) -> Concept:
        try:
            meta = json.loads((folder / META).read_text("utf-8"))
        except FileNotFoundError:
            raise ConceptError(f"{cid}: {META} is missing; skipped") from None
        except (OSError, ValueError) as exc:
            raise ConceptError(f"{cid}: {META} is unreadable ({exc}); skipped") from None
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ConceptError(f"{cid}: unknown format in {META}; skipped")
        name = meta.get("name", cid)
        if meta.get("concept_id") != cid:
            raise ConceptError(f"{cid}: {META} belongs to {meta.get('concept_id')!r}; skipped")
        if meta.get("model_fingerprint") != fingerprint:
            raise ConceptError(
                f"concept {name!r} was taught for another model (fingerprint "
                f"{meta.get('model_fingerprint')}, this model {fingerprint}); skipped: teach it "
                f"again with this model (its shots are kept in {folder / 'shots'})"
            )
        try:
            data = (folder / TENSORS).read_bytes()
        except OSError as exc:
            raise ConceptError(f"concept {name!r}: {TENSORS} unreadable ({exc}); skipped") from None
        if hashlib.sha256(data).hexdigest() != meta.get("tensors_sha256"):
            raise ConceptError(f"concept {name!r}: {TENSORS} is corrupt (checksum); skipped")
        try:
            tensors = load_tensors(data)
            info = meta["concept"]
            k = int(info["kernel"])
            expected = {
                "t_per": (1, dim),
                "t_text": (1, dim),
                "f_per": (1, dim),
                "w_z": (1, n),
                "w_m_weight": (1, n, k, k),
                "w_m_bias": (1,),
            }
            shapes = {key: tuple(t.shape) for key, t in tensors.items()}
            if shapes != expected or int(info["n_queries"]) != n or int(info["dim"]) != dim:
                raise ConceptError(
                    f"concept {name!r}: tensor shapes {shapes} do not fit this model "
                    f"(N={n}, D={dim}); skipped: teach it again"
                )
            if not all(t.dtype == torch.float32 and t.isfinite().all() for t in tensors.values()):
                raise ConceptError(f"concept {name!r}: non-finite or non-float32 tensors; skipped")
            return Concept.from_parts(info, tensors)
        except ConceptError:
            raise
        except Exception as exc:  # noqa: BLE001 - any malformed content is a skipped concept
            raise ConceptError(f"concept {name!r}: cannot be read ({exc}); skipped") from None

    def load_shots(self, name_or_id: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The stored shots (RGB uint8 images, bool masks), to teach the concept again."""
        exact = ID_RE.fullmatch(name_or_id) and (self.root / name_or_id).is_dir()
        folder = self.path(name_or_id if exact else concept_id(name_or_id)) / "shots"
        images, masks = [], []
        for path in sorted(folder.glob("*_image.png")):
            images.append(read_rgb(path))
            masks.append(read_mask(path.with_name(path.name.replace("_image", "_mask")), 127))
        return images, masks
