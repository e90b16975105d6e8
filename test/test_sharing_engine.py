"""Sharing concepts between engines without ROS (`PerceptionEngine.shared_message` and
`adopt_shared`, as the node's sharing topic carries them): the committed small model, real
stores on disk, one engine per robot. A correction reaches the others with its look-alikes and
its ids; a forget outlives a restart (`personal.store.forgotten`). The same over real DDS
between node processes: test_concept_sharing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from _small_model import SMALL, engine_on

from povss_ros import Segmenter, TeachRequest
from povss_ros.personal.store import ConceptError, ConceptStore
from povss_ros.personal.store import shared as sharing
from povss_ros.personal.teach import TeachConfig

FAST = TeachConfig(iterations=5, num_points=256, measure_fit=False)


def _node(synper, root, node_id):  # noqa: ANN001, ANN202
    """One robot's engine, with its own model and store, and the events it would share."""
    segmenter = Segmenter.from_weights(SMALL, synper.vocabulary, device="cpu")
    engine = engine_on(segmenter, root, FAST)
    engine.node_id = node_id
    sent: list[tuple[str, str, str]] = []
    engine.share_listener = lambda *event: sent.append(event)
    return engine, sent


def test_a_forget_outlives_a_restart_and_an_older_teach_arriving_after_it(
        synper, tmp_path):
    spec = synper.concepts()[0]
    shots = [synper.sample(s) for s in spec.positive_ids[:2]]
    a, a_sent = _node(synper, tmp_path / "a", "robot-a/povss")
    assert a.teach(TeachRequest("my mug", spec.base_class, [s.image for s in shots],
                                [s.personal_mask for s in shots])).success
    taught = a.shared_message(*a_sent[-1])
    b, b_sent = _node(synper, tmp_path / "b", "robot-b/povss")
    c, _ = _node(synper, tmp_path / "c", "robot-c/povss")
    for node in (b, c):
        assert node.adopt_shared(taught)[0].startswith("adopted 'my mug'")
    assert b.forget("my mug")[0]  # forgotten here
    forgot = b.shared_message(*b_sent[-1])
    assert b_sent[-1][0] == sharing.FORGOTTEN
    assert c.adopt_shared(forgot)[0].startswith("forgot 'my mug'")  # forgotten there
    for root in (tmp_path / "b", tmp_path / "c"):
        restarted, _ = _node(synper, root, f"again-{root.name}")
        assert restarted.adopt_shared(taught) == ("", "")  # the older teach stays forgotten
        assert "my_mug" not in restarted.store.scan().metas
        assert not restarted.segmenter.concepts
        assert "my_mug" in ConceptStore(root).forgotten()
    # a newer teach of the name wins over the forget, as any newer teach does
    assert a.teach(TeachRequest("my mug", spec.base_class, [s.image for s in shots],
                                [s.personal_mask for s in shots], overwrite=True)).success
    again, _ = _node(synper, tmp_path / "b", "robot-b/povss")
    assert again.adopt_shared(a.shared_message(*a_sent[-1]))[0].startswith("adopted 'my mug'")


def test_a_correction_reaches_the_others_with_its_look_alikes_and_its_ids(
        synper, tmp_path):
    spec = synper.concepts()[0]
    shots = [synper.sample(s) for s in spec.positive_ids[:2]]
    base_id = synper.vocabulary.index(spec.base_class)
    other = next(s for s in (synper.sample(i) for i in spec.negative_ids)
                 if (s.semantic == base_id).sum() > 400)
    a, a_sent = _node(synper, tmp_path / "a", "robot-a/povss")
    b, _ = _node(synper, tmp_path / "b", "robot-b/povss")
    assert a.teach(TeachRequest("my mug", spec.base_class, [s.image for s in shots],
                                [s.personal_mask for s in shots])).success
    assert b.adopt_shared(a.shared_message(*a_sent[-1]))[0].startswith("adopted")
    before = ConceptStore(tmp_path / "b").scan().metas["my_mug"]
    fix = a.teach(TeachRequest("my mug", spec.base_class, [other.image],
                               negative_masks=[other.semantic == base_id], correct=True))
    assert fix.success and fix.negatives_used == 1, fix.message
    done, note = b.adopt_shared(a.shared_message(*a_sent[-1]))
    assert done.startswith("adopted 'my mug'") and note == ""
    after = ConceptStore(tmp_path / "b").scan().metas["my_mug"]
    assert after["class_id"] == before["class_id"]
    assert after["created_at"] > before["created_at"]
    corrected = b.segmenter.concepts[0]
    assert corrected.look_alikes.shape[0] == 1  # the mark came with the correction
    assert corrected.look_alikes.equal(a.segmenter.concepts[0].look_alikes.to(
        corrected.look_alikes))


def test_a_message_stamped_far_ahead_of_this_clock_is_refused_and_changes_nothing(
        synper, tmp_path):
    node, _ = _node(synper, tmp_path / "a", "robot-a/povss")
    ahead = datetime.now(timezone.utc) + sharing.MAX_CLOCK_AHEAD + timedelta(minutes=5)
    forget = sharing.pack(sharing.FORGOTTEN, "robot-z/povss", "my_mug", node.fingerprint,
                          ahead.isoformat())
    with pytest.raises(ConceptError, match="clock"):
        node.adopt_shared(forget)
    assert node.store.forgotten() == {}
    soon = datetime.now(timezone.utc) + sharing.MAX_CLOCK_AHEAD / 2  # within the tolerance
    node.adopt_shared(sharing.pack(sharing.FORGOTTEN, "robot-z/povss", "my_mug",
                                   node.fingerprint, soon.isoformat()))
    assert node.store.forgotten()["my_mug"] == (soon, "robot-z/povss")
