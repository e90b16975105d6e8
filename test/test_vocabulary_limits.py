"""A vocabulary is bounded below the personal concepts' id base and checked in linear time:
a quadratic duplicate check once stalled a node on a 70,000-word list, which then overflowed
the uint16 class map; above 32,768 words, word ids would collide with personal class ids."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from povss_ros.perception import StartupError, build_engine
from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter
from povss_ros.settings import EngineSettings
from povss_ros.vocabulary import (
    MAX_VOCABULARY,
    PERSONAL_ID_BASE,
    UNLABELED,
    VocabularyError,
    parse_vocabulary,
)

# Generous for 2 shared cores: the linear checks take a few ms; the quadratic one took minutes.
FAST_S = 2.0


def _words(n: int) -> list[str]:
    return [f"word {i}" for i in range(n)]


def test_the_maximum_keeps_every_word_id_below_the_personal_ids():
    assert MAX_VOCABULARY - 1 < PERSONAL_ID_BASE < UNLABELED


def test_seventy_thousand_words_are_refused_fast_naming_the_limit(tmp_path):
    words = _words(70_000)
    t0 = time.monotonic()
    with pytest.raises(VocabularyError) as err:
        parse_vocabulary(words)
    assert time.monotonic() - t0 < FAST_S
    msg = str(err.value)
    assert "70000 words" in msg and f"more than the {MAX_VOCABULARY}" in msg
    assert f"below {PERSONAL_ID_BASE}" in msg
    vocab_file = tmp_path / "huge.txt"  # the same from a file (a one-entry parameter)
    vocab_file.write_text("\n".join(words), encoding="utf-8")
    with pytest.raises(VocabularyError, match="70000 words"):
        parse_vocabulary(str(vocab_file))


def test_the_boundary_exactly_max_words_pass_one_more_is_refused():
    words = _words(MAX_VOCABULARY)
    assert parse_vocabulary(words) == words
    with pytest.raises(VocabularyError, match=f"{MAX_VOCABULARY + 1} words"):
        parse_vocabulary([*words, "one more"])


def test_the_duplicate_check_is_linear_and_names_a_few():
    words = _words(MAX_VOCABULARY - 1) + ["word 7"]  # quadratic: ~1e9 comparisons
    t0 = time.monotonic()
    with pytest.raises(VocabularyError, match=r"duplicate vocabulary words: \['word 7'\]$"):
        parse_vocabulary(words)
    assert time.monotonic() - t0 < FAST_S
    many = _words(100) * 2
    with pytest.raises(VocabularyError, match=r"and 80 more$") as err:
        parse_vocabulary(many)
    assert str(err.value).count("'word ") == 20
    assert isinstance(err.value, ValueError)  # what every caller already catches


def test_a_segmenter_refuses_it_before_encoding_any_word():
    seg = Segmenter(build_san(TINY, seed=0), ["cat", "mug"], device="cpu", precision="fp32")
    t0 = time.monotonic()
    with pytest.raises(VocabularyError, match="70000 words"):
        seg.set_vocabulary(_words(70_000))
    assert time.monotonic() - t0 < FAST_S
    assert seg.vocabulary == ["cat", "mug"]


def test_start_up_names_the_vocabulary_parameter(tmp_path):
    settings = EngineSettings(variant="tiny", device="cpu", allow_random_weights=True,
                              vocabulary=_words(70_000), text_cache_dir="",
                              concept_store=str(tmp_path / "store"))
    t0 = time.monotonic()
    with pytest.raises(StartupError, match=r"^parameter 'vocabulary' \(70000 words\): the "
                                           r"vocabulary has 70000 words"):
        build_engine(settings)
    assert time.monotonic() - t0 < 30.0  # building the tiny model included
    dupes = EngineSettings(variant="tiny", device="cpu", allow_random_weights=True,
                           vocabulary=["mug", "mug"], text_cache_dir="",
                           concept_store=str(tmp_path / "store"))
    with pytest.raises(StartupError, match=r"^parameter 'vocabulary' \(2 words\): duplicate"):
        build_engine(dupes)


def test_a_vocabulary_file_that_cannot_be_read_names_the_file(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("tasse\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match=f"cannot read the vocabulary file {latin}"):
        parse_vocabulary(str(latin))
    assert Path("/proc/self/mem").is_file(), "this test needs Linux's /proc"
    unreadable = tmp_path / "unreadable.txt"  # a regular file whose read fails (EIO)
    unreadable.symlink_to("/proc/self/mem")
    with pytest.raises(VocabularyError, match="Input/output error"):
        parse_vocabulary(str(unreadable))


@pytest.mark.ros
def test_the_node_parameter_check_refuses_it_in_any_state():
    pytest.importorskip("rclpy", reason="rclpy is not importable")
    from povss_ros.ros.params import refusal

    t0 = time.monotonic()
    reason = refusal("vocabulary", _words(70_000))
    assert time.monotonic() - t0 < FAST_S
    assert reason and reason.startswith("vocabulary: the vocabulary has 70000 words")
    assert refusal("vocabulary", _words(MAX_VOCABULARY)) is None
    assert "duplicate" in refusal("vocabulary", ["mug", "cup", "mug"])
    for one in (["auto"], ["coco_stuff"], ["words.txt"]):  # resolved when applied
        assert refusal("vocabulary", one) is None
