"""One personal concept's learnable tensors, and how concepts join SAN's class rows and masks.

Design choices the paper leaves open (docs/method.md):

- ``t_per`` starts as the base class's text row from SAN's own template ensemble
  (``model.text_rows([base])``, the 14 "vild" templates averaged then normalized), so an
  untrained concept scores exactly like its base word. The frozen copy ``t_text`` is kept so
  switching ``use_prompt`` off at inference falls back to it exactly.
- ``w_z`` starts uniform (1/N): Z_neg starts as the direction of the mean mask embedding.
  ``Z_neg = normalize(w_z @ Z_open)``: every other mask embedding SAN scores is unit-norm, and
  the logit scale (100) was learned for unit vectors; without it the length of ``w_z`` would act
  as a free temperature and L_Z could be met by shrinking ``w_z`` instead of choosing a direction.
- ``w_m`` (Conv2d N->1, kernel k, padding k//2) starts as the centre-tap mean of the open mask
  logits (weights 1/N at the centre, 0 elsewhere, bias 0): like ``w_z``, "the average proposal",
  a smooth, deterministic start instead of a random one.
- ``unique`` (ours, default true): the concept is one object; per frame at most one region
  holds it, the one most like its shots (`identity`). F_per is then filled even with
  ``use_visual`` off (the row ignores it), since identity compares regions with it.
- ``f_per`` is the plain masked mean of SAN's per-pixel normalized dense CLIP features (the
  paper's formula, not renormalized); the mixed row ``alpha*f_per + (1-alpha)*T`` is normalized
  with every other row by ``model.class_rows``.

- ``even_negative`` (ours, off by default: the paper's rule): at inference the negative
  proposal's word logits are replaced by their log-mean-exp, so its word probabilities are
  exactly uniform, as L_Z asks, with their total unchanged. L_Z only pushes toward uniform on
  the shots; W_Z mixes each image's own embeddings, so on another image the learned mix can
  favour one word, and the near-whole-image negative mask then relabels things with it
  (docs/experiments.md). Evened, it adds the same score to every
  word: no pixel changes word, only concept versus words. Training is unchanged.

Switch semantics: ``use_prompt`` off -> the row is ``t_text`` (never trained); ``use_negative``
off -> no negative embedding/mask is added; ``use_visual`` off -> alpha is taken as 0 (the row
is T itself, not ``0*f + 1*T``).

"All components off" (``Concept.inert``) is SAN alone, the paper's "none" ablation row: the
concept *is* its base word. `personal_scores` then reproduces plain SAN bit for bit: when the
base row is one of the open rows (found by exact equality) the concept adds no row and no mask
and its score column is an exact copy of the base class column, so the open-class scores, the
argmax (ties go to the lower id, the open class) and the confidence equal plain SAN's; when the
base word is not in the vocabulary, the output equals plain SAN run on the vocabulary extended
by that word. `personal_logits` gives the same rule to callers that fuse the argmax (SAN's
`semantic_argmax`): map its labels through the returned class ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..san.model import SAN, SANFeatures
from ..san.semantic import semantic_scores

TEXT_INIT = "san_vild_template_ensemble"


class Concept(nn.Module):
    """The learnable state of one personal concept: (T_per, W_Z, W_M, F_per, alpha) + switches."""

    def __init__(
        self,
        name: str,
        base_class: str,
        text_row: torch.Tensor,
        n_queries: int,
        kernel: int = 3,
        alpha: float = 0.1,
        use_prompt: bool = True,
        use_negative: bool = True,
        use_visual: bool = True,
        text_init: str = TEXT_INIT,
        *,
        even_negative: bool = False,
        unique: bool = True,
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        row = text_row.detach().reshape(1, -1).float().clone()
        self.name = name
        self.base_class = base_class
        self.text_init = text_init
        self.n_queries = n_queries
        self.kernel = kernel
        self.alpha = float(alpha)
        self.use_prompt = use_prompt
        self.use_negative = use_negative
        self.use_visual = use_visual
        self.even_negative = bool(even_negative)
        self.unique = bool(unique)  # one object, chosen by identity (`identity.keep_one`)
        self.register_buffer("t_text", row)
        self.t_per = nn.Parameter(row.clone(), requires_grad=use_prompt)
        self.w_z = nn.Parameter(
            torch.full((1, n_queries), 1.0 / n_queries, device=row.device),
            requires_grad=use_negative,
        )
        self.w_m = nn.Conv2d(n_queries, 1, kernel, padding=kernel // 2).to(row.device)
        with torch.no_grad():
            self.w_m.weight.zero_()
            self.w_m.weight[:, :, kernel // 2, kernel // 2] = 1.0 / n_queries
            self.w_m.bias.zero_()
        self.w_m.requires_grad_(use_negative)
        self.register_buffer("f_per", torch.zeros_like(row))
        # Look-alikes marked "not this one": each one's mean dense feature, [J, D] (`identity`).
        self.register_buffer("look_alikes", row.new_zeros(0, row.shape[1]))
        # What each shot shows around the object (its mean dense feature outside the mask),
        # [K, D]: `identity` grows my object only over regions more like it than like these.
        self.register_buffer("surroundings", row.new_zeros(0, row.shape[1]))

    @property
    def dim(self) -> int:
        return self.t_text.shape[1]

    @property
    def inert(self) -> bool:
        """Every component off: the concept is its base word (SAN alone)."""
        return not (self.use_prompt or self.use_negative or self.use_visual)

    def trainable(self) -> list[nn.Parameter]:
        """Exactly the tensors the switches allow to train."""
        params = [self.t_per] if self.use_prompt else []
        if self.use_negative:
            params += [self.w_z, self.w_m.weight, self.w_m.bias]
        return params

    def row(self) -> torch.Tensor:
        """T_per_vis [1, D] (unnormalized; `model.class_rows` normalizes all rows together)."""
        t = self.t_per if self.use_prompt else self.t_text
        if not self.use_visual:
            return t
        return self.alpha * self.f_per + (1.0 - self.alpha) * t

    def negative_embedding(self, z: torch.Tensor) -> torch.Tensor:
        """Z_neg = normalize(W_Z @ Z_open): [B, N, D] -> [B, 1, D] on the unit sphere."""
        return F.normalize(torch.einsum("on,bnd->bod", self.w_z.to(z), z), dim=-1)

    def negative_mask(self, m: torch.Tensor) -> torch.Tensor:
        """M_neg = W_M(M_open): [B, N, h, w] logits -> [B, 1, h, w] logits."""
        return self.w_m(m.float())

    def metadata(self) -> dict:
        """Everything besides the tensors needed to rebuild this object."""
        return {
            "name": self.name,
            "base_class": self.base_class,
            "text_init": self.text_init,
            "n_queries": self.n_queries,
            "dim": self.dim,
            "kernel": self.kernel,
            "alpha": self.alpha,
            "use_prompt": self.use_prompt,
            "use_negative": self.use_negative,
            "use_visual": self.use_visual,
            "even_negative": self.even_negative,
            "unique": self.unique,
            "look_alikes": int(self.look_alikes.shape[0]),
            "surroundings": int(self.surroundings.shape[0]),
            "w_z_init": "uniform_1_over_n",
            "w_m_init": "centre_tap_mean",
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors, on the CPU, contiguous (safetensors' requirements)."""
        named = {
            "t_per": self.t_per,
            "t_text": self.t_text,
            "w_z": self.w_z,
            "w_m_weight": self.w_m.weight,
            "w_m_bias": self.w_m.bias,
            "f_per": self.f_per,
        }
        if self.look_alikes.shape[0]:  # older stores have no such tensor: none is written
            named["look_alikes"] = self.look_alikes
        if self.surroundings.shape[0]:  # likewise
            named["surroundings"] = self.surroundings
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in named.items()}

    @classmethod
    def from_parts(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> Concept:
        """Rebuild from `metadata()` and `tensors()` (shapes are checked by the caller)."""
        c = cls(
            meta["name"],
            meta["base_class"],
            tensors["t_text"],
            int(meta["n_queries"]),
            int(meta["kernel"]),
            float(meta["alpha"]),
            bool(meta["use_prompt"]),
            bool(meta["use_negative"]),
            bool(meta["use_visual"]),
            meta.get("text_init", TEXT_INIT),
            even_negative=bool(meta.get("even_negative", False)),  # absent before it existed
            unique=bool(meta.get("unique", True)),  # absent before it existed: one object
        )
        with torch.no_grad():
            c.t_per.copy_(tensors["t_per"])
            c.w_z.copy_(tensors["w_z"])
            c.w_m.weight.copy_(tensors["w_m_weight"])
            c.w_m.bias.copy_(tensors["w_m_bias"])
            c.f_per.copy_(tensors["f_per"])
        if "look_alikes" in tensors:
            c.look_alikes = tensors["look_alikes"].to(c.f_per).clone()
        if "surroundings" in tensors:
            c.surroundings = tensors["surroundings"].to(c.f_per).clone()
        return c


def _alias(text_rows: torch.Tensor, concept: Concept) -> int | None:
    """Open row index equal (bit for bit) to an inert concept's base row, else None."""
    if not concept.inert or text_rows.shape[0] == 0:
        return None
    hits = (text_rows == concept.t_text.to(text_rows)).all(dim=1).nonzero()
    return int(hits[0]) if hits.numel() else None


def combine(
    text_rows: torch.Tensor,
    concepts: Sequence[Concept],
    z: torch.Tensor,
    m: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Append personal rows and negative masks: -> (rows [V+C, D], Z [B, N+C', D], M [..]).

    Row V+j belongs to ``concepts[j]``; negative masks follow the N open masks, one per concept
    with ``use_negative``, in concept order. The open rows, embeddings and masks pass through
    untouched (with no concepts the inputs themselves are returned). This is the raw rule;
    `personal_logits` / `personal_scores` add the alias rule for inert concepts on top.
    """
    if not concepts:
        return text_rows, z, m
    rows = torch.cat([text_rows] + [c.row().to(text_rows) for c in concepts], dim=0)
    neg = [c for c in concepts if c.use_negative]
    if not neg:
        return rows, z, m
    z_ext = torch.cat([z] + [c.negative_embedding(z) for c in neg], dim=1)
    m_ext = torch.cat([m] + [c.negative_mask(m).to(m) for c in neg], dim=1)
    return rows, z_ext, m_ext


@dataclass
class PersonalLayout:
    """Which concepts take part in scoring and which are aliases of an open class."""

    active: list[Concept] = field(default_factory=list)
    aliases: dict[int, int] = field(default_factory=dict)  # concept j -> open class index


def layout(text_rows: torch.Tensor, concepts: Sequence[Concept]) -> PersonalLayout:
    """Split concepts into scored ones and inert aliases of a word already in the vocabulary."""
    out = PersonalLayout()
    for j, c in enumerate(concepts):
        alias = _alias(text_rows, c)
        if alias is None:
            out.active.append(c)
        else:
            out.aliases[j] = alias
    return out


def personal_logits(
    model: SAN,
    text_rows: torch.Tensor,
    concepts: Sequence[Concept],
    z: torch.Tensor,
    m: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of SAN's semantic inference with concepts: (class logits [B, N', C'+1], mask
    logits [B, N', h, w], class_ids [C']) where score column c is class id ``class_ids[c]``.

    Inert concepts whose base word is in the vocabulary get no column (they are that word), so
    an argmax over these columns, mapped through ``class_ids``, is plain SAN's label map.
    """
    plan = layout(text_rows, concepts)
    rows, z_ext, m_ext = combine(text_rows, plan.active, z, m)
    logits = model.class_logits(z_ext, model.class_rows(rows))
    v = text_rows.shape[0]
    negatives = [c.even_negative for c in plan.active if c.use_negative]
    if any(negatives):
        logits = even_negative_words(logits, z.shape[1], v, negatives)
    ids = list(range(v)) + [v + j for j in range(len(concepts)) if j not in plan.aliases]
    return logits, m_ext, torch.tensor(ids, device=logits.device)


def even_negative_words(
    logits: torch.Tensor, n_open: int, v: int, which: Sequence[bool]
) -> torch.Tensor:
    """Class logits [B, N+C', V+C+1] with the word logits (columns < v) of negative row
    n_open+i replaced by their log-mean-exp where ``which[i]``: uniform word probabilities
    with the same total (see the module doc, ``even_negative``). Other entries are untouched."""
    out = logits.clone()
    for i, even in enumerate(which):
        if even:
            words = logits[:, n_open + i, :v]
            mean = torch.logsumexp(words, dim=-1, keepdim=True) - math.log(v)
            out[:, n_open + i, :v] = mean.expand_as(words)
    return out


def personal_scores(
    model: SAN,
    text_rows: torch.Tensor,
    concepts: Sequence[Concept],
    features: SANFeatures,
    index: int = 0,
) -> torch.Tensor:
    """SAN's semantic inference with personal concepts: [V+C, H, W], class V+j = concepts[j].

    With no concepts this runs exactly plain SAN's two calls (class_logits, semantic_scores),
    so the result is plain SAN's, bit for bit; an inert concept's column is a copy of its
    base word's.
    """
    z = features.mask_embeddings[index : index + 1]
    m = features.mask_logits[index : index + 1]
    logits, m_ext, ids = personal_logits(model, text_rows, concepts, z, m)
    scores = semantic_scores(logits[0], m_ext[0], features.geometry, index)
    v, c = text_rows.shape[0], len(concepts)
    if scores.shape[0] == v + c:
        return scores
    out = scores.new_empty((v + c, *scores.shape[1:]))
    out[ids] = scores
    for j, base in layout(text_rows, concepts).aliases.items():
        out[v + j] = scores[base]
    return out


def concept_pixels(
    scores: torch.Tensor, text_rows: torch.Tensor, concepts: Sequence[Concept], j: int
) -> torch.Tensor:
    """Where concept j is predicted: argmax == V+j, or its base class when it is an alias."""
    labels = scores.argmax(dim=0)
    alias = _alias(text_rows, concepts[j])
    return labels == (alias if alias is not None else text_rows.shape[0] + j)
