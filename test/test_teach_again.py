"""Teaching a stored concept again, through the engine on the synthetic-world model: an
overwrite keeps the look-alikes ("not this one") unless it gives its own; a concept taught for
other weights is fitted again by a correction from its stored shots and look-alikes, keeping
its id and class id; and a replaced concept (taught again, corrected, forgotten) starts a
fresh presence history. Real weights files (the small model and a copy with one tensor
changed), real stores on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from _small_model import SMALL, STEADIED, engine_on, held_out_view
from safetensors import safe_open
from safetensors.torch import save_file

from povss_lab.eval.datasets.synper import SynPer
from povss_ros import PerceptionEngine, Segmenter, TeachRequest
from povss_ros.personal.names import concept_id
from povss_ros.personal.store import NEGATIVES
from povss_ros.personal.teach import TeachConfig
from povss_ros.vocabulary import PERSONAL_ID_BASE, UNLABELED

ROOT = Path(__file__).resolve().parents[1]
FAST = TeachConfig(iterations=20, num_points=512, measure_fit=False)


@pytest.fixture(scope="module")
def other_segmenter(synper: SynPer, tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    """The small model re-saved with one bias nudged: other weights, another fingerprint."""
    path = tmp_path_factory.mktemp("weights") / "syn_small_other.safetensors"
    with safe_open(str(SMALL), "pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - no __iter__
    key = next(k for k in sorted(tensors) if k.endswith("bias"))
    tensors[key] = tensors[key] + 1e-3
    save_file(tensors, str(path), metadata=metadata)
    return Segmenter.from_weights(path, synper.vocabulary, device="cpu")


def _engine(segmenter: Segmenter, root: Path) -> PerceptionEngine:
    return engine_on(segmenter, root, FAST)


def _look_alikes(synper: SynPer, spec: object, count: int) -> list[tuple[object, np.ndarray]]:
    """`count` frames without my object, each with its largest base-class region."""
    base_id = synper.vocabulary.index(spec.base_class)
    out = []
    for sample in (synper.sample(i) for i in spec.negative_ids):
        n, parts = cv2.connectedComponents((sample.semantic == base_id).astype(np.uint8))
        sizes = np.bincount(parts.ravel(), minlength=n)[1:]
        if len(sizes) and sizes.max() > 400:
            out.append((sample, parts == 1 + int(sizes.argmax())))
        if len(out) == count:
            return out
    raise AssertionError(f"SynPer has {len(out)} frames with a look-alike, not {count}")


@pytest.fixture(scope="module")
def taught(synper: SynPer) -> tuple:
    """my mug's five exact shots, and two frames each holding only a look-alike."""
    spec = synper.concepts()[0]
    return spec, [synper.sample(s) for s in spec.positive_ids[:5]], _look_alikes(synper, spec, 2)


def _shots(shots: list, n: int = 5) -> dict:
    return {"images": [s.image for s in shots[:n]], "masks": [s.personal_mask for s in shots[:n]]}


def _not_this_one(spec: object, look_alike: tuple, **kw: object) -> TeachRequest:
    frame, mask = look_alike
    return TeachRequest("my mug", spec.base_class, [frame.image], negative_masks=[mask], **kw)


def _anew_with(spec: object, shot: object, look_alike: tuple) -> TeachRequest:
    """An overwrite from one shot that gives its own look-alike, on a frame of its own."""
    frame, mask = look_alike
    none = np.zeros_like(mask)
    return TeachRequest("my mug", spec.base_class, [frame.image, shot.image],
                        [none, shot.personal_mask], overwrite=True,
                        negative_masks=[mask, np.zeros_like(shot.personal_mask)])


def _with_a_look_alike(engine: PerceptionEngine, taught: tuple) -> object:
    """my mug taught from five shots, then corrected with one look-alike."""
    spec, shots, look_alikes = taught
    first = engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots)))
    assert first.success, first.message
    fix = engine.teach(_not_this_one(spec, look_alikes[0], correct=True))
    assert fix.success and fix.negatives_used == 1, fix.message
    return fix


def _stored_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _meta(root: Path, cid: str = "my_mug") -> dict:
    return json.loads((root / cid / "meta.json").read_text())


def _same_masks(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- overwrite


def test_an_overwrite_keeps_the_look_alikes_unless_it_gives_its_own(
        small_segmenter, taught, tmp_path):
    spec, shots, look_alikes = taught
    engine = _engine(small_segmenter, tmp_path)
    fix = _with_a_look_alike(engine, taught)

    again = engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots, 3),
                                      overwrite=True))
    assert again.success, again.message
    assert (again.concept_id, again.class_id) == (fix.concept_id, fix.class_id)
    assert (again.shots_used, again.negatives_used) == (3, 1)
    assert "kept its 1 stored look-alike(s)" in again.message
    assert (_meta(tmp_path)["shots"], _meta(tmp_path)["negatives"]) == (3, 1)
    assert _same_masks(engine.store.load_shots("my mug", NEGATIVES)[1], [look_alikes[0][1]])
    concept = small_segmenter.concepts[0]
    assert concept.look_alikes.shape == (1, concept.dim)
    restarted = _engine(small_segmenter, tmp_path)  # kept across a restart too
    assert restarted.segmenter.concepts[0].look_alikes.shape == (1, concept.dim)

    replaced = restarted.teach(_anew_with(spec, shots[0], look_alikes[1]))
    assert replaced.success, replaced.message
    assert (replaced.shots_used, replaced.negatives_used) == (1, 1)
    assert "its 1 stored look-alike(s) replaced by this request's" in replaced.message
    assert _same_masks(restarted.store.load_shots("my mug", NEGATIVES)[1], [look_alikes[1][1]])

    other_word = restarted.teach(TeachRequest("my mug", "bottle", **_shots(shots, 2),
                                              overwrite=True))
    assert other_word.success, other_word.message
    assert other_word.negatives_used == 0 and other_word.class_id == fix.class_id
    assert "dropped: they are of 'mug', not 'bottle'" in other_word.message
    assert _meta(tmp_path)["negatives"] == 0
    assert restarted.store.load_shots("my mug", NEGATIVES) == ([], [])
    assert small_segmenter.concepts[0].look_alikes.shape[0] == 0


def test_an_overwrite_that_cannot_read_its_look_alikes_is_refused_and_changes_nothing(
        small_segmenter, taught, tmp_path):
    spec, shots, look_alikes = taught
    engine = _engine(small_segmenter, tmp_path)
    _with_a_look_alike(engine, taught)
    mask = tmp_path / "my_mug" / NEGATIVES / "000_mask.png"
    mask.unlink()
    os.symlink("000_image.png", mask)  # the store reads no link: that look-alike is lost
    before = _stored_files(tmp_path)
    out = engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots, 3),
                                    overwrite=True))
    assert not out.success
    assert "cannot keep the look-alikes of 'my mug': 1 of its 1 stored look-alikes cannot " \
           "be read; give new look-alikes" in out.message
    assert _stored_files(tmp_path) == before and os.path.islink(mask)
    assert small_segmenter.concepts[0].look_alikes.shape[0] == 1
    # new look-alikes replace the stored ones, so none has to be read back
    fresh = engine.teach(_anew_with(spec, shots[0], look_alikes[1]))
    assert fresh.success and fresh.negatives_used == 1, fresh.message
    assert mask.is_file() and not mask.is_symlink()


# ---------------------------------------------------------------- other weights


def test_a_concept_taught_for_other_weights_is_fitted_again_keeping_its_ids(
        small_segmenter, other_segmenter, taught, tmp_path):
    spec, shots, look_alikes = taught
    first = _engine(small_segmenter, tmp_path)
    spare = first.teach(TeachRequest("spare", spec.base_class, **_shots(shots, 1)))
    assert spare.success and spare.class_id == PERSONAL_ID_BASE, spare.message
    fix = _with_a_look_alike(first, taught)
    assert fix.class_id == PERSONAL_ID_BASE + 1
    assert first.forget("spare")[0]  # the lowest id is free: a new concept would take it
    stored_shots = first.store.load_shots("my mug")
    stored_negatives = first.store.load_shots("my mug", NEGATIVES)

    other = _engine(other_segmenter, tmp_path)
    assert other.fingerprint != first.fingerprint
    assert other.concept_entries() == []
    assert any(p.startswith("my_mug:") and "another model" in p for p in other.load_problems)

    before = _stored_files(tmp_path)
    plain = other.teach(TeachRequest("my mug", spec.base_class, **_shots(shots, 2)))
    assert not plain.success
    assert "is stored (id my_mug) but not in use: it was taught for other weights; set " \
           "correct" in plain.message
    assert _stored_files(tmp_path) == before and other.concept_entries() == []

    refit = other.teach(TeachRequest("my mug", spec.base_class, correct=True))
    assert refit.success, refit.message
    assert (refit.concept_id, refit.class_id) == ("my_mug", PERSONAL_ID_BASE + 1)
    assert (refit.shots_used, refit.negatives_used) == (5, 1)
    assert "fitted again for these weights (it was taught for other weights)" in refit.message
    meta = _meta(tmp_path)
    assert meta["model_fingerprint"] == other.fingerprint
    assert (meta["class_id"], meta["shots"], meta["negatives"]) == (PERSONAL_ID_BASE + 1, 5, 1)
    assert _same_masks(other.store.load_shots("my mug")[1], stored_shots[1])
    assert _same_masks(other.store.load_shots("my mug", NEGATIVES)[1], stored_negatives[1])
    assert [concept_id(c.name) for c in other_segmenter.concepts] == ["my_mug"]
    concept = other_segmenter.concepts[0]
    assert concept.look_alikes.shape == (1, concept.dim)
    restarted = _engine(other_segmenter, tmp_path)
    assert restarted.load_problems == []
    assert [(e.concept_id, e.class_id) for e in restarted.concept_entries()] == [
        ("my_mug", PERSONAL_ID_BASE + 1)]

    # Back on the first weights, my mug is the one taught for other weights now: taught anew
    # with overwrite (its look-alike kept), then corrected with a second look-alike.
    back = _engine(small_segmenter, tmp_path)
    assert back.concept_entries() == []
    anew = back.teach(TeachRequest("my mug", spec.base_class, **_shots(shots, 3),
                                   overwrite=True))
    assert anew.success, anew.message
    assert (anew.class_id, anew.shots_used, anew.negatives_used) == (
        PERSONAL_ID_BASE + 1, 3, 1)
    more = back.teach(_not_this_one(spec, look_alikes[1], correct=True))
    assert more.success, more.message
    assert (more.class_id, more.shots_used, more.negatives_used) == (PERSONAL_ID_BASE + 1, 3, 2)
    assert _meta(tmp_path)["model_fingerprint"] == back.fingerprint
    assert _same_masks(back.store.load_shots("my mug", NEGATIVES)[1],
                       [look_alikes[0][1], look_alikes[1][1]])


def test_correcting_a_concept_for_other_weights_with_another_base_class_changes_nothing(
        small_segmenter, other_segmenter, taught, tmp_path):
    spec, shots, look_alikes = taught
    _with_a_look_alike(_engine(small_segmenter, tmp_path), taught)
    other = _engine(other_segmenter, tmp_path)
    before = _stored_files(tmp_path)
    out = other.teach(TeachRequest("my mug", "bottle", correct=True))
    assert not out.success and "it was taught as a kind of 'mug'" in out.message
    assert _stored_files(tmp_path) == before and other.concept_entries() == []


# ---------------------------------------------------------------- presence


def test_a_region_held_back_without_its_base_word_is_unlabeled_and_has_no_class_score(
        small_segmenter, synper, taught, tmp_path):
    """The vocabulary lost the concept's base word since the teach: a first sighting held
    back by the presence filter goes to no class (UNLABELED), which the per-class scores
    leave out, so every class they name is a class of the frame (`povss segment`'s table)."""
    spec, shots, _ = taught
    engine = engine_on(small_segmenter, tmp_path, FAST, STEADIED)
    assert engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots))).success
    mine = held_out_view(small_segmenter, synper, spec)
    words = small_segmenter.vocabulary
    try:
        small_segmenter.set_vocabulary([w for w in words if w != spec.base_class])
        result = engine.segment(mine.image)  # one sighting of 2 in 3: held back
        seg = result.segmentation
        assert not next(o for o in result.objects if o.concept_id == "my_mug").present
        assert (seg.labels == UNLABELED).any()
        assert set(seg.class_scores) == set(np.unique(seg.labels).tolist()) - {UNLABELED}
        assert all(seg.class_names[c] for c in seg.present())
    finally:
        small_segmenter.set_vocabulary(words)


def test_a_replaced_concept_starts_a_fresh_presence_history(
        small_segmenter, synper, taught, tmp_path):
    """A filter that steadies: present after 2 of 3 frames seeing it, absent after 3 of 5
    missing it. What the concept before a teach, a correction or a forget saw never counts
    for the new one, nor does a frame decoded before the swap."""
    spec, shots, look_alikes = taught
    engine = engine_on(small_segmenter, tmp_path, FAST, STEADIED)
    first = engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots)))
    assert first.success, first.message
    mine = held_out_view(small_segmenter, synper, spec)
    lookalike_frame = look_alikes[0][0].image

    def frame(image: np.ndarray | None = None, seg: object = None,
              decoded_at: int | None = None) -> tuple[bool, int, int, int]:
        result = (engine.segment(image) if seg is None else
                  engine.after_model(seg, decoded_at=decoded_at))
        entry = next(o for o in result.objects if o.concept_id == "my_mug")
        seg = result.segmentation  # its per-class scores agree with its labels, held or not
        assert set(seg.class_scores) == set(np.unique(seg.labels).tolist()) - {UNLABELED}
        return (entry.present, int((result.labels == first.class_id).sum()),
                int(result.concept_masks["my_mug"].astype(bool).sum()), entry.area)

    def enters_afresh() -> None:
        present, labelled, masked, area = frame(mine.image)  # one sighting: not yet
        assert not present and labelled == masked == area == 0
        present, labelled, masked, area = frame(mine.image)  # two of three: present
        assert present and labelled == masked == area > 0

    enters_afresh()
    fix = engine.teach(_not_this_one(spec, look_alikes[0], correct=True))
    assert fix.success, fix.message
    # the old history (seen, seen) would hold it present through this miss
    present, labelled, masked, area = frame(lookalike_frame)
    assert not present and labelled == masked == area == 0
    enters_afresh()

    again = engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots),
                                      overwrite=True))
    assert again.success, again.message
    enters_afresh()  # not present at the first sighting: the old history is gone

    decoded_at = engine.concepts_version
    early = small_segmenter.decode(small_segmenter.encode(mine.image))  # by the concept about to go
    assert engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots),
                                     overwrite=True)).success
    present, labelled, masked, area = frame(seg=early, decoded_at=decoded_at)
    assert not present and labelled == masked == area == 0  # not counted for the new one
    enters_afresh()

    assert engine.forget("my mug")[0]
    assert engine.teach(TeachRequest("my mug", spec.base_class, **_shots(shots))).success
    enters_afresh()  # no frame between the forget and the teach: still afresh
