"""A disk cache of the vocabulary's text rows, so a restart skips CLIP's text tower.

Encoding COCO-Stuff's 171 words x 14 prompt templates through the ViT-B/16 text tower takes
seconds on a CPU (`bench/bench_segment.py` times it), at every start of the node or the CLI.
The rows depend only on the text tower's weights, the templates and the word, so they are
stored in one file per fingerprint of the first two: a fine-tuned or different checkpoint
gets its own file and can never be served stale rows. The cache is an accelerator only: an
unreadable, corrupt or unwritable cache logs a warning and the rows are computed as if it
were absent. Writes are atomic (temp file + rename), so a killed process leaves either the
old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from .io import atomic_path
from .san.text import OpenVocabClassifier

log = logging.getLogger(__name__)

FORMAT = "povss-text-rows-1"
# Parameters that do not change a text row: SAN's void row and the logit temperature.
_NOT_TEXT = ("bg_embed", "logit_scale")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/povss_ros, or ~/.cache/povss_ros."""
    base = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(base) / "povss_ros"


def resolve_cache_dir(value: str) -> Path | None:
    """A user's setting: 'auto' = `default_cache_dir()`, '' = no disk cache, else a path."""
    if value == "auto":
        return default_cache_dir()
    return Path(value).expanduser() if value else None


def text_fingerprint(classifier: OpenVocabClassifier) -> str:
    """Hash of everything a text row depends on but the word: weights, templates, context."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT, list(classifier.templates), classifier.context_length]).encode())
    for name, tensor in sorted(classifier.state_dict().items()):
        if name in _NOT_TEXT:
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TextRowCache:
    """Text rows of one text tower on disk: `load` primes the tower's in-memory cache, `save`
    writes back whatever words it has encoded since."""

    def __init__(self, directory: str | os.PathLike, classifier: OpenVocabClassifier) -> None:
        self.classifier = classifier
        name = f"text_rows_{text_fingerprint(classifier)}.safetensors"
        self.path = Path(directory).expanduser() / name
        self._on_disk: set[str] = set()
        self._loaded = False

    def load(self) -> int:
        """Prime the classifier with the stored rows (once); returns how many were loaded."""
        if self._loaded:
            return 0
        self._loaded = True
        if not self.path.is_file():
            return 0
        try:
            rows = _read(self.path, self.classifier.bg_embed.shape[-1])
        except (OSError, ValueError) as exc:
            log.warning("text-row cache %s is unusable (%s): recomputing the rows", self.path, exc)
            return 0
        self.classifier.add_cached_rows(rows)
        self._on_disk = set(rows)
        return len(rows)

    def save(self) -> bool:
        """Write every row the classifier holds, if it holds words the file lacks."""
        rows = self.classifier.cached_rows()
        if not rows or set(rows) <= self._on_disk:
            return False
        try:
            _write(self.path, rows)
        except OSError as exc:
            log.warning("cannot write the text-row cache %s (%s): rows stay in memory", self.path,
                        exc)
            return False
        self._on_disk = set(rows)
        return True


def _read(path: Path, dim: int) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            rows = f.get_tensor("rows")
    except (SafetensorError, KeyError) as exc:
        raise ValueError(f"not a text-row file: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
    words = json.loads(meta.get("words", "null"))
    if (not isinstance(words, list) or rows.dim() != 2 or rows.shape != (len(words), dim)
            or rows.dtype != torch.float32 or not torch.isfinite(rows).all()):
        raise ValueError(f"rows {tuple(rows.shape)} do not match {dim}-d rows of the words")
    return {str(w): r for w, r in zip(words, rows)}


def _write(path: Path, rows: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    words = list(rows)
    tensor = torch.stack([rows[w].detach().float().cpu() for w in words]).contiguous()
    with atomic_path(path) as tmp:
        save_file({"rows": tensor}, str(tmp), metadata={"format": FORMAT,
                                                        "words": json.dumps(words)})
