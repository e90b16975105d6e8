"""The synthetic training script: its targets, a short run, checkpoint round trip, resume."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from povss_lab.synthetic.world import CLASS_NAMES, World, sample_scene
from povss_lab.training.loop import train
from povss_lab.training.recipe import (
    SYN_SMALL,
    TrainOptions,
    input_side,
    lr_at,
    reinit_mask_decoder,
    trainable_parameters,
)
from povss_lab.training.text_prior import fit_word_prior, row_similarity
from povss_lab.training.train_data import (
    PAD_LABEL,
    SceneStream,
    grid_labels,
    instance_targets,
    padded_labels,
    resize_nearest,
    scene_targets,
)
from povss_ros.san.checkpoint import load_weights
from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter
from povss_ros.weights import config_for_weights

# The same SAN code at a toy size; 64 px inputs keep a training step in milliseconds.
TINY_SYN = replace(
    TINY,
    name="tiny_syn",
    min_size=64,
    side_image_size=64,
    text_width=32,
    text_layers=1,
    num_train_classes=len(CLASS_NAMES),
)
TINY_OPTS = TrainOptions(
    steps=15,
    batch_size=2,
    lr=2e-3,
    warmup=3,
    num_points=256,
    text_prior_steps=10,
    eval_scenes=3,
    sample_rows=0,
    log_every=5,
    ckpt_every=5,
    workers=1,
    precision="fp32",  # exact fp32 arithmetic for the reproducibility tests (bf16: its own test)
)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run shared by the tests below (about 5 s)."""
    out = tmp_path_factory.mktemp("syn") / "tiny.safetensors"
    lines: list[str] = []
    result = train(TINY_SYN, TINY_OPTS, out, log=lines.append)
    return out, result, lines


# ---------------------------------------------------------------- data


def test_resize_nearest_is_centre_aligned():
    labels = np.arange(16, dtype=np.uint16).reshape(4, 4)
    # output centre 0.5 maps to source position 1.0: the pixel starting there
    assert np.array_equal(resize_nearest(labels, (2, 2)), labels[np.ix_([1, 3], [1, 3])])
    up = resize_nearest(labels, (8, 8))
    assert np.array_equal(up[::2, ::2], labels) and np.array_equal(up[1::2, 1::2], labels)


@pytest.mark.parametrize("min_size", [64, 192, 240, 300])
def test_targets_match_the_scene_after_the_same_resize_and_pad(world, min_size):
    model = build_san(replace(TINY_SYN, min_size=min_size), seed=0)
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, world), sample_scene(rng, world, size=(256, 200))]
    pixels, geometry = model.preprocess([s.image for s in scenes])
    for i, scene in enumerate(scenes):
        target = scene_targets(scene.semantic, geometry, i)
        masks, labels = target["masks"], target["labels"]
        assert masks.shape[1:] == pixels.shape[2:] == geometry.padded_hw
        assert masks.dtype == torch.float32 and labels.dtype == torch.int64
        rh, rw = geometry.resized_hw[i]
        resized = resize_nearest(scene.semantic, (rh, rw))
        # one mask per class present, exactly its pixels, nothing in the padding
        assert labels.tolist() == sorted(np.unique(resized).tolist())
        for label, mask in zip(labels.tolist(), masks.numpy().astype(bool)):
            assert np.array_equal(mask[:rh, :rw], resized == label)
            assert not mask[rh:].any() and not mask[:, rw:].any()
        # the masks partition the image: every resized pixel in exactly one
        assert np.array_equal(masks.sum(0)[:rh, :rw].numpy(), np.ones((rh, rw)))
        canvas = padded_labels(scene.semantic, geometry, i)
        assert (canvas[rh:] == PAD_LABEL).all() and (canvas[:, rw:] == PAD_LABEL).all()
        if min_size == scene.semantic.shape[0]:  # no resize: the map itself
            assert np.array_equal(canvas[:rh, :rw], scene.semantic)


def test_instance_targets_split_things_by_object_and_keep_stuff_whole(world):
    """One target per visible object (its class, its pixels) and one per stuff class."""
    model = build_san(replace(TINY_SYN, min_size=200), seed=0)
    scene = sample_scene(np.random.default_rng(7), world, size=(256, 200))
    _, geometry = model.preprocess(scene.image)
    target, owners = instance_targets(scene, geometry, 0)
    masks, labels = target["masks"].numpy().astype(bool), target["labels"].tolist()
    assert len(owners) == len(labels) == len(masks) and target["labels"].dtype == torch.int64
    rh, rw = geometry.resized_hw[0]
    semantic = resize_nearest(scene.semantic, (rh, rw))
    instance = resize_nearest(scene.instance, (rh, rw))
    things = [o for o in owners if o is not None]
    assert {o.index for o in things} == {o.index for o in scene.objects
                                        if o.visible > 0 and (instance == o.index).any()}
    assert len(things) >= 2  # this scene has several objects, so the split is tested
    for label, mask, owner in zip(labels, masks, owners):
        assert mask.any() and not mask[rh:].any() and not mask[:, rw:].any()
        if owner is None:  # stuff: all of the class's pixels outside objects
            assert CLASS_NAMES[label] in world.stuff_classes
            assert np.array_equal(mask[:rh, :rw], (semantic == label) & (instance == 0))
        else:
            assert CLASS_NAMES[label] == owner.identity.class_name
            assert np.array_equal(mask[:rh, :rw], instance == owner.index)
    # the targets partition the image, as the class targets do
    assert np.array_equal(masks.sum(0)[:rh, :rw], np.ones((rh, rw)))
    # the same classes as the semantic targets, things now once per object
    assert sorted(set(labels)) == scene_targets(scene.semantic, geometry, 0)["labels"].tolist()


def test_grid_labels_are_the_padded_map_on_a_coarse_grid(world):
    """The dense losses' targets: the padded-frame labels, centre-sampled on the mask grid."""
    model = build_san(TINY_SYN, seed=0)
    scene = sample_scene(np.random.default_rng(5), world, size=(256, 200))
    _, geometry = model.preprocess(scene.image)
    hp, wp = geometry.padded_hw
    grid = grid_labels(scene.semantic, geometry, 0, (hp // 4, wp // 4))
    assert grid.shape == (hp // 4, wp // 4) and grid.dtype == torch.int64
    canvas = padded_labels(scene.semantic, geometry, 0)
    assert np.array_equal(grid.numpy(), canvas[2::4, 2::4].astype(np.int64))
    assert set(np.unique(grid.numpy())) <= set(np.unique(scene.semantic)) | {PAD_LABEL}


def test_targets_reject_a_label_map_of_another_size(world):
    model = build_san(TINY_SYN, seed=0)
    scene = sample_scene(np.random.default_rng(0), world)
    _, geometry = model.preprocess(scene.image)
    with pytest.raises(ValueError, match="does not match"):
        scene_targets(scene.semantic[:-1], geometry, 0)


def test_scene_stream_is_deterministic_and_resumable(world):
    a, b = SceneStream(world, 5), SceneStream(world, 5)
    first = a.next(2)
    saved = a.state()
    nxt = a.next(2)
    assert [s.spec.seed for s in first] == [s.spec.seed for s in b.next(2)]
    c = SceneStream(world, 5)
    c.restore(saved)
    assert c.count == 2
    assert [s.spec.seed for s in c.next(2)] == [s.spec.seed for s in nxt]
    assert [s.spec.seed for s in SceneStream(world, 6).next(2)] != [s.spec.seed for s in first]


def test_scene_stream_draws_its_object_count_range(world):
    """`--train-objects`: denser training scenes; the default range is the world's own, so
    the default stream is the one every earlier run trained on."""
    dense = SceneStream(world, 5, n_objects=(9, 9)).next(3)
    assert all(len(s.spec.objects) == 9 for s in dense)
    rng = np.random.default_rng([5, 101])
    plain = [sample_scene(rng, world).spec.seed for _ in range(3)]
    assert [s.spec.seed for s in SceneStream(world, 5).next(3)] == plain
    for bad in ((0, 3), (5, 4)):
        with pytest.raises(ValueError, match="n_objects"):
            SceneStream(world, 5, n_objects=bad)


def test_word_prior_spreads_class_rows_and_freezes_the_tower():
    model = build_san(TINY_SYN, seed=0)
    before = row_similarity(model, list(CLASS_NAMES))
    fit_word_prior(model, steps=20, seed=0, exclude=CLASS_NAMES, num_words=256, batch=32)
    after = row_similarity(model, list(CLASS_NAMES))
    assert before["mean_cos"] > 0.9  # why the prior exists: random towers map words alike
    assert after["mean_cos"] < before["mean_cos"] - 0.2
    assert not any(p.requires_grad for p in model.ov_classifier.parameters())
    names = {n for n, _ in trainable_parameters(model)}
    assert "ov_classifier.bg_embed" in names
    assert not any(n.startswith("ov_classifier.") and n != "ov_classifier.bg_embed" for n in names)
    assert "clip_visual_extractor.conv1.weight" in names


def test_mask_decoder_reinit_gives_usable_initial_masks(world):
    """The default std-0.02 init makes masks ~1e-5 (untrainable); the reinit makes them O(1)."""
    model = build_san(TINY_SYN, seed=0)
    scene = sample_scene(np.random.default_rng(1), world)
    pixels, geometry = model.preprocess(scene.image)
    with torch.no_grad():
        before = model.encode(pixels, geometry).mask_logits.std()
        reinit_mask_decoder(model, seed=0)
        after = model.encode(pixels, geometry).mask_logits.std()
    assert before < 1e-3 < 0.1 < after < 10
    dec = model.side_adapter_network.mask_decoder
    # every head's attention-bias MLP starts as the mask MLP
    last_attn, last_pix = dec.attn_mlp.layers[-1].weight, dec.pix_mlp.layers[-1].weight
    for h in range(dec.heads):
        block = last_attn[h * last_pix.shape[0] : (h + 1) * last_pix.shape[0]]
        assert torch.equal(block, last_pix)


def test_lr_schedule_warms_up_then_decays():
    opts = TrainOptions(steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.01)
    lrs = [lr_at(s, opts) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_syn_small_config_is_valid_and_small():
    SYN_SMALL.validate()
    model = build_san(SYN_SMALL, seed=None)
    megabytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    assert megabytes < 30


# ---------------------------------------------------------------- training


def test_short_training_lowers_the_loss(trained):
    out, result, lines = trained
    assert any(line.startswith("step 15/15") for line in lines)
    losses = [float(line.split(" loss ")[1].split()[0]) for line in lines if " loss " in line]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]
    assert result["train"]["options"]["steps"] == 15
    assert 0.0 <= result["eval"]["miou"] <= 1.0
    assert out.with_name("tiny_loss.png").is_file()
    curve = result["train"]["loss_mean_per_50_steps"]  # 15 steps: one 50-step window
    assert set(curve) >= {"total", "ce", "identity", "qidentity"}
    assert all(len(v) == 1 for v in curve.values())
    assert not out.with_name(out.name + ".state.pt").exists()  # a finished run leaves no state


def test_checkpoint_round_trips_through_the_segmenter(trained, world):
    out, _, _ = trained
    assert config_for_weights(out, None) == TINY_SYN
    seg = Segmenter.from_weights(out, vocabulary=list(CLASS_NAMES), device="cpu",
                                 resize="fast")  # as `predict` resizes (the model's own)
    model = load_weights(build_san(TINY_SYN, seed=None), out).eval()
    scene = sample_scene(np.random.default_rng(11), world)
    from povss_lab.training.train_eval import predict

    ours = predict(model, model.text_rows(list(CLASS_NAMES)), [scene.image])[0]
    theirs = seg.segment(scene.image)
    assert theirs.labels.shape == scene.semantic.shape
    assert np.array_equal(theirs.labels, ours)


def test_resume_continues_a_killed_run(tmp_path):
    """A run stopped after its step-5 checkpoint resumes to the same weights as an unbroken one,
    the shipped weight average included (it would restart from the step-5 weights if the
    checkpoint lost it)."""
    opts = replace(TINY_OPTS, steps=8, text_prior_steps=3, eval_scenes=0, ckpt_every=5,
                   ema_decay=0.8)
    whole = tmp_path / "whole.safetensors"
    train(TINY_SYN, opts, whole, log=lambda _: None)
    killed = tmp_path / "killed.safetensors"
    lines: list[str] = []
    with pytest.raises(_Stop):
        train(TINY_SYN, opts, killed, log=_stop_after_checkpoint(lines.append))
    assert killed.with_name(killed.name + ".state.pt").is_file()
    train(TINY_SYN, opts, killed, resume=True, log=lines.append)
    assert any(line.startswith("resuming from step 5") for line in lines)
    a = load_weights(build_san(TINY_SYN, seed=None), whole).state_dict()
    b = load_weights(build_san(TINY_SYN, seed=None), killed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_low_res_phase_comes_first_changes_the_run_and_resumes(tmp_path):
    """Progressive resizing: the first steps see 32 px inputs, the rest the config's 64. The
    phase is part of the run's state: a run killed inside it resumes to the same weights."""
    opts = replace(TINY_OPTS, steps=8, text_prior_steps=3, eval_scenes=0, ckpt_every=5,
                   low_res_size=32, low_res_steps=6)
    assert [input_side(s, opts) for s in range(8)] == [32] * 6 + [None] * 2
    assert input_side(0, replace(opts, low_res_steps=0)) is None  # 0 steps: off
    whole = tmp_path / "whole.safetensors"
    train(TINY_SYN, opts, whole, log=lambda _: None)
    killed = tmp_path / "killed.safetensors"
    with pytest.raises(_Stop):
        train(TINY_SYN, opts, killed, log=_stop_after_checkpoint(lambda _: None))
    train(TINY_SYN, opts, killed, resume=True, log=lambda _: None)
    plain = tmp_path / "plain.safetensors"
    train(TINY_SYN, replace(opts, low_res_size=0, low_res_steps=0), plain, log=lambda _: None)
    a, b, c = (load_weights(build_san(TINY_SYN, seed=None), p).state_dict()
               for p in (whole, killed, plain))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.allclose(a[k], c[k]) for k in a)


def test_weight_average_is_shipped_and_the_raw_weights_are_measured_too(tmp_path):
    opts = replace(TINY_OPTS, steps=4, text_prior_steps=3, eval_scenes=2, sample_rows=0,
                   ema_decay=0.9)
    lines: list[str] = []
    result = train(TINY_SYN, opts, tmp_path / "m.safetensors", log=lines.append)
    raw = result["eval_raw_last_step"]
    assert set(raw) == {"eval", "eval_new_identities"} and raw["eval"]["scenes"] == 2
    assert any(line.startswith("without the weight average") for line in lines)
    plain = train(TINY_SYN, replace(opts, ema_decay=0.0), tmp_path / "p.safetensors",
                  log=lambda _: None)
    assert "eval_raw_last_step" not in plain
    assert plain["eval"] == raw["eval"]  # same run: its last weights measure the same
    a = load_weights(build_san(TINY_SYN, seed=None), tmp_path / "m.safetensors").state_dict()
    b = load_weights(build_san(TINY_SYN, seed=None), tmp_path / "p.safetensors").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the average, not the last weights


def test_deep_supervision_decodes_what_a_shallower_adapter_would_and_trains(tmp_path, world):
    """SAN's deep supervision: the masks and Z decoded after side block 2 of 4 are exactly the
    outputs of the same model with its side adapter cut after block 2."""
    import copy

    model = build_san(TINY_SYN, seed=0).eval()
    pixels, geometry = model.preprocess([s.image for s in _scenes(world, 2)])
    with torch.no_grad():
        plain = model.encode(pixels, geometry)
        feats, aux = model.encode_with_aux(pixels, geometry, (2,))
        cut = copy.deepcopy(model)
        adapter = cut.side_adapter_network.vit_model
        adapter.blocks = adapter.blocks[:2]
        shallow = cut.encode(pixels, geometry)
    assert torch.equal(feats.mask_logits, plain.mask_logits)
    assert torch.equal(feats.mask_embeddings, plain.mask_embeddings)
    assert len(aux) == 1
    torch.testing.assert_close(aux[0][0], shallow.mask_embeddings)
    torch.testing.assert_close(aux[0][1], shallow.mask_logits)
    assert not torch.allclose(aux[0][1], plain.mask_logits)
    for bad in ((0,), (TINY_SYN.side_depth,)):
        with pytest.raises(ValueError, match="aux_blocks"):
            model.encode_with_aux(pixels, geometry, bad)
    lines: list[str] = []
    opts = replace(TINY_OPTS, steps=5, text_prior_steps=3, eval_scenes=0, aux_blocks=(1, 3))
    result = train(TINY_SYN, opts, tmp_path / "m.safetensors", log=lines.append)
    assert any(" aux " in line for line in lines)
    assert len(result["train"]["loss_mean_per_50_steps"]["aux"]) == 1


def test_bf16_runs_the_forward_in_bf16_and_keeps_losses_and_weights_fp32(tmp_path, world):
    """`precision="bf16"`: the model's matmuls run under bf16 autocast, but what comes out of
    the forward, the losses, the gradients and the weights are fp32; a short run trains."""
    from povss_lab.training.losses import IdentityHead
    from povss_lab.training.recipe import forward_dtype, make_criterion, make_optimizer
    from povss_lab.training.step import TrainParts, train_step

    opts = replace(TINY_OPTS, precision="bf16")
    assert forward_dtype(opts) is torch.bfloat16 and forward_dtype(TINY_OPTS) is None
    model = build_san(TINY_SYN, seed=0)
    reinit_mask_decoder(model, 0)
    rows = model.text_rows(list(CLASS_NAMES))
    head = IdentityHead(len(CLASS_NAMES) * 8, TINY_SYN.embed_dim)
    optimizer = make_optimizer(model, opts, head)
    seen: list[torch.dtype] = []
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = TrainParts(model, make_criterion(len(CLASS_NAMES), opts), rows, optimizer,
                       torch.Generator().manual_seed(0), head)
    step_opts = replace(opts, grad_clip=1.0, semantic_weight=2.0, patch_text_weight=1.0,
                        identity_weight=1.0, query_identity_weight=1.0, instance_targets=True)
    losses = train_step(parts, _scenes(world, 2), step_opts)
    assert seen == [torch.bfloat16]
    assert all(math.isfinite(v) for v in losses.values())
    after = model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in after.items())
    assert any(not torch.equal(after[k], before[k]) for k in after)
    run = replace(opts, steps=6, text_prior_steps=3, eval_scenes=0)
    result = train(TINY_SYN, run, tmp_path / "bf16.safetensors", log=lambda _: None)
    assert result["train"]["options"]["precision"] == "bf16"
    plain = train(TINY_SYN, replace(run, precision="fp32"), tmp_path / "fp32.safetensors",
                  log=lambda _: None)
    bf16_loss = result["train"]["loss_mean_per_50_steps"]["total"]
    fp32_loss = plain["train"]["loss_mean_per_50_steps"]["total"]
    assert bf16_loss != fp32_loss and math.isclose(bf16_loss[0], fp32_loss[0], rel_tol=0.1)
    with pytest.raises(ValueError, match="precision"):
        train(TINY_SYN, replace(run, precision="fp16"), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def _scenes(world, n):
    rng = np.random.default_rng(3)
    return [sample_scene(rng, world) for _ in range(n)]


class _Stop(Exception):
    pass


def _stop_after_checkpoint(log):
    """A log callback that kills the run at the step-5 progress line (after its checkpoint)."""

    def wrapped(line: str) -> None:
        log(line)
        if line.startswith("step 5/"):
            raise _Stop

    return wrapped


# ---------------------------------------------------------------- the committed model


def test_committed_model_is_syn_small_and_segments_its_world():
    """models/syn_small.safetensors (what `make demo` and SYN^per use) loads as SYN_SMALL and
    still segments held-out scenes about as models/syn_small.json reports (68.1 mIoU on 200)."""
    import json
    from pathlib import Path

    from povss_lab.training.train_eval import evaluate, held_out_scenes

    weights = Path(__file__).resolve().parents[1] / "models" / "syn_small.safetensors"
    assert config_for_weights(weights, None) == SYN_SMALL
    report = json.loads(weights.with_suffix(".json").read_text())
    model = load_weights(build_san(SYN_SMALL, seed=None), weights).eval()
    world = World(report["train"]["options"]["world_seed"])
    names = list(world.class_names)
    scenes = held_out_scenes(world, 24, report["train"]["options"]["eval_seed"])
    result = evaluate(model, model.text_rows(names), names, scenes)
    assert result["miou"] > 0.8 * report["eval"]["miou"]
    assert result["iou"]["wall"] > 0.9 and result["iou"]["table"] > 0.7


@pytest.mark.parametrize("features", ["F", "Z"])
def test_committed_model_tells_identities_apart_in_f_and_z(world, features):
    """What personalization on SYN^per rests on (docs/results/identity_probe.md): two views of
    one book are closer than two books, in F and in the query embeddings Z (a collapsed Z,
    as the previous model had, gives a gap of 0.01 and near-chance accuracy)."""
    from pathlib import Path

    from povss_lab.training.identity_probe import probe_class

    weights = Path(__file__).resolve().parents[1] / "models" / "syn_small.safetensors"
    model = load_weights(build_san(config_for_weights(weights, None), seed=None), weights)
    report = probe_class(model.eval(), world, "book", identities=4, scenes=4, features=features)
    assert report.cos_within - report.cos_between > 0.3
    assert report.nearest_centroid_accuracy > 0.6


@pytest.mark.parametrize("features", ["F", "Z"])
def test_identity_probe_embeds_one_object_per_view(world, features):
    from povss_lab.training.identity_probe import matched_query, pooled_feature, probe_class

    embed = {"F": pooled_feature, "Z": matched_query}[features]
    model = build_san(TINY_SYN, seed=0).eval()
    mug = world.identities("mug")[0]
    scene = sample_scene(np.random.default_rng(2), world, required=[mug], n_objects=(2, 3))
    f = embed(model, scene.image, scene.mask(mug))
    assert f is not None and f.shape == (TINY_SYN.embed_dim,)
    assert float(f.norm()) == pytest.approx(1.0, abs=1e-5)
    assert embed(model, scene.image, np.zeros_like(scene.mask(mug))) is None
    report = probe_class(model, world, "mug", identities=2, scenes=3, features=features)
    assert report.identities == 2 and 4 <= report.samples <= 6
    assert -1.0 <= report.cos_between <= 1.0 and -1.0 <= report.cos_within <= 1.0
    assert 0.0 <= report.nearest_centroid_accuracy <= 1.0
    with pytest.raises(KeyError):
        probe_class(model, world, "mug", identities=2, scenes=3, features="W")


def test_proposal_recall_scores_two_objects_of_a_class_per_scene(world):
    from povss_lab.training.identity_probe import proposal_recall

    model = build_san(TINY_SYN, seed=0).eval()
    report = proposal_recall(model, world, "mug", scenes=3)
    assert report.class_name == "mug" and 3 <= report.objects <= 6
    assert 0.0 <= report.mean_best_iou <= 1.0 and 0.0 <= report.recall_at_50 <= 1.0


def test_instance_weights_are_each_objects_share_of_the_grid(world):
    from povss_lab.training.train_data import instance_weights

    model = build_san(TINY_SYN, seed=0)
    scene = sample_scene(np.random.default_rng(4), world, size=(256, 200))
    _, geometry = model.preprocess(scene.image)
    hp, wp = geometry.padded_hw
    grid = (hp // 8, wp // 8)
    weights, objects = instance_weights(scene, geometry, 0, grid)
    assert weights.shape == (len(objects), *grid) and objects
    assert all(o.visible > 0 for o in objects)
    # the shares of all objects and of everything else sum to one per cell
    assert float(weights.sum(0).max()) <= 1.0 + 1e-6
    canvas = np.zeros((hp, wp), np.int32)
    rh, rw = geometry.resized_hw[0]
    canvas[:rh, :rw] = resize_nearest(scene.instance, (rh, rw))
    first = objects[0]
    expected = (canvas == first.index).reshape(grid[0], 8, grid[1], 8).mean((1, 3))
    np.testing.assert_allclose(weights[0].numpy(), expected, atol=1e-6)


def test_identity_head_is_cross_entropy_of_pooled_cosines():
    from povss_lab.training.losses import IdentityHead

    head = IdentityHead(3, 4, scale=10.0)
    with torch.no_grad():
        head.prototypes.copy_(torch.eye(3, 4))
    dense = torch.zeros(1, 4, 1, 2)
    dense[0, 1, 0, 0] = 1.0  # cell 0 points at identity 1
    dense[0, 2, 0, 1] = 1.0  # cell 1 at identity 2
    weights = [torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])]  # object a = cell 0, b = cell 1
    right = head(dense, weights, torch.tensor([1, 2]))
    wrong = head(dense, weights, torch.tensor([0, 0]))
    assert right.item() == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + 2)), abs=1e-6)
    assert wrong.item() == pytest.approx(-math.log(1 / (math.exp(10) + 2)), rel=1e-5)
    assert head(dense, [torch.zeros(0, 1, 2)], torch.zeros(0, dtype=torch.int64)).item() == 0.0
    # ready embeddings (the matched queries' Z) go through the same classifier
    embeddings = torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0]])
    assert head.classify(embeddings, torch.tensor([1, 2])).item() == pytest.approx(right.item())
    assert head.classify(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)).item() == 0.0


def test_matched_object_queries_pick_each_objects_query_and_identity(world):
    from povss_lab.synthetic.world import SceneObject
    from povss_lab.training.step import identity_index, matched_object_queries

    mug, book = world.identities("mug")[2], world.identities("book")[5]
    z = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)  # [B, N, D]
    owners = [[None, SceneObject(mug, 1, 10)], [SceneObject(book, 1, 5)]]  # stuff, mug | book
    indices = [(torch.tensor([3, 0]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    picked, ids = matched_object_queries(z, indices, owners)
    assert torch.equal(picked, torch.stack([z[0, 3], z[1, 2]]))  # query 0 matched stuff: skipped
    assert ids.tolist() == [identity_index(mug), identity_index(book)]
    none, no_ids = matched_object_queries(z, [(torch.tensor([1]), torch.tensor([0]))], [[None]])
    assert none.shape == (0, 3) and no_ids.numel() == 0


def test_identity_term_trains_and_resumes(tmp_path, world):
    from povss_lab.training.step import identity_index

    mugs = world.identities("mug")
    assert identity_index(mugs[0]) == CLASS_NAMES.index("mug") * 8
    assert len({identity_index(m) for m in mugs}) == len(mugs) <= 8
    opts = replace(TINY_OPTS, steps=8, text_prior_steps=3, eval_scenes=0, ckpt_every=5,
                   identity_weight=1.0, query_identity_weight=1.0,
                   instance_targets=True)  # fmt: skip
    whole = tmp_path / "whole.safetensors"
    lines: list[str] = []
    train(TINY_SYN, opts, whole, log=lines.append)
    assert any(" identity " in line and " qidentity " in line for line in lines)
    killed = tmp_path / "killed.safetensors"
    with pytest.raises(_Stop):
        train(TINY_SYN, opts, killed, log=_stop_after_checkpoint(lambda _: None))
    train(TINY_SYN, opts, killed, resume=True, log=lambda _: None)
    a = load_weights(build_san(TINY_SYN, seed=None), whole).state_dict()
    b = load_weights(build_san(TINY_SYN, seed=None), killed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_larger_identity_pool_keeps_the_default_looks_and_widens_the_head(tmp_path, world):
    """`identities_per_class` 12: ids 0-7 are the default world's looks (held-out scenes and
    SYN^per's seen identities stay inside the pool) and the head gets 12 ids per class."""
    from povss_lab.synthetic.world import World
    from povss_lab.training.step import identity_index

    wide = World(world.seed, 12)
    assert wide.identities("mug")[:8] == world.identities("mug")
    assert identity_index(wide.identities("mug")[11], 12) == CLASS_NAMES.index("mug") * 12 + 11
    with pytest.raises(ValueError, match="8 ids per class"):
        identity_index(wide.identities("mug")[11])
    opts = replace(TINY_OPTS, steps=8, text_prior_steps=3, eval_scenes=0, ckpt_every=5,
                   identity_weight=1.0, query_identity_weight=1.0, instance_targets=True,
                   identities_per_class=12)  # fmt: skip
    out = tmp_path / "wide.safetensors"
    with pytest.raises(_Stop):
        train(TINY_SYN, opts, out, log=_stop_after_checkpoint(lambda _: None))
    state = torch.load(out.with_name(out.name + ".state.pt"), weights_only=True)
    assert state["identity_head"]["prototypes"].shape[0] == len(CLASS_NAMES) * 12


# ---------------------------------------------------------------- the command line


def test_cli_input_sizes_reach_the_weights_config(tmp_path):
    """`--min-size`, `--clip-scale` and `--queries` train another shape and are stored, so the
    weights load as they were trained (one real step of SYN_SMALL; about 15 s)."""
    from povss_lab.training.train import main

    out = tmp_path / "m.safetensors"
    main(["--out", str(out), "--steps", "1", "--workers", "1", "--threads", "2",
          "--eval-scenes", "1", "--min-size", "96", "--clip-scale", "0.75", "--queries", "20"])
    assert config_for_weights(out, None) == replace(SYN_SMALL, min_size=96, clip_scale=0.75,
                                                    num_queries=20)
    assert (tmp_path / "m.json").is_file()


@pytest.mark.parametrize("flags", [["--min-size", "16"], ["--clip-scale", "0"],
                                   ["--clip-scale", "1.5"], ["--ema-decay", "1"],
                                   ["--train-objects", "6", "2"],
                                   ["--deep-supervision", "4"],
                                   ["--low-res", "16", "100"],
                                   ["--queries", "16"],  # 3 stuff + 14 objects need 17
                                   ["--identities-per-class", "4"]])
def test_cli_rejects_bad_training_flags_before_writing(tmp_path, flags):
    from povss_lab.training.train import main

    with pytest.raises(SystemExit, match=flags[0]):
        main(["--out", str(tmp_path / "m.safetensors"), *flags])
    assert not any(tmp_path.iterdir())

