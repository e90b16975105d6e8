"""ConceptStore: names -> safe ids, round trips, corruption, and real crashes mid-save."""

from __future__ import annotations

import hashlib
import json
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_tensors

from povss_ros.personal.concept import Concept
from povss_ros.personal.names import ID_RE, canonical_name, concept_id
from povss_ros.personal.store import NEGATIVES, ConceptStore
from povss_ros.personal.store import layout as store_mod

N, D, FP = 16, 32, "fp-model-a"


def make_concept(name: str, seed: int = 0, **switches) -> Concept:
    gen = torch.Generator().manual_seed(seed)
    c = Concept(name, "mug", torch.randn(D, generator=gen), N, alpha=0.1, **switches)
    with torch.no_grad():
        for p in (c.t_per, c.w_z, c.w_m.weight, c.w_m.bias, c.f_per):
            p.copy_(torch.randn(p.shape, generator=gen))
    return c


def report(fit: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(fit_iou=fit, losses=[3.0, 1.0], seconds=0.1, config={"lr": 5e-4})


def shots(k: int = 2, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        mask = np.zeros((24, 32), bool)
        mask[4:12, 5:20] = True
        out.append((rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), mask))
    return out


def same_tensors(a: Concept, b: Concept) -> bool:
    ta, tb = a.tensors(), b.tensors()
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# ---------------------------------------------------------------- names
HOSTILE = [
    "../../etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".",
    "...",
    "/",
    "~",
    "-rf",
    "CON",
    "x" * 256,
    "我的杯子",
    "my mug",
    "My  Mug",
    "my_mug",
    "3d printer",
    "café",
    "\u202eevil",
    "ﬁle",
    "🙂",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_ids_are_safe_and_stay_inside_the_root(tmp_path, name):
    cid = concept_id(name)
    assert ID_RE.fullmatch(cid) and cid not in (".", "..") and len(cid) <= 48
    assert cid.isascii() and "/" not in cid and "\\" not in cid
    root = tmp_path.resolve()
    path = ConceptStore(root).path(cid).resolve()
    assert path.parent == root


def test_refused_names():
    for bad in ("", "   ", "\x00", "a\x00b", "tab\there", "line\n", "x" * 257):
        with pytest.raises(ValueError):
            concept_id(bad)
    with pytest.raises(TypeError):
        concept_id(None)  # type: ignore[arg-type]
    # New names must be visible text; a stored one with a format character keeps its id.
    for bad in ("my\u200dmug", "\u202eevil", "soft\u00adhyphen", "\ufeffmug"):
        with pytest.raises(ValueError, match="invisible format character"):
            canonical_name(bad)
        assert ID_RE.fullmatch(concept_id(bad))


def test_name_rules():
    assert concept_id("my mug") == "my_mug"
    assert concept_id("My  Mug") == "my_mug" == concept_id(" MY MUG ")  # case-insensitive
    assert canonical_name("My  Mug") == "my mug"
    assert concept_id("my_mug") != "my_mug"  # "_" is not representable: hashed, no clash
    assert concept_id("café") != concept_id("cafe") and concept_id("café").startswith("cafe_")
    assert concept_id("我的杯子").startswith("concept_")
    assert concept_id("我的杯子") != concept_id("我的杯")
    assert concept_id("3d printer").startswith("c_3d_printer_")
    long_a, long_b = "a" * 200, "a" * 199 + "b"
    assert concept_id(long_a) != concept_id(long_b) and len(concept_id(long_a)) <= 48


def test_random_names_never_escape(tmp_path):
    rng = random.Random(0)
    pool = 'aZ09 ._-/\\~:*?"<>|é我🙂\u0301\u200d'
    store = ConceptStore(tmp_path)
    ids = {}
    for _ in range(500):
        name = "".join(rng.choice(pool) for _ in range(rng.randint(1, 60)))
        try:
            cid = concept_id(name)
        except ValueError:
            assert not " ".join(name.split())
            continue
        assert store.path(cid).resolve().parent == store.root
        ids.setdefault(cid, set()).add(canonical_name(name, strict=False))
    assert all(len(keys) == 1 for keys in ids.values())  # no two names share an id


# ---------------------------------------------------------------- round trip
def test_save_load_round_trip(tmp_path):
    store = ConceptStore(tmp_path)
    a = make_concept("My Mug", seed=1, even_negative=True)
    b = make_concept("我的杯子", seed=2, use_negative=False, use_visual=False)
    store.save(a, report(0.75), shots(2), FP, "tiny")
    store.save(b, report(0.25), shots(1), FP, "tiny")
    loaded, problems = store.load_all(FP, N, D)
    assert problems == []
    by_name = {c.name: c for c in loaded}
    assert same_tensors(by_name["My Mug"], a) and same_tensors(by_name["我的杯子"], b)
    for orig in (a, b):
        assert by_name[orig.name].metadata() == orig.metadata()
    assert [concept_id(c.name) for c in loaded] == sorted(concept_id(c.name) for c in (a, b))
    meta = {m["name"]: m for m in store.list()}
    assert meta["My Mug"]["fit_iou"] == 0.75 and meta["My Mug"]["shots"] == 2
    assert meta["My Mug"]["model_fingerprint"] == FP and meta["My Mug"]["san_variant"] == "tiny"
    assert meta["My Mug"]["switches"] == {
        "use_prompt": True,
        "use_negative": True,
        "use_visual": True,
    }
    assert meta["My Mug"]["teach_config"] == {"lr": 5e-4} and meta["My Mug"]["created_at"]
    images, masks = store.load_shots("my mug")
    for (img, mask), got_img, got_mask in zip(shots(2), images, masks):
        assert np.array_equal(img, got_img) and np.array_equal(mask, got_mask)


def test_shots_can_be_shot_features(tmp_path):
    """`teach`'s ShotFeatures (image array + bool mask tensor) are stored as they are."""
    store = ConceptStore(tmp_path)
    ((img, mask),) = shots(1)
    feature_like = SimpleNamespace(image=img[:, ::-1], mask=torch.from_numpy(mask[:, ::-1].copy()))
    store.save(make_concept("mug"), report(), [feature_like], FP)
    images, masks = store.load_shots("mug")
    assert np.array_equal(images[0], img[:, ::-1]) and np.array_equal(masks[0], mask[:, ::-1])


def test_overwrite_same_name_any_case_and_delete(tmp_path):
    store = ConceptStore(tmp_path)
    store.save(make_concept("my mug", seed=1), report(), shots(), FP)
    newer = make_concept("MY MUG", seed=2)
    store.save(newer, report(), shots(), FP)
    loaded, _ = store.load_all(FP, N, D)
    assert len(loaded) == 1 and same_tensors(loaded[0], newer) and loaded[0].name == "MY MUG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_mug"]
    assert store.delete("My Mug") and not store.delete("my mug")
    assert store.load_all(FP, N, D) == ([], []) and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- damage
def test_damaged_concepts_are_skipped_with_a_reason(tmp_path):
    store = ConceptStore(tmp_path)
    names = ["good", "garbage", "flipped", "truncated", "missing", "shapes", "other model"]
    for i, name in enumerate(names):
        store.save(make_concept(name, seed=i), report(), shots(1), "fp-b" if i == 6 else FP)
    (tmp_path / "garbage" / "concept.safetensors").write_bytes(b"not a safetensors file")
    data = bytearray((tmp_path / "flipped" / "concept.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "flipped" / "concept.safetensors").write_bytes(bytes(data))
    text = (tmp_path / "truncated" / "meta.json").read_text()
    (tmp_path / "truncated" / "meta.json").write_text(text[: len(text) // 2])
    (tmp_path / "missing" / "concept.safetensors").unlink()
    # Well-formed file and checksum, wrong shapes (as from a model with another N).
    wrong = Concept("shapes", "mug", torch.randn(D), N + 1)
    blob = save_tensors(wrong.tensors())
    (tmp_path / "shapes" / "concept.safetensors").write_bytes(blob)
    meta = json.loads((tmp_path / "shapes" / "meta.json").read_text())
    meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    (tmp_path / "shapes" / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "Not An Id").mkdir()
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    loaded, problems = store.load_all(FP, N, D)
    assert [c.name for c in loaded] == ["good"]
    text = "\n".join(problems)
    assert len(problems) == 7, text
    assert "corrupt" in text and "meta.json is unreadable" in text and "missing" in text
    assert "tensor shapes" in text and "not a concept folder" in text
    assert "another model" in text and "teach it again" in text
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert before == after  # loading never deletes user data


# ---------------------------------------------------------------- crashes
def test_exception_during_save_rolls_back(tmp_path, monkeypatch):
    store = ConceptStore(tmp_path)
    old = make_concept("mug", seed=1)
    store.save(old, report(), shots(), FP)
    real, calls = store_mod._replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(store_mod, "_replace", failing)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_concept("mug", seed=2), report(), shots(), FP)
    loaded, problems = store.load_all(FP, N, D)
    assert problems == [] and len(loaded) == 1 and same_tensors(loaded[0], old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug"]


def _crash_child(root, step: str, at: int) -> None:
    """In a forked child: save v2 and die (os._exit) at the `at`-th call of `step`."""
    calls = {"n": 0}
    real = getattr(store_mod, step)

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == at:
            os._exit(17)
        return real(*args)

    setattr(store_mod, step, dying)
    ConceptStore(root).save(make_concept("mug", seed=2), report(0.2), shots(3), FP)
    os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize(
    "step,at,expect_new",
    [
        ("write_durable", 1, False),  # nothing written yet
        ("write_durable", 4, False),  # tensors, meta and one PNG written
        ("_replace", 1, False),  # new folder complete, old still live
        ("_replace", 2, False),  # old moved aside, new not yet in place
        ("fsync_dir", 3, False),  # shots and negatives folders synced, the new folder not yet
        ("fsync_dir", 4, True),  # both renames done, aside copy not yet deleted
    ],
)
def test_a_crash_at_any_step_leaves_old_or_new_never_a_mix(tmp_path, step, at, expect_new):
    store = ConceptStore(tmp_path)
    old, new = make_concept("mug", seed=1), make_concept("mug", seed=2)
    store.save(old, report(0.9), shots(2), FP)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            _crash_child(tmp_path, step, at)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 17
    loaded, problems = store.load_all(FP, N, D)
    assert problems == [] and len(loaded) == 1
    assert same_tensors(loaded[0], new if expect_new else old)
    fit = {m["fit_iou"] for m in store.list()}
    assert fit <= {0.2 if expect_new else 0.9}  # metadata matches the tensors
    # The next save tidies up and wins.
    newest = make_concept("mug", seed=3)
    store.save(newest, report(0.5), shots(1), FP)
    loaded, problems = store.load_all(FP, N, D)
    assert problems == [] and len(loaded) == 1 and same_tensors(loaded[0], newest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug"]


def test_look_alikes_and_the_one_object_flag_are_stored_with_the_concept(tmp_path):
    """A corrected concept keeps its look-alikes' features and their images; a meta whose
    look-alike count disagrees with the tensors is refused, the others still load."""
    store = ConceptStore(tmp_path)
    concept = make_concept("my mug", seed=4, unique=False)
    concept.look_alikes = torch.randn(2, D, generator=torch.Generator().manual_seed(5))
    store.save(concept, report(), shots(2), FP, negatives=shots(2, seed=9))
    (loaded,), problems = store.load_all(FP, N, D)
    assert problems == [] and same_tensors(loaded, concept) and not loaded.unique
    assert torch.equal(loaded.look_alikes, concept.look_alikes)
    images, masks = store.load_shots("my mug", NEGATIVES)
    assert [i.shape for i in images] == [s[0].shape for s in shots(2, seed=9)]
    assert all(np.array_equal(m, s[1] > 0) for m, s in zip(masks, shots(2, seed=9)))
    assert store.list()[0]["negatives"] == 2
    store.save(make_concept("plain", seed=6), report(), shots(1), FP)
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("my")]
    meta = json.loads((folder / "meta.json").read_text())
    meta["concept"]["look_alikes"] = 3  # two rows stored
    (folder / "meta.json").write_text(json.dumps(meta))
    loaded, problems = store.load_all(FP, N, D)
    assert [c.name for c in loaded] == ["plain"] and "tensor shapes" in problems[0]
