"""The synthetic world: reproducible, exact ground truth, distinct but stable identities."""

import itertools
import time

import numpy as np
import pytest

from povss_lab.synthetic.shapes import THINGS, Painter
from povss_lab.synthetic.world import (
    CLASS_NAMES,
    STUFF_CLASSES,
    PlacedObject,
    SceneSpec,
    World,
    make_identities,
    make_identity,
    render_scene,
    sample_scene,
    sample_spec,
)


@pytest.fixture(scope="module")
def world():
    return World(seed=0, identities_per_class=8)


def check_ground_truth(scene, world):
    """Every labelled pixel agrees with the object list, and stuff pixels carry no instance."""
    h, w = scene.instance.shape
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
    assert scene.semantic.dtype == np.uint16 and scene.instance.dtype == np.int32
    assert set(np.unique(scene.instance)) <= set(range(len(scene.objects) + 1))
    stuff_ids = [world.class_id(c) for c in world.stuff_classes]
    assert np.isin(scene.semantic[scene.instance == 0], stuff_ids).all()
    for obj, area in zip(scene.objects, scene.areas):
        here = scene.instance == obj.index
        assert int(here.sum()) == obj.visible
        assert obj.visible <= area
        assert (scene.semantic[here] == world.class_id(obj.identity.class_name)).all()


def alone(identity, pose=(0.0, False), size=96, seed=1, scale=70.0):
    spec = SceneSpec(seed, (size, size), [PlacedObject(identity, (size / 2, size / 2), scale,
                                                        pose[0], pose[1])], photometric=False)
    return render_scene(spec)


def colour_hist(scene, bins=4):
    px = scene.image[scene.instance == 1].astype(np.int64) * bins // 256
    h = np.bincount((px[:, 0] * bins + px[:, 1]) * bins + px[:, 2], minlength=bins**3)
    return h / h.sum()


def test_class_table(world):
    assert len(world.thing_classes) >= 12
    assert {"wall", "floor", "table"} <= set(STUFF_CLASSES)
    assert world.class_names == CLASS_NAMES == STUFF_CLASSES + world.thing_classes
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert all(n.isalpha() and n.islower() for n in CLASS_NAMES)  # usable as open-vocab text
    assert world.class_id("mug") == CLASS_NAMES.index("mug")


def test_identities_are_functions_of_class_id_and_seed(world):
    assert make_identities("mug", 5, seed=0) == world.identities("mug")[:5]
    assert world.identity("mug", 20) == make_identity("mug", 20, 0)  # beyond the pool
    assert make_identity("mug", 2, 0) != make_identity("mug", 2, 1)
    assert len(set(make_identities("ball", 8, 0))) == 8


def test_determinism(world):
    a = sample_scene(np.random.default_rng(7), world)
    b = sample_scene(np.random.default_rng(7), world)
    c = sample_scene(np.random.default_rng(8), world)
    for name in ("image", "semantic", "instance"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.objects == b.objects
    assert not np.array_equal(a.image, c.image)
    assert np.array_equal(render_scene(a.spec).image, a.image)  # a scene records its spec
    s1 = render_scene(SceneSpec(seed=3), world)
    s2 = render_scene(SceneSpec(seed=3), world)
    assert np.array_equal(s1.image, s2.image) and s1.objects == s2.objects
    assert not np.array_equal(s1.image, render_scene(SceneSpec(seed=4), world).image)


@pytest.mark.parametrize("size", [(320, 240), (333, 251), (97, 61), (200, 300)])
def test_ground_truth_consistency_any_size(world, size):
    rng = np.random.default_rng(size[0])
    for _ in range(6):
        scene = sample_scene(rng, world, size=size)
        assert scene.image.shape == (size[1], size[0], 3)
        check_ground_truth(scene, world)
        assert any(o.visible > 0 for o in scene.objects)


def test_scene_records_its_layout_and_surface_looks(world):
    """Which stuff is drawn, and in which style, follows the layout; the record is what
    `stuff_looks` groups errors by, so it must name exactly the surfaces in the image."""
    rng = np.random.default_rng(11)
    ground = {"table": {"table"}, "floor": {"floor"}, "room": {"floor", "table"}}
    seen = set()
    for _ in range(40):
        scene = sample_scene(rng, world)
        seen.add(scene.layout)
        assert set(scene.surfaces) - {"wall"} == ground[scene.layout]
        assert scene.surfaces.get("floor", "planks") in {"planks", "tiles", "carpet"}
        assert scene.surfaces.get("table", "wood") in {"wood", "paint", "marble", "cloth"}
        in_image = {CLASS_NAMES[c] for c in np.unique(scene.semantic)} & set(STUFF_CLASSES)
        assert in_image <= set(scene.surfaces)  # every stuff class in view has its look
        assert ("wall" in scene.surfaces) == ("wall" in in_image)
    assert seen == set(ground)


def test_labels_ignore_shadows_and_lighting(world):
    spec = sample_spec(np.random.default_rng(5), world)
    plain = render_scene(SceneSpec(spec.seed, spec.size, spec.objects, False, False))
    lit = render_scene(spec)
    assert np.array_equal(plain.semantic, lit.semantic)
    assert np.array_equal(plain.instance, lit.instance)
    assert not np.array_equal(plain.image, lit.image)


def test_occlusion_is_exact(world):
    box, book = world.identity("box", 0), world.identity("book", 1)
    lower = PlacedObject(box, (80.0, 60.0), 60.0)
    upper = PlacedObject(book, (100.0, 70.0), 60.0, 30.0)
    only_low = render_scene(SceneSpec(2, (160, 120), [lower])).instance == 1
    only_up = render_scene(SceneSpec(2, (160, 120), [upper])).instance == 1
    both = render_scene(SceneSpec(2, (160, 120), [lower, upper]))
    check_ground_truth(both, world)
    assert (only_low & only_up).sum() > 100  # they really overlap
    assert np.array_equal(both.instance == 1, only_low & ~only_up)
    assert np.array_equal(both.instance == 2, only_up)
    assert both.objects[0].visible == only_low.sum() - (only_low & only_up).sum()
    # a much larger object on top hides the lower one completely
    cover = PlacedObject(world.identity("plate", 0), (80.0, 60.0), 200.0)
    hidden = render_scene(SceneSpec(2, (160, 120), [lower, cover]))
    assert hidden.objects[0].visible == 0 and hidden.areas[0] == only_low.sum()


def test_identities_distinct_but_stable_across_poses(world):
    for cls in world.thing_classes:
        ids = world.identities(cls)
        ref = [colour_hist(alone(i)) for i in ids]
        means = [alone(i).image[alone(i).instance == 1].mean(0) for i in ids]
        for a, b in itertools.combinations(range(len(ids)), 2):
            hist_d = np.abs(ref[a] - ref[b]).sum()
            mean_d = np.abs(means[a] - means[b]).max()
            assert hist_d > 0.3 or mean_d > 20, (cls, a, b, hist_d, mean_d)
        for i, ident in enumerate(ids):  # new pose, scale and mirror: same look, nearest to itself
            moved = colour_hist(alone(ident, (35.0 + 20 * i, True), size=128, seed=9, scale=95.0))
            dists = [np.abs(moved - r).sum() for r in ref]
            assert int(np.argmin(dists)) == i, (cls, i, dists)
            assert dists[i] < 0.35, (cls, i, dists[i])


def test_every_class_fits_its_patch():
    """Drawings must stay inside the patch or they would be silently clipped."""
    for cls in THINGS:
        for i in range(6):
            p = Painter(60.0, 37.0 * i, i % 2 == 1, (0.5, 0.5), cls.radius)
            cls.draw(p, make_identity(cls.name, i, 0).params)
            m = p.mask
            assert m.sum() > 300, cls.name
            assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()), cls.name


def test_sample_scene_required_and_excluded(world):
    mine, others = world.identity("mug", 0), world.identities("mug")[1:3]
    rng = np.random.default_rng(11)
    for _ in range(8):
        pos = sample_scene(rng, world, required=[mine, *others])
        by_id = {o.identity: (o, a) for o, a in zip(pos.objects, pos.areas)}
        for ident in (mine, *others):
            obj, area = by_id[ident]
            assert obj.visible > 0 and obj.visible >= 0.5 * area
        assert pos.mask(mine).sum() == by_id[mine][0].visible
        neg = sample_scene(rng, world, required=others, exclude=[mine])
        assert all(o.identity != mine for o in neg.objects)
        assert not neg.mask(mine).any()


def test_render_speed(world):
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, world) for _ in range(20)]
    render_scene(specs[0])
    t = time.perf_counter()
    for spec in specs:
        render_scene(spec)
    per_scene = (time.perf_counter() - t) / len(specs)
    assert per_scene < 0.05, f"{per_scene * 1e3:.1f} ms per 320x240 scene"  # ~10 ms expected
