"""Teaching from frames the node already segmented: their encodings are kept in the capture
buffer (within a budget) and reused, and the concept is bit-identical to one taught by
encoding the same frames again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_san import proposal_following_tiny_san

from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.capture import CaptureBuffer
from povss_ros.personal.teach import TeachConfig

WORDS = ["person", "bottle", "chair"]


class CountingEncoder:
    """The segmenter's own encode, counting its calls (how many forwards a teach ran)."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.real, self.calls = segmenter.encode, 0
        segmenter.encode = self

    def __call__(self, image: np.ndarray):  # noqa: ANN204 - SANFeatures
        self.calls += 1
        return self.real(image)


@pytest.fixture()
def engine(tmp_path):
    seg = Segmenter(proposal_following_tiny_san(), WORDS, "cpu", random_weights=True)
    settings = EngineSettings(concept_store=str(tmp_path), capture_encodings_mib=16,
                              teach=TeachConfig(iterations=20, num_points=256))
    return PerceptionEngine(seg, ConceptStore(tmp_path), settings)


def _frames(n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), bool)
        mask[10 + 5 * i : 60 + 5 * i, 20:90] = True
        out.append((rgb, mask))
    return out


def _stream(engine: PerceptionEngine, frames, with_masks: bool = True) -> None:
    """What the node does per frame: capture it, segment it (keeping its encoding)."""
    for stamp, (rgb, mask) in enumerate(frames, start=1):
        engine.capture.add_frame(stamp, rgb)
        engine.segment(rgb, stamp)
        if with_masks:
            engine.capture.add_mask(stamp, mask)


def _tensors(engine: PerceptionEngine, name: str) -> dict[str, torch.Tensor]:
    concept = next(c for c in engine.segmenter.concepts if c.name == name)
    return {k: v.detach().clone() for k, v in concept.tensors().items()}


def test_a_teach_from_captured_frames_reuses_their_encodings_bit_for_bit(engine):
    frames = _frames()
    _stream(engine, frames)
    assert all(f.encoding is not None for f in engine.capture.recent(3))
    counter = CountingEncoder(engine.segmenter)
    cached = engine.teach(TeachRequest("mine", "bottle", num_frames=3))
    assert cached.success, cached.message
    assert counter.calls == 0  # no forward: every shot came from the buffer
    kept = _tensors(engine, "mine")
    assert engine.forget("mine")[0]
    again = engine.teach(TeachRequest("mine", "bottle", [f for f, _ in frames],
                                      [m for _, m in frames]))
    assert again.success, again.message
    assert counter.calls == 3  # explicit images are encoded
    fresh = _tensors(engine, "mine")
    assert kept.keys() == fresh.keys()
    for key in kept:
        assert torch.equal(kept[key], fresh[key]), key
    assert cached.fit_iou == again.fit_iou


def test_automatic_masks_of_captured_frames_need_no_forward(engine):
    _stream(engine, _frames(), with_masks=False)
    counter = CountingEncoder(engine.segmenter)
    outcome = engine.teach(TeachRequest("auto", "bottle", num_frames=3))
    assert counter.calls == 0
    assert outcome.shots_used + outcome.frames_rejected == 3


def test_frames_without_a_kept_encoding_are_encoded(tmp_path, engine):
    frames = _frames()
    for stamp, (rgb, mask) in enumerate(frames, start=1):
        engine.capture.add_frame(stamp, rgb)  # dropped by the node: never segmented
        engine.capture.add_mask(stamp, mask)
    engine.segment(frames[-1][0], 3)  # only the newest was segmented
    counter = CountingEncoder(engine.segmenter)
    assert engine.teach(TeachRequest("mine", "bottle", num_frames=3)).success
    assert counter.calls == 2


def test_the_encoding_budget_drops_the_oldest_and_follows_the_frames():
    class Encoding:  # what the buffer holds is opaque to it: only its declared size counts
        pass

    buf = CaptureBuffer(capacity=3, max_encoding_bytes=250)
    for stamp in range(1, 4):
        buf.add_frame(stamp, np.zeros((2, 2, 3), np.uint8))
        buf.add_encoding(stamp, Encoding(), 100)
    assert [f.encoding is not None for f in buf.recent(3)] == [False, True, True]
    assert buf.encoding_nbytes == 200
    buf.add_frame(4, np.zeros((2, 2, 3), np.uint8))  # frame 1 leaves; 2's encoding stays
    buf.add_encoding(4, Encoding(), 100)
    assert [f.stamp_ns for f in buf.recent(3) if f.encoding is not None] == [3, 4]
    buf.add_encoding(99, Encoding(), 100)  # a frame no longer (or never) held: ignored
    buf.add_encoding(4, Encoding(), 300)  # larger than the whole budget: not kept
    assert buf.encoding_nbytes == 200
    buf.resize(3, max_encoding_bytes=0)
    assert buf.encoding_nbytes == 0 and all(f.encoding is None for f in buf.recent(3))


def test_frames_stamped_alike_each_keep_their_own_encoding():
    """A camera that stamps every frame 0: each frame's encoding stays its own (a teach must
    never pair one frame's pixels with another's features)."""
    buf = CaptureBuffer(capacity=3, max_encoding_bytes=1000)
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    buf.add_frame(0, a)
    buf.add_frame(0, b)
    buf.add_encoding(0, "features of b", 100, b)  # segmented in any order
    buf.add_encoding(0, "features of a", 100, a)
    held = buf.recent(2)
    assert [f.rgb is x for f, x in zip(held, (a, b))] == [True, True]
    assert [f.encoding for f in held] == ["features of a", "features of b"]
    buf.add_encoding(0, "whose?", 100)  # no pixels named and two frames stamped 0: not kept
    assert [f.encoding for f in buf.recent(2)] == ["features of a", "features of b"]
    buf.add_frame(0, a.copy())  # a third frame stamped 0 has no encoding yet
    assert [f.encoding for f in buf.recent(3)] == ["features of a", "features of b", None]
    c = np.full((2, 2, 3), 7, np.uint8)
    buf.add_frame(5, c)
    buf.add_encoding(5, "features of c", 100, c.copy())  # its pixels copied: still c's
    assert buf.recent(1)[0].encoding == "features of c"
