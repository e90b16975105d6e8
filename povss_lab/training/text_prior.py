"""A word-identity prior for the synthetic model's CLIP text tower (no images, no classes).

Why this exists: no pretrained CLIP is reachable offline, and at its seeded random init the
text tower maps every prompt to nearly the same vector. Measured at the small sizes used
here: class names under SAN's 14 templates have mean pairwise cosine 0.997 (max 0.9998),
whatever the init scales. Random attention averages the one content word with the shared
template tokens, so the template dominates. Frozen class rows that close are poor prototypes:
logits = 100 * cos gives a couple of logits of margin between two classes at best, and a new
word (a personal concept's name) could not stand apart from the vocabulary at all.

What pretrained CLIP's text tower gives SAN, and this stand-in gives back, is one property:
different words map to different directions, whatever prompt template wraps them. The tower
learns it from an InfoNCE task on words drawn at random from CLIP's own BPE vocabulary. Two
template renderings of one word are pulled together and other words pushed apart. The
synthetic world's class names are excluded from those words, so nothing about the classes
is learned here (their rows come out spread only because the tower generalizes). The
tower is then frozen for SAN training and inference, as in SAN. This is not semantics:
"mug" is no closer to "cup" than to "banana".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from povss_ros.san.model import SAN
from povss_ros.san.text import OpenVocabClassifier, tokenize

# encode_text is wrapped in no_grad for inference. Its undecorated body is the same code path,
# so the prior is trained through exactly the forward that inference later runs.
_encode_text_with_grad = OpenVocabClassifier.encode_text.__wrapped__


def bpe_words(
    n: int, seed: int, exclude: Sequence[str] = (), min_len: int = 3, max_len: int = 10
) -> list[str]:
    """n whole, alphabetic ASCII words from CLIP's BPE vocabulary, seeded, minus `exclude`."""
    from open_clip.tokenizer import SimpleTokenizer

    banned = {w.lower() for w in exclude}
    words = sorted(
        tok[:-4]
        for tok in SimpleTokenizer().encoder
        if tok.endswith("</w>")
        and tok[:-4].isascii()
        and tok[:-4].isalpha()
        and min_len <= len(tok) - 4 <= max_len
        and tok[:-4] not in banned
    )
    pick = np.random.default_rng([seed, 17]).choice(len(words), min(n, len(words)), replace=False)
    return [words[i] for i in sorted(pick)]


def row_similarity(model: SAN, words: Sequence[str]) -> dict[str, float]:
    """Mean and max off-diagonal cosine of the template-ensembled rows of `words`."""
    model.ov_classifier.clear_cache()
    rows = model.text_rows(list(words))
    sim = rows @ rows.t()
    off = sim[~torch.eye(len(words), dtype=torch.bool)]
    return {"mean_cos": float(off.mean()), "max_cos": float(off.max())}


def fit_word_prior(
    model: SAN,
    steps: int,
    seed: int,
    exclude: Sequence[str] = (),
    num_words: int = 8192,
    batch: int = 256,
    lr: float = 3e-3,
    temperature: float = 0.07,
) -> list[float]:
    """Train the text tower (not bg_embed or logit_scale) on word identity; returns losses.

    Every parameter of the tower ends with requires_grad False: it is frozen from here on.
    Adam leaves the embedding rows of tokens that never occur unchanged (their moments stay
    zero), so most of the vocabulary keeps its random init.
    """
    tower = model.ov_classifier
    params = [p for n, p in tower.named_parameters() if n not in ("bg_embed", "logit_scale")]
    words = bpe_words(num_words, seed, exclude)
    templates = tower.templates
    rng = np.random.default_rng([seed, 18])
    losses: list[float] = []
    if steps > 0:
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        target = torch.arange(batch)
        with torch.enable_grad():
            for _ in range(steps):
                idx = rng.choice(len(words), batch, replace=False)
                ta = rng.integers(len(templates), size=batch)
                tb = (ta + rng.integers(1, len(templates), size=batch)) % len(templates)
                prompts = [templates[j].format(words[i]) for i, j in zip(idx, ta)]
                prompts += [templates[j].format(words[i]) for i, j in zip(idx, tb)]
                tokens = tokenize(prompts, tower.context_length).to(tower.bg_embed.device)
                emb = _encode_text_with_grad(tower, tokens)
                logits = emb[:batch] @ emb[batch:].t() / temperature
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
    for p in tower.parameters():
        p.requires_grad_(False)
    tower.clear_cache()
    return losses
