"""Fault injection on the concept store: a flaky disk and a hostile user, with real files.

Every case asserts the problem line (or the refusal) AND that nothing else changed: the other
concepts load with the same tensors and class ids, and no file on disk was touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _tiny_san import proposal_following_tiny_san
from safetensors.torch import save as save_tensors

from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.perception import build_engine
from povss_ros.personal.concept import Concept
from povss_ros.personal.names import canonical_name, concept_id, display_name
from povss_ros.personal.store import StoreNotWritable
from povss_ros.personal.store import layout as store_mod
from povss_ros.personal.store import schema as store_schema
from povss_ros.personal.store.forgotten import FORGOTTEN_FILE
from povss_ros.personal.teach import TeachConfig
from povss_ros.vocabulary import PERSONAL_ID_BASE

N, D, FP = 16, 32, "fp-faults"
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------- helpers
def make_concept(name: str, seed: int = 0, n: int = N, row: torch.Tensor | None = None) -> Concept:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(D, generator=gen) if row is None else row
    c = Concept(name, "bottle", base, n)
    with torch.no_grad():
        for p in (c.t_per, c.w_z, c.w_m.weight, c.w_m.bias, c.f_per):
            p.copy_(torch.randn(p.shape, generator=gen))
    return c


def report() -> SimpleNamespace:
    return SimpleNamespace(fit_iou=0.5, losses=[2.0, 1.0], seconds=0.1, config={})


def shots(k: int = 2, h: int = 12, w: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(k)
    mask = np.zeros((h, w), bool)
    mask[2:8, 3:10] = True
    return [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mask) for _ in range(k)]


def tree(root: Path) -> dict[str, str]:
    """Everything under `root` (links not followed): path -> kind or content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(mode):
                out[rel] = "link->" + os.readlink(path)
            elif stat.S_ISDIR(mode):
                out[rel] = "dir"
            elif stat.S_ISREG(mode):
                h = hashlib.sha256()
                with open(path, "rb") as f:  # sparse files: hash in chunks
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                out[rel] = h.hexdigest()
            else:
                out[rel] = f"special {stat.S_IFMT(mode)}"
    return out


def tensors_of(concepts: list[Concept]) -> dict[str, dict[str, torch.Tensor]]:
    return {c.name: c.tensors() for c in concepts}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(torch.equal(a[k][t], b[k][t]) for t in a[k])
        for k in a
    )


@pytest.fixture()
def good(tmp_path):
    """A store with two sound concepts and a victim; returns (store, reference state)."""
    return _good_store(tmp_path / "store")


def _good_store(root: Path) -> tuple[ConceptStore, SimpleNamespace]:
    store = ConceptStore(root)
    for seed, name in enumerate(["my cup", "my bowl", "victim"]):
        store.save(make_concept(name, seed), report(), shots(2), FP)
    loaded, problems = store.load_all(FP, N, D)
    assert problems == [] and len(loaded) == 3
    ids = store.class_ids()
    keep = {k: v for k, v in tensors_of(loaded).items() if k != "victim"}
    return store, SimpleNamespace(ids=ids, tensors=keep, root=root)


def check_rest_unchanged(store: ConceptStore, ref: SimpleNamespace, problems_expected: int = 1):
    """The two sound concepts load unchanged with their class ids; returns the problems."""
    before = tree(store.root)
    loaded, problems = store.load_all(FP, N, D)
    assert tree(store.root) == before  # reading changed nothing on disk
    got = {k: v for k, v in tensors_of(loaded).items() if k != "victim"}
    assert same(got, ref.tensors), sorted(got)
    ids = store.class_ids()
    assert all(ids[cid] == ref.ids[cid] for cid in ("my_cup", "my_bowl"))
    assert len(problems) == problems_expected, problems
    return problems


class Alarm:
    """Fail (instead of hanging the run) if the block takes longer than `seconds`."""

    def __init__(self, seconds: int = 10) -> None:
        self.seconds = seconds

    def __enter__(self):
        def boom(*_):
            raise TimeoutError("the store blocked")

        self.old = signal.signal(signal.SIGALRM, boom)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


# ---------------------------------------------------------------- meta.json
def _meta(root: Path) -> dict:
    return json.loads((root / "victim" / "meta.json").read_text())


def _edit(path: Path, key: str | tuple, value) -> None:
    meta = json.loads(path.read_text())
    if value is KeyError:
        if isinstance(key, tuple):
            del meta[key[0]][key[1]]
        else:
            del meta[key]
    elif isinstance(key, tuple):
        meta[key[0]][key[1]] = value
    else:
        meta[key] = value
    path.write_text(json.dumps(meta))


META_DAMAGE = {
    "a list": (lambda p: p.write_text("[1, 2]"), "holds list"),
    "an empty object": (lambda p: p.write_text("{}"), "unknown format_version"),
    "empty file": (lambda p: p.write_bytes(b""), "not valid JSON"),
    "truncated": (lambda p: p.write_text(p.read_text()[:40]), "not valid JSON"),
    "garbage bytes": (lambda p: p.write_bytes(os.urandom(64) + b"\xff"), "unreadable"),
    "deeply nested": (lambda p: p.write_text("[" * 200_000 + "]" * 200_000), "unreadable"),
    "huge": (lambda p: p.write_bytes(b" " * (store_schema.MAX_META_BYTES + 1)), "over the limit"),
    "null": (lambda p: p.write_text("null"), "holds NoneType"),
}
FIELD_DAMAGE = [
    ("name", KeyError, "no 'name' field"),
    ("name", 7, "field 'name'"),
    ("name", "bad\x07name", "control character"),
    ("name", "", "not a valid concept name"),
    ("name", "   ", "not a valid concept name"),
    ("name", "someone else", "'concept' names 'victim', not 'someone else'"),
    ("concept_id", "my_cup", "belongs to"),
    ("concept_id", None, "field 'concept_id'"),
    ("format_version", "1", "format_version"),
    ("format_version", True, "format_version"),
    ("format_version", 2, "format_version"),
    ("model_fingerprint", 1, "model_fingerprint"),
    ("tensors_sha256", "abc", "tensors_sha256"),
    ("concept", [], "field 'concept'"),
    ("canonical_name", "other", "canonical_name"),
    ("shots", "3", "'shots'"),
    ("shots", -1, "'shots'"),
    ("shots", 2.0, "'shots'"),
    ("fit_iou", "high", "'fit_iou'"),
    ("created_at", 5, "'created_at'"),
    ("switches", {"use_prompt": "yes"}, "'switches'"),
    ("teach_config", [], "'teach_config'"),
    (("concept", "name"), "victim2", "'concept' names"),
    (("concept", "kernel"), 4, "'kernel'"),
    (("concept", "kernel"), 10**9 + 1, "'kernel'"),
    (("concept", "kernel"), True, "'kernel'"),
    (("concept", "n_queries"), "16", "'n_queries'"),
    (("concept", "dim"), KeyError, "no 'dim' field"),
    (("concept", "alpha"), "0.1", "'alpha'"),
    (("concept", "alpha"), float("nan"), "'alpha'"),
    (("concept", "use_prompt"), 1, "'use_prompt'"),
    (("concept", "even_negative"), "no", "'even_negative'"),
]


@pytest.mark.parametrize("case", sorted(META_DAMAGE))
def test_a_damaged_meta_json_is_one_problem_line(good, case):
    store, ref = good
    damage, expect = META_DAMAGE[case]
    damage(ref.root / "victim" / "meta.json")
    (problem,) = check_rest_unchanged(store, ref)
    assert problem.startswith("victim: ") and expect in problem and "skipped" in problem


@pytest.mark.parametrize("key,value,expect", FIELD_DAMAGE, ids=lambda v: repr(v)[:24])
def test_every_meta_field_is_type_checked(good, key, value, expect):
    store, ref = good
    _edit(ref.root / "victim" / "meta.json", key, value)
    (problem,) = check_rest_unchanged(store, ref)
    assert problem.startswith("victim: ") and expect in problem, problem


@pytest.mark.parametrize("kind", ["fifo", "directory", "link out", "link in", "missing"])
def test_meta_json_that_is_not_a_regular_file(good, tmp_path, kind):
    store, ref = good
    meta = ref.root / "victim" / "meta.json"
    outside = tmp_path / "outside.json"
    outside.write_bytes(meta.read_bytes())
    meta.unlink()
    if kind == "fifo":
        os.mkfifo(meta)
    elif kind == "directory":
        meta.mkdir()
    elif kind == "link out":
        meta.symlink_to(outside)  # a valid meta.json, but outside the store
    elif kind == "link in":
        meta.symlink_to(ref.root / "my_cup" / "meta.json")
    with Alarm():
        (problem,) = check_rest_unchanged(store, ref)
    word = {"fifo": "a FIFO", "directory": "a folder", "missing": "missing"}.get(kind, "link")
    assert problem.startswith("victim: meta.json") and word in problem, problem


# ---------------------------------------------------------------- concept.safetensors
def _forge_tensors(root: Path, blob: bytes, cid: str = "victim") -> None:
    """Replace a concept's tensors with `blob` and record its checksum (a careful forger)."""
    (root / cid / "concept.safetensors").write_bytes(blob)
    _edit(root / cid / "meta.json", "tensors_sha256", hashlib.sha256(blob).hexdigest())


def _tensors(**change) -> bytes:
    t = make_concept("victim").tensors()
    t.update(change)
    return save_tensors({k: v for k, v in t.items() if v is not None})


TENSOR_DAMAGE = {
    "truncated": (lambda r: (r / "victim/concept.safetensors").write_bytes(
        (r / "victim/concept.safetensors").read_bytes()[:50]), "corrupt (checksum)"),
    "empty": (lambda r: (r / "victim/concept.safetensors").write_bytes(b""), "checksum"),
    "garbage, checksum forged": (lambda r: _forge_tensors(r, os.urandom(300)), "cannot be read"),
    "huge header, forged": (lambda r: _forge_tensors(
        r, (2**40).to_bytes(8, "little") + b"{}"), "cannot be read"),
    "nan, forged": (lambda r: _forge_tensors(
        r, _tensors(f_per=torch.full((1, D), float("nan")))), "non-finite"),
    "float16, forged": (lambda r: _forge_tensors(
        r, _tensors(t_per=torch.zeros(1, D, dtype=torch.float16))), "non-float32"),
    "a tensor missing, forged": (lambda r: _forge_tensors(r, _tensors(w_z=None)), "shapes"),
    "an extra tensor, forged": (lambda r: _forge_tensors(
        r, _tensors(extra=torch.zeros(1))), "shapes"),
    "over the size limit": (lambda r: os.truncate(
        r / "victim/concept.safetensors", store_schema.MAX_TENSOR_BYTES + 1), "over the limit"),
    "missing": (lambda r: (r / "victim/concept.safetensors").unlink(), "missing"),
}


@pytest.mark.parametrize("case", sorted(TENSOR_DAMAGE))
def test_damaged_tensors_are_one_problem_line(good, case):
    store, ref = good
    damage, expect = TENSOR_DAMAGE[case]
    damage(ref.root)
    (problem,) = check_rest_unchanged(store, ref)
    assert problem.startswith("victim: ") and expect in problem, problem
    assert store.class_ids()["victim"] == ref.ids["victim"]  # a sound meta keeps its id


@pytest.mark.parametrize("kind", ["fifo", "directory", "link out"])
def test_tensors_that_are_not_a_regular_file(good, tmp_path, kind):
    store, ref = good
    path = ref.root / "victim" / "concept.safetensors"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(path.read_bytes())  # the right bytes, checksum and all
    path.unlink()
    {"fifo": os.mkfifo, "directory": os.mkdir,
     "link out": lambda p: p.symlink_to(outside)}[kind](path)
    with Alarm():
        (problem,) = check_rest_unchanged(store, ref)
    assert problem.startswith("victim: concept.safetensors") and "regular file" in problem


# ---------------------------------------------------------------- folders
def test_a_concept_folder_linked_from_outside_is_skipped(good, tmp_path):
    store, ref = good
    outside = tmp_path / "elsewhere"
    ConceptStore(outside).save(make_concept("stranger", 9), report(), shots(1), FP)
    (ref.root / "stranger").symlink_to(outside / "stranger", target_is_directory=True)
    (problem,) = check_rest_unchanged(store, ref, 1)
    assert problem.startswith("stranger: a symbolic link") and "not followed" in problem
    assert "stranger" not in store.class_ids()


def test_a_link_to_a_concept_inside_the_store_is_not_a_second_concept(good):
    store, ref = good
    (ref.root / "my_cup_again").symlink_to(ref.root / "my_cup", target_is_directory=True)
    (problem,) = check_rest_unchanged(store, ref)
    assert problem.startswith("my_cup_again: a symbolic link")


@pytest.mark.parametrize("edit_id", [False, True])
def test_a_copied_folder_claiming_an_existing_name_is_reported_once(good, edit_id):
    store, ref = good
    shutil.copytree(ref.root / "my_cup", ref.root / "my_cup_copy")
    if edit_id:  # the copier also "fixed" the id to match its folder
        _edit(ref.root / "my_cup_copy" / "meta.json", "concept_id", "my_cup_copy")
    (problem,) = check_rest_unchanged(store, ref)
    assert problem.startswith("my_cup_copy: meta.json belongs to") and "copied" in problem
    assert [m["name"] for m in store.list()].count("my cup") == 1
    assert "my_cup_copy" not in store.class_ids()


@pytest.mark.parametrize("kind", ["file", "fifo", "not an id", "dot file"])
def test_stray_entries_in_the_store(good, kind):
    store, ref = good
    path = ref.root / {"not an id": "Not An Id", "dot file": ".notes"}.get(kind, "stray")
    {"fifo": os.mkfifo, "not an id": os.mkdir}.get(kind, lambda p: p.write_text("x"))(path)
    with Alarm():
        problems = check_rest_unchanged(store, ref, 0 if kind == "dot file" else 1)
    if kind != "dot file":
        assert "not a concept folder" in problems[0]


# ---------------------------------------------------------------- class ids
@pytest.mark.parametrize("content", [b"{not json", b"[32768]", b'{"my_cup": "x"}', b"", None])
def test_a_corrupt_old_registry_never_renumbers_concepts(good, content):
    store, ref = good
    path = ref.root / ".class_ids.json"
    if content is None:
        os.mkfifo(path)
    else:
        path.write_bytes(content)
    with Alarm():
        loaded, problems = store.load_all(FP, N, D)
    assert store.class_ids() == ref.ids and len(loaded) == 3
    assert len(problems) == 1 and ".class_ids.json" in problems[0], problems


def test_a_legacy_store_with_a_corrupt_registry_is_rebuilt_deterministically(good):
    store, ref = good
    for cid in ("my_cup", "my_bowl", "victim"):
        _edit(ref.root / cid / "meta.json", "class_id", KeyError)
    (ref.root / ".class_ids.json").write_text('{"victim": 40000, "my_cup": ')
    before = tree(ref.root)
    ids, problems = store.class_ids(), store.load_all(FP, N, D)[1]
    assert ids == store.class_ids() and tree(ref.root) == before  # same answer, nothing written
    assert sorted(ids.values()) == [PERSONAL_ID_BASE + i for i in range(3)]
    assert ids["my_bowl"] < ids["my_cup"] < ids["victim"]  # in id order
    assert len(problems) == 1 and "unreadable" in problems[0]


@pytest.mark.parametrize("value", ["32768", 32768.0, True, 5, 70000, None, [32768]])
def test_an_invalid_recorded_class_id_is_rebuilt_and_no_valid_one_moves(good, value):
    store, ref = good
    _edit(ref.root / "victim" / "meta.json", "class_id", value)
    _edit(ref.root / "my_cup" / "meta.json", "class_id", PERSONAL_ID_BASE + 7)
    ids = store.class_ids()
    assert ids["my_cup"] == PERSONAL_ID_BASE + 7 and ids["my_bowl"] == ref.ids["my_bowl"]
    assert ids["victim"] == PERSONAL_ID_BASE  # the lowest free id
    problems = store.load_all(FP, N, D)[1]
    assert len(problems) == 1 and problems[0].startswith("concept victim: recorded class id")
    store.save(make_concept("victim", 2), report(), shots(1), FP)  # saving records it
    assert _meta(ref.root)["class_id"] == PERSONAL_ID_BASE == store.class_ids()["victim"]
    assert store.load_all(FP, N, D)[1] == []


def test_a_duplicated_class_id_goes_to_the_older_concept(good):
    store, ref = good
    older = _meta(ref.root)["created_at"]
    _edit(ref.root / "my_cup" / "meta.json", "created_at", "2000" + older[4:])
    _edit(ref.root / "victim" / "meta.json", "class_id", ref.ids["my_cup"])
    ids = store.class_ids()
    assert ids["my_cup"] == ref.ids["my_cup"] and ids["my_bowl"] == ref.ids["my_bowl"]
    assert ids["victim"] not in (ids["my_cup"], ids["my_bowl"]) and len(set(ids.values())) == 3
    problems = store.load_all(FP, N, D)[1]
    assert len(problems) == 1 and f"{ids['my_cup']} is already my_cup's" in problems[0]


# ---------------------------------------------------------------- names
def _old_concept_id(name: str) -> str:
    """The id rule as it was before format characters were refused (ids must not move)."""
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    key = " ".join(key.split())
    if re.fullmatch(r"[a-z][a-z0-9]*( [a-z0-9]+)*", key) and len(key) <= 48:
        return key.replace(" ", "_")
    ascii_ = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_).strip("_") or "concept"
    base = base if base[0].isalpha() else "c_" + base
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return f"{base[:39].rstrip('_')}_{digest}"


def test_ids_of_names_valid_before_do_not_change():
    rng = random.Random(1)
    pool = 'aZ09 ._-/é我🙂\u0301\u00a0\u3000ﬁＡ\u200d\u202e'
    names = ["my mug", "My  Mug", "my_mug", "café", "cafe\u0301", "我的杯子", "x" * 200]
    names += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(400)]
    checked = 0
    for name in names:
        try:
            new = concept_id(name)
        except ValueError:
            assert not " ".join(name.split())  # only what was refused before
            continue
        assert new == _old_concept_id(name), name
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("a,b", [
    ("café", "cafe\u0301"),  # NFC vs NFD
    ("my mug", "  My   MUG \t".replace("\t", " ")),  # case, surrounding and inner spaces
    ("my mug", "my\u00a0mug"),  # no-break space
    ("my mug", "ｍｙ ｍｕｇ"),  # full-width compatibility forms
    ("straße", "STRASSE"),  # casefold
])
def test_look_alike_names_are_one_concept(tmp_path, a, b):
    store = ConceptStore(tmp_path)
    assert canonical_name(a) == canonical_name(b) and concept_id(a) == concept_id(b)
    store.save(make_concept(a, 1), report(), shots(1), FP)
    newer = make_concept(b, 2)
    store.save(newer, report(), shots(1), FP)  # the same concept: replaced, not added
    (loaded,), problems = store.load_all(FP, N, D)
    assert problems == [] and same(tensors_of([loaded]), tensors_of([newer]))
    assert store.resolve(a)[0] == store.resolve(b)[0] == concept_id(a)


@pytest.mark.parametrize("name,why", [
    ("my\u200dmug", "U+200D ZERO WIDTH JOINER"),
    ("my mug\u200b", "U+200B ZERO WIDTH SPACE"),
    ("\u202egum ym", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("my\u00admug", "U+00AD SOFT HYPHEN"),
    ("\ufeffmy mug", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("my\x1bmug", "control character"),
    ("x" * 257, "longer than 256"),
    ("\u3000 ", "must not be empty"),
])
def test_invisible_or_unbounded_names_are_refused_and_nothing_is_written(tmp_path, name, why):
    store = ConceptStore(tmp_path)
    store.save(make_concept("my mug", 1), report(), shots(1), FP)
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=re.escape(why)):
        canonical_name(name)
    with pytest.raises(ValueError, match=re.escape(why)):
        store.save(make_concept(name, 2), report(), shots(1), FP)
    assert tree(tmp_path) == before


def test_a_stored_name_is_normalised_once(tmp_path):
    store = ConceptStore(tmp_path)
    concept = make_concept("  My \u3000 Cafe\u0301\u00a0 ", 1)
    store.save(concept, report(), shots(1), FP)
    (meta,) = store.list()
    assert meta["name"] == concept.name == "My Caf\u00e9" == display_name(concept.name)
    rng = random.Random(2)
    for _ in range(300):
        name = "".join(rng.choice("aB \u00a0e\u0301é\u3000ﬁ") for _ in range(rng.randint(1, 12)))
        if name.split():
            assert canonical_name(display_name(name)) == canonical_name(name)
            assert concept_id(display_name(name)) == concept_id(name)


# ---------------------------------------------------------------- name vs id
@pytest.fixture()
def twins(tmp_path):
    store = ConceptStore(tmp_path)
    store.save(make_concept("My Mug", 1), report(), shots(1), FP)  # id my_mug
    store.save(make_concept("my_mug", 2), report(), shots(1), FP)  # id my_mug_<hash>
    ids = store.class_ids()
    assert set(ids) == {"my_mug", concept_id("my_mug")} and concept_id("my_mug") != "my_mug"
    return store, ids


def test_a_name_is_matched_before_an_id_and_the_answer_says_so(twins):
    store, _ = twins
    hashed = concept_id("my_mug")
    cid, note = store.resolve("my_mug")
    assert cid == hashed and "also the id of concept 'My Mug'" in note
    assert store.resolve("My Mug") == ("my_mug", "")
    assert store.resolve(hashed) == (hashed, "")  # an exact id
    assert store.resolve("MY_MUG")[0] == hashed  # names are case-insensitive, ids are not
    assert store.resolve("my\u200dmug")[0] is None  # a look-alike is not the concept
    cid, why = store.resolve("my mugs")
    assert cid is None and "no concept has the name or id 'my mugs'" in why


def test_deleting_by_a_name_that_is_another_concepts_id_removes_the_named_one(twins):
    store, ids = twins
    assert store.delete("my_mug")
    ((left,), _), = [store.load_all(FP, N, D)]
    assert left.name == "My Mug" and store.class_ids() == {"my_mug": ids["my_mug"]}
    assert store.delete("my_mug")  # now only an id: "My Mug" goes
    assert store.list() == [] and not store.delete("my_mug")


def test_a_hash_collision_folder_is_not_taken_for_the_name(tmp_path):
    """A folder whose id is X's but whose stored name is Y must never answer to X."""
    store = ConceptStore(tmp_path)
    store.save(make_concept("我的杯子", 1), report(), shots(1), FP)
    cid = concept_id("我的杯子")
    _edit(tmp_path / cid / "meta.json", "name", "他的杯子")
    _edit(tmp_path / cid / "meta.json", ("concept", "name"), "他的杯子")
    _edit(tmp_path / cid / "meta.json", "canonical_name", "他的杯子")
    assert store.resolve("我的杯子") == (None, store.resolve("我的杯子")[1])
    assert "belongs to" in store.load_all(FP, N, D)[1][0]


# ---------------------------------------------------------------- crashes
def _crash_in_child(root: Path, step: str, at: int, kill: bool) -> int:
    """Save a new version of "mug" in a child that dies (or raises) at the at-th `step`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            calls, real = [0], getattr(store_mod, step)

            def failing(*args):
                calls[0] += 1
                if calls[0] == at:
                    if kill:
                        os._exit(17)
                    raise OSError("injected")
                return real(*args)

            setattr(store_mod, step, failing)
            try:
                ConceptStore(root).save(make_concept("mug", 2), report(), shots(3), FP)
                code = 0
            except OSError:
                code = 18
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


STEPS = [(s, k) for s, n in (("_replace", 3), ("write_durable", 8), ("fsync_dir", 3))
         for k in range(1, n + 1)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("kill", [True, False], ids=["killed", "raised"])
@pytest.mark.parametrize("step,at", STEPS)
def test_a_save_interrupted_at_any_step_loses_nothing(tmp_path, step, at, kill):
    store = ConceptStore(tmp_path)
    old, cup = make_concept("mug", 1), make_concept("cup", 5)
    store.save(old, report(), shots(2), FP)
    store.save(cup, report(), shots(1), FP)
    ids = store.class_ids()
    code = _crash_in_child(tmp_path, step, at, kill)
    assert code in (0, 17, 18)
    new = make_concept("mug", 2)
    loaded, problems = store.load_all(FP, N, D)
    assert problems == [] and sorted(c.name for c in loaded) == ["cup", "mug"]
    mug = next(c for c in loaded if c.name == "mug")
    won = same(tensors_of([mug]), tensors_of([new]))
    assert won or same(tensors_of([mug]), tensors_of([old]))
    if code == 18:
        assert not won  # an exception rolls back
    assert store.class_ids() == ids  # nobody's class id moved
    assert len(store.load_shots("mug")[0]) == (3 if won else 2)  # shots follow the version
    # The next save tidies every leftover and wins.
    store.save(make_concept("mug", 3), report(), shots(1), FP)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cup", "mug"]
    assert store.class_ids() == ids and store.load_all(FP, N, D)[1] == []


def test_a_recovered_concept_lists_its_shots_and_can_be_forgotten(tmp_path):
    store = ConceptStore(tmp_path)
    store.save(make_concept("mug", 1), report(), shots(3), FP)
    os.rename(tmp_path / "mug", tmp_path / ".old-mug-99999999-abcd")  # killed between renames
    (tmp_path / ".tmp-mug-99999999-abcd").mkdir()  # and the half-built new copy
    (tmp_path / ".tmp-mug-99999999-abcd" / "meta.json").write_text("{")
    loaded, problems = store.load_all(FP, N, D)
    assert problems == [] and [c.name for c in loaded] == ["mug"]
    assert [m["shots"] for m in store.list()] == [3] and len(store.load_shots("mug")[0]) == 3
    assert store.delete("mug") and store.list() == []
    assert not any(p.name.startswith(".old") for p in tmp_path.iterdir())


def test_a_damaged_live_folder_falls_back_to_its_complete_old_copy(tmp_path):
    store = ConceptStore(tmp_path)
    store.save(make_concept("mug", 1), report(), shots(2), FP)
    shutil.copytree(tmp_path / "mug", tmp_path / ".old-mug-1-abcd")
    (tmp_path / "mug" / "meta.json").write_text("[]")
    before = tree(tmp_path)
    loaded, problems = store.load_all(FP, N, D)
    assert [c.name for c in loaded] == ["mug"] and len(problems) == 1 and "mug: " in problems[0]
    assert tree(tmp_path) == before
    with pytest.raises(ValueError, match="damaged concept.*move or delete"):
        store.save(make_concept("mug", 2), report(), shots(1), FP)  # never over damage
    assert tree(tmp_path) == before


def test_a_leftover_old_copy_that_is_a_link_is_never_used(tmp_path):
    store, outside = ConceptStore(tmp_path / "s"), ConceptStore(tmp_path / "o")
    outside.save(make_concept("mug", 1), report(), shots(1), FP)
    (store.root / ".old-mug-1-abcd").symlink_to(outside.root / "mug")
    assert store.load_all(FP, N, D) == ([], [])
    store.save(make_concept("mug", 2), report(), shots(1), FP)
    assert (outside.root / "mug" / "meta.json").exists()  # the link's target is untouched


@pytest.mark.parametrize("kind", ["file", "link"])
def test_save_never_replaces_what_is_not_a_concept_folder(tmp_path, kind):
    store = ConceptStore(tmp_path / "s")
    (tmp_path / "elsewhere").mkdir()
    live = store.root / "mug"
    live.write_text("notes") if kind == "file" else live.symlink_to(tmp_path / "elsewhere")
    before = tree(tmp_path)
    with pytest.raises(ValueError, match="is not a concept folder"):
        store.save(make_concept("mug", 1), report(), shots(1), FP)
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- where the store is
def _unwritable_roots(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("x")
    return {"a file": tmp_path / "a_file", "under a file": tmp_path / "a_file" / "concepts"}


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_an_unusable_store_path_names_the_parameter_and_refuses_writes(tmp_path, kind):
    root = _unwritable_roots(tmp_path)[kind]
    before = tree(tmp_path)
    store = ConceptStore(root)  # never raises
    why = store.unwritable()
    assert why.startswith(f"the concept store {root} is not writable (parameter concept_store)")
    assert store.load_all(FP, N, D) == ([], []) and store.list() == []
    with pytest.raises(StoreNotWritable, match="parameter concept_store"):
        store.save(make_concept("mug"), report(), shots(1), FP)
    with pytest.raises(StoreNotWritable):
        store.delete_id("mug")
    assert tree(tmp_path) == before


NOBODY = 65534  # uid and gid of "nobody": who the permission tests run as when we are root


@pytest.fixture()
def good_for_nobody(tmp_path):
    """`good`, where an unprivileged user can reach it. As root (CI), pytest's temporary
    folders are private to root, so the store goes to a folder of its own in the system's
    temporary folder, all of it owned by nobody (the file modes, not the owner, then decide
    what nobody may do); otherwise `good` itself."""
    if not ROOT_USER:
        yield _good_store(tmp_path / "store")
        return
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="povss-store-faults-"))
    try:
        built = _good_store(top / "store")
        for dirpath, dirnames, filenames in os.walk(top):
            os.lchown(dirpath, NOBODY, NOBODY)
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), NOBODY, NOBODY)
        yield built
    finally:
        shutil.rmtree(top)


def as_unprivileged(body) -> None:  # noqa: ANN001
    """Run `body()` as an unprivileged user. Not root: here. Root (CI), whose writes no file
    mode stops: in a forked child that has dropped to nobody (uid and gid 65534, no
    supplementary groups) and checked that it can no longer act as root; the child's failure,
    with its traceback, fails the test."""
    if not ROOT_USER:
        body()
        return
    import traceback

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            assert (os.getuid(), os.geteuid(), os.getegid()) == (NOBODY, NOBODY, NOBODY)
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:
                raise AssertionError("still able to become root")
            body()
            code = 0
        except BaseException:  # noqa: BLE001 - every failure goes to the parent
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        failure = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"as nobody (uid {NOBODY}), exit status {code}:\n{failure}"


def test_a_read_only_store_is_read_and_refuses_writes(good_for_nobody):
    store, ref = good_for_nobody

    def body() -> None:
        os.chmod(ref.root, 0o555)
        try:
            assert "no permission to write" in ConceptStore(ref.root).unwritable()
            check_rest_unchanged(store, ref, 0)
            with pytest.raises(StoreNotWritable, match="parameter concept_store"):
                store.save(make_concept("new"), report(), shots(1), FP)
        finally:
            os.chmod(ref.root, 0o755)

    as_unprivileged(body)


def test_an_unreadable_concept_folder_is_one_problem(good_for_nobody):
    store, ref = good_for_nobody

    def body() -> None:
        os.chmod(ref.root / "victim", 0)
        try:
            (problem,) = check_rest_unchanged(store, ref)
            assert problem.startswith("victim: meta.json") and "Permission denied" in problem
        finally:
            os.chmod(ref.root / "victim", 0o755)

    as_unprivileged(body)


# ---------------------------------------------------------------- the engine
WORDS = ["person", "bottle", "chair", "table"]
FAST = TeachConfig(iterations=2, num_points=64)


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(proposal_following_tiny_san(), WORDS, "cpu", random_weights=True)


def _engine(segmenter: Segmenter, root: Path) -> PerceptionEngine:
    segmenter.set_concepts([])
    return PerceptionEngine(segmenter, ConceptStore(root),
                            EngineSettings(concept_store=str(root), teach=FAST))


def _model_concept(segmenter: Segmenter, name: str, seed: int) -> Concept:
    cfg = segmenter.model.cfg
    return make_concept(name, seed, cfg.num_queries, segmenter.text_rows[1].cpu())


def test_the_engine_starts_past_every_kind_of_damage(segmenter, tmp_path):
    probe = _engine(segmenter, tmp_path)
    for i, name in enumerate(["good", "list", "nameless", "ctrl", "fifo", "shapes"]):
        probe.store.save(_model_concept(segmenter, name, i), report(), shots(1),
                         probe.fingerprint)
    (tmp_path / "list" / "meta.json").write_text("[]")
    _edit(tmp_path / "nameless" / "meta.json", "name", KeyError)
    _edit(tmp_path / "ctrl" / "meta.json", "name", "ctrl\x00")
    (tmp_path / "fifo" / "meta.json").unlink()
    os.mkfifo(tmp_path / "fifo" / "meta.json")
    wider = make_concept("shapes", 0, segmenter.model.cfg.num_queries + 1)
    _forge_tensors(tmp_path, save_tensors(wider.tensors()), "shapes")  # another model's N
    with Alarm():
        engine = _engine(segmenter, tmp_path)
    assert [e.name for e in engine.concept_entries()] == ["good"]
    assert sorted(p.split(":")[0] for p in engine.load_problems) == [
        "ctrl", "fifo", "list", "nameless", "shapes"]
    assert engine.store_unwritable == ""
    assert engine.segment(shots(1, 48, 64)[0][0]).labels.shape == (48, 64)


def test_forget_resolves_exactly_and_says_which(segmenter, tmp_path):
    engine = _engine(segmenter, tmp_path)
    for i, name in enumerate(["My Mug", "my_mug"]):
        engine.store.save(_model_concept(segmenter, name, i), report(), shots(1),
                          engine.fingerprint)
    engine = _engine(segmenter, tmp_path)
    ids = {e.concept_id: e.class_id for e in engine.concept_entries()}
    ok, msg = engine.forget("my_mug")
    hashed = concept_id("my_mug")
    assert ok and msg.startswith(f"forgot 'my_mug' (id {hashed})") and "'My Mug'" in msg
    assert {e.concept_id: e.class_id for e in engine.concept_entries()} == {
        "my_mug": ids["my_mug"]}
    ok, msg = engine.forget("my\u200dmug")
    assert not ok and "no concept has the name or id" in msg
    assert engine.forget("My Mug") == (True, "forgot 'My Mug' (id my_mug)")
    # no concept left; the store keeps only its record of the two forgets
    assert engine.concept_entries() == []
    assert [p.name for p in tmp_path.iterdir()] == [FORGOTTEN_FILE]
    assert sorted(engine.store.forgotten()) == sorted([hashed, "my_mug"])


def test_an_unwritable_store_runs_without_teaching(segmenter, tmp_path):
    (tmp_path / "a_file").write_text("x")
    root = tmp_path / "a_file" / "concepts"
    engine = _engine(segmenter, root)
    first = engine.load_problems[0]
    assert first.startswith(f"the concept store {root} is not writable (parameter concept_store)")
    assert "running without teaching" in first and len(engine.load_problems) == 1
    image, mask = shots(1, 48, 64)[0]
    assert engine.segment(image).labels.shape == image.shape[:2]  # frames keep flowing
    out = engine.teach(TeachRequest("my cup", "bottle", [image], [mask]))
    assert not out.success and "is not writable (parameter concept_store)" in out.message
    ok, msg = engine.forget("anything")
    assert not ok and "is not writable (parameter concept_store)" in msg
    assert engine.concept_entries() == [] and (tmp_path / "a_file").read_text() == "x"


def test_build_engine_with_a_file_as_store_starts_and_names_the_parameter(tmp_path):
    (tmp_path / "a_file").write_text("x")
    settings = EngineSettings(weights="", allow_random_weights=True, variant="tiny",
                              device="cpu", vocabulary=WORDS, text_cache_dir="",
                              concept_store=str(tmp_path / "a_file"))
    engine = build_engine(settings)
    assert "(parameter concept_store): it is not a folder" in engine.load_problems[0]
    assert engine.concept_entries() == [] and (tmp_path / "a_file").read_text() == "x"
