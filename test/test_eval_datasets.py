"""Tests of the FSS^per / CUB^per / ADE^per readers on tiny fake copies of each dataset.

Every fixture writes a miniature dataset in exactly the real on-disk layout (see each reader's
module docstring). Images are stored PNG-encoded under their real ``.jpg`` names (OpenCV
decodes by content), so the pixels read back are exactly the pixels written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from povss_lab.eval.benchmark import UNLABELED, Sample
from povss_lab.eval.datasets import DATASETS, open_benchmark
from povss_lab.eval.datasets.ade import ADE_CONCEPTS, ADEPer
from povss_lab.eval.datasets.common import NEGATIVE_PREFIX, parse_id
from povss_lab.eval.datasets.cub import CUBPer, species_name
from povss_lab.eval.datasets.fss import FSS_FOLDER, FSS_PAIRS, FSSPer
from povss_lab.eval.protocol import make_episode
from povss_ros.vocabulary import COCO_STUFF_171

H, W = 6, 8

# docs/method.md "Evaluation protocol" (= paper Table 5), written out independently of the reader.
METHOD_FSS_PAIRS = [
    "adidas logo1/jordan logo", "apple icon/yonex icon", "banana boat/wooden boat",
    "bath ball/pokermon ball", "bulbul bird/chickadee bird", "cactus ball/gym ball",
    "croquet ball/french ball", "esport chair/ganeva chair", "folding chair/hair razor",
    "golf ball/soccer ball", "hair drier/rocking chair", "jay bird/magpie bird",
    "kappa logo/nike logo", "kobe logo/puma logo", "ping-pong ball/rugby ball",
]  # fmt: skip
METHOD_ADE_CLASSES = (
    "altarpiece, ashtray, banner, beacon, booklet, candelabrum, canister, chest, console table, "
    "crane, dirt track, easel, embankment, footbridge, hot tub, hovel, kettle, kitchen island, "
    "pane, parking meter, pier, place mat, postbox, rod, runway, saucepan, shower stall, "
    "soap dispenser, stretcher, towel rack"
).split(", ")


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_image(path: Path, rgb: np.ndarray) -> None:
    """Lossless (PNG bytes) under a .jpg name, so tests can compare exact pixel values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())


def _write_gray(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values)


def _mask(seed: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[seed % h :, : 2 + seed % (w - 2)] = True
    return m


# =================================================================== FSS^per


def _make_fss(root: Path, n_images: int = 3) -> Path:
    """ROOT/fewshot_data/<class>/<n>.jpg + <n>.png for the 30 classes of the 15 pairs."""
    data = root / "fewshot_data"
    for c, folder in enumerate(sorted(FSS_FOLDER.values())):
        for n in range(1, n_images + 1):
            seed = c * 100 + n
            _write_image(data / folder / f"{n}.jpg", _rgb(seed))
            _write_gray(data / folder / f"{n}.png", _mask(seed).astype(np.uint8) * 255)
    return root


@pytest.fixture(scope="module")
def fss_root(tmp_path_factory) -> Path:
    return _make_fss(tmp_path_factory.mktemp("fss"))


@pytest.fixture
def fss_copy(tmp_path) -> Path:
    return _make_fss(tmp_path / "fss")


def test_fss_pairs_are_method_md_pairs():
    assert [f"{a}/{b}" for a, b in FSS_PAIRS] == METHOD_FSS_PAIRS
    assert len({n for p in FSS_PAIRS for n in p}) == 30
    # FSS-1000 folder names (ping-pong is written without hyphen there)
    assert FSS_FOLDER["ping-pong ball"] == "pingpong_ball"
    assert FSS_FOLDER["adidas logo1"] == "adidas_logo1"


def test_fss_concepts_follow_pairs(fss_root):
    bench = FSSPer(fss_root)
    assert bench.name == "FSS^per"
    assert bench.vocabulary == list(COCO_STUFF_171)
    concepts = bench.concepts()
    assert [c.name for c in concepts] == [n for p in FSS_PAIRS for n in p]
    by_name = {c.name: c for c in concepts}
    for a, b in FSS_PAIRS:
        ca, cb = by_name[a], by_name[b]
        fa, fb = FSS_FOLDER[a], FSS_FOLDER[b]
        assert ca.positive_ids == (f"{fa}/1", f"{fa}/2", f"{fa}/3")
        assert cb.positive_ids == (f"{fb}/1", f"{fb}/2", f"{fb}/3")
        # each side of a pair is the other's negative
        assert ca.negative_ids == tuple(NEGATIVE_PREFIX + i for i in cb.positive_ids)
        assert cb.negative_ids == tuple(NEGATIVE_PREFIX + i for i in ca.positive_ids)
        assert not set(ca.positive_ids) & set(ca.negative_ids)
    for c in concepts:
        assert c.base_class in bench.vocabulary
    assert by_name["banana boat"].base_class == "boat"
    assert by_name["golf ball"].base_class == "sports ball"
    assert by_name["jay bird"].base_class == "bird"
    assert by_name["esport chair"].base_class == "chair"
    assert by_name["hair drier"].base_class == "hair drier"
    # an episode of the paper's protocol can be drawn from every concept
    ep = make_episode(concepts[0].positive_ids, concepts[0].negative_ids, k=1, seed=0)
    assert len(ep.test_positive) == len(ep.test_negative) == 2


def test_fss_sample_reads_written_pixels(fss_root):
    bench = FSSPer(fss_root)
    c = sorted(FSS_FOLDER.values()).index("wooden_boat")
    s = bench.sample("wooden_boat/2")
    assert isinstance(s, Sample)
    assert s.sample_id == "wooden_boat/2"
    np.testing.assert_array_equal(s.image, _rgb(c * 100 + 2))
    assert s.image.dtype == np.uint8 and s.image.shape == (H, W, 3)
    np.testing.assert_array_equal(s.personal_mask, _mask(c * 100 + 2))
    assert s.personal_mask.dtype == bool
    assert s.semantic is None
    neg = bench.sample("neg:wooden_boat/2")
    np.testing.assert_array_equal(neg.image, s.image)
    assert not neg.personal_mask.any() and neg.personal_mask.shape == (H, W)


def test_fss_unknown_ids_raise_keyerror(fss_root):
    bench = FSSPer(fss_root)
    for bad in ("wooden_boat/99", "not_a_class/1", "", "wooden_boat/1@3", "neg:"):
        with pytest.raises(KeyError):
            bench.sample(bad)


def test_fss_root_variants_and_natural_order(fss_copy):
    data = fss_copy / "fewshot_data"
    _write_image(data / "banana_boat" / "10.jpg", _rgb(7))
    _write_gray(data / "banana_boat" / "10.png", _mask(7).astype(np.uint8) * 255)
    direct = FSSPer(data)  # ROOT = the fewshot_data folder itself
    first = direct.concepts()[4]
    assert first.name == "banana boat"
    assert first.positive_ids[-1] == "banana_boat/10"  # 10 after 3, not after 1
    renamed = fss_copy / "FSS-1000"
    data.rename(renamed)
    assert FSSPer(fss_copy).data_dir == renamed


def test_fss_missing_root_and_folder(tmp_path, fss_copy):
    with pytest.raises(FileNotFoundError, match="fewshot_data"):
        FSSPer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="fewshot_data"):
        FSSPer(tmp_path)  # exists but holds no FSS class folder
    shutil.rmtree(fss_copy / "fewshot_data" / "magpie_bird")
    with pytest.raises(FileNotFoundError, match="magpie_bird"):
        FSSPer(fss_copy)


def test_fss_missing_mask_and_size_mismatch(fss_copy):
    bench = FSSPer(fss_copy)
    (fss_copy / "fewshot_data" / "rugby_ball" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"rugby_ball/1\.png"):
        bench.sample("rugby_ball/1")
    bench.sample("neg:rugby_ball/1")  # a negative needs no mask
    big = np.zeros((H + 1, W), dtype=np.uint8)
    _write_gray(fss_copy / "fewshot_data" / "rugby_ball" / "2.png", big)
    with pytest.raises(ValueError, match=r"size mismatch: .*rugby_ball/2\.png"):
        bench.sample("rugby_ball/2")
    (fss_copy / "fewshot_data" / "rugby_ball" / "3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode"):
        bench.sample("rugby_ball/3")


def test_fss_bad_base_class(fss_root):
    with pytest.raises(ValueError, match="not a COCO-Stuff word"):
        FSSPer(fss_root, base_classes={"banana boat": "banana boat"})
    bench = FSSPer(fss_root, base_classes={"banana boat": "banana"})
    assert bench.concepts()[4].base_class == "banana"


# =================================================================== CUB^per


def _cub_dirs() -> list[str]:
    named = {1: "Black_footed_Albatross", 2: "Laysan_Albatross", 24: "Red_faced_Cormorant"}
    return [f"{i:03d}.{named.get(i, f'Species_{i:03d}')}" for i in range(1, 201)]


def _make_cub(root: Path, per_class: int = 3, inside: bool = False) -> Path:
    """ROOT/CUB_200_2011/{images.txt, ...} and ROOT/segmentations/ (or inside CUB_200_2011)."""
    cub = root / "CUB_200_2011"
    seg = (cub if inside else root) / "segmentations"
    classes, images, labels, split = [], [], [], []
    image_id = 0
    for cid, cdir in enumerate(_cub_dirs(), 1):
        classes.append(f"{cid} {cdir}")
        for j in range(per_class + (1 if cid == 1 else 0)):
            image_id += 1
            rel = f"{cdir}/{cdir.split('.')[1]}_{j:04d}_{image_id}"
            images.append(f"{image_id} {rel}.jpg")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {1 if j % 2 == 0 else 0}")
            _write_image(cub / "images" / f"{rel}.jpg", _rgb(image_id))
            soft = np.where(_mask(image_id), 204, 51).astype(np.uint8)  # annotator agreement
            soft[0, 0] = 128 if _mask(image_id)[0, 0] else 127  # the threshold boundary
            _write_gray(seg / f"{rel}.png", soft)
    for name, lines in (
        ("classes.txt", classes),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
    ):
        (cub / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> Path:
    return _make_cub(tmp_path_factory.mktemp("cub"))


@pytest.fixture
def cub_copy(tmp_path) -> Path:
    return _make_cub(tmp_path / "cub", per_class=2)


def test_cub_concepts_are_200_species(cub_root):
    bench = CUBPer(cub_root)
    assert bench.name == "CUB^per"
    assert bench.vocabulary == list(COCO_STUFF_171)
    concepts = bench.concepts()
    assert len(concepts) == 200
    assert concepts[0].name == "black footed albatross"  # the paper's own example
    assert concepts[1].name == "laysan albatross"
    assert concepts[23].name == "red faced cormorant"
    assert concepts[199].name == "species 200"
    assert species_name("185.Bohemian_Waxwing") == "bohemian waxwing"
    assert len({c.name for c in concepts}) == 200
    assert {c.base_class for c in concepts} == {"bird"}
    assert "bird" in bench.vocabulary
    assert bench.concepts() is concepts  # computed once


def test_cub_positives_and_negatives(cub_root):
    bench = CUBPer(cub_root)
    concepts = bench.concepts()
    own = {c.name: set(c.positive_ids) for c in concepts}
    assert len(concepts[0].positive_ids) == 4 and len(concepts[5].positive_ids) == 3
    assert all(p.startswith("001.Black_footed_Albatross/") for p in concepts[0].positive_ids)
    for c in concepts:
        negs = [parse_id(n) for n in c.negative_ids]
        assert all(is_neg for _, is_neg, _ in negs)
        keys = [k for k, _, _ in negs]
        assert len(keys) == len(set(keys)) == len(c.positive_ids)  # balanced by default
        assert not set(keys) & own[c.name]  # other species only
        assert not set(c.positive_ids) & set(c.negative_ids)
    again = CUBPer(cub_root).concepts()
    assert [c.negative_ids for c in again] == [c.negative_ids for c in concepts]  # deterministic
    other_seed = CUBPer(cub_root, seed=1).concepts()
    assert any(a.negative_ids != b.negative_ids for a, b in zip(other_seed, concepts))
    ten = CUBPer(cub_root, num_negatives=10).concepts()
    assert all(len(c.negative_ids) == 10 for c in ten)
    ep = make_episode(concepts[0].positive_ids, concepts[0].negative_ids, k=3, seed=0)
    assert len(ep.test_positive) == len(ep.test_negative) == 1


def test_cub_splits(cub_root):
    train = CUBPer(cub_root, split="train").concepts()[0]
    test = CUBPer(cub_root, split="test").concepts()[0]
    assert len(train.positive_ids) == 2 and len(test.positive_ids) == 2
    assert not set(train.positive_ids) & set(test.positive_ids)
    with pytest.raises(ValueError, match="split"):
        CUBPer(cub_root, split="val")


def test_cub_sample_reads_written_pixels(cub_root):
    bench = CUBPer(cub_root)
    sid = bench.concepts()[1].positive_ids[0]  # image id 5 (species 1 has 4 images)
    s = bench.sample(sid)
    np.testing.assert_array_equal(s.image, _rgb(5))
    np.testing.assert_array_equal(s.personal_mask, _mask(5))  # soft mask, > 127 kept
    assert s.semantic is None
    neg_id = bench.concepts()[0].negative_ids[0]
    neg = bench.sample(neg_id)
    assert not neg.personal_mask.any() and neg.image.shape == (H, W, 3)
    with pytest.raises(KeyError):
        bench.sample("001.Black_footed_Albatross/nope")


def test_cub_layout_variants(tmp_path):
    root = _make_cub(tmp_path / "a", per_class=1, inside=True)
    assert CUBPer(root).seg_dir == root / "CUB_200_2011" / "segmentations"
    root2 = _make_cub(tmp_path / "b", per_class=1)
    bench = CUBPer(root2 / "CUB_200_2011")  # ROOT = CUB_200_2011, segmentations beside it
    assert bench.seg_dir == root2 / "segmentations"
    assert bench.sample(bench.concepts()[3].positive_ids[0]).personal_mask.any()


def test_cub_missing_files(tmp_path, cub_copy):
    with pytest.raises(FileNotFoundError, match="CUB_200_2011"):
        CUBPer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="images.txt"):
        CUBPer(tmp_path)
    shutil.rmtree(cub_copy / "segmentations")
    with pytest.raises(FileNotFoundError, match="segmentations.tgz"):
        CUBPer(cub_copy)


def test_cub_missing_mask_and_size_mismatch(cub_copy):
    bench = CUBPer(cub_copy)
    sid = bench.concepts()[2].positive_ids[0]
    mask_path = cub_copy / "segmentations" / f"{sid}.png"
    mask_path.unlink()
    with pytest.raises(FileNotFoundError, match="segmentations"):
        bench.sample(sid)
    bench.sample("neg:" + sid)  # a negative needs no mask
    sid2 = bench.concepts()[2].positive_ids[1]
    _write_gray(cub_copy / "segmentations" / f"{sid2}.png", np.zeros((H, W + 2), np.uint8))
    with pytest.raises(ValueError, match="size mismatch"):
        bench.sample(sid2)


def test_cub_corrupt_index(cub_copy):
    cub = cub_copy / "CUB_200_2011"
    lines = (cub / "classes.txt").read_text().splitlines()
    (cub / "classes.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="199 species"):
        CUBPer(cub_copy)
    (cub / "classes.txt").write_text("\n".join(lines) + "\n")
    (cub / "images.txt").write_text("1\n")
    with pytest.raises(ValueError, match=r"images\.txt line 1"):
        CUBPer(cub_copy)


# =================================================================== ADE^per


def _ade_names() -> tuple[list[str], dict[str, int]]:
    """847 names: the 30 concepts at ids of our choosing, plus decoys sharing a synonym."""
    names = [f"thing {i}" for i in range(847)]
    ids = {}
    for i, concept in enumerate(ADE_CONCEPTS):
        ids[concept] = 300 + i
        names[300 + i] = concept
    names[ids["altarpiece"]] = "altarpiece, reredos"
    names[ids["kettle"]] = "kettle, boiler"
    names[ids["postbox"]] = "postbox, mailbox, letter box"
    names[10] = "pier, wharf, wharfage, dock"  # same first synonym as "pier": exact wins
    names[11] = "chest of drawers, chest, bureau, dresser"
    names[12] = "post box"
    return names, ids


ADE_NAMES, ADE_IDS = _ade_names()
ALTAR, KETTLE, SAUCEPAN = ADE_IDS["altarpiece"], ADE_IDS["kettle"], ADE_IDS["saucepan"]


def _ade_labels() -> list[np.ndarray]:
    maps = [np.zeros((H, W), np.uint16) for _ in range(5)]
    maps[0][:3, :4] = ALTAR  # altarpiece, 12 px
    maps[1][:, :2] = KETTLE  # kitchen: kettle and saucepan
    maps[1][:, 6:] = SAUCEPAN
    maps[2][:] = 5  # none of the 30
    maps[3][0, 0] = ALTAR  # a single altarpiece pixel
    maps[4][2:, :] = UNLABELED
    maps[4][0, :] = 11  # "chest of drawers", not the concept "chest"
    return maps


def _make_ade(root: Path, names_file: bool = True) -> Path:
    ade = root / "ADE20K_2021_17_01"
    for i, label in enumerate(_ade_labels(), 1):
        stem = f"ADE_val_{i:08d}"
        _write_image(ade / "images_detectron2" / "validation" / f"{stem}.jpg", _rgb(1000 + i))
        _write_gray(ade / "annotations_detectron2" / "validation" / f"{stem}.tif", label)
    if names_file:
        (ade / "ade20k_847_classes.txt").write_text("\n".join(ADE_NAMES) + "\n")
    return root


def _key(i: int) -> str:
    return f"validation/ADE_val_{i:08d}"


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    return _make_ade(tmp_path_factory.mktemp("ade"))


@pytest.fixture
def ade_copy(tmp_path) -> Path:
    return _make_ade(tmp_path / "ade")


def test_ade_concepts_and_vocabulary(ade_root, tmp_path):
    bench = ADEPer(ade_root, cache_dir=tmp_path / "cache")
    assert bench.name == "ADE^per"
    assert list(ADE_CONCEPTS) == METHOD_ADE_CLASSES
    assert bench.vocabulary == ADE_NAMES and len(bench.vocabulary) == 847
    concepts = bench.concepts()
    assert [c.name for c in concepts] == METHOD_ADE_CLASSES
    assert bench.class_ids == ADE_IDS  # exact name beats a shared first synonym
    for c in concepts:
        assert c.base_class == bench.vocabulary[bench.class_ids[c.name]]
    assert concepts[0].base_class == "altarpiece, reredos"


def test_ade_positives_and_negatives(ade_root, tmp_path):
    bench = ADEPer(ade_root, cache_dir=tmp_path / "cache")
    by = {c.name: c for c in bench.concepts()}
    all_keys = {_key(i) for i in range(1, 6)}
    altar = by["altarpiece"]
    assert altar.positive_ids == (f"{_key(1)}@{ALTAR}", f"{_key(4)}@{ALTAR}")
    assert altar.negative_ids == tuple(f"neg:{_key(i)}" for i in (2, 3, 5))
    assert by["kettle"].positive_ids == (f"{_key(2)}@{KETTLE}",)
    assert by["saucepan"].positive_ids == (f"{_key(2)}@{SAUCEPAN}",)
    assert by["chest"].positive_ids == ()  # class 11 is "chest of drawers"
    for c in by.values():
        pos = {parse_id(i)[0] for i in c.positive_ids}
        neg = {parse_id(i)[0] for i in c.negative_ids}
        assert not pos & neg and pos | neg == all_keys
    strict = ADEPer(ade_root, min_pixels=2, cache_dir=None).concepts()[0]
    assert strict.positive_ids == (f"{_key(1)}@{ALTAR}",)
    assert f"neg:{_key(4)}" not in strict.negative_ids  # 1 pixel: neither side


def test_ade_sample_real_ground_truth(ade_root):
    bench = ADEPer(ade_root, cache_dir=None)
    labels = _ade_labels()
    s = bench.sample(f"{_key(2)}@{KETTLE}")
    np.testing.assert_array_equal(s.image, _rgb(1002))
    np.testing.assert_array_equal(s.personal_mask, labels[1] == KETTLE)
    assert s.semantic is not None and s.semantic.dtype == np.uint16
    np.testing.assert_array_equal(s.semantic, labels[1])
    other = bench.sample(f"{_key(2)}@{SAUCEPAN}")  # same image, another concept
    np.testing.assert_array_equal(other.personal_mask, labels[1] == SAUCEPAN)
    neg = bench.sample(f"neg:{_key(5)}")
    assert not neg.personal_mask.any()
    np.testing.assert_array_equal(neg.semantic, labels[4])
    assert (neg.semantic == UNLABELED).sum() == 4 * W
    for bad in (_key(2), f"{_key(2)}@5", f"{_key(9)}@{KETTLE}", f"neg:{_key(2)}@{KETTLE}"):
        with pytest.raises(KeyError):
            bench.sample(bad)
    with pytest.raises(ValueError, match="not a positive"):
        bench.sample(f"{_key(3)}@{KETTLE}")


def test_ade_presence_cache(ade_copy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = ADEPer(ade_copy, cache_dir=cache).concepts()
    assert len(list(cache.glob("presence_*.json"))) == 1

    def boom(self, key):
        raise AssertionError("label maps re-read although the cache is valid")

    monkeypatch.setattr(ADEPer, "_read_labels", boom)
    assert ADEPer(ade_copy, cache_dir=cache).concepts() == first
    monkeypatch.undo()
    tif = ade_copy / "ADE20K_2021_17_01/annotations_detectron2/validation/ADE_val_00000003.tif"
    changed = _ade_labels()[2]
    changed[0, :] = KETTLE
    _write_gray(tif, changed)  # a changed file invalidates the cache
    kettle = ADEPer(ade_copy, cache_dir=cache).concepts()[ADE_CONCEPTS.index("kettle")]
    assert f"{_key(3)}@{KETTLE}" in kettle.positive_ids


def test_ade_class_names_sources(ade_copy, tmp_path):
    ade = ade_copy / "ADE20K_2021_17_01"
    (ade / "ade20k_847_classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="ade20k_847_classes.txt"):
        ADEPer(ade_copy, cache_dir=None)
    records = [{"name": n, "trainId": i} for i, n in reversed(list(enumerate(ADE_NAMES)))]
    (ade / "ADE20K_847.json").write_text(json.dumps(records))
    assert ADEPer(ade_copy, cache_dir=None).vocabulary == ADE_NAMES
    assert ADEPer(ade, class_names=ADE_NAMES, cache_dir=None).class_ids == ADE_IDS
    short = tmp_path / "short.txt"
    short.write_text("\n".join(ADE_NAMES[:846]))
    with pytest.raises(ValueError, match="846 class names"):
        ADEPer(ade_copy, class_names=short, cache_dir=None)


def test_ade_concept_resolution_errors(ade_root):
    names = list(ADE_NAMES)
    names[20] = "kettle, tea kettle"  # a second "kettle" entry, neither exact
    names[ADE_IDS["kettle"]] = "kettle, boiler"
    with pytest.raises(ValueError, match="ambiguous ADE-847 class for ADE\\^per concept 'kettle'"):
        ADEPer(ade_root, class_names=names, cache_dir=None)
    fixed = ADEPer(
        ade_root, class_names=names, concept_class_ids={"kettle": KETTLE}, cache_dir=None
    )
    assert fixed.class_ids["kettle"] == KETTLE
    names[ADE_IDS["rod"]] = "pole"
    with pytest.raises(ValueError, match="no ADE-847 class for ADE\\^per concept 'rod'"):
        ADEPer(ade_root, class_names=names, concept_class_ids={"kettle": KETTLE}, cache_dir=None)


def test_ade_missing_and_corrupt_files(tmp_path, ade_copy):
    with pytest.raises(FileNotFoundError, match="images_detectron2"):
        ADEPer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="annotations_detectron2"):
        ADEPer(tmp_path)
    ann = ade_copy / "ADE20K_2021_17_01" / "annotations_detectron2" / "validation"
    bench = ADEPer(ade_copy, cache_dir=None)
    (ann / "ADE_val_00000001.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"ADE_val_00000001\.tif"):
        bench.sample(f"{_key(1)}@{ALTAR}")
    with pytest.raises(FileNotFoundError, match=r"no label map .*ADE_val_00000001\.tif"):
        ADEPer(ade_copy, cache_dir=None)
    _write_gray(ann / "ADE_val_00000001.tif", np.zeros((H, W + 1), np.uint16))
    with pytest.raises(ValueError, match=r"size mismatch: .*ADE_val_00000001\.tif"):
        bench.sample(f"neg:{_key(1)}")
    bad = np.zeros((H, W), np.uint16)
    bad[0, 0] = 900
    _write_gray(ann / "ADE_val_00000001.tif", bad)
    with pytest.raises(ValueError, match="outside 0..846"):
        bench.sample(f"neg:{_key(1)}")
    with pytest.raises(ValueError, match="outside 0..846"):
        ADEPer(ade_copy, cache_dir=None).concepts()


def test_ade_root_is_dataset_folder_and_images_variant(ade_root, ade_copy):
    bench = ADEPer(ade_root / "ADE20K_2021_17_01", cache_dir=None)
    assert len(bench.concepts()) == 30
    ade = ade_copy / "ADE20K_2021_17_01"
    (ade / "images").mkdir()
    (ade / "images_detectron2" / "validation").rename(ade / "images" / "validation")
    other = ADEPer(ade_copy, cache_dir=None)  # images/<split>/ in place of images_detectron2/
    np.testing.assert_array_equal(other.sample(f"neg:{_key(3)}").image, _rgb(1003))


# =================================================================== registry


def test_registry_and_open_benchmark(fss_root, cub_root, ade_root):
    assert set(DATASETS) == {"fss", "cub", "ade"}
    assert isinstance(open_benchmark("fss", fss_root), FSSPer)
    cub = open_benchmark("CUB", cub_root, split="test")
    assert isinstance(cub, CUBPer) and cub.split == "test"
    ade = open_benchmark("ade", ade_root, cache_dir=None)
    assert isinstance(ade, ADEPer)
    for bench in (open_benchmark("fss", fss_root), cub, ade):
        assert isinstance(bench.name, str) and isinstance(bench.vocabulary, list)
        c = bench.concepts()[0]
        assert isinstance(bench.sample(c.positive_ids[0]), Sample)
    with pytest.raises(ValueError, match="unknown dataset 'voc'"):
        open_benchmark("voc", fss_root)


# ---------------------------------------------------------------- the eval CLI on a local copy


def test_eval_cli_runs_the_protocol_on_a_local_fss_copy(fss_root, tmp_path):
    from povss_lab.eval.cli import main

    out = tmp_path / "results"
    argv = ["--dataset", "fss", "--root", str(fss_root), "--random-weights",
            "--shots", "1", "--seeds", "0", "--methods", "none,all", "--iterations", "2",
            "--num-points", "64", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "fssper.json").read_text())
    assert data["meta"]["prompt_init"] == "name"  # the paper's choice for named classes
    assert data["meta"]["benchmark"]["name"] == "FSS^per"
    assert data["interference"] is None  # only SYN^per runs it by default
    rows = data["run"]["records"]["rows"]
    cols = data["run"]["records"]["columns"]
    concepts = {r[cols.index("concept")] for r in rows}
    assert len(concepts) == 30 and len(rows) == 30 * 2  # every concept, both methods, K=1
    assert "| all three | 1 |" in (out / "fssper.md").read_text()


def test_eval_cli_names_a_missing_dataset(tmp_path, capsys):
    from povss_lab.eval.cli import main

    with pytest.raises(SystemExit) as err:
        main(["--dataset", "cub", "--random-weights", "--out", str(tmp_path)])
    assert "--root" in str(err.value)
    with pytest.raises(SystemExit) as err:
        main(["--dataset", "cub", "--root", str(tmp_path / "nowhere"),
              "--random-weights", "--out", str(tmp_path)])  # fmt: skip
    assert "error:" in str(err.value) and "nowhere" in str(err.value)


def test_prompt_init_from_the_concept_name_changes_only_the_start_row(fss_root):
    from povss_lab.eval.runner import make_concept
    from povss_ros.personal.teach import TeachConfig
    from povss_ros.san.config import TINY
    from povss_ros.san.model import build_san
    from povss_ros.segmenter import Segmenter

    bench = FSSPer(fss_root)
    seg = Segmenter(build_san(TINY), bench.vocabulary, "cpu", random_weights=True)
    spec = bench.concepts()[0]
    shots = [bench.sample(spec.positive_ids[0])]
    feats = [seg.encode(shots[0].image)]
    off = TeachConfig(use_prompt=False, use_negative=False, use_visual=False)
    by_base, _ = make_concept(seg, spec, shots, feats, off, "base")
    by_name, _ = make_concept(seg, spec, shots, feats, off, "name")
    base_row = seg.text_rows[bench.vocabulary.index(spec.base_class)]
    torch.testing.assert_close(by_base.t_per.detach()[0], base_row.to(by_base.t_per))
    name_row = seg.model.text_rows([spec.name])[0]
    torch.testing.assert_close(by_name.t_per.detach()[0], name_row.to(by_name.t_per))
    assert not torch.allclose(by_base.t_per, by_name.t_per)
    with pytest.raises(ValueError, match="prompt_init"):
        make_concept(seg, spec, shots, feats, off, "nonsense")
