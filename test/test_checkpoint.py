"""Checkpoints are untrusted files: strict, safe loading with errors that say what to do."""

import os
import pickle
import socket

import numpy as np
import pytest
import torch

from povss_ros.san.checkpoint import (
    CheckpointError,
    fingerprint,
    load_san,
    read_state_dict,
)
from povss_ros.san.config import TINY, VIT_B16
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter
from povss_ros.weights import save_weights


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Loading weights must never open a connection (no hub download, no hang)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _official_layout(model, path, nested=True):
    state = model.state_dict()
    torch.save({"model": state, "iteration": 5} if nested else state, path)


def _encode(model, image):
    with torch.no_grad():
        return model.encode(*model.preprocess(image))


def test_tiny_round_trip_is_exact(tmp_path):
    src = build_san(TINY, seed=11)
    path = tmp_path / "san_tiny.pth"
    _official_layout(src, path)
    loaded = load_san(TINY, path)
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    a, b = _encode(src, image), _encode(loaded, image)
    assert torch.equal(a.mask_logits, b.mask_logits)
    assert torch.equal(a.mask_embeddings, b.mask_embeddings)
    assert fingerprint(src) == fingerprint(loaded)
    assert fingerprint(src) != fingerprint(build_san(TINY, seed=12))


def test_vit_b16_official_layout_loads_strictly(tmp_path):
    """A full-size checkpoint with the official key layout (random values) loads strictly."""
    src = build_san(VIT_B16, seed=5)
    path = tmp_path / "san_vit_b_16.pth"
    _official_layout(src, path, nested=False)
    seg = Segmenter.from_weights(path, vocabulary=["cat", "mug"], device="cpu")
    assert seg.model.cfg.name == "vit_b16" and not seg.random_weights
    for key in (
        "clip_visual_extractor.positional_embedding",
        "side_adapter_network.query_embed",
        "ov_classifier.bg_embed",
        "criterion.empty_weight",
    ):
        assert torch.equal(seg.model.state_dict()[key], src.state_dict()[key])


def test_safetensors_carry_their_config(tmp_path):
    src = build_san(TINY, seed=2)
    path = tmp_path / "small.safetensors"
    save_weights(src, path)
    seg = Segmenter.from_weights(path, vocabulary="cat,dog", device="cpu")
    assert seg.model.cfg == TINY
    assert fingerprint(seg.model) == fingerprint(src)


def test_missing_file_names_the_official_source(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*Hugging Face"):
        read_state_dict(tmp_path / "san_vit_b_16.pth")


# torch warns that the hostile file's pickle protocol is unusual: expected here, it is hostile.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Exploit()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()

    path2 = tmp_path / "evil_zip.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": Exploit()}, path2)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path2)
    assert not marker.exists()


def test_truncated_checkpoint_is_reported(tmp_path):
    path = tmp_path / "san.pth"
    _official_layout(build_san(TINY), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_state_dict(path)


def test_wrong_variant_lists_first_mismatching_keys(tmp_path):
    path = tmp_path / "san_tiny.pth"
    _official_layout(build_san(TINY), path)
    with pytest.raises(CheckpointError) as err:
        load_san(VIT_B16, path)
    msg = str(err.value)
    assert "looks like a 'tiny' checkpoint" in msg
    assert "shape mismatches" in msg and "clip_visual_extractor" in msg


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = build_san(TINY).state_dict()
    state.pop("side_adapter_network.query_embed")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_san(TINY, path)
    assert "missing keys, first: ['side_adapter_network.query_embed']" in str(err.value)
    assert "unexpected keys, first: ['extra.weight']" in str(err.value)


def test_corrupt_safetensors_is_reported(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="safetensors"):
        Segmenter.from_weights(path, vocabulary="cat", device="cpu")


def test_checkpoint_of_non_tensors_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="no state dict"):
        read_state_dict(path)


def test_save_weights_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_weights(build_san(TINY, seed=1), path)
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_weights(build_san(TINY, seed=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
