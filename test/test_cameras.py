"""Several cameras on one engine, without ROS: camera names checked, frames of several cameras
batched into one forward with the results of one at a time, and each camera's own captured
frames and presence history (the small synthetic-world model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _small_model import SMALL, STEADIED

from povss_lab.synthetic.world import World, sample_scene
from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.cameras import MAX_CAMERAS, cameras_problem
from povss_ros.perception import CameraFrame
from povss_ros.personal.teach import TeachConfig

CAMERAS = ["head", "wrist", "arm"]
SIZE = (320, 240)


@pytest.mark.parametrize("names", [[""], ["head"], ["head", "wrist"], ["cam_0", "Cam1"],
                                   [f"c{i}" for i in range(MAX_CAMERAS)]])
def test_good_camera_lists(names):
    assert cameras_problem(names) is None


@pytest.mark.parametrize(("names", "why"), [
    ([], "holds no camera"),
    (["", "wrist"], "not a camera name"),
    (["head", "head"], "names head twice"),
    (["1cam"], "not a camera name"),
    (["arm/wrist"], "not a camera name"),
    (["head "], "not a camera name"),
    ([f"c{i}" for i in range(MAX_CAMERAS + 1)], f"at most {MAX_CAMERAS}"),
    ("head", "must be a list"),
])
def test_bad_camera_lists_are_refused_with_the_reason(names, why):
    assert why in cameras_problem(names)


def test_an_engine_refuses_a_bad_camera_list(tmp_path, segmenter):
    with pytest.raises(ValueError, match="names head twice"):
        PerceptionEngine(segmenter, ConceptStore(tmp_path), _settings(tmp_path),
                         ["head", "head"])


@pytest.fixture(scope="module")
def world():
    w = World(0)
    mine = w.identity("mug", 0)
    others = [i for i in w.identities("mug") if i != mine]
    rng = np.random.default_rng(5)
    shots = [sample_scene(rng, w, [mine], size=SIZE, exclude=others) for _ in range(4)]
    return w, mine, shots


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter.from_weights(SMALL, device="cpu", precision="fp32")


def _settings(root: Path) -> EngineSettings:
    return EngineSettings(concept_store=str(root), capture_encodings_mib=64,
                          teach=TeachConfig(iterations=60, num_points=1024, measure_fit=False),
                          objects=STEADIED)


@pytest.fixture(scope="module")
def store(tmp_path_factory, segmenter, world):
    """A store holding "my mug", taught once from four shots with exact masks."""
    root = tmp_path_factory.mktemp("concepts")
    _, mine, shots = world
    engine = PerceptionEngine(segmenter, ConceptStore(root), _settings(root))
    outcome = engine.teach(TeachRequest("my mug", "mug", [s.image for s in shots],
                                        [s.mask(mine) for s in shots]))
    assert outcome.success, outcome.message
    return root


def _engine(segmenter: Segmenter, root: Path) -> PerceptionEngine:
    return PerceptionEngine(segmenter, ConceptStore(root), _settings(root), CAMERAS)


def _frames(world) -> list[CameraFrame]:  # noqa: ANN001
    """head and wrist: frames of one size (one batch); arm: a smaller one (its own forward)."""
    _, mine, shots = world
    small = shots[2].image[::2, ::2].copy()
    return [CameraFrame(shots[0].image, 1, camera="head"),
            CameraFrame(shots[1].image, 2, camera="wrist"),
            CameraFrame(small, 3, camera="arm")]


def test_batched_frames_equal_frames_one_at_a_time(segmenter, store, world):
    frames = _frames(world)
    batched = _engine(segmenter, store).segment_frames(frames, batch=True)
    alone = _engine(segmenter, store)
    assert [r.batch for r in batched] == [2, 2, 1]
    apart = [alone.segment(f.rgb, f.stamp_ns, camera=f.camera) for f in frames]
    assert any(o.concept_id == "my_mug" for o in apart[0].objects)
    for got, want in zip(batched, apart):
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.segmentation.score, want.segmentation.score, atol=1e-4)
        assert got.concept_masks.keys() == want.concept_masks.keys()
        for cid, mask in want.concept_masks.items():
            np.testing.assert_array_equal(got.concept_masks[cid], mask)
        assert [(o.name, o.concept_id, o.present, o.area, o.box) for o in got.objects] == \
            [(o.name, o.concept_id, o.present, o.area, o.box) for o in want.objects]


def test_several_rounds_of_batches_keep_each_cameras_presence(segmenter, store, world):
    """Round after round, batched and one at a time agree, and each camera's presence
    history is its own: my mug is present in the camera that sees it, never in the one
    that does not."""
    w, mine, shots = world
    empty = sample_scene(np.random.default_rng(9), w, [], size=SIZE,
                         exclude=w.identities("mug")).image
    frames = [CameraFrame(shots[0].image, camera="head"), CameraFrame(empty, camera="wrist")]
    batched, alone = _engine(segmenter, store), _engine(segmenter, store)
    for _ in range(3):
        got = batched.segment_frames(frames, batch=True)
        want = [alone.segment(f.rgb, camera=f.camera) for f in frames]
        for g, h in zip(got, want):
            np.testing.assert_array_equal(g.labels, h.labels)
    head, wrist = ({o.concept_id: o for o in r.objects} for r in got)
    assert head["my_mug"].present and not wrist["my_mug"].present
    cid_version = batched._replaced.get("my_mug", 0)
    assert batched.camera("head").presence.present("my_mug", cid_version)
    assert not batched.camera("wrist").presence.present("my_mug", cid_version)


def test_each_camera_keeps_its_own_frames_and_encodings(segmenter, store, world):
    engine = _engine(segmenter, store)
    frames = _frames(world)
    for f in frames:
        engine.camera(f.camera).capture.add_frame(f.stamp_ns, f.rgb)
    engine.segment_frames(frames, batch=True)
    for f in frames:
        held = engine.camera(f.camera).capture.recent(10)
        assert [c.stamp_ns for c in held] == [f.stamp_ns]
        assert held[0].encoding is not None  # kept from the batch, in tensors of its own
        assert held[0].encoding.mask_embeddings.shape[0] == 1
    assert engine.capture is engine.camera("head").capture  # "" and capture: the first


def test_a_teach_reads_the_named_cameras_frames_and_an_unknown_camera_stores_nothing(
        segmenter, tmp_path, world):
    _, mine, shots = world
    engine = PerceptionEngine(segmenter, ConceptStore(tmp_path), _settings(tmp_path), CAMERAS)
    for stamp, shot in enumerate(shots[:3], start=1):  # the wrist camera saw my mug
        wrist = engine.camera("wrist").capture
        wrist.add_frame(stamp, shot.image)
        wrist.add_mask(stamp, shot.mask(mine))
    refused = engine.teach(TeachRequest("my mug", "mug", num_frames=3, camera="elbow"))
    assert not refused.success
    assert "no camera 'elbow' here: the cameras are head, wrist, arm" in refused.message
    assert not any(tmp_path.iterdir()) and not engine.concept_entries()
    from_head = engine.teach(TeachRequest("my mug", "mug", num_frames=3))  # head saw none
    assert not from_head.success and from_head.shots_used == 0
    assert "no frames captured yet on camera 'head'" in from_head.message  # the first
    taught = engine.teach(TeachRequest("my mug", "mug", num_frames=3, camera="wrist"))
    assert taught.success, taught.message
    assert taught.shots_used == 3 and taught.message.endswith("; frames of camera wrist")


def test_a_bad_frame_fails_alone_and_the_other_cameras_frames_are_segmented(
        segmenter, store, world):
    frames = _frames(world)
    bad = CameraFrame(frames[1].rgb.astype(np.float32), 2, camera="wrist")  # same shape
    unknown = CameraFrame(frames[0].rgb, 4, camera="elbow")
    results = _engine(segmenter, store).segment_frames([frames[0], bad, unknown], batch=True)
    assert results[0].labels.shape == frames[0].rgb.shape[:2]
    assert isinstance(results[1], ValueError) and "uint8" in str(results[1])
    assert isinstance(results[2], ValueError) and "no camera 'elbow'" in str(results[2])


def test_a_concept_in_a_cameras_view_stays_at_the_lower_threshold_there_alone(
        segmenter, store, world):
    """Hysteresis per camera: my mug enters at identity_min_similarity and, while present in
    a camera, is kept by regions at identity_stay_similarity; in a camera where it is not
    present the higher threshold still holds."""
    _, _, shots = world
    engine = _engine(segmenter, store)
    seg = engine.segmenter
    view = shots[0].image
    similarity = seg.decode(seg.encode(view)).identity[len(seg.vocabulary)]
    try:
        seg.identity_min_similarity = similarity - 0.05  # my mug comes into view in head
        seg.identity_stay_similarity = similarity - 0.05
        for _ in range(2):
            engine.segment(view, camera="head")
        seg.identity_min_similarity = similarity + 0.01  # now only staying is possible

        def mine(camera: str) -> object:
            frame = engine.segment(view, camera=camera)
            return next(o for o in frame.objects if o.concept_id == "my_mug")

        for _ in range(3):
            head, wrist = mine("head"), mine("wrist")
            assert head.present and head.area > 0  # held in head's view
            assert not wrist.present and wrist.area == 0  # never entered wrist's
        seg.identity_stay_similarity = similarity + 0.01  # staying needs more than it has
        assert [mine("head").present for _ in range(4)] == [True, True, False, False]
    finally:
        seg.identity_min_similarity = engine.settings.objects.identity_min_similarity
        seg.identity_stay_similarity = engine.settings.objects.identity_stay_similarity
