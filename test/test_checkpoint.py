"""Checkpoints are untrusted files: strict, safe loading with errors that say what to do."""

import io
import os
import pickle
import socket
import threading

import numpy as np
import pytest
import torch

from povss_ros.perception import StartupError, build_engine
from povss_ros.san.checkpoint import (
    CheckpointError,
    fingerprint,
    load_san,
    read_state_dict,
)
from povss_ros.san.config import TINY, VIT_B16
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter, SegmenterError
from povss_ros.settings import EngineSettings
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


# --------------------------------------------------------------------------------------------
# weights traps: what lands at the weights path instead of a checkpoint is named, before any
# parser reads it

HTML_PAGE = (b"<!DOCTYPE html>\n<html class=\"\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
             b"\n<title>Hugging Face - 404</title>\n</head>\n<body>Entry not found</body>\n"
             b"</html>\n")


@pytest.mark.parametrize("name", ["san_vit_b_16.pth", "san_vit_b_16.safetensors"])
def test_a_failed_download_saved_as_the_weights_is_named_an_html_page(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\n  " + HTML_PAGE)
    with pytest.raises(CheckpointError,
                       match="an HTML page, not a checkpoint: did the download fail?"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="an HTML page"):
        Segmenter.from_weights(path, vocabulary="cat", device="cpu")


@pytest.mark.parametrize(("content", "what"), [
    (b"hello world\nthis is text\n", "a text file .it begins 'hello world'"),  # was KeyError 101
    (b"Entry not found", "a text file .it begins 'Entry not found'"),  # was "could run code"
    ("Gewichte für SAN ☕\n".encode(), "a text file"),
    (b"\n\n\n", "a text file"),
    (b'{"error":"Repository not found"}', "a JSON document"),
    (b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>", "an XML document"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 630000000\n",
     "a Git LFS pointer"),
])
def test_text_at_the_weights_path_is_named_for_what_it_is(tmp_path, content, what):
    path = tmp_path / "san_vit_b_16.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=what):
        read_state_dict(path)


def test_a_directory_is_not_reported_missing(tmp_path):
    (tmp_path / "san_vit_b_16.pth").mkdir()
    with pytest.raises(CheckpointError, match="is a directory: give the checkpoint file"):
        read_state_dict(tmp_path / "san_vit_b_16.pth")


def test_a_fifo_is_named_and_never_opened(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the check must only stat it."""
    path = tmp_path / "san_vit_b_16.pth"
    os.mkfifo(path)
    errors = []

    def read():
        try:
            read_state_dict(path)
        except CheckpointError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(10.0)
    if thread.is_alive():  # blocked in open(): release it, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5.0)
        pytest.fail("read_state_dict opened the FIFO")
    assert len(errors) == 1 and "is a FIFO (named pipe), not a checkpoint file" in errors[0]


def test_an_empty_file_says_the_download_failed(tmp_path):
    for name in ("san_vit_b_16.pth", "small.safetensors"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(CheckpointError, match=r"empty \(0 bytes\): did the download fail"):
            read_state_dict(tmp_path / name)


def test_binary_that_is_no_pytorch_file_is_refused_before_torch_reads_it(tmp_path):
    path = tmp_path / "san.pth"
    path.write_bytes(bytes(range(1, 256)) * 8)
    with pytest.raises(CheckpointError, match="neither a zip archive nor a pickle"):
        read_state_dict(path)
    renamed = tmp_path / "small.pth"  # a safetensors file under a .pth name
    save_weights(build_san(TINY, seed=1), tmp_path / "small.safetensors")
    renamed.write_bytes((tmp_path / "small.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="looks like a safetensors file, name it"):
        read_state_dict(renamed)


def test_a_truncated_safetensors_says_how_much_is_there(tmp_path):
    path = tmp_path / "small.safetensors"
    save_weights(build_san(TINY, seed=1), path)
    data = path.read_bytes()
    for cut in (4, 40, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            read_state_dict(path)
        with pytest.raises(CheckpointError, match="truncated"):
            Segmenter.from_weights(path, vocabulary="cat", device="cpu")


def test_a_legacy_checkpoint_cut_anywhere_is_truncated_never_hostile(tmp_path):
    """The legacy format (a stream of pickles, then raw storages) cut inside a pickle made the
    weights-only unpickler report a cut-off name ("GLOBAL torch.Flo") as a hostile global, and
    other cuts crash with KeyError, IndexError or struct.error: every cut is "truncated"."""
    legacy = io.BytesIO()
    torch.save({"model": build_san(TINY, seed=3).state_dict()}, legacy,
               _use_new_zipfile_serialization=False)
    data = legacy.getvalue()
    path = tmp_path / "san_tiny.pth"
    path.write_bytes(data)
    assert set(read_state_dict(path)) == set(build_san(TINY).state_dict())
    cuts = [*range(1, 1200, 3), *range(1200, len(data), len(data) // 40)]
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            read_state_dict(path)
        assert "is corrupt or truncated" in str(err.value), (cut, str(err.value))


def test_a_truncated_zip_checkpoint_is_truncated(tmp_path):
    path = tmp_path / "san_tiny.pth"
    _official_layout(build_san(TINY), path)
    data = path.read_bytes()
    for cut in (3, 100, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            read_state_dict(path)


# --------------------------------------------------------------------------------------------
# each start-up failure names the parameter it is about


def _settings(tmp_path, **changes) -> EngineSettings:
    weights = tmp_path / "tiny.safetensors"
    if not weights.exists():
        save_weights(build_san(TINY, seed=1), weights, ["cat", "mug"])
    return EngineSettings(**{"weights": str(weights), "device": "cpu", "text_cache_dir": "",
                             "concept_store": str(tmp_path / "store"), **changes})


def test_a_cuda_gpu_that_is_not_there_names_the_device_parameter(tmp_path):
    # cuda:99 is missing on a CPU machine (no CUDA) and on a GPU machine (no 100th GPU)
    for device in ("cuda:99", "cuda:x"):
        with pytest.raises(StartupError, match=rf"^parameter 'device' \({device}\): ") as err:
            build_engine(_settings(tmp_path, device=device))
        assert "weights" not in str(err.value)
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match=r"^parameter 'device' \(cuda\): .*CUDA is not "
                                               r"available here"):
            build_engine(_settings(tmp_path, device="cuda"))


def test_a_precision_the_device_lacks_names_the_precision_parameter(tmp_path):
    with pytest.raises(StartupError, match=r"^parameter 'precision' \(fp16\): precision fp16 "
                                           r"needs a CUDA device"):
        build_engine(_settings(tmp_path, precision="fp16"))
    with pytest.raises(SegmenterError, match="precision must be one of") as err:
        Segmenter.from_weights(tmp_path / "tiny.safetensors", "cat", device="cpu",
                               precision="fp8")
    assert err.value.setting == "precision"


def test_a_bad_weights_file_still_names_the_weights_parameter(tmp_path):
    html = tmp_path / "san_vit_b_16.pth"
    html.write_bytes(HTML_PAGE)
    with pytest.raises(StartupError, match=rf"^parameter 'weights' \({html}\): .*an HTML page"):
        build_engine(_settings(tmp_path, weights=str(html)))
    assert not (tmp_path / "store").exists()
