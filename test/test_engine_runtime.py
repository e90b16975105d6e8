"""The engine's run-time life without ROS: settings applied while it runs, a teach called off
mid-way, the model off the GPU and back, and the one validation of a setting's value."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest
import torch
from _tiny_san import proposal_following_tiny_san

from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.capture import CaptureBuffer
from povss_ros.options import check, user_fields
from povss_ros.personal.teach import TeachConfig

WORDS = ["person", "bottle", "chair"]


def _engine(root, device: str = "cpu", **teach) -> PerceptionEngine:
    seg = Segmenter(proposal_following_tiny_san(), WORDS, device, random_weights=True)
    settings = EngineSettings(concept_store=str(root), teach=TeachConfig(num_points=256, **teach))
    return PerceptionEngine(seg, ConceptStore(root), settings)


def _request(name: str = "mine") -> TeachRequest:
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    return TeachRequest(name, "bottle", [image], [mask])


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in user_fields(cls) if f.name == name)


def test_check_refuses_each_kind_of_bad_value_and_accepts_the_defaults():
    for cls in (EngineSettings, TeachConfig):
        for f in user_fields(cls):
            assert check(f, getattr(cls(), f.name)) is None, f.name
    assert "at least 1" in check(_field(TeachConfig, "iterations"), 0)
    assert "at least 1" in check(_field(TeachConfig, "iterations"), -5)
    assert "finite" in check(_field(TeachConfig, "lr"), math.nan)
    assert "greater than 0" in check(_field(TeachConfig, "lr"), 0.0)
    assert "odd" in check(_field(TeachConfig, "kernel"), 4)
    assert "at most 2048" in check(_field(EngineSettings, "input_min_size"), 99999)
    assert "one of" in check(_field(EngineSettings, "device"), "gpu")
    assert check(_field(EngineSettings, "device"), "cuda:1") is None
    assert "blank" in check(_field(EngineSettings, "vocabulary"), ["mug", "  "])


def test_run_time_settings_apply_and_start_up_ones_are_refused(tmp_path):
    engine = _engine(tmp_path)
    native = engine.segmenter.model.cfg.min_size
    new = dataclasses.replace(engine.settings, vocabulary=["cup", "table"], input_min_size=96,
                              capture_buffer_size=2, teach=TeachConfig(iterations=4))
    for stamp in range(5):
        engine.capture.add_frame(stamp, np.zeros((8, 8, 3), np.uint8))
    engine.update_settings(new)
    assert engine.vocabulary == ["cup", "table"]
    assert engine.segmenter.model.cfg.min_size == 96
    assert [f.stamp_ns for f in engine.capture.recent(10)] == [3, 4]
    assert engine.settings.teach.iterations == 4
    engine.update_settings(dataclasses.replace(new, input_min_size=0))
    assert engine.segmenter.model.cfg.min_size == native
    with pytest.raises(ValueError, match="concept_store is read when the model is loaded"):
        engine.update_settings(dataclasses.replace(new, concept_store=str(tmp_path / "other")))
    assert engine.settings.concept_store == str(tmp_path)


def test_an_abandoned_teach_fails_with_the_reason_and_stores_nothing(tmp_path):
    engine = _engine(tmp_path, iterations=100000)
    started = threading.Event()
    result = {}

    def progress(it: int, total: int, loss: float) -> None:
        started.set()

    worker = threading.Thread(
        target=lambda: result.update(outcome=engine.teach(_request(), progress=progress)))
    worker.start()
    assert started.wait(60)
    assert engine.abandon_teach("the test calls it off")
    worker.join(60)
    outcome = result["outcome"]
    assert not outcome.success and "the test calls it off" in outcome.message
    assert not engine.teaching and engine.concept_entries() == []
    assert not any(tmp_path.iterdir())


def test_a_teach_called_off_while_its_shots_are_encoded_stops_before_the_next_one(tmp_path):
    """Called off during the first shot's forward: the other shots are not encoded (a
    Ctrl-C during a teach on a slow machine does not wait for every shot)."""
    engine = _engine(tmp_path, iterations=3)
    seg, forwards = engine.segmenter, []
    encode = seg.encode

    def encode_and_call_off(image: np.ndarray):  # noqa: ANN202 - SANFeatures
        forwards.append(image)
        engine.abandon_teach("the node is shutting down")
        return encode(image)

    seg.encode = encode_and_call_off
    one = _request()
    for masks in (one.masks * 6, []):  # shots with masks; frames that need an automatic one
        forwards.clear()
        outcome = engine.teach(TeachRequest("mine", "bottle", one.images * 6, masks))
        assert not outcome.success and "the node is shutting down" in outcome.message
        assert len(forwards) == 1  # six frames, one forward
        assert engine.concept_entries() == [] and not any(tmp_path.iterdir())


def test_a_new_teach_after_an_abandoned_one_runs(tmp_path):
    engine = _engine(tmp_path, iterations=3)
    engine.abandon_teach("earlier")  # nothing running: no effect on the next one
    outcome = engine.teach(_request())
    assert outcome.success, outcome.message


def test_a_teach_that_begins_while_teaching_is_held_stores_nothing(tmp_path):
    """A pausing node holds teaching: a teach that begins after the pause (its request was
    still being read when the pause came) fails too, until teaching is allowed again."""
    engine = _engine(tmp_path, iterations=3)
    assert not engine.abandon_teach("the node is deactivating", until_allowed=True)
    for _ in range(2):  # every teach, not only the next
        outcome = engine.teach(_request())
        assert not outcome.success and "the node is deactivating" in outcome.message
    assert engine.concept_entries() == [] and not any(tmp_path.iterdir())
    engine.allow_teaching()
    outcome = engine.teach(_request())
    assert outcome.success, outcome.message


def test_capture_buffer_resize_keeps_the_newest_frames():
    buf = CaptureBuffer(4)
    for stamp in range(6):
        buf.add_frame(stamp, np.zeros((2, 2, 3), np.uint8))
    buf.resize(2)
    assert [f.stamp_ns for f in buf.recent(10)] == [4, 5]
    buf.resize(5)
    buf.add_frame(6, np.zeros((2, 2, 3), np.uint8))
    assert [f.stamp_ns for f in buf.recent(10)] == [4, 5, 6]
    with pytest.raises(ValueError):
        buf.resize(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_release_gpu_returns_the_memory_and_restore_brings_the_model_back(tmp_path):
    engine = _engine(tmp_path, device="cuda")
    image = np.zeros((96, 128, 3), np.uint8)
    before = engine.segment(image).labels
    held = torch.cuda.memory_allocated()
    assert held > 0
    engine.release_gpu()
    assert torch.cuda.memory_allocated() < 0.05 * held  # the weights are gone from the GPU
    assert next(engine.segmenter.model.parameters()).device.type == "cpu"
    engine.restore_gpu()
    assert next(engine.segmenter.model.parameters()).device.type == "cuda"
    assert np.array_equal(engine.segment(image).labels, before)


def test_concepts_set_while_the_model_moves_wait_for_the_move_and_follow_it(tmp_path):
    """A forget or an adopted concept (set_concepts) arriving while a deactivate or an
    activate moves the model: it waits for the move, then lands on the model's device; the
    move never writes back the concepts it read before (which would undo the change)."""
    engine = _engine(tmp_path, iterations=3)
    assert engine.teach(_request()).success
    seg = engine.segmenter
    taught = seg.concepts
    seg.set_concepts([])
    release, swap, errors = seg.encoder.release, {}, []

    def swap_during_the_move() -> None:  # the move is under way: its state already read
        def set_taught() -> None:
            try:
                seg.set_concepts(taught)
            except Exception as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
        swap["thread"] = threading.Thread(target=set_taught)
        swap["thread"].start()
        swap["thread"].join(0.5)
        swap["waited"] = swap["thread"].is_alive()
        release()

    seg.encoder.release = swap_during_the_move
    seg.move_to(torch.device("meta"))  # another device than the concept's (no GPU needed)
    swap["thread"].join(30)
    assert not swap["thread"].is_alive() and errors == []
    assert swap["waited"]  # the swap waited for the move
    assert [c.name for c in seg.concepts] == ["mine"]  # and the move did not undo it
    assert all(p.device.type == "meta" for c in seg.concepts  # it followed the model
               for p in [*c.parameters(), *c.buffers()])


def test_a_teach_without_the_fit_measurement_teaches_the_same_concept(tmp_path):
    measured = _engine(tmp_path / "a", iterations=5)
    skipped = _engine(tmp_path / "b", iterations=5, measure_fit=False)
    one, two = measured.teach(_request()), skipped.teach(_request())
    assert one.success and two.success and "fit not measured" in two.message
    assert 0.0 <= one.fit_iou <= 1.0 and math.isnan(two.fit_iou)
    a, b = (e.segmenter.concepts[0].tensors() for e in (measured, skipped))
    assert all(torch.equal(a[k], b[k]) for k in a)
