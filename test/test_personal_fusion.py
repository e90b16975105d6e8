"""Several concepts in one frame (povss_ros.personal.fusion), checked against single decodes.

The rule under test: each concept claims what it claims when decoded alone; a pixel two
concepts claim goes to the higher score; every other pixel keeps plain SAN's label. The SAN
outputs are made by hand so that every case (own pixels, shared pixels, a split vote) occurs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny_san import proposal_following_tiny_san

from povss_ros.personal.concept import Concept, personal_logits
from povss_ros.personal.fusion import decode_concepts
from povss_ros.san.model import BatchGeometry, SANFeatures
from povss_ros.san.semantic import semantic_argmax
from povss_ros.segmenter import Segmenter

WORDS = ["background", "person", "chair", "bottle", "dining table", "wall"]


@pytest.fixture(scope="module")
def model():
    return proposal_following_tiny_san()


@pytest.fixture(scope="module")
def basis(model):
    """Orthonormal directions: one text row per word, then the two concepts' rows.

    Hand-made rather than the TINY text tower's, whose random rows are nearly parallel
    (cosine ~0.99), so that "a proposal of this word" means the same thing to every reader.
    """
    gen = torch.Generator().manual_seed(0)
    return torch.linalg.qr(torch.randn(model.cfg.embed_dim, len(WORDS) + 2, generator=gen)).Q.t()


@pytest.fixture(scope="module")
def rows(basis):
    return basis[: len(WORDS)].contiguous()


def _unit(*parts: torch.Tensor) -> torch.Tensor:
    return F.normalize(sum(parts), dim=-1)


@pytest.fixture(scope="module")
def scene(rows, basis):
    """Hand-made SAN outputs (Z, M on an 8x12 mask grid, 128x192 frame) and two concept rows.

    Concept rows u_a, u_b. Proposals: A alone (top left), B alone (top
    right), a region both claim with B stronger (bottom left: an A+B proposal plus a weaker
    B one), a region where one A+B proposal lies over a weaker "chair" proposal (bottom
    right: decoded together, A and B split that proposal's probability and chair wins), and
    the wall everywhere else.
    """
    gen = torch.Generator().manual_seed(1)
    words, (u_a, u_b) = rows, basis[len(WORDS) :]
    person, chair = words[WORDS.index("person")], words[WORDS.index("chair")]
    top, bottom, left, right = slice(1, 4), slice(5, 8), slice(1, 4), slice(8, 11)
    proposals = [  # (embedding, region, logit inside)
        (_unit(u_a, 0.3 * person), (top, left), 8.0),
        (_unit(u_b, 0.3 * chair), (top, right), 8.0),
        (_unit(u_a, u_b), (bottom, left), 8.0),
        (u_b, (bottom, left), 3.0),
        (_unit(u_a, 0.99 * u_b), (bottom, right), 8.0),
        (chair, (bottom, right), 6.0),
    ]
    n = 16
    z = F.normalize(torch.randn(1, n, rows.shape[1], generator=gen), dim=-1)
    m = torch.full((1, n, 8, 12), -8.0)
    m[0, len(proposals)] = 8.0  # the wall: everything outside the four regions
    z[0, len(proposals)] = words[WORDS.index("wall")]
    for q, (emb, region, logit) in enumerate(proposals):
        z[0, q] = emb
        m[0, q][region] = logit
        m[0, len(proposals)][region] = -8.0
    f = F.normalize(torch.randn(1, rows.shape[1], 4, 6, generator=gen), dim=1)
    feats = SANFeatures(z, m, f, BatchGeometry(((128, 192),), ((128, 192),), (128, 192)))
    return feats, u_a, u_b


@pytest.fixture(scope="module")
def feats(scene):
    return scene[0]


def _concept(rows, base: str, row: torch.Tensor | None = None, **switches) -> Concept:
    """A concept on `base` whose learned row is `row` (negative proposal at its init)."""
    c = Concept(f"my {base}", base, rows[WORDS.index(base)], 16, use_visual=False, **switches)
    if row is not None:
        with torch.no_grad():
            c.t_per.copy_(row)
    return c


@pytest.fixture(scope="module")
def overlapping(rows, scene):
    _, u_a, u_b = scene
    return _concept(rows, "person", u_a), _concept(rows, "chair", u_b)


def _zm(feats):
    return feats.mask_embeddings[0:1], feats.mask_logits[0:1]


@torch.no_grad()
def _joint(model, rows, concepts, feats):
    """The paper's decoding: all concepts in one softmax, labels mapped to class ids."""
    logits, m_ext, ids = personal_logits(model, rows, concepts, *_zm(feats))
    conf, labels = semantic_argmax(logits[0], m_ext[0], feats.geometry, 0)
    return conf, ids[labels]


@torch.no_grad()
def test_one_concept_is_the_papers_decoding(model, rows, feats, scene):
    a = _concept(rows, "person", scene[1])
    got = decode_concepts(model, rows, [a], *_zm(feats), feats.geometry)
    want = _joint(model, rows, [a], feats)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    none = decode_concepts(model, rows, [], *_zm(feats), feats.geometry)
    plain = _joint(model, rows, [], feats)
    assert torch.equal(none[0], plain[0]) and torch.equal(none[1], plain[1])


def _check_rule(model, rows, concepts, feats) -> torch.Tensor:
    """Assert the fusion rule against single decodes; return the fused labels."""
    v = len(rows)
    singles = [_joint(model, rows, [c], feats) for c in concepts]
    plain_conf, plain_lab = _joint(model, rows, [], feats)
    conf, labels = decode_concepts(model, rows, concepts, *_zm(feats), feats.geometry)
    best = torch.full_like(conf, -1.0)
    want = plain_lab.clone()
    for j, (conf_j, lab_j) in enumerate(singles):  # first concept wins ties, as in the code
        wins = (lab_j == v) & (conf_j > best)
        best, want = torch.where(wins, conf_j, best), torch.where(wins, v + j, want)
    assert torch.equal(labels, want)
    claimed = best >= 0
    # A concept's score is its column of the single decode, summed in another order.
    torch.testing.assert_close(conf[claimed], best[claimed], rtol=1e-5, atol=1e-6)
    assert torch.equal(conf[~claimed], plain_conf[~claimed])
    return labels


@torch.no_grad()
def test_each_concept_keeps_its_own_decision_and_conflicts_go_to_the_higher_score(
    model, rows, feats, overlapping
):
    a, b = overlapping
    v = len(WORDS)
    conf_a, lab_a = _joint(model, rows, [a], feats)
    conf_b, lab_b = _joint(model, rows, [b], feats)
    mine_a, mine_b = lab_a == v, lab_b == v
    shared = mine_a & mine_b
    assert shared.any() and (mine_a & ~mine_b).any() and (mine_b & ~mine_a).any()
    assert not (conf_a[shared] == conf_b[shared]).any()  # no ties: the winner is well defined
    labels = _check_rule(model, rows, [a, b], feats)
    assert (labels == v).any() and (labels == v + 1).any()
    # The paper's joint decoding of the same two concepts disagrees somewhere: the rule matters.
    assert not torch.equal(_joint(model, rows, [a, b], feats)[1], labels)


@torch.no_grad()
@pytest.mark.parametrize("seed", range(6))
def test_rule_holds_on_random_proposals(model, rows, seed):
    """Random SAN outputs, three concepts near some of its proposals (one of them without a
    negative proposal), a cropped and padded frame."""
    gen = torch.Generator().manual_seed(seed)
    d = rows.shape[1]
    z = F.normalize(torch.randn(1, 16, d, generator=gen), dim=-1)
    m = 4.0 * F.interpolate(torch.randn(1, 16, 4, 6, generator=gen), size=(8, 12),
                            mode="bilinear")
    f = F.normalize(torch.randn(1, d, 4, 6, generator=gen), dim=1)
    feats = SANFeatures(z, m, f, BatchGeometry(((100, 150),), ((100, 150),), (128, 192)))
    concepts = []
    for j, base in enumerate(("person", "chair", "bottle")):  # each near one proposal
        row = F.normalize(z[0, j] + 0.7 * F.normalize(torch.randn(d, generator=gen), dim=0), dim=0)
        c = _concept(rows, base, row, use_negative=j != 2)
        with torch.no_grad():
            c.w_z.add_(0.05 * torch.randn(c.w_z.shape, generator=gen))
        concepts.append(c)
    labels = _check_rule(model, rows, concepts, feats)
    assert (labels >= len(WORDS)).any()


@torch.no_grad()
def test_order_of_concepts_does_not_change_who_gets_a_pixel(model, rows, feats, overlapping):
    a, b = overlapping
    v = len(WORDS)
    _, ab = decode_concepts(model, rows, [a, b], *_zm(feats), feats.geometry)
    _, ba = decode_concepts(model, rows, [b, a], *_zm(feats), feats.geometry)
    assert torch.equal(ab == v, ba == v + 1) and torch.equal(ab == v + 1, ba == v)


@torch.no_grad()
def test_an_inert_concept_beside_others_is_its_base_word(model, rows, feats, overlapping):
    a, b = overlapping
    inert = _concept(rows, "bottle", use_prompt=False, use_negative=False)
    v = len(WORDS)
    _, two = decode_concepts(model, rows, [a, b], *_zm(feats), feats.geometry)
    _, three = decode_concepts(model, rows, [a, inert, b], *_zm(feats), feats.geometry)
    assert not (three == v + 1).any()  # no label of its own, as when decoded alone
    assert torch.equal(three == v, two == v) and torch.equal(three == v + 2, two == v + 1)


@torch.no_grad()
def test_segmenter_decodes_several_concepts_with_the_fusion(model, feats, overlapping):
    """The node, the CLI and the evaluation all decode through Segmenter.decode."""
    seg = Segmenter(model, WORDS, device="cpu", random_weights=True)
    seg.set_concepts(list(overlapping))
    out = seg.decode(feats)
    conf, labels = decode_concepts(model, seg.text_rows, list(overlapping), *_zm(feats),
                                   feats.geometry)
    assert np.array_equal(out.labels, labels.numpy().astype(np.uint16))
    assert np.array_equal(out.score, conf.numpy())
    assert (out.labels >= len(WORDS)).any()
    assert out.personal_ids == [len(WORDS), len(WORDS) + 1]


@torch.no_grad()
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: runs where torch sees one (make test on a CUDA machine)",
)
def test_fusion_on_cuda_agrees_with_the_cpu(model, rows, feats, overlapping):
    """Same rule on the GPU (bounds, candidate gathers), same labels as on the CPU."""
    cpu = decode_concepts(model, rows, list(overlapping), *_zm(feats), feats.geometry)
    dev = torch.device("cuda")
    gpu_model = copy.deepcopy(model).to(dev)
    concepts = [_concept(rows, c.base_class, c.t_per.detach()).to(dev) for c in overlapping]
    z, m = (t.to(dev) for t in _zm(feats))
    conf, labels = decode_concepts(gpu_model, rows.to(dev), concepts, z, m, feats.geometry)
    assert torch.equal(labels.cpu(), cpu[1])
    torch.testing.assert_close(conf.cpu(), cpu[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- evened negative proposal


def test_even_negative_words_makes_the_words_uniform_and_keeps_their_total():
    from povss_ros.personal.concept import even_negative_words

    gen = torch.Generator().manual_seed(3)
    logits = 4.0 * torch.randn(1, 5, 9, generator=gen)  # 3 open rows, 2 negative rows
    out = even_negative_words(logits, 3, 6, [True, False])
    p, q = logits.softmax(-1), out.softmax(-1)
    assert torch.allclose(q[0, 3, :6], q[0, 3, :6].mean().expand(6))
    torch.testing.assert_close(q[0, 3, :6].sum(), p[0, 3, :6].sum())
    torch.testing.assert_close(q[0, 3, 6:], p[0, 3, 6:])  # concept and void: unchanged
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[0, 3, :6] = False
    assert torch.equal(out[mask], logits[mask])  # open rows, the other negative: untouched


@torch.no_grad()
@pytest.mark.parametrize("even", [False, True])
def test_an_evened_negative_proposal_changes_no_word(model, rows, even):
    """Evened, the negative proposal adds the same score to every word, so a pixel labelled a
    word keeps the word it gets without the negative proposal. The paper's rule, with a
    negative proposal peaked on one word over the whole frame, relabels pixels."""
    gen = torch.Generator().manual_seed(5)
    d = rows.shape[1]
    z = F.normalize(torch.randn(1, 16, d, generator=gen), dim=-1)
    m = 4.0 * F.interpolate(torch.randn(1, 16, 4, 6, generator=gen), size=(8, 12),
                            mode="bilinear")
    geometry = BatchGeometry(((128, 192),), ((128, 192),), (128, 192))
    row = F.normalize(z[0, 0] + 0.5 * F.normalize(torch.randn(d, generator=gen), dim=0), dim=0)
    c = _concept(rows, "person", row, even_negative=even)
    c.w_z.zero_()
    c.w_z[0, 3] = 1.0  # Z_neg = proposal 3's embedding: its softmax favours one word
    c.w_m.weight.zero_()
    c.w_m.bias.fill_(8.0)  # over the whole frame
    without = _concept(rows, "person", row, use_negative=False)
    got = decode_concepts(model, rows, [c], z, m, geometry)[1]
    ref = decode_concepts(model, rows, [without], z, m, geometry)[1]
    both = (got < len(WORDS)) & (ref < len(WORDS))
    assert both.sum() > 1000
    changed = int((got[both] != ref[both]).sum())
    assert (changed == 0) if even else (changed > 100)


def test_even_negative_is_stored_with_the_concept(rows):
    c = _concept(rows, "person", even_negative=True)
    meta = c.metadata()
    assert meta["even_negative"] is True
    back = Concept.from_parts(meta, c.tensors())
    assert back.even_negative and back.metadata() == meta
    del meta["even_negative"]  # a concept saved before the switch existed: the paper's rule
    assert not Concept.from_parts(meta, c.tensors()).even_negative


def test_the_node_evens_the_negative_proposal_and_the_papers_rows_do_not():
    from povss_lab.eval.runner import ablation_methods
    from povss_ros.personal.teach import TeachConfig
    from povss_ros.settings import EngineSettings

    assert EngineSettings().teach.even_negative  # the node's default: ours
    assert EngineSettings().teach == TeachConfig()  # one source for every teach default
    rows = ablation_methods()
    assert [m for m, c in rows.items() if c is not None and c.even_negative] == [
        "all+even", "all+even+identity"]


def test_scoring_every_pixel_gives_the_same_decode(model, rows, feats, overlapping):
    """What a GPU does (`_Claims.score_all`: no selection of undecided pixels, so no host
    synchronisation) decodes exactly as the selective CPU path."""
    from povss_ros.personal import fusion

    selective = decode_concepts(model, rows, list(overlapping), *_zm(feats), feats.geometry)
    try:
        fusion._Claims.score_all = True
        every = decode_concepts(model, rows, list(overlapping), *_zm(feats), feats.geometry)
    finally:
        fusion._Claims.score_all = None
    assert torch.equal(selective[1], every[1]) and torch.equal(selective[0], every[0])
