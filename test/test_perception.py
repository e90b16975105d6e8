"""The perception engine without ROS: class ids owned by the store, decoding without concepts,
weights that carry their words, and the CLI on the small model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _tiny_san import proposal_following_tiny_san

from povss_lab.synthetic.world import World, sample_scene
from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.personal.teach import TeachConfig
from povss_ros.san.checkpoint import CheckpointError
from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.vocabulary import PERSONAL_ID_BASE
from povss_ros.weights import declared_vocabulary, save_weights

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "models" / "syn_small.safetensors"
WORDS = ["person", "bottle", "chair", "table"]
FAST = TeachConfig(iterations=3, num_points=256)


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(proposal_following_tiny_san(), WORDS, "cpu", random_weights=True)


def _engine(segmenter: Segmenter, root: Path) -> PerceptionEngine:
    segmenter.set_concepts([])
    settings = EngineSettings(concept_store=str(root), teach=FAST)
    return PerceptionEngine(segmenter, ConceptStore(root), settings)


def _shot(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    return image, mask


def _teach(engine: PerceptionEngine, name: str, overwrite: bool = False) -> object:
    image, mask = _shot(len(name))
    outcome = engine.teach(TeachRequest(name, "bottle", [image], [mask], overwrite=overwrite))
    assert outcome.success, outcome.message
    return outcome


# ---------------------------------------------------------------- class ids


def test_class_ids_are_stable_across_restarts_overwrites_and_forgets(segmenter, tmp_path):
    engine = _engine(segmenter, tmp_path)
    mug, cup = _teach(engine, "my mug"), _teach(engine, "my cup")
    assert (mug.class_id, cup.class_id) == (PERSONAL_ID_BASE, PERSONAL_ID_BASE + 1)
    again = _engine(segmenter, tmp_path)  # a restart: ids come back from the store
    assert {e.concept_id: e.class_id for e in again.concept_entries()} == {
        "my_mug": PERSONAL_ID_BASE, "my_cup": PERSONAL_ID_BASE + 1}
    assert _teach(again, "My Mug", overwrite=True).class_id == PERSONAL_ID_BASE  # kept
    assert again.forget("my mug")[0]
    assert _teach(again, "my bowl").class_id == PERSONAL_ID_BASE  # the freed id is reused
    labels = again.segment(_shot(9)[0]).labels
    assert set(np.unique(labels)) <= set(range(len(WORDS))) | {PERSONAL_ID_BASE,
                                                                 PERSONAL_ID_BASE + 1}
    assert not (tmp_path / ".class_ids.json").exists()  # no registry beside the concepts


def test_class_ids_from_an_older_store_and_a_hand_edited_duplicate(segmenter, tmp_path):
    engine = _engine(segmenter, tmp_path)
    _teach(engine, "my mug")
    _teach(engine, "my cup")
    for cid in ("my_mug", "my_cup"):  # as written before ids were recorded in meta.json
        meta_path = tmp_path / cid / "meta.json"
        meta = json.loads(meta_path.read_text())
        del meta["class_id"]
        meta_path.write_text(json.dumps(meta))
    (tmp_path / ".class_ids.json").write_text(json.dumps({"my_cup": 40000, "my_mug": 40000}))
    ids = ConceptStore(tmp_path).class_ids()
    assert ids["my_cup"] == 40000  # the old registry's id (first come in id order)
    assert ids["my_mug"] == PERSONAL_ID_BASE  # its duplicate gets the lowest free one
    assert len(set(ids.values())) == 2


# ---------------------------------------------------------------- decoding


def test_decode_without_concepts_is_plain_san_while_concepts_are_set(segmenter, tmp_path):
    engine = _engine(segmenter, tmp_path)
    image = _shot(3)[0]
    plain = segmenter.segment(image)
    _teach(engine, "my mug")
    features = segmenter.encode(image)
    with_concept = segmenter.decode(features)
    without = segmenter.decode(features, concepts=())
    assert with_concept.class_names == [*WORDS, "my mug"]
    assert without.class_names == WORDS and without.personal_ids == []
    assert np.array_equal(without.labels, plain.labels)
    assert np.array_equal(without.score, plain.score)


def test_automatic_teach_masks_come_from_the_open_vocabulary_alone(segmenter, tmp_path):
    engine = _engine(segmenter, tmp_path)
    _teach(engine, "my mug")
    image = _shot(4)[0]
    plain = segmenter.decode(segmenter.encode(image), concepts=())
    engine.settings = replace(engine.settings, teach=replace(  # any score, any runner-up
        FAST, auto_min_score=0.0, auto_dominance=1.0))  # 1.0: the field's least, no check
    word = WORDS[int(np.bincount(plain.labels.ravel()).argmax())]
    mask, why = engine.auto_mask(image, word)
    assert mask is not None, why
    assert (plain.labels[mask] == WORDS.index(word)).all()


# ---------------------------------------------------------------- weights carry their words


def test_weights_written_here_carry_their_words_and_default_to_them(tmp_path, caplog):
    path = tmp_path / "m.safetensors"
    save_weights(build_san(TINY, seed=3), path, class_names=["cup", "plate", "floor"])
    assert declared_vocabulary(path) == ["cup", "plate", "floor"]
    seg = Segmenter.from_weights(path, device="cpu")
    assert seg.vocabulary == ["cup", "plate", "floor"]
    with caplog.at_level(logging.WARNING):
        seg.set_vocabulary(["cup", "saucer"])
    assert "saucer" in caplog.text and "unknown to this model" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        seg.set_vocabulary("auto")
    assert seg.vocabulary == ["cup", "plate", "floor"] and caplog.text == ""
    save_weights(build_san(TINY, seed=3), tmp_path / "plain.safetensors")
    assert declared_vocabulary(tmp_path / "plain.safetensors") is None
    assert len(Segmenter.from_weights(tmp_path / "plain.safetensors", device="cpu").vocabulary
               ) == 171  # no words declared: COCO-Stuff, as the official checkpoints


def test_unreadable_word_metadata_is_a_checkpoint_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"class_names": "[not json"})
    with pytest.raises(CheckpointError, match="class_names"):
        declared_vocabulary(path)


def test_the_small_model_declares_its_17_words():
    words = declared_vocabulary(SMALL)
    assert words == list(World(0).class_names) and len(words) == 17


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "povss_ros.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_povss_segment_with_the_small_model_names_its_classes_from_its_words(tmp_path):
    scene = sample_scene(np.random.default_rng(5), World(0))
    cv2.imwrite(str(tmp_path / "scene.png"), scene.image[:, :, ::-1])
    proc = _cli("segment", str(tmp_path / "scene.png"), "--weights", str(SMALL),
                "--text-cache", "", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    table = json.loads((tmp_path / "out" / "scene_classes.json").read_text())
    names = {c["name"] for c in table["classes"].values()}
    assert names and names <= set(World(0).class_names)
    assert {"table", "wall"} <= names  # every synthetic scene shows both
    assert "not a probability" in table["mean_score"]


def test_povss_teach_with_a_word_the_model_does_not_know_says_which_it_knows(tmp_path):
    scene = sample_scene(np.random.default_rng(6), World(0))
    cv2.imwrite(str(tmp_path / "s.png"), scene.image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "m.png"), np.full(scene.image.shape[:2], 255, np.uint8))
    proc = _cli("teach", "my cup", "--base-class", "cup", "--shots",
                f"{tmp_path / 's.png'}:{tmp_path / 'm.png'}", "--weights", str(SMALL),
                "--text-cache", "", "--concepts", str(tmp_path / "concepts"),
                "--iterations", "2")
    assert proc.returncode == 1
    assert "'cup' is not in the vocabulary (17 words: wall, floor, table, mug" in proc.stderr
    assert not any((tmp_path / "concepts").iterdir())  # nothing stored


def test_public_api_names_resolve():
    import povss_ros

    for name in povss_ros.__all__:
        assert getattr(povss_ros, name).__name__ == name
    with pytest.raises(AttributeError):
        povss_ros.nothing_here  # noqa: B018
