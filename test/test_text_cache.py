"""The disk cache of text rows: same rows as the text tower, no tower run on a warm start,
one file per set of text weights, and a broken cache never breaks start-up."""

import json
import logging

import pytest
import torch

from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter
from povss_ros.text_cache import (
    TextRowCache,
    default_cache_dir,
    resolve_cache_dir,
    text_fingerprint,
)

WORDS = ["mug", "table", "wall", "my favourite chair"]


def _tower_runs(model) -> list[int]:
    """A list that grows by one each time the text transformer runs."""
    calls: list[int] = []
    model.ov_classifier.transformer.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_warm_start_serves_identical_rows_without_running_the_tower(tmp_path):
    cold = Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=tmp_path)
    files = list(tmp_path.glob("text_rows_*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp*"))  # atomic: no temp left

    model = build_san(TINY, seed=3)
    runs = _tower_runs(model)
    warm = Segmenter(model, WORDS, "cpu", text_cache_dir=tmp_path)
    assert runs == []
    assert torch.equal(warm.text_rows, cold.text_rows)
    # without the cache the tower runs and gives the same rows
    model = build_san(TINY, seed=3)
    runs = _tower_runs(model)
    plain = Segmenter(model, WORDS, "cpu")
    assert runs and torch.equal(plain.text_rows, cold.text_rows)


def test_new_words_are_encoded_once_and_added_to_the_file(tmp_path):
    seg = Segmenter(build_san(TINY, seed=3), WORDS[:2], "cpu", text_cache_dir=tmp_path)
    seg.set_vocabulary(WORDS)
    model = build_san(TINY, seed=3)
    runs = _tower_runs(model)
    again = Segmenter(model, WORDS, "cpu", text_cache_dir=tmp_path)
    assert runs == [] and torch.equal(again.text_rows, seg.text_rows)
    assert len(list(tmp_path.glob("text_rows_*"))) == 1


def test_other_text_weights_get_their_own_file(tmp_path):
    a, b = build_san(TINY, seed=3), build_san(TINY, seed=4)
    assert text_fingerprint(a.ov_classifier) != text_fingerprint(b.ov_classifier)
    before = text_fingerprint(a.ov_classifier)
    with torch.no_grad():  # the void row and temperature do not change text rows
        a.ov_classifier.bg_embed.add_(1.0)
        a.ov_classifier.logit_scale.add_(1.0)
    assert text_fingerprint(a.ov_classifier) == before
    with torch.no_grad():
        a.ov_classifier.text_projection[0, 0] += 1e-3
    assert text_fingerprint(a.ov_classifier) != before
    Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=tmp_path)
    Segmenter(build_san(TINY, seed=4), WORDS, "cpu", text_cache_dir=tmp_path)
    assert len(list(tmp_path.glob("text_rows_*"))) == 2


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a safetensors file at all", None],
    ids=["empty", "garbage", "truncated"],
)
def test_a_corrupt_cache_is_recomputed_and_rewritten(tmp_path, caplog, damage):
    cold = Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=tmp_path)
    (path,) = tmp_path.glob("text_rows_*")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage is None else damage)
    with caplog.at_level(logging.WARNING):
        seg = Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=tmp_path)
    assert "unusable" in caplog.text
    assert torch.equal(seg.text_rows, cold.text_rows)
    # rewritten whole (compared by content: safetensors may order its header differently)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(f.get_tensor("rows"), cold.text_rows)
        assert json.loads(f.metadata()["words"]) == WORDS


def test_rows_of_another_width_are_refused(tmp_path, caplog):
    seg = Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=tmp_path)
    cache = TextRowCache(tmp_path, seg.model.ov_classifier)
    from safetensors.torch import save_file

    save_file({"rows": torch.zeros(len(WORDS), 7)}, str(cache.path),
              metadata={"format": "povss-text-rows-1", "words": '["mug", "table"]'})
    with caplog.at_level(logging.WARNING):
        again = Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=tmp_path)
    assert "unusable" in caplog.text and torch.equal(again.text_rows, seg.text_rows)


def test_an_unwritable_cache_dir_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        seg = Segmenter(build_san(TINY, seed=3), WORDS, "cpu", text_cache_dir=blocker / "cache")
    assert "cannot write" in caplog.text and seg.text_rows.shape[0] == len(WORDS)


def test_random_weights_are_not_cached(tmp_path):
    Segmenter(build_san(TINY, seed=3), WORDS, "cpu", random_weights=True, text_cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "povss_ros"
    assert resolve_cache_dir("auto") == tmp_path / "povss_ros"
    assert resolve_cache_dir("") is None
    assert resolve_cache_dir("~/x") == resolve_cache_dir("~/x").expanduser()
    assert str(resolve_cache_dir("~/x")).endswith("/x") and "~" not in str(resolve_cache_dir("~/x"))
